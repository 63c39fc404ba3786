"""The simulator's own reads and writes: who owns each ``sim:`` address, and who it may list.

An owner is a keyed hash of a browser's cookie (see ``bot.web.simulator``); the cookie itself
is never stored.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from bot.models import Address, iso
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one


async def owner_of(conn: ReadConn, address: Address) -> str | None:
    """The owner hash of a simulator address, or None when nobody has claimed it."""
    row = await fetch_one(
        conn, "SELECT owner_hash FROM simulator_owners WHERE address = ?", (address.id,)
    )
    return None if row is None else str(row["owner_hash"])


async def claimed_at(conn: Any, address: Address) -> str | None:
    """When the address's owner claimed it (an ISO time), or None when nobody has."""
    row = await fetch_one(
        conn, "SELECT created_at FROM simulator_owners WHERE address = ?", (address.id,)
    )
    return None if row is None else str(row["created_at"])


async def address_in_use(conn: ReadConn, address: Address) -> bool:
    """Whether anyone on record holds this address (an erased person no longer does)."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM addresses WHERE channel = ? AND address = ?",
        (address.channel, address.id),
    )
    return row is not None


async def recent_claims(
    conn: ReadConn, owner_hash: str, client_hash: str, since: datetime
) -> tuple[int, int]:
    """How many people this owner, and this network address, started since ``since``."""
    row = await fetch_one(
        conn,
        "SELECT (SELECT COUNT(*) FROM simulator_owners WHERE owner_hash = ? AND created_at >= ?)"
        " AS by_owner, "
        "(SELECT COUNT(*) FROM simulator_owners WHERE client_hash = ? AND created_at >= ?)"
        " AS by_client",
        (owner_hash, iso(since), client_hash, iso(since)),
    )
    assert row is not None
    return int(row["by_owner"]), int(row["by_client"])


async def claim(
    conn: Conn, address: Address, owner_hash: str, client_hash: str, now: datetime
) -> bool:
    """Make ``owner_hash`` the owner of an unclaimed address; False when someone has it."""
    result = await conn.execute(
        "INSERT INTO simulator_owners (address, owner_hash, client_hash, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (address) DO NOTHING",
        (address.id, owner_hash, client_hash, iso(now)),
    )
    return bool(result.rowcount)


async def forget_unused_claims(conn: Conn, before: datetime) -> None:
    """Drop names claimed before ``before`` that never started a conversation, and names
    whose person said no (or STOP) before joining before ``before`` (``released_at``): a
    name typed and left, or declined, keeps nothing for ever."""
    await conn.execute(
        "DELETE FROM simulator_owners WHERE COALESCE(released_at, created_at) < ? "
        "AND NOT EXISTS "
        "(SELECT 1 FROM addresses a WHERE a.channel = 'sim' "
        "AND a.address = simulator_owners.address)",
        (iso(before),),
    )


async def owned_addresses(
    conn: ReadConn, owner_hash: str, limit: int
) -> list[tuple[Address, bool]]:
    """An owner's simulator people still on record, most recently active first, each with
    whether it speaks for someone who also has a real channel (an imported panellist)."""
    rows = await fetch_all(
        conn,
        "SELECT a.address, "
        "(p.source = 'import' OR EXISTS (SELECT 1 FROM addresses r "
        "WHERE r.panellist_id = a.panellist_id AND r.channel != 'sim')) AS real "
        "FROM simulator_owners o "
        "JOIN addresses a ON a.channel = 'sim' AND a.address = o.address "
        "JOIN panellists p ON p.id = a.panellist_id "
        "WHERE o.owner_hash = ? AND p.status != 'erased' "
        "ORDER BY COALESCE(a.last_inbound_at, a.created_at) DESC, a.id DESC LIMIT ?",
        (owner_hash, limit),
    )
    return [(Address("sim", r["address"]), bool(r["real"])) for r in rows]


async def speaks_for_real_panellist(conn: ReadConn, address: Address) -> bool:
    """Whether this simulator address belongs to an imported panellist, or to someone who
    also has an SMS, WhatsApp or Telegram address: acting for them is acting for a person."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM addresses a JOIN panellists p ON p.id = a.panellist_id "
        "WHERE a.channel = ? AND a.address = ? AND (p.source = 'import' OR EXISTS "
        "(SELECT 1 FROM addresses r WHERE r.panellist_id = a.panellist_id "
        "AND r.channel != 'sim'))",
        (address.channel, address.id),
    )
    return row is not None


async def unlinked_panellists(conn: ReadConn, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """(id, demographics) of active panellists with no simulator address, oldest first."""
    rows = await fetch_all(
        conn,
        "SELECT p.id, p.demographics FROM panellists p WHERE p.status = 'active' "
        "AND NOT EXISTS (SELECT 1 FROM addresses a WHERE a.panellist_id = p.id "
        "AND a.channel = 'sim') ORDER BY p.id LIMIT ?",
        (limit,),
    )
    return [(r["id"], json.loads(r["demographics"] or "{}")) for r in rows]


def cutoff(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)
