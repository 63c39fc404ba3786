"""Reading and checking survey files (TOML).

Every problem in a file is collected and reported together, each naming the question and
the field, so that a survey author can fix a file in one pass::

    surveys/gp-access.toml: 2 problems
      question "why_hard", field "when": names "ease2", which is not an earlier question
      question "satisfaction", field "max": must be greater than min (5)
"""

from __future__ import annotations

import difflib
import keyword
import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError

from bot.surveys.answers import normalise_reply
from bot.surveys.expr import Expression, ExpressionError, compile_expression
from bot.surveys.model import DEFAULT_MAX_LENGTH, Option, Question, QuestionType, Survey

SURVEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
QUESTION_ID_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")  # question ids are names in `when`
OPTION_ID_RE = SURVEY_ID_RE
MAX_ID_LENGTH = 64
_SLUG_RULE = 'lowercase letters, digits, "-" and "_", not starting with "-" or "_"'
_ID_RULES = {
    "survey": (SURVEY_ID_RE, _SLUG_RULE),
    "question": (QUESTION_ID_RE, 'lowercase letters, digits and "_", not starting with a digit'),
    "option": (OPTION_ID_RE, _SLUG_RULE),
}

SURVEY_KEYS = ("id", "title", "locales", "intro", "thanks", "decision", "questions")
QUESTION_KEYS = (
    *("id", "type", "text", "options", "min", "max"),
    *("min_label", "max_label", "when", "max_length"),
)
OPTION_KEYS = ("id", "text")
_TOML_WHERE = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")

# Options a choice or multi question may have: numbered replies read by text message.
MAX_OPTIONS = 30


@dataclass(frozen=True)
class SurveyProblem:
    """One thing wrong with a survey file: where (question and field) and what."""

    question_id: str | None
    field: str
    message: str
    question_number: int | None = None  # position from 1, shown when the id is unusable
    line: int | None = None  # TOML syntax errors only
    column: int | None = None

    def __str__(self) -> str:
        where = []
        if self.question_id is not None:
            where.append(f'question "{self.question_id}"')
        elif self.question_number is not None:
            where.append(f"question {self.question_number}")
        if self.field:
            where.append(f'field "{self.field}"')
        return f"{', '.join(where)}: {self.message}" if where else self.message


class SurveyError(ValueError):
    """A survey file with problems; ``problems`` lists every one found."""

    def __init__(self, problems: Sequence[SurveyProblem], source: str = "<survey>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'' if count == 1 else 's'}"
        return "\n".join([head, *(f"  {problem}" for problem in self.problems)])


def load_survey_file(path: str | Path) -> Survey:
    """Read and check a survey file; raises :class:`SurveyError` listing every problem."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = SurveyProblem(None, "", f"cannot read the file: {reason}")
        raise SurveyError([problem], source) from None
    try:
        text = raw.decode("utf-8-sig")  # Windows editors add a byte-order mark
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8"
        raise SurveyError([SurveyProblem(None, "", message)], source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SurveyError([_toml_problem(exc)], source) from None
    return parse_survey(data, source)


def parse_survey(data: Mapping[str, Any], source: str = "<survey>") -> Survey:
    """Check already-parsed survey data (a TOML document as a dict) and build the Survey."""
    checker = _Checker()
    survey = checker.survey(data)
    if checker.problems or survey is None:
        # In file order: the survey's own fields, then question by question (stable sort).
        problems = sorted(checker.problems, key=lambda problem: problem.question_number or 0)
        raise SurveyError(problems, source)
    return survey


def _toml_problem(exc: tomllib.TOMLDecodeError) -> SurveyProblem:
    # tomllib (Python 3.11) puts the position only in its message: "... (at line 3, column 8)".
    text = str(exc)
    found = _TOML_WHERE.match(text)
    if found:
        line, column = int(found["line"]), int(found["col"])
        message = f"TOML syntax error at line {line}, column {column}: {found['msg']}"
        return SurveyProblem(None, "", message, line=line, column=column)
    return SurveyProblem(None, "", f"TOML syntax error: {text}")


_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"))
_KINDS += ((list, "an array"), (Mapping, "a table"))


def _kind(value: Any) -> str:
    """A value's TOML type, in words, for messages."""
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _suggest(word: Any, choices: Collection[str]) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{match[0]}"?' if match else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _known_locale(code: str) -> bool:
    try:
        Locale.parse(code.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return False
    return True


class _Checker:
    """Walks the data once, recording every problem and building the survey as it goes."""

    def __init__(self) -> None:
        self.problems: list[SurveyProblem] = []
        self.locales: tuple[str, ...] = ()  # the usable ones: every text needs each
        self.declared: tuple[str, ...] | None = None  # all listed, usable or not
        self.question_id: str | None = None  # where we are, for the problems found
        self.question_number: int | None = None

    def add(self, field: str, message: str) -> None:
        where = (self.question_id, field, message, self.question_number)
        self.problems.append(SurveyProblem(*where))

    def at(self, question_id: str | None, number: int | None) -> None:
        self.question_id, self.question_number = question_id, number

    def unknown_keys(
        self, table: Mapping[Any, Any], allowed: Sequence[str], prefix: str = ""
    ) -> None:
        for key in table:
            if key not in allowed:
                hint = _suggest(key, allowed) or f"; expected one of: {', '.join(allowed)}"
                self.add(f"{prefix}{key}", f"unknown key{hint}")

    def only(self, field: str, types: str, qtype: QuestionType) -> None:
        self.add(field, f"only {types} questions have {field}; this is a {qtype} question")

    def survey(self, data: Any) -> Survey | None:
        if not isinstance(data, Mapping):
            self.add("", f"a survey must be a TOML table, not {_kind(data)}")
            return None
        self.unknown_keys(data, SURVEY_KEYS)
        survey_id = self.check_id("id", data.get("id"), "survey")
        self.read_locales(data.get("locales", ["en"]))
        title = self.title(data.get("title"))
        intro = self.texts(data.get("intro"), "intro", required=True)
        thanks = self.texts(data.get("thanks"), "thanks", required=False)
        decision = data.get("decision")
        if decision is not None and not (isinstance(decision, str) and decision.strip()):
            self.add("decision", f"must be a non-empty string, not {_kind(decision)}")
        questions = self.questions(data.get("questions"))
        if self.problems:
            return None
        return Survey(survey_id or "", title, self.locales, intro, thanks, decision, questions)

    def check_id(self, field: str, value: Any, kind: str) -> str | None:
        pattern, rule = _ID_RULES[kind]
        if value is None:
            self.add(field, "missing")
        elif not isinstance(value, str):
            self.add(field, f"must be a string, not {_kind(value)}")
        elif not pattern.match(value) or len(value) > MAX_ID_LENGTH:
            self.add(field, f'"{value}" is not a valid {kind} id: use {rule}')
        else:
            return value
        return None

    def read_locales(self, value: Any) -> None:
        if not isinstance(value, list) or not value:
            shown = "an empty array" if value == [] else _kind(value)
            self.add("locales", f'must list locale codes, e.g. ["en", "cy"], not {shown}')
            return
        usable: list[str] = []
        for entry in value:
            if not isinstance(entry, str):
                self.add("locales", f"each locale must be a string, not {_kind(entry)}")
            elif entry in usable:
                self.add("locales", f'"{entry}" is listed twice')
            elif not _known_locale(entry):
                self.add("locales", f'"{entry}" is not a known locale code')
            else:
                usable.append(entry)
        self.locales = tuple(usable)
        self.declared = tuple(entry for entry in value if isinstance(entry, str))

    def title(self, value: Any) -> dict[str, str]:
        if isinstance(value, str):
            if not value.strip():
                self.add("title", "is empty")
            # One title for every locale, so that the stored form is per-locale throughout.
            return {locale: value for locale in self.locales or ("en",)}
        if value is None or isinstance(value, Mapping):
            return self.texts(value, "title", required=True)
        self.add("title", f"must be a string or a table of texts, not {_kind(value)}")
        return {}

    def texts(self, value: Any, name: str, *, required: bool) -> dict[str, str]:
        """A table of translations, one per declared locale (``text.en = "..."``)."""
        example = f'{name}.{self.locales[0] if self.locales else "en"} = "..."'
        if value is None:
            if required:
                self.add(name, f"missing; e.g. {example}")
            return {}
        if not isinstance(value, Mapping):
            self.add(name, f"must be a table of texts per locale, e.g. {example}")
            return {}
        found: dict[str, str] = {}
        for locale, text in value.items():
            field = f"{name}.{locale}"
            if self.declared is not None and locale not in self.declared:
                listed = ", ".join(self.declared)
                hint = _suggest(locale, self.declared)
                self.add(field, f'"{locale}" is not in locales ({listed}){hint}')
            elif not isinstance(text, str):
                self.add(field, f"must be a string, not {_kind(text)}")
            elif not text.strip():
                self.add(field, "is empty")
            else:
                found[locale] = text
        for locale in self.locales:
            if locale not in value:
                self.add(f"{name}.{locale}", f'missing: locales lists "{locale}"')
        return found

    def questions(self, value: Any) -> tuple[Question, ...]:
        if value is None or value == []:
            self.add("questions", "no questions; add at least one [[questions]] table")
            return ()
        if not isinstance(value, list):
            self.add("questions", f"must be an array of [[questions]] tables, not {_kind(value)}")
            return ()
        # First pass: ids, so that a `when` naming a later question can be told apart from
        # one naming no question at all.
        places: list[tuple[Mapping[str, Any], str | None, str | None, int]] = []
        first_seen: dict[str, int] = {}
        for number, raw in enumerate(value, 1):
            given = raw.get("id") if isinstance(raw, Mapping) else None
            shown = given if isinstance(given, str) and given else None
            self.at(shown, number)
            qid = self.check_question_id(raw, given, first_seen)
            if qid is not None:
                first_seen[qid] = number
            if isinstance(raw, Mapping):
                places.append((raw, shown, qid, number))
        # Second pass: everything else; a `when` may rely on the questions before it.
        earlier: dict[str, Question] = {}
        built: list[Question] = []
        for raw, shown, qid, number in places:
            self.at(shown, number)
            question = self.question(raw, qid, earlier, first_seen)
            if question is not None:
                earlier[question.id] = question
                built.append(question)
        self.at(None, None)
        return tuple(built)

    def check_question_id(self, raw: Any, given: Any, first_seen: Mapping[str, int]) -> str | None:
        if not isinstance(raw, Mapping):
            self.add("", f"must be a table ([[questions]]), not {_kind(raw)}")
            return None
        qid = self.check_id("id", given, "question")
        if qid is not None and keyword.iskeyword(qid):
            self.add("id", f'"{qid}" is a reserved word in conditions; choose another id')
        elif qid is not None and qid in first_seen:
            self.add("id", f"duplicate: question {first_seen[qid]} has this id too")
        else:
            return qid
        return None

    def question(
        self,
        raw: Mapping[str, Any],
        qid: str | None,
        earlier: Mapping[str, Question],
        positions: Mapping[str, int],
    ) -> Question | None:
        """The question, built even when it has problems (they are recorded; no survey is
        built then) so that later conditions can still be checked against it."""
        self.unknown_keys(raw, QUESTION_KEYS)
        qtype = self.question_type(raw.get("type"))
        text = self.texts(raw.get("text"), "text", required=True)
        options = self.options(raw.get("options"), qtype)
        low, high = self.bounds(raw, qtype)
        labels = [self.label(raw, name, qtype) for name in ("min_label", "max_label")]
        max_length = self.max_length(raw.get("max_length"), qtype)
        condition = self.condition(raw.get("when"), qid, earlier, positions)
        if qid is None or qtype is None:
            return None
        return Question(
            id=qid,
            type=qtype,
            text=text,
            options=options,
            min=low,
            max=high,
            min_label=labels[0],
            max_label=labels[1],
            when=condition.text if condition else None,
            condition=condition,
            max_length=max_length,
        )

    def question_type(self, value: Any) -> QuestionType | None:
        valid = [str(t) for t in QuestionType]
        if isinstance(value, str) and value in valid:
            return QuestionType(value)
        shown = "missing" if value is None else f"unknown type {_show(value)}"
        self.add("type", f"{shown}; valid types: {', '.join(valid)}{_suggest(value, valid)}")
        return None

    def options(self, value: Any, qtype: QuestionType | None) -> tuple[Option, ...]:
        if qtype is not None and not qtype.has_options:
            if value is not None:
                self.only("options", "choice and multi", qtype)
            return ()
        if not isinstance(value, list):
            shown = "missing" if value is None else f"must be an array, not {_kind(value)}"
            self.add("options", f'{shown}; e.g. options = [{{ id = "a", text.en = "A" }}, ...]')
            return ()
        if qtype is not None and len(value) < 2:
            self.add("options", f"a {qtype} question needs at least 2 options, not {len(value)}")
        if len(value) > MAX_OPTIONS:
            # A list read by text message; message templates also stop a longer loop.
            self.add("options", f"at most {MAX_OPTIONS} options, not {len(value)}")
            return ()
        options: list[Option] = []
        first_seen: dict[str, int] = {}
        # Options are numbered from 1, as panellists see them over SMS.
        for number, raw in enumerate(value, 1):
            name = f"options[{number}]"
            if not isinstance(raw, Mapping):
                self.add(name, 'must be a table like { id = "...", text.en = "..." }')
                continue
            self.unknown_keys(raw, OPTION_KEYS, prefix=f"{name}.")
            oid = self.check_id(f"{name}.id", raw.get("id"), "option")
            if oid is not None and oid in first_seen:
                self.add(f"{name}.id", f"duplicate: option {first_seen[oid]} has the id too")
                oid = None
            text = self.texts(raw.get("text"), f"{name}.text", required=True)
            if oid is not None:
                first_seen[oid] = number
                options.append(Option(oid, text))
        self.ambiguous_texts(value)
        return tuple(options)

    def ambiguous_texts(self, raw_options: list[Any]) -> None:
        """Option texts a reply could not tell apart: the same text twice, or a bare number
        other than the option's own (a reply "1" always means option 1, so a panellist
        choosing an option called "1" in another place would be recorded wrongly)."""
        seen: dict[tuple[str, str], int] = {}
        for number, raw in enumerate(raw_options, 1):
            texts = raw.get("text") if isinstance(raw, Mapping) else None
            for locale, text in texts.items() if isinstance(texts, Mapping) else ():
                if not isinstance(text, str) or not text.strip():
                    continue
                field, key = f"options[{number}].text.{locale}", normalise_reply(text)
                if key.isascii() and key.isdigit() and int(key) != number:
                    message = f'a reply "{key}" would mean option {key}, not this one'
                    self.add(field, f'"{text}" is a number: {message}; write it in words')
                elif (locale, key) in seen:
                    self.add(field, f"the same as option {seen[locale, key]}'s text")
                else:
                    seen[locale, key] = number

    def bounds(self, raw: Mapping[str, Any], qtype: QuestionType | None) -> tuple[Any, Any]:
        low, high = raw.get("min"), raw.get("max")
        if qtype is QuestionType.SCALE:
            for name, value in (("min", low), ("max", high)):
                if value is None:
                    self.add(name, "missing: a scale needs min and max, e.g. min = 1, max = 5")
                elif not _is_int(value):
                    self.add(name, f"must be a whole number, not {_show(value)}")
            if _is_int(low) and _is_int(high) and low >= high:
                self.add("max", f"must be greater than min ({low}), not {high}")
            return (low if _is_int(low) else None), (high if _is_int(high) else None)
        if qtype is QuestionType.NUMBER:
            for name, value in (("min", low), ("max", high)):
                if value is not None and not _is_number(value):
                    self.add(name, f"must be a number, not {_show(value)}")
            low = low if _is_number(low) else None
            high = high if _is_number(high) else None
            if low is not None and high is not None and low > high:
                self.add("max", f"must not be less than min ({low}), not {high}")
            return low, high
        for name in ("min", "max"):
            if qtype is not None and name in raw:
                self.only(name, "scale and number", qtype)
        return None, None

    def label(
        self, raw: Mapping[str, Any], name: str, qtype: QuestionType | None
    ) -> dict[str, str]:
        if name not in raw:
            return {}
        if qtype is not None and qtype is not QuestionType.SCALE:
            self.only(name, "scale", qtype)
            return {}
        return self.texts(raw[name], name, required=True)

    def max_length(self, value: Any, qtype: QuestionType | None) -> int:
        if value is None:
            return DEFAULT_MAX_LENGTH
        if qtype is not None and qtype is not QuestionType.TEXT:
            self.only("max_length", "text", qtype)
        elif not _is_int(value) or value < 1:
            self.add("max_length", f"must be a whole number of 1 or more, not {_show(value)}")
        else:
            return value
        return DEFAULT_MAX_LENGTH

    def condition(
        self,
        value: Any,
        qid: str | None,
        earlier: Mapping[str, Question],
        positions: Mapping[str, int],
    ) -> Expression | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.add("when", f"must be a string, not {_kind(value)}")
            return None
        try:
            expression = compile_expression(value)
        except ExpressionError as exc:
            self.add("when", exc.message)
            return None
        problems: list[str] = []
        here = self.question_number or 0
        for name in sorted(expression.names):
            if positions.get(name, here) < here:
                continue  # an earlier question (checked below if it was built)
            message = f'names "{name}", which is not an earlier question'
            if name == qid:
                message += " (it is this question)"
            elif name in positions:
                message += " (it comes later: a condition can use only answers already given)"
            else:
                message += _suggest(name, earlier)
            problems.append(message)
        for comparison in expression.comparisons:
            question = earlier.get(comparison.name)
            message = question.comparison_problem(comparison) if question else None
            if message and message not in problems:
                problems.append(message)
        for message in problems:
            self.add("when", message)
        return None if problems else expression
