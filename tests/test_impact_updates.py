"""The impact updates plugin: the decision register, scheduling, audience, sending once.

Real parts only: a SQLite file per test, the real CLI (click's CliRunner on ``panelbot``),
the real scheduler (APScheduler in the bot's loop) and a real process killed mid-send. The
plugin's clock is injected through ``bot.state["impact_updates"]["clock"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot import dispatcher as dispatcher_module
from bot.app import Bot
from bot.cli import _register_commands
from bot.cli import cli as panelbot
from bot.config import dump_toml, settings_from_dict
from bot.dispatcher import in_quiet_hours
from bot.engine.waves import launch
from bot.hookspecs import hookimpl
from bot.models import MessageKind, iso
from bot.plugin_api import sanitise, sms_info
from bot.plugins import load_plugins
from bot.storage import outbox as outbox_module
from plugins.impact_updates import audience, decisions, jobs, updates
from tests.conftest import FIELDS, REPO, Chat, add_survey, make_settings

SURVEY = REPO / "tests" / "data" / "every-type.toml"
IMPACT = "SELECT panellist_id, address, text, status FROM outbox WHERE kind = 'impact_update'"


def config_file(tmp_path: Path, **plugin: Any) -> Path:
    data: dict[str, Any] = {
        "bot": {"name": "Test Panel", "database": "panel.db", "quiet_hours": False},
        "panel": {"fields": FIELDS},
        "channels": {"simulator": {"enabled": True}},
    }
    if plugin:
        data["plugins"] = {"impact_updates": plugin}
    path = tmp_path / "panelbot.toml"
    path.write_text(dump_toml(data))
    return path


def cli(config: Path, *args: str) -> Any:
    """``panelbot -c CONFIG ARGS...`` through click, on a thread of its own: a command runs
    its own event loop, which cannot start inside an async test's."""

    def invoke() -> Any:
        _register_commands(["-c", str(config)])
        return CliRunner().invoke(panelbot, ["-c", str(config), *args])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(invoke).result()


async def answered_panel(bot: Bot, *, answering: int = 3, others: int = 2) -> Chat:
    """``answering`` people who answer the survey's first question, ``others`` who do not."""
    chat = Chat(bot)
    for i in range(answering + others):
        await chat.join(f"sim:p{i}")
    await add_survey(bot, SURVEY)
    await launch(bot, "every-type")
    for i in range(answering):
        await chat.say(f"sim:p{i}", "3" if i else "1")  # ease: Hard, Easy
    return chat


async def impact_rows(bot: Bot) -> list[sqlite3.Row]:
    return await bot.db.fetchall(IMPACT + " ORDER BY panellist_id")


async def cited_decision(bot: Bot, **fields: Any) -> dict[str, Any]:
    """A decision citing the every-type survey; title "T", "Y" said and "W" done unless
    ``fields`` say otherwise."""
    given = {"title": "T", "you_said": "Y", "we_did": "W", "surveys": "every-type"}
    return await decisions.add_decision(bot, **(given | fields))


def clock_at(bot: Bot, when: datetime) -> None:
    bot.state.setdefault(updates.STATE_KEY, {})["clock"] = lambda: when


# -- the hook ------------------------------------------------------------------------------


async def test_hook_decision_recorded(settings: Any) -> None:
    seen: list[dict[str, Any]] = []

    class Probe:
        @hookimpl
        async def panelbot_decision_recorded(self, bot: Bot, decision: dict[str, Any]) -> None:
            seen.append(decision)

    plugins = load_plugins()
    plugins.register(Probe(), name="probe")
    bot = await Bot.create(settings, plugins=plugins)
    try:
        await answered_panel(bot)
        added = await cited_decision(
            bot,
            title="Phone lines",
            you_said="Booking by phone was hard.",
            we_did="More staff answer the phones from 8am.",
            status="decided",
            decided_by="ICB board",
            owner="Director of Primary Care",
        )
        await decisions.change_decision(
            bot, added["id"], {"title": "Phone lines at 8am"}, surveys=None, finding=None
        )
        await decisions.change_decision(
            bot, added["id"], {"status": "implemented"}, surveys=None, finding=None
        )
    finally:
        await bot.stop()
    # Fired for the addition and the status change, not for the title's edit.
    assert [(d["change"], d["status"]) for d in seen] == [
        ("added", "decided"),
        ("status", "implemented"),
    ]
    assert seen[0]["surveys"] == ["every-type"] and seen[0]["decided_by"] == "ICB board"
    assert seen[0]["owner"] == "Director of Primary Care" and seen[0]["id"] == added["id"]


# -- decisions through the CLI -------------------------------------------------------------


async def test_decision_add_list_update_and_the_finding_quoted(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    bot = await Bot.create(
        settings_from_dict(
            {
                "bot": {"name": "Test Panel", "database": "panel.db", "quiet_hours": False},
                "panel": {"fields": FIELDS},
                "channels": {"simulator": {"enabled": True}},
            },
            base_dir=tmp_path,
        )
    )
    try:
        await answered_panel(bot)  # p0 Easy, p1 and p2 Hard
    finally:
        await bot.stop()
    out = cli(
        config,
        "decision",
        "add",
        "--title",
        "Phone lines",
        "--you-said",
        "Booking by phone was hard.",
        "--we-did",
        "More staff on the phones.",
        "--surveys",
        "every-type",
        "--finding",
        "ease=hard",
        "--decided-on",
        "2026-11-30",
        "--by",
        "ICB board",
        "--owner",
        "A. Director",
        "--link",
        "https://example.org/x",
        "--format",
        "json",
    )
    assert out.exit_code == 0, out.output
    added = json.loads(out.output)
    assert added["id"] == 1 and added["status"] == "decided"
    assert added["finding"]["quote"] == '67% of you said "Hard" (n=3)'
    assert (added["finding"]["count"], added["finding"]["n"]) == (2, 3)
    assert added["decided_on"] == "2026-11-30" and added["surveys"] == ["every-type"]

    listed = cli(config, "decision", "list", "--format", "json")
    assert [d["title"] for d in json.loads(listed.output)] == ["Phone lines"]
    table = cli(config, "decision", "list").output
    assert "Phone lines" in table and "ICB board" in table

    changed = cli(config, "decision", "update", "1", "--status", "implemented", "--format", "json")
    assert changed.exit_code == 0 and json.loads(changed.output)["status"] == "implemented"
    # The quoted finding is kept as it was: later answers do not change the register.
    assert json.loads(changed.output)["finding"]["n"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--surveys", "no-such"], "--surveys: no survey 'no-such'"),
        (["--link", "javascript:alert(1)"], "--link: must be an http:// or https:// address"),
        (["--decided-on", "30/11/2026"], "--decided-on: '30/11/2026' is not a date"),
        (["--title", "x" * 200], "--title: at most 120 characters"),
        (["--finding", "ease"], "--finding: link the survey it comes from with --surveys"),
        (["--title", "  "], "--title: must not be empty"),
        # A quoted value at the end keeps its closing quote.
        (["--link", "ftp://x"], "address, not 'ftp://x'\n"),
        # Only invisible characters (zero-width space, joiner, BOM) is no title.
        (["--title", "\u200b\u200d\ufeff "], "--title: must not be empty or invisible"),
        (["--title", "Fine \u202eetalp"], "--title: no bidirectional override"),
        (["--you-said", "a \u2066b\u2069"], "--you-said: no bidirectional override"),
        (["--owner", "Ann \u202d"], "--owner: no bidirectional override"),
        (["--title", "two\nlines"], "--title: one line of text, without line breaks"),
        (["--title", "bell\x07"], "--title: no control characters (tabs are allowed)"),
        (["--we-did", "esc\x1b[31m"], "--we-did: no control characters (line breaks and tabs"),
    ],
)
def test_decision_add_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = config_file(tmp_path)
    base = ["decision", "add", "--title", "T", "--you-said", "Y", "--we-did", "W"]
    result = cli(config, *base, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_you_said_and_we_did_may_have_several_lines(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    added = cli(
        config, "decision", "add", "--title", "T", "--you-said", "one\r\ntwo",
        "--we-did", "first\nsecond", "--format", "json",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = json.loads(added.output)
    assert (shown["you_said"], shown["we_did"]) == ("one\ntwo", "first\nsecond")


def test_unknown_decision_and_update_are_one_line_errors(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert cli(config, "db", "upgrade").exit_code == 0
    for args, message in [
        (["decision", "update", "9", "--status", "decided"], "no decision 9"),
        (["impact", "schedule", "9"], "no decision 9"),
        (["impact", "cancel", "9"], "no impact update 9"),
        (["impact", "release", "9"], "no impact update 9"),
        (["impact", "preview", "9"], "no decision 9"),
    ]:
        result = cli(config, *args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)


def test_a_time_the_clocks_skip_is_refused(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert cli(config, "db", "upgrade").exit_code == 0
    added = cli(config, "decision", "add", "--title", "T", "--you-said", "Y", "--we-did", "W")
    assert added.exit_code == 0, added.output
    result = cli(
        config, "impact", "schedule", "1", "--audience", "panel", "--at", "2027-03-28T01:30"
    )
    assert result.exit_code == 1
    assert "--at: 2027-03-28T01:30 does not exist in Europe/London" in result.output
    # An hour later the clocks have gone forward: that time exists.
    fine = cli(config, "impact", "schedule", "1", "--audience", "panel", "--at", "2027-03-28T02:30")
    assert fine.exit_code == 0, fine.output


# -- audience and sending once -------------------------------------------------------------


async def test_update_reaches_each_participant_once_never_the_excluded(bot: Bot) -> None:
    chat = await answered_panel(bot, answering=6, others=2)
    await chat.say("sim:p1", "stop")  # opted out
    await bot.db.execute_write(  # p2 unreachable (a permanent send failure marked them)
        "UPDATE panellists SET status = 'unreachable' WHERE id = 3"
    )
    from bot.panel import erase_panellist

    await erase_panellist(bot.db, bot.hash_key, 5, actor="test")  # p4 erased
    await chat.say("sim:late", "hello")  # still signing up: pending, never in an audience
    decision = await cited_decision(bot)
    update, _ = await updates.schedule(bot, decision["id"], at="now")
    assert await updates.run_update(bot, update["id"]) == 3
    assert await updates.run_update(bot, update["id"]) == 0  # again: nothing more
    rows = await impact_rows(bot)
    assert [r["address"] for r in rows] == ["p0", "p3", "p5"]
    assert all("You were one of 6 people who answered" in r["text"] for r in rows)
    done = await updates.get_update(bot.db.conn, update["id"])
    assert done["status"] == "sent" and done["audience_size"] == 3 and done["participants"] == 6


async def test_audience_panel_and_field_value(bot: Bot) -> None:
    chat = Chat(bot)
    await chat.join("sim:young", ("1", "1"))  # 16-24
    await chat.join("sim:old", ("7", "1"))  # 75+
    await add_survey(bot, SURVEY)
    decision = await decisions.add_decision(bot, title="T", you_said="Y", we_did="W")
    with pytest.raises(updates.UpdateError, match="no linked survey"):
        await updates.schedule(bot, decision["id"])
    with pytest.raises(updates.UpdateError, match="'80\\+' is not a value of age_band"):
        await updates.schedule(bot, decision["id"], audience="age_band=80+")
    update, _ = await updates.schedule(bot, decision["id"], audience="age_band=75+")
    with pytest.raises(updates.UpdateError, match=f"already has update {update['id']} scheduled"):
        await updates.schedule(bot, decision["id"], audience="panel")
    await updates.run_update(bot, update["id"])
    assert [r["address"] for r in await impact_rows(bot)] == ["old"]
    rows = await impact_rows(bot)
    assert "You were one of" not in rows[0]["text"]  # they answered nothing


async def test_eight_schedules_at_once_make_one_update(bot: Bot) -> None:
    """The dashboard, the CLI and auto_schedule may schedule the same decision at once: one
    update is made, every other call is refused with the reason."""
    await Chat(bot).join("sim:p0")
    decision = await decisions.add_decision(bot, title="T", you_said="Y", we_did="W")
    results = await asyncio.gather(
        *[updates.schedule(bot, decision["id"], audience="panel") for _ in range(8)],
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(made) == 1 and len(refused) == 7
    update_id = made[0][0]["id"]
    for error in refused:
        assert isinstance(error, updates.UpdateError)
        assert f"already has update {update_id} scheduled" in str(error)
    assert [u["id"] for u in await updates.all_updates(bot.db.conn)] == [update_id]


async def test_the_database_refuses_a_second_waiting_update_of_a_decision(bot: Bot) -> None:
    decision = await decisions.add_decision(bot, title="T", you_said="Y", we_did="W")
    row = (
        "INSERT INTO impact_updates (decision_id, audience, due_at, status, created_at, "
        "updated_at) VALUES (?, 'panel', '2030-01-01T00:00:00+00:00', ?, 'x', 'x')"
    )
    await bot.db.execute_write(row, (decision["id"], "held"))
    with pytest.raises(sqlite3.IntegrityError, match=r"impact_updates\.decision_id"):
        await bot.db.execute_write(row, (decision["id"], "scheduled"))
    # Finished ones are not waiting: any number of them.
    await bot.db.execute_write(row, (decision["id"], "sent"))
    await bot.db.execute_write(row, (decision["id"], "cancelled"))


async def test_the_migration_cancels_duplicates_the_race_left_behind(tmp_path: Path) -> None:
    """A database from before the fix, holding two live updates of one decision (the later
    one part-way through sending): the upgrade keeps the first and cancels the other with
    its messages not yet handed to a provider."""
    settings = make_settings(tmp_path)
    bot = await Bot.create(settings)
    try:
        await answered_panel(bot)
        decision = await decisions.add_decision(
            bot, title="T", you_said="Y", we_did="W", surveys="every-type"
        )
        # As the race left it: no index yet, two updates of the decision waiting.
        await bot.db.execute_write("DROP INDEX impact_updates_one_waiting")
        await bot.db.execute_write(
            "UPDATE plugin_schema SET version = 1 WHERE plugin = 'impact_updates'"
        )
        first, _ = await updates.schedule(bot, decision["id"], at="2030-01-01T10:00")
        await bot.db.execute_write(
            "UPDATE impact_updates SET status = 'cancelled' WHERE id = ?", (first["id"],)
        )
        second, _ = await updates.schedule(bot, decision["id"])
        await updates.run_update(bot, second["id"])
        await bot.db.execute_write(
            "UPDATE impact_updates SET status = 'scheduled' WHERE id = ?", (first["id"],)
        )
        await bot.db.execute_write(
            "UPDATE impact_updates SET status = 'sending' WHERE id = ?", (second["id"],)
        )
        assert len(await bot.db.fetchall(IMPACT + " AND status = 'queued'")) == 3
    finally:
        await bot.stop()
    bot = await Bot.create(settings)  # applies migration 0002
    try:
        statuses = {u["id"]: u["status"] for u in await updates.all_updates(bot.db.conn)}
        assert statuses == {first["id"]: "scheduled", second["id"]: "cancelled"}
        rows = await bot.db.fetchall(IMPACT)
        assert [r["status"] for r in rows] == ["cancelled"] * 3
        index = "SELECT 1 FROM sqlite_master WHERE name = 'impact_updates_one_waiting'"
        assert await bot.db.fetchone(index) is not None
    finally:
        await bot.stop()


async def test_proposed_decisions_are_not_announced(bot: Bot) -> None:
    decision = await decisions.add_decision(
        bot, title="T", you_said="Y", we_did="W", status="proposed"
    )
    with pytest.raises(updates.UpdateError, match="is proposed"):
        await updates.schedule(bot, decision["id"], audience="panel")


async def test_cancel_cancels_queued_messages_not_yet_sent(bot: Bot) -> None:
    await answered_panel(bot)
    decision = await cited_decision(bot)
    update, _ = await updates.schedule(bot, decision["id"])
    await updates.run_update(bot, update["id"])
    await bot.db.execute_write(
        "UPDATE outbox SET status = 'sent' WHERE kind = 'impact_update' AND address = 'p0'"
    )
    done, cancelled = await updates.cancel(bot, update["id"])
    assert done["status"] == "cancelled" and cancelled == 2
    statuses = [r["status"] for r in await impact_rows(bot)]
    assert statuses == ["sent", "cancelled", "cancelled"]


async def test_holdout_share_waits_and_is_drawn_once(bot: Bot) -> None:
    await answered_panel(bot, answering=10, others=0)
    decision = await cited_decision(bot)
    update, _ = await updates.schedule(bot, decision["id"], holdout="20%", feedback=False)
    assert update["holdout_share"] == pytest.approx(0.2) and update["feedback"] == 0
    assert await updates.run_update(bot, update["id"]) == 8
    rows = await bot.db.fetchall(
        "SELECT grp, state FROM impact_recipients WHERE update_id = ?", (update["id"],)
    )
    assert sorted((r["grp"], r["state"]) for r in rows).count(("holdout", "waiting")) == 2
    assert "Was this useful" not in (await impact_rows(bot))[0]["text"]
    assert await updates.release_holdout(bot, update["id"]) == 2
    assert len(await impact_rows(bot)) == 10


# -- the preview and its cost --------------------------------------------------------------


def _panel_csv(path: Path, n: int, locales: list[str]) -> Path:
    lines = ["phone,locale,consent_at,age_band,sex"]
    lines += [
        f"+4474001{i:05d},{locales[i % len(locales)]},2026-06-01,45-54,female" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_preview_cost_is_what_is_queued(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    text = config.read_text().replace("[bot]\n", '[bot]\nlocales = ["en", "cy", "pl"]\n')
    config.write_text(text)
    result = cli(
        config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", 9, ["en", "cy", "pl"]))
    )
    assert result.exit_code == 0, result.output
    added = cli(
        config,
        "decision",
        "add",
        "--title",
        "T",
        "--you-said",
        "Booking by phone was hard for “most” of you.",
        "--we-did",
        "Every practice now offers online booking.",
        "--format",
        "json",
    )
    decision_id = json.loads(added.output)["id"]
    preview = json.loads(
        cli(
            config, "impact", "preview", str(decision_id), "--audience", "panel", "--format", "json"
        ).output
    )
    assert preview["people"] == 9
    assert {e["locale"]: e["people"] for e in preview["locales"]} == {"en": 3, "cy": 3, "pl": 3}
    assert cli(config, "impact", "schedule", str(decision_id), "--audience", "panel").exit_code == 0

    from bot.config import load_settings

    bot = await Bot.create(load_settings(config))
    try:
        update = (await updates.all_updates(bot.db.conn))[0]
        await updates.run_update(bot, update["id"])
        rows = await impact_rows(bot)
    finally:
        await bot.stop()
    # The SMS channel sends the sanitised text (curly quotes straightened): so does the preview.
    segments = sum(sms_info(sanitise(r["text"])).segments for r in rows)
    assert len(rows) == 9 and preview["sms_segments"] == segments
    assert preview["estimated_cost"] == pytest.approx(segments * 0.0463)
    pl = next(e for e in preview["locales"] if e["locale"] == "pl")
    assert pl["encoding"] == "UCS-2" and pl["text"] in {r["text"] for r in rows}
    table = cli(config, "impact", "preview", str(decision_id), "--locale", "cy").output
    assert "[cy] 3 people (3 sms)" in table and "estimated cost: £" in table


# -- scheduling: restart, misfire, quiet hours, crash ----------------------------------------


async def _wait_for(bot: Bot, sql: str, expected: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        row = await bot.db.fetchone(sql)
        if row[0] >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {sql!r} to reach {expected}")


async def test_restart_between_scheduling_and_sending_sends_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bot = await Bot.create(settings)
    try:
        await answered_panel(bot, answering=4, others=1)
        decision = await cited_decision(bot)
        await updates.schedule(bot, decision["id"], after="2s")
    finally:
        await bot.stop()  # the bot goes down before the update falls due
    for _ in range(2):
        bot = await Bot.create(settings)
        await bot.start(dispatcher=False)
        try:
            assert bot.scheduler.aps.get_job(jobs.SYNC_JOB) is not None
            await _wait_for(bot, "SELECT COUNT(*) FROM impact_updates WHERE status = 'sent'", 1)
            rows = await impact_rows(bot)
        finally:
            await bot.stop()
        assert sorted(r["address"] for r in rows) == ["p0", "p1", "p2", "p3"]


async def test_misfire_within_grace_sends_beyond_grace_holds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, plugins={"impact_updates": {"misfire_grace": "1h"}})
    bot = await Bot.create(settings)
    try:
        await answered_panel(bot, answering=2, others=0)
        recent = await cited_decision(bot, title="Recent")
        old = await cited_decision(bot, title="Old")
        real_now = datetime.now(UTC)
        near, _ = await updates.schedule(bot, recent["id"], due=real_now - timedelta(minutes=50))
        far, _ = await updates.schedule(bot, old["id"], due=real_now - timedelta(minutes=70))
    finally:
        await bot.stop()
    bot = await Bot.create(settings)
    await bot.start(dispatcher=False)
    try:
        await _wait_for(bot, "SELECT COUNT(*) FROM impact_updates WHERE status = 'sent'", 1)
        held = await updates.get_update(bot.db.conn, far["id"])
        assert held["status"] == "held"
        assert "more than misfire_grace (1h) ago" in held["held_reason"]
        assert f"panelbot impact release {far['id']}" in held["held_reason"]
        assert (await updates.get_update(bot.db.conn, near["id"]))["status"] == "sent"
        assert len(await impact_rows(bot)) == 2
        await updates.release(bot, far["id"])
        await _wait_for(bot, "SELECT COUNT(*) FROM impact_updates WHERE status = 'sent'", 2)
        assert len(await impact_rows(bot)) == 4
    finally:
        await bot.stop()


async def test_misfire_grace_follows_the_injected_clock(bot: Bot) -> None:
    await answered_panel(bot, answering=1, others=0)
    decision = await cited_decision(bot)
    due = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    update, _ = await updates.schedule(bot, decision["id"], due=due)
    clock_at(bot, due + timedelta(hours=5, minutes=59))  # default grace 6h: still goes
    assert await jobs.sync(bot, starting=True) == []
    clock_at(bot, due + timedelta(hours=6, minutes=1))
    assert await jobs.sync(bot, starting=True) == [update["id"]]
    assert (await updates.get_update(bot.db.conn, update["id"]))["status"] == "held"


async def test_an_update_due_in_quiet_hours_waits_across_the_clock_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20:00-09:00 in London. Clocks go back at 01:00 UTC on 25 October 2026 (BST to GMT):
    # an update falling due at 00:30 UTC (01:30 BST) waits until 09:00 GMT = 09:00 UTC.
    settings = make_settings(
        tmp_path,
        bot={"timezone": "Europe/London", "quiet_hours": {"start": "20:00", "end": "09:00"}},
    )
    bot = await Bot.create(settings)
    try:
        await answered_panel(bot, answering=2, others=0)
        decision = await cited_decision(bot)
        due = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
        clock_at(bot, due - timedelta(hours=1))
        update, _ = await updates.schedule(bot, decision["id"], at="2026-10-25T01:30+01:00")
        assert updates.parse_time(update["due_at"]) == due
        clock_at(bot, due)
        await updates.run_update(bot, update["id"])
        rows = await bot.db.fetchall(
            "SELECT kind, priority FROM outbox WHERE kind = 'impact_update'"
        )
        assert len(rows) == 2 and all(
            r["priority"] == MessageKind.IMPACT_UPDATE.priority for r in rows
        )
        # What the dispatcher decides for a bulk message at that moment, and an hour later
        # (01:30 GMT, after the change): held until 09:00 local, which is now 09:00 UTC.
        for moment in (due, due + timedelta(hours=1)):
            assert in_quiet_hours(bot, moment) == datetime(2026, 10, 25, 9, 0, tzinfo=UTC)
        assert in_quiet_hours(bot, datetime(2026, 10, 25, 9, 0, tzinfo=UTC)) is None

        # The real dispatcher on that night: its clock (and the outbox's) set, not mocked away.
        def clock(when: datetime) -> None:
            monkeypatch.setattr(dispatcher_module, "utcnow", lambda: when)
            monkeypatch.setattr(outbox_module, "utcnow", lambda: when)

        await bot.db.execute_write(
            "UPDATE outbox SET next_attempt_at = ? WHERE kind = 'impact_update'", (iso(due),)
        )
        clock(due + timedelta(hours=1))  # 01:30 GMT, after the change
        assert await bot.dispatcher.dispatch_due() == 2
        held = await bot.db.fetchall(
            "SELECT status, next_attempt_at, last_error FROM outbox WHERE kind = 'impact_update'"
        )
        assert {(r["status"], r["next_attempt_at"], r["last_error"]) for r in held} == {
            ("queued", "2026-10-25T09:00:00.000+00:00", "quiet hours")
        }
        clock(datetime(2026, 10, 25, 8, 59, tzinfo=UTC))  # 08:59 GMT: still waiting
        assert await bot.dispatcher.dispatch_due() == 0
        clock(datetime(2026, 10, 25, 9, 0, 1, tzinfo=UTC))
        assert await bot.dispatcher.dispatch_due() == 2
        for _ in range(100):  # handed to the simulator channel, which sends at once
            statuses = await bot.db.fetchall(
                "SELECT status FROM outbox WHERE kind = 'impact_update'"
            )
            if {r["status"] for r in statuses} <= {"sent", "delivered"}:
                break
            await asyncio.sleep(0.05)
        assert {r["status"] for r in statuses} <= {"sent", "delivered"}
    finally:
        await bot.stop()


KILLER = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from bot.app import Bot
from bot.config import load_settings
from plugins.impact_updates import updates

async def main():
    bot = await Bot.create(load_settings({config!r}))
    update = (await updates.all_updates(bot.db.conn))[0]
    await updates.start(bot, update["id"])
    print("started", flush=True)
    await updates.send_pending(bot, update["id"], batch_size=1)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_kill_during_sending_resumes_without_doubles(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    people = 400
    assert cli(config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", people, ["en"])))
    decision_id = json.loads(
        cli(
            config,
            "decision",
            "add",
            "--title",
            "T",
            "--you-said",
            "Y",
            "--we-did",
            "W",
            "--format",
            "json",
        ).output
    )["id"]
    assert cli(config, "impact", "schedule", str(decision_id), "--audience", "panel").exit_code == 0
    database = tmp_path / "panel.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLER.format(repo=str(REPO), config=str(config)),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            with sqlite3.connect(database) as db:
                (queued,) = db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE kind = 'impact_update'"
                ).fetchone()
            if queued >= 20:
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
    assert 20 <= queued < people, "the kill should land in the middle of sending"

    from bot.config import load_settings

    bot = await Bot.create(load_settings(config))
    try:
        update = (await updates.all_updates(bot.db.conn))[0]
        assert update["status"] == "sending"  # left half-done by the kill
        await updates.run_update(bot, update["id"])
        rows = await impact_rows(bot)
        states = await bot.db.fetchall(
            "SELECT state, COUNT(*) AS n FROM impact_recipients GROUP BY state"
        )
    finally:
        await bot.stop()
    ids = [r["panellist_id"] for r in rows]
    assert len(ids) == people and len(set(ids)) == people
    assert {r["state"]: r["n"] for r in states} == {"queued": people}


# -- auto_schedule and config ----------------------------------------------------------------


async def test_auto_schedule_after_send_after(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, plugins={"impact_updates": {"auto_schedule": True, "send_after": "1d"}}
    )
    bot = await Bot.create(settings)
    try:
        await answered_panel(bot)
        now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        clock_at(bot, now)
        proposed = await decisions.add_decision(
            bot, title="T", you_said="Y", we_did="W", surveys="every-type", status="proposed"
        )
        assert await updates.all_updates(bot.db.conn) == []  # nothing decided yet
        await decisions.change_decision(
            bot, proposed["id"], {"status": "decided"}, surveys=None, finding=None
        )
        [update] = await updates.all_updates(bot.db.conn)
        assert update["trigger"] == "status" and update["audience"] == "participants"
        assert updates.parse_time(update["due_at"]) == now + timedelta(days=1)
        # Implemented while that one still waits: no second update on top of it.
        await decisions.change_decision(
            bot, proposed["id"], {"status": "implemented"}, surveys=None, finding=None
        )
        assert len(await updates.all_updates(bot.db.conn)) == 1
        unlinked = await decisions.add_decision(bot, title="U", you_said="Y", we_did="W")
        assert all(
            u["decision_id"] != unlinked["id"] for u in await updates.all_updates(bot.db.conn)
        )
    finally:
        await bot.stop()


def test_config_check_names_the_key(tmp_path: Path) -> None:
    config = config_file(tmp_path, send_after="soon", batch_size=0, colour="red")
    result = cli(config, "config", "check")
    assert result.exit_code == 1
    assert "plugins.impact_updates.send_after" in result.output
    assert "plugins.impact_updates.batch_size" in result.output
    assert "plugins.impact_updates.colour" in result.output


def test_impact_list_shows_delivery_figures(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert cli(config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", 3, ["en"])))
    cli(config, "decision", "add", "--title", "T", "--you-said", "Y", "--we-did", "W")
    assert (
        cli(
            config, "impact", "schedule", "1", "--audience", "panel", "--at", "2099-01-01T10:00"
        ).exit_code
        == 0
    )
    [row] = json.loads(cli(config, "impact", "list", "--format", "json").output)
    assert row["status"] == "scheduled" and row["due_at"].startswith("2099-01-01T10:00")
    assert row["delivery"] == {"queued": 0, "sent": 0, "delivered": 0, "failed": 0, "cancelled": 0}
    table = cli(config, "impact", "list").output
    assert "scheduled" in table and "panel" in table
    late = cli(config, "impact", "schedule", "1", "--audience", "panel", "--at", "2001-01-01")
    assert "--at: 2001-01-01 is in the past" in late.output


# -- the demo ------------------------------------------------------------------------------


async def test_on_the_demo_the_people_who_answered_are_told_in_their_language(
    tmp_path: Path,
) -> None:
    from bot.demo import DEMO_SURVEY, demo_config, load_examples

    settings = settings_from_dict(demo_config(8080), base_dir=tmp_path)
    bot = await Bot.create(settings)
    try:
        await load_examples(bot, settings)
        chat = Chat(bot)
        for who, locale in (("sim:ana", "en"), ("sim:bryn", "cy"), ("sim:cai", "cy")):
            await chat.say(who, "hello")
            await chat.say(who, str(["en", "cy", "pl", "ur", "ro"].index(locale) + 1))
            await chat.say(who, bot.messages.words(locale)["yes"][0])
            for _ in settings.panel.fields:
                await chat.say(who, "1")  # the last one brings the demo survey's first question
        for who in ("sim:ana", "sim:bryn"):
            await chat.say(who, "4")  # ease: answered; cai never answers
        decision = await decisions.add_decision(
            bot,
            title="Phone booking",
            you_said="Getting through by phone was hard.",
            we_did="Practices now answer from 8am.",
            surveys=DEMO_SURVEY,
            finding="ease",
        )
        update, _ = await updates.schedule(bot, decision["id"])
        await updates.run_update(bot, update["id"])
        await updates.run_update(bot, update["id"])
        rows = await impact_rows(bot)
    finally:
        await bot.stop()
    assert sorted(r["address"] for r in rows) == ["ana", "bryn"]
    texts = {r["address"]: r["text"] for r in rows}
    assert "You said: Getting through by phone was hard." in texts["ana"]
    assert "Dywedoch chi: Getting through by phone was hard." in texts["bryn"]
    # The finding quoted, each in their language: the survey's own words for the option.
    assert '100% of you said "Very hard" (n=2)' in texts["ana"]
    assert 'Dywedodd 100% ohonoch "Anodd iawn" (n=2)' in texts["bryn"]


async def test_the_register_answers_which_decisions_cite_a_survey(bot: Bot) -> None:
    await answered_panel(bot)
    cited = await cited_decision(
        bot,
        title="Phone lines",
        we_did="More staff.",
        decided_by="ICB board",
        decided_on="2026-11-30",
    )
    await decisions.add_decision(bot, title="Unrelated", you_said="Y", we_did="W")
    answers = await bot.plugins.call_each(
        "panelbot_survey_decisions", bot=bot, survey_id="every-type"
    )
    assert answers == [
        (
            "impact_updates",
            [
                {
                    "id": cited["id"],
                    "title": "Phone lines",
                    "status": "decided",
                    "decided_by": "ICB board",
                    "decided_on": "2026-11-30",
                    "we_did": "More staff.",
                }
            ],
        )
    ]


async def test_preview_cost_is_what_the_dispatcher_sends_to_twilio(tmp_path: Path) -> None:
    from bot.panel import import_parsed, read_panel_file
    from tests.fakes.twilio_api import FakeTwilio
    from tests.test_twilio import twilio_settings

    async with FakeTwilio().running() as fake:
        base = twilio_settings(tmp_path, fake)
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": base.bot.public_base_url, "locales": ["en", "cy", "pl"]},
            channels={"twilio": {**_twilio_table(base), "enabled": True}},
            outbox={"poll_interval": 0.05},
        )
        bot = await Bot.create(settings)
        try:
            parsed = read_panel_file(
                _panel_csv(tmp_path / "p.csv", 9, ["en", "cy", "pl"]), settings
            )
            await import_parsed(bot.db, bot.hash_key, settings, parsed, actor="test")
            decision = await decisions.add_decision(
                bot,
                title="T",
                you_said="Booking by phone was hard for “most” of you.",
                we_did="Every practice now offers online booking.",
            )
            preview = await audience.preview(bot, decision["id"], audience="panel")
            update, _ = await updates.schedule(bot, decision["id"], audience="panel")
            await updates.run_update(bot, update["id"])
            await bot.start()
            posts = await fake.wait_for_posts(9, timeout=10)
        finally:
            await bot.stop()
    sent = sum(sms_info(p.form["Body"]).segments for p in posts)
    assert len({p.form["To"] for p in posts}) == 9
    assert preview["people"] == 9 and preview["sms_segments"] == sent
    assert preview["estimated_cost"] == pytest.approx(sent * 0.0463)


def _twilio_table(settings: Any) -> dict[str, Any]:
    twilio = settings.channels.twilio
    return {
        "account_sid": twilio.account_sid,
        "auth_token": twilio.auth_token,
        "from_number": twilio.from_number,
        "api_base_url": twilio.api_base_url,
        "rate_per_second": 100,
    }


async def test_an_update_over_the_sms_cap_in_any_language_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bot={"locales": ["en", "pl"]})
    bot = await Bot.create(settings)
    try:
        await Chat(bot).join("sim:a")
        long = "Practices now open earlier and later on weekdays for booked calls. " * 5
        decision = await decisions.add_decision(bot, title="T", you_said="Y", we_did=long.strip())
        # Within the cap in English (GSM-7), over it in Polish (UCS-2: 67 characters a segment).
        with pytest.raises(updates.UpdateError, match=r"SMS segments in pl \(UCS-2\), over the"):
            await updates.schedule(bot, decision["id"], audience="panel")
        assert await updates.all_updates(bot.db.conn) == []
        await decisions.change_decision(
            bot, decision["id"], {"we_did": long[:120]}, surveys=None, finding=None
        )
        update, _ = await updates.schedule(bot, decision["id"], audience="panel")
        assert update["status"] == "scheduled"
    finally:
        await bot.stop()


def test_reading_commands_on_a_missing_database_say_where_they_looked(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    for args in (["decision", "list"], ["impact", "list"], ["impact", "preview", "1"]):
        result = cli(config, *args)
        assert result.exit_code == 1 and "no database at" in result.output, (args, result.output)
    assert not (tmp_path / "panel.db").exists()


@pytest.mark.slow
async def test_serve_killed_while_sending_an_update_sends_it_once_after_restart(
    tmp_path: Path,
) -> None:
    """The real ``panelbot serve``: its scheduler picks the update up, is SIGKILLed part-way
    through queueing it (batches of 1), and the next start finishes it: one per person."""
    from tests.test_serve import free_port

    port = free_port()
    config = config_file(tmp_path, batch_size=1)
    config.write_text(config.read_text() + f"\n[web]\nport = {port}\n")
    people = 300
    assert cli(config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", people, ["en"])))
    assert cli(config, "decision", "add", "--title", "T", "--you-said", "Y", "--we-did", "W")
    assert cli(config, "impact", "schedule", "1", "--audience", "panel").exit_code == 0
    database = tmp_path / "panel.db"

    def count(sql: str) -> int:
        with sqlite3.connect(database) as db:
            return int(db.execute(sql).fetchone()[0])

    queued_sql = "SELECT COUNT(*) FROM outbox WHERE kind = 'impact_update'"
    log = (tmp_path / "serve.log").open("ab")
    serve = [sys.executable, "-m", "bot", "-c", str(config), "serve", "--workers", "0"]
    process = await asyncio.create_subprocess_exec(*serve, stdout=log, stderr=log)
    try:
        for _ in range(600):
            if count(queued_sql) >= 20:
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), timeout=10)
        killed_at = count(queued_sql)
        assert 20 <= killed_at < people, "the kill should land in the middle of sending"
        process = await asyncio.create_subprocess_exec(*serve, stdout=log, stderr=log)
        for _ in range(1200):
            if count("SELECT COUNT(*) FROM impact_updates WHERE status = 'sent'") == 1:
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
        log.close()
    with sqlite3.connect(database) as db:
        ids = [
            r[0] for r in db.execute("SELECT panellist_id FROM outbox WHERE kind = 'impact_update'")
        ]
    assert len(ids) == people and len(set(ids)) == people, (tmp_path / "serve.log").read_text()[
        -2000:
    ]


def test_impact_cancel_and_release_from_the_command_line(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert cli(config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", 2, ["en"])))
    cli(config, "decision", "add", "--title", "T", "--you-said", "Y", "--we-did", "W")
    assert "nothing to change" in cli(config, "decision", "update", "1").output
    cli(config, "impact", "schedule", "1", "--audience", "panel", "--after", "3d")
    refused = cli(config, "impact", "release", "1")
    assert refused.exit_code == 1 and "is scheduled, not held" in refused.output
    cancelled = cli(config, "impact", "cancel", "1")
    assert cancelled.exit_code == 0
    assert "impact update 1 (decision 1) to panel cancelled; 0 queued message(s)" in (
        cancelled.output
    )
    again = cli(config, "impact", "cancel", "1")
    assert again.exit_code == 1 and "already cancelled" in again.output
    # Cancelled, the decision may have a new update.
    assert cli(config, "impact", "schedule", "1", "--audience", "panel").exit_code == 0
    both = "\n".join(cli(config, "impact", "list").output.splitlines()[1:])
    assert "cancelled" in both and "scheduled" in both


def test_staff_text_without_a_full_stop_does_not_run_into_the_next_sentence(
    tmp_path: Path,
) -> None:
    config = config_file(tmp_path)
    result = cli(config, "panel", "import", str(_panel_csv(tmp_path / "p.csv", 2, ["en"])))
    assert result.exit_code == 0, result.output
    added = cli(
        config,
        "decision",
        "add",
        "--title",
        "T",
        "--you-said",
        "Booking at 8am was hard",
        "--we-did",
        "Lines open at 7.30am from January",
        "--by",
        "the primary care committee",
        "--format",
        "json",
    )
    decision_id = json.loads(added.output)["id"]
    preview = cli(config, "impact", "preview", str(decision_id), "--audience", "panel").output
    assert "You said: Booking at 8am was hard.\n" in preview
    assert "Lines open at 7.30am from January. Decided by the primary care committee." in preview
    # Text that already ends a sentence (or a quotation) keeps its own ending.
    again = cli(
        config,
        "decision",
        "add",
        "--title",
        "T2",
        "--you-said",
        'You asked "why not earlier?"',
        "--we-did",
        "Done!",
        "--format",
        "json",
    )
    second = json.loads(again.output)["id"]
    text = cli(config, "impact", "preview", str(second), "--audience", "panel").output
    assert 'You said: You asked "why not earlier?"\n' in text and "We did: Done!" in text
