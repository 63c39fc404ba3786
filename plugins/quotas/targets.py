"""Population targets from ``[plugins.quotas]``: parsed and checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.plugin_api import Settings


def check_config(settings: Settings) -> list[tuple[str, str]]:
    return []


def population_targets(settings: Settings) -> dict[str, dict[str, float]] | None:
    return None
