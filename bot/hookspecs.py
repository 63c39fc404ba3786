"""Every plugin hook panelbot calls, typed and documented (``docs/plugins.md`` has examples).

A plugin is a module (or object) whose functions carry ``@hookimpl`` and are named after
a hook below; it may take fewer arguments than the hook offers. pluggy itself is
synchronous: any implementation may be ``async def`` and the core awaits what it returns,
except where a hook says it is sync-only. No hook is ``firstresult``: "first non-None
wins" is done by ``bot.plugins.PanelPlugins.call_first`` after awaiting, because a
coroutine object is never None. An exception in one plugin is logged and skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click
    from starlette.routing import BaseRoute

    from bot.app import Bot
    from bot.config import Settings
    from bot.models import (
        OutboundMessage,
        Panellist,
        SendError,
        SendResult,
        SignupDecision,
    )
    from bot.storage.tx import Tx

__all__ = [
    "hookimpl",
    "hookspec",
    "panelbot_after_send",
    "panelbot_before_send",
    "panelbot_check_config",
    "panelbot_decision_recorded",
    "panelbot_handle_reply",
    "panelbot_locales",
    "panelbot_message_dirs",
    "panelbot_migrations",
    "panelbot_population_targets",
    "panelbot_register_commands",
    "panelbot_register_jobs",
    "panelbot_register_routes",
    "panelbot_resolve_locale",
    "panelbot_results_weights",
    "panelbot_screen_signup",
    "panelbot_select_sample",
    "panelbot_shutdown",
    "panelbot_startup",
    "panelbot_survey_completed",
    "panelbot_survey_decisions",
]

PROJECT_NAME = "panelbot"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# Survey and wave objects come from ``bot.surveys``; they are typed ``Any`` here until that
# package settles, so that this module never imports half-written code.


@hookspec
def panelbot_startup(bot: Bot) -> None:
    """The bot has started: storage open, scheduler running. May be async.

    :param bot: the running bot; use it for ``bot.settings``, storage and ``bot.scheduler``.
    """


@hookspec
def panelbot_shutdown(bot: Bot) -> None:
    """The bot is stopping: close what ``panelbot_startup`` opened. May be async.

    :param bot: the bot being stopped; storage is still open while this runs.
    """


@hookspec
def panelbot_register_commands(cli: click.Group) -> None:
    """Add a click group or command to the ``panelbot`` command line. Sync only.

    A plugin may not replace a core command: a clash is logged and the core one is kept.

    :param cli: the root ``panelbot`` click group; call ``cli.add_command(...)``.
    """


@hookspec
def panelbot_register_routes(bot: Bot) -> list[BaseRoute] | None:
    """Return Starlette routes (dashboard pages, APIs) to mount in the web app. May be async.

    :param bot: the bot the web app serves.
    :return: a list of ``starlette.routing.BaseRoute``, or None to add nothing.
    """


@hookspec
def panelbot_register_jobs(bot: Bot) -> None:
    """Add the scheduled jobs this plugin owns with ``bot.scheduler.add_job(...)``. May be async.

    Use a stable ``id=`` and ``replace_existing=True`` so a restart does not duplicate jobs.

    :param bot: the bot; ``bot.scheduler`` is its APScheduler 3 ``AsyncIOScheduler``.
    """


@hookspec
def panelbot_locales(bot: Bot | None, settings: Settings) -> list[str] | None:
    """The languages the panel may speak, out of ``settings.bot.locales``. **Sync only.**

    Called once while the bot is built (``bot`` is None then: the bot does not exist yet).
    Without any plugin answering, the core speaks only ``bot.default_locale``; the
    translations plugin answers with the configured locales that have a catalog. The first
    non-empty answer wins; the default locale always comes first.

    :param bot: None (reserved; the bot is being built).
    :param settings: the loaded settings.
    """


@hookspec
def panelbot_message_dirs(bot: Bot) -> list[Path] | None:
    """Return extra Jinja2 template folders, searched before the core's ``messages/``. Sync only.

    Each folder holds one sub-folder per locale, e.g. ``<dir>/en/welcome.txt.j2``.

    :param bot: the bot whose message renderer is being built.
    :return: a list of folders, or None to add nothing.
    """


@hookspec
def panelbot_resolve_locale(bot: Bot, panellist: Panellist | None, text: str, tx: Tx) -> str | None:
    """Guess the language of a first message from an unknown address. May be async.

    The guess sets the language of the welcome (and of the language menu, which the person
    still answers). Only locales the panel speaks are used; first non-None wins. Runs inside
    the message's write transaction, which it is given: read and write through ``tx``,
    never open another transaction (that fails at once).

    :param bot: the running bot.
    :param panellist: None: the sender is not yet on the panel (reserved for later use).
    :param text: the text of the first message.
    :param tx: the engine's open write transaction for this message.
    :return: a locale code such as ``"cy"``, or None for no opinion.
    """


@hookspec
def panelbot_screen_signup(bot: Bot, panellist: Panellist, tx: Tx) -> SignupDecision | None:
    """Accept, waitlist or decline a person who has just completed sign-up. May be async.

    The most restrictive answer wins (decline over waitlist over accept); when every
    plugin answers None the person is accepted.

    Runs inside the engine's write transaction for the message that completed sign-up,
    which it receives as ``tx``: read and write through ``tx`` (``await
    tx.execute_fetchall(sql, params)``, ``await tx.execute(sql, params)``) and what you
    write is committed together with the sign-up, or not at all; what you read includes
    every other sign-up committed before it, so counting and reserving a place cannot
    overshoot. Never open ``bot.db.transaction()`` here: it raises
    ``NestedTransactionError`` at once (logged; this plugin's answer is then ignored).

    :param bot: the running bot.
    :param panellist: the new panellist with consent and demographics filled in.
    :param tx: the engine's open write transaction (a ``Conn``).
    :return: a ``SignupDecision``, or None for no opinion.
    """


@hookspec
def panelbot_migrations() -> str | Path | None:
    """A folder of this plugin's numbered SQL migrations, for its own tables. Sync only.

    Files named ``0001_create_reservations.sql``, ``0002_...``, numbered from 1 without
    gaps, each applied once in its own transaction by ``panelbot db upgrade`` and when
    the bot starts, after the core's; the version reached is kept per plugin (by the
    plugin's name) in the table ``plugin_schema``. A database whose version for the
    plugin is newer than the plugin's own migrations is refused (exit 1, one line).

    :return: the folder (a path, or an ``importlib.resources`` folder), or None.
    """


@hookspec
def panelbot_select_sample(
    bot: Bot,
    survey: Any,
    wave: Any,
    eligible: list[Panellist],
    size: int | None,
    stratify_by: list[str] | None,
) -> list[int] | dict[str, Any] | None:
    """Choose who is invited to a survey wave; first non-None wins. May be async.

    When every plugin answers None the core draws a simple random sample of ``size``;
    a wave launched with ``--stratify-by`` is refused then (no plugin can stratify it): it is
    closed with nobody invited.

    Instead of the bare list a plugin may answer ``{"ids": [...], "report": {...}}``: the
    report (JSON: ids and counts only, no personal data) is kept in the audit log
    (``wave.sample``) and ``survey launch`` prints it: ``"cells"``, a list of
    ``{"cell", "population_share", "eligible", "expected_rate", "invited"}``, and
    ``"notes"``, a list of sentences. ``{"refused": "why"}`` refuses the wave: it is closed
    with nobody invited and ``survey launch`` shows the reason.

    :param bot: the running bot.
    :param survey: the survey definition being launched.
    :param wave: the wave being opened (its ``id``, ``sample_size``, ``include_new``,
        ``opens_at``, ``closes_at``).
    :param eligible: active, reachable panellists who may be invited.
    :param size: how many to invite, or None to invite everyone eligible.
    :param stratify_by: the panel fields given to ``survey launch --stratify-by``, or None.
    :return: the ids of the panellists to invite (a subset of ``eligible``), the ids
        with a report, or None.
    """


@hookspec
def panelbot_before_send(bot: Bot, message: OutboundMessage) -> OutboundMessage | None:
    """Change a message just before a channel sends it, e.g. rewrite its text. May be async.

    Implementations run in turn; each sees the message as changed by those before it.

    :param bot: the running bot.
    :param message: the outbox row about to be handed to its channel.
    :return: the message to send instead, or None to leave it as it is.
    """


@hookspec
def panelbot_after_send(bot: Bot, message: OutboundMessage, report: SendResult | SendError) -> None:
    """A channel has tried to send a message; observe the outcome. May be async.

    :param bot: the running bot.
    :param message: the message as it was sent.
    :param report: the ``SendResult`` on success, or the ``SendError`` (with its
        ``error_class``) on failure.
    """


@hookspec
def panelbot_survey_completed(
    bot: Bot, panellist: Panellist, survey: Any, answers: dict[str, Any]
) -> None:
    """A panellist has answered the last question of a survey. May be async.

    :param bot: the running bot.
    :param panellist: who completed the survey.
    :param survey: the survey definition.
    :param answers: answers keyed by question id (skipped questions are absent).
    """


@hookspec
def panelbot_results_weights(
    bot: Bot, survey: Any, respondents: list[dict[str, Any]]
) -> dict[int, float] | None:
    """Weight respondents for weighted results; first non-None wins. May be async.

    :param bot: the running bot.
    :param survey: the survey whose results are being computed.
    :param respondents: one dict per respondent,
        ``{"panellist_id": 12, "demographics": {"age_band": "75+", ...}}``.
    :return: a weight per panellist id (missing ids weigh 1.0), or None for no opinion; the
        dict may carry a ``diagnostics`` attribute (a JSON-ready dict) that results show.
    """


@hookspec
def panelbot_check_config(settings: Settings) -> list[tuple[str, str]] | None:
    """Check this plugin's part of the configuration. **Sync only.**

    Called by ``panelbot config check`` and when the bot starts (a problem stops it, as a
    core config problem does).

    :param settings: the loaded settings; the plugin's own table is
        ``settings.plugins.for_plugin(name)``.
    :return: problems as ``(key, message)`` pairs, the key dotted from the file's root (e.g.
        ``("plugins.quotas.population.age_band", "shares sum to 0.97, not 1")``), or None.
    """


@hookspec
def panelbot_population_targets(settings: Settings) -> dict[str, dict[str, float]] | None:
    """The population's share of each value of each panel field; first non-None wins. Sync only.

    Used by results (representativeness), the per-wave report and the dashboard.

    :param settings: the loaded settings.
    :return: ``{"age_band": {"16-24": 0.13, ...}, ...}`` (each field's shares sum to 1), or None.
    """


@hookspec
def panelbot_decision_recorded(bot: Bot, decision: dict[str, Any]) -> None:
    """A decision was added to the register, or its status changed. May be async.

    :param bot: the running bot.
    :param decision: the decision as stored: ``id``, ``title``, ``you_said``, ``we_did``,
        ``surveys`` (ids), ``decided_on``, ``decided_by``, ``owner``, ``status``, ``link``,
        ``finding`` (the quoted finding's sentence, or None) and ``change`` (``"added"`` or
        ``"status"``).
    """


@hookspec
def panelbot_survey_decisions(bot: Bot, survey_id: str) -> list[dict[str, Any]] | None:
    """The decisions that cite a survey, for its board summary. May be async.

    Every plugin's list is shown (the impact_updates plugin answers from its register).

    :param bot: the running bot.
    :param survey_id: the survey's id (every version).
    :return: a list of dicts with ``title`` and, when known, ``id``, ``status``,
        ``decided_by``, ``decided_on`` and ``we_did``; or None.
    """


@hookspec
def panelbot_handle_reply(bot: Bot, panellist: Panellist, text: str, tx: Tx) -> str | None:
    """Answer a message sent outside any survey; first non-None wins. May be async.

    Called by the engine when an active panellist sends a text that is not a keyword
    while no survey session waits for an answer, before the core's "no survey open"
    reply. The answer returned is sent as the reply instead (in the panellist's channel);
    when every plugin answers None the core replies as usual. Runs inside the message's
    write transaction, which it is given: read and write through ``tx`` (each plugin under
    a savepoint, so one that raises leaves nothing it wrote); never open another
    transaction (that fails at once).

    :param bot: the running bot.
    :param panellist: the sender, an active panellist.
    :param text: the message as received, trimmed (never empty).
    :param tx: the engine's open write transaction for this message.
    :return: the reply text, or None for no opinion.
    """
