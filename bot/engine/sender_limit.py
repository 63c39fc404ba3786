"""The per-sender limit: past ``[bot] max_inbound_per_minute`` messages from one address in
any minute, messages are stored but not answered, so nobody can run up SMS costs (or the
engine's time) by writing in a loop. STOP is still honoured.

Counted in the main process, which handles every inbound message (web processes only store
them), by the time each message was received; a restart starts the count afresh.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from datetime import datetime, timedelta

from bot.models import Address
from bot.privacy import mask

logger = logging.getLogger(__name__)

WINDOW = timedelta(minutes=1)
# Addresses whose last message is older than the window are forgotten every so many checks.
PRUNE_EVERY = 1000
# Decisions remembered by message id, for a batch replayed message by message.
REMEMBERED = 4096


class SenderLimit:
    """At most ``per_minute`` answered messages per address in any 60 seconds (0: no limit).

    Every message counts, answered or not: someone writing more than the limit every minute
    stays unanswered until they slow down. A message seen again (a batch replayed one by one
    after a failure) gets the same decision and is not counted twice.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        # The times of the last per_minute + 1 messages of each address: the limit is passed
        # when all of them fall within one window.
        self._seen: dict[Address, deque[datetime]] = {}
        self._logged: dict[Address, datetime] = {}
        self._decided: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._checks = 0

    def allow(self, address: Address, at: datetime, message_id: str = "") -> bool:
        """Count a message from ``address`` received ``at``; whether it may be answered."""
        if self.per_minute <= 0:
            return True
        key = (address.channel, message_id)
        if message_id and key in self._decided:
            return self._decided[key]
        self._checks += 1
        if self._checks % PRUNE_EVERY == 0:
            self._prune(at)
        times = self._seen.get(address)
        if times is None:
            times = self._seen[address] = deque(maxlen=self.per_minute + 1)
        times.append(at)
        allowed = len(times) <= self.per_minute or at - times[0] >= WINDOW
        if message_id:
            self._decided[key] = allowed
            if len(self._decided) > REMEMBERED:
                self._decided.popitem(last=False)
        if allowed:
            return True
        last = self._logged.get(address)
        if last is None or at - last >= WINDOW:
            self._logged[address] = at
            logger.warning(
                "%s:%s sent more than %d messages in a minute: storing them without answering",
                address.channel,
                mask(address.id),
                self.per_minute,
            )
        return False

    def _prune(self, now: datetime) -> None:
        cutoff = now - WINDOW
        for address in [a for a, t in self._seen.items() if not t or t[-1] <= cutoff]:
            del self._seen[address]
        for address in [a for a, at in self._logged.items() if at <= cutoff]:
            del self._logged[address]
