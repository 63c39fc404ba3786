"""The simulator's chat page (static HTML, CSS and JavaScript) and its identities API.

Anyone can try the panel in a browser with no account: pick a new name (``sim:<name>``),
carry on as someone already chatting on the simulator, or speak for an imported panellist,
which links a ``sim:panellist-<id>`` address to their record.

The page is plain files shipped inside the package and served from it: no CDN, no web
fonts, no inline script, so it works on a machine with no internet and under a strict
Content-Security-Policy.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bot.engine import render
from bot.models import Address, MessageKind, Panellist, PanellistStatus
from bot.storage import fetch_all
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

# Found beside this module, so an installed wheel serves the same files as a checkout.
STATIC_DIR = Path(__file__).parent / "static"
MAX_IDENTITIES = 500
LINK_PREFIX = "panellist-"
# SQLite integers are signed 64-bit; a larger id would raise OverflowError (a 500).
_MAX_ID = 2**63 - 1

# The page loads only its own files and talks only to its own server.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _bad(reason: str, status_code: int = 400) -> Response:
    return JSONResponse({"error": reason}, status_code=status_code)


async def simulator_page(request: Request) -> Response:
    """``GET /simulator``: the phone-like chat page."""
    return FileResponse(
        STATIC_DIR / "simulator.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


def panellist_label(panellist_id: int, demographics: dict[str, Any], field_names: list[str]) -> str:
    """``Panellist 12 (45-54, female, Northgate)``: the id and demographics in config order."""
    values = [str(demographics[name]) for name in field_names if demographics.get(name)]
    label = f"Panellist {panellist_id}"
    return f"{label} ({', '.join(values)})" if values else label


async def list_identities(request: Request) -> Response:
    """``GET /simulator/api/identities``: who the page can speak as.

    First the people already on the simulator (most recently active first), then active
    panellists with no simulator address yet (e.g. imported from a CSV); at most
    ``MAX_IDENTITIES`` in all.
    """
    bot: Bot = request.app.state.bot
    conn = bot.db.conn
    identities: list[dict[str, Any]] = [
        {"address": str(address), "label": address.id}
        for address in await _simulator_addresses(conn, MAX_IDENTITIES)
    ]
    field_names = [f.name for f in bot.settings.panel.fields]
    remaining = MAX_IDENTITIES - len(identities)
    if remaining > 0 and bot.settings.channels.simulator.allow_panellists:
        for panellist_id, demographics in await _unlinked_panellists(conn, remaining):
            identities.append(
                {
                    "panellist_id": panellist_id,
                    "label": panellist_label(panellist_id, demographics, field_names),
                }
            )
    return JSONResponse({"identities": identities})


async def link_identity(request: Request) -> Response:
    """``POST /simulator/api/identities`` ``{"panellist_id": 12}``: speak for that panellist.

    Links ``sim:panellist-12`` to their record and, when they are part-way through a
    survey, sends their current question to the new address so they can carry on.
    """
    bot: Bot = request.app.state.bot
    if not bot.settings.channels.simulator.allow_panellists:
        return _bad(
            "speaking as imported panellists is off ([channels.simulator] allow_panellists)",
            status_code=403,
        )
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad('the body must be JSON: {"panellist_id": 12}')
    if not isinstance(body, dict) or "panellist_id" not in body:
        return _bad("the body must be a JSON object with 'panellist_id'")
    panellist_id = body["panellist_id"]
    # bool is an int subclass in Python, but `true` is not an id.
    if not isinstance(panellist_id, int) or isinstance(panellist_id, bool):
        return _bad("'panellist_id' must be a whole number")
    if not 1 <= panellist_id <= _MAX_ID:
        return _bad(f"no panellist {panellist_id}")
    address = Address("sim", f"{LINK_PREFIX}{panellist_id}")
    async with bot.db.transaction() as conn:
        panellist = await panellist_store.get(conn, panellist_id)
        if panellist is None or panellist.status == PanellistStatus.ERASED:
            return _bad(f"no panellist {panellist_id}")
        owner = await panellist_store.find_by_address(conn, address)
        if owner is not None and owner.id != panellist_id:
            # Someone typed "panellist-12" as a new name through the API; never take over
            # their conversation silently.
            return _bad(f"{address} is already used by someone else", status_code=409)
        await panellist_store.add_address(conn, panellist_id, address)
        requeued = await _requeue_current_question(bot, conn, panellist, address)
    if requeued:
        bot.wake_dispatcher()
    field_names = [f.name for f in bot.settings.panel.fields]
    return JSONResponse(
        {
            "address": str(address),
            "label": panellist_label(panellist_id, panellist.demographics, field_names),
            "requeued": requeued,
        }
    )


async def _requeue_current_question(
    bot: Bot, conn: aiosqlite.Connection, panellist: Panellist, address: Address
) -> bool:
    """Queue the open survey question to ``address``; False when none is open (or was sent).

    The idempotency key is per session, so linking twice does not send it twice.
    """
    session = await survey_store.active_session(conn, panellist.id)
    if session is None or not session.current_question:
        return False
    engine = bot.engine
    try:
        survey = await engine.survey(conn, session.survey_row_id)
        question = survey.question(session.current_question)
    except LookupError:
        # A session pointing at a missing survey or question: the link still stands, and
        # the panellist's next message ends the session cleanly in the survey runner.
        logger.warning("session %s points at a missing survey or question", session.id)
        return False
    msg = render.question_message(
        engine.catalog,
        survey,
        question,
        panellist.locale or engine.default_locale,
        fallback=engine.default_locale,
    )
    row_id = await outbox_store.queue(
        conn,
        key=f"sim-link:{panellist.id}:{session.id}",
        panellist_id=panellist.id,
        address=address,
        text=msg.text,
        kind=MessageKind.REPLY,
        template=msg.template,
        extra=msg.extra,
    )
    return row_id is not None


# The two reads below belong in bot/storage/panellists.py (the house keeps SQL there); they
# live here until that module is free to change.


async def _simulator_addresses(conn: aiosqlite.Connection, limit: int) -> list[Address]:
    """Simulator addresses of people still on record, most recently active first."""
    rows = await fetch_all(
        conn,
        "SELECT a.address FROM addresses a JOIN panellists p ON p.id = a.panellist_id "
        "WHERE a.channel = 'sim' AND p.status != 'erased' "
        "ORDER BY COALESCE(a.last_inbound_at, a.created_at) DESC, a.id DESC LIMIT ?",
        (limit,),
    )
    return [Address("sim", r["address"]) for r in rows]


async def _unlinked_panellists(
    conn: aiosqlite.Connection, limit: int
) -> list[tuple[int, dict[str, Any]]]:
    """(id, demographics) of active panellists with no simulator address, oldest first."""
    rows = await fetch_all(
        conn,
        "SELECT p.id, p.demographics FROM panellists p WHERE p.status = 'active' "
        "AND NOT EXISTS (SELECT 1 FROM addresses a WHERE a.panellist_id = p.id "
        "AND a.channel = 'sim') ORDER BY p.id LIMIT ?",
        (limit,),
    )
    return [(r["id"], json.loads(r["demographics"] or "{}")) for r in rows]


def routes() -> list[BaseRoute]:
    """The page, its static files and the identities API (only with the simulator on)."""
    return [
        Route("/simulator", simulator_page, methods=["GET"]),
        Mount("/simulator/static", app=StaticFiles(directory=STATIC_DIR), name="simulator-static"),
        Route("/simulator/api/identities", list_identities, methods=["GET"]),
        Route("/simulator/api/identities", link_identity, methods=["POST"]),
    ]
