"""The over-optimisation guard: the last good policy kept and restored, early stopping in
`train-policy` when its responses collapse, the conservative reward and per-token KL wired in,
and progress lines when stderr is not a terminal."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import torch
from conftest import STORIES, need_shared

from rlhf.harness.progress import Progress
from rlhf.policy.config import GuardConfig, PolicyTrainConfig
from rlhf.policy.guard import Guard
from rlhf.policy.train import train

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


COLLAPSE, WINDOW = 5, 3  # the policy's responses are empty from step 5 on (0-based)


def test_train_policy_stops_early_when_responses_collapse(tmp_path):
    """The collapse is built, not hoped for: until step COLLAPSE the policy cannot write a
    stop token (every response is max_new_tokens long), from then on it writes EOS first
    (every response empty), whatever its weights learnt. The real early stop of `train` must
    then warn at that step, keep the policy of the oldest of the last window + 1 good steps,
    and save it, the state and the metrics."""
    need_shared()
    from rlhf.harness.run import Handover
    from rlhf.harness.state import read_verified
    from rlhf.lm.folders import load_model

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "run"
    cfg = PolicyTrainConfig(policy=str(STORIES), out_dir=str(out), steps=12, sample_every=0)
    cfg.algo.lr, cfg.algo.k = 1e-3, 4
    cfg.prompts.path, cfg.prompts.batch_prompts, cfg.prompts.hold_out_every = str(prompts), 4, 0
    cfg.prompts.eval_prompts, cfg.sampling.max_new_tokens = 0, 16
    cfg.guard.stop, cfg.guard.window, cfg.progress = True, WINDOW, False
    policy, tok = load_model(STORIES)  # handed to train: its stop tokens steered
    eos, stops = tok.eos_ids, [*tok.eos_ids, tok.bos_id]
    policies, phase = [], {"collapsed": False}  # policies[s]: the weights that sampled step s

    def steer(module, args, logits):
        if not module.training:  # sampling step len(policies) (train mode: its update)
            phase["collapsed"] = len(policies) >= COLLAPSE
        logits = logits.clone()
        if phase["collapsed"]:
            logits[..., eos] = 1e4  # EOS first: an empty response
        else:
            logits[..., stops] = -1e4  # no stop: max_new_tokens tokens
        return logits

    def score_fn(gen, texts):  # once per step, after its sampling, before its update
        policies.append({k: v.detach().clone() for k, v in policy.state_dict().items()})
        g = torch.Generator().manual_seed(len(policies))  # a noise reward: the weights move
        return torch.randn(len(texts), generator=g)

    policy.register_forward_hook(steer)
    summary = train(cfg, score_fn=score_fn, hand=Handover(start=(policy, tok)))
    kept = COLLAPSE - WINDOW - 1  # the oldest of the good steps COLLAPSE - WINDOW - 1 .. - 1
    assert summary["stopped_at"] == COLLAPSE + 1 and len(policies) == COLLAPSE + 1
    assert summary["kept_policy_of_step"] == kept
    assert summary["first_warning"]["step"] == summary["stopped_at"]
    assert [w.split(" ")[:2] for w in summary["first_warning"]["warnings"]] == [
        ["empty", "responses"]]  # 1 of the 3 steps of the window: 33% > 25%
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "length" in r]  # the good steps, each logged
    assert [r["step"] for r in steps] == list(range(1, COLLAPSE + 1))
    assert {"empty", "unterminated", "kl_per_token"} <= set(steps[0])
    assert all(r["length"] == 16 and r["empty"] == 0 and r["warnings"] == [] for r in steps)
    assert rows[-1] == {**rows[-1], "event": "early_stop", "step": COLLAPSE + 1,
                        "kept_policy_of_step": kept}
    state = json.loads((out / "state" / "state.json").read_text())
    assert state["meta"]["step"] == cfg.steps  # a resumed run does not train on
    assert (state["meta"]["stopped_at"], state["meta"]["kept_step"]) == (COLLAPSE + 1, kept)
    saved = load_model(out / "policy")[0].state_dict()
    in_state = {k[len("module.policy."):]: v for k, v in read_verified(out / "state")[0].items()
                if k.startswith("module.policy.")}
    good, last = policies[kept], policies[COLLAPSE]
    assert any(not torch.equal(good[k], last[k]) for k in good)  # the policy moved since
    for k, v in good.items():  # the kept policy is saved, in the folder and in the state
        assert torch.equal(saved[k].float(), v.float()), k
        assert k not in in_state or torch.equal(in_state[k].float(), v.float()), k
    assert in_state.keys() & good.keys()


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
