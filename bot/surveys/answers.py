"""Reading a panellist's reply as the answer to a question.

Replies come from basic phones and chat apps in many languages, so reading them is lenient
where the meaning is plain ("2", " 2. ", "Fairly easy", "١" from an Urdu keyboard, "1, 3"
or "1 and 3" for several options) and strict where it is not ("1,000", "about 3", "4 out of
5"): a reply that does not fit raises :class:`InvalidAnswer`, and the engine asks once
more, showing :func:`valid_replies`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import deque
from collections.abc import Collection
from typing import Any

from bot.surveys.model import Option, Question, QuestionType, pick

# Invisible characters phones put around numbers in right-to-left text, and other
# zero-width marks: they change nothing a panellist meant.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u200b\u200e\u200f\u061c\ufeff\u00ad"
        "\u202a\u202b\u202c\u202d\u202e"
        "\u2066\u2067\u2068\u2069",
    )
)
_TRAILING = ".!\u06d4\u3002"  # full stops and exclamation marks, incl. Urdu "۔" and "。"
_SEPARATORS = ",;&+/\u060c\u3001"  # incl. the Arabic comma "،" and the ideographic comma
_MAX_CHOICE_REPLY = 300  # nobody picks options with a longer reply: don't search one
_DIGITS_RE = re.compile(r"[0-9]+")
_INT_RE = re.compile(r"[+-]?[0-9]{1,15}")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]{1,15}\.[0-9]{0,15}|\.[0-9]{1,15})")
_SCALE_RE = re.compile(r"([+-]?[0-9]{1,6})(?:\s*/\s*([0-9]{1,6}))?")
_NUMBERED_RE = re.compile(r"([0-9]{1,3})\s*[.):-]?\s*(\S.*)")


class InvalidAnswer(ValueError):
    """A reply that is not an answer to the question; ``reason`` is a short code
    (``empty``, ``not_an_option``, ``not_a_number``, ``out_of_range``, ``not_yes_or_no``)
    for choosing the re-ask message, and the message is for logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _ascii_digits(text: str) -> str:
    # Every Unicode decimal digit (Arabic-Indic, Extended Arabic-Indic, Bengali, Gurmukhi,
    # Devanagari...) becomes 0-9; NFKC has already folded full-width digits.
    return "".join(
        str(unicodedata.decimal(char)) if not char.isascii() and char.isdecimal() else char
        for char in text
    )


def normalise_reply(text: str) -> str:
    """The reply as compared with options and words: NFKC, invisible marks removed, any
    script's digits as 0-9, case-folded, spaces collapsed, trailing full stops and
    exclamation marks dropped."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    if not text.isascii():
        text = _ascii_digits(text)
    text = " ".join(text.casefold().split())
    return text.rstrip(_TRAILING + " ")


def parse_answer(
    question: Question,
    text: str,
    *,
    locale: str,
    fallback_locale: str = "en",
    yes_words: Collection[str],
    no_words: Collection[str],
    and_words: Collection[str] = ("and",),
) -> Any:
    """The value to store for ``text`` as an answer to ``question``, or InvalidAnswer.

    choice: the option id (from its number, its text in ``locale`` or ``fallback_locale``,
    or "2. Fairly easy"); multi: option ids in option order ("1 3", "1,3", "1 and 3",
    texts); scale: an int in [min, max] ("4", "4/5"); yesno: "yes" or "no" (the words
    given, or 1 and 2 as the engine numbers them); number: an int, or a float when typed
    with a decimal point; text: the reply trimmed and cut to ``max_length``.
    ``yes_words``, ``no_words`` and ``and_words`` are those of the panellist's language
    (the engine may add English ones too).
    """
    if question.type is QuestionType.TEXT:
        return _text(question, text)
    reply = normalise_reply(text)
    if not reply:
        raise InvalidAnswer("empty", "the reply is empty")
    if question.type is QuestionType.CHOICE:
        return _choice(question, reply, locale, fallback_locale).id
    if question.type is QuestionType.MULTI:
        return _multi(question, reply, locale, fallback_locale, and_words)
    if question.type is QuestionType.YESNO:
        return _yes_no(reply, yes_words, no_words)
    if question.type is QuestionType.SCALE:
        return _scale(question, reply, locale, fallback_locale)
    return _number(question, reply)


def valid_replies(question: Question, locale: str, fallback_locale: str = "en") -> list[str]:
    """The replies to show when asking again: ["1", "2", "3"] for options, ["1-5"] for a
    scale, ["1", "2"] for yes/no, the range of a number if it has one, [] for free text.
    (Replies are numbers in every language today; ``locale`` is taken so that callers need
    not change if texts are added.)"""
    if question.type.has_options:
        return [str(n) for n in range(1, len(question.options) + 1)]
    if question.type is QuestionType.YESNO:
        return ["1", "2"]
    low, high = question.min, question.max
    if low is not None and high is not None:
        joiner = "-" if low >= 0 else " to "  # "-2--1" would be unreadable
        return [f"{low}{joiner}{high}"]
    if low is not None:
        return [f"{low}+"]
    if high is not None:
        return [f"<={high}"]  # not "≤": one such character makes a whole SMS cost double
    return []


def _text(question: Question, text: str) -> str:
    value = text.strip()
    if not normalise_reply(value).strip(_TRAILING):
        raise InvalidAnswer("empty", "the reply is empty")
    # Cut, not refused: a long answer is still an answer, and asking again would lose it.
    return value[: question.max_length]


def _by_text(question: Question, locale: str, fallback: str) -> dict[str, Option]:
    """Each normalised option text (the panellist's language, then the fallback), then each
    option id (as a chat button may send it), to its option; texts win over ids."""
    found: dict[str, Option] = {}
    for code in (locale, fallback):
        for option in question.options:
            text = normalise_reply(pick(option.text, code, fallback))
            if text:
                found.setdefault(text, option)
    for option in question.options:
        found.setdefault(option.id.casefold(), option)
    return found


def _option_number(question: Question, digits: str) -> Option:
    number = int(digits)
    if not 1 <= number <= len(question.options):
        raise InvalidAnswer("out_of_range", f"there is no option {number}")
    return question.options[number - 1]


def _choice(question: Question, reply: str, locale: str, fallback: str) -> Option:
    if len(reply) > _MAX_CHOICE_REPLY:
        raise InvalidAnswer("not_an_option", "the reply is too long to be an option")
    if _DIGITS_RE.fullmatch(reply):
        return _option_number(question, reply)
    by_text = _by_text(question, locale, fallback)
    if reply in by_text:
        return by_text[reply]
    # "2. Fairly easy", as copied from the numbered list: number and text must agree.
    numbered = _NUMBERED_RE.fullmatch(reply)
    if numbered and numbered[2] in by_text:
        option = by_text[numbered[2]]
        if question.options.index(option) + 1 == int(numbered[1]):
            return option
    raise InvalidAnswer("not_an_option", "the reply is not an option's number or text")


def _multi(
    question: Question, reply: str, locale: str, fallback: str, and_words: Collection[str]
) -> list[str]:
    if len(reply) > _MAX_CHOICE_REPLY:
        raise InvalidAnswer("not_an_option", "the reply is too long to be a list of options")
    by_text = _by_text(question, locale, fallback)
    if reply in by_text:  # one option whose text has spaces, commas or "and" in it
        return [by_text[reply].id]
    picked = _split_options(question, reply, by_text, and_words)
    if picked is None:
        raise InvalidAnswer("not_an_option", "the reply is not a list of option numbers or texts")
    chosen = {option.id for option in picked}
    return [option.id for option in question.options if option.id in chosen]


def _split_options(
    question: Question, reply: str, by_text: dict[str, Option], and_words: Collection[str]
) -> list[Option] | None:
    """Read the reply as option numbers and texts between separators ("1, 3", "1 and
    phone lines busy"), in the fewest pieces; None if it cannot be read so."""
    words = sorted({normalise_reply(word) for word in and_words if word.strip()}, key=len)
    ends = reply.split()
    if ends[0] in words or ends[-1] in words:
        return None  # "1 and": cut off mid-list, perhaps; better to ask again than guess
    texts = sorted(by_text, key=len, reverse=True)
    end = len(reply)

    def boundary(at: int) -> bool:
        return at == end or reply[at].isspace() or reply[at] in _SEPARATORS

    def skip_separators(at: int) -> int:
        while at < end:
            if reply[at].isspace() or reply[at] in _SEPARATORS:
                at += 1
                continue
            word = next((w for w in words if reply.startswith(w, at) and boundary(at + len(w))), "")
            if not word:
                break
            at += len(word)
        return at

    def pieces(at: int) -> list[tuple[int, Option]]:
        found = []
        digits = _DIGITS_RE.match(reply, at)
        if digits and boundary(digits.end()):
            number = int(digits[0]) if len(digits[0]) < 4 else 0
            if 1 <= number <= len(question.options):
                found.append((digits.end(), question.options[number - 1]))
        for text in texts:
            if reply.startswith(text, at) and boundary(at + len(text)):
                found.append((at + len(text), by_text[text]))
        return found

    # Breadth first over positions in the reply: the first complete reading uses the
    # fewest pieces, which prefers "phone lines busy" over "phone" + "lines busy".
    start = skip_separators(0)
    queue: deque[tuple[int, list[Option]]] = deque([(start, [])])
    visited = {start}
    while queue:
        at, picked = queue.popleft()
        if at == end:
            return picked or None
        for stop, option in pieces(at):
            after = skip_separators(stop)
            if after not in visited:
                visited.add(after)
                queue.append((after, [*picked, option]))
    return None


def _yes_no(reply: str, yes_words: Collection[str], no_words: Collection[str]) -> str:
    # The engine lists yes/no questions as "1 Yes  2 No", so the numbers work in any language.
    if reply == "1" or reply in {normalise_reply(word) for word in yes_words}:
        return "yes"
    if reply == "2" or reply in {normalise_reply(word) for word in no_words}:
        return "no"
    raise InvalidAnswer("not_yes_or_no", "the reply is not yes or no")


def _signs(reply: str) -> str:
    # A typographic minus, and the Arabic decimal separator "٫".
    return reply.replace("\u2212", "-").replace("\u066b", ".")


def _scale(question: Question, reply: str, locale: str, fallback: str) -> int:
    low, high = int(question.min or 0), int(question.max or 0)
    for value, labels in ((low, question.min_label), (high, question.max_label)):
        # "Very good" typed out for the top of the scale, as the question shows it.
        names = {normalise_reply(pick(labels, code, fallback)) for code in (locale, fallback)}
        if labels and reply in names:
            return value
    found = _SCALE_RE.fullmatch(_signs(reply))
    # "4/5" is read only when the "/5" is the scale's own top: "4/10" on a 1-5 scale is not.
    if not found or (found[2] is not None and int(found[2]) != high):
        raise InvalidAnswer("not_a_number", f"the reply is not a whole number from {low} to {high}")
    value = int(found[1])
    if not low <= value <= high:
        raise InvalidAnswer("out_of_range", f"{value} is not from {low} to {high}")
    return value


def _number(question: Question, reply: str) -> int | float:
    reply = _signs(reply)
    value: int | float
    if _INT_RE.fullmatch(reply):
        value = int(reply)
    elif _FLOAT_RE.fullmatch(reply):
        value = float(reply)
    else:
        raise InvalidAnswer("not_a_number", "the reply is not a number")
    if not math.isfinite(value):
        raise InvalidAnswer("not_a_number", "the reply is not a number")
    if question.min is not None and value < question.min:
        raise InvalidAnswer("out_of_range", f"{value} is less than {question.min}")
    if question.max is not None and value > question.max:
        raise InvalidAnswer("out_of_range", f"{value} is more than {question.max}")
    return value
