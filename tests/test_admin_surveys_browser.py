"""The survey pages in a real Chromium against a real ``panelbot serve``: switch a result to
weighted, download the CSV, open the board summary (one A4 page when printed) and a review
link at 320 px; axe-core finds no serious or critical violation on any of them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser import (
    REPO,
    PanelServer,
    accessible,
    free_port,
    launch_chromium,
    open_tab,
    panelbot,
    write_config,
)
from tests.browser import sign_in as browser_sign_in
from tests.staff_login import PASSWORDS

if TYPE_CHECKING:
    from playwright.sync_api import Page

EVERY_TYPE = REPO / "tests" / "data" / "every-type.toml"
SEX = {"name": "sex", "values": ["female", "male"], "text": {"en": "What is your sex?"}}
EMAIL = "admin@example.org"
# sex reply, then answers: ease, [why_hard], score, online, days, comment
PEOPLE = [
    ("ann", "1", ["1", "4", "yes", "3", "Too long on hold"]),
    ("bea", "1", ["1", "5", "yes", "2", "Fine"]),
    ("col", "2", ["3", "1", "2", "no", "10", "No times free"]),
]


def _add_admin(database: Path) -> None:
    from bot import staff as staff_rules
    from bot.storage import Database

    async def go() -> None:
        db = await Database.open(database, migrate=False)
        try:
            await staff_rules.add(db, EMAIL, "admin", PASSWORDS["admin"])
        finally:
            await db.close()

    asyncio.run(go())


def _say(http: httpx.Client, who: str, text: str) -> list[str]:
    # One client: the simulator's owner cookie makes these people this "browser's" own.
    answer = http.post("/simulator/api/messages", json={"from": f"sim:{who}", "text": text})
    assert answer.status_code == 200, answer.text
    return answer.json()["replies"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    directory = tmp_path_factory.mktemp("survey-pages")
    port = free_port()
    config = write_config(directory, port, [SEX])
    with config.open("a", encoding="utf-8") as out:
        out.write(
            "\n[plugins.quotas]\npanel_size_target = 1000\n"
            "\n[plugins.quotas.population.sex]\nfemale = 0.5\nmale = 0.5\n"
        )
    panelbot(config, "survey", "add", str(EVERY_TYPE))
    _add_admin(directory / "panel.db")
    with PanelServer(config, port) as running:
        with httpx.Client(base_url=running.base_url, timeout=30) as http:
            for name, sex, _ in PEOPLE:
                _say(http, name, "Hello")
                _say(http, name, "yes")
                _say(http, name, sex)
            panelbot(config, "survey", "launch", "every-type")
            for name, _, answers in PEOPLE:
                for text in answers:
                    _say(http, name, text)
        yield running


# A Chromium per test, started after the server fixture: Playwright's event loop must not
# be running while that fixture sets the panel up with asyncio.run.
@pytest.fixture
def page(server: PanelServer) -> Iterator[Page]:
    with launch_chromium() as browser, open_tab(browser, downloads=True, errors="script") as tab:
        yield tab


def sign_in(page: Page, server: PanelServer) -> None:
    page.goto(server.base_url + "/admin/surveys")
    browser_sign_in(page, EMAIL)
    page.wait_for_url(re.compile(r"/admin/surveys$"))


def test_weighted_switch_csv_and_board_summary(
    page: Page, server: PanelServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    sign_in(page, server)
    accessible(page)
    page.get_by_role("link", name="Every question type").click()
    expect(page.locator("#results-state")).to_contain_text("Unweighted")
    accessible(page)
    # Switch to weighted: women (2 of 3 respondents) weigh less, the man more.
    page.get_by_label("Weighted to the population").check()
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#results-state")).to_contain_text("Weighted")
    expect(page.locator("#question-ease")).to_contain_text("Margins of error (95%)")
    expect(page.locator("#representativeness")).to_contain_text("after weighting, sex = ")
    assert "weighted=1" in page.url
    accessible(page)
    # Broken down by a field: a chart per group.
    page.get_by_label("Break down by").select_option("sex")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#question-ease")).to_contain_text("ease: sex = male")
    accessible(page)
    # Usable at 320 px: nothing wider than the screen.
    page.set_viewport_size({"width": 320, "height": 640})
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    page.set_viewport_size({"width": 1280, "height": 800})
    # The CSV the page downloads is the CLI's, byte for byte.
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download these results as CSV").click()
    download = waiting.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert download.suggested_filename == "every-type-weighted-by-sex.csv"
    cli = panelbot(
        server.config,
        "survey",
        "results",
        "every-type",
        "--weighted",
        "--by",
        "sex",
        "--format",
        "csv",
    )
    assert saved.read_text(encoding="utf-8") == cli.stdout
    # The board summary: one printable A4 page.
    page.get_by_role("link", name=re.compile("^Board summary")).first.click()
    expect(page.get_by_role("heading", name="Headline findings")).to_be_visible()
    expect(page.locator(".cards")).to_contain_text("100.0% response rate (3 of 3 invited)")
    who = page.locator("section[aria-labelledby=repr]")
    expect(who).to_contain_text("Before weighting, the largest gap from the population was sex")
    expect(who).to_contain_text("After weighting, the largest gap is")
    accessible(page)
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1


def test_review_link_at_320_px(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    made = panelbot(server.config, "survey", "share", "every-type", "--label", "Healthwatch")
    link = re.search(r"(/review/\S+)", made.stdout).group(1)
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(server.base_url + link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Every question type")
    accessible(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    page.get_by_label("Your reply (as you would text it)").fill("3")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator(".transcript")).to_contain_text("What made it hard?")
    page.get_by_label("Your comment on question 1").fill("Add a 'very hard' option")
    page.locator("#q-ease").get_by_role("button", name="Send comment").click()
    expect(page.get_by_role("status")).to_contain_text("your comment was saved")
    accessible(page)
