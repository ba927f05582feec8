"""Agreement and change, as pure functions: Krippendorff's alpha for ratings, Kendall's tau-b
for rankings, and the word-level edit distance of a correction.

Used by `rlhf stats` (`rlhf.feedback.kind_stats`); nothing here reads a store.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

METRICS = ("nominal", "ordinal", "interval")


def coincidences(units: list[list[float]]) -> tuple[dict[tuple, float], Counter]:
    """Krippendorff's coincidence matrix of `units` (each unit: the values its coders gave,
    missing ones left out), and the value totals n_c.

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    o_ck = sum over units u of (number of c-k pairs of values in u) / (m_u - 1), where m_u is
    the number of values in u, over ordered pairs of *different coders* (a unit with one value
    is not pairable and is left out); n_c = sum over k of o_ck."""
    o: dict[tuple, float] = Counter()
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for i, j in itertools.permutations(range(m), 2):
            o[unit[i], unit[j]] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), v in o.items():
        n_c[c] += v
    return dict(o), n_c


def delta2(metric: str, n_c: Counter):
    """The squared difference function delta^2(c, k) of Krippendorff (2011), section E:
    nominal 0 if c = k else 1; interval (c - k)^2; ordinal
    (sum of n_g for g from c to k - (n_c + n_k) / 2)^2, over the values g that occur,
    in order (a value that never occurs has n_g = 0 and adds nothing)."""
    if metric == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if metric == "interval":
        return lambda c, k: float(c - k) ** 2
    if metric == "ordinal":
        values = sorted(n_c)
        cum = list(itertools.accumulate(n_c[v] for v in values))
        at = {v: i for i, v in enumerate(values)}

        def ordinal(c, k):
            lo, hi = sorted((at[c], at[k]))
            between = cum[hi] - (cum[lo - 1] if lo else 0)  # n_g for g = lo..hi
            return (between - (n_c[c] + n_c[k]) / 2) ** 2
        return ordinal
    raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")


def krippendorff_alpha(units: list[list[float]], metric: str = "ordinal") -> float | None:
    """Krippendorff's alpha of `units` (one list per unit of the values its coders gave,
    missing values left out), or None when it is undefined (fewer than two pairable values,
    or all pairable values equal: no expected disagreement).

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability" (Annenberg School for
    Communication, University of Pennsylvania), sections C and E:
        alpha = 1 - D_o / D_e = 1 - (n - 1) * sum_c sum_k o_ck delta^2_ck
                                      / sum_c sum_k n_c n_k delta^2_ck,
    with o_ck and n_c from `coincidences`, n = sum_c n_c (the pairable values) and
    delta^2 from `delta2`. On the paper's 4 coders x 12 units example it gives the
    published 0.743 (nominal), 0.815 (ordinal) and 0.849 (interval)."""
    o, n_c = coincidences(units)
    n = sum(n_c.values())
    if n < 2:
        return None
    d2 = delta2(metric, n_c)
    observed = sum(v * d2(c, k) for (c, k), v in o.items())
    expected = sum(n_c[c] * n_c[k] * d2(c, k) for c in n_c for k in n_c)
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two rankings of the same objects (ties allowed), or None when it is
    undefined (fewer than two objects, or one ranking ties everything).

    Kendall (1945), "The treatment of ties in ranking problems":
        tau_b = (n_c - n_d) / sqrt((n_0 - n_1) (n_0 - n_2)),
    n_c / n_d the concordant / discordant pairs, n_0 = n (n - 1) / 2, n_1 and n_2 the pairs
    tied in x and in y (a pair tied in both counts in both and is neither concordant nor
    discordant). Equal to `scipy.stats.kendalltau` (variant 'b')."""
    if len(x) != len(y):
        raise ValueError("both rankings need one place per object")
    n = len(x)
    conc = disc = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(n), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tied_x += dx == 0
        tied_y += dy == 0
        if dx * dy > 0:
            conc += 1
        elif dx * dy < 0:
            disc += 1
    n0 = n * (n - 1) // 2
    denom = (n0 - tied_x) * (n0 - tied_y)
    return (conc - disc) / math.sqrt(denom) if denom > 0 else None


def levenshtein(a: list, b: list) -> int:
    """The Levenshtein distance of two sequences (insertions, deletions and substitutions of
    one element, each costing 1).

    Bit-parallel: Myers (1999), "A fast bit-vector algorithm for approximate string matching
    based on dynamic programming", in Hyyroe's (2001) form for the global edit distance
    ("Explaining and extending the bit-parallel approximate string matching algorithm of
    Myers"). Each column of the dynamic-programming table is held as two bit vectors of its
    vertical +1 / -1 steps (`pv`, `mv`), one bit per element of `a`; a Python integer holds
    any length, so a step costs O(len(a) / 64) machine words and the whole O(len(a) len(b)
    / 64). The score is the table's bottom row, moved by the last bit's horizontal step."""
    if len(a) < len(b):
        a, b = b, a  # the longer one as the bit vector: fewer steps
    m = len(a)
    if m == 0 or not b:
        return max(m, len(b))
    peq: dict = {}
    for i, c in enumerate(a):  # peq[c]: bit i set where a[i] == c
        peq[c] = peq.get(c, 0) | (1 << i)
    mask, last = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & mask  # the top row grows by 1 per column: a +1 step comes in
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return score


def changed_share(original: str, corrected: str) -> float:
    """The share of `original` a correction changed: the word-level Levenshtein distance
    (words split on whitespace; one word inserted, deleted or replaced costs 1) divided by the
    number of words in `original` (at least 1). 0 = unchanged words (only spacing moved);
    above 1 when the rater wrote more new words than the original had."""
    a, b = original.split(), corrected.split()
    return levenshtein(a, b) / max(1, len(a))
