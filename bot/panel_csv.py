"""The panel CSV: reading and checking it, row by row, before anything is stored.

Header row; ``phone`` (any UK or international format, stored E.164) and/or
``telegram_chat_id``; optional ``locale`` and ``consent_at``; then one column per configured
panel field. A bad row becomes a :class:`Problem` naming its first line in the file (the
header is line 1), so a quoted field with a line break inside does not shift the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

import phonenumbers

from bot.models import Address, PanellistStatus

if TYPE_CHECKING:
    from bot.config import Settings

PHONE, TELEGRAM, LOCALE, CONSENT = "phone", "telegram_chat_id", "locale", "consent_at"
# Columns that `panel export` writes and import reads past without a warning, so an export
# round-trips. Ids differ between databases, so people are matched by address, never by id.
EXPORT_ONLY = ("id", "status", "created_at", "other_addresses")
# How far ahead a consent date may be before it is taken for a typing mistake.
CONSENT_CLOCK_SKEW = timedelta(days=1)


class PanelFileError(Exception):
    """The whole file is unusable (unreadable, not UTF-8, a required column missing)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A rejected row: its first line in the file and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class PanelRow:
    """One good row of a panel CSV, normalised."""

    line: int
    phone: str | None  # E.164
    chat_id: str | None
    locale: str | None  # None: blank in the file
    consent_at: datetime | None
    demographics: dict[str, str]

    @property
    def addresses(self) -> list[Address]:
        found = [Address("sms", self.phone)] if self.phone else []
        return found + ([Address("telegram", self.chat_id)] if self.chat_id else [])


@dataclass(slots=True)
class ParsedFile:
    rows: list[PanelRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def mask(value: str | None) -> str:
    """A number or chat id fit for a log line: ``+447400100101`` becomes ``+44740****101``."""
    if not value:
        return ""
    if len(value) <= 6:
        return "*" * len(value)
    keep_start = min(6, len(value) - 4)
    return value[:keep_start] + "*" * (len(value) - keep_start - 3) + value[-3:]


def normalise_phone(text: str) -> str:
    """A phone number in any UK or international format as E.164; raises ValueError."""
    try:
        number = phonenumbers.parse(text, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError("not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# -- reading the file ---------------------------------------------------------------------


def expected_header(settings: Settings) -> list[str]:
    """The import header, in order: addresses, locale, consent, then the panel fields."""
    return [PHONE, TELEGRAM, LOCALE, CONSENT, *(f.name for f in settings.panel.fields)]


def read_panel_file(path: Path, settings: Settings) -> ParsedFile:
    """Read and check a panel CSV file. Raises PanelFileError if it is unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PanelFileError(f"cannot read the file: {exc.strerror or exc}") from None
    return parse_panel_csv(data, settings)


def parse_panel_csv(data: bytes, settings: Settings) -> ParsedFile:
    """Check every row of a panel CSV. Raises PanelFileError if the file is unusable."""
    try:
        # utf-8-sig: spreadsheet programs often start "CSV UTF-8" files with a BOM.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # exc.object is what the codec saw: the data after any BOM.
        seen = bytes(exc.object)
        line = seen[: exc.start].count(b"\n") + 1
        raise PanelFileError(
            f"the file is not UTF-8 text (byte 0x{seen[exc.start]:02x} on line {line}); "
            'save it as "CSV UTF-8"'
        ) from None
    # newline="" keeps quoted line breaks inside fields and accepts \n, \r\n and \r alike.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise PanelFileError("the file is empty")
        columns, warnings = _check_header(header, settings)
        parsed = ParsedFile(warnings=warnings)
        last_line = reader.line_num
        for cells in reader:
            # A record may span several lines (a quoted newline): report where it starts.
            line, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            row = _parse_row(cells, header, columns, settings, line)
            (parsed.rows if isinstance(row, PanelRow) else parsed.problems).append(row)
    except csv.Error as exc:
        raise PanelFileError(f"line {reader.line_num}: not readable as CSV ({exc})") from None
    return parsed


def _check_header(header: list[str], settings: Settings) -> tuple[dict[str, int], list[str]]:
    """(column name -> index, warnings). Raises PanelFileError."""
    names = [h.strip().lower() for h in header]
    fields = [f.name for f in settings.panel.fields]
    known = {PHONE, TELEGRAM, LOCALE, CONSENT, *fields, *EXPORT_ONLY}
    columns: dict[str, int] = {}
    warnings = []
    for index, name in enumerate(names):
        if name in columns:
            raise PanelFileError(f'the column "{name}" appears twice in the header')
        if name in known:
            columns[name] = index
        elif name:
            warnings.append(f'warning: unknown column "{header[index].strip()}" ignored')
        else:
            warnings.append(f"warning: column {index + 1} has no name; ignored")
    expected = ",".join(expected_header(settings))
    if PHONE not in columns and TELEGRAM not in columns:
        raise PanelFileError(
            f'the header has neither "{PHONE}" nor "{TELEGRAM}" (expected header: {expected})'
        )
    missing = [name for name in fields if name not in columns]
    if missing:
        raise PanelFileError(
            f"missing column{'s' if len(missing) > 1 else ''} for the panel "
            f"field{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(expected header: {expected})"
        )
    return columns, warnings


def _parse_row(
    cells: list[str], header: list[str], columns: dict[str, int], settings: Settings, line: int
) -> PanelRow | Problem:
    def cell(name: str) -> str:
        index = columns.get(name)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    reasons: list[str] = []
    if any(c.strip() for c in cells[len(header) :]):
        reasons.append(f"{len(cells)} values, but the header has {len(header)} columns")
    status = cell("status").lower()
    if status == PanellistStatus.OPTED_OUT:
        reasons.append("opted out; not re-subscribed by import")
    elif status == PanellistStatus.ERASED:
        reasons.append("erased; nothing to import")

    phone = chat_id = None
    if raw := cell(PHONE):
        try:
            phone = normalise_phone(raw)
        except ValueError as exc:
            reasons.append(f'{PHONE} "{raw}": {exc}')
    if raw := cell(TELEGRAM):
        if re.fullmatch(r"-?[0-9]{1,20}", raw):
            chat_id = str(int(raw))
        else:
            reasons.append(f'{TELEGRAM} "{raw}": must be digits, optionally after a "-"')
    if not cell(PHONE) and not cell(TELEGRAM):
        reasons.append(f"needs a {PHONE} or a {TELEGRAM}")

    locale = None
    if raw := cell(LOCALE):
        wanted = raw.replace("_", "-").lower()
        locale = next((c for c in settings.bot.locales if c.lower() == wanted), None)
        if locale is None:
            reasons.append(f'{LOCALE} "{raw}": not one of {", ".join(settings.bot.locales)}')

    consent_at = None
    if raw := cell(CONSENT):
        try:
            consent_at = parse_consent(raw, ZoneInfo(settings.bot.timezone))
        except ValueError as exc:
            reasons.append(f'{CONSENT} "{raw}": {exc}')

    demographics = {}
    for f in settings.panel.fields:
        if raw := cell(f.name):
            # Spreadsheets change case and spacing; the stored value is the configured one.
            value = next((v for v in f.values if v.casefold() == raw.casefold()), None)
            if value is None:
                reasons.append(f'{f.name} "{raw}": not one of {", ".join(f.values)}')
            else:
                demographics[f.name] = value
    if reasons:
        return Problem(line, "; ".join(reasons))
    return PanelRow(line, phone, chat_id, locale, consent_at, demographics)


def parse_consent(text: str, tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """An ISO date (midnight, local time) or date-time (naive means local time); in UTC."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            value = datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
        else:
            value = datetime.fromisoformat(text)
            value = value if value.tzinfo else value.replace(tzinfo=tz)
    except ValueError:
        raise ValueError(
            "not an ISO date or date-time (e.g. 2025-01-31 or 2025-01-31T14:30)"
        ) from None
    if value > (now or datetime.now(UTC)) + CONSENT_CLOCK_SKEW:
        raise ValueError("is in the future")
    return value.astimezone(UTC)


# -- writing (``panel export``) -----------------------------------------------------------


def export_columns(settings: Settings) -> list[str]:
    """The export header: import's columns plus id, status, created_at and other addresses."""
    first = ["id", "status", PHONE, TELEGRAM, LOCALE, CONSENT, "created_at", "other_addresses"]
    return [*first, *(f.name for f in settings.panel.fields)]


def write_csv(rows: list[dict[str, Any]], settings: Settings, out: TextIO) -> None:
    """Rows from ``bot.panel.export_rows`` as CSV that ``panel import`` reads back.

    A text cell a spreadsheet would run as a formula gets a ``'`` in front (``csv_cells``).
    """
    from bot.csv_cells import safe_row

    columns = export_columns(settings)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        flat = {**row, **row.get("demographics", {})}
        flat["other_addresses"] = " ".join(row.get("other_addresses", []))
        writer.writerow(safe_row("" if flat.get(c) is None else flat[c] for c in columns))


def write_json(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Rows from ``bot.panel.export_rows`` as a JSON list."""
    json.dump(rows, out, ensure_ascii=False, indent=2)
    out.write("\n")
