"""The terminal prompt against the defects found in tmux (each a test): escape sequences in
model output, two raters on one queue at overlap 1, pairs taller than the screen (pager,
fixed header), Ctrl-L and resize, Ctrl-Z then fg, CJK and emoji widths, an unwritable store
or a full disk, the end screen, markers for empty and identical responses; and the 80- and
160-column pages of ordinary pairs, unchanged."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.store import ComparisonStore, StoreError
from rlhf.raters.page import layout, width_of, wrap
from rlhf.raters.rate import run_session
from rlhf.raters.session import Session, Shown

ROOT = Path(__file__).resolve().parents[1]
ANSI = "\x1b[2J\x1b]0;TITLE\x07gotcha"


class Pty:
    """`rlhf rate` on a pseudo terminal of `rows` x `cols`; `until(text)` reads its output."""

    def __init__(self, tmp_path, rows=30, cols=80, *extra):
        self.master, slave = os.openpty()
        self.resize(rows, cols, slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlhf", "rate", str(tmp_path / "q.jsonl"), "--rater",
             "ann", "--repeat-rate", "0", "--store", str(tmp_path / "s.jsonl"), *extra],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def resize(self, rows, cols, fd=None):
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, cols, 0, 0))

    def until(self, text: bytes, timeout=30) -> bytes:
        deadline = time.time() + timeout
        start = len(self.seen)
        while text not in self.seen[start:] and time.time() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    break
        assert text in self.seen[start:], self.seen[-800:]
        return self.seen[start:]

    def send(self, keys: bytes, expect: bytes) -> bytes:
        start = len(self.seen)
        os.write(self.master, keys)
        self.until(expect)
        return self.seen[start:]

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def pty_factory(tmp_path):
    made = []

    def make(*a, **kw):
        made.append(Pty(tmp_path, *a, **kw))
        return made[-1]
    yield make
    for p in made:
        p.close()


def queue(tmp_path, items):
    write_queue(tmp_path / "q.jsonl", items)
    return items


def test_escape_sequences_are_shown_not_acted_on(tmp_path, pty_factory):
    queue(tmp_path, [Item(f"say {ANSI}", f"A {ANSI}", "B \x9b31m", id="x0")])
    t = pty_factory()
    t.until(b"press any key")
    page = t.send(b"x", b"[q] quit")
    assert b"\x1b]0;" not in t.seen and b"\x9b" not in t.seen
    assert b"\\x1b[2J\\x1b]0;TITLE\\x07gotcha" in page and b"\\x9b31m" in page
    # line mode: the same page, no escape byte at all
    out = io.StringIO()
    run_session(tmp_path / "q.jsonl", tmp_path / "s2.jsonl", "ann", io.StringIO("a\n"), out,
                width=80, repeat_rate=0)
    assert "\x1b" not in out.getvalue() and "\\x1b]0;TITLE" in out.getvalue()


def read_until(p: subprocess.Popen, text: str) -> bool | str:
    """Read the rater process's lines until one holds `text` (True), until it says it waits
    for an item on another rater's screen ("waiting": it reads no input until then), or until
    it ends after saying that all pairs are rated (False); any other end fails the test with
    what it printed (never a busy loop on a closed pipe)."""
    seen = []
    for line in p.stdout:
        seen.append(line)
        if text in line:
            return True
        if "[waiting:" in line:
            return "waiting"
    rc = p.wait(timeout=30)
    if rc == 0 and any("All items rated" in line for line in seen):
        return False
    pytest.fail(f"rlhf rate ended (rc {rc}) before {text!r}; it printed:\n"
                + "".join(seen[-20:]) + (p.stderr.read() if p.stderr else ""))


def test_two_raters_at_overlap_1_never_share_an_item_and_a_skip_hands_it_back(tmp_path):
    items = queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(6)])
    ann, bob = (Session(items, ComparisonStore(tmp_path / "s.jsonl"), n, repeat_rate=0)
                for n in ("ann", "bob"))
    a1, b1 = ann.next(), bob.next()  # both on screen at once: different items
    assert a1.item.id == "it0" and b1.item.id == "it1"
    assert ann.next().item.id == "it0"  # a reload shows the same pair
    ann.answer(a1, "skip")  # hands it0 back to the others...
    a2 = ann.next()
    assert a2.item.id == "it2"  # ...not to ann herself
    bob.answer(b1, "left")
    assert bob.next().item.id == "it0"
    # two rater processes, interleaved, at overlap 1: every item rated once
    cmd = [sys.executable, "-m", "rlhf", "rate", str(tmp_path / "q.jsonl"), "--store",
           str(tmp_path / "t.jsonl"), "--repeat-rate", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([*cmd, "--rater", n], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
             for n in ("ann", "bob")]
    for p in procs:  # each has its first pair on screen before anyone answers
        assert read_until(p, "item 1 of")
    alive, waiting = list(procs), []
    for _ in range(12):  # answer in turn until each says all pairs are rated; who gets how
        for p in list(alive):  # many depends on timing (a faster rater claims more)
            try:
                p.stdin.write("a\n")
                p.stdin.flush()
            except BrokenPipeError:
                alive.remove(p)
                continue
            got = read_until(p, "saved")
            if got != True:  # noqa: E712 (done, or waiting for the other's last item)
                alive.remove(p)
                if got == "waiting":  # its "a" stays unread; it ends once the other answers
                    waiting.append(p)
        if not alive:
            break
    assert not alive
    for p in waiting:  # the last item was answered on the other screen: it ends, all rated
        assert read_until(p, "saved") is False
    for p in procs:
        with contextlib.suppress(BrokenPipeError):  # an "a" it never read is still buffered
            p.stdin.close()
        assert p.wait(timeout=30) == 0
    comps = ComparisonStore(tmp_path / "t.jsonl").load()
    assert sorted(c.item_id for c in comps) == [f"it{i}" for i in range(6)]
    assert {c.rater for c in comps} == {"ann", "bob"}


def test_tall_pair_pages_under_a_fixed_header_ctrl_l_and_resize_redraw(tmp_path, pty_factory):
    long = "\n".join(f"line {i} of a long response" for i in range(40))
    queue(tmp_path, [Item("short prompt", long, "B " + long, id="x0")])
    t = pty_factory(15, 60)
    t.until(b"space: more, any other key: start")  # the guidelines are paged too
    second = t.send(b" ", b"key")
    assert b"Rating guidelines" not in second  # the next screenful
    first = t.send(b"x", b"space/PgDn more")
    assert b"item 1 of 1" in first and b"[lines 1-" in first
    assert b"line 30 of" not in first
    more = t.send(b" ", b"space/PgDn more")
    assert b"item 1 of 1" in more and b"[lines 1-" not in more  # the header stays
    again = t.send(b"\x1b[5~", b"[lines 1-")  # PgUp goes back
    assert again.count(b"\x1b[2J") == 1
    assert t.send(b"\x0c", b"[lines 1-").count(b"\x1b[2J") == 1  # Ctrl-L redraws
    t.resize(50, 160)
    t.proc.send_signal(signal.SIGWINCH)
    wide = t.until(b" | B")  # side by side now
    assert b"item 1 of 1" in wide
    t.send(b"t", b"saved 1/1: tie")


def test_ctrl_z_then_fg_restores_single_keys(tmp_path, pty_factory):
    queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(2)])
    t = pty_factory()
    t.until(b"press any key")
    t.send(b"x", b"item 1 of 2")
    canonical = lambda: termios.tcgetattr(t.master)[3] & termios.ICANON  # noqa: E731
    assert not canonical()
    t.proc.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends
    deadline = time.time() + 10
    while Path(f"/proc/{t.proc.pid}/stat").read_text().split(")")[1].split()[0] != "T":
        assert time.time() < deadline, "not stopped"
        time.sleep(0.05)
    assert canonical()  # the shell gets its cooked terminal back
    t.proc.send_signal(signal.SIGCONT)  # what fg sends
    t.until(b"item 1 of 2")  # redrawn
    assert not canonical()
    t.send(b"t", b"saved 1/2: tie")  # single keys again, no Enter


def test_cjk_and_emoji_wrap_by_display_width():
    text = "日本語のテキストは二列を使います。" * 8 + " 👍🏽 emoji 🎉" * 10 + " e\u0301" * 20
    it = Item("プロンプト", text, "short", id="x")
    for cols in (60, 80, 160):
        lines = layout(Shown(it, "a", None, 0.0), (0, 1, float("nan")), cols).splitlines()
        assert max(width_of(x) for x in lines) <= cols
        if cols >= 120:  # the divider stays in one column
            col = (cols - 3) // 2
            top = lines.index("A" + " " * (col - 1) + " | B")
            rows = lines[top + 1:-1]
            assert len(rows) > 5 and all(width_of(x.split(" |")[0]) == col for x in rows)
    assert wrap("日本語" * 10, 10) == ["日本語日本", "語日本語日", "本語日本語",
                                        "日本語日本", "語日本語日", "本語日本語"]


def textwrap_wrap(text: str, width: int) -> list[str]:
    """The previous `screen.wrap` (character counts, textwrap): the reference for ASCII."""
    import re

    lines: list[str] = []
    for para in text.strip("\n").split("\n"):
        bullet = re.match(r"\s*(?:[-*]|\d+[.)])\s+", para)
        indent = " " * (len(bullet.group(0)) if bullet else 0)
        lines += textwrap.wrap(para, width, subsequent_indent=indent,
                               break_on_hyphens=False) or [""]
    return lines


def test_ascii_wrapping_is_textwrap_exactly():
    import random

    rng = random.Random(0)
    words = ["a", "cat", "extraordinarily", "x" * 45, "-", "well,", "  ", "\t", "\n", "1."]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        w = rng.randint(5, 80)
        assert wrap(text, w) == textwrap_wrap(text, w), (text, w)


def test_ordinary_pairs_look_as_before_at_80_and_160_columns():
    it = Item("Write a story.", "Once upon a time there was a cat.", "The dog slept.",
              id="x")
    shown = Shown(it, "a", None, 0.0)
    assert layout(shown, (2, 10, float("nan")), 80) == "\n".join([
        "=" * 27 + " item 3 of 10   (--/hour) " + "=" * 27, "PROMPT", "  Write a story.",
        "--- A " + "-" * 74, "  Once upon a time there was a cat.", "--- B " + "-" * 74,
        "  The dog slept.", "-" * 80])
    wide = layout(shown, (2, 10, 120.0), 160).splitlines()
    assert wide[3:6] == ["-" * 78 + "-+-" + "-" * 79, "A" + " " * 77 + " | B",
                         "Once upon a time there was a cat." + " " * 45 + " | The dog slept."]


def test_markers_for_empty_and_identical_responses():
    for cols in (80, 160):
        empty = layout(Shown(Item("p", "  ", "text", id="x"), "a", None, 0), (0, 1, 0.0), cols)
        same = layout(Shown(Item("p", "same", "same", id="y"), "a", None, 0), (0, 1, 0.0), cols)
        assert empty.count("[empty response]") == 1
        assert same.count("[A and B are identical]") == 2


def test_unwritable_store_is_one_line_before_the_first_item(tmp_path):
    queue(tmp_path, [Item("p", "x", "y", id="it0")])
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, "-m", "rlhf", "rate", str(tmp_path / "q.jsonl"),
                        "--rater", "ann", "--store", str(tmp_path / "file" / "s.jsonl")],
                       input="a\n", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "item 1" not in r.stdout
    assert r.stderr.count("\n") == 1 and "not writable" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_full_disk_loses_no_confirmed_answer_and_the_torn_line_is_repaired_once(
        tmp_path, monkeypatch):
    items = queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(3)])
    store = ComparisonStore(tmp_path / "s.jsonl")
    s = Session(items, store, "ann", repeat_rate=0)
    s.answer(s.next(), "left")
    real = os.write

    def half_then_full(fd, data):
        real(fd, bytes(data[:20]))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("rlhf.feedback.store.os.write", half_then_full)
    before = (tmp_path / "s.jsonl").read_bytes()
    with pytest.raises(StoreError, match="No space left on device; the answer was not saved"):
        s.answer(s.next(), "right")
    monkeypatch.undo()
    assert (tmp_path / "s.jsonl").read_bytes() == before  # the part line written is cut back
    with open(tmp_path / "s.jsonl", "ab") as f:  # a crash mid-write leaves one: repaired
        f.write(b'{"type": "comparison')
    out = io.StringIO()
    run_session(tmp_path / "q.jsonl", tmp_path / "s.jsonl", "ann", io.StringIO("t\nq\n"), out,
                width=80, repeat_rate=0)
    assert out.getvalue().count("unfinished last line (20 bytes) was moved") == 1
    assert len(list(tmp_path.glob("s.jsonl.partial-*"))) == 1
    fresh = ComparisonStore(tmp_path / "s.jsonl")
    assert [c.label for c in fresh.load()] == ["a" if s.mine[0].left == "a" else "b", "tie"]
    assert fresh.errors == []
    out2 = io.StringIO()
    run_session(tmp_path / "q.jsonl", tmp_path / "s.jsonl", "ann", io.StringIO("q\n"), out2,
                width=80, repeat_rate=0)
    assert "unfinished" not in out2.getvalue()  # reported once


def test_end_screen_shows_a_summary_and_can_undo_the_last_answer(tmp_path, pty_factory):
    queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(2)])
    t = pty_factory()
    t.until(b"press any key")
    t.send(b"x", b"item 1 of 2")
    t.send(b"a", b"how much?")
    t.send(b"3", b"item 2 of 2")
    end = t.send(b"t", b"u: undo the last answer")
    assert b"All items rated" in end and b"2 answers" in end and b"tie 1" in end
    t.send(b"u", b"undone: tie")
    t.send(b"c", b"u: undo the last answer")
    os.write(t.master, b"x")
    assert t.proc.wait(timeout=30) == 0
    comps = ComparisonStore(tmp_path / "s.jsonl").load()
    assert [(c.item_id, c.label) for c in comps][1] == ("it1", "cant_tell")
    assert comps[0].strength == "much"


class Clock:
    """A `time` module whose `time()` only the test moves (every other name is the real one):
    lease expiries are read from it, so no sleep races a lease."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_lease_expires_and_the_item_goes_to_another_rater(tmp_path, monkeypatch):
    clock = Clock()
    for module in {ComparisonStore.__module__, Session.__module__}:  # leases, shown_at
        monkeypatch.setattr(sys.modules[module], "time", clock)
    items = queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(3)])
    ann, bob = (Session(items, ComparisonStore(tmp_path / "s.jsonl"), n, repeat_rate=0,
                        lease_seconds=300) for n in ("ann", "bob"))
    assert ann.next().item.id == "it0"  # leased to ann until 300 s from now
    clock.now += 299
    assert bob.next().item.id == "it1"  # it0 is ann's while her lease lasts (1 s left)
    assert ann.next().item.id == "it0"  # her own lease: still hers
    clock.now += 301  # both leases (renewed by those claims, 300 s each) ran out 1 s ago
    assert bob.next().item.id == "it0"  # both leases ran out: bob's claim takes the first
    assert ann.next().item.id == "it1"


def test_threads_sharing_one_store_claim_and_read_without_deadlock(tmp_path):
    """The server's threads share one store: its parse cache is locked after the file lock
    (the other order deadlocked: a reader held the cache waiting for the file, a claim held
    the file waiting for the cache)."""
    import threading

    items = queue(tmp_path, [Item(f"p{i}", "x", "y", id=f"it{i}") for i in range(200)])
    store = ComparisonStore(tmp_path / "s.jsonl")
    sessions = [Session(items, store, f"r{i}", repeat_rate=0, overlap=2) for i in range(8)]

    def work(s):
        for _ in range(20):
            s.answer(s.next(), "left")
            s.refresh()
    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    comps = ComparisonStore(tmp_path / "s.jsonl").load()
    assert len(comps) == 160 and max(
        __import__("collections").Counter(c.item_id for c in comps).values()) <= 2
