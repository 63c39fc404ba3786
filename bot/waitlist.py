"""Panel groups and the waiting list, for plugins that keep the panel representative.

Exported through :mod:`bot.plugin_api`. Each function takes a connection: the ``tx`` a hook
was handed, a transaction of the plugin's own (``async with bot.db.transaction() as tx``),
or ``bot.db`` to read what is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.models import Panellist
    from bot.storage.conn import Conn, ReadConn


async def panel_counts(conn: ReadConn, field: str) -> dict[str | None, dict[str, int]]:
    """How many people have each value of panel field ``field``, by state.

    ``{"75+": {"active": 40, "waitlisted": 3}, None: {...}}``: *active* panellists (on the
    panel), and *waitlisted* ones (signed up, waiting for room). ``None`` counts those
    whose value is not known. Values nobody has are absent.
    """
    from bot.storage import panel_groups

    return await panel_groups.counts_by_value(conn, field)


async def waitlisted_panellists(conn: ReadConn) -> list[Panellist]:
    """Everyone on the waiting list, the longest waiting first."""
    from bot.storage import panel_groups

    return await panel_groups.waitlisted(conn)


async def admit_from_waitlist(
    bot: Any, conn: Conn, panellist: Panellist, message: str, **context: Any
) -> bool:
    """Move a waitlisted person onto the panel and queue them message ``message``.

    The message is rendered in their language (with ``context``) and queued, once, to
    their most recent address as a bulk message (held in quiet hours); like anyone who has
    just joined, they are then invited to the first open wave that takes new joiners. The
    admission is audited (``joined``, ``{"from": "waitlist"}``). Returns False, changing
    nothing, if the person is no longer waitlisted (they opted out, or were admitted
    meanwhile).
    """
    from bot.models import MessageKind
    from bot.storage import audit, outbox, panel_groups

    if not await panel_groups.activate_waitlisted(conn, panellist.id):
        return False
    await audit.record(conn, "joined", panellist.id, {"from": "waitlist"})
    if panellist.addresses:
        context.setdefault("panel_name", bot.settings.bot.name)
        text = bot.messages.render(message, panellist.locale, **context)
        await outbox.queue(
            conn,
            key=f"waitlist:{message}:{panellist.id}",
            panellist_id=panellist.id,
            address=panellist.addresses[0],
            text=text,
            kind=MessageKind.BROADCAST,
            template=message,
            extra={"locale": panellist.locale},
        )
        await _invite_to_open_wave(bot, conn, panellist)
    return True


async def _invite_to_open_wave(bot: Any, conn: Conn, panellist: Panellist) -> None:
    """As for anyone who has just joined: the first open wave that takes new joiners."""
    from bot.engine.waves import begin_survey
    from bot.models import MessageKind, utcnow
    from bot.storage import outbox
    from bot.storage import surveys as survey_store

    for wave in await survey_store.waves(conn, status="open"):
        if not wave.include_new or wave.closes_at <= utcnow():
            continue
        if not await survey_store.add_invitation(conn, wave.id, panellist.id, "waiting"):
            continue
        if await survey_store.active_session(conn, panellist.id) is None:
            engine = bot.engine
            msg = await begin_survey(
                engine.renderer, engine.surveys, conn, panellist, wave.id, wave.survey_row_id
            )
            await outbox.queue(
                conn,
                key=f"wave:{wave.id}:invite:{panellist.id}",  # as the wave's own invitations
                panellist_id=panellist.id,
                address=panellist.addresses[0],
                text=msg.text,
                kind=MessageKind.INVITATION,
                template=msg.template,
                extra={**msg.extra, "locale": panellist.locale},
            )
        return
