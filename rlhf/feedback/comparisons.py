"""The comparison record: one schema for every pairwise judgement, whoever made it.

A pair is kept as (a, b) in a fixed order; which side each was *shown* on is stored apart
(`left`), so the label always speaks of a/b and swapping sides never changes its meaning.
`Item` is a pair waiting to be rated (a queue entry); `Comparison` is one answer to an item.
`to_pairs` turns answers into the (chosen, rejected, target) pairs a reward model trains on.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rlhf.config import UserError

LABELS = ("a", "b", "tie", "both_bad", "cant_tell", "skip")
"""What a rater can answer: a better, b better, equally good, both bad, can't tell, skip."""
STRENGTHS = ("slightly", "clearly", "much")
"""Optional strength of a preference (None when not given)."""
RATER_KINDS = ("human", "simulated", "script")
SERVED_BECAUSE = ("random", "active", "repeat", "gold", "import")
"""Why an item was served: random draw, active selection, hidden repeat, gold item, imported."""


def new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Item:
    """A pair to be rated."""

    prompt: str
    a: str
    b: str
    id: str = field(default_factory=new_id)
    source_a: dict = field(default_factory=dict)
    """Where response a came from: {"model": ..., "checkpoint": ..., "sampling": {...}}."""
    source_b: dict = field(default_factory=dict)
    served_because: str = "random"
    selection_prob: float | None = None
    """For active selection: the probability this item had of being chosen."""
    gold: str | None = None
    """For gold items: the known right answer (a label)."""
    group: str | None = None
    """Prompt identity for train/validation splits (defaults to the prompt text)."""
    meta: dict = field(default_factory=dict)
    """Anything else the producer wants to keep (round number, data set, index...)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        """Validated construction; raises RecordError naming the missing or bad key.
        Keys this version does not know are kept in `meta["extra"]`."""
        return _build(cls, d, required=("prompt", "a", "b"))


@dataclass
class Comparison:
    """One rater's answer to one item."""

    item_id: str
    prompt: str
    a: str
    b: str
    label: str
    """One of LABELS, always about a/b, never about left/right."""
    left: str = "a"
    """Which response was shown on the left (or on top): 'a' or 'b'."""
    strength: str | None = None
    rater: str = "anonymous"
    rater_kind: str = "human"
    guidelines: str = ""
    """Version of the rating guidelines in force."""
    shown_at: float = field(default_factory=time.time)
    """Unix time the item was shown."""
    seconds: float | None = None
    """Time from showing to answering."""
    comment: str = ""
    source_a: dict = field(default_factory=dict)
    source_b: dict = field(default_factory=dict)
    served_because: str = "random"
    selection_prob: float | None = None
    gold: str | None = None
    repeat_of: str | None = None
    """For hidden repeats: the id of the earlier comparison being repeated."""
    group: str | None = None
    meta: dict = field(default_factory=dict)
    id: str = field(default_factory=new_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        """Validated construction; raises RecordError naming the missing or bad key.
        Keys this version does not know are kept in `meta["extra"]`."""
        c = _build(cls, d, required=("item_id", "prompt", "a", "b", "label"))
        c.check()
        return c

    @classmethod
    def from_item(cls, item: Item, label: str, **kw) -> Comparison:
        """An answer to `item`: copies prompt, responses and provenance."""
        fields = dict(item_id=item.id, prompt=item.prompt, a=item.a, b=item.b,
                      source_a=item.source_a, source_b=item.source_b,
                      served_because=item.served_because, selection_prob=item.selection_prob,
                      gold=item.gold, group=item.group, meta=dict(item.meta))
        fields.update(kw)
        c = cls(label=label, **fields)
        c.check()
        return c

    def check(self) -> None:
        """Raise RecordError unless texts are text and label, side, strength, rater kind and
        reason are known values."""
        for key in ("item_id", "prompt", "a", "b", "rater"):
            if not isinstance(getattr(self, key), str):
                raise RecordError(f"{key}: expected a string, got "
                                  f"{type(getattr(self, key)).__name__}")
        _one_of("label", self.label, LABELS)
        _one_of("left", self.left, ("a", "b"))
        _one_of("rater_kind", self.rater_kind, RATER_KINDS)
        _one_of("served_because", self.served_because, SERVED_BECAUSE)
        if self.strength is not None:
            _one_of("strength", self.strength, STRENGTHS)
        if self.gold is not None:
            _one_of("gold", self.gold, LABELS)

    @property
    def chose_left(self) -> bool | None:
        """True / False when the rater preferred the left / right side; None otherwise."""
        if self.label not in ("a", "b"):
            return None
        return self.label == self.left


class RecordError(UserError, ValueError):
    """A record that does not fit the schema (the message names the key)."""


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise RecordError(f"{key}: must be one of {list(allowed)}, got {value!r}")


def _build(cls, d: dict, required: tuple[str, ...]):
    if not isinstance(d, dict):
        raise RecordError(f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    if missing:
        raise RecordError(f"missing key(s) {missing}")
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in d.items() if k in names}
    for k in ("prompt", "a", "b"):
        if not isinstance(d[k], str):
            raise RecordError(f"{k}: expected a string, got {type(d[k]).__name__}")
    if not isinstance(known.get("meta", {}), dict):
        raise RecordError("meta: expected an object")
    extra = {k: v for k, v in d.items() if k not in names}
    if extra:  # a newer writer's fields: kept, not lost, not fatal
        known["meta"] = {**known.get("meta", {}), "extra": extra}
    return cls(**known)


@dataclass
class PreferencePair:
    """A training pair: `target` is the probability that `chosen` is preferred."""

    prompt: str
    chosen: str
    rejected: str
    target: float = 1.0
    """1.0 for a clear preference; 0.5 for tie / both bad / can't tell (Christiano et al. 2017)."""
    strength: str | None = None
    group: str = ""
    """Prompt identity: pairs of the same group go to the same split."""


def to_pairs(comparisons, ties: str = "half") -> list[PreferencePair]:
    """Answers -> training pairs. `skip` is always dropped; `ties` is 'half' (tie, both_bad and
    cant_tell become 0.5 targets, as Christiano et al. 2017 do for 'equally preferable') or
    'drop'. Hidden repeats and gold items are kept: they are real judgements too."""
    out = []
    for c in comparisons:
        group = c.group or c.prompt
        if c.label == "a":
            out.append(PreferencePair(c.prompt, c.a, c.b, 1.0, c.strength, group))
        elif c.label == "b":
            out.append(PreferencePair(c.prompt, c.b, c.a, 1.0, c.strength, group))
        elif c.label in ("tie", "both_bad", "cant_tell") and ties == "half":
            out.append(PreferencePair(c.prompt, c.a, c.b, 0.5, None, group))
    return out
