"""Survey samples (``panelbot_select_sample``): stratified to the population, with fatigue.

``survey launch ID --sample N --stratify-by F1,F2`` asks for exactly N invitations (all
eligible people when fewer), spread over the cells of the cross of the named fields so that
the *expected completes* match the population targets rather than the panel's own skew:

- The targets (``[plugins.quotas.population.<field>]``) give each field's shares, not their
  joint distribution. Cell shares are the eligible panel's own cross counts raked to those
  margins (:func:`joint_shares`): every field matches its targets, and the cells keep the
  panel's associations between fields (a uniform panel gives the product of the margins).
  A field without targets uses its shares among the eligible panellists.
- A cell's expected response rate comes from past waves that have closed: completed over
  invited among people now in that cell, shrunk toward a prior as if
  :data:`PRIOR_INVITATIONS` more invitations had answered at it. The prior is the overall
  rate for one field; with several, the overall rate times each of the cell's values' own
  (shrunk) rates relative to it, so a cell with little history borrows from its values'.
  With no closed wave yet every cell has the same rate.
- Invitations per cell are proportional to population share / expected rate when
  ``[plugins.quotas] oversample_low_responders = true``, else to the population share.
  Whole numbers by largest remainder, summing to N; a cell with fewer eligible people than
  its allocation invites them all and its remainder goes to the other cells in proportion.
- People with no answer (or a value outside the field's list) for any named field form one
  cell of their own, "unknown", given its share of the eligible panel: they are neither
  dropped nor allowed to crowd out the known cells.
- Within a cell, with ``min_days_between_invitations = D``, people invited within D days are
  taken only when the cell has too few others, and the least often, then least recently,
  invited come first; ties are broken at random (``random.SystemRandom``). Without the rule,
  a simple random draw within the cell.

Without ``--stratify-by`` but with the fatigue rule (and a sample smaller than the eligible
panel), the same choice is applied to the whole panel as one cell.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.plugin_api import MAX_STRATIFY_CELLS, invitation_history

from . import targets as targets_module

if TYPE_CHECKING:
    from bot.plugin_api import Bot, InvitationRecord, Panellist, Settings

PLUGIN = "quotas"
#: Shrinkage of a cell's response rate: as if this many more invitations had answered at
#: the overall rate.
PRIOR_INVITATIONS = 20
UNKNOWN = "unknown"
#: More cells than this in the cross of the named fields is refused: the core's own limit,
#: which ``survey launch`` checks before a wave exists.
MAX_CELLS = MAX_STRATIFY_CELLS

Cell = tuple[str, ...]


class SamplingError(Exception):
    """The sample cannot be drawn as asked; the message says why."""


@dataclass(slots=True)
class Options:
    oversample: bool = False
    min_days: float | None = None


@dataclass(slots=True)
class CellPlan:
    key: Cell | None  # None: the "unknown" cell
    population_share: float
    people: list[Panellist] = field(default_factory=list)
    invited: int = 0
    completed: int = 0
    expected_rate: float | None = None
    allocated: int = 0


def check_config(settings: Settings) -> list[tuple[str, str]]:
    """Problems with the sampling keys of ``[plugins.quotas]``."""
    try:
        opts = settings.plugins.for_plugin(PLUGIN)
    except ValueError:
        return []  # the targets' own check names the unset variable
    found: list[tuple[str, str]] = []
    key = f"plugins.{PLUGIN}"
    if "oversample_low_responders" in opts and not isinstance(
        opts["oversample_low_responders"], bool
    ):
        found.append((f"{key}.oversample_low_responders", "must be true or false"))
    if "min_days_between_invitations" in opts:
        value = opts["min_days_between_invitations"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3650:
            found.append(
                (f"{key}.min_days_between_invitations", "must be a number of days from 0 to 3650")
            )
    return found


def options(settings: Settings) -> Options:
    opts = settings.plugins.for_plugin(PLUGIN)
    days = opts.get("min_days_between_invitations")
    return Options(
        oversample=opts.get("oversample_low_responders") is True,
        min_days=float(days)
        if isinstance(days, int | float) and not isinstance(days, bool)
        else None,
    )


async def select_sample(
    bot: Bot,
    wave: Any,
    eligible: list[Panellist],
    size: int | None,
    stratify_by: list[str] | None,
    *,
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The hook's answer: ``{"ids": [...], "report": {...}}``, or None to leave it to the core."""
    opts = options(bot.settings)
    if not stratify_by and (opts.min_days is None or size is None or size >= len(eligible)):
        return None  # a plain random sample (or everyone): the core's own draw
    history = await invitation_history(bot, exclude_wave=getattr(wave, "id", None))
    try:
        return draw(
            settings=bot.settings,
            eligible=eligible,
            size=size,
            stratify_by=stratify_by or [],
            history=history,
            opts=opts,
            rng=rng or random.SystemRandom(),
            now=now or datetime.now().astimezone(),
        )
    except SamplingError as exc:
        return {"ids": [], "refused": str(exc)}


def draw(
    *,
    settings: Settings,
    eligible: list[Panellist],
    size: int | None,
    stratify_by: list[str],
    history: list[InvitationRecord],
    opts: Options,
    rng: random.Random,
    now: datetime,
) -> dict[str, Any]:
    """Allocate ``size`` invitations over the cells and choose the people in each."""
    notes: list[str] = []
    n = len(eligible) if size is None else size
    if n >= len(eligible):
        if not eligible:
            notes.append("nobody is eligible: nobody is invited")
        elif size is not None and size > len(eligible):
            notes.append(f"only {len(eligible)} eligible for a sample of {size}: all are invited")
        n = len(eligible)
    values = {f.name: list(f.values) for f in settings.panel.fields}
    unknown_fields = [f for f in stratify_by if f not in values]
    if unknown_fields:
        raise SamplingError(f"not a panel field: {', '.join(unknown_fields)}")
    plans = _plan_cells(settings, eligible, stratify_by, values, notes)
    _expected_rates(plans, stratify_by, values, history, notes)
    weights = _weights(plans, opts, len(eligible))
    alloc = allocate(weights, [len(p.people) for p in plans], n)
    for plan, count in zip(plans, alloc, strict=True):
        plan.allocated = count
    total_weight = sum(weights)
    short = [
        p
        for p, w in zip(plans, weights, strict=True)
        if total_weight > 0 and n * w / total_weight > len(p.people)
    ]
    if short and stratify_by and n < len(eligible):
        notes.append(
            f"{len(short)} cell(s) had fewer eligible people than their share of the sample "
            "and invite all they have; the rest went to the other cells in proportion"
        )
    recent_by_person, chosen = _last_invited(history), []
    taken_recent = 0
    for plan in plans:
        picked, recent = choose(plan.people, plan.allocated, recent_by_person, opts, rng, now)
        chosen.extend(picked)
        taken_recent += recent
    if opts.min_days is not None:
        notes.append(
            f"fatigue rule: people invited within {opts.min_days:g} days only when too few "
            "others; the least often, then least recently, invited first"
        )
        if taken_recent:
            notes.append(
                f"{taken_recent} invited despite an invitation within "
                f"{opts.min_days:g} days: too few others in their cell"
            )
    if stratify_by:
        notes.append(
            "allocation by population share / expected response rate (oversampling low responders)"
            if opts.oversample
            else "allocation by population share (oversample_low_responders is off)"
        )
    cells = [_cell_row(plan, stratify_by) for plan in plans] if stratify_by else []
    return {
        "ids": chosen,
        "report": {
            "method": "stratified" if stratify_by else "random with fatigue rule",
            "sample": n,
            "cells": cells,
            "notes": notes,
            "oversample_low_responders": opts.oversample,
            "min_days_between_invitations": opts.min_days,
        },
    }


def _cell_row(plan: CellPlan, stratify_by: list[str]) -> dict[str, Any]:
    label = (
        UNKNOWN
        if plan.key is None
        else ", ".join(f"{f}={v}" for f, v in zip(stratify_by, plan.key, strict=True))
    )
    expected = None if plan.expected_rate is None else round(plan.allocated * plan.expected_rate, 1)
    return {
        "cell": label,
        "population_share": round(plan.population_share, 6),
        "eligible": len(plan.people),
        "past_invited": plan.invited,
        "past_completed": plan.completed,
        "expected_rate": None if plan.expected_rate is None else round(plan.expected_rate, 4),
        "invited": plan.allocated,
        "expected_completes": expected,
    }


def _cell_of(
    p: Panellist | InvitationRecord, fields: list[str], values: dict[str, list[str]]
) -> Cell | None:
    key = []
    for name in fields:
        value = p.demographics.get(name)
        if value not in values[name]:
            return None
        key.append(value)
    return tuple(key)


def _plan_cells(
    settings: Settings,
    eligible: list[Panellist],
    fields: list[str],
    values: dict[str, list[str]],
    notes: list[str],
) -> list[CellPlan]:
    if not fields:
        return [CellPlan(key=(), population_share=1.0, people=list(eligible))]
    cross = math.prod(len(values[f]) for f in fields)
    if cross > MAX_CELLS:
        raise SamplingError(
            f"the cross of {', '.join(fields)} has {cross} cells (at most {MAX_CELLS}); "
            "stratify by fewer fields"
        )
    targets = targets_module.population_targets(settings) or {}
    margins: dict[str, dict[str, float]] = {}
    for name in fields:
        shares = targets.get(name)
        if shares:
            margins[name] = {v: float(shares.get(v, 0.0)) for v in values[name]}
            continue
        counts = Counter(p.demographics.get(name) for p in eligible)
        known = sum(counts[v] for v in values[name])
        margins[name] = {
            v: (counts[v] / known if known else 1 / len(values[name])) for v in values[name]
        }
        notes.append(f"no population targets for {name}: its shares among eligible people are used")
    by_cell: dict[Cell | None, list[Panellist]] = defaultdict(list)
    for p in eligible:
        by_cell[_cell_of(p, fields, values)].append(p)
    combos = list(itertools.product(*(values[f] for f in fields)))
    seed = [len(by_cell.get(combo, [])) for combo in combos]
    joint, converged = joint_shares(seed, [[margins[f][v] for v in values[f]] for f in fields])
    if len(fields) > 1:
        notes.append(
            "cell shares: the eligible panel's mix of "
            + ", ".join(fields)
            + " raked to the population margins"
            + ("" if converged else " (did not converge: product of the margins used)")
        )
    if not converged:
        joint = [math.prod(margins[f][v] for f, v in zip(fields, c, strict=True)) for c in combos]
    plans = [
        CellPlan(key=combo, population_share=share, people=by_cell.get(combo, []))
        for combo, share in zip(combos, joint, strict=True)
    ]
    unknown = by_cell.get(None, [])
    if unknown:
        u = len(unknown) / len(eligible)
        for plan in plans:
            plan.population_share *= 1 - u
        plans.append(CellPlan(key=None, population_share=u, people=unknown))
        notes.append(
            f"{len(unknown)} eligible people have no known value for "
            f"{' or '.join(fields)}: they form their own cell at their share of the panel"
        )
    return plans


def joint_shares(
    counts: list[int], margins: list[list[float]], *, tolerance: float = 1e-9
) -> tuple[list[float], bool]:
    """Joint shares of the cells of a cross (row-major, as ``itertools.product``) whose
    margins are ``margins`` and whose associations are those of ``counts``.

    The targets give each field's shares, not their joint distribution; assuming the fields
    independent (the product of the margins) ignores that, say, older people live more in
    some areas. So the eligible panel's own cross counts are raked (iterative proportional
    fitting) to the margins: each field then matches its targets exactly, and the cells keep
    the panel's associations between fields. A cell nobody in the panel is in starts at a
    tiny share, so a value held by nobody still gets its margin (and, having no people, gives
    its invitations to the other cells). Returns (shares, converged).
    """
    shape = tuple(len(m) for m in margins)
    array = np.asarray(counts, dtype=float).reshape(shape)
    total = array.sum()
    array = (array / total if total > 0 else np.ones(shape) / array.size) + 1e-9
    array /= array.sum()
    targets = [np.asarray(m, dtype=float) for m in margins]
    for _ in range(1000):
        for axis, target in enumerate(targets):
            others = tuple(i for i in range(len(shape)) if i != axis)
            current = array.sum(axis=others)
            factor = np.divide(target, current, out=np.zeros_like(target), where=current > 0)
            array *= factor.reshape([-1 if i == axis else 1 for i in range(len(shape))])
        error = max(
            float(np.abs(array.sum(axis=tuple(j for j in range(len(shape)) if j != i)) - t).max())
            for i, t in enumerate(targets)
        )
        if error < tolerance:
            return [float(x) for x in array.reshape(-1)], True
    return [float(x) for x in array.reshape(-1)], False


def _expected_rates(
    plans: list[CellPlan],
    fields: list[str],
    values: dict[str, list[str]],
    history: list[InvitationRecord],
    notes: list[str],
) -> None:
    closed = [h for h in history if h.wave_closed]
    if not closed:
        if fields:
            notes.append("no closed waves yet: every cell is expected to respond alike")
        return
    overall = sum(h.completed for h in closed) / len(closed)
    by_cell: dict[Cell | None, list[int]] = defaultdict(lambda: [0, 0])
    by_value: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for h in closed:
        tally = by_cell[_cell_of(h, fields, values)]
        tally[0] += 1
        tally[1] += int(h.completed)
        for name in fields:
            value_tally = by_value[(name, h.demographics.get(name, ""))]
            value_tally[0] += 1
            value_tally[1] += int(h.completed)

    def shrunk(tally: list[int], prior: float) -> float:
        return (tally[1] + PRIOR_INVITATIONS * prior) / (tally[0] + PRIOR_INVITATIONS)

    for plan in plans:
        invited, completed = by_cell.get(plan.key, [0, 0])
        plan.invited, plan.completed = invited, completed
        prior = overall
        if plan.key is not None and len(fields) > 1 and overall > 0:
            # With several fields a cell's own history is thin: shrink it toward what its
            # values' rates say together (each value's rate relative to the overall one).
            for name, value in zip(fields, plan.key, strict=True):
                prior *= shrunk(by_value.get((name, value), [0, 0]), overall) / overall
            prior = min(max(prior, 0.0), 1.0)
        plan.expected_rate = shrunk([invited, completed], prior)


def _weights(plans: list[CellPlan], opts: Options, n_eligible: int) -> list[float]:
    """Each cell's share of the invitations, before capacity and rounding."""
    weights = []
    for plan in plans:
        w = plan.population_share
        if opts.oversample and plan.key is not None and plan.expected_rate is not None:
            # A cell that never answered still gets a finite (large) weight.
            w = w / max(plan.expected_rate, 0.01)
        weights.append(w)
    known = sum(w for p, w in zip(plans, weights, strict=True) if p.key is not None)
    known_target = sum(p.population_share for p in plans if p.key is not None)
    if known > 0:
        # Oversampling moves invitations between known cells, never into the unknown one.
        weights = [
            w * known_target / known if p.key is not None else w
            for p, w in zip(plans, weights, strict=True)
        ]
    return weights


def largest_remainder(quotas: list[float], total: int) -> list[int]:
    """Whole numbers summing to ``total``: floors, then one more to the largest fractions
    (ties to the earlier cell)."""
    floors = [math.floor(q) for q in quotas]
    left = total - sum(floors)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def allocate(weights: list[float], capacity: list[int], n: int) -> list[int]:
    """``n`` invitations over cells in proportion to ``weights``, none above its capacity.

    A cell that would get more than it has people is given them all, and what is left is
    shared again over the other cells in proportion. Cells of weight 0 are used only when
    the others are full. ``n`` must not exceed the total capacity.
    """
    if n > sum(capacity):
        raise SamplingError(f"{n} invitations but only {sum(capacity)} people")
    alloc = [0] * len(weights)
    open_cells = [i for i, c in enumerate(capacity) if c > 0]
    left = n
    while left > 0 and open_cells:
        weighted = [i for i in open_cells if weights[i] > 0]
        pool = weighted or open_cells
        basis = [weights[i] if weighted else capacity[i] for i in pool]
        total = sum(basis)
        shares = largest_remainder([left * b / total for b in basis], left)
        over = [i for i, s in zip(pool, shares, strict=True) if alloc[i] + s > capacity[i]]
        if not over:
            for i, s in zip(pool, shares, strict=True):
                alloc[i] += s
            break
        for i in over:
            left -= capacity[i] - alloc[i]
            alloc[i] = capacity[i]
            open_cells.remove(i)
    return alloc


def _last_invited(history: list[InvitationRecord]) -> dict[int, tuple[int, datetime | None]]:
    """Per person: how many invitations, and the latest."""
    out: dict[int, tuple[int, datetime | None]] = {}
    for h in history:
        count, last = out.get(h.panellist_id, (0, None))
        out[h.panellist_id] = (count + 1, h.invited_at if last is None else max(last, h.invited_at))
    return out


def choose(
    people: list[Panellist],
    k: int,
    past: dict[int, tuple[int, datetime | None]],
    opts: Options,
    rng: random.Random,
    now: datetime,
) -> tuple[list[int], int]:
    """``k`` of ``people``: at random, or by the fatigue rule. Returns (ids, how many of
    them were invited within the rule's days)."""
    if k <= 0:
        return [], 0
    if opts.min_days is None:
        return [p.id for p in rng.sample(people, k)], 0
    cutoff = now - timedelta(days=opts.min_days)

    def recent(p: Panellist) -> bool:
        entry = past.get(p.id)
        return entry is not None and entry[1] > cutoff

    def order(p: Panellist) -> tuple[bool, int, float, float]:
        count, last = past.get(p.id, (0, None))
        return (recent(p), count, last.timestamp() if last else 0.0, rng.random())

    ranked = sorted(people, key=order)[:k]
    return [p.id for p in ranked], sum(1 for p in ranked if recent(p))
