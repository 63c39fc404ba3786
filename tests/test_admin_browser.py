"""The dashboard's core pages in a real Chromium against a real ``panelbot serve``: sign in,
read the overview chart through its text equivalent, look a panellist up and erase them
with confirmation, read the audit log and the messages matrix; keyboard and 320 px checks;
axe-core finds no serious or critical violation on any page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import (
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

if TYPE_CHECKING:
    from playwright.sync_api import Page

SEX = {"name": "sex", "values": ["female", "male"], "text": {"en": "What is your sex?"}}
ADMIN = "lead@example.org"
VIEWER = "board@example.org"
PHONES = ["+447400100101", "+447400100102", "+447400100103"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    directory = tmp_path_factory.mktemp("admin-pages")
    port = free_port()
    config = write_config(directory, port, [SEX])
    panel = directory / "panel.csv"
    rows = [f"{phone},en,2026-01-0{i + 1},{SEX['values'][i % 2]}" for i, phone in enumerate(PHONES)]
    panel.write_text("phone,locale,consent_at,sex\n" + "\n".join(rows) + "\n", encoding="utf-8")
    panelbot(config, "panel", "import", str(panel))
    add_staff(config, ADMIN, "admin")
    add_staff(config, VIEWER, "viewer")
    with PanelServer(config, port) as running:
        yield running


browser = browser_fixture()
page = page_fixture(downloads=True)


def test_sign_in_and_read_the_overview_chart(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    page.goto(server.base_url + "/admin")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin$"))
    accessible(page)
    fits(page)
    sign_in(page, ADMIN)
    expect(page).to_have_url(re.compile(r"/admin$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Overview")
    expect(page.locator(".cards")).to_contain_text("3 on the panel (active)")
    # The chart is one image with a name and a description ...
    chart = page.get_by_role("img", name=re.compile("Sign-ups per week"))
    expect(chart).to_be_visible()
    # ... and its figures are a table a screen reader (or anyone) can read.
    page.get_by_text("The figures as a table").first.click()
    table = page.get_by_role("table", name=re.compile("Sign-ups per week"))
    expect(table).to_be_visible()
    expect(table.get_by_role("columnheader").nth(1)).to_have_text("Joined that week")
    assert table.get_by_role("row").count() == 12 + 1
    accessible(page)
    fits(page)
    # Keyboard: the first Tab reaches the skip link, which moves focus to the main content.
    page.reload()
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to main content")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_erase_a_panellist_with_confirmation(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    page.goto(server.base_url + "/admin/panellists")
    sign_in(page, ADMIN)
    expect(page).to_have_url(re.compile(r"/admin/panellists$"))
    accessible(page)
    page.get_by_label(re.compile("Phone number")).fill("07400 100103")
    page.get_by_role("button", name="Find").click()
    expect(page).to_have_url(re.compile(r"/admin/panellists/\d+$"))
    pid = page.url.rsplit("/", 1)[1]
    expect(page.locator("#addresses")).to_be_visible()
    expect(page.locator("main")).to_contain_text(PHONES[2])
    accessible(page)
    fits(page)
    with page.expect_download() as waiting:
        page.get_by_role("link", name=re.compile("Export everything held")).click()
    assert waiting.value.suggested_filename == f"panellist-{pid}.json"
    page.get_by_role("link", name=re.compile("Erase this person")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Erase panellist {pid}")
    accessible(page)
    # A wrong id changes nothing and says why.
    page.get_by_label(re.compile("Type the panellist's id")).fill("1" + pid)
    page.get_by_role("button", name=f"Erase panellist {pid}").click()
    expect(page.get_by_role("alert")).to_contain_text(f"Type the panellist's id, {pid}")
    accessible(page)
    page.get_by_label(re.compile("Type the panellist's id")).fill(pid)
    page.get_by_role("button", name=f"Erase panellist {pid}").click()
    expect(page.get_by_role("status")).to_contain_text(f"erased panellist {pid}")
    accessible(page)
    # Their record now holds no number, and the audit log names who erased them.
    page.goto(f"{server.base_url}/admin/panellists/{pid}")
    expect(page.locator(".notice")).to_contain_text("was erased")
    assert PHONES[2] not in page.content()
    page.goto(server.base_url + "/admin/audit?action=erased")
    expect(page.locator("tbody")).to_contain_text(f"({ADMIN})")
    accessible(page)
    fits(page)


def test_viewer_reads_the_messages_matrix_and_cannot_erase(page: Page, server: PanelServer) -> None:
    from playwright.sync_api import expect

    page.goto(server.base_url + "/admin/messages")
    sign_in(page, VIEWER, "viewer")
    expect(page).to_have_url(re.compile(r"/admin/messages$"))
    expect(page.get_by_role("table", name="Messages by language")).to_be_visible()
    accessible(page)
    fits(page)
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Panellists").click()
    page.get_by_label(re.compile("Phone number")).fill(PHONES[0])
    page.get_by_role("button", name="Find").click()
    expect(page).to_have_url(re.compile(r"/admin/panellists/\d+$"))
    expect(page.get_by_role("link", name=re.compile("Erase"))).to_have_count(0)
    page.goto(page.url + "/erase")
    expect(page.get_by_role("heading", level=1)).to_have_text("You cannot do that")
    accessible(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/login$"))
