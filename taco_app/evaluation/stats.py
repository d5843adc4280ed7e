"""The few statistics an evaluation report needs, in plain Python (no numpy or scipy at run time).

- `wilson(k, n)`: the Wilson score interval for a proportion k/n, without continuity correction —
  the same numbers as `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")` (Newcombe's
  formulas, with the bound at 0 or 1 exact when k is 0 or n).
- `mcnemar_exact(b, c)`: McNemar's exact test on two runs over the same items: b items only the
  first got right, c only the second. The two-sided binomial p of b successes in b + c trials at
  1/2, as `scipy.stats.binomtest(b, b + c, 0.5).pvalue`, computed with exact integers.
- `percentile(values, q)`: q in 0–100, linear interpolation between the closest ranks, as
  `numpy.percentile`'s default.

The tests check all three against scipy and numpy.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["wilson", "mcnemar_exact", "percentile"]

Z95 = 1.959963984540054  # the 97.5% point of the standard normal: a two-sided 95% interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lo, hi) for k successes in n trials; (0.0, 1.0) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson needs 0 <= k <= n, not k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    q = 1 - p
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * q + z**2)
    lo = 0.0 if k == 0 else center - delta
    hi = 1.0 if k == n else center + delta
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact binomial p on the discordant pairs (b, c); 1.0 when b + c == 0."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0, not b={b}, c={c}")
    n = b + c
    if n == 0 or b == c:
        return 1.0
    # The distribution is symmetric at 1/2: p = 2 * P(X <= min(b, c)), summed as exact integers.
    tail = 0
    term = 1  # C(n, 0)
    for i in range(min(b, c) + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 <= q <= 100) by linear interpolation; None when there are no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile needs 0 <= q <= 100, not {q}")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * (q / 100)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    t = position - below
    a, b = ordered[below], ordered[above]
    # numpy's lerp: from the nearer end, so that t == 1 gives b exactly.
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)
