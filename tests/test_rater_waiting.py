"""A rater whose remaining items are on other raters' screens waits instead of being told it
is all done: the rating API says "waiting" (and the page asks again by itself), line mode
waits and asks again, and the item comes to them once the other rater skips it. A rater
with nothing left at all is done, as before."""

from __future__ import annotations

import io

from web_asgi import call
from web_helpers import Client, Server, browser, make_queue, screenshot, wait_for

from rlhf.feedback.queue import read_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.rate import LineMode
from rlhf.raters.session import Session
from rlhf.raters.web import make_app
from rlhf.raters.web_api import RatingServer


def test_the_api_says_waiting_while_another_rater_holds_the_last_item(tmp_path):
    make_queue(tmp_path / "q.jsonl", 2)
    app = make_app(RatingServer(read_queue(tmp_path / "q.jsonl"), tmp_path / "s.jsonl",
                                {"ann": "ta", "bob": "tb"}, repeat_rate=0))
    _, _, ann = call(app, "/r/ta/api/next")
    _, _, bob = call(app, "/r/tb/api/next")
    assert ann["ask"] == bob["ask"] == "compare" and ann["prompt"] != bob["prompt"]
    _, _, out = call(app, "/r/tb/api/answer", {"nonce": bob["nonce"], "choice": "left"})
    nxt = out["next"]  # bob's second: the only one left is on ann's screen
    assert nxt["done"] is False and nxt["waiting"] is True and nxt["held"] == 1
    assert nxt["retry_ms"] > 0 and "summary" not in nxt
    _, _, again = call(app, "/r/tb/api/next")
    assert again["waiting"] is True  # asking again changes nothing while ann holds it
    call(app, "/r/ta/api/answer", {"nonce": ann["nonce"], "choice": "skip"})
    _, _, now = call(app, "/r/tb/api/next")  # ann skipped it: it is bob's
    assert now.get("waiting") is None and now["done"] is False and now["nonce"]
    _, _, out = call(app, "/r/tb/api/answer", {"nonce": now["nonce"], "choice": "right"})
    assert out["next"]["done"] is True and not out["next"].get("waiting")  # all answered


def test_line_mode_waits_and_shows_the_item_once_it_is_handed_back(tmp_path):
    items = make_queue(tmp_path / "q.jsonl", 1)
    store = ComparisonStore(tmp_path / "s.jsonl")
    ann = Session(items, store, "ann", repeat_rate=0)
    held = ann.next()  # on ann's screen (leased)
    waits = []

    def wait(seconds):  # while bob waits, ann skips: the item is handed back
        waits.append(seconds)
        if len(waits) == 2:
            ann.skip(held)

    out = io.StringIO()
    bob = Session(items, ComparisonStore(tmp_path / "s.jsonl"), "bob", repeat_rate=0)
    reason = LineMode(bob, io.StringIO("a\n"), out, 80, wait=wait, poll_seconds=7).run()
    text = out.getvalue()
    assert waits == [7, 7] and text.count("[waiting: 1 item(s)") == 1
    assert reason == "done" and "saved " in text
    assert text.index("[waiting") < text.index("prompt 0")
    assert [c.rater for c in store.item_answers() if not c.skip] == ["bob"]


def test_the_page_waits_then_shows_a_new_item_without_a_reload(tmp_path):
    make_queue(tmp_path / "q.jsonl", 1)
    server = Server(tmp_path, ["ann", "bob"], "--repeat-rate", "0")
    d = None
    try:
        ann = Client(server.port, server.links["ann"])
        status, shown = ann.call("/api/next")
        assert status == 200 and shown["ask"] == "compare"  # the only item: ann's now
        d = browser(1000, 700)
        el = lambda i: d.find_element("id", i)  # noqa: E731
        d.get(server.url("bob"))
        wait_for(d, lambda: el("start").is_displayed(), "the guidelines")
        el("start").click()
        wait_for(d, lambda: el("waiting").is_displayed(), "the waiting state")
        assert "1 item is on other raters' screens" in el("waiting-text").text
        assert not el("done").is_displayed()
        screenshot(d, "rating-waiting")
        d.execute_script("window.__same_page = true")  # gone if the page reloads
        status, out = ann.call("/api/answer", {"nonce": shown["nonce"], "choice": "skip"})
        assert status == 200
        wait_for(d, lambda: el("rate").is_displayed(), "the handed-back item", timeout=30)
        assert "prompt 0" in el("prompt").text
        assert d.execute_script("return window.__same_page") is True
    finally:
        if d is not None:
            d.quit()
        server.stop()
