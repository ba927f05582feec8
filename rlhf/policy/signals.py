"""Over-optimisation signals that need no gold score, the rule that turns them into warnings,
and the mitigations they motivate. Pure functions: tensors or numbers in, numbers out.

Signals of a batch of the policy's own samples (per training step; the loop: per round):
- `disagreement`: the reward-model ensemble's spread (std over members of each sample's
  normalised reward, each member centred over the batch), mean over samples. Ensembles
  disagree most where the policy has moved off the comparisons they were trained on
  (Coste et al. 2023, "Reward model ensembles help mitigate overoptimization", sec. 4;
  Eisenstein et al. 2023, "Helping or herding?", sec. 5).
  Departure: our members share one backbone (`rlhf.reward.model`), so the spread is a lower
  bound on what independent models would show.
- `length`: mean response length in tokens (EOS included); `empty`: share of responses with no
  token before EOS; `unterminated`: share with no EOS within max_new_tokens.
- `kl_per_token`: KL to the reference summed over all response tokens / number of tokens
  (a short response pays less summed KL: the per-token view separates drift from length).

The rule (`warnings`), documented here and in the report: the signals, averaged over the last
`window` steps, against a baseline (the first step of the run):
1. empty > `empty_max` (default 0.25): a quarter of the responses say nothing;
2. length < `length_drop` x baseline length (default 0.5): responses shrank by half;
3. unterminated > baseline + `unterminated_rise` (default 0.5): responses stopped ending;
4. disagreement > `spread_rise` x baseline disagreement (default 3; off when the ensemble
   has one member): the ensemble no longer agrees on what the policy writes;
5. kl_per_token > `kl_token_max` nats (default 0 = off).
Round rule (`round_warnings`): the same on the round's evaluation samples against round 0,
and the previous reward model's accuracy on the new policy's pairs with the upper end of its
95% Wilson interval below 1/2 (it now prefers what the rater rejects).
"""

from __future__ import annotations

import torch

from rlhf.feedback.intervals import wilson

# ----------------------------------------------------------------------------- signals


SIGNAL_KEYS = ("empty", "unterminated", "kl_per_token", "length", "disagreement")
"""The per-step signals `batch_signals` may return."""

def member_spread(members: torch.Tensor) -> torch.Tensor:
    """Std over ensemble members of each sample's reward, each member first centred on its
    mean over the batch: (B, E) -> (B,) (0 when E = 1). The centring removes the members'
    constant offsets, which carry no preference (the Bradley-Terry loss is shift-invariant),
    so only disagreement about which samples are better remains."""
    if members.shape[-1] < 2:
        return torch.zeros(members.shape[0], device=members.device)
    return (members - members.mean(0, keepdim=True)).std(-1, unbiased=False)


def batch_signals(response_mask: torch.Tensor, ended: torch.Tensor, kl_tok: torch.Tensor,
                  spread: torch.Tensor | None = None) -> dict[str, float]:
    """The signals of one sampled batch: response_mask (B, N), ended (B,), per-token KL (B, N)
    (0 on padding), ensemble spread (B,) or None."""
    n = response_mask.sum(1).float()  # (B,) tokens, EOS included
    empty = (n <= 1) & ended  # EOS (or BOS) first: nothing written
    out = {"length": float(n.mean()), "empty": float(empty.float().mean()),
           "unterminated": float((~ended).float().mean()),
           "kl_per_token": float(kl_tok.sum() / n.sum().clamp(min=1))}
    if spread is not None:
        out["disagreement"] = float(spread.mean())
    return out


def smooth(history: list[dict], window: int) -> dict[str, float]:
    """Mean of each signal over the last `window` rows of `history`."""
    rows = history[-window:]
    keys = {k for r in rows for k in r}
    return {k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in keys}


def warnings(now: dict, base: dict, rule) -> list[str]:
    """Warnings of the rule in the module docstring: `now` and `base` are signal dicts,
    `rule` any object with empty_max, length_drop, unterminated_rise, spread_rise,
    kl_token_max (e.g. `rlhf.policy.config.GuardConfig`)."""
    out = []
    if now.get("empty", 0.0) > rule.empty_max:
        out.append(f"empty responses {now['empty']:.0%} > {rule.empty_max:.0%}")
    if "length" in base and now.get("length", base["length"]) < rule.length_drop * base["length"]:
        out.append(f"length {now['length']:.1f} tokens < {rule.length_drop:g} x start "
                   f"{base['length']:.1f}")
    if "unterminated" in base and now.get("unterminated", 0.0) > (base["unterminated"]
                                                                   + rule.unterminated_rise):
        out.append(f"unterminated {now['unterminated']:.0%} > start "
                   f"{base['unterminated']:.0%} + {rule.unterminated_rise:.0%}")
    b = base.get("disagreement", 0.0)
    if b > 0 and now.get("disagreement", 0.0) > rule.spread_rise * b:
        out.append(f"ensemble disagreement {now['disagreement']:.3f} > {rule.spread_rise:g} x "
                   f"start {b:.3f}")
    if rule.kl_token_max > 0 and now.get("kl_per_token", 0.0) > rule.kl_token_max:
        out.append(f"KL per token {now['kl_per_token']:.3f} > {rule.kl_token_max:g} nats")
    return out


def round_warnings(now: dict, start: dict, rule, prev_rm_hits: int | None = None,
                   prev_rm_n: int | None = None) -> list[str]:
    """The round rule: `warnings` of a round's evaluation signals against round 0's, plus
    the previous reward model's accuracy on the new pairs (hits of n) being below 1/2 at 95%."""
    out = warnings(now, start, rule)
    if prev_rm_n:
        lo, hi = wilson(prev_rm_hits, prev_rm_n)
        if hi < 0.5:
            out.append(f"previous reward model right on {prev_rm_hits}/{prev_rm_n} new pairs "
                       f"(95% interval {lo:.2f}-{hi:.2f}, below 1/2)")
    return out


# ----------------------------------------------------------------------------- mitigations


def conservative_reward(reward: torch.Tensor, spread: torch.Tensor | None, k: float
                        ) -> torch.Tensor:
    """The ensemble's mean reward (B,) minus k times the members' spread (B,)
    (`member_spread`). Coste et al. 2023 (eq. 3, "uncertainty-weighted optimisation")
    subtract lambda x the variance; departures: the std (k is in reward units), of
    batch-centred members. k = 0 or no spread (one member, a scorer): the reward unchanged."""
    if spread is None or k == 0:
        return reward
    return reward - k * spread


def kl_to_penalise(kl_tok: torch.Tensor, response_mask: torch.Tensor, aggregate: str
                   ) -> torch.Tensor:
    """The per-token KL (B, N) the penalty is shaped from: as it is ('sum': a response pays
    its summed KL, Ziegler et al. 2019), or `kl_mean_per_token` ('mean')."""
    return kl_mean_per_token(kl_tok, response_mask) if aggregate == "mean" else kl_tok


def kl_mean_per_token(kl_tok: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL (B, N) rescaled so each row sums to its per-token mean, not its total:
    the KL penalty then no longer pays a policy for writing less (kl.aggregate=mean)."""
    n = response_mask.sum(1, keepdim=True).clamp(min=1).to(kl_tok.dtype)  # (B, 1)
    return kl_tok / n
