"""Simulated raters: a real scorer nobody here wrote, plus noise, for every kind of item.

A simulated rater scores the responses with a scorer from `rlhf.raters.scorers` (e.g. "vader":
VADER sentiment, "prefers the happier story"; or your own, `module:function`) and answers
what the item asks (`Item.ask`), with explicit noise at its temperature T and tie band:
- compare: "tie" when |score_a - score_b| < tie_band; otherwise "a" with probability
  sigmoid((score_a - score_b) / T), else "b" (the Bradley-Terry model: a noisy but
  informative rater, like a human); T = 0 is the noiseless rater (always the higher score).
- rank K: responses whose scores are within the tie band of a neighbour (sorted by score,
  chained) share a place; the groups are ordered by their mean score plus T times a Gumbel
  draw, which is a Plackett-Luce draw with weights exp(score / T) (for K = 2 exactly the
  comparison above). Places are 1 (best) to K, ties share a place, dense (1, 1, 2).
- rate on a scale low..high with P = high - low + 1 points: the score plus T times a logistic
  draw is mapped through the scorer's calibration (`CALIBRATION`: quantiles of its scores on
  TinyStories paragraphs, ../shared/data/text; linear between them) to u in [0, 1], and the
  point is low + min(P - 1, floor(u * P)): a noiseless rater uses each point equally often on
  TinyStories paragraphs. Thumbs (0..1) is the case P = 2: up with probability
  sigmoid((score - median) / T), the median being vader 0.611 (length 30 words). So on 1..7 a
  vader score of 0 (neutral) is a 2, 0.5 a 3, 0.95 a 7.
- correct: an edit of the response shown, not a fresh sample: the lowest-scoring sentence
  (`scorers.sentences`, scored alone) is dropped when there are two or more; when that does not
  raise the score (or there is one sentence) it is rewritten by the scorer's rewriter, if it
  has one (`scorers.REWRITERS`; vader: negative words replaced by their opposites). The first
  edit that scores higher than the response is the correction; when none does, the rater
  skips the item (a correction is never unchanged, nor worse by its own scorer).
The noise is explicit: the built-in scorers have the defaults below (in their own units); a
plugged-in scorer has none, so its temperature and tie band must be given, and a
`calibration` (increasing scores, read as equally spaced quantiles) for it to rate; it
corrects by dropping sentences only. Sides and ranking orders shown are drawn at random too
(`rate_many`; in a session the session draws them), so the records look like a human
session's. Everything random comes from one seeded `random.Random`: the same seed gives the
same answers.

The defaults make "vader" informative but noisy, close to people: on 2,000 random pairs of
TinyStories paragraphs (../shared/data/text), temperature 0.25 and tie band 0.05 give 9% ties,
84% agreement with the noiseless preference, and 79% agreement between two differently
seeded raters (trained human labelers agree about 73%); temperature 0.5 gives 74% and 68%.
The other kinds, measured the same way on those paragraphs with vader at the defaults
(tests/test_simulated_kinds.py::test_the_documented_figures measures them again):
- rank 4 (2,000 random sets of four): the simulated first place is the noiseless rater's
  66% of the time (52% at temperature 0.5), the whole order 47% (32%); 43% of the rankings
  have a tie (nine pairs in a hundred are within the band, and a set of four has six pairs).
  A ranking of two agrees with the noiseless one 85% of the time, as comparisons do.
- rate (1,230 paragraphs): thumbs equal the noiseless rater's 77% of the time, two seeds
  agree 66% (temperature 0.1: 88%, 83%); on 1..7 the noiseless rater uses each point 14% ± 1
  of the time, and a noisy one gives the noiseless point 34% of the time and one within a
  point 68% (two seeds within a point: 58%; temperature 0.1: 51%, 89%, 79%).
- correct (1,230 paragraphs): 29% get a correction (328 by dropping a sentence, 23 by a
  rewrite), which raises the score by 0.34 on average; the rest are skips, mostly cheerful
  paragraphs no edit makes happier. Of the 212 paragraphs scoring below 0, 96% are corrected,
  gaining 0.46 on average. The rewrite knows words, not their sense ("nothing wrong with
  being scared" becomes "nothing right with being brave").
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from rlhf.feedback.items import Item
from rlhf.feedback.records import Answer, Comparison, Correction, Ranking, Rating
from rlhf.raters.scorers import (
    REWRITERS,
    ScorerError,
    get_scorer,
    is_rater_class,
    resolve,
    scorer_problem,
    sentences,
)

DEFAULTS = {
    # scorer: (temperature, tie_band) in the scorer's units
    "vader": (0.25, 0.05),  # compound sentiment in [-1, 1]: a 0.5 gap is right 88% of the time
    "length": (10.0, 2.0),  # words: a 20-word gap is right 88% of the time
}
CALIBRATION = {
    # the scorer's 0%, 5%, ..., 100% quantiles on the 1,230 paragraphs of
    # ../shared/data/text/tinystories-sample.txt (statistics.quantiles, inclusive)
    "vader": (-0.943, -0.658, -0.422, -0.14, 0.0, 0.0, 0.226, 0.38, 0.459, 0.542, 0.611, 0.68,
              0.727, 0.771, 0.797, 0.84, 0.876, 0.904, 0.928, 0.952, 0.992),
    "length": (2.0, 9.0, 13.0, 15.35, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0, 31.0, 33.0,
               35.0, 36.0, 39.0, 41.0, 45.0, 49.0, 55.0, 145.0),
}


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logistic(u: float) -> float:
    """A standard logistic draw from a uniform u in [0, 1)."""
    u = min(max(u, 1e-12), 1 - 1e-12)
    return math.log(u / (1 - u))


def gumbel(u: float) -> float:
    """A standard Gumbel draw from a uniform u in [0, 1)."""
    return -math.log(-math.log(min(max(u, 1e-12), 1 - 1e-12)))


def noise(scorer: str, temperature: float | None, tie_band: float | None
          ) -> tuple[float, float]:
    """The (temperature, tie band) a simulated rater uses: the given ones, else the built-in
    scorer's defaults; a plugged-in scorer has no defaults (ValueError naming the setting)."""
    t, band = DEFAULTS.get(scorer, (None, None))
    t = t if temperature is None else float(temperature)
    band = band if tie_band is None else float(tie_band)
    if t is None or band is None:
        missing = "temperature" if t is None else "tie_band"
        raise ValueError(f"scorer {scorer!r} has no default noise: set the rater's {missing} "
                         "(in the scorer's units)")
    if t < 0 or band < 0:
        raise ValueError("temperature and tie_band must be >= 0")
    return t, band


def tie_groups(scores: list[float], band: float) -> list[list[int]]:
    """Indices of `scores` from the highest down, grouped: a new group starts where the gap
    to the score above is >= band (so a group is chained: neighbours within the band)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and scores[groups[-1][-1]] - scores[i] < band:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def places(groups: list[list[int]], k: int) -> list[int]:
    """Place of each of k responses from groups best first, dense as the rating screens
    store them: ties share one place and the next group takes the next (1, 1, 2)."""
    out = [0] * k
    for place, g in enumerate(groups, 1):
        for i in g:
            out[i] = place
    return out


def calibrated(x: float, quantiles: tuple[float, ...]) -> float:
    """Where x falls in [0, 1] among equally spaced quantiles (linear between them; a value
    equal to a run of equal quantiles falls in the middle of the run)."""
    n = len(quantiles) - 1
    if x <= quantiles[0]:
        return 0.0
    if x >= quantiles[-1]:
        return 1.0
    lo, hi = bisect_left(quantiles, x), bisect_right(quantiles, x)
    if lo != hi:
        return (lo + hi - 1) / 2 / n
    below, above = quantiles[lo - 1], quantiles[lo]
    return (lo - 1 + (x - below) / (above - below)) / n


def scale_point(u: float, low: int, high: int) -> int:
    """The point of a low..high scale for u in [0, 1]: equal shares of [0, 1] per point."""
    points = high - low + 1
    return low + min(points - 1, int(u * points))


def edits(text: str, sentence_scores: list[float], pieces: list[str], rewrite) -> list[tuple]:
    """Candidate corrections of `text` (cut into `pieces`, each scored alone), in the order
    tried: ("drop", text without its lowest-scoring sentence) when it has two or more, then
    ("rewrite", text with that sentence rewritten) when there is a rewriter. Unchanged
    candidates are left out."""
    out = []
    low = min(range(len(pieces)), key=lambda i: sentence_scores[i]) if pieces else 0
    if len(pieces) >= 2:
        out.append(("drop", "".join(p for i, p in enumerate(pieces) if i != low).strip()))
    if rewrite is not None and pieces:
        out.append(("rewrite", "".join(rewrite(p) if i == low else p
                                       for i, p in enumerate(pieces)).strip()))
    return [(how, t) for how, t in out if t.strip() and t.strip() != text.strip()]


@dataclass
class Judgement:
    """What a simulated rater answers to one item, before it is recorded."""

    ask: str
    label: str = ""
    """compare: a label about a/b."""
    ranks: list[int] = field(default_factory=list)
    """rank: the place of each response, in the item's order."""
    value: int | None = None
    """rate: the point on the item's scale."""
    corrected: str | None = None
    """correct: the edited response (None: no edit raises the score, so a skip)."""
    meta: dict = field(default_factory=dict)
    """The scores behind the answer, and the scorer's name."""


class SimulatedRater:
    """Answers by `scorer`; see the module docstring for the noise model of each kind."""

    def __init__(self, scorer: str = "vader", seed: int = 0, temperature: float | None = None,
                 tie_band: float | None = None, name: str | None = None,
                 guidelines: str = "simulated", calibration: list[float] | None = None):
        self.temperature, self.tie_band = noise(scorer, temperature, tie_band)
        self.scorer_name = scorer
        self.scorer = get_scorer(scorer)
        self.calibration = tuple(calibration or CALIBRATION.get(scorer, ()))
        q = self.calibration
        if q and (len(q) < 2 or any(b < a for a, b in zip(q, q[1:])) or q[0] == q[-1]):
            raise ValueError("calibration: expected increasing scores (at least two, first "
                             "below last)")
        self.rewrite = REWRITERS.get(scorer)
        self.seed = seed
        self.name = name or f"sim-{scorer}-{seed}"
        self.guidelines = guidelines
        self.rng = random.Random(seed)

    def _score(self, texts: list[str]) -> list[float]:
        """One scorer call (none for no texts)."""
        return self.scorer(texts) if texts else []

    # ------------------------------------------------------------------ one decision each

    def p_a(self, score_a: float, score_b: float) -> float:
        """Probability of answering "a" outside the tie band."""
        if self.temperature == 0:  # noiseless
            return 1.0 if score_a > score_b else 0.0 if score_a < score_b else 0.5
        return sigmoid((score_a - score_b) / self.temperature)

    def decide(self, score_a: float, score_b: float) -> str:
        """One label from two scores (uses the rater's random stream)."""
        u = self.rng.random()
        if abs(score_a - score_b) < self.tie_band:
            return "tie"
        return "a" if u < self.p_a(score_a, score_b) else "b"

    def order(self, scores: list[float]) -> list[int]:
        """Places of K responses from their scores (one Gumbel draw per tie group)."""
        groups = tie_groups(scores, self.tie_band)
        keys = [sum(scores[i] for i in g) / len(g) + self.temperature * gumbel(self.rng.random())
                for g in groups]
        best_first = sorted(range(len(groups)), key=lambda j: -keys[j])
        return places([groups[j] for j in best_first], len(scores))

    def point(self, score: float, low: int = 0, high: int = 1) -> int:
        """A point of the low..high scale for a score (thumbs: 0..1); see the module
        docstring. A scorer without a calibration cannot rate (ScorerError)."""
        if not self.calibration:
            raise ScorerError(f"scorer {self.scorer_name!r} has no rating calibration: give "
                              "the rater calibration=[scores at equally spaced quantiles]")
        x = score + self.temperature * logistic(self.rng.random())
        return scale_point(calibrated(x, self.calibration), low, high)

    def corrections(self, texts: list[str]) -> list[tuple[str | None, dict]]:
        """(corrected text or None, meta) for each text, with two batched scorer calls."""
        if not texts:
            return []
        pieces = [sentences(t) for t in texts]
        flat = self._score([p for ps in pieces for p in ps] + list(texts))
        cands, start = [], 0
        for t, ps in zip(texts, pieces):
            cands.append(edits(t, flat[start:start + len(ps)], ps, self.rewrite))
            start += len(ps)
        base = flat[start:]
        scored = self._score([t for c in cands for _, t in c])
        out, start = [], 0
        for c, s0 in zip(cands, base):
            meta: dict = {"score": s0, "scorer": self.scorer_name}
            fix = next(((how, t, s) for (how, t), s in zip(c, scored[start:start + len(c)])
                        if s > s0), None)
            start += len(c)
            if fix:
                meta.update(edit=fix[0], corrected_score=fix[2])
            out.append((fix[1] if fix else None, meta))
        return out

    # ------------------------------------------------------------------ items

    def judge_many(self, items: list[Item]) -> list[Judgement]:
        """What the rater answers to each item (batched scorer calls)."""
        return [j for j, _ in self._judged(items)]

    def judge(self, item: Item) -> Judgement:
        return self.judge_many([item])[0]

    def _judged(self, items: list[Item]):
        """(judgement, item) one at a time, so a caller may draw between items from the same
        random stream (the scores and corrections are computed first, in batches)."""
        fixes = iter(self.corrections([it.a for it in items if it.ask == "correct"]))
        flat = self._score([t for it in items if it.ask != "correct" for t in it.responses])
        start = 0
        for it in items:
            s = None
            if it.ask != "correct":
                s, start = flat[start:start + len(it.responses)], start + len(it.responses)
            yield self._judge(it, s, fixes), it

    def _judge(self, it: Item, s: list[float] | None, fixes) -> Judgement:
        name = self.scorer_name
        if it.ask == "compare":
            return Judgement("compare", label=self.decide(s[0], s[1]),
                             meta={"score_a": s[0], "score_b": s[1], "scorer": name})
        if it.ask == "rank":
            return Judgement("rank", ranks=self.order(s), meta={"scores": s, "scorer": name})
        if it.ask == "rate":
            sc = it.rating_scale
            return Judgement("rate", value=self.point(s[0], sc["low"], sc["high"]),
                             meta={"score": s[0], "scorer": name})
        text, meta = next(fixes)
        return Judgement("correct", corrected=text, meta=meta)

    def rate_many(self, items: list[Item]) -> list[Answer]:
        """Records answering many items, of each item's kind (a correction that no edit can
        make is a skipped Correction), with batched scorer calls."""
        out = []
        for j, it in self._judged(items):
            t0 = time.time()
            kw = dict(rater=self.name, rater_kind="simulated", guidelines=self.guidelines,
                      shown_at=t0, meta={**it.meta, **j.meta})
            if j.ask == "compare":
                rec = Comparison.from_item(it, j.label, left=self.rng.choice("ab"), **kw)
            elif j.ask == "rank":
                k = len(it.responses)
                rec = Ranking.from_item(it, j.ranks, shown=self.rng.sample(range(k), k), **kw)
            elif j.ask == "rate":
                rec = Rating.from_item(it, j.value, **kw)
            elif j.corrected is None:
                rec = Correction.from_item(it, "", skipped=True, **kw)
            else:
                rec = Correction.from_item(it, j.corrected, **kw)
            rec.seconds = time.time() - t0
            out.append(rec)
        return out

    def rate(self, item: Item) -> Answer:
        """The record answering one item."""
        return self.rate_many([item])[0]


def make_rater(name: str, seed: int = 0, **kw) -> SimulatedRater:
    """A simulated rater by name: a scorer of `rlhf.raters.scorers` ("vader", "length", or
    `module:function`) with the noise of the module docstring."""
    problem = scorer_problem(name)
    if problem:
        raise ScorerError(problem)
    return SimulatedRater(name, seed, **kw)


def loop_rater(scorer: str, seed: int, temperature: float | None = None,
               tie_band: float | None = None, name: str | None = None):
    """The rater the loop asks: a plugged-in rater class (`module:Class` with `rate_many`,
    made as cls(seed=, name=)), else a SimulatedRater. Returns (rater, the noise it uses:
    {"scorer", "temperature", "tie_band"}, recorded with every round)."""
    obj = resolve(scorer)
    if is_rater_class(obj):
        rater = obj(seed=seed, name=name or f"{obj.__name__}-{seed}")
        rater.name = getattr(rater, "name", None) or name or f"{obj.__name__}-{seed}"
        return rater, {"scorer": scorer, "rater_class": True}
    rater = SimulatedRater(scorer, seed, temperature, tie_band, name)
    return rater, {"scorer": scorer, "temperature": rater.temperature,
                   "tie_band": rater.tie_band}
