"""``panelbot serve --workers N``: web processes in front of the bot, end to end.

A real ``panelbot serve`` process with two web processes, the real Twilio and Telegram SDKs
pointed at the fakes in tests/fakes (served in this test's event loop), signed webhooks over
HTTP: people sign up and finish a survey by SMS and by Telegram, repeats and forgeries are
refused or dropped, a web process that dies is replaced, SIGTERM leaves nothing behind, and
payloads stored before a stop are handled at the next start, also in one-process mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import REPO
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    post_signed,
    status_params,
)
from tests.test_serve import free_port

SURVEY = REPO / "tests" / "data" / "every-type.toml"
BOT_NUMBER = "+447400100000"
SECRET = "s3cret-for-webhooks"
MESSAGES = "/webhooks/twilio/messages"


def write_config(folder: Path, port: int, twilio_url: str, telegram_url: str, workers: int) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""
[bot]
name = "Workers Panel"
database = "panel.db"
quiet_hours = false
public_base_url = "http://127.0.0.1:{port}"

[web]
port = {port}
workers = {workers}

[channels.simulator]
enabled = true

[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "What is your sex?"

[channels.twilio]
enabled = true
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{BOT_NUMBER}"
api_base_url = "{twilio_url}"

[channels.telegram]
enabled = true
token = "{TOKEN}"
mode = "webhook"
secret_token = "{SECRET}"
api_base_url = "{telegram_url}"
per_chat_interval = 0.05

[outbox]
poll_interval = 0.2
""",
        encoding="utf-8",
    )
    return config


def children_of(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    if not tasks:
        raise FileNotFoundError(f"/proc/{pid}")
    found: list[int] = []
    for task in tasks:
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # that thread ended between listing and reading: it started no one now
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def nice_of(pid: int, tid: int | None = None) -> int:
    """The nice value of a process's thread (its main thread by default), from /proc."""
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def inbox_rows(folder: Path) -> int:
    with contextlib.closing(sqlite3.connect(folder / "panel.db-inbox")) as conn:
        return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])


def db_value(folder: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with contextlib.closing(sqlite3.connect(folder / "panel.db")) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


async def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


class Serve:
    """A ``panelbot serve`` subprocess and a client for it."""

    def __init__(self, folder: Path, config: Path, port: int) -> None:
        self.folder = folder
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.public = self.base
        self.process: asyncio.subprocess.Process | None = None
        self.client = httpx.AsyncClient(base_url=self.base, timeout=15)
        self.sids = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "-c", str(self.config), "serve"),
            stderr=asyncio.subprocess.PIPE,
        )
        # The banner comes once every web process is ready.
        assert self.process.stderr is not None
        seen = []
        while True:
            line = await asyncio.wait_for(self.process.stderr.readline(), timeout=30)
            if not line:
                raise AssertionError(f"serve exited: {b''.join(seen).decode()}")
            seen.append(line)
            if b"panelbot serving on" in line:
                break
        assert (await self.client.get("/healthz")).status_code == 200

    async def stop(self) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout=30)
        err = await self.process.stderr.read() if self.process.stderr else b""
        return code, err.decode(errors="replace")

    async def sms(self, sender: str, text: str, *, sid: str | None = None) -> httpx.Response:
        if sid is None:
            self.sids += 1
            sid = f"SM{self.sids:032x}"
        params = inbound_params(sid, sender, text, to=BOT_NUMBER)
        return await post_signed(self.client, MESSAGES, params, public_base_url=self.public)

    async def telegram(self, update: dict[str, Any], secret: str = SECRET) -> httpx.Response:
        return await self.client.post(
            "/webhooks/telegram",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        )

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "-c", str(self.config), *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        return out.decode()


@contextlib.asynccontextmanager
async def serving(
    folder: Path, workers: int = 2
) -> AsyncIterator[tuple[Serve, FakeTwilio, FakeTelegram]]:
    async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
        port = free_port()
        config = write_config(folder, port, twilio.url, telegram.base_url, workers)
        server = Serve(folder, config, port)
        try:
            await server.start()
            yield server, twilio, telegram
        finally:
            if server.process is not None and server.process.returncode is None:
                server.process.kill()
                await server.process.wait()
            await server.client.aclose()


def texts_to(twilio: FakeTwilio, number: str) -> list[str]:
    return [m.get("body") or "" for m in twilio.sent_to(number)]


async def sms_reply(server: Serve, twilio: FakeTwilio, number: str, text: str) -> str:
    """Send ``text`` from ``number`` and return the next message the bot sends them."""
    before = len(twilio.sent_to(number))
    response = await server.sms(number, text)
    assert response.status_code == 200, response.text
    await wait_until(lambda: len(twilio.sent_to(number)) > before, what=f"a reply to {text!r}")
    return texts_to(twilio, number)[before]


async def telegram_reply(server: Serve, telegram: FakeTelegram, chat: int, text: str) -> str:
    before = len(telegram.sent(chat))
    response = await server.telegram(telegram.message_update(chat, text))
    assert response.status_code == 200, response.text
    await wait_until(lambda: len(telegram.sent(chat)) > before, what=f"a reply to {text!r}")
    return telegram.sent(chat)[before].text


async def test_people_sign_up_and_finish_a_survey_by_sms_and_telegram_through_web_processes(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (server, twilio, telegram):
        assert server.process is not None
        web = children_of(server.process.pid)
        assert len(web) == 2 and all(alive(pid) for pid in web)

        number, chat = "+447400200001", 5151
        assert "Reply YES to join" in await sms_reply(server, twilio, number, "Hello")
        assert "What is your sex?" in await sms_reply(server, twilio, number, "yes")
        assert "you have joined" in await sms_reply(server, twilio, number, "1")
        assert "Hello from Workers Panel" in await telegram_reply(server, telegram, chat, "hi")
        await telegram_reply(server, telegram, chat, "yes")
        assert "you have joined" in await telegram_reply(server, telegram, chat, "2")

        await server.cli("survey", "add", str(SURVEY))
        await server.cli("survey", "launch", "every-type")
        await wait_until(
            lambda: any("How easy was it?" in t for t in texts_to(twilio, number)),
            what="the SMS invitation",
        )
        await wait_until(
            lambda: any("How easy was it?" in c.text for c in telegram.sent(chat)),
            what="the Telegram invitation",
        )
        # "1" (easy) skips the follow-up question: score, NHS App, days, comment.
        for answer in ("1", "4", "yes", "3"):
            await sms_reply(server, twilio, number, answer)
        assert "Thanks for finishing" in await sms_reply(server, twilio, number, "all fine")
        # On Telegram, a tap on the first question's button, then typed answers.
        before = len(telegram.sent(chat))
        response = await server.telegram(telegram.callback_update(chat, "1"))
        assert response.status_code == 200
        await wait_until(lambda: len(telegram.sent(chat)) > before, what="the next question")
        await wait_until(lambda: telegram.calls_to("answerCallbackQuery"), what="the tap answered")
        for answer in ("5", "no", "10"):
            await telegram_reply(server, telegram, chat, answer)
        assert "Thanks for finishing" in await telegram_reply(server, telegram, chat, "ok")
        assert (
            db_value(tmp_path, "SELECT count(*) FROM survey_sessions WHERE state = 'completed'")
            == 2
        )

        # A status callback goes through the inbox too, and never moves backwards.
        sid = twilio.sent_to(number)[-1]["sid"]
        for status in ("delivered", "sent"):
            response = await post_signed(
                server.client,
                "/webhooks/twilio/status",
                status_params(sid, status, to=number),
                public_base_url=server.public,
            )
            assert response.status_code == 200
        await wait_until(
            lambda: (
                db_value(
                    tmp_path, "SELECT status FROM outbox WHERE provider_message_id = ?", (sid,)
                )
                == "delivered"
            ),
            what="the delivered status",
        )

        code, stderr = await server.stop()
        assert code == 0, stderr
        assert "Traceback" not in stderr
        assert not any(alive(pid) for pid in web), "web processes outlived serve"
        assert inbox_rows(tmp_path) == 0


async def test_repeats_forgeries_and_bad_bodies_through_web_processes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, twilio, telegram):
        number = "+447400200002"
        # Twilio repeats a slow webhook: five copies at once are one message.
        sid = "SM" + "ab" * 16
        answers = await asyncio.gather(*(server.sms(number, "Hello", sid=sid) for _ in range(5)))
        assert [r.status_code for r in answers] == [200] * 5
        await wait_until(lambda: texts_to(twilio, number), what="the welcome")
        await asyncio.sleep(0.5)  # a second copy handled late would show up by now
        assert len(texts_to(twilio, number)) == 1
        assert (
            db_value(
                tmp_path,
                "SELECT count(*) FROM inbound_messages WHERE provider_message_id = ?",
                (sid,),
            )
            == 1
        )

        # Forged: wrong token. Refused, nothing stored anywhere.
        params = inbound_params("SM" + "cd" * 16, "+447400200003", "Hello", to=BOT_NUMBER)
        forged = await post_signed(
            server.client, MESSAGES, params, public_base_url=server.public, auth_token="wrong"
        )
        assert forged.status_code == 403
        bad_secret = await server.telegram(telegram.message_update(77, "hi"), secret="nope")
        assert bad_secret.status_code == 403
        # Not form data / not an update: a 400 with a reason, never a 5xx.
        body = urlencode(params).encode() + b"\xff\xfe"
        garbled = await server.client.post(
            MESSAGES,
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "x",
            },
        )
        assert garbled.status_code == 400
        not_update = await server.telegram({"hello": "world"})
        assert not_update.status_code == 400
        await asyncio.sleep(0.5)
        assert inbox_rows(tmp_path) == 0
        assert (
            db_value(tmp_path, "SELECT count(*) FROM addresses WHERE address = '+447400200003'")
            == 0
        )
        assert not telegram.sent(77)

        # The simulator's JSON API waits for the main process's reply.
        response = await server.client.post(
            "/simulator/api/messages", json={"from": "sim:ann", "text": "hello"}
        )
        assert response.status_code == 200
        assert "Reply YES to join" in response.json()["replies"][0]


async def test_a_web_process_that_dies_is_replaced(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, twilio, _):
        assert server.process is not None
        first = children_of(server.process.pid)
        os.kill(first[0], signal.SIGKILL)
        await wait_until(
            lambda: (
                (now := children_of(server.process.pid))  # type: ignore[union-attr]
                and len([p for p in now if alive(p)]) == 2
                and first[0] not in now
            ),
            what="a new web process",
        )
        # Still serving: a sign-up goes through.
        assert "Reply YES to join" in await sms_reply(server, twilio, "+447400200004", "Hi")
        # The main process's event loop runs at a lower priority ([web] main_process_nice,
        # default 5); web processes, a replacement included, keep the priority serve had.
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice_of(server.process.pid) == min(19, base + 5)
        assert [nice_of(pid) for pid in children_of(server.process.pid)] == [base, base]
        code, stderr = await server.stop()
        assert code == 0
        assert "starting another" in stderr


async def test_a_web_process_killed_before_serve_is_ready_is_started_again(
    tmp_path: Path,
) -> None:
    """The first web process killed while serve starts (the OOM killer, an operator): serve
    starts another, counted against its restart budget, instead of ending with exit 1."""
    async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
        port = free_port()
        config = write_config(tmp_path, port, twilio.url, telegram.base_url, 1)
        server = Serve(tmp_path, config, port)
        killed: list[int] = []

        async def kill_the_first_web_process() -> None:
            await wait_until(lambda: server.process is not None, 30, "serve to start")
            assert server.process is not None
            pid = server.process.pid
            first = await wait_until(lambda: children_of(pid), 30, "a web process")
            os.kill(first[0], signal.SIGKILL)
            killed.append(first[0])

        try:
            killer = asyncio.create_task(kill_the_first_web_process())
            await server.start()
            await killer
            assert server.process is not None
            assert killed and killed[0] not in children_of(server.process.pid)
            assert "Reply YES to join" in await sms_reply(server, twilio, "+447400200009", "Hi")
            code, stderr = await server.stop()
            assert code == 0, stderr
        finally:
            if server.process is not None and server.process.returncode is None:
                server.process.kill()
                await server.process.wait()
            await server.client.aclose()


@pytest.mark.parametrize("workers", [0, 1])
async def test_payloads_stored_before_a_stop_are_handled_at_the_next_start(
    tmp_path: Path, workers: int
) -> None:
    from bot.inbox import InboxWriter, open_inbox

    # A web process stored a message, then everything stopped before the main process
    # handled it (a crash, a power cut).
    (tmp_path / "panel.db").touch(exist_ok=False)
    (tmp_path / "panel.db").unlink()
    inbox = await open_inbox(tmp_path / "panel.db")
    try:
        params = inbound_params("SM" + "ef" * 16, "+447400200005", "Hello", to=BOT_NUMBER)
        await InboxWriter(inbox).put("twilio-message", params["MessageSid"], urlencode(params))
    finally:
        await inbox.close()
    async with serving(tmp_path, workers=workers) as (server, twilio, _):
        await wait_until(lambda: texts_to(twilio, "+447400200005"), what="the welcome")
        assert "Reply YES to join" in texts_to(twilio, "+447400200005")[0]
        await wait_until(lambda: inbox_rows(tmp_path) == 0, what="the inbox emptied")
        code, _ = await server.stop()
        assert code == 0


async def test_healthz_of_a_web_process_reports_the_inbox_and_a_stuck_main_process(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, workers=1) as (server, _, _):
        health = (await server.client.get("/healthz")).json()
        assert health == {
            "status": "ok",
            "inbox": {"waiting": 0, "oldest_seconds": 0.0, "failed": 0},
        }
        # A payload nobody can handle (no channel takes its source), two minutes old: the
        # main process keeps failing it, and the web process says so.
        with contextlib.closing(sqlite3.connect(tmp_path / "panel.db-inbox")) as conn:
            conn.execute(
                "INSERT INTO inbox (source, key, payload, received_at) VALUES (?, ?, ?, ?)",
                ("retired-channel", "k1", "{}", time.time() - 120),
            )
            conn.commit()
        response = await server.client.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "error"
        assert body["inbox"]["waiting"] == 1 and body["inbox"]["oldest_seconds"] >= 120
        await wait_until(
            lambda: db_inbox_error(tmp_path, "k1"), what="the failure recorded on the row"
        )
        assert "no handler" in db_inbox_error(tmp_path, "k1")


def db_inbox_error(folder: Path, key: str) -> str | None:
    with contextlib.closing(sqlite3.connect(folder / "panel.db-inbox")) as conn:
        row = conn.execute("SELECT last_error FROM inbox WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


async def test_db_inbox_shows_payloads_given_up_on_and_retry_sends_them_back(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, workers=1) as (server, twilio, _):
        # A message the bot gave up on (its five attempts failed, say while a disk was
        # full): shown without its contents, then sent back once the cause is fixed.
        params = inbound_params("SM" + "12" * 16, "+447400200006", "Hello", to=BOT_NUMBER)
        with contextlib.closing(sqlite3.connect(tmp_path / "panel.db-inbox")) as conn:
            conn.execute(
                "INSERT INTO inbox (source, key, payload, received_at, attempts, last_error) "
                "VALUES (?, ?, ?, ?, 5, ?)",
                (
                    "twilio-message",
                    params["MessageSid"],
                    urlencode(params),
                    time.time() - 30,
                    "OperationalError: database or disk is full",
                ),
            )
            conn.commit()
        shown = await server.cli("db", "inbox")
        assert "given up on 1" in shown
        assert "twilio-message" in shown and "disk is full" in shown
        assert "+447400200006" not in shown and "Hello" not in shown
        await asyncio.sleep(1.5)
        assert not texts_to(twilio, "+447400200006")  # given up on: not tried again by itself
        assert "1 payload sent back" in await server.cli("db", "inbox", "--retry")
        await wait_until(lambda: texts_to(twilio, "+447400200006"), what="the retried message")
        assert "Reply YES to join" in texts_to(twilio, "+447400200006")[0]
        await wait_until(lambda: inbox_rows(tmp_path) == 0, what="the inbox emptied")
        assert "given up on 0" in await server.cli("db", "inbox")
