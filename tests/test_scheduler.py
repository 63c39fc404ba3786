"""The scheduler's sync: wave steps become jobs, also while the database is locked.

Real SQLite files; the lock is taken by another connection, as another process (a backup,
an operator's ``sqlite3`` shell, a long write) would take it.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta

import pytest

from bot.app import Bot
from bot.engine.waves import launch
from bot.models import utcnow
from tests.conftest import REPO, add_survey

SURVEY = REPO / "tests" / "data" / "every-type.toml"


async def scheduled_wave(bot: Bot) -> int:
    await add_survey(bot, SURVEY)
    return await launch(bot, "every-type", at=utcnow() + timedelta(days=1))


async def test_sync_schedules_a_wave_while_another_connection_holds_the_write_lock(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync only reads: a write lock held elsewhere (for longer than the busy timeout)
    neither fails it nor makes it wait."""
    wave_id = await scheduled_wave(bot)
    other = sqlite3.connect(bot.db.path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("UPDATE waves SET status = status")
        with caplog.at_level(logging.INFO):
            await bot.scheduler.sync()
        assert bot.scheduler.aps.get_job(f"wave:{wave_id}:open") is not None
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [r.getMessage() for r in caplog.records if r.name == "bot.scheduler"] == []
