"""Scheduling impact updates with APScheduler 3: jobs rebuilt from the database.

No job store is pickled: the rows of ``impact_updates`` are the truth. At start, and every
few seconds after (so an update scheduled from the command line while the bot runs is picked
up), each update still ``scheduled`` gets a date job ``impact_updates:update:<id>`` and
each one left ``sending`` by a crash is resumed at once.

Misfire policy, applied at start: an update that fell due while the bot was not running
goes out at once if it is at most ``misfire_grace`` late (default 6h); later than that, it
is ``held`` with the reason, until staff release it (``panelbot impact release ID``, or
``panelbot impact schedule`` again).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.plugin_api import format_duration
from plugins.impact_updates import updates
from plugins.impact_updates.settings import impact_settings

if TYPE_CHECKING:
    from bot.plugin_api import Bot

logger = logging.getLogger(__name__)

SYNC_SECONDS = 5.0
SYNC_JOB = "impact_updates:sync"


def job_id(update_id: int) -> str:
    return f"impact_updates:update:{update_id}"


def _jobs(bot: Bot) -> dict[int, str]:
    # The due time each update's job was added for, so a sync adds each job only once.
    return bot.state.setdefault(updates.STATE_KEY, {}).setdefault("jobs", {})


async def register_jobs(bot: Bot) -> None:
    """Apply the misfire policy, add a job per scheduled update, and the sync job."""
    await sync(bot, starting=True)
    bot.scheduler.add_job(
        sync,
        "interval",
        seconds=SYNC_SECONDS,
        args=[bot],
        id=SYNC_JOB,
        replace_existing=True,
    )


async def sync(bot: Bot, *, starting: bool = False) -> list[int]:
    """Make sure every scheduled update has its job and every interrupted one resumes.

    At start, a scheduled update due more than ``misfire_grace`` ago is held instead.
    Returns the ids of the updates held.
    """
    grace = impact_settings(bot.settings).misfire_grace
    current = updates.now(bot)
    held: list[int] = []
    try:
        pending = await updates.updates_in(bot.db.conn, ("scheduled", "sending"))
    except Exception:
        logger.exception("impact updates: could not read the scheduled updates; next sync")
        return held
    jobs = _jobs(bot)
    for update in pending:
        due = updates.parse_time(update["due_at"])
        if update["status"] == "scheduled" and starting and due < current - grace:
            reason = (
                f"fell due at {update['due_at'][:16]} UTC while the bot was not running, "
                f"more than misfire_grace ({format_duration(grace)}) ago; "
                f"release it with: panelbot impact release {update['id']}"
            )
            await updates.hold(bot, update["id"], reason)
            logger.warning("impact update %d held: %s", update["id"], reason)
            held.append(update["id"])
            continue
        if jobs.get(update["id"]) == update["due_at"] and not starting:
            continue
        jobs[update["id"]] = update["due_at"]
        run_at = max(due, current) if update["status"] == "scheduled" else current
        bot.scheduler.add_job(
            _run,
            "date",
            run_date=run_at,
            args=[bot, update["id"]],
            id=job_id(update["id"]),
            replace_existing=True,
        )
    return held


async def _run(bot: Bot, update_id: int) -> None:
    try:
        await updates.run_update(bot, update_id)
    except Exception:
        # Left 'sending' (or 'scheduled'): the next start or sync resumes it.
        logger.exception("impact update %d failed; it resumes at the next sync", update_id)
    finally:
        _jobs(bot).pop(update_id, None)


async def auto_schedule(bot: Bot, decision: dict[str, Any]) -> dict[str, Any] | None:
    """With ``auto_schedule = true``: a decision recorded as decided or implemented, or moved
    to one of them, gets an update to the participants of its surveys after ``send_after``.

    Nothing when it has no linked survey, or another update of it is already waiting."""
    config = impact_settings(bot.settings)
    if not config.auto_schedule or decision.get("status") not in ("decided", "implemented"):
        return None
    if not decision.get("surveys"):
        logger.info("decision %s: no linked survey, so no automatic update", decision["id"])
        return None
    if await updates.waiting_for(bot.db.conn, decision["id"]):
        return None
    due: datetime = updates.now(bot) + config.send_after
    try:
        update, _ = await updates.schedule(
            bot,
            decision["id"],
            trigger="auto" if decision.get("change") == "added" else "status",
            due=due,
        )
    except updates.UpdateError as exc:
        logger.warning("decision %s: no automatic update: %s", decision["id"], exc)
        return None
    logger.info("decision %s: update %d scheduled for %s", decision["id"], update["id"], due)
    return update
