"""The cluster bootstrap over prompts (rlhf.preferences.bootstrap): its 95% interval of an
accuracy covers the true value of simulated sets at the nominal rate, while a pair bootstrap
that ignores the prompts, or a deliberately halved interval, does not; the paired difference
and the figures `pair_metrics` prints with it."""

import pytest
import torch

from rlhf.preferences.bootstrap import (
    cluster_ids,
    mean_interval,
    percentile_interval,
    resample_weights,
)
from rlhf.preferences.metrics import pair_metrics

TRUE_ACCURACY = 0.7
PROMPTS, PAIRS_PER_PROMPT, SETS = 40, 5, 200


def simulated_set(gen: torch.Generator) -> torch.Tensor:
    """Credit (N,) of one simulated set, prompt by prompt (pairs of a prompt adjacent): half the
    prompts are easy (the scorer is right on every pair, p = 1.0), half hard (p = 0.4), so the
    expected accuracy is 0.7 and pairs of a prompt agree (intra-prompt correlation 0.43: a pair
    bootstrap's interval is about 1 / sqrt(2.7) as wide as it should be)."""
    easy = torch.rand(PROMPTS, generator=gen) < 0.5  # (G,)
    p = torch.where(easy, 1.0, 0.4).repeat_interleave(PAIRS_PER_PROMPT)  # (N,)
    return (torch.rand(len(p), generator=gen) < p).double()


def coverage(kind: str) -> float:
    """Share of SETS simulated sets whose interval covers TRUE_ACCURACY."""
    gen = torch.Generator().manual_seed(123)
    prompts = torch.arange(PROMPTS).repeat_interleave(PAIRS_PER_PROMPT)  # (N,)
    hits = 0
    for s in range(SETS):
        credit = simulated_set(gen)
        clusters = torch.arange(len(credit)) if kind == "pairs" else prompts
        lo, hi = mean_interval(credit, resample_weights(clusters, 1000, seed=s))
        if kind == "halved":
            mid = float(credit.mean())
            lo, hi = mid - (mid - lo) / 2, mid + (hi - mid) / 2
        hits += lo <= TRUE_ACCURACY <= hi
    return hits / SETS


def test_cluster_bootstrap_covers_the_true_accuracy_at_the_nominal_rate():
    assert 0.90 <= coverage("prompts") <= 0.99


def test_intervals_too_narrow_fail_the_same_check():
    # the same check would catch an interval that ignores prompts, or one half as wide:
    # expected coverage about 0.77 and 0.68 (binomial sd over 200 sets: 0.025, 0.033)
    assert coverage("pairs") < 0.90
    assert coverage("halved") < 0.80


def test_resample_weights_draw_whole_prompts():
    clusters = cluster_ids(["a", "a", "b", "c", "c", "c"], 6)
    assert clusters.tolist() == [0, 0, 1, 2, 2, 2]
    w = resample_weights(clusters, 500, seed=1)  # (500, 6)
    assert w.shape == (500, 6)
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 3], w[:, 5])  # a prompt's pairs
    draws = w[:, [0, 2, 3]]  # one column per prompt: how often it was drawn
    assert torch.all(draws.sum(1) == 3)  # G = 3 prompts drawn 3 times per replicate
    assert abs(float(draws.mean()) - 1.0) < 1e-9
    assert torch.equal(w, resample_weights(clusters, 500, seed=1))  # seeded
    assert cluster_ids(None, 3).tolist() == [0, 1, 2]


def test_percentile_interval_by_hand():
    reps = torch.arange(1, 102, dtype=torch.float64)  # 1 .. 101: quantile q is 1 + 100 q
    assert percentile_interval(reps) == pytest.approx([3.5, 98.5], abs=1e-9)
    assert percentile_interval(torch.tensor([float("nan"), 2.0, 2.0])) == [2.0, 2.0]
    assert percentile_interval(torch.tensor([float("nan")])) is None


def test_paired_difference_is_resampled_pair_by_pair():
    # the scorer and the rule agree on every pair but 8 of 200, where the scorer is right:
    # accuracies 0.55 and 0.51 have wide intervals that overlap, the paired difference 0.04
    # does not include 0 (its replicates never go below 0)
    gen = torch.Generator().manual_seed(0)
    rule = (torch.rand(200, generator=gen) < 0.5).double()
    idx = torch.nonzero(rule == 0)[:8, 0]
    scorer = rule.clone()
    scorer[idx] = 1.0
    w = resample_weights(torch.arange(200) // 2, 1000, seed=0)
    a, b = mean_interval(scorer, w), mean_interval(rule, w)
    assert a[0] < b[1]  # the two intervals overlap
    d = mean_interval(scorer - rule, w)
    assert d[0] > 0 and d[1] < 0.1


def test_pair_metrics_reports_the_intervals_and_uses_the_prompts():
    # 40 prompts x 5 pairs, the scorer right on every pair of 28 prompts, wrong on 12:
    # accuracy 0.7; with prompts as clusters the interval is that of 40 draws, not of 200
    right = torch.tensor([1.0] * 28 + [0.0] * 12).repeat_interleave(5)  # (200,)
    r_c, r_r = (2 * right - 1)[:, None], torch.zeros(200, 1)
    len_c, len_r = torch.full((200,), 50), torch.arange(200) % 2 * 100  # longer 50%
    groups = [f"p{i // 5}" for i in range(200)]
    m = pair_metrics(r_c, r_r, torch.ones(200), len_c, len_r, groups=groups)
    lo, hi = m["accuracy_ci95"]
    assert abs(m["accuracy"] - 0.7) < 1e-6 and m["prompts"] == 40
    # prompt-level sd of the mean: sqrt(0.7 * 0.3 / 40) = 0.072 -> half-width about 0.14
    assert 0.11 < (hi - lo) / 2 < 0.17
    lo1, hi1 = pair_metrics(r_c, r_r, torch.ones(200), len_c, len_r)["accuracy_ci95"]
    assert 0.045 < (hi1 - lo1) / 2 < 0.08  # pairs as if independent: sqrt(.21 / 200) = 0.032
    assert abs(m["minus_longer_rule"] - 0.2) < 1e-6  # the rule: 0.5
    assert m["minus_longer_rule_ci95"][0] > 0
