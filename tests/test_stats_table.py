"""`rlhf stats` as a table: labels with shares, the strength breakdown, the overall left share,
a warning under small samples, the items raters disagreed on; names and texts shown inert."""

from __future__ import annotations

from rlhf.cli import main
from rlhf.feedback.records import Comparison
from rlhf.feedback.stats import compute, disagreements, strengths
from rlhf.feedback.store import ComparisonStore


def comp(item, label, rater, left="a", strength=None, prompt="p"):
    return Comparison(item_id=item, prompt=prompt, a="x", b="y", label=label, left=left,
                      strength=strength, rater=rater, served_because="random")


def test_table_strengths_left_share_warning_and_disagreements(tmp_path, capsys):
    evil = "eve\x1b[2J\x1b]0;T\x07"
    comps = [comp("i1", "a", "ann", "a", "much"), comp("i1", "b", "bob", "b"),   # disagree
             comp("i2", "a", "ann", "b", "slightly"), comp("i2", "a", evil, "a", "much"),
             comp("i3", "tie", "ann"), comp("i3", "tie", "bob"),               # agree
             comp("i4", "skip", "bob"),
             comp("i5", "b", evil, "a", prompt="hello \x1b[31mred")]
    # sided preferences: ann i1 a/left a (left), bob i1 b/left b (left), ann i2 a/left b
    # (right), eve i2 a/left a (left), eve i5 b/left a (right) -> 3 of 5 left
    s = compute(comps)
    assert s["overall"]["left_share"] == 3 / 5 and s["overall"]["n_sided"] == 5
    assert strengths(comps) == {"slightly": 1, "much": 2, "unsaid": 2}
    assert disagreements(comps) == [{"item_id": "i1", "prompt": "p",
                                     "labels": {"ann": "a", "bob": "b"}}]
    store = tmp_path / "s.jsonl"
    ComparisonStore(store).extend(comps)
    assert main(["stats", str(store)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "eve\\x1b[2J\\x1b]0;T\\x07" in out
    # labels: a 3 (ann i1, ann i2, eve i2), b 2, tie 2, skip 1 of 8
    assert f"{'a':<12}{3:>7}{'37.5%':>9}" in out and f"{'tie':<12}{2:>7}{'25.0%':>9}" in out
    assert f"{'skip':<12}{1:>7}{'12.5%':>9}" in out
    assert "overall left share: 60.0% of 5 preferences" in out
    assert "warning: the left share rests on 5 answers" in out
    assert "items raters disagreed on (1):" in out and "ann: a, bob: b" in out
    assert f"  {'much':<10}{2:>7}{'40.0%':>9}" in out  # 2 of 5 a/b preferences
