"""The over-optimisation guard: the last good policy kept and restored, early stopping in
`train-policy` when its responses collapse, the conservative reward and per-token KL wired in,
and progress lines when stderr is not a terminal."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import torch
from conftest import STORIES, need_shared

from rlhf.policy.config import GuardConfig, PolicyTrainConfig
from rlhf.policy.guard import Guard
from rlhf.policy.train import train
from rlhf.progress import Progress

PROMPTS = ["Once upon a time", "One day, a cat", "Tom had a ball", "The sun was up",
           "Lily saw a dog", "A bird sang", "Mom made a cake", "The boy ran"]


def test_guard_keeps_the_policy_from_before_the_warning_window():
    policy = torch.nn.Linear(1, 1, bias=False)
    guard = Guard(GuardConfig(stop=True, window=2), policy, SimpleNamespace(signals_base={}))
    bar = Progress("t", 5, enabled=False)
    lengths = [40.0, 40.0, 40.0, 2.0, 2.0]  # responses collapse at step 3
    warned = []
    for step, n in enumerate(lengths):
        with torch.no_grad():
            policy.weight.fill_(step)  # the policy that sampled step `step`
        warned.append(bool(guard.check(step, {"length": n, "empty": 0.0}, bar)))
    assert warned == [False, False, False, False, True]  # window mean (2+2)/2 < 0.5 x 40
    assert guard.first == {"step": 5, "warnings": [guard.first["warnings"][0]]}
    assert guard.restore() == 1 and policy.weight.item() == 1.0  # before the window (3, 4)
    assert Guard(GuardConfig(), policy, SimpleNamespace(signals_base={})).restore() is None


def test_progress_prints_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    bar = Progress("policy", 3, stream=out, every_s=0.0)
    for i in range(3):
        bar.update(reward=0.5 * i, len=48)
    bar.write("a warning")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("policy: 1/3 (") and lines[0].endswith("reward 0 len 48")
    assert lines[2].endswith("reward 1 len 48") and lines[3] == "a warning"
    quiet = io.StringIO()
    Progress("x", 3, enabled=False, stream=quiet).update(a=1.0)
    assert quiet.getvalue() == ""


def brevity(texts):
    return [-float(len(t.split())) for t in texts]


def test_train_policy_stops_early_when_responses_collapse(tmp_path):
    need_shared()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "run"
    cfg = PolicyTrainConfig(policy=str(STORIES), out_dir=str(out), steps=40, sample_every=0)
    cfg.reward.scorer, cfg.reward.include_prompt = "test_guard:brevity", False
    cfg.kl.coef, cfg.algo.lr, cfg.algo.k = 0.0, 3e-3, 4
    cfg.prompts.path, cfg.prompts.batch_prompts, cfg.prompts.hold_out_every = str(prompts), 4, 0
    cfg.prompts.eval_prompts, cfg.sampling.max_new_tokens = 0, 24
    cfg.guard.stop, cfg.progress = True, False
    summary = train(cfg)
    assert summary["stopped_at"] is not None and summary["stopped_at"] < 40
    kept = summary["kept_policy_of_step"]
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "early_stop" and rows[-1]["kept_policy_of_step"] == kept
    steps = [r for r in rows if "length" in r]
    assert {"empty", "unterminated", "kl_per_token"} <= set(steps[0])
    assert steps[-1]["length"] < 0.5 * steps[0]["length"] + 1e-6 or steps[-1]["warnings"] == []
    assert summary["first_warning"]["step"] == summary["stopped_at"]
    state = json.loads((out / "state" / "state.json").read_text())
    assert state["meta"]["step"] == 40 and state["meta"]["stopped_at"] == summary["stopped_at"]
    assert (out / "policy" / "config.json").is_file()


def test_loop_progress_count_and_the_optional_stop():
    from rlhf.config import load_config
    from rlhf.loop.config import LoopConfig
    from rlhf.loop.watch import steps_done, stop_here

    assert steps_done({"round": 0, "step": "policy"}) == 0  # fresh: round 0's eval to do
    assert steps_done({"round": 0, "step": "eval"}) == 1
    assert steps_done({"round": 1, "step": "sample"}) == 2
    assert steps_done({"round": 2, "step": "eval"}) == 11  # 1 + 2 rounds x 5 steps
    cfg = load_config(LoopConfig, None, ["stop_on_warning=true"])
    assert stop_here(cfg, "eval", {"warnings": ["empty responses 30% > 25%"]})
    assert not stop_here(cfg, "eval", {"warnings": []})
    assert not stop_here(cfg, "policy", {"warnings": ["x"]})  # only after the evaluation
    assert not stop_here(load_config(LoopConfig, None, []), "eval", {"warnings": ["x"]})
