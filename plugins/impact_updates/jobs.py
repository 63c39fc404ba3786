"""Scheduling impact updates: jobs rebuilt from the database, the misfire policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.plugin_api import Bot


async def register_jobs(bot: Bot) -> None:
    """Add the sync job that keeps one APScheduler job per scheduled update."""


async def auto_schedule(bot: Bot, decision: dict[str, Any]) -> None:
    """With ``auto_schedule = true``, schedule a decided decision's update to participants."""
