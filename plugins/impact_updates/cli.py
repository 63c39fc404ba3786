"""``panelbot decision ...`` and ``panelbot impact ...``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from bot.plugin_api import (
    CliContext,
    UserError,
    broadcast_status_counts,
    format_option,
    pass_cli,
    print_table,
    with_bot,
)
from plugins.impact_updates import audience as audience_module
from plugins.impact_updates import decisions, updates

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bot.plugin_api import Bot

FORMAT = format_option("table", "json", help="Output format.")


def _run(cli_ctx: CliContext, work: Callable[[Bot], Awaitable[Any]]) -> Any:
    """Run ``work`` on the bot; a problem with what was asked is one line, exit 1."""

    async def guarded(bot: Bot) -> Any:
        try:
            return await work(bot)
        except (decisions.DecisionError, updates.UpdateError, LookupError) as exc:
            # A KeyError's text is its argument's repr: take the argument itself, never a
            # quote-stripped text (which also ate the quote closing a quoted value at the end).
            text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            raise UserError(text) from None

    return with_bot(cli_ctx, guarded)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _people(n: int) -> str:
    return "1 person" if n == 1 else f"{n} people"


def _short(text: str | None, width: int = 40) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


# -- decision ------------------------------------------------------------------------------


@click.group("decision")
def decision_group() -> None:
    """The decision register: what the panel said, what was done, by whom."""


def _show_decision(decision: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        _json(decision)
        return
    click.echo(f"decision {decision['id']}: {decision['title']} [{decision['status']}]")
    click.echo(f"  you said: {decision['you_said']}")
    if decision.get("finding"):
        click.echo(f"  finding:  {decision['finding']['quote']}")
    click.echo(f"  we did:   {decision['we_did']}")
    who = ", ".join(
        part
        for part in (
            f"by {decision['decided_by']}" if decision["decided_by"] else "",
            f"owner {decision['owner']}" if decision["owner"] else "",
            f"on {decision['decided_on']}" if decision["decided_on"] else "",
        )
        if part
    )
    if who:
        click.echo(f"  decided:  {who}")
    if decision["surveys"]:
        click.echo(f"  surveys:  {', '.join(decision['surveys'])}")
    if decision["link"]:
        click.echo(f"  link:     {decision['link']}")


_STATUS = click.Choice(list(decisions.STATUSES))


@decision_group.command("add")
@click.option("--title", required=True, help=f"Short title (at most {decisions.MAX_TITLE}).")
@click.option("--you-said", required=True, help="What the panel said.")
@click.option("--we-did", required=True, help="What was done because of it.")
@click.option("--surveys", metavar="ID,...", help="Surveys that informed it (comma-separated).")
@click.option(
    "--finding",
    metavar="QUESTION_ID[=OPTION]",
    help="Quote a share from a linked survey's results (the top option if none is named); "
    "stored with the decision as it stands now, with n.",
)
@click.option("--decided-on", metavar="DATE", help="When it was decided (YYYY-MM-DD).")
@click.option("--by", "decided_by", metavar="BODY", help="The board or committee that decided.")
@click.option("--owner", metavar="NAME", help="The senior person accountable for it.")
@click.option("--status", type=_STATUS, default="decided", show_default=True)
@click.option("--link", metavar="URL", help="Where to read more (http or https).")
@FORMAT
@pass_cli
def decision_add(cli_ctx: CliContext, fmt: str, **options: Any) -> None:
    """Record a decision; fires panelbot_decision_recorded.

    With [plugins.impact_updates] auto_schedule = true, a decided or implemented decision
    linked to a survey gets an impact update to that survey's participants after send_after.
    """

    async def work(bot: Bot) -> dict[str, Any]:
        return await decisions.add_decision(bot, **options)

    decision = _run(cli_ctx, work)
    _show_decision(decision, fmt)


@decision_group.command("list")
@FORMAT
@pass_cli
def decision_list(cli_ctx: CliContext, fmt: str) -> None:
    """Every decision in the register."""

    async def work(bot: Bot) -> list[dict[str, Any]]:
        return await decisions.all_decisions(bot.db.conn)

    found = _run(cli_ctx, work)
    if fmt == "json":
        _json(found)
        return
    if not found:
        click.echo("no decisions yet (panelbot decision add --help)")
        return
    print_table(
        ["id", "status", "decided_on", "by", "owner", "surveys", "title"],
        [
            [
                d["id"],
                d["status"],
                d["decided_on"],
                _short(d["decided_by"], 24),
                _short(d["owner"], 24),
                ",".join(d["surveys"]),
                _short(d["title"]),
            ]
            for d in found
        ],
    )


@decision_group.command("update")
@click.argument("decision_id", type=int)
@click.option("--status", type=_STATUS)
@click.option("--title")
@click.option("--you-said")
@click.option("--we-did")
@click.option("--surveys", metavar="ID,...", help="More surveys that informed it.")
@click.option("--finding", metavar="QUESTION_ID[=OPTION]", help="Quote a new finding.")
@click.option("--decided-on", metavar="DATE")
@click.option("--by", "decided_by", metavar="BODY")
@click.option("--owner", metavar="NAME")
@click.option("--link", metavar="URL")
@FORMAT
@pass_cli
def decision_update(
    cli_ctx: CliContext,
    decision_id: int,
    fmt: str,
    surveys: str | None,
    finding: str | None,
    **changes: Any,
) -> None:
    """Change a decision. A change of status fires panelbot_decision_recorded; with
    auto_schedule = true, moving to decided or implemented schedules its own update to the
    participants (unless another update of the decision is waiting)."""

    async def work(bot: Bot) -> tuple[dict[str, Any], bool]:
        return await decisions.change_decision(
            bot, decision_id, changes, surveys=surveys, finding=finding
        )

    decision, _ = _run(cli_ctx, work)
    _show_decision(decision, fmt)


# -- impact --------------------------------------------------------------------------------


@click.group("impact")
def impact_group() -> None:
    """Impact updates: "you said, we did" messages after decisions."""


def _audience_of(update: dict[str, Any]) -> str:
    return updates.Audience(
        update["audience"], update["audience_field"], update["audience_value"]
    ).describe()


def _describe_update(update: dict[str, Any]) -> str:
    who = _audience_of(update)
    return f"impact update {update['id']} (decision {update['decision_id']}) to {who}"


@impact_group.command("schedule")
@click.argument("decision_id", type=int)
@click.option("--at", metavar="now|ISO-TIME", help="When to send (local time without offset).")
@click.option("--after", metavar="DURATION", help="Send after this long, e.g. 2d or 6h.")
@click.option(
    "--audience",
    default="participants",
    show_default=True,
    metavar="participants|panel|FIELD=VALUE",
    help="participants: who answered a linked survey; panel: every reachable panellist.",
)
@click.option("--holdout", metavar="PERCENT", help="A random share (e.g. 10%) told later.")
@click.option("--follow-up", metavar="SURVEY_ID", help="A short survey about the change.")
@click.option(
    "--feedback/--no-feedback",
    default=True,
    show_default=True,
    help='End with "Was this useful? 1 Yes 2 No".',
)
@FORMAT
@pass_cli
def impact_schedule(
    cli_ctx: CliContext,
    decision_id: int,
    fmt: str,
    at: str | None,
    after: str | None,
    audience: str,
    holdout: str | None,
    follow_up: str | None,
    feedback: bool,
) -> None:
    """Schedule a decision's update. The running bot (panelbot serve) sends it when due,
    outside quiet hours and at each channel's rate; each person gets it once."""

    async def work(bot: Bot) -> tuple[dict[str, Any], list[int]]:
        return await updates.schedule(
            bot,
            decision_id,
            at=at,
            after=after,
            audience=audience,
            holdout=holdout,
            follow_up=follow_up,
            feedback=feedback,
        )

    update, replaced = _run(cli_ctx, work)
    if fmt == "json":
        _json({**update, "replaces": replaced})
        return
    click.echo(f"{_describe_update(update)} scheduled for {update['due_at'][:16]} UTC")
    for held_id in replaced:
        click.echo(f"held update {held_id} cancelled: replaced by this one")


@impact_group.command("preview")
@click.argument("decision_id", type=int)
@click.option("--locale", metavar="L", help="Show only this language.")
@click.option(
    "--audience",
    metavar="participants|panel|FIELD=VALUE",
    help="Default: the waiting update's audience, else participants.",
)
@FORMAT
@pass_cli
def impact_preview(
    cli_ctx: CliContext, decision_id: int, locale: str | None, audience: str | None, fmt: str
) -> None:
    """The update's text per language, its SMS encoding and segments, and its estimated
    cost across the audience (SMS per segment, WhatsApp per message, Telegram free)."""

    async def work(bot: Bot) -> dict[str, Any]:
        return await audience_module.preview(bot, decision_id, locale=locale, audience=audience)

    found = _run(cli_ctx, work)
    if fmt == "json":
        _json(found)
        return
    click.echo(
        f"decision {found['decision']} to {found['audience']}: {_people(found['people'])} "
        f"({found['participants']} answered its surveys)"
    )
    for entry in found["locales"]:
        channels = ", ".join(f"{n} {ch}" for ch, n in sorted(entry["channels"].items()))
        click.echo("")
        click.echo(
            f"[{entry['locale']}] {_people(entry['people'])} ({channels or 'none'}); "
            f"{entry['encoding']}, {entry['characters']} characters, "
            f"{entry['sms_segments_each']} SMS segment(s) each"
            + ("; OVER THE 6-SEGMENT CAP" if entry["over_cap"] else "")
        )
        click.echo(entry["text"])
    click.echo("")
    click.echo(
        f"estimated cost: £{found['estimated_cost']:.2f} ({found['sms_segments']} SMS segments "
        f"at £{found['sms_price_per_segment']}, WhatsApp at "
        f"£{found['whatsapp_price_per_message']} a message, Telegram free)"
    )
    for note in found["notes"]:
        click.echo(f"note: {note}")


DELIVERY = ("queued", "sent", "delivered", "failed")


async def _with_delivery(bot: Bot, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for update in found:
        counts = await broadcast_status_counts(bot.db.conn, updates.key_prefix(update["id"]))
        # Waiting to go (queued, held by quiet hours or a closed WhatsApp window, sending).
        waiting = counts.get("queued", 0) + counts.get("held", 0) + counts.get("sending", 0)
        update["delivery"] = {
            "queued": waiting,
            "sent": counts.get("sent", 0),
            "delivered": counts.get("delivered", 0),
            "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
        }
    return found


@impact_group.command("list")
@FORMAT
@pass_cli
def impact_list(cli_ctx: CliContext, fmt: str) -> None:
    """Every update: schedule, status and delivery (queued, sent, delivered, failed)."""

    async def work(bot: Bot) -> list[dict[str, Any]]:
        return await _with_delivery(bot, await updates.all_updates(bot.db.conn))

    found = _run(cli_ctx, work)
    if fmt == "json":
        _json(found)
        return
    if not found:
        click.echo("no impact updates yet (panelbot impact schedule --help)")
        return
    print_table(
        ["id", "decision", "due (UTC)", "status", "audience", "people", *DELIVERY, "note"],
        [
            [
                u["id"],
                u["decision_id"],
                u["due_at"][:16],
                u["status"],
                _audience_of(u),
                u["audience_size"] if u["audience_size"] is not None else "-",
                *(u["delivery"][k] for k in DELIVERY),
                u["held_reason"] or "",
            ]
            for u in found
        ],
    )


@impact_group.command("cancel")
@click.argument("update_id", type=int)
@pass_cli
def impact_cancel(cli_ctx: CliContext, update_id: int) -> None:
    """Cancel an update, and its messages not yet sent."""

    async def work(bot: Bot) -> tuple[dict[str, Any], int]:
        return await updates.cancel(bot, update_id)

    update, cancelled = _run(cli_ctx, work)
    click.echo(f"{_describe_update(update)} cancelled; {cancelled} queued message(s) cancelled")


@impact_group.command("release")
@click.argument("update_id", type=int)
@pass_cli
def impact_release(cli_ctx: CliContext, update_id: int) -> None:
    """Send a held update now (one that fell due while the bot was down, past
    misfire_grace)."""

    async def work(bot: Bot) -> dict[str, Any]:
        return await updates.release(bot, update_id)

    update = _run(cli_ctx, work)
    click.echo(f"{_describe_update(update)} released: due now")
