"""Built-in plugin ``impact_updates``: "you said, we did".

It will own the decision log linking survey findings to decisions
(``panelbot decision add|list``, ``panelbot_decision_recorded``), and scheduling,
previewing and reporting the impact updates broadcast to the panellists who took part
(``panelbot impact ...``, ``panelbot_register_jobs``), including their effect on later
response rates. For now it only announces that it is loaded.
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
    logger.debug("impact_updates plugin loaded")
