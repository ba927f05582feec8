"""The comparison store: an append-only JSON-lines file that never loses a confirmed answer.

Why JSON lines (and not SQLite):
- append-only by construction: an answer is one line added at the end; nothing is ever
  rewritten, so a crash can at worst leave one *unfinished trailing line*, never damage an
  earlier answer. Undo is itself an appended record (a retraction), not an edit.
- durable on return: each record is written with a single `os.write` on an `O_APPEND` file
  descriptor, then `fsync`ed before `append` returns, so an answer the rater saw confirmed
  survives a SIGKILL or a power cut.
- safe for several writers: every write (and undo's read-then-write) holds an exclusive
  `fcntl.flock` on the file, and readers a shared one, so two raters' lines never interleave,
  a reader never sees half a line, and an undo sees every answer written before it. (flock
  is for one machine's file system; raters on several machines need a shared server.)
- durable file creation: the folder is fsynced when the store file is created.
- readable and exchangeable: `grep`, `jq`, `pandas.read_json(lines=True)` and a text editor
  all work; a damaged line is reported as `file:line` and every other line is still loaded.
SQLite would give the same durability with WAL, but not the plain-text review, diff and
line-level error reports that a record of human labour benefits from; the store is small
(thousands of lines), so reading it whole is cheap.

Values JSON cannot hold (a `Path` in a provenance dict) are stored as text.

Record types, one JSON object per line:
- a comparison: `{"type": "comparison", ...Comparison fields}`;
- a retraction: `{"type": "retract", "id": <comparison id>, "rater": ..., "at": <unix time>}`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import warnings
from pathlib import Path

from rlhf.feedback.comparisons import Comparison, RecordError


class StoreWarning(UserWarning):
    """A malformed line was skipped while loading a store (the message says where)."""


class ComparisonStore:
    """An append-only JSONL file of comparisons (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.errors: list[str] = []
        """`file:line: message` for each malformed line met by the last `load`."""

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self):
        """An O_APPEND descriptor holding the exclusive lock; unlocked and closed on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:  # make the new file's directory entry durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, fd: int, records: list[dict]) -> None:
        """One write of whole lines, then fsync. The caller holds the lock."""
        line = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        size = os.fstat(fd).st_size
        if size:  # a crash may have left a half line: start ours on a fresh line
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        data = memoryview(line.encode("utf-8"))
        while data:  # one write for a record; a loop only for very large imports
            data = data[os.write(fd, data):]
        os.fsync(fd)

    def append(self, comparison: Comparison) -> None:
        """Add one answer; it is on disk (fsynced) when this returns."""
        comparison.check()
        with self._locked() as fd:
            self._write(fd, [{"type": "comparison", **comparison.to_dict()}])

    def extend(self, comparisons: list[Comparison]) -> None:
        """Add many answers under one lock (imports); durable on return."""
        for c in comparisons:
            c.check()
        with self._locked() as fd:
            if comparisons:
                self._write(fd, [{"type": "comparison", **c.to_dict()} for c in comparisons])

    def undo_last(self, rater: str) -> Comparison | None:
        """Retract `rater`'s most recent live answer (appends a retraction); None if none."""
        with self._locked() as fd:
            live = [c for c in self.load(_locked=True) if c.rater == rater]
            if not live:
                return None
            last = live[-1]
            self._write(fd, [{"type": "retract", "id": last.id, "rater": rater,
                              "at": time.time()}])
            return last

    # ------------------------------------------------------------------ reading

    def records(self, _locked: bool = False) -> list[tuple[int, dict]]:
        """(line number, record) of every well-formed line; problems go to `.errors`.
        Reads under a shared lock, so a line being written is never seen half-way."""
        self.errors = []
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            if not _locked:  # (undo_last already holds the exclusive lock)
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            lines = f.readlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise RecordError("expected a JSON object")
                if rec.get("type") not in ("comparison", "retract"):
                    raise RecordError(f"unknown record type {rec.get('type')!r}")
                if rec["type"] == "retract" and "id" not in rec:
                    raise RecordError("retraction without 'id'")
                out.append((n, rec))
            except (ValueError, RecordError) as e:
                self._error(n, e)
        return out

    def _error(self, n: int, e: Exception) -> None:
        msg = f"{self.path}:{n}: {e}"
        self.errors.append(msg)
        warnings.warn(msg, StoreWarning, stacklevel=3)

    def load(self, _locked: bool = False) -> list[Comparison]:
        """Every live comparison in the order written (retracted ones left out).

        A malformed line is reported (`.errors`, and a `StoreWarning`) and skipped; every
        good line is still returned."""
        comps: list[Comparison] = []
        retracted: set[str] = set()
        for n, rec in self.records(_locked):
            if rec["type"] == "retract":
                retracted.add(rec["id"])
                continue
            fields = {k: v for k, v in rec.items() if k != "type"}
            try:
                comps.append(Comparison.from_dict(fields))
            except (RecordError, TypeError) as e:
                self._error(n, e)
        self.errors.sort(key=lambda e: int(e[len(str(self.path)) + 1:].split(":", 1)[0]))
        return [c for c in comps if c.id not in retracted]

    def answered_item_ids(self, rater: str) -> set[str]:
        """Items `rater` has a live answer to (skips included: they are answers too)."""
        return {c.item_id for c in self.load() if c.rater == rater}
