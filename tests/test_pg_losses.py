"""rlhf.policy.losses: hand-computed values, naive-loop references, gradient identities."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.policy import losses as L


def test_reinforce_loss_hand_value():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([2.0, -1.0])
    # row 0: -(2 * (-1 - 2)) / 3 = 2; row 1: -(-1 * -1.5) / 3 = -0.5; mean 0.75
    assert L.reinforce_loss(logp, adv, mask).item() == pytest.approx(0.75, abs=1e-6)


def _naive_ppo(logp, old, adv, mask, eps):
    B, N = len(logp), len(logp[0])
    total, clipped, real = 0.0, 0, 0
    for i in range(B):
        row = 0.0
        for t in range(N):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            a = float(adv[i])
            u, c = ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a
            row += min(u, c)
            clipped += c < u
            real += 1
        total += row / N
    return -total / B, clipped / real


def test_ppo_hand_values():
    old = torch.zeros(1, 4)
    logp = torch.tensor([[math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, s = L.ppo_clip_loss(logp, old, adv, torch.ones(1, 4), clip_eps=0.2)
    # min terms: 1.2 (clipped), -1.5, 0.5, -0.8 (clipped): sum -0.6, / N=4 -> loss 0.15
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert s["clip_frac"].item() == pytest.approx(0.5)


def test_ppo_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(5, 6, generator=g) * 2
    old = logp + 0.3 * torch.randn(5, 6, generator=g)
    adv = torch.randn(5, generator=g)
    mask = (torch.rand(5, 6, generator=g) > 0.3).long()
    mask[:, 0] = 1
    loss, s = L.ppo_clip_loss(logp, old, adv, mask, 0.2)
    ref_loss, ref_clip = _naive_ppo(logp.tolist(), old.tolist(), adv, mask.tolist(), 0.2)
    assert loss.item() == pytest.approx(ref_loss, abs=1e-5)
    assert s["clip_frac"].item() == pytest.approx(ref_clip, abs=1e-6)


def test_ppo_gradient_equals_reinforce_at_ratio_one_and_vanishes_when_clipped():
    g = torch.Generator().manual_seed(3)
    base = -torch.rand(3, 4, generator=g)
    adv = torch.randn(3, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    a = base.clone().requires_grad_(True)
    L.ppo_clip_loss(a, base, adv, mask, 0.2)[0].backward()
    b = base.clone().requires_grad_(True)
    L.reinforce_loss(b, adv, mask).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    assert (a.grad[mask == 0] == 0).all()
    # ratio 2 with a positive advantage: clipped, no gradient
    c = (base + math.log(2)).requires_grad_(True)
    L.ppo_clip_loss(c, base, adv.abs(), mask, 0.2)[0].backward()
    assert (c.grad == 0).all()


def test_kl_loss_gradients_in_expectation():
    """E_{x~pi}[grad k2(x)] = grad KL(pi||ref); E_{x~pi}[grad k3(x)] = grad KL(ref||pi);
    E_{x~pi}[grad k1(x)] = 0 -- exact sums over a 6-token vocabulary."""
    g = torch.Generator().manual_seed(4)
    theta = torch.randn(6, generator=g)
    ref = torch.log_softmax(torch.randn(6, generator=g), -1)

    def expected_grad(est):
        th = theta.clone().requires_grad_(True)
        logp = torch.log_softmax(th, -1)
        # one row per token x; kl_loss averages rows, so weighting row x by 6 pi(x) (a constant)
        # gives the expectation over x ~ pi
        w = logp.exp().detach() * 6
        L.kl_loss(logp[:, None], ref[:, None], w[:, None], est).backward()
        return th.grad

    def true_grad(fn):
        th = theta.clone().requires_grad_(True)
        fn(torch.log_softmax(th, -1)).backward()
        return th.grad

    kl_fwd = true_grad(lambda lp: (lp.exp() * (lp - ref)).sum())
    kl_rev = true_grad(lambda lp: (ref.exp() * (ref - lp)).sum())
    assert torch.allclose(expected_grad("k2"), kl_fwd, atol=1e-6)
    assert torch.allclose(expected_grad("k3"), kl_rev, atol=1e-6)
    assert torch.allclose(expected_grad("k1"), torch.zeros(6), atol=1e-6)


def test_kl_loss_hand_value_and_entropy():
    logp = torch.tensor([[math.log(0.5), 0.0]])
    ref = torch.tensor([[math.log(0.25), 0.0]])
    mask = torch.tensor([[1, 0]])
    assert L.kl_loss(logp, ref, mask, "k1").item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    ent = torch.tensor([[1.0, 3.0, 5.0]])
    m = torch.tensor([[1, 1, 0]])
    assert L.entropy_bonus(ent, m).item() == pytest.approx(4.0 / 3)
    assert L.masked_mean(ent, m).item() == pytest.approx(2.0)
