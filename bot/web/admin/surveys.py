"""``/admin/surveys``: every survey and wave, results as charts, free text, CSV, review links.

- ``GET /admin/surveys``: the surveys with their waves and counts.
- ``GET /admin/surveys/{id}``: per wave, invited / started / completed over time and the
  response rate by group (each panel field); results per question as charts, weighted or
  not (``?weighted=1``; when no plugin weights the panel the page says why), broken down by
  a panel field (``?by=FIELD``), with margins of error when weighted; free-text answers
  searched and paged in SQL (``?tq=QUESTION&q=TEXT&page=N``); the survey's review links
  and the comments reviewers left.
- ``GET /admin/surveys/{id}/results.csv``: the same CSV as ``survey results --format csv``.
- ``POST /admin/surveys/{id}/shares`` (admins): a new review link, shown once.
- ``POST /admin/surveys/{id}/shares/{link}/revoke`` (admins).
- The board summary of a wave lives in :mod:`bot.web.admin.survey_board`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot import wave_report
from bot.models import utcnow
from bot.results import ResultsError, survey_results
from bot.results import results_csv as results_as_csv
from bot.storage import shares as share_store
from bot.storage import survey_views
from bot.storage import surveys as survey_store
from bot.web import charts
from bot.web.admin import survey_board
from bot.web.admin.auth import current_staff, read_form, require_admin
from bot.web.admin.templating import render
from bot.web.review import make_share, revoke_share

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.storage.surveys import Wave

logger = logging.getLogger(__name__)

NAV = [("Surveys", "/admin/surveys")]
TEXT_PAGE = 20
MAX_SEARCH = 200
SHARE_DAYS = (1, 3, 7, 14, 30)
CHOICE_TYPES = ("choice", "multi", "yesno", "scale")


def _bot(request: Request) -> Bot:
    return request.app.state.bot


async def _stored(bot: Bot, survey_id: str) -> Any:
    if len(survey_id) > 200:
        raise HTTPException(404, "no such survey")
    stored = await survey_store.latest_version(bot.db.conn, survey_id)
    if stored is None:
        raise HTTPException(404, f"no survey {survey_id!r}")
    return stored


def _local(bot: Bot, when: datetime) -> datetime:
    return when.astimezone(ZoneInfo(bot.settings.bot.timezone))


# --- a wave's progress -------------------------------------------------------------------


def progress_series(
    events: survey_views.WaveEvents, start: datetime, end: datetime, tz: ZoneInfo
) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """Running totals of invited, started and completed at the end of each day (or each
    hour when the span is two days or less), from ``start`` to ``end``."""
    times = [*events.invited, *events.started, *events.completed]
    if times:
        start = min(start, *times)
        end = max(end, *times)
    if end <= start:
        end = start + timedelta(hours=1)
    step = timedelta(hours=1) if end - start <= timedelta(days=2) else timedelta(days=1)
    local = start.astimezone(tz)
    if step == timedelta(days=1):
        edge = local.replace(hour=0, minute=0, second=0, microsecond=0) + step
        fmt = "%d %b"
    else:
        edge = local.replace(minute=0, second=0, microsecond=0) + step
        fmt = "%d %b %H:00"
    edges: list[datetime] = []
    while True:
        edges.append(edge)
        if edge >= end or len(edges) >= 120:
            break
        edge = (edge.astimezone(UTC) + step).astimezone(tz)

    def running(points: list[datetime]) -> list[float | None]:
        counts: list[float | None] = []
        i = 0
        for e in edges:
            while i < len(points) and points[i] < e:
                i += 1
            counts.append(float(i))
        return counts

    labels = [(e - timedelta(seconds=1)).strftime(fmt) for e in edges]
    return labels, [
        ("Invited", running(events.invited)),
        ("Started", running(events.started)),
        ("Completed", running(events.completed)),
    ]


async def _wave_view(bot: Bot, wave: Wave, targets: dict[str, Any] | None) -> dict[str, Any]:
    tz = ZoneInfo(bot.settings.bot.timezone)
    events = await survey_views.wave_events(bot.db.conn, wave.id)
    end = min(utcnow(), wave.closes_at) if wave.status != "scheduled" else wave.opens_at
    labels, series = progress_series(events, wave.opens_at, end, tz)
    invited, completed = len(events.invited), len(events.completed)
    view: dict[str, Any] = {
        "id": wave.id,
        "status": wave.status,
        "opens_at": _local(bot, wave.opens_at),
        "closes_at": _local(bot, wave.closes_at),
        "invited": invited,
        "started": len(events.started),
        "completed": completed,
        "rate": round(100.0 * completed / invited, 1) if invited else 0.0,
        "progress": charts.line_chart(
            f"Wave {wave.id}: invited, started and completed over time", labels, series
        ),
        "groups": [],
        "cost": None,
    }
    report = await wave_report.wave_report(bot, wave, targets or {})
    view["cost"] = report.get("cost")
    for field_name, rows in (report.get("groups") or {}).items():
        view["groups"].append(
            charts.bar_chart(
                f"Wave {wave.id}: response rate by {field_name}",
                [(row["group"], row["response_rate"]) for row in rows],
                max_value=100,
                value_header="Response rate",
                notes=[f"{row['completed']} of {row['invited']} invited" for row in rows],
            )
        )
    return view


# --- results ---------------------------------------------------------------------------


def _question_charts(question: dict[str, Any], data: dict[str, Any]) -> list[Any]:
    """A bar chart of a question's answers, and one per group when broken down."""
    if "options" not in question:
        return []
    weighted = data["weighted"]

    def one(title: str, part: dict[str, Any]) -> Any:
        options = part.get("options", [])
        notes = (
            [f"±{o.get('moe', 0)} points (95%)" for o in options]
            if weighted and any(o.get("moe") is not None for o in options)  # None: no answers
            else None
        )
        return charts.bar_chart(
            title,
            [(o["text"], o["percent"]) for o in options],
            max_value=100,
            value_header="Weighted share" if weighted else "Share",
            notes=notes,
        )

    found = [one(f"{question['id']}: all ({question['answered']} answered)", question)]
    for group, part in sorted(question.get("by", {}).items()):
        found.append(
            one(f"{question['id']}: {data['by']} = {group} ({part['answered']} answered)", part)
        )
    return found


async def _results(
    bot: Bot, survey_id: str, weighted: bool, by: str | None
) -> tuple[dict[str, Any], str]:
    """The results, and why weighting was not applied ("" when it was or was not asked)."""
    why = ""
    if weighted:
        try:
            return await survey_results(bot, survey_id, weighted=True, by=by), ""
        except ResultsError as exc:
            if str(exc).startswith("--by"):
                raise
            why = str(exc).removeprefix("--weighted: ")
    return await survey_results(bot, survey_id, weighted=False, by=by), why


# The largest id SQLite stores (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def _page_number(text: str | None) -> int:
    try:
        page = int(text or "1")
    except ValueError:
        return 1
    return min(max(page, 1), 100_000)


async def survey_list(request: Request) -> Response:
    bot = _bot(request)
    rows = await survey_store.summary(bot.db.conn)
    for row in rows:
        row["rate"] = round(100.0 * row["completed"] / row["invited"], 1) if row["invited"] else 0
        row["wave_list"] = [
            {
                "id": w.id,
                "status": w.status,
                "opens_at": _local(bot, w.opens_at),
                "closes_at": _local(bot, w.closes_at),
            }
            for w in await survey_store.waves_of_survey(bot.db.conn, row["id"])
        ]
    return render(request, "admin/surveys.html", surveys=rows)


async def survey_page(request: Request) -> Response:
    return await _survey_page(request)


async def _survey_page(
    request: Request, *, new_link: str = "", error: str = "", status_code: int = 200
) -> Response:
    bot = _bot(request)
    survey_id = request.path_params["survey_id"]
    stored = await _stored(bot, survey_id)
    params = request.query_params
    weighted = params.get("weighted") == "1"
    fields = [f.name for f in bot.settings.panel.fields]
    by = params.get("by") or None
    if by is not None and by not in fields:
        error = error or f"{by!r} is not a panel field; showing all respondents together."
        status_code = 400
        by = None
    data, why = await _results(bot, survey_id, weighted, by)
    targets = wave_report.population_targets(bot)
    waves = [
        await _wave_view(bot, w, targets)
        for w in await survey_store.waves_of_survey(bot.db.conn, survey_id)
    ]
    questions = []
    search = (params.get("q") or "").strip()[:MAX_SEARCH]
    searched = params.get("tq") or ""
    for q in data["questions"]:
        entry = {**q, "charts": _question_charts(q, data), "texts": None}
        if q["type"] == "text":
            page = _page_number(params.get("page")) if q["id"] == searched else 1
            term = search if q["id"] == searched else ""
            found, total = await survey_views.text_answers(
                bot.db.conn,
                survey_id,
                q["id"],
                search=term,
                limit=TEXT_PAGE,
                offset=(page - 1) * TEXT_PAGE,
            )
            entry["texts"] = {
                "rows": [{**r, "answered_at": _local(bot, r["answered_at"])} for r in found],
                "total": total,
                "page": page,
                "pages": max(1, -(-total // TEXT_PAGE)),
                "search": term,
            }
        questions.append(entry)
    shares = await share_store.of_survey(bot.db.conn, survey_id)
    comments = await share_store.comments_of_survey(bot.db.conn, survey_id)
    staff = current_staff(request)
    return render(
        request,
        "admin/survey.html",
        status_code=status_code,
        survey=stored.survey,
        version=stored.version,
        data=data,
        weighted=bool(data["weighted"]),
        asked_weighted=weighted,
        why_unweighted=why,
        by=by,
        fields=fields,
        waves=waves,
        questions=questions,
        shares=[{"share": s, "usable": s.usable()} for s in shares],
        comments=comments,
        share_days=SHARE_DAYS,
        new_link=new_link,
        error=error,
        is_admin=staff.is_admin,
        csv_query=("weighted=1&" if data["weighted"] else "") + (f"by={by}" if by else ""),
    )


async def results_csv(request: Request) -> Response:

    bot = _bot(request)
    survey_id = request.path_params["survey_id"]
    await _stored(bot, survey_id)
    by = request.query_params.get("by") or None
    weighted = request.query_params.get("weighted") == "1"
    try:
        data = await survey_results(bot, survey_id, weighted=weighted, by=by)
    except ResultsError as exc:
        raise HTTPException(400, str(exc)) from None
    name = f"{survey_id}{'-weighted' if weighted else ''}{f'-by-{by}' if by else ''}.csv"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Response(
        results_as_csv(data),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}"',
            "Cache-Control": "no-store",
        },
    )


async def create_share(request: Request) -> Response:
    staff = require_admin(request)
    bot = _bot(request)
    survey_id = request.path_params["survey_id"]
    await _stored(bot, survey_id)
    form = await read_form(request)
    try:
        days = int(form.get("days") or "7")
    except ValueError:
        days = 0
    if days not in SHARE_DAYS:
        return await _survey_page(request, error="Choose how long the link works.", status_code=400)
    label = str(form.get("label") or "")
    try:
        link, _, _ = await make_share(
            bot, survey_id, timedelta(days=days), label=label, actor=staff.actor
        )
    except share_store.ShareError as exc:
        # The store names the command's option; the page names its field.
        reason = str(exc).replace("--label:", "Label:", 1)
        return await _survey_page(request, error=reason, status_code=400)
    return await _survey_page(request, new_link=link)


async def revoke(request: Request) -> Response:
    staff = require_admin(request)
    bot = _bot(request)
    survey_id = request.path_params["survey_id"]
    try:
        share_id = int(request.path_params["share_id"])
    except ValueError:
        raise HTTPException(404, "no such link") from None
    if not 0 < share_id <= MAX_ID:  # past SQLite's integers: no such row, not an overflow
        raise HTTPException(404, "no such link")
    try:
        await revoke_share(bot, survey_id, share_id, actor=staff.actor)
    except share_store.ShareError as exc:
        return await _survey_page(request, error=str(exc), status_code=400)
    return RedirectResponse(f"/admin/surveys/{survey_id}#review-links", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/surveys", survey_list, methods=["GET"]),
        Route("/admin/surveys/{survey_id}", survey_page, methods=["GET"]),
        Route("/admin/surveys/{survey_id}/results.csv", results_csv, methods=["GET"]),
        Route("/admin/surveys/{survey_id}/shares", create_share, methods=["POST"]),
        Route("/admin/surveys/{survey_id}/shares/{share_id:int}/revoke", revoke, methods=["POST"]),
        *survey_board.routes(),
    ]
