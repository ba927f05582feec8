"""A rater in a real browser (headless Chromium through Selenium) answering every kind of item:
a ranking by keys (with a tie), a ranking by dragging, a thumbs rating with a note, a 1-7
rating whose over-long note is refused (not cut) and then fixed, a correction whose unchanged
text is refused and whose changes are shown word by word before they are sent, a comparison,
and a note standing alone. The store then holds exactly the hand-written records. A
`<script>`, `</textarea>` or terminal escape in a response, the guidelines or a correction stays
inert: no element is made from it, it is shown as text and stored as typed.
With RLHF_SCREENSHOTS=FOLDER the test saves rating-rank, rating-scale and
rating-correct there (docs/images/ holds the manual's)."""

from __future__ import annotations

import pytest
from web_helpers import LIKERT7, Server, browser, screenshot, wait_for

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import Comparison, Correction, Note, Ranking, Rating
from rlhf.feedback.store import ComparisonStore

SCRIPT = '<script>document.title="pwned"</script>'
TRANSCRIPT = ("\n\nHuman: Which fruit is best?\n\nAssistant: Let me list some.\n\n"
              "Human: Rank them, best first.\n\nAssistant:")
ORIGINAL = "The cat sat on the mat. </textarea><script>document.title='pwned'</script> \x1b[2J"
CORRECTED = ("A cat sat on the mat. </textarea><script>document.title='pwned'</script> \x1b[2J"
             " Not <b>bold</b>.")
GUIDE = ("# Guidelines (Version: 3)\n\nRead **carefully**.\n\n1. one\n2. two\n\n"
         "[docs](https://example.org/docs) [bad](javascript:alert(1)) " + SCRIPT + "\n")


def items() -> list[Item]:
    return [
        Item(TRANSCRIPT, "mid: a pear", f"worst: {SCRIPT}", id="rank-keys", ask="rank",
             others=["best: a fig </textarea>"]),
        Item("Order these, longest first", "one", "three three three", id="rank-drag",
             ask="rank", others=["two two", "four four four four"]),
        Item("What is the capital of France?", "Paris.", id="thumbs", ask="rate"),
        Item("Is it going to rain?", "It depends.", id="scale", ask="rate", scale=LIKERT7),
        Item("Describe the scene.", ORIGINAL, id="fix", ask="correct"),
        Item("Say hi", "hello", "hi \x1b[2J", id="pair"),
    ]


@pytest.fixture
def served(tmp_path):
    write_queue(tmp_path / "q.jsonl", items())
    (tmp_path / "guide.md").write_text(GUIDE, encoding="utf-8")
    server = Server(tmp_path, ["ann"], "--repeat-rate", "0", "--max-note-chars", "40",
                    "--guidelines", str(tmp_path / "guide.md"))
    yield server
    server.stop()


def test_word_diff_marks_insertions_and_deletions(served):
    d = browser(900, 700)
    try:
        d.get(served.url("ann"))
        wait_for(d, lambda: d.execute_script("return typeof wordDiff") == "function", "page")
        diff = lambda a, b: d.execute_script("return wordDiff(arguments[0], arguments[1])",  # noqa: E731
                                             a, b)
        assert diff("The cat sat on the mat.", "The dog sat on the red mat.") == [
            ["=", "The "], ["-", "cat"], ["+", "dog"], ["=", " sat on the"], ["+", " red"],
            ["=", " mat."]]
        assert diff("a b", "a b") == [["=", "a b"]]
        assert diff("", "new text") == [["+", "new text"]]
        assert diff("x y", "") == [["-", "x y"]]
        assert diff("one\ntwo", "one two") == [["=", "one"], ["-", "\n"], ["+", " "],
                                               ["=", "two"]]
    finally:
        d.quit()


def test_a_rater_answers_every_kind_in_a_real_browser(served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    d = browser(1100, 1000)
    el = lambda i: d.find_element("id", i)  # noqa: E731
    css = lambda q: d.find_elements("css selector", q)  # noqa: E731
    keys = lambda *k: ActionChains(d).send_keys(*k).perform()  # noqa: E731
    ctrl = lambda k: ActionChains(d).key_down(Keys.CONTROL).send_keys(k).key_up(  # noqa: E731
        Keys.CONTROL).perform()
    text = lambda e: e.get_attribute("textContent")  # noqa: E731
    saved = lambda n: wait_for(d, lambda: el("status").text.startswith(  # noqa: E731
        f"saved {n}/"), f"saved {n}")
    cards = lambda: css("#rank-list .card")  # noqa: E731
    order = lambda: [text(c.find_element("css selector", "pre")) for c in cards()]  # noqa: E731

    def card(start):
        return next(c for c in cards() if text(c.find_element("css selector", "pre"))
                    .startswith(start))

    def inert():
        assert d.title == "rlhf rating" and css("main script, main img, main b") == []
        assert len(css("textarea")) == 1  # the correction's own box, nothing made from text

    try:
        d.get(served.url("ann"))
        # the guidelines, formatted; their link and HTML inert
        wait_for(d, lambda: css("#guidelines-text h1"), "the guidelines")
        assert text(css("#guidelines-text h1")[0]) == "Guidelines (Version: 3)"
        assert [text(e) for e in css("#guidelines-text strong, #guidelines-text li")] == [
            "carefully", "one", "two"]
        assert [a.get_attribute("href") for a in css("#guidelines-text a")] == [
            "https://example.org/docs"]
        assert SCRIPT in text(el("guidelines-text")) and "[bad](javascript:" in text(
            el("guidelines-text"))
        inert()
        keys("x")

        # 1. rank by keys: the letters best first, = between ties
        wait_for(d, lambda: el("rank-view").is_displayed(), "the first ranking")
        turns = css("#prompt .turn")
        assert [(t.get_attribute("class"), text(t.find_element("css selector", ".role")),
                 text(t.find_element("css selector", ".turn-text"))) for t in turns] == [
            ("turn role-human", "Human", "Which fruit is best?"),
            ("turn role-assistant", "Assistant", "Let me list some."),
            ("turn role-human", "Human", "Rank them, best first.")]
        assert sorted(order()) == sorted(["mid: a pear", f"worst: {SCRIPT}",
                                          "best: a fig </textarea>"])
        inert()
        letter = {o.split(":")[0]: text(c.find_element("css selector", ".letter")).lower()
                  for o, c in zip(order(), cards())}
        keys(letter["mid"], letter["best"], Keys.BACKSPACE, Keys.BACKSPACE)  # taken back
        keys(letter["best"], letter["mid"], "=", letter["worst"])
        assert el("rank-typed").text == "typed: {} > {} = {}".format(
            *(letter[w].upper() for w in ("best", "mid", "worst")))
        assert [o.split(":")[0] for o in order()] == ["best", "mid", "worst"]
        assert [text(c.find_element("css selector", ".place")) for c in cards()] == [
            "place 1", "place 2", "place 2 (tied with the one above)"]
        keys(Keys.ENTER)
        saved(1)

        # 2. rank by dragging each response by its handle above the one it should precede
        wait_for(d, lambda: len(cards()) == 4, "the second ranking")
        for place, start in enumerate(["four", "three", "two"]):
            c, target = card(start), cards()[place]
            if c == target:
                continue
            ActionChains(d).click_and_hold(c.find_element("css selector", ".handle")) \
                .move_to_element_with_offset(target, 0, 4 - target.size["height"] // 2) \
                .release().perform()
        assert [o.split()[0] for o in order()] == ["four", "three", "two", "one"]
        screenshot(d, "rating-rank")
        el("rank-send").click()
        saved(2)

        # 3. thumbs, with a note
        wait_for(d, lambda: el("rating-view").is_displayed(), "the thumbs rating")
        assert [text(e) for e in css("#scale .anchor")] == ["bad", "good"]
        keys("m", "right, and short", Keys.ENTER)
        keys("+")
        saved(3)

        # 4. a 1-7 scale: an over-long note is refused (nothing saved, nothing cut), then fixed
        wait_for(d, lambda: len(css("#scale .score")) == 7, "the 1-7 scale")
        assert [text(e) for e in css("#scale .anchor")] == ["very bad", "acceptable",
                                                           "excellent"]
        keys("m", "x" * 41, Keys.ENTER)
        assert el("note-count").text == "41 of at most 40 characters"
        screenshot(d, "rating-scale")
        keys("2")
        wait_for(d, lambda: el("status").text == "not saved: the note is 41 characters; the "
                 "limit is 40: shorten it (nothing was saved)", "the refusal")
        assert d.switch_to.active_element == el("note") and el("note").get_attribute(
            "value") == "x" * 41
        ctrl("a")
        keys("vague", Keys.ENTER, "2")
        saved(4)

        # 5. a correction: unchanged is refused; the changes are shown before they are sent
        wait_for(d, lambda: el("correct-view").is_displayed(), "the correction")
        assert el("correction").get_attribute("value") == ORIGINAL  # the text itself
        assert "</textarea><script>" in text(el("original")) and "\\x1b[2J" in text(
            el("original"))
        inert()
        keys("d")
        wait_for(d, lambda: el("diff-panel").is_displayed(), "the (empty) difference")
        assert "(no changes)" in text(el("diff"))
        keys("y")
        wait_for(d, lambda: el("status").text == "not saved: the correction is unchanged: "
                 "edit the response, or skip the item", "the refusal")
        assert d.switch_to.active_element == el("correction") and not el(
            "diff-panel").is_displayed()
        ctrl(Keys.HOME)
        keys(Keys.DELETE * 3, "A")
        ctrl(Keys.END)
        keys(" Not <b>bold</b>.")
        ctrl(Keys.ENTER)
        wait_for(d, lambda: el("diff-panel").is_displayed(), "the difference")
        assert [text(e) for e in css("#diff del")] == ["The"]
        assert [text(e) for e in css("#diff ins")] == ["A", " Not <b>bold</b>."]
        assert text(el("diff")) == ("TheA cat sat on the mat. </textarea><script>"
                                    "document.title='pwned'</script> \\x1b[2J Not <b>bold</b>.")
        inert()
        screenshot(d, "rating-correct")
        keys("y")
        saved(5)

        # 6. a pair; then a note standing alone
        wait_for(d, lambda: el("compare-view").is_displayed(), "the pair")
        keys("t")
        saved(6)
        wait_for(d, lambda: el("done").is_displayed(), "the end screen")
        keys("w", "The fig item is odd", Keys.ENTER)
        wait_for(d, lambda: el("status").text == "note saved", "the standing note")
    finally:
        d.quit()

    store = ComparisonStore(tmp_path / "s.jsonl")
    records = store.answers()
    assert store.errors == []
    ids = [r.id for r in records]

    def row(r):
        if isinstance(r, Note):
            return ("note", ids.index(r.about) if r.about else None, r.text)
        what = {Ranking: "ranks", Rating: "value", Correction: "corrected", Comparison: "label"}
        return (r.kind, r.item_id, getattr(r, what[type(r)]))

    assert [row(r) for r in records] == [
        ("ranking", "rank-keys", [2, 2, 1]),
        ("ranking", "rank-drag", [4, 2, 3, 1]),
        ("rating", "thumbs", 1),
        ("note", 2, "right, and short"),
        ("rating", "scale", 2),
        ("note", 4, "vague"),
        ("correction", "fix", CORRECTED),  # exactly as typed, the escape kept as it was
        ("comparison", "pair", "tie"),
        ("note", None, "The fig item is odd"),
    ]
    assert records[6].response == ORIGINAL
    assert all(r.rater == "ann" and r.guidelines == "guide-3" for r in records)
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 9  # nothing retracted
