"""The Twilio channel: the real SDK against a fake Twilio API, the real app over HTTP.

Webhooks are signed exactly as Twilio signs them, over the configured public URL.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app import Bot
from bot.channels.twilio import (
    EMPTY_TWIML,
    FormParams,
    TwilioChannel,
    mask,
    parse_form,
    scrub,
)
from bot.config import ConfigError, Settings
from bot.engine.waves import launch
from bot.models import Address, MessageKind, iso, utcnow
from bot.storage import outbox as outbox_store
from tests.conftest import REPO, add_survey, make_settings
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    post_signed,
    status_params,
)
from tests.webserver import serving

PUBLIC = "https://panel.example.org"
SENDER = "+447400100000"
ALICE = "+447400100101"
BOB = "+447400100102"
SURVEY = REPO / "tests" / "data" / "every-type.toml"
MESSAGES = "/webhooks/twilio/messages"
STATUS = "/webhooks/twilio/status"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio().running() as server:
        yield server


def twilio_settings(
    tmp_path: Path, fake: FakeTwilio, *, public_base_url: str = PUBLIC, **twilio: Any
) -> Settings:
    """Twilio on, pointed at the fake; fast polling and a one-second retry for tests."""
    config = {
        "enabled": True,
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": SENDER,
        "api_base_url": fake.url,
        "rate_per_second": 100,
        "request_timeout": 0.5,
        **twilio,
    }
    return make_settings(
        tmp_path,
        bot={"public_base_url": public_base_url},
        channels={"twilio": config},
        outbox={"poll_interval": 0.05, "retry_backoff": ["1s"], "max_attempts": 4},
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.5) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {check.__name__}")
        await asyncio.sleep(0.02)


@dataclass
class Harness:
    """A running bot served over HTTP, a client for it and the fake Twilio behind it."""

    bot: Bot
    client: httpx.AsyncClient
    fake: FakeTwilio
    public_base_url: str
    _sids: int = 0

    def next_sid(self) -> str:
        self._sids += 1
        return f"SMin{self._sids:030d}"

    async def say(
        self, sender: str, text: str, *, sid: str | None = None, **extra: str
    ) -> httpx.Response:
        """A signed inbound webhook from ``sender`` ("+44..." or "whatsapp:+44...")."""
        params = inbound_params(sid or self.next_sid(), sender, text, **extra)
        return await post_signed(
            self.client, MESSAGES, params, public_base_url=self.public_base_url
        )

    async def converse(self, sender: str, text: str) -> str:
        """Say ``text`` and wait for the bot's reply to reach Twilio; returns its body."""
        to = sender  # the fake keeps Twilio's "whatsapp:" prefix on WhatsApp numbers
        before = len(self.fake.sent_to(to))
        response = await self.say(sender, text)
        assert response.status_code == 200, response.text
        await eventually(lambda: _true(len(self.fake.sent_to(to)) > before))
        return str(self.fake.sent_to(to)[-1]["body"])

    async def report(
        self, sid: str, status: str, *, to: str, error_code: int | None = None
    ) -> httpx.Response:
        params = status_params(sid, status, to=to, error_code=error_code)
        return await post_signed(self.client, STATUS, params, public_base_url=self.public_base_url)

    async def value(self, sql: str, *params: object) -> Any:
        row = await self.bot.db.fetchone(sql, params)
        return row[0] if row else None

    async def row(self, sql: str, *params: object) -> dict[str, Any]:
        found = await self.bot.db.fetchone(sql, params)
        assert found is not None, sql
        return dict(found)


async def _true(value: bool) -> bool:
    return value


@asynccontextmanager
async def running(settings: Settings, fake: FakeTwilio) -> AsyncIterator[Harness]:
    bot = await Bot.create(settings)
    try:
        async with serving(bot) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            yield Harness(bot, client, fake, settings.bot.public_base_url or "")
    finally:
        await bot.stop()


async def join(h: Harness, sender: str) -> None:
    """Sign up over the channel: hello, consent, age band, sex."""
    for text in ("Hello", "yes", "1", "1"):
        await h.converse(sender, text)
    assert "you have joined" in str(h.fake.messages[-1]["body"])


# --- signatures ----------------------------------------------------------------------------


async def test_a_signed_message_gets_empty_twiml_and_the_reply_goes_out(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        response = await h.say(ALICE, "Hello")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        assert response.text == EMPTY_TWIML
        (post,) = await fake.wait_for_posts(1)
        assert post.auth == (ACCOUNT_SID, AUTH_TOKEN)
        assert post.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        assert post.form["To"] == ALICE
        assert post.form["From"] == SENDER
        assert post.form["Body"].startswith("Hello from Test Panel!")
        assert post.form["StatusCallback"] == PUBLIC + STATUS

        async def sent() -> bool:
            return await h.value("SELECT status FROM outbox") == "sent"

        await eventually(sent)
        assert await h.value("SELECT provider_message_id FROM outbox") == fake.messages[0]["sid"]
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 1


def _tamper_body(params: dict[str, str]) -> dict[str, Any]:
    return {"sign_params": params, "params": {**params, "Body": "STOP"}}


def _other_path(params: dict[str, str]) -> dict[str, Any]:
    return {"signed_url": PUBLIC + STATUS}


def _wrong_token(params: dict[str, str]) -> dict[str, Any]:
    return {"auth_token": "not-the-auth-token"}


def _own_url(params: dict[str, str]) -> dict[str, Any]:
    return {"signed_url": "OWN"}  # the address the bot listens on, not the public one


def _extra_param(params: dict[str, str]) -> dict[str, Any]:
    return {"sign_params": params, "params": {**params, "Smuggled": "1"}}


@pytest.mark.parametrize(
    "tamper",
    [_tamper_body, _other_path, _wrong_token, _own_url, _extra_param],
    ids=[
        "tampered-parameter",
        "signed-for-another-path",
        "wrong-auth-token",
        "signed-over-the-local-url",
        "unsigned-extra-parameter",
    ],
)
async def test_a_bad_signature_is_refused_and_nothing_is_stored(
    tmp_path: Path, fake: FakeTwilio, tamper: Callable[[dict[str, str]], dict[str, Any]]
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        params = inbound_params("SMbad00000000000000000000000000001", ALICE, "Hello")
        options = tamper(params)
        if options.get("signed_url") == "OWN":
            options["signed_url"] = str(h.client.base_url).rstrip("/") + MESSAGES
        sent = options.pop("params", params)
        response = await post_signed(h.client, MESSAGES, sent, public_base_url=PUBLIC, **options)
        assert response.status_code == 403
        assert "signature" in response.json()["error"].lower()
        await _nothing_stored(h)


async def test_a_missing_signature_is_refused_and_nothing_is_stored(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        params = inbound_params("SMnosig000000000000000000000000001", ALICE, "Hello")
        response = await h.client.post(MESSAGES, data=params)
        assert response.status_code == 403
        assert response.json() == {"error": "missing X-Twilio-Signature"}
        status = await h.client.post(STATUS, data=status_params("SMx", "delivered", to=ALICE))
        assert status.status_code == 403
        await _nothing_stored(h)


async def _nothing_stored(h: Harness) -> None:
    await asyncio.sleep(0.1)  # a message that got through would be in the outbox by now
    assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 0
    assert await h.value("SELECT COUNT(*) FROM panellists") == 0
    assert await h.value("SELECT COUNT(*) FROM outbox") == 0
    assert h.fake.posts() == []


@pytest.mark.parametrize(
    "public_base_url",
    ["https://panel.example.org", "http://127.0.0.1:8443", "https://panel.example.org:443/nhs"],
)
async def test_signatures_are_checked_over_the_configured_public_url(
    tmp_path: Path, fake: FakeTwilio, public_base_url: str
) -> None:
    settings = twilio_settings(tmp_path, fake, public_base_url=public_base_url)
    async with running(settings, fake) as h:
        # Parameters Twilio adds over time (and add-ons) must not break validation.
        response = await h.say(
            ALICE,
            "Hello",
            AddOns=json.dumps({"status": "successful", "results": {}}),
            FromCountry="GB",
            ProfileName="Alice",
            NewTwilioParam="x",
        )
        assert response.status_code == 200, response.text
        # A query string in the webhook URL is part of what Twilio signs.
        params = inbound_params("SMquery00000000000000000000000001", BOB, "Hello")
        response = await post_signed(
            h.client, MESSAGES + "?panel=north&v=2", params, public_base_url=public_base_url
        )
        assert response.status_code == 200, response.text
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 2


async def test_a_messaging_service_sends_without_a_from_number(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    service = "MG" + "cd" * 16
    settings = twilio_settings(tmp_path, fake, from_number=False, messaging_service_sid=service)
    async with running(settings, fake) as h:
        assert (await h.say(ALICE, "Hello")).status_code == 200
        (post,) = await fake.wait_for_posts(1)
        assert post.form["MessagingServiceSid"] == service
        assert "From" not in post.form


# --- dedupe --------------------------------------------------------------------------------


async def test_ten_concurrent_copies_of_one_message_are_handled_once(
    tmp_path: Path, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.channels.twilio")
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        sid = "SMdup00000000000000000000000000001"
        responses = await asyncio.gather(*(h.say(ALICE, "Hello", sid=sid) for _ in range(10)))
        assert [r.status_code for r in responses] == [200] * 10
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 1
        assert await h.value("SELECT COUNT(*) FROM outbox") == 1
        await fake.wait_for_posts(1)
        again = await h.say(ALICE, "Hello", sid=sid)  # a late retry, after the first finished
        assert again.status_code == 200
        await asyncio.sleep(0.15)
        assert len(fake.posts()) == 1
        assert await h.value("SELECT COUNT(*) FROM outbox") == 1
    # The copies waited for the first one instead of reaching the engine as repeats.
    handled = [r.getMessage() for r in caplog.records if "inbound SMdup" in r.getMessage()]
    assert len(handled) == 1 and "a repeat" not in handled[0]
    assert ALICE not in caplog.text  # numbers are masked in logs


async def test_an_engine_failure_is_503_stores_nothing_and_a_retry_works(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        # A real database failure inside the engine's transaction.
        await h.bot.db.execute_write(
            "CREATE TRIGGER broken BEFORE INSERT ON inbound_messages "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        sid = "SMfail0000000000000000000000000001"
        response = await h.say(ALICE, "Hello", sid=sid)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert await h.value("SELECT COUNT(*) FROM panellists") == 0
        await h.bot.db.execute_write("DROP TRIGGER broken")
        retry = await h.say(ALICE, "Hello", sid=sid)
        assert retry.status_code == 200
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 1
        await fake.wait_for_posts(1)


# --- status callbacks ----------------------------------------------------------------------


async def test_status_callbacks_never_go_backwards_and_failures_mark_the_panellist(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        await join(h, BOB)
        alice_sid = fake.sent_to(ALICE)[-1]["sid"]

        async def recorded() -> bool:
            return bool(
                await h.value(
                    "SELECT COUNT(*) FROM outbox WHERE provider_message_id = ?", alice_sid
                )
            )

        await eventually(recorded)
        sql = "SELECT status FROM outbox WHERE provider_message_id = ?"
        assert (await h.report(alice_sid, "delivered", to=ALICE)).status_code == 200
        assert await h.value(sql, alice_sid) == "delivered"
        for late in ("sent", "queued", "sending"):
            assert (await h.report(alice_sid, late, to=ALICE)).status_code == 200
            assert await h.value(sql, alice_sid) == "delivered"
        # An unknown SID is answered 200 all the same.
        assert (
            await h.report(
                "SMunknown000000000000000000000001", "failed", to=ALICE, error_code=21610
            )
        ).status_code == 200
        panellist_sql = (
            "SELECT p.status FROM panellists p JOIN addresses a "
            "ON a.panellist_id = p.id WHERE a.address = ?"
        )
        assert await h.value(panellist_sql, ALICE) == "active"

        # Bob's phone was off (30003): that message failed, but Bob stays on the panel.
        bob_sids = [m["sid"] for m in fake.sent_to(BOB)]
        await h.report(bob_sids[-1], "undelivered", to=BOB, error_code=30003)
        row = await h.row(
            "SELECT status, error_code, error_class FROM outbox WHERE provider_message_id = ?",
            bob_sids[-1],
        )
        assert row == {"status": "failed", "error_code": "30003", "error_class": "permanent"}
        assert await h.value(panellist_sql, BOB) == "active"
        # A number that no longer exists (30005) makes Bob unreachable.
        await h.report(bob_sids[-2], "undelivered", to=BOB, error_code=30005)
        assert await h.value(panellist_sql, BOB) == "unreachable"
        # A failure with 21610 means Alice sent STOP to the carrier: she is opted out.
        alice_earlier = fake.sent_to(ALICE)[-2]["sid"]
        await h.report(alice_earlier, "failed", to=ALICE, error_code=21610)
        row = await h.row(
            "SELECT status, error_code, error_class FROM outbox WHERE provider_message_id = ?",
            alice_earlier,
        )
        assert row == {"status": "failed", "error_code": "21610", "error_class": "opted_out"}
        assert await h.value(panellist_sql, ALICE) == "opted_out"


async def test_malformed_status_callbacks_are_400(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        params = status_params("SMx", "delivered", to=ALICE)
        del params["MessageStatus"], params["SmsStatus"]
        response = await post_signed(h.client, STATUS, params, public_base_url=PUBLIC)
        assert response.status_code == 400
        assert response.json() == {"error": "MessageStatus is missing"}


# --- send errors ---------------------------------------------------------------------------


async def _help_reply(h: Harness) -> dict[str, Any]:
    """Ask for HELP and wait until its reply settles (sent, failed, or queued for a retry)."""
    response = await h.say(ALICE, "HELP")
    assert response.status_code == 200
    sql = "SELECT * FROM outbox WHERE channel = 'sms' ORDER BY id DESC LIMIT 1"

    async def tried() -> bool:
        row = await h.row(sql)
        return row["status"] in ("sent", "failed") or row["last_error"] is not None

    await eventually(tried)
    return await h.row(sql)


async def _settled(h: Harness, row_id: int, status: str, timeout: float = 2.5) -> dict[str, Any]:
    async def done() -> bool:
        return await h.value("SELECT status FROM outbox WHERE id = ?", row_id) == status

    await eventually(done, timeout)
    return await h.row("SELECT * FROM outbox WHERE id = ?", row_id)


def _posts_to(fake: FakeTwilio, number: str) -> list[Any]:
    return [p for p in fake.posts() if p.form.get("To") == number]


@pytest.mark.parametrize(
    ("code", "error_class", "panellist_status"),
    [
        (21610, "opted_out", "opted_out"),
        (21211, "unreachable", "unreachable"),
        (21614, "unreachable", "unreachable"),
        (30007, "permanent", "active"),
    ],
)
async def test_permanent_send_errors_are_recorded_and_never_retried(
    tmp_path: Path, fake: FakeTwilio, code: int, error_class: str, panellist_status: str
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        before = len(_posts_to(fake, ALICE))
        fake.fail_next(400, code)
        row = await _help_reply(h)
        assert row["status"] == "failed"
        assert (row["error_code"], row["error_class"]) == (str(code), error_class)
        assert ALICE not in row["last_error"]  # numbers in Twilio's message are masked
        status = await h.value("SELECT status FROM panellists")
        assert status == panellist_status
        await asyncio.sleep(0.2)
        assert len(_posts_to(fake, ALICE)) == before + 1  # exactly one try


async def test_429_waits_for_retry_after_then_sends(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        fake.fail_next(429, 20429, retry_after=1)
        row = await _help_reply(h)
        assert row["status"] == "queued"
        assert row["error_code"] == "20429"
        row = await _settled(h, row["id"], "sent")
        first, second = _posts_to(fake, ALICE)[-2:]
        assert second.monotonic - first.monotonic >= 0.9
        assert row["attempts"] == 1  # a rate limit is not a failed attempt
        assert len(fake.sent_to(ALICE)) == 5


async def test_500_is_retried_then_succeeds(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        fake.fail_next(500, 20500)
        row = await _help_reply(h)
        assert (row["status"], row["error_code"]) == ("queued", "20500")
        row = await _settled(h, row["id"], "sent")
        assert row["attempts"] == 2
        assert row["provider_message_id"] == fake.sent_to(ALICE)[-1]["sid"]
        assert len(fake.sent_to(ALICE)) == 5
        # Before the retry the channel asked Twilio whether the first try got through.
        assert fake.gets()[-1].query["To"] == ALICE


async def test_a_slow_answer_is_retried_without_texting_twice(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        # Twilio takes the message but answers after our 0.5 s timeout.
        fake.slow_next(0.8)
        row = await _help_reply(h)
        assert row["status"] == "queued"
        assert "timed out" in row["last_error"]
        row = await _settled(h, row["id"], "sent")
        assert len(fake.sent_to(ALICE)) == 5  # the message exists once at Twilio
        assert row["provider_message_id"] == fake.sent_to(ALICE)[-1]["sid"]
        assert len(_posts_to(fake, ALICE)) == 5  # and the retry found it instead of posting


# --- end to end over SMS -------------------------------------------------------------------


async def test_sign_up_and_a_survey_end_to_end_by_sms(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        await join(h, ALICE)
        await add_survey(h.bot, SURVEY)
        await launch(h.bot, "every-type")
        await eventually(lambda: _true(len(fake.sent_to(ALICE)) == 5))
        assert "Question 1 of 6" in fake.sent_to(ALICE)[-1]["body"]
        assert "Question 3 of 6" in await h.converse(ALICE, "1")
        assert "Question 4 of 6" in await h.converse(ALICE, "3")
        assert "Question 5 of 6" in await h.converse(ALICE, "no")
        assert "Question 6 of 6" in await h.converse(ALICE, "7")
        assert "Thanks for finishing" in await h.converse(ALICE, "Shorter queues please")
        rows = await h.bot.db.fetchall("SELECT question_id, value FROM answers ORDER BY id")
        answers = {r["question_id"]: r["value"] for r in rows}
        assert set(answers) == {"ease", "score", "online", "days", "comment"}
        assert "easy" in answers["ease"] and "Shorter queues" in answers["comment"]
        assert await h.value("SELECT status FROM panellists") == "active"
        # Every reply went to Alice from our number, with a status callback.
        assert {(p.form["To"], p.form["From"]) for p in fake.posts()} == {(ALICE, SENDER)}
        assert {p.form["StatusCallback"] for p in fake.posts()} == {PUBLIC + STATUS}


# --- WhatsApp ------------------------------------------------------------------------------

TEMPLATE = "HX" + "ab" * 16


async def _whatsapp_panellist_invited(h: Harness, *, window_closed: bool) -> dict[str, Any]:
    await join(h, f"whatsapp:{ALICE}")
    if window_closed:
        long_ago = iso(utcnow() - timedelta(hours=25))
        await h.bot.db.execute_write("UPDATE addresses SET last_inbound_at = ?", (long_ago,))
    await add_survey(h.bot, SURVEY)
    await launch(h.bot, "every-type")
    sql = "SELECT * FROM outbox WHERE kind = 'invitation'"

    async def settled() -> bool:
        return (await h.row(sql))["status"] in ("sent", "held", "failed")

    await eventually(settled)
    return await h.row(sql)


async def test_whatsapp_replies_in_the_window_are_free_text(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    settings = twilio_settings(tmp_path, fake, whatsapp_templates={"invitation": TEMPLATE})
    async with running(settings, fake) as h:
        row = await _whatsapp_panellist_invited(h, window_closed=False)
        assert row["status"] == "sent"
        welcome, *_, invitation = fake.posts()
        assert welcome.form["Body"].startswith("Hello from Test Panel!")
        assert (welcome.form["To"], welcome.form["From"]) == (
            f"whatsapp:{ALICE}",
            f"whatsapp:{SENDER}",
        )
        assert "ContentSid" not in welcome.form
        # An invitation is bulk, but the window is open: free text too.
        assert "Question 1 of 6" in invitation.form["Body"]
        assert "ContentSid" not in invitation.form
        # WhatsApp's "read" counts as delivered, matched on the whatsapp channel.
        sid = fake.messages[-1]["sid"]
        assert (await h.report(sid, "read", to=f"whatsapp:{ALICE}")).status_code == 200
        assert await h.value("SELECT status FROM outbox WHERE id = ?", row["id"]) == "delivered"


async def test_whatsapp_bulk_outside_the_window_uses_the_approved_template(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    settings = twilio_settings(
        tmp_path, fake, whatsapp_templates={"invitation": TEMPLATE}, whatsapp_from="+447400100999"
    )
    async with running(settings, fake) as h:
        row = await _whatsapp_panellist_invited(h, window_closed=True)
        assert row["status"] == "sent"
        post = fake.posts()[-1]
        assert post.form["ContentSid"] == TEMPLATE
        assert "Body" not in post.form
        assert post.form["From"] == "whatsapp:+447400100999"
        assert json.loads(post.form["ContentVariables"]) == {
            "1": "Test Panel",
            "2": "A test survey from Test Panel.",
        }


async def test_whatsapp_bulk_outside_the_window_without_a_template_is_held(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        row = await _whatsapp_panellist_invited(h, window_closed=True)
        assert row["status"] == "held"
        assert row["provider_message_id"] is None
        await asyncio.sleep(0.1)
        assert len(fake.posts()) == 4  # the sign-up replies only: never sent as free text


def test_whatsapp_templates_are_checked_in_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(
            tmp_path,
            channels={"twilio": {"whatsapp_templates": {"reply": "HX1", "invitation": "abc"}}},
        )
    problems = " ".join(caught.value.problems)
    assert "channels.twilio.whatsapp_templates" in problems
    assert 'unknown message kind "reply"' in problems


# --- malformed webhooks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps({"MessageSid": "SM1", "From": ALICE})),
        (None, "MessageSid=SM1&From=%2B447400100101"),
        ("application/x-www-form-urlencoded", "Body=%FF%FE&MessageSid=SM1"),
        ("application/x-www-form-urlencoded", "this is not a form"),
    ],
    ids=["json", "no-content-type", "not-utf8", "not-a-form"],
)
async def test_malformed_bodies_are_400(
    tmp_path: Path, fake: FakeTwilio, content_type: str | None, body: str
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        headers = {"X-Twilio-Signature": "x"}
        if content_type:
            headers["Content-Type"] = content_type
        for path in (MESSAGES, STATUS):
            response = await h.client.post(path, content=body, headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["error"]
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 0


@pytest.mark.parametrize("missing", ["MessageSid", "From"])
async def test_a_signed_message_without_sid_or_sender_is_400(
    tmp_path: Path, fake: FakeTwilio, missing: str
) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        params = inbound_params("SM1", ALICE, "Hello")
        params.pop(missing)
        params.pop("SmsMessageSid" if missing == "MessageSid" else "To")
        response = await post_signed(h.client, MESSAGES, params, public_base_url=PUBLIC)
        assert response.status_code == 400
        assert response.json() == {"error": f"{missing} is missing"}
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 0


async def test_long_and_emoji_bodies_are_taken(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        assert (await h.say(ALICE, "x" * 5000)).status_code == 200
        assert (await h.say(BOB, "Hello 👋🏽 ❤️ ok")).status_code == 200
        assert (await h.say(f"whatsapp:{BOB}", "😀" * 5000)).status_code == 200
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 3
        too_big = await post_signed(
            h.client,
            MESSAGES,
            inbound_params("SMbig", ALICE, "y" * 300_000),
            public_base_url=PUBLIC,
        )
        assert too_big.status_code == 413


async def test_a_sender_we_do_not_serve_is_ignored(tmp_path: Path, fake: FakeTwilio) -> None:
    async with running(twilio_settings(tmp_path, fake), fake) as h:
        assert (await h.say("NHSAPP", "Hello")).status_code == 200
        assert (await h.say("messenger:12345", "Hello")).status_code == 200
        assert await h.value("SELECT COUNT(*) FROM inbound_messages") == 0


# --- crash reconciliation ------------------------------------------------------------------


async def _stuck(bot: Bot, key: str, text: str, number: str = ALICE) -> int:
    """A row the previous run marked 'sending' and then crashed."""
    async with bot.db.transaction() as conn:
        row_id = await outbox_store.queue(
            conn,
            key=key,
            panellist_id=None,
            address=Address("sms", number),
            text=text,
            kind=MessageKind.REPLY,
        )
        await outbox_store.claim_due(conn, now=utcnow(), limit=10, channels=["sms"])
    assert row_id is not None
    return row_id


async def test_crash_reconciliation_finds_what_went_and_sends_what_did_not(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    settings = twilio_settings(tmp_path, fake)
    bot = await Bot.create(settings)
    went = await _stuck(bot, "a", "Your survey is ready")
    lost = await _stuck(bot, "b", "Thanks for your answers")
    earlier = fake.add_message(to=ALICE, from_=SENDER, body="Your survey is ready")
    await bot.stop()
    async with running(settings, fake) as h:
        row = await _settled(h, went, "sent")
        assert row["provider_message_id"] == earlier["sid"]
        row = await _settled(h, lost, "sent")
        await asyncio.sleep(0.1)
        (post,) = fake.posts()  # only the lost one was sent, once
        assert post.form["Body"] == "Thanks for your answers"
        assert row["provider_message_id"] == fake.messages[-1]["sid"]


async def test_reconciliation_does_not_take_an_earlier_message_with_the_same_text(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    settings = twilio_settings(tmp_path, fake)
    bot = await Bot.create(settings)
    old = fake.add_message(to=ALICE, from_=SENDER, body="Please reply with a number")
    async with bot.db.transaction() as conn:
        first = await outbox_store.queue(
            conn,
            key="first",
            panellist_id=None,
            address=Address("sms", ALICE),
            text="Please reply with a number",
            kind=MessageKind.REPLY,
        )
        assert first is not None
        await outbox_store.mark_sent(conn, first, provider_message_id=old["sid"])
    again = await _stuck(bot, "again", "Please reply with a number")
    await bot.stop()
    async with running(settings, fake) as h:
        row = await _settled(h, again, "sent")
        assert len(fake.posts()) == 1
        assert row["provider_message_id"] not in (None, old["sid"])


async def test_a_failing_list_is_asked_again_later_never_held_for_good(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    # Twilio's list answers 500 at restart. Before, both rows were held for good, the one
    # Twilio had in fact sent included. Now they wait in "sending" and settle once it
    # answers: the one that went is recorded, the one that did not is sent, once.
    settings = twilio_settings(tmp_path, fake)
    bot = await Bot.create(settings)
    went = await _stuck(bot, "a", "Your survey is ready")
    lost = await _stuck(bot, "b", "Thanks for your answers", number=BOB)
    earlier = fake.add_message(to=ALICE, from_=SENDER, body="Your survey is ready")
    await bot.stop()
    fake.list_mode = "fail"
    async with running(settings, fake) as h:
        await eventually(lambda: _true(len(fake.gets()) >= 4), timeout=5)
        for row_id in (went, lost):
            row = await h.row("SELECT * FROM outbox WHERE id = ?", row_id)
            assert row["status"] == "sending"
            assert "HTTP 500" in row["last_error"]
        assert fake.posts() == []

        fake.list_mode = "ok"
        row = await _settled(h, went, "sent", timeout=5)
        assert row["provider_message_id"] == earlier["sid"]
        await _settled(h, lost, "sent", timeout=5)
        await asyncio.sleep(0.2)
        (post,) = fake.posts()
        assert post.form["To"] == BOB


async def test_a_hanging_list_delays_neither_start_nor_webhooks(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    # The list hangs (and the SDK waits 30 s for an answer): start-up, /healthz, webhooks
    # and new replies carry on; the rows left sending settle once Twilio answers.
    settings = twilio_settings(tmp_path, fake, request_timeout=30)
    bot = await Bot.create(settings)
    stuck = [await _stuck(bot, f"k{n}", f"Invitation {n}") for n in range(10)]
    await bot.stop()
    fake.list_mode = "hang"
    async with asyncio.timeout(5):
        async with running(settings, fake) as h:
            assert (await h.client.get("/healthz")).status_code == 200
            await eventually(lambda: _true(len(fake.gets()) >= 1))
            assert "HELP" not in str(fake.messages)
            reply = await h.converse(BOB, "HELP")
            assert reply
            assert len(fake.gets()) <= 4  # bounded: a few look-ups at once, not ten
            for row_id in stuck:
                row = await h.row("SELECT status FROM outbox WHERE id = ?", row_id)
                assert row["status"] == "sending"

            fake.list_mode = "ok"
            for row_id in stuck:
                await _settled(h, row_id, "sent")
            assert len(fake.posts()) == 11  # the reply and the ten, each once


async def test_a_new_message_with_the_same_text_is_never_taken_for_the_stuck_one(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    # A question left "sending" by a crash, and the same question asked again after the
    # restart. Sent during the look-up, the new one's Twilio record (its answer still on
    # the way) was taken for the old row: one text, two rows claiming it.
    settings = twilio_settings(tmp_path, fake, request_timeout=5)
    text = "Please reply with a number from 1 to 5"
    bot = await Bot.create(settings)
    stuck = await _stuck(bot, "old", text)
    await bot.stop()
    fake.list_mode = "hang"
    async with running(settings, fake) as h:
        await eventually(lambda: _true(len(fake.gets()) >= 1))
        fake.slow_next(1.0)  # Twilio creates the new one at once but answers late
        async with h.bot.db.transaction() as conn:
            again = await outbox_store.queue(
                conn,
                key="again",
                panellist_id=None,
                address=Address("sms", ALICE),
                text=text,
                kind=MessageKind.REPLY,
            )
        h.bot.wake_dispatcher()
        await asyncio.sleep(0.5)
        fake.list_mode = "ok"
        old = await _settled(h, stuck, "sent", timeout=6)
        new = await _settled(h, again or 0, "sent", timeout=6)
        assert len(fake.posts()) == 2
        assert old["provider_message_id"] != new["provider_message_id"]
        assert {old["provider_message_id"], new["provider_message_id"]} == {
            m["sid"] for m in fake.messages
        }


async def test_a_row_sending_for_25_hours_is_found_not_sent_again(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    # Down for more than a day: the row is looked up around its own time, however old.
    settings = twilio_settings(tmp_path, fake)
    bot = await Bot.create(settings)
    row_id = await _stuck(bot, "old", "Your survey is ready")
    then = utcnow() - timedelta(hours=25)
    async with bot.db.transaction() as conn:
        await conn.execute(
            "UPDATE outbox SET created_at = ?, updated_at = ? WHERE id = ?",
            (iso(then - timedelta(seconds=5)), iso(then), row_id),
        )
    earlier = fake.add_message(
        to=ALICE, from_=SENDER, body="Your survey is ready", created=then + timedelta(seconds=1)
    )
    # Newer messages to the same number after it (the list shows the newest first).
    for n in range(60):
        fake.add_message(to=ALICE, from_=SENDER, body=f"Question {n}")
    await bot.stop()
    async with running(settings, fake) as h:
        row = await _settled(h, row_id, "sent")
        await asyncio.sleep(0.2)
        assert row["provider_message_id"] == earlier["sid"]
        assert fake.posts() == []
        assert any("DateSent>" in get.query for get in fake.gets())


# --- small parts ---------------------------------------------------------------------------


def test_numbers_are_masked_in_logs() -> None:
    assert mask("+447400100101") == "+44740****101"
    assert mask("whatsapp:+447400100101") == "whatsapp:+44740****101"
    assert scrub("The 'To' number +447400100101 is not valid") == (
        "The 'To' number +44740****101 is not valid"
    )


def test_cost_is_sms_segments_and_one_for_whatsapp(tmp_path: Path, fake: FakeTwilio) -> None:
    channel = TwilioChannel(twilio_settings(tmp_path, fake))

    def message(channel_name: str, text: str) -> Any:
        from bot.models import OutboundMessage

        return OutboundMessage(1, Address(channel_name, ALICE), text, MessageKind.REPLY, None, "k")

    assert channel.cost(message("sms", "short")) == 1
    assert channel.cost(message("sms", "x" * 161)) == 2
    # Curly quotes are swapped for plain ones before sending, so they cost nothing extra.
    assert channel.cost(message("sms", "\u201cquoted\u201d " + "x" * 140)) == 1
    assert channel.cost(message("sms", "😀" * 70)) == 3
    assert channel.cost(message("whatsapp", "x" * 1000)) == 1
    assert channel.names == ("sms", "whatsapp")


# --- form parsing -------------------------------------------------------------------------

_FORM_ALPHABET = "ab=&+%2F41ZzéŁ😀;\x00 "


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=_FORM_ALPHABET, max_size=24)
    | st.from_regex(r"([a-z%+]{0,4}=[A-Za-z0-9%+]{0,6}&?){0,4}", fullmatch=True)
)
def test_parse_form_agrees_with_parse_qsl_in_strict_mode(text: str) -> None:
    """The fast webhook parser accepts and refuses exactly what parse_qsl does."""

    def outcome(parse: Callable[[], Any]) -> Any:
        try:
            return ("ok", dict(parse()))
        except (ValueError, UnicodeDecodeError):
            return ("refused",)

    reference = outcome(
        lambda: FormParams.from_pairs(
            parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
        )
    )
    assert outcome(lambda: parse_form(text)) == reference


def test_parse_form_keeps_repeated_names_in_order_and_caps_the_field_count() -> None:
    params = parse_form("b=2&a=1&b=3&c=&d=%2B44+7%E2%9C%93")
    assert params == {"b": ["2", "3"], "a": ["1"], "c": [""], "d": ["+44 7✓"]}
    assert params.one("b") == "3" and params.getall("a") == ["1"] and params.one("zz") is None
    with pytest.raises(ValueError):
        parse_form("&".join(["x=1"] * 501))


# --- a full disk ---------------------------------------------------------------------------


async def _fill_the_disk(bot: Bot) -> None:
    """Make the database file full: SQLite answers SQLITE_FULL to anything needing a page.

    ``PRAGMA max_page_count`` caps the file (on the bot's own connection, the one that
    writes), and ballast rows take every page left below the cap.
    """
    async with bot.db.transaction() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
    pages = (await bot.db.fetchone("PRAGMA page_count"))[0]
    await bot.db.writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    for size in (1000, 100, 10):
        while True:
            try:
                async with bot.db.transaction() as conn:
                    await conn.execute("INSERT INTO ballast VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
                break


async def _free_the_disk(bot: Bot) -> None:
    await bot.db.writer.execute("PRAGMA max_page_count = 1073741823")


async def test_a_full_disk_while_sending_loses_no_answer_and_no_task(
    tmp_path: Path, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    # Recording Twilio's answers fails (SQLITE_FULL): the answers are kept in memory and
    # recorded once there is room again; no row is left "sending", none is sent twice,
    # no task dies unseen, and the problem is logged once, not once per row.
    caplog.set_level(logging.WARNING, logger="bot.dispatcher")
    unseen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unseen.append(context))
    settings = twilio_settings(tmp_path, fake)
    numbers = [f"+4474009{n:05d}" for n in range(100)]
    async with running(settings, fake) as h:
        async with h.bot.db.transaction() as conn:
            ids = [
                await outbox_store.queue(
                    conn,
                    key=f"full:{n}",
                    panellist_id=None,
                    address=Address("sms", number),
                    text="ok",
                    kind=MessageKind.REPLY,
                )
                for n, number in enumerate(numbers)
            ]
        await fake.wait_for_posts(1)  # every row is claimed ("sending") by now
        await _fill_the_disk(h.bot)
        await fake.wait_for_posts(100, timeout=10)

        async def some_not_recorded() -> bool:
            return any("could not record" in r.getMessage() for r in caplog.records)

        await eventually(some_not_recorded, timeout=5)
        stuck = await h.value("SELECT COUNT(*) FROM outbox WHERE status = 'sending'")
        assert stuck > 0

        await _free_the_disk(h.bot)

        async def all_recorded() -> bool:
            return await h.value("SELECT COUNT(*) FROM outbox WHERE status = 'sent'") == 100

        await eventually(all_recorded, timeout=15)
        rows = await h.bot.db.fetchall(
            "SELECT address, provider_message_id FROM outbox ORDER BY id"
        )
        sids = {m["to"]: m["sid"] for m in fake.messages}
        assert [(r[0], r[1]) for r in rows] == [(n, sids[n]) for n in numbers]
        assert len(fake.posts()) == 100  # each once
        assert None not in ids
    gc.collect()  # a task that died unseen is reported when it is collected
    await asyncio.sleep(0)
    assert unseen == []
    # Once per problem, not once per row: the fill can end one shortage and start another
    # (a row that still fits succeeds meanwhile), each logged as it begins and ends.
    failures = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(failures) <= 2 < stuck, ([r.getMessage() for r in failures], stuck)
    assert any("succeeded again" in r.getMessage() for r in caplog.records)


# --- held messages: panelbot db held -------------------------------------------------------


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    """``panelbot -c CONFIG ARGS...`` as a subprocess (the test's loop keeps running)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "-c",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_staff_list_and_release_held_messages(tmp_path: Path, fake: FakeTwilio) -> None:
    # A WhatsApp invitation left "sending" by a crash, with the 24-hour window closed: it
    # would have gone as a template, which cannot be matched by its text, so it is held.
    settings = twilio_settings(tmp_path, fake, whatsapp_templates={"invitation": TEMPLATE})
    config = tmp_path / "panelbot.toml"
    config.write_text('[bot]\ndatabase = "panel.db"\n', encoding="utf-8")
    bot = await Bot.create(settings)
    async with bot.db.transaction() as conn:
        row_id = await outbox_store.queue(
            conn,
            key="wave:1:panellist:1",
            panellist_id=None,
            address=Address("whatsapp", ALICE),
            text="A survey from your local NHS: secret question text",
            kind=MessageKind.INVITATION,
        )
        await outbox_store.claim_due(conn, now=utcnow(), limit=10, channels=["whatsapp"])
    await bot.stop()
    assert row_id is not None
    async with running(settings, fake) as h:
        row = await _settled(h, row_id, "held")
        assert "template" in row["last_error"]

        code, out, err = await _cli(config, "db", "held")
        assert (code, err) == (0, "")
        assert f"#{row_id} whatsapp +44740****101 invitation, held since" in out
        assert "cannot be matched" in out
        assert ALICE not in out and "secret question" not in out

        for usage in (["db", "held", str(row_id)], ["db", "held", "--release"]):
            code, _, err = await _cli(config, *usage)
            assert code == 2, (usage, err)
        code, _, err = await _cli(config, "db", "held", "--release-all", "--release", "1")
        assert code == 2
        code, out, err = await _cli(config, "db", "held", "--release", str(row_id), "999")
        assert code == 1
        assert err.count("\n") == 1 and "#999 does not exist" in err
        assert "Traceback" not in err
        assert await h.value("SELECT status FROM outbox WHERE id = ?", row_id) == "held"

        code, out, err = await _cli(config, "db", "held", "--release", str(row_id))
        assert (code, err) == (0, "")
        assert f"released 1 message (#{row_id})" in out
        row = await _settled(h, row_id, "sent")
        (post,) = fake.posts()
        assert post.form["ContentSid"] == TEMPLATE
        assert row["provider_message_id"] == fake.messages[-1]["sid"]

        code, out, _ = await _cli(config, "db", "held")
        assert (code, out.strip()) == (0, "no held messages")


# --- python -m tests.fakes, twice on one folder ----------------------------------------------


async def _fakes_session(folder: Path, commands: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes",
        "--data-dir",
        str(folder),
        "--workers",
        "0",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(commands.encode()), timeout=90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_the_fakes_run_twice_on_one_folder_get_answers_both_times(tmp_path: Path) -> None:
    # The fakes' ids restarted at 1, so the second run's messages were dropped as repeats
    # of the first run's. Now each run's SIDs and Telegram ids start at a random point.
    commands = "sms +447400100101 hello\ntg 4242 hello\nquit\n"
    first = await _fakes_session(tmp_path, commands)
    second = await _fakes_session(tmp_path, commands)
    for out in (first, second):
        assert "[twilio -> +447400100101]" in out, out
        assert "[telegram -> 4242]" in out, out


async def test_the_fakes_hand_out_different_ids_each_run() -> None:
    from tests.fakes.__main__ import inbound_sids
    from tests.fakes.telegram_api import FakeTelegram

    one, two = inbound_sids(), inbound_sids()
    assert {next(one) for _ in range(3)}.isdisjoint({next(two) for _ in range(3)})
    a, b = FakeTelegram(), FakeTelegram()
    assert a.message_update(1, "hi")["update_id"] != b.message_update(1, "hi")["update_id"]


async def test_the_fake_list_can_be_switched_from_another_process(fake: FakeTwilio) -> None:
    # What the crash suite and `python -m tests.fakes` users flip: POST /_fake/list-mode.
    url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    async with httpx.AsyncClient() as client:
        assert (
            await client.post(f"{fake.url}/_fake/list-mode", data={"mode": "x"})
        ).status_code == 400
        assert (
            await client.post(f"{fake.url}/_fake/list-mode", data={"mode": "fail"})
        ).status_code == 200
        assert (await client.get(url, auth=auth)).status_code == 500
        await client.post(f"{fake.url}/_fake/list-mode", data={"mode": "hang"})
        hanging = asyncio.create_task(client.get(url, auth=auth))
        await asyncio.sleep(0.2)
        assert not hanging.done()
        await client.post(f"{fake.url}/_fake/list-mode", data={"mode": "ok"})
        assert (await hanging).status_code == 200
