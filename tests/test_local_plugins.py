"""A staff member's one-file plugin in plugins.d, end to end through the simulator over HTTP.

The plugin counts and reserves a place inside ``panelbot_screen_signup`` with the ``tx`` it is
handed (its own table, from its own migration), so a full age band puts newcomers on the
waiting list; another opens a transaction of its own there, and gets a clear error at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.config import dump_toml, load_settings
from tests.conftest import FIELDS
from tests.webserver import serving

QUOTA_PLUGIN = '''
"""Two places per age band; the rest wait."""

from pathlib import Path

from bot.plugin_api import SignupDecision, hookimpl

PLACES_PER_BAND = 2


@hookimpl
def panelbot_migrations():
    return Path(__file__).parent / "quota_check_migrations"


@hookimpl
async def panelbot_screen_signup(bot, panellist, tx):
    band = panellist.demographics.get("age_band")
    [row] = await tx.execute_fetchall(
        "SELECT COUNT(*) AS taken FROM quota_places WHERE age_band = ?", (band,)
    )
    if row["taken"] >= PLACES_PER_BAND:
        return SignupDecision.WAITLIST
    await tx.execute(
        "INSERT INTO quota_places (panellist_id, age_band) VALUES (?, ?)", (panellist.id, band)
    )
    return None
'''

QUOTA_MIGRATION = """
CREATE TABLE quota_places (
    panellist_id INTEGER PRIMARY KEY,
    age_band TEXT NOT NULL
);
"""

NESTED_PLUGIN = """
from bot.plugin_api import hookimpl


@hookimpl
async def panelbot_screen_signup(bot, panellist):
    async with bot.db.transaction() as mine:  # wrong: the engine's transaction is open
        await mine.execute("SELECT 1")
"""


def write_panel(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "plugins.d"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    config = tmp_path / "panelbot.toml"
    config.write_text(
        dump_toml(
            {
                "bot": {"name": "Local Panel", "database": "panel.db", "quiet_hours": False},
                "panel": {"fields": FIELDS},
                "channels": {"simulator": {"enabled": True}},
                "plugins": {"directories": ["plugins.d"]},
            }
        )
    )
    return config


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[tuple[Bot, str]]:
    bot = await Bot.create(load_settings(config))
    try:
        async with serving(bot) as url:
            yield bot, url
    finally:
        await bot.stop()


async def sign_up(url: str, name: str, age_choice: str) -> str:
    """A new person's whole sign-up over the simulator API, as its own browser; last reply."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        replies: list[str] = []
        for text in ("hello", "yes", age_choice, "1"):
            response = await client.post(
                "/simulator/api/messages", json={"from": f"sim:{name}", "text": text}
            )
            assert response.status_code == 200, response.text
            replies = response.json()["replies"]
        return replies[-1] if replies else ""


async def statuses(bot: Bot) -> dict[str, str]:
    rows = await bot.db.fetchall(
        "SELECT a.address, p.status FROM panellists p JOIN addresses a ON a.panellist_id = p.id"
    )
    return {r["address"]: r["status"] for r in rows}


async def test_a_local_plugin_counts_and_reserves_places_inside_the_signup(
    tmp_path: Path,
) -> None:
    config = write_panel(
        tmp_path,
        {
            "quota_check.py": QUOTA_PLUGIN,
            "quota_check_migrations/0001_places.sql": QUOTA_MIGRATION,
        },
    )
    async with running(config) as (bot, url):
        assert "you have joined" in await sign_up(url, "ann", "3")
        # Three more in the same band at once: one place left, and never two taken.
        last = await asyncio.gather(*(sign_up(url, name, "3") for name in ("bo", "cy", "di")))
        assert sorted("you have joined" in reply for reply in last) == [False, False, True]
        assert sum("waiting list" in reply for reply in last) == 2
        # Another band has its own places.
        assert "you have joined" in await sign_up(url, "ed", "5")

        places = await bot.db.fetchall(
            "SELECT age_band, COUNT(*) AS n FROM quota_places GROUP BY 1"
        )
        assert {r["age_band"]: r["n"] for r in places} == {"35-44": 2, "55-64": 1}
        found = await statuses(bot)
        assert sorted(found.values()) == ["active", "active", "active", "pending", "pending"]
        assert found["ann"] == found["ed"] == "active"


async def test_a_local_plugin_opening_a_nested_transaction_gets_a_clear_error_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_panel(tmp_path, {"nested.py": NESTED_PLUGIN})
    async with running(config) as (bot, url):
        with caplog.at_level(logging.ERROR, logger="bot.plugins"):
            # A hang would show as this guard failing the test, not as a slow pass.
            reply = await asyncio.wait_for(sign_up(url, "ann", "3"), timeout=60)

        assert "you have joined" in reply  # the plugin's failure is its own
        assert (await statuses(bot)) == {"ann": "active"}

    [record] = [r for r in caplog.records if "failed in panelbot_screen_signup" in r.getMessage()]
    assert record.getMessage() == "plugin nested failed in panelbot_screen_signup"
    error: Any = record.exc_info[1] if record.exc_info else None
    assert type(error).__name__ == "NestedTransactionError"
    assert "already open" in str(error)
