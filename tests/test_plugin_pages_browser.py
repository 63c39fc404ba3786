"""The plugins' dashboard pages in a real Chromium against a real ``panelbot serve``: read
the panel-vs-population chart through its text equivalent, record a decision linked to a
survey, preview and schedule its update, then cancel it with confirmation; axe-core finds
no serious or critical violation on any of them, and none scrolls sideways at 320 px."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import (
    REPO,
    PanelServer,
    accessible,
    add_staff,
    browser_fixture,
    fits,
    free_port,
    page_fixture,
    panelbot,
    sign_in,
    write_config,
)
from tests.test_admin_browser import ADMIN, VIEWER

if TYPE_CHECKING:
    from playwright.sync_api import Page

SEX = {"name": "sex", "values": ["female", "male"], "text": {"en": "What is your sex?"}}
PHONES = ["+447400200101", "+447400200102", "+447400200103", "+447400200104"]
QUOTAS = """
[plugins.quotas]
panel_size_target = 10
tolerance = 0.1

[plugins.quotas.population.sex]
female = 0.5
male = 0.5
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    directory = tmp_path_factory.mktemp("plugin-pages")
    port = free_port()
    config = write_config(directory, port, [SEX])
    config.write_text(config.read_text(encoding="utf-8") + QUOTAS, encoding="utf-8")
    panel = directory / "panel.csv"
    # Three women and one man: women over their half of the panel, men under.
    sexes = ["female", "female", "female", "male"]
    rows = [f"{phone},en,2026-01-0{i + 1},{sexes[i]}" for i, phone in enumerate(PHONES)]
    panel.write_text("phone,locale,consent_at,sex\n" + "\n".join(rows) + "\n", encoding="utf-8")
    panelbot(config, "panel", "import", str(panel))
    panelbot(config, "survey", "add", str(REPO / "tests" / "data" / "every-type.toml"))
    add_staff(config, ADMIN, "admin")
    add_staff(config, VIEWER, "viewer")
    with PanelServer(config, port) as running:
        yield running


browser = browser_fixture()
page = page_fixture()


def test_read_the_population_chart_as_text(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    page.goto(server.base_url + "/admin/population")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin/population$"))
    sign_in(page, VIEWER, "viewer")
    expect(page).to_have_url(re.compile(r"/admin/population$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Panel vs population")
    nav = page.get_by_role("navigation", name="Dashboard")
    expect(nav.get_by_role("link", name="Population")).to_have_attribute("aria-current", "page")
    title = "sex: share of the panel against the population target"
    expect(page.get_by_role("img", name=re.compile(title))).to_be_visible()
    # The chart's own figures, opened from under it.
    page.get_by_text("The figures as a table").first.click()
    figures = page.get_by_role("table", name=title)
    expect(figures).to_be_visible()
    expect(figures.get_by_role("row", name=re.compile("^female"))).to_contain_text("75%")
    expect(figures.get_by_role("row", name=re.compile("^female"))).to_contain_text("50%")
    # The table with the gaps in words and the recruitment needed.
    table = page.get_by_role("table", name=re.compile("sex: panel against target"))
    male = table.get_by_role("row", name=re.compile("^male"))
    expect(male).to_contain_text("under target")
    # Cells after the row header: target, active, share, gap, flag, needed for the target.
    expect(male.get_by_role("cell").nth(5)).to_have_text("4")  # to reach 5 of 10
    expect(table.get_by_role("row", name=re.compile("^female"))).to_contain_text("over target")
    expect(page.get_by_text(re.compile("Beyond tolerance: female"))).to_be_visible()
    accessible(page)
    fits(page)


def test_create_a_decision_and_schedule_its_update(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    page.goto(server.base_url + "/admin/decisions")
    sign_in(page, ADMIN)
    expect(page).to_have_url(re.compile(r"/admin/decisions$"))
    accessible(page)
    fits(page)
    # A mistake first: the form comes back with the reason and what was typed.
    page.get_by_label("Title").fill("Evening phone lines")
    page.get_by_label(re.compile("^You said")).fill("Booking by phone is hard in working hours.")
    page.get_by_label(re.compile("^We did")).fill("The line now opens until 8pm on weekdays.")
    page.get_by_label(re.compile("^Link")).fill("ftp://example.org/phones")
    page.get_by_role("button", name="Record decision").click()
    expect(page.get_by_role("alert")).to_contain_text("Link: must be an http:// or https://")
    accessible(page)
    expect(page.get_by_label("Title")).to_have_value("Evening phone lines")
    page.get_by_label(re.compile("^Link")).fill("https://example.org/phones")
    page.get_by_label(re.compile("^Surveys that informed it")).select_option("every-type")
    page.get_by_label(re.compile("^Decided by")).fill("Trust board")
    page.get_by_label(re.compile("^Owner")).fill("Director of operations")
    page.get_by_role("button", name="Record decision").click()
    expect(page).to_have_url(re.compile(r"/admin/decisions/\d+\?done=added$"))
    expect(page.get_by_role("status").first).to_contain_text("Decision recorded.")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Evening phone lines")
    expect(page.locator("dl.held")).to_contain_text("every-type")
    accessible(page)
    fits(page)
    # Preview for the whole panel: four people, the text with its SMS measure.
    page.get_by_label("Preview for").select_option("panel")
    page.get_by_role("button", name="Show preview").click()
    expect(page.locator("#preview-summary")).to_contain_text("4 people would get it")
    english = page.get_by_role("region", name="English (en)")
    expect(english).to_contain_text(re.compile(r"GSM-7, \d+ characters, \d+ SMS segments? each"))
    expect(english.locator("pre")).to_contain_text("8pm on weekdays")
    accessible(page)
    fits(page)
    # Schedule it for two days' time, to the whole panel, with a 25% hold-out.
    page.get_by_label("After a while", exact=True).check()
    page.get_by_label(re.compile("^Wait, if")).fill("2d")
    page.get_by_label("Audience", exact=True).select_option("panel")
    page.get_by_label(re.compile("^Hold-out")).fill("25%")
    page.get_by_role("button", name="Schedule update").click()
    expect(page.get_by_role("status").first).to_contain_text("Update scheduled.")
    updates = page.get_by_role("table", name="Updates about this decision")
    row = updates.get_by_role("row").nth(1)
    expect(row).to_contain_text("scheduled")
    expect(row).to_contain_text("panel (25% held out)")
    accessible(page)
    fits(page)
    # Cancel it: not until the box is ticked.
    cancel = page.get_by_role("button", name=re.compile(r"^Cancel update \d+$"))
    page.get_by_label(re.compile(r"^Yes, cancel update")).check()
    cancel.click()
    expect(page.get_by_role("status").first).to_contain_text("Update cancelled")
    expect(updates.get_by_role("row").nth(1)).to_contain_text("cancelled")
    expect(page.get_by_role("button", name=re.compile(r"^Cancel update"))).to_have_count(0)
    accessible(page)
    # The register lists the decision with its update's delivery figures.
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Decisions").click()
    register = page.get_by_role("table", name="Decisions, newest last")
    expect(register).to_contain_text("Evening phone lines")
    expect(register).to_contain_text("Trust board")
    expect(register).to_contain_text(re.compile(r"Update \d+: cancelled"))
    accessible(page)
    fits(page)
    # The audit log names who did each.
    page.goto(server.base_url + "/admin/audit")
    for action in ("decision.added", "impact.scheduled", "impact.cancelled"):
        expect(page.locator("tbody")).to_contain_text(action)
