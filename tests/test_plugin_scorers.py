"""Raters and scorers as a plug-in point: a scorer by import path (a rule written here), its
noise explicit and recorded, an unknown name refused at load in one line, and the loop
raising the plugged-in scorer's gold score."""

import json

import pytest
from conftest import STORIES, need_shared

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.feedback.items import Item
from rlhf.loop.config import LoopConfig
from rlhf.policy.config import PolicyTrainConfig
from rlhf.raters.scorers import ScorerError, get_scorer, scorer_problem
from rlhf.raters.simulated import SimulatedRater, loop_rater

BREVITY = "test_plugin_scorers:brevity"


def brevity(texts: list[str]) -> list[float]:
    """The rule of this test: the fewer words the better."""
    return [-float(len(t.split())) for t in texts]


def wrong_count(texts):
    return [1.0]


class Counter:
    """A scorer class: made with no arguments, then called on texts."""

    def __call__(self, texts):
        return [float(t.count("a")) for t in texts]


def test_a_scorer_by_import_path_resolves_and_is_checked():
    assert get_scorer(BREVITY)(["a b c", "a"]) == [-3.0, -1.0]
    assert get_scorer("test_plugin_scorers:Counter")(["banana"]) == [3.0]
    with pytest.raises(ScorerError, match="returned 1 scores for 2 texts"):
        get_scorer("test_plugin_scorers:wrong_count")(["x", "y"])
    assert "cannot import 'no_such_module_xyz'" in scorer_problem("no_such_module_xyz:f")
    assert "has no 'nothing'" in scorer_problem("test_plugin_scorers:nothing")
    assert "known: ['length', 'vader']" in scorer_problem("vadr")


@pytest.mark.parametrize("key", ["rater.scorer", "eval.gold_scorer"])
def test_an_unknown_scorer_is_refused_at_load_in_one_line(key, tmp_path, capsys):
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        load_config(LoopConfig, None, [f"{key}=vadr"])
    out = tmp_path / "run"
    assert main(["loop", f"{key}=no_such_module_xyz:score", f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "no_such_module_xyz" in err
    assert not out.exists()  # refused before anything ran
    with pytest.raises(ConfigError, match="scorer"):
        load_config(PolicyTrainConfig, None, ["reward.scorer=vadr"])


def test_a_plugged_in_scorer_needs_its_noise_set_and_zero_is_noiseless():
    with pytest.raises(ConfigError, match="rater.temperature.*no default noise"):
        load_config(LoopConfig, None, [f"rater.scorer={BREVITY}"])
    with pytest.raises(ConfigError, match="rater.tie_band"):
        load_config(LoopConfig, None, [f"rater.scorer={BREVITY}", "rater.temperature=1"])
    cfg = load_config(LoopConfig, None, [f"rater.scorer={BREVITY}", "rater.temperature=0",
                                         "rater.tie_band=0"])
    rater, used = loop_rater(cfg.rater.scorer, 0, cfg.rater.temperature, cfg.rater.tie_band)
    assert used == {"scorer": BREVITY, "temperature": 0.0, "tie_band": 0.0}
    items = [Item("p", "one two three", "one")] * 20 + [Item("p", "x", "y z")] * 20
    labels = [c.label for c in rater.rate_many(items)]
    assert labels == ["b"] * 20 + ["a"] * 20  # noiseless: always the shorter
    assert SimulatedRater("vader").temperature == 0.25  # built-in defaults stay
    with pytest.raises(ValueError, match="no default noise"):
        SimulatedRater(BREVITY)


def test_the_loop_raises_a_plugged_in_scorers_gold(tmp_path):
    need_shared()
    out = tmp_path / "run"
    args = ["rounds=1", "pairs_per_round=32", f"policy={STORIES}", "eval.n_prompts=8",
            "eval.samples_per_prompt=2", "sampling.max_new_tokens=16",
            "reward.train.batch_size=8", "reward.train.epochs=3", "reward.model.n_members=2",
            "reward.data.val_fraction=0.25", "rl.steps=12", "rl.prompts.batch_prompts=4",
            "rl.algo.k=4", "rl.algo.lr=0.002", "rl.kl.coef=0", "rl.guard.warn=false",
            f"rater.scorer={BREVITY}", "rater.temperature=0", "rater.tie_band=0",
            f"eval.gold_scorer={BREVITY}", f"out_dir={out}"]
    assert main(["loop", *args]) == 0
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    start, end = recs[0]["eval"]["gold"], recs[-1]["eval"]["gold"]
    assert end > start + 1.0  # at least one word shorter on average, by the rule above
    assert recs[1]["rater"] == {"scorer": BREVITY, "temperature": 0.0, "tie_band": 0.0}
    report = (out / "report" / "report.md").read_text()
    assert BREVITY in report and "temperature 0" in report
