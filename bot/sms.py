"""SMS encoding, length and cost: pure functions run on every outbound SMS and ``messages check``.

One segment carries 160 GSM-7 septets (153 when the message is split) or 70 UCS-2 units (67
when split). A single character outside the GSM 03.38 alphabet turns the whole message into
UCS-2, and cost is per segment, so :func:`sanitise` swaps typographic punctuation for its
GSM equivalent first. Messages are capped at :data:`MAX_SEGMENTS` segments, as GOV.UK Notify
does (918 GSM-7 characters).

Segments are packed one user-perceived character (grapheme cluster) at a time, the way
Twilio's segment calculator bills them: a two-septet extension character (``€``, ``{``...),
a UTF-16 surrogate pair (most emoji), a flag, a ZWJ family emoji, an emoji with a skin tone
or a letter with a combining accent is never split across two segments, so it can push a
message into one more segment than plain division suggests.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = [
    "ELLIPSIS",
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_MULTI",
    "GSM7_SINGLE",
    "MAX_GSM7_CHARS",
    "MAX_SEGMENTS",
    "MAX_UCS2_UNITS",
    "UCS2_MULTI",
    "UCS2_SINGLE",
    "Encoding",
    "SmsInfo",
    "encode_info",
    "gsm7_length",
    "is_gsm7",
    "prepare",
    "sanitise",
    "truncate_to_cap",
]

GSM7_SINGLE = 160  # septets in a message that fits one segment
GSM7_MULTI = 153  # septets per segment once split (7 go on the concatenation header)
UCS2_SINGLE = 70  # UTF-16 units in a one-segment UCS-2 message
UCS2_MULTI = 67  # UTF-16 units per segment once split
MAX_SEGMENTS = 6
MAX_GSM7_CHARS = MAX_SEGMENTS * GSM7_MULTI  # 918, GOV.UK Notify's limit
MAX_UCS2_UNITS = MAX_SEGMENTS * UCS2_MULTI  # 402
ELLIPSIS = "..."  # what truncate_to_cap appends: three GSM-7 full stops, never "…"

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet in code order 0x00-0x7F, without 0x1B (the escape to the
# extension table, which is not a character of its own).
_GSM7_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM7_BASIC: frozenset[str] = frozenset(_GSM7_TABLE) - {"\x1b"}
"""Characters of the GSM 03.38 default alphabet: one septet each."""
GSM7_EXTENSION: frozenset[str] = frozenset("\x0c^{}\\[~]|€")
"""Characters of the GSM 03.38 extension table: escape + code, two septets each."""
_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """How a text travels as SMS: its encoding, size, segment count and whether it is too long.

    ``units`` are septets for GSM-7 (extension characters count 2) and UTF-16 code units for
    UCS-2 (a character outside the Basic Multilingual Plane, like most emoji, counts 2).
    ``segments`` is 0 for an empty text. ``non_gsm`` lists, sorted, the characters that forced
    UCS-2. ``over_cap`` is True when the text needs more than :data:`MAX_SEGMENTS` segments:
    beyond 918 GSM-7 septets or 402 UCS-2 units (or slightly fewer when two-unit characters
    straddle segment boundaries).
    """

    encoding: Encoding
    units: int
    segments: int
    characters: int
    non_gsm: tuple[str, ...]
    over_cap: bool

    def cost(self, price_per_segment: float) -> float:
        """The price of sending this message once, at ``price_per_segment``."""
        return float(self.segments * price_per_segment)


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` is in the GSM 03.38 alphabet or its extension."""
    return _GSM7_ALL.issuperset(text)


def gsm7_length(text: str) -> int:
    """Septets ``text`` takes as GSM-7: extension characters count 2.

    Raises :class:`ValueError` if ``text`` has a character GSM-7 cannot carry.
    """
    characters = set(text)
    if not characters <= _GSM7_ALL:
        raise ValueError(f"not GSM-7: {''.join(sorted(characters - _GSM7_ALL))!r}")
    return _septets(text, characters)


def _septets(text: str, characters: set[str]) -> int:
    # Counting only the extension characters present keeps the usual case to one set() pass.
    return len(text) + sum(text.count(char) for char in characters & GSM7_EXTENSION)


def encode_info(text: str) -> SmsInfo:
    """Encoding, size, segments and cap status of ``text`` sent as one SMS."""
    characters = len(text)
    distinct = set(text)
    if distinct <= _GSM7_ALL:
        units = _septets(text, distinct)
        # GSM-7 has no combining marks or emoji: its only cluster, CRLF, Twilio splits.
        segments = _segments(
            units,
            characters,
            GSM7_SINGLE,
            GSM7_MULTI,
            (2 if char in GSM7_EXTENSION else 1 for char in text),
        )
        return SmsInfo("GSM-7", units, segments, characters, (), segments > MAX_SEGMENTS)
    units = _utf16_units(text)
    if any(map(_may_extend, distinct)):
        segments = _segments(units, -1, UCS2_SINGLE, UCS2_MULTI, _ucs2_clusters(text))
    else:  # every character is a cluster of its own (the usual case): no need to find them
        sizes = (2 if ord(char) > 0xFFFF else 1 for char in text)
        segments = _segments(units, characters, UCS2_SINGLE, UCS2_MULTI, sizes)
    non_gsm = tuple(sorted(distinct - _GSM7_ALL))
    return SmsInfo("UCS-2", units, segments, characters, non_gsm, segments > MAX_SEGMENTS)


def _utf16_units(text: str) -> int:
    # surrogatepass: a lone surrogate (from a badly decoded file) still counts as one unit
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _segments(units: int, characters: int, single: int, multi: int, sizes: Iterable[int]) -> int:
    """Segments for ``units`` units; ``sizes`` (units per unsplittable piece) is read only
    when needed. A piece that does not fit in what is left of a segment starts the next one."""
    if units == 0:
        return 0
    if units <= single:
        return 1
    if units == characters:  # every character is one unit: nothing can straddle a boundary
        return math.ceil(units / multi)
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return segments


def _ucs2_clusters(text: str) -> Iterator[int]:
    """UTF-16 units of each user-perceived character (grapheme cluster) of ``text``.

    Twilio never splits a cluster between segments: a flag, a ZWJ family, an emoji with a
    skin tone, a letter with a combining accent that does not fit in what is left of a
    segment starts the next one. As in Twilio's calculator, CR and LF stay two. A cluster
    larger than a whole segment (hundreds of combining marks) cannot stay whole and is given
    character by character. The same boundaries as :func:`_grapheme_cuts`, in one pass.
    """
    sizes: list[int] = []  # the current cluster's characters
    previous = ""
    regional_run = 0  # regional indicators in a row ending at ``previous``
    for char in text:
        code = ord(char)
        size = 2 if code > 0xFFFF else 1
        joins = bool(sizes) and (
            char == _ZWJ
            or previous == _ZWJ
            or (
                code >= 0x300  # nothing below U+0300 extends a cluster
                and (
                    0x1F3FB <= code <= 0x1F3FF  # skin tones
                    or 0xE0020 <= code <= 0xE007F  # tags
                    or (0x1F1E6 <= code <= 0x1F1FF and regional_run % 2 == 1)
                    or unicodedata.category(char) in ("Mn", "Mc", "Me")
                )
            )
        )
        if not joins and sizes:
            yield from _cluster(sizes)
            sizes = []
        sizes.append(size)
        regional_run = regional_run + 1 if 0x1F1E6 <= code <= 0x1F1FF else 0
        previous = char
    if sizes:
        yield from _cluster(sizes)


@lru_cache(maxsize=4096)
def _may_extend(char: str) -> bool:
    """Whether ``char`` can join a cluster with its neighbour (ZWJ, marks, emoji parts)."""
    code = ord(char)
    return code >= 0x300 and (
        char == _ZWJ
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
        or 0x1F1E6 <= code <= 0x1F1FF
        or unicodedata.category(char) in ("Mn", "Mc", "Me")
    )


def _cluster(sizes: list[int]) -> list[int]:
    if len(sizes) == 1:
        return sizes
    total = sum(sizes)
    return [total] if total <= UCS2_MULTI else sizes


# sanitise: only characters whose GSM-7 replacement means exactly the same thing.
_REPLACEMENTS: dict[str, str] = {
    # quotation marks, apostrophes and primes
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
    "\u2039": "<",
    "\u203a": ">",
    # hyphens, dashes, minus sign, bullet
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2022", "-"),
    "\u2026": "...",
    # every Unicode space separator (category Zs) but U+0020 itself, and tab
    **dict.fromkeys("\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006", " "),
    **dict.fromkeys("\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    # line and paragraph separators
    "\u2028": "\n",
    "\u2029": "\n",
    # invisible: zero-width space, word joiner, soft hyphen, byte order mark
    **dict.fromkeys("\u200b\u2060\u00ad\ufeff", ""),
    # a backtick typed as an apostrophe ("don`t")
    "`": "'",
    # full-width ASCII ("ＯＫ！"), as East Asian keyboards type it: the same characters
    **{chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
}
_TRANSLATION = str.maketrans(_REPLACEMENTS)
# Zero-width joiner and non-joiner are dropped only when stray: between two non-GSM characters
# they build emoji (👨‍👩‍👧) or shape Urdu, Persian and Indic script, and the message is UCS-2
# anyway, so removing them would save nothing and damage the text.
_JOINER_RUN = re.compile("[\u200c\u200d]+")


def sanitise(text: str) -> str:
    """``text`` with typographic characters replaced by their GSM-7 equivalents.

    NFC-normalises, then turns curly quotes and backticks into straight ones, dashes into
    ``-``, ``…`` into ``...``, full-width ASCII (``ＯＫ！``) into ASCII, Unicode spaces into
    spaces, and removes zero-width characters, so that one stray
    curly quote does not make a message UCS-2 (halving what fits in a segment). Letters of any
    script and emoji are left alone. Idempotent.
    """
    while not is_gsm7(text):
        cleaned = _sanitise_once(text)
        if cleaned == text:
            break
        # Removing a character can bring a combining mark next to its base letter, so go
        # round again until NFC and the joiner rule are both stable.
        text = cleaned
    return text


def _sanitise_once(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATION)
    text = _JOINER_RUN.sub(_keep_joiners_between_non_gsm, text)
    return unicodedata.normalize("NFC", text)


def _keep_joiners_between_non_gsm(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else "a"
    after = text[end] if end < len(text) else "a"
    return match.group() if before not in _GSM7_ALL and after not in _GSM7_ALL else ""


def truncate_to_cap(text: str) -> str:
    """``text`` cut to fit :data:`MAX_SEGMENTS` segments, ending in ``...``; unchanged if it fits.

    Keeps the longest prefix (trailing spaces dropped) that fits with ``...`` in whichever
    encoding that prefix needs, cut between user-perceived characters where possible (never
    inside an emoji sequence, a flag or a letter with combining marks), else between code
    points. An emoji outside the BMP is one Python character, so its surrogate pair stays whole.
    """
    return _truncate(text)[0]


def prepare(text: str, *, sanitise_text: bool = True) -> tuple[str, SmsInfo]:
    """The text to send and its :class:`SmsInfo`: sanitised (unless told not to), then capped.

    What the Twilio channel calls before sending; the info is that of the returned text, so
    ``info.segments`` never exceeds :data:`MAX_SEGMENTS`.
    """
    return _truncate(sanitise(text) if sanitise_text else text)


def _truncate(text: str) -> tuple[str, SmsInfo]:
    info = encode_info(text)
    if not info.over_cap:
        return text, info
    # Each character is at least one unit, so no prefix longer than this can fit.
    limit = min(len(text), MAX_GSM7_CHARS)
    cut = _longest_fitting(text, _grapheme_cuts(text, limit))
    if cut == 0:  # one enormous grapheme (a letter with hundreds of marks): cut inside it
        cut = _longest_fitting(text, range(limit + 1))
    capped = text[:cut].rstrip() + ELLIPSIS
    return capped, encode_info(capped)


def _longest_fitting(text: str, cuts: list[int] | range) -> int:
    """The largest cut in ``cuts`` (ascending, starting at 0) whose prefix fits with "...".

    Binary search is sound because a longer prefix never needs fewer segments, even when it
    switches from GSM-7 to UCS-2 (a UCS-2 segment holds fewer characters than a GSM-7 one).
    """
    low, high = 0, len(cuts) - 1  # cuts[low] always fits: "..." alone is one segment
    while low < high:
        middle = (low + high + 1) // 2
        if encode_info(text[: cuts[middle]].rstrip() + ELLIPSIS).segments <= MAX_SEGMENTS:
            low = middle
        else:
            high = middle - 1
    return cuts[low]


_ZWJ = "\u200d"


def _grapheme_cuts(text: str, limit: int) -> list[int]:
    """Indices up to ``limit`` where ``text`` can be cut keeping user-perceived characters whole.

    A stdlib approximation of Unicode grapheme cluster boundaries (UAX #29) covering what
    panel messages contain: combining marks, emoji modifiers, variation selectors, ZWJ
    sequences, tag sequences (subdivision flags), regional-indicator pairs (flags) and CRLF.
    """
    cuts = [0]
    regional_run = 0  # regional indicators in a row just before index
    for index in range(1, limit + 1):
        previous = text[index - 1]
        regional_run = regional_run + 1 if _is_regional_indicator(previous) else 0
        if index == len(text):
            cuts.append(index)
            break
        char = text[index]
        code = ord(char)
        if (
            (previous == "\r" and char == "\n")
            or _ZWJ in (char, previous)
            or unicodedata.category(char) in ("Mn", "Mc", "Me")  # includes variation selectors
            or 0x1F3FB <= code <= 0x1F3FF  # skin tones
            or 0xE0020 <= code <= 0xE007F  # tags
            # flags are pairs: cut only after an even number of regional indicators in a row
            or (_is_regional_indicator(char) and regional_run % 2 == 1)
        ):
            continue
        cuts.append(index)
    return cuts


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF
