"""UK postcodes: checked, normalised, and looked up to derive panel fields.

A panel field may be *derived* instead of asked (``derive_from = "postcode"``): sign-up
asks for the person's postcode once, takes each derived field's value from the lookup CSV
the ICS supplies (``[panel] postcode_lookup``: a ``postcode`` column, then one column per
derived field, e.g. ``locality`` and ``imd_quintile``), and keeps only those values,
never the postcode. A well-formed postcode that the lookup does not list gives every
derived field the value :data:`OUTSIDE_AREA`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

DERIVE_SOURCES = ("postcode",)
# Stored for each derived field when a well-formed postcode is not in the lookup.
OUTSIDE_AREA = "outside_area"

# Outward code (area letters, district digit and an optional letter or digit), then the
# inward code (a digit and two letters); "GIR 0AA" is Girobank's, the one exception.
_POSTCODE = re.compile(r"^(?:[A-Z]{1,2}[0-9][A-Z0-9]?|GIR)[0-9][A-Z]{2}$")
_SPACES = re.compile(r"[\s\-.]+")


def normalise(text: str) -> str | None:
    """``"ls14ap"`` -> ``"LS1 4AP"``; None when the text is not a UK postcode's shape."""
    compact = _SPACES.sub("", text.strip().upper())
    if not 5 <= len(compact) <= 7 or not _POSTCODE.fullmatch(compact):
        return None
    return f"{compact[:-3]} {compact[-3:]}"


class PostcodeLookupError(ValueError):
    """The lookup file cannot be used as it is; the message is one line."""


@dataclass(frozen=True, slots=True)
class PostcodeLookup:
    """Postcode (normalised) -> derived field values."""

    columns: tuple[str, ...]
    rows: dict[str, dict[str, str]]

    def get(self, postcode: str) -> dict[str, str] | None:
        return self.rows.get(postcode)


_CACHE: dict[tuple[Path, float, tuple[str, ...]], PostcodeLookup] = {}


def load_lookup(path: Path, columns: list[str]) -> PostcodeLookup:
    """Read the lookup CSV, needing a ``postcode`` column and each of ``columns``.

    Raises :class:`PostcodeLookupError` naming the problem in one line (a missing file or column,
    a column named twice, no rows, a row with more or fewer values than the header, a row whose
    postcode is not a postcode, a postcode listed twice), with the file line it is on. Cached
    while the file is unchanged.
    """
    try:
        stamp = path.stat().st_mtime
    except OSError:
        raise PostcodeLookupError(f"no file at {path}") from None
    key = (path, stamp, tuple(columns))
    if key in _CACHE:
        return _CACHE[key]
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = _read_rows(path.name, csv.reader(handle), columns)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PostcodeLookupError(f"cannot read {path}: {_one_line(exc)}") from None
    lookup = PostcodeLookup(tuple(columns), rows)
    _CACHE.clear()  # one panel, one lookup: keep only the latest
    _CACHE[key] = lookup
    return lookup


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_rows(name: str, reader, columns: list[str]) -> dict[str, dict[str, str]]:
    """Check and read every row; ``line`` counts the file's lines, blank ones included."""
    header: list[str] | None = None
    rows: dict[str, dict[str, str]] = {}
    for cells in reader:
        line = reader.line_num
        if not cells or not any(c.strip() for c in cells):
            continue  # a blank line
        if header is None:
            header = [c.strip() for c in cells]
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise PostcodeLookupError(
                    f"{name} line {line}: column {', '.join(twice) or '(blank)'} is named twice"
                )
            missing = [c for c in ["postcode", *columns] if c not in header]
            if missing:
                raise PostcodeLookupError(f"{name} has no column {', '.join(missing)}")
            continue
        if len(cells) != len(header):
            raise PostcodeLookupError(
                f"{name} line {line}: {len(cells)} values but the header has {len(header)} columns"
            )
        row = dict(zip(header, (c.strip() for c in cells), strict=True))
        postcode = normalise(row["postcode"])
        if postcode is None:
            raise PostcodeLookupError(f"{name} line {line}: not a UK postcode")
        if postcode in rows:
            raise PostcodeLookupError(f"{name} line {line}: {postcode} is listed twice")
        rows[postcode] = {c: row[c] for c in columns}
    if header is None:
        raise PostcodeLookupError(f"{name} is empty: it needs a header and a row per postcode")
    if not rows:
        raise PostcodeLookupError(f"{name} has a header but no postcodes")
    return rows


def lookup_problems(path: Path, fields: dict[str, list[str]]) -> list[str]:
    """What is wrong with the lookup for these derived fields (name -> allowed values)."""
    try:
        lookup = load_lookup(path, list(fields))
    except PostcodeLookupError as exc:
        return [str(exc)]
    problems = []
    for name, values in fields.items():
        bad = sorted({row[name] for row in lookup.rows.values()} - set(values))
        if bad:
            shown = ", ".join(f'"{v}"' for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
            problems.append(f"{path.name} column {name} has values the field lacks: {shown}")
    return problems
