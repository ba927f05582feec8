"""`rlhf train-reward` / `eval-reward`: learns a known rule, splits by prompt, resumes exactly,
same seed same result, config errors, truncation counted, evaluation numbers by hand."""

import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError, load_config
from rlhf.feedback.derive import PreferencePair
from rlhf.feedback.records import Comparison
from rlhf.harness.optim import lr_at
from rlhf.lm.folders import read_safetensors, save_model
from rlhf.lm.model import ModelArgs, Transformer
from rlhf.preferences.data import epoch_batches, split_by_group
from rlhf.preferences.metrics import expected_calibration_error, pair_metrics
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.train import train

TOK = Path(__file__).resolve().parents[2] / "shared/models/stories260K/tok512.bin"
WORDS = "the cat dog sun tree ran big red blue sat".split()


def tiny_backbone(folder: Path, seed: int = 0) -> Path:
    """A tiny random causal backbone folder (stories260K's tokenizer) at folder/tiny."""
    if not TOK.is_file():
        pytest.skip("needs ../shared/models/stories260K/tok512.bin")
    from rlhf.lm.tokenizer import Llama2cTokenizer

    torch.manual_seed(seed)
    args = ModelArgs(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                     vocab_size=512, max_seq_len=64)
    return save_model(Transformer(args), Llama2cTokenizer(TOK), folder / "tiny")


def make_fixture(folder: Path, n: int = 600, seed: int = 0) -> tuple[Path, Path]:
    """A tiny backbone folder and a comparison store whose rule is known: the response with
    "happy" in it (anywhere) beats the one with "sad"; lengths are random (length rule ~1/2)."""
    from rlhf.feedback.store import ComparisonStore

    model_dir = tiny_backbone(folder, seed)
    rng = random.Random(seed)

    def resp(word):
        xs = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        xs.insert(rng.randint(0, len(xs)), word)
        return " " + " ".join(xs)

    comps = []
    for i in range(n):
        a, b, label = resp("happy"), resp("sad"), "a"
        if rng.random() < 0.5:
            a, b, label = b, a, "b"
        comps.append(Comparison(item_id=str(i), prompt=" ".join(rng.sample(WORDS, 3)), a=a,
                                b=b, label=label, group=f"g{i % (n // 2)}"))
    store = folder / "store.jsonl"
    ComparisonStore(store).extend(comps)
    return model_dir, store


def config(model_dir, store, out, *extra):
    return load_config(RewardTrainConfig, None, [
        f"out_dir={out}", f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
        "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=5", "progress=false",
        "runtime.threads=1", *extra])


def test_learns_known_rule_to_95_percent_held_out_in_seconds(tmp_path):
    model_dir, store = make_fixture(tmp_path)
    s = train(config(model_dir, store, tmp_path / "run", "train.max_steps=60",
                     "train.eval_every=30"))
    assert s["last_val_accuracy"] > 0.95
    assert 0.3 < s["last_val_length_rule_accuracy"] < 0.7  # the rule is not length
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5  # loss goes down
    assert (tmp_path / "run/config.yaml").is_file() and (tmp_path / "run/state").is_dir()
    assert (tmp_path / "run/model/reward_model.json").is_file()
    card = (tmp_path / "run/model/README.md").read_text()  # the model card
    assert str(model_dir) in card and str(store) in card
    assert f"{s['last_val_accuracy']:.4g}"[:4] in card and "last_val_accuracy" in card


def test_resume_is_exact_and_same_seed_same_result(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=200)
    common = ("train.max_steps=8", "train.eval_every=4", "model.n_members=2")
    train(config(model_dir, store, tmp_path / "a", *common))
    train(config(model_dir, store, tmp_path / "b", *common))
    stopped = train(config(model_dir, store, tmp_path / "c", *common, "train.stop_at=3"))
    assert stopped["stopped_at"] == 3
    train(config(model_dir, store, tmp_path / "c", *common))
    a, b, c = (read_safetensors(tmp_path / r / "model") for r in "abc")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)  # same seed, same result
        torch.testing.assert_close(a[k], c[k], atol=1e-6, rtol=0)  # resumed = uninterrupted
    steps = [json.loads(x).get("step") for x in (tmp_path / "c/metrics.jsonl").read_text()
             .splitlines() if "loss" in json.loads(x)]
    assert steps == list(range(1, 9))  # no step logged twice after the resume


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=200)
    common = ("train.max_steps=3", "model.n_members=2", "train.group_by_length=false")
    train(config(model_dir, store, tmp_path / "a", *common))
    train(config(model_dir, store, tmp_path / "b", *common, "train.micro_batch_size=4"))
    a, b = (read_safetensors(tmp_path / r / "model") for r in "ab")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)


def test_truncated_pairs_are_counted_not_dropped(tmp_path):
    model_dir, store = make_fixture(tmp_path, n=100)
    s = train(config(model_dir, store, tmp_path / "t", "data.max_len=8", "train.max_steps=2",
                     "data.val_fraction=0.2"))
    assert s["truncated_pairs"] > 50 and s["train_pairs"] + s["val_pairs"] == 100


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(RewardTrainConfig, None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(RewardTrainConfig, None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="model.n_members"):
        load_config(RewardTrainConfig, None, ["model.n_members=two"])
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_config(RewardTrainConfig, None, ["data.val_fraction=1.5"])
    model_dir, store = make_fixture(tmp_path, n=100)
    with pytest.raises(ConfigError, match="train.micro_batch_size"):
        train(config(model_dir, store, tmp_path / "x", "train.micro_batch_size=5"))


def test_split_by_prompt_has_no_prompt_on_both_sides():
    pairs = [PreferencePair(f"p{i % 37}", "a", "b", group=f"p{i % 37}") for i in range(400)]
    tr, va = split_by_group(pairs, 0.2, seed=1)
    assert not {p.group for p in tr} & {p.group for p in va}
    assert len({p.group for p in va}) == round(0.2 * 37) and len(tr) + len(va) == 400
    assert split_by_group(pairs, 0.2, seed=1) == (tr, va)


def test_epoch_batches_pure_complete_and_grouped():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 200, (103,), generator=g).tolist()
    b = epoch_batches(lengths, 10, seed=0, epoch=2, group_by_length=True)
    assert b == epoch_batches(lengths, 10, seed=0, epoch=2, group_by_length=True)
    assert b != epoch_batches(lengths, 10, seed=0, epoch=3, group_by_length=True)
    flat = [i for x in b for i in x]
    assert len(b) == 10 and len(set(flat)) == 100  # each pair at most once an epoch
    # grouping: padding (max - each) far below that of random batches
    waste = sum(max(lengths[i] for i in x) * 10 - sum(lengths[i] for i in x) for x in b)
    rnd = epoch_batches(lengths, 10, seed=0, epoch=2, group_by_length=False)
    waste_rnd = sum(max(lengths[i] for i in x) * 10 - sum(lengths[i] for i in x) for x in rnd)
    assert waste < 0.3 * waste_rnd


def test_lr_schedule_by_hand():
    assert lr_at(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos=0
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_ece_and_length_rule_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): two bins
    p = torch.tensor([0.9, 0.1, 0.6, 0.6])
    correct = torch.tensor([True, True, True, True])
    # bin 0.9: acc 1/2, conf 0.9 -> 0.4 * 2/4; bin 0.6: acc 1, conf 0.6 -> 0.4 * 2/4
    assert expected_calibration_error(p, correct) == pytest.approx(0.4, abs=1e-6)
    r_c = torch.tensor([[1.0], [0.0], [2.0]])
    r_r = torch.tensor([[0.0], [1.0], [2.0]])
    m = pair_metrics(r_c, r_r, torch.tensor([1.0, 1.0, 0.5]), torch.tensor([10, 5, 3]),
                     torch.tensor([5, 50, 3]))
    assert m["accuracy"] == 0.5 and m["length_rule_accuracy"] == 0.5 and m["clear_pairs"] == 2
    assert m["by_length_difference"]["0-20"] == {"pairs": 1, "accuracy": 1.0,
                                                 "length_rule_accuracy": 1.0}
    assert m["by_length_difference"]["20-100"]["accuracy"] == 0.0


def test_cli_train_and_eval(tmp_path, capsys):
    from rlhf.cli import main

    model_dir, store = make_fixture(tmp_path, n=100)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'run'}\nprogress: false\nmodel:\n  init: {model_dir}\n"
                   f"data:\n  paths: [{store}]\n  max_len: 64\ntrain:\n  batch_size: 8\n")
    assert main(["train-reward", str(cfg), "train.max_steps=2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    assert main(["eval-reward", f"model={tmp_path / 'run/model'}", f"data=[{store}]",
                 "split=val"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == summary["val_pairs"] and "ece" in out
    assert main(["train-reward", str(cfg), "train.nope=1"]) == 2
