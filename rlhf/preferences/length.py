"""Did a scorer of pairs learn more than length? Length is the best-documented shortcut of
reward models and of the policies trained on them (Singhal et al. 2023, "A Long Way to Go:
Investigating Length Correlations in RLHF"; Dubois et al. 2024, AlpacaEval's length-controlled
win rates). From a scorer's credit on each pair, the pairs' lengths (characters) and their
prompts, `length_audit` gives:

- 95% cluster-bootstrap intervals (`rlhf.preferences.bootstrap`) of the accuracy and of the
  "longer wins" and "shorter wins" rules' accuracies, and the paired difference scorer - rule
  with its interval (one set of replicates for all: the difference is resampled pair by pair);
- the length-controlled accuracy (`length_controlled_accuracy`) with its interval;
- whether the score difference predicts the human choice once the length difference is known
  (`beyond_length`): a logistic regression, the score term's coefficient with a
  cluster-robust interval, and a likelihood-ratio p-value.

And, for a policy run, how much of a reward gain is length (`length_share_of_gain`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlhf.preferences.bootstrap import (
    LEVEL,
    mean_interval,
    percentile_interval,
    resample_weights,
)

RIDGE = 1e-4
"""L2 penalty on the standardised coefficients: keeps the fit finite when a scorer separates the
pairs perfectly (its coefficient is then large, its p-value tiny), negligible otherwise."""
LENGTH_SHARE_WARNING = 0.5
"""A policy's reward gain is flagged when at least this share of it is explained by length."""


def length_controlled_accuracy(credit: torch.Tensor, len_c: torch.Tensor, len_r: torch.Tensor,
                               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Accuracy with the pairs weighted so that those the longer side won and those the shorter
    side won count equally: (B,) for replicate weights (B, N), (1,) without.

    credit (N,): 1 right, 0 wrong, 1/2 a tie in score; len_c, len_r (N,) the chosen and
    rejected sides' lengths. With n_L pairs won by the longer side, n_S by the shorter and n_E
    of equal lengths, LC = (n_U / 2 * acc_L + n_U / 2 * acc_S + n_E * acc_E) / (n_U + n_E),
    n_U = n_L + n_S: the two kinds of unequal pairs weigh half of the unequal pairs each.

    Why reweighting and not AlpacaEval's regression (a GLM of the preference on the model and
    the length difference, predicted at length difference 0): here the pairs are fixed and
    the scorer is the one thing judged, so reweighting needs no fitted model, and every scorer
    that always prefers the longer side, or always the shorter (the two rules, any monotone
    function of length), scores exactly 1/2 whatever the set's length bias: a set's own bias
    cannot lift a length scorer above chance. The regression question (does the score add to
    length?) is `beyond_length`'s. NaN when no pair was won by the longer, or by the shorter,
    side."""
    w = torch.ones(1, len(credit), dtype=torch.float64) if weights is None else weights
    c = credit.to(torch.float64)
    parts = []
    for sel in (len_c > len_r, len_c < len_r, len_c == len_r):
        n = w[:, sel].sum(1)  # (B,)
        parts.append((n, w[:, sel] @ c[sel] / n.clamp(min=1e-12)))  # (B,), (B,)
    (n_l, acc_l), (n_s, acc_s), (n_e, acc_e) = parts
    n_u = n_l + n_s
    acc_e = torch.where(n_e > 0, acc_e, torch.zeros_like(acc_e))
    lc = (n_u / 2 * (acc_l + acc_s) + n_e * acc_e) / (n_u + n_e).clamp(min=1e-12)
    return torch.where((n_l > 0) & (n_s > 0), lc, torch.full_like(lc, float("nan")))


def logistic_fit(x: torch.Tensor, y: torch.Tensor, ridge: float = RIDGE, iters: int = 100
                 ) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Logistic regression P(y = 1 | x) = sigmoid(x beta), no intercept, by Newton's method
    (iteratively reweighted least squares) with step halving, in float64. x (N, K), y (N,)
    in [0, 1]. Returns (beta (K,), log-likelihood without the penalty, Hessian (K, K) of the
    penalised negative log-likelihood at beta)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    beta = torch.zeros(x.shape[1], dtype=torch.float64)  # (K,)

    def objective(b):  # penalised log-likelihood
        z = x @ b  # (N,)
        return float((y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).sum()
                     - ridge / 2 * b @ b)

    eye = torch.eye(x.shape[1], dtype=torch.float64)
    current = objective(beta)
    for _ in range(iters):
        p = torch.sigmoid(x @ beta)  # (N,)
        grad = x.T @ (y - p) - ridge * beta  # (K,)
        hess = x.T @ (x * (p * (1 - p))[:, None]) + ridge * eye  # (K, K)
        step, t = torch.linalg.solve(hess, grad), 1.0
        while objective(beta + t * step) < current - 1e-12 and t > 1e-6:
            t /= 2
        beta = beta + t * step
        new = objective(beta)
        done = abs(new - current) < 1e-10 and float(step.abs().max()) * t < 1e-8
        current = new
        if done:
            break
    p = torch.sigmoid(x @ beta)
    hess = x.T @ (x * (p * (1 - p))[:, None]) + ridge * eye
    return beta, current + ridge / 2 * float(beta @ beta), hess


def chi2_1_sf(x: float) -> float:
    """P(chi-square with 1 degree of freedom > x) = erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2))


def _standardise(v: torch.Tensor) -> torch.Tensor:
    """v / its root mean square (no centring: the model is antisymmetric in the two sides)."""
    rms = v.pow(2).mean().sqrt()
    return v / rms if rms > 0 else v


def beyond_length(score_diff: torch.Tensor, len_c: torch.Tensor, len_r: torch.Tensor,
                  clusters: torch.Tensor, z: float = 1.96) -> dict:
    """Does the score difference predict the human choice once the length difference is known?

    Logistic regression of the label (the chosen side won: y = 1 on clear pairs; no intercept,
    so the side order does not matter) on three differences, chosen minus rejected, each divided
    by its root mean square: the score, the length in characters and log(1 + length) (two
    length terms, so that a scorer that is a linear or a logarithmic function of length adds
    nothing). The reward term's coefficient `beyond_length_coef` (per root-mean-square of the
    score difference) has a 95% Wald interval from the cluster-robust (sandwich) variance over
    prompts (Liang & Zeger 1986, with the G / (G - 1) correction); `beyond_length_p` is the
    likelihood-ratio test against the length-only model: x = 2 (l_full - l_length),
    p = P(chi2_1 > x), which treats the pairs as independent; `beyond_length_p_robust` the
    Wald test with the cluster-robust variance, p = P(chi2_1 > (coef / se)^2), which does not
    (the one that agrees with the interval). score_diff, len_c, len_r, clusters (N,)."""
    n = len(score_diff)
    if n < 4:
        return {"beyond_length_coef": None, "beyond_length_coef_ci95": None,
                "beyond_length_p": None, "beyond_length_p_robust": None}
    lc, lr = len_c.to(torch.float64), len_r.to(torch.float64)
    length = torch.stack([_standardise(lc - lr),
                          _standardise(torch.log1p(lc) - torch.log1p(lr))], 1)  # (N, 2)
    x = torch.cat([_standardise(score_diff.to(torch.float64))[:, None], length], 1)  # (N, 3)
    y = torch.ones(n, dtype=torch.float64)
    beta, ll_full, hess = logistic_fit(x, y)
    _, ll_len, _ = logistic_fit(length, y)
    stat = 2 * (ll_full - ll_len)
    _, inv = torch.unique(clusters, return_inverse=True)
    g = int(inv.max()) + 1
    score = x * (y - torch.sigmoid(x @ beta))[:, None]  # (N, 3) per-pair score
    per_cluster = torch.zeros(g, 3, dtype=torch.float64).index_add_(0, inv, score)  # (G, 3)
    bread = torch.linalg.inv(hess)  # (3, 3)
    meat = per_cluster.T @ per_cluster * (g / max(g - 1, 1))  # (3, 3)
    se = float((bread @ meat @ bread)[0, 0].clamp(min=0).sqrt())
    b = float(beta[0])
    return {"beyond_length_coef": b, "beyond_length_coef_ci95": [b - z * se, b + z * se],
            "beyond_length_p": chi2_1_sf(stat),
            "beyond_length_p_robust": chi2_1_sf((b / se) ** 2) if se > 0 else None}


def length_audit(credit: torch.Tensor, score_diff: torch.Tensor, len_c: torch.Tensor,
                 len_r: torch.Tensor, clusters: torch.Tensor, seed: int = 0,
                 level: float = LEVEL) -> dict:
    """The figures of the module docstring on clear pairs, flat (keys for a summary line).
    credit (N,): the scorer's credit (1 right, 0 wrong, 1/2 tied scores); score_diff (N,):
    chosen minus rejected score; len_c, len_r (N,) characters; clusters (N,) the prompt of
    each pair (`bootstrap.cluster_ids`)."""
    if not len(credit):
        return {}
    w = resample_weights(clusters, seed=seed)  # (B, N)
    longer = (len_c > len_r).double() + 0.5 * (len_c == len_r).double()  # (N,)
    shorter = 1 - longer
    c = credit.to(torch.float64)
    out = {"prompts": int(torch.unique(clusters).numel()),
           "accuracy_ci95": mean_interval(c, w, level),
           "length_rule_accuracy_ci95": mean_interval(longer, w, level),
           "shorter_rule_accuracy_ci95": mean_interval(shorter, w, level)}
    for name, rule in (("longer", longer), ("shorter", shorter)):
        out[f"minus_{name}_rule"] = float((c - rule).mean())
        out[f"minus_{name}_rule_ci95"] = mean_interval(c - rule, w, level)
    lc = float(length_controlled_accuracy(c, len_c, len_r)[0])
    out["length_controlled_accuracy"] = None if math.isnan(lc) else lc
    out["length_controlled_accuracy_ci95"] = percentile_interval(
        length_controlled_accuracy(c, len_c, len_r, w), level)
    out.update(beyond_length(score_diff, len_c, len_r, clusters))
    return {k: _rounded(v) for k, v in out.items()}


def _rounded(v):
    """Figures for a summary line: floats (and lists of them) to 4 decimals, p-values to 4
    significant digits."""
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    return float(f"{v:.4g}") if isinstance(v, float) and abs(v) < 1e-3 else (
        round(v, 4) if isinstance(v, float) else v)


def length_share_of_gain(reward_now: list[float], len_now: list[float],
                         reward_start: list[float], len_start: list[float]) -> dict:
    """How much of a policy's reward gain over the start its responses' length explains.

    Least squares over both sets of samples (the round's policy and the starting policy on the
    same prompts, one reward model scoring both) of reward_i = a + c [i is the round's] +
    b length_i: b is the slope of reward on length within the two sets (ANCOVA; the common-slope
    Oaxaca-Blinder decomposition), b = sum (l - mean_set l)(r - mean_set r) / sum (l -
    mean_set l)^2 over both sets. With an intercept and the indicator, the fit passes through
    both sets' means, so gain = mean reward_now - mean reward_start = c + b * length_change
    exactly: `explained` = b * length_change is the part of the gain length predicts, and
    `share` = explained / gain (None unless the gain is positive; above 1 when length predicts
    more than the whole gain, negative when the policy got shorter). Lengths in any unit."""
    groups = [(torch.tensor(r, dtype=torch.float64), torch.tensor(n, dtype=torch.float64))
              for r, n in ((reward_start, len_start), (reward_now, len_now))]  # (M_k,) each
    # the ANCOVA slope: within-set deviations from each set's means
    sxy = sum(float(((n - n.mean()) * (r - r.mean())).sum()) for r, n in groups)
    sxx = sum(float(((n - n.mean()) ** 2).sum()) for r, n in groups)
    gain = float(groups[1][0].mean() - groups[0][0].mean())
    change = float(groups[1][1].mean() - groups[0][1].mean())
    slope = sxy / sxx if sxx > 0 else None  # no length varies within a set: no slope
    explained = slope * change if slope is not None else None
    return {"gain": gain, "length_change": change, "slope": slope, "explained": explained,
            "share": explained / gain if explained is not None and gain > 1e-12 else None}
