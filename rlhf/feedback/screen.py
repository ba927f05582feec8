"""The rater's screen: page layout (shared with line mode) and the single-key terminal UI.

Standard library only (termios, tty, shutil, textwrap): no new dependency. The page shows the
prompt, then responses A and B side by side when the terminal is at least `SIDE_BY_SIDE`
columns wide, stacked (A above B) when it is narrower; long text is wrapped to fit. The screen
is redrawn per item; keys act at once (no Enter), see `KEYS`.
"""

from __future__ import annotations

import re
import shutil
import sys
import textwrap

from rlhf.feedback.queue import read_queue
from rlhf.feedback.session import Session, Shown, describe, read_guidelines
from rlhf.feedback.store import ComparisonStore

SIDE_BY_SIDE = 120
"""Narrowest terminal (columns) that shows A and B side by side."""
RESERVED = 7
"""Screen rows kept for the header, key legend and status line."""
KEYS = ("[a] A better", "[b] B better", "[t] tie", "[n] both bad", "[c] can't tell", "[s] skip",
        "[u] undo", "[m] comment", "[p] prompt", "[h] help", "[q] quit")
STRENGTH_KEYS = {"1": "slightly", "2": "clearly", "3": "much"}


def wrap(text: str, width: int) -> list[str]:
    """Wrap each line of `text` to `width`, keeping blank lines; the continuation of a list
    item ("- ...", "1. ...") is indented under its text."""
    lines: list[str] = []
    for para in text.strip("\n").split("\n"):
        bullet = re.match(r"\s*(?:[-*]|\d+[.)])\s+", para)
        indent = " " * (len(bullet.group(0)) if bullet else 0)
        lines += textwrap.wrap(para, width, subsequent_indent=indent,
                               break_on_hyphens=False) or [""]
    return lines


def key_help(width: int) -> str:
    """The key legend, packed into lines of at most `width` columns."""
    lines = [""]
    for k in KEYS:
        sep = "  " if lines[-1] else ""
        if len(lines[-1]) + len(sep) + len(k) > width:
            lines.append(k)
        else:
            lines[-1] += sep + k
    return "\n".join(lines)


def responses(shown: Shown, width: int) -> list[str]:
    """The two responses: side by side from SIDE_BY_SIDE columns on, else stacked."""
    left, right = shown.texts
    if width < SIDE_BY_SIDE:
        out = []
        for name, text in (("A", left), ("B", right)):
            out.append(f"--- {name} " + "-" * (width - 6))
            out += ["  " + line for line in wrap(text, width - 2)]
        return out + ["-" * width]
    col = (width - 3) // 2
    la, lb = wrap(left, col), wrap(right, col)
    out = ["-" * col + "-+-" + "-" * (width - 3 - col), f"{'A':<{col}} | B"]
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else ""
        y = lb[i] if i < len(lb) else ""
        out.append(f"{x:<{col}} | {y}".rstrip())
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
    """Single key presses from a terminal (cbreak mode, restored on exit)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin

    def __enter__(self):
        import termios
        import tty

        self.fd = self.stream.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def get(self) -> str:
        """One key, lower-cased; an escape sequence (arrow keys...) is read whole and
        returned as "esc", so that its bytes never act as keys ("\\x1b[A" ends in "A")."""
        import os
        import select

        ch = os.read(self.fd, 1)
        if ch == b"\x1b":
            while select.select([self.fd], [], [], 0.05)[0]:
                os.read(self.fd, 16)
            return "esc"
        return ch.decode("utf-8", "replace").lower()

    def line(self, prompt: str) -> str:
        """Read a whole line (echoed, editable) for a comment."""
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        try:
            return input(prompt)
        finally:
            import tty

            tty.setcbreak(self.fd)


def _draw(page: str, status: str) -> None:
    """Clear the screen, show `page`, the key legend and a status line."""
    cols = shutil.get_terminal_size().columns
    # no newline after the status line: a full screen must not scroll its first line away
    sys.stdout.write("\x1b[2J\x1b[H" + page + "\n" + key_help(cols) + "\n" + status)
    sys.stdout.flush()


def _guidelines_page(text: str, version: str) -> str:
    cols = shutil.get_terminal_size().columns
    return "\n".join(wrap(text.rstrip(), cols - 1)) + f"\n\n[guidelines {version}]"


def _pager(lines: list[str], keys: Keys) -> None:
    """Show `lines` a screenful at a time: space for more, any other key to go back."""
    rows = max(shutil.get_terminal_size().lines - 4, 5)
    for start in range(0, len(lines), rows):
        more = start + rows < len(lines)
        _draw("\n".join(lines[start:start + rows]),
              "space: more, any other key: back" if more else "press any key to go back")
        if keys.get() != " ":
            return


def run_screen(queue_path, store_path, rater: str, guidelines_path=None, **session_kw) -> None:
    """The interactive terminal session (needs a terminal on stdin and stdout)."""
    version, text = read_guidelines(guidelines_path)
    session = Session(read_queue(queue_path), ComparisonStore(store_path), rater,
                      guidelines=version, **session_kw)
    labels = {"t": "tie", "n": "both_bad", "c": "cant_tell", "s": "skip"}
    with Keys() as keys:
        _draw(_guidelines_page(text, version), "press any key to start")
        keys.get()
        shown, status, comment = None, "", ""
        while True:
            if shown is None:
                shown = session.next()
                if shown is None:
                    _draw("All pairs rated - thank you!", status + "\n")
                    return
            size = shutil.get_terminal_size()
            page = layout(shown, session.progress(), size.columns, size.lines)
            _draw(page, status + (f"  comment: {comment}" if comment else ""))
            k = keys.get()
            if k == "q":
                sys.stdout.write("\r\x1b[Kstopped; run the same command again to resume.\n")
                return
            if k in ("h", "?"):
                _pager(_guidelines_page(text, version).splitlines(), keys)
            elif k == "p":
                _pager(["PROMPT (whole)"] + wrap(shown.item.prompt, size.columns - 1), keys)
            elif k == "m":
                comment = keys.line("\r\x1b[Kcomment for your next answer (Enter ends): ").strip()
            elif k == "u":
                c = session.undo()
                status = f"undone: {describe(c)}" if c else "nothing to undo"
                shown, comment = None, ""
            elif k in ("a", "b") or k in labels:
                strength = None
                if k in ("a", "b"):
                    _draw(page, f"{k.upper()} better - how much? [1] slightly [2] clearly "
                                "[3] much, any other key: don't say")
                    strength = STRENGTH_KEYS.get(keys.get())
                choice = {"a": "left", "b": "right"}.get(k) or labels[k]
                c = session.answer(shown, choice, strength, comment)
                done, total, _ = session.progress()
                status = f"saved {done}/{total}: {describe(c)}"
                shown, comment = None, ""
            else:
                status = f"unknown key {k!r}: h for help"
