"""The channel protocol the dispatcher and web app rely on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.models import Address, OutboundMessage, SendResult

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.storage import Database


@dataclass(frozen=True, slots=True)
class ChannelServices:
    """What a channel may use of the running bot, given at :meth:`Channel.start`: the
    database (a provider's record is matched against the outbox after a crash) and when an
    address last wrote to us (WhatsApp's 24-hour window). Nothing else of the Bot."""

    db: Database
    last_inbound_at: Callable[[Address], Awaitable[datetime | None]]


@runtime_checkable
class Channel(Protocol):
    """A way of reaching panellists.

    ``names`` are the address channels it serves (Twilio serves ``sms`` and ``whatsapp``).
    The dispatcher paces each channel at ``rate_per_second`` (a message costs
    :meth:`cost` units, e.g. its SMS segments) and keeps ``per_address_interval`` seconds
    between two messages to one address (Telegram: 1 s per chat).

    What its webhooks (or its polling) receive, a channel verifies, parses and hands to its
    :class:`~bot.ingress.Ingress` (given when it is built); it never asks whether web
    processes exist. Optional hooks the ingress calls are listed at
    :meth:`bot.ingress.Ingress.attach`.
    """

    names: tuple[str, ...]
    rate_per_second: float
    per_address_interval: float
    # How many provider calls may be in flight at once.
    concurrency: int

    async def start(self, services: ChannelServices) -> None:
        """Open clients (inside the running event loop)."""

    async def stop(self) -> None:
        """Close clients."""

    def routes(self) -> list[BaseRoute]:
        """Webhook routes this channel serves."""

    def cost(self, message: OutboundMessage) -> float:
        """Rate-limit units the message uses."""

    async def send(self, message: OutboundMessage) -> SendResult:
        """Hand one message to the provider; raise SendError on failure."""

    async def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """Settle a message found in ``sending`` after a crash.

        Return the provider's record when there is one, or None when the provider never got
        it and it may safely be sent again.
        """
