"""The reward side of policy-gradient RLHF, as pure functions (tensors in, tensors out).

- KL estimators k1, k2, k3 of KL(pi || pi_ref) from samples of pi (Schulman 2020,
  "Approximating KL divergence", http://joschu.net/blog/kl-approx.html);
- per-token reward shaping: minus beta * KL on every response token, the sequence reward
  on the last real token (EOS, or the last token when truncated), zero on padding
  (Ziegler et al. 2019, sec. 2.2; Stiennon et al. 2020, sec. 3);
- whitening, and running mean/std with Chan et al.'s parallel update (for reward
  normalisation across steps);
- advantages: RLOO leave-one-out (Ahmadian et al. 2024, "Back to Basics"), REINFORCE with a
  running-mean baseline (Williams 1992), and the advantages PPO uses here (`ppo_advantages`);
- the adaptive KL controller of Ziegler et al. 2019, eq. 2, as a pure update.

Shapes: B sequences (B = prompts x k, the k samples of a prompt contiguous), N response
columns. Sequence returns are undiscounted sums over the response (gamma = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# ----------------------------------------------------------------------------- KL estimators


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token estimates of KL(pi || pi_ref) at tokens sampled from pi. (B, N) -> (B, N).

    With log r = log pi_ref(x) - log pi(x) (Schulman 2020):
      k1 = -log r                 unbiased, high variance, can be negative;
      k2 = (log r)^2 / 2          biased (low bias near pi = pi_ref), always >= 0;
      k3 = (r - 1) - log r        unbiased, always >= 0, low variance.
    Zero where `mask` is 0 (padding).
    """
    log_r = ref_logprobs - logprobs  # (B, N)
    if estimator == "k1":
        kl = -log_r
    elif estimator == "k2":
        kl = 0.5 * log_r.pow(2)
    elif estimator == "k3":
        kl = torch.expm1(log_r) - log_r
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected k1, k2 or k3")
    return kl if mask is None else kl * mask


# ----------------------------------------------------------------------------- reward shaping


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last real response token (EOS, or the last one when truncated).
    (B, N) -> (B,). Every row must have at least one response token."""
    lengths = response_mask.long().sum(1)  # (B,)
    if bool((lengths == 0).any()):
        raise ValueError("a response has no tokens: cannot place its reward")
    return lengths - 1


def shape_rewards(scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """Per-token rewards r_t = -beta * KL_t, plus the sequence score on the last real token.

    scores (B,), kl (B, N) per-token KL estimates, response_mask (B, N) -> (B, N).
    Ziegler et al. 2019 sec. 2.2 / Stiennon et al. 2020: R(x, y) = r(x, y) - beta KL.
    Padding columns get exactly zero.
    """
    mask = response_mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask  # (B, N)
    last = last_token_index(response_mask)  # (B,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def missing_eos_penalty(scores: torch.Tensor, ended: torch.Tensor, penalty: float):
    """Scores (B,) minus `penalty` where the response did not end (no EOS within the length
    limit; `ended` (B,) bool). As TRL's `missing_eos_penalty`: subtracted, not a replacement."""
    return scores - penalty * (~ended.bool()).to(scores.dtype)


# ----------------------------------------------------------------------------- statistics


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8, over: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / (std + eps), population std, with the statistics of the entries of `over`
    (default: x itself; under torchrun, every rank's values) or, with `mask` (same shape as x),
    of the entries of x where it is 1 (zero is returned elsewhere). `shift_mean=False` adds the
    mean back (scale only). Used for batch reward normalisation and advantage whitening."""
    ref = x if over is None else over
    if mask is None:
        mean, std = ref.mean(), ref.std(unbiased=False)
    else:
        m = mask.to(x.dtype)
        n = m.sum().clamp(min=1)
        mean = (x * m).sum() / n
        std = (((x - mean).pow(2) * m).sum() / n).sqrt()
    out = (x - mean) / (std + eps)
    if not shift_mean:
        out = out + mean
    return out * mask if mask is not None else out


@dataclass
class RunningMoments:
    """Mean and variance of every value seen so far (e.g. reward normalisation)."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    """Sum of squared deviations from the mean."""

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 0 else 1.0


def update_moments(state: RunningMoments, x: torch.Tensor) -> RunningMoments:
    """The moments of (everything seen) + x, by Chan et al. 1979's parallel combination.
    Returns a new state (the old one is not modified)."""
    x = x.detach().double().flatten()
    n_b = x.numel()
    if n_b == 0:
        return state
    mean_b = float(x.mean())
    m2_b = float((x - mean_b).pow(2).sum())
    n = state.count + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * n_b / n
    m2 = state.m2 + m2_b + delta**2 * state.count * n_b / n
    return RunningMoments(count=n, mean=mean, m2=m2)


def normalize_scores(scores: torch.Tensor, state: RunningMoments, eps: float = 1e-8):
    """(scores - running mean) / running std, with the statistics of *earlier* batches and
    this one (update first, then normalise, as TRL's RunningMoments). (B,) -> (B,)."""
    return (scores - state.mean) / (state.std + eps)


# ----------------------------------------------------------------------------- advantages


def sequence_returns(rewards: torch.Tensor) -> torch.Tensor:
    """Undiscounted return of each sequence: sum of its per-token rewards. (B, N) -> (B,)."""
    return rewards.sum(1)


def rloo_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): A_i = R_i - mean_{j != i} R_j over the k samples
    of the same prompt. returns (B,) with each prompt's k samples contiguous -> (B,).
    Equivalently k/(k-1) * (R_i - mean_j R_j)."""
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per prompt")
    if returns.numel() % k:
        raise ValueError(f"{returns.numel()} returns do not split into groups of k={k}")
    r = returns.view(-1, k)  # (prompts, k)
    baseline = (r.sum(1, keepdim=True) - r) / (k - 1)  # (prompts, k)
    return (r - baseline).flatten()


def reinforce_advantages(returns: torch.Tensor, baseline: float) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992): A_i = R_i - b, with b a running mean of
    returns from *earlier* steps (so A is unbiased). (B,) -> (B,)."""
    return returns - baseline


def update_baseline(baseline: float, count: int, returns: torch.Tensor, momentum: float
                    ) -> tuple[float, int]:
    """Exponential moving average of the batch-mean return: b <- m b + (1 - m) mean(R).
    The first batch (count 0) sets b to its mean. Returns (new baseline, new count)."""
    mean = float(returns.detach().double().mean())
    if count == 0:
        return mean, 1
    return momentum * baseline + (1.0 - momentum) * mean, count + 1


def ppo_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """Advantages for PPO: critic-free and sequence-level, the RLOO leave-one-out advantage of
    each sequence's shaped return, given to every token of the response.

    Departure from Ouyang et al. 2022 / Stiennon et al. 2020, who learn a value function and
    use per-token GAE (Schulman et al. 2016): with one scalar reward at the end of a short
    response and no value head to train, the group baseline has lower variance for the
    same cost (as in Ahmadian et al. 2024 and GRPO, Shao et al. 2024). (B,) -> (B,)."""
    return rloo_advantages(returns, k)


# ----------------------------------------------------------------------------- KL controller


@dataclass
class KLController:
    """The KL coefficient beta and how it moves (Ziegler et al. 2019, sec. 2.2)."""

    coef: float
    """Current beta."""
    target: float | None = None
    """Target KL (nats per sequence); None = fixed coefficient."""
    k_beta: float = 0.1
    """Gain K_beta of the proportional controller."""


def adaptive_kl_update(ctl: KLController, kl: float) -> KLController:
    """Ziegler et al. 2019, eq. 2: e_t = clip(KL_t / KL_target - 1, -0.2, 0.2),
    beta_{t+1} = beta_t (1 + K_beta e_t). A fixed controller (target None) is returned as is.
    `kl` is the measured mean KL per sequence of this step (the same estimator as shaping).
    Departure: the update is applied once per step with gain K_beta as written in the paper;
    their code scales the gain by (samples per step / horizon), i.e. a smaller K_beta."""
    if ctl.target is None:
        return ctl
    error = min(max(kl / ctl.target - 1.0, -0.2), 0.2)
    return KLController(coef=ctl.coef * (1.0 + ctl.k_beta * error), target=ctl.target,
                        k_beta=ctl.k_beta)
