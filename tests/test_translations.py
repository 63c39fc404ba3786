"""The translations plugin: which languages the panel speaks, guessing, switching, RTL, fallbacks.

Through the real bot on a real SQLite file, with the shipped catalogs in messages/.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.engine.waves import launch
from bot.hookspecs import hookimpl
from bot.models import Address, MessageKind, OutboundMessage
from bot.plugins import load_plugins
from bot.resources import messages_dir
from bot.sms import UCS2_MULTI, UCS2_SINGLE, encode_info
from plugins.translations.bidi import RLM, mark_lines
from plugins.translations.catalogs import is_rtl, offered_locales
from plugins.translations.detect import guess_locale
from tests.conftest import Chat, add_survey, make_settings

SHIPPED = ["en", "cy", "pl", "ro", "ur"]

BILINGUAL_SURVEY = """\
id = "gp-bilingual"
locales = ["en", "cy"]
title.en = "GP appointments"
title.cy = "Apwyntiadau meddyg teulu"
intro.en = "A short survey about GP appointments."
intro.cy = "Arolwg byr am apwyntiadau meddyg teulu."

[[questions]]
id = "seen"
type = "yesno"
text.en = "Have you seen a GP this year?"
text.cy = "Ydych chi wedi gweld meddyg teulu eleni?"

[[questions]]
id = "ease"
type = "choice"
text.en = "How easy was it to get an appointment?"
text.cy = "Pa mor hawdd oedd cael apwyntiad?"
options = [
  { id = "easy", text.en = "Easy", text.cy = "Hawdd" },
  { id = "hard", text.en = "Hard", text.cy = "Anodd" },
  { id = "very_hard", text.en = "Very hard", text.cy = "Anodd iawn" },
]

[[questions]]
id = "comment"
type = "text"
text.en = "Anything else?"
text.cy = "Unrhyw beth arall?"
"""


async def make_bot(tmp_path: Path, locales: list[str], **kwargs: Any) -> Bot:
    return await Bot.create(make_settings(tmp_path, bot={"locales": locales}), **kwargs)


async def stored(bot: Bot, address: str) -> Any:
    channel, _, ident = address.partition(":")
    return await bot.db.fetchone(
        "SELECT p.* FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
        "WHERE a.channel = ? AND a.address = ?",
        (channel, ident),
    )


async def join_in_english(chat: Chat, address: str) -> None:
    """Sign up on a panel with several languages: menu, English, consent, two fields."""
    for text in ("Hello", "1", "yes", "1", "1"):
        await chat.say(address, text)


# -- which locales the panel speaks ---------------------------------------------------------


async def test_configured_locales_without_a_catalog_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plugins.translations"):
        bot = await make_bot(tmp_path, ["en", "cy", "fr"])
    try:
        assert bot.locales == ["en", "cy"]
        assert "bot.locales lists fr but it is not offered: no catalog folder" in caplog.text
    finally:
        await bot.stop()


def test_a_variant_counts_when_its_base_language_has_a_catalog_with_consent(
    tmp_path: Path,
) -> None:
    (tmp_path / "pa").mkdir()
    (tmp_path / "pa" / "consent.txt.j2").write_text("...\n", encoding="utf-8")
    (tmp_path / "de").mkdir()  # started, but nothing to consent in yet
    (tmp_path / "de" / "welcome.txt.j2").write_text("Hallo\n", encoding="utf-8")

    offered, dropped = offered_locales(["en", "pa-Arab", "de", "fr"], [tmp_path])

    assert offered == ["en", "pa-Arab"]
    assert dropped == {
        "de": "its catalog has no 'consent' message",
        "fr": "no catalog folder (messages/fr)",
    }


async def test_every_shipped_catalog_is_offered_when_configured(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path, SHIPPED)
    try:
        assert bot.locales == SHIPPED
    finally:
        await bot.stop()


# -- guessing the language of a first message -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bore da", "cy"),
        ("Shwmae! Sut wyt ti?", "cy"),
        ("diolch", "cy"),
        ("Dzień dobry", "pl"),
        ("cześć", "pl"),
        ("Chcę dołączyć", "pl"),
        ("السلام علیکم", "ur"),
        ("Bună ziua", "ro"),
        ("salut", "ro"),
        ("Aș vrea să particip", "ro"),
        ("Polski", "pl"),
        ("Cymraeg", "cy"),
        ("Hello", None),
        ("", None),
    ],
)
def test_language_guess_from_script_and_greetings(text: str, expected: str | None) -> None:
    assert guess_locale(text, SHIPPED) == expected


def test_a_guess_is_only_ever_a_language_the_panel_offers() -> None:
    assert guess_locale("Bore da", ["en", "pl"]) is None
    assert guess_locale("السلام علیکم", ["en", "cy"]) is None
    assert guess_locale("Dzień dobry", ["en", "pl-PL"]) == "pl-PL"
    # Welsh also writes â: a Welsh greeting wins over the Romanian letters.
    assert guess_locale("Shwmae, sut â chi?", ["en", "cy", "ro"]) == "cy"


@pytest.mark.parametrize(
    ("text", "locale", "menu_line"),
    [
        ("Bore da", "cy", "Dewiswch eich iaith"),
        ("Dzień dobry", "pl", None),
        ("السلام علیکم", "ur", "اپنی زبان منتخب کریں"),
        ("Bună ziua", "ro", None),
        ("Hello", "en", "Choose your language"),
    ],
)
async def test_language_guess_at_first_contact_sets_the_welcome_and_menu_language(
    tmp_path: Path, text: str, locale: str, menu_line: str | None
) -> None:
    bot = await make_bot(tmp_path, SHIPPED)
    try:
        [menu] = await Chat(bot).say("sim:amy", text)
        row = await stored(bot, "sim:amy")
        assert row["locale"] == locale and row["stage"] == "language"
        expected = bot.messages.render("welcome", locale, panel_name="Test Panel")
        assert menu.startswith(expected)
        if menu_line:
            assert menu_line in menu
        # The person still picks: every language is on the menu, in its own name.
        for name in ("1 English", "2 Cymraeg", "3 Polski", "4 Română", "5 اردو"):
            assert name in menu
    finally:
        await bot.stop()


async def test_the_hook_has_no_opinion_about_a_known_panellist(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path, SHIPPED)
    try:
        await Chat(bot).say("sim:ben", "Hello")
        async with bot.db.transaction() as conn:
            from bot.storage import panellists as panellist_store

            ben = await panellist_store.find_by_address(conn, Address("sim", "ben"))
        answers = await bot.plugins.call_each(
            "panelbot_resolve_locale", bot=bot, panellist=ben, text="Bore da", tx=None
        )
        assert answers == []
    finally:
        await bot.stop()


# -- changing language, keywords of every catalog -------------------------------------------


async def test_switching_to_welsh_mid_survey_asks_the_next_question_in_welsh(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path, ["en", "cy"])
    try:
        chat = Chat(bot)
        await join_in_english(chat, "sim:cai")
        survey = tmp_path / "bilingual.toml"
        survey.write_text(BILINGUAL_SURVEY, encoding="utf-8")
        await add_survey(bot, survey)
        await launch(bot, "gp-bilingual")
        [second] = await chat.say("sim:cai", "yes")
        assert "Question 2 of 3: How easy was it to get an appointment?" in second

        [menu] = await chat.say("sim:cai", "IAITH")  # the Welsh LANGUAGE keyword
        assert "1 English" in menu and "2 Cymraeg" in menu

        [again] = await chat.say("sim:cai", "2")
        assert "Cwestiwn 2 o 3: Pa mor hawdd oedd cael apwyntiad?" in again
        assert "1 Hawdd\n2 Anodd\n3 Anodd iawn" in again
        assert (await stored(bot, "sim:cai"))["locale"] == "cy"

        # An answer by the Welsh text of an option is understood.
        [third] = await chat.say("sim:cai", "anodd iawn")
        assert "Cwestiwn 3 o 3: Unrhyw beth arall?" in third
        rows = await bot.db.fetchall("SELECT question_id, value FROM answers ORDER BY id")
        assert [(r["question_id"], r["value"]) for r in rows] == [
            ("seen", '"yes"'),
            ("ease", '"very_hard"'),
        ]
    finally:
        await bot.stop()


async def test_the_welsh_stop_word_works_for_an_english_speaking_panellist(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path, ["en", "cy"])
    try:
        chat = Chat(bot)
        await join_in_english(chat, "sim:dee")
        assert (await stored(bot, "sim:dee"))["locale"] == "en"
        [confirm] = await chat.say("sim:dee", "STOPIO")
        assert confirm.startswith("You have left Test Panel")  # confirmed in their language
        assert (await stored(bot, "sim:dee"))["status"] == "opted_out"
    finally:
        await bot.stop()


# -- right-to-left ----------------------------------------------------------------------------


def test_rlm_marks_every_line_once_and_leaves_blank_lines() -> None:
    text = "سوال 1 از 3\n\n1 ہاں\n2 نہیں"
    marked = mark_lines(text)
    assert marked == f"{RLM}سوال 1 از 3\n\n{RLM}1 ہاں\n{RLM}2 نہیں"
    assert mark_lines(marked) == marked


def test_urdu_is_right_to_left_and_welsh_is_not() -> None:
    dirs = [messages_dir()]
    assert is_rtl("ur", dirs)
    assert is_rtl("pa-Arab", dirs)  # from Babel's CLDR data: no catalog needed
    assert not is_rtl("cy", dirs)
    assert not is_rtl("en", dirs)


async def test_an_urdu_message_is_ucs2_with_the_right_segments(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path, ["en", "ur"])
    try:
        text = bot.messages.render("consent", "ur", welcome="")
        info = encode_info(mark_lines(text))
        units = len(mark_lines(text).encode("utf-16-le")) // 2
        assert info.encoding == "UCS-2"
        assert info.units == units
        expected = 1 if units <= UCS2_SINGLE else math.ceil(units / UCS2_MULTI)
        assert info.segments == expected > 1
        # One RLM per non-blank line: one UTF-16 unit each.
        lines = [line for line in text.split("\n") if line.strip()]
        assert info.units == len(text.encode("utf-16-le")) // 2 + len(lines)
    finally:
        await bot.stop()


class SentTexts:
    """Records what the channel was handed, after every panelbot_before_send."""

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self.arrived = asyncio.Event()

    @hookimpl
    def panelbot_after_send(self, message: OutboundMessage) -> None:
        self.sent.append(message)
        self.arrived.set()

    async def next(self) -> OutboundMessage:
        await asyncio.wait_for(self.arrived.wait(), timeout=5)
        self.arrived.clear()
        return self.sent[-1]


async def test_an_urdu_menu_gets_an_rlm_on_each_line_through_the_dispatcher(
    tmp_path: Path,
) -> None:
    recorder = SentTexts()
    plugins = load_plugins()
    plugins.register(recorder, "recorder")
    bot = await make_bot(tmp_path, ["en", "ur"], plugins=plugins)
    await bot.start(scheduler=False)
    try:
        chat = Chat(bot)
        [queued] = await chat.say("sim:zara", "السلام علیکم")
        sent = await recorder.next()
        assert sent.extra["locale"] == "ur"
        assert sent.text == mark_lines(queued) != queued
        lines = [line for line in sent.text.split("\n") if line.strip()]
        assert all(line.startswith(RLM) and not line.startswith(RLM * 2) for line in lines)
        assert f"{RLM}1 English" in lines and f"{RLM}2 اردو" in lines

        # Choosing English: left-to-right text goes out untouched.
        [consent] = await chat.say("sim:zara", "1")
        sent = await recorder.next()
        assert sent.text == consent and RLM not in consent
    finally:
        await bot.stop()


def outbound(text: str, locale: str) -> OutboundMessage:
    return OutboundMessage(
        1, Address("sim", "x"), text, MessageKind.REPLY, None, "k", extra={"locale": locale}
    )


async def test_before_send_leaves_ltr_and_english_fallbacks_alone(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path, ["en", "cy", "ur"])
    try:
        chain = bot.plugins.call_chain
        welsh = outbound("Cwestiwn 1 o 2\n1 Ie\n2 Na", "cy")
        assert await chain("panelbot_before_send", "message", bot=bot, message=welsh) is welsh
        # An English fallback sent to an Urdu speaker: an RLM would push its full stop left.
        english = outbound("Thank you.\n1 Yes", "ur")
        assert await chain("panelbot_before_send", "message", bot=bot, message=english) is english
        urdu = outbound("1 ہاں\n2 نہیں", "ur")
        changed = await chain("panelbot_before_send", "message", bot=bot, message=urdu)
        assert changed.text == f"{RLM}1 ہاں\n{RLM}2 نہیں"
        again = await chain("panelbot_before_send", "message", bot=bot, message=changed)
        assert again.text == changed.text  # never doubled
    finally:
        await bot.stop()


# -- without the plugin, and the fallback chain ---------------------------------------------


async def test_with_the_plugin_disabled_the_bot_speaks_english_only(tmp_path: Path) -> None:
    plugins = load_plugins(disabled=["translations"])
    bot = await make_bot(tmp_path, ["en", "cy", "ur"], plugins=plugins)
    try:
        assert bot.locales == ["en"]
        [first] = await Chat(bot).say("sim:eli", "Bore da")
        assert "Reply YES to join" in first and "Cymraeg" not in first
        assert (await stored(bot, "sim:eli"))["locale"] == "en"
        urdu = outbound("1 ہاں", "ur")
        assert (
            await bot.plugins.call_chain("panelbot_before_send", "message", bot=bot, message=urdu)
            is urdu
        )
    finally:
        await bot.stop()


class PunjabiCatalog:
    """A plugin shipping a partial Punjabi catalog: only the welcome."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "pa").mkdir(parents=True)
        (root / "pa" / "welcome.txt.j2").write_text(
            "{{ panel_name }} ਵੱਲੋਂ ਸਤ ਸ੍ਰੀ ਅਕਾਲ!\n", encoding="utf-8"
        )

    @hookimpl
    def panelbot_message_dirs(self) -> list[Path]:
        return [self.root]


async def test_a_missing_text_falls_back_along_the_chain_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = load_plugins()
    plugins.register(PunjabiCatalog(tmp_path / "extra"), "punjabi")
    bot = await make_bot(tmp_path, ["en"], plugins=plugins)
    try:
        catalog = bot.messages
        with caplog.at_level(logging.INFO, logger="bot.messages"):
            welcome = catalog.render("welcome", "pa-Arab", panel_name="Test Panel")
            catalog.render("welcome", "pa-Arab", panel_name="Test Panel")
            stop = catalog.render("opted_out", "pa-Arab", panel_name="Test Panel")
        assert welcome == "Test Panel ਵੱਲੋਂ ਸਤ ਸ੍ਰੀ ਅਕਾਲ!"
        assert stop.startswith("You have left Test Panel")
        assert catalog.fallbacks[("welcome", "pa-Arab", "pa")] == 2
        assert catalog.fallbacks[("opted_out", "pa-Arab", "en")] == 1
        assert "message welcome: no pa-Arab text, fell back to pa" in caplog.text
        catalog.render("welcome", "cy", panel_name="Test Panel")
        assert not any(key[1] == "cy" for key in catalog.fallbacks)  # Welsh is complete
    finally:
        await bot.stop()


class HostileCatalog:
    """A catalog folder laid out as messages/ is, holding Welsh templates that attack (#9)."""

    def __init__(self, root: Path, marker: Path) -> None:
        self.root = root
        (root / "cy").mkdir(parents=True)
        # From a str to os.system through __class__.__mro__: refused when it compiles.
        (root / "cy" / "welcome.txt.j2").write_text(
            "{% for c in panel_name.__class__.__mro__[1].__subclasses__() %}"
            "{% if c.__name__ == 'catch_warnings' %}"
            "{{ c()._module.__builtins__['__import__']('os').system('touch " + str(marker) + "') }}"
            "{% endif %}{% endfor %}Croeso!\n",
            encoding="utf-8",
        )
        # A name built while rendering, which only the sandbox could stop: |attr is not on the
        # allowlist of what a message template may use, so this is refused when it compiles.
        (root / "cy" / "opted_out.txt.j2").write_text(
            "{{ panel_name|attr('_' ~ '_class__') }}\n", encoding="utf-8"
        )

    @hookimpl
    def panelbot_message_dirs(self) -> list[Path]:
        return [self.root]


async def test_a_hostile_template_in_the_catalog_never_runs_at_send_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "the-template-ran"
    plugins = load_plugins()
    plugins.register(HostileCatalog(tmp_path / "messages", marker), "hostile")
    bot = await make_bot(tmp_path, ["en", "cy"], plugins=plugins)
    try:
        chat = Chat(bot)
        with caplog.at_level(logging.INFO, logger="bot.messages"):
            [menu] = await chat.say("sim:cai", "Bore da")  # guessed Welsh: a Welsh welcome
            assert (await stored(bot, "sim:cai"))["locale"] == "cy"
            [left] = await chat.say("sim:cai", "STOPIO")

        assert not marker.exists()
        # Each refused template is skipped like a missing one: the panellist gets English.
        assert menu.startswith("Hello from Test Panel!")
        assert left.startswith("You have left Test Panel")
        assert "class" not in left
        assert "message cy/welcome refused, never rendered: uses __builtins__" in caplog.text
        assert "message cy/opted_out refused, never rendered: uses |attr" in caplog.text
        assert set(bot.messages.refused) == {"cy/welcome", "cy/opted_out"}
    finally:
        await bot.stop()
