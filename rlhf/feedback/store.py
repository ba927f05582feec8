"""The feedback store: an append-only JSON-lines file that never loses a confirmed answer.

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

Record types, one JSON object per line (`rlhf.feedback.records` says what each holds):
- an answer: `{"type": "comparison" | "ranking" | "rating" | "correction" | "note",
  "schema": 2, ...fields}`; lines without `schema` are schema 1 (read unchanged);
- a retraction: `{"type": "retract", "id": <answer id>, "rater": ..., "at": <unix time>}`;
  a revision is a retraction and the new comparison (`meta.revises` = the old id) in one write;
- a line of a type this version does not know is kept (`answers()` returns it as `Unknown`),
  never reported as damage, never dropped.
An answer and the note written with it go in one write; undo retracts both.

Assignment (one rule for the terminal and the web page, across processes): `claim` picks the
item a rater sees next under the store's exclusive lock and *leases* it to them until an expiry
(kept in `STORE.leases`, a small JSON file rewritten under the same lock). An item counts
towards `overlap` for each rater with a non-skip answer and each other rater holding a live
lease; a skip therefore hands the item back to the others (a lease ends with its holder's
answer to the item, a skip included). A rater's own lease is given back to them first (a
reloaded page shows the same pair).

Reading is incremental: the lines already parsed are kept, and a later `load` reads only what
was appended since (the file's identity and the bytes before the offset are checked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import warnings
from pathlib import Path

from rlhf.config import UserError
from rlhf.feedback.records import (
    Answer,
    Comparison,
    Note,
    RecordError,
    Unknown,
    as_line,
    item_answers,
    parse_record,
)
from rlhf.harness.progress import advance


class StoreError(UserError):
    """The store cannot be written (a missing permission, a full disk)."""


class StoreWarning(UserWarning):
    """A malformed line was skipped while loading a store (the message says where)."""


class ComparisonStore:
    """An append-only JSONL file of comparisons (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.errors: list[str] = []
        """`file:line: message` for each malformed line met by the last `load`."""
        self.leases_path = self.path.with_name(self.path.name + ".leases")
        self._cache: dict = {}
        self._mutex = threading.Lock()  # the parse cache, when threads share a store
        self.lease_problem: str | None = None
        """Why the last write of the leases file failed (None: it did not; `_save_leases`)."""

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
        try:
            while data:  # one write for a record; a loop only for very large imports
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as e:  # a full disk: nothing confirmed; a part line written is cut
            with contextlib.suppress(OSError):  # (we hold the lock: those bytes are ours;
                os.ftruncate(fd, size)  # should this fail too, `repair` moves them aside)
            raise StoreError(f"could not write to {self.path}: {e.strerror or e}; the answer "
                             "was not saved") from None

    def append(self, record: Answer) -> None:
        """Add one answer (of any kind); it is on disk (fsynced) when this returns."""
        self.extend([record])

    def extend(self, records: list[Answer]) -> None:
        """Add many answers in one write under one lock (an answer and its note; imports);
        durable on return: all of them or, after a crash, none."""
        for r in records:
            if not isinstance(r, Unknown):
                r.check()
        with self._locked() as fd:
            if records:
                self._write(fd, [as_line(r) for r in records])

    def extend_all_or_none(self, records: list[Answer], what: str = "records") -> None:
        """`extend` for an import: every record or none. A failed write (a full disk) is cut
        back to the store's previous length (`_write`); the StoreError says so in an import's
        words (and how many bytes are left, should the cut have failed)."""
        for r in records:
            if not isinstance(r, Unknown):
                r.check()
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            try:
                lines = []
                for r in records:  # each reported to the caller's open Progress, if any
                    lines.append(as_line(r))
                    advance()
                if records:
                    self._write(fd, lines)
            except StoreError as e:
                why = getattr(e.__context__, "strerror", None) or "the write failed"
                left = os.fstat(fd).st_size - size
                raise StoreError(
                    f"could not write to {self.path}: {why}; none of the {len(records)} "
                    f"{what} was imported" + (f" ({left} bytes of it remain at its end; "
                    "`rlhf rate` moves them aside)" if left > 0 else "; the store is as it was")
                ) from None

    def undo_last(self, rater: str, lease_seconds: float = 0) -> Answer | None:
        """Retract `rater`'s most recent live answer and the notes about it (appends
        retractions); None if none. A note standing alone is not an answer to undo.
        With `lease_seconds`, the item is leased back to the rater in the same lock (so that
        it is theirs to answer again)."""
        with self._locked() as fd:
            answers = self.answers(_locked=True)
            live = [a for a in self.item_answers(_locked=True) if a.rater == rater]
            if not live:
                return None
            last = live[-1]
            ids = [last.id] + [a.id for a in answers if isinstance(a, Note)
                               and a.about == last.id]
            self._write(fd, [{"type": "retract", "id": i, "rater": rater, "at": time.time()}
                             for i in ids])
            if lease_seconds and last.repeat_of is None:
                leases = self._leases()
                for rs in leases.values():  # one lease per rater at a time
                    rs.pop(rater, None)
                leases.setdefault(last.item_id, {})[rater] = time.time() + lease_seconds
                self._save_leases(leases)
            return last

    def revise(self, old_id: str, new: Comparison, notes: list[Note] = ()) -> Comparison:
        """Supersede the live answer `old_id` of `new.rater` by `new`: retractions of the old
        answer and of its notes, the new record (`meta.revises` = old id) and `notes` (about
        the new one) in one write, durable on return. Never an edit."""
        new.check()
        for n in notes:
            n.check()
        with self._locked() as fd:
            answers = self.answers(_locked=True)
            old = next((c for c in answers if isinstance(c, Comparison) and c.id == old_id),
                       None)
            if old is None or old.rater != new.rater:
                raise RecordError(f"no live answer {old_id!r} of rater {new.rater!r}")
            new.meta = {**new.meta, "revises": old_id}
            gone = [old_id] + [n.id for n in answers if isinstance(n, Note) and n.about == old_id]
            self._write(fd, [{"type": "retract", "id": i, "rater": new.rater, "at": time.time(),
                              "why": "revised"} for i in gone]
                        + [as_line(new)] + [as_line(n) for n in notes])
        return old

    def check_writable(self) -> None:
        """Raise StoreError (one line) unless an answer could be written now: the folder
        exists or can be made, and the file opens for appending."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                pass
            if os.statvfs(self.path.parent).f_bavail * os.statvfs(self.path.parent).f_frsize \
                    < 1 << 20:
                raise OSError("less than 1 MiB free on its disk")
        except OSError as e:
            raise StoreError(f"store {self.path} is not writable: "
                             f"{e.strerror or e}") from None

    def repair(self) -> str | None:
        """Move an unfinished last line (a crash or a full disk mid-write) aside to
        `STORE.partial-<time>` and cut it from the store; returns a one-line report, or None
        when the store ends cleanly. Whole lines are never touched."""
        if not self.path.exists():
            return None
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            with open(self.path, "rb") as f:
                f.seek(max(0, size - (1 << 20)))
                tail = f.read()
            if not tail or tail.endswith(b"\n"):
                return None
            cut = tail.rfind(b"\n") + 1
            if cut == 0 and size > len(tail):
                return None  # a single line longer than 1 MiB: leave it to `load` to report
            aside = self.path.with_name(f"{self.path.name}.partial-{int(time.time())}")
            aside.write_bytes(tail[cut:])
            os.truncate(self.path, size - len(tail) + cut)
            os.fsync(fd)
            self._cache = {}
        return (f"{self.path}: an unfinished last line ({len(tail) - cut} bytes) was moved "
                f"to {aside.name}")

    # ------------------------------------------------------------------ assignment

    def _leases(self) -> dict[str, dict[str, float]]:
        """{item_id: {rater: expiry}} of live leases (the caller holds the lock)."""
        try:
            raw = json.loads(self.leases_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        now = time.time()
        return {i: {r: t for r, t in rs.items() if t > now} for i, rs in raw.items()
                if isinstance(rs, dict)}

    def _save_leases(self, leases: dict) -> None:
        """Rewrite the leases file (the caller holds the lock). A failure (a full disk) goes
        to `lease_problem`, never raised: the answers are safe, and a lease not saved only
        lets an item reach one rater more than `overlap` asks. No temporary file is left."""
        tmp = self.leases_path.with_name(self.leases_path.name + f".{os.getpid()}.tmp")
        data = json.dumps({i: rs for i, rs in leases.items() if rs}).encode("utf-8")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, self.leases_path)
            self.lease_problem = None
        except OSError as e:
            self.lease_problem = (f"the assignment leases could not be saved to "
                                  f"{self.leases_path.name}: {e.strerror or e}")
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def claim(self, rater: str, item_ids: list[str], overlap: int = 1,
              lease_seconds: float = 900.0) -> str | None:
        """The item `rater` should see next, leased to them (see the module docstring);
        None when every item has its `overlap` raters or was answered by this rater."""
        with self._locked():
            comps = self.item_answers(_locked=True)
            mine = {c.item_id for c in comps if c.rater == rater}
            answered = {(c.item_id, c.rater) for c in comps}  # a lease on these is spent
            counted: dict[str, set[str]] = {}
            for c in comps:
                if not c.skip and c.repeat_of is None:
                    counted.setdefault(c.item_id, set()).add(c.rater)
            leases = {i: {r: t for r, t in rs.items() if (i, r) not in answered}
                      for i, rs in self._leases().items()}
            chosen = None
            for i, rs in leases.items():  # the rater's own lease first
                if rater in rs and i not in mine and i in item_ids:
                    chosen = i
                    break
            if chosen is None:
                for i in item_ids:
                    holders = counted.get(i, set()) | {
                        r for r, _ in leases.get(i, {}).items() if r != rater}
                    if i not in mine and len(holders) < overlap:
                        chosen = i
                        break
            for rs in leases.values():  # one lease per rater at a time
                rs.pop(rater, None)
            if chosen is not None:
                leases.setdefault(chosen, {})[rater] = time.time() + lease_seconds
            self._save_leases(leases)
            return chosen

    # ------------------------------------------------------------------ reading

    def records(self, _locked: bool = False) -> list[tuple[int, dict]]:
        """(line number, record) of every well-formed line; problems go to `.errors`.
        Reads under a shared lock, so a line being written is never seen half-way."""
        return [(n, rec) for n, rec, _ in self._parsed(_locked)]

    def _parsed(self, _locked: bool = False) -> list[tuple[int, dict, Answer | None]]:
        """(line, record, parsed answer or None for a retraction) of every good line, read
        incrementally."""
        self.errors = []
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            if not _locked:  # (undo_last and claim already hold the exclusive lock)
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            with self._mutex:  # always after the file lock: threads never deadlock
                rows, errors = self._read_new(f)
        for msg in errors:
            self.errors.append(msg)
            warnings.warn(msg, StoreWarning, stacklevel=3)
        return rows

    def _read_new(self, f) -> tuple[list, list[str]]:
        """Parse what was appended since the last read (the caller holds the locks)."""
        st = os.fstat(f.fileno())
        c = self._cache
        if c.get("file") == (st.st_dev, st.st_ino) and st.st_size >= c["offset"]:
            f.seek(max(0, c["offset"] - 64))
            if f.read(min(64, c["offset"])) != c["tail"]:
                c = {}
        else:
            c = {}
        if not c:
            c = {"file": (st.st_dev, st.st_ino), "offset": 0, "tail": b"", "n": 0,
                 "rows": [], "errors": []}
        f.seek(c["offset"])
        data = f.read()
        whole = data.rfind(b"\n") + 1
        rows, errors, n = c["rows"], c["errors"], c["n"]
        for raw in data[:whole].split(b"\n")[:-1]:
            n += 1
            self._parse_line(n, raw, rows, errors)
        c.update(offset=c["offset"] + whole, n=n)
        f.seek(max(0, c["offset"] - 64))
        c["tail"] = f.read(min(64, c["offset"]))
        self._cache = c
        rows, errors = list(rows), list(errors)
        if data[whole:].strip():  # an unfinished last line (a crash mid-write)
            self._parse_line(n + 1, data[whole:], rows, errors)
        return rows, errors

    def _parse_line(self, n: int, raw: bytes, rows: list, errors: list) -> None:
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            return
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise RecordError("expected a JSON object")
            if not isinstance(rec.get("type"), str):
                raise RecordError("record without a 'type'")
            if rec["type"] == "retract" and not isinstance(rec.get("id"), str):
                raise RecordError("retraction without 'id'")
            answer = None if rec["type"] == "retract" else parse_record(rec)
            rows.append((n, rec, answer))
        except (ValueError, RecordError, TypeError, RecursionError) as e:
            errors.append(f"{self.path}:{n}: {e}")

    def load(self, _locked: bool = False) -> list[Comparison]:
        """Every live comparison in the order written (retracted ones left out).

        A malformed line is reported (`.errors`, and a `StoreWarning`) and skipped; every
        good line is still returned."""
        return [a for a in self.answers(_locked) if isinstance(a, Comparison)]

    def answers(self, _locked: bool = False) -> list[Answer | Unknown]:
        """Every live record of every kind in the order written (retracted ones left out;
        records of a type this version does not know kept as `Unknown`). A malformed line is
        reported and skipped, as in `load`."""
        rows = self._parsed(_locked)
        retracted = {rec["id"] for _, rec, _ in rows if rec["type"] == "retract"}
        return [a for _, _, a in rows if a is not None and a.id not in retracted]

    def item_answers(self, _locked: bool = False) -> list[Answer]:
        """Live answers to queue items, of every kind (notes and unknown records left out)."""
        return item_answers(self.answers(_locked))

    def answered_item_ids(self, rater: str | None = None) -> set[str]:
        """Items `rater` (None: anyone) has a live answer to, of any kind (skips included:
        they are answers too)."""
        return {a.item_id for a in self.item_answers() if rater is None or a.rater == rater}
