"""Try the real channels by hand: ``python -m tests.fakes``.

Starts the fake Twilio and Telegram APIs on 127.0.0.1, writes a panelbot config that points
the real SDKs at them, runs ``panelbot serve`` on it, and reads commands:

    sms +447400100101 hello      an SMS from that number (a webhook signed like Twilio's)
    wa +447400100101 hello       the same over WhatsApp
    tg 4242 hello                a Telegram message from chat 4242 (polling mode)
    quit                         stop everything

Every message the bot sends through either fake is printed as it arrives. The config stays
in the data folder, so other commands work on the same panel meanwhile, e.g.
``panelbot -c DIR/panelbot.toml survey launch ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, inbound_params, sign

FROM_NUMBER = "+447400100000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inbound_sids() -> Iterator[str]:
    """Inbound message SIDs with a random part: a second run on the same data folder must
    not repeat the first run's SIDs, which the bot would drop as repeats."""
    prefix = secrets.token_hex(12)
    return (f"SM{prefix}{n:08x}" for n in itertools.count(1))


def write_config(
    folder: Path, port: int, twilio_url: str, telegram_url: str, workers: int = 1
) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""# Written by `python -m tests.fakes`: panelbot against local fake providers.
[bot]
name = "Fake Providers Panel"
database = "panelbot.db"
quiet_hours = false
public_base_url = "http://127.0.0.1:{port}"

[web]
port = {port}
workers = {workers}

[[panel.fields]]
name = "sex"
values = ["female", "male", "other", "prefer_not_to_say"]
text.en = "What is your sex?"

[channels.twilio]
enabled = true
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{FROM_NUMBER}"
api_base_url = "{twilio_url}"

[channels.telegram]
enabled = true
token = "{TOKEN}"
mode = "polling"
api_base_url = "{telegram_url}"

[outbox]
poll_interval = 0.2
""",
        encoding="utf-8",
    )
    return config


async def main(data_dir: Path, workers: int = 1) -> int:
    port = free_port()
    sids = inbound_sids()
    async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
        config = write_config(data_dir, port, twilio.url, telegram.base_url, workers)
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "-c", str(config), "serve", stderr=asyncio.subprocess.PIPE
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                print("panelbot serve did not start", file=sys.stderr)
                server.kill()
                return 1
            print(f"panelbot is serving at {base}, config {config}")
            print(
                f"fake Twilio at {twilio.url} (POST /_fake/list-mode mode=ok|fail|hang to make "
                "its message list fail or hang)"
            )
            print("commands: sms NUMBER TEXT | wa NUMBER TEXT | tg CHAT_ID TEXT | quit")
            printer = asyncio.create_task(_print_sent(twilio, telegram))
            try:
                await _commands(client, base, twilio_next=sids, telegram=telegram)
            finally:
                printer.cancel()
                server.send_signal(signal.SIGTERM)
                await server.wait()
    return 0


async def _commands(
    client: httpx.AsyncClient, base: str, *, twilio_next: Iterator[str], telegram: FakeTelegram
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() in ("quit", "exit"):
            await asyncio.sleep(1.5)  # let the last replies arrive before stopping
            return
        kind, _, rest = line.strip().partition(" ")
        who, _, text = rest.partition(" ")
        if kind in ("sms", "wa") and who:
            sender = f"whatsapp:{who}" if kind == "wa" else who
            params = inbound_params(next(twilio_next), sender, text)
            url = f"{base}/webhooks/twilio/messages"
            response = await client.post(
                url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}
            )
            if response.status_code != 200:
                print(f"webhook answered {response.status_code}: {response.text}")
        elif kind == "tg" and who.lstrip("-").isdigit():
            telegram.queue_update(telegram.message_update(int(who), text))
        elif line.strip():
            print("commands: sms NUMBER TEXT | wa NUMBER TEXT | tg CHAT_ID TEXT | quit")
        await asyncio.sleep(1.0)  # give the reply time to come back before the next prompt


async def _print_sent(twilio: FakeTwilio, telegram: FakeTelegram) -> None:
    shown_twilio = shown_telegram = 0
    while True:
        posts = twilio.posts()
        for request in posts[shown_twilio:]:
            form = request.form
            print(f"[twilio -> {form.get('To')}] {form.get('Body') or form.get('ContentSid')}")
        shown_twilio = len(posts)
        sent = telegram.sent()
        for call in sent[shown_telegram:]:
            buttons = f"  buttons: {call.button_labels}" if call.button_labels else ""
            print(f"[telegram -> {call.chat_id}] {call.text}{buttons}")
        shown_telegram = len(sent)
        sys.stdout.flush()
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="Where the config and database go.")
    parser.add_argument(
        "--workers", type=int, default=1, help="[web] workers: web processes in front (default 1)."
    )
    args = parser.parse_args()
    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="panelbot-fakes-"))
    folder.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main(folder, args.workers)))
