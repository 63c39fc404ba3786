"""Every shipped message catalog: complete, renderable, with safe keywords, and the example
surveys and demo sign-up questions in every language the catalogs speak.

A new template in ``messages/en`` needs a context in ``CONTEXTS`` below and a translation in
every other locale; a new locale folder is checked by every test here without changes.
"""

from __future__ import annotations

import logging
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import settings_from_dict
from bot.demo import _FIELDS, demo_config
from bot.engine import render
from bot.engine.keywords import Keyword, KeywordRouter, normalise
from bot.messages import (
    TEMPLATE_SUFFIX,
    WORDS_FILE,
    MessageCatalog,
    RenderRefused,
    UnsafeTemplate,
    refused_parts,
)
from bot.resources import examples_dir, messages_dir
from bot.surveys.answers import normalise_reply
from bot.surveys.loader import load_survey_file, parse_survey
from bot.surveys.model import Survey
from tests.conftest import Chat, make_settings

MESSAGES = messages_dir()
LOCALES = sorted(p.name for p in MESSAGES.iterdir() if p.is_dir())
OTHER_LOCALES = [loc for loc in LOCALES if loc != "en"]
SURVEY_FILES = sorted((examples_dir() / "surveys").glob("*.toml"))
KINDS = [k.value for k in Keyword]  # stop, start, help, language
WORD_LISTS = ("yes", "no", "and", *KINDS)
# Translations are drafts until a fluent speaker signs them off: take a locale out of this
# set in the same change that sets reviewed = true and names the reviewer in its words.toml.
DRAFTS = {"cy", "pl", "ur", "ro"}
RTL = {"ur"}

CLOSES = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)  # Friday 4 December in Europe/London
ENGINE = {"panel_name": "Northvale Citizens' Panel", "contact": "the Northvale engagement team"}
QUESTION = {
    "number": 2,
    "total": 7,
    "text": "How easy was it?",
    "type": "choice",
    "options": ["Very easy", "Very hard"],
    "min": None,
    "max": None,
    "min_label": "",
    "max_label": "",
    "reask": False,
    "skipped": False,
    "valid_replies": "",
}


def _question(**changes: Any) -> dict[str, Any]:
    return {**QUESTION, **changes}


# Every template with the variables the engine gives it (engine.render adds panel_name and
# contact to each), one context per branch of its logic.
CONTEXTS: dict[str, list[dict[str, Any]]] = {
    "consent": [{"welcome": ""}, {"welcome": "Hello from the panel!"}],
    "consent_declined": [{}],
    "consent_reask": [{}],
    "declined_again": [{}],
    "impact_feedback_no": [{}],
    "impact_feedback_yes": [{}],
    "impact_update": [
        {
            "you_said": "Booking by phone was hard.",
            "we_did": "Every practice now offers online booking.",
            "finding_percent": 62,
            "finding_option": "Very hard",
            "finding_n": 412,
            "decided_by": "the integrated care board",
            "took_part": took_part,
            "participants": participants,
            "link": link,
            "feedback": feedback,
        }
        for took_part, participants, link, feedback in [
            (True, 412, "https://panel.example.org/impact", True),
            (True, 1, "", False),
            (False, 0, "", True),
        ]
    ],
    "field_default_text": [{"field_label": "age band"}],
    "field_question": [
        {"text": "What is your sex?", "options": ["Female", "Male"], "reask": False},
        {"text": "What is your sex?", "options": ["Female", "Male"], "reask": True},
    ],
    "help": [
        {"languages": languages, "in_survey": in_survey, "joined": joined}
        for languages in (False, True)
        for in_survey in (False, True)
        for joined in (False, True)
    ],
    "invitation": [
        {
            "intro": "Your local NHS wants to know.",
            "question": "Question 1 of 7: How easy was it?",
            "title": "Getting a GP appointment",
            "questions": 7,
            "closes_at": CLOSES,
        }
    ],
    "language_changed": [{}],
    "language_menu": [
        {"options": ["1 English", "2 Cymraeg"], "welcome": ""},
        {"options": ["1 English", "2 Cymraeg"], "welcome": "Hello from the panel!"},
    ],
    "linked": [{}],
    "no_survey": [{}],
    "opted_in": [{"already": True}, {"already": False}],
    "opted_out": [{}],
    "question": [
        _question(),
        _question(reask=True, valid_replies="1, 2"),
        _question(skipped=True),
        _question(type="multi"),
        _question(type="yesno", options=["Yes", "No"]),
        _question(type="scale", options=[], min=1, max=5),
        _question(type="scale", options=[], min=1, max=5, min_label="Poor", max_label="Good"),
        _question(type="number", options=[], min=0, max=365),
        _question(type="number", options=[]),
        _question(type="text", options=[]),
    ],
    "reminder": [
        {
            "title": "Getting a GP appointment",
            "question": "Question 3 of 7: ...",
            "closes_at": CLOSES,
        }
    ],
    "signup_complete": [{}],
    "signup_declined": [{}],
    "postcode_question": [{}],
    "postcode_reask": [{}],
    "signup_waitlisted": [{}],
    "waitlist_room": [{}],
    "survey_closed": [{}],
    "survey_complete": [{"thanks": ""}, {"thanks": "Thank you!"}],
    "welcome": [{}],
}

# "questions" in the invitation, in each language's CLDR plural forms.
PLURALS = {
    "en": {1: "1 question", 2: "2 questions", 7: "7 questions"},
    "cy": {
        0: "0 cwestiwn",
        1: "1 cwestiwn",
        2: "2 gwestiwn",
        3: "3 chwestiwn",
        6: "6 chwestiwn",
        7: "7 o gwestiynau",
    },
    "pl": {
        1: "1 pytanie",
        3: "3 pytania",
        5: "5 pytań",
        12: "12 pytań",
        22: "22 pytania",
        25: "25 pytań",
    },
    "ro": {1: "1 întrebare", 2: "2 întrebări", 19: "19 întrebări", 20: "20 de întrebări"},
    "ur": {1: "1 سوال", 5: "5 سوالات"},
}


@pytest.fixture(scope="module")
def catalog() -> MessageCatalog:
    return MessageCatalog([MESSAGES])


def own_words(locale: str) -> dict[str, Any]:
    """A locale's own words.toml, not merged over English (so that gaps show)."""
    with (MESSAGES / locale / WORDS_FILE).open("rb") as fh:
        return tomllib.load(fh)


def template_names(locale: str) -> set[str]:
    return {p.name for p in (MESSAGES / locale).iterdir() if p.name.endswith(TEMPLATE_SUFFIX)}


def example_surveys() -> list[Survey]:
    return [load_survey_file(path) for path in SURVEY_FILES]


def assert_rendered(text: str, where: str) -> None:
    assert text.strip(), f"{where}: empty"
    for leftover in ("{{", "}}", "{%", "%}", "{#", "#}"):
        assert leftover not in text, f"{where}: leftover {leftover!r} in {text!r}"
    # A None printed where a value was missing ("from None to None", "= None)").
    assert not re.search(r"\bNone\b(?! of)", text), f"{where}: shows None: {text!r}"


# --- completeness ---------------------------------------------------------------------------


def test_english_and_the_panel_languages_are_shipped() -> None:
    assert {"en", "cy", "pl", "ur", "ro"} <= set(LOCALES)


def test_every_english_template_has_a_context_here() -> None:
    names = {n.removesuffix(TEMPLATE_SUFFIX) for n in template_names("en")}
    assert names == set(CONTEXTS)


@pytest.mark.parametrize("locale", OTHER_LOCALES)
def test_a_catalog_has_exactly_the_english_templates(locale: str) -> None:
    assert template_names(locale) == template_names("en")


@pytest.mark.parametrize("locale", LOCALES)
def test_words_have_every_english_key_and_a_catalog_table(locale: str) -> None:
    english, words = own_words("en"), own_words(locale)
    missing = set(english) - set(words)
    assert not missing, f"{locale}/words.toml lacks {sorted(missing)}"
    for key in WORD_LISTS:
        assert isinstance(words[key], list) and words[key], f"{locale}: {key} is empty"
        assert all(isinstance(w, str) and w.strip() for w in words[key]), f"{locale}: {key}"
    for key in ("language_name", "yes_label", "no_label"):
        assert isinstance(words[key], str) and words[key].strip(), f"{locale}: {key}"
    assert isinstance(words["catalog"], dict)
    assert isinstance(words["catalog"]["reviewed"], bool)


@pytest.mark.parametrize("locale", LOCALES)
def test_language_name_is_the_one_the_menu_shows(locale: str) -> None:
    assert own_words(locale)["language_name"] == render.language_name(locale)


@pytest.mark.parametrize("locale", LOCALES)
def test_review_status(locale: str) -> None:
    table = own_words(locale)["catalog"]
    if locale == "en":
        assert table["reviewed"] is True
    elif locale in DRAFTS:
        assert table["reviewed"] is False, f"{locale} is reviewed: take it out of DRAFTS"
        assert table.get("reviewer", "") == ""
    else:
        assert table["reviewed"] is False or table.get("reviewer"), (
            f"{locale} is marked reviewed without naming its reviewer"
        )
    assert table.get("direction", "ltr") == ("rtl" if locale in RTL else "ltr")


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_template_renders_in_every_locale(
    catalog: MessageCatalog, locale: str, name: str
) -> None:
    for context in CONTEXTS[name]:
        text = catalog.render(name, locale, **ENGINE, **context)
        assert_rendered(text, f"{locale}/{name} {context}")
    assert not [key for key in catalog.fallbacks if key[1] == locale], "fell back to another"


@pytest.mark.parametrize("locale", LOCALES)
def test_branches_render_differently(catalog: MessageCatalog, locale: str) -> None:
    """A translation keeps the logic: each branch says something of its own."""
    for name, contexts in CONTEXTS.items():
        texts = [catalog.render(name, locale, **ENGINE, **c) for c in contexts]
        assert len(set(texts)) == len(texts), f"{locale}/{name}: two branches give one text"


@pytest.mark.parametrize("locale", LOCALES)
def test_numbered_options_start_lines_with_ascii_digits(
    catalog: MessageCatalog, locale: str
) -> None:
    text = catalog.render("question", locale, **ENGINE, **_question(options=["A", "B", "C"]))
    assert text.splitlines()[-3:] == ["1 A", "2 B", "3 C"]
    assert not re.search(r"[٠-٩۰-۹]", text)  # no Arabic-Indic digits: replies use 0-9


@pytest.mark.parametrize(
    ("locale", "count", "expected"),
    [(locale, count, text) for locale, forms in PLURALS.items() for count, text in forms.items()],
)
def test_invitation_counts_questions_in_each_plural_form(
    catalog: MessageCatalog, locale: str, count: int, expected: str
) -> None:
    context = {**CONTEXTS["invitation"][0], "questions": count}
    line = catalog.render("invitation", locale, **ENGINE, **context).splitlines()[1]
    assert line.startswith(expected) and not line[len(expected)].isalpha(), line


def test_every_shipped_locale_has_plural_expectations() -> None:
    assert set(PLURALS) == set(LOCALES)


@pytest.mark.parametrize("locale", sorted(RTL))
def test_right_to_left_text_has_no_latin_words_of_its_own(locale: str) -> None:
    """Latin words in a right-to-left line jumble it; only variables (names) may be Latin."""
    for path in sorted((MESSAGES / locale).glob(f"*{TEMPLATE_SUFFIX}")):
        literal = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "", path.read_text(encoding="utf-8"))
        assert not re.search(r"[A-Za-z]", literal), f"{path.name}: {literal!r}"


# --- keywords -------------------------------------------------------------------------------


def keywords_by_kind() -> dict[str, dict[str, str]]:
    """kind -> {normalised word: the locale listing it}."""
    found: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for locale in LOCALES:
        for kind in KINDS:
            for word in own_words(locale)[kind]:
                found[kind].setdefault(normalise(word), locale)
    return found


def answer_words() -> dict[str, str]:
    """Every yes and no word, in every locale, normalised both ways the engine reads them."""
    found: dict[str, str] = {}
    for locale in LOCALES:
        for key in ("yes", "no"):
            for word in own_words(locale)[key]:
                for form in (normalise(word), normalise_reply(word)):
                    found[form] = f"{locale} {key}"
    return found


def replies_that_are_answers() -> dict[str, str]:
    """Texts a panellist may send as an answer: option and label texts of the example
    surveys and demo fields, and language names, in every locale."""
    found: dict[str, str] = {}
    for survey in example_surveys():
        for question in survey.questions:
            for option in question.options:
                for locale, text in option.text.items():
                    found[normalise(text)] = f"{survey.id} {question.id} {locale}"
            for labels in (question.min_label, question.max_label):
                for locale, text in labels.items():
                    found[normalise(text)] = f"{survey.id} {question.id} {locale}"
    for field in _FIELDS:
        for locale, labels in field.get("labels", {}).items():
            for label in labels:
                found[normalise(label)] = f"field {field['name']} {locale}"
    for locale in LOCALES:
        found[normalise(own_words(locale)["language_name"])] = f"language {locale}"
        for word in own_words(locale)["and"]:
            found[normalise(word)] = f"{locale} and"
    return found


def test_no_keyword_is_a_yes_or_no_word_or_a_number() -> None:
    answers = answer_words()
    for kind, words in keywords_by_kind().items():
        for word, locale in words.items():
            assert word not in answers, f"{locale} {kind} {word!r} is also {answers[word]}"
            assert not normalise_reply(word).replace(" ", "").isdigit(), f"{kind} {word!r}"


def test_no_keyword_is_an_option_or_label_text() -> None:
    answers = replies_that_are_answers()
    for kind, words in keywords_by_kind().items():
        for word, locale in words.items():
            assert word not in answers, f"{locale} {kind} {word!r} is an answer: {answers[word]}"


def test_no_word_is_two_kinds_of_keyword() -> None:
    seen: dict[str, str] = {}
    for kind, words in keywords_by_kind().items():
        for word, locale in words.items():
            assert word not in seen, f"{locale} {kind} {word!r} is also a {seen[word]} word"
            seen[word] = kind


@pytest.mark.parametrize("locale", LOCALES)
def test_yes_and_no_words_do_not_overlap(locale: str) -> None:
    """A locale's words are read together with the English ones."""
    english = own_words("en")
    words = own_words(locale)
    yes = {normalise_reply(w) for w in [*words["yes"], *english["yes"]]}
    no = {normalise_reply(w) for w in [*words["no"], *english["no"]]}
    assert not yes & no


def test_every_keyword_is_recognised_as_its_kind(catalog: MessageCatalog) -> None:
    router = KeywordRouter(catalog, LOCALES)
    for kind, words in keywords_by_kind().items():
        for word in words:
            assert len(word) <= 40
            assert router.classify(word) == Keyword(kind), word
            assert router.classify(word.upper() + "!") == Keyword(kind), word


@pytest.mark.parametrize("locale", LOCALES)
def test_keywords_shown_to_panellists_work(catalog: MessageCatalog, locale: str) -> None:
    """Every upper-case word a message asks for (STOP, DECHRAU, POMOC...) is a keyword or a
    yes word (or, where consent is asked again, a no word) that the engine understands."""
    router = KeywordRouter(catalog, LOCALES)
    yes = catalog.all_words("yes", {locale, "en"}) | catalog.all_words("no", {locale, "en"})
    for name, contexts in CONTEXTS.items():
        for context in contexts:
            text = catalog.render(name, locale, **ENGINE, **context)
            text = text.replace(ENGINE["panel_name"], "").replace(ENGINE["contact"], "")
            for word in re.findall(r"\b[^\W\d_]{2,}\b", text):
                if word.isupper() and word not in {"NHS", "GP", "GIG"}:
                    reply = normalise(word)
                    assert router.classify(word) or reply in yes, f"{locale}/{name}: {word}"
    if locale in RTL:  # no case: the words are quoted instead
        for name in ("consent", "opted_out", "help"):
            text = catalog.render(name, locale, **ENGINE, **CONTEXTS[name][-1])
            for word in re.findall(r'"([^"]+)"', text):
                assert router.classify(word) or normalise(word) in yes, f"{name}: {word}"


# --- surveys and demo sign-up questions -----------------------------------------------------


@pytest.mark.parametrize("path", SURVEY_FILES, ids=lambda p: p.name)
def test_example_surveys_validate_in_every_locale(catalog: MessageCatalog, path: Path) -> None:
    survey = load_survey_file(path)
    assert set(survey.locales) == set(LOCALES)
    for locale in LOCALES:
        assert locale in survey.title and locale in survey.intro
        assert not survey.thanks or locale in survey.thanks
        for question in survey.questions:
            assert locale in question.text, f"{question.id} {locale}"
            texts = [normalise_reply(option.text[locale]) for option in question.options]
            assert len(set(texts)) == len(texts), f"{question.id} {locale}: options repeat"
            message = render.question_message(catalog, survey, question, locale)
            assert_rendered(message.text, f"{path.name} {question.id} {locale}")
            assert question.localized_text(locale) in message.text
    assert not [key for key in catalog.fallbacks if key[1] in LOCALES]


def test_survey_texts_are_values_never_templates(catalog: MessageCatalog) -> None:
    # A survey's words go into a message as values, which Jinja2 never runs as template code.
    hostile = "{{ panel_name.__class__.__mro__ }} {% for c in x %}run{% endfor %}"
    survey = parse_survey(
        {
            "id": "hostile",
            "title": {"en": hostile},
            "locales": ["en"],
            "intro": {"en": hostile},
            "questions": [
                {
                    "id": "q",
                    "type": "choice",
                    "text": {"en": hostile},
                    "options": [
                        {"id": "a", "text": {"en": hostile}},
                        {"id": "b", "text": {"en": "{{ 7 * 7 }}"}},
                    ],
                }
            ],
        }
    )
    message = render.question_message(catalog, survey, survey.questions[0], "en")
    assert message.text.count(hostile) == 2  # the question and its option, as written
    assert "{{ 7 * 7 }}" in message.text and "49" not in message.text
    invitation = catalog.render(
        "invitation", "en", **{**ENGINE, **CONTEXTS["invitation"][-1], "intro": hostile}
    )
    assert hostile in invitation


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{{ 'x' * 100000000 }}", "the * operator"),
        ("{{ [0] * n * n }}", "the * operator"),
        ("{{ 9 ** 100000 }}", "the ** operator"),
        ("{{ n ** n ** n ** n }}", "the ** operator"),
        ("{% for i in range(10 ** 9) %}{% endfor %}", "range(), the ** operator"),
        # Issue 9, follow-up: each of these ran out of memory or time under the sandbox alone.
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "namespace(), range(), {% set %} and 1 more",
        ),
        ("{{ 'x'|center(999999999) }}", "|center"),
        ("{{ n|indent(999999999) }}", "|indent"),
        ("{{ n|wordwrap(999999999) }}", "|wordwrap"),
        ("{{ range(99999)|join(range(99999)|join) }}", "range(), |join(...)"),
        ("{{ n|join(n|join(n|join)) }}", "|join(...) with anything but a short quoted separator"),
        (
            "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
            "range()",
        ),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "m(), {% macro %}"),
        ("{% for x in n recursive %}{{ loop(x) }}{% endfor %}", "loop(), recursive loops"),
        (
            "{% for a in n %}{% for b in n %}{% for c in n %}{% endfor %}{% endfor %}{% endfor %}",
            "more than 2 loops inside one another",
        ),
        ("{% set s = n ~ n %}{% set s = s ~ s %}{{ s }}", "{% set %}"),
        ("{% with s = n ~ n %}{{ s }}{% endwith %}", "{% with %}"),
        ("{% include 'en/greedy.txt.j2' %}", "{% include %}"),
        ("{{ '%999999999s' % n }}", "the % operator"),
        ("{{ n|replace('', n) }}", "|replace"),
        ("{{ n.upper() }}", ".upper()"),
        ("{{ n|plural(one='# day') }}", "|plural(...) without other="),  # a KeyError at send
        ("{{ n|plural(one=n, other='#') }}", "|plural(...) with anything but quoted forms"),
        ("{{ n|date('qqqqqqq') }}", "|date('qqqqqqq'), a format Babel cannot read"),
        ("{{ n|datetime(n) }}", "|datetime(...) with anything but a short quoted format"),
        (
            "{{ n|lower|lower|lower|lower|lower|lower|lower|lower|lower|lower"
            + "|lower" * 30
            + " }}",
            "more than 30 tags or expressions inside one another",
        ),
    ],
)
def test_a_template_that_could_build_a_huge_value_is_refused_before_it_runs(
    tmp_path: Path, source: str, refused: str
) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "greedy.txt.j2").write_text(source, encoding="utf-8")
    with pytest.raises(UnsafeTemplate) as caught:
        MessageCatalog([tmp_path]).env.get_template("en/greedy.txt.j2")
    assert caught.value.message.startswith(f"uses {refused}")
    assert caught.value.message.endswith(", which no message template may use")


def test_brackets_nested_past_what_jinja_can_parse_are_one_refusal(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    source = "{{ " + "(" * 500 + "n" + ")" * 500 + " }}"  # RecursionError in Jinja's parser
    (tmp_path / "en" / "deep.txt.j2").write_text(source, encoding="utf-8")
    with pytest.raises(UnsafeTemplate, match="nests tags or brackets too deeply"):
        MessageCatalog([tmp_path]).env.get_template("en/deep.txt.j2")


def test_every_shipped_template_is_within_the_allowlist() -> None:
    catalog = MessageCatalog([MESSAGES])
    paths = sorted(MESSAGES.glob(f"*/*{TEMPLATE_SUFFIX}"))
    assert len(paths) > 100
    for path in paths:
        tree = catalog.env.parse(path.read_text(encoding="utf-8"))
        assert refused_parts(tree) == [], path


def test_what_a_translator_may_write_still_compiles_and_renders(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    source = (
        "{% for a in options if a != 'x' %}{% for b in options %}{{ loop.index }}"
        "{% endfor %}{{ a|upper }}{% else %}none{% endfor %}"
        "{{ options|join(', ') }} {{ options|length }} {{ who|default('you')|title }}"
        "{% if n is not none and n > 1 and who in ('a', 'b') %} many{% endif %}"
        "{{ ' ' ~ n|plural(one='# day', other='# days') }} {{ -n + 1 - 1 }} {{ options[0][:1] }}"
        "{{ ' soon' if n else '' }}"
    )
    (tmp_path / "en" / "fine.txt.j2").write_text(source, encoding="utf-8")
    text = MessageCatalog([tmp_path]).render("fine", "en", options=["p", "q"], n=2, who="b")
    assert text == "12P12Qp, q 2 B many 2 days -2 p soon"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abcdefghij" * 15, "its text passed 10,000 characters"),  # 150 x 150 x 2 characters
        ("abcdefghij" * 30, "a loop over more than 200 items"),
    ],
)
def test_a_translation_stopped_while_rendering_falls_back_to_the_next_locale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str, reason: str
) -> None:
    for locale in ("en", "cy"):
        (tmp_path / locale).mkdir()
    (tmp_path / "en" / "note.txt.j2").write_text("Note: {{ text }}\n", encoding="utf-8")
    (tmp_path / "cy" / "note.txt.j2").write_text(
        "{% for a in text %}{% for b in text %}{{ a }}{{ b }}{% endfor %}{% endfor %}\n",
        encoding="utf-8",
    )
    catalog = MessageCatalog([tmp_path])

    with caplog.at_level(logging.INFO, logger="bot.messages"):
        first = catalog.render("note", "cy", text=value)
        second = catalog.render("note", "cy", text="ab")

    assert first == second.replace("ab", value) == f"Note: {value}"
    assert catalog.refused == {"cy/note": f"stopped while rendering: {reason}"}
    assert f"message cy/note refused, stopped while rendering: {reason}" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_value_that_exhausts_memory_while_rendering_is_a_refusal(tmp_path: Path) -> None:
    # MemoryError and RecursionError are refusals (RenderRefused, a SecurityError) whatever
    # raises them: here a value whose text cannot be built.
    class Huge:
        def __str__(self) -> str:
            raise MemoryError

    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "note.txt.j2").write_text("{{ text }}", encoding="utf-8")
    template = MessageCatalog([tmp_path]).env.get_template("en/note.txt.j2")
    with pytest.raises(RenderRefused, match="it ran out of memory"):
        MessageCatalog.render_template(template, text=Huge())


def test_demo_speaks_every_locale_in_every_field(tmp_path: Path) -> None:
    config = demo_config(8080)
    assert config["bot"]["locales"][0] == "en"
    assert set(config["bot"]["locales"]) == set(LOCALES)
    settings = settings_from_dict(config, base_dir=tmp_path)
    catalog = MessageCatalog([MESSAGES])
    for field in settings.panel.fields:
        assert set(field.text) == set(LOCALES), field.name
        assert set(field.labels) == set(LOCALES), field.name
        for locale in LOCALES:
            labels = field.labels[locale]
            assert len(labels) == len(field.values), f"{field.name} {locale}"
            assert len({normalise_reply(label) for label in labels}) == len(labels)
            message = render.field_message(catalog, field, locale, fallback="en", reask=True)
            assert_rendered(message.text, f"{field.name} {locale}")
            assert field.text[locale] in message.text


# --- through the engine ---------------------------------------------------------------------


@pytest.mark.parametrize("locale", OTHER_LOCALES)
async def test_sign_up_and_stop_in_each_language(tmp_path: Path, locale: str) -> None:
    settings = make_settings(tmp_path, bot={"locales": LOCALES})
    bot = await Bot.create(settings)
    catalog = bot.messages
    words = own_words(locale)
    try:
        chat = Chat(bot)
        number = bot.locales.index(locale) + 1
        menu = await chat.say("sim:ana", "hello")
        assert f"{number} {words['language_name']}" in menu[0]
        consent = await chat.say("sim:ana", str(number))
        assert consent[0] == catalog.render("consent", locale, **_engine_names(bot), welcome="")
        first_field = await chat.say("sim:ana", words["yes"][0])
        assert "1 16-24" in first_field[0]
        help_text = await chat.say("sim:ana", words["help"][0].upper())
        assert help_text[0] == catalog.render(
            "help", locale, **_engine_names(bot), languages=True, in_survey=True, joined=True
        )
        stopped = await chat.say("sim:ana", words["stop"][0].capitalize() + ".")
        assert stopped[0] == catalog.render("opted_out", locale, **_engine_names(bot))
        rejoined = await chat.say("sim:ana", words["start"][0])
        assert rejoined[0] == catalog.render(
            "opted_in", locale, **_engine_names(bot), already=False
        )
    finally:
        await bot.stop()


def _engine_names(bot: Bot) -> dict[str, str]:
    return {"panel_name": bot.settings.bot.name, "contact": bot.settings.bot.contact}


def test_urdu_keywords_match_when_typed_on_an_arabic_keyboard() -> None:
    from bot.engine.keywords import Keyword, KeywordRouter
    from bot.messages import MessageCatalog
    from bot.resources import messages_dir

    catalog = MessageCatalog([messages_dir()])
    router = KeywordRouter(catalog, ["en", "ur"])
    stop = "رکیں"  # Urdu keheh (U+06A9) and farsi yeh (U+06CC)
    assert stop in catalog.words("ur")["stop"]
    arabic_keyboard = stop.replace("\u06a9", "\u0643").replace("\u06cc", "\u064a")
    assert arabic_keyboard != stop
    assert router.classify(arabic_keyboard + "۔") == Keyword.STOP
