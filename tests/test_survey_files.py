"""Survey files: loading, every validation rule, the stored form, and skip logic."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.resources import examples_dir
from bot.surveys import (
    Option,
    Question,
    QuestionType,
    Survey,
    SurveyError,
    SurveyProblem,
    load_survey_file,
    parse_survey,
    pick,
)

EXAMPLES = examples_dir() / "surveys"


def base_survey(**top: Any) -> dict[str, Any]:
    """A small valid survey in the file's shape, as tomllib would hand it over."""
    data: dict[str, Any] = {
        "id": "test-survey",
        "title": "Test",
        "locales": ["en", "cy"],
        "intro": {"en": "Hello", "cy": "Helo"},
        "questions": [
            {
                "id": "ease",
                "type": "choice",
                "text": {"en": "How easy?", "cy": "Pa mor hawdd?"},
                "options": [
                    {"id": "easy", "text": {"en": "Easy", "cy": "Hawdd"}},
                    {"id": "hard", "text": {"en": "Hard", "cy": "Anodd"}},
                ],
            },
            {
                "id": "why_hard",
                "type": "text",
                "when": "ease == 'hard'",
                "text": {"en": "Why?", "cy": "Pam?"},
            },
        ],
    }
    data.update(top)
    return data


def with_question(question: dict[str, Any], **top: Any) -> dict[str, Any]:
    data = base_survey(**top)
    data["questions"].append(question)
    return data


def problems(data: Any) -> list[SurveyProblem]:
    with pytest.raises(SurveyError) as caught:
        parse_survey(data, source="test.toml")
    return caught.value.problems


def assert_problem(data: Any, question_id: str | None, field: str, fragment: str) -> None:
    """One problem names this question and field, says ``fragment``, and prints both."""
    found = problems(data)
    for problem in found:
        if problem.question_id == question_id and problem.field == field:
            assert fragment in problem.message, f"{fragment!r} not in {problem}"
            text = str(problem)
            if question_id is not None:
                assert f'question "{question_id}"' in text
            assert f'field "{field}"' in text
            return
    raise AssertionError(f"no problem for {question_id}/{field} in {[str(p) for p in found]}")


# --- the example surveys -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gp-access.toml", "digital-access.toml"])
def test_example_surveys_load_and_use_skip_logic(name: str) -> None:
    survey = load_survey_file(EXAMPLES / name)
    assert survey.locales == ("en", "cy", "pl", "ur", "ro")
    assert survey.decision
    assert any(question.when for question in survey.questions)


def test_gp_access_uses_every_question_type() -> None:
    survey = load_survey_file(EXAMPLES / "gp-access.toml")
    assert survey.id == "gp-access-2026"
    assert {question.type for question in survey.questions} == set(QuestionType)


# --- reading the file ----------------------------------------------------------------------


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('id = "x"\ntitle = "ok"\nintro.en = \n', encoding="utf-8")
    with pytest.raises(SurveyError) as caught:
        load_survey_file(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (3, 12)
    assert "line 3, column 12" in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_duplicate_toml_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text('id = "x"\nid = "y"\n', encoding="utf-8")
    with pytest.raises(SurveyError, match="line 2"):
        load_survey_file(path)


def test_missing_file_and_non_utf8_file_are_survey_errors(tmp_path: Path) -> None:
    with pytest.raises(SurveyError, match="cannot read"):
        load_survey_file(tmp_path / "nope.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('title = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(SurveyError, match="UTF-8"):
        load_survey_file(latin1)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    text = (EXAMPLES / "gp-access.toml").read_text(encoding="utf-8")
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_survey_file(path).id == "gp-access-2026"


def test_error_lists_file_then_every_problem_one_per_line() -> None:
    data = base_survey(id="Bad Id", colour="red")
    data["questions"][0]["type"] = "chioce"
    with pytest.raises(SurveyError) as caught:
        parse_survey(data, source="surveys/bad.toml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "surveys/bad.toml: 3 problems"
    assert len(lines) == 4 and len(caught.value.problems) == 3


# --- survey-level rules --------------------------------------------------------------------


def test_survey_id_missing_or_invalid() -> None:
    data = base_survey()
    del data["id"]
    assert_problem(data, None, "id", "missing")
    assert_problem(base_survey(id="GP Access"), None, "id", "not a valid survey id")
    assert_problem(base_survey(id=7), None, "id", "must be a string")


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    assert_problem(base_survey(intor={"en": "x"}), None, "intor", 'did you mean "intro"?')


def test_no_questions() -> None:
    assert_problem(base_survey(questions=[]), None, "questions", "no questions")
    data = base_survey()
    del data["questions"]
    assert_problem(data, None, "questions", "no questions")


def test_locale_babel_cannot_parse() -> None:
    data = base_survey(locales=["en", "xx-YY"])
    assert_problem(data, None, "locales", '"xx-YY" is not a known locale code')


def test_locale_with_script_is_accepted() -> None:
    data = base_survey(locales=["en", "pa-Arab"])
    data = json.loads(json.dumps(data).replace('"cy"', '"pa-Arab"'))
    assert parse_survey(data).locales == ("en", "pa-Arab")


def test_text_in_a_locale_not_declared_suggests_the_declared_one() -> None:
    data = base_survey(intro={"en": "Hello", "cy": "Helo", "eng": "Hello"})
    assert_problem(data, None, "intro.eng", 'did you mean "en"?')


def test_missing_translation_in_intro_and_per_locale_title() -> None:
    assert_problem(base_survey(intro={"en": "Hello"}), None, "intro.cy", "missing")
    assert_problem(base_survey(title={"en": "Test"}), None, "title.cy", "missing")


def test_a_plain_title_serves_every_locale() -> None:
    assert parse_survey(base_survey()).title == {"en": "Test", "cy": "Test"}


def test_thanks_when_given_needs_every_locale() -> None:
    assert_problem(base_survey(thanks={"en": "Thanks"}), None, "thanks.cy", "missing")


def test_texts_that_are_not_strings() -> None:
    assert_problem(base_survey(intro={"en": 3, "cy": "Helo"}), None, "intro.en", "string")
    assert_problem(base_survey(intro="Hello"), None, "intro", "table of texts")
    assert_problem(base_survey(decision=5), None, "decision", "string")


# --- question-level rules ------------------------------------------------------------------


def test_question_id_missing_invalid_or_reserved() -> None:
    data = base_survey()
    del data["questions"][1]["id"]
    found = problems(data)
    assert any(p.question_number == 2 and p.field == "id" for p in found)
    assert "question 2" in str(found[0])
    bad = base_survey()
    bad["questions"][1]["id"] = "Why-Hard"
    assert_problem(bad, "Why-Hard", "id", "not a valid question id")
    reserved = base_survey()
    reserved["questions"][1]["id"] = "not"
    assert_problem(reserved, "not", "id", "reserved word")


def test_duplicate_question_ids() -> None:
    data = base_survey()
    data["questions"][1]["id"] = "ease"
    assert_problem(data, "ease", "id", "duplicate: question 1")


def test_unknown_type_lists_the_valid_ones() -> None:
    data = base_survey()
    data["questions"][0]["type"] = "chioce"
    assert_problem(data, "ease", "type", "choice, multi, scale, yesno, number, text")
    assert_problem(data, "ease", "type", 'did you mean "choice"?')


def test_missing_text_for_a_declared_locale() -> None:
    data = base_survey()
    del data["questions"][1]["text"]["cy"]
    assert_problem(data, "why_hard", "text.cy", 'locales lists "cy"')


def test_missing_option_text_for_a_declared_locale() -> None:
    data = base_survey()
    del data["questions"][0]["options"][1]["text"]["cy"]
    assert_problem(data, "ease", "options[2].text.cy", "missing")


def test_choice_and_multi_need_two_options() -> None:
    data = base_survey()
    data["questions"][0]["options"] = data["questions"][0]["options"][:1]
    assert_problem(data, "ease", "options", "at least 2 options")
    del data["questions"][0]["options"]
    assert_problem(data, "ease", "options", "missing")


def test_a_question_has_at_most_thirty_options() -> None:
    # More would be a wall of numbered lines by SMS, and a template stops a loop past 200.
    data = base_survey()
    data["questions"][0]["options"] = [
        {"id": f"o{n}", "text": {"en": f"Option {n}", "cy": f"Dewis {n}"}} for n in range(201)
    ]
    assert_problem(data, "ease", "options", "at most 30 options, not 201")


def test_duplicate_option_ids() -> None:
    data = base_survey()
    data["questions"][0]["options"][1]["id"] = "easy"
    assert_problem(data, "ease", "options[2].id", "duplicate: option 1")


def test_options_that_replies_could_not_tell_apart() -> None:
    data = base_survey()
    data["questions"][0]["options"][1]["text"]["en"] = "EASY"
    assert_problem(data, "ease", "options[2].text.en", "the same as option 1")
    numeric = base_survey()
    numeric["questions"][0]["options"][0]["text"]["en"] = "2"
    assert_problem(numeric, "ease", "options[1].text.en", "is a number")


def test_unknown_keys_in_questions_and_options_suggest_the_right_one() -> None:
    data = base_survey()
    data["questions"][1]["whne"] = data["questions"][1].pop("when")
    assert_problem(data, "why_hard", "whne", 'did you mean "when"?')
    option = base_survey()
    option["questions"][0]["options"][0]["txt"] = {"en": "x"}
    assert_problem(option, "ease", "options[1].txt", 'did you mean "text"?')


def test_options_on_a_question_that_is_not_a_choice() -> None:
    data = base_survey()
    data["questions"][1]["options"] = data["questions"][0]["options"]
    assert_problem(data, "why_hard", "options", "only choice and multi questions")


SCALE = {"id": "rating", "type": "scale", "text": {"en": "Rate", "cy": "Sgoriwch"}}


def test_scale_without_min_or_max() -> None:
    assert_problem(with_question(dict(SCALE, min=1)), "rating", "max", "missing")
    assert_problem(with_question(dict(SCALE, max=5)), "rating", "min", "missing")
    assert_problem(with_question(dict(SCALE, min=1.5, max=5)), "rating", "min", "whole number")


def test_scale_min_not_below_max() -> None:
    assert_problem(with_question(dict(SCALE, min=5, max=5)), "rating", "max", "greater than")
    assert_problem(with_question(dict(SCALE, min=5, max=1)), "rating", "max", "greater than")


def test_scale_labels_need_every_locale_and_only_scales_have_them() -> None:
    labelled = dict(SCALE, min=1, max=5, min_label={"en": "Poor"})
    assert_problem(with_question(labelled), "rating", "min_label.cy", "missing")
    data = base_survey()
    data["questions"][1]["max_label"] = {"en": "x", "cy": "x"}
    assert_problem(data, "why_hard", "max_label", "only scale questions")


NUMBER = {"id": "days", "type": "number", "text": {"en": "Days?", "cy": "Dyddiau?"}}


def test_number_min_above_max_but_equal_is_fine() -> None:
    assert_problem(with_question(dict(NUMBER, min=10, max=1)), "days", "max", "less than min")
    assert parse_survey(with_question(dict(NUMBER, min=3, max=3))).question("days").max == 3
    assert_problem(with_question(dict(NUMBER, min="0")), "days", "min", "must be a number")


def test_min_and_max_only_for_scale_and_number() -> None:
    data = base_survey()
    data["questions"][1]["min"] = 1
    assert_problem(data, "why_hard", "min", "only scale and number questions")


def test_max_length_only_for_text_and_positive() -> None:
    data = base_survey()
    data["questions"][1]["max_length"] = 0
    assert_problem(data, "why_hard", "max_length", "1 or more")
    data["questions"][1]["max_length"] = 200
    assert parse_survey(data).question("why_hard").max_length == 200
    data["questions"][0]["max_length"] = 200
    assert_problem(data, "ease", "max_length", "only text questions")


# --- `when` rules ----------------------------------------------------------------------------


def when(expression: Any, question_type: str = "text", **extra: Any) -> dict[str, Any]:
    question = {"id": "later_q", "type": question_type, "text": {"en": "?", "cy": "?"}}
    return with_question(dict(question, when=expression, **extra))


def test_when_that_does_not_parse_reports_the_column() -> None:
    assert_problem(when("ease == == 'hard'"), "later_q", "when", "syntax error at column 9")


def test_when_that_is_not_safe_is_rejected() -> None:
    assert_problem(when("__import__('os')"), "later_q", "when", "function calls are not allowed")


def test_when_naming_an_unknown_question_suggests_one() -> None:
    assert_problem(
        when("ease2 == 'hard'"),
        "later_q",
        "when",
        'names "ease2", which is not an earlier question; did you mean "ease"?',
    )


def test_when_naming_a_later_question_or_itself() -> None:
    data = base_survey()
    data["questions"][0]["when"] = "why_hard == 'x'"
    assert_problem(data, "ease", "when", 'names "why_hard", which is not an earlier question')
    assert_problem(data, "ease", "when", "comes later")
    assert_problem(when("later_q == 'x'"), "later_q", "when", "it is this question")


def test_when_comparing_a_choice_with_an_option_id_that_does_not_exist() -> None:
    assert_problem(
        when("ease in ['easy', 'hrad']"), "later_q", "when", '"hrad", which is not one of its'
    )
    assert_problem(when("ease == 'hrad'"), "later_q", "when", 'did you mean "hard"?')
    assert_problem(when("ease == 1"), "later_q", "when", "not one of its options")


def test_when_ordering_options_or_searching_inside_a_choice() -> None:
    assert_problem(when("ease < 'hard'"), "later_q", "when", "its answers have no order")
    assert_problem(when("'hard' in ease"), "later_q", "when", "write ease == 'hard'")
    data = when("why_hard == 3")
    assert_problem(data, "later_q", "when", "its answers are text")


def test_when_comparing_a_multi_answer_as_one_value() -> None:
    data = base_survey()
    data["questions"][0]["type"] = "multi"
    data["questions"][1]["when"] = "ease == 'hard'"
    assert_problem(data, "why_hard", "when", "'hard' in ease")
    data["questions"][1]["when"] = "'hard' in ease"
    assert parse_survey(data).question("why_hard").condition is not None
    data["questions"][1]["when"] = "'hrad' in ease"
    assert_problem(data, "why_hard", "when", 'did you mean "hard"?')


def test_when_comparing_yes_no_scale_and_number_with_the_wrong_values() -> None:
    yes_no = {"id": "online", "type": "yesno", "text": {"en": "?", "cy": "?"}}
    data = with_question(yes_no)
    data["questions"].append(
        {"id": "q2", "type": "text", "text": {"en": "?", "cy": "?"}, "when": "online == 'y'"}
    )
    assert_problem(data, "q2", "when", "not one of its answers (yes, no)")
    rated = with_question(dict(SCALE, min=1, max=5))
    rated["questions"].append(
        {"id": "q2", "type": "text", "text": {"en": "?", "cy": "?"}, "when": "rating == 6"}
    )
    assert_problem(rated, "q2", "when", "outside its scale (1 to 5)")
    rated["questions"][-1]["when"] = "rating < '3'"
    assert_problem(rated, "q2", "when", "its answers are numbers")


def test_every_problem_is_collected_not_just_the_first() -> None:
    data = base_survey(id="", locales=["en", "zz"], extra=1)
    data["questions"][0]["type"] = "nope"
    data["questions"][1]["when"] = "nothing == 1"
    data["questions"].append({"id": "x", "type": "scale", "text": {"en": "?"}})
    fields = {(p.question_id, p.field) for p in problems(data)}
    expected = {(None, "id"), (None, "locales"), (None, "extra"), ("ease", "type")}
    expected |= {("why_hard", "when"), ("x", "min"), ("x", "max")}
    assert expected <= fields


# --- the stored form ---------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json() -> None:
    for name in ("gp-access.toml", "digital-access.toml"):
        survey = load_survey_file(EXAMPLES / name)
        stored = json.loads(json.dumps(survey.to_dict()))
        again = Survey.from_dict(stored)
        assert again == survey
        assert again.question("why_hard" if "gp" in name else "nhs_app").condition is not None
        assert parse_survey(stored) == survey  # the stored form is also a valid file


def test_from_dict_rejects_what_is_not_a_survey() -> None:
    with pytest.raises(ValueError, match="not a survey definition"):
        Survey.from_dict({"title": {"en": "x"}})


def test_content_hash_is_stable_and_changes_with_the_content() -> None:
    first = load_survey_file(EXAMPLES / "gp-access.toml")
    second = load_survey_file(EXAMPLES / "gp-access.toml")
    assert first.content_hash() == second.content_hash()
    assert len(first.content_hash()) == 64
    assert Survey.from_dict(first.to_dict()).content_hash() == first.content_hash()
    data = copy.deepcopy(first.to_dict())
    data["questions"][0]["text"]["en"] += " "
    assert Survey.from_dict(data).content_hash() != first.content_hash()
    data = copy.deepcopy(first.to_dict())
    data["questions"][1]["when"] = "ease == 'very_hard'"
    assert Survey.from_dict(data).content_hash() != first.content_hash()


# --- skip logic ----------------------------------------------------------------------------


def walk(survey: Survey, script: dict[str, Any]) -> list[str]:
    """The questions asked, in order, when each is answered as in ``script``."""
    answers: dict[str, Any] = {}
    asked = []
    question = survey.first_question(answers)
    while question is not None:
        asked.append(question.id)
        answers[question.id] = script[question.id]
        question = survey.next_question(question.id, answers)
    return asked


GP_SCRIPT = {
    "why_hard": ["phone_busy"],
    "wait_days": 3,
    "satisfaction": 2,
    "online_app": "nhs_app",
    "improve": "More appointments",
}


@pytest.mark.parametrize(
    ("ease", "used_online", "expected"),
    [
        ("very_hard", "yes", ["ease", "why_hard", "wait_days", "satisfaction", "used_online",
                              "online_app", "improve"]),
        ("fairly_hard", "no", ["ease", "why_hard", "wait_days", "satisfaction", "used_online",
                               "improve"]),
        ("very_easy", "yes", ["ease", "wait_days", "satisfaction", "used_online", "online_app",
                              "improve"]),
        ("not_tried", "no", ["ease", "satisfaction", "used_online", "improve"]),
    ],
)  # fmt: skip
def test_skip_logic_walk_through_gp_access(
    ease: str, used_online: str, expected: list[str]
) -> None:
    survey = load_survey_file(EXAMPLES / "gp-access.toml")
    assert walk(survey, dict(GP_SCRIPT, ease=ease, used_online=used_online)) == expected


def test_digital_access_skips_app_questions_for_people_never_online() -> None:
    survey = load_survey_file(EXAMPLES / "digital-access.toml")
    script = {"go_online": "never", "confidence": 1, "help_wanted": ["in_person"]}
    assert walk(survey, script) == ["go_online", "confidence", "help_wanted"]


def test_question_lookup_and_positions() -> None:
    survey = load_survey_file(EXAMPLES / "gp-access.toml")
    assert survey.index_of("wait_days") == 2
    assert survey.question("wait_days").type is QuestionType.NUMBER
    assert survey.next_question(None, {}) == survey.questions[0]
    assert survey.next_question("improve", {}) is None
    with pytest.raises(KeyError):
        survey.question("nope")
    with pytest.raises(KeyError):
        survey.next_question("nope", {})


def test_model_built_in_code_compiles_its_condition_and_refuses_duplicates() -> None:
    first = Question("a", QuestionType.YESNO, {"en": "A?"})
    second = Question("b", "text", {"en": "B?"}, when="a == 'yes'")
    assert second.type is QuestionType.TEXT and second.condition is not None
    survey = Survey("s", {"en": "S"}, questions=(first, second))
    assert survey.next_question("a", {"a": "no"}) is None
    with pytest.raises(ValueError, match="duplicate"):
        Survey("s", {"en": "S"}, questions=(first, first))


# --- texts per locale ----------------------------------------------------------------------


def test_pick_prefers_locale_then_base_language_then_fallback_then_any() -> None:
    texts = {"en": "Hello", "pa": "ਸਤ ਸ੍ਰੀ ਅਕਾਲ", "ur": "السلام علیکم"}
    assert pick(texts, "ur") == "السلام علیکم"
    assert pick(texts, "pa-Arab") == "ਸਤ ਸ੍ਰੀ ਅਕਾਲ"
    assert pick(texts, "pa_Arab") == "ਸਤ ਸ੍ਰੀ ਅਕਾਲ"
    assert pick(texts, "cy") == "Hello"
    assert pick({"pa-Arab": "x", "en": "y"}, "pa") == "x"
    assert pick({"en-GB": "colour"}, "en") == "colour"
    assert pick({"ur": "only"}, "cy", fallback="en") == "only"
    assert pick({}, "en") == ""


def test_localized_texts_on_questions_and_options() -> None:
    option = Option("easy", {"en": "Easy", "cy": "Hawdd"})
    assert option.localized_text("cy") == "Hawdd"
    assert option.localized_text("cy-GB") == "Hawdd"
    question = Question("q", QuestionType.CHOICE, {"en": "Q?"}, options=(option,))
    assert question.localized_text("pl") == "Q?"
    survey = load_survey_file(EXAMPLES / "gp-access.toml")
    assert survey.question("satisfaction").localized_max_label("en") == "Very good"
    assert survey.question("improve").localized_min_label("en") is None
    assert survey.localized_thanks("ur")


# --- robustness ----------------------------------------------------------------------------

toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["choice", "multi", "scale", "en", "cy", "ease", "ease == 'hard'"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "text", "en", "cy", "when", "x"]), children)
    ),
    max_leaves=8,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_damage_to_a_file_gives_survey_error_never_a_crash(data: st.DataObject) -> None:
    survey = base_survey()
    path = data.draw(st.sampled_from(_paths(survey)[1:]))
    target = survey
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(toml_values)
    try:
        parse_survey(survey)
    except SurveyError as exc:
        assert exc.problems and all(str(problem) for problem in exc.problems)
