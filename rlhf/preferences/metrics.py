"""What a scorer of pairs (a reward model, a DPO policy's implicit reward) gets right, from its
scores of both sides: accuracy on the pairs with a clear preference, loss (ties included, 1/2
targets), expected calibration error of P(win | decisive) = sigmoid(r_chosen - r_rejected)
(Bradley-Terry's probability, and Davidson's given a decisive answer), the "longer wins" and
"shorter wins" rules on the same pairs, with a tie model the tie rate it predicts beside the
observed one, and both accuracies bucketed by how different the two responses' lengths are (a
scorer that only learned length matches the length rule in every bucket and is at chance where
lengths are equal). Lengths are in characters of the response (tokenizer-independent).
Beside them, `rlhf.preferences.length.length_audit`'s: 95% intervals by the bootstrap over
prompts, the scorer minus each rule with its interval, the length-controlled accuracy and the
beyond-length test.
"""

from __future__ import annotations

import torch

from rlhf.preferences.bootstrap import cluster_ids
from rlhf.preferences.length import length_audit
from rlhf.preferences.losses import davidson_tie_probability, preference_loss

LENGTH_BUCKETS = (0, 20, 100, 400)
"""Lower edges of the |len(chosen) - len(rejected)| buckets, in characters."""


def expected_calibration_error(p: torch.Tensor, correct: torch.Tensor, n_bins: int = 10
                               ) -> float:
    """ECE (Guo et al. 2017, eq. 3) of binary predictions. p (N,): probability that the
    first side wins; correct (N,) bool: the first side did win. The confidence of a
    prediction is max(p, 1 - p) and it is right when (p > 1/2) == correct; bins of equal
    width over confidence in [1/2, 1]: sum_b n_b / N * |accuracy_b - confidence_b|."""
    conf = torch.maximum(p, 1 - p)  # (N,)
    right = ((p > 0.5) == correct).float()  # (N,)
    # edges in the probabilities' own dtype, each the nearest value to 1/2 + k / (2 n_bins)
    # (float32 edges put a float64 probability that lies exactly on an edge in the bin below)
    edges = torch.tensor([0.5 + k / (2 * n_bins) for k in range(n_bins + 1)],
                         dtype=torch.float64).to(conf.dtype)
    bins = torch.bucketize(conf, edges[1:-1], right=True)  # (N,) in [0, n_bins); [lo, hi)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += float(sel.float().mean()) * abs(float(right[sel].mean() - conf[sel].mean()))
    return ece


def length_rule_correct(len_chosen: torch.Tensor, len_rejected: torch.Tensor) -> torch.Tensor:
    """Credit (N,) of the rule "the longer response wins": 1 when chosen is longer, 0 when
    shorter, 1/2 when of equal length (a coin flip)."""
    return (len_chosen > len_rejected).float() + 0.5 * (len_chosen == len_rejected).float()


def pair_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, target: torch.Tensor,
                 len_chosen: torch.Tensor, len_rejected: torch.Tensor,
                 log_nu: torch.Tensor | None = None, groups: list | None = None,
                 seed: int = 0) -> dict:
    """All evaluation numbers from raw member scores r_chosen, r_rejected (N, E), targets (N,)
    and response lengths (N,). Members' probabilities are averaged (the ensemble's
    prediction); a tie in score counts as half right. With Davidson's tie parameter
    `log_nu`: predicted tie rate (mean P(tie)) and observed tie rate (share of 1/2 targets).
    `groups` (N,): each pair's prompt, the unit the bootstrap resamples (None: each pair its
    own); `seed` the bootstrap's."""
    p = torch.sigmoid(r_chosen - r_rejected).mean(-1)  # (N,) P(chosen > rejected)
    d = r_chosen.mean(-1) - r_rejected.mean(-1)  # (N,)
    loss = preference_loss(r_chosen.mean(-1), r_rejected.mean(-1), target)  # (N,)
    clear = target == 1.0
    right = (p > 0.5).float() + 0.5 * (p == 0.5).float()  # (N,)
    rule = length_rule_correct(len_chosen, len_rejected)
    out = {"pairs": int(len(target)), "clear_pairs": int(clear.sum()),
           "loss": float(loss.mean()) if len(loss) else float("nan"),
           "accuracy": float(right[clear].mean()) if clear.any() else float("nan"),
           "length_rule_accuracy": float(rule[clear].mean()) if clear.any() else float("nan"),
           "ece": expected_calibration_error(p[clear], torch.ones(int(clear.sum()), dtype=bool))
           if clear.any() else float("nan"),
           "mean_margin": float(d[clear].mean()) if clear.any() else float("nan")}
    shorter = (len_chosen < len_rejected).float() + 0.5 * (len_chosen == len_rejected).float()
    out["shorter_rule_accuracy"] = float(shorter[clear].mean()) if clear.any() else float("nan")
    if log_nu is not None and len(target):
        p_tie = davidson_tie_probability(r_chosen, r_rejected, log_nu).mean(-1)  # (N,)
        out["tie_rate_predicted"] = float(p_tie.mean())
        out["tie_rate_observed"] = float((target == 0.5).float().mean())
        out["tie_nu"] = float(log_nu.exp())
    gap = (len_chosen - len_rejected).abs()
    buckets = {}
    for i, lo in enumerate(LENGTH_BUCKETS):
        hi = LENGTH_BUCKETS[i + 1] if i + 1 < len(LENGTH_BUCKETS) else None
        sel = clear & (gap >= lo) & (gap < hi if hi is not None else True)
        name = f"{lo}-{hi}" if hi is not None else f"{lo}+"
        buckets[name] = {"pairs": int(sel.sum()),
                         "accuracy": float(right[sel].mean()) if sel.any() else None,
                         "length_rule_accuracy": float(rule[sel].mean()) if sel.any() else None}
    out["by_length_difference"] = buckets
    clusters = cluster_ids(groups, len(target))  # (N,)
    out.update(length_audit(right[clear], d[clear], len_chosen[clear], len_rejected[clear],
                            clusters[clear], seed))
    return out
