"""The policy-gradient algorithms, one entry each in `ALGORITHMS`: how advantages are made from
the shaped returns, which loss turns them into a gradient, and how often each sampled batch is
used. The math itself is in `rlhf.policy.advantages` and `rlhf.policy.losses`; adding an
algorithm is adding an entry here (and, where it needs one, a pure function there)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlhf.policy import advantages as R
from rlhf.policy import losses as L


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes one algorithm in the training loop."""

    advantages: Callable[..., torch.Tensor]
    """(returns (B,), k, baseline) -> advantages (B,). `baseline` is the running mean of earlier
    steps' returns (REINFORCE); the others ignore it."""
    loss: Callable[..., tuple[torch.Tensor, dict]]
    """(logprobs, old_logprobs, advantages, mask, clip_eps) -> (loss, statistics)."""
    reuses_batch: bool
    """True: `ppo_epochs` passes of `minibatches` shuffled minibatches per sampled batch;
    False: one gradient step on the whole batch."""
    min_k: int
    """Fewest samples per prompt it needs (a group baseline needs 2)."""
    running_baseline: bool = False
    """Keeps a running-mean baseline of returns across steps."""


def _reinforce_loss(logp, old_logp, adv, mask, clip_eps):
    return L.reinforce_loss(logp, adv, mask), {}


def _ppo_loss(logp, old_logp, adv, mask, clip_eps):
    return L.ppo_clip_loss(logp, old_logp, adv, mask, clip_eps)


ALGORITHMS: dict[str, Algorithm] = {
    # RLOO (Ahmadian et al. 2024): leave-one-out baseline over the k samples of a prompt
    "rloo": Algorithm(advantages=lambda returns, k, baseline: R.rloo_advantages(returns, k),
                      loss=_reinforce_loss, reuses_batch=False, min_k=2),
    # REINFORCE (Williams 1992) with a running-mean baseline of earlier steps
    "reinforce": Algorithm(
        advantages=lambda returns, k, baseline: R.reinforce_advantages(returns, baseline),
        loss=_reinforce_loss, reuses_batch=False, min_k=1, running_baseline=True),
    # PPO (Schulman et al. 2017), clipped, critic-free with the group baseline (advantages.py)
    "ppo": Algorithm(advantages=lambda returns, k, baseline: R.ppo_advantages(returns, k),
                     loss=_ppo_loss, reuses_batch=True, min_k=2),
}
