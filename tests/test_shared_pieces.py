"""The pieces every stage shares, written once: the optimiser rule, the learning-rate schedule,
whitening, the prompt reader, the algorithm table, and how the loop hands stages their
configs."""

import math

import pytest
import torch

from rlhf.config import ConfigError, load_config, with_keys
from rlhf.harness.optim import clip_gradients, lr_at, make_optimizer
from rlhf.loop.config import LOOP_SETS, LoopConfig
from rlhf.policy import advantages as R
from rlhf.policy.algorithms import ALGORITHMS
from rlhf.policy.config import PolicyTrainConfig
from rlhf.prompts import load_prompts
from rlhf.reward.config import RewardTrainConfig


def test_weight_decay_on_matrices_only_with_the_stage_betas():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(model, lr=0.1, weight_decay=0.5, betas=[0.8, 0.9])
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert sorted(p.shape for p in plain["params"]) == [torch.Size([4])] * 3
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0
    assert decayed["betas"] == (0.8, 0.9)
    # one step with zero gradients: only decay moves a weight, by lr * wd * w (AdamW)
    w = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model[0].weight.detach(), w * (1 - 0.1 * 0.5))
    assert torch.equal(model[1].weight.detach(), torch.ones(4))  # the norm's gain is untouched
    assert PolicyTrainConfig().algo.betas == [0.9, 0.95]
    assert RewardTrainConfig().train.betas == [0.9, 0.999]


def test_schedule_constant_and_cosine_by_hand():
    assert lr_at(0, 10, 4, 1.0) == 0.25 and lr_at(3, 10, 4, 1.0) == 1.0
    assert [lr_at(s, 10, 0, 0.5) for s in range(10)] == [0.5] * 10  # min_ratio 1: constant
    assert lr_at(7, 10, 4, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_clipping_off_and_on():
    p = torch.nn.Parameter(torch.zeros(2))
    m = torch.nn.ParameterList([p])
    p.grad = torch.tensor([3.0, 4.0])
    assert float(clip_gradients(m, 0.0)) == 5.0 and p.grad.tolist() == [3.0, 4.0]
    assert float(clip_gradients(m, 1.0)) == 5.0
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]), atol=1e-6, rtol=0)


def test_whiten_over_other_values_by_hand():
    x, every = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0, 5.0, 7.0])
    # mean 4, population std sqrt(5)
    torch.testing.assert_close(R.whiten(x, over=every, eps=0.0),
                               torch.tensor([-3.0, -1.0]) / 5 ** 0.5)
    assert R.whiten(every).mean().abs() < 1e-6


def test_one_prompt_reader_one_rule(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Tom ran. Then he sat.\n\n  A cat  \nTom ran. Then he sat.\nA dog\n")
    # a line is a prompt (nothing cut), duplicates dropped, order kept
    assert load_prompts(str(f)) == ["Tom ran. Then he sat.", "A cat", "A dog"]
    assert load_prompts(str(f), n=2) == ["Tom ran. Then he sat.", "A cat"]
    shuffled = load_prompts(str(f), seed=3)
    assert sorted(shuffled) == sorted(load_prompts(str(f))) and len(shuffled) == 3


def test_every_algorithm_is_one_table_entry():
    assert set(ALGORITHMS) == {"rloo", "reinforce", "ppo"}
    for name, algo in ALGORITHMS.items():
        cfg = load_config(PolicyTrainConfig, None, [f"algo.name={name}", f"algo.k={algo.min_k}"])
        assert cfg.algo.name == name
        if algo.min_k > 1:
            with pytest.raises(ConfigError, match=f"algo.k: {name} needs k >= {algo.min_k}"):
                load_config(PolicyTrainConfig, None, [f"algo.name={name}", "algo.k=1"])
    with pytest.raises(ConfigError, match="algo.name: unknown algorithm 'dqn'"):
        load_config(PolicyTrainConfig, None, ["algo.name=dqn"])
    returns = torch.tensor([1.0, 3.0, 0.0, 4.0])
    assert ALGORITHMS["rloo"].advantages(returns, 2, 0.0).tolist() == [-2.0, 2.0, -4.0, 4.0]
    assert ALGORITHMS["reinforce"].advantages(returns, 2, 1.0).tolist() == [0.0, 2.0, -1.0, 3.0]


def test_the_loop_refuses_keys_it_sets_itself():
    for section, keys in LOOP_SETS.items():
        key = next(k for k in keys if k not in ("runtime", "sampling"))
        with pytest.raises(ConfigError, match=f"{section}.{key}: is set by the loop"):
            load_config(LoopConfig, None, [f"{section}.{key}=somewhere"])
    assert load_config(LoopConfig, None, ["reward.train.lr=0.01"]).reward.train.lr == 0.01


def test_with_keys_sets_only_what_it_names_and_validates():
    cfg = RewardTrainConfig()
    new = with_keys(cfg, {"out_dir": "x", "data.paths": ["a.jsonl"]}, who="the loop")
    assert new.out_dir == "x" and new.data.paths == ["a.jsonl"] and cfg.out_dir != "x"
    assert new.train == cfg.train and new.model == cfg.model
    with pytest.raises(ConfigError, match="train.lr: must be > 0 .set by the loop"):
        with_keys(cfg, {"train.lr": -1.0}, who="the loop")
    with pytest.raises(ConfigError, match="nope: not a key"):
        with_keys(cfg, {"nope": 1})
