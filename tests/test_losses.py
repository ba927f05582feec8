"""Preference losses against numbers computed by hand."""

import math

import pytest
import torch

from rlhf.preferences.losses import (
    bradley_terry_loss,
    centring_penalty,
    margins_from_strengths,
    preference_loss,
    preference_probability,
)

RC, RR = torch.tensor([2.0]), torch.tensor([0.5])  # d = 1.5
SP_NEG = math.log(1 + math.exp(-1.5))  # softplus(-1.5) = 0.2014133
SP_POS = 1.5 + SP_NEG  # softplus(1.5) = 1.7014133


def test_bradley_terry_by_hand():
    assert bradley_terry_loss(RC, RR).item() == pytest.approx(0.2014133, abs=1e-6)
    assert bradley_terry_loss(RR, RC).item() == pytest.approx(1.7014133, abs=1e-6)
    # equal scores: log 2
    assert bradley_terry_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(
        0.6931472, abs=1e-6)


def test_bradley_terry_gradient_by_hand():
    rc = RC.clone().requires_grad_()
    bradley_terry_loss(rc, RR).backward()
    # d/dr_c -log s(d) = -(1 - s(1.5)) = -(1 - 0.8175745)
    assert rc.grad.item() == pytest.approx(-0.1824255, abs=1e-6)


def test_no_overflow_for_large_differences():
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([100.0])).item() == \
        pytest.approx(100.0, abs=1e-4)
    assert bradley_terry_loss(torch.tensor([100.0]), torch.tensor([0.0])).item() < 1e-40


def test_target_one_is_bradley_terry():
    r_c, r_r = torch.randn(7), torch.randn(7)
    torch.testing.assert_close(preference_loss(r_c, r_r, torch.ones(7)),
                               bradley_terry_loss(r_c, r_r))
    torch.testing.assert_close(preference_loss(r_c, r_r), bradley_terry_loss(r_c, r_r))


def test_tie_half_target_by_hand():
    loss = preference_loss(RC, RR, torch.tensor([0.5])).item()
    assert loss == pytest.approx(0.5 * SP_NEG + 0.5 * SP_POS, abs=1e-6)  # 0.9514133
    assert loss == pytest.approx(0.9514133, abs=1e-6)
    # a tie is best predicted by equal rewards: minimum log 2 at d = 0
    d = torch.linspace(-2, 2, 41, requires_grad=True)
    tie = preference_loss(d, torch.zeros(41), torch.full((41,), 0.5))
    assert d[tie.argmin()].item() == pytest.approx(0.0, abs=1e-6)
    assert tie.min().item() == pytest.approx(math.log(2), abs=1e-6)


def test_margin_by_hand():
    # -log s(1.5 - 1) = softplus(-0.5) = log(1 + e^-0.5) = 0.4740770
    loss = preference_loss(RC, RR, torch.ones(1), torch.tensor([1.0])).item()
    assert loss == pytest.approx(0.4740770, abs=1e-6)


def test_centring_by_hand():
    assert centring_penalty(RC, RR).item() == pytest.approx(6.25)
    assert centring_penalty(torch.tensor([1.0]), torch.tensor([-1.0])).item() == 0.0


def test_ensemble_shapes_broadcast_targets_and_margins():
    r_c = torch.tensor([[2.0, 0.5], [0.0, 1.0]])  # (B=2, E=2)
    r_r = torch.tensor([[0.5, 2.0], [0.0, 0.0]])
    t, m = torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.0])
    loss = preference_loss(r_c, r_r, t, m)
    assert loss.shape == (2, 2)
    assert loss[0, 0].item() == pytest.approx(0.4740770, abs=1e-6)  # d=1.5, m=1
    assert loss[0, 1].item() == pytest.approx(math.log(1 + math.exp(2.5)), abs=1e-5)
    assert loss[1, 0].item() == pytest.approx(math.log(2), abs=1e-6)  # tie, d=0
    # vectorised equals one element at a time
    for i in range(2):
        for e in range(2):
            one = preference_loss(r_c[i, e:e + 1], r_r[i, e:e + 1], t[i:i + 1], m[i:i + 1])
            assert loss[i, e].item() == pytest.approx(one.item(), abs=1e-7)


def test_probability_and_strength_margins():
    assert preference_probability(RC, RR).item() == pytest.approx(0.8175745, abs=1e-6)
    m = margins_from_strengths(["slightly", "much", None, "clearly"], [1.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(m, torch.tensor([1 / 3, 1.0, 0.0, 0.0]))


def test_bradley_terry_fit_recovers_known_rewards():
    """Behaviour: fitting rewards to preferences sampled from a BT model recovers their order."""
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([0.0, 1.0, 2.0, 3.0])
    i, j = torch.randint(0, 4, (4000,), generator=g), torch.randint(0, 4, (4000,), generator=g)
    a_wins = torch.rand(4000, generator=g) < torch.sigmoid(true[i] - true[j])
    c, r = torch.where(a_wins, i, j), torch.where(a_wins, j, i)
    est = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([est], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        bradley_terry_loss(est[c], est[r]).mean().backward()
        opt.step()
    diffs = (est - est[0]).detach()
    torch.testing.assert_close(diffs, true, atol=0.25, rtol=0)
