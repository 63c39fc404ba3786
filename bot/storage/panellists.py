"""Panellists, their addresses, and the suppression list."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.models import Address, Panellist, PanellistStatus, iso, parse_iso, utcnow
from bot.privacy import address_hash
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one
from bot.storage.tx import write_later

_SELECT = """
SELECT id, status, locale, demographics, consent_at, stage, created_at
FROM panellists
"""


def panellist_row(row: sqlite3.Row, addresses: list[Address]) -> Panellist:
    return Panellist(
        id=row["id"],
        status=PanellistStatus(row["status"]),
        locale=row["locale"] or "",
        demographics=json.loads(row["demographics"]),
        consent_at=parse_iso(row["consent_at"]) if row["consent_at"] else None,
        stage=row["stage"],
        created_at=parse_iso(row["created_at"]),
        addresses=addresses,
    )


async def addresses_of(conn: ReadConn, panellist_id: int) -> list[Address]:
    """A panellist's addresses, the most recently used first."""
    rows = await fetch_all(
        conn,
        "SELECT channel, address FROM addresses WHERE panellist_id = ? "
        "ORDER BY last_inbound_at IS NULL, last_inbound_at DESC, id",
        (panellist_id,),
    )
    return [Address(r["channel"], r["address"]) for r in rows]


async def get(conn: ReadConn, panellist_id: int) -> Panellist | None:
    row = await fetch_one(conn, _SELECT + " WHERE id = ?", (panellist_id,))
    if row is None:
        return None
    return panellist_row(row, await addresses_of(conn, panellist_id))


async def find_by_address(conn: ReadConn, address: Address) -> Panellist | None:
    row = await fetch_one(
        conn,
        "SELECT p.id, p.status, p.locale, p.demographics, p.consent_at, p.stage, p.created_at "
        "FROM addresses a JOIN panellists p ON p.id = a.panellist_id "
        "WHERE a.channel = ? AND a.address = ?",
        (address.channel, address.id),
    )
    if row is None:
        return None
    return panellist_row(row, [address])


async def last_inbound_at(conn: ReadConn, address: Address) -> datetime | None:
    """When this address last wrote to us (WhatsApp's 24-hour window is counted from it)."""
    row = await fetch_one(
        conn,
        "SELECT last_inbound_at FROM addresses WHERE channel = ? AND address = ?",
        (address.channel, address.id),
    )
    return parse_iso(row[0]) if row and row[0] else None


async def stage_misses(conn: ReadConn, panellist_id: int) -> int:
    row = await fetch_one(conn, "SELECT stage_misses FROM panellists WHERE id = ?", (panellist_id,))
    return int(row[0]) if row else 0


async def create(
    conn: Conn,
    *,
    status: PanellistStatus,
    locale: str,
    stage: str | None = None,
    demographics: dict[str, str] | None = None,
    consent_at: datetime | None = None,
    consent_method: str | None = None,
    source: str = "chat",
    created_at: datetime | None = None,
) -> int:
    now = iso(created_at or utcnow())
    cursor = await conn.execute(
        "INSERT INTO panellists (status, locale, stage, demographics, consent_at, consent_method,"
        " source, link_code, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            status.value,
            locale,
            stage,
            json.dumps(demographics or {}, ensure_ascii=False),
            iso(consent_at) if consent_at else None,
            consent_method,
            source,
            new_link_code(),
            now,
            now,
        ),
    )
    return int(cursor.lastrowid or 0)


def new_link_code() -> str:
    """A short code that joins a new chat (e.g. Telegram) to an existing record."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: people type these
    return "".join(secrets.choice(alphabet) for _ in range(8))


async def add_address(
    conn: Conn, panellist_id: int, address: Address, *, inbound: bool = False
) -> None:
    now = iso(utcnow())
    await write_later(
        conn,
        "INSERT INTO addresses (panellist_id, channel, address, last_inbound_at, created_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, address) DO UPDATE SET "
        "panellist_id = excluded.panellist_id",
        (panellist_id, address.channel, address.id, now if inbound else None, now),
    )


async def touch_address(conn: Conn, address: Address) -> None:
    await write_later(
        conn,
        "UPDATE addresses SET last_inbound_at = ? WHERE channel = ? AND address = ?",
        (iso(utcnow()), address.channel, address.id),
    )


_UPDATABLE = {
    "status",
    "locale",
    "stage",
    "stage_misses",
    "demographics",
    "consent_at",
    "consent_method",
    "opted_out_at",
}


async def update(conn: Conn, panellist_id: int, **fields: Any) -> None:
    """Set the given columns. Values are converted: enums to text, dicts to JSON, times to ISO."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    columns, values = [], []
    for name, value in fields.items():
        if isinstance(value, PanellistStatus):
            value = value.value
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, datetime):
            value = iso(value)
        columns.append(f"{name} = ?")
        values.append(value)
    columns.append("updated_at = ?")
    values.append(iso(utcnow()))
    await write_later(
        conn, f"UPDATE panellists SET {', '.join(columns)} WHERE id = ?", (*values, panellist_id)
    )


async def delete_unconsented(conn: Conn, panellist_id: int) -> None:
    """Forget someone who never consented: their row, addresses and message texts."""
    await conn.execute(
        "UPDATE inbound_messages SET text = NULL, panellist_id = NULL WHERE panellist_id = ?",
        (panellist_id,),
    )
    await conn.execute(
        "UPDATE outbox SET status = 'cancelled' WHERE panellist_id = ? "
        "AND status IN ('queued', 'held') AND kind != 'stop_confirmation'",
        (panellist_id,),
    )
    await conn.execute(
        "UPDATE outbox SET address = NULL, text = NULL, panellist_id = NULL "
        "WHERE panellist_id = ? AND status NOT IN ('queued', 'sending')",
        (panellist_id,),
    )
    await conn.execute(
        "UPDATE outbox SET panellist_id = NULL WHERE panellist_id = ?", (panellist_id,)
    )
    await conn.execute("DELETE FROM addresses WHERE panellist_id = ?", (panellist_id,))
    await conn.execute("DELETE FROM panellists WHERE id = ?", (panellist_id,))


async def forget_inbound_text(conn: Conn, inbound_id: int) -> None:
    """Drop the text of a message from someone we keep nothing about (no panellist)."""
    await write_later(conn, "UPDATE inbound_messages SET text = NULL WHERE id = ?", (inbound_id,))


# -- suppression list --------------------------------------------------------------------


async def suppress(conn: Conn, key: bytes, address: Address, reason: str) -> None:
    await write_later(
        conn,
        "INSERT INTO suppressions (address_hash, reason, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (address_hash) DO UPDATE SET reason = excluded.reason, "
        "created_at = excluded.created_at",
        (address_hash(key, address), reason, iso(utcnow())),
    )


async def suppression(conn: ReadConn, key: bytes, address: Address) -> tuple[str, datetime] | None:
    row = await fetch_one(
        conn,
        "SELECT reason, created_at FROM suppressions WHERE address_hash = ?",
        (address_hash(key, address),),
    )
    return (row["reason"], parse_iso(row["created_at"])) if row else None


async def lift_suppression(conn: Conn, key: bytes, address: Address) -> None:
    await write_later(
        conn, "DELETE FROM suppressions WHERE address_hash = ?", (address_hash(key, address),)
    )


async def hash_key(conn: Conn) -> bytes:
    """The database's own key for the suppression hashes, made on first use."""
    row = await fetch_one(conn, "SELECT value FROM meta WHERE key = 'hash_key'")
    if row:
        return bytes.fromhex(row[0])
    key = secrets.token_bytes(32)
    await conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('hash_key', ?)", (key.hex(),)
    )
    row = await fetch_one(conn, "SELECT value FROM meta WHERE key = 'hash_key'")
    return bytes.fromhex(row[0]) if row else key


async def active_ids(conn: ReadConn) -> list[int]:
    """Everyone who may be invited: active, with at least one address."""
    rows = await fetch_all(
        conn,
        "SELECT p.id FROM panellists p WHERE p.status = 'active' "
        "AND EXISTS (SELECT 1 FROM addresses a WHERE a.panellist_id = p.id) ORDER BY p.id",
    )
    return [r[0] for r in rows]


async def many(conn: ReadConn, ids: Iterable[int]) -> list[Panellist]:
    ids = list(ids)
    out: list[Panellist] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = await fetch_all(conn, _SELECT + f" WHERE id IN ({marks}) ORDER BY id", chunk)
        addr_rows = await fetch_all(
            conn,
            f"SELECT panellist_id, channel, address FROM addresses WHERE panellist_id IN ({marks})"
            " ORDER BY last_inbound_at IS NULL, last_inbound_at DESC, id",
            chunk,
        )
        by_id: dict[int, list[Address]] = {}
        for a in addr_rows:
            by_id.setdefault(a["panellist_id"], []).append(Address(a["channel"], a["address"]))
        out.extend(panellist_row(r, by_id.get(r["id"], [])) for r in rows)
    return out


async def find_by_link_code(conn: ReadConn, code: str) -> Panellist | None:
    """The panellist a join code belongs to (people may type it in lower case)."""
    row = await fetch_one(
        conn,
        _SELECT + " WHERE link_code = ? AND status IN ('active', 'pending', 'unreachable')",
        (code.strip().upper(),),
    )
    if row is None:
        return None
    return panellist_row(row, await addresses_of(conn, row["id"]))


async def status_of(conn: ReadConn, panellist_id: int) -> str | None:
    """Just the status (the dispatcher checks it right before each send)."""
    row = await fetch_one(conn, "SELECT status FROM panellists WHERE id = ?", (panellist_id,))
    return row[0] if row else None
