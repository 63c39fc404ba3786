"""Resource limits and security headers, over real uvicorn on 127.0.0.1.

- Bodies: a Content-Length over the route's cap gets 413 before a byte of the body is read;
  a chunked body is counted and cut.
- Request heads: over the cap, 431 and the connection closed; a connection that sends no
  complete request is closed after the deadline.
- Request bodies that stall, trickle under the minimum rate after their grace, or take
  longer than the request deadline have their connections closed.
- Connections: at the limit, the slowest connection still sending its request is closed
  to make room; ``panelbot serve`` run with a low open file limit, with hundreds of idle
  connections or dozens trickling request bodies, still answers a signed webhook with 200,
  and the refusals are logged.
- Security headers on every route's answers.
- The per-sender limit: past ``[bot] max_inbound_per_minute`` messages in a minute from
  one address, messages are stored but not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.engine.sender_limit import SenderLimit
from bot.models import Address, InboundMessage
from bot.web import limits
from bot.web.app import _Server, build_app
from tests.conftest import Chat, make_settings
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    post_signed,
)
from tests.test_serve import free_port

PUBLIC = "https://panel.example.org"
SENDER = "+447400100000"
MESSAGES = "/webhooks/twilio/messages"


@contextlib.asynccontextmanager
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[str, int, Bot]]:
    """The bot's app (Twilio and the simulator on) under uvicorn with serve's settings."""
    async with FakeTwilio().running() as fake:
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": PUBLIC},
            channels={
                "simulator": {"enabled": True},
                "twilio": {
                    "enabled": True,
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": SENDER,
                    "api_base_url": fake.url,
                },
            },
        )
        bot = await Bot.create(settings)
        app = await build_app(bot)
        server = _Server(limits.server_config(app, host="127.0.0.1", port=0))
        await bot.start()
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}", port, bot
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=10)
            await bot.stop()


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes or answers and goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        out = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    timeout = 0.5  # the answer has come: read what follows briefly
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


# --- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/simulator/api/messages", MESSAGES, "/webhooks/telegram", "/healthz", "/nowhere"]
)
async def test_a_declared_body_over_the_cap_is_refused_before_it_is_read(
    tmp_path: Path, path: str
) -> None:
    async with guarded(tmp_path) as (_, port, _bot):
        # 100 MB announced and none sent: an answer can only come without reading it.
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 104857600\r\n\r\n"
        ).encode()
        response = await exchange(port, head)
        assert status_of(response) == 413
        assert b"connection: close" in response.lower()
        assert b"nosniff" in response


async def test_a_webhook_body_just_over_64_kb_is_refused_and_a_normal_one_is_not(
    tmp_path: Path,
) -> None:
    async with guarded(tmp_path) as (base, _port, bot):
        async with httpx.AsyncClient(base_url=base) as client:
            params = inbound_params("SM" + "1" * 32, "+447400100101", "x" * 70_000, to=SENDER)
            response = await post_signed(client, MESSAGES, params, public_base_url=PUBLIC)
            assert response.status_code == 413
            params = inbound_params("SM" + "2" * 32, "+447400100101", "Hello", to=SENDER)
            response = await post_signed(client, MESSAGES, params, public_base_url=PUBLIC)
            assert response.status_code == 200
        stored = await bot.db.fetchall("SELECT provider_message_id FROM inbound_messages")
        assert [r[0] for r in stored] == ["SM" + "2" * 32]


async def test_a_chunked_body_is_counted_and_cut_at_the_cap(tmp_path: Path) -> None:
    async with guarded(tmp_path) as (_, port, bot):
        cap = limits.body_cap("/simulator/api/messages")
        chunk = b"a" * 4096
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(cap // 4096 + 4))
        head = (
            b"POST /simulator/api/messages HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        response = await exchange(port, head + chunks + b"0\r\n\r\n")
        assert status_of(response) == 413
        # A small chunked body is read as usual.
        body = b'{"from": "sim:chunky", "text": "Hello"}'
        small = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        assert status_of(await exchange(port, head + small)) == 200
        rows = await bot.db.fetchall("SELECT text FROM inbound_messages")
        assert [r[0] for r in rows] == ["Hello"]


# --- request heads and idle connections ------------------------------------------------------


async def test_a_request_head_over_the_cap_gets_431_and_the_connection_is_closed(
    tmp_path: Path,
) -> None:
    async with guarded(tmp_path) as (_, port, _bot):
        big = b"X-Padding: " + b"p" * (limits.MAX_HEAD_BYTES + 1000) + b"\r\n"
        response = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        assert status_of(response) == 431
        # Many small headers add up the same way; a head that fits is answered.
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
        response = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert status_of(response) == 431
        fits = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
        response = await exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fits + b"\r\n"
        )
        assert status_of(response) == 200


async def test_a_connection_that_sends_no_request_is_closed_after_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "HEAD_TIMEOUT", 0.5)
    async with guarded(tmp_path) as (_, port, _bot):
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end of it
        await slow_w.drain()
        try:
            # Both are closed by the server (EOF), well before this test would time out.
            assert await asyncio.wait_for(silent_r.read(), 10) == b""
            assert await asyncio.wait_for(slow_r.read(), 10) == b""
        finally:
            for w in (silent_w, slow_w):
                w.close()


@pytest.mark.parametrize("path", ["/simulator/api/messages", MESSAGES, "/healthz"])
async def test_a_request_body_that_stalls_has_its_connection_closed(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "BODY_TIMEOUT", 0.5)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    async with guarded(tmp_path) as (_, port, _bot):
        with caplog.at_level(logging.INFO):
            kind = "x-www-form-urlencoded" if path == MESSAGES else "json"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/{kind}\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            await writer.drain()
            try:
                # Closed by the server, without an answer: no route is called before its
                # body has come (not even /healthz, which answers a POST with 405).
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()
            assert answer == b""
            # A body that keeps coming, however slowly, is read to the end.
            body = b'{"from": "sim:slow", "text": "Hello"}'
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    b"POST /simulator/api/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                for i in range(0, len(body), 8):
                    writer.write(body[i : i + 8])
                    await writer.drain()
                    await asyncio.sleep(0.2)  # 1 s in all, in steps under the deadline
                assert status_of(await asyncio.wait_for(reader.read(), 10)) == 200
            finally:
                writer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("request body stalled" in line for line in lines), lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], lines


class Trickle:
    """A client sending a POST's announced body a few bytes at a time until the server
    closes the connection (or the body is all sent)."""

    def __init__(self, path: str = MESSAGES, length: int = 60_000) -> None:
        self.path = path
        self.length = length
        self.sent = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, first: bytes = b"A") -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        kind = "x-www-form-urlencoded" if self.path == MESSAGES else "json"
        self.writer.write(
            f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/{kind}\r\n"
            f"Content-Length: {self.length}\r\n\r\n".encode()
            + first
        )
        self.sent = len(first)
        await self.writer.drain()

    def closed(self) -> bool:
        """Whether the server has closed the connection (it answers these with nothing)."""
        assert self.reader is not None
        return self.reader.at_eof()

    async def send(self, data: bytes) -> bool:
        """Send more of the body; False once the server has closed the connection."""
        assert self.writer is not None
        if self.closed():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            return False
        self.sent += len(data)
        return True

    async def until_closed(self, step: bytes, every: float, limit: float) -> bool:
        """Send ``step`` every ``every`` seconds; whether the server closed the connection
        before ``limit`` seconds (and before the body was all sent)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.sent + len(step) < self.length:
            if not await self.send(step):
                return True
            await asyncio.sleep(every)
        # Whatever the server does on its own within the rest of the time.
        assert self.reader is not None
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(self.reader.read(), max(deadline - time.monotonic(), 0.1))
        return self.closed()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def test_a_body_trickled_under_the_minimum_rate_is_closed_after_its_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A byte every 0.1 s is progress, so the stall deadline never came: the connection was
    held as long as the client liked. Now the body must average MIN_BODY_RATE after its
    grace."""
    monkeypatch.setattr(limits, "BODY_GRACE", 0.5)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    async with guarded(tmp_path) as (_, port, bot):
        with caplog.at_level(logging.INFO):
            trickle = Trickle()
            await trickle.open(port)
            try:
                assert await trickle.until_closed(b"A", every=0.1, limit=20)
            finally:
                trickle.close()
            # A body over the grace but well above the rate is read to the end: 20 KB of
            # JSON (padded with spaces) in steps of 2 KB every 0.1 s.
            body = b'{"from": "sim:steady", "text": "Hello"}' + b" " * 20_000
            steady = Trickle("/simulator/api/messages", len(body))
            await steady.open(port, body[:2048])
            try:
                for i in range(2048, len(body), 2048):
                    assert await steady.send(body[i : i + 2048])
                    await asyncio.sleep(0.1)
                assert steady.reader is not None
                head = await asyncio.wait_for(steady.reader.readuntil(b"\r\n\r\n"), 10)
                assert status_of(head) == 200
            finally:
                steady.close()
        rows = await bot.db.fetchall("SELECT text FROM inbound_messages")
        assert [r[0] for r in rows] == ["Hello"]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.limits"]
    assert any("closed a connection sending its request body at" in line for line in lines), lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], lines


async def test_a_request_that_keeps_coming_is_closed_at_the_request_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """2 KB every 0.2 s is never a stall and is above the minimum rate, but a 60 KB body at
    that pace would hold the connection for 6 s: the whole request has a deadline."""
    monkeypatch.setattr(limits, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    async with guarded(tmp_path) as (_, port, bot):
        with caplog.at_level(logging.INFO):
            trickle = Trickle()
            await trickle.open(port, b"A" * 2048)
            try:
                assert await trickle.until_closed(b"A" * 2048, every=0.2, limit=20)
            finally:
                trickle.close()
            assert trickle.sent < trickle.length
        assert await bot.db.fetchall("SELECT id FROM inbound_messages") == []
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.limits"]
    assert any("took over 1 s to send its request" in line for line in lines), lines


async def test_a_client_that_stops_reading_its_answer_is_cut(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer bigger than the socket buffers, to a client that reads none of it: the
    route's task waited to write for ever, holding a place under the limit. Any route
    (a plugin's too) can answer with that much: here one of 64 MB, under serve's settings."""
    monkeypatch.setattr(limits, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    done = asyncio.Event()
    chunk = b"x" * 65536

    async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1024):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        done.set()

    server = _Server(limits.server_config(big, host="127.0.0.1", port=0))
    task = asyncio.create_task(server.serve())
    client = socket.socket()
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        with caplog.at_level(logging.WARNING, logger="bot.web.limits"):
            client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            # The route's task finishes (its writes return once the connection is cut).
            await asyncio.wait_for(done.wait(), 20)
    finally:
        client.close()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.limits"]
    assert any("took none of its answer for 0.5 s" in line for line in lines), lines


async def test_at_the_limit_the_slowest_request_is_closed_to_make_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only idle connections used to be closed to make room: connections trickling request
    bodies counted as busy, and every webhook got 503 while they held the limit."""
    monkeypatch.setattr(limits, "MAX_CONNECTIONS", 16)
    monkeypatch.setattr(limits, "SLOW_AFTER", 0.3)
    # Neither the grace nor the request deadline closes them during the test.
    monkeypatch.setattr(limits, "BODY_GRACE", 60.0)
    monkeypatch.setattr(limits, "REQUEST_TIMEOUT", 60.0)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    async with guarded(tmp_path) as (base, port, _bot):
        trickles = [Trickle() for _ in range(15)]
        try:
            # Fifteen requests half sent (the sixteenth place is for the webhook); the
            # sixth has sent one byte of its body, the others 5,000: it is the slowest.
            for n, trickle in enumerate(trickles):
                await trickle.open(port, b"A" if n == 5 else b"A" * 5000)
            await asyncio.sleep(0.6)  # all older than SLOW_AFTER
            with caplog.at_level(logging.WARNING, logger="bot.web.limits"):
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    params = inbound_params("SM" + "3" * 32, "+447400100102", "Hi", to=SENDER)
                    response = await post_signed(client, MESSAGES, params, public_base_url=PUBLIC)
                    assert response.status_code == 200, response.text
            slowest = trickles[5]
            assert slowest.reader is not None
            assert await asyncio.wait_for(slowest.reader.read(), 10) == b""
            await asyncio.sleep(0.2)
            assert [n for n, t in enumerate(trickles) if t.closed()] == [5]
        finally:
            for trickle in trickles:
                trickle.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.limits"]
    assert any(
        "at the limit of 16 connections: closed one sending its request at" in line
        for line in lines
    ), lines


async def test_when_every_connection_is_busy_new_requests_get_503_and_it_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "MAX_CONNECTIONS", 16)
    monkeypatch.setattr(limits, "refused", limits.RefusalLog())
    # Requests that began sending their bodies under SLOW_AFTER ago are busy, not slow.
    monkeypatch.setattr(limits, "SLOW_AFTER", 60.0)
    monkeypatch.setattr(limits, "BODY_GRACE", 60.0)
    async with guarded(tmp_path) as (_, port, _bot):
        busy = []
        try:
            # Sixteen requests in hand: each announced a body and sent only part of it.
            for _ in range(16):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"POST /simulator/api/messages HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                )
                await writer.drain()
                busy.append(writer)
            await asyncio.sleep(0.3)
            with caplog.at_level(logging.WARNING, logger="bot.web.limits"):
                responses = [
                    await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    for _ in range(5)
                ]
            assert [status_of(r) for r in responses] == [503] * 5
        finally:
            for writer in busy:
                writer.close()
        lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.limits"]
        assert any("all 16 connections are busy" in line for line in lines), lines
        assert any("refused a request with 503" in line for line in lines), lines
        # Rate-limited: one line per kind, not one per refusal.
        assert len(lines) == 2, lines


# --- idle connections at a low open file limit (a real `panelbot serve`) ---------------------


def write_config(folder: Path, port: int, twilio_url: str, workers: int) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""
[bot]
name = "Limits Panel"
database = "panel.db"
quiet_hours = false
public_base_url = "http://127.0.0.1:{port}"

[web]
port = {port}
workers = {workers}

[channels.simulator]
enabled = false

[channels.twilio]
enabled = true
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{SENDER}"
api_base_url = "{twilio_url}"

[outbox]
poll_interval = 0.2
""",
        encoding="utf-8",
    )
    return config


OPEN_FILES = 256


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


@pytest.mark.parametrize("workers", [0, 1])
async def test_hundreds_of_idle_connections_at_a_low_file_limit_do_not_lock_out_webhooks(
    tmp_path: Path, workers: int
) -> None:
    """Past the file limit, new connections used to wait unanswered and nothing was logged:
    every signed webhook failed. Now the idle ones are closed to make room, and it says so."""
    idle_count = OPEN_FILES + 150
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > idle_count + 100
    async with FakeTwilio().running() as twilio:
        port = free_port()
        config = write_config(tmp_path, port, twilio.url, workers)
        log = (tmp_path / "serve.log").open("w+b")
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "-c", str(config), "serve"),
            stderr=log,
            preexec_fn=_low_file_limit,
        )
        base = f"http://127.0.0.1:{port}"
        idle: list[socket.socket] = []
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    assert proc.returncode is None, "serve exited"
                    assert time.monotonic() < deadline, "serve did not start"
                    await asyncio.sleep(0.1)
                for _ in range(idle_count):
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                await asyncio.sleep(0.5)
            for n in range(3):
                # Each on a new connection (not one kept alive from before the idle ones).
                async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
                    params = inbound_params(f"SM{n:032x}", f"+4474001002{n:02d}", "Hi", to=SENDER)
                    response = await post_signed(fresh, MESSAGES, params, public_base_url=base)
                    assert response.status_code == 200, response.text
        finally:
            for s in idle:
                s.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log.seek(0)
        text = log.read().decode(errors="replace")
        limit = limits.connection_limit(OPEN_FILES)
        assert f"at the limit of {limit} connections" in text
        # One line per kind of refusal every few seconds, not one per connection.
        assert text.count("at the limit of") <= 2 * (workers + 1)
        assert "Too many open files" not in text


TRICKLE_FILES = 128


def _trickle_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (TRICKLE_FILES, TRICKLE_FILES))


@pytest.mark.parametrize("workers", [0, 1])
async def test_connections_trickling_bodies_at_a_low_file_limit_do_not_lock_out_webhooks(
    tmp_path: Path, workers: int
) -> None:
    """The attack: at a file limit of 128 (64 connections), 70 connections each announce a
    60,000-byte webhook body and send a byte every 2 s. The body deadline only looked for
    progress and "close the idlest" never picked them: webhooks and /healthz got 503, and
    the connections were never closed. Now a signed webhook gets its 200 within a bounded
    time, every trickling connection is closed, and it is logged."""
    limit = limits.connection_limit(TRICKLE_FILES)
    async with FakeTwilio().running() as twilio:
        port = free_port()
        config = write_config(tmp_path, port, twilio.url, workers)
        log = (tmp_path / "serve.log").open("w+b")
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "-c", str(config), "serve"),
            stderr=log,
            preexec_fn=_trickle_file_limit,
        )
        base = f"http://127.0.0.1:{port}"
        trickles = [Trickle() for _ in range(limit + 6)]
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    assert proc.returncode is None, "serve exited"
                    assert time.monotonic() < deadline, "serve did not start"
                    await asyncio.sleep(0.1)
            for trickle in trickles:
                with contextlib.suppress(ConnectionError):
                    await trickle.open(port)
            started = time.monotonic()
            sending = [
                asyncio.create_task(t.until_closed(b"A", every=2.0, limit=45)) for t in trickles
            ]
            await asyncio.sleep(1.5)
            # A signed webhook, and /healthz, each on a new connection: 200 within 15 s
            # (a 503 while every trickle is younger than SLOW_AFTER is allowed).
            answers: dict[str, int] = {}
            for n in range(3):
                while True:
                    async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
                        params = inbound_params(
                            f"SM{n:032x}", f"+4474001003{n:02d}", "Hi", to=SENDER
                        )
                        webhook = await post_signed(fresh, MESSAGES, params, public_base_url=base)
                    async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
                        health = await fresh.get("/healthz")
                    answers = {"webhook": webhook.status_code, "healthz": health.status_code}
                    if answers == {"webhook": 200, "healthz": 200}:
                        break
                    assert time.monotonic() - started < 15, answers
                    await asyncio.sleep(0.5)
            # Every trickling connection is closed by the server, well before its body ends.
            closed = await asyncio.gather(*sending)
            assert closed.count(True) == len(trickles), closed
        finally:
            for trickle in trickles:
                trickle.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log.seek(0)
        text = log.read().decode(errors="replace")
        assert "closed a connection sending its request body at" in text, text
        # Throttled, and the closed requests never reach the route (which would log each):
        # not a line per connection.
        lines = [line for line in text.splitlines() if " INFO " in line or " WARNING " in line]
        assert len(lines) < len(trickles) // 2, text
        assert "Too many open files" not in text
        assert "Traceback" not in text, text
        assert "+447400100300" not in text


def open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open file limit in /proc")


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 4096)
    port = free_port()
    config = write_config(tmp_path, port, "http://127.0.0.1:9", workers=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "-c", str(config), "serve"],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        assert open_file_limits(proc.pid) == (hard, hard)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


# --- security headers ------------------------------------------------------------------------


COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


async def test_every_route_answers_with_the_security_headers(tmp_path: Path) -> None:
    async with guarded(tmp_path) as (base, _port, _bot):
        async with httpx.AsyncClient(base_url=base) as client:
            answers = {
                "healthz": await client.get("/healthz"),
                "page": await client.get("/simulator"),
                "static": await client.get("/simulator/static/simulator.js"),
                "post": await client.post(
                    "/simulator/api/messages", json={"from": "sim:hdr", "text": "Hello"}
                ),
                "history": await client.get(
                    "/simulator/api/messages", params={"address": "sim:hdr"}
                ),
                "bad json": await client.post("/simulator/api/messages", content=b"{"),
                "identities": await client.get("/simulator/api/identities"),
                "forged webhook": await client.post(MESSAGES, data={"From": "+447400100101"}),
                "telegram off": await client.post("/webhooks/telegram", json={}),
                "not found": await client.get("/no/such/page"),
                "metrics off": await client.get("/metrics"),
                "wrong method": await client.delete("/healthz"),
            }
    assert answers["healthz"].status_code == 200
    assert answers["page"].status_code == 200
    assert answers["forged webhook"].status_code == 403
    assert answers["not found"].status_code == 404
    for name, response in answers.items():
        for header, value in COMMON.items():
            assert response.headers.get(header) == value, (name, header, response.headers)
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, (name, csp)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert response.headers.get("cache-control") == "no-store", name
    # The page keeps its own, stricter policy; only the static files may be cached.
    assert "script-src 'self'" in answers["page"].headers["content-security-policy"]
    assert answers["static"].headers["cache-control"] == "no-cache"
    assert answers["history"].headers["cache-control"] == "no-store"


# --- the per-sender limit --------------------------------------------------------------------


async def say(bot: Bot, address: str, text: str, n: int, at: datetime | None = None) -> bool:
    """Hand one message to the engine; whether it was answered."""
    message = InboundMessage(
        Address.parse(address), text, f"limit-{n}", received_at=at or datetime.now(UTC)
    )
    return bool((await bot.handle(message)).outbox_ids)


async def test_forty_messages_in_a_minute_are_all_stored_and_thirty_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await Bot.create(make_settings(tmp_path))
    try:
        chat = Chat(bot)
        await chat.join("sms:+447400100777")  # four messages, each answered
        with caplog.at_level(logging.WARNING, logger="bot.engine.sender_limit"):
            answered = [await say(bot, "sms:+447400100777", "HELP", n) for n in range(36)]
        assert answered == [True] * 26 + [False] * 10
        stored = await bot.db.fetchone(
            "SELECT count(*) FROM inbound_messages WHERE channel = 'sms'"
        )
        assert stored[0] == 40
        # Someone else is answered as usual.
        assert await say(bot, "sms:+447400100778", "Hello", 100)
        # Logged once for the minute, without the number.
        lines = [r.getMessage() for r in caplog.records if "more than 30" in r.getMessage()]
        assert len(lines) == 1
        assert "+447400100777" not in lines[0] and "sms:" in lines[0]
        # STOP is honoured over the limit.
        await say(bot, "sms:+447400100777", "STOP", 200)
        row = await bot.db.fetchone(
            "SELECT p.status FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
            "WHERE a.address = '+447400100777'"
        )
        assert row[0] == "opted_out"
    finally:
        await bot.stop()


async def test_the_limit_is_a_sliding_minute_and_zero_turns_it_off(tmp_path: Path) -> None:
    bot = await Bot.create(make_settings(tmp_path, bot={"max_inbound_per_minute": 3}))
    try:
        start = datetime.now(UTC)
        who = "sim:slider"
        first = [await say(bot, who, "HELP", n, start + timedelta(seconds=n)) for n in range(5)]
        assert first == [True, True, True, False, False]
        # A minute after the first three, there is room again.
        later = start + timedelta(seconds=64)
        assert await say(bot, who, "HELP", 10, later)
    finally:
        await bot.stop()
    off = tmp_path / "off"
    off.mkdir()
    bot = await Bot.create(make_settings(off, bot={"max_inbound_per_minute": 0}))
    try:
        assert all([await say(bot, "sim:free", "HELP", n) for n in range(40)])
    finally:
        await bot.stop()


def test_a_message_handled_again_is_counted_once() -> None:
    """A batch that fails is replayed message by message: the same messages again."""
    limit = SenderLimit(3)
    at = datetime.now(UTC)
    who = Address("sms", "+447400100999")
    assert [limit.allow(who, at, "m1") for _ in range(10)] == [True] * 10
    assert [limit.allow(who, at, f"n{i}") for i in range(3)] == [True, True, False]
    assert limit.allow(who, at, "n2") is False  # the same decision when seen again
    assert limit.allow(who, at, "m1") is True


async def test_a_review_links_token_never_reaches_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused body on /review/<token>/try, and an unhandled error on a review path, are
    logged with the token masked: a copy of the logs opens no review link."""
    from starlette.requests import Request

    from bot.web.app import _server_error

    token = "Zm9yLXRoZS1sb2dzLW9ubHk.secret-part"
    monkeypatch.setattr(limits, "refused", limits.RefusalLog(every=0))  # every line
    async with guarded(tmp_path) as (_, port, _bot):
        with caplog.at_level(logging.INFO):
            head = (
                f"POST /review/{token}/try HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
            )
            declared = await exchange(port, (head + "Content-Length: 99999999\r\n\r\n").encode())
            assert status_of(declared) == 413
            streamed = await exchange(
                port,
                (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
                + b"".join(b"10000\r\n" + b"a" * 0x10000 + b"\r\n" for _ in range(20)),
            )
            assert status_of(streamed) == 413
    scope = {"type": "http", "method": "POST", "path": f"/review/{token}/comments"}
    scope.update(headers=[], query_string=b"")
    with caplog.at_level(logging.INFO):
        answer = await _server_error(Request(scope), RuntimeError("boom"))
    assert answer.status_code == 500
    lines = [r.getMessage() for r in caplog.records]
    assert any("/review/…/try" in line and "refused a" in line for line in lines), lines
    assert any("/review/…/try" in line and "cut a streamed" in line for line in lines), lines
    assert any("/review/…/comments" in line for line in lines), lines
    assert not any("secret-part" in line for line in lines), lines
