"""Does weighting make a biased panel's headline figure closer to the truth?

Usage: .venv/bin/python bench/evidence.py [--replications 200] [--seed 12] [--check]

A synthetic population of 100,000 adults has an age band, a deprivation (IMD) quintile and a
sex, and a known answer to a yes/no question whose chance of "yes" differs by group (the
young and the deprived say yes far more often, with a small age x deprivation interaction
that raking on margins cannot fully mend). Each replication recruits a panel with the bias
real panels have (older and less deprived people join more), lets its members respond with
the same kind of bias again, and estimates the population's share of "yes" from the
respondents: unweighted, and weighted by our raking (plugins/quotas/weighting.py) to the
population's own margins of the three fields. Over the replications it prints the bias and
root mean squared error (RMSE) of both estimates, their ratio (target: weighting cuts the RMSE
by at least half, a ratio of 0.5 or less), the mean design effect, and how often the 95%
margin of error results print (from the effective sample size) covers the truth.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpus, load_average, verdict  # noqa: E402
from plugins.quotas.weighting import effective_sample_size, rake  # noqa: E402

POPULATION = 100_000
PANEL = 2_000  # expected panel size
TARGET_RATIO = 0.5

AGES = ["16-34", "35-54", "55-74", "75+"]
AGE_SHARES = [0.30, 0.33, 0.26, 0.11]
AGE_JOIN = [0.5, 0.9, 1.6, 1.3]  # relative odds of joining the panel
AGE_RESPOND = [0.35, 0.45, 0.6, 0.5]  # chance a member answers this survey
AGE_EFFECT = [0.9, 0.3, -0.4, -0.9]  # on the log odds of "yes"

IMD_SHARES = [0.22, 0.21, 0.20, 0.19, 0.18]  # quintile 1 (most deprived) to 5
IMD_JOIN = [0.5, 0.8, 1.0, 1.3, 1.6]
IMD_RESPOND = [0.7, 0.85, 1.0, 1.05, 1.1]  # multiplies the age's response chance
IMD_EFFECT = [0.8, 0.4, 0.0, -0.3, -0.6]

SEXES = ["female", "male"]
SEX_SHARES = [0.51, 0.49]
SEX_JOIN = [1.25, 0.8]
SEX_EFFECT = [0.15, -0.15]


def population(rng: np.random.Generator) -> dict[str, np.ndarray]:
    age = rng.choice(len(AGES), POPULATION, p=AGE_SHARES)
    imd = rng.choice(len(IMD_SHARES), POPULATION, p=IMD_SHARES)
    sex = rng.choice(len(SEXES), POPULATION, p=SEX_SHARES)
    log_odds = (
        -0.2
        + np.take(AGE_EFFECT, age)
        + np.take(IMD_EFFECT, imd)
        + np.take(SEX_EFFECT, sex)
        + 0.3 * ((age == 0) & (imd == 0))  # the young and most deprived: more again
    )
    yes = rng.random(POPULATION) < 1 / (1 + np.exp(-log_odds))
    return {"age": age, "imd": imd, "sex": sex, "yes": yes}


def margins(people: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The population's own shares per field, as a Census table would give them."""
    found = {}
    for name in ("age", "imd", "sex"):
        counts = np.bincount(people[name])
        found[name] = {str(v): float(c / counts.sum()) for v, c in enumerate(counts)}
    return found


def replicate(
    rng: np.random.Generator, people: dict[str, np.ndarray], goal: dict
) -> tuple[float, float, float, float]:
    """(unweighted estimate, weighted estimate, design effect, weighted margin of error)."""
    join = (
        np.take(AGE_JOIN, people["age"])
        * np.take(IMD_JOIN, people["imd"])
        * np.take(SEX_JOIN, people["sex"])
    )
    joined = rng.random(POPULATION) < join * (PANEL / join.sum())
    respond = np.take(AGE_RESPOND, people["age"]) * np.take(IMD_RESPOND, people["imd"])
    answered = joined & (rng.random(POPULATION) < respond)
    yes = people["yes"][answered]
    columns = {name: people[name][answered] for name in ("age", "imd", "sex")}
    result = rake(columns, goal)
    w = result.weights
    weighted = float(np.dot(w, yes) / w.sum())
    n_eff = effective_sample_size(w)
    moe = 1.96 * math.sqrt(weighted * (1 - weighted) / n_eff)
    return float(yes.mean()), weighted, result.design_effect, moe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()

    print(f"bench/evidence.py: population {POPULATION}, panel ~{PANEL}, {args.replications} runs")
    print(f"cpus {cpus()}, load average {load_average()}")
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    people = population(rng)
    goal = margins(people)
    truth = float(people["yes"].mean())
    runs = np.array([replicate(rng, people, goal) for _ in range(args.replications)])
    plain, weighted, deff, moe = runs.T

    def rmse(estimates: np.ndarray) -> float:
        return float(np.sqrt(np.mean((estimates - truth) ** 2)))

    print(f"truth: {100 * truth:.2f}% say yes")
    print(f"{'estimate':<12} {'mean':>8} {'bias':>8} {'sd':>7} {'RMSE':>7}  (percentage points)")
    for name, estimates in (("unweighted", plain), ("weighted", weighted)):
        print(
            f"{name:<12} {100 * estimates.mean():>7.2f}% {100 * (estimates.mean() - truth):>+8.2f}"
            f" {100 * estimates.std():>7.2f} {100 * rmse(estimates):>7.2f}"
        )
    ratio = rmse(weighted) / rmse(plain)
    covered = float(np.mean(np.abs(weighted - truth) <= moe))
    print(
        f"mean design effect {deff.mean():.2f}; the weighted 95% margin of error "
        f"(mean ±{100 * moe.mean():.2f} points) covered the truth in {100 * covered:.0f}% of runs"
    )
    ok = ratio <= TARGET_RATIO
    print(
        f"RMSE weighted / unweighted: {ratio:.3f} (target <= {TARGET_RATIO}: weighting cuts "
        f"the RMSE by at least half)  {verdict(ok)}"
    )
    print(f"{time.perf_counter() - start:.1f} s; load average after: {load_average()}")
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
