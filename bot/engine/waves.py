"""Waves: launching a survey to a sample, invitations, reminders and closing.

Each step is idempotent and recorded in the same transaction as the messages it queues
(outbox idempotency keys ``wave:<id>:invite:<panellist>`` and ``wave:<id>:remind:<panellist>``),
so the scheduler can run a step again after a restart without sending anything twice.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.engine import render
from bot.engine.survey_cache import SurveyCache
from bot.models import Address, MessageKind, Panellist, utcnow
from bot.storage import audit
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.storage.conn import Conn

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.engine.conversation import Engine, Turn

logger = logging.getLogger(__name__)

BATCH = 250


class WaveError(Exception):
    """A wave cannot be launched as asked (unknown survey, bad sample size...)."""


async def begin_survey(
    renderer: render.Renderer,
    surveys: SurveyCache,
    conn: Conn,
    panellist: Panellist,
    wave_id: int,
    survey_row_id: int,
) -> render.Rendered:
    """Open a session on the first question and render the invitation that carries it."""
    survey = await surveys.get(conn, survey_row_id)
    first = survey.first_question({})
    assert first is not None, "a stored survey always has a question"
    await survey_store.start_session(
        conn,
        wave_id=wave_id,
        survey_row_id=survey_row_id,
        panellist_id=panellist.id,
        first_question=first.id,
    )
    await survey_store.set_invitation(conn, wave_id, panellist.id, "sent")
    wave = await survey_store.wave(conn, wave_id)
    assert wave is not None
    locale = panellist.locale or renderer.default_locale
    fallback = renderer.default_locale
    question = render.question_message(renderer.catalog, survey, first, locale, fallback=fallback)
    text = renderer.render(
        "invitation",
        locale,
        intro=survey.localized_intro(locale, fallback),
        question=question.text,
        title=survey.localized_title(locale, fallback),
        questions=len(survey.questions),
        closes_at=wave.closes_at,
    )
    return render.Rendered(
        text, "invitation", question.options, multi=question.multi, send_label=question.send_label
    )


async def start_next_waiting(engine: Engine, turn: Turn) -> None:
    """After a survey ends, the oldest invitation that waited for it starts now."""
    p = turn.panellist
    assert p is not None
    waiting = await survey_store.next_waiting_invitation(turn.conn, p.id)
    if waiting is None:
        return
    wave_id, survey_row_id = waiting
    msg = await begin_survey(engine.renderer, engine.surveys, turn.conn, p, wave_id, survey_row_id)
    turn.reply(msg.text, template=msg.template, extra=msg.extra)


async def invite_new_joiner(engine: Engine, turn: Turn) -> None:
    """Someone who just joined is invited to open waves that take new joiners."""
    p = turn.panellist
    assert p is not None
    for wave in await survey_store.waves(turn.conn, status="open"):
        if wave.include_new and wave.closes_at > utcnow():
            if await survey_store.add_invitation(turn.conn, wave.id, p.id, "waiting"):
                await start_next_waiting(engine, turn)
                return


async def launch(
    bot: Bot,
    survey_id: str,
    *,
    sample: int | None = None,
    at: datetime | None = None,
    close_after: timedelta | None = None,
    include_new: bool = False,
    stratify_by: list[str] | None = None,
) -> int:
    """Create a wave of the survey's latest version; open it now unless ``at`` is later.

    ``stratify_by`` names panel fields a plugin's ``panelbot_select_sample`` stratifies the
    sample over; it needs ``sample`` and a plugin implementing that hook.
    """
    if sample is not None and sample < 1:
        raise WaveError("--sample must be at least 1")
    if stratify_by:
        check_stratify_by(bot, stratify_by, sample)
    now = utcnow()
    opens_at = at or now
    # Only a missing length takes the default: "0s" is refused below, not made the default.
    close_after = bot.settings.bot.close_after if close_after is None else close_after
    if close_after <= timedelta(0):
        raise WaveError("--close-after must be positive")
    closes_at = opens_at + close_after
    reminder_after = bot.settings.bot.reminder_after
    reminder_at = opens_at + reminder_after if reminder_after < close_after else None
    async with bot.db.transaction() as conn:
        stored = await survey_store.latest_version(conn, survey_id)
        if stored is None:
            raise WaveError(f"no survey {survey_id!r}; add it first with `panelbot survey add`")
        wave_id = await survey_store.create_wave(
            conn,
            survey_row_id=stored.row_id,
            opens_at=opens_at,
            closes_at=closes_at,
            reminder_at=reminder_at,
            sample_size=sample,
            include_new=include_new,
            stratify_by=stratify_by or None,
        )
    if opens_at <= now:
        await open_wave(bot, wave_id, refusal_raises=True)
    return wave_id


#: More cells than this in the cross of the --stratify-by fields is refused: a table nobody
#: reads, and cells of one person (the quotas plugin's sampling keeps the same limit).
MAX_STRATIFY_CELLS = 2000


def check_stratify_by(bot: Bot, fields: list[str], sample: int | None) -> None:
    """Refuse ``--stratify-by`` without ``--sample``, naming a non-field, or with no plugin."""
    if sample is None:
        raise WaveError("--stratify-by needs --sample N (how many to invite)")
    known = [f.name for f in bot.settings.panel.fields]
    for name in fields:
        if name not in known:
            raise WaveError(
                f"--stratify-by {name!r}: not a panel field (fields: {', '.join(known) or 'none'})"
            )
    if len(set(fields)) != len(fields):
        raise WaveError("--stratify-by: each field may appear only once")
    # Checked here, before a wave row exists, not only when the sample is drawn.
    values = {f.name: len(f.values) for f in bot.settings.panel.fields}
    cross = math.prod(values[name] for name in fields)
    if cross > MAX_STRATIFY_CELLS:
        raise WaveError(
            f"--stratify-by: the cross of {', '.join(fields)} has {cross} cells "
            f"(at most {MAX_STRATIFY_CELLS}); stratify by fewer fields"
        )
    if not bot.plugins.pm.hook.panelbot_select_sample.get_hookimpls():
        raise WaveError(
            "--stratify-by: no loaded plugin draws stratified samples (panelbot_select_sample; "
            "the built-in quotas plugin does unless it is disabled)"
        )


class Sample:
    """Who a wave invites, and the sampling plugin's account of how it chose them."""

    def __init__(self, ids: list[int], report: dict[str, Any] | None = None) -> None:
        self.ids = ids
        self.report = report


async def _select(bot: Bot, wave: survey_store.Wave, eligible: list[Panellist]) -> Sample:
    async with bot.db.transaction() as conn:
        survey = await bot.engine.surveys.get(conn, wave.survey_row_id)
    chosen = await bot.plugins.call_first(
        "panelbot_select_sample",
        bot=bot,
        survey=survey,
        wave=wave,
        eligible=eligible,
        size=wave.sample_size,
        stratify_by=wave.stratify_by,
    )
    report = None
    if isinstance(chosen, dict):  # {"ids": [...], "report": {...}} or {"refused": "why"}
        if chosen.get("refused"):
            raise WaveError(f"wave {wave.id} not opened: {chosen['refused']}; nobody was invited")
        report = chosen.get("report")
        chosen = chosen.get("ids")
    if chosen is not None and not isinstance(chosen, list | tuple | set | frozenset):
        logger.warning(
            "panelbot_select_sample answered %s, not a list of ids; ignored", type(chosen).__name__
        )
        chosen = None
    if chosen is not None:
        allowed = {p.id for p in eligible}
        ids = list(dict.fromkeys(pid for pid in chosen if pid in allowed))
        return Sample(ids, _json_report(report))
    if wave.stratify_by:
        raise WaveError(
            f"wave {wave.id} is stratified by {', '.join(wave.stratify_by)} but no plugin drew "
            "its sample (panelbot_select_sample answered nothing); nobody was invited"
        )
    ids = [p.id for p in eligible]
    if wave.sample_size is None or wave.sample_size >= len(ids):
        return Sample(ids)
    return Sample(sorted(random.SystemRandom().sample(ids, wave.sample_size)))


def _json_report(report: Any) -> dict[str, Any] | None:
    """A plugin's sampling report if it can go into the audit log as JSON, else None."""
    if not isinstance(report, dict):
        return None
    try:
        json.dumps(report)
    except (TypeError, ValueError):
        logger.warning("panelbot_select_sample: the report is not JSON; it is left out")
        return None
    return report


async def open_wave(bot: Bot, wave_id: int, *, refusal_raises: bool = False) -> int:
    """Choose the invitees and queue their invitations. Returns how many were invited.

    A stratified wave whose sample no plugin draws is closed with nobody invited (logged,
    and in the audit log as ``wave.refused``); with ``refusal_raises`` the
    :class:`WaveError` is raised too, for ``survey launch`` to show.
    """
    renderer, surveys = bot.engine.renderer, bot.engine.surveys
    async with bot.db.transaction() as conn:
        wave = await survey_store.wave(conn, wave_id)
        if wave is None or wave.status == "closed":
            return 0
        if wave.status == "open":
            return 0  # already opened (a re-run after a restart)
        eligible = await panellist_store.many(conn, await panellist_store.active_ids(conn))
    try:
        sample = await _select(bot, wave, eligible)
    except WaveError as exc:
        async with bot.db.transaction() as conn:
            await survey_store.set_wave(conn, wave_id, status="closed", closed_at=utcnow())
            await audit.record(conn, "wave.refused", detail={"wave": wave_id, "reason": str(exc)})
        logger.error("%s", exc)  # the reason names the wave and that it was not opened
        if refusal_raises:
            raise
        return 0
    invitees = sample.ids
    by_id = {p.id: p for p in eligible}
    invited = 0
    for start in range(0, len(invitees), BATCH):
        async with bot.db.transaction() as conn:
            for pid in invitees[start : start + BATCH]:
                invited += await _invite(renderer, surveys, conn, wave, by_id[pid])
    async with bot.db.transaction() as conn:
        await survey_store.set_wave(conn, wave_id, status="open", opened_at=utcnow())
        if sample.report is not None or wave.stratify_by:
            detail = {
                **(sample.report or {}),  # the plugin's account; the core's facts win
                "wave": wave_id,
                "size": wave.sample_size,
                "stratify_by": wave.stratify_by,
                "eligible": len(eligible),
                "invited": invited,
            }
            await audit.record(conn, "wave.sample", detail=detail)
    bot.wake_dispatcher()
    logger.info("wave %s opened: %s invited", wave_id, invited)
    return invited


async def _invite(
    renderer: render.Renderer,
    surveys: SurveyCache,
    conn: Conn,
    wave: survey_store.Wave,
    p: Panellist,
) -> int:
    busy = await survey_store.active_session(conn, p.id) is not None
    if not await survey_store.add_invitation(conn, wave.id, p.id, "waiting"):
        return 0
    if busy or not p.addresses:
        return 1  # waits until their open survey ends
    msg = await begin_survey(renderer, surveys, conn, p, wave.id, wave.survey_row_id)
    await _queue_bulk(
        conn, p, p.addresses[0], f"wave:{wave.id}:invite:{p.id}", msg, MessageKind.INVITATION
    )
    return 1


async def _queue_bulk(
    conn: Conn,
    p: Panellist,
    address: Address,
    key: str,
    msg: render.Rendered,
    kind: MessageKind,
) -> None:
    await outbox_store.queue(
        conn,
        key=key,
        panellist_id=p.id,
        address=address,
        text=msg.text,
        kind=kind,
        template=msg.template,
        extra={**msg.extra, "locale": p.locale},
    )


async def send_reminders(bot: Bot, wave_id: int) -> int:
    """One reminder to everyone invited who has not finished. Runs at most once per wave."""
    renderer = bot.engine.renderer
    async with bot.db.transaction() as conn:
        wave = await survey_store.wave(conn, wave_id)
        if wave is None or wave.status != "open" or wave.reminded_at is not None:
            return 0
        survey = await bot.engine.surveys.get(conn, wave.survey_row_id)
        rows = await survey_store.unfinished_sessions(conn, wave_id)
        people = {p.id: p for p in await panellist_store.many(conn, [r[1] for r in rows])}
        sent = 0
        for _session_id, pid, question_id in rows:
            p = people.get(pid)
            if p is None or p.status.value != "active" or not p.addresses or not question_id:
                continue
            locale = p.locale or renderer.default_locale
            question = render.question_message(
                renderer.catalog,
                survey,
                survey.question(question_id),
                locale,
                fallback=renderer.default_locale,
            )
            title = survey.localized_title(locale, renderer.default_locale)
            text = renderer.render(
                "reminder", locale, title=title, question=question.text, closes_at=wave.closes_at
            )
            await _queue_bulk(
                conn,
                p,
                p.addresses[0],
                f"wave:{wave_id}:remind:{pid}",
                render.Rendered(
                    text,
                    "reminder",
                    question.options,
                    multi=question.multi,
                    send_label=question.send_label,
                ),
                MessageKind.REMINDER,
            )
            await survey_store.mark_reminded(conn, wave_id, pid)
            sent += 1
        await survey_store.set_wave(conn, wave_id, reminded_at=utcnow())
    bot.wake_dispatcher()
    logger.info("wave %s: %s reminders queued", wave_id, sent)
    return sent


async def close_wave(bot: Bot, wave_id: int) -> int:
    """Close the wave: open sessions end, waiting invitations expire, queued ones move on."""
    renderer, surveys = bot.engine.renderer, bot.engine.surveys
    async with bot.db.transaction() as conn:
        wave = await survey_store.wave(conn, wave_id)
        if wave is None or wave.status == "closed":
            return 0
        closed_people = await survey_store.close_sessions(conn, wave_id)
        await survey_store.expire_waiting(conn, wave_id=wave_id)
        await survey_store.set_wave(conn, wave_id, status="closed", closed_at=utcnow())
        # People whose session just closed may have another invitation waiting.
        for p in await panellist_store.many(conn, closed_people):
            waiting = await survey_store.next_waiting_invitation(conn, p.id)
            if waiting is None or p.status.value != "active" or not p.addresses:
                continue
            msg = await begin_survey(renderer, surveys, conn, p, waiting[0], waiting[1])
            await _queue_bulk(
                conn,
                p,
                p.addresses[0],
                f"wave:{waiting[0]}:invite:{p.id}",
                msg,
                MessageKind.INVITATION,
            )
    bot.wake_dispatcher()
    logger.info("wave %s closed (%s sessions closed)", wave_id, len(closed_people))
    return len(closed_people)


async def launch_to(
    bot: Bot,
    survey_id: str,
    invitees: Iterable[int],
    *,
    close_after: timedelta | None = None,
    linked: Callable[[Conn, int], Awaitable[None]] | None = None,
) -> tuple[int, int]:
    """Open a wave of the survey's latest version now for exactly ``invitees``.

    No sampling and no ``panelbot_select_sample``: the wave goes to the panellists named
    (e.g. a follow-up survey to the people an update went to), less those no longer
    active and reachable. Everything (the wave, its invitations, their messages, and what
    ``linked(conn, wave_id)`` writes) is one transaction, so a crash leaves either the
    whole open wave or nothing. Returns ``(wave id, how many were invited)``.
    """
    # Only a missing length takes the default: "0s" is refused below, not made the default.
    close_after = bot.settings.bot.close_after if close_after is None else close_after
    if close_after <= timedelta(0):
        raise WaveError("--close-after must be positive")
    renderer, surveys = bot.engine.renderer, bot.engine.surveys
    now = utcnow()
    reminder_after = bot.settings.bot.reminder_after
    async with bot.db.transaction() as conn:
        stored = await survey_store.latest_version(conn, survey_id)
        if stored is None:
            raise WaveError(f"no survey {survey_id!r}; add it first with `panelbot survey add`")
        wave_id = await survey_store.create_wave(
            conn,
            survey_row_id=stored.row_id,
            opens_at=now,
            closes_at=now + close_after,
            reminder_at=now + reminder_after if reminder_after < close_after else None,
            sample_size=None,
            include_new=False,
        )
        wave = await survey_store.wave(conn, wave_id)
        assert wave is not None
        active = set(await panellist_store.active_ids(conn))
        wanted = [pid for pid in dict.fromkeys(invitees) if pid in active]
        invited = 0
        for p in await panellist_store.many(conn, wanted):
            invited += await _invite(renderer, surveys, conn, wave, p)
        await survey_store.set_wave(conn, wave_id, status="open", opened_at=now)
        if linked is not None:
            await linked(conn, wave_id)
    bot.wake_dispatcher()
    logger.info("wave %s opened for a named list: %s invited", wave_id, invited)
    return wave_id, invited
