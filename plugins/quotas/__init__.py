"""Built-in plugin ``quotas``: keeping the panel representative.

Each part lives in a module of its own; this file only wires hooks to them.

- Population targets (``[plugins.quotas]``: ``panel_size_target``, ``tolerance`` and
  ``[plugins.quotas.population.<field>]`` shares): parsed and checked in :mod:`.targets`
  (``panelbot_check_config``, ``panelbot_population_targets``).
- Recruitment: new sign-ups whose group is full are waitlisted, and invited in when room
  opens (:mod:`.recruit`: ``panelbot_screen_signup``, ``panelbot_register_jobs``).
- ``panelbot quotas report``: panel against targets (:mod:`.report`).
- ``panelbot panel select``: a fair lottery for a sub-panel (:mod:`.selection`,
  :mod:`.selection_cli`).
- Survey samples: stratified to the targets, with a fatigue rule (:mod:`.sampling`:
  ``panelbot_select_sample``).
- Weights for weighted results (:mod:`.weighting`: ``panelbot_results_weights``).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from bot.plugin_api import hookimpl
from plugins.quotas import recruit, report, selection_cli, targets, weighting

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from bot.plugin_api import Bot, Panellist, Settings, SignupDecision, Transaction

logger = logging.getLogger(__name__)


@hookimpl
def panelbot_startup(bot: Bot) -> None:
    logger.debug("quotas plugin loaded")


@hookimpl
def panelbot_check_config(settings: Settings) -> list[tuple[str, str]] | None:
    """Problems in ``[plugins.quotas]`` and in derived panel fields (postcode lookup)."""
    from plugins.quotas import sampling

    problems = targets.check_config(settings) + weighting.check_config(settings)
    problems += sampling.check_config(settings) + _unknown_keys(settings)
    return problems or None


# Every key of [plugins.quotas] a module reads: targets (size, tolerance, population),
# sampling (oversampling, fatigue rule) and weighting (raking); recruitment and selection
# read none of their own. A typo would otherwise be silently ignored.
KNOWN_KEYS = frozenset(
    {
        "panel_size_target",
        "tolerance",
        "population",
        "oversample_low_responders",
        "min_days_between_invitations",
        "weight_bounds",
        "weight_tolerance",
        "weight_max_iterations",
    }
)


def _unknown_keys(settings: Settings) -> list[tuple[str, str]]:
    section = settings.plugins.config.get(targets.PLUGIN, {})
    if not isinstance(section, dict):
        return []  # the targets' own check says what the section should be
    known = ", ".join(sorted(KNOWN_KEYS))
    return [
        (f"plugins.{targets.PLUGIN}.{key}", f"unknown key; known: {known}")
        for key in sorted(set(section) - KNOWN_KEYS)
    ]


@hookimpl
def panelbot_population_targets(settings: Settings) -> dict[str, dict[str, float]] | None:
    """The configured population shares per field and value, or None without any."""
    return targets.population_targets(settings)


@hookimpl
def panelbot_results_weights(
    bot: Bot, survey: Any, respondents: list[dict[str, Any]]
) -> dict[int, float] | None:
    """Respondents raked to the population targets (:mod:`.weighting`), None without any."""
    found = targets.population_targets(bot.settings)
    return weighting.results_weights(bot.settings, found, respondents)


@hookimpl
async def panelbot_screen_signup(
    bot: Bot, panellist: Panellist, tx: Transaction
) -> SignupDecision | None:
    """Waitlist a new sign-up whose group is already full; counted inside ``tx``."""
    return await recruit.screen_signup(bot, panellist, tx)


@hookimpl
def panelbot_register_jobs(bot: Bot) -> None:
    """Invite waitlisted people in when their groups have room (every 10 minutes)."""
    recruit.register_jobs(bot)


@hookimpl
def panelbot_register_commands(cli: click.Group) -> None:
    """``panelbot quotas report``; ``panelbot panel select`` (:mod:`.selection_cli`)."""
    cli.add_command(report.quotas_group)
    selection_cli.register(cli)


@hookimpl
def panelbot_message_dirs(bot: Bot) -> list[Path]:
    """The sub-panel invitation (``messages/<locale>/selection_invitation.txt.j2``)."""
    return [selection_cli.MESSAGES]


@hookimpl
def panelbot_migrations() -> Any:
    """This plugin's own tables (``plugins/quotas/migrations``)."""
    return resources.files(__name__).joinpath("migrations")


@hookimpl
async def panelbot_select_sample(
    bot: Bot,
    wave: Any,
    eligible: list[Panellist],
    size: int | None,
    stratify_by: list[str] | None,
) -> dict[str, Any] | None:
    """Survey samples stratified to the population targets, with the fatigue rule."""
    from plugins.quotas import sampling

    return await sampling.select_sample(bot, wave, eligible, size, stratify_by)


@hookimpl
def panelbot_register_routes(bot: Bot) -> list[Any]:
    """The dashboard's ``/admin/population``: panel against targets (:mod:`.pages`)."""
    from plugins.quotas import pages  # the web framework only when serving

    return pages.routes(bot)
