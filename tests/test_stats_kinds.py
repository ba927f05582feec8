"""`rlhf stats` on a store with every kind (rlhf.feedback.kind_stats): counts by kind and rater,
Krippendorff's alpha of ratings, Kendall's tau-b of rankings, self-consistency on hidden
repeats, the words corrections changed, seconds by kind, notes (escaped, cut for display only)
; and a store of comparisons alone printed as before."""

from __future__ import annotations

import json

import pytest

from rlhf.cli import main
from rlhf.feedback.agreement import krippendorff_alpha
from rlhf.feedback.kind_stats import COUNTED, kind_stats, shorten
from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating
from rlhf.feedback.stats import compute, render, render_comparisons
from rlhf.feedback.store import ComparisonStore

LIKERT = dict(scale="likert", low=1, high=5, anchors={"1": "bad", "5": "good"})
EVIL = "see \x1b[2J\x1b]0;T\x07 </textarea><script>x()</script> " + "long " * 40 + "END"


def rate(item, rater, value, **kw):
    scale = {} if item.startswith("t") else LIKERT
    return Rating(item_id=item, prompt="P", response=f"resp {item}", value=value, rater=rater,
                  seconds=kw.pop("seconds", 3.0), **scale, **kw)


def rank(item, rater, ranks, **kw):
    return Ranking(item_id=item, prompt="P", responses=["w", "x", "y"], ranks=ranks,
                   rater=rater, seconds=10.0 if rater == "ann" else 20.0, **kw)


def fix(item, rater, before, after, seconds, **kw):
    return Correction(item_id=item, prompt="P", response=before, corrected=after, rater=rater,
                      seconds=seconds, **kw)


def every_kind() -> list:
    ann_r1 = rate("r1", "ann", 5)
    bob_r2 = rate("r2", "bob", 2)
    ann_k1 = rank("k1", "ann", [1, 2, 3])
    ratings = [ann_r1, rate("r1", "bob", 4), rate("r1", "cy", 5),
               rate("r2", "ann", 2), bob_r2,
               Rating(item_id="r2", prompt="P", response="resp r2", value=None, skipped=True,
                      rater="cy", seconds=99.0, **LIKERT),
               rate("r3", "ann", 1), rate("r3", "bob", 3), rate("r3", "cy", 1),
               rate("r4", "ann", 4),                        # one rater: no unit
               rate("t1", "ann", 1), rate("t1", "bob", 0),  # thumbs: its own scale
               rate("r1", "ann", 4, repeat_of=ann_r1.id, served_because="repeat"),
               rate("r2", "bob", 2, repeat_of=bob_r2.id, served_because="repeat")]
    rankings = [ann_k1, rank("k1", "bob", [1, 3, 2]),
                rank("k2", "ann", [1, 2, 2]), rank("k2", "bob", [2, 1, 1]),
                rank("k3", "ann", [1, 1, 1]), rank("k3", "bob", [1, 2, 3]),
                Ranking(item_id="k1", prompt="P", responses=["w", "x", "y"], ranks=[2, 1, 3],
                        rater="ann", repeat_of=ann_k1.id, served_because="repeat")]
    corrections = [fix("c1", "ann", "the cat sat on the mat", "the dog sat on a mat", 30.0),
                   fix("c2", "bob", "a b c", "a b c d e", 50.0),
                   fix("c4", "ann", "one two three four", "one two three five", 10.0),
                   fix("c3", "cy", "x", "", 99.0, skipped=True)]
    comps = [Comparison(item_id="i1", prompt="P", a="x", b="y", label="a", rater="cy",
                        comment="prefer a: kinder", seconds=4.0),
             Comparison(item_id="i2", prompt="P", a="x", b="y", label="skip", rater="ann",
                        seconds=1.0)]
    notes = [Note(text="too\nlong", about=ann_r1.id, item_id="r1", prompt="P", rater="ann"),
             Note(text=EVIL, rater="bob"),
             Note(text="about something undone", about="gone", rater="cy")]
    return ratings + rankings + corrections + comps + notes


def test_every_kind_by_hand():
    k = kind_stats(every_kind())
    assert k["counts"]["overall"] == {
        "comparison": 2, "ranking": 7, "rating": 14, "correction": 4,
        "note": 4,  # 3 notes and cy's comment
        "skip": 3,  # cy's rating and correction, ann's comparison
        "unknown": 0}
    assert k["counts"]["raters"]["ann"] == dict(zip(COUNTED, (1, 4, 6, 2, 1, 1, 0)))
    assert k["counts"]["raters"]["cy"] == dict(zip(COUNTED, (1, 0, 3, 1, 2, 2, 0)))
    assert k["median_seconds"] == {"comparison": 4.0, "ranking": 15.0, "rating": 3.0,
                                   "correction": 30.0}
    # likert: units r1 (5, 4, 5), r2 (2, 2), r3 (1, 3, 1): first answers, no skip, no repeat
    (likert, thumbs) = k["ratings"]
    units = [[5, 4, 5], [2, 2], [1, 3, 1]]
    assert likert == {"scale": "likert", "low": 1, "high": 5, "items": 3, "raters": 3,
                      "values": 8, "alpha": {m: krippendorff_alpha(units, m)
                                             for m in ("nominal", "ordinal", "interval")}}
    # interval by hand: sum o_ck (c-k)^2 = 4 * 1/2 * 1 + 4 * 1/2 * 4 = 10;
    # sum n_c n_k (c-k)^2 = 302 with n_1 = n_2 = n_5 = 2, n_3 = n_4 = 1: 1 - 7 * 10 / 302
    assert likert["alpha"]["interval"] == pytest.approx(1 - 70 / 302)
    # ordinal by hand: delta^2(5,4) = (n_4 + n_5 - 3/2)^2 = 2.25, delta^2(1,3) = (5 - 3/2)^2
    # = 12.25: observed 2 * 2.25 + 2 * 12.25 = 29; expected 2 * 324 = 648: 1 - 7 * 29 / 648
    assert likert["alpha"]["ordinal"] == pytest.approx(1 - 7 * 29 / 648)
    # thumbs: one unit (1, 0): o_01 = o_10 = 1, n_0 = n_1 = 1: 1 - 1 * 2 / 2 = 0
    assert thumbs["scale"] == "thumbs" and thumbs["items"] == 1
    assert thumbs["alpha"] == {"nominal": 0.0, "ordinal": 0.0, "interval": 0.0}
    # rankings: k1 tau 1/3 (one of three pairs swapped), k2 -1 (two discordant pairs, one tied
    # in both), k3 none (ann ties everything)
    r = k["rankings"]
    assert r["n"] == 2 and r["tau"] == pytest.approx((1 / 3 - 1) / 2)
    assert r["pairs"] == [{"raters": ["ann", "bob"], "n": 2, "tau": pytest.approx(-1 / 3)}]
    # repeats: ann's r1 5 -> 4, bob's r2 2 -> 2; ann's k1 [1,2,3] -> [2,1,3]: tau 1/3
    rep = k["repeats"]
    assert rep["ratings"] == {"n": 2, "same": 0.5, "mean_abs_diff": 0.5}
    assert rep["rankings"] == {"n": 1, "tau": pytest.approx(1 / 3)}
    assert rep["raters"]["ann"]["ratings"] == {"n": 1, "same": 0.0, "mean_abs_diff": 1.0}
    assert rep["raters"]["bob"]["rankings"] == {"n": 0, "tau": None}
    # corrections: 2/6, 2/3, 1/4 of the words changed; seconds 30, 50, 10 (skip left out)
    c = k["corrections"]
    assert c["n"] == 3 and c["median_seconds"] == 30.0
    assert c["changed_median"] == pytest.approx(1 / 3)
    assert c["changed_mean"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 4) / 3)
    n = k["notes"]
    assert n["n"] == 4 and n["raters"] == {"ann": 1, "bob": 1, "cy": 2}
    assert [(x["rater"], x["about_kind"]) for x in n["latest"]] == [
        ("cy", "?"), ("bob", None), ("ann", "rating"), ("cy", "comparison")]
    assert n["latest"][1]["text"] == EVIL  # kept whole


def test_shorten_escapes_and_marks_the_cut():
    assert shorten("a\n  b", 10) == "a b"
    assert shorten("abcdefghij", 10) == "abcdefghij"
    assert shorten("abcdefghijk", 10) == "abcdefghi…"
    assert shorten("\x1b[2Jx", 20) == "\\x1b[2Jx"


def test_stats_cli_on_a_store_of_every_kind(tmp_path, capsys):
    store = tmp_path / "s.jsonl"
    ComparisonStore(store).extend(every_kind())
    with open(store, "a") as f:  # a record of a type this version does not know
        f.write(json.dumps({"type": "audio", "schema": 9, "id": "u1", "rater": "dee"}) + "\n")
    assert main(["stats", str(store)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    heads = "".join(f"{h:>11}" for h in ("comparison", "ranking", "rating", "correction",
                                         "note", "skip", "unknown"))
    assert f"{'rater':<20}{heads}" in out
    assert f"{'ann':<20}" + "".join(f"{v:>11}" for v in (1, 4, 6, 2, 1, 1, 0)) in out
    assert f"{'dee':<20}" + "".join(f"{v:>11}" for v in (0, 0, 0, 0, 0, 0, 1)) in out
    assert f"{'all':<20}" + "".join(f"{v:>11}" for v in (2, 7, 14, 4, 4, 3, 1)) in out
    assert "unknown record types (kept, not read): audio 1" in out
    assert ("median seconds per item: comparison 4.0, ranking 15.0, rating 3.0, "
            "correction 30.0") in out
    assert "ratings on likert (1-5): items rated by 2+ raters: 3 (3 raters, 8 values)" in out
    assert (f"  Krippendorff's alpha: ordinal {1 - 7 * 29 / 648:.3f}, interval "
            f"{1 - 70 / 302:.3f}, nominal ") in out
    assert "ratings on thumbs (0-1): items rated by 2+ raters: 1 (2 raters, 2 values)" in out
    assert ("rankings: Kendall's tau-b between raters on shared items: mean -0.333 over 2 "
            "(rater pair, item)s") in out
    assert "  ann: ratings 1 (same 0.0%, mean |diff| 1.00); rankings 1 (tau 0.333)" in out
    assert "  all: ratings 2 (same 50.0%, mean |diff| 0.50); rankings 1 (tau 0.333)" in out
    assert "corrections: 3 (median 30.0 s each); words changed: median 33.3%, mean 41.7%" in out
    assert "notes: 4 (ann 1, bob 1, cy 2); the latest 4, newest first:" in out
    assert f"  {'ann':<16}{'on rating':<16}too long" in out
    assert f"  {'cy':<16}{'on (not found)':<16}about something undone" in out
    evil_line = next(x for x in out.splitlines() if x.startswith(f"  {'bob':<16}alone"))
    assert evil_line.endswith("…") and "END" not in evil_line
    assert "see \\x1b[2J\\x1b]0;T\\x07 </textarea>" in evil_line
    assert len(evil_line) == 2 + 16 + 16 + 70
    # the stored note is untouched
    stored = [a for a in ComparisonStore(store).answers() if isinstance(a, Note)]
    assert EVIL in [x.text for x in stored]

    assert main(["stats", str(store), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n"] == 2 and s["kinds"]["counts"]["overall"]["unknown"] == 1
    assert s["kinds"]["counts"]["unknown_types"] == {"audio": 1}
    assert EVIL in [x["text"] for x in s["kinds"]["notes"]["latest"]]


def test_a_store_without_comparisons_shows_only_the_kinds():
    out = render(compute([r for r in every_kind() if not isinstance(r, Comparison)]))
    assert out.startswith("answers by kind") and "left share" not in out


def test_comparisons_alone_print_as_before_and_comments_show_as_notes():
    comps = [Comparison(item_id="i1", prompt="P", a="x", b="y", label="a", rater="ann"),
             Comparison(item_id="i1", prompt="P", a="x", b="y", label="b", rater="bob")]
    s = compute(comps)
    assert render(s) == render_comparisons(s)
    assert "answers by kind" not in render(s) and "notes:" not in render(s)
    comps[1].comment = "b reads better"
    s = compute(comps)
    assert render(s) == render_comparisons(s) + (
        "\n\nnotes: 1 (bob 1); the latest 1, newest first:\n"
        f"  {'bob':<16}{'on comparison':<16}b reads better")
