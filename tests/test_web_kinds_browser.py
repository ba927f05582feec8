"""A rater in a real browser (headless Chromium through Selenium) answering every kind of item:
a ranking by keys (with a tie), a ranking by dragging and by the arrow keys, a thumbs rating
with a note, a 1-7 rating whose over-long note is refused (not cut) and then fixed, a 0-10
rating typed digit by digit (10 by `1` `0` Enter), a 0-100 rating whose empty box is refused,
a correction whose unchanged text is refused and whose changes (the server's word diff) are
shown before they are sent, a comparison with a note about it standing alone, and a note
standing alone on the end screen. The store then holds exactly the hand-written records. A
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

ActionChains = pytest.importorskip("selenium.webdriver.common.action_chains").ActionChains
Keys = pytest.importorskip("selenium.webdriver.common.keys").Keys

SCRIPT = '<script>document.title="pwned"</script>'
TRANSCRIPT = ("\n\nHuman: Which fruit is best?\n\nAssistant: Let me list some.\n\n"
              "Human: Rank them, best first.\n\nAssistant:")
ORIGINAL = "The cat sat on the mat. </textarea><script>document.title='pwned'</script> \x1b[2J"
CORRECTED = ("A cat sat on the mat. </textarea><script>document.title='pwned'</script> \x1b[2J"
             " Not <b>bold</b>.")
GUIDE = ("# Guidelines (Version: 3)\n\nRead **carefully**.\n\n1. one\n2. two\n\n"
         "[docs](https://example.org/docs) [bad](javascript:alert(1)) " + SCRIPT + "\n")
TEN = {"name": "ten", "low": 0, "high": 10}
WIDE = {"name": "percent", "low": 0, "high": 100}


def items() -> list[Item]:
    return [
        Item(TRANSCRIPT, "mid: a pear", f"worst: {SCRIPT}", id="rank-keys", ask="rank",
             others=["best: a fig </textarea>"]),
        Item("Order these, longest first", "one", "three three three", id="rank-drag",
             ask="rank", others=["two two", "four four four four"]),
        Item("What is the capital of France?", "Paris.", id="thumbs", ask="rate"),
        Item("Is it going to rain?", "It depends.", id="scale", ask="rate", scale=LIKERT7),
        Item("Count to ten.", "1 2 3 4 5 6 7 8 9 10", id="ten", ask="rate", scale=TEN),
        Item("How sure are you?", "Fairly.", id="wide", ask="rate", scale=WIDE),
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


class Page:
    """The rating page in the browser `d`, with the few moves the steps below make."""

    def __init__(self, d):
        self.d = d

    def el(self, i):
        return self.d.find_element("id", i)

    def css(self, q):
        return self.d.find_elements("css selector", q)

    def keys(self, *k):
        ActionChains(self.d).send_keys(*k).perform()

    def ctrl(self, k):
        ActionChains(self.d).key_down(Keys.CONTROL).send_keys(k).key_up(Keys.CONTROL).perform()

    def wait(self, cond, what):
        wait_for(self.d, cond, what)

    def status_is(self, text, what):
        self.wait(lambda: self.el("status").text == text, what)

    def saved(self, n):
        self.wait(lambda: self.el("status").text.startswith(f"saved {n}/"), f"saved {n}")

    def cards(self):
        return self.css("#rank-list .card")

    def order(self):
        return [text(c.find_element("css selector", "pre")) for c in self.cards()]

    def card(self, start):
        return next(c for c in self.cards() if text(c.find_element("css selector", "pre"))
                    .startswith(start))

    def inert(self):
        assert self.d.title == "rlhf rating" and self.css("main script, main img, main b") == []
        assert len(self.css("textarea")) == 1  # the correction's own box, nothing made from text


def text(e):
    return e.get_attribute("textContent")


def read_guidelines(p):
    """The guidelines, formatted; their link and HTML inert; any key starts."""
    p.wait(lambda: p.css("#guidelines-text h1"), "the guidelines")
    assert text(p.css("#guidelines-text h1")[0]) == "Guidelines (Version: 3)"
    assert [text(e) for e in p.css("#guidelines-text strong, #guidelines-text li")] == [
        "carefully", "one", "two"]
    assert [a.get_attribute("href") for a in p.css("#guidelines-text a")] == [
        "https://example.org/docs"]
    assert SCRIPT in text(p.el("guidelines-text")) and "[bad](javascript:" in text(
        p.el("guidelines-text"))
    p.inert()
    p.keys("x")


def rank_by_keys(p):
    """The letters best first, = between ties (two taken back by Backspace first)."""
    p.wait(lambda: p.el("rank-view").is_displayed(), "the first ranking")
    assert [(t.get_attribute("class"), text(t.find_element("css selector", ".role")),
             text(t.find_element("css selector", ".turn-text"))) for t in p.css("#prompt .turn")
            ] == [("turn role-human", "Human", "Which fruit is best?"),
                  ("turn role-assistant", "Assistant", "Let me list some."),
                  ("turn role-human", "Human", "Rank them, best first.")]
    assert sorted(p.order()) == sorted(["mid: a pear", f"worst: {SCRIPT}",
                                        "best: a fig </textarea>"])
    p.inert()
    letter = {o.split(":")[0]: text(c.find_element("css selector", ".letter")).lower()
              for o, c in zip(p.order(), p.cards())}
    p.keys(letter["mid"], letter["best"], Keys.BACKSPACE, Keys.BACKSPACE)  # taken back
    p.keys(letter["best"], letter["mid"], "=", letter["worst"])
    assert p.el("rank-typed").text == "typed: {} > {} = {}".format(
        *(letter[w].upper() for w in ("best", "mid", "worst")))
    assert [o.split(":")[0] for o in p.order()] == ["best", "mid", "worst"]
    assert [text(c.find_element("css selector", ".place")) for c in p.cards()] == [
        "place 1", "place 2", "place 2 (tied with the one above)"]
    p.keys(Keys.ENTER)
    p.saved(1)


def rank_by_drag_and_arrows(p):
    """Four and three dragged by their handles to the top; one typed (to the top), then moved
    to the bottom by the arrow key."""
    p.wait(lambda: len(p.cards()) == 4, "the second ranking")
    for place, start in enumerate(["four", "three"]):
        c, target = p.card(start), p.cards()[place]
        if c != target:
            ActionChains(p.d).click_and_hold(c.find_element("css selector", ".handle")) \
                .move_to_element_with_offset(target, 0, 4 - target.size["height"] // 2) \
                .release().perform()
    assert [o.split()[0] for o in p.order()[:2]] == ["four", "three"]
    one = text(p.card("one").find_element("css selector", ".letter")).lower()
    assert p.card("one").find_element("css selector", ".handle").get_attribute("title") == \
        f"drag to move, or press {one}, then \u2191 \u2193 to move it"
    p.keys(one)
    assert p.order()[0] == "one"
    p.keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert [o.split()[0] for o in p.order()] == ["four", "three", "two", "one"]
    assert p.css("#rank-list .card.current") == [p.card("one")]
    screenshot(p.d, "rating-rank")
    p.el("rank-send").click()
    p.saved(2)


def rate_with_notes(p):
    """Thumbs up with a note; 2 of 1-7 with a note that is refused (too long), then fixed."""
    p.wait(lambda: p.el("rating-view").is_displayed(), "the thumbs rating")
    assert [text(e) for e in p.css("#scale .anchor")] == ["bad", "good"]
    p.keys("m", "right, and short", Keys.ENTER)
    p.keys("+")
    p.saved(3)
    p.wait(lambda: len(p.css("#scale .score")) == 7, "the 1-7 scale")
    assert [text(e) for e in p.css("#scale .anchor")] == ["very bad", "acceptable", "excellent"]
    p.keys("m", "x" * 41, Keys.ENTER)
    assert p.el("note-count").text == "41 of at most 40 characters"
    screenshot(p.d, "rating-scale")
    p.keys("2")
    p.status_is("not saved: the note is 41 characters; the limit is 40: shorten it (nothing "
                "was saved)", "the refusal")
    assert p.d.switch_to.active_element == p.el("note") and p.el("note").get_attribute(
        "value") == "x" * 41
    p.ctrl("a")
    p.keys("vague", Keys.ENTER, "2")
    p.saved(4)


def rate_by_typed_scores(p):
    """0-10: `1` waits for more, `0` makes 10, Enter sends it. 0-100 (a number box): Enter in
    the empty box is refused on the page (no 0 is saved); 42 is sent."""
    p.wait(lambda: len(p.css("#scale .score")) == 11, "the 0-10 scale")
    p.keys("1")
    assert p.el("rate-typed").text == "typed: 1_ (Enter sends it)"
    p.keys("0")
    assert p.el("rate-typed").text == "typed: 10_ (Enter sends it)"
    assert p.el("status").text.startswith("saved 4/")  # nothing sent yet
    p.keys(Keys.ENTER)
    p.saved(5)
    p.wait(lambda: p.css("#scale-value"), "the 0-100 box")
    p.el("scale-value").click()
    p.keys(Keys.ENTER)
    p.status_is("type a whole number from 0 to 100", "the empty box refused")
    p.keys("42", Keys.ENTER)
    p.saved(6)


def correct(p):
    """Unchanged is refused; the changes are shown word by word before they are sent."""
    p.wait(lambda: p.el("correct-view").is_displayed(), "the correction")
    assert p.el("correction").get_attribute("value") == ORIGINAL  # the text itself
    assert "</textarea><script>" in text(p.el("original")) and "\\x1b[2J" in text(
        p.el("original"))
    p.inert()
    p.keys("d")
    p.wait(lambda: p.el("diff-panel").is_displayed(), "the (empty) difference")
    assert "(no changes)" in text(p.el("diff"))
    p.keys("y")
    p.status_is("not saved: the correction is unchanged: edit the response, or skip the item",
                "the refusal")
    assert p.d.switch_to.active_element == p.el("correction") and not p.el(
        "diff-panel").is_displayed()
    p.ctrl(Keys.HOME)
    p.keys(Keys.DELETE * 3, "A")
    p.ctrl(Keys.END)
    p.keys(" Not <b>bold</b>.")
    p.ctrl(Keys.ENTER)
    p.wait(lambda: p.el("diff-panel").is_displayed(), "the difference")
    assert [text(e) for e in p.css("#diff del")] == ["The"]
    assert [text(e) for e in p.css("#diff ins")] == ["A", " Not <b>bold</b>."]
    assert text(p.el("diff")) == ("TheA cat sat on the mat. </textarea><script>"
                                  "document.title='pwned'</script> \\x1b[2J Not <b>bold</b>.")
    p.inert()
    screenshot(p.d, "rating-correct")
    p.keys("y")
    p.saved(7)


def compare_and_note(p):
    """A note standing alone about the pair on screen, a tie; then a note on the end screen."""
    p.wait(lambda: p.el("compare-view").is_displayed(), "the pair")
    p.keys("w", "Both say hi", Keys.ENTER)
    p.status_is("note saved", "the note about the pair")
    p.keys("t")
    p.saved(8)
    p.wait(lambda: p.el("done").is_displayed(), "the end screen")
    p.keys("w", "The fig item is odd", Keys.ENTER)
    p.status_is("note saved", "the standing note")


def test_a_rater_answers_every_kind_in_a_real_browser(served, tmp_path):
    d = browser(1100, 1000)
    try:
        d.get(served.url("ann"))
        p = Page(d)
        read_guidelines(p)
        rank_by_keys(p)
        rank_by_drag_and_arrows(p)
        rate_with_notes(p)
        rate_by_typed_scores(p)
        correct(p)
        compare_and_note(p)
    finally:
        d.quit()

    store = ComparisonStore(tmp_path / "s.jsonl")
    records = store.answers()
    assert store.errors == []
    ids = [r.id for r in records]

    def row(r):
        if isinstance(r, Note):
            return ("note", ids.index(r.about) if r.about else r.item_id, r.text)
        what = {Ranking: "ranks", Rating: "value", Correction: "corrected", Comparison: "label"}
        return (r.kind, r.item_id, getattr(r, what[type(r)]))

    assert [row(r) for r in records] == [
        ("ranking", "rank-keys", [2, 2, 1]),
        ("ranking", "rank-drag", [4, 2, 3, 1]),
        ("rating", "thumbs", 1),
        ("note", 2, "right, and short"),
        ("rating", "scale", 2),
        ("note", 4, "vague"),
        ("rating", "ten", 10),
        ("rating", "wide", 42),
        ("correction", "fix", CORRECTED),  # exactly as typed, the escape kept as it was
        ("note", "pair", "Both say hi"),  # standing alone, about the item on screen
        ("comparison", "pair", "tie"),
        ("note", "", "The fig item is odd"),  # on the end screen: about no item
    ]
    assert records[8].response == ORIGINAL and records[9].prompt == "Say hi"
    assert all(r.rater == "ann" and r.guidelines == "guide-3" for r in records)
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 12  # nothing retracted
