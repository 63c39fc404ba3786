"""Inbound throughput: simulated panellists answer a 6-question survey through the engine.

Setup (not timed): a fresh SQLite file with the production pragmas, N active panellists on
the simulator channel, a 6-question survey (one of each type, one skip rule that always
holds) and a wave launched to all of them, which queues N invitations and opens N sessions.
The dispatcher and scheduler are not started: what is measured is the engine's inbound path
(``Bot.handle``), up to and including the replies queued in the outbox.

Timed: ``--concurrency`` asyncio tasks each take the next panellist and send their six
answers, one ``Bot.handle`` per message, so messages from different people interleave as in
real traffic. Latency per message is wall time around ``Bot.handle``, so it includes the wait
for the application's write lock.

Floor (same run, same pragmas, a new file): a bare aiosqlite connection doing the same number
of write transactions, each the minimum the engine must write per answer (an inbound row, an
answer row, a session update and an outbox row inside BEGIN IMMEDIATE ... COMMIT), with the
same concurrency through one shared connection and an asyncio.Lock, as the app does. Half of
the floor's transactions run before the engine and half after, so a change in the load on
the machine during the run weighs on both sides of the ratio.

    .venv/bin/python bench/inbound.py [--panellists N] [--concurrency C] [--db PATH]
                                      [--keep] [--check] [--profile FILE]

The exit code is 0 whatever the figures (this is a report); with ``--check`` it is 1 when a
target is missed. A wrong answer count is always an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import math
import platform
import pstats
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from _common import cpus, load_average, verdict

from bot.app import Bot
from bot.cli import run as run_on_panelbot_loop
from bot.config import settings_from_dict
from bot.engine import waves
from bot.models import Address, InboundMessage, PanellistStatus, utcnow
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.storage.db import PRAGMAS
from bot.surveys.loader import load_survey_file

TARGET_ANSWERS_PER_SECOND = 1000.0
TARGET_FLOOR_RATIO = 0.5
CREATE_BATCH = 1000

SURVEY_ID = "bench-inbound"
SURVEY_TOML = """\
id = "bench-inbound"
title.en = "GP appointments (benchmark)"
locales = ["en"]
intro.en = "A 2-minute survey from your local NHS about GP appointments."
thanks.en = "Thank you: your answers help decide how appointments are offered."

[[questions]]
id = "ease"
type = "choice"
text.en = "How easy was it to get a GP appointment last time?"
options = [
  { id = "easy", text.en = "Easy" },
  { id = "ok", text.en = "Neither easy nor hard" },
  { id = "hard", text.en = "Hard" },
]

[[questions]]
id = "how"
type = "multi"
when = "ease != 'hard'"
text.en = "How did you book it? Choose all that apply."
options = [
  { id = "phone", text.en = "By phone" },
  { id = "online", text.en = "Online or in the NHS App" },
  { id = "in_person", text.en = "In person" },
]

[[questions]]
id = "score"
type = "scale"
min = 1
max = 5
min_label.en = "Very poor"
max_label.en = "Very good"
text.en = "How would you rate the service overall?"

[[questions]]
id = "app"
type = "yesno"
text.en = "Have you used the NHS App in the last year?"

[[questions]]
id = "days"
type = "number"
min = 0
max = 365
text.en = "How many days did you wait for the appointment?"

[[questions]]
id = "comment"
type = "text"
text.en = "Is there anything else you would like to tell us?"
"""
# One reply per question, in order. "1" (easy) keeps the skip rule on "how" true, so every
# question is asked and answered: N * 6 answers.
ANSWERS = ("1", "1 and 3", "4", "yes", "12", "The receptionist was helpful, thank you.")
QUESTIONS = len(ANSWERS)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Timing:
    count: int  # messages (engine) or transactions (floor)
    elapsed: float  # seconds of wall time
    latencies: list[float]  # seconds, ascending
    cpu: float  # process CPU seconds, every thread
    loop_cpu: float  # of which the event loop's thread (the rest is mostly the SQLite threads)
    round_trips: int | None = None  # hops to the SQLite threads, when countable

    def __add__(self, other: Timing) -> Timing:
        return Timing(
            self.count + other.count,
            self.elapsed + other.elapsed,
            sorted(self.latencies + other.latencies),
            self.cpu + other.cpu,
            self.loop_cpu + other.loop_cpu,
            None
            if self.round_trips is None or other.round_trips is None
            else self.round_trips + other.round_trips,
        )

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def cpu_line(self, unit: str) -> str:
        per = 1000 / self.count if self.count else 0.0
        share = self.cpu / self.elapsed if self.elapsed else 0.0
        return (
            f"{self.cpu * per:.3f} ms per {unit}: event loop {self.loop_cpu * per:.3f}, "
            f"sqlite thread {(self.cpu - self.loop_cpu) * per:.3f} ({share:.0%} of one core)"
        )

    def trips_per(self) -> str:
        if self.round_trips is None or not self.count:
            return "n/a"
        return f"{self.round_trips / self.count:.2f}"

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    @property
    def max_ms(self) -> float:
        return self.latencies[-1] * 1000 if self.latencies else 0.0


class RoundTrips:
    """Counts hops to the threads that own the SQLite handles (and back).

    On a small machine that hop, not SQLite, is most of the cost of a short statement. For
    the bot, ``Database.round_trips()`` counts every call sent to its writer's and readers'
    threads; for the floor's bare aiosqlite connection, its ``Connection._execute`` is
    wrapped (every await on it, its cursors included); if that ever goes away the floor's
    figure shows as n/a.
    """

    def __init__(self, source: object) -> None:
        self._inner_count = 0
        self._source = source
        if callable(getattr(source, "round_trips", None)):
            self.supported = True
            return
        inner = getattr(source, "_execute", None)
        self.supported = callable(inner)
        if not self.supported:
            return

        async def counting(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
            self._inner_count += 1
            return await inner(fn, *args, **kwargs)

        source._execute = counting  # type: ignore[attr-defined]

    @property
    def count(self) -> int:
        round_trips = getattr(self._source, "round_trips", None)
        return int(round_trips()) if callable(round_trips) else self._inner_count


async def run_concurrently(
    jobs: range,
    concurrency: int,
    job: Callable[[int, list[float]], Awaitable[None]],
    trips: RoundTrips,
) -> Timing:
    """Run ``job(i, latencies)`` for each i in ``jobs`` on ``concurrency`` worker tasks."""
    latencies: list[float] = []
    next_job = iter(jobs)

    async def worker() -> None:
        for i in next_job:  # a shared iterator: each job is taken by exactly one worker
            await job(i, latencies)

    trips_before = trips.count
    started, cpu_started, loop_started = (
        time.perf_counter(),
        time.process_time(),
        time.thread_time(),
    )
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(jobs))):
            group.create_task(worker())
    elapsed = time.perf_counter() - started
    cpu, loop_cpu = time.process_time() - cpu_started, time.thread_time() - loop_started
    latencies.sort()
    round_trips = trips.count - trips_before if trips.supported else None
    return Timing(len(latencies), elapsed, latencies, cpu, loop_cpu, round_trips)


def name_of(i: int) -> str:
    return f"bench{i:06d}"


# -- the engine --------------------------------------------------------------------------


async def setup_engine(db_path: Path, workdir: Path, panellists: int) -> tuple[Bot, float]:
    started = time.perf_counter()
    settings = settings_from_dict(
        {
            "bot": {"name": "Bench Panel", "database": str(db_path), "quiet_hours": False},
            "channels": {"simulator": {"enabled": True}},
        },
        base_dir=workdir,
    )
    bot = await Bot.create(settings)
    consent = utcnow()
    for start in range(0, panellists, CREATE_BATCH):
        async with bot.db.transaction() as conn:
            for i in range(start, min(start + CREATE_BATCH, panellists)):
                pid = await panellist_store.create(
                    conn,
                    status=PanellistStatus.ACTIVE,
                    locale="en",
                    consent_at=consent,
                    consent_method="bench",
                    source="bench",
                )
                await panellist_store.add_address(conn, pid, Address("sim", name_of(i)))
    survey_file = workdir / f"{SURVEY_ID}.toml"
    survey_file.write_text(SURVEY_TOML, encoding="utf-8")
    async with bot.db.transaction() as conn:
        await survey_store.add(conn, load_survey_file(survey_file))
    wave_id = await waves.launch(bot, SURVEY_ID)
    row = await bot.db.fetchone(
        "SELECT COUNT(*) FROM survey_sessions WHERE wave_id = ? AND state = 'active'", (wave_id,)
    )
    if row is None or row[0] != panellists:
        raise SystemExit(f"setup: {row[0] if row else 0} sessions opened, expected {panellists}")
    return bot, time.perf_counter() - started


async def run_engine(bot: Bot, panellists: int, concurrency: int) -> Timing:
    empty_results = 0

    async def answer_survey(i: int, latencies: list[float]) -> None:
        nonlocal empty_results
        address = Address("sim", name_of(i))
        for q, text in enumerate(ANSWERS):
            message = InboundMessage(address, text, f"bench-{i}-{q}")
            t0 = time.perf_counter()
            result = await bot.handle(message)
            latencies.append(time.perf_counter() - t0)
            if result.duplicate or not result.outbox_ids:
                empty_results += 1

    timing = await run_concurrently(
        range(panellists), concurrency, answer_survey, RoundTrips(bot.db)
    )
    if empty_results:
        raise SystemExit(f"engine: {empty_results} messages queued no reply (or were duplicates)")
    return timing


async def verify_engine(bot: Bot, panellists: int) -> dict[str, int]:
    async def count(sql: str) -> int:
        row = await bot.db.fetchone(sql)
        return int(row[0]) if row else 0

    found = {
        "answers": await count("SELECT COUNT(*) FROM answers"),
        "completed": await count("SELECT COUNT(*) FROM survey_sessions WHERE state = 'completed'"),
        "inbound": await count("SELECT COUNT(*) FROM inbound_messages"),
        "outbox": await count("SELECT COUNT(*) FROM outbox"),
    }
    expected = {
        "answers": panellists * QUESTIONS,
        "completed": panellists,
        "inbound": panellists * QUESTIONS,
        # One invitation each, then one reply per answer (next question, or the thanks).
        "outbox": panellists * (1 + QUESTIONS),
    }
    wrong = [f"{k} {found[k]}, expected {expected[k]}" for k in expected if found[k] != expected[k]]
    if wrong:
        print(
            "FAILED: the engine did not store what was sent: " + "; ".join(wrong), file=sys.stderr
        )
        raise SystemExit(1)
    return found


# -- the floor ---------------------------------------------------------------------------

FLOOR_SCHEMA = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, current_question TEXT, misses INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE inbound (
    id INTEGER PRIMARY KEY, channel TEXT NOT NULL, provider_message_id TEXT NOT NULL,
    panellist_id INTEGER, text TEXT, received_at TEXT NOT NULL,
    UNIQUE (channel, provider_message_id)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions (id),
    question_id TEXT NOT NULL, value TEXT NOT NULL, answered_at TEXT NOT NULL,
    UNIQUE (session_id, question_id)
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
    address TEXT, text TEXT, status TEXT NOT NULL DEFAULT 'queued',
    next_attempt_at TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at) WHERE status = 'queued';
"""
FLOOR_REPLY = (
    "Question 3 of 6: How would you rate the service overall? "
    "Reply with a number from 1 (Very poor) to 5 (Very good)."
)


class Floor:
    """The bare-aiosqlite baseline: one shared connection, an asyncio.Lock, the app's pragmas."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self.trips = RoundTrips(conn)

    @classmethod
    async def open(cls, path: Path, panellists: int) -> Floor:
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            for pragma in PRAGMAS:
                await conn.execute(pragma)
            await conn.executescript(FLOOR_SCHEMA)
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(
                "INSERT INTO sessions (id, current_question) VALUES (?, 'ease')",
                [(i + 1,) for i in range(panellists)],
            )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def answers(self) -> int:
        async with self.conn.execute("SELECT COUNT(*) FROM answers") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def run(self, panellists: range, concurrency: int) -> Timing:
        """Six write transactions for each panellist in the range, as the engine would do."""
        conn, lock = self.conn, self.lock

        async def answer_survey(i: int, latencies: list[float]) -> None:
            session = i + 1
            for q, text in enumerate(ANSWERS):
                t0 = time.perf_counter()
                now = utcnow().isoformat()
                async with lock:
                    await conn.execute("BEGIN IMMEDIATE")
                    try:
                        cursor = await conn.execute(
                            "INSERT INTO inbound (channel, provider_message_id, panellist_id, "
                            "text, received_at) VALUES ('sim', ?, ?, ?, ?)",
                            (f"floor-{i}-{q}", session, text, now),
                        )
                        inbound_id = cursor.lastrowid
                        await conn.execute(
                            "INSERT INTO answers (session_id, question_id, value, answered_at) "
                            "VALUES (?, ?, ?, ?)",
                            (session, f"q{q}", f'"{text}"', now),
                        )
                        await conn.execute(
                            "UPDATE sessions SET current_question = ?, misses = 0, "
                            "answered = answered + 1 WHERE id = ?",
                            (f"q{q + 1}", session),
                        )
                        await conn.execute(
                            "INSERT INTO outbox (idempotency_key, channel, address, text, "
                            "next_attempt_at, created_at) VALUES (?, 'sim', ?, ?, ?, ?)",
                            (f"in:sim:{inbound_id}:0", name_of(i), FLOOR_REPLY, now, now),
                        )
                    except BaseException:
                        await conn.execute("ROLLBACK")
                        raise
                    await conn.execute("COMMIT")
                latencies.append(time.perf_counter() - t0)

        return await run_concurrently(panellists, concurrency, answer_survey, self.trips)


# -- the report --------------------------------------------------------------------------


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def main_async(
    args: argparse.Namespace, workdir: Path, db_path: Path, floor_path: Path
) -> bool:
    n, c = args.panellists, args.concurrency

    print(f"panelbot inbound benchmark: {n} panellists x {QUESTIONS} answers, concurrency {c}")
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"aiosqlite {aiosqlite.__version__}, {platform.system()} {platform.machine()}, "
        f"{cpus()} CPUs"
    )
    print(f"pragmas: {'; '.join(p.removeprefix('PRAGMA ') for p in PRAGMAS)}")
    print(f"load average before: {load_average()} (other work on the machine skews every figure)")

    bot, setup_seconds = await setup_engine(db_path, workdir, n)
    print(f"setup (not timed): {n} panellists, survey added, wave launched in {setup_seconds:.2f}s")
    floor_db = await Floor.open(floor_path, n)
    try:
        # The floor runs in two halves that bracket the engine run, so a change in the load
        # on the machine during the run weighs on both sides of the ratio.
        floor = await floor_db.run(range(n // 2), c)
        try:
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            engine = await run_engine(bot, n, c)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            found = await verify_engine(bot, n)
        finally:
            await bot.stop()
        floor += await floor_db.run(range(n // 2, n), c)
        floor_answers = await floor_db.answers()
    finally:
        await floor_db.close()
    if floor_answers != n * QUESTIONS:
        print(f"FAILED: the floor stored {floor_answers} answers", file=sys.stderr)
        raise SystemExit(1)

    ratio = engine.rate / floor.rate if floor.rate else 0.0
    rate_ok = engine.rate >= TARGET_ANSWERS_PER_SECOND
    ratio_ok = ratio >= TARGET_FLOOR_RATIO

    print()
    print("engine (Bot.handle, one transaction per inbound message)")
    print(f"  messages           {engine.count}")
    print(f"  answers stored     {found['answers']} (expected {n * QUESTIONS}: ok)")
    print(f"  replies queued     {found['outbox'] - n} (+{n} invitations)")
    print(f"  elapsed            {engine.elapsed:.2f} s")
    print(f"  answers/s          {engine.rate:,.0f}")
    print(f"  wall per message   {engine.elapsed / engine.count * 1000:.3f} ms")
    print(f"  cpu                {engine.cpu_line('message')}")
    print(f"  sqlite round trips {engine.trips_per()} per message")
    print(
        f"  latency            p50 {engine.ms(50):.2f} ms   p99 {engine.ms(99):.2f} ms   "
        f"max {engine.max_ms:.2f} ms"
    )
    print()
    print("floor (bare aiosqlite: BEGIN IMMEDIATE; 3 INSERT + 1 UPDATE; COMMIT; half before")
    print("       and half after the engine run)")
    print(f"  transactions       {floor.count}")
    print(f"  elapsed            {floor.elapsed:.2f} s")
    print(f"  transactions/s     {floor.rate:,.0f}")
    print(f"  cpu                {floor.cpu_line('transaction')}")
    print(f"  sqlite round trips {floor.trips_per()} per transaction")
    print(
        f"  latency            p50 {floor.ms(50):.2f} ms   p99 {floor.ms(99):.2f} ms   "
        f"max {floor.max_ms:.2f} ms"
    )
    print()
    print(f"ratio engine/floor   {ratio:.2f}")
    print(f"peak RSS             {peak_rss_mib():.0f} MiB")
    print(f"load average after   {load_average()}")
    print()
    print("targets")
    print(
        f"  answers/s >= {TARGET_ANSWERS_PER_SECOND:,.0f}      {engine.rate:>8,.0f}   "
        f"{verdict(rate_ok)}"
    )
    print(f"  engine/floor >= {TARGET_FLOOR_RATIO:.1f}      {ratio:>8.2f}   {verdict(ratio_ok)}")
    if args.keep or args.db:
        print()
        print(f"kept: {db_path} and {floor_path}")
    if args.profile:
        print(f"profile of the timed engine run: {args.profile}")
    return rate_ok and ratio_ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/inbound.py",
        description="Inbound messages per second through the engine, against a bare-SQLite "
        "floor measured in the same run.",
    )
    parser.add_argument(
        "--panellists",
        type=int,
        default=2000,
        metavar="N",
        help="simulated panellists, each answering 6 questions (default 2000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=50,
        metavar="C",
        help="panellists answering at the same time (default 50)",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="engine database file (must not exist; kept); the floor's file "
        "goes beside it as <name>-floor.db",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder with both databases"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target is missed (default: always exit 0)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="write cProfile stats of the timed engine run to FILE "
        "(read with python -m pstats FILE); slows the run down",
    )
    args = parser.parse_args(argv)
    if args.panellists < 1:
        parser.error("--panellists must be at least 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="panelbot-bench-"))
    if args.db:
        db_path = Path(args.db).resolve()
        floor_path = db_path.with_name(f"{db_path.stem}-floor{db_path.suffix or '.db'}")
        for path in (db_path, floor_path):
            if path.exists():
                shutil.rmtree(workdir, ignore_errors=True)
                print(f"error: {path} already exists; give --db a new file", file=sys.stderr)
                return 1
    else:
        db_path, floor_path = workdir / "engine.db", workdir / "floor.db"
    try:
        # The event loop panelbot itself runs on (uvloop when installed), for both sides.
        passed = run_on_panelbot_loop(main_async(args, workdir, db_path, floor_path))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.profile:
        pstats.Stats(args.profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
