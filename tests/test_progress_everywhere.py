"""Progress everywhere: every long command reports through the one `Progress` (a bar on a
terminal, a line every RLHF_PROGRESS_EVERY seconds otherwise). The interval is set to 0 here
(a line per batch) or the clock is driven; nothing races a timer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from test_train_reward import config as reward_config
from test_train_reward import make_fixture

import rlhf.harness.progress as P
from rlhf.cli import main
from rlhf.config import UserError
from rlhf.feedback.pairs import sample_pairs
from rlhf.lm.config import SamplingConfig
from rlhf.lm.folders import load_model
from rlhf.policy.evaluate import evaluate_policy
from rlhf.reward.train import train as train_reward


def lines_of(err: str, desc: str) -> list[str]:
    """'desc: k/N' of each progress line of `desc` (the elapsed time and figures cut)."""
    return [x.split(" (")[0] for x in err.splitlines() if x.startswith(desc + ": ")]


def cumulative(sizes: list[int]) -> list[int]:
    out, n = [], 0
    for s in sizes:
        n += s
        out.append(n)
    return out


def batches(n: int, size: int) -> list[int]:
    return [min(size, n - i) for i in range(0, n, size)]


def test_interval_from_the_environment_with_a_driven_clock(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(P.time, "time", lambda: clock[0])
    monkeypatch.setenv(P.EVERY_ENV, "10")
    out = io.StringIO()
    bar = P.Progress("x", 5, stream=out)
    assert bar.every_s == 10.0
    bar.update()
    clock[0] += 9.9
    bar.update()  # 2 done at 9.9 s: no line yet
    assert out.getvalue() == ""
    clock[0] += 0.2
    bar.update()  # 3 at 10.1 s: a line
    clock[0] += 1.0
    bar.update()  # 4 at 11.1 s: 1 s after the last line, none
    bar.update()  # 5 of 5: the last line, whatever the time
    assert out.getvalue().splitlines() == ["x: 3/5 (10s)", "x: 5/5 (11s)"]
    monkeypatch.delenv(P.EVERY_ENV)
    assert P.Progress("x", 1, stream=out).every_s == 15.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(P.EVERY_ENV, bad)
        with pytest.raises(UserError, match=P.EVERY_ENV):
            P.Progress("x", 1, stream=out)


def test_advance_reports_to_the_innermost_open_progress():
    out = io.StringIO()
    P.advance(3)  # none open: nothing
    with P.Progress("outer", 4, stream=out, every_s=0):
        P.advance()
        with P.Progress("inner", 2, stream=out, every_s=0):
            P.advance(2)
        P.advance(3)
    P.advance()  # closed: nothing
    assert lines_of(out.getvalue(), "outer") == ["outer: 1/4", "outer: 4/4"]
    assert lines_of(out.getvalue(), "inner") == ["inner: 2/2"]
    assert not P._OPEN


def test_train_dpo_and_eval_reward_print_lines_when_stderr_is_a_pipe(tmp_path, capsys,
                                                                      monkeypatch):
    """A real `rlhf train-dpo` process, its stderr a pipe: the reference pass and each step
    report (it printed nothing before the first step and one line per 15 s of steps); then
    `rlhf eval-reward` of the policy reports each batch of both passes."""
    model_dir, store = make_fixture(tmp_path, n=80)
    env = {**os.environ, "PYTHONPATH": str(ROOT), P.EVERY_ENV: "0"}
    args = [f"out_dir={tmp_path / 'run'}", f"model.init={model_dir}", f"data.paths=[{store}]",
            "data.max_len=64", "train.batch_size=16", "train.max_steps=3",
            "train.eval_batch_size=32", "runtime.threads=1"]
    proc = subprocess.run([sys.executable, "-m", "rlhf", "train-dpo", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout.splitlines()[-1])
    n = s["train_pairs"] + s["val_pairs"]
    done = cumulative(batches(s["train_pairs"], 32) + batches(s["val_pairs"], 32))
    assert lines_of(proc.stderr, "dpo reference") == [f"dpo reference: {k}/{n}" for k in done]
    assert lines_of(proc.stderr, "dpo") == ["dpo: 1/3", "dpo: 2/3", "dpo: 3/3"]

    monkeypatch.setenv(P.EVERY_ENV, "0")
    capsys.readouterr()
    assert main(["eval-reward", f"model={tmp_path / 'run/policy'}", f"data=[{store}]",
                 "batch_size=32"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["pairs"] == n == 80
    # 80 pairs through the policy, then through the reference, 32 a batch
    assert lines_of(out.err, "eval-reward") == [
        f"eval-reward: {k}/160" for k in cumulative(batches(80, 32) * 2)]


def test_eval_reward_of_a_reward_model_reports_each_batch(tmp_path, capsys, monkeypatch):
    model_dir, store = make_fixture(tmp_path, n=40)
    s = train_reward(reward_config(model_dir, store, tmp_path / "rm", "train.max_steps=1"))
    monkeypatch.setenv(P.EVERY_ENV, "0")
    capsys.readouterr()
    assert main(["eval-reward", f"model={s['model']}", f"data=[{store}]", "batch_size=16"]) == 0
    err = capsys.readouterr().err
    assert lines_of(err, "eval-reward") == [f"eval-reward: {k}/80"
                                            for k in cumulative(batches(80, 16))]


def test_sampling_reports_each_batch_in_sample_pairs_and_the_loop(tmp_path, capsys, monkeypatch):
    model_dir, _ = make_fixture(tmp_path, n=4)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(40)))
    monkeypatch.setenv(P.EVERY_ENV, "0")
    capsys.readouterr()
    assert main(["sample-pairs", "--model", str(model_dir), "--prompts", str(prompts),
                 "--n-prompts", "40", "--out", str(tmp_path / "q.jsonl"),
                 "sampling.max_new_tokens=3"]) == 0
    # 40 prompts x 2 responses, sampled 64 rows a batch
    assert lines_of(capsys.readouterr().err, "sampling") == ["sampling: 64/80",
                                                             "sampling: 80/80"]
    # the loop's sampling is this function, called with every ask
    model, tok = load_model(model_dir)
    items = sample_pairs(model, tok, ["a", "b", "c"], SamplingConfig(max_new_tokens=2),
                         asks=["rank", "rate", "correct"], rank_k=3, rate_k=2)
    assert len(items) == 4
    assert lines_of(capsys.readouterr().err, "sampling")[-1] == "sampling: 6/6"
    # and the loop's evaluation of each round's policy: 70 held-out prompts, 64 a batch
    ev = evaluate_policy(model, model, tok, [f"p{i}" for i in range(70)],
                         SamplingConfig(max_new_tokens=2), seed=0)
    assert ev["n"] == 70
    assert lines_of(capsys.readouterr().err, "evaluation") == ["evaluation: 64/70",
                                                               "evaluation: 70/70"]


def test_import_and_export_of_a_file_report_each_record(tmp_path, capsys, monkeypatch):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f"yes {i}",
                                       "rejected": f"no {i}"}) + "\n" for i in range(30)))
    monkeypatch.setenv(P.EVERY_ENV, "0")
    capsys.readouterr()
    store = tmp_path / "store.jsonl"
    assert main(["import-pairs", str(src), "--out", str(store)]) == 0
    # each record checked, then each serialised, then the one write
    assert lines_of(capsys.readouterr().err, "import-pairs") == [
        f"import-pairs: {k}/61" for k in range(1, 62)]
    assert main(["import-pairs", str(src), "--to", "trl",
                 "--out", str(tmp_path / "trl.jsonl")]) == 0
    assert lines_of(capsys.readouterr().err, "import-pairs")[-1] == "import-pairs: 31/31"
    assert main(["export", str(store), "--to", "trl-preference",
                 "--out", str(tmp_path / "out.jsonl")]) == 0
    assert lines_of(capsys.readouterr().err, "export") == [f"export: {k}/31"
                                                           for k in range(1, 32)]


def test_a_failed_write_prints_no_final_line(tmp_path, capsys, monkeypatch):
    """The last line says the work is done: an import whose write fails shows the error
    alone (the default interval: no line before the end)."""
    import rlhf.feedback.store as store_module

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"})
                           + "\n" for i in range(5)))

    def fail(self, fd, lines):
        raise store_module.StoreError("could not write: disk full")

    monkeypatch.setattr(store_module.ComparisonStore, "_write", fail)
    capsys.readouterr()
    assert main(["import-pairs", str(src), "--out", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf import-pairs: error: "), err
