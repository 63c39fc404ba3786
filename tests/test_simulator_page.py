"""The simulator page: served by the package, its identities API, and a whole panel in a browser.

Everything runs against a real ``panelbot serve`` subprocess over HTTP; the browser tests
drive Debian's Chromium through Playwright (see ``tests/browser.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bot.models import Address, PanellistStatus, utcnow
from bot.storage import Database
from bot.storage import panellists as panellist_store
from tests.browser import REPO, PanelServer, free_port, launch_chromium, panelbot, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Page

EVERY_TYPE = REPO / "tests" / "data" / "every-type.toml"
STATIC_DIR = REPO / "bot" / "web" / "static"
URL = re.compile(r"\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)

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
# A question written in Urdu, so that the browser test sees a bot message that reads right
# to left with numbered options.
LOCALITY = {
    "name": "locality",
    "values": ["Northgate", "Southbank"],
    "text": {"en": "آپ کس علاقے میں رہتے ہیں؟"},
    "labels": {"en": ["شمالی دروازہ", "جنوبی کنارہ"]},
}

URDU_OK = "ٹھیک ہے"


# -- a shared server with imported panellists ------------------------------------------------


@dataclass
class SharedPanel:
    server: PanelServer
    listed: int  # active, 45-54 female Northgate, invited to a wave
    linked: int  # active, invited: linked to the simulator by a test
    taken: int  # active, but sim:panellist-<id> is taken by someone else
    chosen: int  # active, invited: chosen on the page by the browser test
    pending: int  # imported without consent: not offered
    erased: int
    fillers: int  # how many more active panellists, to pass the listing's cap
    # One browser, as an API client that keeps the simulator's cookie: its people are its own.
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.base_url


async def _import_panellists(db_path: Path, fillers: int) -> dict[str, int]:
    """Panellists as an import would leave them, written before the server starts."""
    db = await Database.open(db_path)
    try:
        async with db.transaction() as conn:

            async def person(
                status: PanellistStatus, phone: str | None, **demographics: str
            ) -> int:
                pid = await panellist_store.create(
                    conn,
                    status=status,
                    locale="en",
                    demographics=demographics,
                    consent_at=utcnow() if status == PanellistStatus.ACTIVE else None,
                    consent_method="import",
                    source="import",
                )
                if phone:
                    await panellist_store.add_address(conn, pid, Address("sms", phone))
                return pid

            ids = {
                "listed": await person(
                    PanellistStatus.ACTIVE,
                    "+447700900001",
                    age_band="45-54",
                    sex="female",
                    locality="Northgate",
                ),
                "linked": await person(PanellistStatus.ACTIVE, "+447700900002", age_band="16-24"),
                "taken": await person(PanellistStatus.ACTIVE, "+447700900003"),
                "chosen": await person(PanellistStatus.ACTIVE, "+447700900005", sex="male"),
                "pending": await person(PanellistStatus.PENDING, "+447700900004"),
                "erased": await person(PanellistStatus.ERASED, None),
            }
            for n in range(fillers):
                await person(PanellistStatus.ACTIVE, f"+4477009{10000 + n}")
    finally:
        await db.close()
    return ids


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedPanel]:
    """One server for the HTTP tests and the right-to-left test; an open wave for everyone."""
    directory = tmp_path_factory.mktemp("shared-panel")
    port = free_port()
    config = write_config(directory, port, [AGE, SEX, LOCALITY])
    fillers = 505
    ids = asyncio.run(_import_panellists(directory / "panel.db", fillers))
    panelbot(config, "survey", "add", str(EVERY_TYPE))
    panelbot(config, "survey", "launch", "every-type")  # not --include-new: sign-ups just join
    server = PanelServer(config, port)
    server.start()
    try:
        with httpx.Client(timeout=10) as client:
            yield SharedPanel(server=server, fillers=fillers, client=client, **ids)
    finally:
        server.kill()


def _identities(shared: SharedPanel) -> list[dict[str, Any]]:
    response = shared.client.get(shared.url + "/simulator/api/identities")
    assert response.status_code == 200, response.text
    return response.json()["identities"]


def _history(shared: SharedPanel, address: str) -> list[dict[str, Any]]:
    response = shared.client.get(
        shared.url + "/simulator/api/messages", params={"address": address}
    )
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def _wait_for_history(
    shared: SharedPanel, address: str, count: int, timeout: float = 10
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        history = _history(shared, address)
        if len(history) >= count or time.monotonic() > deadline:
            return history
        time.sleep(0.1)


# -- the page over HTTP -----------------------------------------------------------------------


def test_page_is_served_with_no_external_urls(shared: SharedPanel) -> None:
    response = httpx.get(shared.url + "/simulator", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert "http://" not in html and "https://" not in html
    assert not URL.search(html), "the page must not load anything from elsewhere"
    assert 'aria-live="polite"' in html
    assets = re.findall(r'(?:href|src)="(/simulator/static/[^"]+)"', html)
    assert sorted(assets) == ["/simulator/static/simulator.css", "/simulator/static/simulator.js"]
    for asset, kind in zip(sorted(assets), ("text/css", "javascript"), strict=True):
        loaded = httpx.get(shared.url + asset, timeout=10)
        assert loaded.status_code == 200, asset
        assert kind in loaded.headers["content-type"]
        assert "http://" not in loaded.text and "https://" not in loaded.text, asset
        assert not URL.search(loaded.text), asset


def test_static_files_ship_inside_the_package() -> None:
    from bot.web import page

    assert page.STATIC_DIR == STATIC_DIR
    assert {p.name for p in STATIC_DIR.iterdir()} >= {
        "simulator.html",
        "simulator.css",
        "simulator.js",
    }


def test_page_sets_message_text_only_as_text() -> None:
    # Message text must never become markup: no innerHTML, outerHTML or insertAdjacentHTML.
    script = (STATIC_DIR / "simulator.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def test_unknown_static_file_is_404(shared: SharedPanel) -> None:
    response = httpx.get(shared.url + "/simulator/static/nothing.js", timeout=10)
    assert response.status_code == 404


# -- identities -------------------------------------------------------------------------------


def test_identities_lists_simulator_people_and_active_imported_panellists(
    shared: SharedPanel,
) -> None:
    said = shared.client.post(
        shared.url + "/simulator/api/messages",
        json={"from": "sim:listed-person", "text": "hello"},
        timeout=10,
    )
    assert said.status_code == 200
    identities = _identities(shared)
    assert len(identities) == 500  # capped, though more people would qualify
    assert identities[0] == {"address": "sim:listed-person", "label": "listed-person"}
    imported = {i["panellist_id"]: i["label"] for i in identities if "panellist_id" in i}
    assert imported[shared.listed] == f"Panellist {shared.listed} (45-54, female, Northgate)"
    assert imported[shared.linked] == f"Panellist {shared.linked} (16-24)"
    assert imported[shared.taken] == f"Panellist {shared.taken}"
    assert shared.pending not in imported and shared.erased not in imported
    for identity in identities:
        assert set(identity) in ({"address", "label"}, {"panellist_id", "label"})


def test_linking_an_imported_panellist_resends_their_open_question(shared: SharedPanel) -> None:
    address = f"sim:panellist-{shared.linked}"
    response = shared.client.post(
        shared.url + "/simulator/api/identities", json={"panellist_id": shared.linked}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "address": address,
        "label": f"Panellist {shared.linked} (16-24)",
        "requeued": True,
    }
    history = _wait_for_history(shared, address, 1)
    assert len(history) == 1
    question = history[0]
    assert question["direction"] == "out"
    assert question["text"].startswith("Question 1 of 6: How easy was it?")
    assert [o["label"] for o in question["options"]] == ["Easy", "Neither easy nor hard", "Hard"]

    # Linking again is harmless: same address, and the question is not sent twice.
    again = shared.client.post(
        shared.url + "/simulator/api/identities", json={"panellist_id": shared.linked}, timeout=10
    )
    assert again.status_code == 200 and again.json()["requeued"] is False
    time.sleep(0.5)
    assert len(_history(shared, address)) == 1

    # Now they are on the simulator, not in the imported list.
    identities = _identities(shared)
    assert {"address": address, "label": f"panellist-{shared.linked}"} in identities
    assert shared.linked not in [i.get("panellist_id") for i in identities]

    # And they carry on with their survey from the simulator ("Easy" skips question 2).
    reply = shared.client.post(
        shared.url + "/simulator/api/messages", json={"from": address, "text": "1"}, timeout=10
    )
    assert reply.status_code == 200
    assert reply.json()["replies"][0].startswith("Question 3 of 6: How would you rate it?")


def test_linking_never_takes_over_someone_elses_address(shared: SharedPanel) -> None:
    # The page refuses the name, but the messages API lets anyone speak as any sim: address.
    address = f"sim:panellist-{shared.taken}"
    shared.client.post(
        shared.url + "/simulator/api/messages", json={"from": address, "text": "hello"}, timeout=10
    )
    response = shared.client.post(
        shared.url + "/simulator/api/identities", json={"panellist_id": shared.taken}, timeout=10
    )
    assert response.status_code == 409
    assert "already used" in response.json()["error"]
    history = _history(shared, address)
    assert [m["direction"] for m in history] == ["in", "out"]  # hello and the welcome only


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"",
        b"[12]",
        b'"12"',
        b"{}",
        b'{"panellist_id": "12"}',
        b'{"panellist_id": true}',
        b'{"panellist_id": 1.5}',
        b'{"panellist_id": null}',
        b'{"panellist_id": -1}',
        b'{"panellist_id": 0}',
        b'{"panellist_id": 999999999}',
        b'{"panellist_id": 100000000000000000000000}',
    ],
)
def test_identities_rejects_bad_requests_with_400(shared: SharedPanel, body: bytes) -> None:
    response = shared.client.post(
        shared.url + "/simulator/api/identities",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_identities_refuses_erased_panellists(shared: SharedPanel) -> None:
    response = shared.client.post(
        shared.url + "/simulator/api/identities", json={"panellist_id": shared.erased}, timeout=10
    )
    assert response.status_code == 400
    assert response.json() == {"error": f"no panellist {shared.erased}"}


def test_identities_links_someone_not_yet_joined_with_nothing_to_resend(
    shared: SharedPanel,
) -> None:
    # Not offered in the list, but not refused either: they can finish joining here.
    response = shared.client.post(
        shared.url + "/simulator/api/identities", json={"panellist_id": shared.pending}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["requeued"] is False


# -- in the browser ---------------------------------------------------------------------------


class Phone:
    """The simulator page as a panellist uses it: read the bot, tap, type."""

    def __init__(self, page: Page) -> None:
        self.page = page
        # Script errors and failed loads, which the page must never have.
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)

    def new_identity(self, name: str) -> None:
        self.page.get_by_label("Your name").fill(name)
        self.page.get_by_role("button", name="Start chatting").click()

    def type(self, text: str) -> None:
        box = self.page.get_by_label("Your reply")
        box.fill(text)
        box.press("Enter")

    def tap(self, name: str) -> None:
        self.page.locator("#quick-replies").get_by_role("button", name=name, exact=True).click()

    def bot_says(self, text: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator(".msg-out .bubble").last).to_contain_text(text, timeout=15_000)

    def quick_replies(self) -> list[str]:
        return self.page.locator("#quick-replies button").all_inner_texts()


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Phone]:
    """The page in Chromium, 360 px wide; a screenshot is saved whether the test passes or not."""
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 360, "height": 740})
        page = context.new_page()
        try:
            yield Phone(page)
        finally:
            from playwright.sync_api import Error as PlaywrightError

            # Best effort: a crashed page has nothing to show, and must not hide the failure.
            with contextlib.suppress(PlaywrightError):
                page.screenshot(path=str(tmp_path / "simulator.png"))
            context.close()


def test_whole_panel_in_the_browser(tmp_path: Path, phone: Phone) -> None:
    """Join, get the invitation by itself, answer every question type, and see the results."""
    port = free_port()
    config = write_config(tmp_path, port, [AGE, SEX])
    panelbot(config, "survey", "add", str(EVERY_TYPE))
    panelbot(config, "survey", "launch", "every-type", "--include-new")
    server = PanelServer(config, port)
    server.start()
    page = phone.page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(server.base_url + "/simulator")
        phone.new_identity("Test Person")
        from playwright.sync_api import expect

        expect(page.locator("#who-name")).to_have_text("test-person")

        phone.type("hello")
        phone.bot_says("Reply YES to join.")
        # Under each bot message: what it would cost as an SMS.
        expect(page.locator(".msg-out .msg-sms").first).to_have_text("SMS: GSM-7, 3 segments")
        assert phone.quick_replies() == ["Yes", "No"]
        phone.tap("Yes")
        phone.bot_says("Which age group are you in?")
        phone.tap("4 45-54")
        phone.bot_says("What is your sex?")
        phone.tap("1 Female")
        # The wave takes new joiners: the invitation arrives without being asked for.
        phone.bot_says("A test survey from Test Panel.")
        phone.bot_says("Question 1 of 6: How easy was it?")
        assert phone.quick_replies() == ["1 Easy", "2 Neither easy nor hard", "3 Hard"]
        phone.tap("3 Hard")
        phone.bot_says("Question 2 of 6: What made it hard?")
        phone.type("1 3")
        phone.bot_says("Question 3 of 6: How would you rate it?")
        assert phone.quick_replies() == ["1", "2", "3", "4", "5"]
        phone.tap("4")
        phone.bot_says("Question 4 of 6: Have you used the NHS App?")
        phone.tap("1 Yes")
        phone.bot_says("Question 5 of 6: How many days did you wait?")
        assert phone.quick_replies() == []
        phone.type("12")
        phone.bot_says("Question 6 of 6: Anything else?")
        phone.type("The phone queue was <b>long</b>")
        phone.bot_says("Thanks for finishing the test survey.")

        sent = page.locator(".msg-in .bubble").all_inner_texts()
        assert sent == [
            "hello",
            "YES",
            "4",
            "1",
            "3",
            "1 3",
            "4",
            "1",
            "12",
            "The phone queue was <b>long</b>",
        ]  # shown as typed, never as markup
        assert page.locator(".bubble b").count() == 0
        assert page.locator(".bubble:not([dir='auto'])").count() == 0
        # The newest message is in view, and nothing is wider than a 360 px phone.
        assert page.locator(".msg-out").last.is_visible()
        last_box = page.locator(".msg-out").last.bounding_box()
        list_box = page.locator("#messages").bounding_box()
        assert last_box and list_box
        assert last_box["y"] + last_box["height"] <= list_box["y"] + list_box["height"] + 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert all(url.startswith(server.base_url) for url in requests), requests
        assert phone.problems == []

        page.screenshot(path=str(tmp_path / "simulator-finished.png"))
        exit_code = server.terminate(timeout=10)
        assert exit_code == 0, server.log()
    finally:
        server.kill()

    results = json.loads(
        panelbot(config, "survey", "results", "every-type", "--format", "json").stdout
    )
    assert (results["invited"], results["completed"]) == (1, 1)
    by_id = {q["id"]: q for q in results["questions"]}

    def counts(qid: str) -> dict[str, int]:
        return {o["id"]: o["count"] for o in by_id[qid]["options"]}

    assert counts("ease") == {"easy": 0, "ok": 0, "hard": 1}
    assert counts("why_hard") == {"phone": 1, "online": 0, "times": 1}
    assert counts("score") == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}
    assert counts("online") == {"yes": 1, "no": 0}
    assert (by_id["days"]["answered"], by_id["days"]["mean"]) == (1, 12)
    assert by_id["comment"]["responses"] == ["The phone queue was <b>long</b>"]


def test_bubbles_lay_out_right_to_left_for_urdu(shared: SharedPanel, phone: Phone) -> None:
    page = phone.page
    page.goto(shared.url + "/simulator")
    phone.new_identity("rtl-reader")
    phone.type(URDU_OK)
    phone.bot_says("Reply YES to join.")

    mine = page.locator(".msg-in .bubble", has_text=URDU_OK)
    theirs = page.locator(".msg-out .bubble").first
    assert mine.get_attribute("dir") == theirs.get_attribute("dir") == "auto"
    assert mine.evaluate("el => el.matches(':dir(rtl)')")
    assert mine.evaluate("el => getComputedStyle(el).direction") == "rtl"
    assert theirs.evaluate("el => el.matches(':dir(ltr)')")
    # The panellist on the right, the panel on the left, whatever the language.
    mine_box, theirs_box = mine.bounding_box(), theirs.bounding_box()
    assert mine_box and theirs_box
    assert mine_box["x"] + mine_box["width"] > theirs_box["x"] + theirs_box["width"]
    assert mine_box["x"] > theirs_box["x"]

    # A bot message in Urdu with numbered options: right to left, each number before (to the
    # right of) its option, and the quick replies read the same way.
    phone.tap("Yes")
    phone.tap("4 45-54")
    phone.tap("1 Female")
    phone.bot_says(LOCALITY["text"]["en"])
    question = page.locator(".msg-out .bubble").last
    assert question.evaluate("el => el.matches(':dir(rtl)')")
    number_x, word_x = question.evaluate(
        """el => {
            const text = el.firstChild;
            const at = text.data.indexOf("1 ");
            const box = (start) => {
                const range = document.createRange();
                range.setStart(text, start);
                range.setEnd(text, start + 1);
                return range.getBoundingClientRect().left;
            };
            return [box(at), box(at + 2)];
        }"""
    )
    assert number_x > word_x, "in a right-to-left line the number comes first, on the right"
    button = page.locator("#quick-replies button").first
    assert button.inner_text() == "1 شمالی دروازہ"
    assert button.evaluate("el => el.matches(':dir(rtl)')")
    assert phone.problems == []


def test_choosing_an_imported_panellist_carries_on_their_survey(
    shared: SharedPanel, phone: Phone
) -> None:
    page = phone.page
    page.goto(shared.url + "/simulator")
    label = f"Panellist {shared.chosen} (male)"
    page.get_by_label("Or carry on as someone already on the panel").select_option(label=label)
    page.get_by_role("button", name="Carry on").click()
    phone.bot_says("Question 1 of 6: How easy was it?")
    from playwright.sync_api import expect

    expect(page.locator("#who-name")).to_have_text(label)
    phone.tap("1 Easy")
    phone.bot_says("Question 3 of 6: How would you rate it?")

    # The page remembers who you are across a reload.
    page.reload()
    expect(page.locator("#who-name")).to_have_text(label)
    phone.bot_says("Question 3 of 6: How would you rate it?")
    assert phone.quick_replies() == ["1", "2", "3", "4", "5"]

    # Changing person: they are now on the simulator, no longer among the imported.
    page.get_by_role("button", name="Change person").click()
    expect(page.get_by_label("Your name")).to_be_visible()
    choices = page.locator("#existing optgroup[label='On the simulator'] option")
    expect(choices.filter(has_text=f"panellist-{shared.chosen}")).to_have_count(1)
    assert page.locator("#existing option", has_text=label).count() == 0
    assert phone.problems == []


def test_a_browser_keeps_its_people_to_itself(shared: SharedPanel) -> None:
    """Two browsers on one panel: a name the first uses is refused to the second, on the
    page's own form, and neither lists or reads the other's people."""
    from playwright.sync_api import expect

    with launch_chromium() as chromium:
        first, second = (chromium.new_context(viewport={"width": 360, "height": 740}) for _ in "ab")
        try:
            ann, eve = Phone(first.new_page()), Phone(second.new_page())
            ann.page.goto(shared.url + "/simulator")
            ann.new_identity("Kept Name")
            expect(ann.page.locator("#who-name")).to_have_text("kept-name")
            ann.type("hello")
            ann.bot_says("Reply YES to join.")
            # The cookie that makes kept-name Ann's is out of reach of the page's script.
            assert ann.page.evaluate("document.cookie") == ""
            (cookie,) = [c for c in first.cookies() if c["name"] == "panelbot_sim"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            eve.page.goto(shared.url + "/simulator")
            expect(eve.page.get_by_label("Your name")).to_be_visible()
            assert eve.page.locator("#existing option", has_text="kept-name").count() == 0
            eve.new_identity("Kept Name")
            expect(eve.page.locator("#name-error")).to_contain_text("belongs to someone else")
            expect(eve.page.locator("#chat")).to_be_hidden()
            # Eve's own name works, and her list has her person only, not Ann's.
            eve.new_identity("Eve")
            expect(eve.page.locator("#who-name")).to_have_text("eve")
            eve.type("hi")
            eve.bot_says("Reply YES to join.")
            eve.page.get_by_role("button", name="Change person").click()
            on_simulator = eve.page.locator("#existing optgroup[label='On the simulator'] option")
            expect(on_simulator).to_have_count(1)
            expect(on_simulator).to_have_text("eve")
            assert ann.problems == []
            assert not [p for p in eve.problems if p.startswith("page error")]
        finally:
            first.close()
            second.close()
