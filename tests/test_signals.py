"""Over-optimisation signals, the warning rule, mitigations, Wilson intervals, min_new_tokens:
hand-computed numbers."""

import math

import pytest
import torch
from conftest import tiny_model

from rlhf.config import ConfigError, load_config
from rlhf.feedback.intervals import share_record, show_share, wilson
from rlhf.lm.config import SamplingConfig
from rlhf.lm.generation import generate
from rlhf.policy import signals as S
from rlhf.policy.config import GuardConfig


def test_member_spread_ignores_member_offsets_and_is_zero_for_one_member():
    # member 2 = member 1 + 5: a constant offset, no disagreement about which is better
    m = torch.tensor([[1.0, 6.0], [2.0, 7.0], [3.0, 8.0]])
    assert torch.allclose(S.member_spread(m), torch.zeros(3))
    # centred: member 1 (-1, 0, 1), member 2 (1, 0, -1) -> std over 2 members = |a - b| / 2
    m = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert torch.allclose(S.member_spread(m), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(S.member_spread(torch.ones(4, 1)), torch.zeros(4))


def test_batch_signals_hand_computed():
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])  # lengths 1, 4, 2
    ended = torch.tensor([True, False, True])  # row 0: EOS first = empty
    kl = torch.tensor([[0.5, 0, 0, 0], [0.1, 0.1, 0.1, 0.1], [0.2, 0.3, 0, 0]])
    sig = S.batch_signals(mask, ended, kl, spread=torch.tensor([0.1, 0.2, 0.6]))
    assert sig["length"] == pytest.approx(7 / 3)
    assert sig["empty"] == pytest.approx(1 / 3)
    assert sig["unterminated"] == pytest.approx(1 / 3)
    assert sig["kl_per_token"] == pytest.approx(1.4 / 7)
    assert sig["disagreement"] == pytest.approx(0.3)
    assert "disagreement" not in S.batch_signals(mask, ended, kl)


def test_the_warning_rule_each_clause_and_quiet_when_nothing_moves():
    rule = GuardConfig(kl_token_max=0.5)
    base = {"length": 40.0, "empty": 0.0, "unterminated": 0.2, "kl_per_token": 0.1,
            "disagreement": 0.2}
    assert S.warnings(dict(base), base, rule) == []
    assert S.warnings({**base, "length": 21.0}, base, rule) == []  # 21 >= 0.5 x 40
    w = S.warnings({**base, "length": 19.0}, base, rule)
    assert len(w) == 1 and w[0].startswith("length 19.0")
    assert "empty" in S.warnings({**base, "empty": 0.3}, base, rule)[0]
    assert S.warnings({**base, "empty": 0.25}, base, rule) == []  # not above 25%
    assert "unterminated" in S.warnings({**base, "unterminated": 0.75}, base, rule)[0]
    assert "disagreement" in S.warnings({**base, "disagreement": 0.61}, base, rule)[0]
    assert S.warnings({**base, "disagreement": 0.59}, base, rule) == []
    assert "KL per token" in S.warnings({**base, "kl_per_token": 0.6}, base, rule)[0]
    assert S.warnings({**base, "kl_per_token": 0.6}, base, GuardConfig()) == []  # off


def test_round_rule_flags_a_previous_reward_model_that_prefers_the_rejected():
    rule, base = GuardConfig(), {"length": 10.0}
    assert S.round_warnings(base, base, rule, 10, 40) != []  # 0.25, interval 0.14-0.40
    assert S.round_warnings(base, base, rule, 16, 40) == []  # 0.40, interval reaches 0.55
    assert S.round_warnings(base, base, rule, None, None) == []


def test_smooth_is_the_mean_of_the_last_window():
    hist = [{"a": 1.0}, {"a": 2.0, "b": 1.0}, {"a": 6.0, "b": 3.0}]
    assert S.smooth(hist, 2) == {"a": 4.0, "b": 2.0}
    assert S.smooth(hist, 5)["a"] == pytest.approx(3.0)


def test_conservative_reward_and_kl_per_token_mean():
    r, sd = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0])
    assert torch.allclose(S.conservative_reward(r, sd, 2.0), torch.tensor([0.0, 0.0]))
    assert S.conservative_reward(r, None, 2.0) is r and S.conservative_reward(r, sd, 0) is r
    kl = torch.tensor([[0.2, 0.4, 0.0], [0.3, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per = S.kl_to_penalise(kl, mask, "mean")
    assert torch.allclose(per.sum(1), torch.tensor([0.3, 0.3]))  # per-token means
    assert S.kl_to_penalise(kl, mask, "sum") is kl


def test_wilson_interval_known_values():
    lo, hi = wilson(1, 4)  # Brown, Cai & DasGupta's table: 0.046-0.699
    assert (lo, hi) == (pytest.approx(0.0456, abs=1e-4), pytest.approx(0.6994, abs=1e-4))
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson(50, 100) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)
    rec = share_record(3, 4)
    assert rec["value"] == 0.75 and rec["n"] == 4 and rec["ci95"][0] < 0.75 < rec["ci95"][1]
    assert show_share(0.75, 4, rec["ci95"]) == "0.750 [0.30, 0.95] n=4"
    assert math.isclose(sum(wilson(7, 20)) / 2, (7 + 1.96 ** 2 / 2) / (20 + 1.96 ** 2))


def test_min_new_tokens_masks_eos_and_bos_until_reached():
    model = tiny_model()
    with torch.no_grad():  # EOS (2) and BOS (1) overwhelmingly likely at every step
        model.output.weight.data[2] = 0
        model.output.weight.data[1] = 0
    prompts = [[1, 5, 6], [1, 7]] * 4
    g = torch.Generator().manual_seed(0)
    free = generate(model, prompts, SamplingConfig(max_new_tokens=12), eos_id=2, bos_id=1,
                    generator=g)
    cfg = SamplingConfig(max_new_tokens=12, min_new_tokens=5)
    held = generate(model, prompts, cfg, eos_id=2, bos_id=1,
                    generator=torch.Generator().manual_seed(0))
    lengths = held.response_mask.sum(1)
    assert bool((lengths >= 6).all() | ~held.ended.any())  # 5 tokens, then a stop allowed
    for row in held.response_lists():
        assert 1 not in row[:5] and 2 not in row[:5]
    assert free.response_mask.sum(1).float().mean() < lengths.float().mean()
    with pytest.raises(ConfigError, match="min_new_tokens"):
        load_config(SamplingConfig, None, ["min_new_tokens=13", "max_new_tokens=12"])
