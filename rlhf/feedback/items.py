"""A question waiting for an answer (a queue entry): `Item.ask` says what it asks (compare two,
rank K, rate one, correct one); `rlhf.feedback.records` holds the answers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rlhf.feedback.records import (
    ASKS,
    THUMBS,
    RecordError,
    build_record,
    check_scale,
    new_id,
    one_of,
)


@dataclass
class Item:
    """A question to be answered: compare a/b, rank a, b and `others`, rate a, correct a."""

    prompt: str
    a: str
    b: str = ""
    id: str = field(default_factory=new_id)
    ask: str = "compare"
    """What the item asks: one of ASKS."""
    others: list = field(default_factory=list)
    """For `rank`: the responses after a and b (K = 2 + len(others))."""
    source_a: dict = field(default_factory=dict)
    """Where response a came from: {"model": ..., "checkpoint": ..., "sampling": {...}}."""
    source_b: dict = field(default_factory=dict)
    source_others: list = field(default_factory=list)
    """Provenance of `others`, one dict each."""
    scale: dict | None = None
    """For `rate`: {"name", "low", "high", "anchors": {value: word}}; None = thumbs."""
    served_because: str = "random"
    selection_prob: float | None = None
    """For active selection: the probability this item had of being chosen."""
    gold: str | None = None
    """For gold items: the known right answer (a label)."""
    group: str | None = None
    """Prompt identity for train/validation splits (defaults to the prompt text)."""
    meta: dict = field(default_factory=dict)
    """Anything else the producer wants to keep (round number, data set, index...)."""

    @property
    def responses(self) -> list[str]:
        """The responses the item shows: [a, b] to compare, K to rank, [a] to rate/correct."""
        if self.ask in ("rate", "correct"):
            return [self.a]
        return [self.a, self.b, *self.others]

    @property
    def sources(self) -> list[dict]:
        srcs = [self.source_a, self.source_b, *self.source_others]
        return (srcs + [{} for _ in self.responses])[:len(self.responses)]

    @property
    def rating_scale(self) -> dict:
        return self.scale or THUMBS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        """Validated construction; raises RecordError naming the missing or bad key.
        Keys this version does not know are kept in `meta["extra"]`."""
        ask = d.get("ask", "compare") if isinstance(d, dict) else "compare"
        one_of("ask", ask, ASKS)
        it = build_record(cls, d, required=("prompt", "a", "b") if ask == "compare" else
                    ("prompt", "a"))
        if not all(isinstance(x, str) for x in it.others):
            raise RecordError("others: expected a list of strings")
        if ask == "rank" and len(it.responses) < 2:
            raise RecordError("a ranking item needs at least 2 responses")
        if ask == "rate":
            check_scale(it.rating_scale)
        return it
