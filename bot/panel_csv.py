"""The panel CSV: reading and checking it, row by row, before anything is stored.

Header row; ``phone`` (any UK or international format, stored E.164) and/or
``telegram_chat_id``; optional ``locale`` and ``consent_at``; then one column per configured
panel field. A bad row becomes a :class:`Problem` naming its first line in the file (the
header is line 1), so a quoted field with a line break inside does not shift the numbers.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO
from zoneinfo import ZoneInfo

import phonenumbers

from bot.models import Address, PanellistStatus

if TYPE_CHECKING:
    from bot.config import Settings

PHONE, TELEGRAM, LOCALE, CONSENT = "phone", "telegram_chat_id", "locale", "consent_at"
# Read only when fields are derived from it (derive_from = "postcode"); never stored.
POSTCODE = "postcode"
# Columns that `panel export` writes and import reads past without a warning, so an export
# round-trips. Ids differ between databases, so people are matched by address, never by id.
EXPORT_ONLY = ("id", "status", "created_at", "other_addresses")
# `panel import` stops, storing nothing, when more than half of the first SAMPLE_ROWS data
# rows are bad (a wrong file, or junk under a valid header), in a file of MIN_SAMPLE or more.
SAMPLE_ROWS = 1000
MIN_SAMPLE = 100
# Telegram chat ids fit in 52 bits plus a sign (Bot API: "at most 52 significant bits").
TELEGRAM_ID_LIMIT = 2**52

# How far ahead a consent date may be before it is taken for a typing mistake.
CONSENT_CLOCK_SKEW = timedelta(days=1)


class PanelFileError(Exception):
    """The whole file is unusable (unreadable, not UTF-8, a required column missing)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A rejected row: its first line in the file and why.

    ``kinds``: each reason without the row's values ("not a mobile number (a landline)"),
    so that a file with thousands of bad rows can be summarised by reason.
    """

    line: int
    message: str
    kinds: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def reasons(self) -> tuple[str, ...]:
        # Problems found against the database carry no kinds: their text without values.
        return self.kinds or (re.sub(r'\s*"[^"]*"', "", self.message),)


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


def normalise_phone(text: str) -> str:
    """A phone number in any UK or international format as E.164; raises ValueError."""
    try:
        number = phonenumbers.parse(text, "GB")
    except phonenumbers.NumberParseException:
        raise ValueError("not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class PhoneRefused(ValueError):
    """A phone cell panelbot will not text: ``kind`` is the reason without the number."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_T = phonenumbers.PhoneNumberType
# Numbers that cannot receive SMS or WhatsApp, by what phonenumbers says they are.
NOT_MOBILE = {
    _T.FIXED_LINE: "a landline",
    _T.TOLL_FREE: "a freephone number",
    _T.PREMIUM_RATE: "a premium-rate or service number",
    _T.SHARED_COST: "a shared-cost number",
    _T.UAN: "a non-geographic number",
    _T.VOIP: "a VoIP number",
    _T.PERSONAL_NUMBER: "a personal number",
    _T.PAGER: "a pager",
    _T.VOICEMAIL: "a voicemail number",
    _T.UNKNOWN: "of no known type",
}
# "ext. 123", "extension 4", "x12", ";ext=12", "#12": an extension, never a mobile's.
_EXTENSION = re.compile(r"(?i)(\bext|\d\s*x\s*\d|#|;)")


def mobile_phone(text: str) -> str:
    """A number that can receive SMS and WhatsApp, as E.164; raises PhoneRefused.

    Mobiles are accepted, and numbers phonenumbers cannot tell from mobiles
    (FIXED_LINE_OR_MOBILE, as in North America). Landlines, freephone and other
    non-geographic numbers, VoIP, personal numbers and pagers are refused with the reason;
    so are extensions and letters (a keypad word such as "0800 FLOWERS"), which would
    otherwise be dropped or turned into digits.
    """
    if _EXTENSION.search(text):
        raise PhoneRefused("has an extension", "has an extension; a mobile has none")
    if re.search(r"[^\W\d_]", text):
        raise PhoneRefused("has letters", "has letters; write the number in digits")
    number = normalise_phone(text)  # ValueError: not a valid phone number
    kind = phonenumbers.number_type(phonenumbers.parse(number))
    if kind in (_T.MOBILE, _T.FIXED_LINE_OR_MOBILE):
        return number
    what = NOT_MOBILE.get(kind, "not a mobile")
    raise PhoneRefused(
        f"not a mobile number ({what})",
        f"not a mobile number ({what}); SMS and WhatsApp need a mobile",
    )


# -- reading the file ---------------------------------------------------------------------


def expected_header(settings: Settings) -> list[str]:
    """The import header, in order: addresses, locale, consent, then the panel fields."""
    return [PHONE, TELEGRAM, LOCALE, CONSENT, *(f.name for f in settings.panel.fields)]


def read_panel_file(path: Path, settings: Settings) -> ParsedFile:
    """Read and check a panel CSV file. Raises PanelFileError if it is unusable."""
    with open_panel_file(path, settings) as stream:
        return stream.collect()


def parse_panel_csv(data: bytes, settings: Settings) -> ParsedFile:
    """Check every row of a panel CSV. Raises PanelFileError if the file is unusable."""
    return PanelStream(io.BytesIO(data), settings).collect()


@contextmanager
def open_panel_file(path: Path, settings: Settings) -> Iterator[PanelStream]:
    """The file's rows one at a time (memory stays small for a file of any size)."""
    try:
        binary = Path(path).open("rb")
    except OSError as exc:
        raise PanelFileError(f"cannot read the file: {exc.strerror or exc}") from None
    with binary:
        yield PanelStream(binary, settings)


def _check_utf8(binary: BinaryIO) -> None:
    """Raise PanelFileError naming the line of the first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    first = True
    while chunk := binary.read(1 << 20):
        if first and chunk.startswith(codecs.BOM_UTF8):
            chunk = chunk[len(codecs.BOM_UTF8) :]
        first = False
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            seen = bytes(exc.object)  # what the codec saw: any held-back bytes, then chunk
            line = lines + seen[: exc.start].count(b"\n") + 1
            raise PanelFileError(
                f"the file is not UTF-8 text (byte 0x{seen[exc.start]:02x} on line {line}); "
                'save it as "CSV UTF-8"'
            ) from None
        lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise PanelFileError(
            f"the file is not UTF-8 text (it ends inside a character on line {lines + 1}); "
            'save it as "CSV UTF-8"'
        ) from None


class PanelStream:
    """A panel CSV read row by row: the header is checked when it is opened.

    Iterating yields a :class:`PanelRow` or a :class:`Problem` per data row, in file order.
    Raises PanelFileError if the file is unusable (not UTF-8, a bad header, broken CSV).
    """

    def __init__(self, binary: BinaryIO, settings: Settings) -> None:
        _check_utf8(binary)
        binary.seek(0)
        self.settings = settings
        # utf-8-sig: spreadsheet programs often start "CSV UTF-8" files with a BOM.
        # newline="" keeps quoted line breaks inside fields and accepts \n, \r\n and \r.
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._text)
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            raise PanelFileError(f"line 1: not readable as CSV ({exc})") from None
        if header is None:
            raise PanelFileError("the file is empty")
        self.header = header
        self.columns, self.warnings = _check_header(header, settings)

    def __iter__(self) -> Iterator[PanelRow | Problem]:
        reader = self._reader
        try:
            last_line = reader.line_num
            for cells in reader:
                # A record may span several lines (a quoted newline): report where it starts.
                line, last_line = last_line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                yield _parse_row(cells, self.header, self.columns, self.settings, line)
        except csv.Error as exc:
            raise PanelFileError(f"line {reader.line_num}: not readable as CSV ({exc})") from None

    def check_csv(self) -> None:
        """Read to the end as CSV only (no row checks): PanelFileError if it breaks."""
        try:
            for _ in self._reader:
                pass
        except csv.Error as exc:
            raise PanelFileError(
                f"line {self._reader.line_num}: not readable as CSV ({exc})"
            ) from None

    def collect(self) -> ParsedFile:
        parsed = ParsedFile(warnings=list(self.warnings))
        for row in self:
            (parsed.rows if isinstance(row, PanelRow) else parsed.problems).append(row)
        return parsed


def _check_header(header: list[str], settings: Settings) -> tuple[dict[str, int], list[str]]:
    """(column name -> index, warnings). Raises PanelFileError."""
    names = [h.strip().lower() for h in header]
    fields = [f.name for f in settings.panel.fields]
    derived = {f.name for f in settings.panel.fields if f.derive_from == POSTCODE}
    known = {PHONE, TELEGRAM, LOCALE, CONSENT, *fields, *EXPORT_ONLY}
    if derived:
        known.add(POSTCODE)  # read to derive those fields, never stored
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
    if POSTCODE in columns:
        missing = [name for name in missing if name not in derived]
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
    kinds: list[str] = []

    def refuse(message: str, kind: str | None = None) -> None:
        reasons.append(message)
        kinds.append(kind or message)

    if any(c.strip() for c in cells[len(header) :]):
        refuse(
            f"{len(cells)} values, but the header has {len(header)} columns",
            "more values than the header has columns",
        )
    status = cell("status").lower()
    if status == PanellistStatus.OPTED_OUT:
        refuse("opted out; not re-subscribed by import")
    elif status == PanellistStatus.ERASED:
        refuse("erased; nothing to import")

    phone = chat_id = None
    if raw := cell(PHONE):
        # A phone imported here is texted (SMS, or WhatsApp with the same number): only a
        # mobile will do. A row with a telegram_chat_id alone has nothing to check.
        try:
            phone = mobile_phone(raw)
        except PhoneRefused as exc:
            refuse(f'{PHONE} "{raw}": {exc}', f"{PHONE}: {exc.kind}")
        except ValueError as exc:
            refuse(f'{PHONE} "{raw}": {exc}', f"{PHONE}: {exc}")
    if raw := cell(TELEGRAM):
        if re.fullmatch(r"-?[0-9]+", raw):
            # Telegram's ids have at most 52 significant bits (users positive, groups
            # negative): anything else is a typing mistake, not a chat to send to.
            if len(raw) <= 20 and 0 < abs(int(raw)) < TELEGRAM_ID_LIMIT:
                chat_id = str(int(raw))
            else:
                refuse(
                    f'{TELEGRAM} "{raw[:24]}": not a Telegram chat id (at most 52 bits, not 0)',
                    f"{TELEGRAM}: out of Telegram's range",
                )
        else:
            refuse(
                f'{TELEGRAM} "{raw}": must be digits, optionally after a "-"',
                f"{TELEGRAM}: not digits",
            )
    if not cell(PHONE) and not cell(TELEGRAM):
        refuse(f"needs a {PHONE} or a {TELEGRAM}")

    locale = None
    if raw := cell(LOCALE):
        wanted = raw.replace("_", "-").lower()
        locale = next((c for c in settings.bot.locales if c.lower() == wanted), None)
        if locale is None:
            refuse(
                f'{LOCALE} "{raw}": not one of {", ".join(settings.bot.locales)}',
                f"{LOCALE}: not one of the panel's",
            )

    consent_at = None
    if raw := cell(CONSENT):
        try:
            consent_at = parse_consent(raw, ZoneInfo(settings.bot.timezone))
        except ValueError as exc:
            refuse(f'{CONSENT} "{raw}": {exc}', f"{CONSENT}: {exc}")

    demographics = {}
    derived = [f for f in settings.panel.fields if f.derive_from == POSTCODE]
    if derived and (raw := cell(POSTCODE)) and any(not cell(f.name) for f in derived):
        demographics.update(_from_postcode(raw, derived, settings, refuse))
    for f in settings.panel.fields:
        if raw := cell(f.name):
            # Spreadsheets change case and spacing; the stored value is the configured one.
            value = next((v for v in f.values if v.casefold() == raw.casefold()), None)
            if value is None:
                refuse(
                    f'{f.name} "{raw}": not one of {", ".join(f.values)}',
                    f"{f.name}: not one of its values",
                )
            else:
                demographics[f.name] = value
    if reasons:
        return Problem(line, "; ".join(reasons), tuple(kinds))
    return PanelRow(line, phone, chat_id, locale, consent_at, demographics)


def _from_postcode(raw: str, derived: list, settings: Settings, refuse: Any) -> dict[str, str]:
    """The derived fields' values for a postcode cell (``outside_area`` when not listed)."""
    from bot import postcodes

    postcode = postcodes.normalise(raw)
    if postcode is None:
        refuse(f'{POSTCODE} "{raw}": not a UK postcode', f"{POSTCODE}: not a UK postcode")
        return {}
    if settings.panel.postcode_lookup is None:
        return {}
    try:
        lookup = postcodes.load_lookup(settings.panel.postcode_lookup, [f.name for f in derived])
    except postcodes.PostcodeLookupError as exc:
        refuse(f"{POSTCODE}: {exc}", f"{POSTCODE}: the lookup cannot be read")
        return {}
    row = lookup.get(postcode)
    return {f.name: row[f.name] if row else postcodes.OUTSIDE_AREA for f in derived}


class ProblemLog:
    """The refused rows for a person to read: the first ``shown`` in full, the rest counted.

    A file of junk under a valid header would otherwise print a line per row (hundreds of
    thousands); after ``shown`` lines the rest are summed up by reason, in bounded memory.
    """

    def __init__(self, shown: int = 20) -> None:
        self.shown = shown
        self.total = 0
        self._rest: dict[str, int] = {}

    def add(self, problem: Problem) -> str | None:
        """The line to print for this problem now, or None once it is only counted."""
        self.total += 1
        if self.total <= self.shown:
            return str(problem)
        for reason in problem.reasons():
            self._rest[reason] = self._rest.get(reason, 0) + 1
        return None

    def tail(self) -> str | None:
        """E.g. "... and 472,950 more rows: phone: not a mobile number (a landline) (12,000)"."""
        more = self.total - self.shown
        if more <= 0:
            return None
        by_count = sorted(self._rest.items(), key=lambda item: (-item[1], item[0]))
        reasons = ", ".join(f"{reason} ({count:,})" for reason, count in by_count)
        return f"... and {more:,} more row{'s' if more != 1 else ''}: {reasons}"


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


def consent_cell(stored: str | None, settings: Settings) -> str | None:
    """A stored consent time for the CSV: a date when it is midnight, local time.

    An import reads a date as local midnight (``parse_consent``), so a date given as a date
    comes back as that date, not as the UTC time before it (2026-06-03T23:00:00+00:00 for
    2026-06-04 in summer, a day early in a spreadsheet); importing it again gives the same
    time. Other times stay UTC date-times.
    """
    if not stored:
        return stored
    try:
        value = datetime.fromisoformat(stored)
    except ValueError:
        return stored
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(ZoneInfo(settings.bot.timezone))
    return local.date().isoformat() if local.time() == time(0) else stored


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
        flat[CONSENT] = consent_cell(flat.get(CONSENT), settings)
        writer.writerow(safe_row("" if flat.get(c) is None else flat[c] for c in columns))


def write_json(rows: list[dict[str, Any]], settings: Settings, out: TextIO) -> None:
    """Rows from ``bot.panel.export_rows`` as a JSON list (a consent date stays a date)."""
    rows = [
        {**row, CONSENT: consent_cell(row[CONSENT], settings)} if row.get(CONSENT) else row
        for row in rows
    ]
    json.dump(rows, out, ensure_ascii=False, indent=2)
    out.write("\n")
