"""The engagement loop: "Was this useful?" replies, the hold-out's late update, follow-ups.

- **Feedback.** An update sent with ``feedback`` on ends with a one-tap question. A reply
  of ``1``/``2`` (or a yes/no word of the panellist's language or English, from the
  catalogs' ``words.toml``) from someone the update was queued for, within
  ``feedback_for`` (default 7 days) of it, is stored in ``impact_feedback``, one row per
  person and update: a later reply replaces the earlier one (people change their minds,
  and correct a mistyped digit). It is thanked in their language.
- **Hold-out.** The randomised share kept back (``impact_recipients.grp = 'holdout'``) gets
  the same update once the *next wave* has closed: the first survey wave opened after the
  update went out, follow-up waves of updates excepted. A periodic job checks; I1's
  ``updates.release_holdout`` queues the messages with the same idempotency keys, so the
  release happens once however often the job runs or the bot restarts.
- **Follow-up.** An update scheduled with ``--follow-up SURVEY_ID`` opens a wave of that
  survey for the people the update was queued for (the treatment group), ``follow_up_after``
  (default 1 day) after it went out, so that the "Was this useful?" reply comes first. The
  wave, ``impact_updates.follow_up_wave_id`` and the decision's ``follow_up`` survey link are
  written in one transaction.
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.plugin_api import open_wave_for, render_message
from plugins.impact_updates.settings import impact_settings

if TYPE_CHECKING:
    from bot.plugin_api import Bot, Database, Panellist, Transaction

logger = logging.getLogger(__name__)

JOB_ID = "impact_updates:loop"
TICK_SECONDS = 60
THANKS = {1: "impact_feedback_yes", 0: "impact_feedback_no"}


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Stored times: UTC ISO-8601 with milliseconds, sortable as text (as the core's)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).strip().casefold()
    return text.rstrip(".!。۔").strip()


def feedback_value(bot: Bot, text: str, locale: str | None) -> int | None:
    """1 (useful), 0 (not useful) or None (not an answer to "Was this useful?")."""
    said = _normalise(text)
    if said == "1":
        return 1
    if said == "2":
        return 0
    if not said or len(said) > 40:
        return None
    for candidate in dict.fromkeys([locale or bot.settings.bot.default_locale, "en"]):
        words = bot.messages.words(candidate)
        if said in {_normalise(w) for w in words.get("yes", [])}:
            return 1
        if said in {_normalise(w) for w in words.get("no", [])}:
            return 0
    return None


async def handle_reply(bot: Bot, panellist: Panellist, text: str, tx: Transaction) -> str | None:
    """``panelbot_handle_reply``: record feedback on the latest update asking for it."""
    value = feedback_value(bot, text, panellist.locale)
    if value is None:
        return None
    window = impact_settings(bot.settings).feedback_for
    now = now_utc()
    rows = await tx.execute_fetchall(
        "SELECT r.update_id, r.queued_at FROM impact_recipients r "
        "JOIN impact_updates u ON u.id = r.update_id "
        "WHERE r.panellist_id = ? AND r.state = 'queued' AND u.feedback = 1 "
        "AND u.status != 'cancelled' AND r.queued_at IS NOT NULL "
        "ORDER BY r.queued_at DESC, r.update_id DESC LIMIT 1",
        (panellist.id,),
    )
    if not rows:
        return None
    update_id, queued_at = rows[0][0], parse_time(rows[0][1])
    if queued_at is None or now - queued_at > window:
        return None
    await tx.execute(
        "INSERT INTO impact_feedback (update_id, panellist_id, useful, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (update_id, panellist_id) DO UPDATE SET "
        "useful = excluded.useful, received_at = excluded.received_at",
        (update_id, panellist.id, value, iso(now)),
    )
    locale = panellist.locale or bot.settings.bot.default_locale
    return render_message(bot, THANKS[value], locale)


# -- the next wave, the hold-out's release and follow-up waves ------------------------------


def _follow_up_waves_sql() -> str:
    return "SELECT follow_up_wave_id FROM impact_updates WHERE follow_up_wave_id IS NOT NULL"


async def next_wave(db: Database, update: Any) -> Any | None:
    """The first wave opened after the update went out, follow-up waves excepted (a row:
    ``id, status, opened_at, closed_at, survey_id``), or None."""
    since = update["started_at"] or update["due_at"]
    return await db.fetchone(
        "SELECT w.id, w.status, w.opened_at, w.closed_at, s.survey_id FROM waves w "
        "JOIN surveys s ON s.id = w.survey_row_id WHERE w.opened_at IS NOT NULL "
        f"AND w.opened_at >= ? AND w.id NOT IN ({_follow_up_waves_sql()}) "
        "ORDER BY w.opened_at, w.id LIMIT 1",
        (since,),
    )


async def _due_updates(bot: Bot) -> list[Any]:
    return await bot.db.fetchall(
        "SELECT * FROM impact_updates WHERE status = 'sent' AND ("
        "(holdout_share > 0 AND holdout_released_at IS NULL) OR "
        "(follow_up_survey_id IS NOT NULL AND follow_up_wave_id IS NULL))"
    )


async def release_due_holdouts(bot: Bot) -> list[int]:
    """Release each hold-out whose next wave has closed; the updates released."""
    from plugins.impact_updates import updates

    released = []
    for update in await _due_updates(bot):
        if not update["holdout_share"] or update["holdout_released_at"]:
            continue
        wave = await next_wave(bot.db, update)
        if wave is None or wave["status"] != "closed":
            continue
        await updates.release_holdout(bot, update["id"])
        logger.info("impact update %s: hold-out released after wave %s", update["id"], wave["id"])
        released.append(update["id"])
    return released


async def open_due_follow_ups(bot: Bot, now: datetime | None = None) -> list[int]:
    """Open each follow-up wave that is due; the wave ids opened."""
    now = now or now_utc()
    after = impact_settings(bot.settings).follow_up_after
    opened = []
    for update in await _due_updates(bot):
        if not update["follow_up_survey_id"] or update["follow_up_wave_id"]:
            continue
        sent_at = parse_time(update["finished_at"] or update["started_at"])
        if sent_at is None or now - sent_at < after:
            continue
        wave_id = await open_follow_up(bot, update)
        if wave_id is not None:
            opened.append(wave_id)
    return opened


async def open_follow_up(bot: Bot, update: Any) -> int | None:
    """The follow-up wave for ``update``, to its treatment recipients; once."""
    rows = await bot.db.fetchall(
        "SELECT panellist_id FROM impact_recipients WHERE update_id = ? AND grp = 'treatment' "
        "AND state = 'queued' AND panellist_id IS NOT NULL ORDER BY panellist_id",
        (update["id"],),
    )
    update_id, decision_id = update["id"], update["decision_id"]
    survey_id = update["follow_up_survey_id"]

    async def link(tx: Transaction, wave_id: int) -> None:
        cursor = await tx.execute(
            "UPDATE impact_updates SET follow_up_wave_id = ?, updated_at = ? "
            "WHERE id = ? AND follow_up_wave_id IS NULL",
            (wave_id, iso(now_utc()), update_id),
        )
        if cursor.rowcount != 1:
            raise _AlreadyLinked  # another run got there first: roll this wave back
        await tx.execute(
            "INSERT INTO impact_decision_surveys (decision_id, survey_id, role) "
            "VALUES (?, ?, 'follow_up') ON CONFLICT (decision_id, survey_id) DO NOTHING",
            (decision_id, survey_id),
        )

    try:
        wave_id, invited = await open_wave_for(
            bot, survey_id, [r["panellist_id"] for r in rows], linked=link
        )
    except _AlreadyLinked:
        return None
    except ValueError as exc:
        # Logged once per run, not every minute; it is tried again each time (the survey
        # may be added back).
        failed: set[int] = bot.state.setdefault("impact_updates", {}).setdefault(
            "follow_up_failed", set()
        )
        if update_id not in failed:
            failed.add(update_id)
            logger.error("impact update %s: follow-up survey not opened: %s", update_id, exc)
        return None
    logger.info(
        "impact update %s: follow-up wave %s of %s opened, %s invited",
        update_id,
        wave_id,
        survey_id,
        invited,
    )
    return wave_id


class _AlreadyLinked(Exception):
    pass


async def tick(bot: Bot) -> None:
    """The loop's periodic job: hold-outs to release, follow-up waves to open."""
    try:
        await release_due_holdouts(bot)
        await open_due_follow_ups(bot)
    except Exception:
        logger.exception("impact updates: the engagement loop job failed; it runs again soon")


def register_jobs(bot: Bot) -> None:
    """One interval job (stable id): the database says what is due, so restarts are safe."""
    bot.scheduler.add_job(
        tick,
        "interval",
        args=[bot],
        seconds=TICK_SECONDS,
        id=JOB_ID,
        replace_existing=True,
        next_run_time=now_utc(),
        coalesce=True,
        max_instances=1,
    )
