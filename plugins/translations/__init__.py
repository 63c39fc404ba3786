"""Built-in plugin ``translations``: speaking each panellist's language.

It will own the supported locales, choosing a panellist's locale from what they write
(``panelbot_resolve_locale``), message catalogs beyond the core's templates
(``panelbot_message_dirs``), completeness checks and the translators' PO round trip
(``panelbot messages check|export|import``). For now it only announces that it is loaded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.hookspecs import hookimpl

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.config import Settings

logger = logging.getLogger(__name__)


@hookimpl
def panelbot_locales(bot: Bot | None, settings: Settings) -> list[str]:
    """Every configured locale: this plugin is what lets the panel speak more than one."""
    return list(settings.bot.locales)


@hookimpl
def panelbot_startup(bot: Bot) -> None:
    logger.debug("translations plugin loaded")
