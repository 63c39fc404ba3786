"""SQL behind ``panelbot panel``: bulk look-ups for import, export, subject access, erasure.

The row-at-a-time repository functions in ``bot.storage.panellists`` suit the engine, which
handles one person per message. Importing thousands of rows needs set-based look-ups, and
subject access and erasure need to see every table that can hold a person's data, so that
SQL lives here, in one place that a new table's author can find.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.models import Address, iso, utcnow
from bot.privacy import PHONE_CHANNELS
from bot.storage import simulator as sim_store
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import Database, fetch_all, fetch_one

# SQLite's limit on host parameters is 32766 on current builds; 500 keeps statements small.
_CHUNK = 500


@dataclass(slots=True)
class Known:
    """A panellist already holding an address, as import needs to see them."""

    id: int
    status: str
    locale: str | None
    demographics: dict[str, str]
    consent_at: str | None
    stage: str | None


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def panellists_by_address(
    conn: ReadConn, channel: str, ids: Iterable[str]
) -> dict[str, Known]:
    """Map each of ``ids`` on ``channel`` that belongs to someone to that panellist."""
    wanted = sorted(set(ids))
    found: dict[str, Known] = {}
    for chunk in _chunks(wanted):
        marks = ",".join("?" * len(chunk))
        rows = await fetch_all(
            conn,
            "SELECT a.address, p.id, p.status, p.locale, p.demographics, p.consent_at, p.stage "
            "FROM addresses a JOIN panellists p ON p.id = a.panellist_id "
            f"WHERE a.channel = ? AND a.address IN ({marks})",
            (channel, *chunk),
        )
        for r in rows:
            found[r["address"]] = Known(
                r["id"],
                r["status"],
                r["locale"],
                json.loads(r["demographics"] or "{}"),
                r["consent_at"],
                r["stage"],
            )
    return found


async def suppressions_by_hash(conn: ReadConn, hashes: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Map each suppressed hash among ``hashes`` to (reason, created_at)."""
    wanted = sorted(set(hashes))
    found: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(wanted):
        marks = ",".join("?" * len(chunk))
        rows = await fetch_all(
            conn,
            f"SELECT address_hash, reason, created_at FROM suppressions "
            f"WHERE address_hash IN ({marks})",
            chunk,
        )
        found.update({r[0]: (r[1], r[2]) for r in rows})
    return found


async def record_audit_many(
    conn: Conn,
    entries: Sequence[tuple[str, int | None, dict[str, Any]]],
    actor: str,
) -> None:
    """Audit rows (action, panellist id, detail) in one statement; details hold no personal data."""
    now = iso(utcnow())
    await conn.executemany(
        "INSERT INTO audit_log (at, actor, action, panellist_id, detail) VALUES (?, ?, ?, ?, ?)",
        [(now, actor, a, pid, json.dumps(d, ensure_ascii=False)) for a, pid, d in entries],
    )


async def panellist_exists(conn: ReadConn, panellist_id: int) -> bool:
    row = await fetch_one(conn, "SELECT 1 FROM panellists WHERE id = ?", (panellist_id,))
    return row is not None


async def owner_of_any(conn: ReadConn, addresses: Iterable[Address]) -> int | None:
    """The panellist holding the first of ``addresses`` that anyone holds."""
    for address in addresses:
        row = await fetch_one(
            conn,
            "SELECT panellist_id FROM addresses WHERE channel = ? AND address = ?",
            (address.channel, address.id),
        )
        if row:
            return int(row[0])
    return None


# -- export -------------------------------------------------------------------------------


async def all_panellists(conn: ReadConn) -> list[sqlite3.Row]:
    return await fetch_all(
        conn,
        "SELECT id, status, locale, demographics, consent_at, created_at FROM panellists "
        "ORDER BY id",
    )


async def all_addresses(conn: ReadConn) -> dict[int, list[Address]]:
    """Every address by panellist id, in the order they were added."""
    rows = await fetch_all(
        conn, "SELECT panellist_id, channel, address FROM addresses ORDER BY panellist_id, id"
    )
    out: dict[int, list[Address]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(Address(r[1], r[2]))
    return out


# -- subject access -----------------------------------------------------------------------


def _dicts(rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


async def everything_about(conn: ReadConn, panellist_id: int) -> dict[str, Any] | None:
    """Every row that refers to one panellist, as plain data (a subject access request)."""
    row = await fetch_one(conn, "SELECT * FROM panellists WHERE id = ?", (panellist_id,))
    if row is None:
        return None
    person = dict(row)
    person["demographics"] = _json_value(person["demographics"])
    p = (panellist_id,)
    addresses = await fetch_all(
        conn,
        "SELECT channel, address, created_at, last_inbound_at FROM addresses "
        "WHERE panellist_id = ? ORDER BY id",
        p,
    )
    invitations = await fetch_all(
        conn,
        "SELECT i.wave_id, s.survey_id, s.version, i.status, i.created_at, i.sent_at, "
        "i.reminded_at FROM invitations i JOIN waves w ON w.id = i.wave_id "
        "JOIN surveys s ON s.id = w.survey_row_id WHERE i.panellist_id = ? ORDER BY i.id",
        p,
    )
    sessions = await fetch_all(
        conn,
        "SELECT ss.id, ss.wave_id, s.survey_id, s.version, ss.state, ss.started_at, "
        "ss.finished_at FROM survey_sessions ss JOIN surveys s ON s.id = ss.survey_row_id "
        "WHERE ss.panellist_id = ? ORDER BY ss.id",
        p,
    )
    answers = await fetch_all(
        conn,
        "SELECT a.session_id, a.question_id, a.value, a.answered_at FROM answers a "
        "JOIN survey_sessions ss ON ss.id = a.session_id WHERE ss.panellist_id = ? "
        "ORDER BY a.id",
        p,
    )
    by_session: dict[int, list[dict[str, Any]]] = {}
    for a in answers:
        by_session.setdefault(a["session_id"], []).append(
            {
                "question_id": a["question_id"],
                "value": _json_value(a["value"]),
                "answered_at": a["answered_at"],
            }
        )
    # Every column, the provider's message ids and errors included: a subject access
    # request gets everything held, not a summary.
    inbound = await fetch_all(
        conn,
        "SELECT id, channel, provider_message_id, text, received_at FROM inbound_messages "
        "WHERE panellist_id = ? ORDER BY received_at, id",
        p,
    )
    # Also messages to their addresses that carry no panellist id (sent before they had one).
    pairs = address_pairs(Address(a["channel"], a["address"]) for a in addresses)
    match = " OR ".join(["panellist_id = ?"] + ["(channel = ? AND address = ?)"] * len(pairs))
    outbound = await fetch_all(
        conn,
        "SELECT id, channel, address, kind, text, status, created_at, sent_at, updated_at, "
        "provider_message_id, error_code, error_class, last_error, attempts, "
        "next_attempt_at, template, extra, priority, idempotency_key "
        f"FROM outbox WHERE {match} ORDER BY created_at, id",
        (panellist_id, *(v for pair in pairs for v in pair)),
    )
    audit = await fetch_all(
        conn,
        "SELECT at, actor, action, detail FROM audit_log WHERE panellist_id = ? ORDER BY id",
        p,
    )
    # Which browser started a simulator person: keyed hashes of its cookie and address.
    sims = [a["address"] for a in addresses if a["channel"] == "sim"]
    simulator = (
        await fetch_all(
            conn,
            "SELECT address, owner_hash, client_hash, created_at FROM simulator_owners "
            f"WHERE address IN ({','.join('?' * len(sims))})",
            sims,
        )
        if sims
        else []
    )
    return {
        "panellist": person,
        "addresses": _dicts(addresses),
        "demographics": person["demographics"],
        "consent": {
            "consent_at": person["consent_at"],
            "consent_method": person["consent_method"],
            "source": person["source"],
        },
        "invitations": _dicts(invitations),
        "survey_sessions": [{**dict(s), "answers": by_session.get(s["id"], [])} for s in sessions],
        "inbound_messages": _dicts(inbound),
        "outbound_messages": [{**dict(o), "extra": _json_value(o["extra"])} for o in outbound],
        "audit_log": [{**dict(a), "detail": _json_value(a["detail"])} for a in audit],
        "simulator_owners": _dicts(simulator),
    }


# -- erasure ------------------------------------------------------------------------------


def address_pairs(addresses: Iterable[Address]) -> list[tuple[str, str]]:
    """(channel, id) pairs to scrub; a phone number is scrubbed on SMS and WhatsApp alike."""
    pairs: set[tuple[str, str]] = set()
    for a in addresses:
        channels = PHONE_CHANNELS if a.channel in PHONE_CHANNELS else (a.channel,)
        pairs.update((channel, a.id) for channel in channels)
    return sorted(pairs)


async def erase_records(conn: Conn, panellist_id: int, addresses: list[Address]) -> dict[str, int]:
    """Remove a person's data from every table, keeping answers detached from them.

    Runs inside the caller's transaction. Returns how many rows each step touched.
    """
    now = iso(utcnow())
    p = (panellist_id,)
    counts: dict[str, int] = {}

    async def run(name: str, sql: str, params: Sequence[Any]) -> None:
        cursor = await conn.execute(sql, params)
        counts[name] = counts.get(name, 0) + cursor.rowcount

    # Outbox rows are matched by address as well as by id: a reply queued before the person
    # had a record (or after a partial clean-up) carries their number but no panellist id.
    pairs = address_pairs(addresses)
    match = " OR ".join(["panellist_id = ?"] + ["(channel = ? AND address = ?)"] * len(pairs))
    match_params = [panellist_id, *(v for pair in pairs for v in pair)]
    await run(
        "outbox_cancelled",
        f"UPDATE outbox SET status = 'cancelled', updated_at = ? "
        f"WHERE ({match}) AND status IN ('queued', 'held')",
        (now, *match_params),
    )
    # The provider's message ids go too (Twilio's API would give the number back for a
    # SID), and so do the keys and times that could match a row to the provider's logs: a
    # key becomes "erased:<row id>" and every time is kept to the day.
    await run(
        "outbox_messages",
        f"UPDATE outbox SET address = NULL, text = NULL, last_error = NULL, "
        f"provider_message_id = NULL, extra = '{{}}', panellist_id = NULL, "
        f"idempotency_key = 'erased:' || id, created_at = {_day('created_at')}, "
        f"sent_at = {_day('sent_at')}, next_attempt_at = {_day('next_attempt_at')}, "
        f"updated_at = {_day('updated_at')} WHERE {match}",
        match_params,
    )
    await run(
        "inbound_messages",
        "UPDATE inbound_messages SET text = NULL, panellist_id = NULL, "
        f"provider_message_id = 'erased:' || id, received_at = {_day('received_at')} "
        "WHERE panellist_id = ?",
        p,
    )
    # An open survey ends here; its answers so far stay, like a stopped survey's.
    await conn.execute(
        "UPDATE survey_sessions SET state = 'stopped', current_question = NULL, "
        "finished_at = ? WHERE panellist_id = ? AND state = 'active'",
        (now, panellist_id),
    )
    # Answers stay for the results, but their times (to the millisecond, next to the
    # inbound message they came in) would tie them back to a message at the provider.
    await conn.execute(
        f"UPDATE answers SET answered_at = {_day('answered_at')} WHERE session_id IN "
        "(SELECT id FROM survey_sessions WHERE panellist_id = ?)",
        p,
    )
    # So would their row ids: numbered in the order things happened, between other
    # people's rows with exact times. Their sessions and answers get new ids, past every
    # other, in a random order.
    sessions = await fetch_all(
        conn, "SELECT id FROM survey_sessions WHERE panellist_id = ?", (panellist_id,)
    )
    answers = await fetch_all(
        conn,
        "SELECT a.id FROM answers a JOIN survey_sessions ss ON ss.id = a.session_id "
        "WHERE ss.panellist_id = ?",
        p,
    )
    # answers.session_id follows its session within the transaction (checked at COMMIT).
    await conn.execute("PRAGMA defer_foreign_keys = ON")
    for table, rows, references in (
        ("survey_sessions", sessions, ("answers", "session_id")),
        ("answers", answers, None),
    ):
        await _renumber(conn, table, [r[0] for r in rows], references)
    await run(
        "survey_sessions",
        f"UPDATE survey_sessions SET panellist_id = NULL, started_at = {_day('started_at')}, "
        f"finished_at = {_day('finished_at')} WHERE panellist_id = ?",
        p,
    )
    await conn.execute(
        "UPDATE invitations SET status = 'expired' WHERE panellist_id = ? AND status = 'waiting'",
        p,
    )
    await run(
        "invitations",
        f"UPDATE invitations SET panellist_id = NULL, created_at = {_day('created_at')}, "
        f"sent_at = {_day('sent_at')}, reminded_at = {_day('reminded_at')} "
        "WHERE panellist_id = ?",
        p,
    )
    await run("addresses", "DELETE FROM addresses WHERE panellist_id = ?", p)
    # Which browser started a simulator person (keyed hashes of its cookie and network
    # address) goes too; a declined sign-up keeps it a day, an erasure does not.
    sims = [a.id for a in addresses if a.channel == "sim"]
    if sims:
        await conn.execute(
            f"DELETE FROM simulator_owners WHERE address IN ({','.join('?' * len(sims))})", sims
        )
    # What was done stays on record (consent, opt-outs, this erasure), to the day only.
    await conn.execute(
        f"UPDATE audit_log SET at = {_day('at')} WHERE panellist_id = ?",
        p,
    )
    today = _day_of(now)
    await conn.execute(
        "UPDATE panellists SET status = 'erased', locale = NULL, demographics = '{}', "
        "consent_at = NULL, consent_method = NULL, stage = NULL, stage_misses = 0, "
        f"link_code = NULL, opted_out_at = NULL, created_at = {_day('created_at')}, "
        "erased_at = ?, updated_at = ? WHERE id = ?",
        (today, today, panellist_id),
    )
    return counts


async def scrub_erased_stragglers(db: Database) -> int:
    """Clear what a send in flight at an erasure wrote afterwards; how many rows.

    A message already handed to the provider when its person was erased is recorded as
    sent once the provider answers, with its message id and the exact time. Their rows
    are known by their keys ("erased:<id>"); this runs every minute while the bot serves
    (the checkpoint job), and so does what :func:`scrub_strangers` clears.
    """
    strangers = await scrub_strangers(db)
    async with db.transaction() as tx:
        result = await tx.execute(
            "UPDATE outbox SET provider_message_id = NULL, last_error = NULL, "
            f"sent_at = {_day('sent_at')}, updated_at = {_day('updated_at')} "
            "WHERE idempotency_key >= 'erased:' AND idempotency_key < 'erased;' "
            "AND (provider_message_id IS NOT NULL OR last_error IS NOT NULL "
            f"OR substr(updated_at, 11) != '{_MIDNIGHT}' "
            f"OR substr(sent_at, 11) != '{_MIDNIGHT}')",
        )
    return result.rowcount + sum(strangers.values())


# A reply to someone we keep nothing about (a stranger who said no, or sent STOP or HELP,
# before joining) is queued with no panellist. Its text goes when it is sent (mark_sent),
# or on the simulator, whose page reads it back, this long after; its address and the
# provider's id (Twilio gives the number back for it) once the provider's status callbacks
# are over. Their inbound messages keep no text already; the provider's id goes then too.
STRANGER_TEXT_AFTER = timedelta(minutes=2)
STRANGER_ADDRESS_AFTER = timedelta(days=1)
_FINAL = "('sent', 'delivered', 'failed', 'cancelled')"


async def scrub_strangers(db: Database, now: datetime | None = None) -> dict[str, int]:
    """Clear what is left of messages to and from people we keep nothing about; how many
    rows of each kind. Rows of an erased person ("erased:" keys) are cleared at the erasure."""
    now = now or utcnow()
    stranger = (
        f"panellist_id IS NULL AND status IN {_FINAL} "
        "AND substr(idempotency_key, 1, 7) != 'erased:'"
    )
    async with db.transaction() as tx:
        texts = await tx.execute(
            "UPDATE outbox SET text = NULL, last_error = NULL, extra = '{}' "
            f"WHERE {stranger} AND (text IS NOT NULL OR last_error IS NOT NULL) "
            "AND updated_at < ?",
            (iso(now - STRANGER_TEXT_AFTER),),
        )
        addresses = await tx.execute(
            "UPDATE outbox SET address = NULL, provider_message_id = NULL, text = NULL, "
            "last_error = NULL, extra = '{}' "
            f"WHERE {stranger} AND (address IS NOT NULL OR provider_message_id IS NOT NULL) "
            "AND created_at < ?",
            (iso(now - STRANGER_ADDRESS_AFTER),),
        )
        inbound = await tx.execute(
            "UPDATE inbound_messages SET text = NULL, provider_message_id = 'pruned:' || id "
            "WHERE panellist_id IS NULL AND received_at < ? AND (text IS NOT NULL OR "
            "(provider_message_id NOT LIKE 'pruned:%' "
            "AND provider_message_id NOT LIKE 'erased:%'))",
            (iso(now - STRANGER_ADDRESS_AFTER),),
        )
        # Simulator names claimed and never used, or released by a no, a day ago.
        await sim_store.forget_unused_claims(tx, now - STRANGER_ADDRESS_AFTER)
    return {
        "outbox_texts": texts.rowcount,
        "outbox_addresses": addresses.rowcount,
        "inbound_messages": inbound.rowcount,
    }


async def _renumber(
    conn: Conn,
    table: str,
    ids: list[int],
    references: tuple[str, str] | None,
) -> None:
    """Give rows new ids after the largest in ``table``, in a random order, and point the
    ``(table, column)`` that refers to them at the new ids."""
    if not ids:
        return
    order = list(ids)
    secrets.SystemRandom().shuffle(order)
    row = await fetch_one(conn, f"SELECT max(id) FROM {table}")
    top = int(row[0]) if row and row[0] is not None else 0
    moves = [(top + n, old) for n, old in enumerate(order, start=1)]
    await conn.executemany(f"UPDATE {table} SET id = ? WHERE id = ?", moves)
    if references is not None:
        other, column = references
        await conn.executemany(f"UPDATE {other} SET {column} = ? WHERE {column} = ?", moves)


_MIDNIGHT = "T00:00:00.000+00:00"


def _day(column: str) -> str:
    """SQL for a stored time cut to the day it fell on (UTC), NULL staying NULL."""
    return f"(substr({column}, 1, 10) || '{_MIDNIGHT}')"


def _day_of(stamp: str) -> str:
    return stamp[:10] + _MIDNIGHT


async def pragma(conn: ReadConn, name: str) -> Any:
    """The current value of a connection setting such as ``secure_delete``."""
    if not name.isidentifier():
        raise ValueError(f"not a pragma name: {name!r}")
    row = await fetch_one(conn, f"PRAGMA {name}")
    return row[0] if row else None


async def scrub_free_space(db: Database) -> bool:
    """Rewrite the file so no freed page keeps an old copy; empty the write-ahead log.

    Pages freed before ``secure_delete`` was on (a page split, an earlier update) may still
    hold old copies of a row, so erasure ends with a VACUUM. Returns False when another
    connection (another process) got in the way; the next checkpoint finishes the job then.
    """
    # VACUUM cannot run inside a transaction, so Database.transaction() does not fit; the
    # database's own write lock still keeps this process's other writers out meanwhile.
    async with db.exclusive() as writer:
        vacuumed = True
        try:
            await writer.execute("VACUUM")
        except sqlite3.OperationalError:
            vacuumed = False  # e.g. another process is writing; the checkpoint still helps
        row = await fetch_one(writer, "PRAGMA wal_checkpoint(TRUNCATE)")
    return vacuumed and row is not None and row[0] == 0


# -- retention ----------------------------------------------------------------------------

# Rows changed per transaction when pruning, so the engine never waits long for the lock.
PRUNE_CHUNK = 2000


async def prune_messages(db: Database, before: str) -> dict[str, int]:
    """Delete the texts of messages older than ``before`` (an ISO time); how many of each.

    Inbound messages lose their text and the provider's id (Twilio keeps a message's body,
    and gives it back for its SID); finished outbound messages lose their text, last error
    and provider id. Queued and held rows are left alone. Answers are not touched: they
    live in their own table, apart from the messages they came in.
    """
    counts = {"inbound_messages": 0, "outbox_messages": 0}
    steps = (
        (
            "inbound_messages",
            "UPDATE inbound_messages SET text = NULL, provider_message_id = 'pruned:' || id "
            "WHERE id IN (SELECT id FROM inbound_messages WHERE received_at < ? "
            "AND (text IS NOT NULL OR provider_message_id NOT LIKE 'pruned:%' "
            "AND provider_message_id NOT LIKE 'erased:%') LIMIT ?)",
        ),
        (
            "outbox_messages",
            "UPDATE outbox SET text = NULL, last_error = NULL, provider_message_id = NULL "
            "WHERE id IN (SELECT id FROM outbox WHERE created_at < ? "
            "AND status IN ('sent', 'delivered', 'failed', 'cancelled') "
            "AND (text IS NOT NULL OR last_error IS NOT NULL "
            "OR provider_message_id IS NOT NULL) LIMIT ?)",
        ),
    )
    for name, sql in steps:
        while True:
            async with db.transaction() as tx:
                result = await tx.execute(sql, (before, PRUNE_CHUNK))
            counts[name] += result.rowcount
            if result.rowcount < PRUNE_CHUNK:
                break
    return counts
