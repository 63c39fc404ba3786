"""An impact update to a large panel: render and enqueue, peak memory, then dispatch pacing.

**Part 1: render and enqueue** (targets: at most 10 s, at most 300 MB peak RSS).
Setup (not timed): a new SQLite file through ``Bot.create`` (every migration, the impact
updates plugin's too) with ``--people`` active panellists (default 100,000) spread evenly
over ``--locales`` (default en, cy, pl, ur), each with an SMS address, all of whom completed
the demo survey (``examples/surveys/gp-access.toml``, one wave, one completed session
each, written with bulk inserts). A decision linked to that survey is recorded and its
update scheduled for now, to its participants, through the plugin's own functions.

Timed, in a fresh process (so its peak RSS is the send's own, plus the interpreter and the
bot): ``plugins.impact_updates.updates.run_update``: the audience resolved in SQL into
``impact_recipients`` in one transaction, then every message rendered in its locale and
queued in batches of ``batch_size`` (500) with its idempotency key. Checked afterwards: one
outbox row per person, in their locale, and a second run queues nothing.

The same-run baseline: the same number of ready-made outbox rows written by one
``executemany`` on the same database settings (the floor SQLite sets), and its ratio.

**Part 2: dispatch pacing** (targets: at least 98% of each channel's rate limit, never above
it in any one-second window). An impact update to ``--dispatch-messages`` panellists (half
SMS, half Telegram; the text one GSM-7 segment, so the rate is in messages) queued by the
plugin, then sent by the real dispatcher to the fake Twilio and Telegram APIs of
``tests/fakes``, run in a process of their own: the figures and checks are
``bench/dispatch.py``'s, measured at the fakes.

    .venv/bin/python bench/broadcast.py [--people N] [--locales en,cy,pl,ur]
        [--dispatch-messages N] [--sms-rate R] [--telegram-rate R] [--keep] [--check]

The exit code is 0 whatever the figures; with ``--check`` it is 1 when a target is missed.
A message missing, in the wrong language or queued twice is always an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import dispatch  # noqa: E402 - bench/ is sys.path[0]: the pacing figures and the fakes
from _common import cpus, load_average, verdict  # noqa: E402

from bot.app import Bot  # noqa: E402
from bot.config import dump_toml, load_settings  # noqa: E402
from bot.models import iso, utcnow  # noqa: E402
from bot.resources import examples_dir  # noqa: E402
from bot.storage import surveys as survey_store  # noqa: E402
from bot.surveys.loader import load_survey_file  # noqa: E402
from plugins.impact_updates import decisions, updates  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 300.0
SURVEY = "gp-access-2026"
CHUNK = 10_000


def write_config(folder: Path, locales: list[str], extra: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {
        "bot": {
            "name": "Bench Panel",
            "database": str(folder / "broadcast.db"),
            "quiet_hours": False,
            "locales": locales,
            "default_locale": locales[0],
            "public_base_url": "http://127.0.0.1:9",
        },
        "channels": {"simulator": {"enabled": False}},
    }
    data.update(extra or {})
    path = folder / "panelbot.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


async def make_panel(bot: Bot, people: list[tuple[str, str, str]], *, answered: bool) -> None:
    """Active panellists ``(locale, channel, address)`` in bulk; with ``answered``, each with
    a completed session of the demo survey."""
    now = iso(utcnow())
    async with bot.db.transaction() as tx:
        stored, _ = await survey_store.add(
            tx, load_survey_file(examples_dir() / "surveys" / "gp-access.toml")
        )
        wave = await tx.execute(
            "INSERT INTO waves (survey_row_id, status, opens_at, closes_at, opened_at, "
            "created_at) VALUES (?, 'open', ?, ?, ?, ?)",
            (stored.row_id, now, now, now, now),
        )
        wave_id = wave.lastrowid
    first = None
    for start in range(0, len(people), CHUNK):
        chunk = people[start : start + CHUNK]
        async with bot.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO panellists (status, locale, demographics, consent_at, "
                "consent_method, source, created_at, updated_at) "
                "VALUES ('active', ?, '{}', ?, 'bench', 'bench', ?, ?)",
                [(locale, now, now, now) for locale, _, _ in chunk],
            )
            rows = await tx.execute_fetchall(
                "SELECT id FROM panellists ORDER BY id DESC LIMIT ?", (len(chunk),)
            )
            ids = sorted(r["id"] for r in rows)
            first = ids[0] if first is None else first
            await tx.executemany(
                "INSERT INTO addresses (panellist_id, channel, address, created_at) "
                "VALUES (?, ?, ?, ?)",
                [(pid, ch, addr, now) for pid, (_, ch, addr) in zip(ids, chunk, strict=True)],
            )
            if answered:
                await tx.executemany(
                    "INSERT INTO survey_sessions (wave_id, survey_row_id, panellist_id, state, "
                    "answered, started_at, finished_at) VALUES (?, ?, ?, 'completed', 7, ?, ?)",
                    [(wave_id, stored.row_id, pid, now, now) for pid in ids],
                )


async def schedule_update(bot: Bot, audience: str, *, short: bool) -> int:
    if short:  # one GSM-7 segment, so the channel's rate is in messages
        words = {"you_said": "Phones were busy.", "we_did": "More staff at 8am."}
    else:
        words = {
            "you_said": "Getting through to the practice by phone at 8am was too hard.",
            "we_did": "Every practice now offers online booking and a call-back service.",
            "decided_by": "the integrated care board",
            "link": "https://panel.example.org/impact",
        }
    decision = await decisions.add_decision(bot, title="GP phone access", surveys=SURVEY, **words)
    update, _ = await updates.schedule(
        bot, decision["id"], at="now", audience=audience, feedback=not short
    )
    return int(update["id"])


# -- part 1 ----------------------------------------------------------------------------------


def enqueue_in_this_process(config: str, update_id: int) -> None:
    """``--enqueue``: the timed part, alone in its process; prints JSON figures."""

    async def main() -> dict[str, Any]:
        bot = await Bot.create(load_settings(Path(config)))
        try:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            queued = await updates.run_update(bot, update_id)
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        finally:
            await bot.stop()
        return {
            "queued": queued,
            "seconds": seconds,
            "cpu": cpu,
            "rss_before_kb": rss_before,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(main())), flush=True)


def floor_seconds(database: Path, rows: int) -> float:
    """The same number of ready-made outbox rows by one executemany, same pragmas."""
    from bot.storage.db import PRAGMAS

    now = iso(utcnow())
    text = "x" * 300
    with sqlite3.connect(database, isolation_level=None) as db:
        for pragma in PRAGMAS:
            db.execute(pragma)
        data = [
            (f"floor:{i}", "sms", f"+4470{i:08d}", text, "impact_update", 1, "{}", now, now, now)
            for i in range(rows)
        ]
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO outbox (idempotency_key, channel, address, text, kind, priority, "
            "extra, next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            data,
        )
        db.execute("ROLLBACK")
        return time.perf_counter() - t0


async def part_one_setup(folder: Path, people: int, locales: list[str]) -> tuple[Path, int]:
    config = write_config(folder, locales)
    bot = await Bot.create(load_settings(config))
    try:
        panel = [(locales[i % len(locales)], "sms", f"+4474{i:08d}") for i in range(people)]
        await make_panel(bot, panel, answered=True)
        update_id = await schedule_update(bot, "participants", short=False)
    finally:
        await bot.stop()
    return config, update_id


async def part_one_check(config: Path, update_id: int, people: int) -> list[str]:
    """One message per person, in their language; a second run queues nothing."""
    problems = []
    bot = await Bot.create(load_settings(config))
    try:
        again = await updates.run_update(bot, update_id)
        rows = await bot.db.fetchall(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT o.panellist_id) AS people, "
            "SUM(json_extract(o.extra, '$.locale') = p.locale) AS right_locale "
            "FROM outbox o JOIN panellists p ON p.id = o.panellist_id "
            "WHERE o.kind = 'impact_update'"
        )
        n, distinct, right = rows[0]["n"], rows[0]["people"], rows[0]["right_locale"]
        samples = await bot.db.fetchall(
            "SELECT json_extract(extra, '$.locale') AS locale, MIN(text) AS text FROM outbox "
            "WHERE kind = 'impact_update' GROUP BY 1 ORDER BY 1"
        )
    finally:
        await bot.stop()
    if again:
        problems.append(f"a second run queued {again} more")
    if n != people or distinct != people:
        problems.append(f"{n} messages to {distinct} people for {people}")
    if right != people:
        problems.append(f"{people - right} messages not in the person's language")
    for row in samples:
        first = row["text"].splitlines()[1][:60]
        print(f"  {row['locale']}: {first}...")
    return problems


# -- part 2 ----------------------------------------------------------------------------------


async def part_two(args: argparse.Namespace, folder: Path, fakes: dict[str, str]) -> dict[str, Any]:
    sms_count = args.dispatch_messages // 2
    telegram_count = args.dispatch_messages - sms_count
    config = write_config(
        folder,
        ["en"],
        {"channels": dispatch.channels(fakes, args.sms_rate, args.telegram_rate)},
    )
    bot = await Bot.create(load_settings(config))
    panel = [("en", "sms", f"+4474002{i:05d}") for i in range(sms_count)] + [
        ("en", "telegram", str(700_000_000 + i)) for i in range(telegram_count)
    ]
    await make_panel(bot, panel, answered=False)
    update_id = await schedule_update(bot, "panel", short=True)
    t0 = time.perf_counter()
    queued = await updates.run_update(bot, update_id)
    texts = await bot.db.fetchall("SELECT DISTINCT text FROM outbox WHERE kind='impact_update'")
    segments = {dispatch.sms.prepare(r["text"])[1].segments for r in texts}
    print(
        f"setup (not timed): impact update {update_id} queued {queued} messages "
        f"({sms_count} SMS, {telegram_count} Telegram) in {time.perf_counter() - t0:.2f} s; "
        f"SMS segments per text {sorted(segments)}"
    )
    if segments != {1} or queued != args.dispatch_messages:
        await bot.stop()
        raise SystemExit("setup: every text must be one SMS segment, one per person")
    return await dispatch.send_and_time(
        bot, sms_count, telegram_count, args.sms_rate, args.telegram_rate
    )


# -- the run ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/broadcast.py",
        description="An impact update to a large panel: enqueue time, peak RSS, pacing.",
    )
    parser.add_argument("--people", type=int, default=100_000, metavar="N")
    parser.add_argument("--locales", default="en,cy,pl,ur", metavar="L,...")
    parser.add_argument("--dispatch-messages", type=int, default=3000, metavar="N")
    parser.add_argument("--sms-rate", type=float, default=100.0, metavar="R")
    parser.add_argument("--telegram-rate", type=float, default=30.0, metavar="R")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--enqueue", nargs=2, metavar=("CONFIG", "UPDATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.enqueue is None:
        if args.people < 1 or args.dispatch_messages < 4:
            parser.error("--people must be at least 1 and --dispatch-messages at least 4")
        if args.sms_rate <= 0 or args.telegram_rate <= 0:
            parser.error("rates must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.enqueue:
        enqueue_in_this_process(args.enqueue[0], int(args.enqueue[1]))
        return 0
    logging.basicConfig(level=logging.WARNING)
    locales = [loc.strip() for loc in args.locales.split(",") if loc.strip()]
    print(
        f"panelbot broadcast benchmark: an impact update to {args.people:,} panellists in "
        f"{len(locales)} locales ({', '.join(locales)}), then {args.dispatch_messages} through "
        f"the dispatcher"
    )
    machine = f"{platform.system()} {platform.machine()}"
    print(f"python {platform.python_version()}, {machine}, {cpus()} CPUs")
    print(f"load average before: {load_average()} (other work on the machine skews every figure)")
    workdir = Path(tempfile.mkdtemp(prefix="panelbot-broadcast-"))
    checks: list[tuple[str, str, bool]] = []
    wrong: list[str] = []
    try:
        one = workdir / "part1"
        one.mkdir()
        t0 = time.perf_counter()
        config, update_id = asyncio.run(part_one_setup(one, args.people, locales))
        print(
            f"setup (not timed): panel, survey sessions, decision, update {update_id} in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        out = subprocess.run(
            [sys.executable, __file__, "--enqueue", str(config), str(update_id)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"the enqueue process failed:\n{out.stderr[-3000:]}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        peak_mb = figures["peak_rss_kb"] / 1024
        before_mb = figures["rss_before_kb"] / 1024
        seconds = figures["seconds"]
        floor = floor_seconds(one / "broadcast.db", args.people)
        print()
        print("part 1: render and enqueue")
        print(
            f"  queued             {figures['queued']:,} messages in {seconds:.2f} s "
            f"({figures['queued'] / seconds:,.0f}/s); process cpu {figures['cpu']:.2f} s"
        )
        print(
            f"  peak RSS           {peak_mb:.0f} MB ({before_mb:.0f} MB with the bot open, "
            f"before the send)"
        )
        print(
            f"  floor              {floor:.2f} s to write {args.people:,} ready-made outbox rows "
            f"in one executemany; the update takes {seconds / floor:.1f}x that"
        )
        problems = asyncio.run(part_one_check(config, update_id, args.people))
        wrong += [f"part 1: {p}" for p in problems]
        checks.append(
            (
                f"enqueue <= {TARGET_SECONDS:g} s",
                f"{seconds:.2f} s ({seconds / TARGET_SECONDS:.0%})",
                seconds <= TARGET_SECONDS,
            )
        )
        checks.append(
            (
                f"peak RSS <= {TARGET_RSS_MB:g} MB",
                f"{peak_mb:.0f} MB ({peak_mb / TARGET_RSS_MB:.0%})",
                peak_mb <= TARGET_RSS_MB,
            )
        )

        print()
        print("part 2: dispatch pacing (bench/dispatch.py's checks, at the fakes)")
        two = workdir / "part2"
        two.mkdir()
        result, record = dispatch.with_fakes(
            two / "fakes.json", lambda fakes: part_two(args, two, fakes)
        )
        pacing_args = argparse.Namespace(
            messages=args.dispatch_messages,
            sms_rate=args.sms_rate,
            telegram_rate=args.telegram_rate,
        )
        pacing_ok = dispatch.report(pacing_args, result, record)
        print()
        print("broadcast targets")
        for name, value, ok in checks:
            print(f"  {name:<32}{value:>18}   {verdict(ok)}")
        print(f"  {'dispatch pacing (above)':<32}{'':>18}   {verdict(pacing_ok)}")
        if args.keep:
            print(f"kept: {workdir}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if wrong:
        print("FAILED: " + "; ".join(wrong), file=sys.stderr)
        return 1
    passed = all(ok for _, _, ok in checks) and pacing_ok
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
