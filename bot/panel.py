"""Panel administration: import from CSV, export, subject access and erasure (no click here).

The command line (``bot.cli.panel_cmd``) calls these functions; reading and checking the
CSV is in ``bot.panel_csv``, the SQL in ``bot.storage.panel_data`` and
``bot.storage.panellists``. Personal data never reaches a log line in clear: numbers are
masked with :func:`mask`, and audit details hold only ids, counts and line numbers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.inbox import erase_payloads, payloads_of, prune_payloads, truncate_inbox_log
from bot.models import Address, PanellistStatus, iso, parse_iso, utcnow
from bot.panel_csv import (
    PHONE,
    TELEGRAM,
    PanelFileError,
    PanelRow,
    ParsedFile,
    Problem,
    expected_header,
    export_columns,
    normalise_phone,
    parse_panel_csv,
    read_panel_file,
    write_csv,
    write_json,
)
from bot.privacy import PHONE_CHANNELS, address_hash, mask
from bot.storage import panel_data
from bot.storage import panellists as panellist_store
from bot.storage.conn import Conn, ReadConn
from bot.storage.panel_data import Known

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.storage.db import Database

__all__ = [
    "EraseReport",
    "ImportReport",
    "PanelFileError",
    "PanelRow",
    "ParsedFile",
    "Problem",
    "PruneReport",
    "SuppressedOnly",
    "erase_panellist",
    "expected_header",
    "export_columns",
    "export_rows",
    "import_parsed",
    "import_rows",
    "mask",
    "parse_panel_csv",
    "prune_messages",
    "read_panel_file",
    "resolve_panellist",
    "subject_access",
    "write_csv",
    "write_json",
]

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


class SuppressedOnly(LookupError):
    """No record matches, but the address is on the suppression list (e.g. it was erased)."""


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    updated: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.rejected} rejected"


# -- storing the rows ---------------------------------------------------------------------


async def import_parsed(
    db: Database, hash_key: bytes, settings: Settings, parsed: ParsedFile, *, actor: str = "cli"
) -> ImportReport:
    """Store the good rows of a checked file; the report lists every refused row by line."""
    report = await import_rows(db, hash_key, settings, parsed.rows, actor=actor)
    report.problems = sorted(parsed.problems + report.problems, key=lambda p: p.line)
    report.warnings = parsed.warnings + report.warnings
    return report


async def import_rows(
    db: Database,
    hash_key: bytes,
    settings: Settings,
    rows: Sequence[PanelRow],
    *,
    actor: str = "cli",
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Add or update panellists, a transaction per batch; refused rows go in the report."""
    report = ImportReport()
    for start in range(0, len(rows), batch_size):
        async with db.transaction() as conn:
            await _import_batch(
                conn, hash_key, settings, rows[start : start + batch_size], report, actor
            )
    logger.info("panel import: %s", report.summary())
    return report


async def _import_batch(
    conn: Conn,
    key: bytes,
    settings: Settings,
    rows: Sequence[PanelRow],
    report: ImportReport,
    actor: str,
) -> None:
    # One look-up per table for the batch instead of several per row keeps 2,000 rows fast.
    phones = [r.phone for r in rows if r.phone]
    known = {
        "sms": await panel_data.panellists_by_address(conn, "sms", phones),
        "whatsapp": await panel_data.panellists_by_address(conn, "whatsapp", phones),
        "telegram": await panel_data.panellists_by_address(
            conn, "telegram", [r.chat_id for r in rows if r.chat_id]
        ),
    }
    hashes = {a: address_hash(key, a) for r in rows for a in r.addresses}
    suppressed = await panel_data.suppressions_by_hash(conn, hashes.values())
    audit: list[tuple[str, int | None, dict[str, Any]]] = []
    for row in rows:
        # Who holds each address already. A phone also finds someone who joined on WhatsApp
        # with it; they then get the SMS address added rather than a second record.
        holders = {a: known[a.channel].get(a.id) for a in row.addresses}
        owners = {
            a: holder or (known["whatsapp"].get(a.id) if a.channel == "sms" else None)
            for a, holder in holders.items()
        }
        people = {p.id: p for p in owners.values() if p is not None}
        if len(people) > 1:
            ids = " and ".join(str(i) for i in sorted(people))
            report.problems.append(
                Problem(row.line, f"{PHONE} and {TELEGRAM} belong to different panellists ({ids})")
            )
            continue
        person = next(iter(people.values()), None)
        if person is not None and person.status == PanellistStatus.OPTED_OUT:
            report.problems.append(Problem(row.line, "opted out; not re-subscribed by import"))
            continue
        new = [a for a, holder in holders.items() if holder is None]
        # A suppression only stands between us and addresses nobody on the panel holds: a
        # person holding the address has been in touch since it was suppressed.
        unheld = [a for a, owner in owners.items() if owner is None]
        refusal, lifts = _suppression_check(row, unheld, hashes, suppressed)
        if refusal:
            report.problems.append(Problem(row.line, refusal))
            continue
        for a in lifts:
            await panellist_store.lift_suppression(conn, key, a)
            suppressed.pop(hashes[a], None)
            logger.info("suppression lifted for %s: fresh consent on import", mask(a.id))
        if person is None:
            person = await _create(conn, settings, row)
            report.added += 1
            result = "added"
        else:
            await _update(conn, settings, person, row)
            report.updated += 1
            result = "updated"
        for a in new:
            await panellist_store.add_address(conn, person.id, a)
            known[a.channel][a.id] = person
        audit.append(("imported", person.id, {"result": result, "line": row.line}))
        audit.extend(("suppression_lifted", person.id, {"channel": a.channel}) for a in lifts)
    await panel_data.record_audit_many(conn, audit, actor)


def _suppression_check(
    row: PanelRow,
    new: list[Address],
    hashes: dict[Address, str],
    suppressed: dict[str, tuple[str, str]],
) -> tuple[str | None, list[Address]]:
    """(why the row is refused, or None; the suppressions that fresh consent lifts)."""
    lifts = []
    for a in new:
        entry = suppressed.get(hashes[a])
        if entry is None:
            continue
        reason, created_at = entry
        # Only consent given after the person left can bring them back (PECR).
        if row.consent_at is None or row.consent_at <= parse_iso(created_at):
            column, value = (PHONE, a.id) if a.channel == "sms" else (TELEGRAM, a.id)
            return (
                f'{column} "{value}": on the suppression list ({reason.replace("_", " ")} '
                f"{created_at[:10]}); needs a consent_at later than that",
                [],
            )
        lifts.append(a)
    return None, lifts


async def _create(conn: Conn, settings: Settings, row: PanelRow) -> Known:
    consented = row.consent_at is not None
    status = PanellistStatus.ACTIVE if consented else PanellistStatus.PENDING
    # Without consent they wait at the consent question: waves only invite active people.
    stage = None if consented else "consent"
    locale = row.locale or settings.bot.default_locale
    pid = await panellist_store.create(
        conn,
        status=status,
        locale=locale,
        stage=stage,
        demographics=row.demographics,
        consent_at=row.consent_at,
        consent_method="import" if consented else None,
        source="import",
    )
    consent = iso(row.consent_at) if row.consent_at else None
    return Known(pid, status.value, locale, dict(row.demographics), consent, stage)


async def _update(conn: Conn, settings: Settings, person: Known, row: PanelRow) -> None:
    # Blank cells keep what is stored: an import adds to what people told us in chat.
    changes: dict[str, Any] = {}
    locale = row.locale or person.locale or settings.bot.default_locale
    if locale != person.locale:
        changes["locale"] = person.locale = locale
    demographics = {**person.demographics, **row.demographics}
    if demographics != person.demographics:
        changes["demographics"] = person.demographics = demographics
    consent = iso(row.consent_at) if row.consent_at else None
    if consent and consent != person.consent_at:
        changes.update(consent_at=row.consent_at, consent_method="import")
        person.consent_at = consent
    if person.consent_at and person.status == PanellistStatus.PENDING:
        changes.update(status=PanellistStatus.ACTIVE, stage=None, stage_misses=0)
        person.status, person.stage = PanellistStatus.ACTIVE.value, None
    if changes:
        await panellist_store.update(conn, person.id, **changes)


# -- export -------------------------------------------------------------------------------


async def export_rows(conn: ReadConn, settings: Settings) -> list[dict[str, Any]]:
    """The whole panel, one dict per person; erased people carry only their id and status."""
    by_id = await panel_data.all_addresses(conn)
    out = []
    for r in await panel_data.all_panellists(conn):
        row: dict[str, Any] = {"id": r["id"], "status": r["status"]}
        if r["status"] != PanellistStatus.ERASED:
            addresses = by_id.get(r["id"], [])
            phone = next((a for a in addresses if a.channel == "sms"), None) or next(
                (a for a in addresses if a.channel == "whatsapp"), None
            )
            chat = next((a for a in addresses if a.channel == "telegram"), None)
            row.update(
                phone=phone.id if phone else None,
                telegram_chat_id=chat.id if chat else None,
                locale=r["locale"],
                consent_at=r["consent_at"],
                created_at=r["created_at"],
                other_addresses=[str(a) for a in addresses if a not in (phone, chat)],
                demographics=json.loads(r["demographics"] or "{}"),
            )
        out.append(row)
    return out


# -- finding one person, subject access, erasure ------------------------------------------


_PHONES = ["sms", "whatsapp"]
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _candidates(text: str) -> list[Address]:
    """The addresses ``text`` may name: ``channel:id`` or a phone number (SMS or WhatsApp).

    A number ``phonenumbers`` calls invalid (a drama-range one, say) is still looked for as
    written, E.164-style: the bot stores a webhook sender's address as the provider gave it.
    """
    channel = None
    if ":" in text:
        address = Address.parse(text)  # ValueError for a malformed one
        if address.channel not in PHONE_CHANNELS:
            return [address]
        channel, text = address.channel, address.id
    channels = [channel, "whatsapp" if channel == "sms" else "sms"] if channel else _PHONES
    exact = "".join(text.split())
    found = []
    try:
        phone = normalise_phone(text)
        found = [Address(c, phone) for c in channels]
    except ValueError:
        if channel is None and not _E164.fullmatch(exact):
            raise
    found += [Address(c, exact) for c in channels if Address(c, exact) not in found]
    return found


async def resolve_panellist(conn: ReadConn, hash_key: bytes, text: str) -> int | None:
    """The panellist named by a numeric id, a phone number in any format, or ``channel:id``.

    Returns None when nothing matches. Raises :class:`SuppressedOnly` when no record matches
    but the address is on the suppression list, so that a subject access request can be
    answered truthfully ("we hold only a keyed hash of this number").
    """
    text = text.strip()
    # Ids are short; a long run of digits is a phone number written without spaces.
    is_id = text.isascii() and text.isdigit() and len(text) <= 9
    if is_id and await panel_data.panellist_exists(conn, int(text)):
        return int(text)
    try:
        addresses = _candidates(text)
    except ValueError:
        return None
    found = await panel_data.owner_of_any(conn, addresses)
    if found is None:
        entry = await panellist_store.suppression(conn, hash_key, addresses[0])
        if entry is not None:
            reason, since = entry
            raise SuppressedOnly(
                f"no panellist matches {text!r}; it is on the suppression list "
                f"({reason.replace('_', ' ')} {since.date().isoformat()}), "
                "which holds only a keyed hash of it"
            )
    return found


async def subject_access(
    conn: ReadConn,
    hash_key: bytes,
    panellist_id: int,
    *,
    database: Path | None = None,
) -> dict[str, Any] | None:
    """Everything held about one person, as JSON-ready data; None for an unknown id.

    With ``database`` (the panel database's path), webhook payloads from or to them still
    waiting in the inbox beside it are included, contents and all.
    """
    data = await panel_data.everything_about(conn, panellist_id)
    if data is None:
        return None
    for a in data["addresses"]:
        entry = await panellist_store.suppression(
            conn, hash_key, Address(a["channel"], a["address"])
        )
        a["suppressed"] = {"reason": entry[0], "since": iso(entry[1])} if entry else None
    if database is not None:
        addresses = [Address(a["channel"], a["address"]) for a in data["addresses"]]
        wanted = {f"{c}:{i}" for c, i in panel_data.address_pairs(addresses)}
        data["waiting_webhook_payloads"] = await payloads_of(database, wanted)
    return data


@dataclass(slots=True)
class EraseReport:
    panellist_id: int
    already_erased: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    # False when another process kept the file from being vacuumed or its log emptied now.
    scrubbed: bool = True
    # The same for the inbox's log (None: there is no inbox).
    inbox_scrubbed: bool | None = None

    def summary(self) -> str:
        if self.already_erased:
            return f"panellist {self.panellist_id} was already erased; nothing to do"
        c = self.counts.get
        return (
            f"erased panellist {self.panellist_id}: {_n(c('addresses', 0), 'address')} "
            f"deleted, {_n(c('inbound_messages', 0), 'inbound message')} and "
            f"{_n(c('outbox_messages', 0), 'outbound message')} cleared "
            f"({c('outbox_cancelled', 0)} queued cancelled), "
            f"{_n(c('survey_sessions', 0), 'survey session')} and "
            f"{_n(c('invitations', 0), 'invitation')} detached (answers kept), "
            f"{_n(self.suppressed, 'suppression entry', 'suppression entries')} added"
            + (
                f", {_n(c('inbox_payloads', 0), 'waiting webhook payload')} deleted"
                if c("inbox_payloads")
                else ""
            )
        )


def _n(count: int, one: str, many: str | None = None) -> str:
    if count == 1:
        return f"1 {one}"
    return f"{count} {many or (one + 'es' if one.endswith('s') else one + 's')}"


async def erase_panellist(
    db: Database, hash_key: bytes, panellist_id: int, *, actor: str = "cli"
) -> EraseReport:
    """Erase a person's data from every table in one transaction; keep their answers detached.

    Every address they had goes on the suppression list (as a keyed hash), so the number is
    neither messaged nor re-imported without fresh consent. Afterwards the file is vacuumed
    and the write-ahead log emptied, so no freed page keeps an old copy of the data.
    Raises LookupError for an unknown id.
    """
    report = EraseReport(panellist_id)
    # The database runs with secure_delete on, so what a delete or update frees is zeroed.
    async with db.transaction() as conn:
        person = await panellist_store.get(conn, panellist_id)
        if person is None:
            raise LookupError(f"no panellist has the id {panellist_id}")
        if person.status == PanellistStatus.ERASED:
            report.already_erased = True
            return report
        addresses = await panellist_store.addresses_of(conn, panellist_id)
        report.counts = await panel_data.erase_records(conn, panellist_id, addresses)
        hashes = set()
        for a in addresses:
            await panellist_store.suppress(conn, hash_key, a, "erased")
            hashes.add(address_hash(hash_key, a))
        report.suppressed = len(hashes)
        await panel_data.record_audit_many(
            conn,
            [("erased", panellist_id, {**report.counts, "suppressed": len(hashes)})],
            actor,
        )
    # Webhook payloads still waiting in the inbox ([web] workers >= 1) hold the number too.
    wanted = {f"{channel}:{ident}" for channel, ident in panel_data.address_pairs(addresses)}
    report.counts["inbox_payloads"] = await erase_payloads(db.path, wanted)
    # The inbox's log still holds every payload of theirs handled lately (web processes
    # leave checkpoints to the main process): empty it too.
    report.inbox_scrubbed = await truncate_inbox_log(db.path)
    report.scrubbed = await panel_data.scrub_free_space(db)
    logger.info("erased panellist %d", panellist_id)
    return report


# -- retention ----------------------------------------------------------------------------


@dataclass(slots=True)
class PruneReport:
    before: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts.get
        return (
            f"message texts older than {iso(self.before)[:10]} deleted: "
            f"{_n(c('inbound_messages', 0), 'inbound message')}, "
            f"{_n(c('outbox_messages', 0), 'outbound message')}, "
            f"{_n(c('inbox_payloads', 0), 'waiting webhook payload')}; answers kept"
        )


async def prune_messages(
    db: Database, keep_for: timedelta, *, now: datetime | None = None
) -> PruneReport:
    """Apply ``[privacy] keep_messages_for``: delete message texts older than ``keep_for``.

    Answers stay (they are survey data, held apart from the messages); the texts of
    messages in and out, the provider's ids for them and old webhook payloads go.
    """
    before = (now or utcnow()) - keep_for
    report = PruneReport(before)
    report.counts = await panel_data.prune_messages(db, iso(before))
    report.counts["inbox_payloads"] = await prune_payloads(db.path, before.timestamp())
    total = sum(report.counts.values())
    if total:
        await audit_prune(db, report)
    logger.info("retention: %s", report.summary())
    return report


async def audit_prune(db: Database, report: PruneReport) -> None:
    async with db.transaction() as conn:
        await panel_data.record_audit_many(
            conn,
            [("messages_pruned", None, {**report.counts, "before": iso(report.before)})],
            "retention",
        )
