"""``GET /metrics``: Prometheus text behind a bearer token, read from the database.

The real app over HTTP; the text is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Bot
from bot.config import ConfigError
from bot.inbox import InboxWriter, open_inbox
from tests.conftest import make_settings
from tests.test_serve import free_port
from tests.webserver import serving

TOKEN = "metrics-token-for-tests-0123456789"


def metrics_settings(tmp_path: Path, **web: Any) -> Any:
    return make_settings(
        tmp_path,
        web=web,
        channels={"simulator": {"enabled": True}},
        outbox={"poll_interval": 0.1},
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(base: str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return await client.get("/metrics", headers=headers)


async def test_without_a_token_configured_there_is_no_metrics_route(tmp_path: Path) -> None:
    bot = await Bot.create(metrics_settings(tmp_path))
    try:
        async with serving(bot) as base:
            assert (await scrape(base)).status_code == 404
            assert (await scrape(base, token=None)).status_code == 404
    finally:
        await bot.stop()


async def test_a_missing_or_wrong_token_is_refused(tmp_path: Path) -> None:
    bot = await Bot.create(metrics_settings(tmp_path, metrics_token=TOKEN))
    try:
        async with serving(bot) as base:
            for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
                response = await scrape(base, token=token)
                assert response.status_code == 401, token
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "panelbot_" not in response.text
            async with httpx.AsyncClient(base_url=base) as client:
                basic = await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
                assert basic.status_code == 401
                bare = await client.get("/metrics", headers={"Authorization": TOKEN})
                assert bare.status_code == 401
            ok = await scrape(base)
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/plain")
            assert ok.headers["cache-control"] == "no-store"
    finally:
        await bot.stop()


async def test_metrics_count_what_the_database_holds_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    settings = metrics_settings(tmp_path, metrics_token=TOKEN)
    bot = await Bot.create(settings)
    try:
        async with serving(bot) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                for who in ("sim:ann", "sim:ann", "sim:ben"):
                    answer = await client.post(
                        "/simulator/api/messages", json={"from": who, "text": "Hello"}
                    )
                    assert answer.status_code == 200
            # One reply held (as WhatsApp's outside its window would be), and one waiting.
            row = await bot.db.fetchone("SELECT min(id) FROM outbox WHERE sent_at IS NOT NULL")
            await bot.db.execute_write("UPDATE outbox SET status = 'held' WHERE id = ?", (row[0],))
            inbox = await open_inbox(tmp_path / "panel.db", writer=True)
            try:
                await InboxWriter(inbox).put("sim-message", "k1", '{"from": "sim:x"}')
            finally:
                await inbox.close()
            first = await scrape(base)
            assert first.status_code == 200
        rows = await bot.db.fetchall("SELECT status, count(*) FROM outbox GROUP BY status")
        by_status = {r[0]: r[1] for r in rows}
        timed = (await bot.db.fetchone("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"))[0]
    finally:
        await bot.stop()
    found = samples(first.text)
    assert found[("panelbot_inbound_messages_total", (("channel", "sim"),))] == 3
    assert by_status["held"] == 1 and timed >= 3
    for status, count in by_status.items():
        key = ("panelbot_outbound_messages_total", (("channel", "sim"), ("status", status)))
        assert found[key] == count
    assert found[("panelbot_outbox_held", (("channel", "sim"),))] == 1
    assert found[("panelbot_outbox_depth", (("channel", "sim"),))] == 0
    assert found[("panelbot_inbox_waiting", ())] == 1
    assert found[("panelbot_inbox_failed", ())] == 0
    assert found[("panelbot_panellists", (("status", "pending"),))] == 2
    # Every reply that reached the simulator is in the latency histogram, the held one too.
    labels = (("channel", "sim"), ("priority", "reply"))
    bucket = "panelbot_send_latency_seconds_bucket"
    assert found[("panelbot_send_latency_seconds_count", labels)] == timed
    assert found[(bucket, (("channel", "sim"), ("le", "+Inf"), ("priority", "reply")))] == timed
    assert found[(bucket, (("channel", "sim"), ("le", "0.1"), ("priority", "reply")))] <= timed
    assert found[("panelbot_send_latency_seconds_sum", labels)] >= 0

    # Another process on the same database (after a restart) reports the same figures.
    bot = await Bot.create(settings)
    try:
        async with serving(bot, start_bot=False) as base:
            again = samples((await scrape(base)).text)
    finally:
        await bot.stop()
    age = ("panelbot_inbox_oldest_seconds", ())
    assert again.pop(age) >= found.pop(age)  # the payload has waited a little longer
    assert again == found


def test_the_token_comes_from_the_environment_and_must_be_long_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PANELBOT_METRICS_TOKEN", TOKEN)
    settings = make_settings(tmp_path, web={"metrics_token": {"env": "PANELBOT_METRICS_TOKEN"}})
    assert settings.web.metrics_token == TOKEN
    monkeypatch.setenv("PANELBOT_METRICS_TOKEN", "short-secret")
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, web={"metrics_token": {"env": "PANELBOT_METRICS_TOKEN"}})
    assert "web.metrics_token: must be at least 16 characters" in str(caught.value)
    assert "short-secret" not in str(caught.value)


def test_a_web_process_of_panelbot_serve_answers_metrics(tmp_path: Path) -> None:
    """With [web] workers = 1 the route runs in a web process, the inbox its own."""
    port = free_port()
    config = tmp_path / "panelbot.toml"
    config.write_text(
        f"""
[bot]
database = "panel.db"

[web]
port = {port}
workers = 1
metrics_token = {{ env = "PANELBOT_METRICS_TOKEN" }}

[channels.simulator]
enabled = true
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PANELBOT_METRICS_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "-c", str(config), "serve"],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            said = client.post("/simulator/api/messages", json={"from": "sim:w", "text": "Hi"})
            assert said.status_code == 200
            assert client.get("/metrics").status_code == 401
            found = samples(
                client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
            )
        assert found[("panelbot_inbound_messages_total", (("channel", "sim"),))] == 1
        # The web process reads its inbox: the payload may still be there (they are deleted
        # in batches once handled), but nothing else is.
        assert found[("panelbot_inbox_waiting", ())] in (0, 1)
        assert found[("panelbot_inbox_failed", ())] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
