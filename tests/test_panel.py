"""`panelbot panel`: CSV import, export, subject access and erasure, on real SQLite files."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import Bot
from bot.config import Settings, dump_toml, settings_from_dict
from bot.models import Address, InboundMessage, MessageKind, OutboxStatus, PanellistStatus, utcnow
from bot.panel import (
    ImportReport,
    SuppressedOnly,
    erase_panellist,
    export_rows,
    import_parsed,
    mask,
    parse_panel_csv,
    resolve_panellist,
    subject_access,
    write_csv,
)
from bot.panel_csv import PanelFileError, parse_consent
from bot.storage import inbound as inbound_store
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.surveys.loader import load_survey_file

REPO = Path(__file__).resolve().parent.parent
PHONE = "+447400100101"
DIGITS = "7400100101"  # in every way the number may have been written
HEADER = "phone,telegram_chat_id,locale,consent_at,age_band,sex,locality"
CONFIG: dict[str, Any] = {
    "bot": {"name": "Test Panel", "database": "panel.db", "locales": ["en", "cy"]},
    "panel": {
        "fields": [
            {"name": "age_band", "values": ["16-24", "25-34", "35-44", "45-54", "55-64", "65+"]},
            {"name": "sex", "values": ["female", "male", "other"]},
            {"name": "locality", "values": ["north", "south"]},
        ]
    },
}


@pytest.fixture
def panel_settings(tmp_path: Path) -> Settings:
    return settings_from_dict(CONFIG, base_dir=tmp_path, source=None)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """The same settings as a config file, for the command line."""
    path = tmp_path / "panelbot.toml"
    path.write_text(dump_toml(CONFIG), encoding="utf-8")
    return path


def panelbot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(cfg), "panel", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,  # not a terminal: erase does not ask
        env=env,
        cwd=cfg.parent,
        timeout=120,
    )


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Bot]:
    bot = await Bot.create(settings)
    try:
        yield bot
    finally:
        await bot.stop()


async def load(bot: Bot, text: str) -> ImportReport:
    parsed = parse_panel_csv(text.encode("utf-8"), bot.settings)
    return await import_parsed(bot.db, bot.hash_key, bot.settings, parsed)


async def people(bot: Bot) -> list[dict[str, Any]]:
    return await export_rows(bot.db.conn, bot.settings)


# -- import -------------------------------------------------------------------------------


def test_cli_import_bom_crlf_reports_each_bad_row_by_line(
    cfg: Path, panel_settings: Settings
) -> None:
    rows = [
        HEADER + ",notes",
        "07400 100101,,en,2025-01-15,25-34,female,north,",  # line 2
        '+447400100102,,cy,,35-44,Male,south,"two\nlines"',  # lines 3-4
        "12345,,,,,,,",  # line 5
        "+447400100103,,,,99,,,",  # line 6
        ",,en,,,,,",  # line 7
        "+447400100104,,de,,,,,",  # line 8
        "+447400100105,,,31/01/2025,,,,",  # line 9
        ",-100123,,2025-02-01T10:00,65+,,,",  # line 10
    ]
    path = cfg.parent / "panel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    result = panelbot(cfg, "import", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 added, 0 updated, 5 rejected"
    assert result.stderr.splitlines() == [
        'warning: unknown column "notes" ignored',
        'line 5: phone "12345": not a valid phone number',
        'line 6: age_band "99": not one of 16-24, 25-34, 35-44, 45-54, 55-64, 65+',
        "line 7: needs a phone or a telegram_chat_id",
        'line 8: locale "de": not one of en, cy',
        'line 9: consent_at "31/01/2025": not an ISO date or date-time '
        "(e.g. 2025-01-31 or 2025-01-31T14:30)",
    ]
    with sqlite3.connect(panel_settings.bot.database) as db:
        stored = db.execute(
            "SELECT a.address, p.status, p.stage, p.locale, p.demographics FROM panellists p "
            "JOIN addresses a ON a.panellist_id = p.id ORDER BY p.id"
        ).fetchall()
    assert [r[:4] for r in stored] == [
        (PHONE, "active", None, "en"),
        ("+447400100102", "pending", "consent", "cy"),
        ("-100123", "active", None, "en"),
    ]
    assert [json.loads(r[4]) for r in stored] == [
        {"age_band": "25-34", "sex": "female", "locality": "north"},
        {"age_band": "35-44", "sex": "male", "locality": "south"},  # case made as configured
        {"age_band": "65+"},
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"phone,age_band,sex\n+447400100101,16-24,male\n", "locality"),
        (HEADER.encode() + b"\n+447400100101,,,,16-24,f\xe9male,north\n", "not UTF-8"),
        (b"locale,age_band,sex,locality\nen,16-24,male,north\n", "neither"),
        (b"", "empty"),
        (HEADER.encode() + b"\n", "no data rows"),
        (HEADER.encode() + b"\n12345,,,,,,\n", "no rows imported"),
    ],
)
def test_cli_import_refuses_unusable_file_with_one_line(
    cfg: Path, panel_settings: Settings, content: bytes, message: str
) -> None:
    path = cfg.parent / "panel.csv"
    path.write_bytes(content)
    result = panelbot(cfg, "import", str(path))
    assert result.returncode == 1
    assert message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


async def test_reimport_updates_without_duplicates(panel_settings: Settings) -> None:
    async with opened(panel_settings) as bot:
        first = await load(bot, f"{HEADER}\n{PHONE},,,,25-34,,north\n,555,cy,,,male,\n")
        assert (first.added, first.updated, first.rejected) == (2, 0, 0)
        before = await people(bot)
        assert [p["status"] for p in before] == ["pending", "pending"]
        # Another format of the same number; a blank cell keeps what is stored.
        again = await load(
            bot, f"{HEADER}\n07400 100101,,cy,2025-03-01,35-44,female,\n,555,,,,,south\n"
        )
        assert (again.added, again.updated, again.rejected) == (0, 2, 0)
        after = await people(bot)
    assert [p["id"] for p in after] == [p["id"] for p in before]
    assert after[0]["status"] == "active"
    assert after[0]["locale"] == "cy"
    assert after[0]["demographics"] == {"age_band": "35-44", "sex": "female", "locality": "north"}
    assert after[1]["status"] == "pending"
    assert after[1]["demographics"] == {"sex": "male", "locality": "south"}


async def test_consented_people_are_active_and_invitable(panel_settings: Settings) -> None:
    async with opened(panel_settings) as bot:
        await load(bot, f"{HEADER}\n{PHONE},,,2025-01-15T09:30,,,\n+447400100102,,,,,,\n")
        async with bot.db.transaction() as conn:
            active = await panellist_store.active_ids(conn)
            pending = await panellist_store.find_by_address(conn, Address("sms", "+447400100102"))
            consented = await panellist_store.find_by_address(conn, Address("sms", PHONE))
    assert consented is not None and pending is not None
    assert active == [consented.id]
    assert consented.stage is None
    assert consented.consent_at == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)  # GMT in January
    assert pending.stage == "consent"


def test_consent_times_are_local_and_not_in_the_future() -> None:
    london = ZoneInfo("Europe/London")
    assert parse_consent("2025-07-01T10:00", london) == datetime(2025, 7, 1, 9, tzinfo=UTC)
    assert parse_consent("2025-07-01", london) == datetime(2025, 6, 30, 23, tzinfo=UTC)
    with pytest.raises(ValueError, match="future"):
        parse_consent((datetime.now(UTC) + timedelta(days=3)).isoformat(), london)


async def test_import_refuses_opted_out_conflicting_and_suppressed_rows(
    panel_settings: Settings,
) -> None:
    async with opened(panel_settings) as bot:
        await load(bot, f"{HEADER}\n{PHONE},,,2025-01-01,,,\n,777,,,,,\n+447400100107,,,,,,\n")
        async with bot.db.transaction() as conn:
            person = await panellist_store.find_by_address(conn, Address("sms", PHONE))
            assert person is not None
            await panellist_store.update(conn, person.id, status="opted_out")
            await panellist_store.suppress(
                conn, bot.hash_key, Address("sms", "+447400100109"), "opted_out"
            )
        fresh = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        report = await load(
            bot,
            f"{HEADER}\n{PHONE},,,2025-06-01,,,\n+447400100107,777,,,,,\n"
            f"+447400100109,,,2025-01-01,,,\n+447400100109,,,{fresh},,,\n",
        )
        async with bot.db.transaction() as conn:
            still = await panellist_store.get(conn, person.id)
            lifted = await panellist_store.suppression(
                conn, bot.hash_key, Address("sms", "+447400100109")
            )
    assert [str(p) for p in report.problems] == [
        "line 2: opted out; not re-subscribed by import",
        "line 3: phone and telegram_chat_id belong to different panellists (2 and 3)",
        'line 4: phone "+447400100109": on the suppression list (opted out '
        f"{utcnow().date().isoformat()}); needs a consent_at later than that",
    ]
    assert report.added == 1  # line 5: fresh consent lifts the suppression
    assert still is not None and still.status == "opted_out"
    assert lifted is None


async def test_two_thousand_rows_import(panel_settings: Settings) -> None:
    lines = [HEADER] + [f"+4474001{n:05d},,,2025-01-01,25-34,female,north" for n in range(2000)]
    async with opened(panel_settings) as bot:
        report = await load(bot, "\n".join(lines))
        assert (report.added, report.rejected) == (2000, 0)
        audit = await bot.db.fetchall("SELECT detail FROM audit_log WHERE action = 'imported'")
    assert len(audit) == 2000
    assert all("+44" not in r[0] for r in audit)


async def test_phone_finds_a_whatsapp_member_and_adds_sms(panel_settings: Settings) -> None:
    async with opened(panel_settings) as bot:
        async with bot.db.transaction() as conn:
            pid = await panellist_store.create(conn, status=PanellistStatus.ACTIVE, locale="en")
            await panellist_store.add_address(conn, pid, Address("whatsapp", PHONE))
        report = await load(bot, f"{HEADER}\n07400 100101,,,,45-54,,\n")
        async with bot.db.transaction() as conn:
            person = await panellist_store.get(conn, pid)
    assert (report.added, report.updated) == (0, 1)
    assert person is not None and person.demographics == {"age_band": "45-54"}
    assert set(person.addresses) == {Address("whatsapp", PHONE), Address("sms", PHONE)}


def test_mask_hides_the_middle_of_numbers() -> None:
    assert mask(PHONE) == "+44740****101"
    assert DIGITS not in mask(PHONE)
    assert mask("123") == "***"


def test_header_problems_refuse_the_file(panel_settings: Settings) -> None:
    with pytest.raises(PanelFileError, match='"phone" appears twice'):
        parse_panel_csv(b"phone,Phone,age_band,sex,locality\n", panel_settings)


# -- erasure, subject access, export --------------------------------------------------------


async def seed_person_with_history(bot: Bot) -> int:
    """A person who wrote in, was imported, answered a survey and got messages."""
    # First contact through the real engine: a pending record, an inbound row, a reply.
    await bot.handle(InboundMessage(Address("sms", PHONE), "Hello", "SM-hello"))
    report = await load(bot, f"{HEADER}\n07400 100101,,en,2025-01-15,25-34,female,north\n")
    assert report.updated == 1
    async with bot.db.transaction() as conn:
        person = await panellist_store.find_by_address(conn, Address("sms", PHONE))
        assert person is not None
        pid = person.id
        await panellist_store.add_address(conn, pid, Address("whatsapp", PHONE))
        await panellist_store.add_address(conn, pid, Address("sim", "erase-me"))
        stored, _ = await survey_store.add(
            conn, load_survey_file(REPO / "examples" / "surveys" / "gp-access.toml")
        )
        now = utcnow()
        wave = await survey_store.create_wave(
            conn, survey_row_id=stored.row_id, opens_at=now, closes_at=now + timedelta(days=7),
            reminder_at=None, sample_size=None, include_new=False,
        )  # fmt: skip
        await survey_store.add_invitation(conn, wave, pid, "sent")
        await survey_store.start_session(
            conn, wave_id=wave, survey_row_id=stored.row_id, panellist_id=pid,
            first_question="ease",
        )  # fmt: skip
        session = await survey_store.active_session(conn, pid)
        assert session is not None
        await survey_store.record_answer(conn, session, "ease", "very_hard")
        await survey_store.record_answer(conn, session, "why_hard", ["phone_busy"])
        await inbound_store.open_turns(
            conn, [(Address("sms", PHONE), "SM-2", "my number is 07400 100101", now)]
        )
        for n, status in enumerate((OutboxStatus.QUEUED, OutboxStatus.FAILED)):
            row = await outbox_store.queue(
                conn, key=f"test:{n}", panellist_id=pid, address=Address("sms", PHONE),
                text=f"Hi, message {n}", kind=MessageKind.INVITATION,
            )  # fmt: skip
            if status == OutboxStatus.FAILED:
                await outbox_store.mark_final(
                    conn, row or 0, status=status, error=f"'To' number {PHONE} is invalid"
                )
        # A reply with the number but no panellist id (queued before the record existed).
        await outbox_store.queue(
            conn, key="test:orphan", panellist_id=None, address=Address("whatsapp", PHONE),
            text="Welcome", kind=MessageKind.REPLY,
        )  # fmt: skip
    # Someone else, who must be untouched.
    await load(bot, f"{HEADER}\n+447400100102,,en,2025-01-15,35-44,male,south\n")
    return pid


def traces(db_path: Path, needles: tuple[str, ...]) -> list[str]:
    """Every place in the database file, its log and its tables where a needle appears."""
    found = []
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                found += [f"{table}: {row}" for n in needles if n in repr(row)]
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        if path.exists():
            data = path.read_bytes()
            found += [f"{path.name}: bytes" for n in needles if n.encode() in data]
    return found


async def test_cli_erase_leaves_no_trace_and_keeps_answers(
    cfg: Path, panel_settings: Settings
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
        answers_before = await bot.db.fetchall("SELECT question_id, value FROM answers")
    db_path = panel_settings.bot.database
    needles = (DIGITS, "7400 100101", "erase-me")
    assert traces(db_path, needles)  # the check can see the data while it is there

    result = panelbot(cfg, "erase", "07400 100101")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"erased panellist {pid}: 3 addresses deleted")
    assert "answers kept" in result.stdout
    assert DIGITS not in result.stdout + result.stderr

    assert traces(db_path, needles) == []
    with sqlite3.connect(db_path) as db:
        cursor = db.execute("SELECT * FROM panellists WHERE id = ?", (pid,))
        person = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
        assert person["status"] == "erased" and person["erased_at"]
        assert person["demographics"] == "{}"
        assert person["locale"] is person["consent_at"] is person["link_code"] is None
        # Kept, though not in their old order (their ids are shuffled: see test_privacy.py).
        assert sorted(db.execute("SELECT question_id, value FROM answers").fetchall()) == sorted(
            tuple(r) for r in answers_before
        )
        assert db.execute("SELECT panellist_id, state FROM survey_sessions").fetchall() == [
            (None, "stopped")
        ]
        assert db.execute("SELECT panellist_id FROM invitations").fetchall() == [(None,)]
        statuses = db.execute("SELECT status FROM outbox WHERE panellist_id IS NULL").fetchall()
        assert "queued" not in {r[0] for r in statuses}
        assert db.execute("SELECT reason FROM suppressions").fetchall() == [("erased",)] * 2
        audit = db.execute("SELECT detail FROM audit_log WHERE action = 'erased'").fetchall()
        assert len(audit) == 1 and json.loads(audit[0][0])["addresses"] == 3
        other = db.execute("SELECT address FROM addresses").fetchall()
    assert other == [("+447400100102",)]

    # The number comes back only with consent given after the erasure.
    csv_path = cfg.parent / "back.csv"
    csv_path.write_text(f"{HEADER}\n{PHONE},,,2025-06-01,,,\n", encoding="utf-8")
    refused = panelbot(cfg, "import", str(csv_path))
    assert refused.returncode == 1
    assert "line 2: phone" in refused.stderr and "suppression list (erased" in refused.stderr
    fresh = datetime.now(UTC).isoformat()
    csv_path.write_text(f"{HEADER}\n{PHONE},,,{fresh},,,\n", encoding="utf-8")
    accepted = panelbot(cfg, "import", str(csv_path))
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == "1 added, 0 updated, 0 rejected"


async def test_cli_show_gives_everything_about_one_person(
    cfg: Path, panel_settings: Settings
) -> None:
    async with opened(panel_settings) as bot:
        pid = await seed_person_with_history(bot)
    result = panelbot(cfg, "show", "+44 (0)7400 100101")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["panellist"]["id"] == pid
    assert {(a["channel"], a["address"]) for a in data["addresses"]} == {
        ("sms", PHONE), ("whatsapp", PHONE), ("sim", "erase-me"),
    }  # fmt: skip
    assert data["demographics"] == {"age_band": "25-34", "sex": "female", "locality": "north"}
    assert data["consent"]["consent_method"] == "import"
    assert [i["status"] for i in data["invitations"]] == ["sent"]
    (session,) = data["survey_sessions"]
    assert session["survey_id"] == "gp-access-2026"
    assert {a["question_id"]: a["value"] for a in session["answers"]} == {
        "ease": "very_hard", "why_hard": ["phone_busy"],
    }  # fmt: skip
    assert [m["text"] for m in data["inbound_messages"]] == ["Hello", "my number is 07400 100101"]
    # Including the reply queued before the record had an id.
    assert {"Hi, message 0", "Hi, message 1", "Welcome"} <= {
        m["text"] for m in data["outbound_messages"]
    }
    assert all("status" in m and "created_at" in m for m in data["outbound_messages"])
    assert "imported" in [e["action"] for e in data["audit_log"]]
    assert json.loads(panelbot(cfg, "show", "sim:erase-me").stdout)["panellist"]["id"] == pid
    assert json.loads(panelbot(cfg, "show", str(pid)).stdout)["panellist"]["id"] == pid

    unknown = panelbot(cfg, "show", "+447400100199")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "panelbot: no panellist matches '+447400100199'"
    assert panelbot(cfg, "erase", "--yes", str(pid)).returncode == 0
    gone = panelbot(cfg, "show", PHONE)
    assert gone.returncode == 1 and "suppression list (erased" in gone.stderr


async def test_resolve_panellist_accepts_ids_phones_and_addresses(
    panel_settings: Settings,
) -> None:
    async with opened(panel_settings) as bot:
        await load(bot, f"{HEADER}\n{PHONE},,,,,,\n,42,,,,,\n")
        conn, key = bot.db.conn, bot.hash_key
        assert await resolve_panellist(conn, key, "1") == 1
        for text in ("07400100101", "+44 7400 100101", "sms:07400 100101", f"whatsapp:{PHONE}"):
            assert await resolve_panellist(conn, key, text) == 1, text
        assert await resolve_panellist(conn, key, "telegram:42") == 2
        for text in ("99", "12345", "fax:1", "sim:nobody", ""):
            assert await resolve_panellist(conn, key, text) is None, text
        await erase_panellist(bot.db, key, 1)
        with pytest.raises(SuppressedOnly, match="erased"):
            await resolve_panellist(conn, key, PHONE)
        assert (await subject_access(conn, key, 1) or {})["panellist"]["status"] == "erased"
        assert (await erase_panellist(bot.db, key, 1)).already_erased


async def test_export_csv_round_trips_through_import(
    cfg: Path, panel_settings: Settings, tmp_path: Path
) -> None:
    text = (
        f"{HEADER}\n{PHONE},,cy,2025-01-15T10:00,25-34,female,north\n"
        "+447400100102,-100555,,,65+,,south\n,777,en,2025-02-01,,male,\n+447400100104,,,,,,\n"
    )
    async with opened(panel_settings) as bot:
        await load(bot, text)
        await erase_panellist(bot.db, bot.hash_key, 4)
        out = io.StringIO()
        write_csv(await people(bot), panel_settings, out)
        original = await people(bot)
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert exported[3] == {**dict.fromkeys(exported[3], ""), "id": "4", "status": "erased"}

    # Into a fresh database: the same people, and the erased one refused, not resurrected.
    other = settings_from_dict(
        {**CONFIG, "bot": {**CONFIG["bot"], "database": "other.db"}}, base_dir=tmp_path
    )
    async with opened(other) as bot:
        report = await load(bot, out.getvalue())
        copied = await people(bot)
    assert (report.added, report.updated) == (3, 0)
    assert [str(p) for p in report.problems] == [
        "line 5: erased; nothing to import; needs a phone or a telegram_chat_id"
    ]
    keep = ("status", "phone", "telegram_chat_id", "locale", "consent_at", "demographics")
    assert [{k: p[k] for k in keep} for p in copied] == [
        {k: p[k] for k in keep} for p in original[:3]
    ]

    # Into the same database through the command line: updates, no duplicates.
    path = tmp_path / "export.json"
    assert panelbot(cfg, "export", "--format", "json", "--output", str(path)).returncode == 0
    # As in CSV, a consent given as a date (local midnight) is written as that date.
    dated = [{**p, "consent_at": "2025-02-01"} if p["id"] == 3 else p for p in original]
    assert original[2]["consent_at"] == "2025-02-01T00:00:00.000+00:00"
    assert json.loads(path.read_text(encoding="utf-8")) == dated
    csv_path = tmp_path / "export.csv"
    assert panelbot(cfg, "export", "--output", str(csv_path)).returncode == 0
    result = panelbot(cfg, "import", str(csv_path))
    assert result.stdout.strip() == "0 added, 3 updated, 1 rejected", result.stderr


async def test_erase_deletes_their_webhook_payloads_still_waiting_in_the_inbox(
    panel_settings: Settings,
) -> None:
    from urllib.parse import urlencode

    from bot.inbox import InboxWriter, open_inbox

    async with opened(panel_settings) as bot:
        await load(bot, f"{HEADER}\n{PHONE},42,,,,,\n+447400100102,,,,,,\n")
        inbox = await open_inbox(bot.db.path)
        writer = InboxWriter(inbox)
        try:
            # Theirs by SMS, WhatsApp and Telegram, and someone else's.
            await writer.put("twilio-message", "SM1", urlencode({"From": PHONE, "Body": "hi"}))
            await writer.put(
                "twilio-message", "SM2", urlencode({"From": f"whatsapp:{PHONE}", "Body": "x"})
            )
            await writer.put(
                "telegram-update",
                "7",
                json.dumps({"update_id": 7, "message": {"chat": {"id": 42}, "text": "hi"}}),
            )
            await writer.put(
                "twilio-message", "SM3", urlencode({"From": "+447400100102", "Body": "me"})
            )
        finally:
            await writer.close()
        report = await erase_panellist(bot.db, bot.hash_key, 1)
        rows = await inbox.fetchall("SELECT key FROM inbox")
        await inbox.close()
    assert [r["key"] for r in rows] == ["SM3"]
    assert report.counts["inbox_payloads"] == 3
    assert "3 waiting webhook payloads deleted" in report.summary()
