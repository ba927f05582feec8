"""`rlhf rate QUEUE --rater NAME`: the pairwise comparison prompt, in a terminal (single keys,
`rlhf.raters.screen`), in line mode on piped stdin (`run_session`), or answered by a
simulated rater (`run_simulated`). The commands and quality control are those of
`rlhf.raters.session`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible
from rlhf.raters import session as session_module
from rlhf.raters.screen import end_summary, layout, open_session, run_screen, wrap
from rlhf.raters.session import (
    GUIDELINES,
    Session,
    help_text,
    parse_command,
)
from rlhf.raters.simulated import make_rater


def run_session(queue_path, store_path, rater: str, input_stream=None, output_stream=None,
                guidelines_path=None, width: int | None = None, **session_kw) -> dict:
    """Line mode: read commands from `input_stream`, write pages to `output_stream`.
    Stops at `q`, at end of input or when the queue is done. Returns a summary dict.
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
    shown, reason = None, "done"
    while True:
        if shown is None:
            shown = session.next()
            if shown is None:
                say(end_summary(session))
                break
            say(layout(shown, session.progress(), width))
        out.write("> ")
        out.flush()
        line = inp.readline()
        if not line:
            say("\n[end of input: stopping; run again to resume]")
            reason = "eof"
            break
        cmd = parse_command(line)
        if cmd.kind == "quit":
            say("[stopped; run again to resume where you left off]")
            reason = "quit"
            break
        if cmd.kind == "help":
            say(help_text())
        elif cmd.kind == "error":
            say(f"? {cmd.error}")
        elif cmd.kind == "undo":
            c = session.undo()
            say(f"undone: {visible(session.described(c))}" if c else "nothing to undo")
            shown = None
        else:
            c = session.answer(shown, cmd.choice, cmd.strength, cmd.comment)
            done, total, _ = session.progress()
            say(f"saved {done}/{total}: {visible(session.described(c))}")
            shown = None
    done, total, rate = session.progress()
    return {"answered": session.answered_now, "done": done, "total": total, "stopped": reason}


def run_simulated(queue_path, store_path, name: str, seed: int = 0, rater: str | None = None,
                  **session_kw) -> int:
    """Let a simulated rater (`rlhf.raters.simulated`) work through a queue like a person would,
    hidden repeats included. Returns the number of answers."""
    sim = make_rater(name, seed)
    session = Session(read_queue(queue_path), ComparisonStore(store_path), rater or sim.name,
                      guidelines=sim.guidelines, rater_kind="simulated", seed=seed, **session_kw)
    n = 0
    while (shown := session.next()) is not None:
        c = sim.rate(shown.item)
        session.record(shown, c.label, meta={**shown.item.meta, **{
            k: c.meta[k] for k in ("score_a", "score_b", "scorer")}})
        n += 1
    return n


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf rate", description=session_module.__doc__,
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
                   help="how long the pair on screen stays reserved for you")
    p.add_argument("--line", action="store_true", help="line mode even in a terminal")
    p.add_argument("--kind", choices=("human", "script"), default="human",
                   help="who answers: a person, or a script feeding stdin")
    p.add_argument("--simulated", metavar="NAME", help="let a simulated rater answer "
                   "(vader: prefers the happier story; length: prefers the longer one)")
    a = p.parse_args(argv)
    store = a.store or str(Path(a.queue).with_suffix("")) + ".comparisons.jsonl"
    kw = {"repeat_rate": a.repeat_rate, "overlap": a.overlap,
          "lease_seconds": a.lease_seconds}
    human = {"rater_kind": a.kind, "seed": a.seed}
    try:
        if a.simulated:
            n = run_simulated(a.queue, store, a.simulated, a.seed, a.rater, **kw)
            print(f"{n} simulated answers written to {store}")
            return 0
        if not a.rater:
            p.error("--rater NAME is required")
        if sys.stdin.isatty() and sys.stdout.isatty() and not a.line:
            run_screen(a.queue, store, a.rater, a.guidelines, **human, **kw)
        else:
            run_session(a.queue, store, a.rater, guidelines_path=a.guidelines, **human, **kw)
    except (RecordError, KeyError) as e:
        print(f"rlhf rate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[interrupted; every confirmed answer is saved; run again to resume]")
        return 130
    return 0
