"""Waves: sampling, reminders and closing as scheduler jobs rebuilt from the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bot.app import Bot
from bot.engine.waves import WaveError, launch, send_reminders
from bot.models import iso, utcnow
from tests.conftest import REPO, Chat, add_survey, make_settings

SURVEY = REPO / "tests" / "data" / "every-type.toml"


async def panel_of(bot: Bot, n: int) -> Chat:
    chat = Chat(bot)
    for i in range(n):
        await chat.join(f"sim:p{i}")
    await add_survey(bot, SURVEY)
    return chat


async def count(bot: Bot, sql: str, *params: object) -> int:
    row = await bot.db.fetchone(sql, params)
    return int(row[0])


async def test_launch_invites_every_active_panellist_once(bot: Bot) -> None:
    chat = await panel_of(bot, 5)
    await chat.say("sim:p4", "stop")  # opted out: never invited
    await chat.say("sim:late", "hi")  # still signing up: not invited
    wave_id = await launch(bot, "every-type")
    assert await count(bot, "SELECT COUNT(*) FROM invitations WHERE wave_id = ?", wave_id) == 4
    assert await count(bot, "SELECT COUNT(*) FROM outbox WHERE kind = 'invitation'") == 4


async def test_sample_invites_a_random_n(bot: Bot) -> None:
    await panel_of(bot, 6)
    wave_id = await launch(bot, "every-type", sample=3)
    assert await count(bot, "SELECT COUNT(*) FROM invitations WHERE wave_id = ?", wave_id) == 3


async def test_launch_refuses_an_unknown_survey(bot: Bot) -> None:
    try:
        await launch(bot, "no-such-survey")
    except WaveError as exc:
        assert "no survey 'no-such-survey'" in str(exc)
    else:
        raise AssertionError("launching an unknown survey should fail")


async def test_one_reminder_to_those_who_have_not_finished(bot: Bot) -> None:
    chat = await panel_of(bot, 3)
    wave_id = await launch(bot, "every-type")
    for reply in ("1", "3", "no", "7", "done"):
        await chat.say("sim:p0", reply)  # p0 finishes
    await chat.say("sim:p1", "2")  # p1 is half-way
    assert await send_reminders(bot, wave_id) == 2
    assert await send_reminders(bot, wave_id) == 0  # at most once per wave
    rows = await bot.db.fetchall("SELECT address, text FROM outbox WHERE kind = 'reminder'")
    assert sorted(r["address"] for r in rows) == ["p1", "p2"]
    p1 = next(r["text"] for r in rows if r["address"] == "p1")
    assert "Question 3 of 6" in p1  # the reminder repeats where they are


async def _run_scheduler_until(bot: Bot, sql: str, expected: int, timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await count(bot, sql) >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {sql!r} to reach {expected}")


async def test_due_steps_run_after_a_restart_and_never_twice(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bot = await Bot.create(settings)
    await panel_of(bot, 2)
    wave_id = await launch(bot, "every-type")
    await bot.stop()
    # While the bot was down, the reminder fell due.
    bot = await Bot.create(settings)
    async with bot.db.transaction() as conn:
        await conn.execute(
            "UPDATE waves SET reminder_at = ? WHERE id = ?",
            (iso(utcnow() - timedelta(minutes=5)), wave_id),
        )
    await bot.start()
    try:
        await _run_scheduler_until(bot, "SELECT COUNT(*) FROM outbox WHERE kind = 'reminder'", 2)
    finally:
        await bot.stop()
    bot = await Bot.create(settings)
    await bot.start()
    try:
        await asyncio.sleep(0.5)
        assert await count(bot, "SELECT COUNT(*) FROM outbox WHERE kind = 'reminder'") == 2
    finally:
        await bot.stop()


async def test_a_wave_closes_at_its_close_time(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path))
    chat = await panel_of(bot, 2)
    await launch(bot, "every-type", close_after=timedelta(seconds=1))
    await bot.start()
    try:
        await _run_scheduler_until(bot, "SELECT COUNT(*) FROM waves WHERE status = 'closed'", 1)
        states = await bot.db.fetchall("SELECT state FROM survey_sessions")
        assert {r["state"] for r in states} == {"closed"}
        replies = await chat.say("sim:p0", "1")
        assert "That survey has now closed" in replies[0]
    finally:
        await bot.stop()


async def test_a_wave_scheduled_for_later_opens_on_time(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path))
    await panel_of(bot, 2)
    wave_id = await launch(bot, "every-type", at=utcnow() + timedelta(seconds=1))
    assert await count(bot, "SELECT COUNT(*) FROM invitations") == 0
    await bot.start()
    try:
        await _run_scheduler_until(
            bot, f"SELECT COUNT(*) FROM invitations WHERE wave_id = {wave_id}", 2
        )
        await _run_scheduler_until(
            bot, "SELECT COUNT(*) FROM outbox WHERE kind = 'invitation' AND status = 'delivered'", 2
        )
    finally:
        await bot.stop()


async def test_new_joiners_are_invited_to_waves_that_take_them(bot: Bot) -> None:
    await add_survey(bot, SURVEY)
    await launch(bot, "every-type", include_new=True)
    chat = Chat(bot)
    replies = await chat.join("sim:newbie")
    assert "you have joined" in replies[0]
    assert "Question 1 of 6" in replies[1]
