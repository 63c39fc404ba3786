"""SMS encoding, segment packing, sanitising and the 6-segment cap (bot.sms)."""

from __future__ import annotations

import itertools
import json
import math
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.sms import (
    ELLIPSIS,
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_MULTI,
    GSM7_SINGLE,
    MAX_GSM7_CHARS,
    MAX_SEGMENTS,
    MAX_UCS2_UNITS,
    UCS2_MULTI,
    UCS2_SINGLE,
    SmsInfo,
    encode_info,
    gsm7_length,
    is_gsm7,
    prepare,
    sanitise,
    truncate_to_cap,
)
from bot.sms import _grapheme_cuts as _grapheme_cuts

THUMBS_UP = "\N{THUMBS UP SIGN}"  # outside the BMP: a surrogate pair, 2 UTF-16 units
FAMILY = "\N{MAN}\u200d\N{WOMAN}\u200d\N{GIRL}"  # one emoji built with zero-width joiners
UK_FLAG = "\U0001f1ec\U0001f1e7"  # two regional indicators
URDU = "براہ کرم ہمارے سروے کا جواب دیں"  # "Please answer our survey"
PERSIAN_WITH_ZWNJ = "می\u200cخواهم"  # the zero-width non-joiner is part of the spelling
POLISH = "Dziękujemy za udział w ankiecie, źródło: ŁÓDŹ"
WELSH_PLAIN = "Diolch yn fawr am eich help gyda'r arolwg"
WELSH_W_CIRCUMFLEX = "Mae'r tŵr yn uchel"


def test_constants() -> None:
    assert (GSM7_SINGLE, GSM7_MULTI, UCS2_SINGLE, UCS2_MULTI) == (160, 153, 70, 67)
    assert MAX_SEGMENTS == 6
    assert MAX_GSM7_CHARS == 918 == MAX_SEGMENTS * GSM7_MULTI
    assert MAX_UCS2_UNITS == 402 == MAX_SEGMENTS * UCS2_MULTI


def test_gsm_alphabet_has_127_characters_and_10_extension_characters() -> None:
    # 128 codes in the default alphabet, one of which (0x1B) is the escape, not a character
    assert len(GSM7_BASIC) == 127
    assert "\x1b" not in GSM7_BASIC
    assert GSM7_EXTENSION == set("{}[]~|^€\\\x0c")
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ ¤¡ÄÖÑÜ§¿äöñüà") <= GSM7_BASIC
    assert {"`", "ç", "â", "ŵ", "\t", "’"}.isdisjoint(GSM7_BASIC | GSM7_EXTENSION)


@pytest.mark.parametrize(
    ("text", "septets"),
    [("", 0), ("Hello", 5), ("€", 2), ("{x}", 5), ("[~|^\\]", 12), ("\x0c", 2), ("£5", 2)],
)
def test_gsm7_length_counts_extension_characters_twice(text: str, septets: int) -> None:
    assert is_gsm7(text)
    assert gsm7_length(text) == septets


def test_gsm7_length_rejects_text_gsm7_cannot_carry() -> None:
    assert not is_gsm7("it’s")
    with pytest.raises(ValueError, match="’"):
        gsm7_length("it’s")


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (918, 6), (919, 7)],
)
def test_gsm7_segment_boundaries(length: int, segments: int) -> None:
    info = encode_info("a" * length)
    assert (info.encoding, info.units, info.characters) == ("GSM-7", length, length)
    assert info.segments == segments
    assert info.over_cap == (length > MAX_GSM7_CHARS)
    assert info.non_gsm == ()


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (402, 6), (403, 7)],
)
def test_ucs2_segment_boundaries(length: int, segments: int) -> None:
    info = encode_info("ą" * length)
    assert (info.encoding, info.units, info.characters) == ("UCS-2", length, length)
    assert info.segments == segments
    assert info.over_cap == (length > MAX_UCS2_UNITS)
    assert info.non_gsm == ("ą",)


def test_euro_sign_counts_two_septets() -> None:
    assert encode_info("€").units == 2
    assert encode_info("€" * 80).segments == 1  # 160 septets
    # 162 septets: 76 euros (152 septets) fill a 153-septet segment, the 77th starts the next
    assert encode_info("€" * 81).segments == 2
    assert encode_info("€" * 153).segments == 3  # 306 septets, but only 76 euros per segment


def test_extension_character_at_position_153_moves_to_the_next_segment() -> None:
    # 152 + 2 + 152 = 306 septets, which plain division puts in 2 segments; but the euro
    # cannot be split, so it starts segment 2, which then holds 2 + 151 and spills one septet.
    straddling = "a" * 152 + "€" + "a" * 152
    assert encode_info(straddling).units == 306
    assert encode_info(straddling).segments == 3
    # The same 306 septets with the euro ending segment 1 exactly fit in 2.
    fitting = "a" * 151 + "€" + "a" * 153
    assert encode_info(fitting).units == 306
    assert encode_info(fitting).segments == 2


def test_emoji_is_ucs2_and_counts_two_units() -> None:
    info = encode_info(THUMBS_UP)
    assert info == SmsInfo("UCS-2", 2, 1, 1, (THUMBS_UP,), False)
    info = encode_info("Thanks " + THUMBS_UP)
    assert (info.encoding, info.units, info.characters) == ("UCS-2", 9, 8)


def test_surrogate_pair_at_a_segment_boundary_is_never_split() -> None:
    # 66 + 2 + 66 = 134 units, 2 segments by division; the emoji would straddle units 67-68,
    # so it starts segment 2, which then overflows into a third.
    straddling = "ą" * 66 + THUMBS_UP + "ą" * 66
    assert encode_info(straddling).units == 134
    assert encode_info(straddling).segments == 3
    fitting = "ą" * 65 + THUMBS_UP + "ą" * 67
    assert encode_info(fitting).units == 134
    assert encode_info(fitting).segments == 2


WALES_FLAG = "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"
SKIN_TONE_THUMB = THUMBS_UP + "\N{EMOJI MODIFIER FITZPATRICK TYPE-4}"
E_ACUTE = "e\u0301"  # e + combining acute accent: one letter, two characters
CLUSTERS = [UK_FLAG, WALES_FLAG, FAMILY, SKIN_TONE_THUMB, E_ACUTE]


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_grapheme_cluster_at_a_ucs2_segment_boundary_starts_the_next_segment(
    cluster: str,
) -> None:
    # As Twilio bills it: a user-perceived character is never split between two segments,
    # even when its UTF-16 units could be (a flag is two surrogate pairs, e + accent two
    # units). Put the cluster so that its first character would end segment 1 exactly.
    size = len(cluster.encode("utf-16-le")) // 2
    first = len(cluster[0].encode("utf-16-le")) // 2
    before = "ą" * (UCS2_MULTI - first)
    after = "ą" * (2 * UCS2_MULTI - len(before) - size)
    text = before + cluster + after
    # Split between its characters, the units would fill exactly two segments; kept whole,
    # the cluster starts segment 2, which then overflows into a third.
    assert encode_info(text).units == 2 * UCS2_MULTI
    assert encode_info(text).segments == 3
    # With the cluster ending segment 1 exactly, two segments do.
    assert encode_info("ą" * (UCS2_MULTI - size) + cluster + after).segments == 2


def test_prepare_caps_what_twilio_counts_not_what_plain_units_suggest() -> None:
    # Six segments of 66 units each followed by a flag: split by surrogate pair, each flag
    # would share two segments; whole, each starts the next one. prepare() must return a text
    # Twilio bills at six segments at most.
    text = ("ą" * 65 + UK_FLAG) * 6
    prepared, info = prepare(text, sanitise_text=False)
    assert info.segments <= MAX_SEGMENTS
    assert _twilio_segments(_atoms(prepared)) <= MAX_SEGMENTS
    assert encode_info(text).segments == _twilio_segments(_atoms(text)) == 7


def test_urdu_is_ucs2_with_the_right_segments() -> None:
    info = encode_info(URDU)
    assert (info.encoding, info.units, info.segments) == ("UCS-2", 31, 1)
    assert " " not in info.non_gsm and "ہ" in info.non_gsm
    long_urdu = " ".join([URDU] * 5)  # 5 * 31 + 4 = 159 units: fine as GSM, 3 UCS-2 segments
    info = encode_info(long_urdu)
    assert (info.units, info.segments) == (159, 3)
    assert sanitise(long_urdu) == long_urdu


def test_welsh_is_gsm7_unless_it_uses_w_circumflex() -> None:
    assert is_gsm7(WELSH_PLAIN)
    assert encode_info(WELSH_PLAIN).encoding == "GSM-7"
    info = encode_info(WELSH_W_CIRCUMFLEX)
    assert info.encoding == "UCS-2"
    assert info.non_gsm == ("ŵ",)
    # ŵ has no GSM equivalent, so the message stays UCS-2 after sanitising
    assert sanitise(WELSH_W_CIRCUMFLEX) == WELSH_W_CIRCUMFLEX


def test_sanitise_turns_typographic_text_back_into_gsm7() -> None:
    assert sanitise("“Hello” – it’s…") == '"Hello" - it\'s...'
    text = "“Hello” – it’s… " * 6  # 96 characters: 2 UCS-2 segments
    before, after = encode_info(text), encode_info(sanitise(text))
    assert (before.encoding, before.segments) == ("UCS-2", 2)
    assert (after.encoding, after.segments) == ("GSM-7", 1)


@pytest.mark.parametrize(
    ("typographic", "gsm"),
    [
        *[(char, "'") for char in "‘’‚‛′´"],
        *[(char, '"') for char in "“”„‟″«»"],
        *[(char, "-") for char in "–—―‐‑‒−•"],
        ("…", "..."),
        ("‹", "<"),
        ("›", ">"),
        *[(char, " ") for char in "\u00a0\u2009\u202f\u2007\u3000\t"],
        ("\u2028", "\n"),
        *[(char, "") for char in "\u200b\u200c\u200d\ufeff\u2060\u00ad"],
        ("`", "'"),  # a backtick typed as an apostrophe
        ("Ｏ", "O"),  # full-width ASCII, as East Asian keyboards type it
        ("！", "!"),
        ("０", "0"),
        ("～", "~"),
    ],
)
def test_sanitise_replaces_typographic_characters(typographic: str, gsm: str) -> None:
    assert sanitise(f"a{typographic}b") == f"a{gsm}b"


def test_sanitise_keeps_backticks_and_full_width_ascii_out_of_ucs2() -> None:
    for text in ("Don`t worry, we`ll text you", "ＯＫ！ Ｔｈａｎｋｓ"):
        assert encode_info(text).encoding == "UCS-2"
        assert encode_info(sanitise(text)).encoding == "GSM-7", text
    assert sanitise("ＯＫ！") == "OK!"
    assert sanitise("Don`t") == "Don't"


def test_sanitise_turns_every_unicode_space_into_a_space() -> None:
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs"]
    assert len(spaces) >= 17
    for space in spaces:
        assert sanitise(f"a{space}b") == "a b", hex(ord(space))


def test_sanitise_normalises_to_nfc_first() -> None:
    decomposed = "Cafe\u0301"  # e + combining acute: not GSM until composed into é
    assert sanitise(decomposed) == "Café"
    assert is_gsm7(sanitise(decomposed))
    # Removing a zero-width space can bring a mark next to its letter: still composed
    assert sanitise("Cafe\u200b\u0301") == "Café"
    assert sanitise("\u212b") == "Å"  # ANGSTROM SIGN is canonically Å, which GSM-7 has


@pytest.mark.parametrize(
    "text",
    [
        POLISH,
        URDU,
        WELSH_W_CIRCUMFLEX,
        PERSIAN_WITH_ZWNJ,
        "Thanks " + THUMBS_UP,
        f"We love our {FAMILY} and {UK_FLAG}",
        "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",
        "Ça va? Ελληνικά, Straße, 你好",
    ],
)
def test_sanitise_leaves_letters_of_other_scripts_and_emoji_alone(text: str) -> None:
    assert sanitise(text) == text


def test_sanitise_drops_stray_joiners_but_keeps_those_inside_emoji() -> None:
    assert sanitise(f"Hi\u200d there\ufeff {FAMILY}\u200d!") == f"Hi there {FAMILY}!"


def test_truncate_leaves_text_within_the_cap_alone() -> None:
    for text in ("", "short", "a" * MAX_GSM7_CHARS, "ą" * MAX_UCS2_UNITS):
        assert truncate_to_cap(text) == text


def test_truncate_gsm7_to_918_septets_with_an_ellipsis() -> None:
    capped = truncate_to_cap("a" * 1000)
    assert capped == "a" * (MAX_GSM7_CHARS - 3) + ELLIPSIS
    assert encode_info(capped).segments == MAX_SEGMENTS


def test_truncate_ucs2_to_six_segments() -> None:
    capped = truncate_to_cap("ą" * 500)
    assert capped == "ą" * (MAX_UCS2_UNITS - 3) + ELLIPSIS
    info = encode_info(capped)
    assert (info.encoding, info.units, info.segments) == ("UCS-2", MAX_UCS2_UNITS, 6)


def test_truncate_keeps_more_when_the_cut_drops_the_only_non_gsm_character() -> None:
    capped = truncate_to_cap("a" * 1000 + THUMBS_UP)
    assert capped == "a" * (MAX_GSM7_CHARS - 3) + ELLIPSIS
    assert encode_info(capped).encoding == "GSM-7"


def test_truncate_drops_trailing_spaces_before_the_ellipsis() -> None:
    capped = truncate_to_cap("word " * 300)
    assert capped.endswith("word...")
    assert encode_info(capped).segments <= MAX_SEGMENTS


@pytest.mark.parametrize("emoji", [THUMBS_UP, FAMILY, UK_FLAG, "e\u0301\u0302"])
def test_truncate_never_cuts_inside_an_emoji_or_a_letter_with_marks(emoji: str) -> None:
    for padding in range(len(emoji) + 2):  # move the cap across every position in the emoji
        text = "ą" * (MAX_UCS2_UNITS - 4 - padding) + emoji * 40
        capped = truncate_to_cap(text)
        kept = capped.removesuffix(ELLIPSIS)
        assert text.startswith(kept)
        assert (len(kept) - (MAX_UCS2_UNITS - 4 - padding)) % len(emoji) == 0, padding
        assert encode_info(capped).segments <= MAX_SEGMENTS


def test_truncate_cuts_one_enormous_grapheme_between_code_points() -> None:
    capped = truncate_to_cap("e" + "\u0301" * 1000)
    assert capped.endswith(ELLIPSIS) and len(capped) > 100
    assert encode_info(capped).segments <= MAX_SEGMENTS


def test_prepare_sanitises_caps_and_reports_the_text_it_returns() -> None:
    text, info = prepare("It’s – " * 200)
    assert text.startswith("It's - It's")
    assert text.endswith(ELLIPSIS)
    assert info == encode_info(text)
    assert (info.encoding, info.segments) == ("GSM-7", MAX_SEGMENTS)


def test_prepare_can_leave_the_text_unsanitised() -> None:
    text, info = prepare("“Hello”", sanitise_text=False)
    assert text == "“Hello”"
    assert info.encoding == "UCS-2"


def test_cost_is_segments_times_price() -> None:
    assert encode_info("a" * 307).cost(0.0463) == pytest.approx(3 * 0.0463)
    assert encode_info("").cost(0.0463) == 0


def test_empty_text_has_no_segments() -> None:
    assert encode_info("") == SmsInfo("GSM-7", 0, 0, 0, (), False)


def test_sms_info_is_frozen() -> None:
    info = encode_info("hi")
    with pytest.raises(AttributeError):
        info.segments = 2  # type: ignore[misc]


# Properties. Texts mix GSM-7, extension characters, typographic punctuation, joiners,
# combining marks, other scripts and emoji, and are repeated to reach past the cap.
INTERESTING = (
    "aZ9 .\n€{}[]~|^\\\x0c"
    "‘’“”–—…\u00a0\u2009\u200b\u200c\u200d\ufeff\u0301\u0302"
    "ąŵçéہکیΩ\u212b" + THUMBS_UP + UK_FLAG + "\N{EMOJI MODIFIER FITZPATRICK TYPE-4}"
)
texts = st.text(alphabet=st.sampled_from(INTERESTING) | st.characters(), max_size=40)
long_texts = st.builds(lambda part, times: part * times, texts, st.integers(1, 60))


def _reference_segments(text: str) -> int:
    """Split ``text`` into actual segments, greedily, with no grapheme cluster split.

    The clusters come from bot.sms's own boundary finder (checked on its own below and by
    the atom-built texts of test_segments_match_twilio_for_texts_built_from_clusters).
    """
    if not text:
        return 0
    cuts = _grapheme_cuts(text, len(text))
    clusters = [text[a:b] for a, b in itertools.pairwise(cuts)]
    # Twilio's calculator splits CRLF into two characters again.
    parts = [p for c in clusters for p in ((c,) if c != "\r\n" else ("\r", "\n"))]
    return _twilio_segments(parts)


def _twilio_segments(clusters: list[str]) -> int:
    """Segments for a text given as its grapheme clusters, packed the way Twilio bills."""
    text = "".join(clusters)
    if not text:
        return 0
    gsm = is_gsm7(text)

    def size(cluster: str) -> int:
        if gsm:
            return sum(2 if c in GSM7_EXTENSION else 1 for c in cluster)
        return len(cluster.encode("utf-16-le", "surrogatepass")) // 2

    if sum(size(c) for c in clusters) <= (GSM7_SINGLE if gsm else UCS2_SINGLE):
        return 1
    capacity = GSM7_MULTI if gsm else UCS2_MULTI
    # A cluster larger than a whole segment cannot stay whole: it splits between characters.
    units = [size(p) for c in clusters for p in ([c] if size(c) <= capacity else c)]
    segments: list[int] = [0]
    for n in units:
        if segments[-1] + n > capacity:
            segments.append(0)
        segments[-1] += n
    assert all(0 < used <= capacity for used in segments)
    return len(segments)


# Texts built from whole user-perceived characters, so the test knows the clusters without
# segmenting: letters, GSM extension characters, Polish, emoji, flags, families, accents.
ATOMS = ["a", " ", "€", "ą", "ہ", THUMBS_UP, *CLUSTERS, "\r\n"]


def _atoms(text: str) -> list[str]:
    """``text`` (of ATOMS, perhaps sanitised and ending in "...") split back into them."""
    found, i = [], 0
    ordered = sorted([*ATOMS, ".", "é"], key=len, reverse=True)  # sanitise composes é
    while i < len(text):
        atom = next(a for a in ordered if text.startswith(a, i))
        found.extend(("\r", "\n") if atom == "\r\n" else (atom,))
        i += len(atom)
    return found


atom_texts = st.lists(st.sampled_from(ATOMS), max_size=500)


@given(atom_texts)
@settings(deadline=None)
def test_segments_match_twilio_for_texts_built_from_clusters(atoms: list[str]) -> None:
    text = "".join(atoms)
    assert encode_info(text).segments == _twilio_segments(_atoms(text))


@given(atom_texts, st.booleans())
@settings(deadline=None)
def test_prepare_stays_within_six_segments_as_twilio_counts_them(
    atoms: list[str], sanitise_text: bool
) -> None:
    prepared, _ = prepare("".join(atoms), sanitise_text=sanitise_text)
    assert _twilio_segments(_atoms(prepared)) <= MAX_SEGMENTS


def test_twilio_segment_calculator_vectors() -> None:
    # The test strings of Twilio's own segment calculator (sms-segments-calculator 1.3.0),
    # copied from ../shared/data/sms: every encoding and segment count they state.
    vectors = json.loads(
        (Path(__file__).parent / "data" / "twilio_segment_vectors.json").read_text()
    )
    assert len(vectors) >= 50
    for vector in vectors:
        info = encode_info(vector["text"])
        if vector["encoding"] is not None:
            assert info.encoding == vector["encoding"], vector["desc"]
        if vector["segments"] is not None:
            assert info.segments == vector["segments"], vector["desc"]


@given(long_texts)
@settings(deadline=None)
def test_segments_match_an_actual_split(text: str) -> None:
    info = encode_info(text)
    assert info.segments == _reference_segments(text)
    assert info.characters == len(text)
    assert info.over_cap == (info.segments > MAX_SEGMENTS)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if is_gsm7(text) else (UCS2_SINGLE, UCS2_MULTI)
    if info.units > single:
        assert info.segments >= math.ceil(info.units / multi)


@given(st.text(min_size=1) | long_texts.filter(bool))
def test_non_empty_text_has_at_least_one_segment(text: str) -> None:
    assert encode_info(text).segments >= 1


@given(texts)
def test_is_gsm7_iff_encoding_is_gsm7(text: str) -> None:
    info = encode_info(text)
    assert is_gsm7(text) == (info.encoding == "GSM-7")
    assert (info.non_gsm == ()) == is_gsm7(text)
    assert info.non_gsm == tuple(sorted(set(info.non_gsm)))
    assert all(not is_gsm7(char) for char in info.non_gsm)


@given(texts | long_texts)
def test_sanitise_is_idempotent(text: str) -> None:
    once = sanitise(text)
    assert sanitise(once) == once


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION))))
def test_sanitise_leaves_gsm7_text_alone(text: str) -> None:
    assert sanitise(text) == text


@given(long_texts, st.booleans())
@settings(deadline=None)
def test_prepare_never_exceeds_six_segments(text: str, sanitise_text: bool) -> None:
    prepared, info = prepare(text, sanitise_text=sanitise_text)
    assert info == encode_info(prepared)
    assert info.segments <= MAX_SEGMENTS
    assert not info.over_cap
    source = sanitise(text) if sanitise_text else text
    if prepared != source:
        assert prepared.endswith(ELLIPSIS)
        assert source.startswith(prepared.removesuffix(ELLIPSIS))


@given(long_texts, st.floats(min_value=0, max_value=10, allow_nan=False))
def test_cost_is_segments_times_price_for_any_text(text: str, price: float) -> None:
    info = encode_info(text)
    assert info.cost(price) == info.segments * price
