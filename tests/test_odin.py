"""A reward that length cannot game (ODIN, `model.length_head`): the two regularisers by hand,
a reward model trained on preferences that are part quality, part length keeps its quality
head uncorrelated with length (the plain model's score follows length), the length head and
its settings survive saving (causal and encoder folders), and every reader sees the quality
head alone."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_reward import TOK, WORDS, config, tiny_backbone

from rlhf.feedback.records import Comparison
from rlhf.lm.model import ModelArgs, Transformer
from rlhf.preferences.losses import odin_losses, pearson
from rlhf.reward.model import (
    RewardModel,
    init_reward_model,
    load_reward_model,
    save_reward_model,
    score_texts,
)
from rlhf.reward.train import train


def test_length_and_orthogonality_losses_by_hand():
    length = torch.tensor([1.0, 2.0, 3.0, 4.0])
    r_q = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])  # rho 1 and 0.4472
    r_l = torch.tensor([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])  # rho -1 and 1
    # member 0: |1| - (-1) = 2; member 1: |0.4472| - 1 = -0.5528; mean 0.7236
    w_q, w_l = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    length_loss, ortho = odin_losses(r_q, r_l, length, w_q, w_l)
    assert float(length_loss) == pytest.approx((2 + 1 / 5 ** 0.5 - 1) / 2, abs=1e-5)
    assert float(ortho) == pytest.approx((1 / 2 ** 0.5 + 0) / 2, abs=1e-6)  # |cos| 0.7071, 0
    x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    want = [np.corrcoef(x[:, e].numpy(), y.numpy())[0, 1] for e in range(3)]
    assert pearson(x, y).tolist() == pytest.approx(want, abs=1e-6)


def test_constant_scores_or_lengths_give_zero_correlation_and_finite_gradients():
    r = torch.zeros(6, 2, requires_grad=True)
    rho = pearson(r, torch.arange(6.0))
    rho.sum().backward()
    assert rho.tolist() == [0.0, 0.0] and torch.isfinite(r.grad).all()
    r2 = torch.randn(6, 2, requires_grad=True)
    loss, _ = odin_losses(r2, r2 * 2, torch.full((6,), 3.0), torch.ones(2, 4), torch.ones(2, 4))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(r2.grad).all()


def quality_and_length_fixture(folder: Path, n: int = 480, seed: int = 0):
    """Preferences that are part quality, part length: half the pairs are "happy" vs "sad"
    responses of equal length (happy wins), half are two plain responses where the longer
    wins. The truth is quality + length, so a plain reward model's score grows with length."""
    from rlhf.feedback.store import ComparisonStore

    model_dir = tiny_backbone(folder, seed)
    rng = random.Random(seed)

    def resp(k, word=None):
        xs = [rng.choice(WORDS) for _ in range(k)]
        if word:
            xs.insert(rng.randint(0, k), word)
        return " " + " ".join(xs)

    comps = []
    for i in range(n):
        if i % 2:
            k = rng.randint(2, 9)
            a, b = resp(k, "happy"), resp(k, "sad")
        else:
            k = rng.randint(2, 6)
            a, b = resp(k + rng.randint(2, 4)), resp(k)
        label = "a"
        if rng.random() < 0.5:
            a, b, label = b, a, "b"
        comps.append(Comparison(item_id=str(i), prompt=" ".join(rng.sample(WORDS, 3)), a=a,
                                b=b, label=label, group=f"g{i % (n // 2)}"))
    store = folder / "store.jsonl"
    ComparisonStore(store).extend(comps)
    return model_dir, store, rng


def test_quality_head_is_uncorrelated_with_length_where_the_plain_score_follows_it(tmp_path):
    model_dir, store, rng = quality_and_length_fixture(tmp_path)
    common = ("train.max_steps=150", "train.eval_every=150", "model.n_members=2",
              "train.batch_size=32")  # rho over 64 responses per step
    plain = train(config(model_dir, store, tmp_path / "plain", *common))
    s = train(config(model_dir, store, tmp_path / "odin", *common, "model.length_head=true"))
    rows = (tmp_path / "odin/metrics.jsonl").read_text()
    assert '"length_loss"' in rows and '"orthogonal_loss"' in rows
    # fresh responses of the training lengths, length independent of sentiment
    ks = [rng.randint(2, 9) for _ in range(300)]
    words = [rng.choice(["happy", "sad"]) for _ in ks]
    texts = [" " + " ".join([rng.choice(WORDS) for _ in range(k)] + [w]) for k, w in
             zip(ks, words)]
    prompts = [" ".join(rng.sample(WORDS, 3)) for _ in ks]
    length, happy = torch.tensor([float(len(t)) for t in texts]), torch.tensor(
        [float(w == "happy") for w in words])
    out = {}
    for name in ("plain", "odin"):
        rm, tok = load_reward_model(tmp_path / name / "model")
        r = score_texts(rm, tok, prompts, texts)  # (300,): what the policy would be given
        out[name] = (float(pearson(r[:, None], length)), float(pearson(r[:, None], happy)))
    assert out["plain"][0] > 0.3, out  # the plain score follows length (0.44 measured)
    assert abs(out["odin"][0]) < 0.15, out  # the quality head does not (0.085)
    assert out["odin"][1] > 0.8, out  # and tells happy from sad (0.99)
    # held out, the quality head cannot call the pairs that only length decides
    assert s["last_val_accuracy"] < 0.9
    # the held-out audit's score-length correlation tells the two apart as well
    assert plain["last_val_score_length_corr"] > 0.3 > abs(s["last_val_score_length_corr"])


def test_length_head_survives_saving_and_readers_see_the_quality_head(tmp_path):
    args = ModelArgs(dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                     vocab_size=512, max_seq_len=32)
    if not TOK.is_file():
        pytest.skip("needs ../shared/models/stories260K/tok512.bin")
    from rlhf.lm.tokenizer import Llama2cTokenizer

    torch.manual_seed(0)
    tok = Llama2cTokenizer(TOK)
    rm = RewardModel(Transformer(args), n_members=3, seed=1)
    rm.add_length_head(seed=5)
    tokens = torch.randint(3, 500, (4, 10))
    both = rm(tokens, both=True)  # (4, 6)
    assert both.shape == (4, 6) and torch.equal(both[:, :3], rm(tokens))
    assert not torch.allclose(both[:, 3:], both[:, :3])
    save_reward_model(rm, tok, tmp_path / "rm")
    back, _ = load_reward_model(tmp_path / "rm")
    assert torch.allclose(back(tokens, both=True), both, atol=1e-6)
    again, _ = init_reward_model(tmp_path / "rm", 3)  # continued: heads kept
    assert torch.equal(again.length_head.weight, rm.length_head.weight)


def test_encoder_reward_model_keeps_its_length_head(tmp_path):
    pytest.importorskip("transformers")
    from encoder_folders import make_encoder_folder

    make_encoder_folder(tmp_path / "enc", "bert")
    rm, tok = init_reward_model(tmp_path / "enc", 2, 0, "mean")
    rm.add_length_head(seed=3)
    rm.eval()
    tokens = torch.randint(5, rm.backbone.args.vocab_size, (3, 12))
    both = rm(tokens, torch.ones_like(tokens), both=True)
    save_reward_model(rm, tok, tmp_path / "rm")
    back, _ = load_reward_model(tmp_path / "rm")
    assert torch.allclose(back(tokens, torch.ones_like(tokens), both=True), both, atol=1e-5)
