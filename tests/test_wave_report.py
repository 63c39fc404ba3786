"""Cost and response per wave (issue 12 part 6): bot/wave_report.py through ``survey results``
(table and JSON). A real SQLite file, the real engine and the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import Bot
from bot.engine.waves import launch
from bot.panel import import_parsed
from bot.panel_csv import parse_panel_csv
from bot.sms import encode_info
from bot.wave_report import survey_wave_reports
from tests.conftest import REPO, Chat, add_survey, make_settings

SURVEY = REPO / "tests" / "data" / "every-type.toml"
FIELDS = [{"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}}]
SMS_PRICE = 0.05
WHATSAPP_PRICE = 0.01
FIELDS_SHARES = {"female": 0.5, "male": 0.5}

CONFIG = f"""
[bot]
name = "Cost Panel"
database = "panel.db"
quiet_hours = false
[channels.simulator]
enabled = true
[channels.twilio]
sms_price_per_segment = {SMS_PRICE}
whatsapp_price_per_message = {WHATSAPP_PRICE}
[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "Sex?"
[plugins.quotas]
panel_size_target = 10000
[plugins.quotas.population.sex]
female = 0.5
male = 0.5
"""

A, B = "+447400100101", "+447400100102"  # SMS panellists (female, male)
D = "+447400100199"  # joins over WhatsApp


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def segments_of(bot: Bot, sql: str, *params: object) -> tuple[int, int]:
    rows = await bot.db.fetchall(sql, params)
    return len(rows), sum(encode_info(r["text"]).segments for r in rows)


@pytest.fixture
async def wave_bot(tmp_path: Path) -> AsyncIterator[Bot]:
    settings = make_settings(
        tmp_path,
        panel={"fields": FIELDS},
        channels={
            "simulator": {"enabled": True},
            "twilio": {
                "sms_price_per_segment": SMS_PRICE,
                "whatsapp_price_per_message": WHATSAPP_PRICE,
            },
        },
        plugins={"quotas": {"panel_size_target": 10000, "population": {"sex": FIELDS_SHARES}}},
    )
    bot = await Bot.create(settings)
    yield bot
    await bot.stop()


async def test_a_wave_costs_what_its_own_messages_cost(wave_bot: Bot, tmp_path: Path) -> None:
    bot = wave_bot
    csv_text = (
        "phone,telegram_chat_id,locale,consent_at,sex\n"
        f"{A},,en,2026-01-01,female\n{B},,en,2026-01-01,male\n,5001,en,2026-01-01,female\n"
    )
    report = await import_parsed(
        bot.db, bot.hash_key, bot.settings, parse_panel_csv(csv_text.encode(), bot.settings)
    )
    assert not report.problems
    chat = Chat(bot)
    await chat.join(f"whatsapp:{D}", answers=("1",))  # sign-up chat: not the wave's
    signup_rows = (await bot.db.fetchone("SELECT COUNT(*) FROM outbox"))[0]
    assert signup_rows > 0
    await add_survey(bot, SURVEY)
    wave_id = await launch(bot, "every-type")
    for reply in ("1", "3", "no", "7", "done"):
        await chat.say(f"sms:{A}", reply)  # A completes
    await chat.say(f"whatsapp:{D}", "2")  # D answers one question
    await chat.say(f"sms:{A}", "help")  # after A's session: not the wave's
    # What the provider accepted: everything but B's invitation, which failed.
    async with bot.db.transaction() as conn:
        await conn.execute("UPDATE outbox SET status = 'sent'")
        await conn.execute(
            "UPDATE outbox SET status = 'failed' WHERE channel = 'sms' AND address = ?", (B,)
        )

    # Expected, from the outbox rows themselves: A's invitation and A's replies up to and
    # including the thanks (the reply to "help" came after the session ended).
    help_id = (
        await bot.db.fetchone(
            "SELECT MAX(id) FROM outbox WHERE channel = 'sms' AND address = ?", (A,)
        )
    )[0]
    sms_messages, sms_segments = await segments_of(
        bot, "SELECT text FROM outbox WHERE channel = 'sms' AND address = ? AND id < ?", A, help_id
    )
    assert sms_messages == 6  # invitation + 5 replies
    assert sms_segments > sms_messages  # the invitation is longer than one SMS

    [wave] = await survey_wave_reports(bot, "every-type")
    assert wave["id"] == wave_id
    assert wave["invited"] == 4 and wave["completed"] == 1 and wave["response_rate"] == 25.0
    by_channel = {c["channel"]: c for c in wave["messages"]["by_channel"]}
    assert by_channel["sms"]["messages"] == sms_messages
    assert by_channel["sms"]["segments"] == sms_segments
    assert by_channel["whatsapp"]["messages"] == 2  # invitation + one reply
    assert by_channel["whatsapp"]["segments"] is None
    assert by_channel["telegram"] == {
        "channel": "telegram",
        "messages": 1,
        "segments": None,
        "cost": 0.0,
    }
    assert wave["messages"]["failed"] == 1 and wave["messages"]["pending"] == 0
    expected = sms_segments * SMS_PRICE + 2 * WHATSAPP_PRICE
    assert wave["cost"]["total"] == pytest.approx(expected, abs=1e-4)
    assert wave["cost"]["per_completed"] == pytest.approx(expected, abs=1e-4)
    sex = {g["group"]: g for g in wave["groups"]["sex"]}
    assert (sex["female"]["invited"], sex["female"]["completed"]) == (3, 1)
    assert sex["female"]["response_rate"] == 33.3
    assert sex["female"]["gap_points"] == 50.0 and sex["female"]["gap_vs"] == "population"
    assert sex["male"]["gap_points"] == -50.0

    # The command line shows the same figures (table and JSON).
    config = tmp_path / "panelbot.toml"
    config.write_text(CONFIG, encoding="utf-8")
    await bot.stop()
    result = run(config, "survey", "results", "every-type", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [shown] = data["waves"]
    assert shown["status"] == "open"  # the results' own wave fields stay
    assert shown["cost"]["total"] == pytest.approx(expected, abs=1e-4)
    assert shown["messages"]["sms_segments"] == sms_segments
    table = run(config, "survey", "results", "every-type")
    assert table.returncode == 0, table.stderr
    assert f"wave {wave_id} (open): invited 4, completed 1, response rate 25.0%" in table.stdout
    assert f"sms {sms_messages} ({sms_segments} segments)" in table.stdout
    assert f"estimated cost £{expected:.2f}, £{expected:.2f} per completed response" in (
        table.stdout
    )
    assert "female 1/3 33.3% +50.0" in table.stdout


async def test_without_targets_the_gap_is_against_those_invited(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path, panel={"fields": FIELDS}))
    try:
        csv_text = "telegram_chat_id,locale,consent_at,sex\n1,en,2026-01-01,female\n" + "".join(
            f"{n},en,2026-01-01,male\n" for n in (2, 3, 4)
        )
        await import_parsed(
            bot.db, bot.hash_key, bot.settings, parse_panel_csv(csv_text.encode(), bot.settings)
        )
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        chat = Chat(bot)
        for reply in ("1", "3", "no", "7", "done"):
            await chat.say("telegram:1", reply)
        [wave] = await survey_wave_reports(bot, "every-type")
        sex = {g["group"]: g for g in wave["groups"]["sex"]}
        # The one respondent is female: 100% of respondents against 25% of those invited.
        assert sex["female"]["gap_points"] == 75.0 and sex["female"]["gap_vs"] == "invited"
        assert wave["cost"]["total"] == 0.0  # Telegram costs nothing
        assert wave["cost"]["per_completed"] == 0.0
    finally:
        await bot.stop()


def test_config_check_names_a_bad_whatsapp_price(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        CONFIG.replace(
            f"whatsapp_price_per_message = {WHATSAPP_PRICE}", "whatsapp_price_per_message = -1"
        ),
        encoding="utf-8",
    )
    result = run(config, "config", "check")
    assert result.returncode == 1
    assert "channels.twilio.whatsapp_price_per_message" in result.stderr + result.stdout
