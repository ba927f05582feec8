"""Policy-gradient losses, as pure functions (tensors in, scalar loss and statistics out).

All losses share one aggregation, `seq_mean`: sum over each response's tokens divided by the
fixed column count N, then mean over the batch. Summing over tokens keeps the REINFORCE
estimator of the *sequence* log-probability (Ahmadian et al. 2024 treat the whole response
as one action); dividing by the constant N instead of each length only rescales the
learning rate and does not bias the gradient towards short or long responses (as Liu et al.
2025, "Understanding R1-Zero-like training", argue against per-response length division).

Shapes: logprobs (B, N) of the sampled response tokens, mask (B, N) 1 on real response
tokens, advantages (B,) per sequence or (B, N) per token.
"""

from __future__ import annotations

import torch

from rlhf.policy.advantages import kl_per_token


def seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over real tokens / N, mean over rows. (B, N) -> scalar."""
    return (x * mask).sum(1).mean() / x.shape[1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens (for monitoring: entropy, clip fraction). (B, N) -> scalar."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages[:, None].expand_as(like) if advantages.dim() == 1 else advantages


def reinforce_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
    """REINFORCE / RLOO loss (Williams 1992; Ahmadian et al. 2024):
    L = -mean_i A_i * sum_t log pi(y_it | ...) / N, whose gradient is the policy gradient
    with baseline. `advantages` are constants (detached here)."""
    adv = _per_token(advantages.detach(), logprobs)  # (B, N)
    return -seq_mean(adv * logprobs, mask)


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip_eps: float) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token:
    L = -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t), rho_t = pi / pi_old,
    aggregated with `seq_mean`. At rho = 1 its gradient equals `reinforce_loss`'s.

    Returns (loss, stats) with stats: clip_frac (share of real tokens where the clipped
    term is the active one) and approx_kl (k3 estimate of KL(pi_old || pi) per token).
    """
    adv = _per_token(advantages.detach(), logprobs)  # (B, N)
    log_ratio = logprobs - old_logprobs.detach()  # (B, N)
    ratio = log_ratio.exp()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -seq_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped < unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, {"clip_frac": clip_frac, "approx_kl": approx_kl}


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
            estimator: str) -> torch.Tensor:
    """KL to the reference as a loss term (the alternative to putting it in the reward):
    `seq_mean` of the per-token estimate, differentiated through log pi.

    Note on gradients (checked exactly in tests/test_pg_losses.py): at samples from pi, the
    gradient of k2 is an unbiased gradient of KL(pi || pi_ref); k1's gradient is zero in
    expectation (put k1 in the reward instead); k3's gradient is that of KL(pi_ref || pi), the
    reverse direction (what GRPO's k3 loss optimises)."""
    return seq_mean(kl_per_token(logprobs, ref_logprobs.detach(), estimator), mask)


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`seq_mean` of per-token entropies (B, N); subtract coef * this from the loss."""
    return seq_mean(entropy, mask)
