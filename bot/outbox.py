"""The dispatcher: sends due outbox rows through their channel, keeping every provider's rules.

- Replies go before bulk (invitations, reminders, impact updates); quiet hours hold bulk only.
- Each channel is paced by a token schedule at ``rate_per_second``; a message costs its
  channel's units (SMS segments), and one address gets at most one message per
  ``per_address_interval`` seconds (Telegram: one a second per chat).
- Every failure is classified: retryable ones are retried with backoff until
  ``max_attempts``; opted-out and unreachable mark the panellist and never retry.
- A row is marked ``sending`` before the provider call; rows found in that state at start
  (a crash) are reconciled through the channel, never blindly resent.
- Nobody opted out, erased or unreachable is sent anything but the STOP confirmation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.models import (
    ErrorClass,
    MessageKind,
    OutboundMessage,
    OutboxStatus,
    PanellistStatus,
    SendError,
    SendResult,
    utcnow,
)
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.channels.base import Channel

logger = logging.getLogger(__name__)

BLOCKED_STATUSES = {
    PanellistStatus.OPTED_OUT.value,
    PanellistStatus.ERASED.value,
    PanellistStatus.UNREACHABLE.value,
}


class Pacer:
    """Spaces sends so a channel never exceeds ``rate`` units in any one-second window.

    A strict schedule (each send holds the channel for ``cost / rate`` seconds) rather than a
    bursty bucket: providers count per second, and a burst at a window edge would break the
    limit. The schedule aims ``MARGIN`` under the limit and counts each slot from the previous
    slot's due time, so the timer's wake-up lateness (about a millisecond a sleep) is not
    added to every gap, yet a late send can make up at most half the margin: any ``rate``
    consecutive units still span more than a second.
    """

    MARGIN = 0.01

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, cost: float = 1.0) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            delay = self._next - time.monotonic()
            while delay > 0:
                await asyncio.sleep(delay)
                # Checked again: a push_back may have come in meanwhile.
                delay = self._next - time.monotonic()
            start = max(self._next, time.monotonic() - self.MARGIN / 2)
            self._next = start + cost / (self.rate * (1 - self.MARGIN))

    def push_back(self, seconds: float) -> None:
        """Hold the whole channel (a provider-wide rate-limit answer)."""
        self._next = max(self._next, time.monotonic() + seconds)


def in_quiet_hours(bot: Bot, now: datetime) -> datetime | None:
    """When the current quiet period ends (UTC), or None outside quiet hours."""
    quiet = bot.settings.bot.quiet_hours
    if quiet is None:
        return None
    tz = ZoneInfo(bot.settings.bot.timezone)
    local = now.astimezone(tz)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return None
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end = end + timedelta(days=1)
    # Rebuild in the zone so a clock change between now and the end is honoured.
    end = datetime.combine(end.date(), quiet.end, tzinfo=tz)
    if end <= now:
        # An end in the hour repeated when clocks go back, whose first showing has passed.
        end = end.replace(fold=1)
    return end.astimezone(now.tzinfo)


@dataclass
class _ChannelState:
    channel: Channel
    pacer: Pacer
    slots: asyncio.Semaphore
    # Rows claimed (marked sending) but not yet settled. Claiming stops at about a
    # second's worth, so few rows are ever "sending" and a crash leaves little to reconcile.
    max_pending: int
    pending: int = 0
    last_to_address: dict[str, float] = field(default_factory=dict)
    # One lock per address keeps its messages in order and spaced by per_address_interval.
    address_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock_for(self, address: str) -> asyncio.Lock:
        lock = self.address_locks.get(address)
        if lock is None:
            lock = self.address_locks[address] = asyncio.Lock()
        return lock


class Dispatcher:
    """Runs as one task in the bot's event loop."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._states: dict[str, _ChannelState] = {}
        self._blocked: set[int] = set()
        for channel in bot.channels.values():
            if channel.names[0] in self._states:
                continue  # one channel serving several address kinds (Twilio: sms, whatsapp)
            state = _ChannelState(
                channel,
                Pacer(channel.rate_per_second),
                asyncio.Semaphore(channel.concurrency),
                max_pending=max(channel.concurrency * 2, math.ceil(channel.rate_per_second)),
            )
            for name in channel.names:
                self._states[name] = state

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.create_task(self._run(), name="panelbot-dispatcher")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; let in-flight sends finish (or stay queued) within ``timeout``."""
        self._stopping = True
        self._wake.set()
        if self._task:
            await asyncio.wait([self._task], timeout=timeout)
            if not self._task.done():
                self._task.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)
            for task in list(self._inflight):
                # Still waiting on a provider: its row stays "sending" and is reconciled
                # at the next start rather than guessed at now.
                task.cancel()

    async def reconcile(self) -> None:
        """Settle rows left in ``sending`` by a crash: ask the channel, never resend blindly."""
        async with self.bot.db.transaction() as conn:
            stuck = await outbox_store.stuck_sending(conn)
        for message in stuck:
            state = self._states.get(message.address.channel)
            if state is None:
                continue
            try:
                result = await state.channel.reconcile(message)
            except Exception as exc:
                logger.warning("outbox %s: could not reconcile (%s); holding it", message.id, exc)
                async with self.bot.db.transaction() as conn:
                    await outbox_store.mark_final(
                        conn, message.id, status=OutboxStatus.HELD, error=f"unreconciled: {exc}"
                    )
                continue
            async with self.bot.db.transaction() as conn:
                if result is None:
                    await outbox_store.reschedule(
                        conn,
                        message.id,
                        at=utcnow(),
                        error="requeued after restart",
                        count_attempt=False,
                    )
                else:
                    await outbox_store.mark_sent(
                        conn,
                        message.id,
                        provider_message_id=result.provider_message_id,
                        status=result.status,
                    )

    async def _run(self) -> None:
        poll = self.bot.settings.outbox.poll_interval
        while not self._stopping:
            try:
                claimed = await self.dispatch_due()
            except Exception:
                logger.exception("dispatcher pass failed; retrying")
                claimed = 0
            if claimed == 0 and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=poll)
                except TimeoutError:
                    pass

    async def dispatch_due(self) -> int:
        """Claim due rows for every channel with room and start sending them.

        Returns how many rows were claimed.
        """
        now = utcnow()
        limit = self.bot.settings.outbox.batch_size
        quiet_end = in_quiet_hours(self.bot, now)
        states = {id(s): s for s in self._states.values()}.values()
        ready: list[tuple[_ChannelState, OutboundMessage]] = []
        claimed_total = 0
        async with self.bot.db.transaction() as conn:
            for state in states:
                room = min(limit, state.max_pending - state.pending)
                if room <= 0:
                    continue
                claimed = await outbox_store.claim_due(
                    conn, now=now, limit=room, channels=list(state.channel.names)
                )
                claimed_total += len(claimed)
                for message, status in claimed:
                    if status in BLOCKED_STATUSES and message.kind != MessageKind.STOP_CONFIRMATION:
                        await outbox_store.mark_final(
                            conn,
                            message.id,
                            status=OutboxStatus.CANCELLED,
                            error=f"panellist is {status}",
                        )
                    elif quiet_end and message.kind.is_bulk:
                        await outbox_store.reschedule(
                            conn,
                            message.id,
                            at=quiet_end,
                            error="quiet hours",
                            count_attempt=False,
                        )
                    else:
                        state.pending += 1
                        ready.append((state, message))
        for state, message in ready:
            task = asyncio.create_task(self._send(state, message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return claimed_total

    async def _send(self, state: _ChannelState, message: OutboundMessage) -> None:
        lock = state.lock_for(message.address.id)
        try:
            async with lock:
                if self._stopping:
                    # Leave it queued for the next start rather than half-send on the way out.
                    async with self.bot.db.transaction() as conn:
                        await outbox_store.reschedule(
                            conn, message.id, at=utcnow(), count_attempt=False
                        )
                    return
                changed = await self.bot.plugins.call_chain(
                    "panelbot_before_send", "message", bot=self.bot, message=message
                )
                if isinstance(changed, OutboundMessage):
                    message = changed
                interval = state.channel.per_address_interval
                if interval:
                    last = state.last_to_address.get(message.address.id)
                    wait = last + interval - time.monotonic() if last is not None else 0
                    if wait > 0:
                        await asyncio.sleep(wait)
                async with state.slots:
                    # Checked once a slot is free, just before the provider call: a stop or
                    # an opt-out may have come while this message waited for its turn.
                    if self._stopping:
                        async with self.bot.db.transaction() as conn:
                            await outbox_store.reschedule(
                                conn, message.id, at=utcnow(), count_attempt=False
                            )
                        return
                    if await self._now_blocked(message):
                        return
                    # The rate slot is taken last, right before the call, so that the
                    # varying time of the checks above cannot bunch sends together.
                    await state.pacer.acquire(state.channel.cost(message))
                    if self._stopping:
                        async with self.bot.db.transaction() as conn:
                            await outbox_store.reschedule(
                                conn, message.id, at=utcnow(), count_attempt=False
                            )
                        return
                    if await self._now_blocked(message, memory_only=True):
                        return
                    try:
                        result: SendResult | SendError = await state.channel.send(message)
                    except SendError as exc:
                        result = exc
                    except Exception as exc:  # a bug or an unexpected transport error: retry
                        logger.exception("outbox %s: unexpected send failure", message.id)
                        result = SendError(ErrorClass.RETRYABLE, f"{type(exc).__name__}: {exc}")
                    if interval:
                        state.last_to_address[message.address.id] = time.monotonic()
                await self._record(state, message, result)
            await self.bot.plugins.call_each(
                "panelbot_after_send", bot=self.bot, message=message, report=result
            )
        finally:
            state.pending -= 1
            self._wake.set()

    def block(self, panellist_id: int) -> None:
        """This process just opted someone out: stop anything of theirs at the last moment."""
        self._blocked.add(panellist_id)

    def unblock(self, panellist_id: int) -> None:
        self._blocked.discard(panellist_id)

    async def _now_blocked(self, message: OutboundMessage, *, memory_only: bool = False) -> bool:
        """Cancel a claimed message whose recipient opted out, was erased or became
        unreachable while it waited for its turn (a STOP must be honoured at once).

        The database is asked once a send slot is free; right before the provider call only
        the in-memory set of people opted out by this process is checked (no round trip in
        the paced part of the send).
        """
        if message.panellist_id is None or message.kind == MessageKind.STOP_CONFIRMATION:
            return False
        if message.panellist_id in self._blocked:
            status = PanellistStatus.OPTED_OUT.value
        elif memory_only:
            return False
        else:
            found = await panellist_store.status_of(self.bot.db.conn, message.panellist_id)
            status = found or PanellistStatus.ERASED.value
        if status not in BLOCKED_STATUSES:
            return False
        async with self.bot.db.transaction() as conn:
            await outbox_store.mark_final(
                conn, message.id, status=OutboxStatus.CANCELLED, error=f"panellist is {status}"
            )
        return True

    async def _record(
        self, state: _ChannelState, message: OutboundMessage, result: SendResult | SendError
    ) -> None:
        settings = self.bot.settings.outbox
        async with self.bot.db.transaction() as conn:
            if isinstance(result, SendResult) and result.status == OutboxStatus.HELD:
                await outbox_store.mark_final(
                    conn,
                    message.id,
                    status=OutboxStatus.HELD,
                    error=result.detail or "held by the channel",
                )
                return
            if isinstance(result, SendResult):
                await outbox_store.mark_sent(
                    conn,
                    message.id,
                    provider_message_id=result.provider_message_id,
                    status=result.status,
                )
                return
            error = result
            if error.error_class == ErrorClass.RETRYABLE:
                if error.retry_after:
                    # The provider told us how long to wait: same message, no attempt used.
                    state.pacer.push_back(error.retry_after)
                    await outbox_store.reschedule(
                        conn,
                        message.id,
                        at=utcnow() + timedelta(seconds=error.retry_after),
                        error=error.detail,
                        error_code=error.code,
                        count_attempt=False,
                    )
                    return
                if message.attempts < settings.max_attempts:
                    backoff = settings.retry_backoff
                    delay = backoff[min(message.attempts - 1, len(backoff) - 1)]
                    await outbox_store.reschedule(
                        conn,
                        message.id,
                        at=utcnow() + delay,
                        error=error.detail,
                        error_code=error.code,
                    )
                    return
            await outbox_store.mark_final(
                conn,
                message.id,
                status=OutboxStatus.FAILED,
                error=error.detail,
                error_code=error.code,
                error_class=error.error_class.value,
            )
            if message.panellist_id and error.error_class in (
                ErrorClass.OPTED_OUT,
                ErrorClass.UNREACHABLE,
            ):
                new_status = (
                    PanellistStatus.OPTED_OUT
                    if error.error_class == ErrorClass.OPTED_OUT
                    else PanellistStatus.UNREACHABLE
                )
                await panellist_store.update(conn, message.panellist_id, status=new_status)
                self._blocked.add(message.panellist_id)
                await outbox_store.cancel_for_panellist(conn, message.panellist_id)
            logger.warning(
                "outbox %s failed (%s, code %s): %s",
                message.id,
                error.error_class.value,
                error.code,
                error.detail,
            )
