"""The rating session: what to show next, recording an answer, undo, progress; its commands.

The session logic (`Session`: what to show next, recording an answer, undo, progress) is kept
apart from the screen, so the same session runs
- in a real terminal: single keys on a full-screen page (`rlhf.raters.screen`);
- with stdin piped (no terminal), in line mode: one command per line, for scripts and tests;
- programmatically (`run_session`), e.g. by the training loop.

Line-mode commands (the screen uses the same keys, without Enter):
  a, b          A (left / top) or B (right / bottom) is better; a strength may follow:
                `a1` / `a slightly`, `a2` / `a clearly`, `a3` / `a much`
  t, tie        equally good           n, bad      both bad
  c, cant       can't tell             s, skip     skip this pair
  u, undo       take back your last answer (it is shown again)
  h, ?, help    help                   q, quit     stop (resume later where you stopped)
  A comment may end any answer after `#`: `b2 # A repeats itself`.
On the screen, after a or b press 1 / 2 / 3 for the strength (any other key: none);
m types a comment for the next answer; p pages through a long prompt.

Quality control: sides are drawn per item (A is response a or b at random), so a label never
depends on the side; a share (`--repeat-rate`) of answered items comes back later with the sides
swapped (a hidden repeat: `served_because="repeat"`, `repeat_of` = the first answer's id), which
`rlhf stats` turns into self-consistency and left/right bias. Gold items carry their known answer.
Each item is served to a rater once (skips included) and, with `--overlap K`, to K raters: the
store leases the item on screen to its rater (`ComparisonStore.claim`), so two front ends (two
terminals, a terminal and the web page) never show it to more, and a skip hands it back.

Every text from a model or a data file is shown through `visible` (`rlhf.feedback.text`):
control characters become visible escapes (`\\x1b[2J`), never acted on by a terminal or a page.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rlhf.feedback.comparisons import Comparison, Item
from rlhf.feedback.store import ComparisonStore

GUIDELINES = Path(__file__).resolve().parents[2] / "configs" / "guidelines.md"
SHOWN_LABELS = {"t": "tie", "tie": "tie", "n": "both_bad", "bad": "both_bad",
                "both": "both_bad", "c": "cant_tell", "cant": "cant_tell", "s": "skip",
                "skip": "skip"}
STRENGTH_WORDS = {"1": "slightly", "2": "clearly", "3": "much", "slightly": "slightly",
                  "clearly": "clearly", "much": "much"}


def _unit(*parts) -> float:
    """A deterministic number in [0, 1) from the parts (stable across runs and processes)."""
    h = hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()
    return int(h[:12], 16) / 16**12


def marker(shown_texts: tuple[str, str]) -> tuple[str, str]:
    """Notes to show with the responses: `[empty response]`, `[A and B are identical]`."""
    left, right = shown_texts
    same = "[A and B are identical]" if left == right else ""
    return tuple(("[empty response]" if not t.strip() else same) for t in (left, right))


def read_guidelines(path: str | Path | None = None) -> tuple[str, str]:
    """(version, text) of a guidelines file; the version is what follows `Version:`."""
    p = Path(path) if path else GUIDELINES
    if not p.is_file():
        return "none", ""
    text = p.read_text(encoding="utf-8")
    m = re.search(r"Version:\s*([\w.-]*\w)", text)
    return (f"{p.stem}-{m.group(1)}" if m else p.stem), text


@dataclass
class Shown:
    """An item on screen: which response is on the left, and whether it is a hidden repeat."""

    item: Item
    left: str
    repeat_of: str | None
    shown_at: float

    @property
    def texts(self) -> tuple[str, str]:
        """(left text, right text)."""
        it = self.item
        return (it.a, it.b) if self.left == "a" else (it.b, it.a)


class Session:
    """One rater working through a queue; every answer goes straight to the store."""

    def __init__(self, items: list[Item], store: ComparisonStore, rater: str,
                 guidelines: str = "none", rater_kind: str = "human", repeat_rate: float = 0.1,
                 repeat_gap: int = 5, overlap: int = 1, seed: int = 0,
                 lease_seconds: float = 900.0):
        if not 0 <= repeat_rate <= 1 or overlap < 1 or repeat_gap < 0:
            raise ValueError("need 0 <= repeat_rate <= 1, overlap >= 1, repeat_gap >= 0")
        self.items, self.store, self.rater = items, store, rater
        self.by_id = {it.id: it for it in items}
        self.guidelines, self.rater_kind = guidelines, rater_kind
        self.repeat_rate, self.repeat_gap = repeat_rate, repeat_gap
        self.overlap, self.seed, self.lease_seconds = overlap, seed, lease_seconds
        self.started = time.time()
        self.answered_now = 0
        self.mine: list[Comparison] = []
        self._draws: dict[tuple[str, str], float] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the store (other raters may be writing to it too)."""
        comps = [c for c in self.store.load() if c.item_id in self.by_id]
        self.mine = [c for c in comps if c.rater == self.rater]
        self.raters_of: dict[str, set[str]] = defaultdict(set)
        for c in comps:  # a skip does not count: it hands the item back to the others
            if c.repeat_of is None and c.label != "skip":
                self.raters_of[c.item_id].add(c.rater)
        self.done_ids = {c.item_id for c in self.mine}

    # ------------------------------------------------------------------ what to show

    def _draw(self, item_id: str, what: str) -> float:
        key = (item_id, what)
        if key not in self._draws:  # (progress asks for every item: keep the hashes)
            self._draws[key] = _unit(self.seed, self.rater, item_id, what)
        return self._draws[key]

    def _side(self, item_id: str) -> str:
        return "a" if self._draw(item_id, "side") < 0.5 else "b"

    def _repeats(self, item_id: str) -> bool:
        """Whether this rater's answer to the item is served again (a stable draw)."""
        return self._draw(item_id, "repeat") < self.repeat_rate

    def _pending_repeats(self) -> list[tuple[Comparison, int]]:
        """(first answer, answers given after it) for each hidden repeat still owed."""
        done = {c.repeat_of for c in self.mine if c.repeat_of}
        out = []
        for i, c in enumerate(self.mine):
            if (c.repeat_of is None and c.label != "skip" and c.id not in done
                    and self._repeats(c.item_id)):
                out.append((c, len(self.mine) - 1 - i))
        return out

    def _fresh(self) -> list[Item]:
        return [it for it in self.items
                if it.id not in self.done_ids and len(self.raters_of[it.id]) < self.overlap]

    def next(self) -> Shown | None:
        """The next pair to show, or None when there is nothing left for this rater."""
        self.refresh()
        repeats = self._pending_repeats()
        fresh = self._fresh()
        due = [c for c, after in repeats if after >= self.repeat_gap]
        if due:
            first = due[0]
            left = "b" if first.left == "a" else "a"
            return Shown(self.by_id[first.item_id], left, first.id, time.time())
        claimed = self.store.claim(self.rater, [it.id for it in fresh], self.overlap,
                                   self.lease_seconds) if fresh else None
        if claimed is not None:
            return Shown(self.by_id[claimed], self._side(claimed), None, time.time())
        if repeats:
            first = repeats[0][0]
            left = "b" if first.left == "a" else "a"
            return Shown(self.by_id[first.item_id], left, first.id, time.time())
        return None

    def progress(self) -> tuple[int, int, float]:
        """(answers given, answers in all when done, answers per hour in this session;
        the rate is nan during the first minute)."""
        done = len(self.mine)
        fresh = self._fresh()
        later = sum(self._repeats(it.id) for it in fresh)  # their hidden repeats, known now
        total = done + len(fresh) + later + len(self._pending_repeats())
        seconds = time.time() - self.started
        return done, total, self.answered_now * 3600 / seconds if seconds >= 60 else math.nan

    # ------------------------------------------------------------------ answers

    def answer(self, shown: Shown, choice: str, strength: str | None = None,
               comment: str = "") -> Comparison:
        """Record an answer given in screen terms: choice 'left', 'right', or a label other
        than a/b ('tie', 'both_bad', 'cant_tell', 'skip'). Durable when this returns."""
        if choice in ("left", "right"):
            right = "b" if shown.left == "a" else "a"
            label = shown.left if choice == "left" else right
        else:
            label = choice
            strength = None
        return self.record(shown, label, strength, comment)

    def record(self, shown: Shown, label: str, strength: str | None = None,
               comment: str = "", **extra) -> Comparison:
        """Record an answer given as a label about a/b (used by simulated raters)."""
        it = shown.item
        c = Comparison.from_item(
            it, label, left=shown.left, strength=strength, rater=self.rater,
            rater_kind=self.rater_kind, guidelines=self.guidelines, shown_at=shown.shown_at,
            seconds=round(time.time() - shown.shown_at, 3), comment=comment,
            repeat_of=shown.repeat_of, **extra)
        if shown.repeat_of:
            c.served_because = "repeat"
        self.store.append(c)
        self.mine.append(c)
        self.done_ids.add(c.item_id)
        if c.repeat_of is None and c.label != "skip":
            self.raters_of[c.item_id].add(self.rater)
        self.answered_now += 1
        return c

    def revise(self, old_id: str, choice: str, strength: str | None = None,
               comment: str = "", shown_at: float | None = None) -> Comparison:
        """Replace this rater's live answer `old_id` by a new one given in screen terms (on
        the sides it was shown with): a new record that supersedes it, never an edit."""
        old = next((c for c in self.mine if c.id == old_id), None)
        if old is None:
            raise KeyError(old_id)
        item = self.by_id.get(old.item_id) or Item(old.prompt, old.a, old.b, id=old.item_id)
        shown = Shown(item, old.left, old.repeat_of, shown_at or time.time())
        if choice in ("left", "right"):
            label = old.left if choice == "left" else ("b" if old.left == "a" else "a")
        else:
            label, strength = choice, None
        new = Comparison.from_item(
            item, label, left=old.left, strength=strength, rater=self.rater,
            rater_kind=self.rater_kind, guidelines=self.guidelines, shown_at=shown.shown_at,
            seconds=round(time.time() - shown.shown_at, 3), comment=comment,
            repeat_of=old.repeat_of, served_because=old.served_because)
        self.store.revise(old_id, new)
        self.refresh()
        return new

    def summary(self) -> dict:
        """This session's answers, time, answers per hour and label mix (the end screen)."""
        mine = self.mine[len(self.mine) - self.answered_now:] if self.answered_now else []
        seconds = time.time() - self.started
        return {"answers": self.answered_now, "seconds": round(seconds),
                "per_hour": self.answered_now * 3600 / seconds if seconds > 0 else 0.0,
                "labels": dict(sorted(Counter(c.label for c in mine).items()))}

    def undo(self) -> Comparison | None:
        """Take back this rater's last answer (a retraction is appended); the item is leased
        back to the rater, who sees it again."""
        c = self.store.undo_last(self.rater, self.lease_seconds)
        if c is not None:
            self.answered_now = max(0, self.answered_now - 1)
        self.refresh()
        return c


# ----------------------------------------------------------------------------- line mode


@dataclass
class Command:
    """A parsed line: kind is 'answer', 'undo', 'help', 'quit' or 'error'."""

    kind: str
    choice: str = ""
    strength: str | None = None
    comment: str = ""
    error: str = ""


def parse_command(line: str) -> Command:
    """One line of input -> Command (see the module docstring for the syntax)."""
    text, _, comment = line.partition("#")
    words = text.strip().lower().split()
    if not words:
        return Command("error", error="empty line (h for help)")
    head, rest = words[0], words[1:]
    if head in ("u", "undo"):
        return Command("undo")
    if head in ("h", "?", "help"):
        return Command("help")
    if head in ("q", "quit", "exit"):
        return Command("quit")
    m = re.fullmatch(r"([ab])([123]?)", head)
    if m:
        strength = STRENGTH_WORDS.get(m.group(2)) if m.group(2) else None
        if rest:
            if len(rest) > 1 or rest[0] not in STRENGTH_WORDS or strength:
                return Command("error", error=f"unknown strength {' '.join(rest)!r} "
                                              "(1 slightly, 2 clearly, 3 much)")
            strength = STRENGTH_WORDS[rest[0]]
        side = "left" if m.group(1) == "a" else "right"
        return Command("answer", side, strength, comment.strip())
    if head in SHOWN_LABELS and not rest:
        return Command("answer", SHOWN_LABELS[head], None, comment.strip())
    return Command("error", error=f"unknown command {line.strip()!r} (h for help)")


def help_text() -> str:
    body = __doc__.split("without Enter):", 1)[1].split("On the screen")[0]
    return "commands (one per line; in a terminal, single keys):" + body.rstrip()


def describe(c: Comparison) -> str:
    """How an answer is confirmed to the rater (in screen terms: A = left, B = right)."""
    side = {True: "A", False: "B", None: None}[c.chose_left]
    what = f"{side} better" + (f" ({c.strength})" if c.strength else "") if side else \
        c.label.replace("_", " ").replace("cant", "can't")
    return what + (f" # {c.comment}" if c.comment else "")
