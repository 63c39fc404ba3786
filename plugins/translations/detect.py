"""A first guess at the language of someone's first message, from its script and greetings.

The guess only decides the language of the welcome and the language menu: the person still
picks their language from the menu, so a wrong guess costs one message, never consent given
in a language the person does not read. The rules are deliberately few and readable:

1. Arabic script (Urdu is written in it) → ``ur``.
2. The whole message is a language's own name ("Cymraeg", "Polski", "اردو") → that language.
3. Welsh: ŵ or ŷ, or a greeting (helo, shwmae, bore da, prynhawn da, noswaith dda, diolch).
4. Polish: a letter only Polish uses (ą ć ę ł ń ś ź ż) or cześć, dzień dobry, witam.
5. Romanian: ă â î ș ț (or the cedilla forms ş ţ), or bună, bună ziua, salut.

Welsh comes before Romanian because Welsh also writes â and î. A rule's language is only
returned when the panel offers it; otherwise the next rule is tried, and in the end None.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from plugins.translations.catalogs import babel_locale

_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_WORD = re.compile(r"\w+")

# (locale, letters that point to it, greetings and words as tuples of words)
_RULES: tuple[tuple[str, frozenset[str], tuple[tuple[str, ...], ...]], ...] = (
    (
        "cy",
        frozenset("ŵŷ"),
        (
            ("helo",),
            ("shwmae",),
            ("shw", "mae"),
            ("bore", "da"),
            ("prynhawn", "da"),
            ("noswaith", "dda"),
            ("diolch",),
        ),
    ),
    (
        "pl",
        frozenset("ąćęłńśźż"),
        (("cześć",), ("czesc",), ("dzień", "dobry"), ("dzien", "dobry"), ("witam",)),
    ),
    (
        "ro",
        frozenset("ăâîșțşţ"),
        (("bună",), ("buna", "ziua"), ("salut",)),
    ),
)


def _offered(code: str, offered: Sequence[str] | None) -> str | None:
    """``code`` if the panel offers it, else an offered variant of it (``pl`` → ``pl-PL``)."""
    if offered is None:
        return code
    if code in offered:
        return code
    return next((loc for loc in offered if loc.split("-")[0].lower() == code), None)


def _has_phrase(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))


def _own_name(text: str, offered: Sequence[str]) -> str | None:
    for code in offered:
        parsed = babel_locale(code)
        if parsed is None:
            continue
        names = {code.casefold(), (parsed.get_display_name(parsed) or "").casefold()}
        names.add((parsed.get_language_name(parsed) or "").casefold())
        if text in names:
            return code
    return None


def guess_locale(text: str, offered: Sequence[str] | None) -> str | None:
    """The offered locale ``text`` is most likely written in, or None when nothing points.

    :param text: the first message someone sent.
    :param offered: the panel's locales (``bot.locales``); None accepts any guess.
    """
    text = unicodedata.normalize("NFC", text).strip().casefold()
    if not text:
        return None
    if _ARABIC_SCRIPT.search(text):
        found = _offered("ur", offered)
        if found:
            return found
    if offered is not None:
        named = _own_name(text.rstrip(".!?"), offered)
        if named:
            return named
    letters = set(text)
    words = _WORD.findall(text)
    for code, marks, phrases in _RULES:
        if letters & marks or any(_has_phrase(words, phrase) for phrase in phrases):
            found = _offered(code, offered)
            if found:
                return found
    return None
