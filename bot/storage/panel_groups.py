"""Panellists counted by a demographic value, and the waiting list (quotas plugins use these).

A person is *waitlisted* when they consented and finished sign-up but a plugin's
``panelbot_screen_signup`` answered waitlist: status ``pending``, stage ``waitlisted``.
"""

from __future__ import annotations

from bot.models import Panellist, PanellistStatus
from bot.storage import panellists as panellist_store
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one

WAITLISTED_STAGE = "waitlisted"
# Panel field names are checked identifiers (lower-case letters, digits and _), but the
# JSON path is passed as a parameter anyway.
_COUNT_SQL = (
    "SELECT json_extract(demographics, ?) AS value, "
    "SUM(status = 'active') AS active, "
    "SUM(status = 'pending' AND stage = ?) AS waitlisted "
    "FROM panellists WHERE status IN ('active', 'pending') GROUP BY value"
)


async def counts_by_value(conn: ReadConn, field: str) -> dict[str | None, dict[str, int]]:
    """``{value: {"active": n, "waitlisted": n}}`` for one panel field (None: not known)."""
    rows = await fetch_all(conn, _COUNT_SQL, (f'$."{field}"', WAITLISTED_STAGE))
    out: dict[str | None, dict[str, int]] = {}
    for row in rows:
        active, waiting = int(row["active"] or 0), int(row["waitlisted"] or 0)
        if active or waiting:
            value = None if row["value"] is None else str(row["value"])
            out[value] = {"active": active, "waitlisted": waiting}
    return out


async def waitlisted(conn: ReadConn) -> list[Panellist]:
    """Everyone on the waiting list, the longest waiting first."""
    rows = await fetch_all(
        conn,
        "SELECT id FROM panellists WHERE status = 'pending' AND stage = ? ORDER BY created_at, id",
        (WAITLISTED_STAGE,),
    )
    ids = [r[0] for r in rows]
    found = {p.id: p for p in await panellist_store.many(conn, ids)}
    return [found[i] for i in ids if i in found]


async def activate_waitlisted(conn: Conn, panellist_id: int) -> bool:
    """Move a waitlisted person onto the panel; False if they are no longer waitlisted."""
    row = await fetch_one(
        conn,
        "SELECT 1 FROM panellists WHERE id = ? AND status = 'pending' AND stage = ?",
        (panellist_id, WAITLISTED_STAGE),
    )
    if row is None:
        return False
    await panellist_store.update(
        conn, panellist_id, status=PanellistStatus.ACTIVE, stage=None, stage_misses=0
    )
    return True
