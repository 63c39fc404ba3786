"""Sign-up: welcome, language, consent, demographics, declining and suppression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.app import Bot
from bot.engine.signup import within_one_edit
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
    # Writing again does not restart the sign-up: a short answer says what happened...
    later = await chat.say("sim:carol", "hello?")
    assert len(later) == 1
    assert "You chose not to join Test Panel" in later[0] and "reply START" in later[0]
    assert await status_of(bot, "sim:carol") is None
    rows = await bot.db.fetchall("SELECT text FROM inbound_messages WHERE text IS NOT NULL")
    assert rows == []
    # ...and only a clear wish to join starts again.
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


# --- how people say yes, no and neither -------------------------------------------------------

ASK_AGE = "Which age group are you in?"
DECLINED = "you have not joined"


@pytest.mark.parametrize(
    "reply",
    [
        "Yes please",
        "yse",  # two letters swapped
        "yess",
        "Yeah",
        "ok",
        "OK thanks",
        "Sure!",
        "Yes, sign me up",
        "yes please, thank you",
        "\N{THUMBS UP SIGN}",
        "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",  # with a skin tone
        "\N{THUMBS UP SIGN}\ufe0f",
    ],
)
async def test_common_ways_of_saying_yes_join(bot: Bot, chat: Chat, reply: str) -> None:
    await chat.say("sim:yas", "hi")
    answer = await chat.say("sim:yas", reply)
    assert ASK_AGE in answer[0], answer
    assert (await status_of(bot, "sim:yas"))["consent_at"] is not None


@pytest.mark.parametrize(
    "reply", ["no thanks", "No thank you.", "nope", "nah", "Not interested", "\N{THUMBS DOWN SIGN}"]
)
async def test_a_clear_no_closes_at_once(bot: Bot, chat: Chat, reply: str) -> None:
    await chat.say("sim:nia", "hi")
    answer = await chat.say("sim:nia", reply)
    assert DECLINED in answer[0]
    assert await status_of(bot, "sim:nia") is None


@pytest.mark.parametrize("reply", ["maybe later", "what is this?", "yes but not now", "nop"])
async def test_a_reply_that_is_neither_is_asked_about_once_more(
    bot: Bot, chat: Chat, reply: str
) -> None:
    await chat.say("sim:mo", "hi")
    again = await chat.say("sim:mo", reply)
    assert len(again) == 1
    assert again[0].startswith("Sorry, I did not understand that. Reply YES to join Test Panel")
    assert (await status_of(bot, "sim:mo"))["consent_at"] is None
    # Still unclear the second time: closed politely, nothing kept.
    close = await chat.say("sim:mo", reply)
    assert DECLINED in close[0]
    assert await status_of(bot, "sim:mo") is None


async def test_after_asking_again_a_yes_joins(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:pip", "hi")
    await chat.say("sim:pip", "maybe later")
    answer = await chat.say("sim:pip", "go on then")
    assert ASK_AGE in answer[0]


async def test_the_asking_again_offers_yes_and_no_buttons(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:quin", "hi")
    await chat.say("sim:quin", "hmm")
    row = await bot.db.fetchone("SELECT extra FROM outbox ORDER BY id DESC LIMIT 1")
    options = json.loads(row["extra"])["options"]
    assert [o["reply"] for o in options] == ["YES", "NO"]


@pytest.mark.parametrize(
    ("locale", "reply"),
    [
        ("cy", "Ie plis"),
        ("cy", "iawn, diolch"),
        ("pl", "Tak, proszę"),
        ("pl", "tka"),  # a slip on TAK, the word the consent message asks for
        ("ro", "Da, vă rog"),
        ("ro", "sigur"),
        ("ur", "جی ہاں، شکریہ"),
        ("ur", "theek hai"),
        ("pl", "yes please"),  # English always works
    ],
)
async def test_yes_in_each_shipped_language(tmp_path: Path, locale: str, reply: str) -> None:
    settings = make_settings(tmp_path, bot={"locales": ["en", "cy", "pl", "ro", "ur"]})
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        await chat.say("sim:lang", "hello")
        await chat.say("sim:lang", locale)
        assert (await status_of(bot, "sim:lang"))["stage"] == "consent"
        await chat.say("sim:lang", reply)
        assert (await status_of(bot, "sim:lang"))["consent_at"] is not None, reply
    finally:
        await bot.stop()


@pytest.mark.parametrize(("locale", "reply"), [("cy", "dim diolch"), ("pl", "nie, dziękuję")])
async def test_no_in_other_languages(tmp_path: Path, locale: str, reply: str) -> None:
    settings = make_settings(tmp_path, bot={"locales": ["en", "cy", "pl"]})
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        await chat.say("sim:lang", "hello")
        await chat.say("sim:lang", locale)
        await chat.say("sim:lang", reply)
        assert await status_of(bot, "sim:lang") is None
    finally:
        await bot.stop()


@pytest.mark.parametrize("word", ["HELP", "info", "Help!"])
async def test_help_is_answered_after_declining(bot: Bot, chat: Chat, word: str) -> None:
    await chat.say("sim:ray", "hi")
    await chat.say("sim:ray", "no")
    answer = await chat.say("sim:ray", word)
    assert len(answer) == 1
    assert answer[0].startswith("Test Panel is run by")
    assert await status_of(bot, "sim:ray") is None


async def test_help_is_answered_after_stop_but_nothing_else_is(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:sol", "hi")
    await chat.say("sim:sol", "STOP")
    assert (await chat.say("sim:sol", "INFO"))[0].startswith("Test Panel is run by")
    assert await chat.say("sim:sol", "hello?") == []  # they asked us to stop


async def test_a_yes_after_declining_starts_again(bot: Bot, chat: Chat) -> None:
    await chat.say("sim:tam", "hi")
    await chat.say("sim:tam", "no")
    again = await chat.say("sim:tam", "Yes please")
    assert "Reply YES to join" in again[0]
    await chat.say("sim:tam", "yes")
    assert (await status_of(bot, "sim:tam"))["consent_at"] is not None


@pytest.mark.parametrize(
    ("a", "b", "close"),
    [
        ("yse", "yes", True),
        ("yess", "yes", True),
        ("yes", "ys", True),
        ("yrs", "yes", True),
        ("yes", "yes", True),
        ("sey", "yes", False),
        ("yesss", "yes", False),
        ("abc", "xyz", False),
    ],
)
def test_within_one_edit(a: str, b: str, close: bool) -> None:
    assert within_one_edit(a, b) is close
    assert within_one_edit(b, a) is close


async def test_help_from_a_panellist_who_stopped_is_answered_and_sent(tmp_path: Path) -> None:
    """The reply to HELP gets past the dispatcher's block on opted-out people."""
    from tests.scripted_channel import ScriptedChannel

    settings = make_settings(tmp_path, outbox={"poll_interval": 0.05})
    bot = await Bot.create(settings)
    channel = ScriptedChannel(names=("sim",))
    bot.channels = {name: channel for name in channel.names}
    bot.dispatcher = bot.build_dispatcher()
    try:
        chat = Chat(bot)
        await chat.join("sim:uma")
        await chat.say("sim:uma", "STOP")
        assert (await status_of(bot, "sim:uma"))["status"] == "opted_out"
        help_reply = await chat.say("sim:uma", "HELP")
        assert help_reply and help_reply[0].startswith("Test Panel is run by")
        assert await chat.say("sim:uma", "hello?") == []  # anything else: silence
        await bot.start(scheduler=False)
        await channel._wait(
            lambda: any(t.startswith("Test Panel is run by") for t in channel.texts()), 10
        )
        assert channel.texts()[-2:] == [
            "You have left Test Panel and will get no more messages. Reply START to rejoin.",
            help_reply[0],
        ]
    finally:
        await bot.stop()
