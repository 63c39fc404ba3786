"""Built-in plugin ``quotas``: keeping the panel representative.

It will own population targets per demographic field, the quota report
(``panelbot quotas report``), fair stratified selection of a sub-panel and of survey
samples (``panelbot_select_sample``), screening new sign-ups against full quotas
(``panelbot_screen_signup``) and weights for weighted results
(``panelbot_results_weights``). For now it only announces that it is loaded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.plugin_api import hookimpl

if TYPE_CHECKING:
    from bot.plugin_api import Bot

logger = logging.getLogger(__name__)


@hookimpl
def panelbot_startup(bot: Bot) -> None:
    logger.debug("quotas plugin loaded")
