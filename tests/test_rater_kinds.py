"""Items of every kind in the terminal's line mode (stdin piped): a ranking typed by the
letters shown, ratings (thumbs and a 1-7 scale with its words), corrections with the line
editor and the change shown before it is saved, notes on an answer and standing alone, skips
and undo; limits refused with a message, never cut; a `<script>`, an escape sequence or a
`</textarea>` shown escaped and stored exactly as typed. The pure parts (parsing, the word
diff, the line editor, running an editor, the page) by hand-written cases."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue, write_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.commands import parse_command, parse_ranking, parse_rating
from rlhf.raters.editing import (
    EditorError,
    diff_lines,
    editor_command,
    marked,
    read_lines,
    run_correction,
    run_editor,
    word_diff,
)
from rlhf.raters.page import layout, width_of
from rlhf.raters.rate import run_session
from rlhf.raters.session import Refused, Session, Shown

ROOT = Path(__file__).resolve().parents[1]
L7 = {"name": "likert7", "low": 1, "high": 7,
      "anchors": {"1": "very bad", "4": "acceptable", "7": "excellent"}}
HOSTILE = "<script>alert(1)</script> \x1b[2Jgotcha </textarea>"
KEEP = ("type", "item_id", "rater", "label", "responses", "ranks", "shown", "response", "value",
        "scale", "low", "high", "anchors", "corrected", "skipped", "text", "about")
"""The keys compared with the hand-written records (ids, times and provenance left out)."""


def kinds_queue(tmp_path) -> list[Item]:
    items = [Item("Tell me a story.", "r0 the cat", "r1 the dog", ask="rank",
                  others=[f"r2 {HOSTILE}", "r3 the bird"], id="rk"),
             Item("Say hi.", "Hi!", ask="rate", id="th"),
             Item("Say hello.", "Hello there.", ask="rate", scale=L7, id="l7"),
             Item("Fix the grammar.", "The cat are happy.", ask="correct", id="co"),
             Item("Rank two.", "x", "y", ask="rank", id="sk1"),
             Item("Rate one.", "z", ask="rate", id="sk2"),
             Item("Correct one.", "w", ask="correct", id="sk3")]
    write_queue(tmp_path / "q.jsonl", items)
    return items


def drive(tmp_path, lines, **kw):
    out = io.StringIO()
    summary = run_session(tmp_path / "q.jsonl", tmp_path / "s.jsonl", "ann",
                          io.StringIO("".join(x + "\n" for x in lines)), out, width=80,
                          repeat_rate=0, **kw)
    return summary, out.getvalue()


def stored(tmp_path) -> list[dict]:
    """The store's records, KEEP keys only, `about` as the index of the record it is about."""
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    index = {r["id"]: i for i, r in enumerate(recs) if r["type"] != "retract"}
    out = []
    for r in recs:
        d = {k: r[k] for k in KEEP if k in r}
        if d.get("about") is not None:
            d["about"] = index[d["about"]]
        out.append(d)
    return out


def test_every_kind_through_piped_stdin_stores_exactly_what_was_answered(tmp_path):
    kinds_queue(tmp_path)
    summary, out = drive(tmp_path, [
        "b a=c", "b a=c d # close call",                        # rk: shown r2, r3, r0, r1
        "5", "- # too short",                                   # th: thumbs only
        "note the prompts repeat", "+", "8", "6",               # l7
        "e", "The cat are happy.", ".",                         # co: unchanged, asked again
        "e", "The cat is happy.", ".",                          # ... changed,
        "e", "The cat is happy.", HOSTILE, "..", ".",           # edited again,
        "y # grammar",                                          # ... saved with a note
        "s # cannot tell", "skip", "s"])                        # sk1, sk2, sk3 skipped
    assert summary == {"answered": 7, "done": 7, "total": 7, "stopped": "done"}
    for said in ("? rank all 4: D missing (h for help)",
                 "saved 1/7: ranked B > A=C > D # close call",
                 "? + thumbs up, - thumbs down (h for help)",
                 "saved 2/7: thumbs down # too short",
                 "noted: the prompts repeat",
                 "? a whole number from 1 to 7 (1 very bad, 4 acceptable, 7 excellent)",
                 "saved 3/7: rated 6 of 1-7",
                 "? the correction is unchanged: edit the response, or skip the item",
                 "YOUR CORRECTION: 3 characters removed, 2 added ([-removed-] {+added+})\n"
                 "  The cat [-are-]{+is+} happy.",
                 "YOUR CORRECTION: 3 characters removed, 53 added ([-removed-] {+added+})\n"
                 "  The cat [-are-]{+is+} happy.{+↵\n"
                 "  <script>alert(1)</script> \\x1b[2Jgotcha </textarea>↵\n"
                 "  .+}",
                 "saved 4/7: corrected (18 -> 68 characters) # grammar",
                 "saved 5/7: skip # cannot tell", "saved 7/7: skip", "All items rated"):
        assert said in out, said
    assert "\x1b" not in out  # shown escaped, never sent
    assert "--- C ---" in out and "  r2 <script>alert(1)</script> \\x1b[2Jgotcha </textarea>" \
        in out
    assert "RATE 1-7: 1 very bad, 4 acceptable, 7 excellent" in out
    responses = ["r0 the cat", "r1 the dog", f"r2 {HOSTILE}", "r3 the bird"]
    thumbs = {"scale": "thumbs", "low": 0, "high": 1, "anchors": {"0": "bad", "1": "good"}}
    note = {"type": "note", "rater": "ann"}
    assert stored(tmp_path) == [
        {"type": "ranking", "item_id": "rk", "rater": "ann", "responses": responses,
         "ranks": [2, 3, 2, 1], "shown": [2, 3, 0, 1], "skipped": False},
        {**note, "item_id": "rk", "text": "close call", "about": 0},
        {"type": "rating", "item_id": "th", "rater": "ann", "response": "Hi!", "value": 0,
         **thumbs, "skipped": False},
        {**note, "item_id": "th", "text": "too short", "about": 2},
        {**note, "item_id": "l7", "text": "the prompts repeat", "about": None},
        {"type": "rating", "item_id": "l7", "rater": "ann", "response": "Hello there.",
         "value": 6, "scale": "likert7", "low": 1, "high": 7, "anchors": L7["anchors"],
         "skipped": False},
        {"type": "correction", "item_id": "co", "rater": "ann",
         "response": "The cat are happy.",
         "corrected": f"The cat is happy.\n{HOSTILE}\n.", "skipped": False},
        {**note, "item_id": "co", "text": "grammar", "about": 6},
        {"type": "ranking", "item_id": "sk1", "rater": "ann", "responses": ["x", "y"],
         "ranks": [], "shown": [], "skipped": True},
        {**note, "item_id": "sk1", "text": "cannot tell", "about": 8},
        {"type": "rating", "item_id": "sk2", "rater": "ann", "response": "z", "value": None,
         **thumbs, "skipped": True},
        {"type": "correction", "item_id": "sk3", "rater": "ann", "response": "w",
         "corrected": "", "skipped": True}]


def test_undo_a_ranking_shows_it_again_and_a_cancelled_correction_saves_nothing(tmp_path):
    kinds_queue(tmp_path)
    _, out = drive(tmp_path, ["b a=c d", "u", "a b c d", "+", "7",
                              "e", "The cat is happy.", ".", "n", "q"])
    assert "undone: ranked B > A=C > D" in out and out.count("item 1 of 7: rank 4") == 2
    assert "saved 1/7: ranked A > B > C > D" in out
    assert "correction cancelled: nothing was saved" in out
    recs = stored(tmp_path)
    kinds = [(r["type"], r.get("item_id"), r.get("ranks"), r.get("value")) for r in recs]
    assert kinds == [("ranking", "rk", [2, 3, 2, 1], None), ("retract", None, None, None),
                     ("ranking", "rk", [3, 4, 1, 2], None), ("rating", "th", None, 1),
                     ("rating", "l7", None, 7)]


def test_limits_refuse_with_the_reason_and_never_cut(tmp_path):
    kinds_queue(tmp_path)
    long_fix = "The cat is happy, and so is everyone who meets it."  # 50 characters
    _, out = drive(tmp_path, [
        "a b c d # this note is far too long", "a b c d # short",
        "note this one is too long as well", "note ok",
        "+", "1", "e", long_fix, "s", "q", ".",  # past the limit: read to the `.`, refused
        "e", "The cat is happy.", ".", "y", "q"],
        max_note=10, max_correction=40)
    assert "? the note is 25 characters; the limit is 10: shorten it (nothing was saved)" \
        in out
    assert "? the note is 28 characters; the limit is 10" in out
    assert "? the correction is 54 characters; the limit is 40: shorten it (nothing was " \
        "saved)\n>" in out  # said once, then the next command is asked for
    recs = stored(tmp_path)
    assert [(r["type"], r.get("text"), r.get("corrected")) for r in recs] == [
        ("ranking", None, None), ("note", "short", None), ("note", "ok", None),
        ("rating", None, None), ("rating", None, None),
        ("correction", None, "The cat is happy.")]


def test_cli_limits_and_help(tmp_path):
    kinds_queue(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "rlhf", "rate", str(tmp_path / "q.jsonl"),
                        "--rater", "ann", "--store", str(tmp_path / "s.jsonl"),
                        "--repeat-rate", "0", "--max-note-chars", "5"],
                       input="a b c d # too long\na b c d # ok\nq\n", capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "? the note is 8 characters; the limit is 5" in r.stdout
    assert [(x["type"], x.get("text")) for x in stored(tmp_path)] == [("ranking", None),
                                                                       ("note", "ok")]
    h = subprocess.run([sys.executable, "-m", "rlhf", "rate", "--help"], capture_output=True,
                       text=True, timeout=60, env=env).stdout
    assert "b a=c d" in h and "note TEXT" in h and "--max-correction-chars" in h


def test_parse_ranking_and_rating():
    for typed in ("b a=c d", "b>a=c>d", "ba=cd", "B A = C D", " b, a =c ,d "):
        assert parse_ranking(typed, 4) == [2, 1, 2, 3], typed
    assert parse_ranking("a b", 2) == [1, 2] and parse_ranking("b=a", 2) == [1, 1]
    assert parse_ranking("c a=b=d", 4) == [2, 2, 1, 2]
    for typed, why in (("b a=c", "rank all 4: D missing"), ("b a=c d e", "'e' is not a"),
                       ("b b a c d", "B is placed twice"), ("=b a c d", "`=` goes between"),
                       ("b a c d=", "`=` goes between"), ("b a==c d", "`=` goes between"),
                       ("", "type the letters"), ("b a 1 c d", "'1' is not a")):
        with pytest.raises(ValueError, match=why.replace("(", r"\(")):
            parse_ranking(typed, 4)
    with pytest.raises(ValueError, match="at most 26"):
        parse_ranking("a", 27)
    thumbs = {"name": "thumbs", "low": 0, "high": 1}
    assert [parse_rating(x, thumbs) for x in ("+", "-", "up", "down", "1", "0")] == \
        [1, 0, 1, 0, 1, 0]
    assert [parse_rating(x, L7) for x in ("1", "6", " 7 ")] == [1, 6, 7]
    assert parse_rating("-3", {"name": "s", "low": -3, "high": 3}) == -3
    for bad in ("0", "8", "+", "six", "1.5", ""):
        with pytest.raises(ValueError, match="from 1 to 7 \\(1 very bad, 4 acceptable"):
            parse_rating(bad, L7)
    with pytest.raises(ValueError, match="thumbs up"):
        parse_rating("5", thumbs)


def test_parse_command_for_each_kind():
    rank8 = Item("p", "a", "b", ask="rank", others=list("cdefgh"))
    c = parse_command("h g=f e d c b a # tight", rank8)
    assert (c.kind, c.places, c.comment) == ("rank", [7, 6, 5, 4, 3, 2, 2, 1], "tight")
    assert parse_command("h", rank8).kind == "help"  # alone: help, not a ranking
    assert parse_command("s # dull", rank8).kind == "skip"
    rate = Item("p", "a", ask="rate", scale=L7)
    c = parse_command("4 # meh", rate)
    assert (c.kind, c.value, c.comment) == ("rate", 4, "meh")
    assert parse_command("a", rate).kind == "error"
    fix = Item("p", "a", ask="correct")
    c = parse_command("e # typo", fix)
    assert (c.kind, c.comment) == ("edit", "typo")
    assert parse_command("edit", fix).kind == "edit" and parse_command("a", fix).kind == "error"
    c = parse_command("note the #1 issue: prompts repeat", fix)
    assert (c.kind, c.comment) == ("note", "the #1 issue: prompts repeat")
    assert parse_command("note", fix).error == "a note needs its text: note TEXT"
    assert "note TEXT" in parse_command("# a note alone", fix).error
    assert parse_command("b2 # A repeats").strength == "clearly"  # comparisons as before


def test_word_diff_runs_rebuild_both_texts_and_marks_need_no_colour():
    old, new = "The cat are happy.\nBye", "The cat is happy!\nBye now"
    runs = word_diff(old, new)
    assert runs == [("=", "The cat "), ("-", "are"), ("+", "is"), ("=", " happy"),
                    ("-", "."), ("+", "!"), ("=", "\nBye"), ("+", " now")]
    assert "".join(t for o, t in runs if o != "+") == old
    assert "".join(t for o, t in runs if o != "-") == new
    assert marked(runs) == "The cat [-are-]{+is+} happy[-.-]{+!+}\nBye{+ now+}"
    assert marked(word_diff("a\nb", "a b\x1b[2J")) == "a[-↵-]{+ +}b{+\\x1b[2J+}"
    assert diff_lines("one two", "one three", 40) == [
        "YOUR CORRECTION: 3 characters removed, 5 added ([-removed-] {+added+})",
        "  one [-two-]{+three+}"]


def pieces(*parts: str):
    """A `readline` giving `parts` one by one, then end of input."""
    it = iter([*parts, ""])
    return lambda: next(it)


def test_line_editor_reads_to_a_lone_dot():
    lines = iter(["first\n", "..\n", "  indented\r\n", "\n", ".\n", "after\n"])
    assert read_lines(lambda: next(lines), 100) == "first\n.\n  indented\n"
    assert next(lines) == "after\n"  # nothing read past the dot
    assert read_lines(pieces("unfinished\n"), 100) is None  # end of input cancels
    assert read_lines(pieces("a long li", "ne\r\n", ".\n"), 100) == "a long line"  # in pieces
    assert read_lines(pieces("abc\n", "d\n", ".\n"), 5) == "abc\nd"  # 5: at the limit


@pytest.mark.parametrize("parts, chars", [
    (("abc\n", "de\n", ".\n"), 6),
    (("abcdefgh\r", "\n", ".\n"), 8),  # a line held by no one: its \r\n counted right
    (("ab\n", "cdefghij", "klm\r\n", "..\n", ".\n"), 16),
    (("abcdef\n", "\n", "x\n", ".\n"), 9)])
def test_line_editor_refuses_past_the_limit_at_the_dot(parts, chars):
    with pytest.raises(Refused, match=f"the correction is {chars} characters; the limit is 5: "
                       "shorten it"):
        read_lines(pieces(*parts), 5)


def test_line_editor_holds_no_more_than_the_limit_of_a_long_text():
    piece = 1 << 16

    def feed():  # fresh strings: 6.5 MB in all, one line of 100 pieces among them
        yield "short\n"
        for _ in range(99):
            yield "x" * piece
        yield "x" * (piece - 2) + "\r\n"
        yield from ("s\n", "..\n", ".\n", "after\n")  # `s`: a line of the text, no command
    lines = feed()
    tracemalloc.start()
    try:
        with pytest.raises(Refused, match="the correction is 6,553,608 characters; the limit "
                           "is 1,000: shorten it"):
            read_lines(lambda: next(lines), 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * piece  # a piece or two at a time, never the text
    assert next(lines) == "after\n"  # read through the dot, no further


def test_run_correction_edits_again_and_refusals_are_one_line(tmp_path):
    write_queue(tmp_path / "q.jsonl", [Item("Fix.", "The cat are happy.", ask="correct",
                                            id="co")])
    s = Session(list(read_queue(tmp_path / "q.jsonl")), ComparisonStore(tmp_path / "s.jsonl"),
                "ann", repeat_rate=0, max_correction=30)
    shown, said, calls = s.next(), [], []

    def run(edits, replies):
        def edit(text):
            calls.append(("edit", text))
            e = edits.pop(0)
            if isinstance(e, Exception):
                raise e
            return e

        def ask(lines):
            calls.append(("ask", lines[1]))
            return replies.pop(0)
        return run_correction(s, shown, "typed before", edit, ask, said.append, 40)

    assert run([EditorError("the edited text is not UTF-8 (line 2): save it as UTF-8")],
               []) is None
    assert run(["The cat are happy."], []) is None  # unchanged
    assert run(["The cat is happy.", None], [("e", "")]) is None  # Ctrl-D in the second
    assert run(["The cat is happy.", "The cat is so happy."], [("e", ""), ("n", "")]) is None
    c = run(["The cat is happy.", "The cat is so happy."], [("e", ""), ("y", "")])
    assert said == ["? the edited text is not UTF-8 (line 2): save it as UTF-8",
                    "? the correction is unchanged: edit the response, or skip the item",
                    "correction cancelled: nothing was saved",
                    "correction cancelled: nothing was saved"]
    assert calls[-4:] == [("edit", "The cat are happy."), ("ask", "  The cat [-are-]{+is+} happy."),
                          ("edit", "The cat is happy."),  # the edited text, edited again
                          ("ask", "  The cat [-are-]{+is so+} happy.")]
    answers = s.store.answers()
    assert [type(a).__name__ for a in answers] == ["Correction", "Note"]
    assert (c.corrected, answers[1].text) == ("The cat is so happy.", "typed before")


def editor_script(tmp_path, body: str) -> list[str]:
    script = tmp_path / "ed.py"
    script.write_text("import sys\np = sys.argv[1]\nt = open(p, encoding='utf-8', "
                      "newline='').read()\n" + body)
    return [sys.executable, str(script)]


def test_run_editor_returns_the_file_as_edited(tmp_path):
    ed = editor_script(tmp_path, "open(p, 'w', encoding='utf-8', newline='').write("
                       "t.replace('are', 'is') + '\\n')\n"
                       f"open({str(tmp_path / 'seen')!r}, 'w').write(p)\n")
    assert run_editor(ed, "The cat are happy.", 100) == "The cat is happy."  # its newline
    assert run_editor(ed, "two\nlines are\n", 100) == "two\nlines is\n\n"  # kept as written
    edited = Path((tmp_path / "seen").read_text())
    assert edited.name.startswith("rlhf-correction-") and not edited.exists()  # removed
    fail = editor_script(tmp_path, "sys.exit(3)\n")
    with pytest.raises(EditorError, match="exited with status 3: nothing was saved"):
        run_editor(fail, "x", 100)
    with pytest.raises(EditorError, match="cannot run the editor 'no-such-editor-h23'"):
        run_editor(["no-such-editor-h23"], "x", 100)
    bad = editor_script(tmp_path, "open(p, 'wb').write(b'ok\\ncaf\\xe9\\n')\n"
                        f"open({str(tmp_path / 'seen')!r}, 'w').write(p)\n")
    with pytest.raises(EditorError, match=r"^the edited text is not UTF-8 \(line 2\): save it "
                       r"as UTF-8 and edit again \(nothing was saved\)$"):
        run_editor(bad, "café", 100)  # refused, never patched with U+FFFD
    assert not Path((tmp_path / "seen").read_text()).exists()
    grow = editor_script(tmp_path, "open(p, 'w').write('x' * 1000)\n")
    with pytest.raises(EditorError, match="1,000 bytes, more than the limit of 10 char"):
        run_editor(grow, "x", 10)
    assert editor_command({"VISUAL": "code --wait", "EDITOR": "vi"}) == ["code", "--wait"]
    assert editor_command({"VISUAL": " ", "EDITOR": "'my ed' -n"}) == ["my ed", "-n"]
    assert editor_command({}) is None


def test_pages_of_each_kind():
    chat = "\n\nHuman: Hi <b>there</b>\n\nAssistant: Hello.\n\nHuman: A story?\n\nAssistant:"
    rank = Item(chat, "same", "", ask="rank", others=["same", "日本語 " * 30], id="r")
    page = layout(Shown(rank, "a", None, 0.0, [0, 1, 2, 3]), (0, 3, float("nan")), 80)
    assert page.splitlines()[:10] == [
        "=" * 23 + " item 1 of 3: rank 4   (--/hour) " + "=" * 24, "PROMPT",
        "  Human:", "    Hi <b>there</b>", "  Assistant:", "    Hello.", "  Human:",
        "    A story?", "  Assistant:", "--- A " + "-" * 74]
    assert "  [empty response]" in page and "  [same as A]" in page
    assert page.splitlines()[-1] == \
        "RANK: the letters best first, = for ties (e.g. b a=c d), then Enter"
    for cols in (40, 60, 80, 160):
        assert max(width_of(x) for x in layout(Shown(rank, "a", None, 0.0, [3, 2, 1, 0]),
                                                (0, 3, 1.0), cols).splitlines()) <= cols
    rate = Item("p", "fine", ask="rate", scale=L7, id="t")
    assert layout(Shown(rate, "a", None, 0.0), (1, 3, float("nan")), 60).splitlines() == [
        "=" * 14 + " item 2 of 3: rate   (--/hour) " + "=" * 15, "PROMPT", "  p",
        "--- RESPONSE " + "-" * 47, "  fine", "-" * 60,
        "RATE 1-7: 1 very bad, 4 acceptable, 7 excellent"]
    thumbs = layout(Shown(Item("p", "x", ask="rate"), "a", None, 0.0), (0, 1, 0.0), 60)
    assert thumbs.endswith("RATE: + thumbs up (good), - thumbs down (bad)")
    fix = layout(Shown(Item("p", "x", ask="correct"), "a", None, 0.0), (0, 1, 0.0), 60)
    assert fix.splitlines()[-2:] == [
        "CORRECT: e to rewrite the response (in your editor, or typed",  # 60 columns
        "line by line)"]


def test_a_command_line_past_any_note_is_refused_in_pieces(tmp_path):
    kinds_queue(tmp_path)
    huge = "a b c d # " + "x" * 300_000  # no command with a note at its limit is this long
    inp, out = io.StringIO(huge + "\na b c d # fine\nq\n"), io.StringIO()
    tracemalloc.start()
    run_session(tmp_path / "q.jsonl", tmp_path / "s.jsonl", "ann", inp, out, width=80,
                repeat_rate=0, max_note=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = out.getvalue()
    assert f"? that line is {len(huge) + 1:,} characters, longer than any command with a " \
        "note (1,124): nothing was saved" in out
    assert peak < 200_000  # read in pieces, never held whole (the input itself is 300 KB)
    assert [(r["type"], r.get("text")) for r in stored(tmp_path)] == [
        ("ranking", None), ("note", "fine")]
