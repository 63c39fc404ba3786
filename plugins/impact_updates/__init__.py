"""Built-in plugin ``impact_updates``: "you said, we did".

Each part lives in a module of its own; this file only wires hooks to them.

- The decision register (:mod:`.decisions`): ``panelbot decision add|list|update``, findings
  quoted from linked surveys, ``panelbot_decision_recorded`` fired for each change.
- Impact updates (:mod:`.updates`, :mod:`.audience`): ``panelbot impact
  schedule|preview|list|cancel|release``; the audience resolved in SQL, each message rendered
  in the panellist's locale from ``messages/<locale>/impact_update.txt.j2`` and queued with
  the idempotency key ``impact:<update id>:<panellist id>``.
- Scheduling (:mod:`.jobs`): one APScheduler job per scheduled update, rebuilt from the
  database on start (``panelbot_register_jobs``), with the ``misfire_grace`` policy.
- Configuration (:mod:`.settings`): ``[plugins.impact_updates]`` checked by
  ``panelbot_check_config``.
- The engagement loop (feedback replies, holdout, follow-up surveys), ``impact report`` and
  the public ``/impact`` page live in :mod:`.loop`, :mod:`.report` and :mod:`.public`.

Tables: ``migrations/`` (``impact_decisions``, ``impact_decision_surveys``,
``impact_findings``, ``impact_updates``, ``impact_recipients``, ``impact_feedback``).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from bot.plugin_api import hookimpl
from plugins.impact_updates import cli as commands
from plugins.impact_updates import decisions, jobs, loop, report
from plugins.impact_updates import settings as plugin_settings

if TYPE_CHECKING:
    import click

    from bot.plugin_api import Bot, Panellist, Settings, Transaction

logger = logging.getLogger(__name__)


@hookimpl
def panelbot_startup(bot: Bot) -> None:
    logger.debug("impact_updates plugin loaded")


@hookimpl
def panelbot_check_config(settings: Settings) -> list[tuple[str, str]] | None:
    """Problems in ``[plugins.impact_updates]``."""
    return plugin_settings.check_config(settings) or None


@hookimpl
def panelbot_migrations() -> Any:
    """This plugin's own tables (``plugins/impact_updates/migrations``)."""
    return resources.files(__name__).joinpath("migrations")


@hookimpl
def panelbot_register_commands(cli: click.Group) -> None:
    """``panelbot decision ...`` and ``panelbot impact ...``."""
    cli.add_command(commands.decision_group)
    cli.add_command(commands.impact_group)
    if "report" not in commands.impact_group.commands:
        commands.impact_group.add_command(report.report_cmd)


@hookimpl
async def panelbot_register_jobs(bot: Bot) -> None:
    """One job per scheduled update, rebuilt from the database; held or sent on misfire."""
    await jobs.register_jobs(bot)
    loop.register_jobs(bot)  # hold-outs released after the next wave, follow-up waves


@hookimpl
async def panelbot_decision_recorded(bot: Bot, decision: dict[str, Any]) -> None:
    """With ``auto_schedule = true``, a decided or implemented decision gets its update."""
    await jobs.auto_schedule(bot, decision)


@hookimpl
async def panelbot_survey_decisions(bot: Bot, survey_id: str) -> list[dict[str, Any]]:
    """The register's decisions that cite the survey, for its board summary."""
    return await decisions.citing(bot.db.conn, survey_id)


@hookimpl
async def panelbot_handle_reply(
    bot: Bot, panellist: Panellist, text: str, tx: Transaction
) -> str | None:
    """A "Was this useful?" answer (1/2, yes/no) to a recent update: recorded and thanked."""
    return await loop.handle_reply(bot, panellist, text, tx)


@hookimpl
def panelbot_register_routes(bot: Bot) -> list[Any] | None:
    """``GET /impact``, the public register, when ``public_page = true``; the dashboard's
    ``/admin/decisions`` pages (:mod:`.pages`), behind the staff login."""
    # The web framework only when serving.
    from plugins.impact_updates import pages, public

    return [*(public.routes(bot) or []), *pages.routes(bot)]
