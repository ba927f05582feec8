"""The rating page's API for every kind of item (compare, rank, rate, correct) and for notes:
what the page gets (hand-written payloads: turns, responses as shown, the scale, the text to
prefill; never the item id, side, repeat or gold flag), the records each answer leaves in the
store (hand-written), refusals (nothing saved, the item stays; a rating that is not a whole
number too), a correction's word diff as the page shows it, a note standing alone tied to the
item on screen only when it names it, the history of every kind, and over HTTP the 422 / 413
answers, the `rlhf serve` limits flags and the page's static files."""

from __future__ import annotations

import json
import re

import pytest
from web_helpers import LIKERT7, ROOT, Client, Server

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating, RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.session import Refused
from rlhf.raters.web import ASSETS, CSP
from rlhf.raters.web_api import RatingServer, diff_runs, markers, max_body, prompt_turns

TRANSCRIPT = "\n\nHuman: Name a fruit.\n\nAssistant: Apple.\n\nHuman: Rank these.\n\nAssistant:"
HOSTILE = "</textarea><script>document.title='pwned'</script> \x1b[2J"


def kinds_items() -> list[Item]:
    return [
        Item(TRANSCRIPT, "pear", "plum", id="rank", ask="rank", others=["fig"], gold="a"),
        Item("Say hi", "hi there", id="thumb", ask="rate"),
        Item("Say hi", "hello", id="likert", ask="rate", scale=LIKERT7),
        Item("Fix me", f"Teh cat. {HOSTILE}", id="fix", ask="correct"),
        Item("Pick one", "left one", "right one", id="pair"),
    ]


@pytest.fixture
def one(tmp_path):
    """An in-process rating server with one rater, ann, and the rater's state."""
    server = RatingServer(kinds_items(), tmp_path / "s.jsonl", {"ann": "tok"}, repeat_rate=0,
                          max_note=20, max_correction=100)
    return server, server.rater("tok"), ComparisonStore(tmp_path / "s.jsonl")


def without(payload: dict, *keys) -> dict:
    return {k: v for k, v in payload.items() if k not in keys}


def test_each_kind_payload_and_the_records_its_answer_leaves(one):
    server, ann, store = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    status, shown = call("next")
    assert status == 200 and set(shown["responses"]) == {"pear", "plum", "fig"}
    assert without(shown, "nonce", "responses") == {
        "done": False, "ask": "rank", "notes": ["", "", ""], "progress": [0, 5],
        "limits": {"note": 20, "correction": 100},
        "prompt": [{"role": "human", "text": "Name a fruit."},
                   {"role": "assistant", "text": "Apple."},
                   {"role": "human", "text": "Rank these."}]}
    best = {"fig": 1, "pear": 2, "plum": 2}  # fig first, pear and plum tied
    places = [best[t] for t in shown["responses"]]
    status, out = call("answer", {"nonce": shown["nonce"], "places": places, "note": "fig!"})
    assert status == 200 and out["saved"].startswith("saved 1/5: ranked ")

    shown = out["next"]
    assert without(shown, "nonce") == {
        "done": False, "ask": "rate", "prompt": [{"role": "", "text": "Say hi"}],
        "responses": ["hi there"], "notes": [""], "progress": [1, 5],
        "limits": {"note": 20, "correction": 100},
        "scale": {"name": "thumbs", "low": 0, "high": 1, "anchors": {"0": "bad", "1": "good"}}}
    out = call("answer", {"nonce": shown["nonce"], "value": 1})[1]
    assert out["saved"] == "saved 2/5: thumbs up"

    shown = out["next"]
    assert shown["scale"] == LIKERT7 and shown["responses"] == ["hello"]
    out = call("answer", {"nonce": shown["nonce"], "value": 7, "comment": "old name"})[1]
    assert out["saved"] == "saved 3/5: rated 7 of 1-7 (excellent) # old name"

    shown = out["next"]
    assert without(shown, "nonce", "progress", "limits", "notes") == {
        "done": False, "ask": "correct", "prompt": [{"role": "", "text": "Fix me"}],
        "responses": ["Teh cat. </textarea><script>document.title='pwned'</script> \\x1b[2J"],
        "prefill": f"Teh cat. {HOSTILE}"}  # shown escaped; prefilled as the text itself
    fixed = f"The cat. {HOSTILE}"
    out = call("answer", {"nonce": shown["nonce"], "text": fixed})[1]
    assert out["saved"] == f"saved 4/5: corrected ({len(fixed)} -> {len(fixed)} characters)"

    shown = out["next"]
    assert shown["ask"] == "compare" and sorted(shown["responses"]) == ["left one", "right one"]
    assert call("answer", {"nonce": shown["nonce"], "choice": "skip", "note": "unsure"})[0] == 200

    records = store.answers()
    assert [type(r).__name__ for r in records] == [
        "Ranking", "Note", "Rating", "Rating", "Note", "Correction", "Comparison", "Note"]
    rank, rank_note, thumb, likert, likert_note, fix, pair, pair_note = records
    assert (rank.responses, rank.ranks, rank.item_id) == (["pear", "plum", "fig"], [2, 2, 1],
                                                         "rank")
    assert (rank_note.text, rank_note.about) == ("fig!", rank.id)
    assert (thumb.value, thumb.scale, thumb.response) == (1, "thumbs", "hi there")
    assert (likert.value, likert.scale, likert.anchors) == (7, "likert7", LIKERT7["anchors"])
    assert (likert_note.text, likert_note.about) == ("old name", likert.id)
    assert (fix.response, fix.corrected) == (f"Teh cat. {HOSTILE}", fixed)  # exactly as sent
    assert (pair.label, pair_note.text, pair_note.about) == ("skip", "unsure", pair.id)
    assert call("next")[1]["done"] is True


def test_no_payload_names_the_item_side_repeat_or_gold(tmp_path):
    items = [Item(it.prompt, it.a, it.b, id=f"item-{n}", ask=it.ask, others=it.others,
                  scale=it.scale, gold="a", served_because="gold", meta={"secret": 1})
             for n, it in enumerate(kinds_items())]
    server = RatingServer(items, tmp_path / "s.jsonl", {"ann": "tok"}, repeat_rate=1)
    ann = server.rater("tok")
    common = {"done", "nonce", "ask", "prompt", "responses", "notes", "progress", "limits"}
    extra = {"rank": set(), "rate": {"scale"}, "correct": {"prefill"}, "compare": set()}
    shown, seen = server.handle(ann, "next", {})[1], []
    while not shown["done"]:  # every item, then their hidden repeats
        assert set(shown) == common | extra[shown["ask"]]
        text = json.dumps(shown)
        assert not any(s in text for s in ("item-", "gold", "repeat", "secret", '"left"'))
        seen.append(shown["ask"])
        body = {"nonce": shown["nonce"], "choice": "tie", "places": [1] * len(
            shown["responses"]), "value": 1, "text": "new"}
        shown = server.handle(ann, "answer", body)[1]["next"]
    assert seen[:5] == ["rank", "rate", "rate", "correct", "compare"]
    assert sorted(seen[5:]) == ["compare", "rank", "rate", "rate"]  # no repeated correction


def test_refused_answers_save_nothing_and_keep_the_item(one):
    server, ann, store = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    for _ in range(4):  # to the correction
        shown = call("next")[1]
        if shown["ask"] == "correct":
            break
        call("answer", {"nonce": shown["nonce"], "choice": "skip"})
    before = len(store.answers())
    nonce = shown["nonce"]
    cases = [({"text": shown["prefill"]}, "the correction is unchanged: edit the response, or "
                                         "skip the item"),
             ({"text": "  \n"}, "the correction is empty: edit the response, or skip the item"),
             ({"text": "x" * 101}, "the correction is 101 characters; the limit is 100: shorten "
                                   "it (nothing was saved)"),
             ({"text": "ok", "note": "n" * 21}, "the note is 21 characters; the limit is 20: "
                                                "shorten it (nothing was saved)")]
    for body, message in cases:
        with pytest.raises(Refused) as e:
            call("answer", {"nonce": nonce, **body})
        assert str(e.value) == message
        assert len(store.answers()) == before and ann.nonce == nonce  # the item stays
    note = "n" * 20  # at the limit: kept whole
    out = call("answer", {"nonce": nonce, "text": "x" * 100, "note": note})[1]
    assert out["saved"].startswith("saved ")
    assert [(type(r).__name__, getattr(r, "text", None)) for r in store.answers()[before:]] == [
        ("Correction", None), ("Note", note)]


def test_a_correction_left_as_the_textarea_gives_it_back_is_unchanged(tmp_path):
    """A textarea turns the response's \\r\\n into \\n: sent back untouched, it is refused as
    unchanged; with a change, it is kept as sent."""
    item = Item("Fix", "line one\r\nline two", id="crlf", ask="correct")
    server = RatingServer([item], tmp_path / "s.jsonl", {"ann": "tok"}, repeat_rate=0)
    ann = server.rater("tok")
    nonce = server.handle(ann, "next", {})[1]["nonce"]
    with pytest.raises(Refused, match="unchanged"):
        server.handle(ann, "answer", {"nonce": nonce, "text": "line one\nline two"})
    server.handle(ann, "answer", {"nonce": nonce, "text": "line one\nline 2"})
    [fix] = ComparisonStore(tmp_path / "s.jsonl").answers()
    assert (fix.response, fix.corrected) == ("line one\r\nline two", "line one\nline 2")


def test_a_note_standing_alone_is_about_the_item_on_screen_only_when_it_names_it(one):
    server, ann, store = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    assert call("note", {"text": "Item 3 is item 2."})[0] == 200  # nothing on screen yet
    nonce = call("next")[1]["nonce"]  # the ranking
    for body in ({"text": "odd order", "nonce": nonce}, {"text": "no nonce"},
                 {"text": "stale", "nonce": "an-older-one"}):
        assert call("note", body)[0] == 200
    with pytest.raises(Refused, match="the limit is 20"):
        call("note", {"text": "n" * 21, "nonce": nonce})
    with pytest.raises(Refused, match="cannot be empty"):
        call("note", {"text": " "})
    assert [(type(n), n.text, n.about, n.item_id, n.prompt, n.rater)
            for n in store.answers()] == [
        (Note, "Item 3 is item 2.", None, "", "", "ann"),
        (Note, "odd order", None, "rank", TRANSCRIPT, "ann"),
        (Note, "no nonce", None, "", "", "ann"),
        (Note, "stale", None, "", "", "ann")]
    assert ann.nonce == nonce  # a note answers nothing: the item stays on screen


def test_a_rating_that_is_not_a_whole_number_is_refused_and_the_item_stays(one):
    server, ann, store = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    shown = call("next")[1]
    while shown.get("scale", {}).get("name") != "likert7":
        shown = call("answer", {"nonce": shown["nonce"], "choice": "skip"})[1]["next"]
    nonce, before = shown["nonce"], len(store.answers())
    for value in ({}, {"value": None}, {"value": ""}, {"value": "7"}, {"value": 7.0},
                  {"value": 1.5}, {"value": True}, {"value": 0}, {"value": 8}):
        with pytest.raises(Refused) as e:
            call("answer", {"nonce": nonce, **value})
        assert str(e.value) == "a rating is a whole number from 1 to 7"
        assert len(store.answers()) == before and ann.nonce == nonce
    assert call("answer", {"nonce": nonce, "value": 7})[1]["saved"] == \
        "saved 3/5: rated 7 of 1-7 (excellent)"


def test_diff_runs_are_the_terminals_word_diff_made_visible():
    assert diff_runs("The cat sat on the mat.", "The dog sat on the red mat.") == [
        ["=", "The "], ["-", "cat"], ["+", "dog"], ["=", " sat on the "], ["+", "red "],
        ["=", "mat."]]  # words, spaces and signs are the units: "red " is one insertion
    assert diff_runs("a b", "a b") == [["=", "a b"]]
    assert diff_runs("", "new text") == [["+", "new text"]]
    assert diff_runs("x y", "") == [["-", "x y"]]
    assert diff_runs("one\ntwo", "one two") == [["=", "one"], ["-", "\n"], ["+", " "],
                                                ["=", "two"]]
    assert diff_runs("a\r\nb", "a\nb!") == [["=", "a\nb"], ["+", "!"]]  # a textarea's \n
    assert diff_runs("x", "x \x1b[2J") == [["=", "x"], ["+", " \\x1b[2J"]]


def test_the_diff_action_shows_the_correction_on_screen_and_saves_nothing(one):
    server, ann, store = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    shown = call("next")[1]
    assert call("diff", {"nonce": shown["nonce"], "text": "x"})[0] == 409  # not a correction
    while shown["ask"] != "correct":
        shown = call("answer", {"nonce": shown["nonce"], "choice": "skip"})[1]["next"]
    nonce, before = shown["nonce"], len(store.answers())
    status, out = call("diff", {"nonce": nonce, "text": f"The cat. {HOSTILE} <b>!</b>"})
    assert (status, out) == (200, {"runs": [
        ["-", "Teh"], ["+", "The"],
        ["=", " cat. </textarea><script>document.title='pwned'</script> \\x1b[2J"],
        ["+", " <b>!</b>"]]})
    assert call("diff", {"nonce": "stale", "text": "x"})[0] == 409
    with pytest.raises(Refused, match="the correction is 101 characters; the limit is 100"):
        call("diff", {"nonce": nonce, "text": "x" * 101})
    with pytest.raises(RecordError, match="text: expected the corrected response"):
        call("diff", {"nonce": nonce, "text": 5})
    assert len(store.answers()) == before and ann.nonce == nonce


def test_history_describes_every_kind_and_revises_only_comparisons(one):
    server, ann, _ = one
    call = lambda action, body=None: server.handle(ann, action, body or {})  # noqa: E731
    shown = call("next")[1]
    answers = {"rank": {"places": [2, 1, 3]}, "rate": {"value": 0},
               "correct": {"text": "The cat."}, "compare": {"choice": "tie"}}
    while not shown["done"]:
        body = answers[shown["ask"]]
        if shown.get("scale", {}).get("name") == "likert7":
            body = {"value": 4, "note": "meh"}
        shown = call("answer", {"nonce": shown["nonce"], **body})[1]["next"]
    rows = call("history")[1]["answers"]
    fix = f"Teh cat. {HOSTILE}"
    assert [(r["kind"], r["answer"]) for r in rows] == [
        ("comparison", "tie"),
        ("correction", f"corrected ({len(fix)} -> 8 characters)"),
        ("rating", "rated 4 of 1-7 (acceptable) # meh"),
        ("rating", "thumbs down"),
        ("ranking", "ranked B > A > C")]  # places given in shown order: B first, then A, C
    assert "left" in rows[0] and all("left" not in r for r in rows[1:])
    assert call("revise", {"id": rows[1]["id"], "choice": "tie"})[0] == 404
    assert call("revise", {"id": rows[0]["id"], "choice": "cant_tell"})[1]["saved"] == \
        "revised: can't tell"


def test_markers_and_turns():
    assert markers("rank", ("x", " ", "x", "y", " ")) == [
        "", "[empty response]", "[same as A]", "", "[empty response]"]
    assert markers("compare", ("x", "x")) == ["[A and B are identical]"] * 2
    assert markers("correct", ("",)) == ["[empty response]"]
    assert prompt_turns("System: Be brief.\n\nUser: Hi \x1b[2J\n\nAssistant:") == [
        {"role": "system", "text": "Be brief."}, {"role": "user", "text": "Hi \\x1b[2J"}]
    assert prompt_turns("Note: Human: is not a turn here") == [
        {"role": "", "text": "Note: Human: is not a turn here"}]


def test_max_body_leaves_room_for_a_note_and_a_correction_at_their_limits():
    assert max_body(40, 300) == 12 * 340 + 4096  # an astral character: \\ud83d\\ude00
    assert max_body() == 12 * 22000 + 4096


WIDE = {"name": "percent", "low": 0, "high": 100}


def assets_served(port: int) -> None:
    """Each file the page names under /assets/ is served with the page's CSP and its type;
    nothing else there is."""
    page = Client(port, "")
    html = (ROOT / "rlhf" / "raters" / "web_page.html").read_text(encoding="utf-8")
    assert sorted(re.findall(r'"/assets/([^"]+)"', html)) == sorted(ASSETS) == [
        "page.css", "page.js", "page_rank.js", "page_rate.js", "page_views.js"]
    for name, file in ASSETS.items():
        page.conn.request("GET", f"/assets/{name}")
        r = page.conn.getresponse()
        assert r.status == 200 and r.read() == (ROOT / "rlhf" / "raters" / file).read_bytes()
        assert r.getheader("Content-Security-Policy") == CSP
        assert r.getheader("Content-Type").startswith(
            "text/css" if name.endswith(".css") else "text/javascript")
    for name in ("page.html", "web_page.js", "..%2Fweb.py", "page.py"):
        assert page.call(f"/assets/{name}")[0] == 404


def test_over_http_refusals_are_422_limits_come_from_flags_bigger_bodies_413(tmp_path):
    write_queue(tmp_path / "q.jsonl", [Item("Fix me", "draft", id="fix", ask="correct"),
                                       Item("Rank", "x", "y", id="rank", ask="rank"),
                                       Item("Rate", "ok", id="wide", ask="rate", scale=WIDE)])
    server = Server(tmp_path, ["ann"], "--repeat-rate", "0", "--max-note-chars", "40",
                    "--max-correction-chars", "2000")
    try:
        ann = Client(server.port, server.links["ann"])
        shown = ann.call("/api/next")[1]
        assert shown["limits"] == {"note": 40, "correction": 2000}
        status, out = ann.call("/api/answer", {"nonce": shown["nonce"], "text": "draft"})
        assert (status, out) == (422, {"error": "the correction is unchanged: edit the "
                                                "response, or skip the item", "refused": True})
        # a correction and a note at their limits, every character at its dearest in JSON
        worst = {"nonce": shown["nonce"], "text": "\U0001F600" * 2000, "note": "\x1b" * 40}
        raw = json.dumps(worst).encode()  # (ensure_ascii: 12 bytes per emoji, 6 per escape)
        assert len(raw) > 12 * 2000 + 6 * 40 > 16 * 1024  # (over the old fixed limit)
        status, out = ann.call("/api/answer", raw=raw)
        assert status == 200, out
        shown = out["next"]
        pad = {"nonce": shown["nonce"], "places": [1, 2]}
        body = json.dumps({**pad, "note": "x" * (max_body(40, 2000) - len(json.dumps(pad)))})
        assert len(body) == max_body(40, 2000) + len(', "note": ""')  # one note too many
        assert ann.call("/api/answer", raw=body.encode())[0] == 413
        assert ann.call("/api/answer", {**pad, "note": "y" * 41})[0] == 422
        shown = ann.call("/api/answer", pad)[1]["next"]  # a wide scale: an empty box is no 0
        for value in ({}, {"value": ""}, {"value": None}, {"value": "50"}):
            assert ann.call("/api/answer", {"nonce": shown["nonce"], **value}) == (422, {
                "error": "a rating is a whole number from 0 to 100", "refused": True})
        assets_served(server.port)
    finally:
        server.stop()
    records = ComparisonStore(tmp_path / "s.jsonl").answers()
    assert [type(r) for r in records] == [Correction, Note, Ranking]
    assert records[0].corrected == "\U0001F600" * 2000 and records[1].text == "\x1b" * 40
    assert not any(isinstance(r, (Rating, Comparison)) for r in records)
