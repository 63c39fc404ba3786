"""Keywords and the survey runner, through the engine on a real SQLite file."""

from __future__ import annotations

import json

import pytest

from bot.app import Bot
from bot.engine.waves import launch
from tests.conftest import REPO, Chat, add_survey

SURVEY = REPO / "tests" / "data" / "every-type.toml"


async def answers_of(bot: Bot) -> dict[str, object]:
    rows = await bot.db.fetchall("SELECT question_id, value FROM answers ORDER BY id")
    return {r["question_id"]: json.loads(r["value"]) for r in rows}


@pytest.fixture
async def invited(bot: Bot, chat: Chat) -> Chat:
    """Alice has joined and been invited to the every-type survey."""
    await chat.join("sim:alice")
    await add_survey(bot, SURVEY)
    await launch(bot, "every-type")
    return chat


async def invitation_text(bot: Bot) -> str:
    row = await bot.db.fetchone("SELECT text FROM outbox WHERE kind = 'invitation'")
    return row["text"]


async def test_invitation_carries_intro_progress_and_numbered_options(
    bot: Bot, invited: Chat
) -> None:
    text = await invitation_text(bot)
    assert text.startswith("A test survey from Test Panel.")
    assert "Question 1 of 6: How easy was it?" in text
    assert "1 Easy\n2 Neither easy nor hard\n3 Hard" in text


async def test_a_full_survey_with_skip_logic_and_every_type(bot: Bot, invited: Chat) -> None:
    chat = invited
    assert "Question 2 of 6: What made it hard?" in (await chat.say("sim:alice", "HARD"))[0]
    assert "Question 3 of 6" in (await chat.say("sim:alice", "1 and 3"))[0]
    assert "Question 4 of 6" in (await chat.say("sim:alice", "4"))[0]
    assert "Question 5 of 6" in (await chat.say("sim:alice", "no"))[0]
    assert "Question 6 of 6" in (await chat.say("sim:alice", "12"))[0]
    thanks = await chat.say("sim:alice", "stop texting me so often")
    assert thanks == ["Thanks for finishing the test survey."]
    assert await answers_of(bot) == {
        "ease": "hard",
        "why_hard": ["phone", "times"],
        "score": 4,
        "online": "no",
        "days": 12,
        "comment": "stop texting me so often",  # an answer, not an opt-out
    }
    status = await bot.db.fetchone("SELECT state FROM survey_sessions")
    assert status["state"] == "completed"


async def test_skip_logic_leaves_out_a_question_whose_condition_is_false(
    bot: Bot, invited: Chat
) -> None:
    replies = await invited.say("sim:alice", "1")
    assert "Question 3 of 6: How would you rate it?" in replies[0]
    assert "1 to 5 (1 = Very poor, 5 = Very good)" in replies[0]


@pytest.mark.parametrize("reply", ["1,3", "1 3", "1, 3", "phone queue, no times free", "1&3"])
async def test_multi_accepts_the_usual_ways_of_listing(bot: Bot, invited: Chat, reply: str) -> None:
    await invited.say("sim:alice", "3")
    await invited.say("sim:alice", reply)
    assert (await answers_of(bot))["why_hard"] == ["phone", "times"]


async def test_a_reply_that_does_not_fit_is_asked_again_once_then_skipped(
    bot: Bot, invited: Chat
) -> None:
    chat = invited
    again = await chat.say("sim:alice", "maybe")
    assert again[0].startswith("Sorry, I did not understand that. Please reply with 1, 2, 3")
    assert "Question 1 of 6" in again[0]
    moved = await chat.say("sim:alice", "still maybe")
    assert moved[0].startswith("No problem, let's move on.")
    assert "Question 3 of 6" in moved[0]  # the skip-logic question has no answer to hang on
    assert await answers_of(bot) == {}


async def test_scale_and_number_enforce_their_ranges(bot: Bot, invited: Chat) -> None:
    chat = invited
    await chat.say("sim:alice", "1")
    assert "Please reply with" in (await chat.say("sim:alice", "6"))[0]
    await chat.say("sim:alice", "5")
    await chat.say("sim:alice", "yes")
    assert "Please reply with" in (await chat.say("sim:alice", "400"))[0]
    await chat.say("sim:alice", "3")
    answers = await answers_of(bot)
    assert answers["score"] == 5 and answers["days"] == 3


@pytest.mark.parametrize(
    "text",
    ["", "   ", "x" * 5000, "😀😀😀🎉", "ٹھیک ہے، شکریہ", "\x00\x01 hi \u202e"],
    ids=["empty", "blank", "5000-chars", "emoji", "urdu", "control-chars"],
)
async def test_odd_messages_get_an_answer_and_break_nothing(
    bot: Bot, invited: Chat, text: str
) -> None:
    replies = await invited.say("sim:alice", text)
    assert len(replies) == 1
    assert "Question 1 of 6" in replies[0]
    stored = await bot.db.fetchone("SELECT length(text) FROM inbound_messages ORDER BY id DESC")
    assert stored[0] <= 2000


async def test_free_text_keeps_emoji_and_right_to_left_text(bot: Bot, invited: Chat) -> None:
    for reply in ("1", "3", "no", "7"):
        await invited.say("sim:alice", reply)
    await invited.say("sim:alice", "بہت اچھا 👍")
    assert (await answers_of(bot))["comment"] == "بہت اچھا 👍"


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop ", "unsubscribe", "QUIT.", "optout"])
async def test_opt_out_words_work_mid_survey(bot: Bot, invited: Chat, word: str) -> None:
    replies = await invited.say("sim:alice", word)
    assert replies == [
        "You have left Test Panel and will get no more messages. Reply START to rejoin."
    ]
    row = await bot.db.fetchone("SELECT status, opted_out_at FROM panellists")
    assert row["status"] == "opted_out" and row["opted_out_at"]
    session = await bot.db.fetchone("SELECT state FROM survey_sessions")
    assert session["state"] == "stopped"
    # One confirmation, then silence.
    assert await invited.say("sim:alice", "STOP") == []
    assert await invited.say("sim:alice", "why?") == []


@pytest.mark.parametrize("word", ["START", "unstop", "yes"])
async def test_opt_in_words_bring_an_opted_out_panellist_back(
    bot: Bot, invited: Chat, word: str
) -> None:
    await invited.say("sim:alice", "stop")
    back = await invited.say("sim:alice", word)
    assert back[0].startswith("Welcome back to Test Panel")
    row = await bot.db.fetchone("SELECT status FROM panellists")
    assert row["status"] == "active"


async def test_help_names_who_runs_the_panel_and_how_to_stop(bot: Bot, invited: Chat) -> None:
    replies = await invited.say("sim:alice", "help")
    assert "Test Panel is run by your local NHS engagement team" in replies[0]
    assert "Reply STOP to leave" in replies[0]
    assert "reply to the last question" in replies[0]
    # The survey carries on where it was.
    assert "Question 3 of 6" in (await invited.say("sim:alice", "1"))[0]


async def test_a_sentence_containing_stop_is_not_an_opt_out(bot: Bot, invited: Chat) -> None:
    await invited.say("sim:alice", "please stop")
    row = await bot.db.fetchone("SELECT status FROM panellists")
    assert row["status"] == "active"


async def test_the_survey_survives_a_restart_between_messages(settings, tmp_path) -> None:
    bot = await Bot.create(settings)
    chat = Chat(bot)
    await chat.join("sim:alice")
    await add_survey(bot, SURVEY)
    await launch(bot, "every-type")
    await chat.say("sim:alice", "3")
    await bot.stop()
    bot = await Bot.create(settings)
    try:
        replies = await Chat(bot).say("sim:alice", "2")
        assert "Question 3 of 6" in replies[0]
        assert (await answers_of(bot))["why_hard"] == ["online"]
    finally:
        await bot.stop()


async def test_one_open_survey_at_a_time_the_next_waits(bot: Bot, invited: Chat) -> None:
    await launch(bot, "every-type")  # a second wave while the first is open
    rows = await bot.db.fetchall("SELECT status FROM invitations ORDER BY id")
    assert [r["status"] for r in rows] == ["sent", "waiting"]
    for reply in ("1", "3", "no", "7"):
        await invited.say("sim:alice", reply)
    last = await invited.say("sim:alice", "fine")
    assert last[0] == "Thanks for finishing the test survey."
    assert "Question 1 of 6" in last[1]  # the waiting survey starts straight away
    rows = await bot.db.fetchall("SELECT status FROM invitations ORDER BY id")
    assert [r["status"] for r in rows] == ["completed", "sent"]


async def test_a_reply_after_the_wave_closed_is_told_so(bot: Bot, invited: Chat) -> None:
    from bot.engine.waves import close_wave

    await close_wave(bot, 1)
    replies = await invited.say("sim:alice", "1")
    assert "That survey has now closed" in replies[0]
    assert await answers_of(bot) == {}


async def test_with_no_survey_open_a_message_gets_a_polite_answer(bot: Bot, chat: Chat) -> None:
    await chat.join("sim:bob")
    replies = await chat.say("sim:bob", "hello?")
    assert "no survey open for you" in replies[0]


async def test_invitation_says_how_many_questions_and_when_it_closes(
    bot: Bot, invited: Chat
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from babel.dates import format_date

    row = await bot.db.fetchone("SELECT closes_at FROM waves")
    closes = datetime.fromisoformat(row["closes_at"]).astimezone(ZoneInfo("Europe/London"))
    expected = format_date(closes.date(), "EEEE d MMMM", locale="en")
    assert f"6 questions, closes on {expected}." in await invitation_text(bot)


async def test_message_filters_follow_each_language_plural_rules(bot: Bot) -> None:
    from datetime import UTC, datetime

    template = bot.messages.env.from_string(
        '{{ n|plural(one="# pytanie", few="# pytania", many="# pytań", other="# pytania") }}'
        " / {{ when|date }}"
    )
    when = datetime(2026, 12, 4, 23, 30, tzinfo=UTC)  # Friday evening in London (GMT)
    assert template.render(locale="pl", n=3, when=when) == "3 pytania / piątek 4 grudnia"
    assert template.render(locale="pl", n=5, when=when).startswith("5 pytań")
    welsh = bot.messages.env.from_string("{{ when|date }}")
    assert welsh.render(locale="cy", when=datetime(2026, 12, 5, 12, tzinfo=UTC)) == (
        "Dydd Sadwrn 5 Rhagfyr"
    )
