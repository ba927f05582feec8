"""95% intervals of pair-level figures (accuracies, differences of accuracies) by the cluster
bootstrap over prompts.

Pairs of one prompt are not independent (one easy prompt makes all its pairs easy), so the
unit resampled is the prompt, not the pair: each replicate draws G prompts with replacement
out of the G prompts of the set, and every pair of a drawn prompt counts once per draw (the
cluster or block bootstrap: Davison & Hinkley 1997, "Bootstrap Methods and their
Application", sec. 3.8; Field & Welsh 2007, "Bootstrapping clustered data"). A figure is
computed on each of B replicates with the same draws (so a paired difference, the reward model
minus a rule on the same pairs, is resampled together) and its interval is the percentile
interval, the 2.5% and 97.5% quantiles of the B replicate values (Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 13). Seeded: the same pairs give the same interval.

Without prompt groups every pair is its own cluster (the ordinary bootstrap), which is too
narrow when pairs of a prompt agree with each other (tests/test_bootstrap.py measures it).
"""

from __future__ import annotations

import torch

BOOTSTRAP_SAMPLES = 1000
"""Replicates per interval: the percentile interval's ends move by about 0.002 between seeds."""
LEVEL = 0.95


def cluster_ids(groups: list | None, n: int) -> torch.Tensor:
    """(n,) long: the cluster of each pair, numbered in order of first appearance; without
    `groups` (None) every pair is its own cluster."""
    if groups is None:
        return torch.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} prompt groups for {n} pairs")
    index: dict = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in groups], dtype=torch.long)


def resample_weights(clusters: torch.Tensor, b: int = BOOTSTRAP_SAMPLES, seed: int = 0
                     ) -> torch.Tensor:
    """(B, N) float64: how many times each of the N pairs is drawn in each of B replicates
    of the cluster bootstrap (G distinct clusters drawn G times with replacement; a pair counts
    as often as its cluster is drawn). clusters (N,): any integer labels."""
    _, inv = torch.unique(clusters, return_inverse=True)  # (N,) in [0, G)
    g = int(inv.max()) + 1 if len(inv) else 0
    if g == 0:
        return torch.zeros(b, 0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(g, (b, g), generator=gen)  # (B, G) cluster drawn at each draw
    counts = torch.zeros(b, g, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(b, g, dtype=torch.float64))  # (B, G) draws of each cluster
    return counts[:, inv]  # (B, N)


def replicate_means(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) weighted mean of values (N,) under each replicate's weights (B, N); NaN where a
    replicate drew none of the pairs (a subset's mean: pass the subset's columns)."""
    total = weights.sum(1)  # (B,)
    means = weights @ values.to(torch.float64) / total.clamp(min=1e-12)  # (B,)
    return torch.where(total > 0, means, torch.full_like(means, float("nan")))


def percentile_interval(replicates: torch.Tensor, level: float = LEVEL) -> list[float] | None:
    """[low, high]: the (1 - level) / 2 and (1 + level) / 2 quantiles of the replicate values
    (B,), NaN replicates left out; None when none is a number."""
    ok = replicates[~torch.isnan(replicates)]
    if not len(ok):
        return None
    a = (1 - level) / 2
    q = torch.quantile(ok.to(torch.float64), torch.tensor([a, 1 - a], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def mean_interval(values: torch.Tensor, weights: torch.Tensor, level: float = LEVEL
                  ) -> list[float] | None:
    """Percentile interval of the mean of values (N,) under replicate weights (B, N)."""
    return percentile_interval(replicate_means(values, weights), level)
