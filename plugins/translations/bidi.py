"""Right-to-left messages that read correctly on phones.

A phone lays out each line of a message as its own paragraph, in the direction of the line's
first strong character. A numbered option such as "1 ہاں" starts with a digit, which is not
strong, and a line may start with a Latin word (a panel name, "NHS"): such lines are laid out
left to right, the option number lands on the wrong side and punctuation jumps about. Starting
every line with U+200F RIGHT-TO-LEFT MARK, an invisible strong right-to-left character, makes
each line right-to-left while the digits keep their logical order.
"""

from __future__ import annotations

import unicodedata

RLM = "\u200f"  # RIGHT-TO-LEFT MARK
ALM = "\u061c"  # ARABIC LETTER MARK: also strong right-to-left, so a line with it is done
_ALREADY_RTL = (RLM, ALM)


def mark_lines(text: str) -> str:
    """``text`` with an RLM at the start of every non-empty line that has none yet.

    Idempotent. Blank lines are left alone: they have nothing to lay out. Over SMS an RTL
    script (Urdu, Arabic) is UCS-2 already, so each mark costs one of the 70 (67 when split)
    UTF-16 units of a segment and never changes the encoding.
    """
    lines = text.split("\n")
    marked = [
        line if not line.strip() or line.startswith(_ALREADY_RTL) else RLM + line for line in lines
    ]
    return "\n".join(marked)


def has_rtl_letters(text: str) -> bool:
    """True if ``text`` has a right-to-left letter (Unicode bidi class R or AL).

    An English fallback sent to an Urdu speaker has none, and is left alone: an RLM would
    lay it out right-to-left and move its full stops to the wrong end.
    """
    return any(unicodedata.bidirectional(char) in ("R", "AL") for char in text)
