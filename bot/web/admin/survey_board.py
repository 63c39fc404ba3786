"""``GET /admin/surveys/{id}/waves/{wave}/summary``: one printable page (A4) for a board.

Headline findings (the top answer of each closed question among the wave's answers, with
its count, base and 95% margin of error), the response rate, representativeness before and
after weighting (from ``bot.results`` when a plugin gives population targets and weights),
cost per completed response (``bot.wave_report``) and the decisions that cite the survey
(``panelbot_survey_decisions``, which the impact_updates plugin answers).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot import wave_report
from bot.results import ResultsError, survey_results
from bot.storage import surveys as survey_store
from bot.storage.db import fetch_all
from bot.surveys.model import QuestionType
from bot.web import charts
from bot.web.admin.templating import render

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)


CLOSED = (QuestionType.CHOICE, QuestionType.MULTI, QuestionType.YESNO, QuestionType.SCALE)
MAX_FINDINGS = 6


def _moe(share: float, n: int) -> float:
    """95% margin of error of a share (0..1) over n answers, in points."""
    return round(100 * 1.96 * math.sqrt(share * (1 - share) / n), 1) if n else 0.0


async def headline_findings(bot: Bot, wave: Any, survey: Any) -> list[dict[str, Any]]:
    """The most chosen answer of each closed question among this wave's answers."""
    rows = await fetch_all(
        bot.db.conn,
        "SELECT question_id, value FROM answers WHERE wave_id = ?",
        (wave.id,),
    )
    by_question: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_question[row["question_id"]].append(json.loads(row["value"]))
    locale = bot.settings.bot.default_locale
    found = []
    for q in survey.questions:
        if q.type not in CLOSED or not by_question.get(q.id):
            continue
        values = by_question[q.id]
        counts: dict[str, int] = defaultdict(int)
        for value in values:
            for v in value if isinstance(value, list) else [value]:
                counts[str(v)] += 1
        top, count = max(counts.items(), key=lambda item: (item[1], item[0]))
        if q.type == QuestionType.YESNO:
            label = {"yes": "Yes", "no": "No"}.get(top, top)
        elif q.type == QuestionType.SCALE:
            label = f"{top} (on a scale of {q.min} to {q.max})"
        else:
            label = next((o.localized_text(locale, "en") for o in q.options if o.id == top), top)
        n = len(values)
        share = count / n
        found.append(
            {
                "question": q.localized_text(locale, "en"),
                "id": q.id,
                "answer": label,
                "percent": round(100 * share, 1),
                "count": count,
                "n": n,
                "moe": _moe(share, n),
            }
        )
    return found[:MAX_FINDINGS]


async def cited_by(bot: Bot, survey_id: str) -> list[dict[str, Any]]:
    """Decisions that cite the survey, from every plugin that keeps a register."""
    found: list[dict[str, Any]] = []
    for _plugin, decisions in await bot.plugins.call_each(
        "panelbot_survey_decisions", bot=bot, survey_id=survey_id
    ):
        found.extend(d for d in decisions or [] if isinstance(d, dict))
    return found


async def board_summary(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    survey_id = request.path_params["survey_id"]
    wave_id = request.path_params["wave_id"]
    stored = await survey_store.latest_version(bot.db.conn, survey_id)
    wave = await survey_store.wave(bot.db.conn, wave_id) if 0 < wave_id < 2**63 else None
    if stored is None or wave is None:
        raise HTTPException(404, "no such survey or wave")
    wave_survey = await survey_store.by_row_id(bot.db.conn, wave.survey_row_id)
    if wave_survey is None or wave_survey.survey.id != survey_id:
        raise HTTPException(404, f"wave {wave_id} is not a wave of {survey_id}")
    survey = wave_survey.survey
    tz = ZoneInfo(bot.settings.bot.timezone)
    findings = await headline_findings(bot, wave, survey)
    report = await wave_report.wave_report(bot, wave, wave_report.population_targets(bot) or {})
    invited, completed = report["invited"], report["completed"]
    # Representativeness: bot.results gives it per wave, before and (weighted) after.
    representativeness = None
    weighting_note = ""
    try:
        results = await survey_results(bot, survey_id, weighted=True)
    except ResultsError as exc:
        weighting_note = str(exc).removeprefix("--weighted: ")
        results = await survey_results(bot, survey_id, weighted=False)
    for line in results.get("representativeness") or []:
        if line.get("wave") == wave.id:
            representativeness = line
    decisions = await cited_by(bot, survey_id)
    locale = bot.settings.bot.default_locale
    chart = charts.bar_chart(
        "Top answer to each question (share of those who answered)",
        [(f["id"] + ": " + str(f["answer"]), f["percent"]) for f in findings],
        max_value=100,
        notes=[f"{f['count']} of {f['n']}, ±{f['moe']} points" for f in findings],
    )
    return render(
        request,
        "admin/survey_board.html",
        survey=survey,
        title=survey.localized_title(locale, "en"),
        wave=wave,
        opens_at=wave.opens_at.astimezone(tz),
        closes_at=wave.closes_at.astimezone(tz),
        findings=findings,
        chart=chart,
        invited=invited,
        completed=completed,
        rate=round(100.0 * completed / invited, 1) if invited else 0.0,
        cost=report.get("cost"),
        representativeness=representativeness,
        weighting_note=weighting_note,
        decisions=decisions,
        panel_name=bot.settings.bot.name,
    )


def routes() -> list[BaseRoute]:
    return [
        Route(
            "/admin/surveys/{survey_id}/waves/{wave_id:int}/summary",
            board_summary,
            methods=["GET"],
        )
    ]
