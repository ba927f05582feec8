"""Training data from every kind of answer, as pure functions (records in, rows out).

- A comparison gives a pair (`to_pairs`): the preferred response over the other, target 1.0;
  tie / both bad / can't tell a 0.5 target (Christiano et al. 2017) or nothing; skip nothing.
- A ranking of K responses gives its K choose 2 pairs (`ranking_pairs`), each weighted
  1 / (K choose 2) so that one ranking counts as one judgement. InstructGPT (Ouyang et al.
  2022, sec. 3.5) puts all pairs of one ranking in one batch element for the same reason (a
  ranking's pairs are correlated; counted as separate judgements they over-fit). Tied places
  give 0.5 targets, like tied comparisons.
- A correction gives an SFT example (prompt, corrected text) and the pair corrected over
  original (`correction_sft`, `correction_pair`), as Argilla turns a corrected response into
  chosen/rejected and SFT data.
- A rating gives an unpaired row (prompt, completion, label) for KTO (`rating_row`: thumbs
  up/down; on a longer scale, above the middle is desirable, below it undesirable, the middle
  itself gives no row), and pairs between responses of one prompt that one rater rated
  differently (`rating_pairs`; a rater's own scale, never compared across raters).
- "Both bad" gives two undesirable rows (`both_bad_rows`).
- Notes give no training rows; they are kept, exported and reported.
- A record's `meta.weight` (a number >= 0, default 1) multiplies the weight of every pair it
  gives (`record_weight`): the async loop writes it into a round's snapshot to count stale
  answers less (`rlhf.loop.live_stats.weigh_snapshot`). A pair of two ratings counts with
  the smaller of its sides' weights; unpaired rows and SFT examples carry no weight.

`training_data` applies all of these to a store's live answers (skips give nothing).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from rlhf.feedback.records import Comparison, Correction, Ranking, Rating, RecordError, notes


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
    weight: float = 1.0
    """How much the pair counts: 1 / (K choose 2) for each pair of one K-ranking."""
    origin: str = "comparison"
    """The kind of answer it came from."""


@dataclass
class SFTExample:
    """A demonstration: the completion a person wrote (or accepted) for the prompt."""

    prompt: str
    completion: str
    group: str = ""
    ends: bool = True
    """The completion is whole (trains its end: EOS). False for a correction of a response
    that was cut off at the sampling limit: the rater edited a beginning, not a whole story."""


@dataclass
class UnpairedRow:
    """TRL's unpaired preference row: a completion judged desirable (True) or not (False)."""

    prompt: str
    completion: str
    label: bool
    group: str = ""
    origin: str = "rating"


@dataclass
class TrainingData:
    """What a store's answers give: pairs, SFT examples, unpaired rows, and the notes."""

    pairs: list = field(default_factory=list)
    sft: list = field(default_factory=list)
    unpaired: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def record_weight(record) -> float:
    """How much a record's pairs count: its `meta.weight` (1 when absent); RecordError naming
    the key unless it is a number >= 0."""
    w = (getattr(record, "meta", None) or {}).get("weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
        raise RecordError(f"record {getattr(record, 'id', '?')}: meta.weight must be a number "
                          f">= 0, got {w!r}")
    return float(w)


def to_pairs(comparisons, ties: str = "half") -> list[PreferencePair]:
    """Comparisons -> training pairs. `skip` is always dropped; `ties` is 'half' (tie,
    both_bad and cant_tell become 0.5 targets, as Christiano et al. 2017 do for 'equally
    preferable') or 'drop'. Hidden repeats and gold items are kept: real judgements too.
    Records of other kinds are passed over."""
    out = []
    for c in comparisons:
        if not isinstance(c, Comparison):
            continue
        group, w = c.group or c.prompt, record_weight(c)
        if c.label == "a":
            out.append(PreferencePair(c.prompt, c.a, c.b, 1.0, c.strength, group, w))
        elif c.label == "b":
            out.append(PreferencePair(c.prompt, c.b, c.a, 1.0, c.strength, group, w))
        elif c.label in ("tie", "both_bad", "cant_tell") and ties == "half":
            out.append(PreferencePair(c.prompt, c.a, c.b, 0.5, None, group, w))
    return out


def ranking_pairs(r: Ranking, ties: str = "half") -> list[PreferencePair]:
    """A ranking -> its K choose 2 pairs (better place first), each of weight 1/(K choose 2);
    tied places give target 0.5 ('half') or are left out ('drop', weights unchanged)."""
    if r.skipped:
        return []
    k = len(r.responses)
    w = record_weight(r) / (k * (k - 1) / 2)
    group = r.group or r.prompt
    out = []
    for i, j in itertools.combinations(range(k), 2):
        if r.ranks[i] == r.ranks[j]:
            if ties == "half":
                out.append(PreferencePair(r.prompt, r.responses[i], r.responses[j], 0.5, None,
                                          group, w, "ranking"))
            continue
        hi, lo = (i, j) if r.ranks[i] < r.ranks[j] else (j, i)
        out.append(PreferencePair(r.prompt, r.responses[hi], r.responses[lo], 1.0, None, group,
                                  w, "ranking"))
    return out


def correction_sft(c: Correction) -> list[SFTExample]:
    """A correction -> the SFT example (prompt, corrected text), whole unless the response
    shown had been cut off (`source["ended"]` False); a skip -> nothing."""
    if c.skipped:
        return []
    return [SFTExample(c.prompt, c.corrected, c.group or c.prompt,
                       ends=(c.source or {}).get("ended", True) is not False)]


def correction_pair(c: Correction) -> list[PreferencePair]:
    """A correction -> the pair corrected (chosen) over the original (rejected); a written
    demonstration (a correction of an empty response, e.g. an imported prompt-completion
    row) gives no pair: there is nothing to prefer it over."""
    if c.skipped or not c.response.strip():
        return []
    return [PreferencePair(c.prompt, c.corrected, c.response, 1.0, None, c.group or c.prompt,
                           record_weight(c), "correction")]


def rating_row(r: Rating) -> list[UnpairedRow]:
    """A rating -> one unpaired row: thumbs up True / down False; on a longer scale, above
    the middle True, below it False, the middle (neutral) and skips nothing."""
    if r.skipped:
        return []
    mid = (r.low + r.high) / 2
    if r.value == mid:
        return []
    return [UnpairedRow(r.prompt, r.response, r.value > mid, r.group or r.prompt, "rating")]


def rating_pairs(ratings) -> list[PreferencePair]:
    """Pairs between different responses to one prompt that one rater rated differently:
    the higher-rated one chosen (target 1.0). Ratings of one response by one rater are
    averaged first; raters' scales are never compared with each other."""
    by: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        if isinstance(r, Rating) and not r.skipped:
            by[(r.rater, r.scale, r.prompt)][r.response].append((r.value, r.group,
                                                                 record_weight(r)))
    out = []
    for (_, _, prompt), responses in by.items():
        means = {t: sum(v for v, _, _ in vs) / len(vs) for t, vs in responses.items()}
        for x, y in itertools.combinations(sorted(means), 2):
            if means[x] == means[y]:
                continue
            hi, lo = (x, y) if means[x] > means[y] else (y, x)
            group = responses[hi][0][1] or prompt
            w = min(w for _, _, w in responses[hi] + responses[lo])
            out.append(PreferencePair(prompt, hi, lo, 1.0, None, group, w, "rating"))
    return out


def both_bad_rows(c: Comparison) -> list[UnpairedRow]:
    """A "both bad" comparison -> two undesirable rows (one per response)."""
    if not isinstance(c, Comparison) or c.label != "both_bad":
        return []
    group = c.group or c.prompt
    return [UnpairedRow(c.prompt, c.a, False, group, "both_bad"),
            UnpairedRow(c.prompt, c.b, False, group, "both_bad")]


def training_data(records, ties: str = "half") -> TrainingData:
    """All of the above over a store's live answers (`ComparisonStore.answers()`)."""
    records = list(records)
    out = TrainingData(pairs=to_pairs(records, ties), notes=notes(records))
    for r in records:
        if isinstance(r, Ranking):
            out.pairs += ranking_pairs(r, ties)
        elif isinstance(r, Correction):
            out.sft += correction_sft(r)
            out.pairs += correction_pair(r)
        elif isinstance(r, Rating):
            out.unpaired += rating_row(r)
        elif isinstance(r, Comparison):
            out.unpaired += both_bad_rows(r)
    out.pairs += rating_pairs(records)
    return out


