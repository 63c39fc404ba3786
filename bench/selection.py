"""Fair selection: our maximin over feature profiles against the published references and
against ``sortition-algorithms``' own maximin, on the two public instances.

Data: ``../shared/data/selection/{example_small_20,example_large_200}`` (``--data`` to
point elsewhere), from the replication material of Flanigan et al., "Fair algorithms for
selecting citizens' assemblies" (Nature, 2021): ``respondents.csv`` (one row per pool
member, row number as id), ``categories.csv`` (category, feature, min, max) and
``reference_statistics.txt`` (the published minimum selection probability of LEXIMIN,
10.0% on both, and of LEGACY, at most 1.21% and 0.25%).

Per instance:

- **ours** (``plugins.quotas.selection.find_distribution``, maximin and nash): the time
  to the optimal lottery (column generation over profile-count vectors, HiGHS), its minimum
  selection probability, and whether 1,000 panels drawn from it all meet the quotas;
- **sortition-algorithms** ``find_distribution_maximin`` (HiGHS backend) on the same pool,
  in a child process with a time limit (``--library-timeout``, 120 s by default): its time
  and minimum, or "did not finish in N s";
- the ratio of our minimum to the LEXIMIN reference (target: at least 1, i.e. 10.0%), to
  LEGACY's bound, and of the library's time to ours (same run).

Target for ``example_large_200``: ours within 60 s.

Then, with no reference to compare with, ``example_large_200`` with households (a
synthetic key pairing rows 1-400 into 200 two-person households, at most one per
household on the panel): our maximin's time, classes and minimum; and a synthetic pool
where the profile method helps little: 2,000 people with 5 random fields (7, 2, 5, 5 and 5
values, seeded), a panel of 60 within 15% of each value's share, searched for at most
``--hard-seconds`` (60): the minimum reached, the proven ceiling and their ratio.

    .venv/bin/python bench/selection.py [--data DIR] [--library-timeout S]
                                        [--skip-library] [--check]

Exit code 0 whatever the figures; with ``--check``, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import cpus, load_average, verdict  # noqa: E402
from plugins.quotas import selection  # noqa: E402
from plugins.quotas.selection import PoolMember, Quota  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "selection"
INSTANCES = {
    # name: (panel size, published LEXIMIN minimum, published LEGACY upper bound)
    "example_small_20": (20, 0.100, 0.0121),
    "example_large_200": (200, 0.100, 0.0025),
}
LARGE_SECONDS = 60.0
DRAWS = 1000


def load(folder: Path) -> tuple[list[PoolMember], list[Quota]]:
    with (folder / "respondents.csv").open(encoding="utf-8", newline="") as f:
        pool = [PoolMember(i, dict(row)) for i, row in enumerate(csv.DictReader(f), start=1)]
    with (folder / "categories.csv").open(encoding="utf-8", newline="") as f:
        quotas = [
            Quota(row["category"], row["feature"], int(row["min"]), int(row["max"]), n)
            for n, row in enumerate(csv.DictReader(f), start=1)
        ]
    return pool, quotas


def ours(pool: list[PoolMember], quotas: list[Quota], size: int, algorithm: str) -> dict:
    import numpy as np

    start = time.perf_counter()
    dist = selection.find_distribution(pool, quotas, size, algorithm)
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(2021)
    bad = sum(
        1
        for _ in range(DRAWS)
        if selection.panel_meets(selection.draw(dist, rng), pool, quotas, size)
    )
    probs = list(dist.probabilities.values())
    return {
        "seconds": seconds,
        "minimum": dist.minimum,
        "sum": sum(probs),
        "gini": selection.gini(probs),
        "classes": len(dist.classes),
        "panels": int((dist.weights > 0).sum()),
        "bad_draws": bad,
    }


def library_child(folder: Path, size: int) -> None:
    """Run in a child process: sortition-algorithms' maximin, printed as one JSON line."""
    from sortition_algorithms.committee_generation import find_distribution_maximin

    pool, quotas = load(folder)
    features, people, columns = selection.library_inputs(pool, quotas, size, household=False)
    start = time.perf_counter()
    committees, probabilities, _ = find_distribution_maximin(features, people, size, columns)
    seconds = time.perf_counter() - start
    chance = dict.fromkeys(people, 0.0)
    for committee, p in zip(committees, probabilities, strict=True):
        for member in committee:
            chance[member] += p
    print(json.dumps({"seconds": seconds, "minimum": min(chance.values())}))


def library(folder: Path, size: int, timeout: float) -> dict | None:
    """The library's figures, or None when it did not finish within ``timeout``."""
    command = [sys.executable, __file__, "--library-child", str(folder), "--size", str(size)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"sortition-algorithms failed: {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--library-timeout", type=float, default=120.0)
    parser.add_argument("--skip-library", action="store_true")
    parser.add_argument("--hard-seconds", type=float, default=60.0)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--library-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_child:
        library_child(args.library_child, args.size)
        return 0

    print(f"bench/selection.py: python {platform.python_version()}, {cpus()} CPUs")
    print(f"load average before: {load_average()}")
    # Imported before any timing: the solvers' import time is not the algorithm's.
    import cvxpy  # noqa: F401
    import scipy.optimize  # noqa: F401

    ok = True
    for name, (size, leximin, legacy) in INSTANCES.items():
        folder = args.data / name
        pool, quotas = load(folder)
        print(f"\n{name}: pool {len(pool)}, panel {size}, {len(quotas)} quotas")
        print(f"  published: LEXIMIN minimum {leximin:.1%}, LEGACY minimum <= {legacy:.2%}")
        mine = ours(pool, quotas, size, "maximin")
        nash = ours(pool, quotas, size, "nash")
        for label, figures in (("ours maximin", mine), ("ours nash   ", nash)):
            print(
                f"  {label}: minimum {figures['minimum']:.4%} in {figures['seconds']:.3f} s "
                f"({figures['classes']} profiles, {figures['panels']} panels in the lottery, "
                f"probabilities sum to {figures['sum']:.6f}, gini {figures['gini']:.4f}; "
                f"{DRAWS - figures['bad_draws']}/{DRAWS} draws meet every quota)"
            )
        reached = mine["minimum"] >= leximin - 1e-9
        print(
            f"  our minimum / LEXIMIN reference: {mine['minimum'] / leximin:.4f} "
            f"(target >= 1): {verdict(reached)}"
        )
        print(f"  our minimum / LEGACY bound: {mine['minimum'] / legacy:.1f}x")
        ok = ok and reached and mine["bad_draws"] == 0
        if name == "example_large_200":
            fast = mine["seconds"] <= LARGE_SECONDS
            print(
                f"  our time / {LARGE_SECONDS:.0f} s target: "
                f"{mine['seconds'] / LARGE_SECONDS:.5f}: {verdict(fast)}"
            )
            ok = ok and fast
        if args.skip_library:
            print("  sortition-algorithms maximin: skipped (--skip-library)")
            continue
        theirs = library(folder, size, args.library_timeout)
        if theirs is None:
            print(
                f"  sortition-algorithms maximin (HiGHS): did not finish in "
                f"{args.library_timeout:.0f} s (ours is at least "
                f"{args.library_timeout / mine['seconds']:.0f}x faster)"
            )
        else:
            print(
                f"  sortition-algorithms maximin (HiGHS): minimum {theirs['minimum']:.4%} in "
                f"{theirs['seconds']:.3f} s; its time / ours: "
                f"{theirs['seconds'] / mine['seconds']:.0f}x; minimum ours - theirs: "
                f"{mine['minimum'] - theirs['minimum']:+.2e}"
            )
    pool, quotas = load(args.data / "example_large_200")
    paired = [
        PoolMember(p.id, p.features, f"home{(p.id - 1) // 2}" if p.id <= 400 else None)
        for p in pool
    ]
    start = time.perf_counter()
    dist = selection.find_distribution(paired, quotas, 200, "maximin")
    seconds = time.perf_counter() - start
    print(
        f"\nexample_large_200 with 200 two-person households (synthetic): ours maximin minimum "
        f"{dist.minimum:.4%} in {seconds:.3f} s; {dist.note}"
    )
    import numpy as np

    rng = np.random.default_rng(3)
    values = {"age_band": 7, "sex": 2, "imd_quintile": 5, "locality": 5, "ethnicity": 5}
    hard = [
        PoolMember(i, {f: str(rng.integers(v)) for f, v in values.items()}) for i in range(2000)
    ]
    hard_quotas = []
    for f, v in values.items():
        for x in range(v):
            share = sum(1 for p in hard if p.features[f] == str(x)) / len(hard)
            low, high = int(np.floor(share * 60 * 0.85)), int(np.ceil(share * 60 * 1.15))
            hard_quotas.append(Quota(f, str(x), low, high, len(hard_quotas) + 1))
    start = time.perf_counter()
    dist = selection.find_distribution(hard, hard_quotas, 60, "maximin", args.hard_seconds)
    seconds = time.perf_counter() - start
    print(
        f"\nsynthetic pool of 2000 in {len(dist.classes)} profiles, panel 60, "
        f"{len(hard_quotas)} quotas: ours maximin minimum {dist.minimum:.4%} in {seconds:.1f} s "
        f"({'optimal' if dist.optimal else 'stopped at the time limit'}); proven ceiling "
        f"{dist.minimum_bound:.4%}; minimum / ceiling {dist.minimum / dist.minimum_bound:.3f}"
    )
    print(f"\nload average after: {load_average()}")
    print(f"all targets: {verdict(ok)}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
