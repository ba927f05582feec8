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
