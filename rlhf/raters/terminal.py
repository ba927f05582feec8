"""The terminal under the rater's screen: single key presses (cbreak mode, restored on exit,
on Ctrl-Z and after `fg`, and given back as the shell had it for a typed line or an editor),
drawing a page with its key legend and status line, and paging what is taller than the
screen. Standard library only (termios, tty, select, signal)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import tty

from rlhf.raters.page import clip

SEQUENCES = {b"\x1b[6~": "pgdn", b"\x1b[5~": "pgup"}


def key_help(width: int, keys: tuple[str, ...]) -> str:
    """The key legend, packed into lines of at most `width` columns."""
    lines = [""]
    for k in keys:
        sep = "  " if lines[-1] else ""
        if lines[-1] and len(lines[-1]) + len(sep) + len(k) > width:
            lines.append(k)
        else:
            lines[-1] += sep + k
    return "\n".join(lines)


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

    def get(self, timeout: float | None = None) -> str:
        """One key, lower-cased; PgDn / PgUp as "pgdn" / "pgup"; any other escape sequence
        (arrow keys...) is read whole and returned as "esc", so that its bytes never act as
        keys ("\\x1b[A" ends in "A"). "timeout" when `timeout` seconds pass without one."""
        waited = 0.0
        while not select.select([self.fd], [], [], 0.2)[0]:
            waited += 0.2
            if self.redraw:
                self.redraw = False
                return "redraw"
            if timeout is not None and waited >= timeout:
                return "timeout"
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

    @contextlib.contextmanager
    def cooked(self):
        """The terminal as the shell had it (echo, whole lines; Ctrl-Z stops as usual) for a
        typed line or the rater's editor; single keys again after."""
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        old = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            yield
        finally:
            signal.signal(signal.SIGTSTP, old)
            tty.setcbreak(self.fd)

    def readline(self) -> str:
        """One line typed in cooked mode, with its newline ('' at end of input: Ctrl-D)."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace")

    def line(self, prompt: str) -> str:
        """Read a whole line (echoed, editable) for a note."""
        with self.cooked():
            sys.stdout.write(prompt)
            sys.stdout.flush()
            return self.readline().rstrip("\r\n")


def draw(page: str, status: str, keys: tuple[str, ...] = ()) -> None:
    """Clear the screen, show `page`, the key legend and a status line."""
    cols = shutil.get_terminal_size().columns
    status = "\n".join(clip(line, cols - 1) for line in status.split("\n"))
    # no newline after the status line: a full screen must not scroll its first line away
    sys.stdout.write("\x1b[2J\x1b[H" + page + "\n" + key_help(cols, keys) + "\n" + status)
    sys.stdout.flush()


def window(page: str, offset: int, rows: int, cols: int,
           keys: tuple[str, ...] = ()) -> tuple[str, str]:
    """(what fits on screen, pager note): the header line stays, the rest is shown from line
    `offset` when the page is taller than the room left by the legend and status lines."""
    lines = page.split("\n")
    room = max(3, rows - 3 - key_help(cols, keys).count("\n"))
    body = lines[1:]
    if len(body) <= room:
        return page, ""
    offset = min(max(0, offset), len(body) - room)
    end = offset + room
    note = f"[lines {offset + 1}-{end} of {len(body)}: space/PgDn more, PgUp back] "
    return "\n".join([lines[0], *body[offset:end]]), note


def pager(lines: list[str], keys: Keys, leave: str = "go back",
           choices: tuple[str, ...] = ()) -> str:
    """Show `lines` a screenful at a time: space / PgDn for more, PgUp back. Without
    `choices` any other key leaves (and is returned); with them, only one of them does
    (`leave` then says what they do)."""
    start = 0
    while True:
        rows = max(shutil.get_terminal_size().lines - 4, 5)
        more = start + rows < len(lines)
        if choices:
            status = ("space: more, " if more else "") + leave
        else:
            status = (f"space: more, any other key: {leave}" if more
                      else f"press any key to {leave}")
        draw("\n".join(lines[start:start + rows]), status)
        k = keys.get()
        if k in (" ", "pgdn") and more:
            start += rows
        elif k == "pgup" and choices:
            start = max(0, start - rows)
        elif k in choices or (not choices and k != "redraw"):
            return k
