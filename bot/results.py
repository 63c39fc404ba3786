"""Survey results: response counts, per-option counts and percentages, and free text."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from bot.storage import surveys as survey_store
from bot.surveys.model import QuestionType

if TYPE_CHECKING:
    from bot.app import Bot


class ResultsError(Exception):
    pass


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


async def survey_results(bot: Bot, survey_id: str) -> dict[str, Any]:
    """Results over every wave of a survey, laid out by its latest version's questions."""
    conn = bot.db.conn
    stored = await survey_store.latest_version(conn, survey_id)
    if stored is None:
        raise ResultsError(f"no survey {survey_id!r}")
    survey = stored.survey
    counts = await survey_store.response_counts(conn, survey_id)
    waves = await survey_store.waves_of_survey(conn, survey_id)
    by_question: dict[str, list[Any]] = defaultdict(list)
    for _session, _pid, qid, value in await survey_store.answers_of_survey(conn, survey_id):
        by_question[qid].append(value)
    locale = bot.settings.bot.default_locale
    questions = []
    for q in survey.questions:
        values = by_question.get(q.id, [])
        entry: dict[str, Any] = {
            "id": q.id,
            "type": q.type.value,
            "text": q.localized_text(locale, "en"),
            "answered": len(values),
        }
        if q.type in (QuestionType.CHOICE, QuestionType.MULTI, QuestionType.YESNO):
            tally: Counter[str] = Counter()
            for v in values:
                tally.update(v if isinstance(v, list) else [v])
            if q.type == QuestionType.YESNO:
                options = [("yes", "Yes"), ("no", "No")]
            else:
                options = [(o.id, o.localized_text(locale, "en")) for o in q.options]
            entry["options"] = [
                {"id": oid, "text": text, "count": tally[oid], "percent": _pct(tally[oid], len(values))}
                for oid, text in options
            ]
        elif q.type in (QuestionType.SCALE, QuestionType.NUMBER):
            numbers = [v for v in values if isinstance(v, int | float)]
            entry["mean"] = round(statistics.fmean(numbers), 2) if numbers else None
            entry["median"] = statistics.median(numbers) if numbers else None
            if q.type == QuestionType.SCALE and q.min is not None and q.max is not None:
                tally_n = Counter(numbers)
                entry["options"] = [
                    {"id": str(v), "text": str(v), "count": tally_n[v],
                     "percent": _pct(tally_n[v], len(numbers))}
                    for v in range(int(q.min), int(q.max) + 1)
                ]
            else:
                entry["min"] = min(numbers) if numbers else None
                entry["max"] = max(numbers) if numbers else None
        else:
            entry["responses"] = [v for v in values if isinstance(v, str)]
        questions.append(entry)
    return {
        "survey": survey.id,
        "version": stored.version,
        "title": survey.title.get(locale) or next(iter(survey.title.values()), ""),
        "waves": [
            {"id": w.id, "status": w.status, "opens_at": w.opens_at.isoformat(),
             "closes_at": w.closes_at.isoformat()}
            for w in waves
        ],
        **counts,
        "response_rate": _pct(counts["completed"], counts["invited"]),
        "questions": questions,
    }
