"""The dispatcher: sends due outbox rows through their channel, keeping every provider's rules.

- Replies go before bulk (invitations, reminders, impact updates); quiet hours hold bulk only.
- Each channel is paced by a token schedule at ``rate_per_second``; a message costs its
  channel's units (SMS segments), and one address gets at most one message per
  ``per_address_interval`` seconds (Telegram: one a second per chat).
- Every failure is classified: retryable ones are retried with backoff until
  ``max_attempts``; opted-out and unreachable mark the panellist and never retry.
- A row is marked ``sending`` before the provider call; rows found in that state at start
  (a crash) are reconciled through the channel, never blindly resent. That runs in the
  background (bounded, each look-up with a time limit) while sending starts; a look-up that
  fails is asked again with backoff, and only a channel that can never tell holds a row.
- Each channel's pacer counts a send until its request has completed, so the provider never
  counts more than the rate in a second, however late a request reaches it.
- A provider's answer that cannot be recorded (a full disk) stays in memory and is recorded
  again with backoff; problems are logged once as they begin and once as they end.
- Nobody opted out, erased or unreachable is sent anything but the STOP confirmation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from bot.models import (
    DeliveryReport,
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
    from bot.channels.base import Channel
    from bot.config import Settings
    from bot.storage.db import Database

logger = logging.getLogger(__name__)

BLOCKED_STATUSES = {
    PanellistStatus.OPTED_OUT.value,
    PanellistStatus.ERASED.value,
    PanellistStatus.UNREACHABLE.value,
}


class Pacer:
    """Spaces sends so a channel never exceeds ``rate`` units in any one-second window, as
    the provider counts them.

    A strict schedule (each send holds the channel for ``cost / rate`` seconds) rather than a
    bursty bucket: providers count per second, and a burst at a window edge would break the
    limit. The schedule aims ``MARGIN`` under the limit and counts each slot from the previous
    slot's due time, so the timer's wake-up lateness (about a millisecond a sleep) is not
    added to every gap.

    The schedule alone is kept at the moment ``send()`` is called; the provider sees each
    request somewhat later, by a delay that varies (a busy machine, a slow connection), and
    one late request can land in the next request's second. So each send also counts until
    its request has completed, and a new one starts only when the units in flight plus those
    completed within the last second leave room: the provider, which sees a request between
    its start and its completion, then never counts more than ``rate`` units in a second.
    """

    MARGIN = 0.01
    WINDOW = 1.0

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._in_flight = 0.0
        self._completed: deque[tuple[float, float]] = deque()  # (monotonic end, cost)
        self._done = asyncio.Event()

    def _window_units(self, now: float) -> float:
        while self._completed and self._completed[0][0] <= now - self.WINDOW:
            self._completed.popleft()
        return self._in_flight + sum(cost for _, cost in self._completed)

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait for this send's turn; call :meth:`release` with the same cost once its
        request has completed (or was not made)."""
        if self.rate <= 0:
            return
        async with self._lock:
            delay = self._next - time.monotonic()
            while delay > 0:
                await asyncio.sleep(delay)
                # Checked again: a push_back may have come in meanwhile.
                delay = self._next - time.monotonic()
            while True:
                now = time.monotonic()
                used = self._window_units(now)
                if used == 0 or used + cost <= self.rate:
                    break
                self._done.clear()
                wait = self._completed[0][0] + self.WINDOW - now if self._completed else None
                try:
                    await asyncio.wait_for(self._done.wait(), timeout=wait)
                except TimeoutError:
                    pass
            self._in_flight += cost
            start = max(self._next, time.monotonic() - self.MARGIN / 2)
            self._next = start + cost / (self.rate * (1 - self.MARGIN))

    def release(self, cost: float = 1.0) -> None:
        """The request of a send that :meth:`acquire` let through has completed."""
        if self.rate <= 0:
            return
        self._in_flight = max(self._in_flight - cost, 0.0)
        self._completed.append((time.monotonic(), cost))
        self._done.set()

    def push_back(self, seconds: float) -> None:
        """Hold the whole channel (a provider-wide rate-limit answer)."""
        self._next = max(self._next, time.monotonic() + seconds)


class ProblemLog:
    """Logs a problem once when it starts and once when it clears, not once per row.

    A full disk fails every row's write alike: forty identical warnings say less than one
    saying it began and one saying it ended (with how many failures in between). Each
    failing piece of work registers as an ``owner`` of the problem; it is over when the
    last owner has succeeded (one row that still fits does not end a full disk).
    """

    def __init__(self) -> None:
        self._active: dict[str, int] = {}
        self._owners: dict[str, set[object]] = {}

    def failed(self, key: str, message: str, *args: object, owner: object = None) -> None:
        count = self._active.get(key, 0)
        self._active[key] = count + 1
        self._owners.setdefault(key, set()).add(owner)
        if count == 0:
            logger.warning(message, *args)

    def cleared(self, key: str, what: str, *, owner: object = None) -> None:
        owners = self._owners.get(key)
        if owners is None:
            return
        owners.discard(owner)
        if owners:
            return
        del self._owners[key]
        count = self._active.pop(key, 0)
        logger.warning("%s succeeded again (after %d failed attempts)", what, count)

    def active(self) -> dict[str, int]:
        return dict(self._active)


class HasSettings(Protocol):
    settings: Settings


# Plugin hooks around each send: before (may return a changed message), after (the report).
BeforeSend = Callable[[OutboundMessage], Awaitable["OutboundMessage | None"]]
AfterSend = Callable[[OutboundMessage, "SendResult | SendError"], Awaitable[None]]


async def _no_change(message: OutboundMessage) -> None:
    return None


async def _nothing_after(message: OutboundMessage, report: SendResult | SendError) -> None:
    return None


async def mark_undeliverable(conn: Any, panellist_id: int, error_class: ErrorClass) -> bool:
    """A final failure a provider classified as opted-out or unreachable: mark the
    panellist so and cancel what is still queued for them (inside the caller's
    transaction). False, and nothing done, for any other class of failure."""
    if error_class == ErrorClass.OPTED_OUT:
        status = PanellistStatus.OPTED_OUT
    elif error_class == ErrorClass.UNREACHABLE:
        status = PanellistStatus.UNREACHABLE
    else:
        return False
    await panellist_store.update(conn, panellist_id, status=status)
    await outbox_store.cancel_for_panellist(conn, panellist_id)
    return True


def in_quiet_hours(holder: HasSettings, now: datetime) -> datetime | None:
    """When the current quiet period ends (UTC), or None outside quiet hours."""
    quiet = holder.settings.bot.quiet_hours
    if quiet is None:
        return None
    tz = ZoneInfo(holder.settings.bot.timezone)
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
    """Runs as one task in the bot's event loop.

    Given only what it uses: the database, the settings, the channels by address kind, and
    the plugin hooks around each send (the Bot wires them: :meth:`bot.app.Bot.build_dispatcher`).
    It is also what delivery reports are given to (:meth:`apply_report`).
    """

    # Reconciling rows left in ``sending`` at start: how many look-ups at once, how long
    # one may take, and the longest wait between two tries of a look-up that failed.
    reconcile_concurrency = 4
    reconcile_timeout = 60.0
    reconcile_max_backoff = 300.0
    # Recording a provider's answer that failed (a full disk, a locked database) is tried
    # again after a wait that doubles up to this many seconds; the answer stays in memory.
    record_max_backoff = 10.0

    def __init__(
        self,
        db: Database,
        settings: Settings,
        channels: dict[str, Channel],
        *,
        before_send: BeforeSend = _no_change,
        after_send: AfterSend = _nothing_after,
    ) -> None:
        self.db = db
        self.settings = settings
        self._before_send = before_send
        self._after_send = after_send
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._states: dict[str, _ChannelState] = {}
        self._blocked: set[int] = set()
        self.problems = ProblemLog()
        # Rows left in ``sending`` by the last run that are still being looked up.
        self.reconciling: set[int] = set()
        for channel in channels.values():
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
        """Start sending at once; rows a crash left in ``sending`` are reconciled meanwhile,
        in the background (a slow or failing provider never delays the start)."""
        stuck = await outbox_store.stuck_sending(self.db.conn)
        self._task = asyncio.create_task(self._run(), name="panelbot-dispatcher")
        if stuck:
            self.reconciling = {m.id for m in stuck}
            self._reconciler = asyncio.create_task(self.reconcile(stuck), name="panelbot-reconcile")
            self._reconciler.add_done_callback(self._task_done)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; let in-flight sends finish (or stay queued) within ``timeout``."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._reconciler is not None and not self._reconciler.done():
            # Rows not settled yet stay "sending" and are looked up at the next start.
            self._reconciler.cancel()
            await asyncio.wait([self._reconciler], timeout=timeout)
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

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by stop(); False when the dispatcher is stopping."""
        if self._stopping:
            return False
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Every task's outcome is retrieved: none dies unseen ("Task exception was never
        retrieved")."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.problems.failed(
                f"task:{type(exc).__name__}:{exc}",
                "dispatcher task %s failed: %s: %s",
                task.get_name(),
                type(exc).__name__,
                exc,
            )

    async def _write(
        self, what: str, work: Callable[[Any], Awaitable[None]], *, persist: bool = True
    ) -> bool:
        """Run ``work(conn)`` in a write transaction, retrying with backoff while it fails.

        What is being recorded stays in memory meanwhile (the caller's variables). Without
        ``persist`` one failure returns False. A stop cancels the wait; the row then stays as
        the database has it (``sending`` rows are reconciled at the next start).
        """
        delay = 0.1
        token = object()
        failing: set[str] = set()
        while True:
            try:
                async with self.db.transaction() as conn:
                    await work(conn)
            except Exception as exc:
                key = f"write:{type(exc).__name__}:{exc}"
                if not persist:
                    # Best effort (a note, a requeue on the way out): said once while the
                    # same problem holds other writes back.
                    if key not in self.problems.active():
                        logger.warning(
                            "outbox: could not record %s (%s: %s)", what, type(exc).__name__, exc
                        )
                    return False
                failing.add(key)
                self.problems.failed(
                    key,
                    "outbox: could not record %s (%s: %s); keeping it in memory and "
                    "retrying with backoff",
                    what,
                    type(exc).__name__,
                    exc,
                    owner=token,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.record_max_backoff)
            else:
                for key in failing:
                    self.problems.cleared(key, "recording outbox results", owner=token)
                return True

    async def reconcile(self, stuck: list[OutboundMessage]) -> None:
        """Settle rows left in ``sending`` by a crash: ask the channel, never resend blindly.

        Look-ups run concurrently (at most ``reconcile_concurrency``), each within
        ``reconcile_timeout``. One that fails or times out is tried again after a backoff
        (``[outbox] retry_backoff``, up to ``reconcile_max_backoff``): the row stays
        ``sending`` meanwhile, so it is neither sent again nor given up on. Only a channel
        saying it can never tell (``SendError`` of class PERMANENT) holds it for a person.
        """
        slots = asyncio.Semaphore(self.reconcile_concurrency)
        await asyncio.gather(*(self._reconcile_one(message, slots) for message in stuck))

    async def _reconcile_one(self, message: OutboundMessage, slots: asyncio.Semaphore) -> None:
        state = self._states.get(message.address.channel)
        if state is None:
            self.reconciling.discard(message.id)
            return  # a channel switched off since: the row waits for it
        backoff = [d.total_seconds() for d in self.settings.outbox.retry_backoff] or [60.0]
        failures = 0
        while not self._stopping:
            # The address's lock too: a new message to the same person (perhaps with the
            # same text, a question asked again) is sent and recorded before or after the
            # look-up, never during it, so its record is never taken for this row's.
            async with slots, state.lock_for(message.address.id):
                try:
                    async with asyncio.timeout(self.reconcile_timeout):
                        result = await state.channel.reconcile(message)
                except SendError as exc:
                    error: BaseException | None = exc
                    if exc.error_class == ErrorClass.PERMANENT:
                        logger.warning(
                            "outbox %s: cannot be reconciled (%s); held for staff "
                            "(panelbot db held)",
                            message.id,
                            exc.detail,
                        )
                        await self._write(
                            f"outbox {message.id} as held",
                            lambda conn, exc=exc: outbox_store.mark_final(
                                conn,
                                message.id,
                                status=OutboxStatus.HELD,
                                error=f"unreconciled: {exc.detail}",
                            ),
                        )
                        self.reconciling.discard(message.id)
                        return
                except Exception as exc:  # a failed or timed-out look-up: ask again later
                    error = exc
                else:
                    error = None
            if error is None:
                break
            failures += 1
            delay = min(backoff[min(failures - 1, len(backoff) - 1)], self.reconcile_max_backoff)
            reason = str(error) or type(error).__name__
            if isinstance(error, TimeoutError):
                reason = f"no answer within {self.reconcile_timeout:g} s"
            self.problems.failed(
                f"reconcile:{message.address.channel}",
                "outbox: rows left sending at the last stop cannot be looked up yet (%s); "
                "retrying with backoff, nothing is resent meanwhile",
                reason,
                owner=message.id,
            )
            await self._write(
                f"outbox {message.id}'s reconciliation error",
                lambda conn, reason=reason, failures=failures: outbox_store.note_error(
                    conn,
                    message.id,
                    f"reconciling: look-up failed {failures} times ({reason}); retrying",
                ),
                persist=False,
            )
            if not await self._pause(delay):
                return
        else:
            return
        self.problems.cleared(
            f"reconcile:{message.address.channel}", "reconciliation look-ups", owner=message.id
        )

        async def settle(conn: Any) -> None:
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

        await self._write(f"outbox {message.id}'s reconciliation", settle)
        self.reconciling.discard(message.id)
        self._wake.set()

    async def _run(self) -> None:
        poll = self.settings.outbox.poll_interval
        while not self._stopping:
            try:
                claimed = await self.dispatch_due()
            except Exception as exc:
                self.problems.failed(
                    f"pass:{type(exc).__name__}:{exc}",
                    "dispatcher pass failed (%s: %s); retrying",
                    type(exc).__name__,
                    exc,
                )
                claimed = 0
            else:
                for key in [k for k in self.problems.active() if k.startswith("pass:")]:
                    self.problems.cleared(key, "the dispatcher's passes")
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
        limit = self.settings.outbox.batch_size
        quiet_end = in_quiet_hours(self, now)
        states = {id(s): s for s in self._states.values()}.values()
        ready: list[tuple[_ChannelState, OutboundMessage]] = []
        claimed_total = 0
        async with self.db.transaction() as conn:
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
            task.add_done_callback(self._task_done)
        return claimed_total

    async def _send(self, state: _ChannelState, message: OutboundMessage) -> None:
        lock = state.lock_for(message.address.id)
        try:
            async with lock:
                outcome = await self._call_provider(state, message)
                if outcome is None:
                    return
                message, result = outcome
                # The provider's answer is in memory from here on: recording it is retried
                # until it succeeds (a full disk must not leave the row "sending").
                await self._write(
                    f"outbox {message.id}'s send result",
                    lambda conn: self._record(conn, state, message, result),
                )
            await self._after_send(message, result)
        except Exception as exc:
            # A database write before the provider call, or a plugin: the row stays as the
            # database has it (queued rows are claimed again, "sending" ones reconciled).
            self.problems.failed(
                f"send:{type(exc).__name__}:{exc}",
                "outbox %s: sending failed before the provider was asked (%s: %s)",
                message.id,
                type(exc).__name__,
                exc,
            )
        finally:
            state.pending -= 1
            self._wake.set()

    async def _requeued_if_stopping(self, message: OutboundMessage) -> bool:
        """Stopping: leave it queued for the next start rather than half-send on the way
        out (True, and the caller gives up on it); otherwise False."""
        if not self._stopping:
            return False
        await self._write(
            f"outbox {message.id} back to the queue",
            lambda conn: outbox_store.reschedule(
                conn, message.id, at=utcnow(), count_attempt=False
            ),
            persist=False,
        )
        return True

    async def _call_provider(
        self, state: _ChannelState, message: OutboundMessage
    ) -> tuple[OutboundMessage, SendResult | SendError] | None:
        """The checks, the pacing and the provider call; None when it was not made."""
        if await self._requeued_if_stopping(message):
            return None
        changed = await self._before_send(message)
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
            if await self._requeued_if_stopping(message):
                return None
            if await self._now_blocked(message):
                return None
            # The rate slot is taken last, right before the call, so that the
            # varying time of the checks above cannot bunch sends together.
            cost = state.channel.cost(message)
            await state.pacer.acquire(cost)
            try:
                if await self._requeued_if_stopping(message):
                    return None
                if await self._now_blocked(message, memory_only=True):
                    return None
                try:
                    result: SendResult | SendError = await state.channel.send(message)
                except SendError as exc:
                    result = exc
                except Exception as exc:  # a bug or an unexpected transport error: retry
                    logger.exception("outbox %s: unexpected send failure", message.id)
                    result = SendError(ErrorClass.RETRYABLE, f"{type(exc).__name__}: {exc}")
            finally:
                state.pacer.release(cost)
            if interval:
                state.last_to_address[message.address.id] = time.monotonic()
        return message, result

    async def apply_report(self, report: DeliveryReport) -> int | None:
        """A provider's status report (e.g. a Twilio status callback), never moving backwards.

        A final failure classified as opted-out or unreachable marks the panellist too, and
        stops anything of theirs still waiting here. Returns the outbox row id, or None for
        an unknown provider message id.
        """
        async with self.db.transaction() as conn:
            row_id = await outbox_store.apply_report(conn, report)
            if row_id is None or report.error_class is None:
                return row_id
            panellist_id = await outbox_store.panellist_of(conn, row_id)
            if panellist_id and await mark_undeliverable(conn, panellist_id, report.error_class):
                self.block(panellist_id)
        return row_id

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
            found = await panellist_store.status_of(self.db.conn, message.panellist_id)
            status = found or PanellistStatus.ERASED.value
        if status not in BLOCKED_STATUSES:
            return False
        await self._write(
            f"outbox {message.id} as cancelled",
            lambda conn: outbox_store.mark_final(
                conn, message.id, status=OutboxStatus.CANCELLED, error=f"panellist is {status}"
            ),
        )
        return True

    async def _record(
        self,
        conn: Any,
        state: _ChannelState,
        message: OutboundMessage,
        result: SendResult | SendError,
    ) -> None:
        """Record the provider's answer (inside the caller's transaction)."""
        settings = self.settings.outbox
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
        if message.panellist_id and await mark_undeliverable(
            conn, message.panellist_id, error.error_class
        ):
            self._blocked.add(message.panellist_id)
        logger.warning(
            "outbox %s failed (%s, code %s): %s",
            message.id,
            error.error_class.value,
            error.code,
            error.detail,
        )
