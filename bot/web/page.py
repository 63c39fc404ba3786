"""The simulator's chat page (static HTML, CSS and JavaScript) and its identities API.

Anyone can try the panel in a browser with no account: pick a new name (``sim:<name>``),
carry on as one of this browser's people on the simulator, or, on a demo panel, speak for
an imported panellist, which links a ``sim:panellist-<id>`` address to their record.

The page is plain files shipped inside the package and served from it: no CDN, no web
fonts, no inline script, so it works on a machine with no internet and under a strict
Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bot.engine import render
from bot.models import Address, MessageKind, Panellist, PanellistStatus
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import simulator as sim_store
from bot.storage import surveys as survey_store
from bot.storage.conn import Conn
from bot.web import simulator

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

# Found beside this module, so an installed wheel serves the same files as a checkout.
STATIC_DIR = Path(__file__).parent / "static"
MAX_IDENTITIES = 500
LINK_PREFIX = "panellist-"
_LINKED_NAME = re.compile(rf"{LINK_PREFIX}\d+")
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


@simulator.storage_guarded
async def list_identities(request: Request) -> Response:
    """``GET /simulator/api/identities``: who this browser can speak as.

    First the browser's own people on the simulator (most recently active first), then, on
    a demo panel that allows it, active panellists with no simulator address yet (e.g.
    imported from a CSV); at most ``MAX_IDENTITIES`` in all. Nobody else's people are
    listed, and outside a demo nobody who is also reached on a real channel.
    """
    bot: Bot = request.app.state.bot
    conn = bot.db.conn
    caller = simulator.caller_of(request)
    allowed = simulator.may_speak_as_panellists(bot)
    identities: list[dict[str, Any]] = [
        {"address": str(address), "label": address.id}
        for address, real in await sim_store.owned_addresses(
            conn, caller.owner_hash, MAX_IDENTITIES
        )
        if allowed or not real
    ]
    field_names = [f.name for f in bot.settings.panel.fields]
    remaining = MAX_IDENTITIES - len(identities)
    if remaining > 0 and allowed:
        for panellist_id, demographics in await sim_store.unlinked_panellists(conn, remaining):
            identities.append(
                {
                    "panellist_id": panellist_id,
                    "label": panellist_label(panellist_id, demographics, field_names),
                }
            )
    return JSONResponse({"identities": identities})


@simulator.storage_guarded
async def link_identity(request: Request) -> Response:
    """``POST /simulator/api/identities``: who this browser will speak as.

    ``{"name": "alice"}`` starts ``sim:alice`` for this browser (or carries on with it, if
    it is already this browser's); a name another browser has is refused (403).

    ``{"panellist_id": 12}``, only on a demo panel that allows it, links
    ``sim:panellist-12`` to that panellist's record, for this browser only, and, when they
    are part-way through a survey, sends their current question to the new address so they
    can carry on.
    """
    bot: Bot = request.app.state.bot
    body = await simulator.read_json(request, '{"name": "alice"} or {"panellist_id": 12}')
    if isinstance(body, Response):
        return body
    if isinstance(body, dict) and "name" in body and "panellist_id" not in body:
        return await _start_named(request, body["name"])
    if not simulator.may_speak_as_panellists(bot):
        return _bad(
            "speaking as imported panellists is off: only a demo panel may "
            "([channels.simulator] demo and allow_panellists)",
            status_code=403,
        )
    if not isinstance(body, dict) or "panellist_id" not in body:
        return _bad("the body must be a JSON object with 'panellist_id'")
    panellist_id = body["panellist_id"]
    # bool is an int subclass in Python, but `true` is not an id.
    if not isinstance(panellist_id, int) or isinstance(panellist_id, bool):
        return _bad("'panellist_id' must be a whole number")
    if not 1 <= panellist_id <= _MAX_ID:
        return _bad(f"no panellist {panellist_id}")
    address = Address("sim", f"{LINK_PREFIX}{panellist_id}")
    caller = simulator.caller_of(request)
    panellist = await panellist_store.get(bot.db.conn, panellist_id)
    if panellist is None or panellist.status == PanellistStatus.ERASED:
        return _bad(f"no panellist {panellist_id}")
    owner = await sim_store.owner_of(bot.db.conn, address)
    if owner is None:
        holder = await panellist_store.find_by_address(bot.db.conn, address)
        if holder is not None and holder.id != panellist_id:
            # Someone typed "panellist-12" as a new name through the API; never take over
            # their conversation silently.
            return _bad(f"{address} is already used by someone else", status_code=409)
        # A link to this same panellist with no owner was made before links had owners
        # (an older demo): this browser may take it.
        refused = await simulator.claim_new(bot, caller, address, held=holder is not None)
        if refused is not None:
            return simulator.with_cookie(request, caller, refused)
    elif not hmac.compare_digest(owner, caller.owner_hash):
        return _bad(f"{address} is already used by someone else", status_code=409)
    async with bot.db.transaction() as conn:
        panellist = await panellist_store.get(conn, panellist_id)
        if panellist is None or panellist.status == PanellistStatus.ERASED:
            return _bad(f"no panellist {panellist_id}")
        holder = await panellist_store.find_by_address(conn, address)
        if holder is not None and holder.id != panellist_id:
            return _bad(f"{address} is already used by someone else", status_code=409)
        await panellist_store.add_address(conn, panellist_id, address)
        requeued = await _requeue_current_question(bot, conn, panellist, address)
    if requeued:
        bot.wake_dispatcher()
    field_names = [f.name for f in bot.settings.panel.fields]
    response = JSONResponse(
        {
            "address": str(address),
            "label": panellist_label(panellist_id, panellist.demographics, field_names),
            "requeued": requeued,
        }
    )
    return simulator.with_cookie(request, caller, response)


async def _start_named(request: Request, name: Any) -> Response:
    """A new person ``sim:<name>`` for this browser (or one of its own, again)."""
    bot: Bot = request.app.state.bot
    if not isinstance(name, str):
        return _bad("'name' must be a string such as \"alice\"")
    address = simulator.sim_address(f"sim:{name}")
    if isinstance(address, str):
        return _bad(address)
    if _LINKED_NAME.fullmatch(address.id):
        return _bad(f"names like {address.id} are kept for panellists; choose another")
    caller = simulator.caller_of(request)
    refused = await simulator.check_access(bot, caller, address, create=True)
    if refused is not None:
        return simulator.with_cookie(request, caller, refused)
    response = JSONResponse({"address": str(address), "label": address.id})
    return simulator.with_cookie(request, caller, response)


async def _requeue_current_question(
    bot: Bot, conn: Conn, panellist: Panellist, address: Address
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


def routes() -> list[BaseRoute]:
    """The page, its static files and the identities API (only with the simulator on)."""
    return [
        Route("/simulator", simulator_page, methods=["GET"]),
        Mount("/simulator/static", app=StaticFiles(directory=STATIC_DIR), name="simulator-static"),
        Route("/simulator/api/identities", list_identities, methods=["GET"]),
        Route("/simulator/api/identities", link_identity, methods=["POST"]),
    ]
