"""Proportions and their difference, with 95% intervals (no numpy needed).

The impact-loop figure compares two response rates. Its interval is Newcombe's hybrid
score interval for a difference of independent proportions (Newcombe 1998, method 10),
built from each rate's Wilson score interval: unlike the Wald interval it stays inside
[-1, 1] and keeps close to its nominal 95% cover with small groups and rates near 0 or 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
METHOD = "Newcombe hybrid score interval (from Wilson intervals), 95%"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes / n``; ``n`` must be at least 1."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """``p1 - p2`` with its 95% interval (``low``, ``high``)."""

    x1: int
    n1: int
    x2: int
    n2: int
    difference: float
    low: float
    high: float

    @property
    def p1(self) -> float:
        return self.x1 / self.n1

    @property
    def p2(self) -> float:
        return self.x2 / self.n2


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Difference:
    """Difference of two independent proportions ``x1/n1 - x2/n2`` with Newcombe's interval."""
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    p1, p2 = x1 / n1, x2 / n2
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(x1, n1, x2, n2, d, max(-1.0, low), min(1.0, high))
