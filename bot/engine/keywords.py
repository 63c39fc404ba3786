"""Keywords: STOP, START, HELP and LANGUAGE, recognised only as the whole message.

"stop texting me so often" is an answer, not an opt-out: a keyword acts only when the
trimmed message, in any case and without trailing punctuation, is exactly one of the words.
The opt-out, opt-in and help words of every locale the panel speaks work whatever language
the panellist chose, and the English ones always work.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable

from bot.messages import MessageCatalog


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"
    LANGUAGE = "language"


# Phones with an Arabic keyboard type Arabic yeh, kaf and heh where Urdu uses its own
# letters; keywords match either way.
_ARABIC_TO_URDU = str.maketrans({"\u064a": "\u06cc", "\u0643": "\u06a9", "\u0647": "\u06c1"})


def normalise(text: str) -> str:
    """NFKC, case-folded, trimmed of whitespace and trailing ``.!`` as people type them."""
    text = unicodedata.normalize("NFKC", text).strip().casefold().translate(_ARABIC_TO_URDU)
    return text.rstrip(".!。۔").strip()


class KeywordRouter:
    """Recognises keywords from the message catalogs' ``words.toml`` lists."""

    def __init__(self, catalog: MessageCatalog, locales: Iterable[str]) -> None:
        locales = set(locales) | {"en"}
        self._words: dict[str, Keyword] = {}
        # Later entries win; STOP is added last so that no locale's word can shadow it.
        for keyword in (Keyword.LANGUAGE, Keyword.HELP, Keyword.START, Keyword.STOP):
            for word in catalog.all_words(keyword.value, locales):
                self._words[normalise(word)] = keyword

    def classify(self, text: str) -> Keyword | None:
        if len(text) > 40:  # no keyword is this long; skip the work for long answers
            return None
        return self._words.get(normalise(text))
