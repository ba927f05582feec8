"""Agreement math (rlhf.feedback.agreement): Krippendorff's alpha on Krippendorff's (2011)
published examples, by hand and against the `krippendorff` package; Kendall's tau-b by hand
and against scipy; the word-level edit distance by hand and against the textbook table."""

from __future__ import annotations

import random

import pytest
from scipy.stats import kendalltau

from rlhf.feedback.agreement import (
    changed_share,
    coincidences,
    kendall_tau_b,
    krippendorff_alpha,
    levenshtein,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x
# 12 units, values 1-5, "." = missing. Published: nominal 0.743, ordinal 0.815, interval 0.849.
N = None
PAPER = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],  # observer A
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],  # B
         [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],  # C
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]  # D


def units_of(matrix: list[list]) -> list[list]:
    """Coders x units (None = missing) -> one list of given values per unit."""
    return [[row[u] for row in matrix if row[u] is not None] for u in range(len(matrix[0]))]


def test_alpha_on_the_papers_example_by_hand():
    units = units_of(PAPER)
    o, n_c = coincidences(units)
    # the paper's value totals: n_1 = 9, n_2 = 13, n_3 = 10, n_4 = 5, n_5 = 3 (n = 40;
    # unit 12 has one value and is not pairable)
    assert dict(n_c) == pytest.approx({1: 9, 2: 13, 3: 10, 4: 5, 5: 3})
    # off the diagonal: unit 2 (2,2,3,2) gives o_23 = o_32 = 3/3, unit 6 (1,2,3,4) 1/3 to each
    # of its 12 ordered pairs, unit 8 (1,1,2,1) o_12 = o_21 = 1
    assert o[(2, 3)] == pytest.approx(1 + 1 / 3) and o[(1, 2)] == pytest.approx(1 + 1 / 3)
    assert o[(1, 4)] == pytest.approx(1 / 3)
    # nominal: 1 - (n-1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 39 * 8 / (1600 - 384)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(1 - 39 * 8 / 1216)
    # interval: sum o_ck (c-k)^2 = 2 + 40/3 + 2 = 52/3; sum n_c n_k (c-k)^2 = 4480
    assert krippendorff_alpha(units, "interval") == pytest.approx(1 - 39 * (52 / 3) / 4480)
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}
    for metric, alpha in published.items():
        assert round(krippendorff_alpha(units, metric), 3) == alpha


def test_alpha_binary_two_observers_and_undefined_cases():
    # Krippendorff (2011), section A: two observers, 10 units, 0/1; published alpha 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    units = [[x, y] for x, y in zip(a, b)]
    # o_01 = o_10 = 4, n_0 = 14, n_1 = 6: alpha = 1 - 19 * 8 / (2 * 14 * 6) = 2/21
    for metric in ("nominal", "ordinal", "interval"):  # one distance for two values
        assert krippendorff_alpha(units, metric) == pytest.approx(2 / 21)
    assert round(krippendorff_alpha(units, "nominal"), 3) == 0.095
    assert krippendorff_alpha([[3, 3], [3, 3, 3]]) is None  # no expected disagreement
    assert krippendorff_alpha([[1], [2], [3]]) is None      # nothing pairable
    assert krippendorff_alpha([]) is None
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]], "ordinal") == pytest.approx(1.0)
    with pytest.raises(ValueError):
        krippendorff_alpha(units, "ratio")


def test_ordinal_alpha_depends_only_on_the_order_of_the_values():
    # ordinal distances count the values that occur between two values, not their gaps:
    # relabelling 1, 2, 3 as 1, 2, 9 keeps it; the interval alpha moves
    units = [[1, 2], [2, 2, 3], [3, 1], [1, 1]]
    moved = [[{1: 1, 2: 2, 3: 9}[v] for v in u] for u in units]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(
        krippendorff_alpha(moved, "ordinal"))
    assert krippendorff_alpha(units, "interval") != pytest.approx(
        krippendorff_alpha(moved, "interval"))


def test_alpha_equals_the_krippendorff_package():
    kd = pytest.importorskip("krippendorff", reason="the `krippendorff` package (dev extra) "
                             "is the reference implementation compared against")
    np = pytest.importorskip("numpy")
    grid = np.array([[np.nan if v is None else v for v in row] for row in PAPER], dtype=float)
    for metric in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(units_of(PAPER), metric) == pytest.approx(
            kd.alpha(reliability_data=grid, level_of_measurement=metric), abs=1e-12)
    rng = random.Random(0)
    compared = 0
    for _ in range(60):
        coders, n_units, high = rng.randint(2, 6), rng.randint(3, 25), rng.choice([2, 5, 7])
        matrix = [[rng.randint(1, high) if rng.random() > 0.3 else None
                   for _ in range(n_units)] for _ in range(coders)]
        units = units_of(matrix)
        if krippendorff_alpha(units, "nominal") is None:
            continue
        grid = np.array([[np.nan if v is None else v for v in row] for row in matrix])
        for metric in ("nominal", "ordinal", "interval"):
            assert krippendorff_alpha(units, metric) == pytest.approx(
                kd.alpha(reliability_data=grid, level_of_measurement=metric,
                         value_domain=list(range(1, high + 1))), abs=1e-9), (matrix, metric)
        compared += 1
    assert compared > 40


def test_kendall_tau_b_by_hand_and_against_scipy():
    # 6 pairs: 5 concordant, 1 discordant (the swapped middle) -> 4/6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: pair (0,1) tied in x, pair (1,2) tied in y, the other 4 concordant:
    # 4 / sqrt((6 - 1) * (6 - 1)) = 0.8
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None  # one ranking ties everything
    assert kendall_tau_b([1], [1]) is None
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1])
    rng = random.Random(1)
    for _ in range(200):
        k = rng.randint(2, 9)
        x = [rng.randint(1, k) for _ in range(k)]
        y = [rng.randint(1, k) for _ in range(k)]
        ours, ref = kendall_tau_b(x, y), kendalltau(x, y).statistic
        if ours is None:
            assert ref != ref  # scipy: nan where tau-b is undefined
        else:
            assert ours == pytest.approx(ref, abs=1e-12), (x, y)


def table_distance(a, b) -> int:
    """The textbook dynamic-programming table (Wagner-Fischer), row by row."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_levenshtein_by_hand_and_against_the_table():
    assert levenshtein(list("kitten"), list("sitting")) == 3  # k->s, e->i, +g
    assert levenshtein(list("flaw"), list("lawn")) == 2       # -f, +n
    assert levenshtein([], list("abc")) == 3 and levenshtein(list("abc"), []) == 3
    assert levenshtein([], []) == 0 and levenshtein(list("same"), list("same")) == 0
    rng = random.Random(2)
    for _ in range(500):  # lengths across the 64-bit word boundary
        a = [rng.choice("abc") for _ in range(rng.randint(0, 140))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 140))]
        assert levenshtein(a, b) == table_distance(a, b), (a, b)


def test_changed_share_counts_words():
    # cat -> dog and the -> a: 2 of the original's 6 words
    assert changed_share("the cat sat on the mat", "the dog sat on a mat") == pytest.approx(
        2 / 6)
    assert changed_share("a b c", "a b c d e") == pytest.approx(2 / 3)  # two words added
    assert changed_share("a b c", "c") == pytest.approx(2 / 3)          # two deleted
    assert changed_share("one  two\nthree", "one two three") == 0.0     # spacing only
    assert changed_share("short", "a whole new text") == pytest.approx(4.0)  # above 1
