"""Erasure down to the bytes, subject access, retention and owner-only backups.

Real SQLite files throughout; the end-to-end erasure runs a real ``panelbot serve`` with a
web process against the fake Twilio API, and greps the raw bytes of the database, the
inbox and their write-ahead logs afterwards (issue 9 #6, retention; issue 10 backup).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.config import Settings, dump_toml, settings_from_dict
from bot.inbox import InboxWriter, inbox_path, open_inbox
from bot.models import Address, InboundMessage, MessageKind, iso, utcnow
from bot.panel import erase_panellist
from bot.scheduler import Scheduler
from bot.storage import outbox as outbox_store
from bot.storage.db import Database
from tests.test_panel import (
    CONFIG,
    HEADER,
    PHONE,
    load,
    opened,
    panelbot,
    seed_person_with_history,
)
from tests.test_workers import SURVEY, serving, sms_reply, texts_to, wait_until

MIDNIGHT = "T00:00:00.000+00:00"


@pytest.fixture
def panel_settings(tmp_path: Path) -> Settings:
    return settings_from_dict(CONFIG, base_dir=tmp_path, source=None)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """The same settings as a config file, for the command line."""
    path = tmp_path / "panelbot.toml"
    path.write_text(dump_toml(CONFIG), encoding="utf-8")
    return path


def panelbot_db(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "db", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=config.parent,
        timeout=120,
    )


def raw_hits(database: Path, needles: list[str]) -> list[str]:
    """Which needles appear in the raw bytes of the database, the inbox and their logs,
    read as they are on disk (no checkpoint first)."""
    found = []
    inbox = inbox_path(database)
    for path in (database, Path(f"{database}-wal"), inbox, Path(f"{inbox}-wal")):
        if path.exists():
            data = path.read_bytes()
            found += [f"{path.name}: {n!r}" for n in needles if n.encode() in data]
    return found


# -- erasure while `panelbot serve` runs ---------------------------------------------------


async def test_erase_while_serving_leaves_no_byte_of_them_in_any_file(tmp_path: Path) -> None:
    number, other = "+447400200001", "+447400200002"
    secret = "zebra marmalade at the surgery"
    sids: dict[str, list[str]] = {number: [], other: []}
    async with serving(tmp_path, workers=1) as (server, twilio, _telegram):

        async def say(who: str, text: str) -> str:
            reply = await sms_reply(server, twilio, who, text)
            sids[who].append(f"SM{server.sids:032x}")  # the sid Serve.sms just used
            return reply

        for who in (number, other):
            # Chat text that is not a survey answer (free-text answers are kept, detached).
            for text in (f"Hello, {secret} {who[-1]}", "yes", "1"):
                await say(who, text)
        await server.cli("survey", "add", str(SURVEY))
        await server.cli("survey", "launch", "every-type")
        for who in (number, other):
            await wait_until(
                lambda who=who: any("How easy was it?" in t for t in texts_to(twilio, who)),
                what="the invitation",
            )
            for answer in ("1", "4", "yes", "3"):
                await say(who, answer)
            assert "Thanks for finishing" in await say(who, "all fine")
        database = tmp_path / "panel.db"
        theirs = [
            number,
            number[1:],  # also inside %2B447400200001 in a stored form body
            number.replace("+44", "0"),
            f"{secret} 1",
            *sids[number],
            *(m["sid"] for m in twilio.sent_to(number)),
        ]
        # Before the erasure the check sees them, in the inbox's log above all.
        before = raw_hits(database, theirs)
        assert any("inbox-wal" in hit for hit in before), before
        assert any(secret in hit for hit in before), before
        with closing(sqlite3.connect(database)) as db:
            answers = db.execute("SELECT count(*) FROM answers").fetchone()[0]

        # While serve and its web process hold both files open.
        out = await server.cli("panel", "erase", "--yes", number)
        assert out.startswith("erased panellist 1:"), out
        assert raw_hits(database, theirs) == []
        assert raw_hits(database, [other, f"{secret} 2"])  # the other person is untouched

        # The bot goes on for everyone else, and still nothing of theirs comes back.
        await say(other, "HELP")  # answered (sms_reply waits for the reply)
        assert raw_hits(database, theirs) == []
        code, stderr = await server.stop()
        assert code == 0, stderr
        assert raw_hits(database, theirs) == []

    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT count(*) FROM answers").fetchone()[0] == answers
        times = [r[0] for r in db.execute("SELECT answered_at FROM answers ORDER BY id")]
        assert sum(t.endswith(MIDNIGHT) for t in times) == answers // 2
        # Nor do their row ids place them between the other person's exactly timed rows:
        # they answered first, and their answers and session now come after.
        assert [t.endswith(MIDNIGHT) for t in times] == [False] * (answers // 2) + [True] * (
            answers // 2
        )
        sessions = db.execute("SELECT panellist_id FROM survey_sessions ORDER BY id").fetchall()
        assert sessions == [(2,), (None,)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute(
            "SELECT count(*) FROM inbound_messages WHERE provider_message_id LIKE 'SM%'"
        ).fetchone()[0] == len(sids[other])


# -- erasure and subject access, in one process --------------------------------------------


async def test_erase_removes_provider_ids_and_keeps_answer_times_to_the_day(
    panel_settings: Settings,
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        async with bot.db.transaction() as conn:
            row = await outbox_store.queue(
                conn, key="test:sent", panellist_id=pid, address=Address("sms", PHONE),
                text="Question 1 of 6", kind=MessageKind.REPLY,
            )  # fmt: skip
            await outbox_store.mark_sent(conn, row or 0, provider_message_id="SMout0123456789")
        other = await bot.db.fetchone("SELECT id FROM panellists WHERE id != ?", (pid,))
        await bot.handle(InboundMessage(Address("sms", "+447400100102"), "Hi", "SM-other"))
        await erase_panellist(bot.db, bot.hash_key, pid)
        db = bot.db
        ids = {r[0] for r in await db.fetchall("SELECT provider_message_id FROM inbound_messages")}
        assert {"SM-hello", "SM-2"}.isdisjoint(ids) and "SM-other" in ids
        assert {i for i in ids if i != "SM-other"} <= {f"erased:{n}" for n in range(1, 10)}
        outbound = await db.fetchall(
            "SELECT provider_message_id, idempotency_key, created_at, sent_at, extra FROM outbox "
            "WHERE panellist_id IS NULL AND address IS NULL"
        )
        assert outbound and all(r["provider_message_id"] is None for r in outbound)
        assert all(r["idempotency_key"].startswith("erased:") for r in outbound)
        assert all(r["created_at"].endswith(MIDNIGHT) for r in outbound)
        assert all(r["sent_at"] is None or r["sent_at"].endswith(MIDNIGHT) for r in outbound)
        # Answers, sessions, invitations, the inbound rows and the audit log: to the day.
        for table, column in (
            ("answers", "answered_at"),
            ("survey_sessions", "started_at"),
            ("survey_sessions", "finished_at"),
            ("invitations", "created_at"),
            ("invitations", "sent_at"),
            ("inbound_messages", "received_at"),
        ):
            values = [
                r[0]
                for r in await db.fetchall(
                    f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
                    + (
                        " AND provider_message_id != 'SM-other'"
                        if table == "inbound_messages"
                        else ""
                    )
                )
            ]
            assert values and all(v.endswith(MIDNIGHT) for v in values), (table, column, values)
        # (The erasure's own entry keeps its time: it is tied to no message.)
        audit = await db.fetchall(
            "SELECT at FROM audit_log WHERE panellist_id = ? AND action != 'erased'", (pid,)
        )
        assert audit and all(r[0].endswith(MIDNIGHT) for r in audit)
        # Someone else keeps their precise times.
        theirs = await db.fetchone(
            "SELECT received_at FROM inbound_messages WHERE provider_message_id = 'SM-other'"
        )
        assert other is not None and not theirs[0].endswith(MIDNIGHT)


async def test_show_includes_provider_ids_errors_and_payloads_waiting_in_the_inbox(
    cfg: Path, panel_settings: Settings
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        async with bot.db.transaction() as conn:
            row = await outbox_store.queue(
                conn, key="test:sent", panellist_id=pid, address=Address("sms", PHONE),
                text="Question 1 of 6", kind=MessageKind.REPLY,
            )  # fmt: skip
            await outbox_store.mark_sent(conn, row or 0, provider_message_id="SMout0123456789")
        inbox = await open_inbox(bot.db.path)
        writer = InboxWriter(inbox)
        try:
            await writer.put("twilio-message", "SMwait", urlencode({"From": PHONE, "Body": "late"}))
            await writer.put(
                "twilio-message", "SMelse", urlencode({"From": "+447400100102", "Body": "no"})
            )
        finally:
            await writer.close()
            await inbox.close()
    result = panelbot(cfg, "show", PHONE)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {m["provider_message_id"] for m in data["inbound_messages"]} == {"SM-hello", "SM-2"}
    sent = [m for m in data["outbound_messages"] if m["provider_message_id"] == "SMout0123456789"]
    assert len(sent) == 1 and sent[0]["status"] == "sent"
    failed = [m for m in data["outbound_messages"] if m["status"] == "failed"]
    assert failed and failed[0]["last_error"] == f"'To' number {PHONE} is invalid"
    assert all("idempotency_key" in m and "attempts" in m for m in data["outbound_messages"])
    (waiting,) = data["waiting_webhook_payloads"]
    assert waiting["key"] == "SMwait" and "Body=late" in waiting["payload"]


# -- the inbox's log, emptied by the running reader ---------------------------------------


async def test_the_reader_empties_the_inbox_log_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.inbox as inbox_module
    from bot.inbox import InboxReader

    monkeypatch.setattr(inbox_module, "TRUNCATE_EVERY", 0.05)
    database = tmp_path / "panel.db"
    web_side = await open_inbox(database, writer=True)
    writer = InboxWriter(web_side)
    handled: list[str] = []

    async def handle(payload: str, _received) -> None:
        handled.append(payload)

    reader = InboxReader(await open_inbox(database), {"sim-message": handle})
    await reader.start()
    try:
        await writer.put("sim-message", "k1", '{"from": "sim:ann", "text": "my private words"}')
        await wait_until(lambda: handled, what="the payload handled")
        wal = Path(f"{inbox_path(database)}-wal")
        await wait_until(
            lambda: reader.truncations >= 1 and b"my private words" not in wal.read_bytes(),
            what="the log emptied",
        )
        assert b"my private words" not in inbox_path(database).read_bytes()
    finally:
        await reader.close()
        await writer.close()
        await web_side.close()


# -- retention ------------------------------------------------------------------------------


async def age(db: Database, days: int, where: str = "1") -> None:
    """Move rows back in time, as if they had been stored ``days`` ago."""
    shift = f"'-{days} days'"
    async with db.transaction() as tx:
        tx.later(
            "UPDATE inbound_messages SET received_at = "
            f"strftime('%Y-%m-%dT%H:%M:%f+00:00', received_at, {shift}) WHERE {where}"
        )
        tx.later(
            "UPDATE outbox SET created_at = "
            f"strftime('%Y-%m-%dT%H:%M:%f+00:00', created_at, {shift}) WHERE {where}"
        )


async def test_retention_deletes_old_message_texts_and_keeps_answers(
    cfg: Path, panel_settings: Settings
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        async with bot.db.transaction() as conn:
            row = await outbox_store.queue(
                conn, key="test:sent", panellist_id=pid, address=Address("sms", PHONE),
                text="Old question", kind=MessageKind.REPLY,
            )  # fmt: skip
            await outbox_store.mark_sent(conn, row or 0, provider_message_id="SMold")
        await age(bot.db, 400)
        # A new message, from today, that must stay.
        await bot.handle(InboundMessage(Address("sms", PHONE), "new words", "SM-new"))
        inbox = await open_inbox(bot.db.path)
        async with inbox.transaction() as tx:
            tx.later(
                "INSERT INTO inbox (source, key, payload, received_at) VALUES (?, ?, ?, ?)",
                ("twilio-message", "SMancient", "Body=ancient", 1000.0),
            )
        await inbox.close()
        answers = await bot.db.fetchall("SELECT question_id, value, answered_at FROM answers")

    result = panelbot_db(cfg, "prune")
    assert result.returncode == 0, result.stderr
    assert "answers kept" in result.stdout

    with closing(sqlite3.connect(panel_settings.bot.database)) as db:
        inbound = db.execute(
            "SELECT text, provider_message_id FROM inbound_messages ORDER BY id"
        ).fetchall()
        assert ("new words", "SM-new") in inbound
        old = [r for r in inbound if r[1] != "SM-new"]
        assert old and all(t is None and i.startswith("pruned:") for t, i in old)
        sent = db.execute(
            "SELECT text, provider_message_id FROM outbox WHERE status = 'sent'"
        ).fetchall()
        assert sent == [(None, None)]
        # Queued ones are not finished: left for the dispatcher.
        queued = db.execute("SELECT text FROM outbox WHERE status = 'queued'").fetchall()
        assert queued and all(t is not None for (t,) in queued)
        assert db.execute("SELECT question_id, value, answered_at FROM answers").fetchall() == [
            tuple(r) for r in answers
        ]
        audit = db.execute("SELECT detail FROM audit_log WHERE action = 'messages_pruned'")
        assert json.loads(audit.fetchone()[0])["inbound_messages"] == len(old)
    with closing(sqlite3.connect(inbox_path(panel_settings.bot.database))) as inbox_db:
        assert inbox_db.execute("SELECT key FROM inbox").fetchall() == []
    # Nothing more to do the second time.
    again = panelbot_db(cfg, "prune")
    assert again.returncode == 0 and "0 inbound messages, 0 outbound messages" in again.stdout


async def test_the_scheduler_prunes_daily_with_the_configured_limit(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {**CONFIG, "privacy": {"keep_messages_for": "30d"}}, base_dir=tmp_path, source=None
    )
    assert settings.privacy.keep_messages_for == timedelta(days=30)
    async with opened(settings) as bot:
        await bot.handle(InboundMessage(Address("sim", "ann"), "hello there", "sim-1"))
        await bot.handle(InboundMessage(Address("sim", "bob"), "recent words", "sim-2"))
        await age(bot.db, 31, "provider_message_id = 'sim-1'")
        scheduler = Scheduler(bot.db, bot.settings, bot.run_wave_step)
        await scheduler.start()
        try:
            job = scheduler.aps.get_job("panelbot:retention")
            assert job is not None and job.trigger.interval == timedelta(days=1)
            assert scheduler.aps.get_job("panelbot:checkpoint") is not None
            await job.func()
        finally:
            await scheduler.stop()
        texts = await bot.db.fetchall("SELECT text FROM inbound_messages ORDER BY id")
    assert [r[0] for r in texts] == [None, "recent words"]


def test_keep_messages_for_must_be_a_duration(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        dump_toml({**CONFIG, "privacy": {"keep_messages_for": "a year"}}), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "config", "check"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "privacy.keep_messages_for" in result.stderr + result.stdout


# -- backups ---------------------------------------------------------------------------------


async def test_backup_is_owner_only_covers_the_inbox_and_restores(
    cfg: Path, panel_settings: Settings, tmp_path: Path
) -> None:
    async with opened(panel_settings) as bot:
        await load(bot, f"{HEADER}\n{PHONE},,en,2025-01-15,25-34,female,north\n")
        inbox = await open_inbox(bot.db.path)
        writer = InboxWriter(inbox)
        await writer.put("twilio-message", "SMwait", urlencode({"From": PHONE, "Body": "hi"}))
        await writer.close()
        await inbox.close()
    target = tmp_path / "backups" / "panel-copy.db"
    target.parent.mkdir()
    old_umask = os.umask(0o022)  # what made the copy 0644 before
    try:
        result = panelbot_db(cfg, "backup", str(target))
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr
    copy_inbox = inbox_path(target)
    assert result.stdout.strip() == f"backed up to {target} and {copy_inbox}"
    for path in target.parent.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert {p.name for p in target.parent.iterdir()} >= {"panel-copy.db", "panel-copy.db-inbox"}

    # Restored: the two files side by side under the database's name, and the bot reads them.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(target, restored / "panel.db")
    shutil.copy(copy_inbox, restored / "panel.db-inbox")
    config = restored / "panelbot.toml"
    config.write_text(dump_toml(CONFIG), encoding="utf-8")
    shown = panelbot(config, "show", PHONE)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["demographics"]["sex"] == "female"
    assert [p["key"] for p in data["waiting_webhook_payloads"]] == ["SMwait"]
    db = await Database.open(restored / "panel.db", migrate=False)
    await db.close()

    # Never over an existing file, the inbox's copy included; nothing half-written.
    again = panelbot_db(cfg, "backup", str(target))
    assert again.returncode == 1 and "already exists" in again.stderr
    other = tmp_path / "backups" / "second.db"
    inbox_path(other).write_text("keep me")
    blocked = panelbot_db(cfg, "backup", str(other))
    assert blocked.returncode == 1 and "second.db-inbox already exists" in blocked.stderr
    assert not other.exists()


# -- the engine's group commit --------------------------------------------------------------


async def test_a_lone_surrogate_in_a_burst_loses_no_other_message(
    panel_settings: Settings,
) -> None:
    async with opened(panel_settings) as bot:
        messages = [
            InboundMessage(Address("sim", f"p{i}"), "\ud800" if i == 5 else "hello", f"s-{i}")
            for i in range(20)
        ]
        outcomes = await asyncio.gather(*(bot.handle(m) for m in messages), return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        stored = await bot.db.fetchall("SELECT provider_message_id FROM inbound_messages")
    assert sorted(r[0] for r in stored) == sorted(f"s-{i}" for i in range(20))


async def test_a_send_in_flight_at_the_erasure_records_no_provider_id_or_exact_time(
    panel_settings: Settings,
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        async with bot.db.transaction() as conn:
            row = await outbox_store.queue(
                conn, key="test:flight", panellist_id=pid, address=Address("sms", PHONE),
                text="On its way", kind=MessageKind.REPLY,
            )  # fmt: skip
        # The dispatcher has claimed it and is waiting for Twilio when the erasure comes.
        await bot.db.execute_write("UPDATE outbox SET status = 'sending' WHERE id = ?", (row,))
        await erase_panellist(bot.db, bot.hash_key, pid)
        async with bot.db.transaction() as conn:
            await outbox_store.mark_sent(conn, row or 0, provider_message_id="SMlate0001")
        # Recorded as sent, but neither Twilio's id nor the exact time goes on the row.
        late = await bot.db.fetchone(
            "SELECT provider_message_id, status, sent_at, updated_at FROM outbox WHERE id = ?",
            (row,),
        )
        assert late is not None and late["provider_message_id"] is None
        assert late["status"] == "sent"
        assert late["sent_at"].endswith(MIDNIGHT)
        assert late["updated_at"].endswith(MIDNIGHT)

        await bot.scheduler.checkpoint()
        after = await bot.db.fetchone(
            "SELECT provider_message_id, status, sent_at, updated_at FROM outbox WHERE id = ?",
            (row,),
        )
        other = await bot.db.fetchone(
            "SELECT count(*) FROM outbox WHERE provider_message_id IS NOT NULL"
        )
    assert after is not None and after["provider_message_id"] is None
    assert after["status"] == "sent"
    assert after["sent_at"].endswith(MIDNIGHT) and after["updated_at"].endswith(MIDNIGHT)
    assert other is not None and other[0] == 0


STRANGER = "+447700900555"


async def test_replies_to_people_we_keep_nothing_about_lose_text_then_address(
    panel_settings: Settings,
) -> None:
    """A stranger who says no: the reply to the no carries no panellist. Its text goes when
    it is sent; its number and Twilio's id (kept for the status callbacks) a day later, at
    the checkpoint job; so do the provider ids of what they sent."""
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        for n, text in enumerate(["hello", "1", "no"]):
            await bot.handle(InboundMessage(Address("sms", STRANGER), text, f"SMin{n}"))
            async with bot.db.transaction() as conn:  # the dispatcher sends the replies
                claimed = await outbox_store.claim_due(
                    conn, now=utcnow(), limit=50, channels=["sms", "whatsapp", "telegram"]
                )
                for message, _ in claimed:
                    await outbox_store.mark_sent(
                        conn, message.id, provider_message_id=f"SMout{message.id}"
                    )
        strangers = "SELECT * FROM outbox WHERE panellist_id IS NULL ORDER BY id"
        sent = await bot.db.fetchall(strangers)
        assert {r["status"] for r in sent} == {"sent"}, [dict(r) for r in sent]
        assert [r["text"] for r in sent] == [None] * len(sent)  # the reply to the no: at once
        assert sent[-1]["address"] == STRANGER  # kept a while
        assert all(r["provider_message_id"] for r in sent)  # status callbacks still match
        kept = await bot.db.fetchall(
            "SELECT text FROM outbox WHERE panellist_id = ? AND text IS NOT NULL", (pid,)
        )
        assert kept  # a panellist's messages are theirs to keep (retention aside)

        await bot.scheduler.checkpoint()  # a minute later: too soon for the address
        assert (await bot.db.fetchall(strangers))[-1]["address"] == STRANGER

        day_ago = iso(utcnow() - timedelta(days=1, minutes=1))
        async with bot.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET created_at = ?, updated_at = ? WHERE panellist_id IS NULL",
                (day_ago, day_ago),
            )
            await conn.execute("UPDATE inbound_messages SET received_at = ?", (day_ago,))
        await bot.scheduler.checkpoint()
        after = await bot.db.fetchall(strangers)
        inbound = await bot.db.fetchall(
            "SELECT text, provider_message_id FROM inbound_messages WHERE panellist_id IS NULL"
        )
        kept_after = await bot.db.fetchall(
            "SELECT text FROM outbox WHERE panellist_id = ? AND text IS NOT NULL", (pid,)
        )
    assert len(after) == len(sent)
    for row in after:
        assert (row["address"], row["provider_message_id"], row["text"]) == (None, None, None)
    assert len(inbound) == 3
    assert all(
        r["text"] is None and r["provider_message_id"].startswith("pruned:") for r in inbound
    )
    assert len(kept_after) == len(kept)
