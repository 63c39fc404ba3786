"""The peers of bench/weighting.py, run under .venv-peers/bin/python (balance, weightipy).

Usage: _weighting_peers.py IN.npz OUT.npz REPEATS

IN.npz holds one string array per field and ``targets`` (JSON: field -> value -> share).
Each peer rakes the same respondents to the same margins; its time is measured here, in its
own process (the median of REPEATS runs, data already in a DataFrame). OUT.npz gets each
peer's weights (normalised to mean 1); stdout gets one JSON line of figures per peer.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

TOLERANCE = 1e-10  # near machine precision, so that every method stops at the same answer


def balance_rake(df: pd.DataFrame, targets: dict) -> tuple[np.ndarray, dict]:
    from balance.weighting_methods.rake import rake

    result = rake(
        df,
        pd.Series(np.ones(len(df))),
        None,
        None,
        variables=list(targets),
        transformations=None,
        na_action="drop",
        max_iteration=1000,
        convergence_rate=TOLERANCE,
        rate_tolerance=0.0,
        target_margins=targets,
    )
    model = result["model"]
    return result["weight"].to_numpy(), {
        "iterations": len(model["iterations"]),
        "says_converged": bool(model["converged"]),
    }


def weightipy_rake(df: pd.DataFrame, targets: dict) -> tuple[np.ndarray, dict]:
    import weightipy

    percent = {f: {v: 100.0 * s for v, s in shares.items()} for f, shares in targets.items()}
    # convcrit is not passed on to the raking by weightipy 0.4.2 (it stops when an iteration
    # changes the weights by less than 1% less than the one before); max_iterations is.
    scheme = weightipy.scheme_from_dict(
        percent, name="bench", rim_params={"max_iterations": 1000, "convcrit": TOLERANCE}
    )
    weights = weightipy.weight(df, scheme)
    iterations = scheme.groups["global_group"]["iterations"]
    return weights.to_numpy(), {"iterations": int(iterations), "says_converged": None}


def main() -> None:
    source, target, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    data = np.load(source)
    targets = json.loads(str(data["targets"]))
    df = pd.DataFrame({f: data[f].astype(str) for f in targets})
    out: dict[str, np.ndarray] = {}
    for name, run in (("balance", balance_rake), ("weightipy", weightipy_rake)):
        try:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                weights, info = run(df.copy(), targets)
                times.append(time.perf_counter() - start)
        except Exception as exc:  # a peer's failure is a figure too, not a crash of the bench
            print(json.dumps({"peer": name, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        out[name] = weights / weights.mean()
        print(json.dumps({"peer": name, "seconds": statistics.median(times), **info}))
    np.savez(target, **out)


if __name__ == "__main__":
    main()
