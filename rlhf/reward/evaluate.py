"""Reward model evaluation and `rlhf eval-reward`.

Reported on a set of pairs: accuracy (pairs with a clear preference), loss (ties included,
1/2 targets), expected calibration error of P(win | decisive) = sigmoid(r_chosen - r_rejected)
on the clear pairs (Bradley-Terry's probability, and Davidson's given a decisive answer), the
accuracy of the "longer response wins" and "shorter response wins" rules on the same pairs;
with a tie model (ties='model'), the tie rate it predicts (mean P(tie) over all pairs) beside
the observed one; and both accuracies bucketed by how different
the two responses' lengths are, so a reward model that only learned length is visible: it
matches the length rule in every bucket and is at chance where lengths are equal.
Lengths are in characters of the response (tokenizer-independent, as the shared facts).
"""

from __future__ import annotations

import json
import sys

import torch

from rlhf.config import parse_cli, require
from rlhf.feedback.comparisons import PreferencePair, to_pairs
from rlhf.reward.config import EvalRewardConfig
from rlhf.reward.data import read_comparisons, split_by_group
from rlhf.reward.losses import davidson_tie_probability, preference_loss
from rlhf.reward.model import encode_pair_side, load_reward_model, raw_scores
from rlhf.reward.rewardbench import bench_metrics, format_table, is_rewardbench, read_rewardbench
from rlhf.runtime import setup

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
                 log_nu: torch.Tensor | None = None) -> dict:
    """All evaluation numbers from raw member scores r_chosen, r_rejected (N, E), targets (N,)
    and response lengths (N,). Members' probabilities are averaged (the ensemble's
    prediction); a tie in score counts as half right. With Davidson's tie parameter
    `log_nu`: predicted tie rate (mean P(tie)) and observed tie rate (share of 1/2 targets)."""
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
    return out


def evaluate_encoded(rm, chosen: list[list[int]], rejected: list[list[int]], target, len_c,
                     len_r, pad_id: int, batch_size: int = 32) -> dict:
    """`pair_metrics` of already tokenised pairs (the training loop's validation)."""
    was_training = rm.training
    rm.eval()
    r = raw_scores(rm, chosen + rejected, pad_id, batch_size)  # (2N, E)
    rm.train(was_training)
    n = len(chosen)
    t = torch.as_tensor(target, dtype=torch.float32)
    nu = getattr(rm, "log_nu", None)
    return pair_metrics(r[:n], r[n:], t, torch.as_tensor(len_c), torch.as_tensor(len_r),
                        None if nu is None else nu.detach().cpu())


def evaluate(rm, tokenizer, pairs: list[PreferencePair], batch_size: int = 32,
             max_len: int | None = None) -> dict:
    """Accuracy, loss, ECE, length-rule accuracy and length-difference buckets of `pairs`;
    also how many pairs were truncated to `max_len` (default: the limit it was trained with)."""
    max_len = max_len or rm.max_len
    c = [encode_pair_side(tokenizer, p.prompt, p.chosen, max_len) for p in pairs]
    r = [encode_pair_side(tokenizer, p.prompt, p.rejected, max_len) for p in pairs]
    out = evaluate_encoded(rm, [x[0] for x in c], [x[0] for x in r],
                           [p.target for p in pairs], [len(p.chosen) for p in pairs],
                           [len(p.rejected) for p in pairs], tokenizer.pad_id, batch_size)
    out["truncated_pairs"] = sum(a[1] or b[1] for a, b in zip(c, r))
    return out


def evaluate_bench(rm, tok, rows, batch_size: int = 32, max_len: int | None = None) -> dict:
    """RewardBench-format rows -> `rewardbench.bench_metrics` (ensemble-mean raw scores)."""
    max_len = max_len or rm.max_len
    texts = [(r.prompt, x) for r in rows for x in r.chosen + r.rejected]
    seqs = [encode_pair_side(tok, p, x, max_len)[0] for p, x in texts]
    was = rm.training
    rm.eval()
    s = raw_scores(rm, seqs, tok.pad_id, batch_size).mean(-1)  # (M,)
    rm.train(was)
    scores, k = [], 0
    for r in rows:
        c, n = len(r.chosen), len(r.chosen) + len(r.rejected)
        scores.append((s[k:k + c], s[k + c:k + n]))
        k += n
    out = bench_metrics(rows, scores)
    out["truncated_texts"] = sum(encode_pair_side(tok, p, x, max_len)[1] for p, x in texts)
    return out


# ----------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    cfg: EvalRewardConfig = parse_cli(EvalRewardConfig, "rlhf eval-reward", __doc__, argv)
    require(bool(cfg.data), "data", "name at least one data file")
    device = setup(cfg.runtime)
    rm, tok = load_reward_model(cfg.model, device)
    if all(is_rewardbench(p) for p in cfg.data):
        rows = [r for p in cfg.data for r in read_rewardbench(p)]
        out = evaluate_bench(rm, tok, rows, cfg.batch_size, cfg.max_len or None)
        print(format_table(out))
        json.dump(out, sys.stdout)
        print()
        return 0
    pairs = to_pairs(read_comparisons(cfg.data))
    if cfg.split != "all":
        train, val = split_by_group(pairs, cfg.val_fraction, cfg.runtime.seed)
        pairs = val if cfg.split == "val" else train
    out = evaluate(rm, tok, pairs, cfg.batch_size, cfg.max_len or None)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0
