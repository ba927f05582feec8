"""`mode: async`: the page stays up, the queue refills from the newest policy, stale items are
retired, each round's cut is recorded before it trains (answers that arrive while it trains go
to the next round, none twice), simulated web raters at a human pace, and the report's rows;
stale answers down-weighted instead (`live.stale`: the weights by hand, in the snapshot, in the
reward model's loss), and active selection by the newest reward model in the refill."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, STORIES, need_shared

from rlhf.config import ConfigError, load_config
from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.records import Comparison
from rlhf.feedback.store import ComparisonStore
from rlhf.loop import steps
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.loop.folder import STEPS
from rlhf.loop.live import LiveRounds, cut_due, servable
from rlhf.loop.live_stats import (
    idle_share,
    live_section,
    rater_time,
    stale_weight,
    staleness,
    weigh_snapshot,
)
from rlhf.raters.live_queue import LiveQueue
from rlhf.raters.paced import Pace, PacedCrowd, PacedRater, answer_body, links, screen_item
from rlhf.raters.simulated import SimulatedRater
from rlhf.raters.web_live import LiveServer

TINY = ["rounds=2", "pairs_per_round=6", f"policy={STORIES}", "eval.n_prompts=4",
        "eval.samples_per_prompt=1", "sampling.max_new_tokens=12",
        "reward.train.batch_size=4", "reward.train.epochs=1", "reward.model.n_members=2",
        "reward.data.val_fraction=0.25", "rl.steps=2", "rl.prompts.batch_prompts=2",
        "rl.algo.k=2", "mode=async", "rater.kind=web", "live.ahead=4",
        "live.poll_seconds=0.05"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def item(i: int, version: int) -> Item:
    return Item(f"prompt {i}", f"a happy story {i}", f"a sad story {i}", id=f"it{i}",
                meta={"policy_version": version, "round": version + 1})


def answer(it: Item, rater: str, shown_at: float, seconds: float = 1.0) -> Comparison:
    return Comparison.from_item(it, "a", left="a", rater=rater, rater_kind="human",
                                guidelines="none", shown_at=shown_at, seconds=seconds)


# ----------------------------------------------------------------------------- pure parts


def test_config_asks_for_what_async_needs():
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=web"])
    assert cfg.mode == "async" and cfg.live.ahead == 8
    assert load_config(LoopConfig, None, []).mode == "lockstep"  # the default
    with pytest.raises(ConfigError, match="rater.kind: mode=async serves the rating page"):
        load_config(LoopConfig, None, ["mode=async"])
    with pytest.raises(ConfigError, match="policy_method: mode=async"):
        load_config(LoopConfig, None, ["mode=async", "rater.kind=web", "policy_method=dpo"])
    with pytest.raises(ConfigError, match="live.max_staleness: must be >= 0"):
        load_config(LoopConfig, None, ["live.max_staleness=-1"])


def test_servable_retires_items_of_old_policies_and_serves_the_newest_first():
    items = [item(0, 0), item(1, 1), item(2, 2), item(3, 1), item(4, 0)]
    assert [it.id for it in servable(items, 2, 1)] == ["it2", "it1", "it3"]
    assert [it.id for it in servable(items, 2, 0)] == ["it2"]
    assert [it.id for it in servable(items, 3, 1)] == ["it2"]
    start = [item(0, 0), item(4, 0)]
    assert [it.id for it in servable(start, 0, 0)] == ["it0", "it4"]  # queue order within one


def test_a_round_starts_on_its_count_or_its_time():
    assert cut_due(8, 0.0, 1.0, 8, 0.0) == "answers"
    assert cut_due(7, 0.0, 1e6, 8, 0.0) is None  # no time limit
    assert cut_due(7, 0.0, 30.0, 8, 30.0) == "time"
    assert cut_due(7, 0.0, 29.9, 8, 30.0) is None
    assert cut_due(0, 0.0, 1e6, 8, 30.0) is None  # never a round without a new answer


def test_staleness_and_idle_time_by_hand(tmp_path):
    rows = [{"id": "x1", "rater": "ann", "shown_at": 100.0, "seconds": 10.0,
             "meta": {"policy_version": 0}},
            {"id": "x2", "rater": "ann", "shown_at": 115.0, "seconds": 5.0,  # 5 s idle before
             "meta": {"policy_version": 1}},
            {"id": "x3", "rater": "bob", "shown_at": 101.0, "seconds": 20.0,
             "meta": {"policy_version": 1}},
            {"id": "x4", "rater": "bob", "shown_at": 150.0, "seconds": 2.0,  # 29 s idle
             "meta": {}}]
    got = staleness(rows, 3)  # round 3 trains from policy 2: versions 0, 1, 1 are 2, 1, 1 old
    assert got == {"versions": {"0": 1, "1": 2}, "mean": pytest.approx(4 / 3)}
    times = rater_time(rows, {"x2", "x3", "x4"})
    assert times == {"ann": {"answers": 1, "busy_s": 5.0, "idle_s": 5.0},
                     "bob": {"answers": 2, "busy_s": 22.0, "idle_s": 29.0}}
    assert idle_share(times) == pytest.approx(34 / 61)
    rec = {"round": 3, "live": {"n_new": 3, "n_total": 4, "staleness": got, "raters": times,
                                "reason": "answers"}}
    table = live_section(tmp_path, [{"round": 0}, rec])
    assert "| 3 | 3 | 4 | v0: 1, v1: 2 | 1.33 | answers | ann 1 (5s / 5s); bob 2 (22s / 29s) |" \
        in table
    # a lock-step run: its rounds' answers from the store (round 1's: x1..x3; x4 round 2's,
    # by a rater simulated in-process, left out)
    store_rows = [{**row, "type": "comparison", "rater_kind": "human",
                   "meta": {"round": 1 if row["id"] != "x4" else 2}} for row in rows]
    store_rows[3]["rater_kind"] = "simulated"
    (tmp_path / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\n" for r in store_rows))
    table = live_section(tmp_path, [{"round": 0}, {"round": 1}, {"round": 2}])
    assert "| 1 | 3 | 3 | v0: 3 | 0.00 | queue rated | ann 2 (15s / 5s); bob 1 (20s / 0s) |" \
        in table and not any(line.startswith("| 2 |") for line in table)
    (tmp_path / "comparisons.jsonl").write_text("")
    assert live_section(tmp_path, [{"round": 0}, {"round": 1}]) == []  # nothing to show


def test_the_paced_rater_answers_in_screen_terms_by_the_simulated_choice_rule():
    judge = SimulatedRater("vader", 0, temperature=0, tie_band=0.05)
    shown = {"ask": "compare", "nonce": "N", "prompt": [{"role": "", "text": "Once"}],
             "responses": ["She cried, sad and alone.", "She laughed, happy with her friends."]}
    assert answer_body(judge.judge(screen_item(shown)), "N") == {"nonce": "N",
                                                                 "choice": "right"}
    ranked = {**shown, "ask": "rank", "responses": [*shown["responses"], "It was a day."]}
    assert answer_body(judge.judge(screen_item(ranked)), "N")["places"] == [3, 1, 2]
    pace, rng = Pace(median_seconds=20, sigma=0.0, time_scale=0.01), __import__("random")
    assert pace.draw(rng.Random(0)) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- the cut


def live_folder(tmp_path, need: int = 3, more: tuple = ()
                ) -> tuple[LiveRounds, ComparisonStore, list[Item]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=web", f"out_dir={tmp_path}",
                                         f"live.answers_per_round={need}",
                                         "live.poll_seconds=0.01", *more])
    items = [item(i, 0) for i in range(10)]
    write_queue(tmp_path / "queue.jsonl", items)
    return LiveRounds(cfg, tmp_path, None), ComparisonStore(tmp_path / "comparisons.jsonl"), items


def test_an_answer_arriving_while_a_round_trains_goes_to_the_next_round(tmp_path):
    live, store, items = live_folder(tmp_path)
    store.extend([answer(items[i], "ann", 100.0 + 10 * i) for i in range(4)])
    cut1 = live.cut(1, stop=None)  # 4 answers are in (3 needed): the round takes every one
    assert cut1["n_new"] == 4 and cut1["reason"] == "answers"
    assert cut1["store_bytes"] == (tmp_path / "comparisons.jsonl").stat().st_size
    store.append(answer(items[4], "bob", 150.0))  # arrives while round 1 trains
    used1 = ComparisonStore(tmp_path / "round_01" / "comparisons_used.jsonl").load()
    assert [c.item_id for c in used1] == ["it0", "it1", "it2", "it3"]  # what round 1 trains
    assert live.cut(2, stop=lambda: True) is None  # one new answer of three: still waiting
    store.extend([answer(items[i], "ann", 100.0 + 10 * i) for i in (5, 6)])
    cut2 = live.cut(2, stop=None)
    assert cut2["answer_ids"] == [c.id for c in store.load()[4:]] and cut2["n_total"] == 7
    assert not set(cut1["answer_ids"]) & set(cut2["answer_ids"])
    assert cut2["staleness"] == {"versions": {"0": 3}, "mean": 1.0}  # v0 items in round 2
    # ann's answer 5 was shown at 150, her answer before it (item 3) at 130 and took 1 s: 19 s
    # idle; answer 6 at 160, 10 s after answer 5, which took 1 s: 9 s
    assert cut2["raters"]["ann"] == {"answers": 2, "busy_s": 2.0, "idle_s": 28.0}
    # a restart keeps the cuts made (a new answer changes neither)
    store.append(answer(items[7], "bob", 160.0))
    again, _, _ = live_folder(tmp_path)
    assert again.cut(1, None) == cut1 and again.cut(2, None) == cut2


# ----------------------------------------------------------------------------- the page


def test_retired_items_are_not_served_and_new_ones_arrive_without_a_new_session(tmp_path):
    items = [item(0, 0), item(1, 1), item(2, 1)]
    write_queue(tmp_path / "q.jsonl", items)
    token = links(tmp_path / "s.jsonl", ["ann"])["ann"]
    server = LiveServer(tmp_path / "q.jsonl", tmp_path / "s.jsonl", ["ann"], port=0,
                        repeat_rate=0)
    try:
        server.set_items(servable(items, 2, 1), items)  # newest 2: it0 (v0) is retired
        rater = PacedRater("127.0.0.1", server.port, token, "ann", pace=Pace(time_scale=0))
        seen = []
        for _ in range(2):
            status, shown = rater.call("next")
            seen.append(shown["responses"])
            status, out = rater.call("answer", {"nonce": shown["nonce"], "choice": "left"})
            assert status == 200
        assert sorted(r[0] if "happy" in r[0] else r[1] for r in seen) == [
            "a happy story 1", "a happy story 2"]
        status, shown = rater.call("next")
        assert shown["waiting"] and "nonce" not in shown  # waits; never "all done"
        new = item(3, 2)
        server.set_items(servable([*items, new], 2, 1), [*items, new])
        status, shown = rater.call("next")
        assert "happy story 3" in " ".join(shown["responses"])
        assert {a.item_id for a in ComparisonStore(tmp_path / "s.jsonl").load()} == {"it1",
                                                                                     "it2"}
    finally:
        server.close()
    status_after = rater.call("next")
    assert status_after is None  # the run ended: no server


# ----------------------------------------------------------------------------- end to end


def test_a_tiny_async_run_with_paced_web_raters(tmp_path, monkeypatch):
    """Two rounds with three paced simulated raters on the page: each round's cut has its
    answers (disjoint), every confirmed answer is in the store once, an answer injected while
    round 1 trains is round 2's, the queue refilled from round 1's policy, the report's rows."""
    need_shared()
    out, port = tmp_path / "run", free_port()
    crowd = PacedCrowd(out / "comparisons.jsonl", 3, port, seed=1,
                       pace=Pace(median_seconds=0.05, sigma=0.3, time_scale=1.0),
                       poll_seconds=0.05)
    late: list[str] = []
    real_reward_step = steps.reward_step

    def reward_step(cfg, out_, r, models):  # an answer that arrives while round r trains
        if r == 1:
            it = read_queue(out_ / "queue.jsonl")[0]
            c = answer(it, "late", time.time())
            ComparisonStore(out_ / "comparisons.jsonl").append(c)
            late.append(c.id)
        return real_reward_step(cfg, out_, r, models)
    monkeypatch.setattr(steps, "reward_step", reward_step)
    cfg = load_config(LoopConfig, None, [*TINY, f"out_dir={out}", f"rater.port={port}",
                                         f"rater.name={crowd.rater_names}"])
    crowd.start()
    try:
        summary = run(cfg)
    finally:
        logs = crowd.stop()
    assert summary["rounds"] == 2
    cuts = [json.loads((out / f"round_0{r}" / "cut.json").read_text()) for r in (1, 2)]
    assert all(c["n_new"] >= 6 for c in cuts)
    assert not set(cuts[0]["answer_ids"]) & set(cuts[1]["answer_ids"])
    assert late[0] in cuts[1]["answer_ids"] and late[0] not in cuts[0]["answer_ids"]
    ids = [r["id"] for r in map(json.loads, (out / "comparisons.jsonl").read_text().splitlines())
           if r.get("type") == "comparison"]
    acked = [i for g in logs.values() for i in g.acked]
    assert acked and len(ids) == len(set(ids)) and set(acked) <= set(ids)
    assert set(cuts[0]["answer_ids"]) | set(cuts[1]["answer_ids"]) <= set(ids)
    used = ComparisonStore(out / "round_02" / "comparisons_used.jsonl").load()
    assert len(used) == cuts[1]["n_total"] == cuts[0]["n_new"] + cuts[1]["n_new"]
    queue = read_queue(out / "queue.jsonl")
    assert {it.meta["policy_version"] for it in queue} >= {0, 1}  # refilled from round 1's
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["live"]["n_new"] for r in recs[1:]] == [c["n_new"] for c in cuts]
    assert recs[1]["live"]["staleness"]["mean"] == 0.0  # round 1: all from the start policy
    assert "## Raters' time" in (out / "report/report.md").read_text()
    assert not threading.enumerate()[1:] or all(
        t.name not in ("rating-server", "sampler") for t in threading.enumerate())


def test_the_same_paced_raters_rate_a_lockstep_web_run(tmp_path):
    """Lock-step with `rater.kind: web`: the paced raters answer each round's queue over HTTP
    (the server is down while the round trains: they idle), and the report's table has the
    round's answers and the raters' time from the store."""
    need_shared()
    out, port = tmp_path / "run", free_port()
    crowd = PacedCrowd(out / "comparisons.jsonl", 3, port, seed=3,
                       pace=Pace(median_seconds=0.05, sigma=0.3), poll_seconds=0.05)
    over = [o for o in TINY if not o.startswith(("mode=", "live."))]
    cfg = load_config(LoopConfig, None, [*over, "rounds=1", f"out_dir={out}",
                                         f"rater.port={port}", "rater.poll_seconds=0.1",
                                         f"rater.name={crowd.rater_names}"])
    crowd.start()
    try:
        assert run(cfg)["rounds"] == 1
    finally:
        logs = crowd.stop()
    answers = ComparisonStore(out / "comparisons.jsonl").load()
    assert {c.rater for c in answers} <= set(crowd.names) and len(answers) >= 6
    assert {c.id for c in answers} >= {i for g in logs.values() for i in g.acked}
    section = (out / "report/report.md").read_text().split("## Raters' time", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| 1 |"))
    assert f"| 1 | {len(answers)} | {len(answers)} | v0: {len(answers)} | 0.00 | queue rated" \
        in row and "sim-" in row


@pytest.mark.slow
def test_killed_ten_times_while_paced_raters_answer(tmp_path):
    """kill -9 of the async loop at ten moments spread over the run while four paced web
    raters keep answering (through every restart): every confirmed answer is in the store
    exactly once, the rounds are those of an uninterrupted run (each cut by its count,
    disjoint, every answer before the last cut in exactly one round), and the run finishes.
    Each kill waits until the run has done its target step (ten targets, round 1's cut to
    round 3's reward model), then a random 0-0.3 s more: the kills land all over the run
    whatever the machine's speed."""
    need_shared()
    out, port = tmp_path / "run", free_port()
    crowd = PacedCrowd(out / "comparisons.jsonl", 4, port, seed=2,
                       pace=Pace(median_seconds=0.1, sigma=0.5), poll_seconds=0.05)
    cmd = [sys.executable, "-m", "rlhf", "loop", *TINY, "rounds=3", f"out_dir={out}",
           f"rater.port={port}", f"rater.name={crowd.rater_names}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLHF_PROGRESS_EVERY": "1000"}
    order = [(r, s) for r in (1, 2, 3) for s in STEPS]  # the run's steps, in order
    targets = [t for t in order if t[1] != "sample"][:10]  # (1, rate) .. (3, policy)
    rng, states = random.Random(7), []

    def reached() -> int:  # index of the last step done (-1: none of rounds 1-3 yet)
        path = out / "state.json"
        st = json.loads(path.read_text()) if path.is_file() else {"round": 0}
        return order.index((st["round"], st["step"])) if st["round"] >= 1 else -1

    crowd.start()
    try:
        for target in targets:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            while proc.poll() is None and reached() < order.index(target):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is not None:  # it ended first (a crash shows in the run below)
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            states.append(reached())
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        logs = crowd.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(states) >= 9 and len(set(states)) >= 6, states  # spread over the run
    recs = [json.loads(s) for s in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [0, 1, 2, 3]
    cuts = [json.loads((out / f"round_0{r}" / "cut.json").read_text()) for r in (1, 2, 3)]
    assert all(c["reason"] == "answers" and c["n_new"] >= 6 for c in cuts)
    rows = [json.loads(s) for s in (out / "comparisons.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows if r.get("type") == "comparison"]
    assert len(ids) == len(set(ids))  # nothing doubled
    acked = [i for g in logs.values() for i in g.acked]
    assert len(acked) >= 18 and not set(acked) - set(ids)  # nothing confirmed was lost
    in_cuts = [i for c in cuts for i in c["answer_ids"]]
    assert len(in_cuts) == len(set(in_cuts))  # no answer in two rounds
    before_last = ComparisonStore(out / "round_03" / "comparisons_used.jsonl").load()
    assert sorted(c.id for c in before_last) == sorted(in_cuts)  # none dropped
    assert [r["live"]["n_new"] for r in recs[1:]] == [c["n_new"] for c in cuts]


def test_the_page_waits_for_new_items_then_shows_one_without_a_reload(tmp_path):
    """In Chromium: a rater with nothing servable (the only item retired) sees the waiting
    state, never the end; a newly sampled item appears on the same page."""
    from web_helpers import browser, wait_for

    items = [item(0, 0)]
    write_queue(tmp_path / "q.jsonl", items)
    token = links(tmp_path / "s.jsonl", ["ann"])["ann"]
    server = LiveServer(tmp_path / "q.jsonl", tmp_path / "s.jsonl", ["ann"], port=0,
                        repeat_rate=0)
    d = None
    try:
        server.set_items(servable(items, 2, 1), items)  # it0 (v0) retired: nothing to serve
        d = browser(1000, 700)
        el = lambda i: d.find_element("id", i)  # noqa: E731
        d.get(f"http://127.0.0.1:{server.port}/r/{token}")
        wait_for(d, lambda: el("start").is_displayed(), "the guidelines")
        el("start").click()
        wait_for(d, lambda: el("waiting").is_displayed(), "the waiting state")
        assert not el("done").is_displayed() and el("waiting-text").text == ""
        d.execute_script("window.__same_page = true")  # gone if the page reloads
        new = item(7, 2)
        server.set_items(servable([*items, new], 2, 1), [*items, new])
        wait_for(d, lambda: el("rate").is_displayed(), "the new item", timeout=30)
        assert "prompt 7" in el("prompt").text
        assert d.execute_script("return window.__same_page") is True
    finally:
        if d is not None:
            d.quit()
        server.close()


# ----------------------------------------------------------------------------- stale answers


def test_stale_options_are_checked_by_key():
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=web"])
    assert cfg.live.stale == "retire" and cfg.live.stale_weight == 0.5  # the defaults
    assert cfg.live.retire_after() == cfg.live.max_staleness
    down = load_config(LoopConfig, None, ["mode=async", "rater.kind=web",
                                          "live.stale=downweight", "live.stale_weight=1"])
    assert down.live.retire_after() > 10 ** 6  # nothing is retired
    for bad in ("0", "-0.5", "1.5"):
        with pytest.raises(ConfigError, match=r"^live.stale_weight: must be in \(0, 1\]"):
            load_config(LoopConfig, None, [f"live.stale_weight={bad}"])
    with pytest.raises(ConfigError, match="live.stale"):
        load_config(LoopConfig, None, ["live.stale=drop"])


def test_stale_weights_by_hand():
    # round 5 trains from policy 4: versions 0..3 are 4, 3, 2, 1 old; max_staleness 1 -> 3, 2,
    # 1, 0 versions beyond it -> weights 0.5**3, 0.5**2, 0.5, 1; no version -> 1
    assert [stale_weight(v, 5, 1, 0.5) for v in (0, 1, 2, 3, 4, None)] == [
        0.125, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert stale_weight(0, 5, 0, 0.9) == pytest.approx(0.9 ** 4)
    assert stale_weight(0, 5, 1, 1.0) == 1.0
    rows = [{"type": "comparison", "id": f"c{v}", "meta": {"policy_version": v}}
            for v in (0, 1, 2, 3)]
    rows[1]["meta"]["weight"] = 0.5  # a weight it had already: multiplied
    rows += [{"type": "comparison", "id": "cx", "meta": {}},
             {"type": "note", "id": "n1", "about": "c0", "meta": {"policy_version": 0}},
             {"type": "retraction", "id": "r1", "retracts": "c3"}]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    out, summary = weigh_snapshot(data, 5, 1, 0.5)
    got = [json.loads(s) for s in out.decode().splitlines()]
    assert [(g.get("meta") or {}).get("weight") for g in got] == [
        0.125, 0.125, 0.5, None, None, None, None]  # 0.25 * 0.5 for c1
    old, new = data.split(b"\n"), out.split(b"\n")
    assert [old[i] == new[i] for i in range(len(old))] == [False] * 3 + [True] * 5
    assert summary == {"down_weighted": 3, "mean_weight": pytest.approx(2.875 / 5),
                       "by_version": {"0": 0.125, "1": 0.25, "2": 0.5}}
    assert weigh_snapshot(data, 2, 1, 0.5)[0] == data  # round 2: nothing beyond 1 version


def test_downweight_serves_stale_items_and_weighs_the_snapshot_not_the_store(tmp_path,
                                                                            monkeypatch):
    live, store, _ = live_folder(tmp_path, need=4, more=["live.stale=downweight",
                                                         "live.max_staleness=0"])
    items = [item(i, v) for i, v in enumerate((0, 0, 1, 2, 2))]
    retire, _, _ = live_folder(tmp_path / "r", more=["live.max_staleness=0"])
    for rounds, folder in ((live, tmp_path), (retire, tmp_path / "r")):
        write_queue(folder / "queue.jsonl", items)
        rounds.items, rounds.newest = items, 2
        rounds.publish()  # what `rlhf rate` serves (the page gets the same list)
        served = SimpleNamespace()
        LiveQueue(folder / "queue.jsonl").update(served)
        assert [it.id for it in rounds.left()] == ["it3", "it4"]  # the margin: fresh ones
        assert [it.id for it in served.items] == (["it3", "it4", "it2", "it0", "it1"]
                                                  if rounds is live else ["it3", "it4"])
    store.extend([answer(it, "ann", 100.0 + i) for i, it in enumerate(items[:4])])
    before = (tmp_path / "comparisons.jsonl").read_bytes()
    monkeypatch.setattr(live, "start", lambda newest: None)  # no server, no sampler
    record = live.step(3, "rate", {}, None)  # round 3 trains from policy 2: v0 2 old, v1 1
    assert (tmp_path / "comparisons.jsonl").read_bytes() == before  # the store untouched
    weights = record["live"]["weights"]
    assert weights == {"stale_weight": 0.5, "down_weighted": 3, "mean_weight": pytest.approx(
        (0.25 + 0.25 + 0.5 + 1) / 4), "by_version": {"0": 0.25, "1": 0.5}}
    used = ComparisonStore(tmp_path / "round_03" / "comparisons_used.jsonl").load()
    assert [c.meta.get("weight") for c in used] == [0.25, 0.25, 0.5, None]
    assert json.loads((tmp_path / "round_03" / "cut.json").read_text())["weights"] == weights
    row = next(line for line in live_section(tmp_path, [{"round": 0}, {"round": 3, **record}])
               if line.startswith("| 3 |"))
    assert "| 1.25 (3 down-weighted, mean weight 0.50) |" in row


def test_the_reward_loss_counts_each_pair_by_its_record_weight(tmp_path):
    """A snapshot's `meta.weight` reaches the reward model's loss: the batch loss is the
    hand-computed weighted mean of the pairs' own losses, and a pair of weight 0 counts as
    if it were not there."""
    from test_train_reward import make_fixture

    from rlhf.preferences.data import prepare_data
    from rlhf.reward.config import RewardTrainConfig
    from rlhf.reward.model import init_reward_model
    from rlhf.reward.train import micro_batch_loss

    model_dir, store = make_fixture(tmp_path, n=4)
    rows = [json.loads(s) for s in store.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["meta"] = {"policy_version": i}  # round 5, max_staleness 1: weights 1/8 .. 1
    data, _ = weigh_snapshot("".join(json.dumps(r) + "\n" for r in rows).encode(), 5, 1, 0.5)
    (tmp_path / "w.jsonl").write_bytes(data)
    rows[0]["meta"]["weight"] = 0  # the first pair counts nothing...
    (tmp_path / "zero.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "drop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    args = [f"model.init={model_dir}", "data.max_len=64", "data.val_fraction=0",
            "train.batch_size=2", "model.n_members=2"]
    rm, tok = init_reward_model(str(model_dir), 2, 0, "last")
    rm.eval()
    cpu = torch.device("cpu")

    def losses(name):
        cfg = load_config(RewardTrainConfig, None, [*args, f"data.paths=[{tmp_path / name}]"])
        d, _ = prepare_data(cfg, tok)
        boot = torch.ones(len(d), 2)
        with torch.no_grad():
            alone = [float(micro_batch_loss(rm, d, [i], boot, cfg, cpu)["loss"])
                     for i in range(len(d))]
            return d, alone, float(micro_batch_loss(rm, d, list(range(len(d))), boot, cfg,
                                                    cpu)["loss"])
    d, alone, got = losses("w.jsonl")
    assert d.weight.tolist() == [0.125, 0.25, 0.5, 1.0]
    assert got == pytest.approx((0.125 * alone[0] + 0.25 * alone[1] + 0.5 * alone[2]
                                 + alone[3]) / 1.875, abs=1e-6)
    assert abs(got - sum(alone) / 4) > 1e-5  # the unweighted mean differs
    assert losses("zero.jsonl")[2] == pytest.approx(losses("drop.jsonl")[2], abs=1e-6)


# ----------------------------------------------------------------------------- active selection


def test_the_refill_keeps_the_candidates_the_newest_reward_model_disputes_most(tmp_path,
                                                                              monkeypatch):
    """selection=disagreement in async mode: before a reward model exists the refill is
    random; once round 1's exists (and its policy is the newest), it samples `oversample`
    times what it needs and keeps the ones `rank_pairs` scores highest, marked active."""
    from test_train_reward import tiny_backbone

    from rlhf.lm.folders import load_model, save_model
    from rlhf.loop import live as live_mod
    from rlhf.loop.folder import policy_path, reward_model_path
    from rlhf.prompts import write_prompts
    from rlhf.reward.model import RewardModel, load_reward_model, rank_pairs, save_reward_model

    start = tiny_backbone(tmp_path, seed=0)
    out = tmp_path / "run"
    out.mkdir()
    write_prompts(out / "prompts_train.jsonl", [f"Once upon a time {w}" for w in
                                                "abcdefghij"])
    cfg = load_config(LoopConfig, None, [
        "mode=async", "rater.kind=web", f"out_dir={out}", f"policy={start}",
        "selection=disagreement", "oversample=3", "live.ahead=4", "live.max_staleness=0",
        "sampling.max_new_tokens=6"])
    live = LiveRounds(cfg, out, torch.device("cpu"))
    live.newest = 0
    assert live.refill() and len(live.items) == 4  # no reward model yet: random
    assert {it.served_because for it in live.items} == {"random"}
    assert not any("disagreement" in it.meta for it in live.items)
    policy, tok = load_model(start)
    save_model(policy, tok, policy_path(cfg, out, 1))  # round 1's policy and reward model
    save_reward_model(RewardModel(load_model(start)[0], n_members=3, seed=1), tok,
                      reward_model_path(out, 1))
    seen, real = [], live_mod.most_disputed

    def spy(items, n, rm, tok_):  # the real selection, its candidates kept for the check
        seen.append((list(items), rm))
        return real(items, n, rm, tok_)
    monkeypatch.setattr(live_mod, "most_disputed", spy)
    live.policy_done(1)  # v0 items now retired (max_staleness 0): 4 needed
    assert live.refill()
    candidates, used_rm = seen[0]
    assert len(candidates) == 12 and {c.source_a["round"] for c in candidates} == {1}
    rm, rm_tok = load_reward_model(reward_model_path(out, 1))
    scores = rank_pairs(rm, rm_tok, candidates)
    top = sorted(range(12), key=lambda i: -scores[i])[:4]
    new = live.items[4:]
    assert [it.id for it in new] == [candidates[i].id for i in top]
    assert [it.meta["disagreement"] for it in new] == pytest.approx([scores[i] for i in top])
    assert {it.served_because for it in new} == {"active"}
    assert {it.meta["policy_version"] for it in new} == {1}
    assert min(scores[i] for i in top) >= max(s for i, s in enumerate(scores) if i not in top)
    assert used_rm is live.judge[1]  # the sampler's own copy, read from the round's folder
    assert [it.id for it in read_queue(out / "queue.jsonl")] == [it.id for it in live.items]
