"""The one module plugins import: everything a panelbot plugin may rely on.

``plugins/**`` (the built-in plugins) import ``bot`` only through this module, and a third
party's plugin should do the same: what is here is kept stable, what is elsewhere in ``bot``
may move. ``make lint`` (import-linter) enforces it for the built-in plugins.

- **Hooks**: :data:`hookimpl` marks a hook implementation; the hooks themselves are specified
  in ``bot/hookspecs.py`` and described in ``docs/plugins.md``.
- **What hooks receive**: :class:`Bot` (the part of the running bot a plugin may use),
  :class:`Settings`, :class:`Panellist`, :class:`InboundMessage`, :class:`OutboundMessage`,
  :class:`DeliveryReport`, :class:`SendResult`, :class:`SendError`, :class:`Address`,
  :class:`SignupDecision` and the enums they use.
- **The transaction** (:class:`Transaction`) a hook called inside the engine's write
  transaction is handed as ``tx``; :class:`Conn` and :class:`ReadConn` type what a plugin's
  own storage functions accept; opening a transaction inside another raises
  :class:`NestedTransactionError` at once; :class:`Database` is ``bot.db``.
- **Messages**: :func:`render_message` renders a named message in a locale (with the panel's
  fallback chain); :class:`MessageCatalog` and the catalog helpers are for translation tools.
- **SMS**: :func:`sms_info` measures a text (encoding, segments, cost), :func:`sanitise`
  swaps typographic punctuation for GSM-7.
- **The panel**: :func:`active_panellists` (who may be invited), :func:`queue_message`
  (one message into the outbox, once per idempotency key), :func:`record_audit` (a line in
  the audit log), for plugins that choose people and write to them outside a hook's ``tx``.
- **Groups and the waiting list**: :func:`panel_counts` (active and waitlisted people per
  value of a panel field), :func:`waitlisted_panellists` (longest waiting first) and
  :func:`admit_from_waitlist` (onto the panel, with a message), e.g. for quotas.
- **Broadcasts**: :func:`broadcast_audience` (who may be reached, resolved in SQL),
  :func:`queue_broadcast` (many :class:`BroadcastMessage` at once, once per key),
  :func:`broadcast_status_counts`, :func:`broadcast_texts`, :func:`broadcast_outbox_ids`
  and :func:`cancel_broadcast` (by the shared prefix of their keys),
  :func:`survey_participants_count`; :func:`parse_duration` reads ``"2d"``, ``"6h"``
  (:func:`format_duration` writes them).
- **Surveys**: :func:`known_surveys` (which ids exist), :func:`survey_results` (unweighted),
  :func:`survey_option_texts` (an option's words per language).
- **Decisions**: :func:`decision_recorded` fires ``panelbot_decision_recorded``.
- **Command line**: :class:`CliContext`, :func:`pass_cli`, :class:`UserError` and
  :func:`with_bot` for the commands added in ``panelbot_register_commands``;
  :func:`format_option` is their ``--format`` option; :func:`print_table` /
  :func:`table_lines` lay rows out in plain-text columns.
- **CSV exports**: :func:`safe_row` / :func:`safe_cell` put a ``'`` before a text cell a
  spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``...).
- **Dashboard charts**: :func:`bar_chart` and :func:`grouped_bar_chart` draw an SVG chart
  with its figures as a table beside it (a ``Markup`` a page template puts in as it is).
- **Routes and jobs**: :class:`Route`, :class:`Mount` and :class:`BaseRoute` for
  ``panelbot_register_routes``; ``bot.scheduler.add_job(...)`` (:class:`JobScheduler`) in
  ``panelbot_register_jobs``.
- **Dashboard pages**: every plugin route is behind the staff login unless
  :func:`public_route` marks it; :func:`current_staff` (a :class:`StaffMember`) and
  :func:`require_admin` say who is signed in, :func:`render_page` renders a plugin's template
  inside the dashboard's layout, :func:`nav_link` adds a menu entry, :func:`read_form`,
  :func:`csrf_field` and :func:`check_csrf` are for forms.
- **History**: :func:`invitation_history` (every invitation sent, with the outcome and the
  person's demographics: :class:`InvitationRecord`), e.g. for response rates and fatigue.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot import __version__ as PANELBOT_VERSION
from bot.cli import (
    CliContext,
    UserError,
    format_option,
    pass_cli,
    print_table,
    table_lines,
    with_bot,
)
from bot.config import Settings
from bot.config_schema import format_duration, parse_duration
from bot.csv_cells import safe_cell, safe_row
from bot.engine.render import language_name
from bot.hookspecs import hookimpl
from bot.messages import (
    TEMPLATE_SUFFIX,
    WORDS_FILE,
    MessageCatalog,
    MissingMessage,
    UnsafeTemplate,
    fallback_chain,
    template_names,
)
from bot.models import (
    Address,
    DeliveryReport,
    ErrorClass,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Panellist,
    PanellistStatus,
    SendError,
    SendResult,
    SignupDecision,
    local_time,
)
from bot.resources import messages_dir
from bot.sms import SmsInfo, encode_info, sanitise
from bot.waitlist import admit_from_waitlist, panel_counts, waitlisted_panellists

if TYPE_CHECKING:
    from starlette.routing import BaseRoute, Mount, Route

    from bot.engine.waves import MAX_STRATIFY_CELLS
    from bot.staff import StaffMember
    from bot.storage import Database
    from bot.storage.broadcasts import AudienceMember, BroadcastMessage
    from bot.storage.conn import Conn, ReadConn
    from bot.storage.db import NestedTransactionError
    from bot.storage.tx import Tx as Transaction
    from bot.storage.wave_stats import InvitationRecord
    from bot.web.admin.auth import check_csrf, current_staff, read_form, require_admin
    from bot.web.admin.templating import csrf_field_for as csrf_field
    from bot.web.admin.templating import render_page
    from bot.web.charts import bar_chart, grouped_bar_chart

# Imported when first used, so that the command line (which loads every plugin) does not
# pay for the web framework and the database driver: ``from bot.plugin_api import Route``.
_LAZY = {
    "BaseRoute": ("starlette.routing", "BaseRoute"),
    "Mount": ("starlette.routing", "Mount"),
    "Route": ("starlette.routing", "Route"),
    "Database": ("bot.storage", "Database"),
    "MAX_STRATIFY_CELLS": ("bot.engine.waves", "MAX_STRATIFY_CELLS"),
    "AudienceMember": ("bot.storage.broadcasts", "AudienceMember"),
    "BroadcastMessage": ("bot.storage.broadcasts", "BroadcastMessage"),
    "Transaction": ("bot.storage.tx", "Tx"),
    "Conn": ("bot.storage.conn", "Conn"),
    "ReadConn": ("bot.storage.conn", "ReadConn"),
    "NestedTransactionError": ("bot.storage.db", "NestedTransactionError"),
    "InvitationRecord": ("bot.storage.wave_stats", "InvitationRecord"),
    # Dashboard pages (see "Dashboard pages" in docs/plugins.md).
    "StaffMember": ("bot.staff", "StaffMember"),
    "current_staff": ("bot.web.admin.auth", "current_staff"),
    "require_admin": ("bot.web.admin.auth", "require_admin"),
    "check_csrf": ("bot.web.admin.auth", "check_csrf"),
    "read_form": ("bot.web.admin.auth", "read_form"),
    "csrf_field": ("bot.web.admin.templating", "csrf_field_for"),
    "render_page": ("bot.web.admin.templating", "render_page"),
    # Server-drawn SVG charts with their table (bot/web/charts.py), for dashboard pages.
    "bar_chart": ("bot.web.charts", "bar_chart"),
    "grouped_bar_chart": ("bot.web.charts", "grouped_bar_chart"),
}

__all__ = [
    "MAX_STRATIFY_CELLS",
    "PANELBOT_VERSION",
    "TEMPLATE_SUFFIX",
    "WORDS_FILE",
    "Address",
    "AudienceMember",
    "BaseRoute",
    "Bot",
    "BroadcastMessage",
    "CliContext",
    "Conn",
    "Database",
    "DeliveryReport",
    "ErrorClass",
    "InboundMessage",
    "InvitationRecord",
    "JobScheduler",
    "MessageCatalog",
    "MessageKind",
    "MissingMessage",
    "Mount",
    "NestedTransactionError",
    "OutboundMessage",
    "Panellist",
    "PanellistStatus",
    "ReadConn",
    "Route",
    "SendError",
    "SendResult",
    "Settings",
    "SignupDecision",
    "SmsInfo",
    "StaffMember",
    "Transaction",
    "UnsafeTemplate",
    "UserError",
    "active_panellists",
    "admit_from_waitlist",
    "bar_chart",
    "broadcast_audience",
    "broadcast_outbox_ids",
    "broadcast_status_counts",
    "broadcast_texts",
    "cancel_broadcast",
    "check_csrf",
    "core_messages_dir",
    "csrf_field",
    "current_staff",
    "decision_recorded",
    "fallback_chain",
    "format_duration",
    "format_option",
    "grouped_bar_chart",
    "hookimpl",
    "invitation_history",
    "known_surveys",
    "language_name",
    "local_time",
    "nav_link",
    "open_wave_for",
    "panel_counts",
    "parse_duration",
    "pass_cli",
    "print_table",
    "public_route",
    "queue_broadcast",
    "queue_message",
    "read_form",
    "record_audit",
    "render_message",
    "render_page",
    "require_admin",
    "safe_cell",
    "safe_row",
    "sanitise",
    "sms_info",
    "survey_option_texts",
    "survey_participants_count",
    "survey_results",
    "table_lines",
    "template_names",
    "waitlisted_panellists",
    "with_bot",
]


@runtime_checkable
class JobScheduler(Protocol):
    """``bot.scheduler``: where ``panelbot_register_jobs`` adds the jobs a plugin owns."""

    def add_job(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """APScheduler 3's ``AsyncIOScheduler.add_job``; give a stable ``id=`` and
        ``replace_existing=True`` so that a restart does not add the job twice."""
        ...


@runtime_checkable
class Bot(Protocol):
    """The running bot as a plugin sees it: what hooks may use, and nothing more.

    Hooks are handed panelbot's real bot object; this protocol names the part of it that is
    public to plugins (``tests/test_plugin_api.py`` checks a real bot has every member).
    """

    #: The loaded configuration; a plugin's own table is ``settings.plugins.for_plugin(name)``.
    settings: Settings
    #: The database: ``await bot.db.fetchall(sql, params)`` reads committed rows;
    #: ``async with bot.db.transaction() as tx`` writes (never inside a hook handed ``tx``).
    db: Database
    #: Messages in every locale; :func:`render_message` is the short way to use it.
    messages: MessageCatalog
    #: The locales the panel speaks, the default first.
    locales: list[str]
    #: Runtime state plugins keep, one key per plugin (``bot.state.setdefault("mine", {})``).
    state: dict[str, Any]
    #: Where plugins add their scheduled jobs (``panelbot_register_jobs``).
    scheduler: JobScheduler


def render_message(bot: Bot, name: str, locale: str, **context: Any) -> str:
    """Message ``name`` (``messages/<locale>/<name>.txt.j2``) rendered in ``locale``.

    Falls back along the panel's chain (``pa-Arab`` -> ``pa`` -> default -> ``en``) when the
    locale has no such message; raises :class:`MissingMessage` when none has.
    """
    return bot.messages.render(name, locale, **context)


def sms_info(text: str) -> SmsInfo:
    """Encoding (GSM-7 or UCS-2), units, segments and cap status of ``text`` as one SMS.

    ``sms_info(text).cost(price_per_segment)`` is what sending it once costs.
    """
    return encode_info(text)


def public_route(route: Any) -> Any:
    """Mark a route from ``panelbot_register_routes`` as public: no staff login in front of it.

    Every other route a plugin adds is behind the dashboard's login (GET without a session
    is sent to the login page; a POST needs an admin and the session's CSRF token).
    """
    route.panelbot_public = True
    return route


def nav_link(route: Any, label: str) -> Any:
    """Give a plugin's dashboard page (a GET route) an entry called ``label`` in the menu."""
    route.panelbot_nav = label
    return route


async def invitation_history(
    bot: Bot, *, exclude_wave: int | None = None
) -> list[InvitationRecord]:
    """Every survey invitation that was sent, oldest wave first, with whether it was completed,
    whether its wave has closed (the outcome is final) and the person's demographics now.

    ``exclude_wave`` leaves out one wave (e.g. the one being drawn). Reads committed rows.
    """
    from bot.storage.wave_stats import invitation_history as read

    return await read(bot.db.conn, exclude_wave=exclude_wave)


def core_messages_dir() -> Path:
    """The core's message catalogs (``messages/``, one folder per locale)."""
    return messages_dir()


async def active_panellists(bot: Bot) -> list[Panellist]:
    """Everyone who may be invited: active panellists with at least one address, by id.

    Reads committed rows (``bot.db``'s read connections, or the caller's open transaction).
    The panellists carry their ``demographics`` and ``addresses``: never log the addresses.
    """
    from bot.storage import panellists as panellist_store

    conn = bot.db.conn
    return await panellist_store.many(conn, await panellist_store.active_ids(conn))


async def queue_message(
    tx: Transaction,
    panellist: Panellist,
    *,
    key: str,
    text: str,
    kind: MessageKind = MessageKind.BROADCAST,
    template: str | None = None,
) -> bool:
    """Queue ``text`` for ``panellist`` (to their most recently used address) in ``tx``.

    ``key`` is the message's idempotency key, unique in the outbox (e.g.
    ``"selection:3:12"``): queueing the same key again does nothing and returns False, so a
    re-run never sends twice. The dispatcher sends it at the channel's rate; bulk kinds wait
    for the end of quiet hours. Returns False too when the panellist has no address.
    """
    from bot.storage import outbox as outbox_store

    if not panellist.addresses:
        return False
    queued = await outbox_store.queue(
        tx,
        key=key,
        panellist_id=panellist.id,
        address=panellist.addresses[0],
        text=text,
        kind=kind,
        template=template,
        extra={"locale": panellist.locale} if panellist.locale else None,
    )
    return queued is not None


async def record_audit(
    tx: Transaction,
    action: str,
    detail: dict[str, Any] | None = None,
    *,
    panellist_id: int | None = None,
    actor: str = "plugin",
) -> None:
    """Add a line to the audit log (who did what, to whom) in ``tx``.

    ``detail`` is stored as JSON: ids and counts, never names or phone numbers.
    """
    from bot.storage import audit

    await audit.record(tx, action, panellist_id, detail, actor=actor)


async def open_wave_for(
    bot: Bot,
    survey_id: str,
    invitees: Iterable[int],
    *,
    close_after: timedelta | None = None,
    linked: Callable[[Transaction, int], Awaitable[None]] | None = None,
) -> tuple[int, int]:
    """Open a wave of survey ``survey_id`` now for exactly the panellists ``invitees`` (ids).

    No sample is drawn and ``panelbot_select_sample`` is not asked; people no longer active
    and reachable are left out. The wave, its invitations and messages, and whatever
    ``linked(tx, wave_id)`` writes are one transaction (link the wave to your own rows
    there, so a crash never leaves one without the other). Never call it inside a hook
    handed ``tx``. Returns ``(wave id, how many were invited)``; an unknown survey raises
    ``ValueError`` with a one-line reason.
    """
    from bot.engine import waves

    try:
        return await waves.launch_to(
            bot,  # type: ignore[arg-type]
            survey_id,
            invitees,
            close_after=close_after,
            linked=linked,
        )
    except waves.WaveError as exc:
        raise ValueError(str(exc)) from exc


# -- Broadcasts: many messages at once (``bot/storage/broadcasts.py``) ----------------------


async def broadcast_audience(
    conn: ReadConn,
    *,
    survey_ids: Sequence[str] = (),
    only_participants: bool = False,
    field: str | None = None,
    value: str | None = None,
) -> list[AudienceMember]:
    """Who a broadcast may reach, resolved in SQL: active panellists with an address, by id.

    Never opted-out, erased, unreachable, pending or waitlisted people. ``survey_ids`` (the
    surveys' text ids, every version) marks who answered a question of one of them
    (``took_part``); ``only_participants`` keeps only those; ``field``/``value`` keeps those
    whose panel field has that value. Pass ``bot.db.conn``, or a transaction to read in it.
    """
    from bot.storage import broadcasts

    return await broadcasts.audience(
        conn,
        survey_ids=survey_ids,
        only_participants=only_participants,
        field=field,
        value=value,
    )


async def survey_participants_count(conn: ReadConn, survey_ids: Sequence[str]) -> int:
    """How many people on file answered at least one question of these surveys."""
    from bot.storage import broadcasts

    return await broadcasts.participants_count(conn, survey_ids)


async def queue_broadcast(
    tx: Transaction,
    messages: Iterable[BroadcastMessage],
    *,
    kind: MessageKind = MessageKind.BROADCAST,
    template: str | None = None,
) -> dict[str, int]:
    """Queue many messages in ``tx``, each to its panellist's latest address, once per key;
    returns the outbox id of each message queued now, by key.

    A key already in the outbox is skipped (so a re-run after a crash never sends twice), and
    so is a person who is no longer active. The dispatcher paces them per channel and holds
    bulk kinds through quiet hours.
    """
    from bot.storage import broadcasts

    return await broadcasts.queue_many(tx, messages, kind=kind, template=template)


async def broadcast_outbox_ids(conn: ReadConn, keys: Sequence[str]) -> dict[str, int]:
    """The outbox id of each idempotency key that has been queued."""
    from bot.storage import broadcasts

    return await broadcasts.queued_ids(conn, keys)


async def broadcast_status_counts(conn: ReadConn, key_prefix: str) -> dict[str, int]:
    """Outbox messages whose key starts with ``key_prefix`` (``"impact:7:"``) per status
    (``queued``, ``sending``, ``sent``, ``delivered``, ``failed``, ``held``, ``cancelled``)."""
    from bot.storage import broadcasts

    return await broadcasts.status_counts(conn, key_prefix)


async def broadcast_texts(conn: ReadConn, key_prefix: str) -> list[tuple[str, str, str]]:
    """``(channel, status, text)`` of each outbox message whose key starts with the prefix."""
    from bot.storage import broadcasts

    return await broadcasts.queued_texts(conn, key_prefix)


async def cancel_broadcast(tx: Transaction, key_prefix: str) -> int:
    """Cancel the messages under ``key_prefix`` not yet handed to a provider; how many."""
    from bot.storage import broadcasts

    return await broadcasts.cancel_queued(tx, key_prefix)


async def known_surveys(conn: ReadConn, survey_ids: Iterable[str]) -> set[str]:
    """Which of these survey ids (text ids, any version) have been added."""
    from bot.storage import broadcasts

    return await broadcasts.known_surveys(conn, list(survey_ids))


async def survey_option_texts(
    conn: ReadConn, survey_id: str, question_id: str
) -> dict[str, dict[str, str]]:
    """``{option id: {locale: text}}`` of a choice or multi question (latest version): an
    option's words in each language the survey speaks; empty when unknown."""
    from bot.storage import broadcasts

    return await broadcasts.option_texts(conn, survey_id, question_id)


async def survey_results(bot: Bot, survey_id: str) -> dict[str, Any]:
    """Unweighted results of a survey over every wave (``panelbot survey results --format
    json``'s shape: ``questions``, each with ``answered`` and, for choices, ``options`` with
    ``id``, ``text``, ``count``). Raises ``LookupError`` for an unknown survey."""
    from bot.results import ResultsError
    from bot.results import survey_results as results

    try:
        return await results(bot, survey_id)  # type: ignore[arg-type]
    except ResultsError as exc:
        raise LookupError(str(exc)) from None


async def decision_recorded(bot: Bot, decision: dict[str, Any]) -> None:
    """Fire ``panelbot_decision_recorded`` for every plugin (each awaited; one that raises is
    logged and skipped). For the plugin that keeps the decision register, after it commits."""
    await bot.plugins.call_each(  # type: ignore[attr-defined]
        "panelbot_decision_recorded", bot=bot, decision=decision
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
