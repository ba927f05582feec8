"""A full disk under the rating server (an injected ENOSPC, as mounting a small tmpfs needs
root): an answer is acknowledged if and only if it is in the store. The disk is full at every
point in turn (sweeping the bytes left free), so the append itself fails part-way (a short
write, then ENOSPC: a clear 503 and no half line left), or the append succeeds and the leases
file after it fails (saved, with a warning; never a 500, and a retry is not a 409). Whatever
happens no temporary file is left, and once there is room the same item is answered."""

from __future__ import annotations

import errno
import os

from web_asgi import call
from web_helpers import make_mixed_queue

from rlhf.feedback.queue import read_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.web import make_app
from rlhf.raters.web_api import RatingServer

REAL_WRITE, REAL_OPEN = os.write, os.open


class FullDisk:
    """Files under `folder` share `free` bytes: a write past them writes what fits (a short
    write) and the next raises ENOSPC, as a real full disk does; creating a file when nothing
    is free raises ENOSPC too. Other files are untouched."""

    def __init__(self, folder, free: int):
        self.folder, self.free, self.short_writes = str(folder), free, 0

    def ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.folder)
        except OSError:
            return False

    def write(self, fd, data):
        if not self.ours(fd):
            return REAL_WRITE(fd, data)
        n = min(len(data), self.free)
        if n == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.short_writes += n < len(data)
        self.free -= n
        return REAL_WRITE(fd, bytes(data[:n]))

    def open(self, path, flags, mode=0o777, *, dir_fd=None):
        new = flags & os.O_CREAT and not os.path.exists(path)
        if new and str(path).startswith(self.folder) and self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return REAL_OPEN(path, flags, mode, dir_fd=dir_fd)


def answer_body(shown: dict, n: int) -> dict:
    body = {"nonce": shown["nonce"], "note": f"note {n}" if n % 2 else ""}
    if shown["ask"] == "compare":
        body["choice"] = "left"
    elif shown["ask"] == "rank":
        body["places"] = list(range(1, len(shown["responses"]) + 1))
    elif shown["ask"] == "rate":
        body["value"] = shown["scale"]["low"]
    else:
        body["text"] = shown["prefill"] + " (fixed)"
    return body


def rate_on_a_filling_disk(folder, free: int, monkeypatch) -> dict:
    """One rater answers until the disk (`free` bytes) fails them three times running; then
    the disk has room again and the item on screen is answered once more."""
    folder.mkdir()
    make_mixed_queue(folder / "q.jsonl", 12)
    app = make_app(RatingServer(read_queue(folder / "q.jsonl"), folder / "s.jsonl",
                                {"ann": "tok"}, repeat_rate=0))
    disk = FullDisk(folder, free)
    monkeypatch.setattr(os, "write", disk.write)
    monkeypatch.setattr(os, "open", disk.open)
    acked, failed, warned, statuses = [], 0, 0, []
    status, _, shown = call(app, "/r/tok/api/next")
    n = 0
    while failed < 3 and status == 200 and not shown.get("done"):
        status, headers, out = call(app, "/r/tok/api/answer", answer_body(shown, n))
        statuses.append(status)
        assert "content-security-policy" in headers
        if status == 200:
            acked.append(out["id"])
            warned += "warning" in out and "warning" in out["saved"]
            shown, n, failed = out["next"], n + 1, 0
            status = 200
        else:
            assert status == 503 and "not saved" in out["error"], out
            failed += 1
            status = 200  # the same item stays on screen: answer it again
    statuses.append(status)
    disk.free = 10**9  # room again: the item on screen is answered, not refused as gone
    if "nonce" not in shown:  # (the first `next` found no room for the store file)
        status, _, shown = call(app, "/r/tok/api/next")
    if not shown.get("done"):
        status, _, out = call(app, "/r/tok/api/answer", answer_body(shown, n))
        assert status == 200, out
        acked.append(out["id"])
    monkeypatch.undo()
    return {"acked": acked, "statuses": statuses, "warned": warned,
            "short": disk.short_writes}


def test_acknowledged_iff_stored_whenever_the_disk_fills(tmp_path, monkeypatch):
    seen_warning = seen_short = 0
    for free in range(0, 3000, 97):
        folder = tmp_path / f"free{free}"
        run = rate_on_a_filling_disk(folder, free, monkeypatch)
        store = ComparisonStore(folder / "s.jsonl")
        stored = [a.id for a in store.item_answers()]
        assert store.errors == [], (free, store.errors)
        assert stored == run["acked"], free  # every acknowledged one, and no other
        assert set(run["statuses"]) <= {200, 503}, (free, run["statuses"])
        assert sorted(p.name for p in folder.iterdir() if ".tmp" in p.name) == [], free
        data = (folder / "s.jsonl").read_bytes()
        assert data == b"" or data.endswith(b"\n"), free  # no half line
        seen_warning += run["warned"]
        seen_short += run["short"]
    # both failures happened somewhere in the sweep: after the append (the leases file:
    # saved with a warning) and inside it (a short write cut back)
    assert seen_warning > 0 and seen_short > 0


def test_a_failed_lease_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    store = ComparisonStore(tmp_path / "s.jsonl")
    real_replace = os.replace

    def no_room(src, dst, *a, **k):
        if str(dst).endswith(".leases"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", no_room)
    assert store.claim("ann", ["x", "y"]) == "x"  # the item is still served
    assert "No space left" in store.lease_problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]
    monkeypatch.undo()
    assert store.claim("ann", ["x", "y"]) == "x" and store.lease_problem is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.jsonl.leases"]


def test_whatever_fails_after_the_append_is_a_warning_on_a_saved_answer(tmp_path, monkeypatch):
    make_mixed_queue(tmp_path / "q.jsonl", 4)
    server = RatingServer(read_queue(tmp_path / "q.jsonl"), tmp_path / "s.jsonl",
                          {"ann": "tok"}, repeat_rate=0)
    app = make_app(server)
    _, _, shown = call(app, "/r/tok/api/next")
    session = server.rater("tok").session

    def broken_next():
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(session, "next", broken_next)  # reading the next item fails
    status, _, out = call(app, "/r/tok/api/answer", answer_body(shown, 0))
    assert status == 200 and out["saved"].startswith("saved 1/")
    assert "the next item could not be fetched" in out["warning"] in out["saved"]
    assert out["next"]["waiting"] is True  # (the page shows "waiting" and asks again)
    assert [a.id for a in ComparisonStore(tmp_path / "s.jsonl").item_answers()] == [out["id"]]
    monkeypatch.undo()
    status, _, again = call(app, "/r/tok/api/next")
    assert status == 200 and again["nonce"] and again["progress"][0] == 1
