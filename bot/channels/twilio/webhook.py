"""Twilio's webhooks: inbound messages and status callbacks, checked and parsed.

Both are form-encoded and signed: the ``X-Twilio-Signature`` is checked over ``[bot]
public_base_url`` + the request path, never over the URL this process saw (a TLS proxy in
front changes scheme, host and port). A refused request stores nothing. What a request
means (an :class:`~bot.models.InboundMessage` or a :class:`~bot.models.DeliveryReport`) goes
to the ingress (:mod:`bot.ingress`), and the request is answered once it is taken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlparse

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator, add_port, compare, remove_port

from bot.channels.twilio.errors import STATUS_MAP, delivery_error_class, int_or_none
from bot.ingress import StoreFailed
from bot.models import Address, DeliveryReport, InboundMessage, OutboxStatus, utcnow
from bot.privacy import mask
from bot.trouble import Trouble

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.ingress import Ingress, Item

# The package's logger: what it logs reads as the channel's, whichever module says it.
logger = logging.getLogger(__package__)

MESSAGES_PATH = "/webhooks/twilio/messages"
STATUS_PATH = "/webhooks/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Twilio's own bodies are a few kilobytes at most; anything far bigger is not from Twilio.
MAX_WEBHOOK_BYTES = 256 * 1024
# An engine failure is answered 503 with this Retry-After (seconds); see _inbound.
RETRY_AFTER_ON_FAILURE = 5

_E164 = re.compile(r"\+[1-9]\d{6,14}")


def address_from(sender: str) -> Address | None:
    """``+447...`` → ``sms:+447...``; ``whatsapp:+447...`` → ``whatsapp:+447...``.

    None for senders panelbot does not talk to (short codes, other Twilio channels).
    """
    channel, ident = "sms", sender.strip()
    if ident.lower().startswith("whatsapp:"):
        channel, ident = "whatsapp", ident[len("whatsapp:") :]
    return Address(channel, ident) if _E164.fullmatch(ident) else None


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


class TwilioWebhooks:
    """The two webhook routes: verify, dedupe on the SID, parse, hand to the ingress."""

    def __init__(self, settings: Settings, ingress: Ingress | None) -> None:
        self.ingress = ingress
        self.public_base_url = settings.bot.public_base_url
        token = settings.channels.twilio.auth_token
        # No token, no way to tell Twilio from anyone else: every webhook is refused.
        self._validator = RequestValidator(token) if token else None
        # Inbound SIDs being handled now (later copies wait for the first) and handled lately
        # (answered at once); the database's unique key is the lasting guard.
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._handled: OrderedDict[str, None] = OrderedDict()
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

    def routes(self) -> list[BaseRoute]:
        return [
            Route(MESSAGES_PATH, self._inbound, methods=["POST"]),
            Route(STATUS_PATH, self._status, methods=["POST"]),
        ]

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
                403,
                "signatures cannot be checked: public_base_url or auth_token is not configured",
            )
        if not signature_ok(self._validator, self._public_url(request), params, signature):
            raise _Reject(403, "invalid X-Twilio-Signature")

    async def _verified_form(self, request: Request) -> tuple[FormParams, str]:
        params, body = await self._read_form(request)
        self._check_signature(request, params)
        return params, body

    @staticmethod
    def _refuse(exc: _Reject, request: Request) -> Response:
        logger.info(
            "twilio webhook %s refused (%s): %s",
            request.url.path,
            exc.status,
            exc.reason,
        )
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
                "twilio: ignored message %s from an unsupported sender %s",
                sid,
                mask(sender),
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
    if num_media := int_or_none(params.one("NumMedia")):
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
    code = int_or_none(params.one("ErrorCode"))
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
