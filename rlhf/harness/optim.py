"""The optimiser, its learning-rate schedule and gradient clipping: one rule for every stage.

- AdamW (Loshchilov & Hutter 2019) with weight decay on matrices only (every parameter of
  dimension >= 2: linear weights and embeddings), never on norms, biases or scalars
  (nanoGPT's rule; decaying a norm's gain towards 0 has no regularising meaning). `betas` are a
  setting of each stage (reward training keeps PyTorch's (0.9, 0.999); policy training uses
  (0.9, 0.95), the common choice for RL fine-tuning of LMs, where gradients are noisy).
- Learning rate: linear warm-up over `warmup` steps, then cosine decay to `min_ratio * lr`
  at the last step; `min_ratio = 1` is a constant rate after warm-up.
- Gradient clipping: the global norm is clipped to `max_grad_norm` (0 = off); the pre-clip
  norm is returned for logging.
"""

from __future__ import annotations

import math

import torch


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                   betas: tuple[float, float] | list[float] = (0.9, 0.999)
                   ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `module`, decay on matrices only."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                             betas=tuple(betas))


def lr_at(step: int, total: int, warmup: int, lr: float, min_ratio: float = 1.0) -> float:
    """Learning rate of step `step` (0-based) of `total`: linear warm-up over `warmup` steps,
    then cosine decay to min_ratio * lr at `total` (Loshchilov & Hutter 2017, SGDR eq. 5,
    one cycle); min_ratio 1 = constant after warm-up."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def clip_gradients(module: torch.nn.Module, max_grad_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to `max_grad_norm` (0 = off); returns the norm before."""
    return torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm or float("inf"))
