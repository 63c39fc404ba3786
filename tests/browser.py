"""Helpers for tests that drive a real ``panelbot serve`` over HTTP and a real browser.

The browser is Debian's Chromium at /usr/bin/chromium, driven by Playwright for Python;
Playwright's own browser downloads are never used (tests and CI have no internet). Under
CI (the ``CI`` environment variable set, as ``.ci/run`` does) a missing browser or missing
``playwright`` package fails the test with the fix; on a developer's machine it skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach Google's services at
# start-up, and in a sandbox with no internet its connections to 127.0.0.1 get refused too.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends chromium"


def _missing(message: str) -> NoReturn:
    """Fail under CI, where the browser tests must run; skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def chromium_path() -> Path:
    """Debian's Chromium, or a clear failure (CI) or skip (locally) when it is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"{CHROMIUM} is missing; install Debian's Chromium: {INSTALL_HINT}")
    return CHROMIUM


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium under Playwright, closed afterwards."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing(
            "the playwright package is missing; install the dev extra: pip install -e '.[dev]'"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    """A port free on 127.0.0.1 just now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    directory: Path, port: int, fields: list[dict[str, Any]], *, allow_panellists: bool = True
) -> Path:
    """A panel config in ``directory``: its own SQLite file, no quiet hours, these fields,
    and (as in the demo) the simulator allowed to speak as imported panellists."""
    lines = [
        "[bot]",
        'name = "Test Panel"',
        'database = "panel.db"',
        "quiet_hours = false",
        "",
        "[web]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[channels.simulator]",
        "enabled = true",
        # Speaking as imported panellists is for a demo panel only.
        f"demo = {'true' if allow_panellists else 'false'}",
        f"allow_panellists = {'true' if allow_panellists else 'false'}",
    ]
    for field in fields:
        lines += ["", "[[panel.fields]]"]
        for key, value in field.items():
            if isinstance(value, dict):
                for locale, text in value.items():
                    lines.append(f"{key}.{locale} = {json.dumps(text, ensure_ascii=False)}")
            else:
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    path = directory / "panelbot.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    # The developer's own panelbot settings must not leak into the server under test.
    return {k: v for k, v in os.environ.items() if not k.startswith(("PANELBOT_", "TWILIO_"))}


def panelbot(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot -c CONFIG ARGS...``; a failure shows its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )
    assert result.returncode == 0, (
        f"panelbot {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    )
    return result


class PanelServer:
    """``panelbot serve`` in a subprocess, answering on ``base_url`` once started."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = config.parent / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Start serving and wait until ``GET /healthz`` answers 200."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot",
                "-c",
                str(self.config),
                "serve",
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=REPO,
        )
        log.close()  # the child has its own copy of the file descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"panelbot serve exited {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"panelbot serve did not answer /healthz in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Stop it whatever state it is in (test teardown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
