"""Simulated raters on the rating page, at a human pace: for measuring and testing the loop's
two modes (lock-step and async) with raters who answer over HTTP, as people's browsers do.

A `PacedRater` asks the page's API for its next item (`GET /r/TOKEN/api/next`), looks at it
for a delay drawn from a log-normal distribution (`Pace`: people's answer times are skewed,
with a long tail), then answers it (`POST .../answer`), the answer decided by a
`SimulatedRater` (`raters.simulated`: its scorer, noise and choice rule, on the item as the
page shows it, in screen order). With nothing to answer (the page's "waiting", "done", or no
server: a lock-step round training, a loop restarting) it asks again every `poll_seconds`,
and that time is its idle time. Every answer the server confirmed is kept by its id
(`acked`), so a test can check that each is in the store exactly once.

`links(store, names)` makes the raters' links the way `rlhf serve` keeps them (a new token per
name, its hash beside the store), before the server starts: the server then finds them and
says each link is unchanged. `python -m rlhf.raters.paced` runs paced raters from the command
line (`--help`); start them before the loop, which then serves their links.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.feedback.items import Item
from rlhf.raters.simulated import Judgement, SimulatedRater
from rlhf.raters.web_tokens import rater_tokens


@dataclass
class Pace:
    """How long a simulated rater takes per answer: log-normal, `median_seconds` times
    exp(sigma * N(0, 1)), all of it times `time_scale` (0.01: a hundred times faster, for
    tests and benchmarks that should take minutes)."""

    median_seconds: float = 20.0
    """The median time per answer of a person (seconds, before `time_scale`)."""
    sigma: float = 0.5
    """The log-normal's shape: 0.5 puts the middle 50% of answers within 0.71x to 1.4x of
    the median, with a tail of slow ones."""
    time_scale: float = 1.0
    """Every delay (and the idle polling) multiplied by this."""

    def draw(self, rng: random.Random) -> float:
        return self.time_scale * self.median_seconds * math.exp(self.sigma * rng.gauss(0, 1))


def screen_item(shown: dict) -> Item:
    """The item as the page shows it (responses in screen order) from the API's payload."""
    prompt = "\n".join(t["text"] for t in shown.get("prompt", []))
    texts, ask = list(shown["responses"]), shown["ask"]
    if ask == "compare":
        return Item(prompt, texts[0], texts[1])
    if ask == "rank":
        return Item(prompt, texts[0], texts[1], ask="rank", others=texts[2:])
    if ask == "rate":
        sc = shown["scale"]
        return Item(prompt, texts[0], ask="rate", scale={
            "name": sc["name"], "low": sc["low"], "high": sc["high"],
            "anchors": sc.get("anchors", {})})
    return Item(prompt, shown.get("prefill", texts[0]), ask="correct")


def answer_body(j: Judgement, nonce: str) -> dict:
    """The API's answer for judgement `j` of a `screen_item` (a = left, b = right; places in
    shown order; a correction no edit improves is a skip)."""
    body: dict = {"nonce": nonce}
    if j.ask == "compare":
        body["choice"] = {"a": "left", "b": "right"}.get(j.label, j.label)
    elif j.ask == "rank":
        body["places"] = list(j.ranks)
    elif j.ask == "rate":
        body["value"] = j.value
    elif j.corrected is None:
        body["choice"] = "skip"
    else:
        body["text"] = j.corrected
    return body


@dataclass
class RaterLog:
    """What a paced rater did: the ids of its confirmed answers, time with an item on screen
    (busy) and without (idle, from its first item on), refused or failed requests."""

    acked: list[str] = field(default_factory=list)
    busy_s: float = 0.0
    idle_s: float = 0.0
    errors: int = 0
    first_item_at: float | None = None


class PacedRater:
    """One simulated rater behind link `base/r/token` (see the module docstring)."""

    def __init__(self, host: str, port: int, token: str, name: str, scorer: str = "vader",
                 seed: int = 0, pace: Pace | None = None, poll_seconds: float = 0.5,
                 temperature: float | None = None, tie_band: float | None = None):
        self.host, self.port, self.token = host, port, token
        self.judge = SimulatedRater(scorer, seed, temperature, tie_band, name=name)
        self.pace = pace or Pace()
        self.rng = random.Random(f"pace {seed} {name}")
        self.poll = poll_seconds
        self.log = RaterLog()
        self.conn: http.client.HTTPConnection | None = None

    def call(self, action: str, body: dict | None = None) -> tuple[int, dict] | None:
        """(status, JSON answer) of one API call; None when there is no server."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            data = None if body is None else json.dumps(body).encode()
            self.conn.request("GET" if body is None else "POST",
                              f"/r/{self.token}/api/{action}", body=data,
                              headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        except (OSError, http.client.HTTPException, ValueError):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None

    def run(self, stop: threading.Event) -> RaterLog:
        """Answer until `stop` is set."""
        shown: dict | None = None
        idle_from = None
        while not stop.is_set():
            if shown is None or "nonce" not in shown:
                got = self.call("next")
                shown = got[1] if got and got[0] == 200 else None
                if shown is None or "nonce" not in shown:  # nothing to answer: wait
                    idle_from = idle_from or time.time()
                    stop.wait(self.poll)
                    continue
            now = time.time()
            if self.log.first_item_at is None:
                self.log.first_item_at = now
            elif idle_from is not None:
                self.log.idle_s += now - idle_from
            idle_from = None
            delay = self.pace.draw(self.rng)
            if stop.wait(delay):
                break
            self.log.busy_s += delay
            judged = self.judge.judge(screen_item(shown))
            got = self.call("answer", answer_body(judged, shown["nonce"]))
            idle_from = time.time()
            if got is not None and got[0] == 200:
                self.log.acked.append(got[1]["id"])
                shown = got[1].get("next")
            else:  # refused, gone from the screen, no server: ask again
                self.log.errors += 1
                shown = None
        if idle_from is not None and self.log.first_item_at is not None:
            self.log.idle_s += time.time() - idle_from
        if self.conn is not None:
            self.conn.close()
        return self.log


def links(store_path: str | Path, names: list[str]) -> dict[str, str]:
    """{name: token}: a new link for each rater of `store_path` (hashes kept beside it, as
    `rlhf serve --new-link` does), made before the server starts."""
    return rater_tokens(Path(str(store_path) + ".raters.json"), names, renew=names)[1]


class PacedCrowd:
    """`n` paced raters named sim-1..sim-n in threads, each with its own seed; `stop()` ends
    them and returns their logs."""

    def __init__(self, store_path: str | Path, n: int, port: int, host: str = "127.0.0.1",
                 scorer: str = "vader", seed: int = 0, pace: Pace | None = None,
                 poll_seconds: float | None = None):
        self.names = [f"sim-{i + 1}" for i in range(n)]
        tokens = links(store_path, self.names)
        pace = pace or Pace()
        poll = poll_seconds if poll_seconds is not None else max(0.05, pace.time_scale)
        self.raters = [PacedRater(host, port, tokens[name], name, scorer, seed * 100 + i,
                                  pace, poll) for i, name in enumerate(self.names)]
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=r.run, args=(self.halt,), daemon=True,
                                         name=r.judge.name) for r in self.raters]

    @property
    def rater_names(self) -> str:
        """The names as `rater.name` takes them."""
        return ",".join(self.names)

    def start(self) -> PacedCrowd:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> dict[str, RaterLog]:
        self.halt.set()
        for t in self.threads:
            t.join(timeout=60)
        return {r.judge.name: r.log for r in self.raters}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlhf.raters.paced", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="the store the server writes (a loop's: "
                   "RUN/comparisons.jsonl)")
    p.add_argument("-n", type=int, default=8, help="raters (named sim-1..sim-N)")
    p.add_argument("--port", type=int, default=8765, help="the server's port (127.0.0.1)")
    p.add_argument("--scorer", default="vader", help="the raters' scorer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--median", type=float, default=20.0, help="median seconds per answer")
    p.add_argument("--sigma", type=float, default=0.5, help="log-normal shape")
    p.add_argument("--time-scale", type=float, default=1.0, help="every delay times this")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    a = p.parse_args(argv)
    crowd = PacedCrowd(a.store, a.n, a.port, scorer=a.scorer, seed=a.seed,
                       pace=Pace(a.median, a.sigma, a.time_scale))
    print(f"raters: rater.name={crowd.rater_names} (start the loop or `rlhf serve` with "
          "these names now)", flush=True)
    crowd.start()
    try:
        time.sleep(a.seconds) if a.seconds > 0 else threading.Event().wait()
    except KeyboardInterrupt:
        pass
    logs = crowd.stop()
    print(json.dumps({n: {"answers": len(g.acked), "busy_s": round(g.busy_s, 1),
                          "idle_s": round(g.idle_s, 1)} for n, g in logs.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
