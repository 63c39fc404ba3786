"""Reading panellists' replies as answers: every type, many scripts, odd and huge replies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.resources import examples_dir
from bot.surveys import (
    InvalidAnswer,
    Option,
    Question,
    QuestionType,
    Survey,
    load_survey_file,
    normalise_reply,
    parse_answer,
    parse_survey,
    valid_replies,
)

URDU = {
    "very_easy": "بہت آسان",
    "fairly_easy": "کافی آسان",
    "fairly_hard": "کافی مشکل",
    "very_hard": "بہت مشکل",
}
WORDS = {
    "en": {"yes_words": ["yes", "y", "yeah"], "no_words": ["no", "n", "nope"]},
    "ur": {"yes_words": ["ہاں", "جی", "yes"], "no_words": ["نہیں", "no"]},
}


def _survey() -> Survey:
    """The GP access survey, with an Urdu translation added for these tests."""
    data = load_survey_file(examples_dir() / "surveys" / "gp-access.toml").to_dict()
    data["locales"] = ["en", "cy", "pl", "ur", "ro"]
    for table in ("title", "intro", "thanks"):
        data[table]["ur"] = "اردو"
    for question in data["questions"]:
        question["text"]["ur"] = "سوال؟"
        for option in question.get("options", ()):
            option["text"]["ur"] = URDU.get(option["id"], option["text"]["en"] + " (ur)")
        for label in ("min_label", "max_label"):
            if label in question:
                question[label]["ur"] = "بہت برا" if label == "min_label" else "بہت اچھا"
    return parse_survey(data)


SURVEY = _survey()


def answer(qid: str, text: str, locale: str = "en", **extra: Any) -> Any:
    words = WORDS.get(locale, WORDS["en"])
    return parse_answer(SURVEY.question(qid), text, locale=locale, **words, **extra)


def invalid(qid: str, text: str, locale: str = "en") -> InvalidAnswer:
    with pytest.raises(InvalidAnswer) as caught:
        answer(qid, text, locale)
    return caught.value


# --- choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "locale", "expected"),
    [
        ("2", "en", "fairly_easy"),
        (" 2 ", "en", "fairly_easy"),
        ("2.", "en", "fairly_easy"),
        ("Fairly easy", "en", "fairly_easy"),
        ("FAIRLY   EASY!", "en", "fairly_easy"),
        ("2. Fairly easy", "en", "fairly_easy"),  # copied from the numbered list
        ("２", "en", "fairly_easy"),  # full-width digit
        ("٢", "ur", "fairly_easy"),  # Arabic-Indic digit
        ("۴", "ur", "very_hard"),  # Extended Arabic-Indic digit (Urdu keyboards)
        ("\u200f۴\u200f", "ur", "very_hard"),  # wrapped in right-to-left marks
        ("بہت مشکل", "ur", "very_hard"),  # the option's text in the panellist's language
        ("بہت مشکل۔", "ur", "very_hard"),  # with an Urdu full stop
        ("Very hard", "ur", "very_hard"),  # ...or in the fallback language
        ("very_hard", "en", "very_hard"),  # an option id, as a chat button may send
    ],
)
def test_choice(reply: str, locale: str, expected: str) -> None:
    assert answer("ease", reply, locale) == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("6", "out_of_range"),
        ("0", "out_of_range"),
        ("3. Fairly easy", "not_an_option"),  # number and text disagree: ask again
        ("easy", "not_an_option"),
        ("😀", "not_an_option"),
        ("", "empty"),
        ("  ..  ", "empty"),
        ("2" * 5000, "not_an_option"),
    ],
)
def test_choice_refuses(reply: str, reason: str) -> None:
    assert invalid("ease", reply).reason == reason


# --- multi --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1 3", ["phone_busy", "online_hard"]),
        ("1,3", ["phone_busy", "online_hard"]),
        ("1, 3", ["phone_busy", "online_hard"]),
        ("1 and 3", ["phone_busy", "online_hard"]),
        ("1&3", ["phone_busy", "online_hard"]),
        ("3 1", ["phone_busy", "online_hard"]),  # stored in option order
        ("3, 1, 3", ["phone_busy", "online_hard"]),  # and without repeats
        ("4", ["times"]),
        ("phone lines busy", ["phone_busy"]),
        ("Phone lines busy, No appointments left", ["phone_busy", "no_slots"]),
        ("Phone lines busy and 5", ["phone_busy", "other"]),
        ("١ ٣", ["phone_busy", "online_hard"]),
        ("1،3", ["phone_busy", "online_hard"]),  # Arabic comma
        ("1 3.", ["phone_busy", "online_hard"]),
    ],
)
def test_multi(reply: str, expected: list[str]) -> None:
    assert answer("why_hard", reply) == expected


def test_multi_whole_reply_matching_one_option_with_spaces_commas_and_and() -> None:
    question = Question(
        "help",
        QuestionType.MULTI,
        {"en": "Help?"},
        options=(
            _option("lifts", "Lifts, buses and trains"),
            _option("buses", "Buses"),
            _option("trains", "Trains"),
        ),
    )
    kwargs = {"locale": "en", "yes_words": (), "no_words": ()}
    assert parse_answer(question, "lifts, buses and trains", **kwargs) == ["lifts"]
    assert parse_answer(question, "buses and trains", **kwargs) == ["buses", "trains"]


def test_multi_and_words_of_the_panellists_language() -> None:
    reply = "1 اور 3"
    with pytest.raises(InvalidAnswer):
        answer("why_hard", reply, "ur")
    assert answer("why_hard", reply, "ur", and_words=("اور", "and")) == [
        "phone_busy",
        "online_hard",
    ]


@pytest.mark.parametrize("reply", ["13", "1 6", "0", ",,", "1 and", "1 or 3", "👍👍", "1" * 5000])
def test_multi_refuses(reply: str) -> None:
    invalid("why_hard", reply)


# --- scale --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        *[("4", 4), (" 4 ", 4), ("4/5", 4), ("4 / 5", 4), ("٤", 4), ("1", 1), ("5", 5)],
        *[("Very good", 5), ("very poor", 1), ("بہت اچھا", 5)],  # the end labels, typed
    ],
)
def test_scale(reply: str, expected: int) -> None:
    assert answer("satisfaction", reply, "ur" if not reply.isascii() else "en") == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("6", "out_of_range"),
        ("0", "out_of_range"),
        ("-1", "out_of_range"),
        ("3.5", "not_a_number"),
        ("4/10", "not_a_number"),  # only the scale's own top makes sense after "/"
        ("4 out of 5", "not_a_number"),
        ("four", "not_a_number"),
        ("⭐⭐⭐⭐", "not_a_number"),
        ("4" * 5000, "not_a_number"),
    ],
)
def test_scale_refuses(reply: str, reason: str) -> None:
    assert invalid("satisfaction", reply).reason == reason


# --- yes/no -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "locale", "expected"),
    [
        ("Yes", "en", "yes"),
        (" YES! ", "en", "yes"),
        ("y", "en", "yes"),
        ("1", "en", "yes"),
        ("2", "en", "no"),
        ("No.", "en", "no"),
        ("nope", "en", "no"),
        ("ہاں", "ur", "yes"),
        ("نہیں۔", "ur", "no"),
        ("١", "ur", "yes"),
    ],
)
def test_yes_no(reply: str, locale: str, expected: str) -> None:
    assert answer("used_online", reply, locale) == expected


@pytest.mark.parametrize("reply", ["maybe", "3", "yes no", "👍", "", "y" * 5000])
def test_yes_no_refuses(reply: str) -> None:
    invalid("used_online", reply)


# --- number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        *[("3", 3), (" 3 ", 3), ("0", 0), ("365", 365), ("3.5", 3.5), (".5", 0.5), ("3.", 3)],
        *[("٣", 3), ("۱۲", 12), ("３", 3), ("+4", 4), ("007", 7)],
    ],
)
def test_number(reply: str, expected: int | float) -> None:
    value = answer("wait_days", reply)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("366", "out_of_range"),
        ("-1", "out_of_range"),
        ("1,000", "not_a_number"),
        ("3 days", "not_a_number"),
        ("1e3", "not_a_number"),
        ("nan", "not_a_number"),
        ("inf", "not_a_number"),
        ("three", "not_a_number"),
        ("🙂", "not_a_number"),
        ("9" * 5000, "not_a_number"),
    ],
)
def test_number_refuses(reply: str, reason: str) -> None:
    assert invalid("wait_days", reply).reason == reason


def test_number_without_bounds_takes_negatives_and_decimals() -> None:
    question = Question("temp", QuestionType.NUMBER, {"en": "Temperature?"})
    kwargs = {"locale": "en", "yes_words": (), "no_words": ()}
    assert parse_answer(question, "-2.5", **kwargs) == -2.5
    assert parse_answer(question, "\u22124", **kwargs) == -4  # a typographic minus


# --- text ---------------------------------------------------------------------------------


def test_text_is_trimmed_and_kept_as_written() -> None:
    assert answer("improve", "  More GP appointments!  ") == "More GP appointments!"
    assert answer("improve", "👍") == "👍"
    urdu = "مزید ڈاکٹر چاہئیں"
    assert answer("improve", f"  {urdu}\n") == urdu


def test_text_longer_than_max_length_is_cut_not_refused() -> None:
    long = "x" * 5000
    assert answer("improve", long) == "x" * SURVEY.question("improve").max_length == "x" * 500


@pytest.mark.parametrize("reply", ["", "   ", "\n\t", "...", "\u200f"])
def test_empty_text_is_refused(reply: str) -> None:
    assert invalid("improve", reply).reason == "empty"


# --- valid replies and normalising -----------------------------------------------------------


def test_valid_replies_for_the_re_ask_message() -> None:
    replies = {q.id: valid_replies(q, "en") for q in SURVEY.questions}
    assert replies == {
        "ease": ["1", "2", "3", "4", "5"],
        "why_hard": ["1", "2", "3", "4", "5"],
        "wait_days": ["0-365"],
        "satisfaction": ["1-5"],
        "used_online": ["1", "2"],
        "online_app": ["1", "2", "3"],
        "improve": [],
    }
    negative = Question("t", QuestionType.SCALE, {"en": "?"}, min=-2, max=2)
    assert valid_replies(negative, "en") == ["-2 to 2"]
    assert valid_replies(Question("n", QuestionType.NUMBER, {"en": "?"}, min=1), "en") == ["1+"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("  Yes!! ", "yes"),
        ("ＹＥＳ", "yes"),
        ("\u202bنہیں\u202c۔", "نہیں"),
        ("١٢٣", "123"),
        ("۴۵", "45"),
        ("१२", "12"),  # Devanagari digits
        ("a   b\n c", "a b c"),
        ("STRASSE", "strasse"),
    ],
)
def test_normalise_reply(reply: str, expected: str) -> None:
    assert normalise_reply(reply) == expected


# --- properties ---------------------------------------------------------------------------

relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
replies = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="0123456789 ,&/.-+٠١٢٣۴۵۶ and", max_size=30),
    st.sampled_from(["😀", "👍🏽", "\u200f", "نہیں", "x" * 5000, "1" * 5000]),
)


@relaxed
@given(st.sampled_from([q.id for q in SURVEY.questions]), replies, st.sampled_from(["en", "ur"]))
def test_any_reply_gives_a_valid_value_or_invalid_answer(qid: str, reply: str, locale: str) -> None:
    question = SURVEY.question(qid)
    try:
        value = answer(qid, reply, locale)
    except InvalidAnswer:
        return
    if question.type is QuestionType.CHOICE:
        assert value in question.option_ids
    elif question.type is QuestionType.MULTI:
        assert value and value == [o for o in question.option_ids if o in value]
    elif question.type is QuestionType.SCALE:
        assert isinstance(value, int) and question.min <= value <= question.max
    elif question.type is QuestionType.YESNO:
        assert value in ("yes", "no")
    elif question.type is QuestionType.NUMBER:
        assert question.min <= value <= question.max
    else:
        assert value and len(value) <= question.max_length


def _option(oid: str, text: str) -> Option:
    return Option(oid, {"en": text})
