"""The Telegram channel: the real python-telegram-bot against a fake Bot API on 127.0.0.1, and
the real Starlette app over HTTP for the webhook.

Each test runs a real Bot on a real SQLite file with ``[channels.telegram]`` enabled and
``api_base_url`` pointing at :class:`tests.fakes.telegram_api.FakeTelegram`, which records
every API call with a monotonic time and answers as scripted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.channels.telegram import command_of, inline_keyboard, ticked, toggled
from bot.engine.waves import launch
from bot.models import Address, MessageKind, PanellistStatus, utcnow
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from tests.conftest import REPO, add_survey, make_settings
from tests.fakes.telegram_api import (
    OK,
    TOKEN,
    Answer,
    ApiCall,
    FakeTelegram,
    bad_request,
    blocked,
    chat_not_found,
    flood,
    server_error,
    slow,
)
from tests.webserver import serving

SECRET = "s3cret-token_for-tests"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
SURVEY = REPO / "tests" / "data" / "every-type.toml"
# asyncio may wake a sleeper up to its clock resolution early.
CLOCK_SLACK = 0.005

BotFactory = Callable[..., Awaitable[Bot]]

# PTB warns from inside RetryAfter's own constructor that its int form is going away; the
# channel reads either form, so the warning says nothing about our code.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram.running() as server:
        yield server


@pytest.fixture
async def make_bot(tmp_path: Path, fake: FakeTelegram) -> AsyncIterator[BotFactory]:
    """Builds (not starts) Bots whose Telegram channel talks to the fake; stops them after."""
    bots: list[Bot] = []

    async def factory(**telegram: Any) -> Bot:
        """Keyword arguments override [channels.telegram] keys; None leaves a key out."""
        section = {
            "enabled": True,
            "token": TOKEN,
            "secret_token": SECRET,
            "api_base_url": fake.base_url,
            **telegram,
        }
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": "https://panel.example.org"},
            channels={"telegram": {k: v for k, v in section.items() if v is not None}},
            outbox={"poll_interval": 0.05, "retry_backoff": ["1s"]},
        )
        bot = await Bot.create(settings)
        bots.append(bot)
        return bot

    yield factory
    for bot in bots:  # before the fake goes: PTB says goodbye to it on the way out
        await bot.stop()


async def post(
    client: httpx.AsyncClient, url: str, update: Any, *, secret: str | None = SECRET
) -> httpx.Response:
    headers = {HEADER: secret} if secret is not None else {}
    if isinstance(update, (bytes, str)):
        return await client.post(
            f"{url}/webhooks/telegram",
            content=update,
            headers={**headers, "content-type": "application/json"},
        )
    return await client.post(f"{url}/webhooks/telegram", json=update, headers=headers)


async def count(bot: Bot, sql: str, *args: Any) -> int:
    found = await bot.db.fetchone(sql, args)
    assert found is not None
    return int(found[0])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def add_telegram_panellist(bot: Bot, chat_id: int) -> int:
    """An active, consented panellist reached on Telegram chat ``chat_id``."""
    async with bot.db.transaction() as conn:
        panellist_id = await panellist_store.create(
            conn,
            status=PanellistStatus.ACTIVE,
            locale="en",
            consent_at=utcnow(),
            consent_method="test",
        )
        await panellist_store.add_address(conn, panellist_id, Address("telegram", str(chat_id)))
    return panellist_id


async def queue(bot: Bot, chat_id: int, text: str, panellist_id: int | None = None) -> int:
    async with bot.db.transaction() as conn:
        row_id = await outbox_store.queue(
            conn,
            key=f"test:{chat_id}:{text}",
            panellist_id=panellist_id,
            address=Address("telegram", str(chat_id)),
            text=text,
            kind=MessageKind.REPLY,
        )
    assert row_id is not None
    bot.wake_dispatcher()
    return row_id


async def outbox_row(bot: Bot, row_id: int) -> dict[str, Any]:
    found = await bot.db.fetchone("SELECT * FROM outbox WHERE id = ?", (row_id,))
    assert found is not None
    return dict(found)


async def wait_final(bot: Bot, row_id: int, timeout: float = 5.0) -> dict[str, Any]:
    async def final() -> bool:
        return (await outbox_row(bot, row_id))["status"] in ("sent", "failed", "cancelled")

    await wait_until(final, timeout)
    return await outbox_row(bot, row_id)


# --- the webhook -------------------------------------------------------------------------------


async def test_a_webhook_with_the_right_secret_is_answered_through_telegram(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    async with serving(bot) as url, httpx.AsyncClient() as client:
        update = fake.message_update(1001, "Hello")
        response = await post(client, url, update)
        assert response.status_code == 200
        (reply,) = await fake.wait_for_sends(1, chat_id=1001)
    assert reply.text.startswith("Hello from Test Panel!")
    assert "Reply YES to join." in reply.text
    assert reply.callback_data == [["YES", "NO"]]
    stored = await bot.db.fetchone("SELECT channel, provider_message_id FROM inbound_messages")
    assert tuple(stored) == ("telegram", f"update:{update['update_id']}")
    sent = await bot.db.fetchone("SELECT status, provider_message_id FROM outbox")
    assert tuple(sent) == ("sent", str(reply.result["message_id"]))


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong", SECRET + "x", SECRET[:-1], "sécret"],
    ids=["missing", "empty", "wrong", "longer", "shorter", "non-ascii"],
)
async def test_a_webhook_without_the_right_secret_is_refused_and_nothing_stored(
    make_bot: BotFactory, fake: FakeTelegram, secret: str | None
) -> None:
    bot = await make_bot()
    async with serving(bot) as url, httpx.AsyncClient() as client:
        headers = {HEADER: secret.encode()} if secret is not None else {}
        response = await client.post(
            f"{url}/webhooks/telegram", json=fake.message_update(1002, "Hello"), headers=headers
        )
    assert response.status_code == 403
    assert await count(bot, "SELECT count(*) FROM inbound_messages") == 0
    assert await count(bot, "SELECT count(*) FROM outbox") == 0
    assert fake.attempts() == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'"update"',
        b'{"update_id": "7"}',
        b'{"update_id": true}',
        b'{"update_id": 7, "message": "hello"}',
        b"\xff\xfe",
    ],
    ids=["broken", "empty", "list", "string", "id-as-text", "id-as-bool", "bad-message", "binary"],
)
async def test_a_malformed_update_is_a_400_and_nothing_stored(
    make_bot: BotFactory, fake: FakeTelegram, body: bytes
) -> None:
    bot = await make_bot()
    async with serving(bot) as url, httpx.AsyncClient() as client:
        response = await post(client, url, body)
    assert response.status_code == 400
    assert await count(bot, "SELECT count(*) FROM inbound_messages") == 0


async def test_updates_we_do_not_act_on_are_acknowledged_and_ignored(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    edited = fake.message_update(1003, "Hello")
    edited["edited_message"] = edited.pop("message")
    in_a_group = fake.message_update(-100123, "Hello", chat_type="group")
    async with serving(bot) as url, httpx.AsyncClient() as client:
        for update in (edited, in_a_group, {"update_id": 99}):
            assert (await post(client, url, update)).status_code == 200
    assert await count(bot, "SELECT count(*) FROM inbound_messages") == 0


async def test_an_update_repeated_concurrently_is_handled_once(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    update = fake.message_update(1004, "Hello")
    async with serving(bot) as url, httpx.AsyncClient() as client:
        responses = await asyncio.gather(*(post(client, url, update) for _ in range(5)))
        assert [r.status_code for r in responses] == [200] * 5
        await fake.wait_for_sends(1, chat_id=1004)
        # Once more after the first was stored: the database's unique index drops it.
        assert (await post(client, url, update)).status_code == 200
        row_id = (await bot.db.fetchone("SELECT id FROM outbox"))[0]
        await wait_final(bot, row_id)
    assert await count(bot, "SELECT count(*) FROM inbound_messages") == 1
    assert await count(bot, "SELECT count(*) FROM outbox") == 1
    assert len(fake.attempts(1004)) == 1


# --- a whole panellist journey ----------------------------------------------------------------


class TelegramUser:
    """A panellist in their Telegram app: types text or taps the last message's buttons."""

    def __init__(self, client: httpx.AsyncClient, url: str, fake: FakeTelegram, chat_id: int):
        self.client, self.url, self.fake, self.chat_id = client, url, fake, chat_id

    @property
    def last(self) -> ApiCall:
        return self.fake.sent(self.chat_id)[-1]

    async def _send(self, update: dict[str, Any]) -> ApiCall:
        seen = len(self.fake.sent(self.chat_id))
        response = await post(self.client, self.url, update)
        assert response.status_code == 200
        return (await self.fake.wait_for_sends(seen + 1, chat_id=self.chat_id))[-1]

    async def type(self, text: str) -> ApiCall:
        return await self._send(self.fake.message_update(self.chat_id, text))

    async def tap(self, data: str) -> ApiCall:
        """Tap the button with this callback_data under the bot's last message."""
        buttons = [d for row in self.last.callback_data for d in row]
        assert data in buttons, f"no button {data!r} under {self.last.text!r}"
        return await self._send(self.fake.callback_update(self.chat_id, data))

    async def tick(self, data: str) -> list[str]:
        """Tap an option of a multi-choice question: the bot edits the keyboard, sends
        nothing. Returns the keyboard's labels after the edit."""
        buttons = [d for row in self.last.callback_data for d in row]
        assert data in buttons, f"no button {data!r} under {self.last.text!r}"
        edits = len(self.fake.calls_to("editMessageReplyMarkup"))
        answered = len(self.fake.calls_to("answerCallbackQuery"))
        response = await post(self.client, self.url, self.fake.callback_update(self.chat_id, data))
        assert response.status_code == 200
        await self.fake.wait_for(lambda: len(self.fake.calls_to("answerCallbackQuery")) > answered)
        assert len(self.fake.calls_to("editMessageReplyMarkup")) == edits + 1
        return self.fake.markup_labels(self.chat_id, self.last.result["message_id"])


async def answers_of(bot: Bot) -> dict[str, Any]:
    rows = await bot.db.fetchall("SELECT question_id, value FROM answers ORDER BY id")
    return {r["question_id"]: json.loads(r["value"]) for r in rows}


async def test_a_panellist_signs_up_and_completes_a_survey_by_telegram(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot(per_chat_interval=0.05)
    async with serving(bot) as url, httpx.AsyncClient() as client:
        pat = TelegramUser(client, url, fake, 2002)
        await pat.type("/start")
        age = await pat.tap("YES")
        assert age.text.startswith("Which age group are you in?")
        assert age.callback_data == [["1", "2"], ["3", "4"], ["5", "6"], ["7"]]
        assert age.button_labels[:2] == ["1 16-24", "2 25-34"]
        sex = await pat.tap("2")
        # One label too long to share a row ("4 Prefer not to say"): one button a row.
        assert sex.callback_data == [["1"], ["2"], ["3"], ["4"]]
        done = await pat.tap("2")
        assert done.text.startswith("Thank you, you have joined Test Panel.")

        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        invitation = (await fake.wait_for_sends(5, chat_id=2002))[-1]
        assert "Question 1 of 6: How easy was it?" in invitation.text
        assert invitation.callback_data == [["1"], ["2"], ["3"]]
        assert invitation.button_labels == ["1 Easy", "2 Neither easy nor hard", "3 Hard"]

        why = await pat.tap("3")
        assert "Question 2 of 6" in why.text
        scale = await pat.type("1 and 3")  # typed: a multi answer is not one button
        assert scale.callback_data == [["1", "2", "3", "4", "5"]]
        yesno = await pat.tap("4")
        assert yesno.button_labels == ["1 Yes", "2 No"]
        days = await pat.tap("2")
        assert days.callback_data == []  # a number is typed
        comment = await pat.type("12")
        assert "Question 6 of 6" in comment.text
        thanks = await pat.type("It was fine 👍")
        assert thanks.text == "Thanks for finishing the test survey."

    assert await answers_of(bot) == {
        "ease": "hard",
        "why_hard": ["phone", "times"],
        "score": 4,
        "online": "no",
        "days": 12,
        "comment": "It was fine 👍",
    }
    panellist = await bot.db.fetchone("SELECT status, demographics FROM panellists")
    assert panellist["status"] == "active"
    assert json.loads(panellist["demographics"]) == {"age_band": "25-34", "sex": "male"}
    # Every tap was answered, so the button stops spinning.
    assert len(fake.calls_to("answerCallbackQuery")) == 6


async def test_a_multi_choice_question_is_answered_by_ticking_options_then_send(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot(per_chat_interval=0.05)
    async with serving(bot) as url, httpx.AsyncClient() as client:
        pat = TelegramUser(client, url, fake, 2003)
        await pat.type("/start")
        await pat.tap("YES")
        await pat.tap("2")
        await pat.tap("2")
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        await fake.wait_for_sends(5, chat_id=2003)
        why = await pat.tap("3")
        assert "Question 2 of 6" in why.text
        # One button per option, each ticking it, and a Send button last.
        assert why.callback_data[-1] == ["m!"]
        assert [d for row in why.callback_data[:-1] for d in row] == ["m:1", "m:2", "m:3"]
        assert why.button_labels[-1] == "Send"
        plain = why.button_labels[:-1]

        # A tap on Send with nothing ticked sends nothing and records nothing.
        before = len(fake.sent(2003))
        await post(client, url, fake.callback_update(2003, "m!"))
        assert len(fake.sent(2003)) == before and await answers_of(bot) == {"ease": "hard"}

        assert await pat.tick("m:1") == ["\u2705 " + plain[0], *plain[1:], "Send"]
        await pat.tick("m:3")
        await pat.tick("m:2")
        labels = await pat.tick("m:2")  # a second tap unticks
        assert labels == ["\u2705 " + plain[0], plain[1], "\u2705 " + plain[2], "Send"]
        # Nothing was sent or answered by the ticks alone.
        assert len(fake.sent(2003)) == before
        assert await answers_of(bot) == {"ease": "hard"}

        scale = await pat.tap("m!")
        assert "Question 3 of 6" in scale.text
        assert (await answers_of(bot))["why_hard"] == ["phone", "times"]


async def test_commands_map_to_the_engine_keywords(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot(per_chat_interval=0.05)
    async with serving(bot) as url, httpx.AsyncClient() as client:
        pat = TelegramUser(client, url, fake, 2003)
        await pat.type("/start")
        await pat.tap("YES")
        help_text = await pat.type("/help@test_panel_bot")
        assert help_text.text.startswith("Test Panel is run by")
        bye = await pat.type("/stop")
        assert bye.text.startswith("You have left Test Panel")
        back = await pat.type("/start")  # Telegram's Start button after leaving
        assert back.text.startswith("Welcome back to Test Panel.")
    status = await bot.db.fetchone("SELECT status FROM panellists")
    assert status[0] != "opted_out"


# --- polling ----------------------------------------------------------------------------------


async def test_polling_mode_picks_up_updates_and_replies(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot(mode="polling", secret_token=None, per_chat_interval=0.05)
    await bot.start()
    try:
        fake.queue_update(fake.message_update(3003, "Hello"))
        (welcome,) = await fake.wait_for_sends(1, chat_id=3003)
        assert welcome.callback_data == [["YES", "NO"]]
        fake.queue_update(fake.callback_update(3003, "YES"))
        question = (await fake.wait_for_sends(2, chat_id=3003))[-1]
        assert question.text.startswith("Which age group are you in?")
    finally:
        await bot.stop()
    # PTB removed any webhook (Telegram serves one or the other) and confirmed what it read.
    assert fake.calls_to("deleteWebhook")
    last_poll = fake.calls_to("getUpdates")[-1]
    assert int(last_poll.params["offset"]) > 0
    assert len(fake.calls_to("answerCallbackQuery")) == 1


async def test_polling_mode_serves_no_webhook(make_bot: BotFactory, fake: FakeTelegram) -> None:
    bot = await make_bot(mode="polling", secret_token=None)
    async with serving(bot) as url, httpx.AsyncClient() as client:
        response = await post(client, url, fake.message_update(3004, "Hello"))
    assert response.status_code == 404


# --- deep links -------------------------------------------------------------------------------


async def test_a_deep_link_joins_the_chat_to_an_imported_panellist(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    async with bot.db.transaction() as conn:
        panellist_id = await panellist_store.create(
            conn,
            status=PanellistStatus.ACTIVE,
            locale="en",
            consent_at=utcnow(),
            consent_method="import",
            source="import",
        )
    code = (await bot.db.fetchone("SELECT link_code FROM panellists"))[0]
    async with serving(bot) as url, httpx.AsyncClient() as client:
        response = await post(client, url, fake.message_update(4004, f"/start {code.lower()}"))
        assert response.status_code == 200
        (linked,) = await fake.wait_for_sends(1, chat_id=4004)
    assert linked.text.startswith("Thank you, this chat is now linked to your place on Test Panel")
    address = await bot.db.fetchone(
        "SELECT panellist_id FROM addresses WHERE channel = 'telegram' AND address = '4004'"
    )
    assert address is not None and address[0] == panellist_id
    assert await count(bot, "SELECT count(*) FROM panellists") == 1


async def test_a_deep_link_with_an_unknown_code_is_a_plain_start(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    async with serving(bot) as url, httpx.AsyncClient() as client:
        await post(client, url, fake.message_update(4005, "/start NOSUCHCODE"))
        (welcome,) = await fake.wait_for_sends(1, chat_id=4005)
    assert welcome.text.startswith("Hello from Test Panel!")


# --- send errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error_class", "code", "panellist_status"),
    [
        (blocked(), "unreachable", "403", "unreachable"),
        (chat_not_found(), "unreachable", "400", "unreachable"),
        (bad_request(), "permanent", "400", "active"),
    ],
    ids=["blocked", "chat-not-found", "bad-request"],
)
async def test_final_send_errors_are_classified_and_never_retried(
    make_bot: BotFactory,
    fake: FakeTelegram,
    answer: Answer,
    error_class: str,
    code: str,
    panellist_status: str,
) -> None:
    bot = await make_bot()
    panellist_id = await add_telegram_panellist(bot, 5005)
    fake.script("sendMessage", answer)
    await bot.start()
    row_id = await queue(bot, 5005, "Question 1 of 3", panellist_id)
    row = await wait_final(bot, row_id)
    assert (row["status"], row["error_class"], row["error_code"]) == ("failed", error_class, code)
    assert row["attempts"] == 1
    status = await bot.db.fetchone("SELECT status FROM panellists WHERE id = ?", (panellist_id,))
    assert status[0] == panellist_status
    assert len(fake.attempts(5005)) == 1


@pytest.mark.parametrize("ptb_timedelta", ["", "true"], ids=["retry-after-int", "timedelta"])
async def test_a_429_waits_retry_after_then_sends_the_same_message_without_using_an_attempt(
    make_bot: BotFactory,
    fake: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    ptb_timedelta: str,
) -> None:
    # PTB 22 hands retry_after over as an int, or as a timedelta when PTB_TIMEDELTA is set
    # (the form its next major version makes the only one): both must wait the same.
    monkeypatch.setenv("PTB_TIMEDELTA", ptb_timedelta)
    bot = await make_bot()
    fake.script("sendMessage", flood(1), OK)
    await bot.start()
    row_id = await queue(bot, 6006, "Your survey is ready")
    row = await wait_final(bot, row_id)
    first, second = fake.attempts(6006)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0 - CLOCK_SLACK
    assert first.text == second.text == "Your survey is ready"
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_a_server_error_is_retried_after_the_backoff(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    fake.script("sendMessage", server_error(), OK)
    await bot.start()
    row_id = await queue(bot, 7007, "Question 2 of 3")
    row = await wait_final(bot, row_id)
    first, second = fake.attempts(7007)
    assert (first.status, second.status) == (500, 200)
    assert second.at - first.at >= 1.0 - CLOCK_SLACK  # retry_backoff = ["1s"]
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_one_chat_gets_at_most_one_message_a_second_while_others_are_not_held(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()  # per_chat_interval defaults to Telegram's 1 s
    await bot.start()
    ids = [await queue(bot, 8008, f"Message {n}") for n in range(3)]
    other = await queue(bot, 8009, "To someone else")
    for row_id in [*ids, other]:
        await wait_final(bot, row_id)
    times = [c.at for c in fake.sent(8008)]
    assert [c.text for c in fake.sent(8008)] == ["Message 0", "Message 1", "Message 2"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.0 - CLOCK_SLACK for gap in gaps), gaps
    # The other chat did not wait behind the first one's spacing.
    assert fake.sent(8009)[0].at < times[1]


async def test_a_slow_answer_for_one_chat_does_not_hold_the_others(
    make_bot: BotFactory, fake: FakeTelegram
) -> None:
    bot = await make_bot()
    fake.script("sendMessage", slow(0.5))
    await bot.start()
    slow_row = await queue(bot, 8010, "To a slow chat")
    await fake.wait_for(lambda: bool(fake.attempts(8010)))
    quick_row = await queue(bot, 8011, "To a quick one")
    await wait_final(bot, quick_row)
    assert (await outbox_row(bot, slow_row))["status"] == "sending"  # still waiting
    assert (await wait_final(bot, slow_row))["status"] == "sent"


# --- the pieces -------------------------------------------------------------------------------


def test_a_multi_choice_keyboard_ticks_and_reads_back_its_options() -> None:
    options = [{"reply": str(i), "label": label} for i, label in enumerate("ABC", 1)]
    markup = inline_keyboard(options, multi=True, send_label="Anfon")
    assert markup is not None
    assert [b.callback_data for row in markup.inline_keyboard for b in row][-1] == "m!"
    assert markup.inline_keyboard[-1][0].text == "Anfon"
    assert ticked(markup) == []
    markup = toggled(toggled(markup, "m:3"), "m:1")
    assert ticked(markup) == ["1", "3"]
    assert ticked(toggled(markup, "m:1")) == ["3"]
    # A reply too long for a callback with its prefix: no buttons, typed replies still work.
    assert inline_keyboard([{"reply": "x" * 63, "label": "X"}], multi=True) is None


def test_keyboards_put_short_labels_in_rows_and_long_ones_alone() -> None:
    scale = inline_keyboard([{"reply": str(n), "label": str(n)} for n in range(0, 11)])
    assert scale is not None
    assert [len(row) for row in scale.inline_keyboard] == [6, 5]
    choices = inline_keyboard([{"reply": "1", "label": "Very easy, I got one the same day"}])
    assert choices is not None
    assert choices.inline_keyboard[0][0].text == "1 Very easy, I got one the same day"
    assert inline_keyboard([]) is None
    # A reply over Telegram's 64-byte callback limit: no buttons; the text still works typed.
    assert inline_keyboard([{"reply": "é" * 33, "label": "x"}]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/start", ("start", "")),
        ("/start ABCD2345", ("start", "ABCD2345")),
        ("/START@test_panel_bot  abc ", ("start", "abc")),
        ("/help", ("help", "")),
        ("hello", None),
        ("/", None),
    ],
)
def test_commands_are_parsed(text: str, expected: tuple[str, str] | None) -> None:
    assert command_of(text) == expected
