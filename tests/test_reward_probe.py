"""A linear probe on a frozen encoder (`model.train_backbone: false`, rlhf/reward/probe.py):
the heads trained on features pooled once give the same loss and gradients as the model run
on the tokens (in eval mode, where dropout is off), a trainable backbone is refused, and
`train-reward` with a frozen encoder learns a rule while leaving the encoder's weights as
they were."""

from __future__ import annotations

import pytest
import torch
from encoder_folders import make_encoder_folder
from test_reward_encoder import comparisons

from rlhf.config import load_config
from rlhf.feedback.derive import to_pairs
from rlhf.lm.encoders.folders import load_encoder
from rlhf.preferences.data import encode_pairs, prepare_data
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.model import init_reward_model, load_reward_model
from rlhf.reward.probe import cache_features, pooled_features
from rlhf.reward.train import micro_batch_loss, prepare_model, train

pytest.importorskip("transformers")


def probe_config(tmp_path, *extra: str) -> RewardTrainConfig:
    return load_config(RewardTrainConfig, None, [
        f"out_dir={tmp_path / 'run'}", f"model.backbone={tmp_path / 'enc'}",
        "model.init=nowhere", "data.max_len=32", "model.train_backbone=false",
        "model.bootstrap=false", "progress=false", "runtime.threads=1", *extra])


@pytest.mark.parametrize("ties", ["half", "model"])
def test_cached_features_give_the_models_loss_and_gradient(tmp_path, ties):
    make_encoder_folder(tmp_path / "enc", "bert")  # dropout 0.1: eval mode matters
    cfg = probe_config(tmp_path, f"data.ties={ties}", "model.n_members=2")
    rm, tok = init_reward_model(cfg.model.init, 2, 0, "mean", cfg.model.backbone)
    data = encode_pairs(to_pairs(comparisons(24, ties=0.3), ties="half"), tok, 32, False)
    prepare_model(rm, data, cfg)
    idx, weights = list(range(3, 19)), torch.rand(len(data), 2)
    rm.eval()  # the model on the tokens, dropout off
    m = micro_batch_loss(rm, data, idx, weights, cfg, torch.device("cpu"))
    loss, d = m["loss"], m["margin"]
    loss.backward()
    grad = rm.head.weight.grad.clone()
    rm.zero_grad()
    rm.train()  # cached: eval-mode features, whatever mode the model is in
    cache_features(rm, data, tok.pad_id, batch_size=5)
    assert data.features.shape == (24, 2, 32) and rm.training
    m2 = micro_batch_loss(rm, data, idx, weights, cfg, torch.device("cpu"))
    loss2, d2 = m2["loss"], m2["margin"]
    loss2.backward()
    assert abs(loss.item() - loss2.item()) < 1e-6
    assert torch.allclose(d, d2, atol=1e-5)
    assert torch.allclose(grad, rm.head.weight.grad, atol=1e-6)
    assert all(p.grad is None for p in rm.backbone.parameters())
    if ties == "model":
        assert rm.log_nu.grad is not None


def test_features_do_not_depend_on_batching_and_need_a_frozen_encoder(tmp_path):
    make_encoder_folder(tmp_path / "enc", "bert")
    rm, tok = init_reward_model(tmp_path / "enc", 1, pooling="cls")
    seqs = [tok.encode_pair("a cat", " ".join(["yes"] * k), 32)[0] for k in (1, 4, 9)]
    together = pooled_features(rm, seqs, tok.pad_id, batch_size=3)
    alone = torch.cat([pooled_features(rm, [s], tok.pad_id) for s in seqs])
    assert (together - alone).abs().max() < 1e-5
    data = encode_pairs(to_pairs(comparisons(4)), tok, 32, False)
    with pytest.raises(ValueError, match="frozen encoder"):
        cache_features(rm, data, tok.pad_id)  # the backbone still learns


def test_train_reward_probe_learns_a_rule_and_keeps_the_encoder(tmp_path):
    from rlhf.feedback.store import ComparisonStore

    make_encoder_folder(tmp_path / "enc", "bert")
    store = tmp_path / "store.jsonl"
    ComparisonStore(store).extend(comparisons(400, ties=0.1))
    cfg = probe_config(tmp_path, f"data.paths=[{store}]", "data.ties=model",
                       "data.val_fraction=0.25", "model.n_members=1", "train.batch_size=16",
                       "train.lr=1e-2", "train.epochs=15", "train.eval_every=0",
                       "train.weight_decay=0.01")
    summary = train(cfg)
    assert summary["last_val_accuracy"] > 0.85, summary
    before, _, _, _ = load_encoder(tmp_path / "enc")
    rm, _ = load_reward_model(tmp_path / "run" / "model")
    for (name, p), q in zip(before.state_dict().items(), rm.backbone.state_dict().values()):
        assert torch.equal(p, q), name


def test_select_fraction_validates_inside_the_training_prompts(tmp_path):
    from rlhf.feedback.store import ComparisonStore

    make_encoder_folder(tmp_path / "enc", "bert")
    store = tmp_path / "store.jsonl"
    ComparisonStore(store).extend(comparisons(120))
    _, tok = init_reward_model(tmp_path / "enc", 1)
    base = [f"data.paths=[{store}]", "data.val_fraction=0.25", "train.batch_size=4"]
    train_d, held_out = prepare_data(probe_config(tmp_path, *base), tok)
    fit, check = prepare_data(probe_config(tmp_path, *base, "data.select_fraction=0.3"), tok)

    def rows(d):
        return {(tuple(c), tuple(r)) for c, r in zip(d.chosen, d.rejected)}

    assert rows(fit) | rows(check) == rows(train_d) and not rows(fit) & rows(check)
    assert not (rows(fit) | rows(check)) & rows(held_out)
    assert 0.2 < len(check) / len(train_d) < 0.4  # about 30% of the training prompts
