"""A policy on fresh samples: the reward, KL, length and share ended of held-out prompts
(`sample_and_score`, used by `train-policy` at its start and end), and the loop's per-round
evaluation (`evaluate_policy`).

`evaluate_policy` uses the same prompts and the same sampling seed every round, so rounds
differ only by the policy:
- `gold`: mean of the simulated rater's own scorer (e.g. VADER) on the responses, where known;
- `kl`: KL(policy || start) per response, estimated on the policy's own samples as
  mean_i sum_t [log pi(y_t) - log pi_start(y_t)] (the k1 estimator; unbiased at temperature 1);
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

from rlhf.config import RuntimeConfig
from rlhf.harness import distributed as dist
from rlhf.harness.progress import Progress
from rlhf.lm.config import SamplingConfig
from rlhf.lm.logprobs import response_logprobs
from rlhf.lm.sampling import decode_rows, sample
from rlhf.policy.advantages import kl_per_token

TextScorer = Callable[[list[str], list[str]], list[float]]
"""(prompts, responses) -> one score per response."""


@torch.no_grad()
def kl_to(model, ref, batches, temperature: float = 1.0) -> list[float]:
    """Per-response KL (k1, summed over tokens: log pi - log pi_ref) of `model` to `ref` on
    `model`'s own samples, both from a fresh forward pass."""
    out = []
    for gen in batches:
        lp, _ = response_logprobs(model, gen, temperature)
        lr, _ = response_logprobs(ref, gen, temperature)
        out += kl_per_token(lp, lr, "k1", gen.response_mask).sum(1).tolist()
    return out


@torch.no_grad()
def sample_and_score(model, tok, prompts: list[str], sampling: SamplingConfig, score_fn,
                     generator, ref=None, k: int = 1, runtime: RuntimeConfig | None = None
                     ) -> dict:
    """Sample k responses per prompt (one batch) and score them with score_fn(gen, texts);
    with `ref`, also the KL (k1 and k3, nats per sequence) of the samples to the reference.
    Returns {"reward", "kl_k1", "kl_k3", "length", "ended", means over samples, and "rows":
    [{prompt, response, reward, ended}]}."""
    model.eval()
    s = sample(model, tok, prompts, sampling, generator, runtime, n=k, batch_rows=0,
               stop_early=not dist.is_sharded(model))
    gen = s.batches[0]
    scores = score_fn(gen, decode_rows(tok, gen)).float().cpu()
    out = {"reward": float(scores.mean()), "length": float(gen.response_mask.sum(1).float().mean()),
           "ended": float(gen.ended.float().mean())}
    if ref is not None:  # the policy's log-probs are those recorded while sampling
        ref_lp, _ = response_logprobs(ref, gen, sampling.temperature)
        for est in ("k1", "k3"):
            kl = kl_per_token(gen.logprobs, ref_lp, est, gen.response_mask).sum(1)
            out[f"kl_{est}"] = float(kl.mean())
    responses = decode_rows(tok, gen, include_prompt=False)
    out["rows"] = [{"prompt": p, "response": r, "reward": float(v), "ended": bool(e)}
                   for p, r, v, e in zip(s.prompts, responses, scores, gen.ended.tolist())]
    return out


def win_rate(scores: list[float], start_scores: list[float]) -> float:
    """Share of paired items where `scores` beat `start_scores` (ties count 1/2)."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, start_scores)]
    return mean(wins)


def evaluate_policy(model, ref, tok, prompts: list[str], sampling: SamplingConfig, seed: int,
                    gold: Callable[[list[str]], list[float]] | None = None,
                    reward: TextScorer | None = None, start_texts: list[str] | None = None,
                    n_show: int = 6, runtime: RuntimeConfig | None = None) -> dict:
    """Metrics of `model` on fresh samples (see the module docstring), plus every response
    (`texts`) and the first `n_show` as `samples` for the report; with `reward`, each
    response's score (`sample_rewards`, and the start's: `sample_rewards_start`)."""
    device = next(model.parameters()).device
    with Progress("evaluation", len(prompts)):  # responses sampled (`sample` reports batches)
        s = sample(model, tok, prompts, sampling,
                   torch.Generator(device=device).manual_seed(seed), runtime)
    texts = s.responses
    kls = kl_to(model, ref, s.batches, sampling.temperature)
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
            out["sample_rewards_start"] = start_scores  # per sample: the length audit's
        out["sample_rewards"] = scores
    out["samples"] = [{"prompt": p, "text": t, **({"gold": golds[i]} if golds else {})}
                      for i, (p, t) in enumerate(zip(prompts[:n_show], texts[:n_show]))]
    out["texts"] = texts
    return out
