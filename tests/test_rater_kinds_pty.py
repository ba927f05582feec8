"""Items of every kind on the single-key screen, run as a person would: `rlhf rate` in a real
(pseudo) terminal. A ranking by its letters and Enter, thumbs and a 1-7 rating by one key,
a correction in $EDITOR (a script that edits the file in a known way) and in the line editor
where no editor is set, the change shown before y saves it, an unchanged one asked again,
notes on an answer and alone, a skip, limits refused with the reason; a `<script>`, an escape
sequence and a `</textarea>` in a response or a correction shown escaped and stored exactly."""

from __future__ import annotations

import sys

from test_rater_kinds import HOSTILE, L7, stored
from test_rater_terminal import pty_factory  # noqa: F401  (the fixture)

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue

EDITOR = f"""import sys
p = sys.argv[1]
t = open(p, encoding="utf-8", newline="").read()
if "cat are" in t:
    t = t.replace("cat are", "cat is") + " " + {HOSTILE!r}
open(p, "w", encoding="utf-8", newline="").write(t + "\\n")  # as editors end a file
"""


ITEMS = [Item("Tell me a story.", "r0 the cat", "r1 the dog", ask="rank",
              others=[f"r2 {HOSTILE}", "r3 the bird"], id="rk"),
         Item("Say hi.", "Hi!", ask="rate", id="th"),
         Item("Say hello.", "Hello there.", ask="rate", scale=L7, id="l7"),
         Item("Nothing to fix.", "All fine.", ask="correct", id="cu"),
         Item("Fix the grammar.", "The cat are happy.", ask="correct", id="co"),
         Item("Pick one.", "x", "y", id="cp")]


def stored_by_keys() -> list[dict]:
    """What `test_every_kind_by_keys_with_the_editor` leaves in the store, by hand."""
    thumbs = {"scale": "thumbs", "low": 0, "high": 1, "anchors": {"0": "bad", "1": "good"}}
    return [
        {"type": "ranking", "item_id": "rk", "rater": "ann",
         "responses": ["r0 the cat", "r1 the dog", f"r2 {HOSTILE}", "r3 the bird"],
         "ranks": [2, 3, 2, 1], "shown": [2, 3, 0, 1], "skipped": False},
        {"type": "rating", "item_id": "th", "rater": "ann", "response": "Hi!", "value": 0,
         **thumbs, "skipped": False},
        {"type": "note", "item_id": "th", "rater": "ann", "text": "meh", "about": 1},
        {"type": "note", "item_id": "l7", "rater": "ann", "text": "prompts repeat",
         "about": None},
        {"type": "rating", "item_id": "l7", "rater": "ann", "response": "Hello there.",
         "value": 6, "scale": "likert7", "low": 1, "high": 7, "anchors": L7["anchors"],
         "skipped": False},
        {"type": "correction", "item_id": "cu", "rater": "ann", "response": "All fine.",
         "corrected": "", "skipped": True},
        {"type": "correction", "item_id": "co", "rater": "ann",
         "response": "The cat are happy.", "corrected": f"The cat is happy. {HOSTILE}",
         "skipped": False},
        {"type": "note", "item_id": "co", "rater": "ann", "text": "grammar", "about": 6},
        {"type": "comparison", "item_id": "cp", "rater": "ann", "label": "skip"}]


def test_every_kind_by_keys_with_the_editor(tmp_path, pty_factory, monkeypatch):  # noqa: F811
    write_queue(tmp_path / "q.jsonl", ITEMS)
    (tmp_path / "ed.py").write_text(EDITOR)
    monkeypatch.setenv("VISUAL", f"{sys.executable} {tmp_path / 'ed.py'}")
    t = pty_factory(40, 100)
    t.until(b"press any key")
    page = t.send(b"x", b"[q] quit")
    assert b"r2 <script>alert(1)</script> \\x1b[2Jgotcha </textarea>" in page
    assert b"[a-d] best first" in page and b"RANK: the letters best first" in page
    t.send(b"b", b"ranking: B _")
    t.send(b"b", b"? B is placed already")
    t.send(b"\x1b", b"[q] quit")  # Esc clears the ranking typed so far
    assert b"placed already" not in t.send(b"b", b"ranking: B _")
    t.send(b"a", b"ranking: B > A _")
    t.send(b"=", b"ranking: B > A= _")
    t.send(b"c", b"ranking: B > A=C _")
    t.send(b"\x7f", b"ranking: B > A= _")  # Backspace takes the letter back
    t.send(b"c", b"ranking: B > A=C _")
    t.send(b"\n", b"? rank all 4: D missing")
    t.send(b"d", b"ranking: B > A=C > D _")
    t.send(b"\n", b"saved 1/6: ranked B > A=C > D")
    t.send(b"m", b"note for your next answer")
    t.send(b"meh\n", b"note: meh")
    t.send(b"-", b"saved 2/6: thumbs down # meh")
    t.send(b"w", b"a note on its own")
    t.send(b"prompts repeat\n", b"noted: prompts repeat")
    t.send(b"9", b"? a whole number from 1 to 7 (1 very bad, 4 acceptable, 7 excellent)")
    t.send(b"6", b"saved 3/6: rated 6 of 1-7")
    t.send(b"e", b"? the correction is unchanged: edit the response, or skip the item")
    t.send(b"s", b"saved 4/6: skip")
    t.send(b"m", b"note for your next answer")
    t.send(b"grammar\n", b"note: grammar")
    diff = t.send(b"e", b"y: save this correction, e: edit again, n: cancel")
    assert b"YOUR CORRECTION: 3 characters removed, 51 added" in diff
    assert b"The cat [-are-]{+is+} happy.{+ <script>alert(1)</script> \\x1b[2Jgotcha" in diff
    again = t.send(b"e", b"y: save this correction")  # edited again: still the change
    assert b"[-are-]{+is+}" in again
    t.send(b"y", b"saved 5/6: corrected (18 -> 66 characters) # grammar")
    t.send(b"s", b"u: undo the last answer")
    t.send(b"x", b"")
    assert t.proc.wait(timeout=30) == 0
    assert b"\x1b[2Jgotcha" not in t.seen and b"\x1b]" not in t.seen  # never sent raw
    assert stored(tmp_path) == stored_by_keys()


def test_line_editor_on_the_screen_and_limits(tmp_path, pty_factory, monkeypatch):  # noqa: F811
    write_queue(tmp_path / "q.jsonl", [
        Item("Say hi.", "Hi!", ask="rate", id="th"),
        Item("Fix the grammar.", "The cat are happy.", ask="correct", id="co")])
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    t = pty_factory(30, 120, "--max-note-chars", "5", "--max-correction-chars", "30")
    t.until(b"press any key")
    t.send(b"x", b"[+] thumbs up")
    t.send(b"m", b"note for your next answer")
    t.send(b"too long\n", b"note: too long")
    t.send(b"+", b"? the note is 8 characters; the limit is 5: shorten it (nothing was saved)")
    t.send(b"m", b"note for your next answer")
    t.send(b"short\n", b"note: short")
    t.send(b"+", b"saved 1/2: thumbs up # short")
    t.send(b"e", b"Ctrl-D cancels.")
    t.send(b"The cat is happy.\n", b"The cat is happy.")
    t.send(b".\n", b"y: save this correction")
    t.send(b"n", b"correction cancelled: nothing was saved")
    t.send(b"e", b"Ctrl-D cancels.")
    t.send(b"The cat are happy.\n.\n", b"? the correction is unchanged")
    t.send(b"e", b"Ctrl-D cancels.")
    t.send(b"The cat is happy, and so are we all.\ns\n.\n",  # `s`: a line, not a key
           b"? the correction is 38 characters; the limit is 30")
    t.send(b"e", b"Ctrl-D cancels.")
    t.send(b"The cat is happy.\n", b"The cat is happy.")
    diff = t.send(b"..\n.\n", b"y: save this correction")
    assert b"The cat [-are-]{+is+} happy.{+\xe2\x86\xb5" in diff  # the added break: a mark
    t.send(b"y", b"u: undo the last answer")
    t.send(b"x", b"")
    assert t.proc.wait(timeout=30) == 0
    assert [(r["type"], r.get("value"), r.get("corrected"), r.get("text"))
            for r in stored(tmp_path)] == [
        ("rating", 1, None, None), ("note", None, None, "short"),
        ("correction", None, "The cat is happy.\n.", None)]
