"""The outbox: durable outbound messages, their sending and their delivery reports.

The inbound message log is :mod:`bot.storage.inbound`."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from bot.models import (
    Address,
    DeliveryReport,
    MessageKind,
    OutboundMessage,
    OutboxStatus,
    iso,
    parse_iso,
    utcnow,
)
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one
from bot.storage.tx import Tx

# Statuses only move forward: a late "sent" never overwrites "delivered".
STATUS_RANK = {
    OutboxStatus.QUEUED: 0,
    OutboxStatus.HELD: 0,
    OutboxStatus.SENDING: 1,
    OutboxStatus.SENT: 2,
    OutboxStatus.DELIVERED: 3,
    OutboxStatus.FAILED: 3,
    OutboxStatus.CANCELLED: 3,
}


_QUEUE_SQL = (
    "INSERT OR IGNORE INTO outbox (idempotency_key, panellist_id, channel, address, text, "
    "kind, priority, template, extra, status, next_attempt_at, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)"
)


def _queue_params(
    key: str,
    panellist_id: int | None,
    address: Address,
    text: str,
    kind: MessageKind,
    template: str | None,
    extra: dict[str, Any] | None,
    not_before: datetime | None,
) -> tuple[Any, ...]:
    now = iso(utcnow())
    return (
        key,
        panellist_id,
        address.channel,
        address.id,
        text,
        kind.value,
        kind.priority,
        template,
        json.dumps(extra or {}, ensure_ascii=False),
        iso(not_before) if not_before else now,
        now,
        now,
    )


async def queue(
    conn: Conn,
    *,
    key: str,
    panellist_id: int | None,
    address: Address,
    text: str,
    kind: MessageKind,
    template: str | None = None,
    extra: dict[str, Any] | None = None,
    not_before: datetime | None = None,
    later: bool = False,
) -> int | None:
    """Queue one message; None when a message with this idempotency key already exists.

    With ``later`` (inside a :class:`Tx`) the insert is held and its id, once the
    transaction commits, is in ``tx.captured``.
    """
    params = _queue_params(key, panellist_id, address, text, kind, template, extra, not_before)
    if later and isinstance(conn, Tx):
        conn.later(_QUEUE_SQL, params, capture=True)
        return None
    cursor = await conn.execute(_QUEUE_SQL, params)
    return int(cursor.lastrowid) if cursor.rowcount == 1 and cursor.lastrowid else None


def to_message(row: sqlite3.Row) -> OutboundMessage:
    return OutboundMessage(
        id=row["id"],
        address=Address(row["channel"], row["address"] or ""),
        text=row["text"] or "",
        kind=MessageKind(row["kind"]),
        panellist_id=row["panellist_id"],
        idempotency_key=row["idempotency_key"],
        attempts=row["attempts"],
        template=row["template"],
        extra=json.loads(row["extra"] or "{}"),
    )


async def claim_due(
    conn: Conn, *, now: datetime, limit: int, channels: list[str]
) -> list[tuple[OutboundMessage, str | None]]:
    """Mark due rows as sending (replies first) and return them with the panellist's status.

    Marking before the provider call is what keeps a crash from sending twice: a row found
    in ``sending`` later is reconciled, never blindly resent.
    """
    if not channels:
        return []
    marks = ",".join("?" * len(channels))
    rows = await fetch_all(
        conn,
        f"""
        SELECT o.*, p.status AS panellist_status FROM outbox o
        LEFT JOIN panellists p ON p.id = o.panellist_id
        WHERE o.status = 'queued' AND o.next_attempt_at <= ? AND o.channel IN ({marks})
        ORDER BY o.priority, o.next_attempt_at, o.id LIMIT ?
        """,
        (iso(now), *channels, limit),
    )
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    id_marks = ",".join("?" * len(ids))
    await conn.execute(
        f"UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = ? "
        f"WHERE id IN ({id_marks})",
        (iso(now), *ids),
    )
    out = []
    for r in rows:
        message = to_message(r)
        message.attempts += 1
        out.append((message, r["panellist_status"]))
    return out


async def mark_sent(
    conn: Conn,
    message_id: int,
    *,
    provider_message_id: str | None,
    status: OutboxStatus = OutboxStatus.SENT,
) -> None:
    """Record a send the provider accepted.

    A row whose person was erased while it was in flight (key ``erased:<id>``) gets its
    status only: no provider id, and its times stay cut to the day. A reply to someone we
    keep nothing about (no panellist: a no, STOP or HELP before joining) loses its text at
    once, except on the simulator, whose page reads the text back (it goes a minute or two
    later, see ``panel_data.scrub_strangers``).
    """
    now = iso(utcnow())
    await conn.execute(
        "UPDATE outbox SET status = ?, "
        "sent_at = COALESCE(sent_at, substr(?, 1, 10) || 'T00:00:00.000+00:00') "
        "WHERE id = ? AND status IN ('sending', 'queued') "
        "AND substr(idempotency_key, 1, 7) = 'erased:'",
        (status.value, now, message_id),
    )
    await conn.execute(
        "UPDATE outbox SET status = ?, provider_message_id = COALESCE(?, provider_message_id), "
        "sent_at = COALESCE(sent_at, ?), updated_at = ?, last_error = NULL, "
        "text = CASE WHEN panellist_id IS NULL AND channel != 'sim' THEN NULL ELSE text END "
        "WHERE id = ? AND status IN ('sending', 'queued') "
        "AND substr(idempotency_key, 1, 7) != 'erased:'",
        (status.value, provider_message_id, now, now, message_id),
    )


async def reschedule(
    conn: Conn,
    message_id: int,
    *,
    at: datetime,
    error: str | None = None,
    error_code: str | None = None,
    count_attempt: bool = True,
) -> None:
    """Back to the queue for a later try (a retry, quiet hours, a rate-limit wait)."""
    await conn.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = ?, last_error = ?, "
        "error_code = COALESCE(?, error_code), attempts = attempts - ?, updated_at = ? "
        "WHERE id = ?",
        (iso(at), error, error_code, 0 if count_attempt else 1, iso(utcnow()), message_id),
    )


async def mark_final(
    conn: Conn,
    message_id: int,
    *,
    status: OutboxStatus,
    error: str | None = None,
    error_code: str | None = None,
    error_class: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE outbox SET status = ?, last_error = ?, error_code = ?, error_class = ?, "
        "updated_at = ? WHERE id = ?",
        (status.value, error, error_code, error_class, iso(utcnow()), message_id),
    )


async def cancel_for_panellist(conn: Conn, panellist_id: int) -> int:
    """Cancel everything still queued for someone who opted out or was erased."""
    cursor = await conn.execute(
        "UPDATE outbox SET status = 'cancelled', updated_at = ? WHERE panellist_id = ? "
        "AND status IN ('queued', 'held') AND kind != 'stop_confirmation'",
        (iso(utcnow()), panellist_id),
    )
    return cursor.rowcount


async def apply_report(conn: Conn, report: DeliveryReport) -> int | None:
    """Apply a provider's status report, never moving a status backwards. Returns the row id."""
    row = await fetch_one(
        conn,
        "SELECT id, status FROM outbox WHERE channel = ? AND provider_message_id = ?",
        (report.channel, report.provider_message_id),
    )
    if row is None:
        return None
    current = OutboxStatus(row["status"])
    if STATUS_RANK[report.status] <= STATUS_RANK[current] and current != OutboxStatus.SENDING:
        return row["id"]
    await conn.execute(
        "UPDATE outbox SET status = ?, error_code = COALESCE(?, error_code), "
        "error_class = COALESCE(?, error_class), updated_at = ? WHERE id = ?",
        (
            report.status.value,
            report.error_code,
            report.error_class.value if report.error_class else None,
            iso(report.at),
            row["id"],
        ),
    )
    return row["id"]


async def stuck_sending(conn: ReadConn) -> list[OutboundMessage]:
    rows = await fetch_all(conn, "SELECT * FROM outbox WHERE status = 'sending' ORDER BY id")
    return [to_message(r) for r in rows]


async def replies_to_inbound(
    conn: ReadConn, channel: str, provider_message_id: str
) -> list[int] | None:
    """The outbox rows queued in answer to the inbound message with this provider id, in
    order; None while no such message is stored."""
    row = await fetch_one(
        conn,
        "SELECT id FROM inbound_messages WHERE channel = ? AND provider_message_id = ?",
        (channel, provider_message_id),
    )
    if row is None:
        return None
    # The engine keys a reply "in:<channel>:<inbound id>:<n>".
    prefix = f"in:{channel}:{row['id']}:"
    rows = await fetch_all(
        conn,
        "SELECT id FROM outbox WHERE idempotency_key >= ? AND idempotency_key < ? ORDER BY id",
        (prefix, prefix[:-1] + ";"),
    )
    return [r["id"] for r in rows]


async def progress_of(conn: ReadConn, outbox_ids: list[int]) -> list[sqlite3.Row]:
    """``id``, ``text``, ``status`` and ``address`` of these outbox rows, in id order."""
    marks = ",".join("?" * len(outbox_ids))
    return await fetch_all(
        conn,
        f"SELECT id, text, status, address FROM outbox WHERE id IN ({marks}) ORDER BY id",
        outbox_ids,
    )


async def conversation(
    conn: ReadConn, address: Address, *, after_id: int = 0, limit: int = 500
) -> list[dict[str, Any]]:
    """Messages in and out of one address, oldest first (the simulator's history)."""
    rows = await fetch_all(
        conn,
        """
        SELECT * FROM (
          SELECT 'in' AS direction, i.text, i.received_at AS at, i.id AS id, NULL AS status,
                 '{}' AS extra
          FROM inbound_messages i JOIN addresses a ON a.panellist_id = i.panellist_id
          WHERE a.channel = ? AND a.address = ? AND i.channel = a.channel
            AND i.text IS NOT NULL
          UNION ALL
          SELECT 'out', o.text, COALESCE(o.sent_at, o.created_at), o.id, o.status, o.extra
          FROM outbox o WHERE o.channel = ? AND o.address = ?
            AND o.status IN ('sent', 'delivered') AND o.text IS NOT NULL
        ) ORDER BY at, direction DESC, id LIMIT ?
        """,
        (address.channel, address.id, address.channel, address.id, limit),
    )
    return [
        {
            "direction": r["direction"],
            "text": r["text"],
            "at": r["at"],
            "id": r["id"],
            "extra": json.loads(r["extra"] or "{}"),
        }
        for r in rows
    ]


async def panellist_of(conn: ReadConn, row_id: int) -> int | None:
    row = await fetch_one(conn, "SELECT panellist_id FROM outbox WHERE id = ?", (row_id,))
    return row[0] if row else None


async def known_provider_ids(conn: ReadConn, channel: str, ids: list[str]) -> set[str]:
    """Which of these provider message ids an outbox row already records."""
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    rows = await fetch_all(
        conn,
        f"SELECT provider_message_id FROM outbox WHERE channel = ? "
        f"AND provider_message_id IN ({marks})",
        (channel, *ids),
    )
    return {r[0] for r in rows}


async def latest_with_options(conn: ReadConn, address: Address) -> str | None:
    """The provider id of the last message with buttons sent to this address."""
    row = await fetch_one(
        conn,
        "SELECT provider_message_id FROM outbox WHERE channel = ? AND address = ? "
        "AND status IN ('sent', 'delivered') AND json_array_length(extra, '$.options') > 0 "
        "ORDER BY id DESC LIMIT 1",
        (address.channel, address.id),
    )
    return row[0] if row else None


async def attempt_times(conn: ReadConn, message_id: int) -> tuple[datetime, datetime] | None:
    """When a row was queued and when it was last marked ``sending`` (its ``updated_at``
    while it is in that state), for looking its attempts up at the provider."""
    row = await fetch_one(
        conn, "SELECT created_at, updated_at FROM outbox WHERE id = ?", (message_id,)
    )
    if row is None:
        return None
    return parse_iso(row["created_at"]), parse_iso(row["updated_at"])


async def note_error(conn: Conn, message_id: int, error: str) -> None:
    """Record why a row is waiting, changing neither its status nor its times."""
    await conn.execute("UPDATE outbox SET last_error = ? WHERE id = ?", (error, message_id))


async def held(conn: ReadConn) -> list[sqlite3.Row]:
    """Rows held for a person to decide, oldest first (``panelbot db held``)."""
    return await fetch_all(
        conn,
        "SELECT id, channel, address, kind, last_error, error_code, attempts, created_at, "
        "updated_at FROM outbox WHERE status = 'held' ORDER BY updated_at, id",
    )


async def release_held(conn: Conn, ids: list[int] | None) -> list[int]:
    """Held rows (these ``ids``, or all with None) back to the queue, due now.

    Their attempts are kept, so that a channel that looks for an earlier attempt before
    sending again (Twilio) still does. Returns the ids released.
    """
    now = iso(utcnow())
    if ids is None:
        rows = await fetch_all(conn, "SELECT id FROM outbox WHERE status = 'held' ORDER BY id")
        ids = [r[0] for r in rows]
    released = []
    for message_id in ids:
        cursor = await conn.execute(
            "UPDATE outbox SET status = 'queued', next_attempt_at = ?, updated_at = ? "
            "WHERE id = ? AND status = 'held'",
            (now, now, message_id),
        )
        if cursor.rowcount == 1:
            released.append(message_id)
    return released


async def statuses_of(conn: ReadConn, ids: list[int]) -> dict[int, str]:
    """The status of each of these rows that exists."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await fetch_all(conn, f"SELECT id, status FROM outbox WHERE id IN ({marks})", ids)
    return {r[0]: r[1] for r in rows}


async def counts_by_channel_and_status(conn: ReadConn) -> dict[tuple[str, str], int]:
    """Outbox rows by (channel, status), e.g. ``{("sms", "held"): 2, ("sms", "sent"): 40}``:
    the outbox depth (``queued`` + ``sending``) and held messages per channel, for metrics."""
    rows = await fetch_all(
        conn, "SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status"
    )
    return {(r[0], r[1]): r[2] for r in rows}
