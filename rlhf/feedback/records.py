"""The feedback records: one record per answer, with a kind, whoever gave it.

Kinds (the `type` of a store line):
- `comparison`: two responses, which is better (ties, strength, both bad, can't tell, skip).
  A pair is kept as (a, b) in a fixed order; which side each was *shown* on is stored apart
  (`left`), so the label always speaks of a/b and swapping sides never changes its meaning.
- `ranking`: K responses put in order, ties allowed (`ranks[i]` is response i's place,
  1 = best; equal places are ties; places are dense: after two tied first comes 2, so
  the places used are 1..m). `shown` is the order they were shown in.
- `rating`: one response on a scale (`value` between `low` and `high`; thumbs are the scale
  0..1), with the scale's name and its anchors' words as the rater saw them.
- `correction`: one response as the rater rewrote it (`corrected`), kept beside the response
  it started from (`response`).
- `note`: free text, a reason or a suggestion, about another answer (`about` = its id) or
  standing alone (`about` None). Comments of earlier versions are read as notes (`notes`).

Every kind keeps what comparisons kept: prompt, responses with their provenance (`source_*`),
rater and rater kind, guideline version, time shown and seconds taken, why the item was
served, hidden-repeat link, group and meta. A rater may pass on any item: a comparison's
label `skip`, or `skipped=True` on the other kinds (their payload then empty).

Each line the store writes carries `schema` (`SCHEMA`); lines without it are schema 1
(comparisons and retractions of earlier versions, read unchanged). A line of a type this
version does not know is kept as an `Unknown` record, never dropped.

A question waiting for an answer is an `Item` (`rlhf.feedback.items`).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlhf.config import UserError

SCHEMA = 2
"""Record schema written by this version (1: comparisons only, no `schema` key)."""
KINDS = ("comparison", "ranking", "rating", "correction", "note")
ASKS = ("compare", "rank", "rate", "correct")
"""What a queue item asks for: compare two, rank K, rate one, correct one."""
KIND_OF_ASK = {"compare": "comparison", "rank": "ranking", "rate": "rating",
               "correct": "correction"}
LABELS = ("a", "b", "tie", "both_bad", "cant_tell", "skip")
"""What a rater can answer: a better, b better, equally good, both bad, can't tell, skip."""
STRENGTHS = ("slightly", "clearly", "much")
"""Optional strength of a preference (None when not given)."""
RATER_KINDS = ("human", "simulated", "script")
SERVED_BECAUSE = ("random", "active", "repeat", "gold", "import")
"""Why an item was served: random draw, active selection, hidden repeat, gold item, imported."""
THUMBS = {"name": "thumbs", "low": 0, "high": 1, "anchors": {"0": "bad", "1": "good"}}
"""The thumbs-up/down scale: 0 down, 1 up."""


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class RecordError(UserError, ValueError):
    """A record that does not fit the schema (the message names the key)."""


def is_thumbs(scale: dict) -> bool:
    """Whether a scale is thumbs down / up (0..1)."""
    return scale.get("low") == 0 and scale.get("high") == 1


def check_scale(scale: dict) -> None:
    """Raise RecordError unless `scale` has a name, integer low < high and anchor words."""
    if not isinstance(scale, dict) or not isinstance(scale.get("name"), str):
        raise RecordError("scale: expected {name, low, high, anchors}")
    low, high = scale.get("low"), scale.get("high")
    if not (isinstance(low, int) and isinstance(high, int) and low < high):
        raise RecordError(f"scale: low and high must be integers, low < high (got {low}, "
                          f"{high})")
    if not isinstance(scale.get("anchors", {}), dict):
        raise RecordError("scale.anchors: expected {value: word}")


@dataclass(kw_only=True)
class Answer:
    """What every answer keeps, whatever its kind."""

    kind: ClassVar[str] = ""
    item_id: str = ""
    prompt: str = ""
    rater: str = "anonymous"
    rater_kind: str = "human"
    guidelines: str = ""
    """Version of the rating guidelines in force."""
    shown_at: float = field(default_factory=time.time)
    """Unix time the item was shown."""
    seconds: float | None = None
    """Time from showing to answering."""
    served_because: str = "random"
    selection_prob: float | None = None
    repeat_of: str | None = None
    """For hidden repeats: the id of the earlier answer being repeated."""
    group: str | None = None
    meta: dict = field(default_factory=dict)
    id: str = field(default_factory=new_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Validated construction; raises RecordError naming the missing or bad key.
        Keys this version does not know are kept in `meta["extra"]`."""
        r = build_record(cls, d, required=cls.REQUIRED)
        r.check()
        return r

    @property
    def skip(self) -> bool:
        """True when the rater passed on the item (a skip hands it back to the others)."""
        return bool(getattr(self, "skipped", False))

    def check(self) -> None:
        """Raise RecordError unless texts are text and rater kind and reason are known."""
        for key in ("item_id", "prompt", "rater"):
            _text(key, getattr(self, key))
        one_of("rater_kind", self.rater_kind, RATER_KINDS)
        one_of("served_because", self.served_because, SERVED_BECAUSE)


@dataclass(kw_only=True)
class Comparison(Answer):
    """One rater's answer to a pair."""

    kind: ClassVar[str] = "comparison"
    REQUIRED: ClassVar[tuple] = ("item_id", "prompt", "a", "b", "label")
    a: str
    b: str
    label: str
    """One of LABELS, always about a/b, never about left/right."""
    left: str = "a"
    """Which response was shown on the left (or on top): 'a' or 'b'."""
    strength: str | None = None
    comment: str = ""
    """Schema 1's comment (now a `note`); read by `notes`."""
    source_a: dict = field(default_factory=dict)
    source_b: dict = field(default_factory=dict)
    gold: str | None = None

    @classmethod
    def from_item(cls, item, label: str, **kw) -> Comparison:
        """An answer to `item`: copies prompt, responses and provenance."""
        c = cls(label=label, **{**_from_item(item), "a": item.a, "b": item.b,
                                "source_a": item.source_a, "source_b": item.source_b,
                                "gold": item.gold, **kw})
        c.check()
        return c

    @property
    def skip(self) -> bool:
        return self.label == "skip"

    def check(self) -> None:
        """... and label, side, strength and gold are known values."""
        super().check()
        _text("a", self.a)
        _text("b", self.b)
        one_of("label", self.label, LABELS)
        one_of("left", self.left, ("a", "b"))
        if self.strength is not None:
            one_of("strength", self.strength, STRENGTHS)
        if self.gold is not None:
            one_of("gold", self.gold, LABELS)

    @property
    def chose_left(self) -> bool | None:
        """True / False when the rater preferred the left / right side; None otherwise."""
        if self.label not in ("a", "b"):
            return None
        return self.label == self.left


@dataclass(kw_only=True)
class Ranking(Answer):
    """K responses put in order by one rater."""

    kind: ClassVar[str] = "ranking"
    REQUIRED: ClassVar[tuple] = ("item_id", "prompt", "responses", "ranks")
    responses: list
    ranks: list
    """Place of each response (1 = best; equal places are ties; dense: the places used are
    1..m, e.g. [2, 1, 2, 3]); [] when skipped."""
    shown: list = field(default_factory=list)
    """Indices of `responses` in the order shown (top first)."""
    sources: list = field(default_factory=list)
    skipped: bool = False

    @classmethod
    def from_item(cls, item, ranks: list[int], **kw) -> Ranking:
        r = cls(responses=list(item.responses), sources=list(item.sources), ranks=list(ranks),
                **{**_from_item(item), **kw})
        r.check()
        return r

    def check(self) -> None:
        super().check()
        k = len(self.responses)
        if k < 2 or not all(isinstance(x, str) for x in self.responses):
            raise RecordError("responses: expected a list of at least 2 strings")
        if self.skipped:
            return
        if (len(self.ranks) != k or not all(isinstance(x, int) and not isinstance(x, bool)
                                            for x in self.ranks)
                or sorted(set(self.ranks)) != list(range(1, max(self.ranks) + 1))):
            raise RecordError(f"ranks: expected {k} dense places from 1 (best; ties share a "
                              f"place, the next takes the next: 1, 1, 2), got {self.ranks!r}")
        if self.shown and sorted(self.shown) != list(range(k)):
            raise RecordError(f"shown: expected an order of 0..{k - 1}, got {self.shown!r}")


@dataclass(kw_only=True)
class Rating(Answer):
    """One response scored on a scale (thumbs: 0 down, 1 up)."""

    kind: ClassVar[str] = "rating"
    REQUIRED: ClassVar[tuple] = ("item_id", "prompt", "response", "value")
    response: str
    value: int | None
    """The score, `low` <= value <= `high`; None when skipped."""
    scale: str = "thumbs"
    low: int = 0
    high: int = 1
    anchors: dict = field(default_factory=lambda: dict(THUMBS["anchors"]))
    """{value: word} as the rater saw them ("1": "very bad", ...)."""
    source: dict = field(default_factory=dict)
    skipped: bool = False

    @classmethod
    def from_item(cls, item, value: int | None, **kw) -> Rating:
        s = item.rating_scale
        r = cls(response=item.a, source=item.source_a, value=value, scale=s["name"],
                low=s["low"], high=s["high"], anchors=dict(s.get("anchors", {})),
                **{**_from_item(item), **kw})
        r.check()
        return r

    @property
    def thumbs(self) -> bool:
        return is_thumbs({"low": self.low, "high": self.high})

    def check(self) -> None:
        super().check()
        _text("response", self.response)
        check_scale({"name": self.scale, "low": self.low, "high": self.high,
                     "anchors": self.anchors})
        if self.skipped:
            return
        if (not isinstance(self.value, int) or isinstance(self.value, bool)
                or not self.low <= self.value <= self.high):
            raise RecordError(f"value: expected an integer from {self.low} to {self.high}, "
                              f"got {self.value!r}")


@dataclass(kw_only=True)
class Correction(Answer):
    """One response as the rater rewrote it."""

    kind: ClassVar[str] = "correction"
    REQUIRED: ClassVar[tuple] = ("item_id", "prompt", "response", "corrected")
    response: str
    """The response as shown (what the correction started from)."""
    corrected: str
    """The rater's text ("" when skipped)."""
    source: dict = field(default_factory=dict)
    skipped: bool = False

    @classmethod
    def from_item(cls, item, corrected: str, **kw) -> Correction:
        r = cls(response=item.a, source=item.source_a, corrected=corrected,
                **{**_from_item(item), **kw})
        r.check()
        return r

    def check(self) -> None:
        super().check()
        _text("response", self.response)
        _text("corrected", self.corrected)
        if self.skipped:
            return
        problem = correction_problem(self.response, self.corrected)
        if problem:
            raise RecordError(f"corrected: {problem}")


def correction_problem(response: str, corrected: str) -> str:
    """Why a correction cannot be kept ('' when it can): empty, or unchanged."""
    if not corrected.strip():
        return "the correction is empty"
    if corrected.strip() == response.strip():
        return "the correction is unchanged"
    return ""


@dataclass(kw_only=True)
class Note(Answer):
    """Free text about another answer (`about`), or standing alone."""

    kind: ClassVar[str] = "note"
    REQUIRED: ClassVar[tuple] = ("text",)
    text: str
    about: str | None = None
    """Id of the answer the note is about; None for a note standing alone."""

    def check(self) -> None:
        super().check()
        _text("text", self.text)
        if not self.text.strip():
            raise RecordError("text: a note cannot be empty")


@dataclass
class Unknown:
    """A record of a type this version does not know: kept as read, never dropped."""

    record: dict

    @property
    def id(self) -> str:
        return str(self.record.get("id", ""))

    @property
    def kind(self) -> str:
        return str(self.record.get("type"))


CLASSES = {c.kind: c for c in (Comparison, Ranking, Rating, Correction, Note)}


def parse_record(rec: dict) -> Answer | Unknown:
    """A store line's object -> its record (an Unknown for a type this version lacks)."""
    cls = CLASSES.get(rec.get("type"))
    if cls is None:
        return Unknown(rec)
    return cls.from_dict({k: v for k, v in rec.items() if k not in ("type", "schema")})


def as_line(record: Answer | Unknown) -> dict:
    """The object the store writes for a record."""
    if isinstance(record, Unknown):
        return record.record
    return {"type": record.kind, "schema": SCHEMA, **record.to_dict()}


def item_answers(records) -> list[Answer]:
    """The answers to queue items among `records`, of every kind (notes and unknown records
    left out)."""
    return [r for r in records if isinstance(r, Answer) and not isinstance(r, Note)
            and r.item_id]


def notes(records) -> list[Note]:
    """Every note among `records`, and each schema-1 comparison comment as a note about its
    comparison (same rater and time), in the order written."""
    out = []
    for r in records:
        if isinstance(r, Note):
            out.append(r)
        elif isinstance(r, Comparison) and r.comment.strip():
            out.append(Note(text=r.comment, about=r.id, item_id=r.item_id, prompt=r.prompt,
                            rater=r.rater, rater_kind=r.rater_kind, guidelines=r.guidelines,
                            shown_at=r.shown_at, seconds=r.seconds, group=r.group,
                            id=f"{r.id}-comment"))
    return out


def _from_item(item) -> dict:
    """The fields an answer copies from the item it answers (an `rlhf.feedback.items.Item`)."""
    return dict(item_id=item.id, prompt=item.prompt, served_because=item.served_because,
                selection_prob=item.selection_prob, group=item.group, meta=dict(item.meta))


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise RecordError(f"{key}: expected a string, got {type(value).__name__}")


def one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise RecordError(f"{key}: must be one of {list(allowed)}, got {value!r}")


def build_record(cls, d: dict, required: tuple[str, ...]):
    if not isinstance(d, dict):
        raise RecordError(f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    if missing:
        raise RecordError(f"missing key(s) {missing}")
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in d.items() if k in names}
    for k in ("prompt", "a", "b"):
        if k in known and not isinstance(known[k], str):
            raise RecordError(f"{k}: expected a string, got {type(known[k]).__name__}")
    for k in ("id", "item_id", "group", "repeat_of", "about"):  # ids: text (or null)
        if known.get(k) is not None and not isinstance(known[k], str):
            raise RecordError(f"{k}: expected a string, got {type(known[k]).__name__}")
    for k in ("meta", "source_a", "source_b", "source", "anchors"):
        if not isinstance(known.get(k, {}), dict):
            raise RecordError(f"{k}: expected an object")
    for k in ("others", "source_others", "responses", "ranks", "shown", "sources"):
        if not isinstance(known.get(k, []), list):
            raise RecordError(f"{k}: expected a list")
    extra = {k: v for k, v in d.items() if k not in names}
    if extra:  # a newer writer's fields: kept, not lost, not fatal
        known["meta"] = {**known.get("meta", {}), "extra": extra}
    try:
        return cls(**known)
    except TypeError as e:
        raise RecordError(str(e)) from None
