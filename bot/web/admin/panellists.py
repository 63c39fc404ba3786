"""``/admin/panellists``: look a person up, see everything held, export it, erase them.

- ``GET /admin/panellists``: the look-up form (a phone number in any format, ``channel:id``
  or a panellist id). It is POSTed, so a phone number never appears in a URL or an access
  log; viewers may look people up too.
- ``GET /admin/panellists/{id}``: everything held about them (what ``panel show`` prints),
  section by section, and the whole record as JSON.
- ``GET /admin/panellists/{id}/export.json``: the same record as a JSON download.
- ``GET`` / ``POST /admin/panellists/{id}/erase`` (admins): a confirmation page where the
  id is typed again, then the erasure (``panel erase``): personal data deleted, answers
  kept detached, every address on the suppression list.

Viewing, exporting and erasing are each written to the audit log with the staff member as
actor; the log holds the panellist's id, never their number.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot import staff as staff_rules
from bot.panel import SuppressedOnly, erase_panellist, resolve_panellist, subject_access
from bot.web.admin.auth import admin_only, current_staff, read_form
from bot.web.admin.templating import render

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

NAV = [("Panellists", "/admin/panellists")]
MAX_ID = 2**63 - 1
MAX_LOOKUP = 100
# Sections of the record, in the order shown, with their headings.
SECTIONS = (
    ("addresses", "Addresses"),
    ("invitations", "Survey invitations"),
    ("survey_sessions", "Survey sessions and answers"),
    ("inbound_messages", "Messages from them"),
    ("outbound_messages", "Messages to them"),
    ("audit_log", "Audit log entries about them"),
    ("simulator_owners", "Simulator ownership"),
)
OUTBOUND_COLUMNS = ("created_at", "channel", "kind", "status", "text", "sent_at", "error_code")


def _bot(request: Request) -> Bot:
    return request.app.state.bot


def _panellist_id(request: Request) -> int:
    value = request.path_params["panellist_id"]
    if value > MAX_ID:
        raise HTTPException(404, "no such panellist")
    return value


def cell(value: Any) -> str:
    """A stored value as text for a table cell (JSON for lists and objects)."""
    if value is None:
        return "–"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def _record(request: Request, panellist_id: int) -> dict[str, Any]:
    bot = _bot(request)
    data = await subject_access(bot.db.conn, bot.hash_key, panellist_id, database=bot.db.path)
    if data is None:
        raise HTTPException(404, "no such panellist")
    return data


LOOKED_UP = "staff.panellist_looked_up"


async def lookup_form(request: Request) -> Response:
    return render(request, "admin/panellists.html", who="", error="")


async def lookup(request: Request) -> Response:
    form = await read_form(request)
    who = form.get("who")
    if not isinstance(who, str) or not who.strip():
        return render(
            request,
            "admin/panellists.html",
            who="",
            status_code=400,
            error="Enter a phone number, an address such as telegram:123, or an id.",
        )
    who = who.strip()[:MAX_LOOKUP]
    bot = _bot(request)
    staff = current_staff(request)
    try:
        found = await resolve_panellist(bot.db.conn, bot.hash_key, who)
    except SuppressedOnly as exc:
        # Audited by outcome only: what was typed (a phone number) never goes in the log.
        await staff_rules.record(bot.db, staff, LOOKED_UP, detail={"found": False})
        return render(request, "admin/panellists.html", who=who, error=str(exc), status_code=404)
    await staff_rules.record(bot.db, staff, LOOKED_UP, found, {"found": found is not None})
    if found is None:
        return render(
            request,
            "admin/panellists.html",
            who=who,
            status_code=404,
            error="No panellist matches that phone number, address or id.",
        )
    return RedirectResponse(f"/admin/panellists/{found}", 303)


async def show(request: Request) -> Response:
    panellist_id = _panellist_id(request)
    data = await _record(request, panellist_id)
    staff = current_staff(request)
    await staff_rules.record(_bot(request).db, staff, "staff.panellist_viewed", panellist_id)
    sections = []
    for key, heading in SECTIONS:
        rows = data.get(key) or []
        if key == "outbound_messages":
            rows = [{c: r.get(c) for c in OUTBOUND_COLUMNS} for r in rows]
        columns = list(rows[0]) if rows else []
        sections.append(
            {
                "key": key,
                "heading": heading,
                "columns": columns,
                "rows": [[cell(r.get(c)) for c in columns] for r in rows],
            }
        )
    person = data["panellist"]
    return render(
        request,
        "admin/panellist.html",
        pid=panellist_id,
        person=person,
        demographics=data.get("demographics") or {},
        consent=data.get("consent") or {},
        sections=sections,
        waiting=len(data.get("waiting_webhook_payloads") or []),
        full=json.dumps(data, ensure_ascii=False, indent=2, default=str),
        erased=person.get("status") == "erased",
        cell=cell,
    )


async def export(request: Request) -> Response:
    panellist_id = _panellist_id(request)
    data = await _record(request, panellist_id)
    await staff_rules.record(
        _bot(request).db, current_staff(request), "staff.panellist_exported", panellist_id
    )
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    return Response(
        body,
        media_type="application/json; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="panellist-{panellist_id}.json"',
            "Cache-Control": "no-store",
        },
    )


async def erase_form(request: Request) -> Response:
    panellist_id = _panellist_id(request)
    data = await _record(request, panellist_id)
    return render(
        request,
        "admin/erase.html",
        pid=panellist_id,
        error="",
        erased=data["panellist"].get("status") == "erased",
    )


async def erase(request: Request) -> Response:
    panellist_id = _panellist_id(request)
    data = await _record(request, panellist_id)
    form = await read_form(request)
    typed = form.get("confirm")
    if not isinstance(typed, str) or typed.strip() != str(panellist_id):
        return render(
            request,
            "admin/erase.html",
            pid=panellist_id,
            status_code=400,
            erased=data["panellist"].get("status") == "erased",
            error=f"Type the panellist's id, {panellist_id}, to confirm the erasure.",
        )
    staff = current_staff(request)
    bot = _bot(request)
    report = await erase_panellist(bot.db, bot.hash_key, panellist_id, actor=staff.actor)
    return render(request, "admin/erased.html", pid=panellist_id, summary=report.summary())


def routes() -> list[BaseRoute]:
    search = Route("/admin/panellists", lookup, methods=["POST"])
    # Looking someone up changes nothing: viewers may do it (the form still needs CSRF).
    search.panelbot_viewers_may_post = True  # type: ignore[attr-defined]
    return [
        Route("/admin/panellists", lookup_form, methods=["GET"]),
        search,
        Route("/admin/panellists/{panellist_id:int}", show, methods=["GET"]),
        Route("/admin/panellists/{panellist_id:int}/export.json", export, methods=["GET"]),
        admin_only(
            Route("/admin/panellists/{panellist_id:int}/erase", erase_form, methods=["GET"])
        ),
        Route("/admin/panellists/{panellist_id:int}/erase", erase, methods=["POST"]),
    ]
