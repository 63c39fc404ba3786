"""Survey results: response counts, per-option counts and percentages, free text.

``weighted`` asks the plugins (``panelbot_results_weights``) for a weight per respondent (the
quotas plugin rakes respondents to the population targets); the results then carry each
percentage's 95% margin of error from the effective sample size, and the weighting's own
diagnostics when the plugin gives them. ``by`` breaks every question down by a demographic
field. With population targets (``panelbot_population_targets``) every wave gets a
representativeness line: the largest gap between its respondents and the population.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bot.csv_cells import safe_row
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.storage.db import fetch_all
from bot.surveys.model import Question, QuestionType

if TYPE_CHECKING:
    from bot.app import Bot

UNKNOWN_GROUP = "(unknown)"
Z_95 = 1.96  # two-sided 95% normal quantile, for margins of error


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


def design_effect(weights: list[float]) -> float:
    """Kish's design effect, ``n * sum(w**2) / sum(w)**2`` (1.0 for equal weights)."""
    total = sum(weights)
    return len(weights) * sum(w * w for w in weights) / (total * total) if total > 0 else 1.0


def effective_n(weights: list[float]) -> float:
    """Kish's effective sample size, ``sum(w)**2 / sum(w**2)`` (``n / deff``)."""
    squares = sum(w * w for w in weights)
    return sum(weights) ** 2 / squares if squares > 0 else 0.0


def margin_of_error(percent: float, n_eff: float) -> float | None:
    """Half-width of the 95% interval of a percentage, in points: ``1.96*sqrt(p(1-p)/n_eff)``.

    The normal approximation with the effective sample size in place of n; it is too narrow
    for percentages near 0 or 100 and for a handful of answers. None without answers.
    """
    if n_eff <= 0:
        return None
    p = percent / 100.0
    return round(100.0 * Z_95 * math.sqrt(max(p * (1.0 - p), 0.0) / n_eff), 1)


def _tally(
    q: Question, answers: list[tuple[Any, float]], locale: str, *, weighted: bool = False
) -> dict[str, Any]:
    """Counts for one question over (value, weight) pairs; with ``weighted``, each
    percentage's margin of error and the answers' effective sample size."""
    total = sum(w for _, w in answers)
    entry: dict[str, Any] = {"answered": len(answers)}
    n_eff = effective_n([w for _, w in answers])
    if weighted:
        entry["n_eff"] = round(n_eff, 1)
    if q.type in (QuestionType.CHOICE, QuestionType.MULTI, QuestionType.YESNO, QuestionType.SCALE):
        counts: dict[str, float] = defaultdict(float)  # weighted (each weight 1.0 if not)
        people: dict[str, int] = defaultdict(int)  # unweighted: how many chose the option
        for value, weight in answers:
            for v in value if isinstance(value, list) else [value]:
                counts[str(v)] += weight
                people[str(v)] += 1
        entry["options"] = [
            {
                "id": oid,
                "text": text,
                "count": people[oid],
                "percent": _pct(counts[oid], total),
            }
            for oid, text in _options(q, locale)
        ]
        if weighted:
            for option in entry["options"]:
                option["weighted_count"] = _num(counts[option["id"]])
                # From the unrounded share, so the figure is the formula's own.
                share = 100.0 * counts[option["id"]] / total if total else 0.0
                option["moe"] = margin_of_error(share, n_eff)
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

    targets = population_targets(bot)
    weights: dict[int, float] = {}
    weighting: dict[str, Any] | None = None
    if weighted:
        respondents = [
            {"panellist_id": p.id, "demographics": dict(p.demographics)} for p in people.values()
        ]
        found = await bot.plugins.call_first(
            "panelbot_results_weights", bot=bot, survey=survey, respondents=respondents
        )
        if found is None:
            raise ResultsError(
                "--weighted: no plugin provides weights for this panel: the quotas plugin "
                "weights to the population targets in [plugins.quotas.population.<field>] "
                + ("and has none" if not targets else "and gave none")
                + " (another plugin may implement panelbot_results_weights; see docs/plugins.md)"
            )
        weights = {int(k): float(v) for k, v in found.items()}
        respondent_weights = [weights.get(p, 1.0) for p in people]
        weighting = {
            "respondents": len(respondent_weights),
            "design_effect": round(design_effect(respondent_weights), 3),
            "n_eff": round(effective_n(respondent_weights), 1),
            **(getattr(found, "diagnostics", None) or {}),
        }

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
        entry.update(_tally(q, [(v, w) for v, w, _ in rows], locale, weighted=weighted))
        if by:
            groups: dict[str, list[tuple[Any, float]]] = defaultdict(list)
            for v, w, g in rows:
                groups[g].append((v, w))
            entry["by"] = {
                g: _tally(q, groups[g], locale, weighted=weighted) for g in sorted(groups)
            }
        questions.append(entry)
    representativeness = (
        await _representativeness(bot, survey_id, people, targets, weights if weighted else None)
        if targets
        else []
    )
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
        "weighting": weighting,
        "representativeness": representativeness,
        "questions": questions,
    }


def population_targets(bot: Bot) -> dict[str, dict[str, float]] | None:
    """The population's shares per field and value from the plugins, or None."""
    for _plugin, found in bot.plugins.call_each_sync(
        "panelbot_population_targets", settings=bot.settings
    ):
        if found:
            return found
    return None


def largest_gap(
    people: list[tuple[dict[str, Any], float]], targets: dict[str, dict[str, float]]
) -> dict[str, Any] | None:
    """The field value whose share among ``people`` ((demographics, weight) pairs) is
    furthest from its population share, in percentage points; None with nobody to compare.

    A field's shares are over the people whose value for it is known (one of its targets).
    """
    worst: dict[str, Any] | None = None
    for name, shares in targets.items():
        sums: dict[str, float] = defaultdict(float)
        for demographics, weight in people:
            value = demographics.get(name)
            if value is not None and str(value) in shares:
                sums[str(value)] += weight
        known = sum(sums.values())
        if known <= 0:
            continue
        for value, share in shares.items():
            gap = 100.0 * (sums[value] / known - share)
            if worst is None or abs(gap) > abs(worst["gap_points"]):
                worst = {
                    "field": name,
                    "value": value,
                    "respondents_percent": round(100.0 * sums[value] / known, 1),
                    "population_percent": round(100.0 * share, 1),
                    "gap_points": gap,
                }
    if worst is not None:
        worst["gap_points"] = round(worst["gap_points"], 1)
    return worst


async def _representativeness(
    bot: Bot,
    survey_id: str,
    people: dict[int, Any],
    targets: dict[str, dict[str, float]],
    weights: dict[int, float] | None,
) -> list[dict[str, Any]]:
    """Per wave: its respondents' largest gap from the population, before weighting and
    (with ``weights``) after."""
    rows = await fetch_all(
        bot.db.conn,
        "SELECT DISTINCT ss.wave_id, ss.panellist_id FROM survey_sessions ss "
        "JOIN surveys s ON s.id = ss.survey_row_id "
        "WHERE s.survey_id = ? AND ss.panellist_id IS NOT NULL "
        "AND (ss.answered > 0 OR ss.state = 'completed') ORDER BY ss.wave_id",
        (survey_id,),
    )
    by_wave: dict[int, list[int]] = defaultdict(list)
    for wave_id, pid in rows:
        if pid in people:
            by_wave[wave_id].append(pid)
    lines = []
    for wave_id, pids in by_wave.items():
        demographics = [dict(people[p].demographics) for p in pids]
        line: dict[str, Any] = {
            "wave": wave_id,
            "respondents": len(pids),
            "before": largest_gap([(d, 1.0) for d in demographics], targets),
        }
        if weights is not None:
            line["after"] = largest_gap(
                [(d, weights.get(p, 1.0)) for d, p in zip(demographics, pids, strict=True)],
                targets,
            )
        lines.append(line)
    return lines


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def results_csv(data: dict[str, Any]) -> str:
    """The results as CSV, for ``survey results --format csv`` and the dashboard's download.

    One row per option, mean or free-text answer; formula-like text is quoted (csv_cells).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["question", "type", "group", "option", "count", "percent", "answered"]
    # Weighted results: "count" stays the unweighted number, the percentage is weighted; they
    # add the weighted count and each percentage's 95% margin of error (points).
    weighted = bool(data.get("weighted"))
    header = [*header, "weighted_count", "moe"] if weighted else header
    writer.writerow(header)
    for q in data["questions"]:
        parts = [("all", q), *sorted(q.get("by", {}).items())]
        for group, part in parts:
            rows = [
                [q["id"], q["type"], group, o["id"], o["count"], o["percent"], part["answered"]]
                + ([o.get("weighted_count", ""), o.get("moe", "")] if weighted else [])
                for o in part.get("options", [])
            ]
            if "mean" in part and "options" not in part:
                rows.append([q["id"], q["type"], group, "mean", part["mean"], "", part["answered"]])
            for text in part.get("responses", []) if group == "all" else []:
                rows.append([q["id"], q["type"], group, text, "", "", part["answered"]])
            writer.writerows(safe_row(row + [""] * (len(header) - len(row))) for row in rows)
    return out.getvalue()
