"""Turning questions, sign-up fields and menus into message text (and quick-reply options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from babel import Locale, UnknownLocaleError

from bot.messages import MessageCatalog
from bot.surveys.model import Question, QuestionType, Survey, pick

if TYPE_CHECKING:
    from bot.config import Settings


@dataclass(slots=True)
class Rendered:
    """A message's text plus the numbered options a channel may offer as buttons."""

    text: str
    template: str
    options: list[dict[str, str]] = field(default_factory=list)
    # A multi-choice question: a channel with buttons lets the person tick several, then
    # send them together ("1 3"), labelling that button ``send_label``.
    multi: bool = False
    send_label: str = ""

    @property
    def extra(self) -> dict[str, Any]:
        if not self.options:
            return {}
        if self.multi:
            return {"options": self.options, "multi": True, "send_label": self.send_label}
        return {"options": self.options}


def language_name(code: str) -> str:
    """A language in its own name ("Cymraeg", "Polski", "اردو"), via Babel's CLDR data."""
    try:
        locale = Locale.parse(code.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return code
    name = locale.get_display_name(locale) or code
    return name[:1].upper() + name[1:]


def option_labels(
    question: Question, catalog: MessageCatalog, locale: str, fallback: str
) -> list[str]:
    if question.type == QuestionType.YESNO:
        words = catalog.words(locale)
        return [words.get("yes_label", "Yes"), words.get("no_label", "No")]
    return [pick(o.text, locale, fallback) for o in question.options]


def question_message(
    catalog: MessageCatalog,
    survey: Survey,
    question: Question,
    locale: str,
    *,
    fallback: str = "en",
    reask: bool = False,
    skipped: bool = False,
    valid_replies: str = "",
) -> Rendered:
    labels = option_labels(question, catalog, locale, fallback)
    numbered = question.type in (QuestionType.CHOICE, QuestionType.MULTI, QuestionType.YESNO)
    text = catalog.render(
        "question",
        locale,
        number=survey.index_of(question.id) + 1,
        total=len(survey.questions),
        text=question.localized_text(locale, fallback),
        type=question.type.value,
        options=labels if numbered else [],
        min=question.min,
        max=question.max,
        min_label=pick(question.min_label, locale, fallback) if question.min_label else "",
        max_label=pick(question.max_label, locale, fallback) if question.max_label else "",
        reask=reask,
        skipped=skipped,
        valid_replies=valid_replies,
    )
    options: list[dict[str, str]] = []
    if numbered:
        options = [{"reply": str(i), "label": label} for i, label in enumerate(labels, 1)]
    elif question.type == QuestionType.SCALE and question.min is not None:
        if question.max is not None and question.max - question.min <= 10:
            options = [
                {"reply": str(v), "label": str(v)}
                for v in range(int(question.min), int(question.max) + 1)
            ]
    if question.type == QuestionType.MULTI:
        send = catalog.words(locale).get("send_label", "Send")
        return Rendered(text, "question", options, multi=True, send_label=send)
    return Rendered(text, "question", options)


def field_labels(field_config: Any, locale: str, fallback: str) -> list[str]:
    labels = field_config.labels.get(locale) or field_config.labels.get(fallback)
    if labels:
        return list(labels)
    return [_humanise(v) for v in field_config.values]


def _humanise(value: str) -> str:
    text = value.replace("_", " ")
    return text[:1].upper() + text[1:]


def field_message(
    catalog: MessageCatalog, field_config: Any, locale: str, *, fallback: str, reask: bool
) -> Rendered:
    labels = field_labels(field_config, locale, fallback)
    text = field_config.text.get(locale) or field_config.text.get(fallback)
    if not text:
        text = catalog.render(
            "field_default_text", locale, field_label=_humanise(field_config.name).lower()
        )
    body = catalog.render("field_question", locale, text=text, options=labels, reask=reask)
    options = [{"reply": str(i), "label": label} for i, label in enumerate(labels, 1)]
    return Rendered(body, "field_question", options)


def language_menu(
    catalog: MessageCatalog, locales: list[str], default_locale: str, *, welcome: str = ""
) -> Rendered:
    names = [language_name(code) for code in locales]
    options = [f"{i} {name}" for i, name in enumerate(names, 1)]
    text = catalog.render("language_menu", default_locale, options=options, welcome=welcome)
    quick = [{"reply": str(i), "label": name} for i, name in enumerate(names, 1)]
    return Rendered(text, "language_menu", quick)


class Renderer:
    """Messages in a panellist's language: the catalog's templates with the panel's name
    and contact filled in, the locale's words, whether a reply means yes, and each survey
    question's message (rendered once per version, locale and lead-in).

    The engine holds one (``engine.renderer``) and gives it to sign-up, the survey runner
    and the waves.
    """

    def __init__(self, catalog: MessageCatalog, settings: Settings) -> None:
        self.catalog = catalog
        self.settings = settings
        self._questions: dict[tuple[Any, ...], Rendered] = {}
        self._answer_words: dict[str, tuple[set[str], set[str], tuple[str, ...]]] = {}

    @property
    def default_locale(self) -> str:
        return self.settings.bot.default_locale

    def words(self, locale: str) -> dict[str, Any]:
        return self.catalog.words(locale or self.default_locale)

    def render(self, name: str, locale: str, **context: Any) -> str:
        return self.catalog.render(
            name,
            locale or self.default_locale,
            panel_name=self.settings.bot.name,
            contact=self.settings.bot.contact,
            **context,
        )

    def is_yes(self, text: str, locale: str) -> bool:
        """Whether a reply means yes, in the person's language or in English."""
        from bot.engine.keywords import normalise

        words = self.catalog.all_words("yes", {locale or self.default_locale, "en"})
        return normalise(text) in words

    def answer_words(self, locale: str) -> tuple[set[str], set[str], tuple[str, ...]]:
        """Yes, no and "and" words for reading answers: the locale's and always English."""
        found = self._answer_words.get(locale)
        if found is None:
            words, english = self.words(locale), self.words("en")
            found = (
                set(words.get("yes", [])) | set(english.get("yes", [])),
                set(words.get("no", [])) | set(english.get("no", [])),
                tuple(set(words.get("and", [])) | set(english.get("and", []))),
            )
            self._answer_words[locale] = found
        return found

    def question(
        self, row_id: int, survey: Survey, question: Question, locale: str, *, skipped: bool = False
    ) -> Rendered:
        """A question's message, rendered once per survey version, locale and lead-in.

        Survey versions never change, so the text can be reused for everyone who reaches
        the question (most inbound messages end by asking the next one).
        """
        key = (row_id, question.id, locale, skipped)
        msg = self._questions.get(key)
        if msg is None:
            msg = question_message(
                self.catalog,
                survey,
                question,
                locale,
                fallback=self.default_locale,
                skipped=skipped,
            )
            if len(self._questions) > 10_000:
                self._questions.clear()
            self._questions[key] = msg
        return msg
