"""A full disk, end to end: webhooks refused with 503 (never 500), nothing stored lost, and
once there is room again every message answered and every invitation sent exactly once.

The parts ``panelbot serve`` runs, assembled in this process on real SQLite files: the main
process's Bot (engine, dispatcher, scheduler) with the inbox reader, and a web process's
Bot with its inbox writer behind the real Starlette app under uvicorn (as
``bot.web.workers.run_web_child`` builds it), the real Twilio SDK against the fake Twilio.
Both files are made full with ``PRAGMA max_page_count`` on the connections that write
them, and ballast rows in every page left: SQLite itself then answers SQLITE_FULL, as on
a full disk.

A full disk is rarely over in seconds: it stays full here for longer than the inbox's
retries of a payload take (``MAX_ATTEMPTS`` tries, ``RETRY_EVERY`` apart), so a payload
the web process accepted before the disk filled must still be answered once it empties.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import inbox as inbox_module
from bot.app import Bot
from bot.inbox import InboxReader, InboxWriter, open_inbox
from bot.storage.db import Database, Writer
from tests.conftest import REPO, make_settings
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    post_signed,
)
from tests.webserver import serving

pytestmark = pytest.mark.slow

SURVEY = REPO / "tests" / "data" / "every-type.toml"
BOT_NUMBER = "+447400100000"
MESSAGES = "/webhooks/twilio/messages"
UNLIMITED = 1073741823


async def cap(conn: sqlite3.Connection | Writer, pages: int) -> None:
    result = conn.execute(f"PRAGMA max_page_count = {pages}")
    if inspect.isawaitable(result):
        await result


async def fill(db: Database, *others: sqlite3.Connection | Writer) -> None:
    """Make ``db``'s file full for its connection (and ``others`` writing the same file):
    every page taken, none more allowed."""
    await db.writer.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
    pages = (await db.writer.execute_fetchall("PRAGMA page_count"))[0][0]
    await db.writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    for other in others:
        await cap(other, pages + 2)
    for size in (4000, 1000, 100, 10, 1):
        while True:
            try:
                async with db.transaction() as conn:
                    await conn.execute("INSERT INTO ballast VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc), exc
                break


async def free(db: Database, *others: sqlite3.Connection | Writer) -> None:
    await db.writer.execute(f"PRAGMA max_page_count = {UNLIMITED}")
    for other in others:
        await cap(other, UNLIMITED)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, twilio: FakeTwilio) -> AsyncIterator[dict[str, Any]]:
    settings = make_settings(
        tmp_path,
        bot={"public_base_url": "http://panel.test"},
        channels={
            "simulator": {"enabled": True},
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": BOT_NUMBER,
                "api_base_url": twilio.url,
                "rate_per_second": 200,
            },
        },
        outbox={"poll_interval": 0.2, "retry_backoff": ["1s"]},
    )
    main = await Bot.create(settings)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    reader: InboxReader | None = None
    web: Bot | None = None
    inbox_db: Database | None = None
    writer: InboxWriter | None = None
    try:
        await main.start()
        reader = await InboxReader.open(main, wake_fd=wake_r)
        web = await Bot.create(settings, migrate=False)
        inbox_db = await open_inbox(web.db.path, writer=True)
        writer = InboxWriter(inbox_db, notify_fd=wake_w)
        await web.start_web(writer)
        async with serving(web, start_bot=False) as url:
            # The inbox writer's own connection is the one that stores webhooks; the
            # reader's (main process) writes the same file.
            yield {
                "main": main,
                "inbox": inbox_db,
                "writer": writer._conn,
                "reader": reader.db.writer,
                "web_main": web.db.writer,  # the web process writes the panel's file too
                "url": url,
            }
    finally:
        if writer is not None:
            await writer.close()
        if inbox_db is not None:
            await inbox_db.close()
        if web is not None:
            await web.db.close()
        if reader is not None:
            await reader.close()
        await main.stop()
        for fd in (wake_r, wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


async def cli(config_dir: Path, *args: str) -> None:
    """A panelbot command on the same database (its own process)."""
    config = config_dir / "cli.toml"
    config.write_text(
        '[bot]\nname = "Test Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        '[[panel.fields]]\nname = "age_band"\n'
        'values = ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]\n'
        '[[panel.fields]]\nname = "sex"\n'
        'values = ["female", "male", "other", "prefer_not_to_say"]\n',
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "-c", str(config), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()


async def eventually(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def test_a_full_disk_refuses_with_503_loses_nothing_and_answers_everyone_once_after(
    tmp_path: Path,
) -> None:
    unseen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: unseen.append(ctx))
    wave = [f"+4474008{i:05d}" for i in range(60)]
    early = [f"+4474007{i:05d}" for i in range(40)]  # accepted before the inbox filled
    late = [f"+4474006{i:05d}" for i in range(40)]  # sent while everything is full
    csv = tmp_path / "panel.csv"
    csv.write_text(
        "phone,telegram_chat_id,locale,consent_at,age_band,sex\n"
        + "".join(f"{n},,en,2026-01-01,25-34,female\n" for n in wave),
        encoding="utf-8",
    )
    # The panel and the survey are in the database before the bot starts.
    await cli(tmp_path, "db", "upgrade")
    await cli(tmp_path, "panel", "import", str(csv))
    await cli(tmp_path, "survey", "add", str(SURVEY))

    async with FakeTwilio().running() as twilio, served(tmp_path, twilio) as parts:
        main: Bot = parts["main"]
        inbox_db: Database = parts["inbox"]
        public = "http://panel.test"
        stored_before = (await main.db.fetchone("SELECT count(*) FROM panellists"))[0]
        async with httpx.AsyncClient(base_url=parts["url"], timeout=30) as client:

            async def hello(number: str, n: int) -> httpx.Response:
                params = inbound_params(f"SM{n:032x}", number, "Hello", to=BOT_NUMBER)
                return await post_signed(client, MESSAGES, params, public_base_url=public)

            # The wave starts; the panel's database fills up mid-wave.
            await cli(tmp_path, "survey", "launch", "every-type")
            await twilio.wait_for_posts(1, timeout=15)
            await fill(main.db, parts["web_main"])
            # Webhooks still have room in the inbox: accepted, but the engine cannot
            # store what they bring yet.
            answers = await asyncio.gather(*(hello(n, i) for i, n in enumerate(early)))
            assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
            # Now the inbox's file is full too: refused with 503 and Retry-After.
            await fill(inbox_db, parts["writer"], parts["reader"])
            refused = await asyncio.gather(*(hello(n, 1000 + i) for i, n in enumerate(late)))
            # A row that still fits in a page's free bytes may be stored (as on a real full
            # disk); the others are refused with 503 and Retry-After, never 500.
            codes = Counter(r.status_code for r in refused)
            assert set(codes) <= {200, 503} and codes[503] >= len(late) // 2, codes
            assert all(r.headers.get("Retry-After") for r in refused if r.status_code == 503)
            # Too long to fit in what a full page has left, so surely refused; whether the
            # name's claim fitted in the panel's file or not, the 503 gives the browser the
            # cookie it would be claimed for.
            sim = await client.post(
                "/simulator/api/messages", json={"from": "sim:full", "text": "é" * 4000}
            )
            assert sim.status_code == 503, (sim.status_code, sim.text)
            assert sim.headers.get("set-cookie", "").startswith("panelbot_sim="), sim.headers
            refused_headers = dict(sim.headers)
            sim_cookies = httpx.Cookies(client.cookies)

            # Full for longer than the inbox retries a payload.
            await asyncio.sleep(inbox_module.MAX_ATTEMPTS * inbox_module.RETRY_EVERY + 3)

            await free(inbox_db, parts["writer"], parts["reader"])
            await free(main.db, parts["web_main"])
            # Twilio sends again what got 503 (with #rc on the webhook URL); a repeat of one
            # already stored is answered and ignored.
            left = list(enumerate(late))
            for _ in range(3):  # #rc=3: Twilio tries up to three more times
                again = await asyncio.gather(*(hello(n, 1000 + i) for i, n in left))
                left = [
                    (i, n) for (i, n), r in zip(left, again, strict=True) if r.status_code != 200
                ]
                assert all(r.status_code in (200, 503) for r in again)
                if not left:
                    break
                await asyncio.sleep(1.0)
            assert not left, f"still refused once there is room: {len(left)}"
        everyone = early + late

        async def all_answered() -> bool:
            return all(twilio.sent_to(n) for n in everyone) and all(
                any("How easy was it?" in (m["body"] or "") for m in twilio.sent_to(n))
                for n in wave
            )

        await eventually(all_answered, 60, "everyone answered and invited once there is room")
        await asyncio.sleep(1.0)  # a second copy of anything would show by now
        received = Counter(m["to"] for m in twilio.messages)
        wrong = {n: received[n] for n in everyone + wave if received[n] != 1}
        assert not wrong, f"not exactly one message each: {list(wrong.items())[:5]}"
        rows = await main.db.fetchall(
            "SELECT provider_message_id, count(*) AS n FROM inbound_messages "
            "WHERE channel = 'sms' GROUP BY provider_message_id"
        )
        assert len(rows) == len(everyone) and {r["n"] for r in rows} == {1}
        assert (await main.db.fetchone("SELECT count(*) FROM panellists"))[0] >= stored_before

        # What the dispatcher could not record while the file was full (the provider's
        # answers, kept in memory) is recorded once there is room, with its own backoff
        # (``record_max_backoff``): once everyone is answered it may still be on its way.
        async def all_recorded() -> bool:
            held = await main.db.fetchone(
                "SELECT count(*) FROM outbox WHERE status NOT IN ('sent', 'delivered')"
            )
            return held[0] == 0

        await eventually(all_recorded, 30, "every send result recorded once there is room")
        # The same browser as during the refusal, now there is room: its name was not lost.
        async with httpx.AsyncClient(
            base_url=parts["url"], timeout=30, cookies=sim_cookies
        ) as client:
            sim = await client.post(
                "/simulator/api/messages", json={"from": "sim:full", "text": "hello"}
            )
            assert sim.status_code == 200, (sim.text, "the 503's headers", refused_headers)
    gc.collect()  # a task that died unseen is reported when it is collected
    await asyncio.sleep(0)
    assert unseen == [], unseen[:3]
