"""Simulated raters (seeded Bradley-Terry noise around VADER) and `rlhf stats` (hand-computed
kappa, position bias, self-consistency on hidden repeats, gold accuracy, agreement)."""

from __future__ import annotations

import json
import math

import pytest

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import Comparison
from rlhf.feedback.stats import agreement, cohen_kappa, compute, position_bias, self_consistency
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.rate import run_simulated
from rlhf.raters.simulated import SimulatedRater, make_rater, sigmoid

HAPPY = "They laughed and played all day. It was a wonderful, happy, great day!"
SAD = "The dog was lost and sad. Everyone cried. It was a terrible, awful day."
PLAIN = "The cat sat on the mat."


def items(n: int) -> list[Item]:
    return [Item(f"Story {i}:", HAPPY if i % 2 else PLAIN, SAD if i % 3 else PLAIN,
                 id=f"it{i}") for i in range(n)]


def test_cohen_kappa_by_hand():
    # 2x2 table: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    x = ["a"] * 25 + ["b"] * 25
    y = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    assert cohen_kappa(x, y) == pytest.approx(0.4)
    # three labels: p_o 3/4, p_e (2*1 + 1*2 + 1*1)/16 = 5/16 -> kappa 7/11
    assert cohen_kappa(["a", "a", "b", "tie"], ["a", "b", "b", "tie"]) == pytest.approx(7 / 11)
    assert cohen_kappa([], []) is None and cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_simulated_rater_is_seeded():
    r1, r2, r3 = (make_rater("vader", seed=s) for s in (7, 7, 8))
    a1, a2, a3 = (r.rate_many(items(60)) for r in (r1, r2, r3))
    assert [(c.label, c.left) for c in a1] == [(c.label, c.left) for c in a2]
    assert [(c.label, c.left) for c in a1] != [(c.label, c.left) for c in a3]
    assert all(c.rater_kind == "simulated" and c.rater == "sim-vader-7" for c in a1)
    with pytest.raises(KeyError):
        make_rater("nobody")


def test_prefers_the_happier_story():
    comps = make_rater("vader", seed=0).rate_many([Item("p", HAPPY, SAD)] * 200)
    assert sum(c.label == "a" for c in comps) >= 195
    assert comps[0].meta["score_a"] > 0.5 > -0.5 > comps[0].meta["score_b"]


def test_bradley_terry_frequency_and_tie_band():
    r = SimulatedRater("vader", seed=1, temperature=0.25, tie_band=0.05)
    n = 4000
    share_a = sum(r.decide(0.5, 0.25) == "a" for _ in range(n)) / n
    expected = sigmoid(1.0)  # 0.731
    assert abs(share_a - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    assert {r.decide(0.30, 0.27) for _ in range(50)} == {"tie"}
    assert "tie" not in {r.decide(0.30, 0.40) for _ in range(50)}  # outside the band


def comp(item, rater, label, left="a", **kw):
    return Comparison(item_id=item, prompt="p", a="x", b="y", label=label, left=left,
                      rater=rater, **kw)


def test_stats_by_hand():
    first = comp("i1", "ann", "a", left="a", seconds=2.0)
    comps = [
        first,
        comp("i2", "ann", "b", left="a", seconds=4.0),
        comp("i3", "ann", "a", left="b", seconds=6.0, gold="a"),
        comp("i1", "ann", "a", left="b", repeat_of=first.id, served_because="repeat"),
        comp("i1", "bob", "a", left="b"), comp("i2", "bob", "a"), comp("i3", "bob", "skip"),
    ]
    # ann chose the left side in i1 (a on left) only; right in i2, i3 and the repeat
    assert position_bias([c for c in comps if c.rater == "ann"]) == (0.25, 4)
    assert self_consistency(comps) == (1.0, 1)
    rows = agreement(comps)
    assert rows == [{"raters": ["ann", "bob"], "n": 2, "agreement": 0.5,
                     "kappa": pytest.approx(cohen_kappa(["a", "b"], ["a", "a"]))}]
    s = compute(comps)
    assert s["raters"]["ann"]["gold_accuracy"] == 1.0 and s["raters"]["ann"]["n_gold"] == 1
    assert s["raters"]["ann"]["median_seconds"] == 4.0
    assert s["labels"] == {"a": 5, "b": 1, "skip": 1} and s["items"] == 3


def test_simulated_session_and_stats_cli(tmp_path, capsys):
    write_queue(tmp_path / "q.jsonl", items(40))
    store = tmp_path / "s.jsonl"
    n = run_simulated(tmp_path / "q.jsonl", store, "vader", seed=3, repeat_rate=0.5,
                      overlap=2)
    run_simulated(tmp_path / "q.jsonl", store, "vader", seed=4, repeat_rate=0.0, overlap=2)
    comps = ComparisonStore(store).load()
    reps = [c for c in comps if c.repeat_of]
    assert n == 40 + len(reps) and len(reps) >= 10
    from rlhf.cli import main

    assert main(["stats", str(store), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    s = json.loads(out)
    ann = s["raters"]["sim-vader-3"]
    assert ann["n_repeats"] == len(reps) and ann["self_consistency"] > 0.6
    assert 0.2 < ann["left_share"] < 0.8
    assert s["agreement"][0]["n"] == 40 and s["agreement"][0]["agreement"] > 0.6
    assert main(["stats", str(store)]) == 0
    assert "agreement on shared items" in capsys.readouterr().out


def test_rate_cli_with_a_simulated_rater_and_stats_on_a_damaged_store(tmp_path, capsys):
    from rlhf.cli import main

    write_queue(tmp_path / "q.jsonl", items(10))
    assert main(["rate", str(tmp_path / "q.jsonl"), "--simulated", "length",
                 "--repeat-rate", "0"]) == 0
    store = tmp_path / "q.comparisons.jsonl"  # the default store beside the queue
    assert "10 simulated answers" in capsys.readouterr().out
    with open(store, "a") as f:
        f.write('{"type": "comparison", "label": "a"\n')
    assert main(["stats", str(store), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 10
    assert f"{store}:11:" in captured.err


def test_simulated_raters_of_every_kind_measured_by_stats(tmp_path, capsys):
    """Two seeded raters of one scorer over a queue of every kind: `rlhf stats` finds their
    ratings and rankings agreeing above chance, the hidden repeats, and the corrections."""
    from rlhf.cli import main

    texts = [HAPPY, SAD, PLAIN, "It was fine. The food was cold and awful.", "A nice walk."]
    likert = {"name": "likert", "low": 1, "high": 7, "anchors": {"1": "bad", "7": "good"}}
    queue = []
    for i in range(40):
        ask = ("compare", "rank", "rate", "correct")[i % 4]
        a, b, c = (texts[(i + j) % 5] for j in range(3))
        queue.append(Item(f"Story {i}:", a, b if ask in ("compare", "rank") else "",
                          id=f"it{i}", ask=ask, others=[c] if ask == "rank" else [],
                          scale=likert if ask == "rate" else None))
    write_queue(tmp_path / "q.jsonl", queue)
    store = tmp_path / "s.jsonl"
    run_simulated(tmp_path / "q.jsonl", store, "vader", seed=3, repeat_rate=0.5, overlap=2)
    run_simulated(tmp_path / "q.jsonl", store, "vader", seed=4, repeat_rate=0.0, overlap=2)
    assert main(["stats", str(store), "--json"]) == 0
    k = json.loads(capsys.readouterr().out)["kinds"]
    assert {kind: k["counts"]["raters"]["sim-vader-4"][kind]
            for kind in ("comparison", "ranking", "rating", "correction")} == {
        "comparison": 10, "ranking": 10, "rating": 10, "correction": 10}
    (ratings,) = k["ratings"]
    assert ratings["items"] == 10 and ratings["raters"] == 2
    assert ratings["alpha"]["ordinal"] > ratings["alpha"]["nominal"]  # near misses count
    assert ratings["alpha"]["ordinal"] > 0.3 and k["rankings"]["tau"] > 0.3
    assert k["rankings"]["n"] == 10
    rep = k["repeats"]["raters"]["sim-vader-3"]
    assert rep["ratings"]["n"] > 0 and rep["rankings"]["n"] > 0
    assert k["corrections"]["n"] > 0 and 0 < k["corrections"]["changed_median"] <= 1
    assert main(["stats", str(store)]) == 0
    out = capsys.readouterr().out
    assert "ratings on likert (1-7): items rated by 2+ raters: 10 (2 raters, 20 values)" in out
