"""`rlhf rate QUEUE --rater NAME`: items of every kind (compare two, rank K, rate one, correct
one) in a terminal (single keys, `rlhf.raters.screen`), in line mode on piped stdin
(`run_session`), or answered by a simulated rater (`run_simulated`). The commands are those
of `rlhf.raters.commands`, the pages those of `rlhf.raters.page`, quality control that of
`rlhf.raters.session`. On a queue the loop still fills (`mode: async`: a `.live.json` state
beside it, `rlhf.raters.live_queue`) both modes wait for new items and end with the run."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

from rlhf.config import UserError
from rlhf.feedback.datafiles import decode
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible
from rlhf.raters import commands as commands_module
from rlhf.raters import session as session_module
from rlhf.raters.commands import Command, act, help_text, parse_command
from rlhf.raters.editing import (
    LINE_PIECE,
    editor_command,
    read_lines,
    run_correction,
    run_editor,
)
from rlhf.raters.live_queue import LiveQueue, read_state
from rlhf.raters.page import layout, wrap
from rlhf.raters.screen import WAIT_SECONDS, end_summary, open_session, run_screen, waiting_for
from rlhf.raters.session import (
    GUIDELINES,
    MAX_CORRECTION,
    MAX_NOTE,
    Refused,
    Session,
    Shown,
)
from rlhf.raters.simulated import make_rater


class LineMode:
    """Line mode: commands from `inp`, one per line; pages and confirmations through `say`.
    A correction is written in $VISUAL / $EDITOR when `inp` is a terminal and one is set,
    else with the line editor on `inp`."""

    def __init__(self, session: Session, inp, out, width: int, wait=time.sleep,
                 poll_seconds: float = 5.0, live: LiveQueue | None = None):
        self.session, self.inp, self.out, self.width = session, inp, out, width
        self.ended = False
        self.wait, self.poll_seconds = wait, poll_seconds
        """With nothing to show but items on other raters' screens (or, on a live queue,
        while the loop runs): how to wait, how long."""
        self.live = live
        """A queue the loop is still filling (`rlhf.raters.live_queue`), or None."""

    def say(self, s: str = "") -> None:
        self.out.write(s + "\n")
        self.out.flush()

    def ask(self, prompt: str) -> str | None:
        """One line of input after `prompt`; None (and `ended`) at end of input. A line
        longer than a command with a note at its limit is read in pieces, never held whole,
        refused, and asked again."""
        cap = self.session.max_note + 1024
        while True:
            self.out.write(prompt)
            self.out.flush()
            line = self.inp.readline(cap)
            self.ended = not line
            if len(line) < cap or line.endswith("\n"):
                return line or None
            n = len(line)
            while (more := self.inp.readline(1 << 16)) and not more.endswith("\n"):
                n += len(more)
            n += len(more)
            self.say(f"? that line is {n:,} characters, longer than any command with a note "
                     f"({cap:,}): nothing was saved")

    def run(self) -> str:
        """Work through the queue: 'done', 'quit' or 'eof'. With nothing to show while
        items are on other raters' screens, it waits (`wait`) and asks again."""
        shown, waiting = None, ""
        while True:
            if shown is None:
                if self.live is not None:
                    self.live.update(self.session)  # new items in, stale ones retired
                    if self.live.ended:  # the loop no longer runs: nothing more is used
                        self.say(end_summary(self.session, self.live))
                        return "done"
                shown = self.session.next()
                if shown is None:
                    why = waiting_for(self.session, self.live)
                    if why:  # a skip, a lease that runs out or the loop brings one: ask again
                        if why != waiting:
                            self.say(f"[{why}. Ctrl-C stops]")
                        waiting = why
                        self.wait(self.poll_seconds)
                        continue
                    self.say(end_summary(self.session, self.live))
                    return "done"
                waiting = ""
                self.say(layout(shown, self.session.progress(), self.width))
            line = self.ask("> ")
            if line is None:
                self.say("\n[end of input: stopping; run again to resume]")
                return "eof"
            cmd = parse_command(line, shown.item)
            if cmd.kind == "quit":
                self.say("[stopped; run again to resume where you left off]")
                return "quit"
            if self.command(shown, cmd):
                shown = None
            if self.ended:
                self.say("\n[end of input: stopping; run again to resume]")
                return "eof"

    def command(self, shown: Shown, cmd: Command) -> bool:
        """Act on one command; True when the item is done with (answered or undone)."""
        s = self.session
        if cmd.kind == "help":
            self.say(help_text())
        elif cmd.kind == "error":
            self.say(f"? {cmd.error}")
        elif cmd.kind == "undo":
            c = s.undo()
            self.say(f"undone: {visible(s.described(c))}" if c else "nothing to undo")
            return True
        elif cmd.kind == "note":
            try:
                self.say(f"noted: {visible(s.note(cmd.comment, shown=shown).text)}")
            except Refused as e:
                self.say(f"? {e}")
        elif cmd.kind == "edit":
            return self.correct(shown, cmd.comment)
        else:
            try:
                self.saved(act(s, shown, cmd))
            except Refused as e:
                self.say(f"? {e}")
                return False
            return True
        return False

    def saved(self, c) -> None:
        done, total, _ = self.session.progress()
        self.say(f"saved {done}/{total}: {visible(self.session.described(c))}")

    def edit(self, text: str) -> str | None:
        """The rater's text, from their editor or the line editor (None: cancelled)."""
        command = editor_command()
        if command and getattr(self.inp, "isatty", lambda: False)():
            return run_editor(command, text, self.session.max_correction)
        self.say("type the corrected response; end it with a line holding only `.` "
                 "(`..` for a line that is one dot)")
        return read_lines(self._line, self.session.max_correction)

    def _line(self) -> str:
        line = self.inp.readline(LINE_PIECE)
        self.ended = not line
        return line

    def confirm(self, lines: list[str]) -> tuple[str, str] | None:
        """Show the change, then ask until y, e or n (a note may follow after `#`): (the
        letter, the note); None at end of input."""
        self.say("\n".join(lines))
        words = {"y": "y", "yes": "y", "e": "e", "edit": "e", "n": "n", "no": "n",
                 "cancel": "n"}
        while True:
            reply = self.ask("save this correction? y: save, e: edit again, n: cancel > ")
            if reply is None:
                return None
            word, _, extra = reply.partition("#")
            if word.strip().lower() in words:
                return words[word.strip().lower()], extra.strip()
            self.say("? y saves, e edits again, n cancels")

    def correct(self, shown: Shown, note: str) -> bool:
        """`run_correction` in line mode; True when saved."""
        c = run_correction(self.session, shown, note, self.edit, self.confirm, self.say,
                           self.width)
        if c is not None:
            self.saved(c)
        return c is not None


def run_session(queue_path, store_path, rater: str, input_stream=None, output_stream=None,
                guidelines_path=None, width: int | None = None, live: LiveQueue | None = None,
                wait=time.sleep, poll_seconds: float = WAIT_SECONDS, **session_kw) -> dict:
    """Line mode: read commands from `input_stream`, write pages to `output_stream`.
    Stops at `q`, at end of input or when the queue is done (`live`, a queue the loop still
    fills: when the loop has ended and nothing is left). Returns a summary dict.
    Each saved answer is confirmed with a line starting `saved ` after it is durable."""
    inp = input_stream or sys.stdin
    out = output_stream or sys.stdout

    def say(s: str = "") -> None:
        out.write(s + "\n")
        out.flush()

    session, version, text = open_session(queue_path, store_path, rater, guidelines_path,
                                          say, **session_kw)
    width = width or shutil.get_terminal_size((80, 24)).columns
    say("\n".join(wrap(text, width - 1)) + f"\n\n[guidelines {version}; h for help]\n"
        if text else "[no guidelines file; h for help]\n")
    reason = LineMode(session, inp, out, width, wait, poll_seconds, live).run()
    done, total, _ = session.progress()
    return {"answered": session.answered_now, "done": done, "total": total, "stopped": reason}


def run_simulated(queue_path, store_path, name: str, seed: int = 0, rater: str | None = None,
                  rater_kw: dict | None = None, **session_kw) -> int:
    """Let a simulated rater (`rlhf.raters.simulated`) work through a queue like a person would,
    hidden repeats included, answering each item as it asks (compare, rank, rate, correct)
    through the session; a correction no edit can make (or one the session refuses) is a
    skip. `rater_kw` goes to the rater (temperature, tie_band, calibration). Returns the
    number of answers."""
    sim = make_rater(name, seed, **(rater_kw or {}))
    session = Session(read_queue(queue_path), ComparisonStore(store_path), rater or sim.name,
                      guidelines=sim.guidelines, rater_kind="simulated", seed=seed, **session_kw)
    n = 0
    while (shown := session.next()) is not None:
        it = shown.item
        j = sim.judge(it)
        meta = {**it.meta, **j.meta}
        if it.ask == "compare":
            session.record(shown, j.label, meta=meta)
        elif it.ask == "rank":  # the session's order shown; places by response index
            session.rank(shown, [j.ranks[i] for i in shown.order], meta=meta)
        elif it.ask == "rate":
            session.rate(shown, j.value, meta=meta)
        elif j.corrected is None:
            session.skip(shown)
        else:
            try:
                session.correct(shown, j.corrected, meta=meta)
            except RecordError:  # refused (e.g. longer than the limit): nothing saved
                session.skip(shown)
        n += 1
    return n


def check_args(a: argparse.Namespace) -> None:
    """The arguments of `rlhf rate`, checked before any work: UserError (one line) naming
    the flag or the file."""
    if not (a.overlap >= 1):
        raise UserError(f"--overlap: must be at least 1, got {a.overlap}")
    if not (0 <= a.repeat_rate <= 1):
        raise UserError(f"--repeat-rate: must be between 0 and 1, got {a.repeat_rate}")
    if not (0 < a.poll_seconds < math.inf):
        raise UserError(f"--poll-seconds: must be a positive number, got {a.poll_seconds}")
    if not (0 < a.lease_seconds < math.inf):
        raise UserError(f"--lease-seconds: must be a positive number, got {a.lease_seconds}")
    for flag, n in (("--max-note-chars", a.max_note_chars),
                    ("--max-correction-chars", a.max_correction_chars)):
        if n < 1:
            raise UserError(f"{flag}: must be at least 1, got {n}")
    if a.guidelines is not None:
        g = Path(a.guidelines)
        if not g.is_file():
            raise UserError(f"--guidelines {g}: no such file")
        decode(g.read_bytes(), g)
    if Path(a.queue).is_file() and not read_queue(a.queue):
        raise UserError(f"{a.queue}: the queue is empty (`rlhf sample-pairs` fills it)")


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf rate", description=commands_module.__doc__ +
                                "\n" + session_module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("queue", help="queue file (from `rlhf sample-pairs`)")
    p.add_argument("--rater", help="your name (answers are kept under it; required)")
    p.add_argument("--store", help="comparison store (default: QUEUE's name + .comparisons.jsonl)")
    p.add_argument("--guidelines", help=f"guidelines file (default {GUIDELINES.name})")
    p.add_argument("--repeat-rate", type=float, default=0.1, help="share of hidden repeats")
    p.add_argument("--overlap", type=int, default=1, help="raters per item at most (1: "
                   "raters share the queue out; 2 or more: shared items for agreement)")
    p.add_argument("--seed", type=int, default=0, help="seed of side and repeat draws")
    p.add_argument("--lease-seconds", type=float, default=900,
                   help="how long the item on screen stays reserved for you")
    p.add_argument("--max-note-chars", type=int, default=MAX_NOTE, metavar="N",
                   help=f"longest note accepted (default {MAX_NOTE:,}); a longer one is "
                   "refused with a message, never cut")
    p.add_argument("--max-correction-chars", type=int, default=MAX_CORRECTION, metavar="N",
                   help=f"longest correction accepted (default {MAX_CORRECTION:,})")
    p.add_argument("--line", action="store_true", help="line mode even in a terminal")
    p.add_argument("--poll-seconds", type=float, default=WAIT_SECONDS, metavar="S",
                   help="with nothing to rate yet (items on others' screens, or a queue the "
                   f"loop still fills): look again every S seconds (default {WAIT_SECONDS:g})")
    p.add_argument("--kind", choices=("human", "script"), default="human",
                   help="who answers: a person, or a script feeding stdin")
    p.add_argument("--simulated", metavar="NAME", help="let a simulated rater answer "
                   "(vader: prefers the happier story; length: prefers the longer one)")
    a = p.parse_args(argv)
    check_args(a)
    store = a.store or str(Path(a.queue).with_suffix("")) + ".comparisons.jsonl"
    kw = {"repeat_rate": a.repeat_rate, "overlap": a.overlap,
          "lease_seconds": a.lease_seconds}
    human = {"rater_kind": a.kind, "seed": a.seed, "max_note": a.max_note_chars,
             "max_correction": a.max_correction_chars}
    try:
        if a.simulated:
            n = run_simulated(a.queue, store, a.simulated, a.seed, a.rater, **kw)
            print(f"{n} simulated answers written to {store}")
            return 0
        if not a.rater:
            raise UserError("--rater NAME is required")
        # a queue the loop (mode: async) still fills has its state beside it: wait for more
        live = LiveQueue(a.queue) if read_state(a.queue) is not None else None
        if sys.stdin.isatty() and sys.stdout.isatty() and not a.line:
            run_screen(a.queue, store, a.rater, a.guidelines, live, a.poll_seconds, **human,
                       **kw)
        else:
            run_session(a.queue, store, a.rater, guidelines_path=a.guidelines, live=live,
                        poll_seconds=a.poll_seconds, **human, **kw)
    except (RecordError, KeyError) as e:
        print(f"rlhf rate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[interrupted; every confirmed answer is saved; run again to resume]")
        return 130
    return 0
