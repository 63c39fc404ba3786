"""A fake Telegram Bot API server on 127.0.0.1, for the real python-telegram-bot to talk to.

PTB calls ``{base_url}{token}/{method}``; point it here with
``api_base_url = fake.base_url`` (``http://127.0.0.1:<port>/bot``). The fake answers the
methods panelbot uses (getMe, sendMessage, editMessageReplyMarkup, answerCallbackQuery,
getUpdates, deleteWebhook, setWebhook, getWebhookInfo) with realistic JSON, records every
call with a monotonic time, and can be scripted to answer the next calls of a method with an
error or slowly::

    async with FakeTelegram.running() as fake:
        fake.script("sendMessage", blocked())          # 403 "bot was blocked by the user"
        fake.script("sendMessage", flood(1), OK)       # 429 retry_after=1, then success
        fake.queue_update(fake.message_update(42, "hi"))  # served by getUpdates
        await fake.wait_for_sends(1, chat_id=42)

Updates for the webhook route are built with :meth:`FakeTelegram.message_update` and
:meth:`FakeTelegram.callback_update`, which share one update_id sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "123:ABC"
BOT_USER = {
    "id": 123,
    "is_bot": True,
    "first_name": "Test Panel",
    "username": "test_panel_bot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# Parameters PTB sends JSON-encoded inside a form field.
_JSON_PARAMS = {"reply_markup", "allowed_updates", "entities", "link_preview_options"}
# How long an empty getUpdates is held (Telegram holds it for ``timeout``; tests are short).
LONG_POLL_CAP = 0.2


@dataclass(frozen=True, slots=True)
class Answer:
    """A scripted answer: an HTTP status and a JSON body, optionally after a delay.

    ``body=None`` with status 200 means "answer as the method normally would".
    """

    status: int = 200
    body: dict[str, Any] | None = None
    delay: float = 0.0


OK = Answer()


def blocked() -> Answer:
    return Answer(
        403,
        {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
    )


def flood(retry_after: int = 1) -> Answer:
    return Answer(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        },
    )


def chat_not_found() -> Answer:
    return Answer(
        400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    )


def bad_request(description: str = "Bad Request: message text is empty") -> Answer:
    return Answer(400, {"ok": False, "error_code": 400, "description": description})


def server_error() -> Answer:
    return Answer(500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})


def slow(seconds: float) -> Answer:
    """The normal answer, after ``seconds``."""
    return Answer(delay=seconds)


@dataclass(slots=True)
class ApiCall:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int | None = None  # None while the answer is still being made (a slow one)
    result: Any = None

    @property
    def ok(self) -> bool:
        """Answered with success (a call still in progress is not, yet)."""
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def callback_data(self) -> list[list[str]]:
        """The inline keyboard's callback_data, row by row ([] without a keyboard)."""
        markup = self.params.get("reply_markup") or {}
        return [
            [button.get("callback_data", "") for button in row]
            for row in markup.get("inline_keyboard", [])
        ]

    @property
    def button_labels(self) -> list[str]:
        markup = self.params.get("reply_markup") or {}
        return [button["text"] for row in markup.get("inline_keyboard", []) for button in row]


def _random_count() -> Iterator[int]:
    """Increasing ids from a random start below 2**31 (Telegram's ids are 32-bit here)."""
    return itertools.count(1_000_000 + secrets.randbelow(2**31 - 100_000_000))


@dataclass
class FakeTelegram:
    """The fake Bot API. Build and serve it with :meth:`running`."""

    token: str = TOKEN
    port: int = 0
    calls: list[ApiCall] = field(default_factory=list)
    _scripts: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _confirmed: int = 0  # getUpdates offset: updates below it were acknowledged
    _update_queued: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition | None = None
    # Ids start at a random point, so a second run of the fake against the same database
    # (``python -m tests.fakes --data-dir D`` twice) never repeats the first run's ids,
    # which the bot would drop as repeats.
    _message_ids: Iterator[int] = field(default_factory=lambda: _random_count())
    _update_ids: Iterator[int] = field(default_factory=lambda: _random_count())
    _query_ids: Iterator[int] = field(default_factory=lambda: _random_count())
    _user_message_ids: Iterator[int] = field(default_factory=lambda: _random_count())
    # Each sent message's keyboard as it is now, by (chat id, message id).
    _markups: dict[tuple[Any, int], dict[str, Any]] = field(default_factory=dict)

    # -- serving ----------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, token: str = TOKEN) -> AsyncIterator[FakeTelegram]:
        """Serve a fake on a free port in the current event loop."""
        fake = cls(token=token)
        route = Route("/bot{token}/{method}", fake._endpoint, methods=["GET", "POST"])
        app = Starlette(routes=[route])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        fake.port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield fake
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=5)

    @property
    def base_url(self) -> str:
        """What to set as ``[channels.telegram] api_base_url``."""
        return f"http://127.0.0.1:{self.port}/bot"

    # -- scripting --------------------------------------------------------------------------

    def script(self, method: str, *answers: Answer) -> None:
        """Answer the next calls of ``method`` with these, in order; then normally again."""
        self._scripts[method].extend(answers)

    def queue_update(self, update: dict[str, Any]) -> None:
        """Make an update available to getUpdates (polling mode)."""
        self._updates.append(update)
        self._update_queued.set()

    def message_update(
        self, chat_id: int, text: str, *, chat_type: str = "private"
    ) -> dict[str, Any]:
        """An update carrying a text message from a user in their private chat with the bot."""
        message: dict[str, Any] = {
            "message_id": next(self._user_message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, "first_name": "Pat"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Pat", "language_code": "en"},
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"update_id": next(self._update_ids), "message": message}

    def callback_update(
        self, chat_id: int, data: str, *, message_id: int | None = None
    ) -> dict[str, Any]:
        """An update for a tap on an inline keyboard button under one of the bot's messages."""
        if message_id is None:
            sent = self.sent(chat_id)
            message_id = sent[-1].result["message_id"] if sent else 1
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Pat"},
            "from": BOT_USER,
            "text": "(the bot's question)",
        }
        # Telegram sends the message with its keyboard as it is now (after any edits).
        markup = self._markups.get((chat_id, message_id))
        if markup:
            message["reply_markup"] = markup
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": f"cbq-{next(self._query_ids)}",
                "from": {"id": chat_id, "is_bot": False, "first_name": "Pat"},
                "chat_instance": f"ci-{chat_id}",
                "data": data,
                "message": message,
            },
        }

    # -- what tests read --------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[ApiCall]:
        """Successful sendMessage calls (to one chat, when given), in arrival order."""
        return [
            c
            for c in self.calls_to("sendMessage")
            if c.ok and (chat_id is None or c.chat_id == chat_id)
        ]

    def attempts(self, chat_id: int | None = None) -> list[ApiCall]:
        """Every sendMessage call, whatever it was answered."""
        return [c for c in self.calls_to("sendMessage") if chat_id is None or c.chat_id == chat_id]

    async def wait_for(self, ready: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``ready()`` holds after some call; raises TimeoutError otherwise."""
        condition = self._condition()
        async with asyncio.timeout(timeout):
            async with condition:
                await condition.wait_for(ready)

    async def wait_for_sends(
        self, count: int, chat_id: int | None = None, timeout: float = 5.0
    ) -> list[ApiCall]:
        """Wait for at least ``count`` successful sendMessage calls (to the chat)."""
        await self.wait_for(lambda: len(self.sent(chat_id)) >= count, timeout)
        return self.sent(chat_id)

    # -- the API ----------------------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        condition = self._condition()
        async with condition:
            condition.notify_all()

    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await _params(request)
        call = ApiCall(method, params, time.monotonic())
        self.calls.append(call)
        await self._notify()  # on arrival too: a test may wait for a call still in progress
        try:
            if request.path_params["token"] != self.token:
                return self._answer(call, 401, _error(401, "Unauthorized"))
            script = self._scripts.get(method)
            answer = script.popleft() if script else OK
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.body is not None or answer.status != 200:
                return self._answer(call, answer.status, answer.body or _error(answer.status))
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                return self._answer(call, 404, _error(404, "Not Found: method not found"))
            result = await handler(params)
            return self._answer(call, 200, {"ok": True, "result": result}, result)
        finally:
            await self._notify()

    def _answer(
        self, call: ApiCall, status: int, body: dict[str, Any], result: Any = None
    ) -> Response:
        call.status = status
        call.result = result
        return JSONResponse(body, status_code=status)

    async def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return BOT_USER

    async def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Pat"},
            "from": BOT_USER,
            "text": params.get("text", ""),
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
            self._markups[(chat_id, message["message_id"])] = params["reply_markup"]
        return message

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        """Replaces a sent message's keyboard (the bot ticks multi-choice options with it)."""
        key = (params.get("chat_id"), int(params.get("message_id") or 0))
        self._markups[key] = params.get("reply_markup") or {}
        return {
            "message_id": key[1],
            "date": int(time.time()),
            "chat": {"id": key[0], "type": "private", "first_name": "Pat"},
            "from": BOT_USER,
            "text": "(the bot's question)",
            "reply_markup": self._markups[key],
        }

    def markup_labels(self, chat_id: int, message_id: int) -> list[str]:
        """A sent message's button labels as they are now, after any edits."""
        markup = self._markups.get((chat_id, message_id)) or {}
        return [button["text"] for row in markup.get("inline_keyboard", []) for button in row]

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        return True

    async def _api_setWebhook(self, params: dict[str, Any]) -> bool:
        return True

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}

    async def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        if offset:
            # Telegram forgets updates below the offset: they were confirmed.
            self._confirmed = max(self._confirmed, offset)
        limit = int(params.get("limit") or 100)
        timeout = min(float(params.get("timeout") or 0), LONG_POLL_CAP)

        def pending() -> list[dict[str, Any]]:
            return [u for u in self._updates if u["update_id"] >= self._confirmed][:limit]

        if not pending() and timeout > 0:
            # A long poll: held until an update is queued or the (capped) timeout passes.
            self._update_queued.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._update_queued.wait(), timeout)
        return pending()


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test run owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error_code": status, "description": description or f"Error {status}"}


async def _params(request: Request) -> dict[str, Any]:
    """The call's parameters, as PTB sends them (a URL-encoded form) or as JSON."""
    content_type = request.headers.get("content-type", "")
    raw: dict[str, Any]
    if content_type.startswith("application/json"):
        body = await request.body()
        raw = json.loads(body) if body else {}
    elif content_type.startswith("application/x-www-form-urlencoded"):
        # Parsed by hand: Starlette's form parser needs python-multipart.
        raw = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    else:
        # No body (getMe) or multipart, which only file uploads use: not needed here.
        raw = dict(request.query_params)
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and key in _JSON_PARAMS:
            value = json.loads(value)
        elif isinstance(value, str) and key == "chat_id" and value.lstrip("-").isdigit():
            value = int(value)
        params[key] = value
    return params
