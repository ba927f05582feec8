"""The implicit reward of a DPO policy, r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) (Rafailov
et al. 2023, section 5), read wherever a reward model is: `rlhf eval-reward` on held-out pairs
(accuracy, calibration, length rule: `rlhf.reward.evaluate.pair_metrics` on implicit rewards)
and the loop's win rate against the starting policy.

A trained DPO policy is a policy folder plus `dpo.json` (reference path, beta, max_len), so
`rlhf eval-reward model=runs/dpo/policy data=[...]` finds its reference and beta. On a single
(prompt, response) text the reward sums the log-ratio over the tokens after the prompt's own
tokens (prompt and response are tokenised together; where BPE merges across the boundary the
first merged token counts as response). Pairs use `rlhf.dpo.pairs` (shared prefix run once).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from rlhf.config import parse_cli, require
from rlhf.dpo.pairs import logprobs_of_pairs
from rlhf.feedback.derive import PreferencePair
from rlhf.harness.progress import Progress
from rlhf.harness.runtime import setup
from rlhf.lm.folders import load_model, save_model
from rlhf.lm.logprobs import token_logprobs
from rlhf.preferences.data import encode_pairs, evaluation_pairs
from rlhf.preferences.metrics import pair_metrics
from rlhf.preferences.tokens import bos_ids, encode_pair_side, pad_right
from rlhf.reward import evaluate as reward_evaluate
from rlhf.reward.config import EvalRewardConfig

META_FILE = "dpo.json"


def save_dpo_policy(policy, tok, path: Path, meta: dict, write: bool = True) -> Path:
    """The policy folder (`rlhf.lm.folders.save_model`) with `dpo.json` = meta (reference,
    beta, max_len, ...). FSDP: every rank calls this, rank 0 with `write`."""
    return save_model(policy, tok, path, extra_json={META_FILE: meta}, write=write)


def is_dpo_policy(path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path) -> dict:
    """A DPO policy folder's dpo.json: reference, beta, max_len, loss."""
    return json.loads((Path(path) / META_FILE).read_text())


def load_dpo_policy(path, device=None):
    """-> (policy, reference, tokenizer, meta), both models in eval mode on `device`."""
    meta = read_meta(path)
    policy, tok = load_model(path)
    ref, _ = load_model(meta["reference"])
    device = device or "cpu"
    return policy.to(device).eval(), ref.to(device).eval(), tok, meta


def pair_rewards(policy, ref, data, beta: float, device, batch_size: int = 32,
                 ref_logprobs: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Implicit rewards of both sides of encoded pairs: (N,), (N,), and the policy's summed
    log-probs (N,), (N,). `ref_logprobs` (the cache) skips the reference pass."""
    was = policy.training
    policy.eval()
    pc, pr = logprobs_of_pairs(policy, data, device, batch_size)
    policy.train(was)
    rc, rr = ref_logprobs if ref_logprobs is not None else logprobs_of_pairs(
        ref, data, device, batch_size)
    return beta * (pc - rc), beta * (pr - rr), pc, pr


def metrics_of(r_c: torch.Tensor, r_r: torch.Tensor, data) -> dict:
    """`pair_metrics` (accuracy, loss, ECE, length rule, buckets) of implicit rewards."""
    return pair_metrics(r_c[:, None], r_r[:, None], data.target,
                        torch.as_tensor(data.len_chosen), torch.as_tensor(data.len_rejected),
                        groups=data.group)  # the bootstrap over prompts


@torch.no_grad()
def response_logratio(policy, ref, tok, prompts: list[str], responses: list[str],
                      max_len: int, batch_size: int = 32) -> torch.Tensor:
    """Sum over response tokens of log pi - log pi_ref of each (prompt, response): (B,)."""
    device = next(policy.parameters()).device
    seqs = [encode_pair_side(tok, p, r, max_len)[0] for p, r in zip(prompts, responses)]
    heads = []
    for p, s in zip(prompts, seqs):
        pid = bos_ids(tok) + tok.encode(p, bos=False)
        n = 0
        while n < min(len(pid), len(s) - 1) and pid[n] == s[n]:
            n += 1
        heads.append(max(n, 1))  # tokens from column `n` on are the response's
    out = torch.empty(len(seqs))
    for i in range(0, len(seqs), batch_size):
        tokens, mask = pad_right(seqs[i:i + batch_size], tok.pad_id)
        tokens, mask = tokens.to(device), mask.to(device)
        col = torch.arange(1, tokens.shape[1], device=device)[None]  # (1, T-1) target columns
        keep = (col >= torch.tensor(heads[i:i + batch_size], device=device)[:, None]) \
            & mask[:, 1:].bool()  # (b, T-1)
        d = token_logprobs(policy(tokens), tokens) - token_logprobs(ref(tokens), tokens)
        out[i:i + len(tokens)] = (d * keep).sum(-1).cpu()
    return out


def text_scorer(policy, ref, tok, beta: float, max_len: int):
    """fn(prompts, texts) -> implicit rewards (list), the loop's reward-model scorer shape."""
    return lambda ps, ts: (beta * response_logratio(policy, ref, tok, ps, ts, max_len)).tolist()


def evaluate(path, pairs: list[PreferencePair], batch_size: int = 32, max_len: int = 0,
             device=None) -> dict:
    """`rlhf eval-reward`'s numbers for a DPO policy folder on `pairs`."""
    policy, ref, tok, meta = load_dpo_policy(path, device)
    return evaluate_models(policy, ref, tok, meta, pairs, batch_size, max_len, device)


def evaluate_models(policy, ref, tok, meta: dict, pairs: list[PreferencePair],
                    batch_size: int = 32, max_len: int = 0, device=None) -> dict:
    """`evaluate` of a DPO policy and its reference already in memory (dpo.json's `meta`)."""
    data = encode_pairs(pairs, tok, max_len or meta["max_len"], margin=False)
    r_c, r_r, _, _ = pair_rewards(policy, ref, data, meta["beta"], device or "cpu", batch_size)
    return {**metrics_of(r_c, r_r, data), "truncated_pairs": data.truncated,
            "implicit_reward": f"{meta['beta']} * log(pi / pi_ref), pi_ref = {meta['reference']}"}


def cli(argv: list[str]) -> int:
    """`rlhf eval-reward`: a reward model folder as `rlhf.reward.evaluate`, a DPO policy
    folder (with dpo.json) by its implicit reward; same keys, same numbers."""
    cfg: EvalRewardConfig = parse_cli(EvalRewardConfig, "rlhf eval-reward",
                                      reward_evaluate.__doc__, argv)
    if not is_dpo_policy(cfg.model):
        return reward_evaluate.cli(argv)
    require(bool(cfg.data), "data", "name at least one data file")
    device = setup(cfg.runtime)
    pairs = evaluation_pairs(cfg.data, cfg.split, cfg.val_fraction, cfg.runtime.seed,
                             cfg.ties, cfg.cant_tell, cfg.kinds)
    with Progress("eval-reward", 2 * len(pairs)):  # pairs through the policy, then its reference
        out = evaluate(cfg.model, pairs, cfg.batch_size, cfg.max_len, device)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0
