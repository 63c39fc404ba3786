"""The simulator's JSON API (and, from the page module, its chat page).

The simulator has no login, so each ``sim:`` person belongs to the browser (or API client)
that started them: a random cookie (HttpOnly, SameSite=Strict) names the browser, and the
database keeps only a keyed hash of it (``simulator_owners``). A browser sees and speaks
for its own people only; a person who is also an imported panellist, or has an SMS,
WhatsApp or Telegram address, can be spoken for only on a demo panel that allows it
(``[channels.simulator] demo`` and ``allow_panellists``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import sms
from bot.inbox import UnstorablePayload
from bot.ingress import StoreFailed
from bot.models import Address, utcnow
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import simulator as sim_store

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.channels.simulator import SimulatorChannel

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 5.0
# How often a web process looks for the main process's answer ([web] workers >= 1).
POLL = 0.02
MAX_TEXT = 5000
# A request body is refused past this size, before it is read: 5,000 characters of text
# escaped as \uXXXX are 30 KB. (The app's general cap for /simulator/ is the same.)
MAX_BODY = 32 * 1024
# The browser's cookie: a random token; the server keeps only its keyed hash.
COOKIE = "panelbot_sim"
COOKIE_MAX_AGE = 90 * 24 * 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
# One network address may start this many times the per-browser limit of new people a
# minute (several browsers behind one office or home router).
PER_NETWORK_FACTOR = 5
RETRY_AFTER = "5"
# A name claimed but never used for a conversation is forgotten after this many days.
UNUSED_CLAIM_DAYS = 1


def _bad(reason: str, status_code: int = 400) -> Response:
    return JSONResponse({"error": reason}, status_code=status_code)


def _encodable(text: str) -> bool:
    """False for text SQLite cannot store, such as a lone surrogate ("\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sim_address(value: Any) -> Address | str:
    """A ``sim:`` address, or the reason it is not one."""
    if not isinstance(value, str):
        return "'from' must be a string such as \"sim:alice\""
    if not _encodable(value):
        return "the address is not valid Unicode text"
    try:
        address = Address.parse(value)
    except ValueError as exc:
        return str(exc)
    if address.channel != "sim":
        return "the simulator only speaks for sim: addresses"
    return address


# -- the caller: a browser or API client, known by its cookie ----------------------------------


@dataclass
class Caller:
    token: str
    owner_hash: str  # keyed hash of the cookie: what the database keeps
    client_hash: str  # keyed hash of the network address: for the new-people limit
    issue_cookie: bool  # the browser had no (valid) cookie; send it one with the answer


def caller_of(request: Request) -> Caller:
    """The browser behind a request (one per request: a new cookie is made once)."""
    known = getattr(request.state, "sim_caller", None)
    if known is not None:
        return known
    bot: Bot = request.app.state.bot
    token = request.cookies.get(COOKIE, "")
    fresh = not _TOKEN.fullmatch(token)
    if fresh:
        token = secrets.token_urlsafe(32)
    host = request.client.host if request.client else "unknown"
    caller = Caller(
        token=token,
        owner_hash=_keyed(bot, "sim-owner", token),
        client_hash=_keyed(bot, "sim-client", host),
        issue_cookie=fresh,
    )
    request.state.sim_caller = caller
    return caller


def _keyed(bot: Bot, purpose: str, value: str) -> str:
    message = f"{purpose}:{value}".encode("utf-8", "surrogateescape")
    return hmac.new(bot.hash_key, message, hashlib.sha256).hexdigest()


def with_cookie(request: Request, caller: Caller, response: Response) -> Response:
    """Give a browser that had no cookie the one its new people now belong to (once)."""
    mine = COOKIE.encode() + b"="
    if caller.issue_cookie and not any(
        name == b"set-cookie" and value.startswith(mine) for name, value in response.raw_headers
    ):
        response.set_cookie(
            COOKIE,
            caller.token,
            max_age=COOKIE_MAX_AGE,
            path="/simulator",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def may_speak_as_panellists(bot: Bot) -> bool:
    settings = bot.settings.channels.simulator
    return settings.demo and settings.allow_panellists


def _not_a_panellist_here(address: Address) -> Response:
    return _bad(
        f"{address} speaks for a panellist who is also reached by SMS, WhatsApp or Telegram, "
        "or was imported; the simulator may do that only on a demo panel "
        "([channels.simulator] demo and allow_panellists)",
        status_code=403,
    )


async def claim_new(
    bot: Bot, caller: Caller, address: Address, *, held: bool = False
) -> Response | None:
    """Make ``address`` a new person of the caller's; a refusal (403, 409, 429) if not.

    ``held``: the address is on record but no browser's, and the caller may take it (a
    demo panellist linked before simulator people had owners).
    """
    limit = bot.settings.channels.simulator.new_identities_per_minute
    now = utcnow()
    async with bot.db.transaction() as conn:
        if not held and await sim_store.address_in_use(conn, address):
            # On record, but no browser's (started from `panelbot chat`, or before owners).
            return _bad(f"{address} belongs to someone else; choose another name", 403)
        by_owner, by_client = await sim_store.recent_claims(
            conn, caller.owner_hash, caller.client_hash, sim_store.cutoff(now, 60)
        )
        if by_owner >= limit or by_client >= limit * PER_NETWORK_FACTOR:
            per = (
                f"{limit} a minute from one browser"
                if by_owner >= limit
                else f"{limit * PER_NETWORK_FACTOR} a minute from one network address"
            )
            return JSONResponse(
                {
                    "error": f"too many new people on the simulator: at most {per}; try again "
                    "in a minute"
                },
                status_code=429,
                headers={"Retry-After": "60"},
            )
        await sim_store.forget_unused_claims(conn, sim_store.cutoff(now, UNUSED_CLAIM_DAYS * 86400))
        if not await sim_store.claim(conn, address, caller.owner_hash, caller.client_hash, now):
            return _bad(f"{address} belongs to someone else; choose another name", 403)
        if not held:
            # A name nobody holds starts a new person: what an earlier holder of the name
            # said (a no or a STOP before joining) is not this browser's to inherit or learn.
            await panellist_store.lift_suppression(conn, bot.hash_key, address)
    return None


async def check_access(
    bot: Bot, caller: Caller, address: Address, *, create: bool
) -> Response | None:
    """None when the caller may act as ``address``; else the refusal to send.

    With ``create`` an unclaimed address becomes the caller's (a new person, counted
    against the per-minute limit); without it, an address that is not the caller's is
    "not found", so that nobody learns whose people exist.
    """
    owner = await sim_store.owner_of(bot.db.conn, address)
    if create and owner is not None and not hmac.compare_digest(owner, caller.owner_hash):
        # Another browser's, unless its claim has run out (unused, or released by a no a
        # day ago): forget such claims now, then look again.
        async with bot.db.transaction() as conn:
            await sim_store.forget_unused_claims(
                conn, sim_store.cutoff(utcnow(), UNUSED_CLAIM_DAYS * 86400)
            )
        owner = await sim_store.owner_of(bot.db.conn, address)
    if owner is None or not hmac.compare_digest(owner, caller.owner_hash):
        if not create:
            return _bad(f"no conversation with {address} in this browser", 404)
        if owner is not None:
            return _bad(f"{address} belongs to someone else; choose another name", 403)
        refused = await claim_new(bot, caller, address)
        if refused is not None:
            return refused
    if not may_speak_as_panellists(bot) and await sim_store.speaks_for_real_panellist(
        bot.db.conn, address
    ):
        return _not_a_panellist_here(address)
    return None


async def _held_by_nobody(bot: Bot, address: Address) -> bool:
    """No browser owns the address and nobody on record holds it."""
    conn = bot.db.conn
    return await sim_store.owner_of(conn, address) is None and not (
        await sim_store.address_in_use(conn, address)
    )


# -- reading a body: capped before it is read, JSON without surprises -------------------------


async def read_json(request: Request, example: str) -> Any | Response:
    """The request's JSON body, or the response refusing it (400, 413)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return _bad("Content-Length must be a whole number")
        if int(declared) > MAX_BODY:
            return _too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                return _too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        return _bad("the request body did not arrive whole")
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        # ValueError covers bad JSON and bytes that are not UTF-8; RecursionError, JSON
        # nested thousands deep.
        return _bad(f"the body must be JSON: {example}")


def _too_large() -> Response:
    return _bad(f"the request body is larger than {MAX_BODY // 1024} KB", 413)


def storage_guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A database that is full, locked or failing gives 503 and Retry-After, never 500.

    The caller (and a new browser's cookie) is settled before the handler runs, and every
    answer gives a new browser its cookie, whatever happens after: a name claimed before a
    failure (the inbox full after the claim, say) is never left with a browser that did
    not get the cookie it was claimed for.
    """

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        caller = caller_of(request)
        try:
            return with_cookie(request, caller, await handler(request))
        except (sqlite3.DatabaseError, StoreFailed) as failure:
            # Full, locked, read-only or failing: nothing the client can fix but waiting.
            exc = failure.__cause__ if isinstance(failure, StoreFailed) else failure
            logger.warning(
                "simulator %s %s: storage unavailable (%s: %s)",
                request.method,
                request.url.path,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, sqlite3.OperationalError),
            )
            response = JSONResponse(
                {"error": "the panel cannot store this just now; try again shortly"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER},
            )
            # A person claimed before the failure stays this browser's when it tries again.
            return with_cookie(request, caller, response)

    return guarded


# -- the routes -------------------------------------------------------------------------------


@storage_guarded
async def post_message(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    body = await read_json(request, '{"from": "sim:NAME", "text": "..."}')
    if isinstance(body, Response):
        return body
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object with 'from' and 'text'")
    if "from" not in body or "text" not in body:
        return _bad("both 'from' and 'text' are required")
    address = sim_address(body["from"])
    if isinstance(address, str):
        return _bad(address)
    text = body["text"]
    if not isinstance(text, str):
        return _bad("'text' must be a string")
    if len(text) > MAX_TEXT:
        return _bad(f"'text' is longer than {MAX_TEXT} characters")
    if not _encodable(text):
        return _bad("'text' is not valid Unicode text (a lone surrogate such as \\ud800)")
    caller = caller_of(request)
    refused = await check_access(bot, caller, address, create=True)
    if refused is not None:
        return with_cookie(request, caller, refused)
    message_id = f"sim-{uuid.uuid4().hex}"
    channel: SimulatorChannel = bot.channels["sim"]  # type: ignore[assignment]
    try:
        result = await channel.accept(address, text, message_id)
    except UnstorablePayload as exc:
        return with_cookie(request, caller, _bad(f"the message cannot be stored: {exc}"))
    if result is None:
        # Stored for the main process (a web process): wait for its replies in the database.
        outbox_ids = await replies_to(bot, message_id, REPLY_TIMEOUT)
    else:
        outbox_ids = result.outbox_ids
    replies = await wait_for_replies(bot, outbox_ids, REPLY_TIMEOUT)
    body: dict[str, Any] = {"replies": replies}
    forgotten = await _forgotten(bot, address)
    if forgotten:
        # The message ended (or found) a conversation nothing is kept of: the page says so.
        body["forgotten"] = forgotten
    return with_cookie(request, caller, JSONResponse(body))


async def replies_to(bot: Bot, message_id: str, timeout: float) -> list[int]:
    """The outbox rows the main process queued in answer to a simulator message."""
    deadline = time.monotonic() + timeout
    while True:
        found = await outbox_store.replies_to_inbound(bot.db.conn, "sim", message_id)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return []
        await asyncio.sleep(POLL)


async def wait_for_replies(bot: Bot, outbox_ids: list[int], timeout: float) -> list[str]:
    """The texts of these outbox rows once the dispatcher has sent them (or the timeout)."""
    if not outbox_ids:
        return []
    channel: SimulatorChannel = bot.channels["sim"]  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while True:
        rows = await outbox_store.progress_of(bot.db.conn, outbox_ids)
        done = [r for r in rows if r["status"] in ("sent", "delivered")]
        pending = [r for r in rows if r["status"] in ("queued", "sending")]
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0 or not (bot.started or bot.inbox is not None):
            return [r["text"] for r in done]
        if bot.inbox is not None:
            await asyncio.sleep(min(remaining, POLL))  # the main process sends them
            continue
        address = pending[0]["address"]
        seen = channel.sent_count(address)
        await channel.wait_for_send(address, seen, min(remaining, 0.25))


@storage_guarded
async def get_messages(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    address = sim_address(request.query_params.get("address"))
    if isinstance(address, str):
        return _bad(address)
    caller = caller_of(request)
    history: list[dict[str, Any]] = []
    forgotten = None
    if not await _held_by_nobody(bot, address):
        refused = await check_access(bot, caller, address, create=False)
        if refused is not None:
            return refused
        # Only what happened since this browser claimed the name: an earlier holder's
        # messages (a forgotten person's last words) are never another browser's to read.
        since = await sim_store.claimed_at(bot.db.conn, address) or ""
        history = [
            m
            for m in await outbox_store.conversation(bot.db.conn, address)
            if m["at"] >= since and m["text"] is not None
        ]
        # Why nothing is kept, told only to the browser whose person it was: its name stays
        # its own (released) for a day after a no or a STOP before joining.
        forgotten = await _forgotten(bot, address)
    # A name nobody holds (not started yet, or its person forgotten a while ago) reads as
    # an empty conversation, saying nothing about who had it before.
    sanitise = bot.settings.channels.twilio.sanitize
    body: dict[str, Any] = {"messages": [_message_json(m, sanitise) for m in history]}
    body["forgotten"] = forgotten
    return JSONResponse(body)


async def _forgotten(bot: Bot, address: Address) -> str | None:
    """Why nothing is kept for this address: "declined" (said no to joining) or
    "opted_out" (STOP before joining), so the page can say so; None otherwise. Only for
    the browser that owns the address (the caller has passed :func:`check_access`)."""
    if await panellist_store.find_by_address(bot.db.conn, address) is not None:
        return None
    found = await panellist_store.suppression(bot.db.conn, bot.hash_key, address)
    return found[0] if found and found[0] in ("declined", "opted_out") else None


def _message_json(m: dict[str, Any], sanitise: bool) -> dict[str, Any]:
    out = {
        "direction": m["direction"],
        "text": m["text"],
        "at": m["at"],
        "options": m["extra"].get("options", []),
    }
    if m["extra"].get("multi"):
        # Several options may be ticked, then sent together with this label.
        out["multi"] = True
        out["send_label"] = m["extra"].get("send_label") or "Send"
    if m["direction"] == "out":
        # What the same text would cost over SMS, shown under each bot message.
        _, info = sms.prepare(m["text"], sanitise_text=sanitise)
        out["sms"] = {"encoding": info.encoding, "segments": info.segments}
    return out


def routes() -> list[BaseRoute]:
    from bot.web import page

    return [
        Route("/simulator/api/messages", post_message, methods=["POST"]),
        Route("/simulator/api/messages", get_messages, methods=["GET"]),
        *page.routes(),
    ]
