"""Hypothesis at every route of the real app, and at the inbound text path, over HTTP.

A real ``panelbot serve`` (its default one web process, uvicorn, a real SQLite file) with
every channel on, the Twilio and Telegram SDKs pointed at the fakes in tests/fakes. The
routes are read from the Starlette app the same config builds (each method and path, path
parameters filled with arbitrary text), then Hypothesis sends each arbitrary methods,
bodies, headers and query strings: never a 500, and what was stored before is still there.

The inbound text path: arbitrary unicode (lone surrogates, emoji, right-to-left text, huge
texts) as a signed Twilio SMS, a Telegram update with the secret, and a simulator message.
Each is answered below 500, every one answered 2xx is stored, and a bad one sent alongside
good ones never gets the good ones refused.

Hypothesis runs in a thread with a blocking client, so the fakes keep answering in the
test's event loop and a failing example is shrunk against the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from bot.app import Bot
from bot.config import load_settings
from bot.web.app import build_app
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, inbound_params, sign
from tests.test_serve import free_port

pytestmark = pytest.mark.slow

SECRET = "fuzz-telegram-secret"
METRICS_TOKEN = "fuzz-metrics-token-0123456789abcdef"
BOT_NUMBER = "+447400100000"
GOOD_ALONGSIDE = 8  # good webhooks sent at the same time as each odd text
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def write_config(folder: Path, port: int, twilio_url: str, telegram_url: str) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""
[bot]
name = "Fuzz Panel"
database = "panel.db"
quiet_hours = false
public_base_url = "http://127.0.0.1:{port}"

[web]
port = {port}
metrics_token = "{METRICS_TOKEN}"

[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "What is your sex?"

[channels.simulator]
enabled = true

[channels.twilio]
enabled = true
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{BOT_NUMBER}"
api_base_url = "{twilio_url}"
rate_per_second = 200

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


async def app_routes(config: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app ``config`` builds (give it a
    database of its own: only the routes are wanted)."""
    settings = load_settings(config)
    bot = await Bot.create(settings)
    try:
        app = await build_app(bot)
    finally:
        await bot.stop()
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, Route):
                for method in sorted(route.methods or {"GET"}):
                    found.append((method, prefix + route.path))

    walk(list(app.routes), "")
    return found


class Server:
    def __init__(self, folder: Path, config: Path, port: int) -> None:
        self.folder = folder
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.log = folder / "serve.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bot", "-c", str(self.config), "serve"),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process.returncode is None, self.log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"serve did not start:\n{self.log.read_text()[-3000:]}")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.folder / "panel.db", timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def stored_sids(self) -> set[str]:
        return {sid for (sid,) in self.query("SELECT provider_message_id FROM inbound_messages")}


@contextlib.asynccontextmanager
async def running(folder: Path) -> AsyncIterator[tuple[Server, list[tuple[str, str]]]]:
    async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
        port = free_port()
        config = write_config(folder, port, twilio.url, telegram.base_url)
        (folder / "routes").mkdir()
        other = write_config(folder / "routes", port, twilio.url, telegram.base_url)
        routes = await app_routes(other)
        server = Server(folder, config, port)
        try:
            await server.start()
            yield server, routes
            assert server.process is not None
            server.process.terminate()
            assert await asyncio.wait_for(server.process.wait(), 30) == 0
            log = server.log.read_text(errors="replace")
            assert "Traceback" not in log, log[-5000:]
        finally:
            if server.process is not None and server.process.returncode is None:
                server.process.kill()
                await server.process.wait()


def in_thread(work: Any) -> Any:
    """Run blocking ``work`` in a thread of its own (Hypothesis is synchronous)."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)
    return loop.run_in_executor(pool, work)


# --- strategies -------------------------------------------------------------------------

any_text = st.text(max_size=200)
header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,30}\Z").filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection")
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=200,
).map(str.strip)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "application/json; charset=latin-1",
]
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(any_text, any_text, max_size=6).map(
        lambda d: str(httpx.QueryParams(d)).encode()
    ),
    # Deeply nested JSON (a RecursionError must not become a 500).
    st.integers(1, 5000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.integers(1, 5000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
)


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, str]]) -> dict[str, Any]:
    method, template = draw(st.sampled_from(routes))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(METHODS))  # a method the route does not take

    def fill(match: re.Match[str]) -> str:
        return quote(draw(any_text), safe="")

    path = re.sub(r"\{[^}]+\}", fill, template)
    headers = draw(st.dictionaries(header_names, header_values, max_size=5))
    body = draw(bodies) if method not in ("GET", "HEAD") or draw(st.booleans()) else b""
    if body or draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES) | header_values)
    auth = draw(st.sampled_from(["none", "twilio", "telegram", "bearer", "basic"]))
    if auth == "telegram":
        headers["X-Telegram-Bot-Api-Secret-Token"] = draw(st.sampled_from([SECRET, "wrong"]))
    elif auth == "twilio":
        headers["X-Twilio-Signature"] = draw(header_values)
    elif auth == "bearer":
        headers["Authorization"] = "Bearer " + draw(st.just(METRICS_TOKEN) | header_values)
    elif auth == "basic":
        headers["Authorization"] = "Basic " + draw(header_values)
    query = draw(st.lists(st.tuples(any_text, any_text), max_size=4))
    raw = [(k.encode("latin-1"), v.strip().encode("latin-1")) for k, v in headers.items()]
    return {"method": method, "path": path, "headers": raw, "body": body, "query": query}


def is_server_error(status: int) -> bool:
    # 503 with Retry-After is the documented answer to "cannot store it now"; never 500.
    return status >= 500 and status != 503


# --- the tests --------------------------------------------------------------------------


def seed_messages(client: httpx.Client, server: Server) -> set[str]:
    """Messages stored before the fuzzing, which nothing may lose."""
    sids = set()
    for i in range(3):
        params = inbound_params(f"SMkeep{i:026d}", f"+44740050000{i}", "Hello", to=BOT_NUMBER)
        url = server.base + "/webhooks/twilio/messages"
        r = client.post(
            "/webhooks/twilio/messages",
            data=params,
            headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)},
        )
        assert r.status_code == 200, r.text
        sids.add(params["MessageSid"])
    r = client.post("/simulator/api/messages", json={"from": "sim:keep", "text": "hello"})
    assert r.status_code == 200, r.text
    return sids


def wait_stored(server: Server, sids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sids <= server.stored_sids():
            return
        time.sleep(0.1)
    raise AssertionError(f"never stored: {sorted(sids - server.stored_sids())[:5]}")


async def test_every_route_with_arbitrary_requests_never_answers_500(tmp_path: Path) -> None:
    async with running(tmp_path) as (server, routes):
        assert ("POST", "/webhooks/twilio/messages") in routes
        assert ("GET", "/healthz") in routes
        print(f"{len(routes)} routes: {sorted({p for _, p in routes})}")

        def fuzz() -> None:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                kept = seed_messages(client, server)
                wait_stored(server, kept)
                before = server.query("SELECT count(*) FROM inbound_messages")[0][0]

                @settings(
                    max_examples=400,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                @given(request=requests(routes))
                def check(request: dict[str, Any]) -> None:
                    response = client.request(
                        request["method"],
                        request["path"],
                        params=request["query"],
                        headers=request["headers"],
                        content=request["body"],
                    )
                    assert not is_server_error(response.status_code), (
                        response.status_code,
                        response.text[:300],
                    )

                check()
                wait_stored(server, kept)
                after = server.query("SELECT count(*) FROM inbound_messages")[0][0]
                assert after >= before
                history = client.get("/simulator/api/messages", params={"address": "sim:keep"})
                assert history.status_code == 200
                assert "hello" in history.text

        await in_thread(fuzz)


weird_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=300),  # surrogates too
    st.text(st.sampled_from("😀👍🏽👩‍👩‍👧🇬🇧 \u200d\ufe0f"), max_size=60),  # emoji and joiners
    st.text(st.sampled_from("سلام مرحبا שלום \u200f\u200e\u202e\u2066\u2069"), max_size=80),
    st.tuples(st.sampled_from(["a", "é", "😀", "\ud800", "ا"]), st.integers(1, 200_000)).map(
        lambda t: t[0] * t[1]
    ),  # huge
    st.just("\ud800"),
    st.just("\udfff x \ud83d"),
)


def twilio_form(params: dict[str, str]) -> bytes:
    # A lone surrogate cannot be UTF-8: it goes as the bytes surrogatepass gives.
    return "&".join(
        f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
        for k, v in params.items()
    ).encode()


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def test_inbound_text_of_any_kind_is_stored_or_refused_never_500(tmp_path: Path) -> None:
    async with running(tmp_path) as (server, _):
        accepted: set[str] = set()
        counter = iter(range(10**9))

        def fuzz() -> None:
            with (
                httpx.Client(base_url=server.base, timeout=60) as client,
                ThreadPoolExecutor(max_workers=GOOD_ALONGSIDE + 1) as pool,
            ):
                kept = seed_messages(client, server)

                @settings(
                    max_examples=150,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                @given(text=weird_text, path=st.sampled_from(["twilio", "telegram", "sim"]))
                def check(text: str, path: str) -> None:
                    n = next(counter)
                    url = server.base + "/webhooks/twilio/messages"
                    if path == "twilio":
                        sid = f"SMfuzz{n:026d}"
                        params = inbound_params(sid, f"+4474006{n % 100000:05d}", text)
                        # What Twilio signs is the text it sends; a lone surrogate
                        # arrives as bytes that are not UTF-8 (a forged-looking request).
                        signed = {
                            k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                            for k, v in params.items()
                        }
                        signature = sign(AUTH_TOKEN, url, signed)
                        bad = lambda: client.post(  # noqa: E731
                            "/webhooks/twilio/messages",
                            content=twilio_form(params),
                            headers={
                                "Content-Type": "application/x-www-form-urlencoded",
                                "X-Twilio-Signature": signature,
                            },
                        )
                    elif path == "telegram":
                        sid = None
                        update = {
                            "update_id": 10_000 + n,
                            "message": {
                                "message_id": n + 1,
                                "date": int(time.time()),
                                "chat": {"id": 9000 + n % 50, "type": "private"},
                                "from": {"id": 9000 + n % 50, "is_bot": False, "first_name": "F"},
                                "text": text,
                            },
                        }
                        bad = lambda: client.post(  # noqa: E731
                            "/webhooks/telegram",
                            content=json.dumps(update).encode(),
                            headers={
                                "Content-Type": "application/json",
                                "X-Telegram-Bot-Api-Secret-Token": SECRET,
                            },
                        )
                    else:
                        sid = None
                        bad = lambda: client.post(  # noqa: E731
                            "/simulator/api/messages",
                            content=json.dumps({"from": f"sim:fuzz{n % 20}", "text": text}),
                            headers={"Content-Type": "application/json"},
                        )
                    # The odd message amid good ones at the same time: the good ones are
                    # never refused because of it (one batch of the inbox holds them all).
                    goods = [
                        inbound_params(
                            f"SMgood{n:020d}{k:06d}",
                            f"+447400{(n * GOOD_ALONGSIDE + k) % 1000000:06d}",
                            "hi",
                            to=BOT_NUMBER,
                        )
                        for k in range(GOOD_ALONGSIDE)
                    ]

                    def send_good(params: dict[str, str]) -> httpx.Response:
                        return client.post(
                            "/webhooks/twilio/messages",
                            data=params,
                            headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)},
                        )

                    fine = [pool.submit(send_good, p) for p in goods[: GOOD_ALONGSIDE // 2]]
                    odd = pool.submit(bad)
                    fine += [pool.submit(send_good, p) for p in goods[GOOD_ALONGSIDE // 2 :]]
                    response = odd.result()
                    for params, future in zip(goods, fine, strict=True):
                        answer = future.result()
                        assert answer.status_code == 200, (answer.status_code, answer.text[:300])
                        accepted.add(params["MessageSid"])
                    assert not is_server_error(response.status_code), (
                        response.status_code,
                        response.text[:300],
                    )
                    if sid is not None and response.status_code == 200:
                        accepted.add(sid)

                check()
                wait_stored(server, kept | accepted, timeout=60)

        await in_thread(fuzz)
        # Every Twilio webhook answered 200 is stored exactly once.
        rows = server.query(
            "SELECT provider_message_id, count(*) FROM inbound_messages "
            "WHERE channel = 'sms' GROUP BY provider_message_id HAVING count(*) > 1"
        )
        assert rows == []
