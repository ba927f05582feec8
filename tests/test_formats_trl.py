"""TRL's dataset types by hand: rows -> records -> rows for each type (preference standard and
conversational, explicit and implicit prompt; unpaired; prompt-completion; language
modelling), records of every kind -> the rows each export writes, and notes."""

from __future__ import annotations

import pytest

from rlhf.feedback.derive import correction_pair, correction_sft
from rlhf.feedback.export import export_rows
from rlhf.feedback.formats import format_of_row, read_trl, read_trl_kind
from rlhf.feedback.records import (
    Comparison,
    Correction,
    Note,
    Ranking,
    Rating,
    RecordError,
    Unknown,
)
from rlhf.feedback.trl_formats import standard

SKY = [{"role": "user", "content": "What color is the sky?"}]
BLUE = [{"role": "assistant", "content": "It is blue."}]
GREEN = [{"role": "assistant", "content": "It is green."}]


def test_standard_preference_explicit_and_implicit():
    rows = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            {"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    comps = read_trl(rows)
    assert [(c.prompt, c.a, c.b, c.label) for c in comps] == [
        ("The sky is", "blue.", "green.", "a"), ("2+2=", "4", "5", "a")]
    assert comps[0].meta["trl"] == {"type": "preference", "row": rows[0]}  # spaces stripped
    assert "trl" not in comps[1].meta  # the record gives the row back as it is
    assert (comps[0].rater, comps[0].rater_kind, comps[0].served_because) == (
        "trl", "human", "import")
    assert export_rows("preference", comps) == (rows, "")
    implicit = [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    c = read_trl(implicit)[0]
    assert (c.prompt, c.a, c.b) == ("The sky is ", "blue.", "green.")
    assert export_rows("preference", [c]) == (implicit, "")


def test_conversational_preference_explicit_and_implicit():
    explicit = [{"prompt": SKY, "chosen": BLUE, "rejected": GREEN}]
    c = read_trl(explicit)[0]
    assert c.prompt == "\n\nUser: What color is the sky?\n\nAssistant: "  # to the reply
    assert (c.a, c.b) == ("It is blue.", "It is green.")  # the replies' contents
    assert c.meta["chat"] == SKY  # the prompt's messages, for the chat template
    assert export_rows("preference", [c]) == (explicit, "")
    implicit = [{"chosen": SKY + BLUE, "rejected": SKY + GREEN}]
    d = read_trl(implicit)[0]
    assert (d.prompt, d.a, d.b) == (c.prompt, c.a, c.b)  # the shared turns are the prompt
    assert export_rows("preference", [d]) == (implicit, "")
    # both at once: two shapes, so every row is written from the texts (standard, explicit)
    rows, note = export_rows("preference", [c, d])
    assert rows == [{"prompt": c.prompt, "chosen": c.a, "rejected": c.b}] * 2
    assert note.startswith("the rows differ in shape") and "2 of 2 were read" in note


def test_unpaired_rows_are_thumbs_ratings():
    rows = [{"prompt": "The sky is", "completion": " blue.", "label": True},
            {"prompt": SKY, "completion": GREEN, "label": False}]
    r = read_trl_kind("unpaired", rows)
    assert all(isinstance(x, Rating) and x.thumbs and x.scale == "thumbs" for x in r)
    assert [(x.prompt, x.response, x.value) for x in r] == [
        ("The sky is", " blue.", 1), ("\n\nUser: What color is the sky?\n\nAssistant: ",
                                      "It is green.", 0)]
    assert "trl" not in r[0].meta and r[1].meta["trl"]["row"] == rows[1]
    assert export_rows("unpaired", r[:1]) == (rows[:1], "")
    assert export_rows("unpaired", r[1:]) == (rows[1:], "")
    with pytest.raises(RecordError, match=r"row:1: label: expected true or false, got 'yes'"):
        read_trl_kind("unpaired", [{"prompt": "p", "completion": "c", "label": "yes"}])


def test_prompt_completion_and_language_modelling_are_demonstrations():
    pc = [{"prompt": "The sky is", "completion": " blue."},
          {"prompt": SKY, "completion": BLUE}]
    r = read_trl_kind("prompt-completion", pc)
    assert [(x.prompt, x.response, x.corrected) for x in r] == [
        ("The sky is", "", " blue."),
        ("\n\nUser: What color is the sky?\n\nAssistant: ", "", "It is blue.")]
    assert correction_pair(r[0]) == [] and correction_sft(r[0])[0].completion == " blue."
    assert export_rows("prompt-completion", r[:1]) == (pc[:1], "")
    assert export_rows("prompt-completion", r[1:]) == (pc[1:], "")
    # as language modelling: prompt + completion, TRL's SFT text
    assert export_rows("lm", r) == ([{"text": "The sky is blue."},
                                     {"text": "\n\nUser: What color is the sky?\n\nAssistant: "
                                              "It is blue."}], "")
    lm = [{"text": "The sky is blue."}]
    t = read_trl_kind("lm", lm)[0]
    assert (t.prompt, t.response, t.corrected) == ("", "", "The sky is blue.")
    assert export_rows("lm", [t]) == (lm, "")
    msgs = [{"messages": SKY + BLUE}]
    m = read_trl_kind("lm", msgs)[0]
    assert m.corrected == "\n\nUser: What color is the sky?\n\nAssistant: It is blue."
    assert export_rows("lm", [m]) == (msgs, "")
    assert m.group != t.group  # grouped by their text, not by the empty prompt
    with pytest.raises(RecordError, match=r"row:1: completion: empty"):
        read_trl_kind("prompt-completion", [{"prompt": "p", "completion": "  "}])


def test_other_columns_and_their_order_come_back():
    rows = [{"id": 7, "chosen": "x", "prompt": "p", "rejected": "y", "score": 0.5}]
    c = read_trl(rows)[0]
    assert (c.prompt, c.a, c.b) == ("p", "x", "y")
    assert export_rows("preference", [c]) == (rows, "")
    # a record that no longer says what its row said is written from its texts
    flipped = Comparison(**{**c.to_dict(), "label": "b"})
    assert export_rows("preference", [flipped]) == (
        [{"prompt": "p", "chosen": "y", "rejected": "x"}], "")


def test_records_of_every_kind_to_each_type():
    base = dict(item_id="i", prompt="Q")
    recs = [Comparison(a="A", b="B", label="b", **base),
            Comparison(a="C", b="D", label="tie", **base),
            Comparison(a="E", b="F", label="both_bad", **base),
            Ranking(responses=["r1", "r2", "r3"], ranks=[2, 1, 2], **base),
            Correction(response="bad", corrected="good", **base),
            Rating(response="up", value=1, rater="ann", **base),
            Rating(response="down", value=0, rater="ann", **base),
            Rating(response="mid", value=4, low=1, high=7, scale="likert",
                   anchors={"1": "awful", "7": "great"}, **base),
            Rating(response="hi", value=6, low=1, high=7, scale="likert", anchors={}, **base),
            Note(text="too long", about="x1", rater="bo", **base),
            Unknown({"type": "sticker", "id": "s"})]
    p = [{"prompt": "Q", "chosen": c, "rejected": r} for c, r in
         [("B", "A"), ("r2", "r1"), ("r2", "r3"), ("good", "bad"), ("up", "down"),
          ("hi", "mid")]]
    assert export_rows("preference", recs) == (p, "")
    assert export_rows("unpaired", recs) == ([
        {"prompt": "Q", "completion": "E", "label": False},
        {"prompt": "Q", "completion": "F", "label": False},
        {"prompt": "Q", "completion": "up", "label": True},
        {"prompt": "Q", "completion": "down", "label": False},
        {"prompt": "Q", "completion": "hi", "label": True}], "")
    assert export_rows("prompt-completion", recs) == (
        [{"prompt": "Q", "completion": "good"}], "")
    assert export_rows("lm", recs) == ([{"text": "Qgood"}], "")
    old = Comparison(a="A", b="B", label="a", comment="A is kinder", id="c1", rater="cy",
                     **base)
    assert export_rows("notes", recs + [old]) == ([
        {"id": recs[9].id, "about": "x1", "rater": "bo", "text": "too long", "prompt": "Q"},
        {"id": "c1-comment", "about": "c1", "rater": "cy", "text": "A is kinder",
         "prompt": "Q"}], "")


def test_formats_are_told_by_their_keys():
    assert format_of_row({"prompt": "p", "chosen": "a", "rejected": "b"}) == "trl"
    assert format_of_row({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "x"}) == "hh"
    assert format_of_row({"prompt": "p", "completion": "c", "label": True}) == "trl-unpaired"
    assert format_of_row({"prompt": "p", "completion": "c"}) == "trl-prompt-completion"
    assert format_of_row({"messages": SKY}) == "trl-lm"
    assert format_of_row({"text": "t"}) == "trl-lm"
    assert format_of_row({"id": "n", "about": None, "text": "t"}) == "notes"
    assert format_of_row({"type": "rating", "schema": 2}) == "store"
    assert format_of_row({"prompt": "p"}) is None
    with pytest.raises(RecordError, match=r"missing key\(s\) \['completion'\]"):
        standard("prompt-completion", {"prompt": "p"})
    with pytest.raises(RecordError, match=r"chosen: expected text or a list of messages"):
        standard("preference", {"prompt": "p", "chosen": 3, "rejected": "b"})
