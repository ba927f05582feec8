"""Reward models and DPO from every kind of answer: a K-ranking's pairs weigh 1 / (K choose 2),
the weighted batch loss by hand, the pairs a store of rankings, corrections and ratings gives
(hand-written), comparisons alone exactly as before, `data.kinds`, and `rlhf train-reward` /
`train-dpo` end to end on a store of rankings."""

import json
import math
import random

import pytest
import torch
from test_train_reward import TOK, WORDS, make_fixture

from rlhf.config import ConfigError, load_config
from rlhf.dpo.config import DPOTrainConfig
from rlhf.dpo.train import micro_batch
from rlhf.dpo.train import train as train_dpo
from rlhf.feedback.derive import PreferencePair, to_pairs
from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating
from rlhf.feedback.store import ComparisonStore
from rlhf.lm.folders import load_model
from rlhf.preferences.data import (
    encode_pairs,
    evaluation_pairs,
    prepare_data,
    read_comparisons,
    read_feedback,
    split_pairs,
    training_pairs,
)
from rlhf.preferences.losses import preference_loss, weighted_mean
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.model import init_reward_model
from rlhf.reward.train import micro_batch_loss
from rlhf.reward.train import train as train_reward


def ranking(item, responses, ranks, group=None):
    return Ranking(item_id=item, prompt="Tell me a story.", responses=responses, ranks=ranks,
                   group=group)


def test_k3_ranking_gives_three_pairs_of_weight_one_third():
    r = ranking("r1", ["x", "y", "z"], [2, 1, 3])
    pairs = training_pairs([r], "half")
    # combinations (0,1) (0,2) (1,2), better place chosen: y > x, x > z, y > z
    assert [(p.chosen, p.rejected, p.target, p.origin) for p in pairs] == [
        ("y", "x", 1.0, "ranking"), ("x", "z", 1.0, "ranking"), ("y", "z", 1.0, "ranking")]
    assert [p.weight for p in pairs] == [1 / 3] * 3
    tied = training_pairs([ranking("r2", ["x", "y", "z"], [1, 1, 2])], "half")
    assert [(p.target, p.weight) for p in tied] == [(0.5, 1 / 3), (1.0, 1 / 3), (1.0, 1 / 3)]
    assert len(training_pairs([ranking("r2", ["x", "y", "z"], [1, 1, 2])], "drop")) == 2


def test_weighted_batch_loss_by_hand():
    # one comparison (w 1) and a K = 3 ranking's three pairs (w 1/3 each);
    # score differences d = 0, ln 3, -ln 3, 0 -> losses softplus(-d) = ln 2, ln 4/3, ln 4, ln 2
    ln3 = math.log(3)
    rc, rr = torch.tensor([0.0, ln3, 0.0, 1.0]), torch.tensor([0.0, 0.0, ln3, 1.0])
    w = torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3])
    loss = preference_loss(rc, rr, torch.ones(4))
    want = (math.log(2) + (math.log(4 / 3) + math.log(4) + math.log(2)) / 3) / 2
    assert abs(float(weighted_mean(loss, w)) - want) < 1e-6
    # two micro-batches, each normalised by the global batch's mean weight, average to it
    mw = float(w.mean())
    halves = (weighted_mean(loss[:2], w[:2], mw) + weighted_mean(loss[2:], w[2:], mw)) / 2
    assert abs(float(halves) - want) < 1e-6
    # ensemble members (B, E) are averaged, each pair weighted
    two = weighted_mean(torch.stack([loss, 3 * loss], -1), w)
    assert abs(float(two) - 2 * want) < 1e-6
    # all weights 1 (comparisons only): the plain mean, as before
    ones = weighted_mean(loss, torch.ones(4), 1.0)
    assert abs(float(ones) - float(loss.mean())) < 1e-7


def every_kind_store(path):
    store = ComparisonStore(path)
    store.extend([
        ranking("r1", [" a red cat.", " a big dog.", " the sun."], [3, 1, 2], group="g1"),
        Correction(item_id="c1", prompt="Say hi.", response=" hi there", corrected=" hello",
                   group="g2"),
        Rating(item_id="t1", prompt="Name a tree.", response=" oak", value=0, rater="ann"),
        Rating(item_id="t2", prompt="Name a tree.", response=" pine", value=1, rater="ann"),
        Note(item_id="n1", prompt="Name a tree.", text="both are trees"),
    ])
    return path


def test_store_of_every_kind_gives_the_expected_encoded_pairs(tmp_path):
    model_dir, _ = make_fixture(tmp_path, n=4)
    store = every_kind_store(tmp_path / "kinds.jsonl")
    cfg = load_config(RewardTrainConfig, None, [
        f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
        "data.val_fraction=0", "train.batch_size=2"])
    _, tok = load_model(model_dir)
    train_d, val_d = prepare_data(cfg, tok)
    s, w = "Tell me a story.", 1 / 3
    want = [PreferencePair(s, " a big dog.", " a red cat.", weight=w),  # places 3, 1, 2
            PreferencePair(s, " the sun.", " a red cat.", weight=w),
            PreferencePair(s, " a big dog.", " the sun.", weight=w),
            PreferencePair("Say hi.", " hello", " hi there"),  # corrected over original
            PreferencePair("Name a tree.", " pine", " oak")]  # thumbs up over down, one rater
    expected = encode_pairs(want, tok, 64, False)
    assert len(val_d) == 0 and train_d.chosen == expected.chosen
    assert train_d.rejected == expected.rejected
    assert train_d.weight.tolist() == pytest.approx([w, w, w, 1.0, 1.0])
    assert train_d.target.tolist() == [1.0] * 5
    only = load_config(RewardTrainConfig, None, [
        f"model.init={model_dir}", f"data.paths=[{store}]", "data.val_fraction=0",
        "train.batch_size=1", "data.kinds=[correction,rating]"])
    assert prepare_data(only, tok)[0].chosen == expected.chosen[3:]


def test_comparisons_alone_give_the_pairs_they_gave(tmp_path):
    comps = [Comparison(item_id=str(i), prompt=f"p{i}", a=f"a{i}", b=f"b{i}", label=label)
             for i, label in enumerate(["a", "b", "tie", "cant_tell", "both_bad", "skip"])]
    ComparisonStore(tmp_path / "s.jsonl").extend(comps)
    records = read_feedback([str(tmp_path / "s.jsonl")])
    before = read_comparisons([str(tmp_path / "s.jsonl")])
    for ties in ("half", "drop", "model"):
        for cant_tell in ("drop", "tie"):
            kept = [c for c in before if cant_tell == "tie" or c.label != "cant_tell"]
            assert training_pairs(records, ties, cant_tell) == to_pairs(
                kept, "drop" if ties == "drop" else "half")
    pairs = training_pairs(records, "half")  # cant_tell dropped; tie, both_bad 1/2
    assert [(p.chosen, p.target, p.weight) for p in pairs] == [
        ("a0", 1.0, 1.0), ("b1", 1.0, 1.0), ("a2", 0.5, 1.0), ("a4", 0.5, 1.0)]


def test_kinds_error_names_the_key():
    with pytest.raises(ConfigError, match=r"data\.kinds\[1\]: must be one of"):
        load_config(RewardTrainConfig, None, ["data.kinds=[ranking,votes]"])
    with pytest.raises(ConfigError, match=r"data\.kinds: must name at least one"):
        load_config(DPOTrainConfig, None, ["data.kinds=[]"])


def test_files_that_give_no_pairs_say_which_trainer_takes_them(tmp_path):
    kto = tmp_path / "kto.jsonl"
    kto.write_text('{"prompt": "P", "completion": "good", "label": true}\n')
    cfg = load_config(RewardTrainConfig, None, [f"data.paths=[{kto}]"])
    with pytest.raises(ConfigError, match=r"give no training pairs .*'rating': 1.*train-kto"):
        prepare_data(cfg, None)


def ranking_store(folder, n=120, seed=0):
    """Rankings of 3 whose rule is known: the response with "happy" is placed first."""
    rng = random.Random(seed)

    def resp(word):
        xs = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        xs.insert(rng.randint(0, len(xs)), word)
        return " " + " ".join(xs)

    rows = []
    for i in range(n):
        responses, ranks = [resp("happy"), resp("sad"), resp("sad")], [1, 2, 3]
        order = rng.sample(range(3), 3)
        rows.append(ranking(str(i), [responses[j] for j in order], [ranks[j] for j in order],
                            group=f"g{i}"))
    ComparisonStore(folder / "ranks.jsonl").extend(rows)
    return folder / "ranks.jsonl"


def test_micro_batch_losses_are_the_weighted_mean_of_pair_losses(tmp_path):
    """Reward and DPO steps: the loss of a mixed batch is sum(w l) / sum(w) of the losses of
    its pairs alone (each alone: w l / w = l)."""
    model_dir, _ = make_fixture(tmp_path, n=4)
    store = every_kind_store(tmp_path / "kinds.jsonl")
    args = [f"model.init={model_dir}", f"data.paths=[{store}]", "data.max_len=64",
            "data.val_fraction=0", "train.batch_size=2"]
    cfg = load_config(RewardTrainConfig, None, args + ["model.n_members=2"])
    rm, tok = init_reward_model(str(model_dir), 2, 0, "last", cfg.model.backbone)
    data, _ = prepare_data(cfg, tok)
    rm.eval()
    boot, cpu = torch.ones(len(data), 2), torch.device("cpu")
    with torch.no_grad():
        alone = [float(micro_batch_loss(rm, data, [i], boot, cfg, cpu)["loss"])
                 for i in range(5)]
        got = float(micro_batch_loss(rm, data, list(range(5)), boot, cfg, cpu)["loss"])
    w = data.weight.tolist()
    assert abs(got - sum(a * b for a, b in zip(w, alone)) / sum(w)) < 1e-5
    assert abs(got - sum(alone) / 5) > 1e-4  # the unweighted mean differs
    dcfg = load_config(DPOTrainConfig, None, args + ["loss.beta=0.5"])
    policy, _ = load_model(model_dir)
    g = torch.Generator().manual_seed(0)  # a reference that differs from the policy
    ref = {"train.chosen": -5 * torch.rand(5, generator=g, dtype=torch.float64),
           "train.rejected": -5 * torch.rand(5, generator=g, dtype=torch.float64)}
    with torch.no_grad():
        alone = [float(micro_batch(policy, data, ref, [i], dcfg, cpu)["loss"]) for i in range(5)]
        got = float(micro_batch(policy, data, ref, list(range(5)), dcfg, cpu)["loss"])
    assert abs(got - sum(a * b for a, b in zip(w, alone)) / sum(w)) < 1e-5
    assert abs(got - sum(alone) / 5) > 1e-4  # the unweighted mean differs


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_train_on_a_store_of_rankings(tmp_path, stage):
    if not TOK.is_file():
        pytest.skip("needs ../shared/models/stories260K/tok512.bin")
    model_dir, _ = make_fixture(tmp_path, n=4)
    store = ranking_store(tmp_path)
    cls, train = (RewardTrainConfig, train_reward) if stage == "reward" else \
        (DPOTrainConfig, train_dpo)
    cfg = load_config(cls, None, [
        f"out_dir={tmp_path / 'run'}", f"model.init={model_dir}", f"data.paths=[{store}]",
        "data.max_len=64", "train.batch_size=12", "train.max_steps=4", "train.eval_every=2",
        "progress=false", "runtime.threads=1"])
    s = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    data = next(r for r in rows if r.get("event") == "data")
    assert data["train_pairs"] + data["val_pairs"] == 3 * 120  # 3 pairs per ranking
    assert s["val_pairs"] == 3 * 12  # 10% of the 120 rankings' prompts held out, whole
    assert sum("loss" in r for r in rows) >= 4 and all(
        math.isfinite(r["loss"]) for r in rows if "loss" in r)


def test_eval_reward_holds_out_the_prompts_training_held_out(tmp_path):
    """`rlhf eval-reward split=val` reads every kind of answer with the training's rules, so
    it evaluates exactly the pairs `train-reward` held out, even on a store where some prompts
    have only "can't tell" answers (dropped in training) or only rankings."""
    store = ComparisonStore(tmp_path / "s.jsonl")
    for i in range(12):
        store.append(Comparison(item_id=f"c{i}", prompt=f"p{i}", a="x", b="y", label="a"))
    for i in range(12, 18):  # prompts the training never sees: can't tell only
        store.append(Comparison(item_id=f"t{i}", prompt=f"p{i}", a="x", b="y",
                                label="cant_tell"))
    for i in range(18, 24):  # prompts with a ranking only: 3 pairs each
        store.append(Ranking(item_id=f"r{i}", prompt=f"p{i}", responses=["u", "v", "w"],
                             ranks=[1, 2, 3]))
    data = load_config(RewardTrainConfig, None, [f"data.paths=[{store.path}]",
                                                 "data.val_fraction=0.5"]).data
    for seed in range(5):
        train, val = split_pairs(data, seed)
        got = evaluation_pairs([str(store.path)], "val", 0.5, seed)
        assert [(p.prompt, p.chosen, p.rejected) for p in got] == [
            (p.prompt, p.chosen, p.rejected) for p in val]
        assert evaluation_pairs([str(store.path)], "train", 0.5, seed) == train
    assert len(evaluation_pairs([str(store.path)], "all", 0.5, 0)) == 12 + 6 * 3
    assert len(evaluation_pairs([str(store.path)], "all", 0.5, 0, kinds=["comparison"])) == 12
