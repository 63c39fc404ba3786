"""Impact updates: scheduling one, sending it in batches, cancelling and releasing it.

The database is the truth. An update is a row of ``impact_updates``; when it falls due, its
audience is resolved into ``impact_recipients`` (the holdout drawn there, the rows written
in chunks) and it moves to ``sending``; then batches of ``batch_size`` recipients are
rendered in their locale and queued in the outbox, each batch in one transaction, each
message under the key
``impact:<update id>:<panellist id>``. A crash at any point resumes from the rows still
``pending``, and the outbox's unique key means nobody is ever queued twice.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.plugin_api import (
    BroadcastMessage,
    MessageKind,
    broadcast_audience,
    broadcast_outbox_ids,
    cancel_broadcast,
    known_surveys,
    local_time,
    parse_duration,
    queue_broadcast,
    render_message,
    sanitise,
    sms_info,
    survey_option_texts,
    survey_participants_count,
)
from plugins.impact_updates import decisions
from plugins.impact_updates.settings import impact_settings

if TYPE_CHECKING:
    from bot.plugin_api import Bot, ReadConn, Transaction

logger = logging.getLogger(__name__)

TEMPLATE = "impact_update"
STATE_KEY = "impact_updates"
MAX_HOLDOUT = 0.5
_PERCENT = re.compile(r"^\s*(\d{1,2}(?:\.\d+)?)\s*%\s*$")
_FIELD_VALUE = re.compile(r"^([a-z][a-z0-9_]*)=(.+)$")


class UpdateError(ValueError):
    """A problem with what was asked, in one line."""


# -- the clock -----------------------------------------------------------------------------


def now(bot: Bot) -> datetime:
    """The current time in UTC; tests set ``bot.state["impact_updates"]["clock"]``."""
    clock: Callable[[], datetime] | None = bot.state.get(STATE_KEY, {}).get("clock")
    return clock() if clock else datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def key_prefix(update_id: int) -> str:
    return f"impact:{update_id}:"


def message_key(update_id: int, panellist_id: int) -> str:
    return f"impact:{update_id}:{panellist_id}"


# -- parsing what staff asked for --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    kind: str  # participants | panel | field
    field: str | None = None
    value: str | None = None

    def describe(self) -> str:
        return f"{self.field}={self.value}" if self.kind == "field" else self.kind


def parse_audience(bot: Bot, text: str) -> Audience:
    text = text.strip()
    if text in ("participants", "panel"):
        return Audience(text)
    match = _FIELD_VALUE.match(text)
    if not match:
        raise UpdateError(
            f"--audience: participants, panel or FIELD=VALUE (e.g. age_band=75+), not {text!r}"
        )
    name, value = match.group(1), match.group(2).strip()
    fields = {f.name: f for f in bot.settings.panel.fields}
    if name not in fields:
        raise UpdateError(
            f"--audience: {name!r} is not a panel field (fields: {', '.join(fields) or 'none'})"
        )
    if value not in fields[name].values:
        raise UpdateError(
            f"--audience: {value!r} is not a value of {name} ({', '.join(fields[name].values)})"
        )
    return Audience("field", name, value)


def parse_holdout(text: str | None) -> float:
    """``"10%"`` as 0.1; at most 50%."""
    if text is None:
        return 0.0
    match = _PERCENT.match(text)
    if not match:
        raise UpdateError(f"--holdout: a percentage such as 10%, not {text!r}")
    share = float(match.group(1)) / 100
    if share > MAX_HOLDOUT:
        raise UpdateError(f"--holdout: at most {MAX_HOLDOUT:.0%} of the audience")
    return share


def parse_when(bot: Bot, at: str | None, after: str | None) -> datetime:
    """``--at now|ISO-TIME`` or ``--after DURATION`` as a UTC time (default: now).

    A time without an offset is local time in ``[bot] timezone``."""
    current = now(bot)
    if at is not None and after is not None:
        raise UpdateError("give --at or --after, not both")
    if after is not None:
        try:
            return current + parse_duration(after)
        except ValueError as exc:
            raise UpdateError(f"--after: {exc}") from None
    if at is None or at.strip().lower() == "now":
        return current
    try:
        when = datetime.fromisoformat(at.strip())
    except ValueError:
        raise UpdateError(
            f"--at: {at!r} is not a time (use now or e.g. 2026-12-07T10:00)"
        ) from None
    try:
        when = local_time(when, bot.settings.bot.timezone).astimezone(UTC)
    except ValueError as exc:
        raise UpdateError(f"--at: {exc}") from None
    if when < current - timedelta(minutes=1):
        raise UpdateError(f"--at: {at} is in the past (use --at now to send at once)")
    return when


# -- storage -------------------------------------------------------------------------------

_UPDATE_COLUMNS = (
    "u.id, u.decision_id, u.trigger, u.audience, u.audience_field, u.audience_value, u.due_at, "
    "u.status, u.held_reason, u.holdout_share, u.holdout_released_at, u.follow_up_survey_id, "
    "u.follow_up_wave_id, u.feedback, u.audience_size, u.participants, u.created_at, "
    "u.started_at, u.finished_at, u.cancelled_at"
)


async def get_update(conn: ReadConn, update_id: int) -> dict[str, Any] | None:
    rows = await conn.execute_fetchall(
        f"SELECT {_UPDATE_COLUMNS} FROM impact_updates u WHERE u.id = ?", (update_id,)
    )
    return dict(rows[0]) if rows else None


async def all_updates(conn: ReadConn) -> list[dict[str, Any]]:
    rows = await conn.execute_fetchall(
        f"SELECT {_UPDATE_COLUMNS}, d.title FROM impact_updates u "
        "JOIN impact_decisions d ON d.id = u.decision_id ORDER BY u.id"
    )
    return [dict(r) for r in rows]


async def updates_in(conn: ReadConn, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(statuses))
    rows = await conn.execute_fetchall(
        f"SELECT {_UPDATE_COLUMNS} FROM impact_updates u WHERE u.status IN ({marks}) "
        "ORDER BY u.due_at, u.id",
        statuses,
    )
    return [dict(r) for r in rows]


async def waiting_for(conn: ReadConn, decision_id: int) -> list[dict[str, Any]]:
    """The decision's updates not yet (fully) sent: scheduled, sending or held."""
    rows = await conn.execute_fetchall(
        f"SELECT {_UPDATE_COLUMNS} FROM impact_updates u WHERE u.decision_id = ? "
        "AND u.status IN ('scheduled', 'sending', 'held') ORDER BY u.id",
        (decision_id,),
    )
    return [dict(r) for r in rows]


async def set_status(tx: Transaction, update_id: int, status: str, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    await tx.execute(
        f"UPDATE impact_updates SET status = ?, {sets + ', ' if sets else ''}updated_at = ? "
        "WHERE id = ?",
        (status, *fields.values(), iso(datetime.now(UTC)), update_id),
    )


# -- scheduling ----------------------------------------------------------------------------


async def schedule(
    bot: Bot,
    decision_id: int,
    *,
    at: str | None = None,
    after: str | None = None,
    audience: str = "participants",
    holdout: str | None = None,
    follow_up: str | None = None,
    feedback: bool = True,
    trigger: str = "manual",
    due: datetime | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """Record an update of a decision; (the update, ids of held updates it replaces).

    Refused when the decision is only proposed, when another update of it is waiting, and
    for an audience of participants when no survey is linked to it.
    """
    decision = await decisions.get(bot.db.conn, decision_id)
    if decision is None:
        raise UpdateError(f"no decision {decision_id} (see panelbot decision list)")
    if decision["status"] not in decisions.TELLABLE:
        raise UpdateError(
            f"decision {decision_id} is {decision['status']}: an update tells the panel what "
            f"was decided (panelbot decision update {decision_id} --status decided)"
        )
    chosen = parse_audience(bot, audience)
    if chosen.kind == "participants" and not decision["surveys"]:
        raise UpdateError(
            f"decision {decision_id} has no linked survey, so it has no participants: "
            f"link one (decision update {decision_id} --surveys ID) or use --audience panel"
        )
    share = parse_holdout(holdout)
    if follow_up is not None:
        follow_up = follow_up.strip()
        if follow_up not in await known_surveys(bot.db.conn, [follow_up]):
            raise UpdateError(f"--follow-up: no survey {follow_up!r} (see panelbot survey list)")
    when = due if due is not None else parse_when(bot, at, after)
    await check_length(bot, decision, feedback=feedback)
    stamp = iso(datetime.now(UTC))
    try:
        async with bot.db.transaction() as tx:
            # The check and the insert share one write transaction, so two schedules at once
            # (dashboard, CLI, auto_schedule) cannot both see "nothing waiting"; the unique
            # index of migration 0002 is the last word if anything else writes.
            waiting = await waiting_for(tx, decision_id)
            busy = [u for u in waiting if u["status"] != "held"]
            if busy:
                raise _already_waiting(decision_id, busy[0]["id"], busy[0]["status"])
            replaced = [u["id"] for u in waiting]
            for held_id in replaced:
                await set_status(
                    tx,
                    held_id,
                    "cancelled",
                    cancelled_at=stamp,
                    held_reason="replaced by a new update",
                )
            result = await tx.execute(
                "INSERT INTO impact_updates (decision_id, trigger, audience, audience_field, "
                "audience_value, due_at, status, holdout_share, follow_up_survey_id, feedback, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?)",
                (
                    decision_id,
                    trigger,
                    chosen.kind,
                    chosen.field,
                    chosen.value,
                    iso(when),
                    share,
                    follow_up,
                    1 if feedback else 0,
                    stamp,
                    stamp,
                ),
            )
            update_id = int(result.lastrowid)
    except sqlite3.IntegrityError as exc:
        if "impact_updates" not in str(exc) or "decision_id" not in str(exc):
            raise
        waiting = await waiting_for(bot.db.conn, decision_id)
        busy = [u for u in waiting if u["status"] != "held"] or waiting
        raise _already_waiting(
            decision_id, busy[0]["id"] if busy else "?", busy[0]["status"] if busy else "waiting"
        ) from None
    update = await get_update(bot.db.conn, update_id)
    assert update is not None
    return update, replaced


def _already_waiting(decision_id: int, update_id: object, status: str) -> UpdateError:
    return UpdateError(
        f"decision {decision_id} already has update {update_id} {status} "
        f"(panelbot impact cancel {update_id} first)"
    )


async def check_length(bot: Bot, decision: dict[str, Any], *, feedback: bool) -> None:
    """Refuse an update whose text is over the SMS cap in any of the panel's languages: the
    SMS channel would cut it short (and with it the feedback question at its end)."""
    participants = await survey_participants_count(bot.db.conn, survey_ids_of(decision))
    renderer = Renderer(
        bot,
        {"participants": participants, "feedback": feedback},
        decision,
        await option_labels(bot, decision),
    )
    for locale in bot.locales:
        for took_part in (True, False):
            text = renderer.text(locale, took_part)
            if bot.settings.channels.twilio.sanitize:
                text = sanitise(text)
            info = sms_info(text)
            if info.over_cap:
                raise UpdateError(
                    f"the update is {info.segments} SMS segments in {locale} ({info.encoding}), "
                    "over the 6-segment cap: shorten --you-said or --we-did "
                    f"(panelbot decision update {decision['id']}; see panelbot impact preview)"
                )


async def cancel(bot: Bot, update_id: int) -> tuple[dict[str, Any], int]:
    """Cancel an update and its messages not yet sent; (the update, messages cancelled)."""
    update = await get_update(bot.db.conn, update_id)
    if update is None:
        raise UpdateError(f"no impact update {update_id} (see panelbot impact list)")
    if update["status"] == "cancelled":
        raise UpdateError(f"impact update {update_id} is already cancelled")
    async with bot.db.transaction() as tx:
        await set_status(tx, update_id, "cancelled", cancelled_at=iso(datetime.now(UTC)))
        await tx.execute(
            "UPDATE impact_recipients SET state = 'cancelled' "
            "WHERE update_id = ? AND state IN ('pending', 'waiting')",
            (update_id,),
        )
        cancelled = await cancel_broadcast(tx, key_prefix(update_id))
    done = await get_update(bot.db.conn, update_id)
    assert done is not None
    return done, cancelled


async def release(bot: Bot, update_id: int) -> dict[str, Any]:
    """A held update goes out now."""
    update = await get_update(bot.db.conn, update_id)
    if update is None:
        raise UpdateError(f"no impact update {update_id} (see panelbot impact list)")
    if update["status"] != "held":
        raise UpdateError(f"impact update {update_id} is {update['status']}, not held")
    async with bot.db.transaction() as tx:
        await set_status(tx, update_id, "scheduled", due_at=iso(now(bot)), held_reason=None)
    done = await get_update(bot.db.conn, update_id)
    assert done is not None
    return done


async def hold(bot: Bot, update_id: int, reason: str) -> None:
    async with bot.db.transaction() as tx:
        await tx.execute(
            "UPDATE impact_updates SET status = 'held', held_reason = ?, updated_at = ? "
            "WHERE id = ? AND status = 'scheduled'",
            (reason, iso(datetime.now(UTC)), update_id),
        )


# -- sending -------------------------------------------------------------------------------


def survey_ids_of(decision: dict[str, Any]) -> list[str]:
    return list(decision["surveys"])


async def resolve_audience(
    bot: Bot, update: dict[str, Any], decision: dict[str, Any], conn: ReadConn
) -> list[Any]:
    return await broadcast_audience(
        conn,
        survey_ids=survey_ids_of(decision),
        only_participants=update["audience"] == "participants",
        field=update["audience_field"],
        value=update["audience_value"],
    )


def _holdout_ids(update_id: int, ids: list[int], share: float) -> set[int]:
    # Seeded by the update: the same draw if the transaction is ever re-run.
    size = round(share * len(ids))
    return set(random.Random(f"impact:{update_id}").sample(ids, size)) if size else set()


RECIPIENT_CHUNK = 5000


async def _status(conn: ReadConn, update_id: int) -> str | None:
    rows = await conn.execute_fetchall(
        "SELECT status FROM impact_updates WHERE id = ?", (update_id,)
    )
    return rows[0]["status"] if rows else None


async def start(bot: Bot, update_id: int) -> bool:
    """Resolve the audience of a due, scheduled update into its recipients and move it to
    'sending'; False when it is not (or no longer) scheduled or sending.

    The audience is read once; its rows are written in transactions of ``RECIPIENT_CHUNK``
    (a panel of 100,000 never holds the writer for seconds while replies wait), and the
    update becomes 'sending' only in the last. A crash in between leaves it 'scheduled':
    the next run reads the audience again and adds only the rows still missing."""
    default = bot.settings.bot.default_locale
    status = await _status(bot.db.conn, update_id)
    if status != "scheduled":
        return status == "sending"
    update = await get_update(bot.db.conn, update_id)
    decision = await decisions.get(bot.db.conn, update["decision_id"])
    members = await resolve_audience(bot, update, decision, bot.db.conn)
    held_back = _holdout_ids(update_id, [m.panellist_id for m in members], update["holdout_share"])
    rows = [
        (
            update_id,
            m.panellist_id,
            m.locale or default,
            "holdout" if m.panellist_id in held_back else "treatment",
            "waiting" if m.panellist_id in held_back else "pending",
            1 if m.took_part else 0,
        )
        for m in members
    ]
    participants = await survey_participants_count(bot.db.conn, survey_ids_of(decision))
    for first in range(0, len(rows), RECIPIENT_CHUNK):
        async with bot.db.transaction() as tx:
            if await _status(tx, update_id) != "scheduled":
                return False  # cancelled meanwhile
            await tx.executemany(
                "INSERT OR IGNORE INTO impact_recipients "
                "(update_id, panellist_id, locale, grp, state, took_part) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows[first : first + RECIPIENT_CHUNK],
            )
    async with bot.db.transaction() as tx:
        if await _status(tx, update_id) != "scheduled":
            return False
        [count] = await tx.execute_fetchall(
            "SELECT COUNT(*) AS n FROM impact_recipients WHERE update_id = ?", (update_id,)
        )
        await set_status(
            tx,
            update_id,
            "sending",
            audience_size=int(count["n"]),
            participants=participants,
            started_at=iso(datetime.now(UTC)),
        )
    return True


async def option_labels(bot: Bot, decision: dict[str, Any]) -> dict[str, str]:
    """The quoted finding's option in each language of its survey (empty without one)."""
    finding = decision.get("finding")
    if not finding or not finding.get("option_id"):
        return {}
    texts = await survey_option_texts(bot.db.conn, finding["survey_id"], finding["question_id"])
    return dict(texts.get(str(finding["option_id"]), {}))


# What ends a sentence in the panel's scripts (Latin, Urdu, CJK): staff text without one gets
# a full stop, so that the template's next sentence ("Decided by ...") does not run on.
_SENTENCE_ENDS = tuple(".!?…)\"'”’。۔؟")


def _as_sentence(text: str) -> str:
    text = text.rstrip()
    return text if not text or text.endswith(_SENTENCE_ENDS) else text + "."


class Renderer:
    """The update's text per (locale, took part): the same words for everyone alike."""

    def __init__(
        self,
        bot: Bot,
        update: dict[str, Any],
        decision: dict[str, Any],
        option_labels: dict[str, str] | None = None,
    ) -> None:
        self.bot = bot
        finding = decision.get("finding")
        # The quoted option in each language the survey speaks (see option_labels).
        self.option_labels = option_labels or {}
        self.context = {
            "panel_name": bot.settings.bot.name,
            "title": decision["title"],
            "you_said": _as_sentence(decision["you_said"]),
            "we_did": _as_sentence(decision["we_did"]),
            # The share quoted, phrased by each language's template.
            "finding_percent": round(100 * finding["share"]) if finding else 0,
            "finding_option": finding["option_text"] if finding else "",
            "finding_n": finding["n"] if finding else 0,
            "decided_by": decision["decided_by"] or "",
            "link": decision["link"] or "",
            "participants": int(update["participants"] or 0),
            "feedback": bool(update["feedback"]),
        }
        self._cache: dict[tuple[str, bool], str] = {}

    def text(self, locale: str, took_part: bool) -> str:
        key = (locale, took_part)
        if key not in self._cache:
            context = dict(self.context)
            if locale in self.option_labels:
                context["finding_option"] = self.option_labels[locale]
            self._cache[key] = render_message(
                self.bot, TEMPLATE, locale, took_part=took_part, **context
            ).strip()
        return self._cache[key]


async def send_pending(bot: Bot, update_id: int, *, batch_size: int | None = None) -> int:
    """Queue the update's pending recipients in batches; how many were queued.

    Each batch is one transaction: the outbox rows and the recipients' new state together.
    Stops at once when the update is cancelled meanwhile. Marks it 'sent' when no treatment
    recipient is left pending.
    """
    size = batch_size or impact_settings(bot.settings).batch_size
    update = await get_update(bot.db.conn, update_id)
    if update is None:
        return 0
    decision = await decisions.get(bot.db.conn, update["decision_id"])
    assert decision is not None
    renderer = Renderer(bot, update, decision, await option_labels(bot, decision))
    extra_base = {"impact_update": update_id, "decision": decision["id"]}
    queued = 0
    last_id = 0
    while True:
        async with bot.db.transaction() as tx:
            status = await tx.execute_fetchall(
                "SELECT status FROM impact_updates WHERE id = ?", (update_id,)
            )
            if not status or status[0]["status"] not in ("sending", "sent"):
                return queued
            rows = await tx.execute_fetchall(
                "SELECT id, panellist_id, locale, took_part FROM impact_recipients "
                "WHERE update_id = ? AND state = 'pending' AND id > ? AND panellist_id IS NOT NULL "
                "ORDER BY id LIMIT ?",
                (update_id, last_id, size),
            )
            if not rows:
                if status[0]["status"] == "sending":
                    await set_status(tx, update_id, "sent", finished_at=iso(datetime.now(UTC)))
                return queued
            last_id = rows[-1]["id"]
            messages = [
                BroadcastMessage(
                    key=message_key(update_id, r["panellist_id"]),
                    panellist_id=r["panellist_id"],
                    text=renderer.text(r["locale"], bool(r["took_part"])),
                    locale=r["locale"],
                    extra=extra_base,
                )
                for r in rows
            ]
            ids = await queue_broadcast(
                tx, messages, kind=MessageKind.IMPACT_UPDATE, template=TEMPLATE
            )
            missing = [m.key for m in messages if m.key not in ids]
            if missing:  # already queued by an earlier run (not expected: see the docstring)
                ids.update(await broadcast_outbox_ids(tx, missing))
            stamp = iso(datetime.now(UTC))
            await tx.executemany(
                "UPDATE impact_recipients SET state = ?, outbox_id = ?, queued_at = ? WHERE id = ?",
                [
                    (
                        "queued" if m.key in ids else "skipped",
                        ids.get(m.key),
                        stamp if m.key in ids else None,
                        r["id"],
                    )
                    for m, r in zip(messages, rows, strict=True)
                ],
            )
            queued += sum(1 for m in messages if m.key in ids)


async def release_holdout(bot: Bot, update_id: int) -> int:
    """The holdout group's messages go out now (after the next wave closed); how many."""
    async with bot.db.transaction() as tx:
        result = await tx.execute(
            "UPDATE impact_recipients SET state = 'pending' "
            "WHERE update_id = ? AND state = 'waiting'",
            (update_id,),
        )
        await tx.execute(
            "UPDATE impact_updates SET holdout_released_at = ?, updated_at = ? WHERE id = ?",
            (iso(now(bot)), iso(datetime.now(UTC)), update_id),
        )
    if not result.rowcount:
        return 0
    return await send_pending(bot, update_id)


async def run_update(bot: Bot, update_id: int) -> int:
    """What the update's job does when it falls due: start it, then queue its messages."""
    running: set[int] = bot.state.setdefault(STATE_KEY, {}).setdefault("running", set())
    if update_id in running:
        return 0
    running.add(update_id)
    try:
        if not await start(bot, update_id):
            return 0
        queued = await send_pending(bot, update_id)
        logger.info("impact update %d: %d messages queued", update_id, queued)
        return queued
    finally:
        running.discard(update_id)
