"""The simulator's JSON API (and, from the page module, its chat page)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import sms
from bot.models import Address, InboundMessage
from bot.storage import outbox as outbox_store

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.channels.simulator import SimulatorChannel

REPLY_TIMEOUT = 5.0
# How often a web process looks for the main process's answer ([web] workers >= 1).
POLL = 0.02
MAX_TEXT = 5000


def _bad(reason: str) -> Response:
    return JSONResponse({"error": reason}, status_code=400)


def _sim_address(value: Any) -> Address | str:
    """A ``sim:`` address, or the reason it is not one."""
    if not isinstance(value, str):
        return "'from' must be a string such as \"sim:alice\""
    try:
        address = Address.parse(value)
    except ValueError as exc:
        return str(exc)
    if address.channel != "sim":
        return "the simulator only speaks for sim: addresses"
    return address


async def post_message(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad('the body must be JSON: {"from": "sim:NAME", "text": "..."}')
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object with 'from' and 'text'")
    if "from" not in body or "text" not in body:
        return _bad("both 'from' and 'text' are required")
    address = _sim_address(body["from"])
    if isinstance(address, str):
        return _bad(address)
    text = body["text"]
    if not isinstance(text, str):
        return _bad("'text' must be a string")
    if len(text) > MAX_TEXT:
        return _bad(f"'text' is longer than {MAX_TEXT} characters")
    message_id = f"sim-{uuid.uuid4().hex}"
    if bot.inbox is not None:
        # A web process: the main process handles it; wait for its replies in the database.
        payload = {"from": str(address), "text": text, "id": message_id}
        await bot.inbox.put("sim-message", message_id, json.dumps(payload, ensure_ascii=False))
        outbox_ids = await replies_to(bot, message_id, REPLY_TIMEOUT)
    else:
        message = InboundMessage(address, text, provider_message_id=message_id)
        outbox_ids = (await bot.handle(message)).outbox_ids
    replies = await wait_for_replies(bot, outbox_ids, REPLY_TIMEOUT)
    return JSONResponse({"replies": replies})


async def replies_to(bot: Bot, message_id: str, timeout: float) -> list[int]:
    """The outbox rows the main process queued in answer to a simulator message."""
    deadline = time.monotonic() + timeout
    while True:
        row = await bot.db.fetchone(
            "SELECT id FROM inbound_messages WHERE channel = 'sim' AND provider_message_id = ?",
            (message_id,),
        )
        if row is not None:
            prefix = f"in:sim:{row['id']}:"
            rows = await bot.db.fetchall(
                "SELECT id FROM outbox WHERE idempotency_key >= ? AND idempotency_key < ? "
                "ORDER BY id",
                (prefix, prefix[:-1] + ";"),
            )
            return [r["id"] for r in rows]
        if time.monotonic() >= deadline:
            return []
        await asyncio.sleep(POLL)


async def wait_for_replies(bot: Bot, outbox_ids: list[int], timeout: float) -> list[str]:
    """The texts of these outbox rows once the dispatcher has sent them (or the timeout)."""
    if not outbox_ids:
        return []
    channel: SimulatorChannel = bot.channels["sim"]  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    marks = ",".join("?" * len(outbox_ids))
    while True:
        rows = await bot.db.fetchall(
            f"SELECT id, text, status, address FROM outbox WHERE id IN ({marks}) ORDER BY id",
            outbox_ids,
        )
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


async def get_messages(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    address = _sim_address(request.query_params.get("address"))
    if isinstance(address, str):
        return _bad(address)
    history = await outbox_store.conversation(bot.db.conn, address)
    sanitise = bot.settings.channels.twilio.sanitize
    return JSONResponse({"messages": [_message_json(m, sanitise) for m in history]})


def _message_json(m: dict[str, Any], sanitise: bool) -> dict[str, Any]:
    out = {
        "direction": m["direction"],
        "text": m["text"],
        "at": m["at"],
        "options": m["extra"].get("options", []),
    }
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
