"""Shared fixtures: a real SQLite file per test, a real Bot, and a chat helper."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import Settings, settings_from_dict
from bot.models import Address, InboundMessage

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SURVEYS = REPO / "examples" / "surveys"

FIELDS = [
    {
        "name": "age_band",
        "values": ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"],
        "text": {"en": "Which age group are you in?"},
    },
    {
        "name": "sex",
        "values": ["female", "male", "other", "prefer_not_to_say"],
        "text": {"en": "What is your sex?"},
    },
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own environment must not leak into what a test loads.
    for name in list(os.environ):
        if name.startswith(("PANELBOT_", "TWILIO_", "TELEGRAM_")):
            monkeypatch.delenv(name)


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings on a database in tmp_path; keyword arguments replace or extend sections."""
    data: dict[str, Any] = {
        "bot": {"name": "Test Panel", "database": "panel.db", "quiet_hours": False},
        "panel": {"fields": FIELDS},
        # Off by default outside the demo; most tests speak as sim: people.
        "channels": {"simulator": {"enabled": True}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return settings_from_dict(data, base_dir=tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def bot(settings: Settings) -> AsyncIterator[Bot]:
    instance = await Bot.create(settings)
    try:
        yield instance
    finally:
        await instance.stop()


class Chat:
    """Talks to the engine as a panellist and reads back the replies it queued."""

    _ids = itertools.count(1)

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def say(self, address: str, text: str) -> list[str]:
        message = InboundMessage(Address.parse(address), text, f"test-{next(self._ids)}")
        result = await self.bot.handle(message)
        if not result.outbox_ids:
            return []
        marks = ",".join("?" * len(result.outbox_ids))
        rows = await self.bot.db.fetchall(
            f"SELECT text FROM outbox WHERE id IN ({marks}) ORDER BY id", result.outbox_ids
        )
        return [r["text"] for r in rows]

    async def join(self, address: str, answers: tuple[str, ...] = ("1", "1")) -> list[str]:
        """Sign up with consent and the given demographic replies; returns the last replies."""
        await self.say(address, "Hello")
        replies = await self.say(address, "yes")
        for answer in answers:
            replies = await self.say(address, answer)
        return replies


@pytest.fixture
def chat(bot: Bot) -> Chat:
    return Chat(bot)


async def add_survey(bot: Bot, path: Path) -> int:
    from bot.storage import surveys as survey_store
    from bot.surveys.loader import load_survey_file

    async with bot.db.transaction() as conn:
        stored, _ = await survey_store.add(conn, load_survey_file(path))
    return stored.row_id
