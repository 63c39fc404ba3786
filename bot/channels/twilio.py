"""Twilio: SMS and WhatsApp through one account, with the official SDK's async client.

Inbound (``POST /webhooks/twilio/messages``) and status callbacks (``POST
/webhooks/twilio/status``) are form-encoded and signed: the ``X-Twilio-Signature`` is checked
over ``[bot] public_base_url`` + the request path, never over the URL this process saw (a TLS
proxy in front changes scheme, host and port). A refused request stores nothing.

Outbound messages go through ``client.messages.create_async``; every failure becomes a
:class:`~bot.models.SendError` whose class tells the dispatcher what to do next. WhatsApp only
allows free text within 24 hours of the person's last message; outside it a bulk message is
sent as the approved template configured for its kind, or held.

This module is the only one that imports the Twilio SDK.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
import time
from collections import OrderedDict
from contextvars import ContextVar
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlparse

import aiohttp
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.base import values as twilio_values
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from twilio.rest import Client

from bot import sms
from bot.inbox import Trouble
from bot.ingress import StoreFailed
from bot.models import (
    Address,
    DeliveryReport,
    ErrorClass,
    InboundMessage,
    OutboundMessage,
    OutboxStatus,
    SendError,
    SendResult,
    utcnow,
)
from bot.storage import outbox as outbox_store

if TYPE_CHECKING:
    from twilio.http.response import Response as TwilioResponse

    from bot.app import Bot
    from bot.config import Settings
    from bot.ingress import Decoder, Ingress, Item

logger = logging.getLogger(__name__)
# The SDK logs query strings (recipients' numbers) at INFO: keep it to warnings and above.
_sdk_logger = logging.getLogger(f"{__name__}.sdk")
_sdk_logger.setLevel(logging.WARNING)

MESSAGES_PATH = "/webhooks/twilio/messages"
STATUS_PATH = "/webhooks/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Twilio's own bodies are a few kilobytes at most; anything far bigger is not from Twilio.
MAX_WEBHOOK_BYTES = 256 * 1024
# WhatsApp's customer-service window, less a margin for the time a message spends queued.
WHATSAPP_WINDOW = timedelta(hours=24) - timedelta(minutes=5)
# A row is looked up at Twilio by its own times, however old: from when it was queued (less
# a margin for the two clocks) to when its last attempt began plus the longest a message
# can wait in Twilio's queue (ValidityPeriod is at most 10 hours).
RECONCILE_CLOCK_MARGIN = timedelta(minutes=10)
RECONCILE_QUEUE_MARGIN = timedelta(hours=12)
RECONCILE_LIMIT = 50
# At most this many of the messages to one number in that window are read.
RECONCILE_MAX_RECORDS = 200
# An engine failure is answered 503 with this Retry-After (seconds); see _inbound.
RETRY_AFTER_ON_FAILURE = 5

# Twilio error codes (https://www.twilio.com/docs/api/errors).
OPTED_OUT_CODES = {21610}  # the recipient replied STOP
UNREACHABLE_CODES = {21211, 21614}  # invalid "To" number; not a mobile number
# Delivery failures (status callbacks) that mean the number itself is dead. 30003
# ("handset switched off or out of coverage") is deliberately NOT here: it is usually
# temporary, and marking someone unreachable for it would quietly drop people with poor
# signal from the panel. It fails that one message (permanent) instead.
UNDELIVERABLE_CODES = {21211, 21614, 30005, 30006}
RATE_LIMIT_CODES = {20429}
AUTH_CODES = {20003}

# Twilio message statuses as outbox statuses. A message Twilio has accepted is "sent" as far
# as the outbox goes; statuses never move backwards, so a late "queued" changes nothing.
STATUS_MAP = {
    "accepted": OutboxStatus.SENT,
    "scheduled": OutboxStatus.SENT,
    "queued": OutboxStatus.SENT,
    "sending": OutboxStatus.SENT,
    "sent": OutboxStatus.SENT,
    "delivered": OutboxStatus.DELIVERED,
    "read": OutboxStatus.DELIVERED,
    "undelivered": OutboxStatus.FAILED,
    "failed": OutboxStatus.FAILED,
    "canceled": OutboxStatus.FAILED,
}

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_LONG_NUMBER = re.compile(r"\+?\d{8,15}")


def mask(number: str) -> str:
    """A number fit for a log: ``+447400100101`` → ``+44740****101``.

    Enough to tell two numbers apart while debugging, not enough to call anyone.
    """
    prefix, _, rest = number.rpartition(":")
    prefix = f"{prefix}:" if prefix else ""
    if len(rest) <= 7:
        return f"{prefix}****"
    return f"{prefix}{rest[:6]}****{rest[-3:]}"


def scrub(text: str) -> str:
    """Mask every phone number in a free text (Twilio's error messages quote the number)."""
    return _LONG_NUMBER.sub(lambda m: mask(m.group()), text)


def address_from(sender: str) -> Address | None:
    """``+447...`` → ``sms:+447...``; ``whatsapp:+447...`` → ``whatsapp:+447...``.

    None for senders panelbot does not talk to (short codes, other Twilio channels).
    """
    channel, ident = "sms", sender.strip()
    if ident.lower().startswith("whatsapp:"):
        channel, ident = "whatsapp", ident[len("whatsapp:") :]
    return Address(channel, ident) if _E164.fullmatch(ident) else None


def classify(
    status: int, code: int | None, detail: str, retry_after: float | None = None
) -> SendError:
    """What the dispatcher should do about a Twilio API error."""
    code_text = str(code) if code is not None else None
    detail = scrub(detail)
    if code in OPTED_OUT_CODES:
        return SendError(ErrorClass.OPTED_OUT, detail, code=code_text)
    if code in UNREACHABLE_CODES:
        return SendError(ErrorClass.UNREACHABLE, detail, code=code_text)
    if status == 429 or code in RATE_LIMIT_CODES:
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text, retry_after=retry_after)
    if status >= 500:
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text)
    if status == 401 or code in AUTH_CODES:
        # Wrong credentials fail every message alike: retrying (with the usual backoff)
        # gives staff time to fix the config before anything is marked failed.
        logger.error(
            "Twilio refused our credentials (HTTP %s): check account_sid/auth_token", status
        )
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text)
    # Everything else, 30007 (filtered as spam) included, will not work as it is.
    return SendError(ErrorClass.PERMANENT, detail, code=code_text)


def delivery_error_class(code: int | None) -> ErrorClass:
    """The class of a failed or undelivered status callback's ErrorCode."""
    if code in OPTED_OUT_CODES:
        return ErrorClass.OPTED_OUT
    if code in UNDELIVERABLE_CODES:
        return ErrorClass.UNREACHABLE
    return ErrorClass.PERMANENT


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped at an hour."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0)


def describe(exc: BaseException) -> str:
    """A short description of a failed call to Twilio, with any phone number masked."""
    if isinstance(exc, TwilioRestException):
        text = f"HTTP {exc.status}, code {exc.code}: {exc.msg}"
    elif isinstance(exc, TwilioServiceException):
        text = f"HTTP {exc.status}, code {exc.code}: {exc.detail or exc.title}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, aiohttp.ClientError):
        text = f"unreachable ({type(exc).__name__})"
    elif isinstance(exc, TwilioException) and exc.args:
        # e.g. ("Unable to fetch page", <the response>) from a failed list call
        status = getattr(exc.args[-1], "status_code", None)
        text = f"{exc.args[0]} (HTTP {status})" if status else str(exc.args[0])
    else:
        text = f"an unexpected answer ({type(exc).__name__})"
    return scrub(text)


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


# The headers of the last Twilio response in this task. Each send runs in its own task, so
# this is safe with concurrent sends; the SDK's exceptions do not carry headers.
_last_headers: ContextVar[Any] = ContextVar("twilio_last_headers", default=None)


class _HttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client with a default timeout (it has none) and response headers
    kept for Retry-After."""

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if auth is not None:
            # As a header: aiohttp deprecates its BasicAuth helper, which the SDK still uses.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self.timeout,
            allow_redirects=allow_redirects,
        )
        _last_headers.set(response.headers)
        return response


class FormParams(dict[str, list[str]]):
    """Form parameters as name -> values, in the shape Twilio's validator reads.

    ``RequestValidator.get_values`` asks for ``getall`` first: here it is a dict look-up,
    where Starlette's MultiDict scans every pair for every name.
    """

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> FormParams:
        params = cls()
        for name, value in pairs:
            params.setdefault(name, []).append(value)
        return params

    def getall(self, name: str) -> list[str]:
        return self[name]

    def one(self, name: str) -> str | None:
        """The value of ``name`` (the last one when it is repeated), or None."""
        values = dict.get(self, name)
        return values[-1] if values else None


MAX_FORM_FIELDS = 500


def parse_form(text: str) -> FormParams:
    """Form-encoded text as FormParams; ValueError when it is not valid form data.

    What ``parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")``
    returns (tests/test_twilio.py checks they agree), in a third of the time: every webhook
    is parsed by a web process and again by the main process.
    """
    params = FormParams()
    if not text:
        return params
    fields = text.split("&")
    if len(fields) > MAX_FORM_FIELDS:
        raise ValueError(f"more than {MAX_FORM_FIELDS} fields")
    for field in fields:
        name, sep, value = field.partition("=")
        if not sep:
            raise ValueError("a field without '='")
        if "+" in name or "%" in name:
            name = unquote_plus(name, errors="strict")
        if "+" in value or "%" in value:
            value = unquote_plus(value, errors="strict")
        values = params.get(name)
        if values is None:
            params[name] = [value]
        else:
            values.append(value)
    return params


@functools.lru_cache(maxsize=64)
def _other_port_form(url: str) -> str:
    """The URL with the default port if it has none, or without it if it has one."""
    parsed = urlparse(url)
    return str(remove_port(parsed) if parsed.port else add_port(parsed))


def signature_ok(validator: RequestValidator, url: str, params: FormParams, signature: str) -> bool:
    """The SDK's check, the URL as configured first and the other port form only if needed.

    ``RequestValidator.validate`` always computes both forms (Twilio signs some requests
    with the port and some without); computing the second only when the first does not
    match accepts exactly the same requests for half the work on the usual path.
    """
    if compare(validator.compute_signature(url, params), signature):
        return True
    return bool(compare(validator.compute_signature(_other_port_form(url), params), signature))


class _Reject(Exception):
    """A webhook request refused with ``status`` and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# While webhooks are refused because storage fails, a line about it at most this often.
REFUSALS_LOG_EVERY = 10.0


class TwilioChannel:
    """SMS and WhatsApp through Twilio: webhooks in, the REST API out."""

    names = ("sms", "whatsapp")
    per_address_interval = 0.0
    concurrency = 8

    def __init__(self, settings: Settings, *, ingress: Ingress | None = None) -> None:
        self.ingress = ingress
        self.config = settings.channels.twilio
        self.panel_name = settings.bot.name
        self.public_base_url = settings.bot.public_base_url
        self.rate_per_second = self.config.rate_per_second
        token = self.config.auth_token
        # No token, no way to tell Twilio from anyone else: every webhook is refused.
        self._validator = RequestValidator(token) if token else None
        self.bot: Bot | None = None
        self._http: _HttpClient | None = None
        self._client: Client | None = None
        # Inbound SIDs being handled now (later copies wait for the first) and handled lately
        # (answered at once); the database's unique key is the lasting guard.
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._handled: OrderedDict[str, None] = OrderedDict()
        # SIDs we created lately: a status callback may overtake the dispatcher's record.
        self._created: OrderedDict[str, float] = OrderedDict()
        # Webhooks refused with 503 because storage failed (a full disk, a locked file):
        # one line when it starts, then one every REFUSALS_LOG_EVERY s with a count.
        self._store_trouble = Trouble(
            logger,
            "twilio: webhooks refused (503), they could not be stored",
            every=REFUSALS_LOG_EVERY,
        )
        self._handle_trouble = Trouble(
            logger,
            "twilio: inbound messages refused (503), they could not be handled",
            every=REFUSALS_LOG_EVERY,
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        """Open the SDK's aiohttp session (it must be created inside the running loop)."""
        self.bot = bot
        self._http = _HttpClient(timeout=self.config.request_timeout, logger=_sdk_logger)
        self._client = Client(
            self.config.account_sid, self.config.auth_token, http_client=self._http
        )
        # Every Messages call goes through the "api" domain; pointing it elsewhere is how
        # tests reach a fake Twilio on 127.0.0.1.
        self._client.api.base_url = self.config.api_base_url
        if not self.public_base_url:
            logger.warning(
                "[bot] public_base_url is not set: Twilio webhooks will be refused "
                "and no delivery reports requested"
            )

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = self._client = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route(MESSAGES_PATH, self._inbound, methods=["POST"]),
            Route(STATUS_PATH, self._status, methods=["POST"]),
        ]

    # --- pacing and the WhatsApp window ----------------------------------------------------

    def cost(self, message: OutboundMessage) -> float:
        """SMS segments of the text as it will be sent; a WhatsApp message counts 1."""
        if message.address.channel != "sms":
            return 1.0
        _, info = sms.prepare(message.text, sanitise_text=self.config.sanitize)
        return float(max(info.segments, 1))

    async def _window_open(self, address: Address) -> bool:
        assert self.bot is not None
        last = await self.bot.last_inbound_at(address)
        return last is not None and utcnow() - last < WHATSAPP_WINDOW

    # --- sending ---------------------------------------------------------------------------

    def _sender(self, channel: str) -> dict[str, str]:
        if channel == "whatsapp":
            number = self.config.whatsapp_from or self.config.from_number
            if number:
                return {"from_": f"whatsapp:{number}"}
        elif self.config.from_number:
            return {"from_": self.config.from_number}
        # Config guarantees one of the two; the service picks its sender for the channel.
        return {"messaging_service_sid": self.config.messaging_service_sid or ""}

    async def _request(self, message: OutboundMessage) -> tuple[dict[str, Any], int] | None:
        """The create() arguments and cost units, or None when it must be held."""
        address = message.address
        args: dict[str, Any] = self._sender(address.channel)
        if self.public_base_url:
            args["status_callback"] = self.public_base_url + STATUS_PATH
        if address.channel == "sms":
            text, info = sms.prepare(message.text, sanitise_text=self.config.sanitize)
            return {**args, "to": address.id, "body": text}, max(info.segments, 1)
        args["to"] = f"whatsapp:{address.id}"
        if not message.kind.is_bulk or await self._window_open(address):
            return {**args, "body": message.text}, 1
        content_sid = self.config.whatsapp_templates.get(message.kind.value)
        if content_sid is None:
            return None
        first_line = message.text.strip().split("\n", 1)[0]
        variables = {"1": self.panel_name, "2": first_line}
        return {
            **args,
            "content_sid": content_sid,
            "content_variables": json.dumps(variables, ensure_ascii=False),
        }, 1

    def _require_client(self) -> Client:
        if self._client is None:
            raise SendError(ErrorClass.RETRYABLE, "the Twilio channel is not started")
        return self._client

    async def send(self, message: OutboundMessage) -> SendResult:
        """Hand one message to Twilio; raises SendError classified for the dispatcher."""
        client = self._require_client()
        if message.attempts > 1:
            # A retry after a timeout or 5xx: Twilio may have created the message anyway,
            # and sending again would text the person twice.
            try:
                earlier = await self._find_existing(message)
            except Exception as exc:
                raise SendError(
                    ErrorClass.RETRYABLE,
                    f"Twilio {describe(exc)} while looking for an earlier attempt",
                ) from None
            if earlier is not None:
                logger.info(
                    "outbox %s: an earlier attempt reached Twilio (%s)",
                    message.id,
                    earlier.provider_message_id,
                )
                return earlier
        request = await self._request(message)
        if request is None:
            logger.warning(
                "outbox %s: no approved WhatsApp template for %s and the 24-hour window is "
                "closed; held, not sent as free text",
                message.id,
                message.kind.value,
            )
            return SendResult(
                provider_message_id=None,
                status=OutboxStatus.HELD,
                cost_units=0,
                detail=f"no approved WhatsApp template for {message.kind.value} outside the "
                "24-hour window",
            )
        args, units = request
        _last_headers.set(None)
        try:
            created = await client.messages.create_async(**args)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._api_error(exc) from None
        except Exception as exc:
            # Timeouts, refused connections, garbled answers: all worth another try (and the
            # retry first looks for what this attempt may have created).
            if not isinstance(exc, TimeoutError | aiohttp.ClientError | TwilioException):
                logger.exception("outbox %s: unexpected error from the Twilio SDK", message.id)
            raise SendError(ErrorClass.RETRYABLE, f"Twilio {describe(exc)}") from None
        self._remember_created(created.sid)
        return SendResult(
            provider_message_id=created.sid, status=OutboxStatus.SENT, cost_units=units
        )

    def _api_error(self, exc: TwilioRestException | TwilioServiceException) -> SendError:
        if isinstance(exc, TwilioRestException):
            detail = exc.msg or f"HTTP {exc.status}"
        else:
            detail = exc.detail or exc.title
        headers = _last_headers.get()
        retry_after = parse_retry_after(headers.get("Retry-After")) if headers else None
        return classify(int(exc.status), _int_or_none(exc.code), f"Twilio: {detail}", retry_after)

    def _remember_created(self, sid: str) -> None:
        self._created[sid] = time.monotonic()
        while len(self._created) > 10_000:
            self._created.popitem(last=False)

    # --- reconciliation --------------------------------------------------------------------

    async def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """A row found in ``sending`` after a crash: did Twilio get it?

        Twilio is asked for the messages to that number from our sender around the row's own
        times (however long ago) and the one with our text is taken. None means Twilio never
        got it (safe to send again). A failed or slow look-up raises, and the dispatcher asks
        again later; a row that cannot be matched at all raises ``SendError`` of class
        PERMANENT, and the dispatcher holds it for a person to decide.
        """
        self._require_client()
        try:
            found = await self._find_existing(message)
        except Exception as exc:
            raise SendError(
                ErrorClass.RETRYABLE, f"Twilio could not be asked: {describe(exc)}"
            ) from None
        if (
            found is None
            and message.address.channel == "whatsapp"
            and message.kind.is_bulk
            and not await self._window_open(message.address)
        ):
            # It would have gone as a template, whose text Twilio renders: there is no body
            # to match, so a person decides rather than risk a second invitation.
            raise SendError(
                ErrorClass.PERMANENT, "a WhatsApp template message cannot be matched by its text"
            )
        return found

    async def _find_existing(self, message: OutboundMessage) -> SendResult | None:
        """The Twilio record of this message, if an earlier attempt created one.

        Two look-ups: the messages Twilio sent in the row's own window (``DateSent``
        filters, so a row from days ago is found however many messages came since), and,
        while a message could still wait in Twilio's queue (no DateSent yet), the newest
        messages to the number.
        """
        client = self._require_client()
        assert self.bot is not None
        address = message.address
        sender = self._sender(address.channel)
        if address.channel == "sms":
            to, body = address.id, sms.prepare(message.text, sanitise_text=self.config.sanitize)[0]
        else:
            to, body = f"whatsapp:{address.id}", message.text
        now = utcnow()
        times = await outbox_store.attempt_times(self.bot.db.conn, message.id)
        first, last = times if times is not None else (now, now)
        since = first - RECONCILE_CLOCK_MARGIN
        until = max(last, first) + RECONCILE_QUEUE_MARGIN
        base = {"to": to, "from_": sender.get("from_", twilio_values.unset)}
        candidates = await client.messages.list_async(
            **base,
            date_sent_after=since,
            date_sent_before=min(until, now + RECONCILE_CLOCK_MARGIN),
            limit=RECONCILE_MAX_RECORDS,
            page_size=RECONCILE_LIMIT,
        )
        if until > now:
            candidates += await client.messages.list_async(
                **base, limit=RECONCILE_LIMIT, page_size=RECONCILE_LIMIT
            )
        service = sender.get("messaging_service_sid")
        matches = {
            m.sid: m
            for m in candidates
            if m.sid
            and (m.body or "").strip() == body.strip()
            and str(m.direction or "outbound").startswith("outbound")
            and (m.date_created is None or since <= m.date_created <= until)
            and (service is None or m.messaging_service_sid == service)
        }
        if not matches:
            return None
        # A message with the same text may have gone to them before, as another outbox
        # row: one whose SID is already recorded is not this one.
        known = await outbox_store.known_provider_ids(self.bot.db.conn, address.channel, [*matches])
        for m in sorted(matches.values(), key=lambda m: m.date_created or since):
            if m.sid not in known:
                status = STATUS_MAP.get(str(m.status), OutboxStatus.SENT)
                return SendResult(provider_message_id=m.sid, status=status)
        return None

    # --- webhooks --------------------------------------------------------------------------

    async def _read_form(self, request: Request) -> tuple[FormParams, str]:
        """The form parameters, all of them (unknown ones count for the signature), and
        the body as text."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise _Reject(400, "expected a form-encoded body (application/x-www-form-urlencoded)")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_WEBHOOK_BYTES:
                    raise _Reject(413, "the body is too large")
        except ClientDisconnect:
            raise _Reject(400, "the client went away mid-body") from None
        try:
            text = body.decode("utf-8")
            return parse_form(text), text
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400, "the body is not valid form data") from None

    def _public_url(self, request: Request) -> str:
        """The URL Twilio signed: the configured public base URL + the path (+ query)."""
        assert self.public_base_url is not None
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = self.public_base_url + raw_path.decode("latin-1")
        query = request.scope.get("query_string") or b""
        return f"{url}?{query.decode('latin-1')}" if query else url

    def _check_signature(self, request: Request, params: FormParams) -> None:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise _Reject(403, "missing X-Twilio-Signature")
        if self._validator is None or not self.public_base_url:
            raise _Reject(
                403, "signatures cannot be checked: public_base_url or auth_token is not configured"
            )
        if not signature_ok(self._validator, self._public_url(request), params, signature):
            raise _Reject(403, "invalid X-Twilio-Signature")

    async def _verified_form(self, request: Request) -> tuple[FormParams, str]:
        params, body = await self._read_form(request)
        self._check_signature(request, params)
        return params, body

    @staticmethod
    def _refuse(exc: _Reject, request: Request) -> Response:
        logger.info("twilio webhook %s refused (%s): %s", request.url.path, exc.status, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @staticmethod
    def _twiml() -> Response:
        return Response(EMPTY_TWIML, media_type="text/xml")

    @staticmethod
    def _unavailable() -> Response:
        return JSONResponse(
            {"error": "temporarily unavailable; nothing was stored"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_ON_FAILURE)},
        )

    async def _inbound(self, request: Request) -> Response:
        """An inbound SMS or WhatsApp message."""
        try:
            params, _ = await self._verified_form(request)
            sid, sender = _message_ids(params)
        except _Reject as exc:
            return self._refuse(exc, request)
        # Dedupe on the SID before anything else: Twilio repeats a slow webhook.
        if sid in self._handled:
            return self._twiml()
        handled = await self._accept_message(sid, sender, params, utcnow())
        return self._twiml() if handled else self._unavailable()

    async def _accept_message(
        self, sid: str, sender: str, params: FormParams, received_at: datetime
    ) -> bool:
        """Hand a verified message to the ingress, once; False when it was not taken
        (neither handled nor stored).

        Nothing is awaited before the ingress has it, so messages started in order reach
        the engine (or the inbox) in order.
        """
        pending = self._inflight.get(sid)
        if pending is not None:
            # A copy of a message being taken now: answer as the first one is answered.
            return await asyncio.shield(pending)
        message = inbound_from_form(sid, sender, params, received_at)
        if message is None:
            logger.info(
                "twilio: ignored message %s from an unsupported sender %s", sid, mask(sender)
            )
            return True
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[sid] = done
        assert self.ingress is not None
        try:
            result = await self.ingress.accept(message)
        except StoreFailed as exc:
            # A web process whose inbox is full or locked: nothing was stored.
            self._store_trouble.failed(exc)
            return False
        except Exception as exc:
            # Everything one message causes is written in one transaction, so a failure here
            # stored nothing. 503 + Retry-After (never 500) says "not taken, try again": with
            # retries switched on for the webhook (Twilio's "#rc=" connection override) the
            # message arrives again; without them Twilio logs the failure in its console,
            # which is still better than a 200 claiming a message nobody will answer.
            self._handle_trouble.failed(exc)
            return False
        else:
            done.set_result(True)
            self._store_trouble.ok()
            self._handle_trouble.ok()
        finally:
            self._inflight.pop(sid, None)
            if not done.done():
                done.set_result(False)  # failed or cancelled: copies must not wait forever
        self._remember(sid)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "twilio: inbound %s from %s%s",
                sid,
                mask(message.address.id),
                " (a repeat)" if result is not None and result.duplicate else "",
            )
        return True

    def _remember(self, sid: str) -> None:
        self._handled[sid] = None
        while len(self._handled) > 10_000:
            self._handled.popitem(last=False)

    async def _status(self, request: Request) -> Response:
        """A delivery status callback for a message we sent."""
        try:
            params, _ = await self._verified_form(request)
            sid, twilio_status = _status_ids(params)
        except _Reject as exc:
            return self._refuse(exc, request)
        report = report_from_form(sid, twilio_status, params)
        if report is None:
            logger.debug("twilio: status %r for %s ignored", twilio_status, sid)
            return self._twiml()
        assert self.ingress is not None
        try:
            await self.ingress.accept(report)
        except StoreFailed as exc:
            self._store_trouble.failed(exc)
            return self._unavailable()
        except Exception:
            logger.exception("twilio: status %s for %s could not be applied", twilio_status, sid)
            return self._unavailable()
        self._store_trouble.ok()
        return self._twiml()

    # --- the ingress's hooks ---------------------------------------------------------------

    def sent_lately(self, provider_message_id: str) -> bool:
        """A SID this process created lately: its status callback may overtake the
        dispatcher's own record of it (the ingress waits a moment for it)."""
        return provider_message_id in self._created

    def legacy_decoders(self) -> dict[str, Decoder]:
        """Webhook bodies an earlier version stored raw in the inbox."""
        return {"twilio-message": decode_legacy_message, "twilio-status": decode_legacy_status}


def inbound_from_form(
    sid: str, sender: str, params: FormParams, received_at: datetime
) -> InboundMessage | None:
    """The engine's view of a verified inbound webhook; None for a sender panelbot does not
    talk to (short codes, other Twilio channels)."""
    address = address_from(sender)
    if address is None:
        return None
    text = params.one("Body") or params.one("ButtonText") or ""
    extra: dict[str, Any] = {}
    if num_media := _int_or_none(params.one("NumMedia")):
        extra["num_media"] = num_media
    return InboundMessage(address, text, sid, received_at=received_at, extra=extra)


def report_from_form(sid: str, twilio_status: str, params: FormParams) -> DeliveryReport | None:
    """The delivery report a verified status callback makes; None for a status that says
    nothing the outbox records."""
    status = STATUS_MAP.get(twilio_status)
    if status is None:
        return None
    peer = params.one("To") or params.one("From") or ""
    channel = "whatsapp" if peer.lower().startswith("whatsapp:") else "sms"
    code = _int_or_none(params.one("ErrorCode"))
    return DeliveryReport(
        channel=channel,
        provider_message_id=sid,
        status=status,
        error_code=str(code) if code is not None else None,
        error_class=delivery_error_class(code) if status == OutboxStatus.FAILED else None,
    )


def decode_legacy_message(payload: str, received_at: datetime) -> list[Item]:
    """An inbound webhook's form body, as a web process stored it before the ingress."""
    params = parse_form(payload)
    sid, sender = _message_ids(params)
    message = inbound_from_form(sid, sender, params, received_at)
    return [message] if message is not None else []


def decode_legacy_status(payload: str, received_at: datetime) -> list[Item]:
    """A status callback's form body, as a web process stored it before the ingress."""
    params = parse_form(payload)
    report = report_from_form(*_status_ids(params), params)
    return [report] if report is not None else []


def _message_ids(params: FormParams) -> tuple[str, str]:
    sid = params.one("MessageSid") or params.one("SmsMessageSid")
    sender = params.one("From")
    if not sid:
        raise _Reject(400, "MessageSid is missing")
    if not sender:
        raise _Reject(400, "From is missing")
    return sid, sender


def _status_ids(params: FormParams) -> tuple[str, str]:
    sid = params.one("MessageSid") or params.one("SmsSid")
    twilio_status = (params.one("MessageStatus") or params.one("SmsStatus") or "").lower()
    if not sid:
        raise _Reject(400, "MessageSid is missing")
    if not twilio_status:
        raise _Reject(400, "MessageStatus is missing")
    return sid, twilio_status
