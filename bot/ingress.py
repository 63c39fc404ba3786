"""One way in for every inbound message.

A channel verifies a request and parses it into what it means: an
:class:`~bot.models.InboundMessage` for the engine, a :class:`~bot.models.DeliveryReport`,
or an :class:`Action` the channel itself performs outside the engine (Telegram: tick an
option on a keyboard). It hands that to the :class:`Ingress`, which either

- hands it on now (one process, or the main process): the engine handles the message, the
  report is applied, the action is done; or
- stores it in the inbox (a web process, ``[web] workers >= 1``) and returns once it is
  committed; the main process's :class:`~bot.inbox.InboxReader` reads it back and hands it
  to its own Ingress (:meth:`Ingress.handlers`).

Either way the channel answers the provider only after :meth:`Ingress.accept` returned, so
what it answered 2xx is committed somewhere. Stored items are keyed on the provider's id, so
a repeat is stored once; the engine dedupes on it again when it handles the message.

What is stored is the parsed item as JSON, never the provider's payload: the main process
does not parse a provider's request a second time. Payloads stored in their raw form by an
earlier version (sources ``twilio-message``, ``twilio-status``, ``telegram-update``,
``sim-message``) are still read, by the legacy decoders each channel keeps for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.models import Address, DeliveryReport, ErrorClass, InboundMessage, OutboxStatus

if TYPE_CHECKING:
    from bot.engine.conversation import HandleResult
    from bot.inbox import Handler, InboxWriter

logger = logging.getLogger(__name__)

# Inbox sources of what an Ingress stores.
INBOUND = "inbound"
REPORT = "report"
ACTION = "action"
# A report for a message this process created a moment ago may overtake the dispatcher's
# own record of the provider's id: it is tried again for up to this long.
REPORT_WAIT = 3.0


@dataclass(slots=True)
class Action:
    """Something a channel does itself, outside the engine, in the process that owns its
    provider client (Telegram: tick an option of a multi-choice keyboard)."""

    channel: str
    key: str  # the provider's id for it: a repeat is stored once
    data: dict[str, Any] = field(default_factory=dict)


Item = InboundMessage | DeliveryReport | Action
# An old raw payload (see the module's docstring) as the items it means.
Decoder = Callable[[str, datetime], list[Item]]


class StoreFailed(Exception):
    """The item could not be stored in the inbox (the cause says why): answer 503."""


# -- the stored form ----------------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.isoformat()


def encode(item: Item) -> tuple[str, str, str]:
    """``(source, key, payload)`` of an item, as the inbox stores it."""
    if isinstance(item, InboundMessage):
        address = item.address
        body = {
            "address": str(address),
            "text": item.text,
            "id": item.provider_message_id,
            "received_at": _time(item.received_at),
            "extra": item.extra,
        }
        return INBOUND, f"{address.channel}:{item.provider_message_id}", _dumps(body)
    if isinstance(item, DeliveryReport):
        body = {
            "channel": item.channel,
            "id": item.provider_message_id,
            "status": item.status.value,
            "error_code": item.error_code,
            "error_class": item.error_class.value if item.error_class else None,
            "at": _time(item.at),
        }
        status, code = item.status.value, item.error_code or ""
        key = f"{item.channel}:{item.provider_message_id}:{status}:{code}"
        return REPORT, key, _dumps(body)
    body = {"channel": item.channel, "key": item.key, "data": item.data}
    return ACTION, f"{item.channel}:{item.key}", _dumps(body)


def _dumps(body: dict[str, Any]) -> str:
    # As it is (not ASCII-escaped): text that has no UTF-8 form fails to store, and the
    # request that brought it is refused (bot.inbox.UnstorablePayload).
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode(source: str, payload: str) -> Item:
    """The item an :func:`encode` stored; ValueError (or KeyError) for anything else."""
    body = json.loads(payload)
    if source == INBOUND:
        return InboundMessage(
            Address.parse(body["address"]),
            body["text"],
            body["id"],
            received_at=datetime.fromisoformat(body["received_at"]),
            extra=dict(body.get("extra") or {}),
        )
    if source == REPORT:
        return DeliveryReport(
            channel=body["channel"],
            provider_message_id=body["id"],
            status=OutboxStatus(body["status"]),
            error_code=body.get("error_code"),
            error_class=ErrorClass(body["error_class"]) if body.get("error_class") else None,
            at=datetime.fromisoformat(body["at"]),
        )
    if source == ACTION:
        return Action(body["channel"], body["key"], dict(body.get("data") or {}))
    raise ValueError(f"not a source of the ingress: {source!r}")


def stored_addresses(source: str, payload: str) -> set[str]:
    """The ``channel:id`` addresses an item stored by :func:`encode` is from or to (an
    inbound message's sender, an action's chat); empty for anything else."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return set()
    if not isinstance(body, dict):
        return set()
    if source == INBOUND and isinstance(body.get("address"), str):
        return {body["address"]}
    if source == ACTION and isinstance(body.get("data"), dict):
        address = body["data"].get("address")
        return {address} if isinstance(address, str) else set()
    return set()


# -- the ingress -----------------------------------------------------------------------------


class Ingress:
    """Where channels hand what they parsed: to the engine now, or into the inbox.

    ``handle`` is the engine's way in for a message, ``apply_report`` applies a delivery
    report (returning the outbox row id, None for an unknown provider id). Channels that
    need to act after the engine (answer a tapped button), to perform their own actions, or
    to decode old inbox payloads are :meth:`attach`-ed by their names.
    """

    def __init__(
        self,
        handle: Callable[[InboundMessage], Awaitable[HandleResult]],
        apply_report: Callable[[DeliveryReport], Awaitable[int | None]],
    ) -> None:
        self._handle = handle
        self._apply_report = apply_report
        self.inbox: InboxWriter | None = None
        self._channels: dict[str, Any] = {}

    def attach(self, channel: Any) -> None:
        """A channel's optional hooks, by each name it serves: ``handled(message, result)``
        after the engine took one of its messages, ``act(action)``, ``sent_lately(id)``
        (a report for it may overtake the dispatcher's record), ``legacy_decoders()``."""
        for name in channel.names:
            self._channels[name] = channel

    def store_in(self, inbox: InboxWriter) -> None:
        """From now on, store what channels hand over (a web process)."""
        self.inbox = inbox

    async def accept(self, item: Item) -> HandleResult | None:
        """Hand ``item`` on, or store it; returns once it is committed.

        Returns the engine's result for a message handled now, None otherwise. Raises the
        engine's (or storage's) error when it was not taken: :class:`StoreFailed` when
        storing failed, :class:`~bot.inbox.UnstorablePayload` when the item itself cannot
        be stored (the request's fault).
        """
        if self.inbox is not None:
            source, key, payload = encode(item)
            from bot.inbox import UnstorablePayload

            try:
                await self.inbox.put(source, key, payload)
            except UnstorablePayload:
                raise
            except Exception as exc:
                raise StoreFailed("the inbox could not store it") from exc
            return None
        return await self.deliver(item)

    async def deliver(self, item: Item) -> HandleResult | None:
        """Hand ``item`` on now (never stored)."""
        if isinstance(item, InboundMessage):
            result = await self._handle(item)
            handled = getattr(self._channels.get(item.address.channel), "handled", None)
            if handled is not None:
                await handled(item, result)
            return result
        if isinstance(item, DeliveryReport):
            await self._report(item)
            return None
        channel = self._channels.get(item.channel)
        act = getattr(channel, "act", None)
        if act is None:
            raise LookupError(f"no channel {item.channel!r} to act (is it enabled?)")
        await act(item)
        return None

    async def _report(self, report: DeliveryReport) -> None:
        row_id = await self._apply_report(report)
        sent_lately = getattr(self._channels.get(report.channel), "sent_lately", None)
        if row_id is None and sent_lately is not None and sent_lately(report.provider_message_id):
            # A fast report can overtake the dispatcher's own record of the provider's id:
            # wait a moment for it rather than lose a "failed" or "delivered".
            deadline = time.monotonic() + REPORT_WAIT
            while row_id is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                row_id = await self._apply_report(report)
        if row_id is None:
            logger.debug("%s: a report for an unknown message", report.channel)

    def handlers(self) -> dict[str, Handler]:
        """What the main process's inbox reader does with each source stored: the items of
        this module, and old raw payloads through the channels' legacy decoders. Errors
        pass through to the reader, which tells a storage failure from the payload's own."""

        async def stored(source: str, payload: str) -> None:
            await self.deliver(decode(source, payload))

        handlers: dict[str, Handler] = {
            source: _bound(stored, source) for source in (INBOUND, REPORT, ACTION)
        }
        for channel in set(self._channels.values()):
            decoders = getattr(channel, "legacy_decoders", None)
            for source, decoder in (decoders() if decoders is not None else {}).items():
                handlers[source] = self._legacy(decoder)
        return handlers

    def _legacy(self, decoder: Decoder) -> Handler:
        async def handle(payload: str, received_at: datetime) -> None:
            for item in decoder(payload, received_at):
                await self.deliver(item)

        return handle


def _bound(stored: Callable[[str, str], Awaitable[None]], source: str) -> Handler:
    async def handle(payload: str, received_at: datetime) -> None:
        await stored(source, payload)

    return handle
