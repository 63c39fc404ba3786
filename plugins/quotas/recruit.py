"""Recruitment against quotas: waitlist full groups, admit when room opens."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.plugin_api import Bot, Panellist, SignupDecision, Transaction


async def screen_signup(bot: Bot, panellist: Panellist, tx: Transaction) -> SignupDecision | None:
    return None


def register_jobs(bot: Bot) -> None:
    return None
