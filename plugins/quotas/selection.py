"""Fair selection of a sub-panel: a lottery over quota-satisfying panels.

The lottery is a probability distribution over panels of ``size`` people that each meet
every quota; one panel is then drawn from it. ``maximin`` makes the smallest selection
probability of anyone in the pool as large as it can be (Flanigan et al., Nature 2021),
``nash`` maximises the product of the probabilities, ``legacy`` is the Sortition
Foundation's greedy draw (``sortition-algorithms``), which gives no distribution.

**Why profiles are enough.** People with the same values on every quota field (their
*profile*) are interchangeable: swapping two of them maps a quota-satisfying panel to
another one. So averaging any distribution over those swaps keeps every panel valid,
gives everyone in a profile the same probability (their mean) and never lowers the
minimum (nor the sum of logs, which is concave). An optimal distribution that treats a
profile's members alike therefore exists, and it is found by solving for how *many* of
each profile a panel takes (a vector of counts) instead of *which* people: a handful of
variables instead of one per person. Each profile's expected count is then spread
equally over its members (a uniform random subset of the drawn count), which is the
averaged distribution, so the optimum is the person-level optimum itself.

With a household field at most one person per household may sit on a panel. The same
argument then works one level up: households with the same *make-up* (the multiset of
their members' profiles) are interchangeable, and so are members of one household with
the same profile. A class is then a make-up and a profile in it: the panel takes
``x`` people of that profile from ``x`` distinct households of that make-up, the classes of
one make-up sharing its households (their counts add up to at most the number of such
households). Someone alone in the pool (no household key, or nobody else with it) is a
household of one, so without shared households this is exactly the profile method, and
with them the problem stays small (a few make-ups) instead of one variable per person.

Both optimisations are column generation: a restricted master problem over the panels
found so far (a linear program for maximin, ``scipy.optimize.linprog`` with HiGHS; a
convex one for nash, cvxpy with Clarabel) and a pricing integer program that finds the
panel most worth adding (``scipy.optimize.milp``, HiGHS), until no panel improves the
master: then the master's value is optimal for every distribution over valid panels.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

ALGORITHMS = ("maximin", "nash", "legacy")
# Column generation stops when no panel improves the objective by more than this.
TOLERANCE = 1e-9
MAX_ROUNDS = 5000


@dataclass(frozen=True)
class Quota:
    """One ``[[quota]]`` table: between ``min`` and ``max`` people with ``field = value``."""

    field: str
    value: str
    min: int
    max: int
    table: int = 0  # its position in the quota file, from 1, for messages


@dataclass(frozen=True)
class PoolMember:
    """Someone who may be selected: their id, their values of the panel fields, household."""

    id: int
    features: dict[str, str]
    household: str | None = None


@dataclass
class PersonClass:
    """People who are interchangeable for the lottery: one profile in one household make-up.

    ``make_up`` is the sorted tuple of the profiles of a household's members (``(profile,)``
    for someone alone), ``seats`` the number of households of that make-up: the most people
    the class can put on one panel.
    """

    profile: tuple[str, ...]
    members: tuple[int, ...]
    make_up: tuple[tuple[str, ...], ...] = ()
    seats: int = 0


@dataclass
class Distribution:
    """A lottery over panels, as counts per class, and what it means for each person."""

    algorithm: str
    size: int
    fields: tuple[str, ...]
    classes: list[PersonClass]
    # Per household make-up shared by more than one person: its households (member ids and
    # their profiles), which a draw shares out among the make-up's classes.
    households: dict[tuple[tuple[str, ...], ...], list[list[tuple[int, tuple[str, ...]]]]]
    panels: list[np.ndarray]  # one count per class for each panel in the lottery
    weights: np.ndarray  # probability of each panel
    probabilities: dict[int, float]  # each pool member's selection probability
    note: str = ""
    unreachable: list[int] = field(default_factory=list)  # in no valid panel at all
    # Proven: no lottery's minimum exceeds this (equal to the minimum when optimal).
    minimum_bound: float = 1.0
    optimal: bool = True  # False when the time limit stopped the search first

    @property
    def minimum(self) -> float:
        return min(self.probabilities.values()) if self.probabilities else 0.0

    def profile_rows(self) -> list[dict[str, object]]:
        """Per profile: its values, how many people, their probability, expected seats."""
        rows: dict[tuple[str, ...], dict[str, object]] = {}
        for cls in self.classes:
            row = rows.setdefault(
                cls.profile,
                {"features": dict(zip(self.fields, cls.profile, strict=True)), "people": 0},
            )
            row["people"] = int(row["people"]) + len(cls.members)
            probs = [self.probabilities[m] for m in cls.members]
            row.setdefault("_p", []).extend(probs)  # type: ignore[union-attr]
        out = []
        for profile in sorted(rows):
            row = rows[profile]
            probs = row.pop("_p")  # type: ignore[misc]
            row["minimum_probability"] = min(probs)
            row["probability"] = sum(probs) / len(probs)
            row["expected_seats"] = sum(probs)
            out.append(row)
        return out


class InfeasibleQuotas(Exception):
    """No panel of this size from this pool meets every quota."""


class SelectionProblem(Exception):
    """Anything else that stops a selection (a solver failure, too small a pool)."""


def quota_fields(quotas: Sequence[Quota]) -> tuple[str, ...]:
    """The fields the quotas name, in the order they first appear."""
    return tuple(dict.fromkeys(q.field for q in quotas))


def classes_of(
    pool: Sequence[PoolMember], fields: Sequence[str]
) -> tuple[
    list[PersonClass], dict[tuple[tuple[str, ...], ...], list[list[tuple[int, tuple[str, ...]]]]]
]:
    """Interchangeable classes of the pool, and the households of each shared make-up.

    The second value maps each make-up of more than one person to its households (each a
    list of ``(id, profile)``); classes of one such make-up share those households.
    """

    def profile_of(person: PoolMember) -> tuple[str, ...]:
        return tuple(person.features.get(f) or "" for f in fields)

    homes: dict[str, list[PoolMember]] = defaultdict(list)
    alone: list[PoolMember] = []
    for person in sorted(pool, key=lambda p: p.id):
        if person.household:
            homes[person.household].append(person)
        else:
            alone.append(person)
    units: list[list[tuple[int, tuple[str, ...]]]] = [[(p.id, profile_of(p))] for p in alone]
    units.extend([(p.id, profile_of(p)) for p in people] for _, people in sorted(homes.items()))
    by_make_up: dict[tuple[tuple[str, ...], ...], list[list[tuple[int, tuple[str, ...]]]]] = (
        defaultdict(list)
    )
    for unit in units:
        by_make_up[tuple(sorted(profile for _, profile in unit))].append(unit)
    classes: list[PersonClass] = []
    for make_up in sorted(by_make_up, key=lambda m: (len(m), m)):
        homes_of_kind = by_make_up[make_up]
        for profile in sorted(set(make_up)):
            members = sorted(pid for unit in homes_of_kind for pid, pr in unit if pr == profile)
            classes.append(PersonClass(profile, tuple(members), make_up, len(homes_of_kind)))
    shared = {m: units_ for m, units_ in by_make_up.items() if len(m) > 1}
    return classes, shared


class _Model:
    """The constraints a panel (counts per class) must meet, for the pricing programs."""

    def __init__(
        self,
        classes: list[PersonClass],
        quotas: Sequence[Quota],
        fields: Sequence[str],
        size: int,
    ) -> None:
        from scipy.optimize import Bounds, LinearConstraint

        n = len(classes)
        self.size = size
        self.sizes = np.array([len(c.members) for c in classes], dtype=float)
        seats = np.array([c.seats for c in classes], dtype=float)
        rows = [np.ones(n)]
        lower, upper = [float(size)], [float(size)]
        position = {f: i for i, f in enumerate(fields)}
        for q in quotas:
            rows.append(
                np.array([1.0 if c.profile[position[q.field]] == q.value else 0.0 for c in classes])
            )
            lower.append(float(q.min))
            upper.append(float(q.max))
        # Classes of one shared make-up take their people from distinct households of it.
        make_ups: dict[tuple[tuple[str, ...], ...], list[int]] = defaultdict(list)
        for index, c in enumerate(classes):
            make_ups[c.make_up].append(index)
        for members in make_ups.values():
            if len(members) > 1:
                row = np.zeros(n)
                row[members] = 1.0
                rows.append(row)
                lower.append(0.0)
                upper.append(float(classes[members[0]].seats))
        self.constraint = LinearConstraint(np.vstack(rows), lower, upper)
        self.bounds = Bounds(np.zeros(n), seats)
        self.integrality = np.ones(n)

    def best_panel(self, value: np.ndarray) -> np.ndarray | None:
        """The valid panel (counts per class) maximising ``value @ counts``; None if none."""
        from scipy.optimize import milp

        result = milp(
            -value,
            constraints=self.constraint,
            integrality=self.integrality,
            bounds=self.bounds,
            options={"mip_rel_gap": 0.0},
        )
        if result.status == 2:  # infeasible
            return None
        if result.x is None:
            raise SelectionProblem(f"the solver could not find a panel: {result.message}")
        return np.round(result.x).astype(np.int64)


def find_distribution(
    pool: Sequence[PoolMember],
    quotas: Sequence[Quota],
    size: int,
    algorithm: str = "maximin",
    time_limit: float | None = None,
) -> Distribution:
    """The ``maximin`` or ``nash`` lottery for this pool, size and quotas.

    With ``time_limit`` (seconds) the search stops when it runs out and the best lottery
    found so far is used: valid, but perhaps not optimal (``optimal`` False), with
    ``minimum_bound`` the proven ceiling on any lottery's minimum. Raises
    :class:`InfeasibleQuotas` when no valid panel exists.
    """
    import time

    deadline = None if time_limit is None else time.monotonic() + time_limit
    if algorithm not in ("maximin", "nash"):
        raise ValueError(f"unknown algorithm {algorithm!r}")
    if size < 1:
        raise SelectionProblem("the panel size must be at least 1")
    if size > len(pool):
        raise SelectionProblem(f"the pool has {len(pool)} people, fewer than the size {size}")
    fields = quota_fields(quotas)
    classes, households = classes_of(pool, fields)
    model = _Model(classes, quotas, fields, size)
    sizes = model.sizes
    first = model.best_panel(1.0 / sizes)
    if first is None:
        raise InfeasibleQuotas("no panel of this size meets every quota")
    panels = [first]
    weights, covered, bound, optimal = _maximin(model, panels, deadline)
    if algorithm == "nash" and optimal:
        weights, optimal = _nash(model, panels, weights, covered, deadline)
    expected = np.asarray(panels, dtype=float).T @ weights  # expected seats per class
    probabilities: dict[int, float] = {}
    unreachable: list[int] = []
    for index, cls in enumerate(classes):
        p = float(expected[index] / sizes[index])
        for member in cls.members:
            probabilities[member] = p
        if not covered[index]:
            unreachable.extend(cls.members)
    sharing = sum(len(unit) for units in households.values() for unit in units)
    note = f"{len(pool)} people in {len(classes)} classes of interchangeable people"
    if sharing:
        note += (
            f" ({sharing} share a household with someone in the pool: their"
            f" {sum(len(units) for units in households.values())} households fall into"
            f" {len(households)} make-ups)"
        )
    return Distribution(
        algorithm=algorithm,
        size=size,
        fields=fields,
        classes=classes,
        households=households,
        panels=panels,
        weights=weights,
        probabilities=probabilities,
        note=note,
        unreachable=sorted(unreachable),
        minimum_bound=bound,
        optimal=optimal,
    )


def _maximin(
    model: _Model, panels: list[np.ndarray], deadline: float | None = None
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Weights over ``panels`` (extended in place) maximising the minimum probability.

    Classes that no valid panel contains are left out of the minimum (their probability is
    0 whatever the lottery); the second array says which classes are covered. Then the
    proven ceiling on the minimum, and whether the weights are optimal (False when
    ``deadline``, a ``time.monotonic()`` value, passed first).
    """
    import time

    from scipy.optimize import linprog

    sizes = model.sizes
    n = len(sizes)
    covered = np.zeros(n, dtype=bool)
    for panel in panels:
        covered |= panel > 0
    # Cover every class that some panel can contain, so the minimum can be above zero:
    # first panels reaching as many uncovered classes as they can, then one class at a
    # time for the rest (a class no panel reaches stays out of the minimum).
    while not covered.all():
        value = (~covered).astype(float)
        panel = model.best_panel(value)
        if panel is None or not ((panel > 0) & ~covered).any():
            break
        panels.append(panel)
        covered |= panel > 0
    for index in np.flatnonzero(~covered):
        if covered[index]:
            continue
        value = np.zeros(n)
        value[index] = 1.0
        panel = model.best_panel(value)
        if panel is not None and panel[index] > 0:
            panels.append(panel)
            covered |= panel > 0
    active = np.flatnonzero(covered)
    # Every seat goes to someone in a covered class: the minimum is at most their mean.
    bound = min(1.0, model.size / float(sizes[active].sum()))
    for rounds in range(MAX_ROUNDS + 1):
        matrix = np.asarray(panels, dtype=float)[:, active] / sizes[active]  # panels x classes
        count = len(panels)
        # Variables: weights (one per panel), then z. Maximise z.
        cost = np.zeros(count + 1)
        cost[-1] = -1.0
        a_ub = np.hstack([-matrix.T, np.ones((len(active), 1))])  # z - P(class) <= 0
        a_eq = np.hstack([np.ones((1, count)), np.zeros((1, 1))])
        result = linprog(
            cost,
            A_ub=a_ub,
            b_ub=np.zeros(len(active)),
            A_eq=a_eq,
            b_eq=[1.0],
            bounds=[(0, None)] * count + [(None, None)],
            method="highs",
        )
        if result.status != 0:
            raise SelectionProblem(f"the lottery program failed: {result.message}")
        z = -result.fun
        duals = np.zeros(n)
        duals[active] = np.maximum(-result.ineqlin.marginals, 0.0)
        panel = model.best_panel(duals / sizes)
        assert panel is not None  # the first panel exists, so the program is feasible
        # Weak duality: no lottery gives every class more than this weighted mean allows.
        best = float(duals / sizes @ panel)
        bound = min(bound, best)
        weights = np.clip(result.x[:count], 0.0, None)
        weights = weights / weights.sum()
        if best <= z + TOLERANCE or any(np.array_equal(panel, known) for known in panels):
            return weights, covered, z, True
        if rounds == MAX_ROUNDS or (deadline is not None and time.monotonic() > deadline):
            return weights, covered, max(bound, z), False
        panels.append(panel)
    raise AssertionError("unreachable")


def _nash(
    model: _Model,
    panels: list[np.ndarray],
    start: np.ndarray,
    covered: np.ndarray,
    deadline: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Weights over ``panels`` (extended in place) maximising the sum of log probabilities,
    and whether they are optimal (False when ``deadline`` passed first)."""
    import time

    import cvxpy as cp

    sizes = model.sizes
    active = np.flatnonzero(covered)
    people = sizes[active]
    weights = start
    for _ in range(MAX_ROUNDS):
        matrix = np.asarray(panels, dtype=float)[:, active] / people  # panels x classes
        lam = cp.Variable(len(panels), nonneg=True)
        objective = cp.Maximize(people @ cp.log(matrix.T @ lam))
        problem = cp.Problem(objective, [cp.sum(lam) == 1])
        try:
            with warnings.catch_warnings():
                # "Solution may be inaccurate" at these tight tolerances: the pricing step
                # below checks optimality itself.
                warnings.simplefilter("ignore")
                problem.solve(
                    solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10
                )
        except cp.error.SolverError as exc:
            raise SelectionProblem(f"the nash program failed: {exc}") from None
        if lam.value is None:
            raise SelectionProblem(f"the nash program failed: {problem.status}")
        weights = np.clip(lam.value, 0.0, None)
        weights = weights / weights.sum()
        probs = np.maximum(matrix.T @ weights, 1e-12)
        # Optimal when no panel's gradient value beats the current mix's (which is sum(n)).
        value = np.zeros(len(sizes))
        value[active] = 1.0 / probs
        panel = model.best_panel(value)
        assert panel is not None
        if float(value @ panel) <= people.sum() * (1 + 1e-6) or any(
            np.array_equal(panel, known) for known in panels
        ):
            return weights, True
        if deadline is not None and time.monotonic() > deadline:
            return weights, False
        panels.append(panel)
    return weights, False


def draw(distribution: Distribution, rng: np.random.Generator) -> list[int]:
    """One panel from the lottery: a panel by its weight, then members uniformly per class."""
    weights = distribution.weights / distribution.weights.sum()
    index = int(rng.choice(len(weights), p=weights))
    panel = distribution.panels[index]
    chosen: list[int] = []
    # Households of a shared make-up, in a random order, go to its classes in turn; each
    # gives one member of the class's profile, at random among its members of that profile.
    queues = {
        make_up: [units[i] for i in rng.permutation(len(units))]
        for make_up, units in sorted(distribution.households.items())
    }
    for cls, count in zip(distribution.classes, panel, strict=True):
        if not count:
            continue
        if cls.make_up in queues:
            queue = queues[cls.make_up]
            taken, queues[cls.make_up] = queue[: int(count)], queue[int(count) :]
            for unit in taken:
                fits = [pid for pid, profile in unit if profile == cls.profile]
                chosen.append(int(fits[int(rng.integers(len(fits)))]))
        else:
            picked = rng.choice(np.array(cls.members), size=int(count), replace=False)
            chosen.extend(int(x) for x in picked)
    return sorted(chosen)


def panel_meets(
    ids: Iterable[int], pool: Sequence[PoolMember], quotas: Sequence[Quota], size: int
) -> list[str]:
    """What is wrong with a drawn panel (empty when it meets size, quotas and households)."""
    by_id = {p.id: p for p in pool}
    chosen = [by_id[i] for i in ids]
    problems = []
    if len(chosen) != size:
        problems.append(f"{len(chosen)} people, not {size}")
    for q in quotas:
        count = sum(1 for p in chosen if p.features.get(q.field) == q.value)
        if not q.min <= count <= q.max:
            problems.append(f"{q.field} = {q.value}: {count} not in [{q.min}, {q.max}]")
    households = [p.household for p in chosen if p.household]
    if len(households) != len(set(households)):
        problems.append("two people from one household")
    return problems


def reserves(
    pool: Sequence[PoolMember],
    selected: Sequence[int],
    fields: Sequence[str],
    count: int,
    rng: np.random.Generator,
) -> list[int]:
    """An ordered reserve list from the people not selected, mirroring the panel's make-up.

    Each next reserve comes from the profile the list is most short of, measured against
    the selected panel's profile shares, so the first reserves can stand in for drop-outs
    without moving the panel off its quotas; a profile with nobody left is skipped. People
    sharing a household with someone selected (or with an earlier reserve) are left out.
    """
    chosen = set(selected)
    used_households = {p.household for p in pool if p.id in chosen and p.household}
    remaining: dict[tuple[str, ...], list[int]] = defaultdict(list)
    household_of = {p.id: p.household for p in pool}
    for person in sorted(pool, key=lambda p: p.id):
        if person.id in chosen or (person.household and person.household in used_households):
            continue
        remaining[tuple(person.features.get(f) or "" for f in fields)].append(person.id)
    for ids in remaining.values():
        rng.shuffle(ids)
    panel_share: dict[tuple[str, ...], float] = defaultdict(float)
    by_id = {p.id: p for p in pool}
    for pid in selected:
        panel_share[tuple(by_id[pid].features.get(f) or "" for f in fields)] += 1 / len(selected)
    taken: dict[tuple[str, ...], int] = defaultdict(int)
    out: list[int] = []
    while len(out) < count:
        available = [profile for profile, ids in remaining.items() if ids]
        if not available:
            break
        position = len(out) + 1
        profile = max(
            sorted(available),
            key=lambda pr: (panel_share.get(pr, 0.0) * position - taken[pr], len(remaining[pr])),
        )
        pid = remaining[profile].pop()
        household = household_of[pid]
        if household:
            if household in used_households:
                continue
            used_households.add(household)
        taken[profile] += 1
        out.append(pid)
    return out


def legacy_draw(
    pool: Sequence[PoolMember],
    quotas: Sequence[Quota],
    size: int,
    seed: int,
    household: bool,
) -> list[int]:
    """One panel by ``sortition-algorithms``' LEGACY greedy method, seeded."""
    from sortition_algorithms import errors
    from sortition_algorithms.committee_generation import find_random_sample_legacy
    from sortition_algorithms.utils import set_random_provider

    features, people, columns = library_inputs(pool, quotas, size, household)
    # The library's own generator; a seed of 0 would mean "unseeded" to it.
    set_random_provider(seed or 1)
    try:
        # Anything it prints (rather than logs) is not for our stdout either.
        with contextlib.redirect_stdout(io.StringIO()):
            committees, _report = find_random_sample_legacy(
                people, features, size, columns, max_attempts=100
            )
    except errors.InfeasibleQuotasError as exc:
        raise InfeasibleQuotas(relaxation_text(exc.features, quotas)) from None
    except errors.SortitionBaseError as exc:
        raise SelectionProblem(f"the legacy method failed: {exc}") from None
    finally:
        set_random_provider(None)
    return sorted(int(key) for key in committees[0])


def library_inputs(
    pool: Sequence[PoolMember], quotas: Sequence[Quota], size: int, household: bool
) -> tuple[dict, object, list[str]]:
    """The pool and quotas as ``sortition-algorithms`` wants them.

    The library wants a min and max for every value present in the pool: values the quota
    file does not name get 0 to ``size``.
    """
    from requests.structures import CaseInsensitiveDict
    from sortition_algorithms.features import FeatureValueMinMax
    from sortition_algorithms.people import People

    _quiet_library()
    fields = quota_fields(quotas)
    features: dict[str, dict[str, FeatureValueMinMax]] = {}
    for f in fields:
        values = CaseInsensitiveDict()
        for person in pool:
            value = person.features.get(f) or ""
            values[value] = FeatureValueMinMax(min=0, max=size, max_flex=len(pool) + size)
        features[f] = values
    for q in quotas:
        features[q.field][q.value] = FeatureValueMinMax(
            min=q.min, max=q.max, max_flex=len(pool) + size
        )
    columns = ["household"] if household else []
    people = People(columns)
    for row, person in enumerate(sorted(pool, key=lambda p: p.id)):
        data = {f: person.features.get(f) or "" for f in fields}
        if household:
            # Someone without a household key is a household of their own.
            data["household"] = person.household or f"\x00{person.id}"
        people.add(str(person.id), data, features, row + 1)
    return features, people, columns


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """File descriptor 1 to /dev/null: HiGHS prints its banner from C++, past sys.stdout,
    and the command's stdout may be JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _quiet_library() -> None:
    # sortition-algorithms prints its progress on stdout (which holds our JSON): send its
    # loggers through ours instead, errors only.
    import logging

    for name in ("sortition_algorithms", "sortition_algorithms_user"):
        library_logger = logging.getLogger(name)
        for handler in library_logger.handlers[:]:
            library_logger.removeHandler(handler)
        # Its warnings are progress ("Trial number: 1"), not problems: errors only.
        library_logger.setLevel(logging.ERROR)
        library_logger.propagate = True


def relaxation(
    pool: Sequence[PoolMember], quotas: Sequence[Quota], size: int, household: bool
) -> str:
    """``sortition-algorithms``' suggested relaxation for infeasible quotas, as one line.

    Its integer program changes the fewest quota places (lowering a small minimum counts
    for more than raising a maximum) so that some valid panel exists.
    """
    from sortition_algorithms import errors
    from sortition_algorithms.committee_generation.common import setup_committee_generation

    features, people, columns = library_inputs(pool, quotas, size, household)
    try:
        with _quiet_stdout():
            setup_committee_generation(features, people, size, columns)
    except errors.InfeasibleQuotasError as exc:
        return relaxation_text(exc.features, quotas)
    except errors.InfeasibleQuotasCantRelaxError:
        return "no relaxation of the quotas helps (the pool is too small for this size)"
    return "the library found a valid panel after all; run again"


def relaxation_text(relaxed: dict, quotas: Sequence[Quota]) -> str:
    """The changes from ``quotas`` to the library's relaxed features, naming each table."""
    changes = []
    for q in quotas:
        new = relaxed[q.field][q.value]
        if new.min != q.min:
            changes.append(f"[[quota]] #{q.table} ({q.field} = {q.value}) min {q.min} -> {new.min}")
        if new.max != q.max:
            changes.append(f"[[quota]] #{q.table} ({q.field} = {q.value}) max {q.max} -> {new.max}")
    return "; ".join(changes) if changes else "no change to the quotas helps"


def gini(values: Iterable[float]) -> float:
    """Gini coefficient of selection probabilities (0: everyone equal)."""
    data = np.sort(np.asarray(list(values), dtype=float))
    if data.size == 0 or data.sum() == 0:
        return 0.0
    ranks = np.arange(1, data.size + 1)
    # Rounding can leave a tiny negative for equal values.
    return max(0.0, float((2 * ranks - data.size - 1) @ data / (data.size * data.sum())))


def geometric_mean(values: Iterable[float]) -> float:
    data = [v for v in values]
    if not data or min(data) <= 0:
        return 0.0
    return math.exp(sum(math.log(v) for v in data) / len(data))
