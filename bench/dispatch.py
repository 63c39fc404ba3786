"""Dispatch pacing: queued messages through the real dispatcher to fake Twilio and Telegram APIs.

Setup (not timed): a new SQLite file through ``Bot.create`` with Twilio (``rate_per_second``
100, a short code) and Telegram (30) switched on and pointed at the fakes from ``tests/fakes``,
which run in a subprocess of their own (their own event loop and interpreter, so they take
no time from the dispatcher's loop and their clock readings are not held up by it). Half of
``--messages`` are SMS invitations to distinct ``sms:`` panellists, half Telegram invitations
to distinct chats, queued with ``bot.storage.outbox.queue``; every text is one GSM-7 segment,
so an SMS costs one unit of its channel's rate and the rate is in messages.

Timed: ``bot.start()`` runs the dispatcher (and the scheduler, which has nothing to do) until
the database says every message is sent. The fakes record when each create call
(Twilio) or sendMessage (Telegram) arrived, with ``time.monotonic()`` on their side; the
bench also records when the dispatcher called each channel's ``send``.

Per channel, from the fakes' times:

- achieved rate over the busy period: (messages - 1) / (last - first), as a share of the
  limit (target: at least 98%);
- the most messages in any one-second window [t, t + 1), found exactly with two pointers
  over the sorted times (target: never above the limit).

The fakes' times, not the dispatcher's, are what a provider counts: a request that reaches
the fake late (a busy machine) can land in the next requests' second, so the dispatcher's
pacer counts each send until its request has completed (``bot.dispatcher.Pacer``), and the
fakes' busiest window stays within the limit however late requests arrive. On a loaded
two-core machine (load average 5-6) the previous pacer showed 102 SMS and 33 Telegram
messages in a second; this one 100 and 30, at no lower rate.

    .venv/bin/python bench/dispatch.py [--messages N] [--sms-rate R] [--telegram-rate R]
                                       [--keep] [--check]

The exit code is 0 whatever the figures; with ``--check`` it is 1 when a target is missed.
A message lost, failed or sent twice is always an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import math
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.fakes: the fake provider APIs

from _common import cpus, load_average, verdict  # noqa: E402 - bench/ is sys.path[0]

from bot import sms  # noqa: E402
from bot.app import Bot  # noqa: E402
from bot.config import settings_from_dict  # noqa: E402
from bot.models import Address, MessageKind, OutboundMessage, PanellistStatus, utcnow  # noqa: E402
from bot.storage import outbox as outbox_store  # noqa: E402
from bot.storage import panellists as panellist_store  # noqa: E402
from tests.fakes.telegram_api import TOKEN  # noqa: E402
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN  # noqa: E402

T = TypeVar("T")
TARGET_RATE_SHARE = 0.98
SENDER = "+447400100000"
CREATE_BATCH = 500
TEXT = "Survey {i:05d} from your local NHS: how easy was it to see a GP? Reply 1 (easy) to 5."


# -- the fakes' process (``bench/dispatch.py --serve-fakes FILE``) -----------------------------


def serve_fakes(out_file: str) -> None:
    """Both fake APIs in one loop until SIGTERM; then what they received, as JSON."""
    from tests.fakes.telegram_api import FakeTelegram
    from tests.fakes.twilio_api import FakeTwilio

    # A collection pause here would make arrivals look late, then bunched: the fakes keep
    # every request, so the cyclic collector has much to walk and nothing to free.
    gc.disable()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
            print(json.dumps({"twilio": twilio.url, "telegram": telegram.base_url}), flush=True)
            await stop.wait()
            found = {
                "sms": [(r.monotonic, r.form.get("To", "")) for r in twilio.posts()],
                "sms_refused": len(twilio.requests) - len(twilio.messages),
                "telegram": [(c.at, str(c.chat_id)) for c in telegram.sent()],
                "telegram_refused": len(telegram.attempts()) - len(telegram.sent()),
            }
        return found

    record = asyncio.run(main())
    Path(out_file).write_text(json.dumps(record), encoding="utf-8")


# -- figures -----------------------------------------------------------------------------


def with_fakes(
    record_file: Path, work: Callable[[dict[str, str]], Coroutine[Any, Any, T]]
) -> tuple[T, dict[str, Any]]:
    """Start the fake APIs in a process of their own (this file's ``--serve-fakes``), run
    ``work(their base URLs)`` to completion, stop them; work's result and what the fakes
    recorded (they write it to ``record_file`` as they stop)."""
    fakes = subprocess.Popen(
        [sys.executable, __file__, "--serve-fakes", str(record_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fakes.stdout is not None
        line = fakes.stdout.readline()
        if not line.startswith("{"):
            raise SystemExit("the fake APIs did not start")
        result = asyncio.run(work(json.loads(line)))
        fakes.send_signal(signal.SIGTERM)
        fakes.wait(timeout=30)
        return result, json.loads(record_file.read_text(encoding="utf-8"))
    finally:
        if fakes.poll() is None:
            fakes.kill()
            fakes.wait()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def max_in_window(times: list[float], window: float = 1.0) -> tuple[int, float]:
    """The most events in any half-open window [t, t + window), and where it starts.

    A busiest window can always be slid right until it starts at an event, so looking only
    at windows starting at each event is exact. Two pointers: O(n) on sorted times.
    """
    best, best_at, j = 0, times[0] if times else 0.0, 0
    for i, start in enumerate(times):
        if j < i:
            j = i
        while j < len(times) and times[j] < start + window:
            j += 1
        if j - i > best:
            best, best_at = j - i, start
    return best, best_at


@dataclass
class Pacing:
    count: int
    first: float
    last: float
    max_window: int
    max_window_at: float
    min_gap: float
    gaps_under: int  # gaps shorter than 1/limit by more than 1 ms

    @classmethod
    def of(cls, times: list[float], limit: float) -> Pacing:
        times = sorted(times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        best, at = max_in_window(times)
        return cls(
            count=len(times),
            first=times[0] if times else 0.0,
            last=times[-1] if times else 0.0,
            max_window=best,
            max_window_at=at,
            min_gap=min(gaps) if gaps else 0.0,
            gaps_under=sum(1 for g in gaps if g < 1 / limit - 0.001),
        )

    @property
    def busy(self) -> float:
        return self.last - self.first

    @property
    def rate(self) -> float:
        # n messages span n - 1 intervals: a perfect pacer at r/s scores exactly r.
        return (self.count - 1) / self.busy if self.busy > 0 else 0.0

    def mean_gap_ms(self) -> float:
        return self.busy / (self.count - 1) * 1000 if self.count > 1 else 0.0


# -- the run -----------------------------------------------------------------------------


async def setup(bot: Bot, sms_count: int, telegram_count: int) -> None:
    consent = utcnow()
    recipients = [("sms", f"+4474002{i:05d}") for i in range(sms_count)] + [
        ("telegram", str(700_000_000 + i)) for i in range(telegram_count)
    ]
    for start in range(0, len(recipients), CREATE_BATCH):
        async with bot.db.transaction() as conn:
            for n, (channel, ident) in enumerate(recipients[start : start + CREATE_BATCH], start):
                pid = await panellist_store.create(
                    conn,
                    status=PanellistStatus.ACTIVE,
                    locale="en",
                    consent_at=consent,
                    consent_method="bench",
                    source="bench",
                )
                address = Address(channel, ident)
                await panellist_store.add_address(conn, pid, address)
                await outbox_store.queue(
                    conn,
                    key=f"bench-dispatch:{n}",
                    panellist_id=pid,
                    address=address,
                    text=TEXT.format(i=n),
                    kind=MessageKind.INVITATION,
                )


async def statuses(bot: Bot) -> Counter[tuple[str, str]]:
    rows = await bot.db.fetchall("SELECT channel, status, COUNT(*) FROM outbox GROUP BY 1, 2")
    return Counter({(r[0], r[1]): int(r[2]) for r in rows})


async def run(args: argparse.Namespace, workdir: Path, fakes: dict[str, str]) -> dict[str, Any]:
    sms_count = args.messages // 2
    telegram_count = args.messages - sms_count
    settings = settings_from_dict(
        {
            "bot": {
                "name": "Bench Panel",
                "database": str(workdir / "dispatch.db"),
                "quiet_hours": False,
                # Telegram's webhook mode needs one; nothing calls it here.
                "public_base_url": "http://127.0.0.1:9",
            },
            "channels": channels(fakes, args.sms_rate, args.telegram_rate),
        },
        base_dir=workdir,
    )
    bot = await Bot.create(settings)
    started = time.perf_counter()
    await setup(bot, sms_count, telegram_count)
    segments = {sms.prepare(TEXT.format(i=n))[1].segments for n in range(args.messages)}
    print(
        f"setup (not timed): {sms_count} SMS + {telegram_count} Telegram invitations to "
        f"distinct panellists queued in {time.perf_counter() - started:.2f}s; "
        f"SMS segments per text {sorted(segments)}"
    )
    if segments != {1}:
        raise SystemExit("setup: every text must be one SMS segment")

    return await send_and_time(bot, sms_count, telegram_count, args.sms_rate, args.telegram_rate)


def channels(fakes: dict[str, str], sms_rate: float, telegram_rate: float) -> dict[str, Any]:
    """The [channels] table: Twilio and Telegram at the fakes, each at its rate limit."""
    return {
        "simulator": {"enabled": False},
        "twilio": {
            "enabled": True,
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": SENDER,
            "api_base_url": fakes["twilio"],
            "rate_per_second": sms_rate,
        },
        "telegram": {
            "enabled": True,
            "token": TOKEN,
            "secret_token": "bench-secret",
            "api_base_url": fakes["telegram"],
            "rate_per_second": telegram_rate,
        },
    }


async def send_and_time(
    bot: Bot, sms_count: int, telegram_count: int, sms_rate: float, telegram_rate: float
) -> dict[str, Any]:
    """Start ``bot`` (its outbox queued), note when the dispatcher calls each channel's send,
    wait until every message is handed over (or 1.5 times the time the rates allow, plus
    30 s), stop it; the figures ``report`` reads."""
    # When the dispatcher called each channel's send, by recipient (the fakes keep their own
    # clock; time.monotonic() is one clock for every process on the machine).
    called: dict[str, dict[str, float]] = {"sms": {}, "telegram": {}}
    for name in ("sms", "telegram"):
        channel = bot.channels[name]
        inner = channel.send

        async def timed(
            message: OutboundMessage, inner: Any = inner, log: dict[str, float] = called[name]
        ) -> Any:
            log[message.address.id] = time.monotonic()
            return await inner(message)

        channel.send = timed  # type: ignore[method-assign]

    total = sms_count + telegram_count
    expected = sms_count / sms_rate
    if telegram_count:
        expected = max(expected, telegram_count / telegram_rate)
    timeout = expected * 1.5 + 30
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = 0
    try:
        await bot.start()
        while True:
            found = await statuses(bot)
            done = sum(n for (_, status), n in found.items() if status not in ("queued", "sending"))
            if done >= total or time.perf_counter() - t0 > timeout:
                break
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await bot.stop()
    return {
        "statuses": found,
        "elapsed": elapsed,
        "cpu": cpu,
        "called": called,
        "expected": expected,
        "counts": {"sms": sms_count, "telegram": telegram_count},
        "timed_out": done < total,
    }


def report(args: argparse.Namespace, result: dict[str, Any], record: dict[str, Any]) -> bool:
    limits = {"sms": args.sms_rate, "telegram": args.telegram_rate}
    elapsed = result["elapsed"]
    print()
    print(
        f"dispatcher: all sent in {elapsed:.2f} s (the slower channel alone needs "
        f"{result['expected']:.2f} s at its limit); process cpu {result['cpu']:.2f} s "
        f"({result['cpu'] / elapsed:.0%} of one core)"
    )
    status_line = ", ".join(f"{c} {s}: {n}" for (c, s), n in sorted(result["statuses"].items()))
    print(f"outbox: {status_line}")
    wrong: list[str] = []
    checks: list[tuple[str, str, bool]] = []
    for channel in ("sms", "telegram"):
        expected = result["counts"][channel]
        if not expected:
            continue
        limit = limits[channel]
        arrivals = record[channel]
        times = [t for t, _ in arrivals]
        recipients = Counter(to for _, to in arrivals)
        twice = sum(1 for n in recipients.values() if n > 1)
        sent_rows = result["statuses"].get((channel, "sent"), 0)
        if len(arrivals) != expected or twice or sent_rows != expected:
            wrong.append(
                f"{channel}: {len(arrivals)} reached the fake for {expected} queued, "
                f"{twice} recipients twice, {sent_rows} rows marked sent"
            )
        if not times:
            continue
        at_fake = Pacing.of(times, limit)
        calls = result["called"][channel]
        at_call = Pacing.of(list(calls.values()), limit)
        # From the dispatcher's send() call to the fake's receipt, per message (only
        # meaningful with one monotonic clock for both processes, as on Linux).
        transit = sorted(t - calls[to] for t, to in arrivals if to in calls)
        share = at_fake.rate / limit
        name = "SMS (Twilio)" if channel == "sms" else "Telegram"
        print()
        print(f"{name}: limit {limit:g}/s, {at_fake.count} messages")
        print(f"  busy period        {at_fake.busy:.3f} s (last - first arrival at the fake)")
        print(
            f"  achieved rate      {at_fake.rate:.2f}/s = {share:.2%} of the limit   "
            f"(mean gap {at_fake.mean_gap_ms():.3f} ms, ideal {1000 / limit:.3f} ms)"
        )
        print(
            f"  busiest 1 s window {at_fake.max_window} messages (starting "
            f"{at_fake.max_window_at - at_fake.first:.3f} s into the busy period)"
        )
        print(
            f"  gaps               min {at_fake.min_gap * 1000:.3f} ms; "
            f"{at_fake.gaps_under} more than 1 ms under {1000 / limit:.1f} ms"
        )
        print(
            f"  at the dispatcher  {at_call.rate:.2f}/s = {at_call.rate / limit:.2%}; busiest "
            f"window {at_call.max_window}; min gap {at_call.min_gap * 1000:.3f} ms "
            f"(when send() was called)"
        )
        if transit:
            print(
                f"  send() to arrival  p50 {percentile(transit, 50) * 1000:.2f} ms   "
                f"p99 {percentile(transit, 99) * 1000:.2f} ms   max {transit[-1] * 1000:.2f} ms "
                f"(first message {(arrivals[0][0] - calls.get(arrivals[0][1], 0)) * 1000:.2f} ms)"
            )
        checks.append(
            (
                f"{channel} rate >= {TARGET_RATE_SHARE:.0%} of {limit:g}/s",
                f"{share:.2%}",
                share >= TARGET_RATE_SHARE,
            )
        )
        checks.append(
            (
                f"{channel} max in 1 s <= {limit:g}",
                f"{at_fake.max_window}",
                at_fake.max_window <= limit,
            )
        )
    refused = record.get("sms_refused", 0) + record.get("telegram_refused", 0)
    if refused:
        wrong.append(f"{refused} calls refused by the fakes")
    print()
    print(f"load average after   {load_average()}")
    print()
    print("targets")
    for name, value, ok in checks:
        print(f"  {name:<32}{value:>10}   {verdict(ok)}")
    if result["timed_out"]:
        wrong.append("timed out before every message was sent")
    if wrong:
        print("FAILED: " + "; ".join(wrong), file=sys.stderr)
        raise SystemExit(1)
    return all(ok for _, _, ok in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/dispatch.py",
        description="Outbox dispatch rate per channel, measured at fake provider APIs.",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=3000,
        metavar="N",
        help="messages queued, half SMS and half Telegram (default 3000)",
    )
    parser.add_argument(
        "--sms-rate",
        type=float,
        default=100.0,
        metavar="R",
        help="[channels.twilio] rate_per_second (default 100, a short code)",
    )
    parser.add_argument(
        "--telegram-rate",
        type=float,
        default=30.0,
        metavar="R",
        help="[channels.telegram] rate_per_second (default 30, Telegram's limit)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (default: 0)"
    )
    parser.add_argument("--serve-fakes", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fakes is None:
        if args.messages < 4:
            parser.error("--messages must be at least 4")
        if args.sms_rate <= 0 or args.telegram_rate <= 0:
            parser.error("rates must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fakes:
        serve_fakes(args.serve_fakes)
        return 0
    logging.basicConfig(level=logging.WARNING)
    print(
        f"panelbot dispatch benchmark: {args.messages} messages, SMS at {args.sms_rate:g}/s, "
        f"Telegram at {args.telegram_rate:g}/s"
    )
    print(
        f"python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{cpus()} CPUs; fakes in a separate process"
    )
    print(f"load average before: {load_average()} (other work on the machine skews every figure)")
    workdir = Path(tempfile.mkdtemp(prefix="panelbot-dispatch-"))
    try:
        result, record = with_fakes(workdir / "fakes.json", lambda fakes: run(args, workdir, fakes))
        passed = report(args, result, record)
        if args.keep:
            print()
            print(f"kept: {workdir} (dispatch.db, fakes.json)")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
