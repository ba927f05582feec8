"""The rater's screen: page layout (shared with line mode) and the single-key terminal UI.

Standard library (termios, tty, shutil, textwrap) and `wcwidth`, which tells the columns a
character takes (2 for CJK and most emoji, 0 for combining marks), so wrapping and the
side-by-side divider hold for any script. The page shows the prompt, then responses A and B
side by side when the terminal is at least `SIDE_BY_SIDE` columns wide, stacked (A above B)
when it is narrower. Every text passes through `rlhf.feedback.text.visible` (an escape in a
response is shown as `\\x1b[2J`, never acted on), and empty or identical responses are marked.

In the terminal the header stays put and a pair taller than the screen is paged (space or
PgDn for more, PgUp back); the page is redrawn on a resize (SIGWINCH) and on Ctrl-L; after
Ctrl-Z and `fg` the single-key mode is restored. Keys act at once (no Enter), see `KEYS`.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import termios
import textwrap
import tty

from wcwidth import wcswidth, wcwidth

from rlhf.feedback.queue import read_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible
from rlhf.raters.session import Session, Shown, marker, read_guidelines

SIDE_BY_SIDE = 120
"""Narrowest terminal (columns) that shows A and B side by side."""
RESERVED = 7
"""Screen rows kept for the header, key legend and status line."""
KEYS = ("[a] A better", "[b] B better", "[t] tie", "[n] both bad", "[c] can't tell", "[s] skip",
        "[u] undo", "[m] comment", "[p] prompt", "[h] help", "[q] quit")
STRENGTH_KEYS = {"1": "slightly", "2": "clearly", "3": "much"}
SEQUENCES = {b"\x1b[6~": "pgdn", b"\x1b[5~": "pgup"}


def width_of(text: str) -> int:
    """Columns `text` takes in a terminal (control characters count 0: `visible` first)."""
    w = wcswidth(text)
    return w if w >= 0 else sum(max(wcwidth(ch), 0) for ch in text)


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` columns."""
    return text + " " * max(0, width - width_of(text))


class _Wrapper(textwrap.TextWrapper):
    """textwrap's greedy wrapping, measured in display columns instead of characters (for
    ASCII text the lines are exactly textwrap's)."""

    def _handle_long_word(self, chunks, cur_line, cur_len, width):
        room = width - cur_len if width >= 1 else 1
        chunk, end, used = chunks[-1], 0, 0
        while end < len(chunk) and used + max(wcwidth(chunk[end]), 0) <= room:
            used += max(wcwidth(chunk[end]), 0)
            end += 1
        if end == 0 and not cur_line:  # a wide character in a 1-column room: it overflows
            end = 1
        cur_line.append(chunk[:end])
        chunks[-1] = chunk[end:]

    def _wrap_chunks(self, chunks):
        lines: list[str] = []
        chunks.reverse()
        while chunks:
            cur, cur_len = [], 0
            indent = self.subsequent_indent if lines else self.initial_indent
            width = self.width - width_of(indent)
            if chunks[-1].strip() == "" and lines:
                del chunks[-1]
            while chunks and cur_len + width_of(chunks[-1]) <= width:
                cur_len += width_of(chunks[-1])
                cur.append(chunks.pop())
            if chunks and width_of(chunks[-1]) > width:
                self._handle_long_word(chunks, cur, cur_len, width)
            if cur and cur[-1].strip() == "":
                del cur[-1]
            if cur:
                lines.append(indent + "".join(cur))
        return lines


def wrap(text: str, width: int) -> list[str]:
    """Wrap each line of `text` to `width` display columns, keeping blank lines; the
    continuation of a list item ("- ...", "1. ...") is indented under its text. Control
    characters are shown as escapes (`rlhf.feedback.text.visible`)."""
    lines: list[str] = []
    for para in visible(text).strip("\n").split("\n"):
        bullet = re.match(r"\s*(?:[-*]|\d+[.)])\s+", para)
        indent = " " * (len(bullet.group(0)) if bullet else 0)
        lines += _Wrapper(width, subsequent_indent=indent,
                          break_on_hyphens=False).wrap(para) or [""]
    return lines


def key_help(width: int) -> str:
    """The key legend, packed into lines of at most `width` columns."""
    lines = [""]
    for k in KEYS:
        sep = "  " if lines[-1] else ""
        if lines[-1] and len(lines[-1]) + len(sep) + len(k) > width:
            lines.append(k)
        else:
            lines[-1] += sep + k
    return "\n".join(lines)


def responses(shown: Shown, width: int) -> list[str]:
    """The two responses: side by side from SIDE_BY_SIDE columns on, else stacked; an empty
    response or two identical ones carry a marker line."""
    left, right = shown.texts
    notes = marker((left, right))
    if width < SIDE_BY_SIDE:
        out = []
        for name, text, note in (("A", left, notes[0]), ("B", right, notes[1])):
            out.append(f"--- {name} " + "-" * (width - 6))
            out += ["  " + line for line in ([note] if note else []) + wrap(text, width - 2)]
        return out + ["-" * width]
    col = (width - 3) // 2
    la, lb = (([n] if n else []) + wrap(t, col) for n, t in zip(notes, (left, right)))
    out = ["-" * col + "-+-" + "-" * (width - 3 - col), f"{'A':<{col}} | B"]
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else ""
        y = lb[i] if i < len(lb) else ""
        out.append(f"{pad(x, col)} | {y}".rstrip())
    return out + ["-" * width]


def layout(shown: Shown, progress: tuple[int, int, float], width: int,
           height: int | None = None) -> str:
    """The page for one item as text, `width` columns wide. With `height`, a long prompt
    keeps only its last lines (the latest turn) so that the page fits, 3 lines at least."""
    width = max(width, 40)
    done, total, rate = progress
    speed = "--" if rate != rate else f"{rate:.0f}"  # nan during the first minute
    head = f" item {done + 1} of {total}   ({speed}/hour) "  # repeats and gold look alike
    body = responses(shown, width)
    prompt = wrap(shown.item.prompt, width - 2)
    if height is not None:
        room = max(3, height - len(body) - RESERVED)
        if len(prompt) > room:
            hidden = len(prompt) - room + 1
            prompt = [f"[... {hidden} earlier lines: p shows the whole prompt]"] + \
                prompt[hidden:]
    out = [head.center(width, "=")[:width], "PROMPT"] + ["  " + line for line in prompt]
    return "\n".join(out + body)


class Keys:
    """Single key presses from a terminal (cbreak mode, restored on exit, on Ctrl-Z and
    again after `fg`). `get` returns "redraw" on Ctrl-L and when the terminal was resized."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin
        self.redraw = False

    def __enter__(self):
        self.fd = self.stream.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.old = {sig: signal.signal(sig, handler) for sig, handler in (
            (signal.SIGWINCH, self._on_resize), (signal.SIGTSTP, self._on_stop))}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        termios.tcflush(self.fd, termios.TCIFLUSH)  # leftover keys must not reach the shell
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def _on_resize(self, *_):
        self.redraw = True

    def _on_stop(self, *_):
        """Ctrl-Z: give the shell its terminal back, stop; on `fg`, single keys again."""
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        os.kill(os.getpid(), signal.SIGSTOP)  # stops here until SIGCONT (`fg`)
        tty.setcbreak(self.fd)
        self.redraw = True

    def get(self) -> str:
        """One key, lower-cased; PgDn / PgUp as "pgdn" / "pgup"; any other escape sequence
        (arrow keys...) is read whole and returned as "esc", so that its bytes never act as
        keys ("\\x1b[A" ends in "A")."""
        while not select.select([self.fd], [], [], 0.2)[0]:
            if self.redraw:
                self.redraw = False
                return "redraw"
        ch = os.read(self.fd, 1)
        if ch == b"\x0c":
            return "redraw"
        if ch == b"\x1b":
            while select.select([self.fd], [], [], 0.05)[0]:
                ch += os.read(self.fd, 16)
            return SEQUENCES.get(ch, "esc")
        while ch[0] >= 0xC0 and len(ch) < 4 and select.select([self.fd], [], [], 0.05)[0]:
            ch += os.read(self.fd, 1)  # the rest of a UTF-8 character
            if ch.decode("utf-8", "ignore"):
                break
        return ch.decode("utf-8", "replace").lower()

    def line(self, prompt: str) -> str:
        """Read a whole line (echoed, editable) for a comment."""
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        try:
            return input(prompt)
        finally:
            tty.setcbreak(self.fd)


def clip(text: str, cols: int) -> str:
    """`text` cut to at most `cols` display columns."""
    out, used = [], 0
    for ch in text:
        used += max(wcwidth(ch), 0)
        if used > cols:
            break
        out.append(ch)
    return "".join(out)


def _draw(page: str, status: str) -> None:
    """Clear the screen, show `page`, the key legend and a status line."""
    cols = shutil.get_terminal_size().columns
    status = "\n".join(clip(line, cols - 1) for line in status.split("\n"))
    # no newline after the status line: a full screen must not scroll its first line away
    sys.stdout.write("\x1b[2J\x1b[H" + page + "\n" + key_help(cols) + "\n" + status)
    sys.stdout.flush()


def window(page: str, offset: int, rows: int, cols: int) -> tuple[str, str]:
    """(what fits on screen, pager note): the header line stays, the rest is shown from line
    `offset` when the page is taller than the room left by the legend and status lines."""
    lines = page.split("\n")
    room = max(3, rows - 3 - key_help(cols).count("\n"))
    body = lines[1:]
    if len(body) <= room:
        return page, ""
    offset = min(max(0, offset), len(body) - room)
    end = offset + room
    note = f"[lines {offset + 1}-{end} of {len(body)}: space/PgDn more, PgUp back] "
    return "\n".join([lines[0], *body[offset:end]]), note


def _guidelines_page(text: str, version: str) -> str:
    cols = shutil.get_terminal_size().columns
    return "\n".join(wrap(text.rstrip(), cols - 1)) + f"\n\n[guidelines {version}]"


def _pager(lines: list[str], keys: Keys, leave: str = "go back") -> str:
    """Show `lines` a screenful at a time: space / PgDn for more, any other key to leave
    (the key is returned)."""
    start = 0
    while True:
        rows = max(shutil.get_terminal_size().lines - 4, 5)
        more = start + rows < len(lines)
        _draw("\n".join(lines[start:start + rows]),
              f"space: more, any other key: {leave}" if more else f"press any key to {leave}")
        k = keys.get()
        if k == "redraw":
            continue
        if k not in (" ", "pgdn") or not more:
            return k
        start += rows


def end_summary(session: Session) -> str:
    s = session.summary()
    mix = ", ".join(f"{k} {v}" for k, v in s["labels"].items()) or "none"
    return (f"All pairs rated - thank you!\n\nthis session: {s['answers']} answers in "
            f"{s['seconds'] // 60} min {s['seconds'] % 60} s ({s['per_hour']:.0f}/hour); "
            f"labels: {mix}")


class Screen:
    """The interactive terminal session (a terminal on stdin and stdout)."""

    LABELS = {"t": "tie", "n": "both_bad", "c": "cant_tell", "s": "skip"}

    def __init__(self, session: Session, version: str, text: str, keys: Keys):
        self.session, self.version, self.text, self.keys = session, version, text, keys
        self.shown, self.status, self.comment, self.offset = None, "", "", 0

    def run(self) -> None:
        _pager(_guidelines_page(self.text, self.version).splitlines(), self.keys, "start")
        while True:
            if self.shown is None:
                self.shown, self.offset = self.session.next(), 0
                if self.shown is None and not self._end():
                    return
                continue
            size = shutil.get_terminal_size()
            page = layout(self.shown, self.session.progress(), size.columns, size.lines)
            shown_page, note = window(page, self.offset, size.lines, size.columns)
            _draw(shown_page, note + self.status +
                  (f"  comment: {visible(self.comment)}" if self.comment else ""))
            if not self._key(self.keys.get(), shown_page, size):
                return

    def _end(self) -> bool:
        """The end screen: a summary; u undoes the last answer (True: go on rating)."""
        while True:
            _draw(end_summary(self.session), self.status + "\nu: undo the last answer, "
                  "any other key: quit")
            k = self.keys.get()
            if k == "redraw":
                continue
            if k == "u":
                c = self.session.undo()
                self.status = (f"undone: {visible(self.session.described(c))}" if c
                               else "nothing to undo")
                return c is not None
            sys.stdout.write("\n")
            return False

    def _key(self, k: str, page: str, size) -> bool:
        """Act on one key; False to stop."""
        if k == "q":
            sys.stdout.write("\r\x1b[Kstopped; run the same command again to resume.\n")
            return False
        if k in (" ", "pgdn", "pgup"):
            step = max(1, size.lines - 6)
            self.offset = max(0, self.offset + (step if k != "pgup" else -step))
        elif k in ("h", "?"):
            _pager(_guidelines_page(self.text, self.version).splitlines(), self.keys)
        elif k == "p":
            _pager(["PROMPT (whole)"] + wrap(self.shown.item.prompt, size.columns - 1),
                   self.keys)
        elif k == "m":
            self.comment = self.keys.line("\r\x1b[Kcomment for your next answer "
                                          "(Enter ends): ").strip()
        elif k == "u":
            c = self.session.undo()
            self.status = (f"undone: {visible(self.session.described(c))}" if c
                           else "nothing to undo")
            self.shown, self.comment = None, ""
        elif k in ("a", "b") or k in self.LABELS:
            self._answer(k, page)
        elif k != "redraw":
            self.status = f"unknown key {visible(k)!r}: h for help"
        return True

    def _answer(self, k: str, page: str) -> None:
        strength = None
        if k in ("a", "b"):
            while True:
                _draw(page, f"{k.upper()} better - how much? [1] slightly [2] clearly "
                            "[3] much, any other key: don't say")
                key = self.keys.get()
                if key != "redraw":
                    break
            strength = STRENGTH_KEYS.get(key)
        choice = {"a": "left", "b": "right"}.get(k) or self.LABELS[k]
        c = self.session.answer(self.shown, choice, strength, self.comment)
        done, total, _ = self.session.progress()
        self.status = f"saved {done}/{total}: {visible(self.session.described(c))}"
        self.shown, self.comment = None, ""


def open_session(queue_path, store_path, rater: str, guidelines_path=None, say=print,
                 **session_kw) -> tuple[Session, str, str]:
    """(session, guidelines version, text): the store repaired if its last line was cut
    (reported once through `say`) and checked writable first (StoreError: one line)."""
    store = ComparisonStore(store_path)
    store.check_writable()
    note = store.repair()
    if note:
        say(note)
    version, text = read_guidelines(guidelines_path)
    return Session(read_queue(queue_path), store, rater, guidelines=version,
                   **session_kw), version, text


def run_screen(queue_path, store_path, rater: str, guidelines_path=None, **session_kw) -> None:
    """The interactive terminal session (needs a terminal on stdin and stdout)."""
    session, version, text = open_session(queue_path, store_path, rater, guidelines_path,
                                          **session_kw)
    with Keys() as keys:
        Screen(session, version, text, keys).run()
