"""A scripted channel: the dispatcher's test seam.

It implements the :class:`bot.channels.base.Channel` protocol, records every send with a
monotonic timestamp, and answers each call with what the test scripted: a ``SendResult``, or
a ``SendError`` (any exception) to raise. It can also be slow. Real provider fakes (Twilio,
Telegram) talk HTTP to the real SDKs; this one only stands in for them where the behaviour
under test is the dispatcher's own (order, pacing, retries, reconciliation).

Use it by replacing the channel before the dispatcher is built::

    bot = await Bot.create(settings)
    channel = ScriptedChannel()
    bot.channels = {name: channel for name in channel.names}
    bot.dispatcher = bot.build_dispatcher()  # the dispatcher reads bot.channels when built
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.models import OutboundMessage, SendResult

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.channels.base import ChannelServices

# What one call may be scripted to do: succeed with this result, or raise this exception.
Outcome = SendResult | BaseException


@dataclass(frozen=True, slots=True)
class Call:
    """One call of ``send``: the message as the channel got it, when, and what it answered."""

    message: OutboundMessage
    at: float  # time.monotonic() when the call began
    outcome: Outcome

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def address(self) -> str:
        return self.message.address.id

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, SendResult)


class ScriptedChannel:
    """A channel whose every answer is scripted by the test.

    :param outcomes: answers for the next calls, in order, whatever the address; once they
        run out every call succeeds.
    :param delay: seconds each call takes (a slow provider).
    :param cost: rate-limit units per message (e.g. 2 for a two-segment SMS).
    :param reconcile: what :meth:`reconcile` answers: a ``SendResult``, None, or an
        exception to raise.
    """

    def __init__(
        self,
        *,
        names: tuple[str, ...] = ("sim",),
        rate_per_second: float = 1000.0,
        per_address_interval: float = 0.0,
        concurrency: int = 8,
        cost: float = 1.0,
        delay: float = 0.0,
        outcomes: Iterable[Outcome] = (),
        reconcile: SendResult | BaseException | None = None,
    ) -> None:
        self.names = names
        self.rate_per_second = rate_per_second
        self.per_address_interval = per_address_interval
        self.concurrency = concurrency
        self.unit_cost = cost
        self.delay = delay
        self.reconcile_outcome = reconcile
        self._outcomes: deque[Outcome] = deque(outcomes)
        self._by_address: dict[str, deque[Outcome]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self.calls: list[Call] = []
        self.reconciled: list[OutboundMessage] = []
        self.started = False
        self._changed: asyncio.Condition | None = None

    # -- scripting ----------------------------------------------------------------------

    def script(self, *outcomes: Outcome, address: str | None = None) -> None:
        """Queue answers for the next calls (to ``address`` only, when given)."""
        target = self._by_address[address] if address is not None else self._outcomes
        target.extend(outcomes)

    def _next_outcome(self, message: OutboundMessage) -> Outcome:
        own = self._by_address.get(message.address.id)
        if own:
            return own.popleft()
        if self._outcomes:
            return self._outcomes.popleft()
        return SendResult(provider_message_id=f"scripted-{next(self._ids)}")

    # -- what tests read ----------------------------------------------------------------

    @property
    def sent(self) -> list[Call]:
        """The calls that succeeded, in the order they began."""
        return [c for c in self.calls if c.ok]

    def texts(self) -> list[str]:
        return [c.text for c in self.calls]

    def calls_to(self, address: str) -> list[Call]:
        return [c for c in self.calls if c.address == address]

    async def wait_for_calls(self, count: int, timeout: float = 5.0) -> list[Call]:
        """Wait until at least ``count`` calls have begun; raises TimeoutError otherwise."""
        await self._wait(lambda: len(self.calls) >= count, timeout)
        return self.calls

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            async with self._condition():
                await self._condition().wait_for(ready)

    def _condition(self) -> asyncio.Condition:
        # Made on first use, inside the test's event loop.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    # -- the Channel protocol -----------------------------------------------------------

    async def start(self, services: ChannelServices) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def routes(self) -> list[BaseRoute]:
        return []

    def cost(self, message: OutboundMessage) -> float:
        return self.unit_cost

    async def send(self, message: OutboundMessage) -> SendResult:
        call = Call(message, time.monotonic(), self._next_outcome(message))
        self.calls.append(call)
        await self._notify()
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(call.outcome, BaseException):
            raise call.outcome
        return call.outcome

    async def reconcile(self, message: OutboundMessage) -> SendResult | None:
        self.reconciled.append(message)
        if isinstance(self.reconcile_outcome, BaseException):
            raise self.reconcile_outcome
        return self.reconcile_outcome
