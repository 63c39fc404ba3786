"""Recruitment against quotas through the real engine, on a real SQLite file.

A full group's new sign-ups are waitlisted, counted inside the sign-up's own transaction
(concurrent sign-ups never overshoot), and admitted, longest waiting first, when room opens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import Bot
from bot.config import Settings
from bot.engine.waves import launch
from plugins.quotas import recruit
from tests.conftest import REPO, Chat, add_survey, make_settings

SURVEY = REPO / "tests" / "data" / "every-type.toml"
# sex: 1 female, 2 male (the conftest fields); a panel of 4, two of each, no tolerance.
SEX = {"female": 0.5, "male": 0.5, "other": 0.0, "prefer_not_to_say": 0.0}


def quota_settings(tmp_path: Path, size: int = 4, tolerance: float = 0.0) -> Settings:
    return make_settings(
        tmp_path,
        plugins={
            "quotas": {
                "panel_size_target": size,
                "tolerance": tolerance,
                "population": {"sex": SEX},
            }
        },
    )


async def statuses(bot: Bot) -> dict[str, tuple[str, str | None]]:
    rows = await bot.db.fetchall(
        "SELECT a.address, p.status, p.stage FROM panellists p "
        "JOIN addresses a ON a.panellist_id = p.id"
    )
    return {r["address"]: (r["status"], r["stage"]) for r in rows}


async def test_concurrent_sign_ups_at_a_full_quota_never_overshoot(tmp_path: Path) -> None:
    bot = await Bot.create(quota_settings(tmp_path))
    try:
        chat = Chat(bot)
        names = [f"sim:w{i}" for i in range(8)]
        for name in names:
            await chat.say(name, "Hello")
            await chat.say(name, "yes")
            await chat.say(name, "3")  # age band
        # Eight women answer the last question at once: their screens share the engine's
        # transactions (group commit) or wait for one another; only two places exist.
        last = await asyncio.gather(*(chat.say(name, "1") for name in names))
        joined = sum(any("you have joined" in r for r in replies) for replies in last)
        waiting = [replies for replies in last if any("waiting list" in r for r in replies)]
        assert (joined, len(waiting)) == (2, 6)
        assert "mirror the people who live in our area" in waiting[0][0]
        found = await statuses(bot)
        assert sorted(found.values()) == [("active", None)] * 2 + [("pending", "waitlisted")] * 6
        # A man still gets in: his group has room.
        assert "you have joined" in (await chat.join("sim:m1", ("3", "2")))[0]
        # "Prefer not to say" has a share of 0: no cap, nobody turned away for it.
        assert "you have joined" in (await chat.join("sim:x1", ("3", "4")))[0]
        # Someone waitlisted who writes again is told again, kindly, and stays waiting.
        first_waiting = next(n for n, r in zip(names, last, strict=True) if r is waiting[0])
        again = await chat.say(first_waiting, "hi")
        assert "waiting list" in again[0]
    finally:
        await bot.stop()


async def test_tolerance_lets_a_group_go_over_its_share(tmp_path: Path) -> None:
    # target 2 women; 50% over their target: full at 3.
    bot = await Bot.create(quota_settings(tmp_path, tolerance=0.5))
    try:
        chat = Chat(bot)
        replies = [(await chat.join(f"sim:t{i}", ("3", "1")))[0] for i in range(4)]
        assert ["joined" in r for r in replies] == [True, True, True, False]
    finally:
        await bot.stop()


async def test_room_opening_admits_the_longest_waiting_first(tmp_path: Path) -> None:
    settings = quota_settings(tmp_path)
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        for name in ("a", "b", "c", "d", "e"):  # a and b join; c, d, e wait, in that order
            await chat.join(f"sim:{name}", ("3", "1"))
        assert await recruit.admit_waitlisted(bot) == 0  # no room yet
        await add_survey(bot, SURVEY)
        wave_id = await launch(bot, "every-type", include_new=True)
        await chat.say("sim:a", "STOP")
        assert await recruit.admit_waitlisted(bot) == 1
        found = await statuses(bot)
        assert found["c"] == ("active", None)
        assert found["d"] == found["e"] == ("pending", "waitlisted")
        rows = await bot.db.fetchall(
            "SELECT o.text, o.kind, a.address FROM outbox o "
            "JOIN addresses a ON a.panellist_id = o.panellist_id WHERE o.template = 'waitlist_room'"
        )
        assert [(r["address"], r["kind"]) for r in rows] == [("c", "broadcast")]
        assert "a place has opened on Test Panel" in rows[0]["text"]
        # Like anyone who has just joined, c is invited to the open wave for new joiners.
        sent = await bot.db.fetchall(
            "SELECT o.template, o.idempotency_key FROM outbox o "
            "JOIN addresses a ON a.panellist_id = o.panellist_id WHERE a.address = 'c' "
            "AND o.kind != 'reply' ORDER BY o.id"
        )
        c_id = (await bot.db.fetchone("SELECT panellist_id FROM addresses WHERE address = 'c'"))[0]
        assert [(r["template"], r["idempotency_key"]) for r in sent] == [
            ("waitlist_room", f"waitlist:waitlist_room:{c_id}"),
            ("invitation", f"wave:{wave_id}:invite:{c_id}"),
        ]
        # ...and answers the survey's first question with their next message.
        assert await chat.say("sim:c", "1")
        [session] = await bot.db.fetchall(
            "SELECT wave_id FROM survey_sessions WHERE panellist_id = ?", (c_id,)
        )
        assert session["wave_id"] == wave_id
        [audit] = await bot.db.fetchall(
            "SELECT detail FROM audit_log WHERE action = 'joined' AND detail LIKE '%waitlist%'"
        )
        assert audit["detail"] == '{"from": "waitlist"}'
        [admission] = await bot.db.fetchall("SELECT panellist_id, reason FROM quotas_admissions")
        assert admission["reason"] == "room opened"
        assert await recruit.admit_waitlisted(bot) == 0  # full again
        # Once admitted, they are a panellist like any other.
        assert "waiting list" not in " ".join(await chat.say("sim:c", "HELP"))
    finally:
        await bot.stop()
    # The target is raised: the bot restarts on the same panel, the job finds room for both.
    bot = await Bot.create(quota_settings(tmp_path, size=8))
    try:
        assert await recruit.admit_waitlisted(bot) == 2
        assert {s for s, _ in (await statuses(bot)).values()} == {"active", "opted_out"}
    finally:
        await bot.stop()


async def test_without_targets_nobody_is_waitlisted_or_admitted(settings: Settings) -> None:
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        for i in range(5):
            assert "you have joined" in (await chat.join(f"sim:n{i}", ("3", "1")))[0]
        assert await recruit.admit_waitlisted(bot) == 0
    finally:
        await bot.stop()


async def test_the_admission_job_runs_at_start_and_every_ten_minutes(tmp_path: Path) -> None:
    bot = await Bot.create(quota_settings(tmp_path))
    try:
        chat = Chat(bot)
        for name in ("a", "b", "c"):  # c waits
            await chat.join(f"sim:{name}", ("3", "1"))
        await chat.say("sim:b", "STOP")  # room opens while the bot is not running its jobs
    finally:
        await bot.stop()
    bot = await Bot.create(quota_settings(tmp_path))
    try:
        await bot.start(dispatcher=False)
        job = bot.scheduler.aps.get_job(recruit.JOB_ID)
        assert job is not None
        assert job.trigger.interval.total_seconds() == 600
        # The first run is due at start: wait for it (up to 30 s, a guard, not a timing check).
        for _ in range(600):
            if (await statuses(bot))["c"] == ("active", None):
                break
            await asyncio.sleep(0.05)
        assert (await statuses(bot))["c"] == ("active", None)
    finally:
        await bot.stop()
