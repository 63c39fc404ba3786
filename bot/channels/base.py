"""The channel protocol the dispatcher and web app rely on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.models import Address, OutboundMessage, SendResult

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.app import Bot
    from bot.inbox import Handler


@runtime_checkable
class Channel(Protocol):
    """A way of reaching panellists.

    ``names`` are the address channels it serves (Twilio serves ``sms`` and ``whatsapp``).
    The dispatcher paces each channel at ``rate_per_second`` (a message costs
    :meth:`cost` units, e.g. its SMS segments) and keeps ``per_address_interval`` seconds
    between two messages to one address (Telegram: 1 s per chat).
    """

    names: tuple[str, ...]
    rate_per_second: float
    per_address_interval: float
    # How many provider calls may be in flight at once.
    concurrency: int

    async def start(self, bot: Bot) -> None:
        """Open clients (inside the running event loop)."""

    async def stop(self) -> None:
        """Close clients."""

    async def start_web(self, bot: Bot) -> None:
        """In a web process ([web] workers >= 1): serve the webhook routes only, storing
        what they verify in ``bot.inbox`` for the main process; no provider client."""

    def inbox_handlers(self) -> dict[str, Handler]:
        """Handlers, by inbox source, for the payloads this channel's webhooks store."""

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

    def can_send_free_text(self, address: Address) -> bool:
        """False where only pre-approved templates may be sent (WhatsApp outside 24 h)."""
