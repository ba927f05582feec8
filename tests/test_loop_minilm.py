"""`rlhf loop` with a MiniLM (BERT encoder) reward model on stories260K's samples: the reward
model starts from the encoder in round 1 (reward.model.backbone), continues from the previous
round's model in round 2, and the policy is scored through the decoded text."""

import json

import pytest
from conftest import SHARED, STORIES, need_shared

from rlhf.cli import main
from rlhf.reward.model import load_reward_model

MINILM = SHARED / "models" / "all-MiniLM-L6-v2"


@pytest.mark.slow
def test_two_rounds_with_a_minilm_reward_model(tmp_path, capsys):
    need_shared()
    need_shared(MINILM)
    out = tmp_path / "loop"
    args = ["rounds=2", "pairs_per_round=8", f"policy={STORIES}", "eval.n_prompts=4",
            "eval.samples_per_prompt=1", "sampling.max_new_tokens=12",
            "reward.train.batch_size=4", "reward.train.epochs=1", "reward.model.n_members=2",
            f"reward.model.backbone={MINILM}", "reward.data.max_len=64",
            "reward.train.lr=5e-5", "reward.data.val_fraction=0.25", "rl.steps=2",
            "rl.prompts.batch_prompts=2", "rl.algo.k=2", "selection=disagreement",
            "oversample=2", "runtime.threads=1", f"out_dir={out}"]
    assert main(["loop", *args]) == 0
    capsys.readouterr()
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0, 1, 2]
    assert recs[1]["reward_init"] == str(STORIES)  # round 1: fresh, from the backbone key
    assert recs[2]["reward_init"] == recs[1]["reward_model"]  # round 2: continued
    for r in recs[1:]:
        rm, tok = load_reward_model(r["reward_model"])
        assert rm.is_encoder and rm.n_members == 2 and tok.vocab_size == 30522
        assert "rm_accuracy" in r["eval"] and "reward_gain" in r["eval"]
        assert (out / f"round_{r['round']:02d}/policy_train/policy/config.json").is_file()
