"""Weights for weighted results: raking respondents to the population's margins.

Raking (iterative proportional fitting) adjusts one weight per respondent so that, for every
field with population targets, the weighted share of each value matches the population's
share. Each pass scales the weights field by field (one ``np.bincount`` per field); the
passes stop when the largest absolute gap between a weighted share and its target is below
``weight_tolerance`` (a share: 1e-6 is 0.0001 percentage points, far below the 0.1 points
results are printed to, and reached in a few dozen passes on a panel), or after
``weight_max_iterations`` passes, when the result says it did not converge and the gap left.

Rules, said in results and in the README:

- **Unknown values.** A respondent whose value for a field is missing, or is not one of the
  field's target values, is left out of that field's margin: the field's shares are
  computed over the respondents whose value is known, and the unknown ones keep the weight
  the other fields give them. How many there are per field is reported.
- **Empty cells.** A target value no respondent has cannot be reached by any weight. It is
  named, with its share; the field is raked to the remaining values' targets rescaled to sum
  to 1, and the value's people count towards nothing. A field with no known value at all is
  named and skipped.
- **Bounds.** ``weight_bounds = [low, high]`` (relative to a mean weight of 1): weights
  outside them are trimmed to them and raking goes on. When the margins and the bounds
  cannot both hold, the weights end trimmed to the bounds and the result says the margins
  were not reached, with the gap left.

Weights are returned normalised to a mean of 1 over the respondents, with the Kish design
effect (``n * sum(w**2) / sum(w)**2``) and the effective sample size (``n / deff``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bot.plugin_api import Settings

PLUGIN = "quotas"
DEFAULT_TOLERANCE = 1e-6
DEFAULT_MAX_ITERATIONS = 1000
BOUND_SLACK = 1e-9  # a weight this close to a bound is within it (floating point)


@dataclass
class RakingResult:
    weights: np.ndarray  # one per respondent, mean 1
    converged: bool  # margins within tolerance and bounds (if any) held
    iterations: int
    max_error: float  # largest absolute gap, as a share, between a weighted share and target
    tolerance: float
    fields: list[str]  # fields raked on
    empty_cells: list[dict[str, Any]] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # respondents with no usable value
    bounds: tuple[float, float] | None = None
    bounds_held: bool | None = None

    @property
    def design_effect(self) -> float:
        return kish_design_effect(self.weights)

    @property
    def effective_n(self) -> float:
        return effective_sample_size(self.weights)

    def diagnostics(self) -> dict[str, Any]:
        """What results show about the raking (JSON-ready)."""
        w = self.weights
        return {
            "method": "raking",
            "fields": list(self.fields),
            "converged": self.converged,
            "iterations": self.iterations,
            "max_error": float(self.max_error),
            "tolerance": self.tolerance,
            "bounds": list(self.bounds) if self.bounds else None,
            "bounds_held": self.bounds_held,
            "min_weight": round(float(w.min()), 4) if w.size else None,
            "max_weight": round(float(w.max()), 4) if w.size else None,
            "empty_cells": list(self.empty_cells),
            "unknown": dict(self.unknown),
        }


class RakedWeights(dict[int, float]):
    """Weights per panellist id, as ``panelbot_results_weights`` returns them, carrying the
    raking's diagnostics (``bot/results.py`` shows them when present)."""

    diagnostics: dict[str, Any]


def kish_design_effect(weights: np.ndarray) -> float:
    """``n * sum(w**2) / sum(w)**2``: 1 for equal weights, larger the more they vary."""
    w = np.asarray(weights, dtype=float)
    total = w.sum()
    return float(w.size * np.dot(w, w) / (total * total)) if w.size and total > 0 else 1.0


def effective_sample_size(weights: np.ndarray) -> float:
    """``sum(w)**2 / sum(w**2)`` (``n / deff``): the equal-weight sample as informative."""
    w = np.asarray(weights, dtype=float)
    square_sum = np.dot(w, w)
    return float(w.sum() ** 2 / square_sum) if square_sum > 0 else 0.0


@dataclass
class _Margin:
    name: str
    codes: np.ndarray  # value index per respondent, -1 when unknown
    known: np.ndarray  # bool mask
    target: np.ndarray  # shares of the reachable values, summing to 1 (0 for empty cells)


def rake(
    columns: Mapping[str, Sequence[Any]],
    targets: Mapping[str, Mapping[str, float]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    bounds: tuple[float, float] | None = None,
) -> RakingResult:
    """Rake respondents (``columns[field][i]`` is respondent i's value) to ``targets``.

    Only fields present in both are raked; values are compared as strings.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    margins: list[_Margin] = []
    empty_cells: list[dict[str, Any]] = []
    unknown: dict[str, int] = {}
    for name, shares in targets.items():
        if name not in columns:
            continue
        values = list(shares)
        index = {str(v): i for i, v in enumerate(values)}
        raw = columns[name]
        codes = np.fromiter(
            (index.get(str(v), -1) if v is not None else -1 for v in raw), dtype=np.int64, count=n
        )
        known = codes >= 0
        if int((~known).sum()):
            unknown[name] = int((~known).sum())
        present = np.bincount(codes[known], minlength=len(values)) > 0
        target = np.array([float(shares[v]) for v in values])
        for i, v in enumerate(values):
            if not present[i] and target[i] > 0:
                empty_cells.append({"field": name, "value": str(v), "target": float(target[i])})
        target = np.where(present, target, 0.0)
        if not known.any() or target.sum() <= 0:
            continue  # nothing to rake this field on: its empty cells are named above
        margins.append(_Margin(name, codes, known, target / target.sum()))

    weights = np.ones(n)
    low, high = bounds if bounds else (0.0, np.inf)

    def margin_error(w: np.ndarray) -> float:
        worst = 0.0
        for m in margins:
            sums = np.bincount(m.codes[m.known], weights=w[m.known], minlength=m.target.size)
            worst = max(worst, float(np.abs(sums / sums.sum() - m.target).max()))
        return worst

    def within_bounds(w: np.ndarray) -> bool:
        return bool(w.min() >= low - BOUND_SLACK and w.max() <= high + BOUND_SLACK)

    iterations = 0
    error = margin_error(weights) if n else 0.0
    while n and margins:
        held = within_bounds(weights)
        if error < tolerance and held:
            break
        if iterations >= max_iterations:
            break
        if not held:
            np.clip(weights, low, high, out=weights)
        for m in margins:
            wk = weights[m.known]
            sums = np.bincount(m.codes[m.known], weights=wk, minlength=m.target.size)
            factors = np.divide(
                m.target * sums.sum(), sums, out=np.zeros_like(sums), where=sums > 0
            )
            weights[m.known] = wk * factors[m.codes[m.known]]
        weights *= n / weights.sum()
        iterations += 1
        error = margin_error(weights)

    if bounds and n and margins and not within_bounds(weights):
        # Margins and bounds cannot both hold: end with weights that keep the bounds (trimmed
        # and rescaled to mean 1 until they do) and report the margin error that leaves.
        for _ in range(100):
            np.clip(weights, low, high, out=weights)
            weights *= n / weights.sum()
            if within_bounds(weights):
                break
        error = margin_error(weights)
    bounds_held = within_bounds(weights) if (bounds and n) else None
    return RakingResult(
        weights=weights,
        converged=error < tolerance and bounds_held is not False,
        iterations=iterations,
        max_error=error,
        tolerance=tolerance,
        fields=[m.name for m in margins],
        empty_cells=empty_cells,
        unknown=unknown,
        bounds=(float(low), float(high)) if bounds else None,
        bounds_held=bounds_held,
    )


# -- configuration ---------------------------------------------------------------------------


def options(settings: Settings) -> dict[str, Any]:
    """``weight_tolerance``, ``weight_max_iterations`` and ``weight_bounds`` (or None)."""
    mine = settings.plugins.for_plugin(PLUGIN)
    bounds = mine.get("weight_bounds")
    return {
        "tolerance": float(mine.get("weight_tolerance", DEFAULT_TOLERANCE)),
        "max_iterations": int(mine.get("weight_max_iterations", DEFAULT_MAX_ITERATIONS)),
        "bounds": (float(bounds[0]), float(bounds[1])) if bounds else None,
    }


def check_config(settings: Settings) -> list[tuple[str, str]]:
    """Problems in the weighting keys of ``[plugins.quotas]``."""
    mine = settings.plugins.for_plugin(PLUGIN)
    key = f"plugins.{PLUGIN}"
    problems: list[tuple[str, str]] = []
    tolerance = mine.get("weight_tolerance", DEFAULT_TOLERANCE)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 < tolerance < 0.01
    ):
        problems.append((f"{key}.weight_tolerance", "a share above 0 and below 0.01, e.g. 1e-6"))
    iterations = mine.get("weight_max_iterations", DEFAULT_MAX_ITERATIONS)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations:
        problems.append((f"{key}.weight_max_iterations", "a whole number of at least 1"))
    bounds = mine.get("weight_bounds")
    if bounds is not None:
        ok = (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            and 0 <= bounds[0] < 1 < bounds[1]
        )
        if not ok:
            problems.append(
                (
                    f"{key}.weight_bounds",
                    "[low, high] around a mean weight of 1: 0 <= low < 1 < high, e.g. [0.2, 5]",
                )
            )
    return problems


def results_weights(
    settings: Settings,
    targets: Mapping[str, Mapping[str, float]] | None,
    respondents: list[dict[str, Any]],
) -> RakedWeights | None:
    """Raked weights per panellist id with their diagnostics, or None without targets.

    With no respondents yet the weights are empty and every target value an empty cell.
    """
    if not targets:
        return None
    columns = {f: [r["demographics"].get(f) for r in respondents] for f in targets}
    result = rake(columns, targets, **options(settings))
    weights = RakedWeights(
        (int(r["panellist_id"]), float(w)) for r, w in zip(respondents, result.weights, strict=True)
    )
    weights.diagnostics = result.diagnostics()
    return weights
