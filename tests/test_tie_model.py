"""Davidson's tie model (rlhf.preferences.losses): hand-computed probabilities, recovery of the true
reward weights on synthetic Davidson data (where 1/2 targets shrink them), the centring
penalty's shrinkage, and the ECE bin edges."""

from __future__ import annotations

import math

import torch

from rlhf.preferences.losses import (
    centring_penalty,
    davidson_log_probs,
    davidson_loss,
    davidson_tie_probability,
    preference_loss,
)
from rlhf.preferences.metrics import expected_calibration_error, pair_metrics

W_TRUE = torch.tensor([1.5, -1.0, 0.5, 2.0])


def test_davidson_probabilities_by_hand():
    # d = 2, nu = 1: e^1 / (e^1 + e^-1 + 1), 1 / (...), e^-1 / (...)
    z = math.e + 1 / math.e + 1
    win, tie, lose = davidson_log_probs(torch.tensor([2.0]), torch.tensor([0.0]),
                                        torch.tensor(0.0))
    assert abs(win.exp().item() - math.e / z) < 1e-6
    assert abs(tie.exp().item() - 1 / z) < 1e-6
    assert abs(lose.exp().item() - 1 / math.e / z) < 1e-6
    # given a decisive answer, Bradley-Terry's sigmoid(d)
    assert abs((win.exp() / (win.exp() + lose.exp())).item() - 1 / (1 + math.exp(-2))) < 1e-6
    # nu -> 0 is Bradley-Terry
    bt = preference_loss(torch.tensor([0.7]), torch.tensor([0.2]))
    dav = davidson_loss(torch.tensor([0.7]), torch.tensor([0.2]), torch.tensor([False]),
                        torch.tensor(-30.0))
    assert abs(bt.item() - dav.item()) < 1e-6
    # a tie's loss is symmetric in the sides; ensemble shapes broadcast
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.ones(5, dtype=torch.bool)
    assert torch.allclose(davidson_loss(a, b, t, torch.tensor(0.3)),
                          davidson_loss(b, a, t, torch.tensor(0.3)))
    assert davidson_tie_probability(a, b, torch.tensor(0.3)).shape == (5, 3)


def synthetic(n: int = 20000, log_nu: float = 0.15, seed: int = 0):
    """Pairs of feature vectors and Davidson outcomes (0 = a wins, 1 = tie, 2 = b wins)."""
    g = torch.Generator().manual_seed(seed)
    xa, xb = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    lp = torch.stack(davidson_log_probs(xa @ W_TRUE, xb @ W_TRUE, torch.tensor(log_nu)), -1)
    y = torch.multinomial(lp.exp(), 1, generator=g).squeeze(-1)
    chosen = torch.where((y == 2)[:, None], xb, xa)
    rejected = torch.where((y == 2)[:, None], xa, xb)
    return chosen, rejected, y == 1


def fit(loss_fn, dim: int = 4, extra: int = 0):
    w = torch.zeros(dim + extra, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach()


def test_tie_model_recovers_the_true_weights_where_half_targets_shrink_them():
    c, r, tie = synthetic()
    rate = tie.float().mean().item()
    assert 0.18 < rate < 0.25  # about the 21% of ties of the issue
    w = fit(lambda w: davidson_loss(c @ w[:4], r @ w[:4], tie, w[4]).mean(), extra=1)
    ratio = (w[:4] @ W_TRUE / (W_TRUE @ W_TRUE)).item()
    assert abs(ratio - 1) < 0.05, ratio
    assert (w[:4] - W_TRUE).abs().max() < 0.1
    assert abs(w[4].item() - 0.15) < 0.1  # the tie parameter too
    half = fit(lambda w: preference_loss(c @ w, r @ w, 1 - 0.5 * tie.float()).mean())
    shrink = (half @ W_TRUE / (W_TRUE @ W_TRUE)).item()
    print(f"half targets at {rate:.1%} ties: w x {shrink:.3f}; tie model: w x {ratio:.3f}")
    assert shrink < 0.8, shrink  # measured 0.6-0.7: 1/2 targets pull rewards together
    # the tie model predicts the tie rate it saw
    m = pair_metrics((c @ w[:4])[:, None], (r @ w[:4])[:, None], 1 - 0.5 * tie.float(),
                     torch.zeros(len(c)), torch.zeros(len(c)), w[4])
    assert abs(m["tie_rate_predicted"] - m["tie_rate_observed"]) < 0.01


def test_centring_penalty_shrinks_a_linear_reward():
    """The docstring's figure: weight 0.01 on Bradley-Terry data shrinks w (not only the
    offset)."""
    c, r, tie = synthetic(log_nu=-30.0)  # no ties: Bradley-Terry data
    plain = fit(lambda w: preference_loss(c @ w, r @ w).mean())
    pen = fit(lambda w: (preference_loss(c @ w, r @ w)
                         + 0.01 * centring_penalty(c @ w, r @ w)).mean())
    ratio = (pen @ plain / (plain @ plain)).item()
    assert abs((plain @ W_TRUE / (W_TRUE @ W_TRUE)).item() - 1) < 0.05
    print(f"centring 0.01: w x {ratio:.3f}")
    assert 0.55 < ratio < 0.75, ratio


def test_ece_bins_are_closed_below_in_the_probability_dtype():
    # 0.6 is an edge of 10 bins over [1/2, 1]; in float32 that edge is 0.60000002 > 0.6, so a
    # float64 probability of exactly 0.6 used to fall into the bin below
    for dtype in (torch.float64, torch.float32):
        p = torch.tensor([0.6, 0.6], dtype=dtype)
        ece = expected_calibration_error(p, torch.tensor([True, False]))
        # one bin [0.6, 0.65): accuracy 1/2, confidence 0.6 -> 0.1
        assert abs(ece - 0.1) < 1e-6
    p = torch.tensor([0.55, 0.95, 1.0], dtype=torch.float64)
    ece = expected_calibration_error(p, torch.tensor([True, True, True]))
    assert abs(ece - (0.45 + 0.05 + 0.0) / 3) < 1e-6
