"""The audit log: who did what to whose record, without personal data in the detail."""

from __future__ import annotations

import json
from typing import Any

from bot.models import iso, utcnow
from bot.storage.conn import Conn
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
