"""A survey definition as frozen dataclasses: questions, skip logic, and a stable JSON form.

The loader (:mod:`bot.surveys.loader`) builds these from a TOML file after checking it;
storage keeps :meth:`Survey.to_dict` as JSON and rebuilds with :meth:`Survey.from_dict`;
:meth:`Survey.content_hash` tells a changed definition (a new version) from the same one.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.surveys.expr import Comparison, Expression, compile_expression

DEFAULT_MAX_LENGTH = 1000  # characters kept from a free-text answer
YESNO_ANSWERS = ("yes", "no")  # what a yesno question stores
_ORDERING = ("<", "<=", ">", ">=")


class QuestionType(StrEnum):
    """What kind of answer a question takes, and so how a reply is read and stored."""

    CHOICE = "choice"  # one option
    MULTI = "multi"  # any number of options
    SCALE = "scale"  # a whole number from min to max
    YESNO = "yesno"  # "yes" or "no"
    NUMBER = "number"  # an int, or a float when typed with a decimal point
    TEXT = "text"  # free text, cut to max_length

    @property
    def has_options(self) -> bool:
        """True for the types whose answers are option ids (choice and multi)."""
        return self in (QuestionType.CHOICE, QuestionType.MULTI)


def _tag(locale: str) -> str:
    # "pa_Arab", "PA-arab" and "pa-Arab" all name one locale.
    return locale.replace("_", "-").lower()


def _base(locale: str) -> str:
    return _tag(locale).split("-", 1)[0]


def pick(texts: Mapping[str, str], locale: str, fallback: str = "en") -> str:
    """The best text for ``locale``: the locale itself, then its base language ("pa-Arab"
    gives "pa"), then another variant of that language, then ``fallback`` (and its base),
    then any text at all. An empty mapping gives ""."""
    if not texts:
        return ""
    if locale in texts:
        return texts[locale]
    by_tag = {_tag(key): value for key, value in texts.items()}
    for wanted in (locale, fallback):
        if _tag(wanted) in by_tag:
            return by_tag[_tag(wanted)]
        if _base(wanted) in by_tag:
            return by_tag[_base(wanted)]
        for key, value in texts.items():
            if _base(key) == _base(wanted):
                return value
    return next(iter(texts.values()))


@dataclass(frozen=True)
class Option:
    """One option of a choice or multi question; ``id`` is what is stored as the answer."""

    id: str
    text: dict[str, str]

    def localized_text(self, locale: str, fallback: str = "en") -> str:
        """The option's text for ``locale`` (see :func:`pick`)."""
        return pick(self.text, locale, fallback)

    def to_dict(self) -> dict[str, Any]:
        """The option in the file's own shape: ``{"id": ..., "text": {locale: text}}``."""
        return {"id": self.id, "text": dict(self.text)}


@dataclass(frozen=True)
class Question:
    """One question. ``condition`` is compiled from ``when`` if not given."""

    id: str
    type: QuestionType
    text: dict[str, str]
    options: tuple[Option, ...] = ()
    min: int | float | None = None
    max: int | float | None = None
    min_label: dict[str, str] = field(default_factory=dict)
    max_label: dict[str, str] = field(default_factory=dict)
    when: str | None = None
    condition: Expression | None = None
    max_length: int = DEFAULT_MAX_LENGTH

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__, once, at construction.
        object.__setattr__(self, "type", QuestionType(self.type))
        object.__setattr__(self, "options", tuple(self.options))
        if self.when is not None and self.condition is None:
            object.__setattr__(self, "condition", compile_expression(self.when))

    def localized_text(self, locale: str, fallback: str = "en") -> str:
        """The question's text for ``locale`` (see :func:`pick`)."""
        return pick(self.text, locale, fallback)

    def localized_min_label(self, locale: str, fallback: str = "en") -> str | None:
        """The scale's label for ``min``, or None when it has none."""
        return pick(self.min_label, locale, fallback) or None

    def localized_max_label(self, locale: str, fallback: str = "en") -> str | None:
        """The scale's label for ``max``, or None when it has none."""
        return pick(self.max_label, locale, fallback) or None

    @property
    def option_ids(self) -> tuple[str, ...]:
        """The options' ids, in order (option 1 first)."""
        return tuple(option.id for option in self.options)

    def option(self, option_id: str) -> Option:
        """The option with this id; KeyError if there is none."""
        for option in self.options:
            if option.id == option_id:
                return option
        raise KeyError(f"question {self.id!r} has no option {option_id!r}")

    def is_asked(self, answers: Mapping[str, Any]) -> bool:
        """True when the question has no condition or its condition holds for ``answers``."""
        return self.condition is None or self.condition.evaluate(answers)

    def comparison_problem(self, comparison: Comparison) -> str | None:
        """Why a ``when`` comparison with this question's answer could never work as written
        (a typo in an option id, a multi answer compared as one value, a number compared
        with text), or None when it is fine."""
        name, op, values = comparison.name, comparison.op, comparison.values
        reversed_in = not comparison.name_first and op in ("in", "not in")
        first_string = next((v for v in values if isinstance(v, str)), None)
        if self.type is QuestionType.MULTI:
            if not reversed_in:
                example = first_string or next(iter(self.option_ids), "...")
                return (
                    f'"{name}" is a multi question, so its answer is a list of options: '
                    f"test for one with '{example}' in {name}"
                )
            return _unknown_id(name, values, self.option_ids, "options")
        if self.type in (QuestionType.CHOICE, QuestionType.YESNO):
            allowed = self.option_ids if self.type is QuestionType.CHOICE else YESNO_ANSWERS
            example = first_string or next(iter(allowed), "...")
            if op in _ORDERING:
                return (
                    f'compares "{name}" with {op}, but its answers have no order: list the '
                    f"ones you mean, e.g. {name} in ['{example}']"
                )
            if reversed_in:
                return f"\"{name}\" has one answer: write {name} == '{example}'"
            kind = "options" if self.type is QuestionType.CHOICE else "answers"
            return _unknown_id(name, values, allowed, kind)
        if self.type is QuestionType.TEXT:
            wrong = [v for v in values if not isinstance(v, str)]
            return f'compares "{name}" with {wrong[0]}, but its answers are text' if wrong else None
        # scale and number
        if reversed_in:
            return f'"{name}" has a number as its answer: compare it with ==, < or >'
        for value in values:
            if isinstance(value, str):
                return f'compares "{name}" with "{value}", but its answers are numbers'
            outside = (
                self.min is not None
                and self.max is not None
                and not (self.min <= value <= self.max)
            )
            if self.type is QuestionType.SCALE and op not in _ORDERING and outside:
                return (
                    f'compares "{name}" with {value}, which is outside its scale '
                    f"({self.min} to {self.max})"
                )
        return None

    def to_dict(self) -> dict[str, Any]:
        """The question in the file's own shape; empty and default fields are left out."""
        data: dict[str, Any] = {"id": self.id, "type": str(self.type), "text": dict(self.text)}
        if self.options:
            data["options"] = [option.to_dict() for option in self.options]
        if self.min is not None:
            data["min"] = self.min
        if self.max is not None:
            data["max"] = self.max
        if self.min_label:
            data["min_label"] = dict(self.min_label)
        if self.max_label:
            data["max_label"] = dict(self.max_label)
        if self.when is not None:
            data["when"] = self.when
        if self.type is QuestionType.TEXT or self.max_length != DEFAULT_MAX_LENGTH:
            data["max_length"] = self.max_length
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Question:
        """Rebuild a question from :meth:`to_dict` output (no checks: see Survey.from_dict)."""
        return cls(
            id=data["id"],
            type=QuestionType(data["type"]),
            text=dict(data["text"]),
            options=tuple(Option(o["id"], dict(o["text"])) for o in data.get("options", ())),
            min=data.get("min"),
            max=data.get("max"),
            min_label=dict(data.get("min_label", {})),
            max_label=dict(data.get("max_label", {})),
            when=data.get("when"),
            max_length=int(data.get("max_length", DEFAULT_MAX_LENGTH)),
        )


def _unknown_id(
    name: str, values: tuple[Any, ...], allowed: tuple[str, ...], kind: str
) -> str | None:
    for value in values:
        if not isinstance(value, str) or value not in allowed:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            return (
                f'compares "{name}" with {shown}, which is not one of its {kind} '
                f"({', '.join(allowed)}){hint}"
            )
    return None


@dataclass(frozen=True)
class Survey:
    """A whole survey: texts per locale and questions in the order they are asked."""

    id: str
    title: dict[str, str]
    locales: tuple[str, ...] = ("en",)
    intro: dict[str, str] = field(default_factory=dict)
    thanks: dict[str, str] = field(default_factory=dict)
    decision: str | None = None
    questions: tuple[Question, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "locales", tuple(self.locales))
        object.__setattr__(self, "questions", tuple(self.questions))
        index: dict[str, int] = {}
        for position, question in enumerate(self.questions):
            if question.id in index:
                raise ValueError(f"survey {self.id!r}: duplicate question id {question.id!r}")
            index[question.id] = position
        object.__setattr__(self, "_index", index)

    def question(self, qid: str) -> Question:
        """The question with this id; KeyError if there is none."""
        return self.questions[self.index_of(qid)]

    def index_of(self, qid: str) -> int:
        """The question's position (from 0); KeyError if there is none."""
        try:
            return self._index[qid]
        except KeyError:
            raise KeyError(f"survey {self.id!r} has no question {qid!r}") from None

    def first_question(self, answers: Mapping[str, Any] | None = None) -> Question | None:
        """The first question to ask (its condition absent or true), or None if none is."""
        return self._asked_from(0, answers or {})

    def next_question(self, after_qid: str | None, answers: Mapping[str, Any]) -> Question | None:
        """The question to ask after ``after_qid`` (None: from the start), skipping those
        whose condition is false for ``answers``; None when the survey is finished."""
        start = 0 if after_qid is None else self.index_of(after_qid) + 1
        return self._asked_from(start, answers)

    def _asked_from(self, start: int, answers: Mapping[str, Any]) -> Question | None:
        for question in self.questions[start:]:
            if question.is_asked(answers):
                return question
        return None

    def localized_title(self, locale: str, fallback: str = "en") -> str:
        """The survey's title for ``locale`` (see :func:`pick`)."""
        return pick(self.title, locale, fallback)

    def localized_intro(self, locale: str, fallback: str = "en") -> str:
        """The survey's introduction for ``locale`` (see :func:`pick`)."""
        return pick(self.intro, locale, fallback)

    def localized_thanks(self, locale: str, fallback: str = "en") -> str | None:
        """The survey's own thank-you, or None to use the bot's standard message."""
        return pick(self.thanks, locale, fallback) or None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form in the file's own shape (``parse_survey`` accepts it)."""
        data: dict[str, Any] = {
            "id": self.id,
            "title": dict(self.title),
            "locales": list(self.locales),
            "intro": dict(self.intro),
        }
        if self.thanks:
            data["thanks"] = dict(self.thanks)
        if self.decision is not None:
            data["decision"] = self.decision
        data["questions"] = [question.to_dict() for question in self.questions]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Survey:
        """Rebuild a survey from :meth:`to_dict` output (e.g. read back from storage).

        Stored definitions were checked when they were added, so this does not re-check
        them: a rule added later must not make an old, running survey unreadable.
        Raises ValueError if the data is not a survey definition at all.
        """
        try:
            return cls(
                id=data["id"],
                title=dict(data["title"]),
                locales=tuple(data.get("locales", ("en",))),
                intro=dict(data.get("intro", {})),
                thanks=dict(data.get("thanks", {})),
                decision=data.get("decision"),
                questions=tuple(Question.from_dict(q) for q in data.get("questions", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a survey definition: {exc!r}") from exc

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`: same content, same hash."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
