"""The Telegram channel: a python-telegram-bot ``Application`` embedded in the bot's event loop.

Updates arrive either on our own webhook route (``POST /webhooks/telegram``, checked against
the secret token Telegram sends in ``X-Telegram-Bot-Api-Secret-Token``) or, in polling mode,
through PTB's ``Updater``. Both paths end in :meth:`TelegramChannel.handle_update`, which turns
an update into an :class:`InboundMessage` for the engine (or an action of the channel's own,
ticking an option) and hands it to the ingress (:mod:`bot.ingress`): handled now, or stored
for the main process by a web process. PTB never owns the loop: no
``run_polling``/``run_webhook``.

panelbot does not register the webhook with Telegram (``setWebhook``): that needs the public
URL and the secret and is done once by the operator (a future CLI command may do it). In
polling mode PTB removes any webhook itself, as Telegram serves only one of the two.

Only private chats are served: a panel question in a group would show one person's answers
to everyone in it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import warnings
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot as PTBBot
from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatType
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ContextTypes, TypeHandler
from telegram.warnings import PTBDeprecationWarning

from bot.ingress import Action, StoreFailed
from bot.models import (
    Address,
    ErrorClass,
    InboundMessage,
    OutboundMessage,
    SendError,
    SendResult,
)
from bot.trouble import Trouble

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.channels.base import ChannelServices
    from bot.config import Settings
    from bot.engine.conversation import HandleResult
    from bot.ingress import Decoder, Ingress, Item

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's updates are a few kilobytes; anything far larger is not from Telegram.
MAX_UPDATE_BYTES = 1_000_000
# Telegram's limit on callback_data.
MAX_CALLBACK_BYTES = 64
# Telegram allows up to 8 buttons a row; 6 keeps a 0-10 scale in two readable rows.
SHORT_LABEL_CHARS = 3
SHORT_PER_ROW = 6
MEDIUM_LABEL_CHARS = 14
MAX_BUTTON_LABEL = 60
# The update types we act on; the webhook, when an operator registers it, should ask for the
# same (``allowed_updates``).
ALLOWED_UPDATES = ["message", "callback_query"]

# While updates are refused with 503, a line about it at most this often.
REFUSALS_LOG_EVERY = 10.0

# BadRequest descriptions that mean the chat is gone or never was (lower case).
UNREACHABLE_PHRASES = ("chat not found", "user not found", "peer_id_invalid")

# Bot commands and the text the engine understands for them. Telegram sends /start when
# someone first opens the bot or taps Start/Restart after clearing or unblocking the chat:
# an explicit "I want in", like the SMS opt-in keyword. For a stranger it is a first
# contact (welcome and consent), for someone who left it rejoins them.
COMMAND_TEXT = {
    "start": "START",
    "stop": "STOP",
    "help": "HELP",
    "language": "LANGUAGE",
}


# Multi-choice questions: a tap ticks or unticks an option (the keyboard is edited in place
# with editMessageReplyMarkup; the ticks live in the keyboard itself, so nothing is stored),
# and a last button sends the ticked options together, as if "1 3" were typed.
MULTI_TOGGLE = "m:"
MULTI_SEND = "m!"
TICK = "\u2705 "


def inline_keyboard(
    options: list[dict[str, str]], *, multi: bool = False, send_label: str = ""
) -> InlineKeyboardMarkup | None:
    """Buttons for a numbered question: tapping one sends its ``reply`` as if typed.

    With ``multi`` a tap ticks the option instead, and a last button (``send_label``) sends
    every ticked one. Short labels (a 1-5 scale) share rows; longer ones get a row each so
    they are not cut off on small phones. Returns None when an option cannot be a button
    (its reply is over Telegram's 64-byte callback limit): the text alone still works, typed.
    """
    if not options:
        return None
    prefix = MULTI_TOGGLE if multi else ""
    buttons: list[InlineKeyboardButton] = []
    for option in options:
        reply = str(option.get("reply", "")).strip()
        label = str(option.get("label", "")).strip()
        if not reply or len((prefix + reply).encode()) > MAX_CALLBACK_BYTES:
            return None
        # "1 Very easy" keeps the number people may also type; a label equal to its reply
        # (a scale point, "YES"/"Yes") is shown once.
        text = label if label.casefold() == reply.casefold() or not label else f"{reply} {label}"
        buttons.append(InlineKeyboardButton(text[:MAX_BUTTON_LABEL], callback_data=prefix + reply))
    longest = max(len(b.text) for b in buttons)
    if longest <= SHORT_LABEL_CHARS:
        rows = math.ceil(len(buttons) / SHORT_PER_ROW)
        per_row = math.ceil(len(buttons) / rows)
    elif longest <= MEDIUM_LABEL_CHARS:
        per_row = 2
    else:
        per_row = 1
    layout = [buttons[i : i + per_row] for i in range(0, len(buttons), per_row)]
    if multi:
        layout.append([InlineKeyboardButton(send_label or "Send", callback_data=MULTI_SEND)])
    return InlineKeyboardMarkup(layout)


def toggled(markup: InlineKeyboardMarkup, data: str) -> InlineKeyboardMarkup:
    """The keyboard with the option whose callback_data is ``data`` ticked or unticked."""
    rows = []
    for row in markup.inline_keyboard:
        new_row = []
        for button in row:
            if button.callback_data == data:
                text = button.text
                text = text.removeprefix(TICK) if text.startswith(TICK) else TICK + text
                button = InlineKeyboardButton(text, callback_data=button.callback_data)
            new_row.append(button)
        rows.append(new_row)
    return InlineKeyboardMarkup(rows)


def ticked(markup: InlineKeyboardMarkup | None) -> list[str]:
    """The replies of the ticked options of a multi-choice keyboard, in its order."""
    if markup is None:
        return []
    return [
        str(button.callback_data).removeprefix(MULTI_TOGGLE)
        for row in markup.inline_keyboard
        for button in row
        if isinstance(button.callback_data, str)
        and button.callback_data.startswith(MULTI_TOGGLE)
        and button.text.startswith(TICK)
    ]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def without_lone_surrogates(data: Any) -> Any:
    """``data`` (parsed JSON) without the lone surrogates in its strings (as the engine
    drops them from message text); the same object when there is none. (A valid pair
    written as two escapes is one character once parsed, so any left is a lone one.)"""
    if isinstance(data, str):
        return _LONE_SURROGATE.sub("", data) if _LONE_SURROGATE.search(data) else data
    if isinstance(data, list):
        items = [without_lone_surrogates(v) for v in data]
        changed = any(new is not old for new, old in zip(items, data, strict=True))
        return items if changed else data
    if isinstance(data, dict):
        pairs = [(without_lone_surrogates(k), without_lone_surrogates(v)) for k, v in data.items()]
        changed = any(
            k is not k0 or v is not v0 for (k, v), (k0, v0) in zip(pairs, data.items(), strict=True)
        )
        return dict(pairs) if changed else data
    return data


def command_of(text: str) -> tuple[str, str] | None:
    """``("start", "CODE")`` for ``/start CODE`` (or ``/start@PanelBot CODE``); None otherwise."""
    if not text.startswith("/"):
        return None
    head, _, rest = text[1:].partition(" ")
    name = head.split("@", 1)[0].casefold()
    if not name:
        return None
    return name, rest.strip()


def retry_after_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds: PTB 22 gives an int or a timedelta."""
    with warnings.catch_warnings():
        # PTB warns that the int form is going away; either form is handled here.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def classify(exc: TelegramError) -> SendError:
    """A PTB error as the dispatcher's SendError (after RapidPro's courier)."""
    # Telegram's own description ("Forbidden: bot was blocked by the user"); PTB's class
    # name where there is none (a timeout).
    detail = exc.message or type(exc).__name__
    lowered = exc.message.casefold()
    if isinstance(exc, RetryAfter):
        # The same message goes again after the wait, without using up an attempt.
        return SendError(
            ErrorClass.RETRYABLE, detail, code="429", retry_after=retry_after_seconds(exc)
        )
    if isinstance(exc, Forbidden):
        # Blocked the bot, deleted their account, or never started a chat: nothing will
        # reach them until they write to us again.
        return SendError(ErrorClass.UNREACHABLE, detail, code="403")
    if isinstance(exc, ChatMigrated):
        return SendError(ErrorClass.PERMANENT, detail, code="400")
    if isinstance(exc, BadRequest):
        if any(phrase in lowered for phrase in UNREACHABLE_PHRASES):
            return SendError(ErrorClass.UNREACHABLE, detail, code="400")
        return SendError(ErrorClass.PERMANENT, detail, code="400")
    if isinstance(exc, InvalidToken):
        # Our configuration, not the panellist: keep the message for when the token is fixed.
        logger.error("telegram refused the bot token; check [channels.telegram] token")
        return SendError(ErrorClass.RETRYABLE, detail, code="401")
    # NetworkError (timeouts, 5xx answers) and anything new: worth another try. A timeout
    # may hide a message that did go; Telegram offers no way to tell.
    return SendError(ErrorClass.RETRYABLE, detail)


class TelegramChannel:
    """Telegram private chats, addressed ``telegram:<chat id>``."""

    names = ("telegram",)
    # How many sendMessage calls may be in flight at once.
    concurrency = 8

    def __init__(self, settings: Settings, *, ingress: Ingress | None = None) -> None:
        config = settings.channels.telegram
        self.ingress = ingress
        self.token = config.token or ""
        self.mode = config.mode
        self.secret_token = config.secret_token
        self.api_base_url = config.api_base_url
        self.rate_per_second = config.rate_per_second
        # Telegram allows about one message a second to one chat.
        self.per_address_interval = config.per_chat_interval
        self.app: Application[Any, Any, Any, Any, Any, Any] | None = None
        # Updates being handled now, by update_id: a repeat that arrives meanwhile waits for
        # the first and shares its outcome, so it neither runs twice nor is acknowledged
        # before the first is safely stored.
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._reader: PTBBot | None = None
        # Updates refused with 503, because they could not be stored (a web process) or
        # handled: one line when it starts, then one every REFUSALS_LOG_EVERY s, no flood.
        self._store_trouble = Trouble(
            logger,
            "telegram: updates refused (503), they could not be stored",
            every=REFUSALS_LOG_EVERY,
        )
        self._handle_trouble = Trouble(
            logger,
            "telegram: updates refused (503), they could not be handled",
            every=REFUSALS_LOG_EVERY,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, services: ChannelServices) -> None:
        """Build and start the PTB Application inside the running loop (getMe checks the token)."""
        builder = (
            Application.builder()
            .token(self.token)
            .base_url(self.api_base_url)
            # Our scheduler owns timed jobs; PTB's would start a second APScheduler.
            .job_queue(None)
        )
        if self.mode != "polling":
            builder = builder.updater(None)
        app = builder.build()
        if self.mode == "polling":
            app.add_handler(TypeHandler(Update, self._on_polled_update))
        try:
            await app.initialize()
        except InvalidToken:
            raise RuntimeError(
                "telegram: the bot token was refused; check [channels.telegram] token"
            ) from None
        await app.start()
        self.app = app
        if self.mode == "polling" and app.updater is not None:
            await app.updater.start_polling(
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,  # answers sent while we were down still count
                error_callback=self._polling_error,
            )

    async def stop(self) -> None:
        """Stop polling, let queued updates finish, and close PTB's HTTP clients."""
        app, self.app = self.app, None
        if app is None:
            return
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=5)
        if app.running:
            await app.stop()
        await app.shutdown()

    def _polling_error(self, exc: TelegramError) -> None:
        # PTB retries by itself; the URL (with the token) is never logged here.
        logger.warning("telegram polling failed (%s); retrying", type(exc).__name__)

    # -- inbound ----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The webhook route, in webhook mode only: polling needs no door left open."""
        if self.mode != "webhook":
            return []
        return [Route(WEBHOOK_PATH, self._webhook, methods=["POST"])]

    def _parser(self) -> PTBBot:
        """The PTB ``Bot`` updates are read with (``Update.de_json``): the application's
        once started, else one that is never initialised and never calls the Bot API (a
        web process, which only parses what it stores for the main process)."""
        if self.app is not None:
            return self.app.bot
        if self._reader is None:
            self._reader = PTBBot(self.token, base_url=self.api_base_url)
        return self._reader

    async def _webhook(self, request: Request) -> Response:
        if not self._secret_ok(request.headers.get(SECRET_HEADER)):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if self.ingress is None:
            # Not wired to an ingress (a channel built alone): Telegram will try again.
            return JSONResponse({"error": "not ready"}, status_code=503)
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return JSONResponse({"error": "update too large"}, status_code=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            # Not JSON, not UTF-8, or nested thousands deep: never a real update.
            return JSONResponse({"error": "malformed JSON"}, status_code=400)
        # A surrogate can only reach us escaped (raw, the body would not be UTF-8).
        try:
            cleaned = without_lone_surrogates(data) if _ESCAPED_SURROGATE.search(body) else data
        except RecursionError:
            return JSONResponse({"error": "malformed JSON"}, status_code=400)
        if cleaned is not data:
            # A lone surrogate ("\ud800") has no UTF-8 form: in a /start code or a name it
            # would fail the update at the database. The update passed the secret check, so
            # it came from Telegram: refusing it would make Telegram send it again and again
            # and hold back the chat's next updates. The bad characters are dropped instead
            # (as the engine drops them from message text), and the person gets an answer.
            data = cleaned
        update_id = data.get("update_id") if isinstance(data, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            return JSONResponse({"error": "not a Telegram update"}, status_code=400)
        try:
            update = Update.de_json(data, self._parser())
        except Exception:
            return JSONResponse({"error": "not a Telegram update"}, status_code=400)
        try:
            await self.handle_update(update)
        except StoreFailed as exc:
            # A web process whose inbox is full or locked: nothing was stored.
            self._store_trouble.failed(exc)
            return JSONResponse({"error": "try again"}, status_code=503)
        except Exception as exc:
            self._handle_trouble.failed(exc)
            # Telegram repeats the update until it gets a 2xx: nothing is lost.
            return JSONResponse({"error": "try again"}, status_code=503)
        self._store_trouble.ok()
        self._handle_trouble.ok()
        return Response(status_code=200)

    def _secret_ok(self, given: str | None) -> bool:
        expected = self.secret_token
        if not expected or given is None:
            return False
        # Constant time, on bytes: compare_digest refuses str that is not ASCII.
        return hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
        )

    async def _on_polled_update(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            return
        try:
            await self.handle_update(update)
        except Exception:
            # The updater has already confirmed this update to Telegram; say which was lost.
            logger.exception("telegram update %s could not be handled", update.update_id)

    async def handle_update(self, update: Update) -> None:
        """Hand one update to the ingress, once, however often Telegram repeats it."""
        running = self._inflight.get(update.update_id)
        if running is None:
            running = asyncio.create_task(self._process(update))
            self._inflight[update.update_id] = running
            running.add_done_callback(lambda _: self._inflight.pop(update.update_id, None))
        # Shielded: a webhook call Telegram gives up on must not cut the engine's
        # transaction short; the work finishes and the repeat finds it done.
        await asyncio.shield(running)

    async def _process(self, update: Update) -> None:
        item = self.parse(update)
        if item is None:
            return
        if self.ingress is None:
            raise RuntimeError("telegram channel is not started")
        await self.ingress.accept(item)

    def parse(self, update: Update) -> InboundMessage | Action | None:
        """What an update means: a message for the engine, an action of ours (tick an
        option, stop a tapped button's spinner), or None for one we ignore."""
        query = update.callback_query
        if query is not None and (query.data or "").startswith(MULTI_TOGGLE):
            return self._toggle_action(query)
        inbound = self.to_inbound(update)
        if inbound is None and query is not None:
            # An update we do not act on: acknowledged and ignored (a tap still gets its
            # spinner stopped).
            return Action("telegram", f"callback:{query.id}", {"callback_query_id": query.id})
        return inbound

    @staticmethod
    def _toggle_action(query: CallbackQuery) -> Action:
        data: dict[str, Any] = {"callback_query_id": query.id}
        message = query.message
        markup = getattr(message, "reply_markup", None)
        if (
            isinstance(message, Message)
            and message.chat.type == ChatType.PRIVATE
            and isinstance(markup, InlineKeyboardMarkup)
        ):
            data.update(
                address=f"telegram:{message.chat.id}",
                chat_id=message.chat.id,
                message_id=message.message_id,
                toggle=str(query.data),
                markup=markup.to_dict(),
            )
        return Action("telegram", f"callback:{query.id}", data)

    # -- the ingress's hooks (where the Bot API is: one process, or the main process) -------

    async def handled(self, message: InboundMessage, result: HandleResult) -> None:
        """After the engine took a tap on a button: stop its spinner (once)."""
        query_id = message.extra.get("callback_query_id")
        if query_id and not result.duplicate:
            await self._answer(str(query_id))

    async def act(self, action: Action) -> None:
        """Tick or untick one option of a multi-choice question, in the message itself,
        and stop the tap's spinner."""
        data = action.data
        markup = data.get("markup")
        if self.app is not None and isinstance(markup, dict) and "toggle" in data:
            keyboard = InlineKeyboardMarkup.de_json(markup, self.app.bot)
            try:
                await self.app.bot.edit_message_reply_markup(
                    chat_id=data["chat_id"],
                    message_id=data["message_id"],
                    reply_markup=toggled(keyboard, str(data["toggle"])),
                )
            except TelegramError as exc:
                # A double tap racing its own edit ("message is not modified"), or an old
                # message: the next tap or the typed answer still works.
                logger.info("telegram: could not tick an option (%s)", type(exc).__name__)
        if data.get("callback_query_id"):
            await self._answer(str(data["callback_query_id"]))

    async def _answer(self, query_id: str) -> None:
        # Stops the spinner on the button. Best effort: the answer is already stored.
        if self.app is None:
            return
        try:
            await self.app.bot.answer_callback_query(query_id)
        except TelegramError as exc:
            logger.info("telegram: could not answer a callback query (%s)", type(exc).__name__)

    def legacy_decoders(self) -> dict[str, Decoder]:
        """Updates an earlier version stored raw in the inbox."""
        return {"telegram-update": self._decode_legacy}

    def _decode_legacy(self, payload: str, received_at: datetime) -> list[Item]:
        item = self.parse(Update.de_json(json.loads(payload), self._parser()))
        return [item] if item is not None else []

    def to_inbound(self, update: Update) -> InboundMessage | None:
        """The engine's view of an update, or None for one we ignore."""
        query = update.callback_query
        if query is not None:
            chat = query.message.chat if query.message is not None else None
            if query.data is None or (chat is not None and chat.type != ChatType.PRIVATE):
                return None
            # In a private chat the chat id is the user's id.
            chat_id = chat.id if chat is not None else query.from_user.id
            text = query.data
            if text == MULTI_SEND:
                # "Send" under a multi-choice question: the ticked options, as "1 3".
                text = " ".join(ticked(getattr(query.message, "reply_markup", None)))
                if not text:
                    return None  # nothing ticked yet: the tap only stops its spinner
            return InboundMessage(
                Address("telegram", str(chat_id)),
                # Tapping "2 Neither easy nor hard" is the same as typing "2".
                text,
                f"callback:{query.id}",
                extra={
                    "callback_query_id": query.id,
                    "update_id": update.update_id,
                    # Which of our messages carried the button: a tap on an old question's
                    # keyboard arrives like an answer to the current one.
                    "button_message_id": query.message.message_id if query.message else None,
                },
            )
        message = update.message
        if message is None or message.chat.type != ChatType.PRIVATE:
            return None
        return self._message_inbound(update.update_id, message)

    def _message_inbound(self, update_id: int, message: Message) -> InboundMessage:
        text = message.text or message.caption or ""
        extra: dict[str, Any] = {"update_id": update_id}
        command = command_of(text)
        if command is not None:
            name, argument = command
            if name == "start" and argument:
                # A deep link t.me/<bot>?start=CODE: join this chat to the record the code
                # names. A wrong code falls back to a plain /start.
                extra["link_code"] = argument
            text = COMMAND_TEXT.get(name, text)
        # update_id is what Telegram repeats until it gets a 2xx; the engine's unique inbound
        # index on it drops repeats, even across restarts. (After a week with no updates
        # Telegram restarts the sequence at a random number, so a clash with a stored id
        # is possible in principle but vanishingly unlikely.)
        return InboundMessage(
            Address("telegram", str(message.chat.id)),
            text,
            f"update:{update_id}",
            received_at=message.date,
            extra=extra,
        )

    # -- outbound ---------------------------------------------------------------------------

    def cost(self, message: OutboundMessage) -> float:
        return 1.0

    async def send(self, message: OutboundMessage) -> SendResult:
        """sendMessage, with the question's options as inline buttons."""
        app = self.app
        if app is None:
            raise SendError(ErrorClass.RETRYABLE, "telegram channel is not started")
        chat_id: int | str = message.address.id
        if message.address.id.lstrip("-").isdigit():
            chat_id = int(message.address.id)
        markup = inline_keyboard(
            message.extra.get("options") or [],
            multi=bool(message.extra.get("multi")),
            send_label=str(message.extra.get("send_label") or ""),
        )
        try:
            sent = await app.bot.send_message(
                chat_id=chat_id, text=message.text, reply_markup=markup
            )
        except TelegramError as exc:
            raise classify(exc) from exc
        return SendResult(provider_message_id=str(sent.message_id))

    async def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """Telegram cannot tell whether a message reached a chat, so it is sent again.

        The Bot API has no idempotency key and no way to look a sent message up. A row left
        in ``sending`` by a crash between the API call and the database update may
        therefore repeat one message to one chat, at worst; the alternative, holding it,
        would silently drop a question the panellist is waiting for.
        """
        return None
