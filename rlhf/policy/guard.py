"""The over-optimisation guard of `rlhf train-policy`: each step, the no-gold signals of the
step's samples (`rlhf.policy.signals`, where the rule is documented) turned into warnings
(metrics.jsonl, the output, the summary) and, with `guard.stop`, early stopping that keeps the
last good policy. A copy of the policy's weights is kept for each of the last `window` + 1 good
steps (host memory: (window + 1) x the weights; only with guard.stop), so the policy kept is
the one that sampled `window` + 1 steps before the step that warned (the smoothed signals of
the steps between may already hold the collapse)."""

from __future__ import annotations

from collections import deque

import torch

from rlhf.harness import distributed as dist
from rlhf.lm.lora import checkpointed
from rlhf.policy import signals as S
from rlhf.policy.config import GuardConfig


def snapshot(t: torch.Tensor) -> torch.Tensor:
    """A copy of a weight: in host memory for a plain tensor (no accelerator memory spent),
    on its device for a sharded one (each rank keeps its own shard)."""
    return t.detach().to("cpu", copy=True) if type(t) is torch.Tensor else t.detach().clone()


class Guard:
    """(6) The no-gold over-optimisation rule each step (rlhf.policy.signals, settings
    `guard`) and, with guard.stop, the policies that sampled the last good steps."""

    def __init__(self, cfg: GuardConfig, policy: torch.nn.Module, st):
        self.cfg, self.policy, self.st, self.history = cfg, policy, st, []
        self.good: deque = deque(maxlen=cfg.window + 1)
        self.first: dict | None = None  # the first warning: {"step", "warnings"}

    def check(self, step: int, sig: dict, bar) -> list[str]:
        """Signals of the samples of step `step` (before its update) -> the rule's warnings."""
        st = self.st
        st.signals_base = st.signals_base or dict(sig)
        self.history.append(sig)
        if not self.cfg.warn:
            return []
        warn = S.warnings(S.smooth(self.history, self.cfg.window), st.signals_base, self.cfg)
        if warn and self.first is None:
            self.first = {"step": step + 1, "warnings": warn}
            bar.write(f"policy step {step + 1}: WARNING over-optimisation: " + "; ".join(warn))
        if not warn and self.cfg.stop:  # a copy of the policy that sampled this good step
            kept = checkpointed(self.policy).state_dict()  # LoRA: the adapters alone
            self.good.append((step, {k: snapshot(v) for k, v in kept.items()}))
        return warn

    @property
    def last(self) -> dict | None:
        return self.history[-1] if self.history else None

    def restore(self) -> int | None:
        """Load the oldest kept good policy; returns the steps it had taken (None: none)."""
        if not self.good:
            return None
        step, weights = self.good[0]
        checkpointed(self.policy).load_state_dict(weights)
        return step


def batch_signals(gen, kl_tok, spread, info) -> dict:
    """(6) rlhf.policy.signals of this step's samples, means over all ranks."""
    sig = S.batch_signals(gen.response_mask, gen.ended, kl_tok, spread)
    return {k: float(dist.all_reduce_mean(torch.tensor(v, dtype=torch.float32,
                                                       device=gen.tokens.device), info))
            for k, v in sig.items()}
