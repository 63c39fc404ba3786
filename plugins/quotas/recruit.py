"""Recruitment against the population targets: full groups wait, and come in when room opens.

A group is the people with one value of one panel field that has population targets (say
``age_band = "75+"``). It is *full* when its active panellists reach
``ceil(share x panel_size_target x (1 + tolerance))`` (:meth:`Targets.cap`). A new sign-up
in any full group is waitlisted (``panelbot_screen_signup``): the count is made inside the
sign-up's own transaction, which the engine serialises, so concurrent sign-ups never
overshoot a cap. A value with no target (or unknown) never makes anyone wait.

Room opens when someone leaves (opts out, is erased, becomes unreachable) or a target is
raised. A job (every ten minutes, and when the bot starts) walks the waiting list, longest
waiting first, and admits each person whose groups all have room, in one transaction, with
the ``waitlist_room`` message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.plugin_api import (
    SignupDecision,
    admit_from_waitlist,
    panel_counts,
    waitlisted_panellists,
)
from plugins.quotas.targets import Targets, load

if TYPE_CHECKING:
    from bot.plugin_api import Bot, Panellist, ReadConn, Transaction

logger = logging.getLogger(__name__)

JOB_ID = "quotas:admit_waitlisted"
EVERY_MINUTES = 10
ROOM_MESSAGE = "waitlist_room"


async def active_counts(conn: ReadConn, targets: Targets) -> dict[str, dict[str, int]]:
    """Active panellists per value of each field with targets."""
    counts: dict[str, dict[str, int]] = {}
    for field in targets.population:
        found = await panel_counts(conn, field)
        counts[field] = {v: c["active"] for v, c in found.items() if v is not None}
    return counts


def full_groups(
    targets: Targets, counts: dict[str, dict[str, int]], panellist: Panellist
) -> list[tuple[str, str]]:
    """The (field, value) groups of this person that are already full."""
    full = []
    for field in targets.population:
        value = panellist.demographics.get(field)
        cap = targets.cap(field, value) if value is not None else None
        if cap is not None and counts.get(field, {}).get(value, 0) >= cap:
            full.append((field, value))
    return full


async def screen_signup(bot: Bot, panellist: Panellist, tx: Transaction) -> SignupDecision | None:
    """Waitlist a new sign-up any of whose groups is full; no opinion otherwise."""
    targets = load(bot.settings)
    if not targets.population or targets.panel_size_target is None:
        return None
    counts = await active_counts(tx, targets)
    full = full_groups(targets, counts, panellist)
    if full:
        # Field names only: a value (with the id) could single a person out in the log.
        logger.info("sign-up waitlisted: full group in %s", ", ".join(f for f, _ in full))
        return SignupDecision.WAITLIST
    return None


async def admit_waitlisted(bot: Bot) -> int:
    """Admit waitlisted people whose groups have room, longest waiting first; how many."""
    targets = load(bot.settings)
    if not targets.population or targets.panel_size_target is None:
        return 0  # without targets, whoever waitlisted people decides when they come in
    if not await waitlisted_panellists(bot.db.conn):  # a cheap read before any write
        return 0
    admitted = 0
    async with bot.db.transaction() as tx:
        waiting = await waitlisted_panellists(tx)
        counts = await active_counts(tx, targets)
        for person in waiting:
            if full_groups(targets, counts, person):
                continue
            if not await admit_from_waitlist(bot, tx, person, ROOM_MESSAGE):
                continue
            await tx.execute(
                "INSERT INTO quotas_admissions (panellist_id, admitted_at, reason) "
                "VALUES (?, ?, 'room opened')",
                (person.id, datetime.now(UTC).isoformat(timespec="seconds")),
            )
            admitted += 1
            for field in targets.population:
                value = person.demographics.get(field)
                if value is not None:
                    counts.setdefault(field, {})[value] = counts.get(field, {}).get(value, 0) + 1
    if admitted:
        logger.info("admitted %d from the waiting list", admitted)
    return admitted


async def _admit_job(bot: Bot) -> None:
    try:
        await admit_waitlisted(bot)
    except Exception:  # a job that raises is logged by the scheduler too; say which
        logger.exception("quotas: admitting from the waiting list failed")


def register_jobs(bot: Bot) -> None:
    """Every ten minutes, and once now (the bot is starting)."""
    bot.scheduler.add_job(
        _admit_job,
        "interval",
        minutes=EVERY_MINUTES,
        args=[bot],
        id=JOB_ID,
        replace_existing=True,
        next_run_time=datetime.now(UTC),
    )
