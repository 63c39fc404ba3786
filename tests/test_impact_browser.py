"""The public /impact page and the board report's HTML in a real Chromium: axe-core finds no
serious or critical violation, the page's own Content-Security-Policy lets its style in (no
console error), the language links work, and nothing is wider than a phone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot.config import dump_toml
from tests.browser import (
    PanelServer,
    accessible,
    browser_fixture,
    fits,
    free_port,
    page_fixture,
    panelbot,
)
from tests.conftest import FIELDS
from tests.test_impact_loop import seeded_history

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PanelServer, Path]]:
    directory = tmp_path_factory.mktemp("impact-page")
    port = free_port()
    config = directory / "panelbot.toml"
    config.write_text(
        dump_toml(
            {
                "bot": {
                    "name": "Browser Panel",
                    "database": "panel.db",
                    "quiet_hours": False,
                    "locales": ["en", "cy", "ur"],
                },
                "web": {"host": "127.0.0.1", "port": port},
                "panel": {"fields": FIELDS},
                "channels": {"simulator": {"enabled": True}},
                "plugins": {"impact_updates": {"public_page": True}},
            }
        )
    )
    # In a thread of its own: pytest-asyncio may have a loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, seeded_history(config)).result()
    report = directory / "register.html"
    result = panelbot(config, "impact", "report", "--format", "html", "--output", str(report))
    assert result.returncode == 0, result.stderr
    with PanelServer(config, port) as running:
        yield running, report


browser = browser_fixture()
# Every console error counts: a CSP refusal of the page's style would be one.
page = page_fixture(errors="all")


def test_public_page_in_chromium(page: Page, panel: tuple[PanelServer, Path]) -> None:
    server, _ = panel
    page.goto(f"{server.base_url}/impact")
    assert page.get_by_role("heading", level=1).inner_text() == "You said, we did"
    assert page.get_by_role("main").is_visible()
    # The style block is applied: the headings' rule is drawn from it.
    border = page.evaluate("getComputedStyle(document.querySelector('h2')).borderTopWidth")
    assert border == "4px"
    accessible(page)
    fits(page)
    page.get_by_role("link", name="Cymraeg").click()
    page.wait_for_url("**/impact?lang=cy")
    assert page.get_by_role("heading", level=1).inner_text() == "Dywedoch chi, gwnaethom ni"
    assert page.evaluate("document.documentElement.lang") == "cy"
    accessible(page)
    page.get_by_role("link", name="اردو").click()
    page.wait_for_url("**/impact?lang=ur")
    assert page.evaluate("document.documentElement.dir") == "rtl"
    accessible(page)
    fits(page)


def test_board_report_html_in_chromium(page: Page, panel: tuple[PanelServer, Path]) -> None:
    _, report = panel
    page.goto(report.as_uri())
    assert page.get_by_role("heading", level=1).inner_text() == "You said, we did"
    assert page.get_by_role("table").count() >= 3  # delivery, feedback, impact loop
    accessible(page)
