"""rlhf.policy.advantages: hand-computed values, naive-loop references, exact expectations."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.policy import advantages as R


def test_kl_estimators_hand_values():
    # pi(x) = 0.5, pi_ref(x) = 0.25: log r = log 0.5
    logp = torch.tensor([[math.log(0.5), 0.0]])
    ref = torch.tensor([[math.log(0.25), -3.0]])
    mask = torch.tensor([[1, 0]])
    k1 = R.kl_per_token(logp, ref, "k1", mask)
    k2 = R.kl_per_token(logp, ref, "k2", mask)
    k3 = R.kl_per_token(logp, ref, "k3", mask)
    assert k1[0, 0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert k2[0, 0].item() == pytest.approx(0.5 * math.log(2) ** 2, abs=1e-6)
    assert k3[0, 0].item() == pytest.approx(-0.5 + math.log(2), abs=1e-6)
    assert k1[0, 1] == 0 and k2[0, 1] == 0 and k3[0, 1] == 0  # padding
    with pytest.raises(ValueError, match="k4"):
        R.kl_per_token(logp, ref, "k4")


def test_k1_k3_are_unbiased_exactly():
    """E_{x~pi}[k1] = E_{x~pi}[k3] = KL(pi || ref), summing over the whole vocabulary."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, generator=g), -1)
    ref = torch.log_softmax(torch.randn(7, generator=g), -1)
    kl = (logp.exp() * (logp - ref)).sum()
    for est in ("k1", "k3"):
        e = (logp.exp() * R.kl_per_token(logp[None], ref[None], est)[0]).sum()
        assert e.item() == pytest.approx(kl.item(), abs=1e-6)
    k2 = (logp.exp() * R.kl_per_token(logp[None], ref[None], "k2")[0]).sum()
    assert k2.item() != pytest.approx(kl.item(), abs=1e-3)  # k2 is biased


def test_shape_rewards_last_real_token_never_padding():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    kl = torch.full((3, 4), 1.0)  # garbage on padding too: must not leak
    scores = torch.tensor([1.0, 2.0, -1.0])
    r = R.shape_rewards(scores, kl, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.1, -0.1, 0.9, 0.0], [-0.1, -0.1, -0.1, 1.9],
                             [-1.1, 0.0, 0.0, 0.0]])
    assert torch.allclose(r, expected, atol=1e-6)
    assert (r[mask == 0] == 0).all()
    assert torch.equal(R.last_token_index(mask), torch.tensor([2, 3, 0]))
    assert torch.allclose(R.sequence_returns(r), torch.tensor([0.7, 1.6, -1.1]), atol=1e-6)
    with pytest.raises(ValueError, match="no tokens"):
        R.last_token_index(torch.tensor([[0, 0]]))


def test_missing_eos_penalty():
    out = R.missing_eos_penalty(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), 0.5)
    assert torch.allclose(out, torch.tensor([1.0, 0.5]))


def test_whiten_hand_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population var 1.25
    w = R.whiten(x, eps=0.0)
    assert torch.allclose(w, (x - 2.5) / math.sqrt(1.25), atol=1e-6)
    assert torch.allclose(R.whiten(x, shift_mean=False, eps=0.0), w + 2.5, atol=1e-6)
    m = torch.tensor([1, 1, 0, 0])  # only 1, 2: mean 1.5, var 0.25
    assert torch.allclose(R.whiten(x, m, eps=0.0), torch.tensor([-1.0, 1.0, 0.0, 0.0]))


def test_running_moments_match_all_at_once():
    g = torch.Generator().manual_seed(1)
    chunks = [torch.randn(n, generator=g) * 3 + 1 for n in (5, 1, 8, 3)]
    s = R.RunningMoments()
    for c in chunks:
        s = R.update_moments(s, c)
    allx = torch.cat(chunks).double()
    assert s.count == 17
    assert s.mean == pytest.approx(float(allx.mean()), abs=1e-9)
    assert s.std == pytest.approx(float(allx.std(unbiased=False)), abs=1e-9)
    z = R.normalize_scores(torch.tensor([s.mean + s.std]), s)
    assert z.item() == pytest.approx(1.0, abs=1e-5)


def test_rloo_hand_values_and_naive_loop():
    adv = R.rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0, 8.0]), k=3)
    assert torch.allclose(adv, torch.tensor([-1.5, 0.0, 1.5, -3.0, 0.0, 3.0]))
    g = torch.Generator().manual_seed(2)
    ret, k = torch.randn(12, generator=g), 4
    naive = torch.empty(12)
    for i in range(12):
        group = range(i // k * k, i // k * k + k)
        others = [ret[j] for j in group if j != i]
        naive[i] = ret[i] - sum(others) / (k - 1)
    assert torch.allclose(R.rloo_advantages(ret, k), naive, atol=1e-6)
    assert torch.allclose(R.ppo_advantages(ret, k), naive, atol=1e-6)
    with pytest.raises(ValueError):
        R.rloo_advantages(ret, 5)
    with pytest.raises(ValueError):
        R.rloo_advantages(ret, 1)


def test_reinforce_baseline():
    ret = torch.tensor([1.0, 3.0])
    assert torch.allclose(R.reinforce_advantages(ret, 0.5), torch.tensor([0.5, 2.5]))
    b, n = R.update_baseline(0.0, 0, ret, momentum=0.9)  # first batch: its mean
    assert (b, n) == (2.0, 1)
    b, n = R.update_baseline(b, n, torch.tensor([12.0]), momentum=0.9)
    assert b == pytest.approx(0.9 * 2.0 + 0.1 * 12.0) and n == 2


@pytest.mark.parametrize("kl,expected", [(12.0, 0.102), (6.0, 0.1), (6.6, 0.101), (3.0, 0.098),
                                         (0.0, 0.098)])
def test_adaptive_kl_controller(kl, expected):
    ctl = R.KLController(coef=0.1, target=6.0, k_beta=0.1)
    assert R.adaptive_kl_update(ctl, kl).coef == pytest.approx(expected, abs=1e-9)
    fixed = R.KLController(coef=0.1)
    assert R.adaptive_kl_update(fixed, kl).coef == 0.1
