"""`rlhf loop` asking for every kind of feedback (`mix`): each kind reaches the stage that
learns from it (corrections -> a supervised step and corrected-over-original pairs, rankings
and comparisons -> the reward model, ratings -> KTO with policy_method=kto), and the round
records and the report count them."""

import json
from collections import Counter

import pytest
from conftest import STORIES, need_shared

from rlhf.config import ConfigError, load_config
from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating
from rlhf.feedback.store import ComparisonStore
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.raters.simulated import SimulatedRater

TINY = ["pairs_per_round=10", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12", "rank_k=3"]
RL = ["rounds=2", "reward.train.batch_size=4", "reward.train.epochs=1",
      "reward.model.n_members=2", "reward.data.val_fraction=0.25", "rl.steps=2",
      "rl.prompts.batch_prompts=2", "rl.algo.k=2", "mix.compare=0.4", "mix.rank=0.2",
      "mix.rate=0.2", "mix.correct=0.2"]


def records(out):
    return [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]


def of_round(answers, r):
    return [a for a in answers if not isinstance(a, Note) and a.meta.get("round") == r]


def test_mix_config_defaults_and_refusals():
    cfg = load_config(LoopConfig, None, [])
    assert cfg.mix.weights() == {"compare": 1.0, "rank": 0.0, "rate": 0.0, "correct": 0.0}
    with pytest.raises(ConfigError, match="selection"):  # disagreement ranks pairs only
        load_config(LoopConfig, None, ["mix.rank=0.5", "selection=disagreement"])
    with pytest.raises(ConfigError, match="rank_k"):
        load_config(LoopConfig, None, ["rank_k=2"])
    with pytest.raises(ConfigError, match="sft.data.paths"):  # the loop sets it
        load_config(LoopConfig, None, ["sft.data.paths=[x.jsonl]"])
    with pytest.raises(ConfigError, match="selection"):
        load_config(LoopConfig, None, ["policy_method=kto", "selection=disagreement"])


def test_every_kind_reaches_its_stage(tmp_path):
    need_shared()
    out = tmp_path / "run"
    run(load_config(LoopConfig, None, [*TINY, *RL, f"out_dir={out}"]))
    answers = ComparisonStore(out / "comparisons.jsonl").answers()
    assert {type(a) for a in answers} >= {Comparison, Ranking, Rating, Correction}
    recs = records(out)
    assert [r["round"] for r in recs] == [0, 1, 2]
    fixed_so_far = rankings_so_far = comparisons_so_far = 0
    for r in recs[1:]:
        mine = of_round(answers, r["round"])
        # 10 items at 0.4/0.2/0.2/0.2: 4 compare, 2 rank, 2 rate, 2 correct
        assert r["asked"] == {"compare": 4, "rank": 2, "rate": 2, "correct": 2}
        kinds = Counter(a.kind + ("_skipped" if getattr(a, "skipped", False) else "")
                        for a in mine)
        assert r["answers"] == dict(kinds) and sum(kinds.values()) == 10
        fixes = [a for a in mine if isinstance(a, Correction) and not a.skipped]
        fixed_so_far += len(fixes)
        rankings_so_far += kinds["ranking"]
        comparisons_so_far += kinds["comparison"]
        rd = out / f"round_{r['round']:02d}"
        if fixes:  # the supervised step trained on exactly the round's corrections ...
            assert r["sft"]["corrections"] == len(fixes)
            assert r["sft"]["train_rows"] + r["sft"]["val_rows"] == len(fixes)
            used = ComparisonStore(rd / "corrections_used.jsonl").answers()
            assert sorted(a.id for a in used) == sorted(a.id for a in fixes)
            assert (rd / "sft/summary.json").is_file()
            # ... and the policy step continued from its result
            assert r["policy_init"] == str(rd / "sft/policy")
        else:
            assert r["sft"]["corrections"] == 0 and "skipped" in r["sft"]
        # the reward model (every answer so far): a 3-ranking gives 3 pairs, a correction 1
        assert r["reward_pairs"]["ranking"] == 3 * rankings_so_far
        assert r["reward_pairs"].get("correction", 0) == fixed_so_far
        assert r["reward_pairs"]["comparison"] == comparisons_so_far
        assert r["n_comparisons_total"] == comparisons_so_far
    assert fixed_so_far > 0  # the simulated vader rater made at least one correction
    report = (out / "report/report.md").read_text()
    assert "## What each kind of answer trained" in report
    assert "| 1 | compare 4, correct 2, rank 2, rate 2 | " in report
    assert f"ranking {3 * rankings_so_far}" in report


def test_kto_policy_method_learns_from_ratings(tmp_path):
    need_shared()
    out = tmp_path / "run"
    run(load_config(LoopConfig, None, [
        *TINY, "rounds=1", "policy_method=kto", "mix.compare=0", "mix.rate=1",
        "kto.train.batch_size=4", "kto.train.max_steps=2", f"out_dir={out}"]))
    rec = records(out)[1]
    ratings = of_round(ComparisonStore(out / "comparisons.jsonl").answers(), 1)
    assert rec["answers"] == {"rating": 10} and len(ratings) == 10
    ups = sum(a.value for a in ratings)  # thumbs: 1 up (desirable), 0 down
    assert rec["kto_rows"] == {"desirable": ups, "undesirable": 10 - ups}
    assert "sft" not in rec  # no corrections asked: no supervised step
    assert (out / "round_01/policy_train/policy/kto.json").is_file()
    assert rec["policy_metrics"]["steps"] == 2
    assert rec["eval"]["kl"] != 0.0  # the policy moved
    assert "desirable" in (out / "report/report.md").read_text()


class AlwaysFixes(SimulatedRater):
    """The vader rater, but every correction it is asked for is made (a sentence appended), so
    that a round's corrections exist whatever the tiny model wrote."""

    def corrections(self, texts):
        return [(t + " They were happy.", {"edit": "appended"}) for t in texts]


FEW = ["rounds=1", "mix.compare=0.5", "mix.correct=0.5", "sft.train.batch_size=64",
       "sft.train.max_steps=2", "rater.scorer=test_loop_kinds:AlwaysFixes"]
"""Half compare, half correct, every correction made; a batch far larger than the round's
rows (the loop cuts it)."""


def test_dpo_round_with_corrections(tmp_path):
    """policy_method=dpo: the round's corrections train the supervised step, DPO continues
    from its policy and learns from the comparisons and the corrected-over-original pairs,
    with batches cut to the few rows a round has."""
    need_shared()
    out = tmp_path / "run"
    run(load_config(LoopConfig, None, [
        *TINY, *FEW, "policy_method=dpo", "dpo.train.batch_size=64", "dpo.train.epochs=1",
        f"out_dir={out}"]))
    rec = records(out)[1]
    mine = of_round(ComparisonStore(out / "comparisons.jsonl").answers(), 1)
    fixes = [a for a in mine if isinstance(a, Correction) and not a.skipped]
    assert len(fixes) == 5 and rec["sft"]["corrections"] == 5
    assert all(a.corrected == a.response + " They were happy." for a in fixes)
    assert rec["policy_init"] == str(out / "round_01/sft/policy")
    assert rec["dpo_pairs"] == {"comparison": 5, "correction": 5}
    steps = [json.loads(s) for s in (out / "round_01/policy_train/metrics.jsonl")
             .read_text().splitlines() if '"train_loss"' in s or '"loss"' in s]
    assert steps  # DPO trained on the cut batch


def test_kto_round_with_corrections(tmp_path):
    """policy_method=kto with ratings and corrections: the corrections train the supervised
    step, KTO continues from it on the round's thumbs."""
    need_shared()
    out = tmp_path / "run"
    run(load_config(LoopConfig, None, [
        *TINY, "rounds=1", "mix.compare=0", "mix.rate=0.6", "mix.correct=0.4",
        "sft.train.max_steps=2", "rater.scorer=test_loop_kinds:AlwaysFixes",
        "policy_method=kto", "kto.train.batch_size=64",
        "kto.train.max_steps=2", f"out_dir={out}"]))
    rec = records(out)[1]
    mine = of_round(ComparisonStore(out / "comparisons.jsonl").answers(), 1)
    ratings = [a for a in mine if isinstance(a, Rating)]
    assert len(ratings) == 6 and rec["answers"]["rating"] == 6
    ups = sum(a.value for a in ratings)
    assert rec["kto_rows"] == {"desirable": ups, "undesirable": 6 - ups}
    assert rec["sft"]["corrections"] == 4 == len(
        [a for a in mine if isinstance(a, Correction) and not a.skipped])
    assert rec["policy_init"] == str(out / "round_01/sft/policy")
    assert rec["policy_metrics"]["steps"] == 2


def test_resume_after_the_supervised_step(tmp_path, monkeypatch):
    """A loop killed after a round's supervised step, in its reward step, resumes without
    training the supervised step again, and the policy step starts from its policy."""
    need_shared()
    from rlhf.loop import steps
    out = tmp_path / "run"
    keys = [*TINY, *FEW, "reward.train.batch_size=64", "reward.train.epochs=1",
            "reward.model.n_members=1", "rl.steps=1", "rl.prompts.batch_prompts=2",
            "rl.algo.k=2", f"out_dir={out}"]
    real_reward, real_sft, calls = steps.reward_stage.train, steps.sft_stage.train, []

    def dies(*a, **k):
        raise RuntimeError("killed in the reward step")

    def counted(*a, **k):
        calls.append("sft")
        return real_sft(*a, **k)

    monkeypatch.setattr(steps.sft_stage, "train", counted)
    monkeypatch.setattr(steps.reward_stage, "train", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run(load_config(LoopConfig, None, keys))
    assert calls == ["sft"] and (out / "round_01/sft/summary.json").is_file()
    assert json.loads((out / "state.json").read_text()) == {"round": 1, "step": "rate"}
    summary = (out / "round_01/sft/summary.json").read_text()
    monkeypatch.setattr(steps.reward_stage, "train", real_reward)
    run(load_config(LoopConfig, None, keys))
    assert calls == ["sft"]  # not trained again
    assert (out / "round_01/sft/summary.json").read_text() == summary
    rec = records(out)[1]
    assert rec["sft"]["steps"] == 2 and rec["policy_init"] == str(out / "round_01/sft/policy")
    assert rec["reward_pairs"]["comparison"] == 5
