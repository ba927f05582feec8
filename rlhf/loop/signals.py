"""The loop's per-round over-optimisation signals (no gold needed), their 95% intervals and
warnings. The rule is `rlhf.policy.signals`' (its docstring), with the thresholds of
`rl.guard`, applied to each round's evaluation samples (held-out prompts, fixed seed) against
the starting policy's, plus:
- the round's policy training: its first warning, if any (per-step rule);
- the previous round's reward model on this round's new pairs (from the newer policy, rated
  by the rater, never trained on): right on fewer than half at 95% (Wilson upper end < 1/2).
Every share in the record (win rate, reward-model accuracies) gets its count and interval.
"""

from __future__ import annotations

from statistics import mean

from rlhf.feedback.intervals import share_record
from rlhf.loop.folder import judge_of
from rlhf.policy import signals as S
from rlhf.preferences.tokens import encode_pair_side
from rlhf.reward.model import raw_scores


def ensemble_spread(rm, tok, prompts: list[str], texts: list[str]) -> float:
    """Mean ensemble disagreement (`signals.member_spread`) on (prompt, response) texts."""
    seqs = [encode_pair_side(tok, p, t, rm.max_len)[0] for p, t in zip(prompts, texts)]
    members = (raw_scores(rm, seqs, tok.pad_id) - rm.centre.cpu()) / rm.std.cpu()  # (N, E)
    return float(S.member_spread(members).mean())


def text_signals(texts: list[str], tok=None) -> dict:
    """Length (tokens when a tokenizer is given, else words) and share of empty responses."""
    lengths = [len(tok.encode(t, bos=False)) if tok is not None else len(t.split())
               for t in texts]
    return {"length": float(mean(lengths)) if lengths else 0.0,
            "empty": sum(1 for t in texts if not t.strip()) / max(1, len(texts))}


def round_signals(ev: dict, prompts: list[str], start_texts: list[str], rm=None, tok=None
                  ) -> tuple[dict, dict]:
    """(this round's signals, the start's) on the evaluation samples: length, empty share, KL
    per token and (an ensemble reward model) disagreement, the same reward model judging the
    starting policy's samples as the baseline."""
    now, start = text_signals(ev["texts"], tok), text_signals(start_texts, tok)
    now["kl_per_token"] = ev["kl"] / max(now["length"], 1.0)
    if rm is not None and rm.n_members > 1:
        now["disagreement"] = ensemble_spread(rm, tok, prompts, ev["texts"])
        start["disagreement"] = ensemble_spread(rm, tok, prompts, start_texts)
    return now, start


def intervals(record: dict, rm_val: dict | None) -> dict:
    """Counts and 95% Wilson intervals of the round's shares, keyed like the eval record (the
    reward model's accuracy: its bootstrap interval over prompts, where its metrics have it)."""
    ev, out = record["eval"], {}
    if isinstance(ev.get("win_rate"), float) and ev.get("n") and record["round"] > 0:
        out["win_rate"] = share_record(ev["win_rate"] * ev["n"], ev["n"])
    n = (rm_val or {}).get("val_clear_pairs")
    if isinstance(ev.get("rm_accuracy"), float) and n:
        out["rm_accuracy"] = share_record(round(ev["rm_accuracy"] * n, 6), int(n))
        if rm_val.get("val_accuracy_ci95"):  # by the bootstrap over prompts (preferences.length)
            out["rm_accuracy"]["ci95"] = [round(x, 4) for x in rm_val["val_accuracy_ci95"]]
    prev = judge_of(record)[1]
    if prev and prev.get("n"):
        out["prev_rm_on_policy_accuracy"] = share_record(prev["hits"], prev["n"])
    return out


def round_warnings(record: dict, now: dict, start: dict, rule) -> list[str]:
    """The round's warnings (see the module docstring)."""
    prev = judge_of(record)[1] or {}
    out = S.round_warnings(now, start, rule, prev.get("hits"), prev.get("n"))
    first = (record.get("policy_metrics") or {}).get("first_warning")
    if first:
        out.append(f"policy training step {first['step']}: " + "; ".join(first["warnings"]))
    stopped = (record.get("policy_metrics") or {}).get("stopped_at")
    if stopped:
        out.append(f"policy training stopped early at step {stopped} (guard.stop)")
    return out
