"""Soak of the rating server: N web raters answer real items over HTTP for T seconds against
one `rlhf serve` process on 127.0.0.1, then the store is checked against what was confirmed.

    python benchmarks/web_soak.py                          # 50 raters, 600 s
    python benchmarks/web_soak.py --raters 10 --seconds 5  # a quick look

Each rater is a thread with its own keep-alive connection (the standard library's
http.client): it fetches its item, answers it (compare: left/right/tie in turn; rank: a
rotation; rate: a value on the scale; correct: an edited text; every fifth with a note, every
eleventh a skip), waits a think time drawn around `--think` seconds, and goes on until the time
is up; a 409 (the lease ran out) fetches the item again. The queue mixes every kind of item and
holds more than the raters can answer at `--overlap` 2. The server runs in a subprocess; its
resident memory is read from /proc at the start of the load (after every rater got a first
item), every 10 s, and at the end.

Prints one JSON line: acknowledged (200 answers), stored (item answers in the store), lost
(acknowledged but not stored), doubled (an answer id stored twice, or a rater answering an
item twice), stored_unacknowledged, reconnects (keep-alive connections the server closed
while a rater thought), other statuses by code, server RSS (MB) at start, end and peak (and
of a fresh server on the store the load left (every rater served once, as at the start): the
server keeps the store's records and each rater's view of them in memory, so its RSS grows
with the answers; the end against the restart is what would show a leak), p50/p95 latency
of an answer (ms), answers per second, seconds and the CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.feedback.items import Item  # noqa: E402
from rlhf.feedback.queue import write_queue  # noqa: E402
from rlhf.feedback.store import ComparisonStore  # noqa: E402

SCALE = {"name": "likert5", "low": 1, "high": 5, "anchors": {"1": "bad", "5": "good"}}


def queue(path: Path, n: int) -> None:
    """n items mixing every kind, by i % 4: compare, rank 3, rate 1-5, correct."""
    items = []
    for i in range(n):
        p, kind = f"prompt {i}: say something useful", i % 4
        if kind == 0:
            items.append(Item(p, f"answer a{i}", f"answer b{i}", id=f"it{i}"))
        elif kind == 1:
            items.append(Item(p, f"a{i}", f"b{i}", id=f"it{i}", ask="rank", others=[f"c{i}"]))
        elif kind == 2:
            items.append(Item(p, f"r{i}", id=f"it{i}", ask="rate", scale=SCALE))
        else:
            items.append(Item(p, f"draft {i} with teh typo", id=f"it{i}", ask="correct"))
    write_queue(path, items)


def body_for(shown: dict, n: int) -> dict:
    """The n-th answer of a rater to the item `shown` (the page's payload)."""
    body: dict = {"nonce": shown["nonce"]}
    if n % 5 == 4:
        body["note"] = f"note {n}"
    ask = shown["ask"]
    if n % 11 == 10:
        body["choice"] = "skip"
    elif ask == "compare":
        body["choice"] = ("left", "right", "tie")[n % 3]
    elif ask == "rank":
        k = len(shown["responses"])
        body["places"] = [(j + n) % k + 1 for j in range(k)]
    elif ask == "rate":
        body["value"] = shown["scale"]["low"] + n % 5
    else:
        body["text"] = shown["prefill"].replace("teh", "the")
    return body


class Rater(threading.Thread):
    """One rater's loop (see the module docstring); results in its attributes."""

    def __init__(self, port: int, link: str, think: float, stop_at: float, seed: int):
        super().__init__(daemon=True)
        self.port, self.link, self.think, self.stop_at = port, link, think, stop_at
        self.rng = random.Random(seed)
        self.acked, self.latencies, self.statuses = [], [], Counter()
        self.started_load = threading.Event()

    def connect(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def call(self, action: str, body=None):
        """(status, JSON) of one API call; a keep-alive connection the server closed while
        the rater was thinking is opened again and the call sent once more, as a browser
        does (an answer sent twice is refused by its one-time nonce: 409, never stored
        twice)."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request("GET" if data is None else "POST",
                                  f"{self.link}/api/{action}", data,
                                  {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, json.loads(r.read())
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.conn.close()
                self.connect()
                self.statuses["reconnect"] += 1
                if attempt:
                    raise

    def run(self):
        self.connect()
        shown, n = None, 0
        while time.time() < self.stop_at:
            try:
                if shown is None:
                    status, shown = self.call("next")
                    self.started_load.set()
                    if status != 200 or shown["done"]:
                        self.statuses[f"next {status}"] += 1
                        return
                    if shown.get("waiting"):  # the rest is on others' screens: ask again
                        shown = None
                        time.sleep(min(3.0, max(0.0, self.stop_at - time.time())))
                        continue
                t0 = time.perf_counter()
                status, out = self.call("answer", body_for(shown, n))
                self.latencies.append(time.perf_counter() - t0)
                self.statuses[status] += 1
                if status == 200:
                    self.acked.append(out["id"])
                    shown, n = out["next"], n + 1
                    if shown["done"]:
                        return
                    if shown.get("waiting"):
                        shown = None
                else:
                    shown = None  # (409: fetch the item on screen again)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.statuses[type(e).__name__] += 1
                self.conn.close()
                self.connect()
                shown = None
            time.sleep(min(self.think * self.rng.uniform(0.5, 1.5),
                           max(0.0, self.stop_at - time.time())))
        self.conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(folder: Path, names: list[str], overlap: int, port: int = 0,
                 links: dict | None = None):
    """`rlhf serve` (on a free port unless `port`): (process, port, {name: link path}). On a
    restart the server prints each link as unchanged: `links` are the ones given before."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "serve", str(folder / "q.jsonl"), "--store",
         str(folder / "s.jsonl"), "--raters", ",".join(names), "--port", str(port),
         "--overlap", str(overlap), "--repeat-rate", "0"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    links, seen = dict(links or {}), set()
    for line in proc.stdout:
        if "/r/" in line:
            name, url = line.split()
            links[name] = "/r/" + url.split("/r/")[1]
            port = int(url.split(":")[2].split("/")[0])
            seen.add(name)
        elif "link unchanged" in line:
            seen.add(line.split()[0])
        if len(seen) == len(names):
            break
    if len(seen) != len(names):
        raise RuntimeError(f"the server did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port, links


def restart_rss(folder: Path, names: list[str], overlap: int, port: int, links: dict) -> float:
    """RSS (MB) of a fresh server on the store the load left, once every rater has fetched
    an item (as at the load's start): what the data alone costs, so that the load's end
    compared with it shows whether anything leaked."""
    proc, port, links = start_server(folder, names, overlap, port, links)
    try:
        for name in names:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", f"{links[name]}/api/next")
            conn.getresponse().read()
            conn.close()
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def check_store(path: Path, acked: list[str]) -> dict:
    store = ComparisonStore(path)
    answers = store.item_answers()
    ids = Counter(a.id for a in answers)
    pairs = Counter((a.rater, a.item_id) for a in answers)
    acked_set = set(acked)
    return {"acknowledged": len(acked), "stored": len(answers),
            "lost": len(acked_set - set(ids)),
            "doubled": sum(c - 1 for c in ids.values() if c > 1) + sum(
                c - 1 for c in pairs.values() if c > 1),
            "stored_unacknowledged": len(set(ids) - acked_set),
            "store_errors": len(store.errors)}


def soak(raters: int = 50, seconds: float = 600, think: float = 5.0, overlap: int = 2,
         seed: int = 0) -> dict:
    """Run the soak (see the module docstring); the figures as a dict."""
    names = [f"r{i:03d}" for i in range(raters)]
    items = int(raters * seconds / max(think, 0.05) / overlap * 1.5) + 4 * raters
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        queue(folder / "q.jsonl", items)
        proc, port, links = start_server(folder, names, overlap)
        try:
            t0 = time.time()
            stop_at = t0 + seconds
            threads = [Rater(port, links[n], think, stop_at, seed * 1000 + i)
                       for i, n in enumerate(names)]
            for t in threads:
                t.start()
            for t in threads:
                t.started_load.wait(timeout=max(1, stop_at - time.time()))
            rss = [rss_mb(proc.pid)]
            while any(t.is_alive() for t in threads) and time.time() < stop_at + 60:
                time.sleep(min(10, max(0.1, stop_at - time.time())))
                rss.append(rss_mb(proc.pid))
            for t in threads:
                t.join(timeout=max(1, stop_at + 60 - time.time()))
            wall = time.time() - t0
            rss.append(rss_mb(proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        acked = [i for t in threads for i in t.acked]
        out = check_store(folder / "s.jsonl", acked)
        restart = restart_rss(folder, names, overlap, port, links)
    lat = sorted(x for t in threads for x in t.latencies) or [float("nan")]
    statuses = sum((t.statuses for t in threads), Counter())
    out.update({
        "raters": raters, "seconds": seconds, "think_s": think, "items": items,
        "reconnects": statuses.pop("reconnect", 0),
        "other_statuses": {str(k): v for k, v in statuses.items() if k != 200},
        "rss_mb_start": round(rss[0], 1), "rss_mb_end": round(rss[-1], 1),
        "rss_mb_peak": round(max(rss), 1), "rss_growth": round(rss[-1] / rss[0] - 1, 3),
        "rss_mb_every_60s": [round(x, 1) for x in rss[::6]],
        "rss_mb_restart": round(restart, 1), "rss_end_vs_restart": round(rss[-1] / restart - 1, 3),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
        "answers_per_s": round(len(acked) / wall, 1), "wall_s": round(wall, 1),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raters", type=int, default=50)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--think", type=float, default=5.0,
                   help="mean seconds a rater waits between answers (people take longer)")
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not (1 <= a.raters <= 500 and 0 < a.seconds <= 3600 and 0 <= a.think <= 60):
        p.error("need 1 <= --raters <= 500, 0 < --seconds <= 3600, 0 <= --think <= 60")
    print(json.dumps(soak(a.raters, a.seconds, a.think, a.overlap, a.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
