"""Each plugin hook, proved through the core that calls it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bot.app import Bot
from bot.config import Settings
from bot.engine.waves import launch
from bot.hookspecs import hookimpl
from bot.models import SignupDecision
from bot.plugins import load_plugins
from bot.results import survey_results
from tests.conftest import REPO, Chat, add_survey
from tests.staff_login import signed_in
from tests.webserver import serving

SURVEY = REPO / "tests" / "data" / "every-type.toml"


async def bot_with(settings: Settings, plugin: object, name: str = "probe") -> Bot:
    plugins = load_plugins()
    plugins.register(plugin, name=name)
    return await Bot.create(settings, plugins=plugins)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


async def test_hook_startup(settings: Settings) -> None:
    class Plugin(Recorder):
        @hookimpl
        async def panelbot_startup(self, bot: Bot) -> None:
            self.calls.append(("startup", bot.scheduler.aps.running))

    plugin = Plugin()
    bot = await bot_with(settings, plugin)
    await bot.start()
    await bot.stop()
    assert plugin.calls == [("startup", True)]  # called once the scheduler runs


async def test_hook_shutdown(settings: Settings) -> None:
    class Plugin(Recorder):
        @hookimpl
        def panelbot_shutdown(self, bot: Bot) -> None:
            self.calls.append(("shutdown", bot.db.conn is not None))

    plugin = Plugin()
    bot = await bot_with(settings, plugin)
    await bot.start()
    assert plugin.calls == []
    await bot.stop()
    assert plugin.calls == [("shutdown", True)]


async def test_hook_register_routes(settings: Settings) -> None:
    class Plugin:
        @hookimpl
        def panelbot_register_routes(self, bot: Bot) -> list[Route]:
            async def hello(request: Any) -> PlainTextResponse:
                return PlainTextResponse(f"hello from {bot.settings.bot.name}")

            return [Route("/admin/probe/hello", hello)]

    bot = await bot_with(settings, Plugin())
    try:
        async with serving(bot) as base, httpx.AsyncClient(base_url=base) as client:
            # Behind the staff login, as every plugin route not marked public.
            anonymous = await client.get("/admin/probe/hello")
            await signed_in(client, bot.db)
            response = await client.get("/admin/probe/hello")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/admin/login?next=")
        assert response.status_code == 200
        assert response.text == "hello from Test Panel"
    finally:
        await bot.stop()


async def test_hook_register_jobs(settings: Settings) -> None:
    ran: list[str] = []

    class Plugin:
        @hookimpl
        def panelbot_register_jobs(self, bot: Bot) -> None:
            async def job() -> None:
                ran.append("ran")

            bot.scheduler.add_job(
                job, "interval", seconds=0.1, id="probe:job", replace_existing=True
            )

    import asyncio

    bot = await bot_with(settings, Plugin())
    await bot.start()
    try:
        for _ in range(50):
            if ran:
                break
            await asyncio.sleep(0.05)
    finally:
        await bot.stop()
    assert ran


async def test_hook_message_dirs(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "plugin_messages"
    (folder / "en").mkdir(parents=True)
    (folder / "en" / "welcome.txt.j2").write_text("Hi from the plugin for {{ panel_name }}!")

    class Plugin:
        @hookimpl
        def panelbot_message_dirs(self, bot: Bot) -> list[Path]:
            return [folder]

    bot = await bot_with(settings, Plugin())
    try:
        replies = await Chat(bot).say("sim:alice", "hello")
        assert replies[0].startswith("Hi from the plugin for Test Panel!")
        assert "Reply YES to join" in replies[0]  # the core's own templates still apply
    finally:
        await bot.stop()


async def test_hook_resolve_locale(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    seen: list[str] = []

    class Plugin:
        @hookimpl
        async def panelbot_resolve_locale(
            self, bot: Bot, panellist: Any, text: str, tx: Any
        ) -> str | None:
            seen.append(text)
            # Inside the message's transaction, handed over: the new person is not written
            # yet, and a read through tx sees what this transaction wrote before (its inbound
            # row), which a read connection would not.
            rows = await tx.execute_fetchall(
                "SELECT count(*) FROM inbound_messages WHERE text = ?", (text,)
            )
            assert rows[0][0] == 1
            return "cy" if "bore da" in text.lower() else None

    settings = make_settings(tmp_path, bot={"locales": ["en", "cy"]})
    bot = await bot_with(settings, Plugin())
    try:
        await Chat(bot).say("sim:alice", "Bore da")
        await Chat(bot).say("sim:bob", "Good morning")
        rows = await bot.db.fetchall(
            "SELECT a.address, p.locale FROM panellists p JOIN addresses a ON a.panellist_id = p.id"
        )
        assert {r["address"]: r["locale"] for r in rows} == {"alice": "cy", "bob": "en"}
        assert seen == ["Bore da", "Good morning"]
    finally:
        await bot.stop()


async def test_hook_screen_signup(settings: Settings) -> None:
    class Plugin:
        @hookimpl
        def panelbot_screen_signup(self, bot: Bot, panellist: Any) -> SignupDecision | None:
            age = panellist.demographics.get("age_band")
            if age == "16-24":
                return SignupDecision.WAITLIST
            if age == "75+":
                return SignupDecision.DECLINE
            return None

    class Lenient:
        @hookimpl
        def panelbot_screen_signup(self, bot: Bot, panellist: Any) -> SignupDecision:
            return SignupDecision.ACCEPT

    plugins = load_plugins()
    plugins.register(Plugin(), name="strict")
    plugins.register(Lenient(), name="lenient")
    bot = await Bot.create(settings, plugins=plugins)
    try:
        chat = Chat(bot)
        assert "waiting list" in (await chat.join("sim:young", ("1", "1")))[0]
        assert "not taking new members" in (await chat.join("sim:old", ("7", "1")))[0]
        assert "you have joined" in (await chat.join("sim:mid", ("3", "1")))[0]
        rows = await bot.db.fetchall(
            "SELECT a.address, p.status FROM panellists p JOIN addresses a ON a.panellist_id = p.id"
        )
        assert {r["address"]: r["status"] for r in rows} == {"young": "pending", "mid": "active"}
    finally:
        await bot.stop()


async def test_hook_select_sample(settings: Settings) -> None:
    class Plugin:
        @hookimpl
        def panelbot_select_sample(
            self, bot: Bot, survey: Any, wave: Any, eligible: list, size: int | None
        ) -> list[int]:
            # Only women, and an id that is not eligible (which the core must drop).
            return [p.id for p in eligible if p.demographics.get("sex") == "female"] + [999]

    bot = await bot_with(settings, Plugin())
    try:
        chat = Chat(bot)
        await chat.join("sim:a", ("1", "1"))
        await chat.join("sim:b", ("1", "2"))
        await chat.join("sim:c", ("1", "1"))
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type", sample=1)
        rows = await bot.db.fetchall(
            "SELECT a.address FROM invitations i "
            "JOIN addresses a ON a.panellist_id = i.panellist_id"
        )
        assert sorted(r["address"] for r in rows) == ["a", "c"]
    finally:
        await bot.stop()


async def test_hook_survey_completed(settings: Settings) -> None:
    class Plugin(Recorder):
        @hookimpl
        async def panelbot_survey_completed(
            self, bot: Bot, panellist: Any, survey: Any, answers: dict
        ) -> None:
            self.calls.append((survey.id, answers))

    plugin = Plugin()
    bot = await bot_with(settings, plugin)
    try:
        chat = Chat(bot)
        await chat.join("sim:a")
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        for reply in ("1", "5", "yes", "2", "all good"):
            await chat.say("sim:a", reply)
        assert plugin.calls == [
            (
                "every-type",
                {"ease": "easy", "score": 5, "online": "yes", "days": 2, "comment": "all good"},
            )
        ]
    finally:
        await bot.stop()


async def test_hook_results_weights(settings: Settings) -> None:
    class Plugin:
        @hookimpl
        def panelbot_results_weights(
            self, bot: Bot, survey: Any, respondents: list[dict]
        ) -> dict[int, float]:
            # Count women three times as much as men.
            return {
                r["panellist_id"]: 3.0 if r["demographics"].get("sex") == "female" else 1.0
                for r in respondents
            }

    bot = await bot_with(settings, Plugin())
    try:
        chat = Chat(bot)
        await chat.join("sim:woman", ("1", "1"))
        await chat.join("sim:man", ("1", "2"))
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        await chat.say("sim:woman", "1")
        await chat.say("sim:man", "3")
        plain = await survey_results(bot, "every-type")
        weighted = await survey_results(bot, "every-type", weighted=True)
        by_sex = await survey_results(bot, "every-type", by="sex")
    finally:
        await bot.stop()

    def shares(data: dict) -> dict[str, float]:
        ease = data["questions"][0]
        return {o["id"]: o["percent"] for o in ease["options"]}

    assert shares(plain) == {"easy": 50.0, "ok": 0.0, "hard": 50.0}
    assert shares(weighted) == {"easy": 75.0, "ok": 0.0, "hard": 25.0}
    groups = by_sex["questions"][0]["by"]
    assert groups["female"]["options"][0]["percent"] == 100.0
    assert groups["male"]["options"][2]["percent"] == 100.0


async def test_hook_locales(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, bot={"locales": ["en", "cy", "pl"]})

    class OnlyWelsh:
        @hookimpl
        def panelbot_locales(self, bot: Any, settings: Settings) -> list[str]:
            return ["cy", "fr"]  # French is not configured: dropped

    plugins = load_plugins(disabled=["translations"])
    plugins.register(OnlyWelsh(), name="welsh_only")
    bot = await Bot.create(settings, plugins=plugins)
    try:
        assert bot.locales == ["en", "cy"]
        menu = await Chat(bot).say("sim:alice", "hello")
        assert "1 English" in menu[0] and "2 Cymraeg" in menu[0] and "Polski" not in menu[0]
    finally:
        await bot.stop()
    # With no translations plugin at all, the panel is English only.
    bare = await Bot.create(settings, plugins=load_plugins(disabled=["translations"]))
    try:
        assert bare.locales == ["en"]
        first = await Chat(bare).say("sim:bob", "hello")
        assert "Reply YES to join" in first[0]
    finally:
        await bare.stop()
