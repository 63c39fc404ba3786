"""The audit log: who did what to whose record, without personal data in the detail."""

from __future__ import annotations

import json
from typing import Any

from bot.models import iso, utcnow
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all
from bot.storage.tx import write_later


async def record(
    conn: Conn,
    action: str,
    panellist_id: int | None = None,
    detail: dict[str, Any] | None = None,
    *,
    actor: str = "engine",
) -> None:
    await write_later(
        conn,
        "INSERT INTO audit_log (at, actor, action, panellist_id, detail) VALUES (?, ?, ?, ?, ?)",
        (iso(utcnow()), actor, action, panellist_id, json.dumps(detail or {}, ensure_ascii=False)),
    )


async def for_panellist(conn: ReadConn, panellist_id: int) -> list[dict[str, Any]]:
    rows = await fetch_all(
        conn,
        "SELECT at, actor, action, detail FROM audit_log WHERE panellist_id = ? ORDER BY id",
        (panellist_id,),
    )
    return [
        {
            "at": r["at"],
            "actor": r["actor"],
            "action": r["action"],
            "detail": json.loads(r["detail"]),
        }
        for r in rows
    ]
