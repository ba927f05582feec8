"""`rlhf loop`: two tiny rounds end to end, a SIGKILL mid-round then resume, human rating."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, STORIES, need_shared

from rlhf.cli import main
from rlhf.config import ConfigError, load_config
from rlhf.feedback.store import ComparisonStore
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import next_step, run
from rlhf.raters.scorers import vader

TINY = ["rounds=2", "pairs_per_round=8", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12",
        "reward.train.batch_size=4", "reward.train.epochs=1", "reward.model.n_members=2",
        "reward.data.val_fraction=0.25", "rl.steps=2", "rl.prompts.batch_prompts=2",
        "rl.algo.k=2", "selection=disagreement", "oversample=2"]


def records(out):
    return [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]


def check_run(out):
    """Round records: who made the pairs, which comparisons trained which reward model."""
    recs = records(out)
    assert [r["round"] for r in recs] == [0, 1, 2]
    assert recs[0]["policy"] == str(STORIES) and recs[0]["eval"]["kl"] == 0.0
    assert recs[1]["pairs_from"] == str(STORIES)
    assert recs[2]["pairs_from"] == recs[1]["policy"] == str(out / "round_01/policy_train/policy")
    assert [r["n_comparisons_total"] for r in recs[1:]] == [8, 16]
    assert [r["n_comparisons_new"] for r in recs[1:]] == [8, 8]
    assert recs[2]["reward_init"] == recs[1]["reward_model"]
    assert [r["selection"] for r in recs[1:]] == ["random", "active"]  # ensemble disagreement
    prev = recs[2]["eval"]["prev_rm_on_policy_accuracy"]  # round 1's RM on round 2's pairs
    assert prev == recs[2]["previous_rm_accuracy_on_new"] and 0.0 <= prev <= 1.0
    for r in recs[1:]:
        used = ComparisonStore(out / r["comparisons"]).load()
        assert len(used) == r["n_comparisons_total"]
        assert (out / f"round_{r['round']:02d}/reward_model/model/reward_model.json").is_file()
        assert (out / f"round_{r['round']:02d}/policy_train/policy/config.json").is_file()
        ev, saved = r["eval"], json.loads((out / f"round_{r['round']:02d}/eval.json").read_text())
        # gold is the hidden scorer's mean over this round's held-out samples (4 prompts x 1)
        assert len(saved["texts"]) == 4
        assert ev["gold"] == pytest.approx(sum(vader(saved["texts"])) / 4, abs=1e-9)
        assert ev["reward_gain"] == pytest.approx(ev["reward"] - ev["reward_start"], abs=1e-9)
        assert ev["win_rate"] in (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
        assert 0.0 <= ev["rm_accuracy"] <= 1.0 and ev["kl"] != 0.0  # the policy moved
        assert ev["rm_accuracy"] == r["reward_metrics"]["last_val_accuracy"]
        assert (out / f"round_{r['round']:02d}/samples.md").is_file()
    comps = ComparisonStore(out / "comparisons.jsonl").load()
    assert len(comps) == 16 and len({c.item_id for c in comps}) == 16  # none rated twice
    assert json.loads((out / "state.json").read_text()) == {"round": 2, "step": "eval"}
    assert (out / "report/report.md").is_file() and (out / "report/frontier.png").is_file()


def test_next_step_and_config_errors():
    assert next_step({"round": 0, "step": "eval"}) == (1, "sample")
    assert next_step({"round": 1, "step": "rate"}) == (1, "reward")
    with pytest.raises(ConfigError, match="rounds"):
        load_config(LoopConfig, None, ["rounds=0"])
    with pytest.raises(ConfigError, match="rater.kind"):
        load_config(LoopConfig, None, ["rater.kind=robot"])


def test_two_tiny_rounds_end_to_end(tmp_path, capsys):
    need_shared()
    out = tmp_path / "run"
    assert main(["loop", *TINY, f"out_dir={out}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"gold_start", "gold_end", "kl", "report"} <= set(summary)
    assert summary["report"] == str(out / "report" / "report.md")
    check_run(out)


def test_models_stay_in_memory_between_steps(tmp_path, monkeypatch):
    """Two rounds read no round's policy or reward model back from disk: each step is handed
    what the one before trained; the starting policy is read three times in all (the policy
    that round 1 samples from and trains, the frozen reference, round 1's fresh reward-model
    backbone), never once per round."""
    need_shared()
    import rlhf.dpo.implicit
    import rlhf.loop.models
    import rlhf.policy.run
    import rlhf.reward.model

    loads = []

    def counting(module, name):
        real = getattr(module, name)

        def load(path, *a, **kw):
            loads.append(str(path))
            return real(path, *a, **kw)
        monkeypatch.setattr(module, name, load)
    for module in (rlhf.loop.models, rlhf.policy.run, rlhf.reward.model):
        counting(module, "load_model")
        counting(module, "load_reward_model")
    counting(rlhf.dpo.implicit, "load_model")
    out = tmp_path / "run"
    run(load_config(LoopConfig, None, [*TINY, f"out_dir={out}"]))
    check_run(out)
    assert [p for p in loads if p.startswith(str(out))] == []
    assert loads == [str(STORIES)] * 3


def test_killed_mid_round_resumes(tmp_path):
    need_shared()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rlhf", "loop", *TINY, f"out_dir={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state_file, state, deadline = out / "state.json", None, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["round"] == 1 and state["step"] == "rate":  # reward training is next
                break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state == {"round": 1, "step": "rate"}, "the loop was not caught mid-round"
    summary = run(load_config(LoopConfig, None, [*TINY, f"out_dir={out}"]))
    assert summary["rounds"] == 2
    check_run(out)


def test_human_rater_waits_then_resumes(tmp_path, capsys):
    need_shared()
    from rlhf.raters.rate import run_session

    out = tmp_path / "run"
    over = [*TINY, "rounds=1", "rater.kind=human", "rater.name=ann", f"out_dir={out}"]
    assert main(["loop", *over]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip())["status"] == "waiting for ratings"
    queue, store = out / "round_01" / "queue.jsonl", out / "comparisons.jsonl"
    assert f"rlhf rate {queue} --rater ann --store {store}" in captured.err
    run_session(queue, store, "ann", io.StringIO("a\nb2\nt\nq\n"), io.StringIO())
    assert main(["loop", *over]) == 3  # a part of the queue is rated: still waiting
    run_session(queue, store, "ann", io.StringIO("a\nb\n" * 20), io.StringIO())
    assert main(["loop", *over]) == 0
    recs = records(out)
    assert [r["round"] for r in recs] == [0, 1]
    assert {c.rater for c in ComparisonStore(store).load()} == {"ann"}
    assert recs[1]["n_comparisons_total"] >= 8


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_loop_under_torchrun_two_processes(tmp_path, parallel):
    """`torchrun --nproc-per-node 2 -m rlhf loop`: the training steps run on both processes
    (gloo DDP, or FSDP shards: the models the loop holds are never the sharded ones),
    everything else on rank 0; the run folder is the same as a single process's, written
    once."""
    need_shared()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "rlhf", "loop", *TINY, f"out_dir={out}", "runtime.device=cpu",
           f"runtime.parallel={parallel}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summaries = [s for s in r.stdout.splitlines() if s.startswith('{"rounds"')]
    assert len(summaries) == 1  # printed by rank 0 only
    check_run(out)
    for rd in ("round_01", "round_02"):
        reward_rows = (out / rd / "reward_model/metrics.jsonl").read_text().splitlines()
        assert '"world_size": 2' in reward_rows[0]
        policy_state = json.loads((out / rd / "policy_train/state/state.json").read_text())
        assert policy_state["meta"]["world_size"] == 2
        gold = [json.loads(s)["step"] for s in
                (out / rd / "policy_train/gold.jsonl").read_text().splitlines()]
        assert gold == [1, 2]  # one row per step (both ranks' samples), written once
