"""`mode: async` with people in terminals (`rater.kind: human`): `rlhf rate` on the run's
growing queue waits for new items instead of ending, never serves a retired one (the same rule
as the page, `rlhf.raters.live_queue.servable`), and ends when the loop writes the end of the
run into the queue's live state (`queue.live.json`)."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, STORIES, need_shared
from test_rater_terminal import Pty

from rlhf.config import ConfigError, load_config
from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.harness import distributed as dist
from rlhf.loop import live as live_module
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.loop.live import LiveRounds, live_rounds
from rlhf.raters.live_queue import LiveQueue, LiveState, read_state, state_path, write_state
from rlhf.raters.rate import cli as rate_cli
from rlhf.raters.rate import run_session


def item(i: int, version: int) -> Item:
    return Item(f"prompt {i}", f"a happy story {i}", f"a sad story {i}", id=f"it{i}",
                meta={"policy_version": version, "round": version + 1})


def test_line_mode_waits_serves_a_new_item_skips_a_retired_one_and_ends_with_the_run(tmp_path):
    q, store = tmp_path / "queue.jsonl", tmp_path / "comparisons.jsonl"
    write_queue(q, [item(0, 0)])
    write_state(q, LiveState(newest=0, max_staleness=0))
    waits: list[float] = []

    def wait(seconds):  # the loop's side, at known points of the rater's wait
        waits.append(seconds)
        if len(waits) == 1:  # round 1's policy: it1 new; it2 (from policy 0) is retired
            write_queue(q, [item(0, 0), item(1, 1), item(2, 0)])
            write_state(q, LiveState(newest=1, max_staleness=0))
        elif len(waits) == 2:
            write_state(q, LiveState(newest=1, max_staleness=0, ended="finished"))

    out = io.StringIO()
    summary = run_session(q, store, "ann", io.StringIO("a\nb\n"), out, width=80,
                          live=LiveQueue(q), wait=wait, poll_seconds=3, repeat_rate=0)
    text = out.getvalue()
    assert waits == [3, 3] and summary["stopped"] == "done" and summary["answered"] == 2
    assert text.count("[waiting for new items") == 2  # once per wait, not once per poll
    assert text.index("prompt 0") < text.index("[waiting") < text.index("prompt 1")
    assert "prompt 2" not in text  # retired: never shown
    assert "The run has ended" in text and "All items rated" not in text
    answers = ComparisonStore(store).item_answers()
    assert [(c.item_id, c.rater) for c in answers] == [("it0", "ann"), ("it1", "ann")]


def test_the_full_screen_waits_serves_a_new_item_skips_a_retired_one_and_ends(tmp_path):
    """The same in a terminal (single keys, `rlhf.raters.screen`): the queue grows once the
    waiting screen is up, then the run ends once it is up again."""
    q = tmp_path / "q.jsonl"
    write_queue(q, [item(0, 0)])
    write_state(q, LiveState(newest=0, max_staleness=0))
    t = Pty(tmp_path, 30, 100, "--poll-seconds", "0.05")
    try:
        t.until(b"press any key")
        assert b"prompt 0" in t.send(b"x", b"[q] quit")
        t.send(b"a", b"how much?")
        t.send(b"1", b"Waiting for new items")
        write_queue(q, [item(0, 0), item(1, 1), item(2, 0)])  # it2 (policy 0) is retired
        write_state(q, LiveState(newest=1, max_staleness=0))
        t.until(b"prompt 1")
        t.send(b"b", b"how much?")
        t.send(b"2", b"Waiting for new items")
        write_state(q, LiveState(newest=1, max_staleness=0, ended="finished"))
        t.until(b"The run has ended")
        os.write(t.master, b"x")  # any key quits the end screen
        assert t.proc.wait(timeout=30) == 0
        assert b"prompt 2" not in t.seen
    finally:
        t.close()
    answers = ComparisonStore(tmp_path / "s.jsonl").item_answers()
    assert [(c.item_id, c.strength) for c in answers] == [("it0", "slightly"),
                                                          ("it1", "clearly")]


def test_a_queue_without_its_live_state_ends_as_before(tmp_path):
    q = tmp_path / "queue.jsonl"
    write_queue(q, [item(0, 0)])
    out = io.StringIO()
    summary = run_session(q, tmp_path / "s.jsonl", "ann", io.StringIO("a\n"), out, width=80,
                          wait=lambda s: pytest.fail("waited"), repeat_rate=0)
    assert summary["stopped"] == "done" and "All items rated" in out.getvalue()


def test_a_stopped_loop_ends_the_wait_and_says_to_run_again(tmp_path):
    q = tmp_path / "queue.jsonl"
    write_queue(q, [item(0, 0)])
    write_state(q, LiveState(newest=0, max_staleness=1))
    calls = []

    def wait(seconds):
        calls.append(seconds)
        write_state(q, LiveState(newest=0, max_staleness=1, ended="stopped"))

    out = io.StringIO()
    summary = run_session(q, tmp_path / "s.jsonl", "ann", io.StringIO("a\n"), out, width=80,
                          live=LiveQueue(q), wait=wait, poll_seconds=1, repeat_rate=0)
    assert calls == [1] and summary["stopped"] == "done"
    assert "The loop has stopped" in out.getvalue()


def test_a_malformed_growing_queue_or_state_is_one_line_naming_file_and_key(tmp_path, capsys):
    q = tmp_path / "queue.jsonl"
    write_queue(q, [item(0, 0)])
    write_state(q, LiveState(newest=0, max_staleness=1))
    live = LiveQueue(q)

    class Sink:
        items, by_id = [], {}
    live.update(Sink)
    assert [it.id for it in Sink.items] == ["it0"]
    with open(q, "a") as f:  # the queue grows with a bad line: refused, naming file:line
        f.write("{not json\n")
    with pytest.raises(RecordError, match=r"queue.jsonl:2"):
        live.update(Sink)
    write_queue(q, [item(0, 0)])
    state_path(q).write_text('{"newest": "two", "max_staleness": 1, "ended": null}')
    with pytest.raises(RecordError, match=r"queue.live.json: key 'newest'"):
        live.update(Sink)
    assert rate_cli([str(q), "--rater", "ann", "--line"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "queue.live.json: key 'newest'" in err[0]
    state_path(q).write_text('{"newest": 1, "max_staleness": 0, "ended": "done"}')
    with pytest.raises(RecordError, match="key 'ended'"):
        read_state(q)


def test_the_loop_config_takes_async_with_people_in_terminals():
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=human"])
    assert cfg.mode == "async" and cfg.rater.kind == "human"
    with pytest.raises(ConfigError, match="rater.kind: mode=async serves the rating page"):
        load_config(LoopConfig, None, ["mode=async", "rater.kind=simulated"])


def test_the_loop_writes_the_live_state_and_its_end(tmp_path):
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=human",
                                         f"out_dir={tmp_path}", "live.max_staleness=2"])
    live = LiveRounds(cfg, tmp_path, None)
    live.items, live.newest = [item(0, 0)], 3
    live.publish()  # no server with terminal raters: only the state
    assert read_state(tmp_path / "queue.jsonl") == LiveState(3, 2, None)
    live.started_live = True
    live.close("stopped")
    assert read_state(tmp_path / "queue.jsonl") == LiveState(3, 2, "stopped")
    command = live_module.rate_command(tmp_path / "queue.jsonl", tmp_path / "comparisons.jsonl")
    assert command.splitlines()[-1].split() == [
        "rlhf", "rate", str(tmp_path / "queue.jsonl"), "--store",
        str(tmp_path / "comparisons.jsonl"), "--rater", "YOUR_NAME"]


TINY = ["rounds=2", "pairs_per_round=6", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12",
        "reward.train.batch_size=4", "reward.train.epochs=1", "reward.model.n_members=2",
        "reward.data.val_fraction=0.25", "rl.steps=2", "rl.prompts.batch_prompts=2",
        "rl.algo.k=2", "mode=async", "rater.kind=human", "live.ahead=4",
        "live.poll_seconds=0.05"]


def test_a_tiny_async_run_rated_by_rlhf_rate_in_line_mode(tmp_path, monkeypatch):
    """The command the loop prints, run as a process in line mode with answers on its stdin:
    the loop's two rounds train on its answers, and it ends by itself when the run ends."""
    need_shared()
    out, answers, said = tmp_path / "run", tmp_path / "answers.txt", tmp_path / "rater.txt"
    procs: list[subprocess.Popen] = []
    real = live_module.rate_command

    def rate_command(queue, store, name=""):  # start what the loop prints, when it prints it
        text = real(queue, store, "ann")
        argv = shlex.split(text.splitlines()[-1])
        assert argv[:2] == ["rlhf", "rate"]
        answers.write_text("a\n" * 4000)  # more answers than items: it never runs out
        with open(answers) as inp, open(said, "w") as outp:  # (files: no pipe fills up)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "rlhf", *argv[1:], "--line", "--poll-seconds", "0.05",
                 "--repeat-rate", "0"], cwd=ROOT, stdin=inp, stdout=outp,
                stderr=subprocess.STDOUT))
        return text
    monkeypatch.setattr(live_module, "rate_command", rate_command)
    cfg = load_config(LoopConfig, None, [*TINY, f"out_dir={out}"])
    try:
        summary = run(cfg)
        procs[0].wait(timeout=120)  # it ends by itself once the run has ended
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    text = said.read_text()
    assert summary["rounds"] == 2 and len(procs) == 1
    assert procs[0].returncode == 0 and "The run has ended" in text, text[-2000:]
    assert read_state(out / "queue.jsonl").ended == "finished"
    rows = [json.loads(s) for s in (out / "comparisons.jsonl").read_text().splitlines()]
    ann = {r["id"] for r in rows if r.get("type") == "comparison" and r["rater"] == "ann"}
    cuts = [json.loads((out / f"round_0{r}" / "cut.json").read_text()) for r in (1, 2)]
    assert all(c["n_new"] >= 6 for c in cuts)
    assert set(cuts[0]["answer_ids"]) | set(cuts[1]["answer_ids"]) <= ann
    assert not set(cuts[0]["answer_ids"]) & set(cuts[1]["answer_ids"])
    assert text.count("saved ") == len(ann)  # every confirmed answer is in the store


def test_live_rounds_marks_a_run_stopped_by_an_error(tmp_path):
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=human",
                                         f"out_dir={tmp_path}"])
    info = dist.init("cpu")
    with pytest.raises(RuntimeError, match="boom"):
        with live_rounds(cfg, info, tmp_path) as live:
            live.items, live.newest = [item(0, 0)], 0
            live.publish()
            live.started_live = True
            raise RuntimeError("boom")
    assert read_state(tmp_path / "queue.jsonl").ended == "stopped"
