"""The rating session: what to show next, recording an answer of any kind, undo, progress.

`Session` is kept apart from the screen, so the same session runs in a real terminal
(`rlhf.raters.screen`), in line mode on piped stdin (`rlhf.raters.rate`), on the web page
(`rlhf.raters.web`) and for simulated raters. Keys: `rlhf.raters.commands`; pages: `page`.

Quality control: sides are drawn per item (A is response a or b at random), so a label never
depends on the side; a share (`--repeat-rate`) of answered items comes back later with the sides
swapped (a hidden repeat: `served_because="repeat"`, `repeat_of` = the first answer's id), which
`rlhf stats` turns into self-consistency and left/right bias. Gold items carry their known answer.
Each item is served to a rater once (skips included) and, with `--overlap K`, to K raters: the
store leases the item on screen to its rater (`ComparisonStore.claim`), so two front ends never
show it to more; a skip or an expired lease hands it back (others wait: `held_elsewhere`).

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

from rlhf.feedback.items import Item
from rlhf.feedback.records import (
    Answer,
    Comparison,
    Correction,
    Note,
    Ranking,
    Rating,
    RecordError,
    correction_problem,
    item_answers,
)
from rlhf.feedback.store import ComparisonStore

MAX_NOTE, MAX_CORRECTION = 2000, 20000
"""Longest note and correction accepted by default (characters); longer: refused, never cut."""


def too_long(what: str, chars: int, limit: int) -> str:
    """Why a note or correction of `chars` characters is refused (it is never cut)."""
    return (f"the {what} is {chars:,} characters; the limit is {limit:,}: shorten it "
            "(nothing was saved)")


class Refused(RecordError):
    """An answer not stored as given (too long, empty, unchanged): nothing was saved."""

GUIDELINES = Path(__file__).resolve().parents[2] / "configs" / "guidelines.md"
SHOWN_LABELS = {"t": "tie", "tie": "tie", "n": "both_bad", "bad": "both_bad", "both": "both_bad",
                "c": "cant_tell", "cant": "cant_tell", "s": "skip", "skip": "skip"}
STRENGTH_WORDS = {"1": "slightly", "2": "clearly", "3": "much",
                  **{w: w for w in ("slightly", "clearly", "much")}}


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
    """An item on screen: which response is on the left (a comparison), the order the
    responses are shown in (a ranking), and whether it is a hidden repeat."""

    item: Item
    left: str
    repeat_of: str | None
    shown_at: float
    order: list[int] | None = None
    """For a ranking: indices of item.responses, top first."""

    @property
    def texts(self) -> tuple[str, ...]:
        """The responses as shown: (left, right) for a comparison, top first for a ranking,
        (the response,) to rate or correct."""
        it = self.item
        if it.ask == "compare":
            return (it.a, it.b) if self.left == "a" else (it.b, it.a)
        if it.ask == "rank":
            return tuple(it.responses[i] for i in self.order)
        return (it.a,)


class Session:
    """One rater working through a queue; every answer goes straight to the store."""

    def __init__(self, items: list[Item], store: ComparisonStore, rater: str,
                 guidelines: str = "none", rater_kind: str = "human", repeat_rate: float = 0.1,
                 repeat_gap: int = 5, overlap: int = 1, seed: int = 0,
                 lease_seconds: float = 900.0, max_note: int = MAX_NOTE,
                 max_correction: int = MAX_CORRECTION):
        if not 0 <= repeat_rate <= 1 or overlap < 1 or repeat_gap < 0:
            raise ValueError("need 0 <= repeat_rate <= 1, overlap >= 1, repeat_gap >= 0")
        self.items, self.store, self.rater = items, store, rater
        self.by_id = {it.id: it for it in items}
        self.guidelines, self.rater_kind = guidelines, rater_kind
        self.repeat_rate, self.repeat_gap = repeat_rate, repeat_gap
        self.overlap, self.seed, self.lease_seconds = overlap, seed, lease_seconds
        self.max_note, self.max_correction = max_note, max_correction
        self.started = time.time()
        self.answered_now = 0
        self.mine: list[Comparison] = []
        self._draws: dict[tuple[str, str], float] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the store (other raters may be writing to it too)."""
        records = self.store.answers()
        comps = [a for a in item_answers(records) if a.item_id in self.by_id]
        self.mine: list[Answer] = [c for c in comps if c.rater == self.rater]
        self.notes = {n.about: n for n in records if isinstance(n, Note)
                      and n.rater == self.rater and n.about}
        """This rater's notes by the id of the answer they are about."""
        self.raters_of: dict[str, set[str]] = defaultdict(set)
        for c in comps:  # a skip does not count: it hands the item back to the others
            if c.repeat_of is None and not c.skip:
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

    def _order(self, item: Item) -> list[int] | None:
        """The order a ranking's responses are shown in (a stable draw per rater and item)."""
        if item.ask != "rank":
            return None
        k = len(item.responses)
        return sorted(range(k), key=lambda i: self._draw(item.id, f"order{i}"))

    def _repeats(self, item_id: str) -> bool:
        """Whether this rater's answer to the item is served again (a stable draw); a
        correction is never repeated (a second rewrite is not a check of the first)."""
        item = self.by_id.get(item_id)
        if item is not None and item.ask == "correct":
            return False
        return self._draw(item_id, "repeat") < self.repeat_rate

    def _pending_repeats(self) -> list[tuple[Comparison, int]]:
        """(first answer, answers given after it) for each hidden repeat still owed."""
        done = {c.repeat_of for c in self.mine if c.repeat_of}
        out = []
        for i, c in enumerate(self.mine):
            if (c.repeat_of is None and not c.skip and c.id not in done
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
            return self._repeat(due[0])
        claimed = self.store.claim(self.rater, [it.id for it in fresh], self.overlap,
                                   self.lease_seconds) if fresh else None
        if claimed is not None:
            item = self.by_id[claimed]
            return Shown(item, self._side(claimed), None, time.time(), self._order(item))
        if repeats:
            return self._repeat(repeats[0][0])
        return None

    def held_elsewhere(self) -> int:
        """Items left for this rater but leased to others now: after `next()` gave None, wait."""
        self.refresh()
        return len(self._fresh())

    def _repeat(self, first: Answer) -> Shown:
        """A hidden repeat of `first`: a comparison with its sides swapped, a ranking in the
        reverse of the order first shown, a rating as it was."""
        item = self.by_id[first.item_id]
        left = "b" if getattr(first, "left", "a") == "a" else "a"
        order = None
        if isinstance(first, Ranking):
            order = list(reversed(first.shown or range(len(first.responses))))
        return Shown(item, left, first.id, time.time(), order)

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
        """Record an answer given as a label about a/b (used by simulated raters); a
        comment is stored as a note about it."""
        return self._keep(shown, Comparison.from_item(
            shown.item, label, left=shown.left, strength=strength, **self._common(shown),
            **extra), comment)

    def rank(self, shown: Shown, places: list[int], note: str = "", **extra) -> Ranking:
        """Record a ranking given in screen terms: `places[j]` is the place (1 = best; equal
        places are ties) of the j-th response shown."""
        order = shown.order or list(range(len(shown.item.responses)))
        if len(places) != len(order):
            raise Refused(f"give a place to each of the {len(order)} responses")
        ranks = [0] * len(order)
        for j, i in enumerate(order):
            ranks[i] = places[j]
        return self._keep(shown, Ranking.from_item(shown.item, ranks, shown=list(order),
                                                   **self._common(shown), **extra), note)

    def rate(self, shown: Shown, value: int, note: str = "", **extra) -> Rating:
        """Record a rating on the item's scale (thumbs: 1 up, 0 down)."""
        s = shown.item.rating_scale
        if not isinstance(value, int) or not s["low"] <= value <= s["high"]:
            raise Refused(f"a rating is a whole number from {s['low']} to {s['high']}")
        return self._keep(shown, Rating.from_item(shown.item, value, **self._common(shown),
                                                  **extra), note)

    def correct(self, shown: Shown, text: str, note: str = "", **extra) -> Correction:
        """Record the rater's rewrite of the response; an empty, unchanged or too long one is
        refused (`Refused`: nothing saved, ask again)."""
        self.check_correction(shown, text)
        return self._keep(shown, Correction.from_item(shown.item, text, **self._common(shown),
                                                      **extra), note)

    def check_correction(self, shown: Shown, text: str) -> None:
        """Raise `Refused` where `correct` would (empty, unchanged, too long), saving nothing:
        a front end asks again before it shows the change to confirm."""
        problem = correction_problem(shown.item.a, text)
        if problem:
            raise Refused(f"{problem}: edit the response, or skip the item")
        if len(text) > self.max_correction:
            raise Refused(too_long("correction", len(text), self.max_correction))

    def skip(self, shown: Shown, note: str = "") -> Answer:
        """Pass on the item (of any kind); it goes back to the other raters."""
        it = shown.item
        if it.ask == "compare":
            return self.record(shown, "skip", None, note)
        cls = {"rank": Ranking, "rate": Rating, "correct": Correction}[it.ask]
        empty = {"rank": [], "rate": None, "correct": ""}[it.ask]
        return self._keep(shown, cls.from_item(it, empty, skipped=True, **self._common(shown)),
                          note)

    def note(self, text: str, about: str | None = None, shown: Shown | None = None) -> Note:
        """A note standing alone (or about one of this rater's answers, `about`)."""
        self._check_note(text)
        if not text.strip():
            raise Refused("a note cannot be empty")
        it = shown.item if shown else None
        n = Note(text=text, about=about, item_id=it.id if it else "",
                 prompt=it.prompt if it else "", group=it.group if it else None,
                 rater=self.rater, rater_kind=self.rater_kind, guidelines=self.guidelines)
        self.store.append(n)
        if about:
            self.notes[about] = n
        return n

    def _check_note(self, text: str) -> None:
        if len(text) > self.max_note:
            raise Refused(too_long("note", len(text), self.max_note))

    def _common(self, shown: Shown) -> dict:
        """What every answer to `shown` records about the rater and the moment."""
        extra = {"served_because": "repeat"} if shown.repeat_of else {}
        return dict(rater=self.rater, rater_kind=self.rater_kind, guidelines=self.guidelines,
                    shown_at=shown.shown_at, seconds=round(time.time() - shown.shown_at, 3),
                    repeat_of=shown.repeat_of, **extra)

    def _keep(self, shown: Shown, answer: Answer, note: str = "") -> Answer:
        """Store `answer` and its note (if any) in one durable write; update the counts."""
        note = note.strip()
        self._check_note(note)
        records = [answer]
        if note:
            records.append(Note(text=note, about=answer.id, item_id=answer.item_id,
                                prompt=answer.prompt, group=answer.group, rater=self.rater,
                                rater_kind=self.rater_kind, guidelines=self.guidelines,
                                shown_at=answer.shown_at, seconds=answer.seconds))
        self.store.extend(records)
        if note:
            self.notes[answer.id] = records[1]
        self.mine.append(answer)
        self.done_ids.add(answer.item_id)
        if answer.repeat_of is None and not answer.skip:
            self.raters_of[answer.item_id].add(self.rater)
        self.answered_now += 1
        return answer

    def revise(self, old_id: str, choice: str, strength: str | None = None,
               comment: str = "", shown_at: float | None = None) -> Comparison:
        """Replace this rater's live answer `old_id` by a new one given in screen terms (on
        the sides it was shown with): a new record that supersedes it, never an edit. Its
        note is `comment`, else the old answer's note, carried over; written with it."""
        old = next((c for c in self.mine if c.id == old_id), None)
        if old is None:
            raise KeyError(old_id)
        item = self.by_id.get(old.item_id) or Item(old.prompt, old.a, old.b, id=old.item_id)
        shown = Shown(item, old.left, old.repeat_of, shown_at or time.time())
        if choice in ("left", "right"):
            label = old.left if choice == "left" else ("b" if old.left == "a" else "a")
        else:
            label, strength = choice, None
        self._check_note(comment.strip())
        new = Comparison.from_item(
            item, label, left=old.left, strength=strength, rater=self.rater,
            rater_kind=self.rater_kind, guidelines=self.guidelines, shown_at=shown.shown_at,
            seconds=round(time.time() - shown.shown_at, 3),
            repeat_of=old.repeat_of, served_because=old.served_because)
        text = comment.strip() or getattr(self.notes.get(old_id), "text", "")
        notes = [Note(text=text, about=new.id, item_id=item.id, prompt=item.prompt,
                      group=item.group, rater=self.rater, rater_kind=self.rater_kind,
                      guidelines=self.guidelines)] if text else []
        self.store.revise(old_id, new, notes)
        self.refresh()
        return new

    def summary(self) -> dict:
        """This session's answers, time, answers per hour and label mix (the end screen)."""
        mine = self.mine[len(self.mine) - self.answered_now:] if self.answered_now else []
        seconds = time.time() - self.started
        return {"answers": self.answered_now, "seconds": round(seconds),
                "per_hour": self.answered_now * 3600 / seconds if seconds > 0 else 0.0,
                "labels": dict(sorted(Counter(
                    c.label if isinstance(c, Comparison) else
                    ("skip" if c.skip else c.kind) for c in mine).items()))}

    def described(self, c: Answer) -> str:
        """`describe(c)` with this rater's note about it."""
        return describe(c, self.notes.get(c.id))

    def undo(self) -> Answer | None:
        """Take back this rater's last answer (a retraction is appended); the item is leased
        back to the rater, who sees it again."""
        c = self.store.undo_last(self.rater, self.lease_seconds)
        if c is not None:
            self.answered_now = max(0, self.answered_now - 1)
        self.refresh()
        return c


def describe(c: Answer, note: Note | None = None) -> str:
    """How an answer is confirmed to the rater, in screen terms (A = left / top, B = right /
    the next one down), with its note after `#`."""
    text = note.text if note else getattr(c, "comment", "")
    return _what(c) + (f" # {text}" if text else "")


def _what(c: Answer) -> str:
    if c.skip:
        return "skip"
    if isinstance(c, Comparison):
        side = {True: "A", False: "B", None: None}[c.chose_left]
        return f"{side} better" + (f" ({c.strength})" if c.strength else "") if side else \
            c.label.replace("_", " ").replace("cant", "can't")
    if isinstance(c, Ranking):
        shown = c.shown or list(range(len(c.responses)))
        letter = {i: chr(ord("A") + j) for j, i in enumerate(shown)}
        places = sorted(set(c.ranks))
        return "ranked " + " > ".join("=".join(sorted(letter[i] for i in shown
                                                       if c.ranks[i] == p)) for p in places)
    if isinstance(c, Rating):
        if c.thumbs:
            return "thumbs " + ("up" if c.value else "down")
        word = c.anchors.get(str(c.value))
        return f"rated {c.value} of {c.low}-{c.high}" + (f" ({word})" if word else "")
    if isinstance(c, Correction):
        return f"corrected ({len(c.response)} -> {len(c.corrected)} characters)"
    return c.kind
