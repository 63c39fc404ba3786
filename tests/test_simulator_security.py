"""The simulator has no login, so it is locked down (issue 9, finding 1, and its parts of 5, 7
and 9): off unless a config turns it on, each ``sim:`` person belongs to the browser that
started it, imported panellists only on a demo panel, bounded bodies and new people, and
a full database is a 503. The Telegram webhook's JSON parsing is checked here too.

Every test runs the real app over HTTP on a real SQLite file; "browsers" are httpx clients
that keep cookies, as a browser does.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.config import dump_toml, load_settings, settings_from_dict
from bot.demo import demo_config, prepare_data_dir
from bot.models import Address, PanellistStatus, utcnow
from bot.storage import panellists as panellist_store
from bot.web.simulator import COOKIE, MAX_BODY
from tests.conftest import REPO, make_settings
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.webserver import serving

MESSAGES = "/simulator/api/messages"
IDENTITIES = "/simulator/api/identities"
DEMO = {"enabled": True, "demo": True, "allow_panellists": True}


@asynccontextmanager
async def running(tmp_path: Path, **simulator: Any) -> AsyncIterator[tuple[Bot, str]]:
    """A bot with the simulator on (and these [channels.simulator] keys), served over HTTP."""
    settings = make_settings(
        tmp_path,
        channels={"simulator": {"enabled": True, **simulator}},
        outbox={"poll_interval": 0.05},
    )
    bot = await Bot.create(settings)
    try:
        async with serving(bot) as url:
            yield bot, url
    finally:
        await bot.stop()


def browser(url: str) -> httpx.AsyncClient:
    """One browser: keeps the simulator's cookie like a real one."""
    return httpx.AsyncClient(base_url=url, timeout=15)


async def say(client: httpx.AsyncClient, who: str, text: str) -> httpx.Response:
    return await client.post(MESSAGES, json={"from": who, "text": text})


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(IDENTITIES)
    assert response.status_code == 200, response.text
    return response.json()["identities"]


# -- 1. off unless turned on ------------------------------------------------------------------


async def test_a_config_with_only_twilio_serves_no_simulator(tmp_path: Path) -> None:
    async with FakeTwilio().running() as twilio:
        settings = settings_from_dict(
            {
                "bot": {"database": "panel.db", "public_base_url": "https://panel.example.org"},
                "channels": {
                    "twilio": {
                        "enabled": True,
                        "account_sid": ACCOUNT_SID,
                        "auth_token": AUTH_TOKEN,
                        "from_number": "+447400100000",
                        "api_base_url": twilio.url,
                    }
                },
            },
            base_dir=tmp_path,
        )
        assert not settings.channels.simulator.enabled
        bot = await Bot.create(settings)
        try:
            async with serving(bot) as url, browser(url) as client:
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/simulator")).status_code == 404
                assert (await client.get("/simulator/static/simulator.js")).status_code == 404
                assert (await client.get(IDENTITIES)).status_code == 404
                assert (await say(client, "sim:intruder", "STOP")).status_code == 404
                params = {"address": "sim:intruder"}
                assert (await client.get(MESSAGES, params=params)).status_code == 404
        finally:
            await bot.stop()
        assert await bot_rows(tmp_path / "panel.db", "SELECT count(*) FROM panellists") == 0


async def bot_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_the_built_in_default_has_the_simulator_off_and_the_demo_turns_it_on(
    tmp_path: Path,
) -> None:
    assert not load_settings(None).channels.simulator.enabled
    demo = settings_from_dict(demo_config(8080), base_dir=tmp_path).channels.simulator
    assert (demo.enabled, demo.demo, demo.allow_panellists) == (True, True, True)


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        (
            "[channels.simulator]\nenabled = true\nallow_panellists = true\n",
            "channels.simulator.allow_panellists: only a demo panel may speak as imported",
        ),
        (
            '[bot]\npublic_base_url = "https://panel.example.org"\n'
            "[channels.simulator]\nenabled = true\ndemo = true\nallow_panellists = true\n"
            '[channels.twilio]\nenabled = true\naccount_sid = "AC1"\nauth_token = "x"\n'
            'from_number = "+447400100000"\n',
            "channels.simulator.demo: a demo panel has no real channels; "
            "channels.twilio.enabled must be false",
        ),
    ],
    ids=["panellists-outside-a-demo", "demo-with-twilio"],
)
def test_config_check_refuses_panellists_outside_a_demo(
    tmp_path: Path, toml: str, problem: str
) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(toml, encoding="utf-8")
    result = config_check(path)
    assert result.returncode == 1
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_an_older_demo_config_is_marked_as_a_demo_and_a_users_config_is_not(
    tmp_path: Path,
) -> None:
    old = demo_config(8080)
    del old["channels"]["simulator"]["demo"]
    folder = tmp_path / "demo-data"
    folder.mkdir()
    config = folder / "panelbot.toml"
    config.write_text(
        f"# Written by `panelbot demo`. Use it with: panelbot -c {config} <command>\n"
        + dump_toml(old),
        encoding="utf-8",
    )
    prepare_data_dir(folder, 8080)
    simulator = load_settings(config).channels.simulator
    assert (simulator.demo, simulator.allow_panellists) == (True, True)

    mine = tmp_path / "mine"
    mine.mkdir()
    written = "[channels.simulator]\nenabled = true\n"
    (mine / "panelbot.toml").write_text(written, encoding="utf-8")
    prepare_data_dir(mine, 8080)
    assert (mine / "panelbot.toml").read_text(encoding="utf-8") == written


# -- 2. each browser sees and speaks for its own people only ----------------------------------


async def test_a_browser_never_sees_or_speaks_for_another_browsers_people(tmp_path: Path) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as ann, browser(url) as eve:
        started = await ann.post(IDENTITIES, json={"name": "alice"})
        assert started.status_code == 200, started.text
        assert started.json() == {"address": "sim:alice", "label": "alice"}
        cookie = started.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/simulator"} <= attributes
        said = await say(ann, "sim:alice", "hello")
        assert said.status_code == 200 and "Reply YES to join" in said.json()["replies"][0]
        assert (await say(ann, "sim:alice", "yes")).status_code == 200  # a demographic next

        # Another browser: nothing listed, nothing to read, nothing it may say.
        assert await listed(eve) == []
        read = await eve.get(MESSAGES, params={"address": "sim:alice"})
        assert read.status_code == 404
        assert "alice" not in json.dumps(await listed(eve))
        stop = await say(eve, "sim:alice", "STOP")
        assert stop.status_code == 403
        assert "belongs to someone else" in stop.json()["error"]
        taken = await eve.post(IDENTITIES, json={"name": "alice"})
        assert taken.status_code == 403

        # A made-up cookie is just another stranger.
        forged = httpx.AsyncClient(base_url=url, cookies={COOKIE: "a" * 43}, timeout=15)
        async with forged:
            assert (await forged.get(MESSAGES, params={"address": "sim:alice"})).status_code == 404

        # The owner still has everything, and alice was not opted out by anyone.
        assert await listed(ann) == [{"address": "sim:alice", "label": "alice"}]
        history = (await ann.get(MESSAGES, params={"address": "sim:alice"})).json()["messages"]
        assert [m["text"] for m in history if m["direction"] == "in"] == ["hello", "yes"]
        person = await panellist_store.find_by_address(bot.db.conn, Address("sim", "alice"))
        assert person is not None and person.status == PanellistStatus.PENDING

        # The server keeps a keyed hash of the cookie, never the cookie itself.
        token = ann.cookies[COOKIE]
        rows = await bot.db.fetchall("SELECT address, owner_hash FROM simulator_owners")
        assert [r["address"] for r in rows] == ["alice"]
        assert token not in rows[0]["owner_hash"] and len(rows[0]["owner_hash"]) == 64
    for path in sorted(tmp_path.iterdir()):  # noqa: ASYNC240 - the test's own files
        if path.name.startswith("panel.db"):
            assert token.encode() not in path.read_bytes(), path


async def test_a_name_nobody_holds_reads_as_an_empty_conversation(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, url), browser(url) as eve:
        fresh = await eve.get(MESSAGES, params={"address": "sim:not-yet"})
        assert fresh.status_code == 200
        assert fresh.json() == {"messages": [], "forgotten": None}


async def test_only_the_browser_whose_person_declined_is_told_so(tmp_path: Path) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as dee, browser(url) as eve:
        assert (await say(dee, "sim:dee", "hello")).status_code == 200
        said = await say(dee, "sim:dee", "no")  # declines: the person is forgotten
        assert said.status_code == 200 and said.json()["forgotten"] == "declined"
        assert await panellist_store.find_by_address(bot.db.conn, Address("sim", "dee")) is None
        # The name stays dee's browser's (released), so only it learns what happened.
        mine = await dee.get(MESSAGES, params={"address": "sim:dee"})
        assert mine.status_code == 200 and mine.json()["forgotten"] == "declined"
        assert [m["direction"] for m in mine.json()["messages"]] in ([], ["out"])
        theirs = await eve.get(MESSAGES, params={"address": "sim:dee"})
        assert theirs.status_code == 404 and "declined" not in theirs.text
        assert (await say(eve, "sim:dee", "hello")).status_code == 403
        assert (await eve.post(IDENTITIES, json={"name": "dee"})).status_code == 403
        # dee's browser carries on: told it declined, and may still join.
        again = await say(dee, "sim:dee", "hello?")
        assert again.status_code == 200 and again.json()["forgotten"] == "declined"
        assert "chose not to join" in again.json()["replies"][0]


async def test_a_declined_name_is_freed_after_a_day_and_its_next_holder_learns_nothing(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as dee, browser(url) as eve:
        assert (await say(dee, "sim:dee", "hello")).status_code == 200
        declined = await say(dee, "sim:dee", "no")
        assert declined.status_code == 200 and declined.json()["replies"], declined.text
        rows = await bot.db.fetchall("SELECT released_at FROM simulator_owners")
        assert [r["released_at"] is not None for r in rows] == [True]
        async with bot.db.transaction() as conn:  # the decline was two days ago
            await conn.execute(
                "UPDATE simulator_owners SET created_at = '2000-01-01T00:00:00.000+00:00', "
                "released_at = '2000-01-01T00:00:00.000+00:00'"
            )
        # Freed: another browser may take the name, and reads none of what was said to
        # the person before (the reply to the no is still in the outbox for a minute).
        taken = await eve.post(IDENTITIES, json={"name": "dee"})
        assert taken.status_code == 200, taken.text
        read = await eve.get(MESSAGES, params={"address": "sim:dee"})
        assert read.status_code == 200
        assert read.json() == {"messages": [], "forgotten": None}
        # A new person: the full sign-up, not "you chose not to join".
        hello = await say(eve, "sim:dee", "hello")
        assert hello.status_code == 200 and not hello.json().get("forgotten")
        assert "Reply YES to join" in hello.json()["replies"][0]
        history = (await eve.get(MESSAGES, params={"address": "sim:dee"})).json()["messages"]
        assert [m["text"] for m in history if m["direction"] == "in"] == ["hello"]
        assert not any("chose not to join" in m["text"] for m in history)


async def test_a_name_claimed_and_never_used_is_forgotten_after_a_day(tmp_path: Path) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as client:
        assert (await client.post(IDENTITIES, json={"name": "typed-and-left"})).status_code == 200
        assert (await say(client, "sim:chatting", "hello")).status_code == 200
        async with bot.db.transaction() as conn:  # both claims made two days ago
            await conn.execute("UPDATE simulator_owners SET created_at = '2000-01-01T00:00:00'")
        assert (await client.post(IDENTITIES, json={"name": "next"})).status_code == 200
        rows = await bot.db.fetchall("SELECT address FROM simulator_owners ORDER BY address")
        assert [r["address"] for r in rows] == ["chatting", "next"]


async def test_api_clients_that_keep_cookies_carry_on_across_requests(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, url), browser(url) as client:
        assert (await say(client, "sim:bob", "hello")).status_code == 200
        assert (await say(client, "sim:bob", "yes")).status_code == 200
        history = (await client.get(MESSAGES, params={"address": "sim:bob"})).json()["messages"]
        assert len(history) == 4
        # One that drops its cookie is a stranger to bob.
        async with httpx.AsyncClient(base_url=url, timeout=15) as forgetful:
            assert (await say(forgetful, "sim:bob", "1")).status_code == 403


async def test_new_people_are_capped_per_browser_and_per_network_address(tmp_path: Path) -> None:
    async with running(tmp_path, new_identities_per_minute=3) as (_, url):
        async with browser(url) as busy:
            for n in range(3):
                assert (await busy.post(IDENTITIES, json={"name": f"p{n}"})).status_code == 200
            refused = await busy.post(IDENTITIES, json={"name": "p3"})
            assert refused.status_code == 429
            assert "at most 3 a minute" in refused.json()["error"]
            assert refused.headers["retry-after"] == "60"
            by_message = await say(busy, "sim:p4", "hello")
            assert by_message.status_code == 429
            # Its existing people carry on.
            assert (await say(busy, "sim:p0", "hello")).status_code == 200
        # Dropping the cookie does not help for long: one network address gets 5 x 3.
        made = 3
        refusals = 0
        for n in range(6):
            async with browser(url) as fresh:
                for m in range(3):
                    response = await fresh.post(IDENTITIES, json={"name": f"q{n}-{m}"})
                    if response.status_code == 200:
                        made += 1
                    else:
                        assert response.status_code == 429
                        refusals += 1
        assert (made, refusals) == (15, 18 - 12)


# -- 3. imported panellists only on a demo panel -----------------------------------------------


async def add_imported(bot: Bot, phone: str) -> int:
    """An active panellist as `panel import` leaves one: consented, reached by SMS."""
    async with bot.db.transaction() as conn:
        pid = await panellist_store.create(
            conn,
            status=PanellistStatus.ACTIVE,
            locale="en",
            consent_at=utcnow(),
            consent_method="import",
            source="import",
        )
        await panellist_store.add_address(conn, pid, Address("sms", phone))
    return pid


async def test_a_stale_link_never_acts_for_a_real_sms_panellist(tmp_path: Path) -> None:
    """The bug: link an SMS panellist on the simulator, switch allow_panellists off, and
    STOP sent through the sim: address opted the real SMS panellist out."""
    async with running(tmp_path, demo=True, allow_panellists=True) as (bot, url):
        pid = await add_imported(bot, "+447700900123")
        async with browser(url) as client:
            linked = await client.post(IDENTITIES, json={"panellist_id": pid})
            assert linked.status_code == 200, linked.text
            address = linked.json()["address"]
            assert address == f"sim:panellist-{pid}"
            cookie = client.cookies[COOKIE]
            assert {"address": address, "label": f"panellist-{pid}"} in await listed(client)

    # The same panel, now with the setting off (and not a demo): the same browser.
    async with running(tmp_path) as (bot, url):
        async with httpx.AsyncClient(base_url=url, cookies={COOKIE: cookie}, timeout=15) as same:
            stop = await say(same, address, "STOP")
            assert stop.status_code == 403
            assert "demo" in stop.json()["error"]
            assert (await same.get(MESSAGES, params={"address": address})).status_code == 403
            assert address not in json.dumps(await listed(same))
            assert all("panellist_id" not in i for i in await listed(same))
            link_again = await same.post(IDENTITIES, json={"panellist_id": pid})
            assert link_again.status_code == 403
        person = await panellist_store.get(bot.db.conn, pid)
        assert person is not None and person.status == PanellistStatus.ACTIVE
        assert Address("sms", "+447700900123") in person.addresses
        stored = await bot.db.fetchone("SELECT count(*) FROM inbound_messages")
        assert stored is not None and stored[0] == 0


async def test_a_demo_link_made_before_owners_can_be_taken_by_one_browser(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, demo=True, allow_panellists=True) as (bot, url):
        pid = await add_imported(bot, "+447700900124")
        async with bot.db.transaction() as conn:  # as an older panelbot linked it
            await panellist_store.add_address(conn, pid, Address("sim", f"panellist-{pid}"))
        async with browser(url) as first, browser(url) as second:
            taken = await first.post(IDENTITIES, json={"panellist_id": pid})
            assert taken.status_code == 200, taken.text
            assert (await say(first, f"sim:panellist-{pid}", "HELP")).status_code == 200
            again = await second.post(IDENTITIES, json={"panellist_id": pid})
            assert again.status_code == 409
            assert (await say(second, f"sim:panellist-{pid}", "STOP")).status_code == 403


async def test_a_simulator_person_who_gains_a_real_address_is_no_longer_spoken_for(
    tmp_path: Path,
) -> None:
    # Signed up on the simulator, then (say) joined Telegram with their link code.
    async with running(tmp_path) as (bot, url), browser(url) as client:
        assert (await say(client, "sim:sam", "hello")).status_code == 200
        person = await panellist_store.find_by_address(bot.db.conn, Address("sim", "sam"))
        assert person is not None
        async with bot.db.transaction() as conn:
            await panellist_store.add_address(conn, person.id, Address("telegram", "4242"))
        assert (await say(client, "sim:sam", "STOP")).status_code == 403
        assert await listed(client) == []


# -- 4. inputs -----------------------------------------------------------------------------------


# Deeper than Python's recursion limit, yet small (the body cap is 32 KB).
DEEP = b"[" * 5_000 + b"]" * 5_000


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        (MESSAGES, b'{"from": "sim:u", "text": "hi \\ud800"}', "not valid Unicode"),
        (MESSAGES, b'{"from": "sim:\\udfff", "text": "hi"}', "not valid Unicode"),
        (MESSAGES, DEEP, "must be JSON"),
        (MESSAGES, b'{"from": "sim:u", "text": ' + DEEP + b"}", "must be JSON"),
        (IDENTITIES, DEEP, "must be JSON"),
        (IDENTITIES, b'{"name": "\\ud800"}', "not valid Unicode"),
    ],
    ids=["surrogate-text", "surrogate-from", "deep", "deep-text", "deep-identities", "name"],
)
async def test_text_that_cannot_be_stored_and_deep_json_are_400(
    tmp_path: Path, route: str, body: bytes, reason: str
) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as client:
        response = await client.post(
            route, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert reason in response.json()["error"]
        # Nothing half-stored, and the simulator still works.
        assert (await say(client, "sim:after", "hello")).status_code == 200
        rows = await bot.db.fetchall("SELECT text FROM inbound_messages")
        assert [r["text"] for r in rows] == ["hello"]


@pytest.mark.parametrize("route", [MESSAGES, IDENTITIES])
async def test_a_large_body_is_refused_before_it_is_read(tmp_path: Path, route: str) -> None:
    big = json.dumps({"from": "sim:big", "text": "x" * (MAX_BODY + 1)}).encode()
    async with running(tmp_path, demo=True, allow_panellists=True) as (_, url):
        async with browser(url) as client:
            declared = await client.post(
                route, content=big, headers={"content-type": "application/json"}
            )
            assert declared.status_code == 413
            assert declared.json()["error"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted
                for start in range(0, len(big), 8192):
                    yield big[start : start + 8192]

            streamed = await client.post(
                route, content=chunks(), headers={"content-type": "application/json"}
            )
            assert streamed.status_code == 413


# -- 5. a full database is a 503 -----------------------------------------------------------------


async def test_a_full_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    async with running(tmp_path) as (bot, url), browser(url) as client:
        assert (await say(client, "sim:full", "hello")).status_code == 200
        pages = await bot.db.fetchone("PRAGMA page_count")
        assert pages is not None
        # SQLite itself now refuses to grow the file: SQLITE_FULL, as on a full disk.
        await bot.db.writer.execute(f"PRAGMA max_page_count = {pages[0]}")
        try:
            full = await say(client, "sim:full", "é" * 4000)
            assert full.status_code == 503, full.text
            assert full.headers["retry-after"]
            assert "try again" in full.json()["error"]
            new_person = await say(client, "sim:other", "é" * 4000)
            assert new_person.status_code == 503, new_person.text
        finally:
            await bot.db.writer.execute("PRAGMA max_page_count = 1073741823")
        again = await say(client, "sim:full", "yes")
        assert again.status_code == 200, again.text
        # A new person refused by the full disk is still this browser's to try again.
        assert (await say(client, "sim:other", "hello")).status_code == 200
    async with running(tmp_path) as (bot, url), browser(url) as first:
        pages = await bot.db.fetchone("PRAGMA page_count")
        assert pages is not None
        await bot.db.writer.execute(f"PRAGMA max_page_count = {pages[0]}")
        try:
            refused = await say(first, "sim:brand-new", "é" * 4000)
            assert refused.status_code == 503
        finally:
            await bot.db.writer.execute("PRAGMA max_page_count = 1073741823")
        assert (await say(first, "sim:brand-new", "hello")).status_code == 200


# -- the Telegram webhook's JSON -------------------------------------------------------------------


SECRET = "s3cret-token_for-tests"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


@asynccontextmanager
async def telegram_bot(tmp_path: Path) -> AsyncIterator[tuple[Bot, str, FakeTelegram]]:
    async with FakeTelegram.running() as fake:
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": "https://panel.example.org"},
            channels={
                "telegram": {
                    "enabled": True,
                    "token": TOKEN,
                    "secret_token": SECRET,
                    "api_base_url": fake.base_url,
                }
            },
            outbox={"poll_interval": 0.05},
        )
        bot = await Bot.create(settings)
        try:
            async with serving(bot) as url:
                yield bot, url, fake
        finally:
            await bot.stop()


async def test_telegram_deep_json_is_a_400(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path) as (_, url, _fake), httpx.AsyncClient() as client:
        for body in (DEEP, b'{"update_id": 5, "message": ' + DEEP + b"}"):
            response = await client.post(
                f"{url}/webhooks/telegram",
                content=body,
                headers={HEADER: SECRET, "content-type": "application/json"},
            )
            assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    ("text", "stored"),
    [("hello \ud800 there", "hello  there"), ("/start AB\udc00CD", None)],
    ids=["text", "start-code"],
)
async def test_telegram_updates_with_a_lone_surrogate_are_answered_not_repeated(
    tmp_path: Path, text: str, stored: str | None
) -> None:
    # Refusing one would make Telegram deliver it again and again; the person gets an answer.
    async with telegram_bot(tmp_path) as (bot, url, fake), httpx.AsyncClient() as client:
        body = json.dumps(fake.message_update(3003, text)).encode()  # escaped, as "\ud800"
        assert b"\\ud800" in body or b"\\udc00" in body
        response = await client.post(
            f"{url}/webhooks/telegram",
            content=body,
            headers={HEADER: SECRET, "content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        (reply,) = await fake.wait_for_sends(1, chat_id=3003)
        assert "Reply YES to join" in reply.text
        if stored is not None:
            row = await bot.db.fetchone("SELECT text FROM inbound_messages")
            assert row is not None and row["text"] == stored


async def test_a_name_claimed_before_the_inbox_refuses_stays_with_the_browser(
    tmp_path: Path,
) -> None:
    """With web processes: the claim is stored in the panel's file, then the message cannot
    be stored in the full inbox. The 503 carries the cookie the name was claimed for."""
    from tests.test_full_disk import fill, free, served

    async with FakeTwilio().running() as twilio, served(tmp_path, twilio) as parts:
        await fill(parts["inbox"], parts["writer"], parts["reader"])
        async with browser(parts["url"]) as client, browser(parts["url"]) as other:
            # Too long to fit in what a full page has left (a short one might).
            refused = await say(client, "sim:full", "é" * 4000)
            assert refused.status_code == 503, refused.text
            claimed = await parts["main"].db.fetchall("SELECT address FROM simulator_owners")
            assert [r["address"] for r in claimed] == ["full"]  # the claim was stored...
            assert refused.headers.get("set-cookie", "").startswith(f"{COOKIE}=")  # ...and sent
            await free(parts["inbox"], parts["writer"], parts["reader"])
            again = await say(client, "sim:full", "hello")
            assert again.status_code == 200, again.text
            assert "Reply YES to join" in again.json()["replies"][0]
            assert (await say(other, "sim:full", "hello")).status_code == 403
