"""A reward that length cannot game by a length term (`model.length_term`): the preferences are
fitted as quality + a learned coefficient x length, the policy reads the quality head alone.
The fitted scores and the term's starting value by hand; on preferences that are part quality,
part length, the quality head's score no longer grows with length (the plain model's does)
while it still tells happy from sad; the coefficient survives saving and readers ignore it;
the two length options exclude each other."""

from __future__ import annotations

import types

import pytest
import torch
from test_odin import quality_and_length_fixture
from test_train_reward import WORDS, config

from rlhf.config import ConfigError
from rlhf.preferences.losses import with_length_term
from rlhf.reward.model import load_reward_model, score_texts
from rlhf.reward.train import length_only_fit, train


def test_fitted_scores_add_each_members_coefficient_times_length():
    r = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, 0.5]])  # (N=3, E=2)
    length = torch.tensor([2.0, 1.0, 0.0])
    coef = torch.tensor([0.5, -1.0])
    want = torch.tensor([[2.0, -3.0], [0.5, 1.0], [0.5, 0.5]])
    assert torch.equal(with_length_term(r, length, coef), want)


def test_the_term_starts_at_the_length_only_logistic_fit():
    # chosen 100 characters longer in 3 pairs, shorter in 1: 3 log s(b) + log s(-b) is
    # largest where s(b) = 3/4, b = ln 3 per 100 characters (the tiny ridge aside)
    data = types.SimpleNamespace(len_chosen=[300, 250, 120, 100], len_rejected=[200, 150, 20, 200],
                                 target=torch.ones(4))
    assert length_only_fit(data) == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-3)
    # a tie counts 1/2 each way: one tie among equal counts leaves the fit at 0
    data.target = torch.tensor([1.0, 0.0, 0.5, 0.5])
    data.len_chosen, data.len_rejected = [300, 300, 300, 100], [200, 200, 200, 200]
    assert length_only_fit(data) == pytest.approx(0.0, abs=1e-6)


def slope_on_length(r: torch.Tensor, length: torch.Tensor, happy: torch.Tensor) -> float:
    """Least-squares coefficient of length in r ~ 1 + length + happy (score per character at
    equal sentiment)."""
    x = torch.stack([torch.ones_like(length), length, happy], 1).double()
    return float(torch.linalg.lstsq(x, r.double()[:, None]).solution[1, 0])


def test_quality_head_does_not_grow_with_length_and_keeps_quality(tmp_path):
    model_dir, store, rng = quality_and_length_fixture(tmp_path)
    common = ("train.max_steps=150", "train.eval_every=150", "model.n_members=2",
              "train.batch_size=32")
    train(config(model_dir, store, tmp_path / "plain", *common))
    s = train(config(model_dir, store, tmp_path / "term", *common, "model.length_term=true"))
    assert '"length_coef"' in (tmp_path / "term/metrics.jsonl").read_text()
    assert all(c > 0 for c in s["length_coef"]), s["length_coef"]  # longer wins: positive
    ks = [rng.randint(2, 9) for _ in range(300)]  # fresh responses, sentiment apart from length
    words = [rng.choice(["happy", "sad"]) for _ in ks]
    texts = [" " + " ".join([rng.choice(WORDS) for _ in range(k)] + [w])
             for k, w in zip(ks, words)]
    prompts = [" ".join(rng.sample(WORDS, 3)) for _ in ks]
    length = torch.tensor([float(len(t)) for t in texts])
    happy = torch.tensor([float(w == "happy") for w in words])
    out = {}
    for name in ("plain", "term"):
        rm, tok = load_reward_model(tmp_path / name / "model")
        r = score_texts(rm, tok, prompts, texts)  # (300,): what the policy would be given
        gap = float(r[happy == 1].mean() - r[happy == 0].mean())
        out[name] = (slope_on_length(r, length, happy) * 10 / gap, gap)
    print(out)
    # what 10 more characters add to the score, as a share of the happy-sad gap: a large part
    # for the plain score, far less for the quality head (measured: plain 0.17, term 0.02)
    assert out["plain"][0] > 0.1, out
    assert abs(out["term"][0]) < 0.4 * out["plain"][0], out
    assert out["term"][1] > 1.0, out  # and it tells happy from sad
    rm, _ = load_reward_model(tmp_path / "term" / "model")
    assert rm.length_coef.tolist() == pytest.approx(s["length_coef"], abs=1e-4)


def test_length_term_and_length_head_exclude_each_other(tmp_path):
    model_dir, store, _ = quality_and_length_fixture(tmp_path, n=8)
    with pytest.raises(ConfigError, match="length_term"):
        config(model_dir, store, tmp_path / "x", "model.length_term=true",
               "model.length_head=true")


def test_one_member_with_a_length_term_trains_saves_and_resumes(tmp_path):
    # one member: the coefficient is a (1,) tensor, checkpointed and read back like any other
    model_dir, store, _ = quality_and_length_fixture(tmp_path, n=64)
    keys = ("model.n_members=1", "model.bootstrap=false", "model.length_term=true",
            "train.batch_size=8", "train.save_every=2")
    first = train(config(model_dir, store, tmp_path / "one", *keys, "train.max_steps=4",
                         "train.stop_at=2"))
    assert first["stopped_at"] == 2 and not (tmp_path / "one" / "model").exists()
    s = train(config(model_dir, store, tmp_path / "one", *keys, "train.max_steps=4"))
    assert len(s["length_coef"]) == 1
    rm, _ = load_reward_model(tmp_path / "one" / "model")
    assert rm.length_coef.shape == (1,) and rm.length_coef.tolist() == pytest.approx(
        s["length_coef"], abs=1e-4)
