"""``panelbot messages check``: is each catalog complete, and what does each message cost?

For every locale and every message English has, the check resolves the template through the
real :class:`bot.plugin_api.MessageCatalog` (so it sees exactly the fallbacks a panellist
would), renders a typical message with the sample values below, and measures the text as it
would be sent over SMS: with the right-to-left marks this plugin adds and the sanitising the
Twilio channel does, through :func:`bot.plugin_api.sms_info`.

A message is *present* in the locale, *falls back* to its base language (``pa-Arab`` to
``pa``: still the right language), is *missing* (the panellist would get English) or is
*broken* (it does not compile, or needs a value English does not pass). Missing and broken
messages fail the check; unreviewed (draft) catalogs are reported, never failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from bot.plugin_api import (
    TEMPLATE_SUFFIX,
    MessageCatalog,
    MissingMessage,
    UnsafeTemplate,
    fallback_chain,
    language_name,
    sanitise,
    sms_info,
    table_lines,
)
from plugins.translations import bidi
from plugins.translations.catalogs import (
    SOURCE_LOCALE,
    catalog_info,
    has_folder,
    is_rtl,
    language_chain,
    locale_folders,
    template_names,
)

SEGMENT_LIMIT = 3  # more than this is flagged: long, dear, and often split badly on old phones
STRAY_CHARACTERS = 4  # up to this many non-GSM characters are named in the table
ALWAYS_PASSED = frozenset({"locale"})  # MessageCatalog.render passes the locale used itself

PRESENT = "present"
FALLS_BACK = "falls_back"
MISSING = "missing"
BROKEN = "broken"


# -- sample values ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nested:
    """A value that is itself a rendered message in the same locale (the invitation's question)."""

    name: str


@dataclass(frozen=True, slots=True)
class SurveyText:
    """A survey's own words, which come in the panellist's language too: see SURVEY_SAMPLES."""

    key: str


@dataclass(frozen=True, slots=True)
class LanguageOptions:
    """The numbered language names of the menu, one per checked locale."""


# A typical survey in each shipped language, so that a survey's words count towards the
# encoding and length as they will in real messages (Welsh often needs ŵ or â, which GSM-7
# does not have). Locales without an entry use their base language's, else English.
SURVEY_SAMPLES: dict[str, dict[str, Any]] = {
    "en": {
        "title": "Getting a GP appointment",
        "intro": "Your local NHS wants to know how easy it is to see a GP. "
        "Up to 7 short questions, about 2 minutes.",
        "question": "The last time you tried to get a GP appointment, how easy was it?",
        "options": ["Very easy", "Fairly hard", "Very hard"],
        "field": "Which age group are you in?",
    },
    "cy": {
        "title": "Cael apwyntiad gyda meddyg teulu",
        "intro": "Mae eich GIG lleol eisiau gwybod pa mor hawdd yw gweld meddyg teulu. "
        "Hyd at 7 cwestiwn byr, tua 2 funud.",
        "question": "Y tro diwethaf i chi geisio cael apwyntiad gyda meddyg teulu, "
        "pa mor hawdd oedd hi?",
        "options": ["Hawdd iawn", "Eithaf anodd", "Anodd iawn"],
        "field": "Ym mha grŵp oedran ydych chi?",
    },
    "pl": {
        "title": "Wizyta u lekarza rodzinnego",
        "intro": "Lokalna służba zdrowia NHS chce wiedzieć, jak łatwo jest dostać się do "
        "lekarza rodzinnego. Do 7 krótkich pytań, około 2 minut.",
        "question": "Kiedy ostatnio próbowałeś umówić wizytę u lekarza rodzinnego, jak łatwo było?",
        "options": ["Bardzo łatwo", "Raczej trudno", "Bardzo trudno"],
        "field": "W jakiej jesteś grupie wiekowej?",
    },
    "ur": {
        "title": "جی پی سے ملاقات کا وقت لینا",
        "intro": "آپ کی مقامی NHS جاننا چاہتی ہے کہ جی پی سے ملنا کتنا آسان ہے۔ "
        "زیادہ سے زیادہ 7 مختصر سوالات، تقریباً 2 منٹ۔",
        "question": "پچھلی بار جب آپ نے جی پی سے ملاقات کا وقت لینے کی کوشش کی "
        "تو یہ کتنا آسان تھا؟",
        "options": ["بہت آسان", "کافی مشکل", "بہت مشکل"],
        "field": "آپ کس عمر کے گروپ میں ہیں؟",
    },
    "ro": {
        "title": "Programarea la medicul de familie",
        "intro": "NHS-ul local vrea să afle cât de ușor este să ajungeți la medicul de familie. "
        "Cel mult 7 întrebări scurte, cam 2 minute.",
        "question": "Ultima dată când ați încercat să obțineți o programare la medicul de "
        "familie, cât de ușor a fost?",
        "options": ["Foarte ușor", "Destul de greu", "Foarte greu"],
        "field": "Din ce grupă de vârstă faceți parte?",
    },
}

SAMPLE_CLOSES_AT = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
AGE_BANDS = ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]

# The values each template is rendered with for the check: what a typical message carries.
# Only the variables English's template uses are passed (plus panel_name and contact from the
# config, for the templates whose English uses them), exactly as the engine would.
SAMPLES: dict[str, dict[str, Any]] = {
    # With several languages the welcome travels with the language menu, not the consent.
    "consent": {"welcome": ""},
    "language_menu": {"welcome": Nested("welcome"), "options": LanguageOptions()},
    "field_default_text": {"field_label": "age group"},
    "field_question": {"text": SurveyText("field"), "options": AGE_BANDS, "reask": False},
    "help": {"languages": True, "in_survey": False, "joined": True},
    "opted_in": {"already": False},
    "survey_complete": {"thanks": ""},
    # A choice question with three options, the commonest kind.
    "question": {
        "number": 1,
        "total": 6,
        "text": SurveyText("question"),
        "type": "choice",
        "options": SurveyText("options"),
        "min": None,
        "max": None,
        "min_label": "",
        "max_label": "",
        "reask": False,
        "skipped": False,
        "valid_replies": "",
    },
    "invitation": {
        "intro": SurveyText("intro"),
        "questions": 6,
        "closes_at": SAMPLE_CLOSES_AT,
        "question": Nested("question"),
        "title": SurveyText("title"),
    },
    # The decision's own words are the staff's (one language); the frame is translated.
    "impact_update": {
        "you_said": "Booking a GP appointment by phone was too hard.",
        "we_did": "Every practice now offers online booking.",
        "finding_percent": 62,
        "finding_option": "Very hard",
        "finding_n": 412,
        "decided_by": "the ICB board",
        "took_part": True,
        "participants": 412,
        "link": "https://panel.example.org/impact",
        "feedback": True,
    },
    "reminder": {
        "title": SurveyText("title"),
        "closes_at": SAMPLE_CLOSES_AT,
        "question": Nested("question"),
    },
    # `panel select --invite` (quotas plugin; its catalog is plugins/quotas/messages).
    "selection_invitation": {"size": 24},
}


class SampleMissing(LookupError):
    """English uses a variable this module has no sample value for (a bug here)."""


# -- results ----------------------------------------------------------------------------


@dataclass(slots=True)
class MessageCheck:
    name: str
    status: str
    used_locale: str | None
    encoding: str | None = None
    segments: int | None = None
    units: int | None = None
    characters: int | None = None
    non_gsm: list[str] = field(default_factory=list)
    cost_per_1000: float | None = None
    error: str | None = None

    @property
    def long(self) -> bool:
        return (self.segments or 0) > SEGMENT_LIMIT

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["over_segment_limit"] = self.long
        return data


@dataclass(slots=True)
class LocaleCheck:
    locale: str
    reviewed: bool
    reviewer: str
    direction: str
    messages: list[MessageCheck] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # templates English does not have

    def count(self, status: str) -> int:
        return sum(1 for m in self.messages if m.status == status)

    @property
    def failures(self) -> list[MessageCheck]:
        return [m for m in self.messages if m.status in (MISSING, BROKEN)]

    def summary(self) -> str:
        encodings = [m.encoding for m in self.messages if m.encoding]
        long = [f"{m.name} ({m.segments})" for m in self.messages if m.long]
        review = f"reviewed by {self.reviewer}" if self.reviewer else "reviewed"
        parts = [
            f"{self.locale}: {review if self.reviewed else 'draft (not reviewed)'}",
            f"{self.count(PRESENT)} present, {self.count(FALLS_BACK)} fall back, "
            f"{self.count(MISSING)} missing, {self.count(BROKEN)} broken",
            f"{encodings.count('GSM-7')} GSM-7, {encodings.count('UCS-2')} UCS-2",
            f"over {SEGMENT_LIMIT} segments: {', '.join(long) if long else 'none'}",
        ]
        if self.direction == "rtl":
            parts.append("right-to-left")
        if self.extra:
            parts.append(f"not in English (typo?): {', '.join(self.extra)}")
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "locale": self.locale,
            "reviewed": self.reviewed,
            "reviewer": self.reviewer,
            "direction": self.direction,
            "ok": not self.failures,
            "counts": {s: self.count(s) for s in (PRESENT, FALLS_BACK, MISSING, BROKEN)},
            "messages": [m.as_json() for m in self.messages],
            "extra": self.extra,
            "summary": self.summary(),
        }


@dataclass(slots=True)
class CheckReport:
    price_per_segment: float
    dirs: list[Path]
    locales: list[LocaleCheck]

    @property
    def ok(self) -> bool:
        return not any(loc.failures for loc in self.locales)

    def failure_line(self) -> str:
        """One line naming every missing or broken message, by locale."""
        parts = [
            f"{loc.locale}: {', '.join(f'{m.name} ({m.status})' for m in loc.failures)}"
            for loc in self.locales
            if loc.failures
        ]
        return "messages missing or broken: " + "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "currency": "GBP",
            "price_per_segment": self.price_per_segment,
            "segment_limit": SEGMENT_LIMIT,
            "dirs": [str(d) for d in self.dirs],
            "locales": [loc.as_json() for loc in self.locales],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_json(), indent=2, ensure_ascii=False)

    def to_table(self) -> str:
        header = ("LOCALE", "MESSAGE", "STATUS", "ENCODING", "SEGMENTS", "£/1000", "NOTE")
        rows: list[tuple[str, ...]] = []
        for loc in self.locales:
            for m in loc.messages:
                rows.append(
                    (
                        loc.locale,
                        m.name,
                        _status_text(m),
                        m.encoding or "-",
                        str(m.segments) if m.segments is not None else "-",
                        f"{m.cost_per_1000:.2f}" if m.cost_per_1000 is not None else "-",
                        _note(m),
                    )
                )
        # SEGMENTS and £/1000 are numbers, right-aligned under headers aligned left.
        lines = table_lines(header, rows, right={4, 5}, header_right=False)
        lines.append("")
        lines.append(
            f"Prices at £{self.price_per_segment:g} a segment "
            "([channels.twilio] sms_price_per_segment), for 1,000 sends of each message."
        )
        lines.extend(loc.summary() for loc in self.locales)
        return "\n".join(lines)


def _status_text(m: MessageCheck) -> str:
    if m.status == FALLS_BACK:
        return f"falls back to {m.used_locale}"
    if m.status == MISSING:
        return f"MISSING (sends {m.used_locale})" if m.used_locale else "MISSING"
    if m.status == BROKEN:
        return "BROKEN"
    return m.status


def _note(m: MessageCheck) -> str:
    notes = []
    if m.error:
        notes.append(m.error)
    if m.long:
        notes.append(f"over {SEGMENT_LIMIT} segments")
    if m.non_gsm and m.status != BROKEN:
        # A few stray characters are worth rewording to halve the cost; a whole script is not.
        if len(m.non_gsm) <= STRAY_CHARACTERS:
            notes.append("UCS-2 because of " + " ".join(_visible(c) for c in m.non_gsm))
        else:
            notes.append(f"UCS-2: {len(m.non_gsm)} characters outside GSM-7")
    return "; ".join(notes)


def _visible(char: str) -> str:
    return f"U+{ord(char):04X}" if not char.isprintable() or char.isspace() else char


# -- the check --------------------------------------------------------------------------


class _Renderer:
    """Renders messages the way the engine does, with the sample values."""

    def __init__(
        self,
        catalog: MessageCatalog,
        locales: Sequence[str],
        common: Mapping[str, Any],
    ) -> None:
        self.catalog = catalog
        self.locales = list(locales)
        self.common = dict(common)
        self._english_vars: dict[str, set[str]] = {}

    def english_variables(self, name: str) -> set[str]:
        if name not in self._english_vars:
            path = f"{SOURCE_LOCALE}/{name}{TEMPLATE_SUFFIX}"
            source = self.catalog.env.loader.get_source(self.catalog.env, path)[0]  # type: ignore[union-attr]
            found = meta.find_undeclared_variables(self.catalog.env.parse(source))
            self._english_vars[name] = set(found) - ALWAYS_PASSED
        return self._english_vars[name]

    def context(self, name: str, locale: str) -> dict[str, Any]:
        samples = {**self.common, **SAMPLES.get(name, {})}
        context: dict[str, Any] = {}
        for variable in sorted(self.english_variables(name)):
            if variable not in samples:
                raise SampleMissing(
                    f"no sample value for {variable!r} "
                    "(add one to SAMPLES in plugins/translations/check.py)"
                )
            context[variable] = self._value(samples[variable], locale)
        return context

    def _value(self, value: Any, locale: str) -> Any:
        if isinstance(value, Nested):
            try:
                return self.render(value.name, locale)
            except (jinja2.TemplateError, SampleMissing):
                return ""  # reported on the nested message's own row, not on this one
        if isinstance(value, SurveyText):
            return survey_sample(locale)[value.key]
        if isinstance(value, LanguageOptions):
            return [f"{i} {language_name(code)}" for i, code in enumerate(self.locales, 1)]
        return value

    def render(self, name: str, locale: str) -> str:
        return self.catalog.render(name, locale, **self.context(name, locale))


def survey_sample(locale: str) -> dict[str, Any]:
    for candidate in language_chain(locale):
        if candidate in SURVEY_SAMPLES:
            return SURVEY_SAMPLES[candidate]
    return SURVEY_SAMPLES[SOURCE_LOCALE]


def check_catalogs(
    dirs: Sequence[Path],
    locales: Sequence[str] | None = None,
    *,
    price_per_segment: float,
    panel_name: str = "Citizens' Panel",
    contact: str = "your local NHS engagement team",
    timezone: str = "Europe/London",
    sanitise_sms: bool = True,
    menu_locales: Sequence[str] | None = None,
) -> CheckReport:
    """Check every locale folder in ``dirs`` (or just ``locales``) against English.

    :param dirs: catalog folders, searched in order as the bot searches them.
    :param locales: the locales to check; None for every locale folder found.
    :param price_per_segment: the SMS price per segment, in GBP.
    :param panel_name: the panel's name, as messages will carry it.
    :param sanitise_sms: measure text after :func:`bot.plugin_api.sanitise`, as the Twilio channel
        sends it (``[channels.twilio] sanitize``).
    :param menu_locales: the languages the language menu lists (the panel's); None for every
        catalog found. Each language is named in its own script, so one Urdu name makes the
        whole menu UCS-2.
    """
    dirs = [Path(d) for d in dirs]
    checked = list(locales) if locales is not None else locale_folders(dirs)
    # The default locale is English so that "missing" always means "would be sent in English".
    catalog = MessageCatalog(dirs, SOURCE_LOCALE, timezone)
    menu = list(menu_locales or locale_folders(dirs) or [SOURCE_LOCALE])
    renderer = _Renderer(catalog, menu, {"panel_name": panel_name, "contact": contact})
    english = sorted(template_names(SOURCE_LOCALE, dirs))
    report = CheckReport(price_per_segment, dirs, [])
    for locale in checked:
        report.locales.append(
            _check_locale(locale, english, dirs, catalog, renderer, price_per_segment, sanitise_sms)
        )
    return report


def _check_locale(
    locale: str,
    english: list[str],
    dirs: list[Path],
    catalog: MessageCatalog,
    renderer: _Renderer,
    price: float,
    sanitise_sms: bool,
) -> LocaleCheck:
    info = catalog_info(locale, dirs)
    rtl = is_rtl(locale, dirs)
    result = LocaleCheck(locale, info.reviewed, info.reviewer, "rtl" if rtl else "ltr", extra=[])
    own_language = language_chain(locale)
    if has_folder(locale, dirs):
        result.extra = sorted(template_names(locale, dirs) - set(english))
    for name in english:
        try:
            used, _ = catalog.resolve(name, locale)
        except jinja2.TemplateError as exc:
            result.messages.append(MessageCheck(name, BROKEN, locale, error=_reason(exc)))
            continue
        except MissingMessage:
            used = ""  # every template of the chain was refused: reported just below
        text, error = "", None
        if used:
            try:
                text = renderer.render(name, locale)
            except (jinja2.TemplateError, SampleMissing, TypeError, ValueError) as exc:
                error = exc
            try:
                # A template stopped while rendering (too long, a loop too big) is refused and
                # the catalog rendered the next locale's: the one that was really used.
                used = catalog.resolve(name, locale)[0]
            except MissingMessage:
                used = ""
            except jinja2.TemplateError as exc:
                error = error or exc
        chain = fallback_chain(locale, SOURCE_LOCALE)
        tried = chain[: chain.index(used)] if used in chain else chain
        refused = [c for c in tried if f"{c}/{name}" in catalog.refused]
        if refused:
            # The catalog skips an unsafe template (panellists get the next locale's text);
            # the check names it, so that it is fixed rather than silently bypassed.
            reason = catalog.refused[f"{refused[0]}/{name}"]
            result.messages.append(
                MessageCheck(name, BROKEN, refused[0], error=f"refused, {reason}")
            )
            continue
        if error is not None:
            result.messages.append(MessageCheck(name, BROKEN, used, error=_reason(error)))
            continue
        if used == locale:
            status = PRESENT
        elif used in own_language:
            status = FALLS_BACK
        else:
            status = MISSING
        if rtl and bidi.has_rtl_letters(text):
            text = bidi.mark_lines(text)  # as panelbot_before_send will send it
        if sanitise_sms:
            text = sanitise(text)
        sms = sms_info(text)
        result.messages.append(
            MessageCheck(
                name,
                status,
                used,
                encoding=sms.encoding,
                segments=sms.segments,
                units=sms.units,
                characters=sms.characters,
                non_gsm=list(sms.non_gsm),
                cost_per_1000=round(sms.cost(price) * 1000, 2),
            )
        )
    return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnsafeTemplate):
        return f"refused, never rendered: {exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"does not compile: {exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.UndefinedError):
        return f"uses a value English does not pass: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
