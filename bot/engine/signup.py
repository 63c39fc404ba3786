"""Sign-up: welcome, language, consent, demographic questions, then an active panellist.

People must understand what they consent to, so with several languages the language comes
first. Consent is an explicit yes (the English "yes" is always understood); anything else
gets a polite close, and nothing is kept but a keyed hash that stops us asking again.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from bot import postcodes
from bot.engine import render, waves
from bot.engine.keywords import Keyword, normalise
from bot.models import MessageKind, Panellist, PanellistStatus, SignupDecision, utcnow
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store

if TYPE_CHECKING:
    from bot.engine.conversation import Engine, Turn

logger = logging.getLogger(__name__)

LANGUAGE = "language"
CONSENT = "consent"
WAITLISTED = "waitlisted"
FIELD_PREFIX = "field:"
# Asked once, where the first field derived from it sits (see bot/postcodes.py).
POSTCODE = "postcode"


async def first_contact(engine: Engine, turn: Turn, keyword: Keyword | None) -> None:
    """A message from an address we do not know."""
    await _first_contact(engine, turn, keyword)
    if turn.panellist is None:
        # Nobody to keep it for (a STOP, HELP, or a word after declining): keep no text.
        await panellist_store.forget_inbound_text(turn.conn, turn.inbound_id)


async def _first_contact(engine: Engine, turn: Turn, keyword: Keyword | None) -> None:
    conn, address = turn.conn, turn.message.address
    key = engine.bot.hash_key
    default = engine.default_locale
    suppressed = await panellist_store.suppression(conn, key, address)
    if keyword == Keyword.STOP:
        if not suppressed or suppressed[0] != "opted_out":
            await panellist_store.suppress(conn, key, address, "opted_out")
            turn.reply(
                engine.render("opted_out", default),
                kind=MessageKind.STOP_CONFIRMATION,
                template="opted_out",
            )
        return
    if keyword == Keyword.HELP:
        # Answered in every state, even after a STOP or a no (carriers expect it).
        turn.reply(
            engine.render(
                "help",
                default,
                languages=len(engine.bot.locales) > 1,
                in_survey=False,
                joined=False,  # not on the panel: say how to join, not "rejoin"
            ),
            template="help",
        )
        return
    reason = suppressed[0] if suppressed else None
    if reason == "declined":
        # They said no to joining: a clear yes (or START) begins again; anything else gets
        # a short answer saying what happened and how to join, never the whole sign-up.
        if keyword != Keyword.START and consent_answer(engine, turn.text, default) is not True:
            turn.reply(engine.render("declined_again", default), template="declined_again")
            return
    elif reason == "opted_out":
        if keyword != Keyword.START and not engine.renderer.is_yes(turn.text, default):
            return  # they asked us to stop: silence, until START or YES
    locales = list(engine.bot.locales)
    guessed = await engine.bot.plugins.call_first(
        "panelbot_resolve_locale", bot=engine.bot, panellist=None, text=turn.text, tx=conn
    )
    locale = guessed if guessed in locales else default
    stage = LANGUAGE if len(locales) > 1 else CONSENT
    now = utcnow()
    pid = await panellist_store.create(
        conn, status=PanellistStatus.PENDING, locale=locale, stage=stage, created_at=now
    )
    await panellist_store.add_address(conn, pid, address, inbound=True)
    # What was just written, without reading it back.
    turn.panellist = Panellist(
        id=pid,
        status=PanellistStatus.PENDING,
        locale=locale,
        demographics={},
        consent_at=None,
        stage=stage,
        created_at=now,
        addresses=[address],
    )
    welcome = engine.render("welcome", locale)
    if stage == LANGUAGE:
        menu = render.language_menu(engine.catalog, locales, locale, welcome=welcome)
        turn.reply(menu.text, template=menu.template, extra=menu.extra)
    else:
        _send_consent(engine, turn, locale, welcome=welcome)


def _send_consent(engine: Engine, turn: Turn, locale: str, *, welcome: str = "") -> None:
    turn.reply(
        engine.render("consent", locale, welcome=welcome),
        template="consent",
        extra={"options": _yes_no(engine, locale)},
    )


def _yes_no(engine: Engine, locale: str) -> list[dict[str, str]]:
    """The consent question's buttons: a yes and a no, in the person's language."""
    words = engine.words(locale)
    return [
        {"reply": words.get("yes", ["yes"])[0].upper(), "label": words.get("yes_label", "Yes")},
        {"reply": words.get("no", ["no"])[0].upper(), "label": words.get("no_label", "No")},
    ]


def parse_language(engine: Engine, text: str) -> str | None:
    """A reply to the language menu: its number, the language's own name, or its code."""
    locales = list(engine.bot.locales)
    reply = normalise(text)
    digits = render_digits(reply)
    if digits.isdigit() and 1 <= int(digits) <= len(locales):
        return locales[int(digits) - 1]
    for code in locales:
        names = {code.casefold(), normalise(render.language_name(code))}
        names.add(normalise(engine.catalog.words(code).get("language_name", code)))
        if reply in names:
            return code
    return None


def render_digits(text: str) -> str:
    """Arabic-Indic and other Unicode digits as ASCII (phones in Urdu send ۱ and ١)."""
    out = []
    for ch in text:
        if ch.isdigit():
            import unicodedata

            out.append(str(unicodedata.digit(ch, 0)))
        else:
            out.append(ch)
    return "".join(out).strip()


async def offer_language_change(engine: Engine, turn: Turn) -> None:
    p = turn.panellist
    assert p is not None
    stage = (
        LANGUAGE
        if p.status == PanellistStatus.PENDING and p.stage == LANGUAGE
        else (f"{LANGUAGE}:{p.stage or ''}")
    )
    await panellist_store.update(turn.conn, p.id, stage=stage, stage_misses=0)
    p.stage = stage
    menu = render.language_menu(engine.catalog, list(engine.bot.locales), turn.locale)
    turn.reply(menu.text, template=menu.template, extra=menu.extra)


async def continue_signup(engine: Engine, turn: Turn) -> None:
    p = turn.panellist
    assert p is not None
    stage = p.stage or CONSENT
    if stage.startswith(LANGUAGE):
        await _language_reply(engine, turn, stage)
    elif stage == CONSENT:
        await _consent_reply(engine, turn)
    elif stage.startswith(FIELD_PREFIX):
        await _field_reply(engine, turn, stage.removeprefix(FIELD_PREFIX))
    elif stage == POSTCODE:
        await _postcode_reply(engine, turn)
    elif stage == WAITLISTED:
        turn.reply(engine.render("signup_waitlisted", turn.locale), template="signup_waitlisted")


async def resend_stage(engine: Engine, turn: Turn) -> None:
    """Repeat the current sign-up question (after START, HELP or a language change)."""
    p = turn.panellist
    assert p is not None
    stage = p.stage or CONSENT
    if stage == LANGUAGE:
        menu = render.language_menu(engine.catalog, list(engine.bot.locales), turn.locale)
        turn.reply(menu.text, template=menu.template, extra=menu.extra)
    elif stage == CONSENT:
        _send_consent(engine, turn, turn.locale)
    elif stage.startswith(FIELD_PREFIX):
        _ask_field(engine, turn, stage.removeprefix(FIELD_PREFIX), reask=False)
    elif stage == POSTCODE:
        turn.reply(engine.render("postcode_question", turn.locale), template="postcode_question")


async def _language_reply(engine: Engine, turn: Turn, stage: str) -> None:
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    chosen = parse_language(engine, turn.text)
    if chosen is None:
        misses = await panellist_store.stage_misses(conn, p.id)
        if misses == 0:
            await panellist_store.update(conn, p.id, stage_misses=1)
            menu = render.language_menu(engine.catalog, list(engine.bot.locales), turn.locale)
            turn.reply(menu.text, template=menu.template, extra=menu.extra)
            return
        chosen = p.locale or engine.default_locale
    resume = stage.partition(":")[2] if ":" in stage else None
    next_stage = CONSENT if stage == LANGUAGE else (resume or None)
    await panellist_store.update(conn, p.id, locale=chosen, stage=next_stage, stage_misses=0)
    p.locale, p.stage = chosen, next_stage
    await engine.audit(conn, "language_changed", p.id, {"locale": chosen})
    if p.status == PanellistStatus.PENDING:
        await resend_stage(engine, turn)
        return
    # An active panellist mid-survey: the next question comes in the new language.
    from bot.engine import survey_runner

    await survey_runner.resend_current(engine, turn)


async def _consent_reply(engine: Engine, turn: Turn) -> None:
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    answer = consent_answer(engine, turn.text, p.locale)
    if answer is None and await panellist_store.stage_misses(conn, p.id) == 0:
        # Neither yes nor no ("maybe later"): ask once more before closing.
        await panellist_store.update(conn, p.id, stage_misses=1)
        turn.reply(
            engine.render("consent_reask", p.locale),
            template="consent_reask",
            extra={"options": _yes_no(engine, p.locale)},
        )
        return
    if answer is True:
        await panellist_store.update(
            conn,
            p.id,
            consent_at=utcnow(),
            consent_method=f"{turn.message.address.channel} reply",
        )
        p.consent_at = utcnow()
        await panellist_store.lift_suppression(conn, engine.bot.hash_key, turn.message.address)
        await engine.audit(conn, "consented", p.id, {"channel": turn.message.address.channel})
        await _next_field_or_finish(engine, turn, after=None)
        return
    turn.reply(engine.render("consent_declined", p.locale), template="consent_declined")
    await panellist_store.suppress(conn, engine.bot.hash_key, turn.message.address, "declined")
    await panellist_store.delete_unconsented(conn, p.id)
    turn.panellist = None


def _fields(engine: Engine) -> list:
    return list(engine.settings.panel.fields)


def _derived(engine: Engine) -> list:
    """The fields taken from the postcode lookup instead of being asked."""
    return [f for f in _fields(engine) if f.derive_from == POSTCODE]


def _ask_field(engine: Engine, turn: Turn, name: str, *, reask: bool) -> None:
    field = next(f for f in _fields(engine) if f.name == name)
    msg = render.field_message(
        engine.catalog, field, turn.locale, fallback=engine.default_locale, reask=reask
    )
    turn.reply(msg.text, template=msg.template, extra=msg.extra)


def parse_field_value(engine: Engine, field, text: str, locale: str) -> str | None:
    reply = normalise(text)
    digits = render_digits(reply)
    if digits.isdigit() and 1 <= int(digits) <= len(field.values):
        return field.values[int(digits) - 1]
    candidates = list(zip(field.values, field.values, strict=True))
    for loc in (locale, engine.default_locale):
        labels = render.field_labels(field, loc, engine.default_locale)
        candidates += list(zip(labels, field.values, strict=True))
    for label, value in candidates:
        if normalise(label) == reply or normalise(label.replace("_", " ")) == reply:
            return value
    return None


async def _field_reply(engine: Engine, turn: Turn, name: str) -> None:
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    field = next((f for f in _fields(engine) if f.name == name), None)
    if field is None:  # the config changed under a half-finished sign-up
        await _next_field_or_finish(engine, turn, after=None)
        return
    value = parse_field_value(engine, field, turn.text, p.locale)
    if value is None:
        misses = await panellist_store.stage_misses(conn, p.id)
        if misses == 0:
            await panellist_store.update(conn, p.id, stage_misses=1)
            _ask_field(engine, turn, name, reask=True)
            return
    else:
        p.demographics[name] = value
        await panellist_store.update(conn, p.id, demographics=p.demographics)
    await _next_field_or_finish(engine, turn, after=name)


async def _postcode_reply(engine: Engine, turn: Turn) -> None:
    """A postcode: checked, looked up, and only the derived values kept (never the postcode,
    and the message that carried it loses its text)."""
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    derived = _derived(engine)
    if not derived:  # the config changed under a half-finished sign-up
        await _next_field_or_finish(engine, turn, after=None)
        return
    await panellist_store.forget_inbound_text(conn, turn.inbound_id)
    postcode = postcodes.normalise(turn.text)
    if postcode is None:
        if await panellist_store.stage_misses(conn, p.id) == 0:
            await panellist_store.update(conn, p.id, stage_misses=1)
            turn.reply(engine.render("postcode_reask", p.locale), template="postcode_reask")
            return
    else:
        lookup = _postcode_lookup(engine, derived)
        if lookup is not None:  # else (a lookup gone since start) the values stay unknown
            row = lookup.get(postcode)
            for f in derived:
                p.demographics[f.name] = row[f.name] if row else postcodes.OUTSIDE_AREA
            await panellist_store.update(conn, p.id, demographics=p.demographics)
    await _next_field_or_finish(engine, turn, after=derived[0].name)


def _postcode_lookup(engine: Engine, derived: list) -> postcodes.PostcodeLookup | None:
    path = engine.settings.panel.postcode_lookup
    if path is None:
        return None
    try:
        return postcodes.load_lookup(path, [f.name for f in derived])
    except postcodes.PostcodeLookupError as exc:
        if str(exc) not in _LOGGED_LOOKUP_PROBLEMS:  # once per problem, not once per reply
            _LOGGED_LOOKUP_PROBLEMS.add(str(exc))
            logger.error("panel.postcode_lookup: %s; derived fields are left unknown", exc)
        return None


_LOGGED_LOOKUP_PROBLEMS: set[str] = set()


async def _next_field_or_finish(engine: Engine, turn: Turn, after: str | None) -> None:
    p = turn.panellist
    assert p is not None
    fields = _fields(engine)
    names = [f.name for f in fields]
    start = names.index(after) + 1 if after in names else 0
    derived = _derived(engine)
    for f in fields[start:]:
        if f.derive_from == POSTCODE:
            # The postcode is asked once, in the place of the first field derived from it.
            if f is derived[0] and not any(d.name in p.demographics for d in derived):
                await panellist_store.update(turn.conn, p.id, stage=POSTCODE, stage_misses=0)
                p.stage = POSTCODE
                turn.reply(
                    engine.render("postcode_question", turn.locale), template="postcode_question"
                )
                return
            continue
        if f.name not in p.demographics:
            stage = FIELD_PREFIX + f.name
            await panellist_store.update(turn.conn, p.id, stage=stage, stage_misses=0)
            p.stage = stage
            _ask_field(engine, turn, f.name, reask=False)
            return
    await finish(engine, turn)


async def finish(engine: Engine, turn: Turn) -> None:
    """Screen the new panellist through the plugins, then welcome them (or not)."""
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    # The plugins read and write through the message's own transaction (``tx``): a quota
    # counted and a place reserved there are committed with this sign-up, or not at all;
    # a plugin that fails leaves nothing it wrote (a savepoint each).
    answers = await engine.bot.plugins.call_each_in(
        conn, "panelbot_screen_signup", bot=engine.bot, panellist=p
    )
    decisions = {SignupDecision(d) for _, d in answers if d}
    if SignupDecision.DECLINE in decisions:
        turn.reply(engine.render("signup_declined", p.locale), template="signup_declined")
        await engine.audit(conn, "signup_declined", None, {})
        await panellist_store.delete_unconsented(conn, p.id)
        turn.panellist = None
        return
    if SignupDecision.WAITLIST in decisions:
        await panellist_store.update(conn, p.id, stage=WAITLISTED, stage_misses=0)
        p.stage = WAITLISTED
        turn.reply(engine.render("signup_waitlisted", p.locale), template="signup_waitlisted")
        return
    await panellist_store.update(
        conn, p.id, status=PanellistStatus.ACTIVE, stage=None, stage_misses=0
    )
    p.status, p.stage = PanellistStatus.ACTIVE, None
    await engine.audit(conn, "joined", p.id, {})
    turn.reply(engine.render("signup_complete", p.locale), template="signup_complete")
    if await survey_store.active_session(conn, p.id) is None:
        await waves.invite_new_joiner(engine, turn)


# -- reading a consent reply -------------------------------------------------------------------

# Emoji that mean yes or no on their own (WhatsApp users answer with a thumb): thumbs up,
# OK hand, check marks, the OK button; thumbs down, crosses.
_YES_EMOJI = frozenset("\U0001f44d\U0001f44c\u2705\u2714\u2611\U0001f197")
_NO_EMOJI = frozenset("\U0001f44e\u274c\u2716\u274e")
# Skin tones, variation selectors and spaces change nothing about what an emoji says.
_EMOJI_NOISE = re.compile("[\U0001f3fb-\U0001f3ff\ufe0e\ufe0f\\s]")
_WORD = re.compile(r"[\w'’]+")
_CLAUSE = re.compile(r"[,.;:!?\n]+")
# After a yes, these make the rest of a message a hedge, not a yes ("yes but not now").
_HEDGES = frozenset({"not", "but", "maybe", "later", "don't", "dont", "never", "unless"})


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(w.replace("’", "'") for w in _WORD.findall(normalise(text)))


@lru_cache(maxsize=32)
def _phrases(words: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    return frozenset(t for t in map(_tokens, words) if t)


def _consent_words(engine: Engine, locale: str) -> dict[str, Any]:
    """Yes, no and polite phrases (as word tuples) of a locale and of English."""
    locales = {locale or engine.default_locale, "en"}
    found: dict[str, Any] = {}
    for key in ("yes", "no", "polite"):
        found[key] = _phrases(tuple(sorted(engine.catalog.all_words(key, locales))))
    # Typos are forgiven against the word the consent message asks for ("YES", "TAK"...).
    found["typo_targets"] = {
        normalise(engine.words(loc).get("yes", ["yes"])[0]) for loc in locales
    } | {"yes"}
    return found


def _strip_polite(tokens: tuple[str, ...], polite: frozenset[tuple[str, ...]]) -> tuple[str, ...]:
    """``tokens`` without "please", "thank you"... at either end."""
    changed = True
    while changed and tokens:
        changed = False
        for phrase in polite:
            n = len(phrase)
            if len(tokens) > n and tokens[-n:] == phrase:
                tokens, changed = tokens[:-n], True
            elif len(tokens) > n and tokens[:n] == phrase:
                tokens, changed = tokens[n:], True
    return tokens


def within_one_edit(a: str, b: str) -> bool:
    """True if ``a`` becomes ``b`` by at most one insertion, deletion, substitution or swap
    of two neighbouring letters ("yse", "yess", "yrs" are all "yes")."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def consent_answer(engine: Engine, text: str, locale: str) -> bool | None:
    """True for a clear yes, False for a clear no, None when it is neither ("maybe later").

    Understands the yes and no phrases of the panellist's language and of English
    (``words.toml``: "yes please", "yeah", "ok", "tak", "ie"...), with "please" and "thank
    you" around them, a yes followed by more that does not hedge ("Yes, sign me up"), a
    thumbs up (any skin tone), and one slip of the finger in a word of three letters or more
    ("yse", "yess"). A clear no is only ever an exact no phrase: a typo is asked about again.
    """
    emoji = _EMOJI_NOISE.sub("", text)
    if emoji and set(emoji) <= _YES_EMOJI:
        return True
    if emoji and set(emoji) <= _NO_EMOJI:
        return False
    words = _consent_words(engine, locale)
    yes, no, polite = words["yes"], words["no"], words["polite"]
    tokens = _tokens(text)
    for candidate in (tokens, _strip_polite(tokens, polite)):
        if candidate in no:
            return False
        if candidate in yes:
            return True
    tokens = _strip_polite(tokens, polite)
    if not tokens:
        return None
    # "Yes, sign me up" / "No, not for me": the first clause decides, if the rest agrees.
    clauses = [c for c in _CLAUSE.split(normalise(text)) if _WORD.search(c)]
    if len(clauses) > 1:
        first = _strip_polite(_tokens(clauses[0]), polite)
        rest = {w for c in clauses[1:] for w in _tokens(c)}
        no_words = {phrase[0] for phrase in no if len(phrase) == 1}
        if first in no:
            return False
        if first in yes and not rest & (_HEDGES | no_words):
            return True
    if len(tokens) == 1 and len(tokens[0]) >= 3:
        word = tokens[0]
        if any(len(t) >= 3 and within_one_edit(word, t) for t in words["typo_targets"]):
            return True
    return None
