"""Counts and 95% intervals for shares (accuracies, agreements, win rates).

`wilson(k, n)`: the Wilson score interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend
it over the normal approximation for small n): with p = k / n and z = 1.96,
    centre = (p + z^2 / 2n) / (1 + z^2 / n),
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).
k may be fractional (a win rate where a tie counts 1/2); the interval is then approximate.
"""

from __future__ import annotations

import math


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (z = 1.96) Wilson interval of a share of k hits out of n; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z / d * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def share_record(k: float, n: int) -> dict:
    """{"value", "n", "ci95": [lo, hi]} of k hits out of n (value None when n = 0)."""
    lo, hi = wilson(k, n)
    return {"value": k / n if n else None, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def show_share(value, n, ci) -> str:
    """'0.684 [0.46, 0.85] n=19' for a report cell; the bare value when n is unknown."""
    if not isinstance(value, (int, float)):
        return ""
    if not n or not ci:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] n={n}"
