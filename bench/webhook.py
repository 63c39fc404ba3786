"""Webhook throughput: signed Twilio webhooks over HTTP against a real ``panelbot serve``.

Setup (not timed): a config in a temporary folder (Twilio on, signed over
``public_base_url = http://127.0.0.1:PORT``, its REST API pointed at the fake Twilio from
``tests/fakes`` run in a subprocess of its own, quiet hours off, simulator off, two
demographic fields asked at sign-up), then ``python -m bot -c CONFIG serve --workers N``
(default 1: one web process in front of the main process) as a real subprocess, waited for
on ``/healthz``. No panellist is created beforehand: every sender is
new, so each conversation runs the sign-up path (first contact, consent, two demographic
answers) and then a HELP keyword.

Timed: ``--concurrency`` client tasks (one HTTP client, aiohttp by default, a connection
pool of the same size and a semaphore bounding requests in flight) each take the next
sender and play their conversation, one message after the other's answer, as a person
does. About 2% of the messages are repeated concurrently with the same MessageSid (Twilio's
retries), and a few requests carry a wrong signature (expected 403; not errors). The run stops after
``--requests`` requests or ``--seconds`` seconds, whichever comes first. The server's
dispatcher sends the replies to the fake Twilio meanwhile, as it would in production.

Floor (same run): the same client and requests against a trivial Starlette app served by
uvicorn in another process, answering the same empty TwiML (it reads the body; no signature
check, no database). Half of its requests run before panelbot's and half after, so a change
in the load on the machine weighs on both sides of the ratio.

After the server has stopped (SIGTERM), its database is read: no (channel, MessageSid) stored
twice, every valid MessageSid answered 2xx stored exactly once, no forged one stored, one
reply queued per stored message.

    .venv/bin/python bench/webhook.py [--requests N] [--seconds S] [--concurrency C]
                                      [--workers N] [--client aiohttp|httpx|raw]
                                      [--senders N] [--sms-rate R] [--rate R] [--keep]
                                      [--check] [--profile FILE]

The exit code is 0 whatever the figures; with ``--check`` it is 1 when a target is missed.
A wrong database (a duplicate, a lost or forged message) is always an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import aiohttp
import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.fakes: the fake Twilio and Twilio's signing

from _common import cpus, load_average, verdict  # noqa: E402 - bench/ is sys.path[0]

from bot.cli import run as run_loop  # noqa: E402 - uvloop when installed, as the servers use
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, inbound_params, sign  # noqa: E402

TARGET_RPS = 500.0
TARGET_P99_MS = 50.0
MESSAGES_PATH = "/webhooks/twilio/messages"
BOT_NUMBER = "+447400100000"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
DUPLICATE_SHARE = 0.02
FORGED_REQUESTS = 20
SEED = 20260101

CONFIG_TOML = """\
[bot]
name = "Bench Panel"
database = "panel.db"
public_base_url = "http://127.0.0.1:{port}"
quiet_hours = false

[web]
host = "127.0.0.1"
port = {port}

[[panel.fields]]
name = "age_band"
values = ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]
text = {{ en = "Which age group are you in?" }}

[[panel.fields]]
name = "sex"
values = ["female", "male", "other", "prefer_not_to_say"]
text = {{ en = "What is your sex?" }}

[channels.simulator]
enabled = false

[channels.twilio]
enabled = true
account_sid = "{account_sid}"
auth_token = "{auth_token}"
from_number = "{from_number}"
api_base_url = "{api_base_url}"
rate_per_second = {sms_rate}
"""


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    sid: str
    body: bytes
    signature: str
    forged: bool = False


# One step is sent at once: a single request, or a message and its repeat side by side.
Step = tuple[Request, ...]


@dataclass
class Workload:
    conversations: list[list[Step]]
    valid_sids: set[str]
    forged_sids: set[str]
    duplicated_sids: set[str]
    senders: int
    # Senders who send every sign-up message (hello, yes, two fields): they end up active.
    signups: int

    @property
    def requests(self) -> int:
        return sum(len(step) for conv in self.conversations for step in conv)


SIGNUP_MESSAGES = 4  # hello, yes, age band, sex


def conversation_texts(rng: random.Random) -> list[str]:
    """What one new person sends: hello, consent, age band, sex, then a keyword."""
    return ["Hello", "yes", str(rng.randint(1, 7)), str(rng.randint(1, 4)), "HELP"]


def build_workload(total: int, senders: int, public_url: str) -> Workload:
    """``total`` requests: conversations of new senders, ~2% repeats, a few forged ones."""
    rng = random.Random(SEED)
    forged = min(FORGED_REQUESTS, total // 100)
    duplicates = round(total * DUPLICATE_SHARE)
    unique = total - forged - duplicates
    per_sender = len(conversation_texts(rng))
    senders = max(1, min(senders, unique))
    if unique > senders * per_sender:
        raise SystemExit(
            f"--requests {total} needs at least {math.ceil(unique / per_sender)} senders "
            f"({per_sender} messages each); got --senders {senders}"
        )
    # Every sender gets at least the sign-up (4 messages) when there are enough requests;
    # the first ones also send the fifth.
    lengths = [unique // senders] * senders
    for i in range(unique - sum(lengths)):
        lengths[i] += 1
    url = public_url + MESSAGES_PATH
    sid_counter = 0

    def request(sender: str, text: str, *, forge: bool = False) -> Request:
        nonlocal sid_counter
        sid_counter += 1
        sid = f"SM{SEED:08x}{sid_counter:024x}"
        params = inbound_params(sid, sender, text, to=BOT_NUMBER)
        token = AUTH_TOKEN if not forge else AUTH_TOKEN[::-1]
        return Request(sid, urlencode(params).encode(), sign(token, url, params), forge)

    conversations: list[list[Step]] = []
    all_singles: list[tuple[int, int]] = []
    valid: set[str] = set()
    for i, length in enumerate(lengths):
        sender = f"+4474001{10000 + i:05d}"
        texts = conversation_texts(rng)[:length]
        steps: list[Step] = []
        for text in texts:
            req = request(sender, text)
            valid.add(req.sid)
            all_singles.append((i, len(steps)))
            steps.append((req,))
        conversations.append(steps)
    duplicated: set[str] = set()
    for conv, step in rng.sample(all_singles, min(duplicates, len(all_singles))):
        (original,) = conversations[conv][step]
        conversations[conv][step] = (original, original)  # the same bytes, sent side by side
        duplicated.add(original.sid)
    forged_sids: set[str] = set()
    for conv in rng.sample(range(len(conversations)), min(forged, len(conversations))):
        steps = conversations[conv]
        sender = f"+4474001{10000 + conv:05d}"
        fake = request(sender, "STOP", forge=True)  # would opt them out, if it were believed
        forged_sids.add(fake.sid)
        steps.insert(rng.randrange(len(steps) + 1), (fake,))
    signups = sum(1 for n in lengths if n >= SIGNUP_MESSAGES)
    return Workload(conversations, valid, forged_sids, duplicated, len(lengths), signups)


# -- the client --------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    latencies: list[float] = field(default_factory=list)  # seconds, ascending after finish()
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # wrong status for what was sent
    sid_status: dict[str, list[int]] = field(default_factory=dict)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    stopped_by_time: bool = False
    not_sent: int = 0

    def __add__(self, other: Run) -> Run:
        out = Run(self.label)
        out.latencies = sorted(self.latencies + other.latencies)
        out.statuses = self.statuses + other.statuses
        out.transport_errors = self.transport_errors + other.transport_errors
        out.unexpected = self.unexpected + other.unexpected
        out.elapsed = self.elapsed + other.elapsed
        out.client_cpu = self.client_cpu + other.client_cpu
        out.stopped_by_time = self.stopped_by_time or other.stopped_by_time
        out.not_sent = self.not_sent + other.not_sent
        return out

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    @property
    def mean_ms(self) -> float:
        return sum(self.latencies) / len(self.latencies) * 1000 if self.latencies else 0.0

    def klass(self, hundred: int) -> int:
        return sum(n for status, n in self.statuses.items() if status // 100 == hundred)


class HttpxClient:
    """The brief's client: one httpx.AsyncClient, a pool of ``concurrency`` connections."""

    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def __init__(self, base_url: str, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0)

    async def get(self, path: str) -> int:
        return (await self.client.get(path)).status_code

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        response = await self.client.post(path, content=body, headers=headers)
        return response.status_code, response.text

    async def close(self) -> None:
        await self.client.aclose()


class AiohttpClient:
    """aiohttp's ClientSession with a connector of ``concurrency`` connections."""

    errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)

    def __init__(self, base_url: str, concurrency: int) -> None:
        self.session = aiohttp.ClientSession(
            base_url,
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=30.0),
        )

    async def get(self, path: str) -> int:
        async with self.session.get(path) as response:
            await response.read()
            return response.status

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(path, data=body, headers=headers) as response:
            return response.status, await response.text()

    async def close(self) -> None:
        await self.session.close()


class RawClient:
    """Plain HTTP/1.1 keep-alive over asyncio streams: ``concurrency`` connections in a pool.

    A load generator should cost little next to the server it measures: on a 2-core machine
    the client's CPU is taken from the server's. This one spends a few tens of microseconds
    a request where aiohttp spends about 0.3 ms (see "cpu per request ... client"), like
    the wrk or h2load a web team would reach for, while keeping this script's conversations
    (one sender's messages in order, Twilio's repeats sent side by side).
    """

    class ProtocolError(Exception):
        pass

    errors: tuple[type[BaseException], ...] = (OSError, asyncio.IncompleteReadError, ProtocolError)

    def __init__(self, base_url: str, concurrency: int) -> None:
        parsed = httpx.URL(base_url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return reader, writer

    async def _request(self, head: bytes, body: bytes) -> tuple[int, str]:
        reader, writer = await self._connection()
        try:
            writer.write(head + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            status = int(raw[9:12])
            length = 0
            keep = True
            for line in raw.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            text = (await reader.readexactly(length)).decode("utf-8", "replace")
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status, text

    async def get(self, path: str) -> int:
        head = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        return (await self._request(head, b""))[0]

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return await self._request(head, body)

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()


CLIENTS = {"aiohttp": AiohttpClient, "httpx": HttpxClient, "raw": RawClient}


async def drive(
    base_url: str,
    conversations: list[list[Step]],
    *,
    client_kind: str,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    label: str,
    rate: float | None = None,
) -> Run:
    """Play the conversations against ``base_url``; bounded in requests and in time.

    With ``rate``, requests start no faster than ``rate`` a second (still at most
    ``concurrency`` in flight): latency at an offered load rather than at saturation.
    """
    run = Run(label)
    next_slot = 0.0
    gate = asyncio.Semaphore(concurrency)
    started = 0
    next_conversation = iter(conversations)
    deadline = 0.0
    client = CLIENTS[client_kind](base_url, concurrency)

    async def send(req: Request) -> None:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": req.signature,
            "User-Agent": "TwilioProxy/1.1",
        }
        async with gate:
            t0 = time.perf_counter()
            try:
                status, text = await client.post(MESSAGES_PATH, req.body, headers)
            except client.errors as exc:
                run.transport_errors[type(exc).__name__] += 1
                return
            run.latencies.append(time.perf_counter() - t0)
        run.statuses[status] += 1
        run.sid_status.setdefault(req.sid, []).append(status)
        expected = 403 if req.forged else 200
        if status != expected and not (status >= 500 and not req.forged):
            run.unexpected.append(f"{req.sid}: HTTP {status} {text[:120]!r}")

    async def worker() -> None:
        nonlocal started, next_slot
        for conversation in next_conversation:  # shared: each conversation goes to one worker
            for step in conversation:
                if started + len(step) > max_requests or time.perf_counter() > deadline:
                    run.stopped_by_time = time.perf_counter() > deadline
                    return
                started += len(step)
                if rate:
                    slot, next_slot = next_slot, next_slot + len(step) / rate
                    if (delay := slot - time.perf_counter()) > 0:
                        await asyncio.sleep(delay)
                if len(step) == 1:
                    await send(step[0])
                else:  # a Twilio retry: the same request again while the first is in flight
                    await asyncio.gather(*(send(req) for req in step))

    # The workload (every request built in advance) is a lot of objects for the collector
    # to walk again and again; its pauses would count as the server's latency.
    gc.collect()
    gc.freeze()
    try:
        # Open the pool's connections before the clock starts, as a warm server would have.
        await asyncio.gather(*(client.get("/healthz") for _ in range(concurrency)))
        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline, next_slot = t0 + max_seconds, t0
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        run.elapsed = time.perf_counter() - t0
        run.client_cpu = time.process_time() - cpu0
    finally:
        await client.close()
    run.not_sent = sum(len(s) for c in conversations for s in c) - started
    run.latencies.sort()
    return run


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU time of a process, or of one of its threads (Linux /proc), or None."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (serve's web processes), from Linux /proc, whichever
    of its threads started them."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sorted(int(p) for task in tasks for p in (task / "children").read_text().split())
    except OSError:
        return []


def cpu_total(pids: list[int]) -> float | None:
    values = [cpu_seconds(pid) for pid in pids]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def inbox_backlog(db_path: Path) -> int:
    """Payloads the web processes stored that the main process has not handled yet."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return -1


def wait_http(url: str, proc: subprocess.Popen[Any], log: Path | None, timeout: float) -> float:
    """Wait until ``url`` answers 200; returns seconds waited. Exits if the process died."""
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise SystemExit(f"{url}: the server exited with {proc.returncode}\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            raise SystemExit(f"{url}: no answer after {timeout:.0f} s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> tuple[int, float]:
    """SIGTERM, wait; returns (exit code, seconds). Killed (and -9 reported) after timeout."""
    t0 = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return code, time.perf_counter() - t0


def child(mode: str, *args: str, stdout: Any = subprocess.PIPE, log: IO[Any] | None = None) -> Any:
    return subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, *args],
        stdout=stdout,
        stderr=log if log is not None else subprocess.DEVNULL,
        text=True,
    )


# -- the helper servers (run as ``bench/webhook.py --serve MODE``) ----------------------------


def serve_peer(port: int) -> None:
    """The floor: uvicorn + Starlette, the same route and answer, nothing else."""
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def twiml(request: StarletteRequest) -> Response:
        await request.body()
        return Response(EMPTY_TWIML, media_type="text/xml")

    async def healthz(request: StarletteRequest) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route(MESSAGES_PATH, twiml, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    # The same uvicorn settings panelbot serves with (bot/web/app.py).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


def serve_fake_twilio() -> None:
    """The fake Twilio REST API until SIGTERM; prints its URL, then how many it received."""
    from tests.fakes.twilio_api import FakeTwilio

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with FakeTwilio().running() as fake:
            print(fake.url, flush=True)
            await stop.wait()
            print(json.dumps({"posts": len(fake.posts())}), flush=True)

    asyncio.run(main())


# -- verification ------------------------------------------------------------------------


@dataclass
class Stored:
    duplicate_groups: int
    stored_valid: int
    answered_ok: int
    missing: list[str]
    forged_stored: int
    strangers: int
    inbound_rows: int
    replies: int
    active: int
    expected_active: int | None  # every sender, when the whole workload was sent
    outbox_sent: int

    @property
    def ok(self) -> bool:
        return (
            (self.expected_active is None or self.active == self.expected_active)
            and self.duplicate_groups == 0
            and not self.missing
            and self.forged_stored == 0
            and self.strangers == 0
            and self.replies == self.inbound_rows
        )


def verify(db_path: Path, workload: Workload, run: Run) -> Stored:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        duplicate_groups = db.execute(
            "SELECT COUNT(*) FROM (SELECT channel, provider_message_id, COUNT(*) AS n "
            "FROM inbound_messages GROUP BY channel, provider_message_id HAVING n > 1)"
        ).fetchone()[0]
        stored = Counter(
            sid
            for (sid,) in db.execute(
                "SELECT provider_message_id FROM inbound_messages WHERE channel = 'sms'"
            )
        )
        inbound_rows = db.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0]
        replies = db.execute(
            "SELECT COUNT(*) FROM outbox WHERE idempotency_key LIKE 'in:%'"
        ).fetchone()[0]
        active = db.execute("SELECT COUNT(*) FROM panellists WHERE status = 'active'").fetchone()[0]
        outbox_sent = db.execute(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('sent', 'delivered')"
        ).fetchone()[0]
    answered_ok = {
        sid
        for sid, statuses in run.sid_status.items()
        if sid in workload.valid_sids and any(200 <= s < 300 for s in statuses)
    }
    missing = sorted(sid for sid in answered_ok if stored.get(sid, 0) != 1)
    return Stored(
        duplicate_groups=duplicate_groups,
        stored_valid=sum(1 for sid in stored if sid in workload.valid_sids),
        answered_ok=len(answered_ok),
        missing=missing,
        forged_stored=sum(1 for sid in stored if sid in workload.forged_sids),
        strangers=sum(1 for sid in stored if sid not in workload.valid_sids),
        inbound_rows=inbound_rows,
        replies=replies,
        active=active,
        expected_active=workload.signups
        if run.not_sent == 0 and not run.transport_errors
        else None,
        outbox_sent=outbox_sent,
    )


# -- the report --------------------------------------------------------------------------


def _parser_and_loop() -> str:
    """What uvicorn's "auto" picks here: httptools and uvloop when installed."""
    found = importlib.util.find_spec
    parser = "httptools parser" if found("httptools") else "h11 parser, pure Python"
    loop = "uvloop" if found("uvloop") else "asyncio loop"
    return f"{parser}, {loop}"


def print_run(run: Run, server_cpu: float | None) -> None:
    print(f"  requests answered  {run.count}  in {run.elapsed:.2f} s")
    print(f"  requests/s         {run.rate:,.0f}")
    print(
        f"  latency            p50 {run.ms(50):.1f} ms   p99 {run.ms(99):.1f} ms   "
        f"max {run.ms(100):.1f} ms   mean {run.mean_ms:.1f} ms"
    )
    if run.elapsed:
        # Little's law: requests in flight = throughput x mean latency. Near C, the client
        # kept C requests waiting on the server the whole time (the server is saturated).
        print(f"  in flight          {run.rate * run.mean_ms / 1000:.1f} on average")
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items()))
    print(
        f"  status             2xx {run.klass(2)}   4xx {run.klass(4)}   5xx {run.klass(5)}"
        f"   ({statuses})"
    )
    if run.transport_errors:
        errors = ", ".join(f"{k}: {n}" for k, n in run.transport_errors.most_common())
        print(f"  no answer          {sum(run.transport_errors.values())} ({errors})")
    per = 1000 / run.count if run.count else 0.0
    server = (
        f"server {server_cpu * per:.2f} ms ({server_cpu / run.elapsed:.0%} of one core), "
        if server_cpu is not None and run.elapsed
        else ""
    )
    client = f"client {run.client_cpu * per:.2f} ms ({run.client_cpu / run.elapsed:.0%})"
    print(f"  cpu per request    {server}{client}")
    if run.stopped_by_time or run.not_sent:
        why = "time bound reached" if run.stopped_by_time else "request bound reached"
        print(f"  not sent           {run.not_sent} ({why})")


def main_run(args: argparse.Namespace, workdir: Path) -> bool:
    c = args.concurrency
    offered = f", offered at {args.rate:g}/s" if args.rate else " (closed loop)"
    print(
        f"panelbot webhook benchmark: {args.requests} signed Twilio webhooks, concurrency {c}"
        f"{offered}, at most {args.seconds:.0f} s"
    )
    print(
        f"client: {args.client} {(httpx if args.client == 'httpx' else aiohttp).__version__}, "
        f"{c} connections, a semaphore of {c}; servers: uvicorn {uvicorn.__version__} "
        f"({_parser_and_loop()}), in their own processes"
    )
    print(
        f"python {platform.python_version()}, sqlite "
        f"{sqlite3.sqlite_version}, {platform.system()} {platform.machine()}, {cpus()} CPUs"
    )
    print(f"load average before: {load_average()} (other work on the machine skews every figure)")

    bot_port, peer_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{bot_port}"
    workload = build_workload(args.requests, args.senders, public_url)
    print(
        f"workload: {workload.senders} new senders, {len(workload.valid_sids)} messages "
        f"(hello, yes, age, sex, HELP), {len(workload.duplicated_sids)} sent twice at once "
        f"(Twilio retries), {len(workload.forged_sids)} forged signatures: "
        f"{workload.requests} requests"
    )

    fake = child("fake-twilio")
    procs: list[subprocess.Popen[Any]] = [fake]
    server_log_path = workdir / "serve.log"
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        if not fake_url.startswith("http"):
            raise SystemExit("the fake Twilio did not start")
        config = workdir / "panelbot.toml"
        config.write_text(
            CONFIG_TOML.format(
                port=bot_port,
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                from_number=BOT_NUMBER,
                api_base_url=fake_url,
                sms_rate=args.sms_rate,
            ),
            encoding="utf-8",
        )
        peer = child("peer", str(peer_port), stdout=subprocess.DEVNULL)
        procs.append(peer)
        wait_http(f"http://127.0.0.1:{peer_port}/healthz", peer, None, 30)

        # The floor's first half, before panelbot starts.
        half = len(workload.conversations) // 2
        peer_url = f"http://127.0.0.1:{peer_port}"
        peer_cpu0 = cpu_seconds(peer.pid)
        floor = run_loop(
            drive(
                peer_url,
                workload.conversations[:half],
                client_kind=args.client,
                concurrency=c,
                max_requests=args.requests,
                max_seconds=args.seconds,
                label="floor",
                rate=args.rate,
            )
        )

        server_cmd = [
            *(sys.executable, "-m", "bot", "-c", str(config), "serve"),
            *("--workers", str(args.workers)),
        ]
        if args.profile:
            profile = str(Path(args.profile).resolve())
            server_cmd = [sys.executable, "-m", "cProfile", "-o", profile, *server_cmd[1:]]
        with server_log_path.open("w") as server_log:
            server = subprocess.Popen(
                server_cmd, cwd=workdir, stdout=server_log, stderr=subprocess.STDOUT
            )
        procs.append(server)
        started_in = wait_http(f"{public_url}/healthz", server, server_log_path, 60)
        print(f"setup (not timed): panelbot serve answered /healthz after {started_in:.2f} s")
        web_pids = children_of(server.pid) if args.workers else []
        server_cpu0 = cpu_seconds(server.pid)
        web_cpu0 = cpu_total(web_pids)
        loop_cpu0 = cpu_seconds(server.pid, server.pid)  # the main thread runs the event loop
        fake_cpu0 = cpu_seconds(fake.pid)
        bench = run_loop(
            drive(
                public_url,
                workload.conversations,
                client_kind=args.client,
                concurrency=c,
                max_requests=args.requests,
                max_seconds=args.seconds,
                label="panelbot",
                rate=args.rate,
            )
        )
        server_cpu1, fake_cpu1 = cpu_seconds(server.pid), cpu_seconds(fake.pid)
        web_cpu1 = cpu_total(web_pids)
        loop_cpu1 = cpu_seconds(server.pid, server.pid)
        # With web processes, the main process may still be handling what they stored.
        backlog_at_end = inbox_backlog(workdir / "panel.db-inbox")
        drain_t0 = time.perf_counter()
        while inbox_backlog(workdir / "panel.db-inbox") > 0 and time.perf_counter() - drain_t0 < 60:
            time.sleep(0.05)
        drained_in = time.perf_counter() - drain_t0
        exit_code, stop_seconds = stop_process(server)

        # The floor's second half, after panelbot has stopped.
        floor += run_loop(
            drive(
                peer_url,
                workload.conversations[half:],
                client_kind=args.client,
                concurrency=c,
                max_requests=args.requests,
                max_seconds=args.seconds,
                label="floor",
                rate=args.rate,
            )
        )
        peer_cpu1 = cpu_seconds(peer.pid)
        stop_process(peer)
        stop_process(fake)
        fake_out = fake.stdout.read() if fake.stdout else ""
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fake_posts = json.loads(fake_out.strip().splitlines()[-1])["posts"] if fake_out else None

    server_cpu = (
        server_cpu1 - server_cpu0 if server_cpu0 is not None and server_cpu1 is not None else None
    )
    web_cpu = web_cpu1 - web_cpu0 if web_cpu0 is not None and web_cpu1 is not None else None
    main_cpu = server_cpu
    if server_cpu is not None and web_cpu is not None and web_pids:
        server_cpu += web_cpu
    fake_cpu = fake_cpu1 - fake_cpu0 if fake_cpu0 is not None and fake_cpu1 is not None else None
    peer_cpu = peer_cpu1 - peer_cpu0 if peer_cpu0 is not None and peer_cpu1 is not None else None
    stored = verify(workdir / "panel.db", workload, bench)
    log_text = server_log_path.read_text(errors="replace")
    log_lines = log_text.splitlines()
    errors = [line for line in log_lines if " ERROR " in line or "Traceback" in line]

    print()
    if args.workers:
        print(
            f"panelbot serve --workers {args.workers} ({args.workers} web process"
            f"{'es' if args.workers > 1 else ''} + the main "
            "process, uvicorn, SQLite)"
        )
    else:
        print("panelbot serve --workers 0 (1 process, uvicorn, SQLite)")
    print_run(bench, server_cpu)
    if main_cpu is not None and loop_cpu0 is not None and loop_cpu1 is not None:
        loop_cpu = loop_cpu1 - loop_cpu0
        web_part = (
            f"web processes {web_cpu / bench.elapsed:.0%}, "
            if web_cpu is not None and web_pids
            else ""
        )
        print(
            f"  server cpu         {web_part}main event loop {loop_cpu / bench.elapsed:.0%}, "
            f"main's other threads (aiosqlite's) {(main_cpu - loop_cpu) / bench.elapsed:.0%} "
            "of one core"
        )
    if args.workers:
        print(
            f"  engine behind      {backlog_at_end} stored payloads not yet handled at the last "
            f"answer; all handled {drained_in:.2f} s later"
        )
    if fake_cpu is not None and bench.elapsed:
        print(
            f"  fake Twilio        {fake_cpu / bench.elapsed:.0%} of one core while the "
            f"dispatcher sent replies at up to {args.sms_rate:g} segments/s"
        )
    print(
        f"  server stop        SIGTERM -> exit code {exit_code} after {stop_seconds:.2f} s; "
        f"log {len(log_lines)} lines, {len(errors)} with ERROR or Traceback"
    )
    for line in errors[:5]:
        print(f"    {line[:160]}")
    print()
    print("stored (read from the database after the server stopped)")
    print(
        f"  duplicate (channel, MessageSid) groups in inbound_messages  {stored.duplicate_groups}"
    )
    print(
        f"  valid MessageSids answered 2xx {stored.answered_ok}, stored exactly once "
        f"{stored.answered_ok - len(stored.missing)}, missing or repeated {len(stored.missing)}"
    )
    print(
        f"  forged MessageSids stored {stored.forged_stored}; rows not sent by the bench "
        f"{stored.strangers}"
    )
    print(
        f"  replies queued {stored.replies} for {stored.inbound_rows} stored messages "
        f"(one each: {'ok' if stored.replies == stored.inbound_rows else 'WRONG'}); "
        f"panellists signed up {stored.active}"
        + (f" (expected {stored.expected_active})" if stored.expected_active is not None else "")
    )
    fake_note = f", {fake_posts} received by the fake" if fake_posts is not None else ""
    print(f"  replies sent by the dispatcher during the run {stored.outbox_sent}{fake_note}")
    if bench.unexpected:
        print(f"  unexpected answers {len(bench.unexpected)}, e.g. {bench.unexpected[0]}")
    print()
    print("floor (uvicorn + Starlette, same route and TwiML, no check, no database; half")
    print("       before and half after panelbot)")
    print_run(floor, peer_cpu)
    ratio = bench.rate / floor.rate if floor.rate else 0.0
    print()
    print(f"ratio panelbot/floor requests/s   {ratio:.2f}")
    print(f"load average after   {load_average()}")

    five_xx = bench.klass(5) + sum(bench.transport_errors.values())
    dupes = stored.duplicate_groups + len(stored.missing)
    checks = [
        (f"requests/s >= {TARGET_RPS:,.0f}", f"{bench.rate:,.0f}", bench.rate >= TARGET_RPS),
        (f"p99 <= {TARGET_P99_MS:.0f} ms", f"{bench.ms(99):.1f}", bench.ms(99) <= TARGET_P99_MS),
        ("5xx (or no answer) = 0", f"{five_xx}", five_xx == 0),
        ("duplicates stored = 0", f"{dupes}", dupes == 0),
        ("completed in bounds", f"{bench.count}/{workload.requests}", bench.not_sent == 0),
    ]
    print()
    print("targets")
    for name, value, ok in checks:
        print(f"  {name:<26}{value:>12}   {verdict(ok)}")
    if not args.rate:
        print(
            f"  (closed loop: mean latency = {c} / requests/s, so p99 <= {TARGET_P99_MS:.0f} ms "
            f"needs more than {c / TARGET_P99_MS * 1000:,.0f} requests/s)"
        )
    if args.keep:
        print()
        print(f"kept: {workdir} (panelbot.toml, panel.db, serve.log)")
    if args.profile:
        print(f"profile of the server: {args.profile} (read with python -m pstats)")
    if not stored.ok or bench.unexpected:
        print("FAILED: the database or the answers are wrong (see above)", file=sys.stderr)
        raise SystemExit(1)
    return all(ok for _, _, ok in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/webhook.py",
        description="Signed Twilio webhooks per second against `panelbot serve` over HTTP, "
        "against a bare uvicorn + Starlette floor measured in the same run.",
    )
    parser.add_argument(
        "--requests", type=int, default=10_000, metavar="N", help="requests (default 10000)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=120.0,
        metavar="S",
        help="stop sending after S seconds (default 120)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, metavar="C", help="requests in flight (default 50)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve --workers N: web processes in front of the bot (default 1; 0 = one "
        "process does everything)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=2000,
        metavar="N",
        help="distinct phone numbers (default 2000)",
    )
    parser.add_argument(
        "--sms-rate",
        type=float,
        default=100.0,
        metavar="R",
        help="[channels.twilio] rate_per_second for the replies (default 100, a short code)",
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="aiohttp",
        help="the load generator's HTTP client (default aiohttp: httpx's pool costs several "
        "ms of CPU per request at concurrency 50, which makes the client the bottleneck)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="offer R requests a second instead of as many as the server answers "
        "(still at most C in flight): latency below saturation",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (default: 0)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the server under cProfile and write its stats to FILE (slows it down)",
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)  # helper processes
    args = parser.parse_args(argv)
    if args.serve is None:
        if args.requests < 100:
            parser.error("--requests must be at least 100")
        if args.concurrency < 1 or args.senders < 1 or args.seconds <= 0 or args.sms_rate <= 0:
            parser.error("--concurrency, --senders, --seconds and --sms-rate must be positive")
        if args.rate is not None and args.rate <= 0:
            parser.error("--rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        mode = args.serve[0]
        if mode == "peer":
            serve_peer(int(args.serve[1]))
        elif mode == "fake-twilio":
            serve_fake_twilio()
        return 0
    if args.client == "httpx":
        # httpcore asks for sniffio on every request; without it installed each ask is a failed
        # import that searches sys.path again. Marking it absent makes that a dict lookup.
        sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
    workdir = Path(tempfile.mkdtemp(prefix="panelbot-webhook-"))
    try:
        passed = main_run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.profile and Path(args.profile).exists():
        import pstats

        pstats.Stats(args.profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
