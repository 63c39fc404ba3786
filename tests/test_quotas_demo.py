"""The demo panel against its illustrative population: gaps to show, postcodes to derive."""

from __future__ import annotations

import json
from pathlib import Path

from bot.app import Bot
from bot.demo import load_examples, settings_for
from tests.conftest import Chat
from tests.test_cli import run


async def test_demo_shows_gaps_and_derives_fields_from_a_postcode(tmp_path: Path) -> None:
    config, settings = settings_for(tmp_path / "demo", 18080)
    bot = await Bot.create(settings)
    try:
        await load_examples(bot, settings)
        chat = Chat(bot)
        await chat.say("sim:newcomer", "hello")
        await chat.say("sim:newcomer", "1")  # English
        await chat.say("sim:newcomer", "yes")
        for answer in ("2", "1", "3"):  # age band, sex, ethnicity (asian)
            asked = await chat.say("sim:newcomer", answer)
        assert asked[0].startswith("What is your postcode?")
        joined = await chat.say("sim:newcomer", "nv31ln")
        assert "you have joined" in joined[0]
        row = await bot.db.fetchone(
            "SELECT p.demographics FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
            "WHERE a.address = 'newcomer'"
        )
        found = json.loads(row["demographics"])
        assert (found["locality"], found["imd_quintile"]) == ("eastmoor", "1")
    finally:
        await bot.stop()

    result = run(config, "quotas", "report", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["active"], report["panel_size_target"]) == (241, 300)
    imd = {row["value"]: row for row in report["fields"]["imd_quintile"]}
    assert imd["1"]["gap_pp"] < -5 and imd["1"]["needed_for_target"] > 0
    asian = next(r for r in report["fields"]["ethnicity"] if r["value"] == "asian")
    assert asian["gap_pp"] < -3
    assert run(config, "config", "check").returncode == 0


async def test_a_second_demo_start_keeps_the_panel_as_people_left_it(tmp_path: Path) -> None:
    async def start() -> Bot:
        settings = settings_for(tmp_path / "demo", 18080)[1]
        bot = await Bot.create(settings)
        await load_examples(bot, settings)
        return bot

    async def imported(bot: Bot) -> int:
        row = await bot.db.fetchone("SELECT count(*) AS n FROM audit_log WHERE action = 'imported'")
        return row["n"]

    async def locale(bot: Bot) -> str:
        row = await bot.db.fetchone(
            "SELECT p.locale FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
            "WHERE a.address = '+447400100100'"
        )
        return row["locale"]

    bot = await start()
    try:
        assert await imported(bot) == 240
        assert await locale(bot) == "en"
        chat = Chat(bot)
        await chat.say("sms:+447400100100", "LANGUAGE")
        await chat.say("sms:+447400100100", "2")  # Cymraeg
        assert await locale(bot) == "cy"
    finally:
        await bot.stop()
    bot = await start()
    try:
        assert await locale(bot) == "cy"  # not put back to the example file's "en"
        assert await imported(bot) == 240  # no new "imported" audit rows
    finally:
        await bot.stop()
