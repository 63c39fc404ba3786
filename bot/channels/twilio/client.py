"""Twilio's REST side: the SDK's async client, sending, pacing and the WhatsApp window;
and :class:`TwilioChannel`, which puts it together with the webhooks.

Outbound messages go through ``client.messages.create_async``; every failure becomes a
:class:`~bot.models.SendError` whose class tells the dispatcher what to do next. WhatsApp only
allows free text within 24 hours of the person's last message; outside it a bulk message is
sent as the approved template configured for its kind, or held.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from bot import sms
from bot.channels.twilio.errors import (
    classify,
    describe,
    int_or_none,
    parse_retry_after,
)
from bot.channels.twilio.reconciliation import find_existing
from bot.channels.twilio.webhook import (
    STATUS_PATH,
    TwilioWebhooks,
    decode_legacy_message,
    decode_legacy_status,
)
from bot.models import (
    Address,
    ErrorClass,
    OutboundMessage,
    OutboxStatus,
    SendError,
    SendResult,
    utcnow,
)

if TYPE_CHECKING:
    from starlette.routing import BaseRoute
    from twilio.http.response import Response as TwilioResponse

    from bot.channels.base import ChannelServices
    from bot.config import Settings
    from bot.ingress import Decoder, Ingress

logger = logging.getLogger(__package__)
# The SDK logs query strings (recipients' numbers) at INFO: keep it to warnings and above.
_sdk_logger = logging.getLogger(f"{__package__}.sdk")
_sdk_logger.setLevel(logging.WARNING)

# WhatsApp's customer-service window, less a margin for the time a message spends queued.
WHATSAPP_WINDOW = timedelta(hours=24) - timedelta(minutes=5)

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


class TwilioChannel:
    """SMS and WhatsApp through Twilio: webhooks in (:mod:`.webhook`), the REST API out."""

    names = ("sms", "whatsapp")
    per_address_interval = 0.0
    concurrency = 8

    def __init__(self, settings: Settings, *, ingress: Ingress | None = None) -> None:
        self.config = settings.channels.twilio
        self.panel_name = settings.bot.name
        self.public_base_url = settings.bot.public_base_url
        self.rate_per_second = self.config.rate_per_second
        self.webhooks = TwilioWebhooks(settings, ingress)
        self.services: ChannelServices | None = None
        self._http: _HttpClient | None = None
        self._client: Client | None = None
        # SIDs we created lately: a status callback may overtake the dispatcher's record.
        self._created: OrderedDict[str, float] = OrderedDict()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, services: ChannelServices) -> None:
        """Open the SDK's aiohttp session (it must be created inside the running loop)."""
        self.services = services
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
        return self.webhooks.routes()

    # --- pacing and the WhatsApp window ----------------------------------------------------

    def cost(self, message: OutboundMessage) -> float:
        """SMS segments of the text as it will be sent; a WhatsApp message counts 1."""
        if message.address.channel != "sms":
            return 1.0
        _, info = sms.prepare(message.text, sanitise_text=self.config.sanitize)
        return float(max(info.segments, 1))

    async def _window_open(self, address: Address) -> bool:
        assert self.services is not None
        last = await self.services.last_inbound_at(address)
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
        return classify(int(exc.status), int_or_none(exc.code), f"Twilio: {detail}", retry_after)

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
                ErrorClass.PERMANENT,
                "a WhatsApp template message cannot be matched by its text",
            )
        return found

    async def _find_existing(self, message: OutboundMessage) -> SendResult | None:
        """The Twilio record of this message, if an earlier attempt created one."""
        client = self._require_client()
        assert self.services is not None
        return await find_existing(
            client,
            self.services.db.conn,
            message,
            self._sender(message.address.channel),
            sanitize=self.config.sanitize,
        )

    # --- the ingress's hooks ---------------------------------------------------------------

    def sent_lately(self, provider_message_id: str) -> bool:
        """A SID this process created lately: its status callback may overtake the
        dispatcher's own record of it (the ingress waits a moment for it)."""
        return provider_message_id in self._created

    def legacy_decoders(self) -> dict[str, Decoder]:
        """Webhook bodies an earlier version stored raw in the inbox."""
        return {
            "twilio-message": decode_legacy_message,
            "twilio-status": decode_legacy_status,
        }
