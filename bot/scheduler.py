"""APScheduler 3 in the bot's event loop, with wave jobs rebuilt from the database.

The database is the truth: jobs live in memory and a sync job re-reads the waves table
every few seconds (and at start), so a wave launched by the CLI while the bot runs is picked
up, and a restart neither loses a due reminder nor repeats one (each step records that it
ran in the same transaction as the messages it queues).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.models import utcnow
from bot.storage import surveys as survey_store
from bot.trouble import Trouble, storage_error

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.storage.db import Database

logger = logging.getLogger(__name__)

SYNC_SECONDS = 3.0
# The database's write-ahead log is emptied this often, waiting at most CHECKPOINT_WAIT
# seconds for other connections (the engine waits meanwhile).
CHECKPOINT_SECONDS = 60.0
CHECKPOINT_WAIT = 0.5
PRUNE_FIRST_AFTER = timedelta(minutes=1)


# Runs one step ("open", "remind" or "close") of a wave: the Bot's run_wave_step.
WaveStep = Callable[[str, int], Awaitable[None]]


class Scheduler:
    """Given only what it uses: the database, the settings, and what runs a wave's step."""

    def __init__(self, db: Database, settings: Settings, run_wave_step: WaveStep) -> None:
        self.db = db
        self.settings = settings
        self.run_wave_step = run_wave_step
        self.aps = AsyncIOScheduler(
            timezone=settings.bot.timezone,
            # A job that is late (the bot was down) still runs, once.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        # The database busy or locked a moment (a long write, a backup, an operator's
        # lock): the next sync, SYNC_SECONDS later, tries again. One line, no traceback.
        self.sync_trouble = Trouble(logger, "scheduler: the waves could not be read")
        self._bad_waves: set[tuple[int, str]] = set()

    def add_job(self, *args, **kwargs):
        """Plugins add their jobs here (``panelbot_register_jobs``)."""
        return self.aps.add_job(*args, **kwargs)

    async def start(self) -> None:
        await self.sync()
        self.aps.add_job(
            self.sync, "interval", seconds=SYNC_SECONDS, id="panelbot:sync", replace_existing=True
        )
        # Retention: once a day, and once soon after each start (a bot restarted daily
        # would otherwise never reach the daily run).
        self.aps.add_job(
            self.prune,
            "interval",
            days=1,
            next_run_time=utcnow() + PRUNE_FIRST_AFTER,
            id="panelbot:retention",
            replace_existing=True,
        )
        self.aps.add_job(
            self.checkpoint,
            "interval",
            seconds=CHECKPOINT_SECONDS,
            id="panelbot:checkpoint",
            replace_existing=True,
        )
        self.aps.start()

    async def prune(self) -> None:
        """Delete message texts older than ``[privacy] keep_messages_for`` (answers stay)."""
        from bot.panel import prune_messages

        try:
            await prune_messages(self.db, self.settings.privacy.keep_messages_for)
        except Exception:
            logger.exception("retention: pruning old messages failed; trying again tomorrow")

    async def checkpoint(self) -> None:
        """Empty the database's write-ahead log, so that what an erasure or the retention
        job removed does not linger in old log frames (SQLite's own checkpoints leave them).

        First, clear what sends in flight at an erasure recorded since (provider ids)."""
        from bot.storage.panel_data import scrub_erased_stragglers

        try:
            await scrub_erased_stragglers(self.db)
            if not await self.db.truncate_log(wait=CHECKPOINT_WAIT):
                logger.debug("checkpoint: another connection was busy; next time")
        except Exception:
            logger.exception("checkpoint failed")

    async def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)

    def _schedule(self, job_id: str, when, func, *args) -> None:
        if self.aps.get_job(job_id) is None:
            # Added meanwhile (a wave's open step syncing too): it is there, as wanted.
            with contextlib.suppress(ConflictingIdError):
                self.aps.add_job(func, "date", run_date=when, args=args, id=job_id)

    async def sync(self) -> None:
        """Make sure every pending wave step has a job (due ones run at once).

        Only reads, outside any write transaction: a sync never waits for the engine's
        writes, nor they for it. Scheduled waves are read before open ones, so a wave that
        opens in between is seen at least once. The database busy or locked is expected
        now and then: one line, and the next sync tries again.
        """
        try:
            pending = await survey_store.waves(self.db.conn, status="scheduled")
            opened = await survey_store.waves(self.db.conn, status="open")
        except Exception as exc:
            if storage_error(exc) is None:
                logger.exception("scheduler: sync failed; trying again in %.0f s", SYNC_SECONDS)
            else:
                self.sync_trouble.failed(exc)
            return
        self.sync_trouble.ok()
        now = utcnow()
        for wave in pending:
            self._schedule_wave(wave, "open", wave.opens_at, now)
        for wave in opened:
            if wave.reminder_at and wave.reminded_at is None:
                self._schedule_wave(wave, "remind", wave.reminder_at, now)
            self._schedule_wave(wave, "close", wave.closes_at, now)

    def _schedule_wave(self, wave, step: str, when, now) -> None:
        """One step's job; a wave whose step cannot be scheduled is logged (with a
        traceback, once) and does not keep the other waves from being scheduled."""
        try:
            self._schedule(f"wave:{wave.id}:{step}", max(when, now), self._run, step, wave.id)
        except Exception:
            if (wave.id, step) not in self._bad_waves:
                self._bad_waves.add((wave.id, step))
                logger.exception(
                    "scheduler: wave %s: its %s step cannot be scheduled", wave.id, step
                )

    async def _run(self, step: str, wave_id: int) -> None:
        try:
            await self.run_wave_step(step, wave_id)
            if step == "open":
                await self.sync()
        except Exception:
            logger.exception("wave %s: %s failed", wave_id, step)
