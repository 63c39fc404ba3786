"""Survey results: response counts, per-option counts and percentages, free text.

``weighted`` asks the plugins (``panelbot_results_weights``) for a weight per respondent (no
built-in plugin provides weights yet: the quotas plugin will); ``by`` breaks every question
down by a demographic field.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.surveys.model import Question, QuestionType

if TYPE_CHECKING:
    from bot.app import Bot

UNKNOWN_GROUP = "(unknown)"


class ResultsError(Exception):
    pass


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 2)


def _options(q: Question, locale: str) -> list[tuple[str, str]]:
    if q.type == QuestionType.YESNO:
        return [("yes", "Yes"), ("no", "No")]
    if q.type == QuestionType.SCALE and q.min is not None and q.max is not None:
        return [(str(v), str(v)) for v in range(int(q.min), int(q.max) + 1)]
    return [(o.id, o.localized_text(locale, "en")) for o in q.options]


def _tally(q: Question, answers: list[tuple[Any, float]], locale: str) -> dict[str, Any]:
    """Counts for one question over (value, weight) pairs."""
    total = sum(w for _, w in answers)
    entry: dict[str, Any] = {"answered": len(answers)}
    if q.type in (QuestionType.CHOICE, QuestionType.MULTI, QuestionType.YESNO, QuestionType.SCALE):
        counts: dict[str, float] = defaultdict(float)
        for value, weight in answers:
            for v in value if isinstance(value, list) else [value]:
                counts[str(v)] += weight
        entry["options"] = [
            {
                "id": oid,
                "text": text,
                "count": _num(counts[oid]),
                "percent": _pct(counts[oid], total),
            }
            for oid, text in _options(q, locale)
        ]
    if q.type in (QuestionType.SCALE, QuestionType.NUMBER):
        numbers = [(v, w) for v, w in answers if isinstance(v, int | float)]
        weight_sum = sum(w for _, w in numbers)
        entry["mean"] = (
            round(sum(v * w for v, w in numbers) / weight_sum, 2) if weight_sum else None
        )
        entry["median"] = statistics.median(v for v, _ in numbers) if numbers else None
        if q.type == QuestionType.NUMBER:
            entry["min"] = min((v for v, _ in numbers), default=None)
            entry["max"] = max((v for v, _ in numbers), default=None)
    if q.type == QuestionType.TEXT:
        entry["responses"] = [v for v, _ in answers if isinstance(v, str)]
    return entry


async def survey_results(
    bot: Bot, survey_id: str, *, weighted: bool = False, by: str | None = None
) -> dict[str, Any]:
    """Results over every wave of a survey, laid out by its latest version's questions."""
    conn = bot.db.conn
    stored = await survey_store.latest_version(conn, survey_id)
    if stored is None:
        raise ResultsError(f"no survey {survey_id!r}")
    survey = stored.survey
    fields = [f.name for f in bot.settings.panel.fields]
    if by is not None and by not in fields:
        raise ResultsError(
            f"--by {by!r}: not a panel field (fields: {', '.join(fields) or 'none'})"
        )
    counts = await survey_store.response_counts(conn, survey_id)
    waves = await survey_store.waves_of_survey(conn, survey_id)
    answers = await survey_store.answers_of_survey(conn, survey_id)
    people = {
        p.id: p for p in await panellist_store.many(conn, {pid for _, pid, _, _ in answers if pid})
    }

    weights: dict[int, float] = {}
    if weighted:
        respondents = [
            {"panellist_id": p.id, "demographics": dict(p.demographics)} for p in people.values()
        ]
        found = await bot.plugins.call_first(
            "panelbot_results_weights", bot=bot, survey=survey, respondents=respondents
        )
        if found is None:
            raise ResultsError(
                "--weighted: no plugin provides weights yet (no loaded plugin implements "
                "panelbot_results_weights; see docs/plugins.md)"
            )
        weights = {int(k): float(v) for k, v in found.items()}

    def group_of(pid: int | None) -> str:
        person = people.get(pid) if pid else None
        return (person.demographics.get(by) if person and by else None) or UNKNOWN_GROUP

    by_question: dict[str, list[tuple[Any, float, str]]] = defaultdict(list)
    for _session, pid, qid, value in answers:
        weight = weights.get(pid, 1.0) if (weighted and pid) else 1.0
        by_question[qid].append((value, weight, group_of(pid)))

    locale = bot.settings.bot.default_locale
    questions = []
    for q in survey.questions:
        rows = by_question.get(q.id, [])
        entry: dict[str, Any] = {
            "id": q.id,
            "type": q.type.value,
            "text": q.localized_text(locale, "en"),
        }
        entry.update(_tally(q, [(v, w) for v, w, _ in rows], locale))
        if by:
            groups: dict[str, list[tuple[Any, float]]] = defaultdict(list)
            for v, w, g in rows:
                groups[g].append((v, w))
            entry["by"] = {g: _tally(q, groups[g], locale) for g in sorted(groups)}
        questions.append(entry)
    return {
        "survey": survey.id,
        "version": stored.version,
        "title": survey.title.get(locale) or next(iter(survey.title.values()), ""),
        "weighted": weighted,
        "by": by,
        "waves": [
            {
                "id": w.id,
                "status": w.status,
                "opens_at": w.opens_at.isoformat(),
                "closes_at": w.closes_at.isoformat(),
            }
            for w in waves
        ],
        **counts,
        "response_rate": _pct(counts["completed"], counts["invited"]),
        "questions": questions,
    }


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
