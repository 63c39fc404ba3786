"""The crash suite: ``panelbot serve`` killed with SIGKILL, and started again, nothing lost.

Real processes and files only: ``panelbot serve`` (with its default one web process) as a
subprocess on a real SQLite file, the real Twilio SDK talking to the fake Twilio from
tests/fakes (run in this test's event loop, so it outlives every kill and remembers what
the provider received), signed webhooks over HTTP.

- A 1,000-person wave (``panelbot survey launch``) with serve killed at random points and
  started again several times: every person has exactly one invitation AT THE FAKE.
- The same with the provider's message list failing (500) at restart, and hanging at
  restart: a failed lookup is tried again later (never a permanent hold), and webhooks are
  answered while the lookups wait.
- Bursts of signed inbound webhooks with the main process, then the web process, killed
  mid-burst: every webhook answered 2xx is stored exactly once and answered exactly once.

The kill points come from a seed, printed at the start of each test (and in every failure):
``CRASH_SEED=N pytest tests/test_crash_suite.py`` repeats a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

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
)
from tests.test_serve import free_port

pytestmark = pytest.mark.slow

SURVEY = REPO / "tests" / "data" / "every-type.toml"
INVITATION_MARK = "How easy was it?"  # the first question, carried by every invitation
BOT_NUMBER = "+447400100000"
SECRET = "crash-suite-telegram-secret"
MESSAGES = "/webhooks/twilio/messages"
WAVE = 1000


def crash_seed() -> int:
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"crash suite seed {seed} (CRASH_SEED={seed} repeats this run)")
    return seed


class ChaosTwilio(FakeTwilio):
    """The fake Twilio, whose message list (what reconciliation asks) the tests switch to
    fail (500) or hang with ``list_mode`` (see tests/fakes/twilio_api.py)."""

    def invitations(self) -> Counter[str]:
        """Invitations the provider received, by number."""
        return Counter(m["to"] for m in self.messages if INVITATION_MARK in (m["body"] or ""))


def write_config(folder: Path, port: int, twilio_url: str, telegram_url: str) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""
[bot]
name = "Crash Panel"
database = "panel.db"
quiet_hours = false
public_base_url = "http://127.0.0.1:{port}"

[web]
port = {port}

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
rate_per_second = 250
request_timeout = 3

[channels.telegram]
enabled = true
token = "{TOKEN}"
mode = "webhook"
secret_token = "{SECRET}"
api_base_url = "{telegram_url}"

[outbox]
poll_interval = 0.2
retry_backoff = ["2s"]
""",
        encoding="utf-8",
    )
    return config


def children_of(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sorted(int(p) for task in tasks for p in (task / "children").read_text().split())
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def query(folder: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(folder / "panel.db", timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


async def wait_until(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Panel:
    """One panel's folder and its ``panelbot serve`` process, started and killed at will."""

    def __init__(self, folder: Path, twilio_url: str, telegram_url: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.config = write_config(folder, self.port, twilio_url, telegram_url)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bot", "-c", str(self.config), "serve"),
                stdout=log,
                stderr=log,
            )
        if wait:
            await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"serve exited {self.process.returncode}:\n{self.tail()}")
                # The banner comes once serve has started every part (its web process
                # answers /healthz a moment before it reports ready).
                if self.banners() >= self.starts:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.base}/healthz")).status_code == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(
            f"serve did not answer /healthz within {timeout:.0f} s:\n{self.tail()}"
        )

    def banners(self) -> int:
        return self.log.read_text(errors="replace").count("panelbot serving on")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def web_pids(self) -> list[int]:
        assert self.process is not None
        return [p for p in children_of(self.process.pid) if alive(p)]

    async def kill_main(self) -> None:
        """SIGKILL the main process; wait for it and for its web processes to be gone."""
        assert self.process is not None
        web_pids = self.web_pids()
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        # A web process notices its main process has gone and stops (it holds the port).
        await wait_until(
            lambda: not any(alive(p) for p in web_pids), 20, "the orphaned web process to stop"
        )

    async def kill_web(self, *, wait: bool = True) -> int:
        """SIGKILL the web process; serve starts another (waited for until it answers,
        unless not ``wait``). Returns the pid killed."""
        before = self.web_pids()
        assert before, "no web process to kill"
        os.kill(before[0], signal.SIGKILL)
        if wait:
            await wait_until(
                lambda: (now := self.web_pids()) and before[0] not in now,
                20,
                f"a new web process:\n{self.tail()}",
            )
            await self.wait_ready()
        return before[0]

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=30)

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot", "-c", str(self.config), *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    def unsettled(self) -> int:
        """Outbox rows still to go: queued or in flight."""
        return query(
            self.folder, "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')"
        )[0][0]

    def statuses(self) -> dict[str, int]:
        return dict(query(self.folder, "SELECT status, count(*) FROM outbox GROUP BY status"))


@contextlib.asynccontextmanager
async def panel_running(folder: Path) -> AsyncIterator[tuple[Panel, ChaosTwilio, FakeTelegram]]:
    async with ChaosTwilio().running() as twilio, FakeTelegram.running() as telegram:
        panel = Panel(folder, twilio.url, telegram.base_url)
        try:
            yield panel, twilio, telegram
        finally:
            twilio.list_mode = "ok"  # nothing left hanging in the fake
            if panel.process is not None and panel.process.returncode is None:
                for pid in panel.web_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                panel.process.kill()
                await panel.process.wait()


def wave_numbers(count: int = WAVE) -> list[str]:
    return [f"+4474009{i:05d}" for i in range(count)]


async def prepare_wave(panel: Panel, numbers: list[str]) -> None:
    csv = panel.folder / "panel.csv"
    rows = [
        f"{n},,en,2026-01-0{1 + i % 9},{('female', 'male')[i % 2]}" for i, n in enumerate(numbers)
    ]
    csv.write_text("phone,telegram_chat_id,locale,consent_at,sex\n" + "\n".join(rows) + "\n")
    await panel.cli("panel", "import", str(csv))
    await panel.cli("survey", "add", str(SURVEY))


async def wave_settled(panel: Panel, twilio: ChaosTwilio, numbers: list[str], seed: int) -> None:
    """Wait until the wave has gone, then check every person has exactly one invitation."""
    await wait_until(
        lambda: panel.unsettled() == 0 and len(twilio.invitations()) >= len(numbers),
        120,
        f"the wave to settle (seed {seed}; outbox {panel.statuses()}, "
        f"{len(twilio.invitations())} people invited at the fake)",
        interval=0.25,
    )
    await asyncio.sleep(1.0)  # a late second send of any row would show by now
    received = twilio.invitations()
    missing = [n for n in numbers if received[n] == 0]
    twice = {n: c for n, c in received.items() if c > 1}
    strangers = [n for n in received if n not in set(numbers)]
    assert not missing and not twice and not strangers, (
        f"seed {seed}: {len(missing)} people never invited (e.g. {missing[:3]}), "
        f"{len(twice)} invited more than once (e.g. {list(twice.items())[:3]}), "
        f"{len(strangers)} strangers; outbox {panel.statuses()}"
    )
    invitations = dict(
        query(
            panel.folder,
            "SELECT status, count(*) FROM outbox WHERE kind = 'invitation' GROUP BY status",
        )
    )
    assert invitations == {"sent": len(numbers)}, f"seed {seed}: {invitations}"
    assert_no_numbers_logged(panel, numbers)


def assert_no_numbers_logged(panel: Panel, numbers: list[str]) -> None:
    """Phone numbers never appear in clear in serve's log, crashes or not."""
    log = panel.log.read_text(errors="replace")
    shown = [n for n in numbers if n in log or n[1:] in log]
    assert not shown, f"numbers in the log: {shown[:3]}"


async def test_a_wave_killed_at_random_points_invites_everyone_exactly_once(
    tmp_path: Path,
) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    numbers = wave_numbers()
    async with panel_running(tmp_path) as (panel, twilio, _):
        await prepare_wave(panel, numbers)
        await panel.start()
        await panel.cli("survey", "launch", "every-type")
        for kill in range(5):
            await asyncio.sleep(rng.uniform(0.05, 1.2))
            # Mostly the main process (it sends); now and then the web process.
            if rng.random() < 0.25:
                await panel.kill_web()
                which = "web process"
            else:
                await panel.kill_main()
                await panel.start()
                which = "main process"
            print(f"kill {kill + 1} ({which}): {len(twilio.invitations())} invited")
        await wave_settled(panel, twilio, numbers, seed)
        assert await panel.stop() == 0, panel.tail()


async def test_a_failing_message_list_at_restart_holds_no_one_for_good(tmp_path: Path) -> None:
    """The lookups of rows left ``sending`` fail (Twilio 500) at restart: they are tried
    again later, and once Twilio answers everyone has exactly one invitation."""
    seed = crash_seed()
    rng = random.Random(seed)
    numbers = wave_numbers()
    async with panel_running(tmp_path) as (panel, twilio, _):
        await prepare_wave(panel, numbers)
        await panel.start()
        await panel.cli("survey", "launch", "every-type")
        await wait_until(lambda: len(twilio.invitations()) >= 50, 30, "the wave to start")
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        await panel.kill_main()
        stuck = query(tmp_path, "SELECT count(*) FROM outbox WHERE status = 'sending'")[0][0]
        print(f"killed with {stuck} rows sending, {len(twilio.invitations())} invited")
        assert stuck > 0, f"seed {seed}: the kill left nothing to reconcile"
        twilio.list_mode = "fail"
        asked = len(twilio.gets())
        await panel.start()
        await wait_until(lambda: len(twilio.gets()) > asked, 30, "a lookup to fail")
        await asyncio.sleep(1.0)
        twilio.list_mode = "ok"
        await wave_settled(panel, twilio, numbers, seed)
        assert await panel.stop() == 0, panel.tail()


async def test_a_hanging_message_list_at_restart_delays_no_webhook(tmp_path: Path) -> None:
    """The lookups hang at restart: serve answers /healthz and signed webhooks meanwhile,
    and once Twilio answers again everyone has exactly one invitation."""
    seed = crash_seed()
    rng = random.Random(seed)
    numbers = wave_numbers()
    async with panel_running(tmp_path) as (panel, twilio, _):
        await prepare_wave(panel, numbers)
        await panel.start()
        await panel.cli("survey", "launch", "every-type")
        await wait_until(lambda: len(twilio.invitations()) >= 50, 30, "the wave to start")
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        await panel.kill_main()
        stuck = query(tmp_path, "SELECT count(*) FROM outbox WHERE status = 'sending'")[0][0]
        assert stuck > 0, f"seed {seed}: the kill left nothing to reconcile"
        twilio.list_mode = "hang"
        asked = len(twilio.gets())
        await panel.start(wait=False)
        # Served while a lookup is still held at the fake: reconciliation runs beside
        # the web processes, not before them.
        await panel.wait_ready(timeout=30)
        async with httpx.AsyncClient(base_url=panel.base, timeout=10) as client:
            params = inbound_params("SM" + "7e" * 16, "+447400299999", "Hello", to=BOT_NUMBER)
            answer = await post_signed(client, MESSAGES, params, public_base_url=panel.base)
        assert answer.status_code == 200, answer.text
        await wait_until(
            lambda: (
                query(
                    tmp_path,
                    "SELECT count(*) FROM inbound_messages WHERE provider_message_id = ?",
                    (params["MessageSid"],),
                )[0][0]
                == 1
            ),
            30,
            "the webhook stored while the lookups hang",
        )
        # Every look-up asked since the restart is still held at the fake.
        assert len(twilio.gets()) > asked, f"seed {seed}: no look-up hangs; this proved nothing"
        twilio.list_mode = "ok"
        await wave_settled(panel, twilio, numbers, seed)
        assert len(twilio.sent_to("+447400299999")) == 1
        assert await panel.stop() == 0, panel.tail()


class Burst:
    """Inbound webhooks: signed Twilio SMS (each number says hello once) and Telegram
    updates with the secret (each chat says hi once), shuffled; every answer each got."""

    def __init__(self, base: str, telegram: FakeTelegram, sms: int, chats: int) -> None:
        self.base = base
        self.sms = [
            inbound_params(f"SM{i:032x}", f"+4474003{i:05d}", "Hello", to=BOT_NUMBER)
            for i in range(sms)
        ]
        self.updates = [telegram.message_update(70_000 + i, "hi") for i in range(chats)]
        # key (what the engine dedupes on) -> the request
        self.requests: dict[str, tuple[str, dict[str, Any]]] = {
            **{p["MessageSid"]: ("sms", p) for p in self.sms},
            **{f"update:{u['update_id']}": ("telegram", u) for u in self.updates},
        }
        self.statuses: dict[str, list[int | str]] = {key: [] for key in self.requests}

    def answered(self) -> set[str]:
        return {key for key, seen in self.statuses.items() if any(s == 200 for s in seen)}

    async def send(self, keys: list[str], concurrency: int = 20) -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:

            async def one(key: str) -> None:
                kind, body = self.requests[key]
                async with gate:
                    try:
                        if kind == "sms":
                            r = await post_signed(client, MESSAGES, body, public_base_url=self.base)
                        else:
                            r = await client.post(
                                "/webhooks/telegram",
                                json=body,
                                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                            )
                        self.statuses[key].append(r.status_code)
                    except httpx.HTTPError as exc:
                        self.statuses[key].append(type(exc).__name__)

            await asyncio.gather(*(one(key) for key in keys))


async def test_inbound_bursts_killed_midway_store_and_answer_every_accepted_webhook_once(
    tmp_path: Path,
) -> None:
    """600 signed SMS webhooks and 100 Telegram updates in two bursts; the main process
    killed mid-burst, then the web process. Each webhook answered 2xx is stored exactly
    once; each SMS sender is answered exactly once at the fake (a Telegram chat at least
    once, and at most twice: the Bot API cannot be asked whether a send went through, see
    TelegramChannel.reconcile). Those never answered 2xx are sent again (as Twilio would
    with ``#rc``, and as Telegram does) until they are."""
    seed = crash_seed()
    rng = random.Random(seed)
    async with panel_running(tmp_path) as (panel, twilio, telegram):
        await panel.start()
        burst = Burst(panel.base, telegram, 600, 100)
        keys = list(burst.requests)
        rng.shuffle(keys)
        for number, chunk in enumerate([keys[:350], keys[350:]]):
            sending = asyncio.create_task(burst.send(chunk))
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            if number == 0:
                await panel.kill_main()
                await sending
                print(f"main killed mid-burst: {len(burst.answered())} answered 2xx so far")
                await panel.start()
            else:
                await panel.kill_web()
                await sending
                print(f"web process killed mid-burst: {len(burst.answered())} answered 2xx")
        statuses = Counter(s for seen in burst.statuses.values() for s in seen)
        assert not any(isinstance(s, int) and s >= 500 for s in statuses), (seed, statuses)
        # The providers send again what was not answered 2xx.
        for _ in range(5):
            left = [key for key in keys if key not in burst.answered()]
            if not left:
                break
            await burst.send(left)
        assert burst.answered() == set(burst.statuses), f"seed {seed}: {statuses}"

        senders = [p["From"] for p in burst.sms]
        chats = [u["message"]["chat"]["id"] for u in burst.updates]
        await wait_until(
            lambda: (
                panel.unsettled() == 0
                and all(twilio.sent_to(n) for n in senders)
                and all(telegram.sent(c) for c in chats)
            ),
            60,
            f"every sender answered (seed {seed}; outbox {panel.statuses()})",
            interval=0.25,
        )
        await asyncio.sleep(1.0)
        stored = Counter(
            key
            for (key,) in query(
                tmp_path,
                "SELECT provider_message_id FROM inbound_messages "
                "WHERE channel IN ('sms', 'telegram')",
            )
        )
        assert set(stored) == set(burst.statuses), f"seed {seed}"
        assert set(stored.values()) == {1}, f"seed {seed}"
        replies = Counter(m["to"] for m in twilio.messages)
        wrong = {n: replies[n] for n in senders if replies[n] != 1}
        assert not wrong, (
            f"seed {seed}: senders not answered exactly once: {list(wrong.items())[:5]}"
        )
        telegram_wrong = {c: len(telegram.sent(c)) for c in chats if len(telegram.sent(c)) > 2}
        assert not telegram_wrong, f"seed {seed}: {telegram_wrong}"
        assert_no_numbers_logged(panel, senders)
        assert await panel.stop() == 0, panel.tail()


async def test_a_web_process_killed_while_it_starts_is_started_again(tmp_path: Path) -> None:
    """The replacement of a dead web process is killed too, before it is ready (the
    kernel's OOM killer, an operator): serve starts another and keeps serving."""
    async with panel_running(tmp_path) as (panel, twilio, _):
        await panel.start()
        first = await panel.kill_web(wait=False)
        try:
            replacement = await wait_until(
                lambda: [p for p in panel.web_pids() if p != first],
                20,
                "a replacement web process",
                interval=0.005,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{panel.tail()}") from None
        os.kill(replacement[0], signal.SIGKILL)
        await asyncio.sleep(1.0)
        assert panel.process is not None
        assert panel.process.returncode is None, f"serve gave up:\n{panel.tail()}"
        await panel.wait_ready()
        async with httpx.AsyncClient(base_url=panel.base, timeout=10) as client:
            params = inbound_params("SM" + "5a" * 16, "+447400299998", "Hello", to=BOT_NUMBER)
            answer = await post_signed(client, MESSAGES, params, public_base_url=panel.base)
        assert answer.status_code == 200
        await wait_until(lambda: twilio.sent_to("+447400299998"), 20, "the welcome")
        assert await panel.stop() == 0, panel.tail()
