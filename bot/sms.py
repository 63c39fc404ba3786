"""SMS length, encoding and cost: pure functions run on every outbound SMS and by ``messages check``.

One segment carries 160 GSM-7 septets (153 when the message is split) or 70 UCS-2 units (67
when split). A single character outside the GSM 03.38 alphabet turns the whole message into
UCS-2, and cost is per segment, so :func:`sanitise` swaps typographic punctuation for its
GSM equivalent first. Messages are capped at :data:`MAX_SEGMENTS` segments, as GOV.UK Notify
does (918 GSM-7 characters).

Segments are packed character by character, the way handsets and Twilio split messages: a
two-septet extension character (``€``, ``{``...) or a UTF-16 surrogate pair (most emoji) is
never split across two segments, so it can push a message into one more segment than plain
division suggests.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    non_gsm: tuple[str, ...] = field(default=())
    over_cap: bool = False

    def cost(self, price_per_segment: float) -> float:
        """The price of sending this message once, at ``price_per_segment``."""
        return self.segments * price_per_segment


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` is in the GSM 03.38 alphabet or its extension."""
    return _GSM7_ALL.issuperset(text)


def gsm7_length(text: str) -> int:
    """Septets ``text`` takes as GSM-7: extension characters count 2.

    Raises :class:`ValueError` if ``text`` has a character GSM-7 cannot carry.
    """
    if not is_gsm7(text):
        raise ValueError(f"not GSM-7: {''.join(_non_gsm(text))!r}")
    return len(text) + sum(text.count(char) for char in GSM7_EXTENSION)


def encode_info(text: str) -> SmsInfo:
    """Encoding, size, segments and cap status of ``text`` sent as one SMS."""
    characters = len(text)
    if is_gsm7(text):
        units = gsm7_length(text)
        segments = _segments(
            units,
            characters,
            GSM7_SINGLE,
            GSM7_MULTI,
            lambda: (2 if char in GSM7_EXTENSION else 1 for char in text),
        )
        return SmsInfo("GSM-7", units, segments, characters, (), segments > MAX_SEGMENTS)
    units = _utf16_units(text)
    segments = _segments(
        units,
        characters,
        UCS2_SINGLE,
        UCS2_MULTI,
        lambda: (2 if ord(char) > 0xFFFF else 1 for char in text),
    )
    return SmsInfo("UCS-2", units, segments, characters, _non_gsm(text), segments > MAX_SEGMENTS)


def _utf16_units(text: str) -> int:
    # surrogatepass: a lone surrogate (from a badly decoded file) still counts as one unit
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _non_gsm(text: str) -> tuple[str, ...]:
    return tuple(sorted(set(text) - _GSM7_ALL))


def _segments(
    units: int, characters: int, single: int, multi: int, sizes: _SizesFactory
) -> int:
    if units == 0:
        return 0
    if units <= single:
        return 1
    if units == characters:  # every character is one unit: nothing can straddle a boundary
        return math.ceil(units / multi)
    return _pack(sizes(), multi)


def _pack(sizes: Iterable[int], multi: int) -> int:
    # A two-unit character that does not fit in what is left of a segment starts the next one.
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return segments


type_sizes_doc = None  # placeholder removed below


_SizesFactory = "Callable[[], Iterable[int]]"
