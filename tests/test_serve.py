"""`panelbot serve` as a real process: health, the simulator API, CLI beside it, clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

SURVEY = REPO / "tests" / "data" / "every-type.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, port: int) -> Path:
    config = folder / "panelbot.toml"
    config.write_text(
        f"""
[bot]
name = "Serve Test Panel"
database = "panel.db"
quiet_hours = false

[web]
port = {port}

[channels.simulator]
enabled = true

[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "What is your sex?"

[outbox]
poll_interval = 0.2
""",
        encoding="utf-8",
    )
    return config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


class Server:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        # Keeps the simulator's cookie: its people belong to this client.
        self.client = httpx.Client(timeout=10)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "-c", str(config), "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.process.stderr.read()}")
        raise AssertionError("serve did not become healthy")

    def say(self, who: str, text: str) -> list[str]:
        response = self.client.post(
            f"{self.base}/simulator/api/messages", json={"from": who, "text": text}
        )
        assert response.status_code == 200, response.text
        return response.json()["replies"]

    def history(self, who: str) -> list[dict]:
        response = self.client.get(f"{self.base}/simulator/api/messages", params={"address": who})
        assert response.status_code == 200
        return response.json()["messages"]

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        return code, time.monotonic() - started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    running = Server(write_config(tmp_path, port), port)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_healthz_reports_ok_with_the_database(server: Server) -> None:
    # Served by a web process (the default [web] workers = 1): the inbox is reported too.
    response = httpx.get(f"{server.base}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "inbox": {"waiting": 0, "oldest_seconds": 0.0, "failed": 0},
    }


def test_healthz_in_one_process_reports_the_database(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text().replace(f"port = {port}", f"port = {port}\nworkers = 0"))
    running = Server(config, port)
    try:
        assert httpx.get(f"{running.base}/healthz").json() == {"status": "ok"}
        assert "Reply YES to join" in running.say("sim:solo", "hello")[0]
        code, _ = running.stop()
        assert code == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_the_simulator_api_replies_and_keeps_history(server: Server) -> None:
    first = server.say("sim:alice", "hello")
    assert len(first) == 1 and "Reply YES to join" in first[0]
    assert "What is your sex?" in server.say("sim:alice", "yes")[0]
    history = server.history("sim:alice")
    assert [m["direction"] for m in history] == ["in", "out", "in", "out"]
    assert history[0]["text"] == "hello"
    assert history[3]["options"][0] == {"reply": "1", "label": "Female"}
    assert history[1]["sms"] == {"encoding": "GSM-7", "segments": 3}  # the welcome + consent
    assert "sms" not in history[0]
    assert history[0]["at"] <= history[1]["at"] <= history[2]["at"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "must be JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"from": "sim:a"}', "required"),
        (b'{"text": "hi"}', "required"),
        (b'{"from": 5, "text": "hi"}', "must be a string"),
        (b'{"from": "sim:a", "text": 5}', "'text' must be a string"),
        (b'{"from": "sms:+447400100101", "text": "hi"}', "only speaks for sim"),
        (b'{"from": "alice", "text": "hi"}', "channel:id"),
        (b'{"from": "sim:", "text": "hi"}', "1 to 64"),
    ],
)
def test_a_bad_simulator_request_is_a_400_with_a_reason(
    server: Server, body: bytes, reason: str
) -> None:
    response = httpx.post(
        f"{server.base}/simulator/api/messages",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_cli_commands_work_beside_serve_and_the_bot_sends_what_they_queue(
    server: Server,
) -> None:
    server.say("sim:bob", "hi")
    server.say("sim:bob", "yes")
    assert "you have joined" in server.say("sim:bob", "2")[0]
    added = cli(server.config, "survey", "add", str(SURVEY))
    assert added.returncode == 0, added.stderr
    launched = cli(server.config, "survey", "launch", "every-type")
    assert launched.returncode == 0, launched.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outs = [m for m in server.history("sim:bob") if m["direction"] == "out"]
        if any("Question 1 of 6" in m["text"] for m in outs):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the running bot did not send the CLI's invitation")
    assert "Question 3 of 6" in server.say("sim:bob", "1")[0]
    listed = cli(server.config, "survey", "list", "--format", "json")
    assert json.loads(listed.stdout)[0]["invited"] == 1


def test_sigterm_stops_cleanly_within_seconds(server: Server) -> None:
    server.say("sim:carol", "hi")
    code, _ = server.stop()  # stop() waits at most 15 s: a hung shutdown fails the test
    assert code == 0
    stderr = server.process.stderr.read()
    assert "Traceback" not in stderr


def test_a_live_panel_does_not_let_the_simulator_speak_as_panellists(server: Server) -> None:
    import asyncio

    from bot.config import load_settings
    from bot.models import PanellistStatus
    from bot.storage import Database
    from bot.storage import panellists as panellist_store

    async def add_one() -> int:
        db = await Database.open(load_settings(server.config).bot.database)
        try:
            async with db.transaction() as conn:
                return await panellist_store.create(
                    conn, status=PanellistStatus.ACTIVE, locale="en", demographics={"sex": "male"}
                )
        finally:
            await db.close()

    panellist_id = asyncio.run(add_one())
    server.say("sim:visitor", "hi")
    listed = server.client.get(f"{server.base}/simulator/api/identities").json()["identities"]
    assert listed == [{"address": "sim:visitor", "label": "visitor"}]
    linked = httpx.post(
        f"{server.base}/simulator/api/identities", json={"panellist_id": panellist_id}
    )
    assert linked.status_code == 403
    assert "allow_panellists" in linked.json()["error"]


@pytest.mark.parametrize("workers", ["1", "0"])
def test_a_second_serve_on_a_busy_port_exits_1_at_once(server: Server, workers: str) -> None:
    # The first one holds the port; a second must not hang with the database open.
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(server.config), "serve", "--workers", workers],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is already in use" in lines[0] and "--port" in lines[0]
    assert server.say("sim:still", "hello")  # the first one is untouched
