"""Sign-up: welcome, language, consent, demographics, declining and suppression."""

from __future__ import annotations

import json
from pathlib import Path

from bot.app import Bot
from bot.models import PanellistStatus
from tests.conftest import Chat, make_settings


async def status_of(bot: Bot, address: str) -> dict | None:
    channel, _, ident = address.partition(":")
    row = await bot.db.fetchone(
        "SELECT p.* FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
        "WHERE a.channel = ? AND a.address = ?",
        (channel, ident),
    )
    return dict(row) if row else None


async def test_single_locale_signup_asks_consent_then_each_field(bot: Bot, chat: Chat) -> None:
    first = await chat.say("sim:alice", "Hi there")
    assert len(first) == 1
    assert "Hello from Test Panel" in first[0]
    assert "Reply YES to join" in first[0]
    assert (await status_of(bot, "sim:alice"))["status"] == "pending"

    ask_age = await chat.say("sim:alice", "Yes")
    assert "Which age group are you in?" in ask_age[0]
    assert "1 16-24" in ask_age[0] and "7 75+" in ask_age[0]

    ask_sex = await chat.say("sim:alice", "3")
    assert "What is your sex?" in ask_sex[0]
    assert "4 Prefer not to say" in ask_sex[0]

    done = await chat.say("sim:alice", "female")  # the option text works as well as its number
    assert "you have joined Test Panel" in done[0]
    row = await status_of(bot, "sim:alice")
    assert row["status"] == PanellistStatus.ACTIVE
    assert row["consent_at"] is not None
    assert json.loads(row["demographics"]) == {"age_band": "35-44", "sex": "female"}


async def test_a_field_answer_that_does_not_fit_is_asked_again_once_then_skipped(
    bot: Bot, chat: Chat
) -> None:
    await chat.say("sim:bob", "hello")
    await chat.say("sim:bob", "yes")
    again = await chat.say("sim:bob", "ninety")
    assert again[0].startswith("Sorry, please reply with a number from 1 to 7")
    moved_on = await chat.say("sim:bob", "still not a number")
    assert "What is your sex?" in moved_on[0]
    await chat.say("sim:bob", "2")
    row = await status_of(bot, "sim:bob")
    assert row["status"] == "active"
    assert json.loads(row["demographics"]) == {"sex": "male"}


async def test_declining_consent_keeps_nothing_personal_and_stops_asking(
    bot: Bot, chat: Chat
) -> None:
    await chat.say("sim:carol", "hi")
    close = await chat.say("sim:carol", "no thanks")
    assert "you have not joined" in close[0]
    assert await status_of(bot, "sim:carol") is None
    rows = await bot.db.fetchall("SELECT text FROM inbound_messages WHERE text IS NOT NULL")
    assert rows == []
    suppressed = await bot.db.fetchall("SELECT reason, address_hash FROM suppressions")
    assert [r["reason"] for r in suppressed] == ["declined"]
    assert "carol" not in suppressed[0]["address_hash"]
    # Writing again does not restart the sign-up...
    assert await chat.say("sim:carol", "hello?") == []
    # ...unless they explicitly ask to join.
    again = await chat.say("sim:carol", "START")
    assert "Reply YES to join" in again[0]


async def test_stop_before_consent_forgets_the_person(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:dan", "hi")
    confirm = await chat.say("sim:dan", "stop")
    assert "will get no more messages" in confirm[0]
    assert await status_of(bot, "sim:dan") is None
    assert await chat.say("sim:dan", "what?") == []


async def test_several_locales_ask_the_language_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bot={"locales": ["en", "cy", "pl"]})
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        menu = await chat.say("sim:eve", "hello")
        assert "Choose your language" in menu[0]
        assert "1 English" in menu[0] and "2 Cymraeg" in menu[0] and "3 Polski" in menu[0]
        consent = await chat.say("sim:eve", "Polski")
        assert "Reply YES" in consent[0] or "TAK" in consent[0]
        row = await status_of(bot, "sim:eve")
        assert row["locale"] == "pl" and row["stage"] == "consent"
        # The English "yes" is always understood.
        await chat.say("sim:eve", "yes")
        assert (await status_of(bot, "sim:eve"))["consent_at"] is not None
    finally:
        await bot.stop()


async def test_signup_state_survives_a_restart(settings, tmp_path: Path) -> None:
    bot = await Bot.create(settings)
    await Chat(bot).say("sim:fay", "hi")
    await Chat(bot).say("sim:fay", "yes")
    await bot.stop()
    bot = await Bot.create(settings)
    try:
        replies = await Chat(bot).say("sim:fay", "1")
        assert "What is your sex?" in replies[0]
    finally:
        await bot.stop()


async def test_a_retried_provider_message_is_handled_once(bot: Bot) -> None:
    from bot.models import Address, InboundMessage

    message = InboundMessage(Address("sim", "gus"), "hello", "provider-1")
    first = await bot.handle(message)
    second = await bot.handle(InboundMessage(Address("sim", "gus"), "hello", "provider-1"))
    assert first.outbox_ids and not first.duplicate
    assert second.duplicate and second.outbox_ids == []
    count = await bot.db.fetchone("SELECT COUNT(*) FROM outbox")
    assert count[0] == 1


async def test_stop_before_consent_cancels_what_was_still_queued(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:hal", "hi")  # the welcome is queued (no dispatcher runs here)
    await chat.say("sim:hal", "STOP")
    rows = await bot.db.fetchall("SELECT kind, status, address FROM outbox ORDER BY id")
    assert [(r["kind"], r["status"]) for r in rows] == [
        ("reply", "cancelled"),
        ("stop_confirmation", "queued"),
    ]
    assert rows[0]["address"] is None  # nothing personal kept on the cancelled row
