"""Every kind of answer: hand-made records give hand-written training rows; a store holding
every kind survives SIGKILL mid-write; schema-1 stores read unchanged; unknown records kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest

from rlhf.config import ConfigError, load_config
from rlhf.feedback import stats
from rlhf.feedback.derive import (
    PreferencePair,
    SFTExample,
    UnpairedRow,
    both_bad_rows,
    correction_pair,
    correction_sft,
    ranking_pairs,
    rating_pairs,
    rating_row,
    to_pairs,
    training_data,
)
from rlhf.feedback.items import Item
from rlhf.feedback.records import (
    SCHEMA,
    Comparison,
    Correction,
    Note,
    Ranking,
    Rating,
    RecordError,
    Unknown,
    notes,
)
from rlhf.feedback.store import ComparisonStore
from rlhf.loop.config import LoopConfig
from rlhf.raters.session import Refused, Session

LIKERT = {"name": "likert7", "low": 1, "high": 7,
          "anchors": {"1": "very bad", "4": "acceptable", "7": "excellent"}}


def ranking(ranks, **kw):
    return Ranking(item_id="r1", prompt="P", responses=["w", "x", "y", "z"], ranks=ranks,
                   group="g", **kw)


def test_a_ranking_gives_k_choose_2_pairs_that_count_as_one_judgement():
    r = ranking([2, 1, 3, 1])  # x and z tied first, w second, y last
    w = 1 / 6
    assert ranking_pairs(r) == [
        PreferencePair("P", "x", "w", 1.0, None, "g", w, "ranking"),
        PreferencePair("P", "w", "y", 1.0, None, "g", w, "ranking"),
        PreferencePair("P", "z", "w", 1.0, None, "g", w, "ranking"),
        PreferencePair("P", "x", "y", 1.0, None, "g", w, "ranking"),
        PreferencePair("P", "x", "z", 0.5, None, "g", w, "ranking"),
        PreferencePair("P", "z", "y", 1.0, None, "g", w, "ranking")]
    assert sum(p.weight for p in ranking_pairs(r)) == pytest.approx(1.0)
    assert [(p.chosen, p.rejected) for p in ranking_pairs(r, ties="drop")] == [
        ("x", "w"), ("w", "y"), ("z", "w"), ("x", "y"), ("z", "y")]
    assert ranking_pairs(ranking([], skipped=True)) == []


def test_corrections_ratings_and_both_bad_give_their_rows():
    c = Correction(item_id="c1", prompt="P", response="The cat was sad.",
                   corrected="The cat was happy.", group="g")
    assert correction_sft(c) == [SFTExample("P", "The cat was happy.", "g")]
    assert correction_pair(c) == [PreferencePair("P", "The cat was happy.", "The cat was sad.",
                                                 1.0, None, "g", 1.0, "correction")]
    demo = Correction(item_id="d", prompt="P", response="", corrected="Written.", group="g")
    assert correction_pair(demo) == [] and correction_sft(demo) == [
        SFTExample("P", "Written.", "g")]
    up = Rating(item_id="t", prompt="P", response="r", value=1, group="g")
    down = Rating(item_id="t", prompt="P", response="r", value=0, group="g")
    assert rating_row(up) == [UnpairedRow("P", "r", True, "g", "rating")]
    assert rating_row(down) == [UnpairedRow("P", "r", False, "g", "rating")]
    scale = dict(scale="likert7", low=1, high=7, anchors=LIKERT["anchors"])
    six, two, four = (Rating(item_id=f"l{v}", prompt="Q", response=f"r{v}", value=v,
                             rater="ann", **scale) for v in (6, 2, 4))
    assert [r.label for r in rating_row(six) + rating_row(two)] == [True, False]
    assert rating_row(four) == []  # the middle of the scale is neutral
    bob = Rating(item_id="l9", prompt="Q", response="r2", value=7, rater="bob", **scale)
    # pairs within one rater's ratings of one prompt; bob's 7 is never set against ann's 6
    assert rating_pairs([six, two, four, bob]) == [
        PreferencePair("Q", "r4", "r2", 1.0, None, "Q", 1.0, "rating"),
        PreferencePair("Q", "r6", "r2", 1.0, None, "Q", 1.0, "rating"),
        PreferencePair("Q", "r6", "r4", 1.0, None, "Q", 1.0, "rating")]
    bad = Comparison(item_id="b", prompt="P", a="x", b="y", label="both_bad", group="g")
    assert both_bad_rows(bad) == [UnpairedRow("P", "x", False, "g", "both_bad"),
                                  UnpairedRow("P", "y", False, "g", "both_bad")]
    assert to_pairs([bad]) == [PreferencePair("P", "x", "y", 0.5, None, "g")]


def test_training_data_from_a_mixed_store_skips_give_nothing(tmp_path):
    store = ComparisonStore(tmp_path / "s.jsonl")
    comp = Comparison(item_id="i0", prompt="P", a="x", b="y", label="b", group="g")
    note = Note(text="y is kinder", about=comp.id, item_id="i0", prompt="P")
    alone = Note(text="the prompts repeat a lot")
    store.extend([comp, note, alone, ranking([1, 2, 3, 4]),
                  Correction(item_id="c", prompt="P", response="a", corrected="b", group="g"),
                  Correction(item_id="c2", prompt="P", response="a", corrected="",
                             skipped=True),
                  Rating(item_id="t", prompt="P", response="r", value=1, group="g"),
                  Rating(item_id="t2", prompt="P", response="r", value=None, skipped=True)])
    data = training_data(store.answers())
    assert [(p.chosen, p.rejected, p.origin) for p in data.pairs] == [
        ("y", "x", "comparison"), ("w", "x", "ranking"), ("w", "y", "ranking"),
        ("w", "z", "ranking"), ("x", "y", "ranking"), ("x", "z", "ranking"),
        ("y", "z", "ranking"), ("b", "a", "correction")]
    assert data.sft == [SFTExample("P", "b", "g")]
    assert data.unpaired == [UnpairedRow("P", "r", True, "g", "rating")]
    assert [(n.text, n.about) for n in data.notes] == [
        ("y is kinder", comp.id), ("the prompts repeat a lot", None)]


def test_records_check_every_kind_naming_the_key():
    with pytest.raises(RecordError, match="ranks"):
        ranking([1, 1, 5, 2]).check()  # a place past K
    with pytest.raises(RecordError, match="ranks"):
        ranking([2, 3, 3, 4]).check()  # nobody first
    with pytest.raises(RecordError, match="dense"):
        ranking([1, 1, 3, 4]).check()  # after two tied first comes 2, not 3
    ranking([1, 1, 2, 3]).check()
    with pytest.raises(RecordError, match="value"):
        Rating(item_id="t", prompt="P", response="r", value=8, scale="likert7", low=1,
               high=7).check()
    with pytest.raises(RecordError, match="unchanged"):
        Correction(item_id="c", prompt="P", response="same ", corrected=" same").check()
    with pytest.raises(RecordError, match="empty"):
        Correction(item_id="c", prompt="P", response="x", corrected="  \n").check()
    with pytest.raises(RecordError, match="text"):
        Note(text=" ").check()
    with pytest.raises(RecordError, match="scale"):
        Item.from_dict({"prompt": "P", "a": "x", "ask": "rate", "scale": {"name": "s",
                                                                          "low": 3, "high": 1}})
    with pytest.raises(RecordError, match="ask"):
        Item.from_dict({"prompt": "P", "a": "x", "ask": "dance"})
    with pytest.raises(RecordError, match=r"missing key\(s\) \['b'\]"):
        Item.from_dict({"prompt": "P", "a": "x"})  # a comparison needs both sides


def test_the_session_refuses_rather_than_truncates(tmp_path):
    items = [Item("P", "The dog ran.", id="c", ask="correct"),
             Item("P", "ok", id="t", ask="rate", scale=LIKERT)]
    s = Session(items, ComparisonStore(tmp_path / "s.jsonl"), "ann", repeat_rate=0,
                max_note=10, max_correction=20)
    shown = s.next()
    assert shown.item.id == "c"
    for text, why in [("The dog ran.", "unchanged"), ("", "empty"),
                      ("The dog ran home, far away.", "limit is 20")]:
        with pytest.raises(Refused, match=why):
            s.correct(shown, text)
    with pytest.raises(Refused, match="limit is 10"):
        s.correct(shown, "The dog sat.", note="eleven char")
    assert s.store.answers() == []  # nothing saved by a refusal
    c = s.correct(shown, "The dog sat.", note="ten chars!")
    shown = s.next()
    with pytest.raises(Refused, match="from 1 to 7"):
        s.rate(shown, 9)
    r = s.rate(shown, 6)
    kept = s.store.answers()
    assert [type(x).__name__ for x in kept] == ["Correction", "Note", "Rating"]
    assert kept[1].about == c.id and kept[1].text == "ten chars!"
    assert (r.scale, r.low, r.high, r.anchors, r.value) == ("likert7", 1, 7,
                                                            LIKERT["anchors"], 6)
    assert s.next() is None
    assert s.undo().id == r.id and s.undo().id == c.id  # undo takes the note with it
    assert s.store.answers() == []


SCHEMA_1 = [  # two lines exactly as version 0.1 (schema 1) wrote them
    {"type": "comparison", "item_id": "it0", "prompt": "Once", "a": "happy", "b": "sad",
     "label": "a", "left": "b", "strength": "clearly", "rater": "ann", "rater_kind": "human",
     "guidelines": "guidelines-1.1", "shown_at": 1700000000.5, "seconds": 4.25,
     "comment": "b is gloomy", "source_a": {"model": "m", "sample": 0},
     "source_b": {"model": "m", "sample": 1}, "served_because": "random",
     "selection_prob": None, "gold": None, "repeat_of": None, "group": "g0",
     "meta": {"round": 1}, "id": "c0"},
    {"type": "retract", "id": "c9", "rater": "ann", "at": 1700000001.0},
]


def test_a_schema_1_store_reads_unchanged_and_unknown_records_are_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    newer = {"type": "video_rating", "schema": SCHEMA + 1, "id": "v1", "frames": [1, 2]}
    path.write_text("".join(json.dumps(x) + "\n" for x in [*SCHEMA_1, newer]))
    before = path.read_bytes()
    store = ComparisonStore(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither line is reported as damage
        (c,) = store.load()
        answers = store.answers()
    assert store.errors == []
    want = {k: v for k, v in SCHEMA_1[0].items() if k != "type"}
    assert c.to_dict() == want  # every field as written
    assert [n.text for n in notes(answers)] == ["b is gloomy"]
    assert answers[1] == Unknown(newer)  # kept as read
    store.append(Rating(item_id="t", prompt="P", response="r", value=1))
    assert path.read_bytes().startswith(before)  # append-only: old lines untouched
    line = json.loads(path.read_text().splitlines()[-1])
    assert (line["type"], line["schema"]) == ("rating", SCHEMA)
    # a known kind from a newer writer: its extra fields are kept, not lost
    path.write_text(path.read_text() + json.dumps(
        {**SCHEMA_1[0], "id": "c1", "schema": SCHEMA + 1, "confidence": 0.9}) + "\n")
    assert store.load()[-1].meta["extra"] == {"confidence": 0.9}


WRITER = textwrap.dedent("""
    import sys
    from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating
    from rlhf.feedback.store import ComparisonStore
    store = ComparisonStore(sys.argv[1])
    long = "word " * 400  # lines of a few KiB: a write takes a while
    i = int(sys.argv[2])  # ids stay unique across runs
    while True:
        kind = i % 5
        common = dict(item_id=f"i{i}", prompt=long, id=f"r{i}")
        if kind == 0:
            recs = [Comparison(a=long, b="b", label="a", **common)]
        elif kind == 1:
            recs = [Ranking(responses=[long, "x", "y"], ranks=[1, 3, 2], **common)]
        elif kind == 2:
            recs = [Rating(response=long, value=1, **common)]
        elif kind == 3:
            c = Correction(response=long, corrected=long + "!", **common)
            recs = [c, Note(text="why " * 300, about=c.id, item_id=c.item_id, id=f"n{i}")]
        else:
            recs = [Note(text=long, id=f"n{i}")]
        store.extend(recs)
        print(" ".join(r.id for r in recs), flush=True)
        i += 1
""")


def test_a_store_of_every_kind_survives_sigkill_mid_write(tmp_path):
    path = tmp_path / "s.jsonl"
    for run in range(3):  # killed three times, each after 40 more confirmed writes
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(1000 * run)],
                                stdout=subprocess.PIPE, text=True)
        confirmed = []
        for _ in range(40):
            confirmed += proc.stdout.readline().split()
        os.kill(proc.pid, signal.SIGKILL)  # while it writes the next ones
        proc.wait(timeout=30)
        store = ComparisonStore(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            answers = store.answers()
        store.repair()  # an unfinished last line, if any, is moved aside whole
        answers = store.answers()
        assert store.errors == [], store.errors
        ids = [a.id for a in answers]
        assert set(confirmed) <= set(ids)  # nothing confirmed was lost
        assert len(ids) == len(set(ids))  # and nothing twice
        kinds = {type(a).__name__ for a in answers}
        assert kinds == {"Comparison", "Ranking", "Rating", "Correction", "Note"}
        for a in answers:  # nothing torn: each record whole
            assert len(a.prompt) in (0, 2000) and a.id[1:].isdigit()
        # a correction and its note are one write: never one without the other
        corr = {a.id[1:] for a in answers if isinstance(a, Correction)}
        about = {a.about[1:] for a in answers if isinstance(a, Note) and a.about}
        assert corr == about


def test_a_revision_carries_its_note_in_the_same_write(tmp_path):
    path = tmp_path / "s.jsonl"
    s = Session([Item("P", "x", "y", id="i0")], ComparisonStore(path), "ann", repeat_rate=0)
    first = s.answer(s.next(), "left", comment="x is kinder")
    second = s.revise(first.id, "tie")  # no new note: the old one is carried over
    third = s.revise(second.id, "right", comment="on reflection, y")
    live = s.store.answers()
    assert [(type(a).__name__, getattr(a, "about", None)) for a in live] == [
        ("Comparison", None), ("Note", third.id)]
    assert live[1].text == "on reflection, y"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    # the second revision: two retractions (answer, its note), the answer, its note
    assert [x["type"] for x in lines[-4:]] == ["retract", "retract", "comparison", "note"]
    carried = lines[5]  # the first revision's note: the old text, about the new answer
    assert (carried["type"], carried["about"], carried["text"]) == ("note", second.id,
                                                                     "x is kinder")
    assert (lines[-4]["id"], lines[-3]["id"]) == (second.id, carried["id"])


def test_stats_reads_an_unpaired_file(tmp_path, capsys):
    kto = tmp_path / "kto.jsonl"
    kto.write_text('{"prompt": "P", "completion": "good", "label": true}\n'
                   '{"prompt": "P", "completion": "bad", "label": false}\n')
    assert stats.cli([str(kto), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kinds"]["counts"]["overall"]["rating"] == 2


def test_the_loop_web_raters_note_limit_is_a_checked_setting():
    assert load_config(LoopConfig, None, ["rater.max_note_chars=300"]).rater.max_note_chars \
        == 300
    with pytest.raises(ConfigError, match="rater.max_note_chars"):
        load_config(LoopConfig, None, ["rater.max_note_chars=0"])
