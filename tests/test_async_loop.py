"""`mode: async`: the page stays up, the queue refills from the newest policy, stale items are
retired, each round's cut is recorded before it trains (answers that arrive while it trains go
to the next round, none twice), simulated web raters at a human pace, and the report's rows."""

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

import pytest
from conftest import ROOT, STORIES, need_shared

from rlhf.config import ConfigError, load_config
from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.records import Comparison
from rlhf.feedback.store import ComparisonStore
from rlhf.loop import steps
from rlhf.loop.config import LoopConfig
from rlhf.loop.cycle import run
from rlhf.loop.live import LiveRounds, cut_due, servable
from rlhf.loop.live_stats import idle_share, live_section, rater_time, staleness
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


def live_folder(tmp_path, need: int = 3) -> tuple[LiveRounds, ComparisonStore, list[Item]]:
    cfg = load_config(LoopConfig, None, ["mode=async", "rater.kind=web", f"out_dir={tmp_path}",
                                         f"live.answers_per_round={need}",
                                         "live.poll_seconds=0.01"])
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
    """kill -9 of the async loop at ten random moments while four paced web raters keep
    answering (through every restart): every confirmed answer is in the store exactly once,
    the rounds are those of an uninterrupted run (each cut by its count, disjoint, every
    answer before the last cut in exactly one round), and the run finishes."""
    need_shared()
    out, port = tmp_path / "run", free_port()
    crowd = PacedCrowd(out / "comparisons.jsonl", 4, port, seed=2,
                       pace=Pace(median_seconds=0.1, sigma=0.5), poll_seconds=0.05)
    cmd = [sys.executable, "-m", "rlhf", "loop", *TINY, "rounds=3", f"out_dir={out}",
           f"rater.port={port}", f"rater.name={crowd.rater_names}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLHF_PROGRESS_EVERY": "1000"}
    rng, states = random.Random(7), []
    crowd.start()
    try:
        for _ in range(10):
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=rng.uniform(2.0, 7.0))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            state = out / "state.json"
            states.append(json.loads(state.read_text()) if state.is_file() else None)
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        logs = crowd.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len({json.dumps(s) for s in states}) >= 3, states  # killed at different steps
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
