"""Raking 10,000 respondents on 5 fields: ours against balance (Meta) and weightipy.

Usage: .venv/bin/python bench/weighting.py [--n 10000] [--repeats 5] [--check]

The same seeded respondents and population margins go through our raking
(plugins/quotas/weighting.py, in this process) and through the peers, which run in their
own venv (.venv-peers, made by ``make bench``) as bench/_weighting_peers.py on the same
data written to a temporary .npz. Each process times its own raking (median of the
repeats). Printed: per method its time, iterations and largest margin gap left (measured
here, the same way for all); per peer the largest difference between its weights and ours
(all normalised to mean 1); our time against the 0.5 s target and against the fastest peer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpus, load_average, verdict  # noqa: E402
from plugins.quotas.weighting import rake  # noqa: E402

PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TARGET_SECONDS = 0.5
TARGET_DIFFERENCE = 1e-6
TOLERANCE = 1e-10  # the peers are run to the same precision (_weighting_peers.py)

# Population shares (an English ICS-like profile) and how the panel over- or
# under-represents each value (relative odds of being a respondent).
FIELDS: dict[str, dict[str, tuple[float, float]]] = {
    "age_band": {
        "16-24": (0.1350, 0.35),
        "25-34": (0.1650, 0.6),
        "35-44": (0.1600, 0.9),
        "45-54": (0.1650, 1.1),
        "55-64": (0.1550, 1.5),
        "65-74": (0.1200, 2.0),
        "75+": (0.1000, 1.4),
    },
    "sex": {"female": (0.5100, 1.3), "male": (0.4900, 0.8)},
    "imd_quintile": {
        "1": (0.2200, 0.5),
        "2": (0.2100, 0.8),
        "3": (0.2000, 1.0),
        "4": (0.1900, 1.3),
        "5": (0.1800, 1.5),
    },
    "ethnicity": {
        "white": (0.8100, 1.1),
        "asian": (0.0900, 0.6),
        "black": (0.0400, 0.5),
        "mixed": (0.0300, 0.7),
        "other": (0.0300, 0.6),
    },
    "locality": {
        "north": (0.2600, 1.0),
        "south": (0.2400, 1.2),
        "east": (0.2700, 0.8),
        "west": (0.2300, 1.0),
    },
}


def respondents(n: int, seed: int = 20261206) -> dict[str, np.ndarray]:
    """n respondents drawn with each field's bias; the oldest lean less deprived."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for name, values in FIELDS.items():
        labels = np.array(list(values))
        odds = np.array([share * bias for share, bias in values.values()])
        columns[name] = rng.choice(labels, n, p=odds / odds.sum())
    older = np.isin(columns["age_band"], ["65-74", "75+"])
    resample = older & (rng.random(n) < 0.3)
    columns["imd_quintile"][resample] = rng.choice(["4", "5"], int(resample.sum()))
    return columns


def targets() -> dict[str, dict[str, float]]:
    return {name: {v: share for v, (share, _) in values.items()} for name, values in FIELDS.items()}


def margin_gap(columns: dict[str, np.ndarray], weights: np.ndarray, goal: dict) -> float:
    """The largest absolute gap between a weighted share and its target."""
    total = weights.sum()
    return max(
        abs(weights[columns[f] == v].sum() / total - share)
        for f, shares in goal.items()
        for v, share in shares.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    print(f"bench/weighting.py: {args.n} respondents x {len(FIELDS)} fields")
    print(f"cpus {cpus()}, load average {load_average()}")
    columns = respondents(args.n)
    goal = targets()

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = rake(columns, goal, tolerance=TOLERANCE)
        times.append(time.perf_counter() - start)
    our_time = statistics.median(times)
    rows = [("ours", our_time, ours.iterations, margin_gap(columns, ours.weights, goal), None)]
    print(
        f"ours: converged {ours.converged}, design effect {ours.design_effect:.3f}, "
        f"effective sample size {ours.effective_n:.0f}"
    )

    peers: dict[str, dict] = {}
    if not PEERS_PYTHON.exists():
        print(f"peers: {PEERS_PYTHON.relative_to(ROOT)} is missing; make it with `make bench`")
    else:
        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "in.npz", Path(folder) / "out.npz"
            np.savez(source, targets=json.dumps(goal), **columns)
            script = ROOT / "bench" / "_weighting_peers.py"
            repeats = max(1, min(args.repeats, 3))
            run = subprocess.run(
                [str(PEERS_PYTHON), str(script), str(source), str(target), str(repeats)],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if run.returncode != 0:
                print(f"peers: failed ({run.stderr.strip().splitlines()[-1:]})")
            else:
                found = np.load(target)
                for line in run.stdout.splitlines():
                    if line.startswith("{"):
                        info = json.loads(line)
                        if "error" in info:
                            print(f"{info['peer']}: failed: {info['error']}")
                            continue
                        weights = found[info["peer"]]
                        info["difference"] = float(np.abs(weights - ours.weights).max())
                        info["gap"] = margin_gap(columns, weights, goal)
                        peers[info["peer"]] = info
        for name, info in peers.items():
            rows.append((name, info["seconds"], info["iterations"], info["gap"], info))

    print()
    print(f"{'method':<10} {'seconds':>9} {'iterations':>10} {'margin gap':>11}  weights vs ours")
    for name, seconds, iterations, gap, info in rows:
        versus = "" if info is None else f"largest difference {info['difference']:.2e}"
        print(f"{name:<10} {seconds:>9.4f} {iterations:>10} {gap:>11.1e}  {versus}")
    print()

    ok = our_time <= TARGET_SECONDS
    print(
        f"ours {our_time:.4f} s vs target {TARGET_SECONDS} s: "
        f"{our_time / TARGET_SECONDS:.3f} of it  {verdict(ok)}"
    )
    if peers:
        fastest = min(peers.values(), key=lambda i: i["seconds"])
        ratio = our_time / fastest["seconds"]
        ok &= ratio <= 1.0
        print(
            f"ours vs the fastest peer ({fastest['peer']}, {fastest['seconds']:.4f} s): "
            f"{ratio:.3f}x its time  {verdict(ratio <= 1.0)}"
        )
        for name, info in peers.items():
            both = info["gap"] < TARGET_DIFFERENCE and ours.max_error < TARGET_DIFFERENCE
            close = info["difference"] <= TARGET_DIFFERENCE
            if both:
                ok &= close
                state = verdict(close)
            else:
                state = "n/a (a method did not reach its margins)"
            print(
                f"weights vs {name}: largest difference {info['difference']:.2e} "
                f"(target <= {TARGET_DIFFERENCE:g} where both converge)  {state}"
            )
    print(f"load average after: {load_average()}")
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
