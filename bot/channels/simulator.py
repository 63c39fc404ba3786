"""The simulator channel: addresses ``sim:<name>``, delivered to the web page and the CLI chat.

It goes through the same engine, outbox and dispatcher as SMS and Telegram; "delivery" is
the dispatcher marking the row sent, after which the page, the JSON API and ``panelbot chat``
read it from the outbox.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from bot.models import Address, InboundMessage, OutboundMessage, OutboxStatus, SendResult

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.channels.base import ChannelServices
    from bot.engine.conversation import HandleResult
    from bot.ingress import Decoder, Ingress, Item


def decode_legacy_message(payload: str, received_at: datetime) -> list[Item]:
    """``{"from": "sim:NAME", "text": ..., "id": ...}``, as a web process stored it before
    the ingress stored parsed messages."""
    data = json.loads(payload)
    return [
        InboundMessage(
            Address.parse(data["from"]), data["text"], data["id"], received_at=received_at
        )
    ]


class SimulatorChannel:
    names = ("sim",)
    per_address_interval = 0.0
    concurrency = 8

    def __init__(self, rate_per_second: float = 50.0, *, ingress: Ingress | None = None) -> None:
        self.rate_per_second = rate_per_second
        self.ingress = ingress
        self._ids = itertools.count(1)
        # Waiters wake when a message to their address is sent.
        self._conditions: dict[str, asyncio.Condition] = defaultdict(asyncio.Condition)
        self._sent: dict[str, int] = defaultdict(int)

    async def start(self, services: ChannelServices) -> None:
        pass  # nothing to open: the page and the API read the outbox

    async def accept(self, address: Address, text: str, message_id: str) -> HandleResult | None:
        """A message typed on the simulator page or posted to its JSON API (already checked):
        the engine's result when it was handled now, None when it was stored for the main
        process (see :class:`~bot.ingress.Ingress`)."""
        assert self.ingress is not None
        return await self.ingress.accept(InboundMessage(address, text, message_id))

    def legacy_decoders(self) -> dict[str, Decoder]:
        """Simulator messages an earlier version stored raw in the inbox."""
        return {"sim-message": decode_legacy_message}

    async def stop(self) -> None:
        for condition in self._conditions.values():
            async with condition:
                condition.notify_all()

    def routes(self) -> list[BaseRoute]:
        return []

    def cost(self, message: OutboundMessage) -> float:
        return 1.0

    async def send(self, message: OutboundMessage) -> SendResult:
        key = message.address.id
        self._sent[key] += 1
        condition = self._conditions[key]
        async with condition:
            condition.notify_all()
        return SendResult(
            provider_message_id=f"sim-{next(self._ids)}", status=OutboxStatus.DELIVERED
        )

    async def reconcile(self, message: OutboundMessage) -> SendResult | None:
        # Nothing left the process: sending again is safe and what the person expects.
        return None

    def sent_count(self, address_id: str) -> int:
        return self._sent[address_id]

    async def wait_for_send(self, address_id: str, seen: int, timeout: float) -> bool:
        """Wait until more than ``seen`` messages went to the address, or the timeout."""
        condition = self._conditions[address_id]
        try:
            async with asyncio.timeout(timeout):
                async with condition:
                    await condition.wait_for(lambda: self._sent[address_id] > seen)
            return True
        except TimeoutError:
            return False
