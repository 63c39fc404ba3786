"""Built-in plugin ``translations``: speaking each panellist's language.

Everything goes through plugin hooks; with this plugin disabled the core speaks English only.

- ``panelbot_locales``: the configured locales whose catalog exists (``pa-Arab`` counts when
  ``messages/pa`` does) and has a consent message; others are dropped with a warning, since
  a panellist must be able to read what they consent to.
- ``panelbot_resolve_locale``: at first contact, a guess from the script and greetings of
  the first message (:mod:`.detect`); it only sets the language of the welcome and the menu.
- ``panelbot_before_send``: right-to-left messages get a RIGHT-TO-LEFT MARK on each line so
  numbered options read correctly on phones (:mod:`.bidi`).
- ``panelbot_register_commands``: ``panelbot messages check|export|import`` (:mod:`.cli`).
- ``panelbot_register_routes``: the dashboard's ``/admin/messages``, the same check as a
  matrix of messages by language (:mod:`.page`), behind the staff login.

The language menu, the LANGUAGE keyword, keywords of every catalog and the fallback chain
(``pa-Arab`` → ``pa`` → ``en``) are the core's; the catalogs live in ``messages/<locale>/``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from bot.plugin_api import core_messages_dir, hookimpl
from plugins.translations import bidi
from plugins.translations.catalogs import is_rtl, offered_locales
from plugins.translations.detect import guess_locale

if TYPE_CHECKING:
    import click

    from bot.plugin_api import Bot, OutboundMessage, Panellist, Settings

logger = logging.getLogger(__name__)

STATE_KEY = "translations"


@hookimpl
def panelbot_locales(bot: Bot | None, settings: Settings) -> list[str]:
    """The configured locales that have a catalog with a consent message in their language."""
    offered, dropped = offered_locales(settings.bot.locales, [core_messages_dir()])
    for locale, reason in dropped.items():
        logger.warning(
            "bot.locales lists %s but it is not offered: %s; add the catalog or remove it",
            locale,
            reason,
        )
    return offered


@hookimpl
def panelbot_resolve_locale(bot: Bot, panellist: Panellist | None, text: str) -> str | None:
    """At first contact, the panel's locale the message seems written in; else no opinion.

    A known panellist chose their language, so their stored choice stands (None here).
    """
    if panellist is not None:
        return None
    return guess_locale(text, getattr(bot, "locales", None))


@hookimpl
def panelbot_before_send(bot: Bot, message: OutboundMessage) -> OutboundMessage | None:
    """A right-to-left message with an RLM at the start of each line; others untouched."""
    locale = message.extra.get("locale") if message.extra else None
    if not locale or not _rtl(bot, str(locale)) or not bidi.has_rtl_letters(message.text):
        return None
    # Urdu and Arabic are UCS-2 over SMS anyway: each mark costs one UTF-16 unit per line.
    text = bidi.mark_lines(message.text)
    return dataclasses.replace(message, text=text) if text != message.text else None


def _rtl(bot: Bot, locale: str) -> bool:
    # Cached per bot: this runs for every message the dispatcher sends.
    cache: dict[str, bool] = bot.state.setdefault(STATE_KEY, {}).setdefault("rtl", {})
    if locale not in cache:
        cache[locale] = is_rtl(locale, bot.messages.dirs)
    return cache[locale]


@hookimpl
def panelbot_register_commands(cli: click.Group) -> None:
    from plugins.translations.cli import messages_group

    cli.add_command(messages_group)


@hookimpl
def panelbot_register_routes(bot: Bot) -> list[Any]:
    from plugins.translations.page import routes

    return routes(bot)


@hookimpl
def panelbot_startup(bot: Bot) -> None:
    logger.debug("translations plugin: panel speaks %s", ", ".join(bot.locales))
