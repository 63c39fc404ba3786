"""A plugin inside the engine's write transaction: panelbot_screen_signup's ``tx``.

Real parts: a real SQLite file with the plugin's own table from its own migration, the
engine's group commit (sign-ups sent at once share transactions), plugins registered as a
third party's would be.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import Settings
from bot.models import SignupDecision
from bot.plugin_api import hookimpl
from bot.plugins import load_plugins
from bot.storage import NestedTransactionError
from tests.conftest import Chat

PLACES = 2


def with_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "places_migrations"
    folder.mkdir()
    (folder / "0001_places.sql").write_text(
        "CREATE TABLE places_taken (panellist_id INTEGER PRIMARY KEY, age_band TEXT NOT NULL);\n"
    )
    return folder


class Places:
    """Counts the places taken in an age band and reserves one, through ``tx``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def panelbot_migrations(self) -> Path:
        return self.folder

    @hookimpl
    async def panelbot_screen_signup(self, bot: Bot, panellist: Any, tx: Any) -> Any:
        band = panellist.demographics.get("age_band")
        [row] = await tx.execute_fetchall(
            "SELECT COUNT(*) AS taken FROM places_taken WHERE age_band = ?", (band,)
        )
        await asyncio.sleep(0)  # let other sign-ups run meanwhile, if they could
        if row["taken"] >= PLACES:
            return SignupDecision.WAITLIST
        await tx.execute(
            "INSERT INTO places_taken (panellist_id, age_band) VALUES (?, ?)", (panellist.id, band)
        )
        return None


class Nested:
    """Wrong: opens a transaction of its own inside the engine's."""

    @hookimpl
    async def panelbot_screen_signup(self, bot: Bot, panellist: Any) -> Any:
        async with bot.db.transaction() as mine:
            await mine.execute("SELECT 1")
        return SignupDecision.DECLINE


class HalfWay:
    """Writes through tx, then fails: what it wrote must not stay."""

    @hookimpl
    async def panelbot_screen_signup(self, bot: Bot, panellist: Any, tx: Any) -> Any:
        await tx.execute(
            "INSERT INTO places_taken (panellist_id, age_band) VALUES (?, 'half-way')",
            (panellist.id + 1000,),
        )
        raise RuntimeError("half-way")


async def bot_with(settings: Settings, **plugins: object) -> Bot:
    manager = load_plugins(entry_points=False)
    for name, plugin in plugins.items():
        manager.register(plugin, name=name)
    return await Bot.create(settings, plugins=manager)


async def statuses(bot: Bot) -> dict[str, str]:
    rows = await bot.db.fetchall(
        "SELECT a.address, p.status FROM panellists p JOIN addresses a ON a.panellist_id = p.id"
    )
    return {r["address"]: r["status"] for r in rows}


async def test_concurrent_sign_ups_never_take_more_places_than_there_are(
    settings: Settings, tmp_path: Path
) -> None:
    bot = await bot_with(settings, places=Places(with_migrations(tmp_path)))
    try:
        chat = Chat(bot)
        names = [f"sim:p{i}" for i in range(6)]
        for name in names:
            await chat.say(name, "Hello")
            await chat.say(name, "yes")
            await chat.say(name, "3")  # every one in the same age band
        # The last answer of all six at once: their screens share transactions (group
        # commit) or wait for each other's; either way each sees the places already taken.
        last = await asyncio.gather(*(chat.say(name, "1") for name in names))
        joined = sum(any("you have joined" in r for r in replies) for replies in last)
        waiting = sum(any("waiting list" in r for r in replies) for replies in last)
        assert (joined, waiting) == (PLACES, len(names) - PLACES)
        [row] = await bot.db.fetchall("SELECT COUNT(*) AS n FROM places_taken")
        assert row["n"] == PLACES
        assert sorted((await statuses(bot)).values()) == ["active"] * PLACES + ["pending"] * 4
    finally:
        await bot.stop()


async def test_a_plugin_opening_its_own_transaction_fails_at_once_and_sign_up_completes(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await bot_with(settings, nested=Nested())
    try:
        with caplog.at_level(logging.ERROR, logger="bot.plugins"):
            # A guard only: a nested transaction that waited would wait for ever.
            async with asyncio.timeout(60):
                replies = await Chat(bot).join("sim:ann", ("3", "1"))
        assert "you have joined" in replies[-1]  # its DECLINE never counted: it failed
        assert await statuses(bot) == {"ann": "active"}
        [record] = [r for r in caplog.records if "failed in panelbot_screen_signup" in r.message]
        assert record.exc_info is not None
        error = record.exc_info[1]
        assert isinstance(error, NestedTransactionError)
        assert "a transaction is already open in this task" in str(error)
    finally:
        await bot.stop()


async def test_a_plugin_that_fails_leaves_nothing_it_wrote_and_the_others_writes_stay(
    settings: Settings, tmp_path: Path
) -> None:
    bot = await bot_with(settings, places=Places(with_migrations(tmp_path)), half=HalfWay())
    try:
        replies = await Chat(bot).join("sim:bo", ("3", "1"))
        assert "you have joined" in replies[-1]
        rows = await bot.db.fetchall("SELECT age_band FROM places_taken")
        assert [r["age_band"] for r in rows] == ["35-44"]  # the half-way row is gone
        assert await statuses(bot) == {"bo": "active"}
    finally:
        await bot.stop()
