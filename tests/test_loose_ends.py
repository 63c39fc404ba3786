"""Loose ends a new user and an attacker found (issues 9 and 10), each through real parts.

Consent dates in JSON and `panel show`, finding a number `phonenumbers` calls invalid,
`chat` refusing to act for a real panellist, bounded durations, owner-only files, a PO
file for the source locale, Telegram's id range, secret query strings in `config show`,
wording, `make bench` and the README's example numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import dump_toml
from bot.config_schema import mask_userinfo, parse_duration
from bot.models import Address, InboundMessage
from bot.panel import resolve_panellist
from bot.panel_csv import mobile_phone
from bot.resources import messages_dir
from bot.storage import Database
from tests.conftest import REPO, Chat, make_settings

CONFIG: dict[str, Any] = {
    "bot": {"name": "Loose Ends", "database": "panel.db", "timezone": "Europe/London"},
    "panel": {"fields": [{"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}}]},
    "channels": {"simulator": {"enabled": True}},
}


def panelbot(
    cfg: Path | None, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PANELBOT_", "TWILIO_"))}
    prefix = ["-c", str(cfg)] if cfg else []
    return subprocess.run(
        [sys.executable, "-m", "bot", *prefix, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env=env,
        cwd=cwd or (cfg.parent if cfg else None),
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_config(folder: Path, **sections: Any) -> Path:
    data = {**CONFIG, **sections}
    path = folder / "panelbot.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def import_rows(cfg: Path, rows: list[str]) -> subprocess.CompletedProcess[str]:
    path = cfg.parent / "panel.csv"
    path.write_text("\n".join(["phone,telegram_chat_id,locale,consent_at,sex", *rows]) + "\n")
    return panelbot(cfg, "panel", "import", str(path))


# -- 1. a consent date stays a date in JSON and in `panel show` ----------------------------


def test_a_consent_date_stays_a_date_in_json_export_and_panel_show(cfg: Path) -> None:
    imported = import_rows(cfg, ["07400 100101,,,2026-06-04,", "07400 100102,,,2026-06-04T14:30,"])
    assert imported.returncode == 0, imported.stderr
    exported = panelbot(cfg, "panel", "export", "--format", "json")
    assert exported.returncode == 0, exported.stderr
    consent = {r["phone"]: r["consent_at"] for r in json.loads(exported.stdout)}
    assert consent["+447400100101"] == "2026-06-04"  # not 2026-06-03T23:00:00...
    assert consent["+447400100102"].startswith("2026-06-04T13:30:00")  # a time stays a time

    shown = panelbot(cfg, "panel", "show", "07400 100101")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["panellist"]["consent_at"] == "2026-06-04"
    assert data["consent"]["consent_at"] == "2026-06-04"


# -- 2. a number phonenumbers calls invalid is found as the bot stored it ------------------


DRAMA = "+447700900988"  # Ofcom's drama range: `phonenumbers` says it is not valid


async def test_panel_show_finds_a_webhook_sender_phonenumbers_calls_invalid(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    bot = await Bot.create(settings)
    try:
        await Chat(bot).say(f"sms:{DRAMA}", "Hello")  # as a Twilio webhook would
        (row,) = await bot.db.fetchall("SELECT panellist_id FROM addresses")
        pid = row["panellist_id"]
        for text in (DRAMA, f"sms:{DRAMA}", f"whatsapp:{DRAMA}", " +44 7700 900988 "):
            assert await resolve_panellist(bot.db.conn, bot.hash_key, text) == pid, text
        assert await resolve_panellist(bot.db.conn, bot.hash_key, "+447700900989") is None
        assert await resolve_panellist(bot.db.conn, bot.hash_key, "not a number") is None
    finally:
        await bot.stop()

    config = tmp_path / "panelbot.toml"
    config.write_text(
        dump_toml({**CONFIG, "bot": {**CONFIG["bot"], "database": str(settings.bot.database)}})
    )
    shown = panelbot(config, "panel", "show", DRAMA)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["addresses"][0]["address"] == DRAMA
    erased = panelbot(config, "panel", "erase", "--yes", f"sms:{DRAMA}")
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith(f"erased panellist {pid}:")


# -- 3. `chat --as sim:X` never acts for a real panellist outside a demo -------------------


def test_chat_refuses_to_speak_for_a_panellist_reached_by_sms(cfg: Path) -> None:
    first = panelbot(cfg, "chat", "--as", "sim:linked", stdin="hello\n")
    assert first.returncode == 0, first.stderr
    database = cfg.parent / "panel.db"
    with sqlite3.connect(database) as db:  # the simulator name linked to an SMS panellist
        (pid,) = db.execute("SELECT panellist_id FROM addresses").fetchone()
        db.execute(
            "INSERT INTO addresses (panellist_id, channel, address, created_at) "
            "VALUES (?, 'sms', '+447400100101', '2026-01-01T00:00:00+00:00')",
            (pid,),
        )
    refused = panelbot(cfg, "chat", "--as", "sim:linked", stdin="STOP\n")
    assert "demo" in one_line_error(refused)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT status FROM panellists").fetchone()[0] != "opted_out"
        assert db.execute("SELECT count(*) FROM suppressions").fetchone()[0] == 0
    # A simulator person of its own is still chatted with.
    other = panelbot(cfg, "chat", "--as", "sim:someone", stdin="hello\n")
    assert other.returncode == 0, other.stderr


# -- 4. durations are bounded ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("bot", "reminder_after", "99999999999d"),
        ("bot", "close_after", "99999999999d"),
        ("privacy", "keep_messages_for", "99999999999d"),
        ("privacy", "keep_messages_for", "9999999d"),
        ("privacy", "keep_messages_for", "20000d"),  # past the 50 years retention may take
        ("outbox", "retry_backoff", ["1m", "999999999999w"]),
    ],
)
def test_config_check_names_a_too_long_duration(
    tmp_path: Path, section: str, key: str, value: Any
) -> None:
    cfg = write_config(tmp_path, **{section: {**CONFIG.get(section, {}), key: value}})
    result = panelbot(cfg, "config", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stderr
    assert f"{section}.{key}" in result.stderr and "at most" in result.stderr


def test_the_longest_durations_allowed_still_work(tmp_path: Path) -> None:
    assert parse_duration("36500d") == timedelta(days=36500)
    cfg = write_config(
        tmp_path,
        bot={**CONFIG["bot"], "close_after": "36500d", "reminder_after": "5200w"},
        privacy={"keep_messages_for": "18250d"},
    )
    assert panelbot(cfg, "config", "check").returncode == 0
    assert panelbot(cfg, "chat", "--as", "sim:kept", stdin="hello\n").returncode == 0
    pruned = panelbot(cfg, "db", "prune")
    assert pruned.returncode == 0, pruned.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--close-after", "99999999999d"), ("--at", "99999999999d"), ("--at", "9999-12-31T00:00")],
)
def test_survey_launch_refuses_a_too_long_duration_in_one_line(
    cfg: Path, option: str, value: str
) -> None:
    assert panelbot(cfg, "survey", "add", str(REPO / "tests/data/every-type.toml")).returncode == 0
    assert "at most" in one_line_error(
        panelbot(cfg, "survey", "launch", "every-type", option, value)
    )


# -- 5. every file the bot creates is its owner's -------------------------------------------


def test_files_serve_creates_are_owner_only(tmp_path: Path) -> None:
    from tests.test_serve import Server, free_port
    from tests.test_serve import write_config as serve_config

    port = free_port()
    server = Server(serve_config(tmp_path, port), port)
    try:
        server.say("sim:owner", "hello")
        created = sorted(p for p in tmp_path.iterdir() if p.name.startswith("panel.db"))
        names = {p.name for p in created}
        assert {"panel.db", "panel.db-wal", "panel.db-inbox", "panel.db-inbox-wal"} <= names
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in created}
        assert modes == dict.fromkeys(names, 0o600), modes
    finally:
        server.stop()


def test_files_the_demo_creates_are_owner_only(tmp_path: Path) -> None:
    from tests.test_demo_and_chat import start_demo, stop
    from tests.test_serve import free_port

    data = tmp_path / "demo"
    process = start_demo(data, free_port())
    try:
        created = [p for p in data.rglob("*") if p.is_file()]
        names = {p.name for p in created}
        assert {"panelbot.db", "panelbot.db-wal", "panelbot.toml"} <= names, names
        loose = {p.name: oct(p.stat().st_mode) for p in created if p.stat().st_mode & 0o077}
        assert loose == {}
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        stop(process)


async def test_opening_an_existing_database_makes_it_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    db = await Database.open(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        await db.close()


# -- 6. a PO file never overwrites the source locale ----------------------------------------


def test_messages_import_refuses_a_po_file_for_english(tmp_path: Path) -> None:
    messages = tmp_path / "messages"
    shutil.copytree(messages_dir(), messages)
    before = (messages / "en" / "help.txt.j2").read_bytes()
    exported = panelbot(None, "messages", "export", "--locale", "cy", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    po = exported.stdout.replace("Language: cy\\n", "Language: en\\n")
    assert po != exported.stdout
    po_file = tmp_path / "en.po"
    po_file.write_text(po, encoding="utf-8")
    result = panelbot(
        None, "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "source locale" in result.stderr and "Traceback" not in result.stderr
    assert (messages / "en" / "help.txt.j2").read_bytes() == before


# -- 7. Telegram chat ids in Telegram's range -----------------------------------------------


def test_import_refuses_telegram_chat_ids_out_of_range(cfg: Path) -> None:
    result = import_rows(
        cfg,
        [
            f",{10**30},,,",
            f",{2**63},,,",
            ",0,,,",
            f",{2**52},,,",
            ",4242,,,",
            ",-1001234567890,,,",  # a supergroup
            f",{2**52 - 1},,,",
        ],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("3 added, 0 updated, 4 rejected")
    assert result.stderr.count("not a Telegram chat id") == 4
    with sqlite3.connect(cfg.parent / "panel.db") as db:
        stored = {r[0] for r in db.execute("SELECT address FROM addresses")}
    assert stored == {"4242", "-1001234567890", str(2**52 - 1)}


# -- 8. secrets in query strings are masked -------------------------------------------------


def test_config_show_masks_secret_query_values(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        channels={
            "simulator": {"enabled": True},
            "twilio": {
                "api_base_url": "https://api.twilio.com/x?token=qsecret&page=2&API_KEY=k3y&sig=s1g"
            },
            "telegram": {"api_base_url": "https://user:pw@example.org/y?auth=a1&x=keep"},
        },
    )
    shown = panelbot(cfg, "config", "show")
    assert shown.returncode == 0, shown.stderr
    for secret in ("qsecret", "k3y", "s1g", "a1", "pw"):
        assert secret not in shown.stdout, secret
    assert "page=2" in shown.stdout and "x=keep" in shown.stdout
    assert mask_userinfo("see https://h/p?token=abc#f") == "see https://h/p?token=***#f"
    assert mask_userinfo("not a url?token=abc") == "not a url?token=abc"


# -- 9. wording -------------------------------------------------------------------------------


async def test_help_before_joining_says_how_to_join(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path))
    try:
        chat = Chat(bot)
        (before,) = await chat.say("sim:new", "HELP")
        assert "START to join" in before and "rejoin" not in before
        welcome = await chat.say("sim:new", "hello")
        (pending,) = await chat.say("sim:new", "HELP")
        assert "START to join" in pending and "rejoin" not in pending
        await chat.say("sim:new", "yes")
        (joined,) = await chat.say("sim:new", "HELP")
        assert "START to rejoin" in joined
        assert welcome
    finally:
        await bot.stop()


async def test_the_first_consent_question_offers_yes_and_no(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path))
    try:
        message = InboundMessage(Address("sim", "asked"), "hello", "m-1")
        result = await bot.handle(message)
        marks = ",".join("?" * len(result.outbox_ids))
        rows = await bot.db.fetchall(
            f"SELECT template, extra FROM outbox WHERE id IN ({marks})",
            result.outbox_ids,
        )
        consent = [json.loads(r["extra"]) for r in rows if r["template"] == "consent"]
        assert [o["reply"] for o in consent[0]["options"]] == ["YES", "NO"]
        assert [o["label"] for o in consent[0]["options"]] == ["Yes", "No"]
    finally:
        await bot.stop()


def test_a_problem_that_clears_is_logged_grammatically(caplog: pytest.LogCaptureFixture) -> None:
    from bot.dispatcher import ProblemLog

    problems = ProblemLog()
    for row in (1, 2):
        problems.failed("reconcile:sms", "look-up failed", owner=row)
    for row in (1, 2):
        problems.cleared("reconcile:sms", "reconciliation look-ups", owner=row)
    (line,) = [r.getMessage() for r in caplog.records if "look-ups" in r.getMessage()]
    # Not "reconciliation look-ups works again".
    assert line == "reconciliation look-ups succeeded again (after 2 failed attempts)"


# -- 10. `make bench` runs what the README says ---------------------------------------------


def test_make_bench_runs_each_quick_benchmark() -> None:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    planned = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert planned.returncode == 0, planned.stderr
    scripts = re.findall(r"bench/(\w+)\.py", planned.stdout)
    assert scripts == [
        "inbound",
        "webhook",
        "dispatch",
        "broadcast",
        "weighting",
        "evidence",
        "selection",
    ]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(f"bench/{s}.py" in readme for s in scripts)


# -- 11. the README's example numbers import ------------------------------------------------


def test_the_readmes_example_numbers_import() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    numbers = re.findall(r"`(\+44\d{10})`", readme)
    assert numbers
    for number in numbers:
        assert mobile_phone(number) == number
