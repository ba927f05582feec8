"""Corrections in a terminal: the rater's own editor on a copy of the response, or a line
editor where there is none; then the change, word by word.

- `editor_command`: $VISUAL, else $EDITOR (split as a shell would: `code --wait` works).
- `run_editor`: the editor on a temporary file (mode 0600, removed after) holding the response
  exactly; the text read back after it exits, less the one final newline editors add. Its
  size is checked before it is read.
- `read_lines`: the line editor: lines until one holding only `.` (`..` stands for a line
  that is one dot); end of input cancels; a text past the limit is refused at its `.`, never
  held (what comes past the limit is counted and dropped).
- `run_correction`: the loop both terminal front ends share: edit, check, show the change,
  then y saves, e edits again, n cancels.
- `word_diff` / `diff_lines`: the change as runs kept / removed / added, shown as
  `[-removed-]` and `{+added+}` (git's `--word-diff=plain` marks), so that nothing depends on
  colour; every text through `visible`, a removed line break shown as `↵`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from difflib import SequenceMatcher

from rlhf.feedback.records import Answer
from rlhf.feedback.text import visible
from rlhf.raters.page import wrap
from rlhf.raters.session import Refused, Session, Shown, too_long

TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
"""Diff units: words, runs of white space, single signs (every character is in one)."""
BYTES_PER_CHAR = 4
"""Most bytes a character takes in UTF-8 (a file larger than 4 x the limit is refused unread)."""
LINE_PIECE = 1 << 16
"""Most characters a line-mode front end reads at a time (a longer line comes in pieces)."""
CANCELLED = "correction cancelled: nothing was saved"


class EditorError(Exception):
    """The editor could not run, failed, or left a file too large: one line saying which."""


def editor_command(environ=None) -> list[str] | None:
    """The rater's editor as an argument list ($VISUAL, else $EDITOR), or None when neither
    is set."""
    env = os.environ if environ is None else environ
    for var in ("VISUAL", "EDITOR"):
        value = env.get(var, "").strip()
        if value:
            return shlex.split(value)
    return None


def run_editor(command: list[str], text: str, max_chars: int) -> str:
    """Open `command` on a temporary file holding `text`; return the file's text once the
    editor exits (less one final newline it added to a text without one). Raises EditorError
    when the editor cannot start or exits with an error, when the file grew past what
    `max_chars` characters can take (refused unread, never cut), or when it is not UTF-8
    (refused, never patched with replacement characters)."""
    fd, path = tempfile.mkstemp(prefix="rlhf-correction-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            proc = subprocess.Popen([*command, path])
        except OSError as e:
            raise EditorError(f"cannot run the editor {command[0]!r}: "
                              f"{e.strerror or e}; set VISUAL or EDITOR") from None
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C is the editor's to act on (git does this)
                continue
        if rc != 0:
            raise EditorError(f"the editor exited with status {rc}: nothing was saved")
        size = os.path.getsize(path)
        if size > BYTES_PER_CHAR * max_chars + 1:
            raise EditorError(f"the edited text is {size:,} bytes, more than the limit of "
                              f"{max_chars:,} characters allows: shorten it (nothing was "
                              "saved)")
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    try:
        new = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise EditorError(f"the edited text is not UTF-8 (line {line:,}): save it as UTF-8 "
                          "and edit again (nothing was saved)") from None
    if new.endswith("\n") and not text.endswith("\n"):
        new = new[:-2] if new.endswith("\r\n") else new[:-1]
    return new


def _lines(readline, cap: int):
    """Whole lines from `readline()` ('' at end of input; a long line may come in pieces, only
    the last ending in a newline), less their line ending, as (text, length); a line longer
    than `cap` characters is (None, length), never held whole. A last line without its
    newline is dropped."""
    parts: list[str] = []
    n, cr = 0, False
    while piece := readline():
        n += len(piece)
        if n <= cap + 2:
            parts.append(piece)
        else:
            parts.clear()
        if not piece.endswith("\n"):
            cr = piece.endswith("\r")
            continue
        if parts:
            line = "".join(parts)[:-1]
            line = line[:-1] if line.endswith("\r") else line
            yield line, len(line)
        else:
            yield None, n - (2 if piece.endswith("\r\n") or (piece == "\n" and cr) else 1)
        parts, n, cr = [], 0, False


def read_lines(readline, max_chars: int) -> str | None:
    """The line editor: lines from `readline()` ('' at end of input; see `_lines`) up to one
    holding only `.`, joined by newlines; `..` stands for a line that is one dot. None at end
    of input (the correction is cancelled). A text longer than `max_chars` is `Refused` once
    its `.` is read: past the limit lines are counted, never kept, and read through the `.` so
    that none of them is taken for a command."""
    kept: list[str] = []
    size = -1  # characters of the text so far: its lines and the breaks between them
    for line, n in _lines(readline, max_chars):
        if line == ".":
            if size > max_chars:
                raise Refused(too_long("correction", size, max_chars))
            return "\n".join(kept)
        if line == "..":
            line, n = ".", 1
        size += n + 1
        if size <= max_chars:
            kept.append(line)
        else:
            kept.clear()
    return None


def run_correction(session: Session, shown: Shown, note: str, edit, ask, tell,
                   width: int) -> Answer | None:
    """The correction loop of both terminal front ends. `edit(text)` gives the rater's
    rewrite of `text` (None: cancelled; `Refused` or `EditorError`: refused with the reason);
    the session checks it (empty, unchanged, too long: refused); `ask(lines)` shows the change
    (`diff_lines` at `width`) and returns ('y' | 'e' | 'n', a note) or None (end of input);
    y saves (with that note, else `note`), e edits the edited text again, n cancels. `tell`
    gets each refusal or cancellation as one line. Returns the saved answer or None (nothing
    saved; the item stays)."""
    text = shown.item.a
    try:
        while True:
            edited = edit(text)
            if edited is None:
                tell(CANCELLED)
                return None
            session.check_correction(shown, edited)
            reply = ask(diff_lines(shown.item.a, edited, width))
            if reply is None:
                return None
            word, extra = reply
            if word == "y":
                return session.correct(shown, edited, extra or note)
            if word == "n":
                tell(CANCELLED)
                return None
            text = edited
    except (Refused, EditorError) as e:
        tell(f"? {e}")
        return None


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """The change from `old` to `new` as runs (op, text): '=' kept, '-' removed, '+' added,
    in reading order (a replacement is its removal, then its addition). The '=' and '-' runs
    joined give `old`; the '=' and '+' runs give `new`."""
    a, b = TOKEN.findall(old), TOKEN.findall(new)
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(("=", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("-", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("+", "".join(b[j1:j2])))
    return out


def marked(runs: list[tuple[str, str]]) -> str:
    """Runs as one text: `[-removed-]`, `{+added+}`, the rest as it is, every part through
    `visible`; a removed line break is `↵`, an added one `↵` and the break."""
    parts = []
    for op, text in runs:
        t = visible(text)
        parts.append(t if op == "=" else f"[-{t.replace(chr(10), '↵')}-]" if op == "-" else
                     "{+" + t.replace("\n", "↵\n") + "+}")
    return "".join(parts)


def diff_lines(old: str, new: str, width: int) -> list[str]:
    """The page that shows a correction before it is saved: how many characters went and
    came, then the corrected text with the changes marked, wrapped to `width`."""
    runs = word_diff(old, new)
    gone, came = (sum(len(t) for o, t in runs if o == op) for op in "-+")
    return ([f"YOUR CORRECTION: {gone:,} characters removed, {came:,} added "
             "([-removed-] {+added+})"] +
            ["  " + line for line in wrap(marked(runs), width - 2)])
