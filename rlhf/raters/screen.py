"""The rater's screen: the single-key terminal UI for items of every kind.

The pages are `rlhf.raters.page`'s, the terminal under them `rlhf.raters.terminal`. Keys act at
once (no Enter), the same as line mode's commands (`rlhf.raters.commands`): a and b (then a
strength) for a comparison; a ranking's letters best first with = for ties, then Enter; a
rating's number (one key on a 0-9 scale, `+` / `-` for thumbs); e to correct a response in
$VISUAL / $EDITOR, or typed line by line where neither is set, after which the change is shown
word by word for y (save), e (edit again) or n (cancel); m (or #) a note for the next
answer, w a note standing alone, s skip, u undo. The legend under each item lists its keys.

In the terminal the header stays put and an item taller than the screen is paged (space or
PgDn for more, PgUp back); the page is redrawn on a resize (SIGWINCH) and on Ctrl-L; after
Ctrl-Z and `fg` the single-key mode is restored. A typed note, the line editor and the
rater's editor get the terminal as the shell had it, and single keys come back after.
"""

from __future__ import annotations

import shutil
import sys

from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import Answer, is_thumbs
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible
from rlhf.raters.commands import Command, act, parse_ranking, parse_rating
from rlhf.raters.editing import editor_command, read_lines, run_correction, run_editor
from rlhf.raters.live_queue import LiveQueue
from rlhf.raters.page import LETTERS, layout, prompt_lines, wrap
from rlhf.raters.session import Refused, Session, Shown, read_guidelines
from rlhf.raters.terminal import Keys, draw, pager, window

COMPARE_KEYS = ("[a] A better", "[b] B better", "[t] tie", "[n] both bad", "[c] can't tell")
COMMON_KEYS = (("s", "[s] skip"), ("u", "[u] undo"), ("m", "[m] note"),
               ("w", "[w] note alone"), ("p", "[p] prompt"), ("h", "[h] help"),
               ("q", "[q] quit"))
STRENGTH_KEYS = {"1": "slightly", "2": "clearly", "3": "much"}
ENTER = ("\n", "\r")
BACKSPACE = ("\x7f", "\x08")
DIGITS = "0123456789"
WAIT_SECONDS = 5.0
"""With nothing to show while items are on other raters' screens: how often to ask again."""


def one_key(scale: dict) -> bool:
    """Whether each value of a rating scale is one key (a scale within 0-9)."""
    return 0 <= scale["low"] and scale["high"] <= 9


def legend(item: Item | None) -> tuple[str, ...]:
    """The keys an item takes. On a ranking, a response's letter comes before a command
    key of the same letter (h, m with 8, 13 responses or more: ? and # stay)."""
    if item is None:
        return ()
    ask, taken = item.ask, ""
    if ask == "compare":
        own = COMPARE_KEYS
    elif ask == "rank" and len(item.responses) > len(LETTERS):
        own = ()  # not by letter (the page says so): skip it
    elif ask == "rank":
        taken = LETTERS[:len(item.responses)]
        own = (f"[a-{taken[-1]}] best first", "[=] tie", "[Enter] save", "[Bksp] back")
    elif ask == "correct":
        own = ("[e] correct it",)
    else:
        s = item.rating_scale
        own = (("[+] thumbs up", "[-] thumbs down") if is_thumbs(s) else
               (f"[{s['low']}-{s['high']}] rate",) if one_key(s) else
               (f"[{s['low']}..{s['high']} Enter] rate",))
    rest = tuple(label for key, label in COMMON_KEYS if key not in taken)
    return own + rest + (("[#] note",) if "m" in taken else ()) + \
        (("[?] help",) if "h" in taken else ())


def _guidelines_page(text: str, version: str) -> str:
    cols = shutil.get_terminal_size().columns
    return "\n".join(wrap(text.rstrip(), cols - 1)) + f"\n\n[guidelines {version}]"


def waiting_for(session: Session, live: LiveQueue | None = None) -> str:
    """Why a rater with nothing to show waits ('' when there is nothing to wait for): items
    on other raters' screens (one comes back if skipped or left too long), or a live queue
    whose loop still runs (it samples more)."""
    held = session.held_elsewhere()
    if held:
        return (f"waiting: {held} item(s) on other raters' screens; one comes back here if "
                "skipped or left too long")
    if live is not None and live.ended is None:
        return ("waiting for new items: the loop samples more as it trains; this ends when "
                "the run ends")
    return ""


def end_summary(session: Session, live: LiveQueue | None = None) -> str:
    s = session.summary()
    mix = ", ".join(f"{k} {v}" for k, v in s["labels"].items()) or "none"
    speed = f"{s['per_hour']:.0f}" if s["seconds"] >= 60 else "--"  # none in the first minute
    head = "All items rated - thank you!"
    if live is not None and live.ended == "finished":
        head = "The run has ended: nothing more to rate - thank you!"
    elif live is not None:
        head = ("The loop has stopped - thank you! Run the same command again once the loop "
                "runs again to go on.")
    return (f"{head}\n\nthis session: {s['answers']} answers in "
            f"{s['seconds'] // 60} min {s['seconds'] % 60} s ({speed}/hour); answers: {mix}")


class Screen:
    """The interactive terminal session (a terminal on stdin and stdout)."""

    LABELS = {"t": "tie", "n": "both_bad", "c": "cant_tell"}

    def __init__(self, session: Session, version: str, text: str, keys: Keys,
                 live: LiveQueue | None = None, wait_seconds: float = WAIT_SECONDS):
        self.session, self.version, self.text, self.keys = session, version, text, keys
        self.live, self.wait_seconds = live, wait_seconds
        """A queue the loop is still filling (or None); how often to look while waiting."""
        self.shown: Shown | None = None
        self.status, self.comment, self.typed, self.offset = "", "", "", 0

    def run(self) -> None:
        pager(_guidelines_page(self.text, self.version).splitlines(), self.keys, "start")
        while True:
            if self.shown is None:
                if self.live is not None:
                    self.live.update(self.session)  # new items in, stale ones retired
                    if self.live.ended and not self._end():  # the loop no longer runs
                        return
                self.shown, self.offset, self.typed = self.session.next(), 0, ""
                why = waiting_for(self.session, self.live) if self.shown is None else ""
                if why:  # on others' screens, or the loop samples more: ask again soon
                    draw(why[0].upper() + why[1:] + ".", self.status + "\nq: quit")
                    if self.keys.get(timeout=self.wait_seconds) == "q":
                        sys.stdout.write("\n")
                        return
                    continue
                if self.shown is None and not self._end():
                    return
                continue
            size = shutil.get_terminal_size()
            keys = legend(self.shown.item)
            page = layout(self.shown, self.session.progress(), size.columns, size.lines)
            shown_page, note = window(page, self.offset, size.lines, size.columns, keys)
            draw(shown_page, note + self.status + self._pending(), keys)
            if not self._key(self.keys.get(), shown_page, size):
                return

    def _pending(self) -> str:
        """What is typed but not yet saved: a ranking or rating, a note."""
        out = ""
        if self.typed and self.shown.item.ask == "rank":
            out += ("  ranking: " + self.typed.upper().replace(" ", " > ") +
                    " _  (Enter saves, Backspace takes back, Esc clears)")
        elif self.typed:
            out += f"  rating: {self.typed}_  (Enter saves)"
        return out + (f"  note: {visible(self.comment)}" if self.comment else "")

    def _end(self) -> bool:
        """The end screen: a summary; u undoes the last answer (True: go on rating)."""
        while True:
            draw(end_summary(self.session, self.live), self.status + "\nu: undo the last answer, "
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
        if self._entry(k):
            return True
        if k == "q":
            sys.stdout.write("\r\x1b[Kstopped; run the same command again to resume.\n")
            return False
        if k in (" ", "pgdn", "pgup"):
            step = max(1, size.lines - 6)
            self.offset = max(0, self.offset + (step if k != "pgup" else -step))
        elif k in ("h", "?"):
            pager(_guidelines_page(self.text, self.version).splitlines(), self.keys)
        elif k == "p":
            pager(["PROMPT (whole)"] + prompt_lines(self.shown.item.prompt, size.columns - 1),
                   self.keys)
        elif k in ("m", "#"):
            self.comment = self.keys.line("\r\x1b[Knote for your next answer "
                                          "(Enter ends): ").strip()
        elif k == "w":
            self._note_alone()
        elif k == "u":
            c = self.session.undo()
            self.status = (f"undone: {visible(self.session.described(c))}" if c
                           else "nothing to undo")
            self.shown, self.comment = None, ""
        elif k == "s":
            self._save(Command("skip", "skip", comment=self.comment))
        elif not self._answer(k, page) and k != "redraw":
            self.status = f"unknown key {visible(k)!r}: h for help"
        return True

    def _note_alone(self) -> None:
        text = self.keys.line("\r\x1b[Ka note on its own (Enter ends, empty: none): ")
        if not text.strip():
            self.status = "no note"
            return
        try:
            self.status = f"noted: {visible(self.session.note(text, shown=self.shown).text)}"
        except Refused as e:
            self.status = f"? {e}"

    def _entry(self, k: str) -> bool:
        """A key that builds a ranking or a typed rating (True when it was one): letters and
        =, digits (and a leading -), Backspace, Esc; Enter saves."""
        it = self.shown.item
        if it.ask == "rank" and len(it.responses) <= len(LETTERS):
            letters = LETTERS[:len(it.responses)]
            if len(k) == 1 and k in letters:
                if k in self.typed:
                    self.status = f"? {k.upper()} is placed already"
                else:
                    sep = "" if not self.typed or self.typed.endswith("=") else " "
                    self.typed, self.status = self.typed + sep + k, ""
                return True
            if k == "=" and self.typed and self.typed[-1] in letters:
                self.typed += "="
                return True
        elif it.ask == "rate" and not one_key(it.rating_scale):
            if len(k) == 1 and (k in DIGITS or (k == "-" and not self.typed)):
                self.typed += k
                return True
        else:
            return False
        if k in ENTER:
            self._submit()
        elif k in BACKSPACE and self.typed:
            self.typed = self.typed[:-1].rstrip()
        elif k == "esc" and self.typed:
            self.typed = ""
        else:
            return False
        return True

    def _submit(self) -> None:
        it = self.shown.item
        try:
            cmd = (Command("rank", places=parse_ranking(self.typed, len(it.responses)))
                   if it.ask == "rank" else
                   Command("rate", value=parse_rating(self.typed, it.rating_scale)))
        except ValueError as e:
            self.status = f"? {e}"
            return
        cmd.comment = self.comment
        self._save(cmd)

    def _answer(self, k: str, page: str) -> bool:
        """A key that answers the item on screen (True when it was one)."""
        it = self.shown.item
        if it.ask == "compare" and (k in ("a", "b") or k in self.LABELS):
            self._compare(k, page)
        elif it.ask == "rate" and one_key(it.rating_scale) and len(k) == 1 and (
                k in DIGITS or (is_thumbs(it.rating_scale) and k in "+-")):
            try:
                self._save(Command("rate", value=parse_rating(k, it.rating_scale),
                                   comment=self.comment))
            except ValueError as e:
                self.status = f"? {e}"
        elif it.ask == "correct" and k == "e":
            self._correct()
        else:
            return False
        return True

    def _compare(self, k: str, page: str) -> None:
        strength = None
        if k in ("a", "b"):
            while True:
                draw(page, f"{k.upper()} better - how much? [1] slightly [2] clearly "
                            "[3] much, any other key: don't say")
                key = self.keys.get()
                if key != "redraw":
                    break
            strength = STRENGTH_KEYS.get(key)
        choice = {"a": "left", "b": "right"}.get(k) or self.LABELS[k]
        self._save(Command("answer", choice, strength, self.comment))

    def _save(self, cmd: Command) -> None:
        try:
            self._saved(act(self.session, self.shown, cmd))
        except Refused as e:
            self.status = f"? {e}"

    def _saved(self, c: Answer) -> None:
        done, total, _ = self.session.progress()
        self.status = f"saved {done}/{total}: {visible(self.session.described(c))}"
        self.shown, self.comment, self.typed = None, "", ""

    def _correct(self) -> None:
        """`run_correction` on the screen: the change paged, y / e / n by one key; a refusal
        or a cancellation in the status line (the item stays on screen)."""
        def tell(line: str) -> None:
            self.status = line

        def ask(lines: list[str]) -> tuple[str, str]:
            return pager(lines, self.keys, "y: save this correction, e: edit again, n: cancel",
                         ("y", "e", "n")), ""

        c = run_correction(self.session, self.shown, self.comment, self._edit, ask, tell,
                           shutil.get_terminal_size().columns - 1)
        if c is not None:
            self._saved(c)

    def _edit(self, text: str) -> str | None:
        """`text` as the rater rewrote it: in their editor, or typed line by line (None:
        cancelled; `EditorError` or `Refused` when refused)."""
        command = editor_command()
        with self.keys.cooked():
            sys.stdout.write("\x1b[2J\x1b[H")
            sys.stdout.flush()
            if command:
                return run_editor(command, text, self.session.max_correction)
            cols = shutil.get_terminal_size().columns
            sys.stdout.write("\n".join(
                ["RESPONSE (to correct)", *("  " + x for x in wrap(text, cols - 2)), "",
                 *wrap("Type the corrected response (no VISUAL or EDITOR is set); end it "
                       "with a line holding only . (.. for a line that is one dot); Ctrl-D "
                       "cancels.", cols - 1)]) + "\n")
            sys.stdout.flush()
            return read_lines(self.keys.readline, self.session.max_correction)


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


def run_screen(queue_path, store_path, rater: str, guidelines_path=None,
               live: LiveQueue | None = None, wait_seconds: float = WAIT_SECONDS,
               **session_kw) -> None:
    """The interactive terminal session (needs a terminal on stdin and stdout); `live`: the
    queue grows while it is rated (wait for new items until the loop ends)."""
    session, version, text = open_session(queue_path, store_path, rater, guidelines_path,
                                          **session_kw)
    with Keys() as keys:
        Screen(session, version, text, keys, live, wait_seconds).run()
