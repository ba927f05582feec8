"""`rlhf loop` with `policy_method: dpo`: two tiny rounds on-policy, the reference rule, the
implicit reward where the reward model is read (win rate, accuracies), the report."""

import json

import pytest
from conftest import STORIES, need_shared

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.feedback.store import ComparisonStore
from rlhf.loop.config import LoopConfig

TINY = ["rounds=2", "pairs_per_round=12", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12", "policy_method=dpo",
        "dpo.train.batch_size=4", "dpo.train.epochs=1", "dpo.data.val_fraction=0.25"]


def test_two_tiny_dpo_rounds_end_to_end(tmp_path, capsys):
    need_shared()
    out = tmp_path / "run"
    assert main(["loop", *TINY, f"out_dir={out}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"gold_start", "gold_end", "kl", "win_rate", "report"} <= set(summary)
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0, 1, 2]
    assert recs[2]["pairs_from"] == recs[1]["policy"] == str(out / "round_01/policy_train/policy")
    assert [r["n_comparisons_used"] for r in recs[1:]] == [12, 12]  # on-policy: own round only
    assert [r["n_comparisons_total"] for r in recs[1:]] == [12, 24]
    assert recs[2]["policy_init"] == recs[1]["policy"]
    assert recs[1]["dpo_reference"] == recs[2]["dpo_reference"] == str(STORIES)  # 'start'
    for r in recs[1:]:
        used = ComparisonStore(out / r["comparisons"]).load()
        assert {c.meta["round"] for c in used} == {r["round"]}
        rd = out / f"round_{r['round']:02d}"
        assert (rd / "policy_train/policy/dpo.json").is_file()
        assert (rd / "policy_train/reference_logprobs.safetensors").is_file()
        assert not (rd / "reward_model").exists()  # no reward model on this path
        assert {"gold", "kl", "win_rate", "reward_gain", "rm_accuracy"} <= set(r["eval"])
    assert "prev_rm_on_policy_accuracy" in recs[2]["eval"]  # round 1's DPO on round 2's pairs
    assert (out / "report/report.md").is_file()


def test_previous_reference_rule(tmp_path):
    need_shared()
    out = tmp_path / "run"
    assert main(["loop", *TINY, "rounds=2", "dpo_reference=previous", f"out_dir={out}"]) == 0
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    assert recs[2]["dpo_reference"] == recs[1]["policy"]
    meta = json.loads((out / "round_02/policy_train/policy/dpo.json").read_text())
    assert meta["reference"] == str((out / "round_01/policy_train/policy").resolve())


def test_dpo_loop_config_rules():
    with pytest.raises(ConfigError, match="selection"):
        load_config(LoopConfig, None, ["policy_method=dpo", "selection=disagreement"])
    with pytest.raises(ConfigError, match="dpo.model.init"):
        load_config(LoopConfig, None, ["policy_method=dpo", "dpo.model.init=x"])
    with pytest.raises(ConfigError, match="policy_method"):
        load_config(LoopConfig, None, ["policy_method=ppo"])
