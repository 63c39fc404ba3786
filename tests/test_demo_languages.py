"""The demo panel end to end in each shipped language: menu, consent, sign-up, whole survey."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app import Bot
from bot.config import settings_from_dict
from bot.demo import DEMO_SURVEY, demo_config
from bot.engine import render
from bot.engine.waves import launch
from bot.messages import MessageCatalog
from bot.resources import examples_dir, messages_dir
from bot.surveys.loader import load_survey_file
from tests.conftest import Chat, add_survey

LANGUAGES = ["en", "cy", "pl", "ur", "ro"]


@pytest.mark.parametrize("locale", LANGUAGES)
async def test_the_demo_survey_in_each_language(tmp_path: Path, locale: str) -> None:
    settings = settings_from_dict(demo_config(8080), base_dir=tmp_path)
    bot = await Bot.create(settings)
    try:
        await add_survey(bot, examples_dir() / "surveys" / "gp-access.toml")
        await launch(bot, DEMO_SURVEY, include_new=True)
        chat = Chat(bot)
        words = bot.messages.words(locale)
        survey_row = await bot.db.fetchone("SELECT definition FROM surveys")
        survey = json.loads(survey_row["definition"])

        menu = await chat.say("sim:p", "hello")
        assert "Cymraeg" in menu[0] and "Polski" in menu[0] and "اردو" in menu[0]
        consent = await chat.say("sim:p", str(LANGUAGES.index(locale) + 1))
        assert consent == [bot.messages.render("consent", locale, welcome="")]
        first_field = await chat.say("sim:p", words["yes"][0])  # consent in their own word
        assert settings.panel.fields[0].text[locale] in first_field[0]
        replies: list[str] = []
        for _ in settings.panel.fields:
            replies = await chat.say("sim:p", "1")
        joined, invitation = replies
        assert joined == bot.messages.render(
            "signup_complete", locale, panel_name=settings.bot.name
        )
        assert survey["intro"][locale] in invitation
        assert survey["questions"][0]["text"][locale] in invitation

        # ease: "Very hard" by its text in this language; why_hard: two options by number.
        very_hard = next(o for o in survey["questions"][0]["options"] if o["id"] == "very_hard")
        asked = await chat.say("sim:p", very_hard["text"][locale].upper())
        assert survey["questions"][1]["text"][locale] in asked[0]
        for reply in ("1 3", "10", "4", words["yes"][0], "1"):
            asked = await chat.say("sim:p", reply)
        thanks = await chat.say("sim:p", "🙂 " + survey["questions"][-1]["text"][locale][:10])
        assert thanks == [survey["thanks"][locale]]
        answers = {
            r["question_id"]: json.loads(r["value"])
            for r in await bot.db.fetchall("SELECT question_id, value FROM answers")
        }
        assert answers["ease"] == "very_hard"
        assert answers["why_hard"] == ["phone_busy", "online_hard"]
        assert answers["wait_days"] == 10
        assert answers["satisfaction"] == 4
        assert answers["used_online"] == "yes"
        assert answers["online_app"] == "nhs_app"
        assert answers["improve"].startswith("🙂")
    finally:
        await bot.stop()


def _sentences(text: str) -> list[str]:
    """A message's sentences and lines, normalised, for spotting one said twice."""
    parts = re.split(r"(?<=[.?!۔؟])\s+|\n+", text)
    return [" ".join(p.casefold().split()).rstrip(".!۔") for p in parts if len(p.strip()) > 3]


@pytest.mark.parametrize("locale", LANGUAGES)
@pytest.mark.parametrize("path", sorted((examples_dir() / "surveys").glob("*.toml")))
def test_example_surveys_do_not_repeat_what_the_bot_says_anyway(locale: str, path: Path) -> None:
    """The question template already says "Reply in your own words." and "e.g. 1 3", and the
    invitation already says how many questions there are: a survey text must not again."""
    catalog = MessageCatalog([messages_dir()])
    survey = load_survey_file(path)
    for question in survey.questions:
        text = render.question_message(catalog, survey, question, locale).text
        sentences = _sentences(text)
        assert len(sentences) == len(set(sentences)), f"{question.id}: {text}"
        assert text.count("1 3") <= 1, f"{question.id}: {text}"
    intro = survey.localized_intro(locale, "en")
    invitation = catalog.render(
        "invitation",
        locale,
        intro=intro,
        question="",
        questions=len(survey.questions),
        closes_at=datetime(2026, 12, 4, 17, 0, tzinfo=UTC),
        panel_name="Northvale",
        contact="",
    )
    # Said once, by the invitation ("7 questions, closes on..."), never again in the intro.
    assert not re.search(rf"(?<!\d){len(survey.questions)}(?!\d)", intro), invitation
