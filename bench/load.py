"""Load: signed webhooks at concurrency 50 while a survey wave dispatches, nothing lost.

Setup (not timed): bench/webhook.py's config in a temporary folder (Twilio on, signed over
``public_base_url = http://127.0.0.1:PORT``, its REST API pointed at the fake Twilio from
``tests/fakes`` run in a subprocess of its own, quiet hours off, simulator off, default one
web process), ``--wave`` panellists imported (``panelbot panel import``) and a survey added,
then ``panelbot serve`` as a real subprocess, waited for on ``/healthz``.

Run: ``panelbot survey launch`` opens the wave (``--wave`` invitations queued at once), and
straight away bench/webhook.py's client sends ``--requests`` signed Twilio webhooks at
``--concurrency`` in flight: new senders signing up (hello, yes, two fields, HELP), about
2% sent twice side by side (Twilio's retries) and a few forged (403 expected). The
dispatcher sends the wave's invitations and the replies to the fake Twilio meanwhile, at
``--sms-rate`` segments a second. The client stops after ``--requests`` requests or
``--seconds`` seconds; then the bench waits (at most ``--timeout`` seconds) until the
outbox has nothing left to send, reads each process's peak RSS (VmHWM in /proc), and stops
the server (SIGTERM) and the fake.

Checked, in the database and at the fake: no 5xx; every request accounted for (answered,
refused, failed in transport, or not sent within the bounds); every valid MessageSid
answered 2xx stored exactly once, none forged stored; one reply queued per stored message;
every reply and every invitation received by the fake exactly once (none lost, none twice).

    .venv/bin/python bench/load.py [--requests N] [--concurrency C] [--wave N]
                                   [--seconds S] [--timeout S] [--sms-rate R]
                                   [--client aiohttp|httpx|raw] [--keep] [--check]

The exit code is 0 whatever the figures; with ``--check`` it is 1 when a target is missed.
A message lost, duplicated or forged into the database is always an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.fakes: the fake Twilio and Twilio's signing

from _common import cpus, load_average, verdict  # noqa: E402 - bench/ is sys.path[0]
from webhook import (  # noqa: E402 - the same workload, client and helpers as the webhook bench
    BOT_NUMBER,
    CLIENTS,
    CONFIG_TOML,
    Run,
    Workload,
    build_workload,
    children_of,
    drive,
    free_port,
    stop_process,
    wait_http,
)

from bot.cli import run as run_loop  # noqa: E402 - uvloop when installed, as the servers use
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN  # noqa: E402

SURVEY = REPO / "tests" / "data" / "every-type.toml"
INVITATION_MARK = "How easy was it?"  # the survey's first question, in every invitation
TARGET_P99_MS = 500.0
TARGET_RSS_MB = 300.0


# -- the fake Twilio in a process of its own -------------------------------------------------


def serve_fake_twilio(report_path: Path) -> None:
    """The fake Twilio until SIGTERM; prints its URL, then writes what it received, by
    number, to ``report_path`` (a file: a pipe could fill up and block it)."""
    from tests.fakes.twilio_api import FakeTwilio

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with FakeTwilio().running() as fake:
            print(fake.url, flush=True)
            await stop.wait()
            return {
                "posts": len(fake.posts()),
                "messages": Counter(m["to"] for m in fake.messages),
                "invitations": Counter(
                    m["to"] for m in fake.messages if INVITATION_MARK in (m["body"] or "")
                ),
            }

    report = asyncio.run(main())
    report_path.write_text(json.dumps(report), encoding="utf-8")


# -- measuring -----------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident set size (VmHWM), in MB; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def outbox_left(db_path: Path) -> int:
    """Outbox rows not settled yet (queued or in flight); -1 when unreadable."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            return int(
                db.execute(
                    "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return -1


def inbox_left(db_path: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0  # no inbox file: nothing waiting


def cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"panelbot {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


# -- checking ------------------------------------------------------------------------------


def check_database(db_path: Path, workload: Workload, run: Run, wave: list[str]) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        stored = Counter(
            sid
            for (sid,) in db.execute(
                "SELECT provider_message_id FROM inbound_messages WHERE channel = 'sms'"
            )
        )
        by_sender = Counter(
            address
            for (address,) in db.execute(
                "SELECT a.address FROM inbound_messages m "
                "JOIN addresses a ON a.panellist_id = m.panellist_id AND a.channel = 'sms' "
                "WHERE m.channel = 'sms'"
            )
        )
        replies = db.execute(
            "SELECT count(*) FROM outbox WHERE idempotency_key LIKE 'in:%'"
        ).fetchone()[0]
        statuses = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
        invitations = dict(
            db.execute(
                "SELECT status, count(*) FROM outbox WHERE kind = 'invitation' GROUP BY status"
            )
        )
    answered = {
        sid
        for sid, seen in run.sid_status.items()
        if sid in workload.valid_sids and any(200 <= s < 300 for s in seen)
    }
    return {
        "stored": stored,
        "by_sender": by_sender,
        "answered": answered,
        "lost": sorted(sid for sid in answered if stored.get(sid, 0) == 0),
        "stored_twice": sorted(sid for sid, n in stored.items() if n > 1),
        "forged": sum(1 for sid in stored if sid in workload.forged_sids),
        "strangers": sum(
            1 for sid in stored if sid not in workload.valid_sids | workload.forged_sids
        ),
        "inbound_rows": sum(stored.values()),
        "replies": replies,
        "statuses": statuses,
        "invitations": invitations,
        "wave": len(wave),
    }


def main_run(args: argparse.Namespace, workdir: Path) -> bool:
    c = args.concurrency
    print(
        f"panelbot load benchmark: {args.requests} signed Twilio webhooks at concurrency {c} "
        f"while a {args.wave}-person wave dispatches; at most {args.seconds:.0f} s of "
        f"requests, {args.timeout:.0f} s to settle"
    )
    print(
        f"client: {args.client}; fake Twilio, panelbot serve (main + 1 web process) and this "
        f"client each in their own process; SMS rate {args.sms_rate:g}/s"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.machine()}, {cpus()} CPUs"
    )
    print(f"load average before: {load_average()} (other work on the machine skews every figure)")

    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    workload = build_workload(args.requests, args.senders, public_url)
    wave = [f"+4474005{i:05d}" for i in range(args.wave)]
    print(
        f"workload: {workload.senders} new senders, {len(workload.valid_sids)} messages, "
        f"{len(workload.duplicated_sids)} sent twice at once, {len(workload.forged_sids)} "
        f"forged: {workload.requests} requests; wave: {len(wave)} imported panellists"
    )

    report_path = workdir / "fake-twilio.json"
    fake = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake-twilio", str(report_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    procs: list[subprocess.Popen[Any]] = [fake]
    log_path = workdir / "serve.log"
    peaks: dict[str, float | None] = {}
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        if not fake_url.startswith("http"):
            raise SystemExit("the fake Twilio did not start")
        config = workdir / "panelbot.toml"
        config.write_text(
            CONFIG_TOML.format(
                port=port,
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                from_number=BOT_NUMBER,
                api_base_url=fake_url,
                sms_rate=args.sms_rate,
            ),
            encoding="utf-8",
        )
        csv = workdir / "panel.csv"
        csv.write_text(
            "phone,telegram_chat_id,locale,consent_at,age_band,sex\n"
            + "".join(f"{n},,en,2026-01-01,25-34,female\n" for n in wave),
            encoding="utf-8",
        )
        t0 = time.perf_counter()
        cli(config, "panel", "import", str(csv))
        cli(config, "survey", "add", str(SURVEY))
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "bot", "-c", str(config), "serve"],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(server)
        wait_http(f"{public_url}/healthz", server, log_path, 60)
        web_pids = children_of(server.pid)
        print(
            f"setup (not timed): {len(wave)} imported and serve answering /healthz after "
            f"{time.perf_counter() - t0:.1f} s; web process{'es' if len(web_pids) > 1 else ''} "
            f"{web_pids}"
        )

        launched = time.perf_counter()
        cli(config, "survey", "launch", "every-type")
        bench = run_loop(
            drive(
                public_url,
                workload.conversations,
                client_kind=args.client,
                concurrency=c,
                max_requests=args.requests,
                max_seconds=args.seconds,
                label="load",
            )
        )
        # Settle: what the web process stored handled, everything queued sent.
        db_path = workdir / "panel.db"
        deadline = launched + args.timeout
        while time.perf_counter() < deadline:
            if inbox_left(workdir / "panel.db-inbox") == 0 and outbox_left(db_path) == 0:
                break
            if server.poll() is not None:
                break
            time.sleep(0.25)
        settled_in = time.perf_counter() - launched
        settled = outbox_left(db_path) == 0 and inbox_left(workdir / "panel.db-inbox") == 0
        time.sleep(1.0)  # a late second send of anything would reach the fake by now
        peaks["serve main process"] = peak_rss_mb(server.pid)
        for n, pid in enumerate(web_pids, 1):
            peaks[f"web process {n}"] = peak_rss_mb(pid)
        peaks["fake Twilio"] = peak_rss_mb(fake.pid)
        peaks["this client"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        exit_code, stop_seconds = stop_process(server)
        stop_process(fake)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    received = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
    found = check_database(workdir / "panel.db", workload, bench, wave)
    log_lines = log_path.read_text(errors="replace").splitlines()
    errors = [line for line in log_lines if " ERROR " in line or "Traceback" in line]

    print()
    print("webhooks")
    print(f"  requests answered  {bench.count}  in {bench.elapsed:.2f} s ({bench.rate:,.0f}/s)")
    print(
        f"  latency            p50 {bench.ms(50):.1f} ms   p99 {bench.ms(99):.1f} ms   "
        f"max {bench.ms(100):.1f} ms"
    )
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(bench.statuses.items()))
    print(
        f"  status             2xx {bench.klass(2)}   4xx {bench.klass(4)}   "
        f"5xx {bench.klass(5)}   ({statuses})"
    )
    no_answer = sum(bench.transport_errors.values())
    accounted = bench.count + no_answer + bench.not_sent
    print(
        f"  accounted for      {accounted} of {workload.requests}: {bench.count} answered, "
        f"{no_answer} without an answer, {bench.not_sent} not sent within the bounds"
    )
    print()
    print(
        f"dispatch: wave launched, webhooks sent and outbox emptied in {settled_in:.1f} s "
        f"({'settled' if settled else 'NOT settled within --timeout'}); outbox "
        f"{found['statuses']}"
    )
    print(
        f"server stop: SIGTERM -> exit code {exit_code} after {stop_seconds:.2f} s; log "
        f"{len(log_lines)} lines, {len(errors)} with ERROR or Traceback"
    )
    for line in errors[:5]:
        print(f"    {line[:160]}")
    print()
    print("peak RSS (VmHWM)")
    for name, mb in peaks.items():
        print(f"  {name:<20}{'n/a' if mb is None else f'{mb:.0f} MB':>10}")

    # Lost or twice, in the database and at the fake.
    senders_sent = {
        sender: n for sender, n in found["by_sender"].items() if not sender.startswith("+4474005")
    }
    replies_at_fake = received["messages"] if received else {}
    invitations_at_fake = received["invitations"] if received else {}
    reply_lost = sum(1 for s, n in senders_sent.items() if replies_at_fake.get(s, 0) < n)
    reply_twice = sum(1 for s, n in senders_sent.items() if replies_at_fake.get(s, 0) > n)
    invite_lost = sum(1 for n in wave if invitations_at_fake.get(n, 0) == 0)
    invite_twice = sum(1 for n in wave if invitations_at_fake.get(n, 0) > 1)
    print()
    print("stored (database, after the server stopped) and received (at the fake Twilio)")
    print(
        f"  valid MessageSids answered 2xx {len(found['answered'])}: not stored "
        f"{len(found['lost'])}, stored twice {len(found['stored_twice'])}; forged stored "
        f"{found['forged']}; rows the bench did not send {found['strangers']}"
    )
    print(
        f"  replies queued {found['replies']} for {found['inbound_rows']} stored messages "
        f"({'one each' if found['replies'] == found['inbound_rows'] else 'WRONG'})"
    )
    print(
        f"  replies at the fake: {len(senders_sent)} senders, {reply_lost} got fewer than "
        f"their stored messages, {reply_twice} got more"
    )
    print(
        f"  invitations at the fake: {len(wave) - invite_lost} of {len(wave)} invited, "
        f"{invite_twice} invited more than once; outbox invitations {found['invitations']}"
    )
    if received:
        print(f"  the fake received {received['posts']} create calls")
    print(f"load average after   {load_average()}")

    five_xx = bench.klass(5)
    lost = len(found["lost"]) + reply_lost + invite_lost
    twice = len(found["stored_twice"]) + reply_twice + invite_twice
    database_ok = (
        not found["lost"]
        and not found["stored_twice"]
        and found["forged"] == 0
        and found["strangers"] == 0
        and found["replies"] == found["inbound_rows"]
        and received is not None
        and reply_lost == reply_twice == invite_lost == invite_twice == 0
        and settled
    )
    rss_values = [mb for mb in peaks.values() if mb is not None]
    worst_rss = max(rss_values) if rss_values else 0.0
    checks = [
        ("5xx = 0", f"{five_xx}", five_xx == 0),
        ("no answer = 0", f"{no_answer}", no_answer == 0),
        ("lost = 0", f"{lost}", lost == 0),
        ("duplicated = 0", f"{twice}", twice == 0),
        (
            "every request accounted",
            f"{accounted}/{workload.requests}",
            accounted == workload.requests and bench.not_sent == 0,
        ),
        (f"settled in {args.timeout:.0f} s", f"{settled_in:.1f} s", settled),
        (f"p99 <= {TARGET_P99_MS:.0f} ms", f"{bench.ms(99):.1f}", bench.ms(99) <= TARGET_P99_MS),
        (f"peak RSS <= {TARGET_RSS_MB:.0f} MB", f"{worst_rss:.0f}", worst_rss <= TARGET_RSS_MB),
    ]
    print()
    print("targets")
    for name, value, ok in checks:
        print(f"  {name:<26}{value:>12}   {verdict(ok)}")
    if args.keep:
        print()
        print(f"kept: {workdir} (panelbot.toml, panel.db, serve.log)")
    if not database_ok or bench.unexpected:
        if bench.unexpected:
            print(f"unexpected answers {len(bench.unexpected)}, e.g. {bench.unexpected[0]}")
        print("FAILED: messages lost, duplicated or wrongly stored (see above)", file=sys.stderr)
        raise SystemExit(1)
    return all(ok for _, _, ok in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/load.py",
        description="Signed Twilio webhooks at concurrency 50 against `panelbot serve` while "
        "a survey wave dispatches to the fake Twilio: no 5xx, nothing lost or sent twice.",
    )
    parser.add_argument(
        "--requests", type=int, default=10_000, metavar="N", help="webhook requests (default 10000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, metavar="C", help="requests in flight (default 50)"
    )
    parser.add_argument(
        "--wave",
        type=int,
        default=5_000,
        metavar="N",
        help="panellists invited by the wave (default 5000)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=2_000,
        metavar="N",
        help="distinct phone numbers sending webhooks (default 2000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=180.0,
        metavar="S",
        help="stop sending webhooks after S seconds (default 180)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=420.0,
        metavar="S",
        help="from the launch, give up waiting for the outbox to empty after "
        "S seconds (default 420)",
    )
    parser.add_argument(
        "--sms-rate",
        type=float,
        default=200.0,
        metavar="R",
        help="[channels.twilio] rate_per_second (default 200)",
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="aiohttp",
        help="the load generator's HTTP client (default aiohttp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (default: 0)"
    )
    parser.add_argument("--serve-fake-twilio", metavar="REPORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.serve_fake_twilio:
        if args.requests < 100:
            parser.error("--requests must be at least 100")
        if min(args.concurrency, args.wave, args.senders) < 1:
            parser.error("--concurrency, --wave and --senders must be at least 1")
        if min(args.seconds, args.timeout, args.sms_rate) <= 0:
            parser.error("--seconds, --timeout and --sms-rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fake_twilio:
        serve_fake_twilio(Path(args.serve_fake_twilio))
        return 0
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    workdir = Path(tempfile.mkdtemp(prefix="panelbot-load-"))
    try:
        passed = main_run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
