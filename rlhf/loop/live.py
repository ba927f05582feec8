"""`mode: async`: raters keep answering while the loop trains (Christiano et al. 2017 ran
labelling and training asynchronously, for the same reason: people's time is the scarce part).

One rating server (`rlhf.raters.web_live.LiveServer`, a thread of the loop process) serves
one growing queue, `queue.jsonl` in the run folder, for the whole run. With `rater.kind:
human` there is no server: the loop prints one `rlhf rate` command for that queue, and
`rlhf rate` follows the queue's live state, `queue.live.json` (`rlhf.raters.live_queue`: the
newest policy version, which decides what is retired, and the run's end, written when this
loop stops). A sampler thread keeps `live.ahead` items unanswered ahead of the raters,
sampled from the newest policy there is (its own copy, read from the round's folder, so
training never shares a model with it); each item records the policy version that sampled
it (`meta.policy_version`: round v's policy, 0 the start; `meta.round` = v + 1, the round
that would have sampled it in lock-step). The newest items are served first. Items more than
`live.max_staleness` versions older than the newest policy are stale: with `live.stale:
retire` they are retired (kept in the queue file and their answers in the store, no longer
served); with `downweight` they are still served, and each round's snapshot carries the
weight of each stale answer (`live_stats.weigh_snapshot`). With `selection: disagreement`
the sampler draws `oversample` times the items it needs and keeps those the newest round's
reward-model ensemble disagrees on most (`rlhf.loop.active`; its own copy of that model too;
random before the first reward model).

The loop's steps stay those of `rlhf.loop.cycle`. In async mode, round r's `sample` step only
records which policy the queue is refilled from (round r-1's), and its `rate` step waits for
the cut: `live.answers_per_round` item answers appended to the store since round r-1's cut (or
`live.max_wait_seconds` since it, with at least one). The cut is the store's prefix up to a
line end, written as `round_RR/comparisons_used.jsonl` (what the reward model trains on:
every answer so far; with stale=downweight, the stale ones' `meta.weight` written in) and
then `round_RR/cut.json` (the store's length in bytes, the ids of the answers new in this
round, their staleness, the weights, the raters' busy and idle time), both
atomically, before the state says the step is done. An answer arriving after the cut, while
the round trains, is in the next round's slice of the store: never dropped, never in two
rounds. A restart after a kill finds the cuts already made in their files and keeps them; a
cut in the making is made again from the store, which holds every confirmed answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import sys
import threading
import time
from pathlib import Path

import torch

from rlhf.config import UserError
from rlhf.feedback.items import Item
from rlhf.feedback.pairs import draw_asks, sample_pairs
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.files import write_atomic
from rlhf.harness import distributed as dist
from rlhf.lm.folders import load_model
from rlhf.lm.generation import fit_prompts
from rlhf.loop.active import most_disputed
from rlhf.loop.config import LoopConfig
from rlhf.loop.folder import policy_path, read_json, reward_model_path, round_dir, write_json
from rlhf.loop.live_stats import answer_rows, rater_time, staleness, weigh_snapshot
from rlhf.prompts import load_prompts
from rlhf.raters.live_queue import LiveState, servable, write_state
from rlhf.raters.web import rater_names
from rlhf.raters.web_live import LiveServer
from rlhf.reward.model import is_reward_model, load_reward_model


def store_prefix(path: Path) -> bytes:
    """The store's whole lines now (read under its shared lock; an unfinished last line, a
    write in progress elsewhere, is left for later)."""
    if not path.is_file():
        return b""
    with open(path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        data = f.read()
    return data[:data.rfind(b"\n") + 1]


def cut_due(n_new: int, since: float, now: float, need: int, max_wait: float) -> str | None:
    """Why a round starts now ('answers': `need` new answers are in; 'time': `max_wait`
    seconds since the previous cut, with at least one), or None: not yet."""
    if n_new >= need:
        return "answers"
    if max_wait > 0 and n_new > 0 and now - since >= max_wait:
        return "time"
    return None


class LiveRounds:
    """The async mode's rating side for one run folder: started on the first step that needs
    it (the server and the sampler), closed at the end of the run (`live_rounds`)."""

    def __init__(self, cfg: LoopConfig, out: Path, device: torch.device):
        self.cfg, self.out, self.device = cfg, out, device
        self.queue, self.store_path = out / "queue.jsonl", out / "comparisons.jsonl"
        self.store = ComparisonStore(self.store_path)
        self.need = cfg.live.answers_per_round or cfg.pairs_per_round
        self.newest = -1
        self.items: list[Item] = []
        self.server: LiveServer | None = None
        self.policy: tuple | None = None  # (version, model, tokenizer, prompts): the sampler's
        self.judge: tuple | None = None  # (round, reward model, tokenizer): the sampler's
        self.lock = threading.Lock()  # held by the sampler while it changes the items
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.failed: BaseException | None = None
        self.sampler: threading.Thread | None = None
        self.started = time.time()
        self.started_live = False  # (the live state written: `close` marks its end)

    # ------------------------------------------------------------------ the loop's side

    def step(self, r: int, step: str, record: dict, stop) -> dict | None:
        """Round r's `sample` or `rate` step in async mode: the record so far, or None when
        `stop()` ended the wait for the cut."""
        self.start(r - 1)
        if step == "sample":
            return {"round": r, "pairs_from": policy_path(self.cfg, self.out, r - 1),
                    "mode": "async", "queue": "queue.jsonl"}
        cut = self.cut(r, stop)
        if cut is None:
            return None
        record["answers"] = cut["kinds"]
        record["live"] = {k: cut[k] for k in ("n_new", "n_total", "staleness", "weights",
                                              "raters", "reason", "waited_s", "store_bytes")
                          if k in cut}
        return record

    def policy_done(self, r: int) -> None:
        """Round r's policy is trained and saved: the sampler moves to it."""
        self.newest = max(self.newest, r)  # (read by the sampler at its next refill)
        self.wake.set()

    def start(self, newest: int) -> None:
        """The server and the sampler, once: the queue read back (or a first batch sampled,
        so that the page has something to show), the links printed."""
        if self.sampler is not None:
            return
        self.newest = max(self.newest, newest)
        self.items = read_queue(self.queue) if self.queue.is_file() else []
        if not self.left():
            self.refill()
        self.publish()  # the live state first: `rlhf rate` on the queue then waits for more
        if self.cfg.rater.kind == "web":
            kw = dict(max_note=self.cfg.rater.max_note_chars, seed=self.cfg.runtime.seed)
            self.server = LiveServer(self.queue, self.store_path, rater_names(
                self.cfg.rater.name or "rater", None), port=self.cfg.rater.port, **kw)
            print("\n".join(self.server.links), file=sys.stderr, flush=True)
            self.publish()
        else:  # people in terminals: one command, for the whole run
            print(rate_command(self.queue, self.store_path, self.cfg.rater.name),
                  file=sys.stderr, flush=True)
        self.started_live = True
        self.sampler = threading.Thread(target=self._run, daemon=True, name="sampler")
        self.sampler.start()

    def check(self) -> None:
        """Raise what stopped the sampler or the server, in the loop's thread."""
        if self.failed is not None:
            raise UserError(f"the async sampler failed: {type(self.failed).__name__}: "
                            f"{self.failed}") from self.failed
        if self.server is not None:
            self.server.check_alive()

    def close(self, ended: str = "finished") -> None:
        """The end of the run (`ended`: 'finished', or 'stopped' before its last round): the
        sampler stops, the page ends, and the live state tells `rlhf rate` to end."""
        self.stopping.set()
        self.wake.set()
        if self.sampler is not None:
            self.sampler.join(timeout=60)
        if self.server is not None:
            self.server.close()
        if self.started_live:
            with self.lock:
                write_state(self.queue, LiveState(self.newest, self.cfg.live.retire_after(),
                                                  ended))

    # ------------------------------------------------------------------ the cut

    def cut(self, r: int, stop) -> dict | None:
        """Round r's cut (see the module docstring): read back when made before, else made
        once enough answers are in; None when `stop()` asks to end the wait."""
        path = round_dir(self.out, r) / "cut.json"
        if path.is_file():
            return read_json(path)
        prev = read_json(round_dir(self.out, r - 1) / "cut.json", {}) if r > 1 else {}
        start, since = prev.get("store_bytes", 0), prev.get("at", self.started)
        waited = time.time()
        while True:
            self.check()
            data = store_prefix(self.store_path)
            new = answer_rows(data[start:])
            reason = cut_due(len(new), since, time.time(), self.need,
                             self.cfg.live.max_wait_seconds)
            if reason:
                break
            if stop is not None and stop():
                return None
            time.sleep(self.cfg.live.poll_seconds)
        ids = [row["id"] for row in new]
        kinds: dict[str, int] = {}
        for row in new:
            kind = row["type"] + ("_skipped" if row.get("skipped") or row.get("label") ==
                                  "skip" else "")
            kinds[kind] = kinds.get(kind, 0) + 1
        every = answer_rows(data)
        cut = {"round": r, "store_bytes": len(data), "answer_ids": ids, "n_new": len(ids),
               "n_total": len(every), "kinds": kinds, "reason": reason,
               "at": time.time(), "waited_s": round(time.time() - waited, 3),
               "staleness": staleness(new, r), "raters": rater_time(every, set(ids))}
        live = self.cfg.live
        if live.stale == "downweight":
            data, weights = weigh_snapshot(data, r, live.max_staleness, live.stale_weight)
            cut["weights"] = {"stale_weight": live.stale_weight, **weights}
        write_atomic(round_dir(self.out, r) / "comparisons_used.jsonl",
                     data.decode("utf-8", "replace"))
        write_json(path, cut)  # last: a cut is made once this file is there
        return cut

    # ------------------------------------------------------------------ the sampler

    def left(self) -> list[Item]:
        """Items within `live.max_staleness` nobody has answered yet: the margin (a skip
        counts: the others still get the item, but it no longer holds the margin). Stale
        items still served (stale=downweight) do not hold it: the raters get fresh ones."""
        answered = {a.item_id for a in self.store.item_answers()}
        return [it for it in servable(self.items, self.newest, self.cfg.live.max_staleness)
                if it.id not in answered]

    def refill(self) -> bool:
        """Sample what the margin lacks from the newest policy (with selection=disagreement
        and a reward model trained, the most disputed of `oversample` times as many) and
        append it to the queue file (atomically); True when something was added."""
        need = self.cfg.live.ahead - len(self.left())
        if need <= 0:
            return False
        v = self.newest
        if self.policy is None or self.policy[0] != v:
            model, tok = load_model(policy_path(self.cfg, self.out, v))
            pool = fit_prompts(load_prompts(str(self.out / "prompts_train.jsonl")), tok,
                               model.args.max_seq_len, self.cfg.sampling, "training prompts")
            self.policy = (v, model, tok, pool)
        judge = self.newest_judge(v)
        n = need * (self.cfg.oversample if judge else 1)
        batch = len({it.meta.get("batch") for it in self.items})
        seed = self.cfg.runtime.seed * 1_000_003 + batch
        pool = self.policy[3]
        rng = random.Random(seed)
        prompts = [pool[rng.randrange(len(pool))] for _ in range(n)]
        gen = torch.Generator(device=self.device).manual_seed(seed)
        model = self.policy[1].to(self.device).eval()
        with torch.no_grad():
            items = sample_pairs(model, self.policy[2], prompts, self.cfg.sampling, gen,
                                 source={"model": policy_path(self.cfg, self.out, v),
                                         "round": v},
                                 asks=draw_asks(n, self.cfg.mix.weights(), seed),
                                 rank_k=self.cfg.rank_k, scale=self.cfg.scale.as_item_scale(),
                                 rate_k=self.cfg.rate_k)
            if judge:
                items = most_disputed(items, need, *judge)
        for it in items:
            it.meta.update(round=v + 1, policy_version=v, batch=batch)
        self.items = self.items + items
        write_queue(self.queue, self.items)
        return True

    def newest_judge(self, v: int) -> tuple | None:
        """selection=disagreement: (reward model, tokenizer) of round v, the newest policy's
        (a round's reward model is trained before its policy), the sampler's own copy read
        from its folder; None with selection=random or before one exists (v = 0)."""
        path = reward_model_path(self.out, v)
        if self.cfg.selection != "disagreement" or v < 1 or not is_reward_model(path):
            return None
        if self.judge is None or self.judge[0] != v:
            self.judge = (v, *load_reward_model(path))
        return self.judge[1].to(self.device).eval(), self.judge[2]

    def publish(self) -> None:
        """Hand the server what to serve now, and write the queue's live state (the newest
        policy version: what `rlhf rate` serves from the queue file, by the same rule)."""
        write_state(self.queue, LiveState(self.newest, self.cfg.live.retire_after()))
        if self.server is not None:
            self.server.set_items(servable(self.items, self.newest,
                                           self.cfg.live.retire_after()), self.items)

    def _run(self) -> None:
        """The sampler thread: refill and publish whenever woken (a new policy) or every
        `live.poll_seconds`; an error stops it and is raised in the loop (`check`)."""
        shown = self.newest
        while not self.stopping.is_set():
            try:
                with self.lock:
                    changed = self.refill() or shown != self.newest
                    shown = self.newest
                    if changed:
                        self.publish()
            except BaseException as e:  # noqa: BLE001 - raised again in the loop's thread
                self.failed = e
                return
            self.wake.wait(self.cfg.live.poll_seconds)
            self.wake.clear()


def rate_command(queue: Path, store: Path, name: str = "") -> str:
    """What the loop prints for people rating in terminals (`rater.kind: human`)."""
    return (f"Rate while the loop trains (each rater with their own name; it waits for new "
            f"items and ends when the run ends):\n  rlhf rate {queue} --store {store} "
            f"--rater {name or 'YOUR_NAME'}")


@contextlib.contextmanager
def live_rounds(cfg: LoopConfig, info: dist.DistInfo, out: Path):
    """A `LiveRounds` for an async run (None in lock-step mode), closed when the run ends."""
    if cfg.mode != "async":
        yield None
        return
    if info.enabled:
        raise UserError("mode=async runs in one process (the rating server and the sampler "
                        "are the loop's threads): run it without torchrun")
    live = LiveRounds(cfg, out, info.device)
    try:
        yield live
    except BaseException:
        live.close("stopped")
        raise
    live.close("finished")

