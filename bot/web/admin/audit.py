"""``GET /admin/audit`` (admins): the audit log, newest first, filtered by action or actor.

Staff actions carry the actor ``staff:<id>`` (the page names the account's email beside
it); the engine, the command line and the demo have their own actors. Details hold ids and
counts, never phone numbers or names.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.storage import staff as store
from bot.web.admin.auth import admin_only
from bot.web.admin.templating import render

if TYPE_CHECKING:
    from bot.app import Bot

NAV = [("Audit log", "/admin/audit", "admin")]
PER_PAGE = 50
MAX_PAGE = 100_000


def _page(value: str | None) -> int:
    if value and value.isascii() and value.isdigit() and len(value) <= 6:
        return max(1, min(int(value), MAX_PAGE))
    return 1


def _detail(text: str) -> str:
    try:
        value: Any = json.loads(text)
    except ValueError:
        return text
    if not value:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


async def audit(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    conn = bot.db.conn
    params = request.query_params
    page = _page(params.get("page"))
    actions = await store.audit_actions(conn)
    action = params.get("action") or None
    if action not in actions:
        action = None
    actor = (params.get("actor") or "").strip()[:100] or None
    rows, total = await store.audit_page(
        conn, limit=PER_PAGE, offset=(page - 1) * PER_PAGE, action=action, actor=actor
    )
    emails = {f"staff:{s.id}": s.email for s in await store.all_staff(conn)}
    entries = [
        {
            "at": r["at"][:19].replace("T", " "),
            "actor": r["actor"],
            "who": emails.get(r["actor"], ""),
            "action": r["action"],
            "panellist_id": r["panellist_id"],
            "detail": _detail(r["detail"]),
        }
        for r in rows
    ]
    pages = max(1, -(-total // PER_PAGE))
    return render(
        request,
        "admin/audit.html",
        entries=entries,
        actions=actions,
        action=action or "",
        actor=actor or "",
        page=page,
        pages=pages,
        total=total,
    )


def routes() -> list[BaseRoute]:
    return [admin_only(Route("/admin/audit", audit, methods=["GET"]))]
