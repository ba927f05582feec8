"""Reward model evaluation and `rlhf eval-reward`: the figures of
`rlhf.preferences.metrics.pair_metrics` (accuracy, loss, ECE, the length rules, tie rates,
accuracy by length difference; 95% intervals by the bootstrap over prompts, the reward model
minus each length rule, the length-controlled accuracy and the beyond-length test of
`rlhf.preferences.length`) from a reward model's scores of pairs, and RewardBench tables.
`rlhf eval-reward` prints the JSON on stdout and the length audit as a table on stderr.
"""

from __future__ import annotations

import json
import sys

import torch

from rlhf.config import parse_cli, require
from rlhf.feedback.derive import PreferencePair
from rlhf.harness.progress import Progress
from rlhf.harness.runtime import setup
from rlhf.preferences.data import evaluation_pairs
from rlhf.preferences.losses import pearson
from rlhf.preferences.metrics import pair_metrics
from rlhf.preferences.tokens import encode_pair_side
from rlhf.reward.config import EvalRewardConfig
from rlhf.reward.model import load_reward_model, raw_scores
from rlhf.reward.rewardbench import bench_metrics, format_table, is_rewardbench, read_rewardbench


def evaluate_encoded(rm, chosen: list[list[int]], rejected: list[list[int]], target, len_c,
                     len_r, pad_id: int, batch_size: int = 32, groups: list | None = None,
                     seed: int = 0) -> dict:
    """`pair_metrics` of already tokenised pairs (the training loop's validation); `groups`
    each pair's prompt, the unit of the bootstrap (`seed`); and `score_length_corr`, Pearson's
    correlation of the score with the response's length in characters over every response
    (chosen and rejected): what a length-decorrelated model (`model.length_head`) holds near 0."""
    was_training = rm.training
    rm.eval()
    r = raw_scores(rm, chosen + rejected, pad_id, batch_size)  # (2N, E)
    rm.train(was_training)
    n = len(chosen)
    t = torch.as_tensor(target, dtype=torch.float32)
    nu = getattr(rm, "log_nu", None)
    out = pair_metrics(r[:n], r[n:], t, torch.as_tensor(len_c), torch.as_tensor(len_r),
                       None if nu is None else nu.detach().cpu(), groups, seed)
    lengths = torch.tensor([*len_c, *len_r], dtype=torch.float32)  # (2N,)
    out["score_length_corr"] = float(pearson(r.mean(-1, keepdim=True), lengths)[0])
    return out


def evaluate(rm, tokenizer, pairs: list[PreferencePair], batch_size: int = 32,
             max_len: int | None = None, seed: int = 0) -> dict:
    """Accuracy, loss, ECE, length-rule accuracy and length-difference buckets of `pairs`,
    the length audit (bootstrap over the pairs' prompts, `seed`); also how many pairs were
    truncated to `max_len` (default: the limit it was trained with)."""
    max_len = max_len or rm.max_len
    c = [encode_pair_side(tokenizer, p.prompt, p.chosen, max_len) for p in pairs]
    r = [encode_pair_side(tokenizer, p.prompt, p.rejected, max_len) for p in pairs]
    out = evaluate_encoded(rm, [x[0] for x in c], [x[0] for x in r],
                           [p.target for p in pairs], [len(p.chosen) for p in pairs],
                           [len(p.rejected) for p in pairs], tokenizer.pad_id, batch_size,
                           [p.group for p in pairs], seed)
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


def show_ci(value, ci, signed: bool = False) -> str:
    """'0.641 [0.60, 0.68]' (signed: '+0.201 [+0.14, +0.26]'); '-' when there is no value."""
    if not isinstance(value, (int, float)):
        return "-"
    f = "+.3f" if signed else ".3f"
    g = "+.2f" if signed else ".2f"
    return f"{value:{f}}" + (f" [{ci[0]:{g}}, {ci[1]:{g}}]" if ci else "")


def format_audit(m: dict) -> str:
    """The accuracies of `evaluate` with their 95% intervals, the reward model minus each
    length rule, the length-controlled accuracy and the beyond-length test, as a table."""
    rows = [f"{m['clear_pairs']} pairs with a clear preference, from {m.get('prompts', '?')} "
            "prompts; [95% interval, bootstrap over prompts]"]
    for label, key, minus in (("accuracy", "accuracy", None),
                              ("longer wins (rule)", "length_rule_accuracy", "minus_longer_rule"),
                              ("shorter wins (rule)", "shorter_rule_accuracy",
                               "minus_shorter_rule"),
                              ("length-controlled accuracy", "length_controlled_accuracy", None)):
        line = f"  {label:<28} {show_ci(m.get(key), m.get(key + '_ci95')):<20}"
        if minus:
            line += f" reward model - rule {show_ci(m.get(minus), m.get(minus + '_ci95'), True)}"
        rows.append(line.rstrip())
    p, q = m.get("beyond_length_p"), m.get("beyond_length_p_robust")
    rows.append(f"  {'beyond length: coefficient':<28} "
                f"{show_ci(m.get('beyond_length_coef'), m.get('beyond_length_coef_ci95'), True)}"
                + (f", likelihood-ratio p = {p:.2g}" if isinstance(p, float) else "")
                + (f", over prompts p = {q:.2g}" if isinstance(q, float) else ""))
    if isinstance(m.get("score_length_corr"), float):
        rows.append(f"  {'score-length correlation':<28} {m['score_length_corr']:+.3f} (Pearson, "
                    "every response)")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    cfg: EvalRewardConfig = parse_cli(EvalRewardConfig, "rlhf eval-reward", __doc__, argv)
    require(bool(cfg.data), "data", "name at least one data file")
    device = setup(cfg.runtime)
    rm, tok = load_reward_model(cfg.model, device)
    if all(is_rewardbench(p) for p in cfg.data):
        rows = [r for p in cfg.data for r in read_rewardbench(p)]
        texts = sum(len(r.chosen) + len(r.rejected) for r in rows)
        with Progress("eval-reward", texts):  # texts scored (each batch reports)
            out = evaluate_bench(rm, tok, rows, cfg.batch_size, cfg.max_len or None)
        print(format_table(out))
        json.dump(out, sys.stdout)
        print()
        return 0
    pairs = evaluation_pairs(cfg.data, cfg.split, cfg.val_fraction, cfg.runtime.seed,
                             cfg.ties, cfg.cant_tell, cfg.kinds, cfg.data_split, cfg.columns)
    with Progress("eval-reward", 2 * len(pairs)):  # texts scored: both sides of each pair
        out = evaluate(rm, tok, pairs, cfg.batch_size, cfg.max_len or None, cfg.runtime.seed)
    if out["clear_pairs"]:
        print(format_audit(out), file=sys.stderr)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0
