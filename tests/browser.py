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
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import httpx
import pytest

from tests.staff_login import PASSWORDS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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


TIMEOUT = 15_000  # ms: how long a Playwright action or expectation waits
Errors = Literal["all", "served", "script"]


@contextlib.contextmanager
def open_tab(
    browser: Browser, *, downloads: bool = False, errors: Errors = "served"
) -> Iterator[Page]:
    """A fresh 1280x800 tab; when the test is done, no error it watched for may have happened.

    ``errors`` says what counts: ``"script"`` only uncaught script errors; ``"served"`` those,
    console errors (script errors, CSP refusals) and 404 or 5xx answers, but not a page
    answered 400 or 403 on purpose; ``"all"`` every console error and every answer >= 400.
    """
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, accept_downloads=downloads
    )
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT)
    seen: list[str] = []
    tab.on("pageerror", lambda exc: seen.append(f"page error: {exc}"))
    if errors == "served":
        tab.on(
            "console",
            lambda m: (
                seen.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        tab.on(
            "response",
            lambda r: (
                seen.append(f"{r.status} {r.url}") if r.status == 404 or r.status >= 500 else None
            ),
        )
    elif errors == "all":
        tab.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
        tab.on(
            "response", lambda r: seen.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
    try:
        yield tab
        assert seen == []
    finally:
        context.close()


def browser_fixture() -> Any:
    """A test module's ``browser`` fixture (``browser = browser_fixture()``): one Chromium
    for all of the module's tests."""

    @pytest.fixture(scope="module")
    def browser() -> Iterator[Browser]:
        with launch_chromium() as chromium:
            yield chromium

    return browser


def page_fixture(*, downloads: bool = False, errors: Errors = "served") -> Any:
    """A test module's ``page`` fixture (``page = page_fixture(...)``): a fresh
    :func:`open_tab` of the module's ``browser`` for each test."""

    @pytest.fixture
    def page(browser: Browser) -> Iterator[Page]:
        with open_tab(browser, downloads=downloads, errors=errors) as tab:
            yield tab

    return page


def accessible(page: Page) -> None:
    """axe-core on the page as it stands: no serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
    assert bad == [], f"{page.url}: " + "; ".join(bad)


def fits(page: Page, width: int = 320) -> None:
    """Nothing wider than the window: the page itself never scrolls sideways."""
    page.set_viewport_size({"width": width, "height": 800})
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= width, f"{page.url} is {wide}px wide at {width}px"
    page.set_viewport_size({"width": 1280, "height": 800})


def sign_in(page: Page, email: str, role: str = "admin") -> None:
    """Fill in the sign-in form the page shows with the role's test password and submit it."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORDS[role])
    page.get_by_role("button", name="Sign in").click()


def add_staff(config: Path, email: str, role: str) -> None:
    """``panelbot staff add`` with the role's test password on stdin."""
    panelbot(
        config,
        "staff",
        "add",
        email,
        "--role",
        role,
        "--password-stdin",
        input=PASSWORDS[role] + "\n",
    )


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


def panelbot(
    config: Path, *args: str, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot -c CONFIG ARGS...`` (``input`` on its stdin); a failure shows its
    stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        input=input,
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

    def __enter__(self) -> PanelServer:
        """``with PanelServer(config, port) as server:`` started, and killed afterwards."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

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
