"""panelbot_handle_reply: a plugin answers a text sent outside any survey, through the engine."""

from __future__ import annotations

from typing import Any

from bot.app import Bot
from bot.config import Settings
from bot.engine.waves import launch
from bot.hookspecs import hookimpl
from bot.plugins import load_plugins
from tests.conftest import REPO, Chat, add_survey

SURVEY = REPO / "tests" / "data" / "every-type.toml"
NO_SURVEY = "There is no survey open for you just now"


class Echo:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    async def panelbot_handle_reply(self, panellist: Any, text: str, tx: Any) -> str | None:
        self.seen.append(text)
        if text.lower() != "ping":
            return None
        # Written through the engine's transaction: committed with the message.
        await tx.execute(
            "INSERT INTO audit_log (at, actor, action, panellist_id) "
            "VALUES ('2026-01-01T00:00:00+00:00', 'test', 'pinged', ?)",
            (panellist.id,),
        )
        return f"pong {panellist.id}"


class Broken:
    @hookimpl(tryfirst=True)
    async def panelbot_handle_reply(self, panellist: Any, text: str, tx: Any) -> str:
        await tx.execute(
            "INSERT INTO audit_log (at, actor, action, panellist_id) "
            "VALUES ('2026-01-01T00:00:00+00:00', 'test', 'broken', ?)",
            (panellist.id,),
        )
        raise RuntimeError("plugin bug")


async def test_hook_handle_reply(settings: Settings) -> None:
    echo = Echo()
    plugins = load_plugins(entry_points=False)
    plugins.register(echo, name="echo")
    plugins.register(Broken(), name="broken")
    bot = await Bot.create(settings, plugins=plugins)
    try:
        chat = Chat(bot)
        await chat.join("sim:a")
        echo.seen.clear()
        [reply] = await chat.say("sim:a", "ping")
        row = await bot.db.fetchone("SELECT id FROM panellists")
        assert reply == f"pong {row['id']}"
        # The broken plugin (asked first) left nothing; the echo plugin's write stayed.
        actions = [r["action"] for r in await bot.db.fetchall("SELECT action FROM audit_log")]
        assert "pinged" in actions and "broken" not in actions
        # No opinion: the core's own reply.
        [reply] = await chat.say("sim:a", "hello there")
        assert NO_SURVEY in reply
        # Keywords never reach the hook.
        await chat.say("sim:a", "HELP")
        assert echo.seen == ["ping", "hello there"]
        # While a survey waits for an answer, the text is an answer, not a reply to a plugin.
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        [reask] = await chat.say("sim:a", "ping")
        assert echo.seen == ["ping", "hello there"]
        assert "pong" not in reask and NO_SURVEY not in reask
        session = await bot.db.fetchone("SELECT misses FROM survey_sessions")
        assert session["misses"] == 1  # "ping" was taken as a wrong answer, asked again
    finally:
        await bot.stop()


async def test_pending_people_never_reach_the_hook(settings: Settings) -> None:
    echo = Echo()
    plugins = load_plugins(entry_points=False)
    plugins.register(echo, name="echo")
    bot = await Bot.create(settings, plugins=plugins)
    try:
        chat = Chat(bot)
        await chat.say("sim:b", "Hello")  # not yet joined
        await chat.say("sim:b", "ping")
        assert echo.seen == []
    finally:
        await bot.stop()
