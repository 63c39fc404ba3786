"""The dashboard's decision register and impact updates: ``/admin/decisions``.

- ``GET /admin/decisions``: every decision (title, status, the body that decided, the owner,
  linked surveys) with its updates (schedule, status, delivery: queued, sent, delivered,
  failed) and the impact-loop figure, all from :func:`plugins.impact_updates.report.register`
  (the data of ``panelbot impact report``); and, for admins, the form recording a decision.
- ``POST /admin/decisions``: record one, linked to surveys chosen from those that exist,
  through :func:`plugins.impact_updates.decisions.add_decision` (the validation of
  ``panelbot decision add``; it fires ``panelbot_decision_recorded``).
- ``GET /admin/decisions/{id}``: the decision, its update previewed in every locale with
  encoding, SMS segments and cost (:func:`plugins.impact_updates.audience.preview`, as
  ``panelbot impact preview``), the schedule form and a cancel form per waiting update.
- ``POST /admin/decisions/{id}/schedule``: :func:`plugins.impact_updates.updates.schedule`
  (now, at a date and time, or after a duration; audience; hold-out; follow-up; feedback).
- ``POST /admin/decisions/{id}/status``: a new status (proposed, decided, implemented)
  through :func:`plugins.impact_updates.decisions.change_decision`, as ``decision update
  --status`` (the hook fires, so ``auto_schedule`` applies).
- ``POST /admin/decisions/{id}/updates/{update_id}/cancel``: with the box ticked to confirm,
  :func:`plugins.impact_updates.updates.cancel`.

Every route is behind the staff login; every POST needs an admin and the CSRF token (the
dashboard's gate checks both before these run). A problem with what was sent is the page
again with the reason, status 400; every change is in the audit log with the staff
member's actor id (ids and counts only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse

from bot.plugin_api import (
    Route,
    bar_chart,
    current_staff,
    language_name,
    nav_link,
    read_form,
    record_audit,
    render_page,
)
from plugins.impact_updates import audience as audience_module
from plugins.impact_updates import decisions, report, updates

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from bot.plugin_api import Bot

TEMPLATES = Path(__file__).parent / "admin_templates"
PATH = "/admin/decisions"
WAITING = ("scheduled", "sending", "held")
# The command line's option names as the form's labels, for the shared error messages.
LABELS = {
    "--title": "Title",
    "--you-said": "You said",
    "--we-did": "We did",
    "--surveys": "Surveys",
    "--finding": "Finding",
    "--decided-on": "Decided on",
    "--by": "Decided by",
    "--owner": "Owner",
    "--status": "Status",
    "--link": "Link",
    "--at": "Date and time",
    "--after": "After",
    "--audience": "Audience",
    "--holdout": "Hold-out",
    "--follow-up": "Follow-up survey",
    "--locale": "Language",
}
_OPTION = re.compile(r"--[a-z][a-z-]*")
DECISION_FIELDS = (
    "title",
    "you_said",
    "we_did",
    "finding",
    "decided_on",
    "decided_by",
    "owner",
    "status",
    "link",
)
NOTICES = {
    "added": "Decision recorded.",
    "scheduled": "Update scheduled.",
    "cancelled": "Update cancelled, with its messages not yet sent.",
    "status": "Status changed.",
}


def form_error(exc: BaseException) -> str:
    """The one-line reason, naming the form's fields rather than the command's options."""
    # A KeyError's text is its argument's repr: take the argument, not a quote-stripped
    # text (which would also eat a quote that closes a quoted value at the end).
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return _OPTION.sub(lambda m: LABELS.get(m.group(0), m.group(0)), text)


def _bot(request: Request) -> Bot:
    return request.app.state.bot


async def survey_choices(bot: Bot) -> list[dict[str, str]]:
    """Every survey added (its text id and latest title), for the multi-select."""
    rows = await bot.db.fetchall(
        "SELECT survey_id, title FROM surveys s WHERE version = "
        "(SELECT max(version) FROM surveys WHERE survey_id = s.survey_id) ORDER BY survey_id"
    )
    return [{"id": r["survey_id"], "title": _title(r["title"], bot)} for r in rows]


def _title(stored: str, bot: Bot) -> str:
    """A survey's title in the panel's default language (stored as JSON per locale)."""
    try:
        found = json.loads(stored)
    except ValueError:
        return stored
    if isinstance(found, dict):
        default = bot.settings.bot.default_locale
        return str(found.get(default) or found.get("en") or next(iter(found.values()), ""))
    return str(found)


def audience_choices(bot: Bot) -> list[tuple[str, str]]:
    """(value, label) for the audience select: participants, panel, each FIELD=VALUE."""
    found = [
        ("participants", "Participants: who answered a linked survey"),
        ("panel", "The whole panel (everyone reachable)"),
    ]
    for field in bot.settings.panel.fields:
        for value in field.values:
            found.append((f"{field.name}={value}", f"{field.name} = {value}"))
    return found


async def _audit(bot: Bot, request: Request, action: str, detail: dict[str, Any]) -> None:
    async with bot.db.transaction() as tx:
        await record_audit(tx, action, detail, actor=current_staff(request).actor)


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


# -- the register ---------------------------------------------------------------------------


async def _register_page(
    request: Request,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    bot = _bot(request)
    found = await report.register(bot)
    for decision in found:
        for update in decision["updates"]:
            update["loop_line"] = report.loop_line(update["impact_loop"])
    return render_page(
        request,
        "decisions.html",
        templates=TEMPLATES,
        status_code=status_code,
        decisions=found,
        surveys=await survey_choices(bot),
        statuses=decisions.STATUSES,
        error=error,
        values=values or {"status": "decided", "surveys": []},
        notice=_notice(request),
    )


async def register_page(request: Request) -> Response:
    return await _register_page(request)


async def create_decision(request: Request) -> Response:
    bot = _bot(request)
    form = await read_form(request)
    values: dict[str, Any] = {k: str(form.get(k) or "") for k in DECISION_FIELDS}
    values["surveys"] = [str(s) for s in form.getlist("surveys")]
    if "," in "".join(values["surveys"]):
        return await _register_page(
            request, status_code=400, error="Surveys: choose from the list", values=values
        )
    try:
        decision = await decisions.add_decision(
            bot,
            title=values["title"],
            you_said=values["you_said"],
            we_did=values["we_did"],
            surveys=",".join(values["surveys"]) or None,
            decided_on=values["decided_on"] or None,
            decided_by=values["decided_by"] or None,
            owner=values["owner"] or None,
            status=values["status"],
            link=values["link"] or None,
            finding=values["finding"].strip() or None,
            created_by=current_staff(request).actor,
        )
    except (ValueError, LookupError) as exc:
        return await _register_page(request, status_code=400, error=form_error(exc), values=values)
    await _audit(
        bot,
        request,
        "decision.added",
        {"decision": decision["id"], "status": decision["status"], "surveys": decision["surveys"]},
    )
    return RedirectResponse(f"{PATH}/{decision['id']}?done=added", status_code=303)


# -- one decision ---------------------------------------------------------------------------


def loop_chart(update: dict[str, Any]) -> Any | None:
    """The impact-loop figure as bars: the next wave's response rate of those the update
    reached against the others (or treatment against hold-out), each with its counts; None
    until there is a figure."""
    loop = update["impact_loop"]
    if "difference" not in loop:
        return None
    groups = [loop["received"], loop["not_received"]]
    low, high = loop["ci95"]
    return bar_chart(
        f"Update {update['id']}: response to the next wave ({loop['design']})",
        [(g["label"], 100 * g["rate"]) for g in groups],
        unit="%",
        max_value=100,
        value_header="Response rate",
        notes=[f"{g['responded']} of {g['invited']} invited" for g in groups],
        desc=(
            f"{groups[0]['label']} {100 * groups[0]['rate']:.1f}%, {groups[1]['label']} "
            f"{100 * groups[1]['rate']:.1f}%: a difference of {100 * loop['difference']:+.1f} "
            f"points (95% interval {100 * low:+.1f} to {100 * high:+.1f})"
            + (", provisional while the wave is open" if loop.get("provisional") else "")
        ),
    )


async def _decision_or_404(bot: Bot, decision_id: int) -> dict[str, Any]:
    for decision in await report.register(bot):
        if decision["id"] == decision_id:
            return decision
    raise HTTPException(404, f"no decision {decision_id}")


async def _decision_page(
    request: Request,
    decision_id: int,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    bot = _bot(request)
    decision = await _decision_or_404(bot, decision_id)
    for update in decision["updates"]:
        update["loop_line"] = report.loop_line(update["impact_loop"])
        update["loop_chart"] = loop_chart(update)
        update["waiting"] = update["status"] in WAITING
    asked = request.query_params.get("audience") or None
    preview: dict[str, Any] | None = None
    preview_error: str | None = None
    try:
        preview = await audience_module.preview(bot, decision_id, audience=asked)
    except (ValueError, LookupError) as exc:
        preview_error = form_error(exc)
        if asked is not None and status_code == 200:
            status_code = 400
    if preview is not None:
        # Every language of the panel, also those nobody in this audience reads.
        shown = {entry["locale"] for entry in preview["locales"]}
        for locale in bot.locales:
            if locale not in shown:
                one = await audience_module.preview(bot, decision_id, locale=locale, audience=asked)
                preview["locales"].extend(one["locales"])
        for entry in preview["locales"]:
            entry["name"] = language_name(entry["locale"])
            entry["channel_list"] = ", ".join(
                f"{n} {ch}" for ch, n in sorted(entry["channels"].items())
            )
    defaults = {
        "when": "now",
        "at": "",
        "after": "",
        "audience": "participants" if decision["surveys"] else "panel",
        "holdout": "",
        "follow_up": "",
        "feedback": True,
    }
    return render_page(
        request,
        "decision.html",
        templates=TEMPLATES,
        status_code=status_code,
        decision=decision,
        preview=preview,
        preview_error=preview_error,
        asked_audience=asked,
        tellable=decision["status"] in decisions.TELLABLE,
        statuses=decisions.STATUSES,
        audiences=audience_choices(bot),
        surveys=await survey_choices(bot),
        values={**defaults, **(values or {})},
        error=error,
        notice=_notice(request),
    )


async def decision_page(request: Request) -> Response:
    return await _decision_page(request, request.path_params["decision_id"])


async def schedule_update(request: Request) -> Response:
    bot = _bot(request)
    decision_id: int = request.path_params["decision_id"]
    await _decision_or_404(bot, decision_id)
    form = await read_form(request)
    values: dict[str, Any] = {
        k: str(form.get(k) or "").strip()
        for k in ("when", "at", "after", "audience", "holdout", "follow_up")
    }
    values["feedback"] = form.get("feedback") in ("on", "1", "yes", "true")
    when = values["when"]
    at: str | None = None
    after: str | None = None
    problem = None
    if when == "now" and (values["at"] or values["after"]):
        # A time typed but "Now" left chosen: ask, rather than send at once by mistake.
        problem = (
            'When: "Now" is chosen but a date and time or a wait is filled in; '
            "choose which, or clear it"
        )
    elif when == "now":
        at = "now"
    elif when == "at":
        at = values["at"]
        if not at:
            problem = "Date and time: give the date and time to send it"
        elif at.lower() == "now":
            problem = 'Date and time: give a date and time, or choose "Now"'
    elif when == "after":
        after = values["after"]
        if not after:
            problem = "After: give how long to wait, e.g. 2d or 6h"
    else:
        problem = "When: choose now, at a date and time, or after a while"
    if problem is None:
        try:
            update, replaced = await updates.schedule(
                bot,
                decision_id,
                at=at,
                after=after,
                audience=values["audience"] or "participants",
                holdout=values["holdout"] or None,
                follow_up=values["follow_up"] or None,
                feedback=values["feedback"],
            )
        except (ValueError, LookupError) as exc:
            problem = form_error(exc)
    if problem is not None:
        return await _decision_page(
            request, decision_id, status_code=400, error=problem, values=values
        )
    await _audit(
        bot,
        request,
        "impact.scheduled",
        {
            "decision": decision_id,
            "update": update["id"],
            "due_at": update["due_at"],
            "audience": updates.Audience(
                update["audience"], update["audience_field"], update["audience_value"]
            ).describe(),
            "holdout": update["holdout_share"],
            "replaces": replaced,
        },
    )
    query = urlencode({"done": "scheduled"})
    return RedirectResponse(f"{PATH}/{decision_id}?{query}#updates", status_code=303)


async def cancel_update(request: Request) -> Response:
    bot = _bot(request)
    decision_id: int = request.path_params["decision_id"]
    update_id: int = request.path_params["update_id"]
    decision = await _decision_or_404(bot, decision_id)
    if update_id not in [u["id"] for u in decision["updates"]]:
        raise HTTPException(404, f"decision {decision_id} has no update {update_id}")
    form = await read_form(request)
    if form.get("confirm") != "yes":
        return await _decision_page(
            request,
            decision_id,
            status_code=400,
            error=f"Tick the box to confirm cancelling update {update_id}",
        )
    try:
        _, cancelled = await updates.cancel(bot, update_id)
    except (ValueError, LookupError) as exc:
        return await _decision_page(request, decision_id, status_code=400, error=form_error(exc))
    await _audit(
        bot,
        request,
        "impact.cancelled",
        {"decision": decision_id, "update": update_id, "messages_cancelled": cancelled},
    )
    return RedirectResponse(f"{PATH}/{decision_id}?done=cancelled#updates", status_code=303)


async def change_status(request: Request) -> Response:
    """A new status through :func:`decisions.change_decision` (fires the hook on a change)."""
    bot = _bot(request)
    decision_id: int = request.path_params["decision_id"]
    before = await _decision_or_404(bot, decision_id)
    form = await read_form(request)
    status = str(form.get("status") or "")
    if status == before["status"]:
        return await _decision_page(
            request,
            decision_id,
            status_code=400,
            error=f"Status: decision {decision_id} is already {status}",
        )
    try:
        decision, _ = await decisions.change_decision(
            bot, decision_id, {"status": status}, surveys=None, finding=None
        )
    except (ValueError, LookupError) as exc:
        return await _decision_page(request, decision_id, status_code=400, error=form_error(exc))
    await _audit(
        bot,
        request,
        "decision.status",
        {"decision": decision_id, "from": before["status"], "to": decision["status"]},
    )
    return RedirectResponse(f"{PATH}/{decision_id}?done=status", status_code=303)


def routes(bot: Bot) -> list[Any]:
    """The pages and their POSTs (behind the staff login; POSTs admins only, with CSRF)."""
    return [
        nav_link(Route(PATH, register_page, methods=["GET"]), "Decisions"),
        Route(PATH, create_decision, methods=["POST"]),
        Route(PATH + "/{decision_id:int}", decision_page, methods=["GET"]),
        Route(PATH + "/{decision_id:int}/schedule", schedule_update, methods=["POST"]),
        Route(PATH + "/{decision_id:int}/status", change_status, methods=["POST"]),
        Route(
            PATH + "/{decision_id:int}/updates/{update_id:int}/cancel",
            cancel_update,
            methods=["POST"],
        ),
    ]
