"""The simulator page in a real Chromium: ticking several options of a multi-choice question,
the newest question in view when a conversation opens, and what a decline leaves behind.

Runs against a real ``panelbot serve`` subprocess over HTTP (see ``tests/browser.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import REPO, PanelServer, free_port, launch_chromium, panelbot, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Page

EVERY_TYPE = REPO / "tests" / "data" / "every-type.toml"
AGE = {
    "name": "age_band",
    "values": ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"],
    "text": {"en": "Which age group are you in?"},
}
SEX = {
    "name": "sex",
    "values": ["female", "male", "other", "prefer_not_to_say"],
    "text": {"en": "What is your sex?"},
}
TIMEOUT = 15_000  # ms: a busy two-core machine runs several servers at once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    """A panel with two sign-up questions and an open wave that takes new joiners."""
    directory = tmp_path_factory.mktemp("multiselect-panel")
    port = free_port()
    config = write_config(directory, port, [AGE, SEX])
    panelbot(config, "survey", "add", str(EVERY_TYPE))
    panelbot(config, "survey", "launch", "every-type", "--include-new")
    running = PanelServer(config, port)
    running.start()
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """The page in Chromium on a small phone; a screenshot is kept, pass or fail."""
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 360, "height": 640})
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        try:
            yield tab
            assert errors == []
        finally:
            from playwright.sync_api import Error as PlaywrightError

            with contextlib.suppress(PlaywrightError):
                tab.screenshot(path=str(tmp_path / "simulator.png"))
            context.close()


def start(page: Page, server: PanelServer, name: str) -> None:
    page.goto(server.base_url + "/simulator")
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Start chatting").click()
    from playwright.sync_api import expect

    expect(page.locator("#who-name")).to_have_text(name, timeout=TIMEOUT)


def type_reply(page: Page, text: str) -> None:
    box = page.get_by_label("Your reply")
    box.fill(text)
    box.press("Enter")


def tap(page: Page, name: str) -> None:
    page.locator("#quick-replies").get_by_role("button", name=name, exact=True).click()


def bot_says(page: Page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".msg-out .bubble").last).to_contain_text(text, timeout=TIMEOUT)


def quick_replies(page: Page) -> list[str]:
    return page.locator("#quick-replies button").all_inner_texts()


def newest_fully_in_view(page: Page) -> bool:
    """The newest message lies inside the scrolled list's visible box."""
    return bool(
        page.evaluate(
            """() => {
                const list = document.getElementById("messages").getBoundingClientRect();
                const items = document.querySelectorAll("#messages .msg");
                const last = items[items.length - 1].getBoundingClientRect();
                return last.top >= list.top - 1 && last.bottom <= list.bottom + 1;
            }"""
        )
    )


def join_and_reach_the_multi_question(page: Page) -> None:
    type_reply(page, "hello")
    bot_says(page, "Reply YES to join.")
    tap(page, "Yes")
    bot_says(page, "Which age group are you in?")
    tap(page, "4 45-54")
    bot_says(page, "What is your sex?")
    tap(page, "1 Female")
    bot_says(page, "Question 1 of 6: How easy was it?")
    tap(page, "3 Hard")
    bot_says(page, "Question 2 of 6: What made it hard?")


def test_a_multi_choice_question_takes_several_ticks_then_send(
    page: Page, server: PanelServer
) -> None:
    from playwright.sync_api import expect

    start(page, server, "ticker")
    join_and_reach_the_multi_question(page)
    options = ["1 Phone queue", "2 Online form", "3 No times free"]
    assert quick_replies(page) == [*options, "Send"]
    send = page.locator("#quick-replies").get_by_role("button", name="Send", exact=True)
    # Nothing ticked: Send waits, and a tap on it sends nothing.
    assert send.get_attribute("aria-disabled") == "true"
    sent_before = page.locator(".msg-in").count()
    send.click(force=True)  # aria-disabled: Playwright would wait for it to be enabled

    # One tap ticks an option and sends nothing; a second tap unticks it.
    for name in ("1 Phone queue", "2 Online form", "3 No times free", "2 Online form"):
        tap(page, name)
    pressed = [
        page.locator("#quick-replies").get_by_role("button", name=name, exact=True)
        for name in options
    ]
    assert [b.get_attribute("aria-pressed") for b in pressed] == ["true", "false", "true"]
    assert page.locator(".msg-in").count() == sent_before
    assert send.get_attribute("aria-disabled") is None

    send.click()
    bot_says(page, "Question 3 of 6: How would you rate it?")
    expect(page.locator(".msg-in .bubble").last).to_have_text("1 3")
    # The next question's buttons answer with one tap again.
    assert quick_replies(page) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("how", ["reload", "choose again"])
def test_opening_a_conversation_shows_the_newest_question_above_its_buttons(
    page: Page, server: PanelServer, how: str
) -> None:
    name = "scroller-" + how.replace(" ", "-")
    start(page, server, name)
    type_reply(page, "hello")
    bot_says(page, "Reply YES to join.")
    tap(page, "Yes")
    bot_says(page, "Which age group are you in?")
    assert len(quick_replies(page)) == 7  # seven buttons take much of a small screen
    if how == "reload":
        page.reload()
    else:
        page.get_by_role("button", name="Change person").click()
        page.get_by_label("Or carry on as someone already on the panel").select_option(
            value="sim:" + name
        )
        page.get_by_role("button", name="Carry on").click()
    bot_says(page, "Which age group are you in?")
    page.wait_for_function("document.querySelectorAll('#quick-replies button').length === 7")
    page.wait_for_timeout(300)  # let the page settle; what matters is where it settled
    assert newest_fully_in_view(page)


def test_after_declining_the_page_says_the_conversation_was_deleted(
    page: Page, server: PanelServer
) -> None:
    from playwright.sync_api import expect

    start(page, server, "decliner")
    type_reply(page, "hello")
    bot_says(page, "Reply YES to join.")
    note = page.locator("#note")
    expect(note).to_be_hidden()
    type_reply(page, "no thanks")
    expect(note).to_be_visible(timeout=TIMEOUT)
    expect(note).to_contain_text("You said no to joining, so the panel deleted this conversation")
    # The earlier messages are gone from the page, as from the panel, but the panel's answer
    # to the no stays in view (the history the page polls is empty: nothing is kept).
    expect(page.locator(".msg-in")).to_have_count(0)
    bot_says(page, "you have not joined")
    page.wait_for_timeout(2_500)  # a poll or two of the empty history must not wipe it
    bot_says(page, "you have not joined")
    assert "Hello from Test Panel" not in " ".join(page.locator(".bubble").all_inner_texts())

    # Writing again is answered, not met with silence.
    type_reply(page, "hello?")
    bot_says(page, "You chose not to join Test Panel")
    expect(note).to_be_visible()
    # The note survives a reload: it comes from the panel, not from the page's memory.
    page.reload()
    expect(note).to_be_visible(timeout=TIMEOUT)

    type_reply(page, "START")
    bot_says(page, "Reply YES to join.")
    expect(note).to_be_hidden(timeout=TIMEOUT)


def test_a_remembered_name_whose_cookie_was_cleared_goes_back_to_choosing(
    page: Page, server: PanelServer
) -> None:
    from playwright.sync_api import expect

    start(page, server, "forgetful")
    type_reply(page, "hello")
    bot_says(page, "Reply YES to join.")
    # The page remembers sim:forgetful, but the browser lost the cookie it belongs to: the
    # panel answers 404, and the page says so once instead of failing to poll for ever.
    page.context.clear_cookies()
    page.reload()
    expect(page.locator("#identity")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#chat")).to_be_hidden()
    expect(page.locator("#identity-status")).to_contain_text(
        "can no longer open the conversation as sim:forgetful"
    )
    assert "Cannot reach" not in page.locator("#status").inner_text()
    # Reloading again starts afresh (the address is not remembered), and a new name works.
    page.reload()
    expect(page.locator("#identity")).to_be_visible(timeout=TIMEOUT)
    start(page, server, "remembering")
    type_reply(page, "hello")
    bot_says(page, "Reply YES to join.")
    expect(page.locator("#identity-status")).to_have_text("")
