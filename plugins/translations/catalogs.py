"""What the catalog folders hold: which locales have one, and what each says about itself.

A catalog is a folder ``<messages dir>/<locale>/`` of ``*.txt.j2`` templates and a
``words.toml``. English (``en``) is the source every other catalog translates; its message
names are the set a complete catalog has. A catalog's ``words.toml`` may end with a
``[catalog]`` table: ``reviewed`` (a person signed the wording off), ``reviewer`` and
``direction = "rtl"`` for a right-to-left script Babel does not know as such.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError

from bot.plugin_api import WORDS_FILE, template_names

logger = logging.getLogger(__name__)

SOURCE_LOCALE = "en"
CATALOG_TABLE = "catalog"
# A folder name that can be a locale: "cy", "pa-Arab", "en-GB". Also keeps a PO file's
# Language header from naming a path outside the messages folder.
_LOCALE_NAME = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def is_locale_name(text: str) -> bool:
    """True for something shaped like a locale code (``cy``, ``pa-Arab``, ``en_GB``)."""
    return bool(_LOCALE_NAME.fullmatch(text))


def language_chain(locale: str) -> list[str]:
    """The locale and its shorter forms, all the same language: ``pa-Arab`` → pa-Arab, pa."""
    parts = locale.replace("_", "-").split("-")
    return ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]


def babel_locale(locale: str) -> Locale | None:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return None


def locale_folders(dirs: Iterable[Path]) -> list[str]:
    """Every locale with a folder in any of ``dirs``, English first, then by name."""
    found: set[str] = set()
    for d in dirs:
        if d.is_dir():
            found.update(p.name for p in d.iterdir() if p.is_dir() and is_locale_name(p.name))
    return sorted(found, key=lambda loc: (loc != SOURCE_LOCALE, loc))


def has_folder(locale: str, dirs: Iterable[Path]) -> bool:
    return any((d / locale).is_dir() for d in dirs)


def catalog_of(locale: str, dirs: Sequence[Path]) -> str | None:
    """The folder that speaks ``locale``'s language: its own, else its base language's."""
    return next((loc for loc in language_chain(locale) if has_folder(loc, dirs)), None)


def own_words(locale: str, dirs: Sequence[Path]) -> dict[str, Any]:
    """This locale's own ``words.toml`` (earlier dirs win), without English's words."""
    merged: dict[str, Any] = {}
    for d in reversed(dirs):
        merged.update(_read_toml(d / locale / WORDS_FILE))
    return merged


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    """The ``[catalog]`` table of a locale's ``words.toml``."""

    reviewed: bool = False
    reviewer: str = ""
    direction: str = ""  # "rtl", "ltr" or "" (then Babel decides)


def catalog_info(locale: str, dirs: Sequence[Path]) -> CatalogInfo:
    """What a locale's catalog says about itself; no table means an unreviewed draft."""
    table = own_words(locale, dirs).get(CATALOG_TABLE)
    if not isinstance(table, dict):
        return CatalogInfo()
    return CatalogInfo(
        reviewed=table.get("reviewed") is True,
        reviewer=str(table.get("reviewer", "")),
        direction=str(table.get("direction", "")).lower(),
    )


def is_rtl(locale: str, dirs: Sequence[Path]) -> bool:
    """Right-to-left: the catalog says ``direction = "rtl"``, or Babel's CLDR data does.

    The catalog of the locale or of its base language is asked first, so a catalog can
    settle a script Babel does not know; a catalog saying ``"ltr"`` overrides Babel too.
    """
    for candidate in language_chain(locale):
        direction = catalog_info(candidate, dirs).direction
        if direction in ("rtl", "ltr"):
            return direction == "rtl"
    parsed = babel_locale(locale)
    return parsed is not None and parsed.character_order == "right-to-left"


def offered_locales(
    configured: Sequence[str], dirs: Sequence[Path], required: str = "consent"
) -> tuple[list[str], dict[str, str]]:
    """The configured locales the panel can really speak, and why each other one cannot.

    A locale is offered when a catalog in its language exists (``pa-Arab`` counts when only
    ``pa/`` does) and that catalog has the ``required`` message: someone who chose a language
    must be able to read what they consent to, so a half-started catalog is not offered.
    English is always offered: it is the last fallback of every chain.
    """
    offered: list[str] = []
    dropped: dict[str, str] = {}
    for locale in configured:
        if locale == SOURCE_LOCALE:
            offered.append(locale)
            continue
        chain = language_chain(locale)
        folders = [loc for loc in chain if has_folder(loc, dirs)]
        if not folders:
            dropped[locale] = f"no catalog folder ({' or '.join(f'messages/{c}' for c in chain)})"
        elif not any(required in template_names(loc, dirs) for loc in folders):
            dropped[locale] = f"its catalog has no {required!r} message"
        else:
            offered.append(locale)
    return offered, dropped


@lru_cache(maxsize=128)
def _read_toml_cached(path: Path, mtime_ns: int) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        stat = path.stat()
    except OSError:
        return {}
    try:
        # Keyed on the modification time: `messages import` rewrites these files.
        return _read_toml_cached(path, stat.st_mtime_ns)
    except tomllib.TOMLDecodeError as exc:
        logger.warning("%s is not valid TOML (%s); ignored", path, exc)
        return {}
