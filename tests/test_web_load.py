"""Load on the rating server over loopback: 50 raters answer 40 pairs each at once through
HTTP; the store ends with exactly 2,000 answers, none duplicated or lost, overlap respected.
Then the same with the server SIGKILLed mid-run and restarted: every answer the server
confirmed is in the store. Prints p50/p95 latency per answer (run with -s to see them)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter

import pytest
from web_helpers import Client, Server, make_queue

from rlhf.feedback.store import ComparisonStore

RATERS, EACH, OVERLAP = 50, 40, 2
ITEMS = 1200  # room to spare: 2,000 answers at overlap 2 need 1,000 items


def rater_loop(server, name, confirmed, latencies, errors, stop_at):
    """Answer EACH pairs, retrying through a server restart; record confirmed ids."""
    c = Client(server.port, server.links[name])
    pair, n = None, 0
    while n < EACH and time.time() < stop_at:
        try:
            if pair is None or pair.get("done"):
                status, pair = c.call("/api/next")
                if status != 200 or pair["done"]:
                    errors.append(f"{name}: next -> {status} {pair}")
                    return
            t0 = time.perf_counter()
            status, out = c.call("/api/answer", {"nonce": pair["nonce"],
                                                 "choice": ("left", "right", "tie")[n % 3]})
            if status == 200:
                latencies.append(time.perf_counter() - t0)
                confirmed.append((name, out["id"]))
                pair, n = out["next"], n + 1
            elif status == 409:  # the server restarted: this pair's nonce is gone
                pair = None
            else:
                errors.append(f"{name}: answer -> {status} {out}")
                return
        except OSError:  # the server is down: try again shortly
            pair = None
            time.sleep(0.2)


def run_load(tmp_path, kill_after: int | None = None):
    make_queue(tmp_path / "q.jsonl", ITEMS)
    names = [f"r{i:02d}" for i in range(RATERS)]
    server = Server(tmp_path, names, "--repeat-rate", "0", "--overlap", str(OVERLAP))
    confirmed, latencies, errors = [], [], []
    stop_at = time.time() + 240
    threads = [threading.Thread(target=rater_loop, args=(server, n, confirmed, latencies,
                                                         errors, stop_at)) for n in names]
    t0 = time.time()
    try:
        for t in threads:
            t.start()
        if kill_after is not None:
            while len(confirmed) < kill_after and time.time() < stop_at:
                time.sleep(0.01)
            server.kill()  # SIGKILL mid-run
            killed_at = len(confirmed)
            server.start()  # same port, same store, same tokens
        for t in threads:
            t.join(timeout=max(1, stop_at - time.time()))
    finally:
        server.stop()
    wall = time.time() - t0
    assert not errors, errors[:5]
    store = ComparisonStore(tmp_path / "s.jsonl")
    comps = store.load()
    assert store.errors == []
    per_item = Counter(c.item_id for c in comps)
    pairs = Counter((c.rater, c.item_id) for c in comps)
    assert max(pairs.values()) == 1, "a rater answered an item twice"
    assert max(per_item.values()) <= OVERLAP, "more raters than the overlap on an item"
    assert len({c.id for c in comps}) == len(comps)
    stored = {(c.rater, c.id) for c in comps}
    assert set(confirmed) <= stored, "a confirmed answer is missing"
    lat = sorted(latencies)
    figures = {"answers": len(comps), "confirmed": len(confirmed), "wall_s": round(wall, 2),
               "p50_ms": round(1000 * statistics.median(lat), 1),
               "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
               "answers_per_s": round(len(confirmed) / wall, 1)}
    if kill_after is not None:
        figures["killed_after_confirmed"] = killed_at
    print("\nload:", json.dumps(figures))
    return comps, confirmed, figures


@pytest.mark.slow
def test_50_raters_40_answers_each_none_lost_none_duplicated(tmp_path):
    comps, confirmed, _ = run_load(tmp_path)
    assert len(confirmed) == len(comps) == RATERS * EACH
    assert Counter(c.rater for c in comps) == {f"r{i:02d}": EACH for i in range(RATERS)}


@pytest.mark.slow
def test_server_sigkilled_mid_run_keeps_every_confirmed_answer(tmp_path):
    comps, confirmed, _ = run_load(tmp_path, kill_after=RATERS * EACH // 2)
    assert len(confirmed) == RATERS * EACH
    # an answer written but not confirmed when the server died may be there too, one at
    # most per rater (its rater moved on to the next pair after the restart)
    assert RATERS * EACH <= len(comps) <= RATERS * EACH + RATERS
