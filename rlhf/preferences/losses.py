"""Preference losses, as pure functions (tensors in, tensors out): a reward model's
(Bradley-Terry with 1/2 targets and margins, Davidson's tie model, reward centring) and the
direct methods' on a policy's log-ratios (DPO, IPO), which reuse the Bradley-Terry form.

Every function returns the loss of each element (no reduction; ODIN's batch-level
regularisers, `odin_losses`, are the exception), so the caller can weight
ensemble members or pairs (bootstrap weights) and choose its own mean; the trainers reduce
with `weighted_mean` (each pair's weight: 1 for a comparison, 1 / (K choose 2) for each
pair of a K-ranking). Shapes: scores are
(B,) or (B, E) for an ensemble of E members; targets and margins are (B,) and broadcast.
Policy-gradient losses live in `rlhf.policy.losses`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STRENGTH_MARGINS = {"slightly": 1 / 3, "clearly": 2 / 3, "much": 1.0}
"""Margin per stated strength, after Llama 2's "margin small" set (Touvron et al. 2023,
table 28: negligibly 0, slightly 1/3, better 2/3, significantly 1). No strength -> 0."""


def _col(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped to broadcast against `like` (B,) or (B, E)."""
    return x.reshape(x.shape + (1,) * (like.dim() - x.dim()))


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor,
                  mean_weight: torch.Tensor | float | None = None) -> torch.Tensor:
    """The batch loss with pair weights w: sum_i w_i loss_i / sum_i w_i, so that the K choose
    2 pairs of one K-ranking (weight 1 / (K choose 2) each) count as one judgement, as
    InstructGPT's reward model does (Ouyang et al. 2022, sec. 3.5 and eq. 1: each ranking's
    pairs in one batch element, the loss scaled by 1 / (K choose 2)). Departure: InstructGPT
    counts every ranking as one batch element whatever else is in the batch; here a ranking's
    pairs can fall into different batches, and each batch is normalised by its own total
    weight, so comparisons (w = 1) and rankings mix in one batch. All weights 1 gives the plain
    mean exactly.

    loss (B,) or (B, E) (ensemble members averaged), weight (B,). `mean_weight`: the mean
    weight of the whole global batch when `loss` is one micro-batch of it (gradient
    accumulation, data parallel): the micro-batch means of mean(w loss) / mean_weight then
    average to the global batch's weighted mean. None: this batch's own mean weight."""
    w = _col(weight.to(loss.dtype), loss)
    mw = weight.mean() if mean_weight is None else mean_weight
    return (loss * w).mean() / mw


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1).

    r_chosen, r_rejected (B,) or (B, E) -> (same shape). Computed as softplus(-d), which is
    exact and does not overflow for large |d|."""
    return F.softplus(r_rejected - r_chosen)


def preference_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                    target: torch.Tensor | None = None,
                    margin: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the Bradley-Terry preference probability against a soft target.

    p = sigmoid(r_chosen - r_rejected - margin)
    loss = -(target * log p + (1 - target) * log(1 - p))

    - target (B,): 1 for a clear preference; 1/2 for "tie" / "can't tell", as Christiano et
      al. 2017 (section 2.2.3) put "uniform mass" on both sides. target=1 gives
      `bradley_terry_loss` exactly.
    - margin (B,): Llama 2's margin (Touvron et al. 2023, eq. 2), -log sigmoid(d - m(r)),
      larger when the rater said the preference was stronger. Departure: Llama 2 has no ties;
      here a tie should be given margin 0 (a margin with target 1/2 would push the pair apart).
    Scores (B,) or (B, E) -> loss of the same shape.
    """
    d = r_chosen - r_rejected  # (B,) or (B, E)
    if margin is not None:
        d = d - _col(margin.to(d.dtype), d)
    if target is None:
        return F.softplus(-d)
    t = _col(target.to(d.dtype), d)
    # -(t log s(d) + (1-t) log s(-d)) = t softplus(-d) + (1-t) softplus(d)
    return t * F.softplus(-d) + (1 - t) * F.softplus(d)


def centring_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(r_chosen + r_rejected)^2, the auxiliary loss that pulls rewards towards zero
    (Eisenstein et al. 2023, "Helping or Herding?", section 3), added with a small weight.

    What it does: it pins the free offset of a Bradley-Terry reward, and it also shrinks the
    reward's *scale*. It is not a pure offset penalty: for any reward model whose scores are
    not all shifted by one constant (every real one), the sum of the two sides grows with the
    reward's magnitude, so the penalty acts like an L2 pull on the reward and trades against
    the preference loss. Measured on a linear reward r = w.x fitted to Bradley-Terry data
    (tests/test_tie_model.py, 4 Gaussian features, |w| = 2.7): weight 0.01 shrinks the
    fitted w to 0.59x of the unpenalised fit (0.65x on the data of issue 14). So it changes
    the predicted preference probabilities (less confident), though rarely the ranking.
    Scores (B,) or (B, E) -> (same shape)."""
    return (r_chosen + r_rejected).pow(2)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each column of x (N, E) with y (N,) -> (E,); a constant column
    (or a constant y) correlates 0, with a finite gradient (1e-6 under x's root)."""
    xc, yc = x - x.mean(0), (y - y.mean()).to(x.dtype)[:, None]  # (N, E), (N, 1)
    den = (xc.pow(2).sum(0) + 1e-6).sqrt() * torch.linalg.vector_norm(yc)  # (E,)
    return (xc * yc).sum(0) / den.clamp(min=1e-8)


def odin_losses(r_quality: torch.Tensor, r_length: torch.Tensor, length: torch.Tensor,
                w_quality: torch.Tensor, w_length: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """ODIN's two regularisers (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates Hacking
    in RLHF", sec. 3): the reward fitted to the preferences is r = r_Q + r_L (two linear heads
    on one representation); the *length loss* |rho(r_Q, L)| - rho(r_L, L) pushes the quality
    head's correlation with response length L to zero and the length head's up, and the
    *orthogonality loss* |cos(W_Q, W_L)| keeps the two heads apart. The policy is then
    trained on r_Q alone. Total: preference_loss(r) + lambda_L * length + lambda_O * ortho.

    rho is Pearson's correlation over the (micro-)batch's responses (chosen and rejected
    sides together), per ensemble member, averaged over members. Departures: the paper
    normalises the head weights in the forward pass; here they stay free and the
    orthogonality term is the cosine, which constrains the same directions. L is counted in
    characters (the length audit's unit; Pearson's rho does not depend on the scale).

    r_quality, r_length (N, E) raw scores of N responses; length (N,); w_quality, w_length
    (E, dim) the heads' weights -> (length loss, orthogonality loss), scalars."""
    length_loss = (pearson(r_quality, length).abs() - pearson(r_length, length)).mean()
    cos = (w_quality * w_length).sum(-1) / (
        torch.linalg.vector_norm(w_quality, dim=-1)
        * torch.linalg.vector_norm(w_length, dim=-1)).clamp(min=1e-8)  # (E,)
    return length_loss, cos.abs().mean()


def with_length_term(r: torch.Tensor, length: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """The scores a preference loss fits when length is a covariate: r + coef * length, each
    member its own coefficient. A product of experts whose length expert is linear (Shen et
    al. 2023, "Loose lips sink ships: mitigating length bias in RLHF", sec. 3: P(a > b) =
    sigmoid(r(a) - r(b) + coef (L_a - L_b)); their bias expert is a small model, here it is
    the length itself, as in the length term of AlpacaEval's length-controlled GLM, Dubois et
    al. 2024). The policy is trained on r alone.

    r (N, E) quality scores; length (N,) in the coefficient's unit; coef (E,) -> (N, E)."""
    return r + length[:, None].to(r.dtype) * coef[None, :].to(r.dtype)  # (N, E)


def preference_probability(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """P(a preferred over b) under Bradley-Terry: sigmoid(r_a - r_b). (B,) or (B, E)."""
    return torch.sigmoid(r_a - r_b)


def margins_from_strengths(strengths: list[str | None], targets: list[float],
                           table: dict[str, float] | None = None) -> torch.Tensor:
    """Stated strengths -> margins (B,): table[strength] for clear preferences, 0 for ties
    and for pairs with no stated strength."""
    table = STRENGTH_MARGINS if table is None else table
    return torch.tensor([table.get(s, 0.0) if (s is not None and t == 1.0) else 0.0
                         for s, t in zip(strengths, targets)], dtype=torch.float32)


def davidson_log_probs(r_a: torch.Tensor, r_b: torch.Tensor, log_nu: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities of (a wins, tie, b wins) under Davidson's tie model (Davidson 1970,
    "On extending the Bradley-Terry model to accommodate ties in paired comparison
    experiments", JASA 65(329), eq. 1.2), with strengths pi = exp(r) and tie parameter
    nu = exp(log_nu) >= 0:

    P(a > b) = pi_a / Z,  P(tie) = nu sqrt(pi_a pi_b) / Z,  P(b > a) = pi_b / Z,
    Z = pi_a + pi_b + nu sqrt(pi_a pi_b). Divided by sqrt(pi_a pi_b), with d = r_a - r_b:
    P(a > b) = e^{d/2} / (e^{d/2} + e^{-d/2} + nu), computed with logsumexp.
    Given a decisive answer, P(a > b | not tie) = sigmoid(d): the same reward scale as
    Bradley-Terry, so rewards fitted with ties are comparable with those fitted without.
    nu = 0 is Bradley-Terry. Scores (B,) or (B, E), log_nu () -> three tensors of that shape."""
    half = (r_a - r_b) / 2  # (B,) or (B, E)
    nu = log_nu.to(half.dtype).expand_as(half)
    log_z = torch.logsumexp(torch.stack([half, -half, nu]), 0)
    return half - log_z, nu - log_z, -half - log_z


def davidson_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: torch.Tensor,
                  log_nu: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of each answer under `davidson_log_probs`: -log P(chosen wins)
    for a clear preference, -log P(tie) where tie (B,) is true (tie / both bad; the order of
    a tied pair does not matter, P(tie) is symmetric). log_nu is the learned tie parameter.
    margin (B,) as in `preference_loss` (Llama 2), subtracted from d for decisive pairs.
    Scores (B,) or (B, E) -> loss of the same shape."""
    d_c = r_chosen
    if margin is not None:
        d_c = d_c - _col(margin.to(r_chosen.dtype), r_chosen)
    win, tie_lp, _ = davidson_log_probs(d_c, r_rejected, log_nu)
    t = _col(tie.to(win.dtype), win)
    return -(t * tie_lp + (1 - t) * win)


def davidson_tie_probability(r_a: torch.Tensor, r_b: torch.Tensor, log_nu: torch.Tensor
                             ) -> torch.Tensor:
    """P(tie) under Davidson's model: nu / (e^{d/2} + e^{-d/2} + nu). (B,) or (B, E)."""
    return davidson_log_probs(r_a, r_b, log_nu)[1].exp()


def initial_log_nu(tie_rate: float) -> float:
    """A starting value for Davidson's log(nu): the one where a pair of equal rewards is a tie
    with the observed rate, nu / (2 + nu) = rate, so nu = 2 rate / (1 - rate) (clamped to
    rates in [0.01, 0.9])."""
    rate = min(max(tie_rate, 0.01), 0.9)
    return math.log(2 * rate / (1 - rate))


# ----------------------------------------------------------------------------- direct preference


def smoothed_target(target: torch.Tensor | None, label_smoothing: float,
                    like: torch.Tensor) -> torch.Tensor:
    """A soft target (B,) with conservative-DPO label smoothing eps (Mitchell 2023, "A note on
    DPO with noisy preferences"): t -> t (1 - eps) + (1 - t) eps, i.e. 1 -> 1 - eps and a tie's
    1/2 stays 1/2. No target = every pair a clear preference (1)."""
    t = torch.ones(like.shape[0], dtype=like.dtype, device=like.device) if target is None \
        else target.to(like.dtype)
    return t * (1 - label_smoothing) + (1 - t) * label_smoothing


def dpo_loss(logratio_chosen: torch.Tensor, logratio_rejected: torch.Tensor, beta: float,
             target: torch.Tensor | None = None, margin: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h_c - beta h_r), where
    h = log pi(y|x) - log pi_ref(y|x) is a side's log-ratio (summed over its tokens) and
    beta h its implicit reward. It *is* the Bradley-Terry loss on implicit rewards, so it is
    `preference_loss(beta h_c, beta h_r, target, margin)`: ties get the 1/2 target (Christiano
    et al. 2017) and stated strengths Llama 2's margin, in implicit-reward units; with
    `label_smoothing` eps the target is `smoothed_target` (conservative DPO: the loss of
    TRL's `sigmoid` loss with `label_smoothing`).
    logratio_* (B,) -> loss (B,)."""
    t = smoothed_target(target, label_smoothing, logratio_chosen)
    return preference_loss(beta * logratio_chosen, beta * logratio_rejected, t, margin)


def ipo_loss(logratio_chosen: torch.Tensor, logratio_rejected: torch.Tensor, beta: float,
             target: torch.Tensor | None = None, margin: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm...", eq. 17):
    (h_c - h_r - 1/(2 tau))^2 with tau = beta and h the log-ratios (summed over tokens, as the
    paper's log pi(y|x); TRL averages per token instead). The regression target comes from
    the population form (their eq. 16): h_c - h_r -> (p - 1/2) / tau with p the probability
    that chosen is preferred, so a clear preference (p = 1) gives eq. 17 exactly and a tie
    (p = 1/2) a target of 0. Departures: p is the (smoothed) soft target, and a margin m
    (implicit-reward units, as in `dpo_loss`) is added to the target: (p - 1/2 + m) / tau.
    logratio_* (B,) -> loss (B,)."""
    p = smoothed_target(target, label_smoothing, logratio_chosen)  # (B,)
    goal = p - 0.5
    if margin is not None:
        goal = goal + margin.to(goal.dtype)
    return (logratio_chosen - logratio_rejected - goal / beta).pow(2)


DIRECT_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss}
"""The direct preference losses by name (`rlhf train-dpo`'s loss.kind)."""


# ----------------------------------------------------------------------------- unpaired (KTO)


def kto_loss(logratio: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
    sec. 4.1, the KTO loss; the equation TRL's `KTOTrainer` cites as eq. 7):
    L = lambda_y - v(x, y), with r = log pi(y|x) - log pi_ref(y|x) (summed over the
    completion's tokens) and the reference point z0 = max(0, kl):

        v = lambda_D sigmoid(beta (r - z0))   for a desirable completion,
        v = lambda_U sigmoid(beta (z0 - r))   for an undesirable one,

    so each row's loss is lambda_D (1 - sigmoid(beta (r - z0))) or lambda_U (1 - sigmoid(
    beta (z0 - r))). `kl` is the batch's estimate of KL(pi || pi_ref): the mean log-ratio of
    mismatched (prompt, completion) pairs of the batch (the paper's and TRL's estimate),
    clamped at 0 and detached here (no gradient flows through the reference point, as in
    both). The paper suggests lambda_D n_D / (lambda_U n_U) in [1, 4/3] (their eq. 8).
    Same numbers as TRL 1.16's `KTOTrainer` (loss_type 'kto'); the batch mean of these
    per-row losses is its loss. No departure, except that TRL takes the mean over the
    concatenated desirable and undesirable rows, here the caller's mean over rows in their
    order (the same number).

    logratio (B,), desirable (B,) bool, kl () -> loss (B,)."""
    z0 = kl.detach().clamp(min=0).to(logratio.dtype)  # ()
    u = beta * (logratio - z0)  # (B,)
    d = desirable.to(torch.bool)
    return torch.where(d, desirable_weight * (1 - torch.sigmoid(u)),
                       undesirable_weight * (1 - torch.sigmoid(-u)))
