"""Simulated raters for every kind of item: rankings (noiseless order, tie band, Plackett-Luce
frequencies), ratings (calibrated points, thumbs from the median), corrections that edit the
shown response (vader drops the sad sentence, or rewrites a lone one), plugged-in scorers, a
seed that reproduces everything, and `rlhf rate --simulated` over a queue of every kind."""

from __future__ import annotations

import math
import random
import re
import statistics

import pytest
from conftest import TEXT, need_shared

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import Comparison, Correction, Ranking, Rating
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.rate import run_simulated
from rlhf.raters.scorers import OPPOSITES, ScorerError, _vader, sentences, vader, vader_rewrite
from rlhf.raters.simulated import (
    SimulatedRater,
    calibrated,
    make_rater,
    scale_point,
    sigmoid,
    tie_groups,
)

HAPPY = "The sun was warm and the children played happily in the park."
SAD = "Then the dog was lost and everyone cried."
LIKERT = {"name": "likert7", "low": 1, "high": 7, "anchors": {"1": "very bad", "7": "very good"}}


def words(texts: list[str]) -> list[float]:
    """A plugged-in scorer of this test: the more words the better."""
    return [float(len(t.split())) for t in texts]


WORDS = "test_simulated_kinds:words"


def within(share: float, p: float, n: int) -> bool:
    return abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_a_noiseless_rater_ranks_by_score_exactly():
    r = SimulatedRater("vader", temperature=0, tie_band=0)
    assert r.order([0.1, 0.9, -0.3, 0.5]) == [3, 1, 4, 2]
    assert r.order([0.2, 0.7]) == [2, 1]


def test_ties_within_the_band_share_a_place():
    r = SimulatedRater("vader", temperature=0, tie_band=0.05)
    # 0.50 and 0.52 are 0.02 apart: one place (2); places are dense, so the next is 3
    assert r.order([0.50, 0.52, 0.2, 0.9]) == [2, 2, 3, 1]
    # chained: 0.08 and 0.0 are 0.08 apart, but each is within 0.05 of 0.04
    assert tie_groups([0.0, 0.04, 0.08, 0.5], 0.05) == [[3], [2, 1, 0]]
    assert r.order([0.0, 0.04, 0.08, 0.5]) == [2, 2, 2, 1]
    noisy = SimulatedRater("vader", seed=3, temperature=0.25, tie_band=0.05)
    assert {tuple(noisy.order([0.30, 0.27, 0.28])) for _ in range(30)} == {(1, 1, 1)}


def test_rankings_follow_plackett_luce():
    r = SimulatedRater("vader", seed=1, temperature=0.25, tie_band=0.0)
    n = 4000
    firsts = [r.order([0.5, 0.25, 0.0]).index(1) for _ in range(n)]
    # P(first = 0) = e^2 / (e^2 + e^1 + e^0) with weights exp(score / 0.25)
    p0 = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    assert within(firsts.count(0) / n, p0, n)
    # two responses: the comparison's Bradley-Terry probability sigmoid(1)
    share = sum(r.order([0.5, 0.25]) == [1, 2] for _ in range(n)) / n
    assert within(share, sigmoid(1.0), n)


def test_calibrated_points_by_hand():
    assert calibrated(3.5, (0.0, 7.0)) == 0.5
    assert calibrated(0.5, (0.0, 1.0, 1.0, 2.0)) == pytest.approx(1 / 6)
    assert calibrated(1.0, (0.0, 1.0, 1.0, 2.0)) == 0.5  # the middle of a run of equal ones
    assert calibrated(-5, (0.0, 1.0)) == 0.0 and calibrated(5, (0.0, 1.0)) == 1.0
    assert [scale_point(u, 1, 7) for u in (0.0, 0.142, 0.143, 0.5, 0.99, 1.0)] == \
        [1, 1, 2, 4, 7, 7]
    r = make_rater(WORDS, temperature=0, tie_band=0, calibration=[0.0, 7.0])
    assert [r.point(x, 1, 7) for x in (0.0, 3.5, 6.99, 100.0)] == [1, 4, 7, 7]
    # vader -0.5994 lies between the 5% and 10% quantiles (u = 0.062: point 1 of 7);
    # 0.7845 between the 65% and 70% ones (u = 0.676: 1 + floor(4.73) = 5)
    noiseless = SimulatedRater("vader", temperature=0)
    assert [noiseless.point(x, 1, 7) for x in (-0.5994, 0.7845)] == [1, 5]


def test_thumbs_from_a_threshold():
    r = make_rater(WORDS, temperature=0, tie_band=0, calibration=[0.0, 10.0])  # median 5
    assert [r.point(x) for x in (4.9, 5.0, 9.0)] == [0, 1, 1]
    assert SimulatedRater("vader", temperature=0).point(0.6) == 0  # vader's median is 0.611
    assert SimulatedRater("vader", temperature=0).point(0.62) == 1
    noisy = make_rater(WORDS, seed=2, temperature=2.0, tie_band=0, calibration=[0.0, 10.0])
    n = 4000
    ups = sum(noisy.point(7.0) for _ in range(n)) / n
    assert within(ups, sigmoid((7.0 - 5.0) / 2.0), n)
    with pytest.raises(ScorerError, match="no rating calibration"):
        make_rater(WORDS, temperature=0, tie_band=0).point(3.0)


def test_sentences_keep_every_character_and_open_quotes():
    text = 'She said, "Stop. Wait!" Then she ran.  It was late!\nThe end'
    assert sentences(text) == ['She said, "Stop. Wait!" ', "Then she ran.  ", "It was late!\n",
                               "The end"]
    assert "".join(sentences(text)) == text and sentences("") == []


def test_the_vader_correction_removes_exactly_the_sad_sentence():
    story = f"{HAPPY} {SAD}"
    [(text, meta)] = SimulatedRater("vader").corrections([story])
    assert text == HAPPY
    assert meta["edit"] == "drop" and meta["corrected_score"] == vader([HAPPY])[0]
    assert vader([text])[0] > vader([story])[0] == meta["score"]


def test_a_lone_sentence_is_rewritten_and_a_neutral_one_skipped():
    r = SimulatedRater("vader")
    [(one, meta), (none, _), (mia, _)] = r.corrections(
        ["The dog was lost and sad.", "The cat sat on the mat.", "Mia was sad."])
    assert one == "The dog was found and happy." and meta["edit"] == "rewrite"
    assert meta["corrected_score"] > meta["score"]
    assert none is None  # nothing raises a neutral sentence: the rater skips
    assert mia == "Mia was happy."  # a name VADER scores negative stays
    assert vader_rewrite("Sad Tom was not hurt.") == "Sad Tom was not hurt."


def test_every_opposite_scores_higher():
    lexicon = _vader().lexicon
    for bad, good in OPPOSITES.items():
        assert lexicon[bad] < 0 <= lexicon.get(good, 0.0), (bad, good)


def test_a_plugged_in_scorer_ranks_rates_and_corrects_by_dropping():
    r = make_rater(WORDS, seed=0, temperature=0, tie_band=0, calibration=[0.0, 10.0])
    items = [Item("p", "one two", "one two three", ask="rank", others=["one"]),
             Item("p", "one two three four five six", ask="rate", scale=LIKERT),
             # words: the lowest-scoring sentence is the shortest; dropping it loses words
             Item("p", "Short one. A longer second sentence here.", ask="correct")]
    rank, rate, fix = r.rate_many(items)
    assert rank.ranks == [2, 1, 3] and rate.value == 5  # 1 + floor(0.6 * 7)
    assert isinstance(fix, Correction) and fix.skipped  # no rewriter, and a drop scores less
    assert make_rater("length").rewrite is None and make_rater("vader").rewrite is vader_rewrite


def mixed_items() -> list[Item]:
    return [Item("p0", HAPPY, SAD, id="c0"),
            Item("p1", SAD, HAPPY, ask="rank", others=[f"{HAPPY} {SAD}", "The cat sat."],
                 id="r1"),
            Item("p2", HAPPY, ask="rate", id="t2"),
            Item("p3", SAD, ask="rate", scale=LIKERT, id="l3"),
            Item("p4", f"{HAPPY} {SAD}", ask="correct", id="x4"),
            Item("p5", "The cat sat on the mat.", ask="correct", id="y5")]


def payload(rec) -> tuple:
    return tuple(getattr(rec, k, None) for k in ("label", "left", "ranks", "shown", "value",
                                                 "corrected", "skipped"))


def test_every_kind_from_rate_many_and_reproducible_with_a_seed():
    recs = make_rater("vader", seed=5).rate_many(mixed_items())
    assert [type(r) for r in recs] == [Comparison, Ranking, Rating, Rating, Correction,
                                       Correction]
    assert all(r.rater == "sim-vader-5" and r.rater_kind == "simulated" for r in recs)
    assert recs[0].label == "a" and recs[1].ranks.index(1) in (1, 2)  # the happy ones
    assert recs[2].value in (0, 1) and recs[3].value in (1, 2)  # SAD: 1 without noise
    assert recs[4].corrected == HAPPY and recs[5].skipped
    assert sorted(recs[1].shown) == [0, 1, 2, 3]
    again = make_rater("vader", seed=5).rate_many(mixed_items())
    assert [payload(r) for r in again] == [payload(r) for r in recs]
    others = [make_rater("vader", seed=s).rate_many(mixed_items() * 5) for s in (6, 7)]
    assert [payload(r) for r in others[0]] != [payload(r) for r in others[1]]


def test_comparisons_draw_as_before():
    """Label then side from one random.Random(seed), item after item (as earlier versions)."""
    items = [Item("p", HAPPY, SAD), Item("p", SAD, HAPPY), Item("p", SAD, SAD)] * 10
    rng = random.Random(11)
    expected = []
    for it in items:
        sa, sb = vader([it.a, it.b])
        u = rng.random()
        label = "tie" if abs(sa - sb) < 0.05 else "a" if u < sigmoid((sa - sb) / 0.25) else "b"
        expected.append((label, rng.choice("ab")))
    got = make_rater("vader", seed=11).rate_many(items)
    assert [(c.label, c.left) for c in got] == expected


def test_rate_simulated_stores_one_record_of_each_kind_per_item(tmp_path, capsys):
    from rlhf.cli import main

    queue = tmp_path / "q.jsonl"
    write_queue(queue, mixed_items())
    assert main(["rate", str(queue), "--simulated", "vader", "--repeat-rate", "0"]) == 0
    assert "6 simulated answers" in capsys.readouterr().out
    answers = ComparisonStore(tmp_path / "q.comparisons.jsonl").answers()
    kinds = {a.item_id: (a.kind, a.skip) for a in answers}
    assert len(answers) == 6 and kinds == {
        "c0": ("comparison", False), "r1": ("ranking", False), "t2": ("rating", False),
        "l3": ("rating", False), "x4": ("correction", False), "y5": ("correction", True)}
    by_id = {a.item_id: a for a in answers}
    assert by_id["x4"].corrected == HAPPY and by_id["x4"].meta["edit"] == "drop"
    assert by_id["l3"].scale == "likert7" and by_id["l3"].value in (1, 2)
    r = by_id["r1"]  # places given in the order shown land on the right responses
    assert r.ranks[r.meta["scores"].index(min(r.meta["scores"]))] == 4
    assert all(a.rater == "sim-vader-0" for a in answers)


def test_hidden_repeats_of_every_kind_but_corrections(tmp_path):
    queue = tmp_path / "q.jsonl"
    write_queue(queue, mixed_items())
    store = tmp_path / "s.jsonl"
    n = run_simulated(queue, store, "vader", seed=1, repeat_rate=1.0, repeat_gap=0)
    answers = ComparisonStore(store).answers()
    repeats = [a for a in answers if a.repeat_of]
    # every answered item but the corrections and the skip comes back once
    assert n == len(answers) == 6 + 4
    assert sorted(a.item_id for a in repeats) == ["c0", "l3", "r1", "t2"]


def paragraphs() -> list[str]:
    need_shared(TEXT)
    text = TEXT.read_text(encoding="utf-8")
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def test_the_documented_figures():
    """The figures of rlhf.raters.simulated's docstring, measured again (to +-0.02)."""
    paras = paragraphs()
    score = dict(zip(paras, vader(paras)))
    rng = random.Random(0)
    sets = [rng.sample(paras, 4) for _ in range(2000)]
    r0, r1 = SimulatedRater("vader", 0, temperature=0), SimulatedRater("vader", 1)
    first = whole = 0
    for s in sets:
        a, b = r0.order([score[p] for p in s]), r1.order([score[p] for p in s])
        first += [i for i in range(4) if a[i] == 1] == [i for i in range(4) if b[i] == 1]
        whole += a == b
    assert first / 2000 == pytest.approx(0.66, abs=0.02)
    assert whole / 2000 == pytest.approx(0.47, abs=0.02)
    noiseless = [r0.point(score[p]) for p in paras]
    noisy = [r1.point(score[p]) for p in paras]
    assert statistics.mean(a == b for a, b in zip(noiseless, noisy)) == pytest.approx(
        0.77, abs=0.02)
    fixes = SimulatedRater("vader").corrections(paras)
    gains = [m["corrected_score"] - m["score"] for t, m in fixes if t]
    assert len(gains) / len(paras) == pytest.approx(0.29, abs=0.02)
    assert statistics.mean(gains) == pytest.approx(0.34, abs=0.02)
