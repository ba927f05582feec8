"""Per-round evaluation of a policy on fresh samples from held-out prompts.

The same prompts and the same sampling seed every round, so rounds differ only by the policy:
- `gold`: mean of the simulated rater's own scorer (e.g. VADER) on the responses, where known;
- `kl`: KL(policy || start) per response, estimated on the policy's own samples as
  mean_i sum_t [log pi(y_t) - log pi_start(y_t)] (unbiased at temperature 1);
- `reward`: mean reward-model score of the responses; `reward_start`: the same reward model's
  mean score of the starting policy's responses to the same prompts; `reward_gain` the gap;
- `win_rate`: share of prompts where the reward model scores the policy's response above the
  starting policy's (ties count one half).
Proxy reward rising while gold stays flat or falls is reward hacking, and shows here.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import mean

import torch

from rlhf.config import SamplingConfig
from rlhf.generation import full_pass_logprobs, generate

TextScorer = Callable[[list[str], list[str]], list[float]]
"""(prompts, responses) -> one score per response."""


@torch.no_grad()
def sample_responses(model, tok, prompts: list[str], sampling: SamplingConfig, seed: int,
                     batch_size: int = 64):
    """Fresh responses (decoded, stripped) and their Generation batches, seeded."""
    device = next(model.parameters()).device
    gen_rng = torch.Generator(device=device).manual_seed(seed)
    texts, batches = [], []
    for start in range(0, len(prompts), batch_size):
        ids = [tok.encode(p, bos=True) for p in prompts[start:start + batch_size]]
        gen = generate(model, ids, sampling, tok.eos_id, tok.pad_id, tok.bos_id, gen_rng)
        texts += [tok.decode(r).strip() for r in gen.response_lists()]
        batches.append(gen)
    return texts, batches


@torch.no_grad()
def kl_to(model, ref, batches, temperature: float = 1.0) -> list[float]:
    """Per-response sum over tokens of log pi - log pi_ref, on `model`'s own samples."""
    out = []
    for gen in batches:
        lp = full_pass_logprobs(model, gen, temperature)
        lr = full_pass_logprobs(ref, gen, temperature)
        out += ((lp - lr) * gen.response_mask).sum(1).tolist()
    return out


def win_rate(scores: list[float], start_scores: list[float]) -> float:
    """Share of paired items where `scores` beat `start_scores` (ties count 1/2)."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, start_scores)]
    return mean(wins)


def evaluate_policy(model, ref, tok, prompts: list[str], sampling: SamplingConfig, seed: int,
                    gold: Callable[[list[str]], list[float]] | None = None,
                    reward: TextScorer | None = None, start_texts: list[str] | None = None,
                    n_show: int = 6) -> dict:
    """Metrics of `model` on fresh samples (see the module docstring), plus every response
    (`texts`) and the first `n_show` as `samples` for the report."""
    texts, batches = sample_responses(model, tok, prompts, sampling, seed)
    kls = kl_to(model, ref, batches, sampling.temperature)
    out: dict = {"n": len(texts), "kl": mean(kls),
                 "length": mean(len(t.split()) for t in texts)}
    golds = gold(texts) if gold is not None else None
    if golds is not None:
        out["gold"] = mean(golds)
    if reward is not None:
        scores = reward(prompts, texts)
        out["reward"] = mean(scores)
        if start_texts is not None:
            start_scores = reward(prompts, start_texts)
            out["reward_start"] = mean(start_scores)
            out["reward_gain"] = out["reward"] - out["reward_start"]
            out["win_rate"] = win_rate(scores, start_scores)
    out["samples"] = [{"prompt": p, "text": t, **({"gold": golds[i]} if golds else {})}
                      for i, (p, t) in enumerate(zip(prompts[:n_show], texts[:n_show]))]
    out["texts"] = texts
    return out
