"""Message catalogs: every text a panellist sees is a Jinja2 template under ``<dir>/<locale>/``.

Templates are plain text (no HTML autoescape) rendered with StrictUndefined, so a missing
variable is an error in tests rather than a blank in someone's SMS. A locale without a
template falls back along a chain (``pa-Arab`` → ``pa`` → the panel default → ``en``); each
fallback is logged and counted so translators can see what is missing.
"""

from __future__ import annotations

import logging
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal

logger = logging.getLogger(__name__)

TEMPLATE_SUFFIX = ".txt.j2"
WORDS_FILE = "words.toml"


def template_names(locale: str, dirs: Iterable[Path]) -> set[str]:
    """Message names with a template in exactly this locale's folder of any of ``dirs``."""
    names: set[str] = set()
    for d in dirs:
        folder = d / locale
        if folder.is_dir():
            names.update(
                p.name.removesuffix(TEMPLATE_SUFFIX)
                for p in folder.iterdir()
                if p.name.endswith(TEMPLATE_SUFFIX)
            )
    return names


class MissingMessage(LookupError):
    """No catalog in the fallback chain has the template."""


def fallback_chain(locale: str, default_locale: str = "en") -> list[str]:
    """``pa-Arab`` → [``pa-Arab``, ``pa``, default, ``en``], without repeats."""
    chain: list[str] = []
    parts = locale.replace("_", "-").split("-") if locale else []
    for i in range(len(parts), 0, -1):
        chain.append("-".join(parts[:i]))
    for extra in (default_locale, "en"):
        chain.append(extra)
    seen: set[str] = set()
    return [c for c in chain if c and not (c in seen or seen.add(c))]


class MessageCatalog:
    """Renders named messages in a locale, searching ``dirs`` in order."""

    def __init__(
        self, dirs: Sequence[Path], default_locale: str = "en", timezone: str = "Europe/London"
    ) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.default_locale = default_locale
        self.timezone = timezone
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters.update(
            plural=_plural, date=self._date, datetime=self._datetime, number=_number
        )
        self.fallbacks: Counter[tuple[str, str, str]] = Counter()
        self._resolved: dict[tuple[str, str], tuple[str, jinja2.Template]] = {}
        self._words: dict[str, dict[str, Any]] = {}

    def locales(self) -> list[str]:
        """Every locale that has a folder in any catalog directory."""
        found: set[str] = set()
        for d in self.dirs:
            if d.is_dir():
                found.update(p.name for p in d.iterdir() if p.is_dir())
        return sorted(found)

    def names(self, locale: str) -> set[str]:
        """The message names present for exactly this locale."""
        return template_names(locale, self.dirs)

    def resolve(self, name: str, locale: str) -> tuple[str, jinja2.Template]:
        """The locale actually used for ``name`` and its compiled template."""
        key = (name, locale)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        for candidate in fallback_chain(locale, self.default_locale):
            try:
                template = self.env.get_template(f"{candidate}/{name}{TEMPLATE_SUFFIX}")
            except jinja2.TemplateNotFound:
                continue
            self._resolved[key] = (candidate, template)
            return candidate, template
        raise MissingMessage(f"no message {name!r} for locale {locale!r} or its fallbacks")

    def render(self, name: str, locale: str, **context: Any) -> str:
        """Render message ``name`` for ``locale``; surrounding whitespace is trimmed."""
        used, template = self.resolve(name, locale)
        if used != locale:
            self.fallbacks[(name, locale, used)] += 1
            logger.info("message %s: no %s text, fell back to %s", name, locale, used)
        text = template.render(locale=used, **context)
        # Templates are laid out for people to read; collapse runs of blank lines.
        lines = [line.rstrip() for line in text.strip().splitlines()]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out)

    @jinja2.pass_context
    def _date(self, context: Any, value: datetime, format: str = "EEEE d MMMM") -> str:
        """A date in the message's language and the panel's time zone ("Friday 5 December")."""
        local = value.astimezone(ZoneInfo(self.timezone))
        return format_date(local.date(), format, locale=_babel_locale(context["locale"]))

    @jinja2.pass_context
    def _datetime(self, context: Any, value: datetime, format: str = "EEEE d MMMM, HH:mm") -> str:
        local = value.astimezone(ZoneInfo(self.timezone))
        return format_datetime(local, format, locale=_babel_locale(context["locale"]))

    def words(self, locale: str) -> dict[str, Any]:
        """Keyword and answer words for a locale (``words.toml``), merged over English."""
        if locale in self._words:
            return self._words[locale]
        merged: dict[str, Any] = {}
        for candidate in reversed(fallback_chain(locale, self.default_locale)):
            for d in reversed(self.dirs):
                merged.update(_read_words(d / candidate / WORDS_FILE))
        self._words[locale] = merged
        return merged

    def all_words(self, key: str, locales: Iterable[str]) -> set[str]:
        """The union of one word list over several locales (keywords work in any language)."""
        found: set[str] = set()
        for loc in locales:
            found.update(w.casefold() for w in self.words(loc).get(key, []))
        return found


@lru_cache(maxsize=64)
def _babel_locale(code: str) -> Locale:
    try:
        return Locale.parse(code.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


@jinja2.pass_context
def _plural(context: Any, n: int, **forms: str) -> str:
    """The CLDR plural form of ``n`` for the message's language, ``#`` standing for ``n``.

    ``{{ count|plural(one="# question", few="# pytania", many="# pytań", other="# ...") }}``:
    Polish says "3 pytania" but "5 pytań"; Welsh has six forms. ``other`` is required.
    """
    locale = _babel_locale(context["locale"])
    form = forms.get(locale.plural_form(n)) or forms["other"]
    return form.replace("#", format_decimal(n, locale=locale))


@jinja2.pass_context
def _number(context: Any, n: float) -> str:
    return format_decimal(n, locale=_babel_locale(context["locale"]))


@lru_cache(maxsize=256)
def _read_words(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return tomllib.load(fh)
