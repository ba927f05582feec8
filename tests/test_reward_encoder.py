"""Reward models on encoder backbones: scoring independent of batching, save/load round trip
(heads, statistics, pooling, tie parameter), `train-reward` learning a known rule with the tie
model, "can't tell" dropped by default, RewardBench-format evaluation, and the policy's score
function re-tokenising decoded text for a reward model with another tokenizer."""

from __future__ import annotations

import json
import random

import pytest
import torch
from encoder_folders import WORDS, make_encoder_folder

from rlhf.config import UserError, load_config
from rlhf.feedback.records import Comparison
from rlhf.preferences.data import training_pairs
from rlhf.preferences.tokens import encode_pair_side
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.model import (
    RewardModel,
    init_reward_model,
    load_reward_model,
    raw_scores,
    save_reward_model,
    score_texts,
)
from rlhf.reward.rewardbench import BenchRow, bench_metrics, read_rewardbench
from rlhf.reward.train import train

pytest.importorskip("transformers")


def comparisons(n: int, seed: int = 0, ties: float = 0.0, cant: float = 0.0):
    """Rule: the response with 'happy' beats the one with 'sad'; 'good' vs 'good' pairs are
    ties; some answers 'cant_tell'."""
    rng = random.Random(seed)
    plain = [w for w in WORDS if w not in ("happy", "sad", "good")]

    def resp(word):
        xs = [rng.choice(plain) for _ in range(rng.randint(2, 8))]
        xs.insert(rng.randint(0, len(xs)), word)
        return " ".join(xs)

    out = []
    for i in range(n):
        u = rng.random()
        if u < ties:
            a, b, label = resp("good"), resp("good"), "tie"
        elif u < ties + cant:
            a, b, label = resp("happy"), resp("sad"), "cant_tell"
        else:
            a, b, label = resp("happy"), resp("sad"), "a"
            if rng.random() < 0.5:
                a, b, label = b, a, "b"
        out.append(Comparison(item_id=str(i), prompt=" ".join(rng.sample(plain, 3)), a=a, b=b,
                              label=label, group=f"g{i % (n // 2)}"))
    return out


def test_scores_do_not_depend_on_batching_and_round_trip(tmp_path):
    make_encoder_folder(tmp_path / "enc", "bert")
    rm, tok = init_reward_model(tmp_path / "enc", n_members=3, pooling="mean")
    rm.eval()
    seqs = [encode_pair_side(tok, "the cat", " ".join(WORDS[:k]), 32)[0] for k in (1, 5, 12)]
    together = raw_scores(rm, seqs, tok.pad_id, batch_size=3)
    alone = torch.cat([raw_scores(rm, [s], tok.pad_id) for s in seqs])
    assert (together - alone).abs().max() < 1e-5
    assert together.std(0).min() > 0  # members differ
    rm.add_tie_parameter(0.4)
    rm.mean.fill_(0.3)
    save_reward_model(rm, tok, tmp_path / "rm")
    back, tok2 = load_reward_model(tmp_path / "rm")
    assert back.is_encoder and back.pooling == "mean" and abs(back.log_nu.item() - 0.4) < 1e-6
    assert torch.equal(raw_scores(back, seqs, tok2.pad_id), raw_scores(rm, seqs, tok.pad_id))
    a = score_texts(rm, tok, ["what"], ["yes the cat"])
    assert torch.allclose(a, score_texts(back, tok2, ["what"], ["yes the cat"]))


def test_pooler_choice_and_refusal(tmp_path):
    make_encoder_folder(tmp_path / "enc", "deberta-v3")  # no pooler in a DebertaV2Model
    with pytest.raises(ValueError, match="pooler"):
        init_reward_model(tmp_path / "enc", 1, pooling="pooler")
    make_encoder_folder(tmp_path / "bert", "bert")
    rm, _ = init_reward_model(tmp_path / "bert", 1, pooling="pooler")
    assert rm.backbone.pooler.weight.requires_grad
    rm, _ = init_reward_model(tmp_path / "bert", 1, pooling="cls")
    assert not rm.backbone.pooler.weight.requires_grad  # unused: kept out of DDP
    assert isinstance(rm, RewardModel)


def test_cant_tell_dropped_by_default():
    comps = comparisons(200, ties=0.2, cant=0.1)
    n_cant = sum(c.label == "cant_tell" for c in comps)
    n_tie = sum(c.label == "tie" for c in comps)
    assert n_cant > 5 and n_tie > 5
    assert len(training_pairs(comps, "half")) == 200 - n_cant
    assert len(training_pairs(comps, "half", "tie")) == 200
    assert len(training_pairs(comps, "drop")) == 200 - n_cant - n_tie
    assert sum(p.target == 0.5 for p in training_pairs(comps, "model")) == n_tie


def test_train_reward_with_an_encoder_and_the_tie_model(tmp_path):
    from rlhf.feedback.store import ComparisonStore

    make_encoder_folder(tmp_path / "enc", "bert", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    store = tmp_path / "store.jsonl"
    ComparisonStore(store).extend(comparisons(400, ties=0.2, cant=0.05))
    cfg = load_config(RewardTrainConfig, None, [
        f"out_dir={tmp_path / 'run'}", f"model.backbone={tmp_path / 'enc'}",
        "model.init=nowhere", f"data.paths=[{store}]", "data.max_len=32", "data.ties=model",
        "data.val_fraction=0.25", "model.n_members=2", "train.batch_size=16", "train.lr=3e-3",
        "train.epochs=3", "train.eval_every=0", "loss.tie_lr=0.5", "progress=false",
        "runtime.threads=1"])
    summary = train(cfg)
    assert summary["last_val_accuracy"] > 0.9, summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
            if x]
    last = rows[-1]
    # the tie model predicts roughly the held-out tie rate (about 1/5)
    assert abs(last["val_tie_rate_predicted"] - last["val_tie_rate_observed"]) < 0.1, last
    rm, _ = load_reward_model(tmp_path / "run" / "model")
    assert rm.is_encoder and rm.log_nu is not None and rm.n_members == 2


def test_rewardbench_metrics_by_hand():
    rows = [BenchRow("p", ["aaaa"], ["bb"], "chat"),  # RB1, longer chosen
            BenchRow("p", ["a"], ["bbb"], "chat"),  # shorter chosen
            BenchRow("p", ["aa"], ["b", "bbb", "b"], "math")]  # best of 4
    scores = [(torch.tensor([1.0]), torch.tensor([0.0])),  # right
              (torch.tensor([0.0]), torch.tensor([0.0])),  # a score tie: wrong
              (torch.tensor([2.0]), torch.tensor([1.0, 3.0, 0.0]))]  # one rejected above
    m = bench_metrics(rows, scores)
    assert m["subsets"]["chat"] == {"rows": 2, "accuracy": 0.5, "longer_wins_accuracy": 0.5,
                                    "shorter_wins_accuracy": 0.5}
    assert m["subsets"]["math"]["accuracy"] == 0.0
    assert m["subsets"]["math"]["longer_wins_accuracy"] == 0.0  # 'bbb' is the longest
    assert m["subsets"]["math"]["shorter_wins_accuracy"] == 0.0  # 'b' is shorter
    assert abs(m["overall"]["accuracy"] - 1 / 3) < 1e-9
    assert m["by_length_difference"]["0-20"]["rows"] == 3


def test_read_rewardbench_formats_and_errors(tmp_path):
    f = tmp_path / "rb.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "subset": "s"})
                 + "\n" + json.dumps({"prompt": "p", "chosen": ["c"], "rejected": ["r1", "r2"],
                                      "subset": "t"}) + "\n")
    rows = read_rewardbench(f)
    assert [len(r.rejected) for r in rows] == [1, 2]
    f.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": [], "subset": "s"}))
    with pytest.raises(UserError, match=r"rb.jsonl:1: 'rejected'"):
        read_rewardbench(f)


def test_eval_reward_cli_on_rewardbench_rows(tmp_path, capsys):
    from rlhf.cli import main

    make_encoder_folder(tmp_path / "enc", "bert")
    rm, tok = init_reward_model(tmp_path / "enc", 1)
    save_reward_model(rm, tok, tmp_path / "rm")
    f = tmp_path / "rb.json"
    f.write_text(json.dumps([{"prompt": "what", "chosen": "yes the cat", "rejected": "no",
                              "subset": "chat\x1b[31m"},
                             {"prompt": "why", "chosen": ["good"], "rejected": ["bad", "no"],
                              "subset": "math"}]))
    assert main(["eval-reward", f"model={tmp_path / 'rm'}", f"data=[{f}]",
                 "runtime.threads=1"]) == 0
    out = capsys.readouterr().out
    assert "math" in out and "overall" in out and "\x1b" not in out.split("{")[0]
    m = json.loads(out.strip().splitlines()[-1])
    assert m["overall"]["rows"] == 2 and m["subsets"]["math"]["longer_wins_accuracy"] == 1.0


def test_policy_scores_decoded_text_with_the_reward_models_tokenizer(tmp_path, stories):
    from rlhf.lm.generation import Generation
    from rlhf.policy.config import RewardConfig
    from rlhf.policy.run import make_score_fn

    _, ptok = stories
    make_encoder_folder(tmp_path / "enc", "bert")
    rm, tok = init_reward_model(tmp_path / "enc", 2)
    save_reward_model(rm, tok, tmp_path / "rm")
    prompts, responses = ["the cat", "a dog"], [" sat on a mat", " ran to the park"]
    p_ids = [ptok.encode(p) for p in prompts]
    r_ids = [ptok.encode(r, bos=False) for r in responses]
    P, N = max(map(len, p_ids)), max(map(len, r_ids))
    tokens = torch.zeros(2, P + N, dtype=torch.long)
    mask = torch.zeros(2, P + N, dtype=torch.long)
    rmask = torch.zeros(2, N, dtype=torch.long)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):  # left-padded prompt, right-padded response
        tokens[i, P - len(p):P], mask[i, P - len(p):P] = torch.tensor(p), 1
        tokens[i, P:P + len(r)], mask[i, P:P + len(r)], rmask[i, :len(r)] = torch.tensor(r), 1, 1
    gen = Generation(tokens, mask, P, rmask, torch.zeros(2, N), torch.ones(2, dtype=torch.bool))
    fn = make_score_fn(RewardConfig(kind="model", path=str(tmp_path / "rm")), ptok, "cpu")
    got = fn(gen, None)
    back, btok = load_reward_model(tmp_path / "rm")
    want = score_texts(back, btok, [ptok.decode(x) for x in p_ids],
                       [ptok.decode(x) for x in r_ids])
    assert torch.allclose(got, want, atol=1e-6)
