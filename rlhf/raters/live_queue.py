"""A queue that grows while it is rated (the loop's `mode: async`), seen from the rater's side.

The loop (`rlhf.loop.live`) appends items to the run's `queue.jsonl` as its sampler refills it
and writes, beside it, the queue's live state `queue.live.json` (atomically, at each change):

    {"newest": 2, "max_staleness": 1, "ended": null}

`newest` is the newest policy version, `max_staleness` the config's `live.max_staleness`, and
`ended` says whether the loop has stopped: null while it runs, "finished" once its last round
is done, "stopped" when it stopped before (an error, Ctrl-C; a restart writes null again). A
kill -9 writes nothing: raters keep waiting and carry on when the loop is started again.

Which items are served is `servable` below, one rule for the rating page (`rlhf.raters.web_live`,
handed them by the loop) and for `rlhf rate` on a live queue (`LiveQueue`, which re-reads both
files as they change, validating the queue as `read_queue` always does).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from rlhf.feedback.datafiles import decode
from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import RecordError
from rlhf.files import write_atomic

ENDED = (None, "finished", "stopped")


def servable(items: list[Item], newest: int, max_staleness: int) -> list[Item]:
    """The items to serve when `newest` is the newest policy version: those sampled at most
    `max_staleness` versions before it (`meta.policy_version`, 0 when absent), the newest
    versions first (queue order within one); the older ones are retired."""
    fresh = [it for it in items if newest - it.meta.get("policy_version", 0) <= max_staleness]
    return sorted(fresh, key=lambda it: -it.meta.get("policy_version", 0))  # (stable)


def state_path(queue: str | os.PathLike) -> Path:
    """Where a live queue's state is: `queue.jsonl` -> `queue.live.json`."""
    return Path(queue).with_suffix(".live.json")


@dataclass(frozen=True)
class LiveState:
    newest: int
    """The newest policy version (items older by more than `max_staleness` are retired)."""
    max_staleness: int
    """The loop's `live.max_staleness`."""
    ended: str | None = None
    """None while the loop runs; 'finished' or 'stopped' once it no longer does."""


def write_state(queue: str | os.PathLike, state: LiveState) -> None:
    """The loop's side: `state` next to `queue`, atomically."""
    write_atomic(state_path(queue), json.dumps(
        {"newest": state.newest, "max_staleness": state.max_staleness,
         "ended": state.ended}) + "\n")


def read_state(queue: str | os.PathLike) -> LiveState | None:
    """The state next to `queue` (None: not a live queue). A malformed file raises
    RecordError naming the file and the key."""
    p = state_path(queue)
    if not p.is_file():
        return None
    try:
        d = json.loads(decode(p.read_bytes(), p))
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise RecordError(f"{p}: must be a JSON object")
    for key in ("newest", "max_staleness"):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (-1 if key == "newest" else 0):
            raise RecordError(f"{p}: key {key!r}: must be a whole number "
                              f"{'>= -1' if key == 'newest' else '>= 0'}, got {v!r}")
    if d.get("ended") not in ENDED:
        raise RecordError(f"{p}: key 'ended': must be null, 'finished' or 'stopped', got "
                          f"{d.get('ended')!r}")
    return LiveState(d["newest"], d["max_staleness"], d.get("ended"))


class LiveQueue:
    """`rlhf rate`'s view of a live queue: `update(session)` re-reads the queue file when it
    changed and the state, and hands the session what to serve now (the servable items, and
    every item ever in the queue, so that answers to retired items stay the rater's), as the
    loop does for the rating page."""

    def __init__(self, queue: str | os.PathLike):
        self.queue = Path(queue)
        self.items: list[Item] = []
        self.state: LiveState | None = read_state(self.queue)
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the queue read last

    @property
    def ended(self) -> str | None:
        """'finished' / 'stopped' once the loop no longer runs (or the state is gone)."""
        return "finished" if self.state is None else self.state.ended

    def update(self, session) -> None:
        """Re-read what changed and set `session.items` / `session.by_id` (a RecordError
        when the queue or the state is malformed)."""
        st = self.queue.stat()
        if (st.st_size, st.st_mtime_ns) != self._seen:
            self.items = read_queue(self.queue)
            self._seen = (st.st_size, st.st_mtime_ns)
        self.state = read_state(self.queue)
        newest = max((it.meta.get("policy_version", 0) for it in self.items), default=0)
        if self.state is not None:
            newest = self.state.newest
        session.items = servable(self.items, newest, self.max_staleness)
        session.by_id = {it.id: it for it in self.items}

    @property
    def max_staleness(self) -> int:
        return self.state.max_staleness if self.state is not None else 1 << 30
