"""The rating page: security over HTTP (403s, one rater's work hidden from another, oversized
requests, hostile text), and a rater in a real browser (Debian's chromium, driven by
Selenium through chromium-driver): guidelines, answers by keys and by clicks, a revision; the
store then holds exactly those records. With RLHF_SCREENSHOTS=FOLDER the browser test saves
PNG screenshots of the page there (docs/images/ holds the manual's); otherwise it saves none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from web_helpers import (
    HOSTILE,
    ROOT,
    Client,
    Server,
    browser,
    free_port,
    make_queue,
    screenshot,
    wait_for,
)

from rlhf.feedback.records import notes
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.web import MAX_BODY


@pytest.fixture
def served(tmp_path):
    make_queue(tmp_path / "q.jsonl", 6, hostile=True)
    server = Server(tmp_path, ["ann", "bob"], "--repeat-rate", "0", "--overlap", "2")
    yield server
    server.stop()


def test_wrong_or_missing_token_gets_403_and_nothing_else(served):
    c = Client(served.port, "")
    for path in ("/", "/r/", "/r/nope", "/r/nope/api/next", "/r/nope/api/history",
                 "/r/" + served.links["ann"][3:-1] + "/api/next"):  # one character short
        status, body = c.call(path)
        assert status in (403, 404), path
        assert "prompt" not in str(body) and "response" not in str(body)
    assert c.call("/r/nope/api/answer", {"nonce": "x", "choice": "left"})[0] == 403
    assert c.call("/r/nope")[0] == 403


def test_one_rater_cannot_read_or_answer_anothers_items(served, tmp_path):
    ann, bob = (Client(served.port, served.links[n]) for n in ("ann", "bob"))
    status, pair = ann.call("/api/next")
    assert status == 200 and not pair["done"]
    status, saved = ann.call("/api/answer", {"nonce": pair["nonce"], "choice": "left"})
    assert status == 200 and saved["saved"].startswith("saved 1/")
    # bob answering with ann's nonce, or revising ann's answer, is refused
    _, pair2 = ann.call("/api/next")
    assert bob.call("/api/answer", {"nonce": pair2["nonce"], "choice": "tie"})[0] == 409
    assert bob.call("/api/revise", {"id": saved["id"], "choice": "tie"})[0] == 404
    assert bob.call("/api/history")[1] == {"answers": []}
    assert [r["id"] for r in ann.call("/api/history")[1]["answers"]] == [saved["id"]]
    # the page payload names neither the item, nor the side drawn, nor gold / repeat flags
    assert set(pair2) == {"done", "nonce", "ask", "prompt", "responses", "notes", "progress",
                          "limits"}
    assert pair2["ask"] == "compare" and pair2["limits"] == {"note": 2000, "correction": 20000}
    comps = ComparisonStore(tmp_path / "s.jsonl").load()
    assert [(c.rater, c.label) for c in comps] == [("ann", comps[0].left)]


def test_oversized_and_malformed_requests_are_refused(served, tmp_path):
    ann = Client(served.port, served.links["ann"])
    _, pair = ann.call("/api/next")
    big = json.dumps({"nonce": pair["nonce"], "choice": "left", "comment": "x" * MAX_BODY})
    assert ann.call("/api/answer", raw=big.encode())[0] == 413
    assert ann.call("/api/answer", raw=b"[1, 2]")[0] == 400
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert ann.call("/api/answer", raw=b"nonce=x&choice=left", headers=form)[0] == 415
    assert ann.call("/api/answer", {"nonce": pair["nonce"], "choice": "left",
                                    "strength": "huge"})[0] == 400
    assert ann.call("/api/answer", {"nonce": pair["nonce"], "choice": "a"})[0] == 400
    assert not (tmp_path / "s.jsonl").exists() or ComparisonStore(tmp_path / "s.jsonl").load() \
        == []


def test_hostile_text_reaches_the_page_as_inert_text(served):
    ann = Client(served.port, served.links["ann"])
    _, pair = ann.call("/api/next")
    shown = pair["prompt"][0]["text"] + "".join(pair["responses"])
    assert HOSTILE[0] in shown and HOSTILE[1] in shown  # as text (the page uses textContent)
    assert "\x1b" not in shown and "\\x1b[2J\\x1b]0;TITLE\\x07" in shown
    c = Client(served.port, "")
    c.conn.request("GET", served.links["ann"])
    r = c.conn.getresponse()
    r.read()
    csp = r.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_a_rater_in_a_real_browser(served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser(1100, 800)
    try:
        el = lambda i: d.find_element("id", i)  # noqa: E731
        keys = lambda k: ActionChains(d).send_keys(k).perform()  # noqa: E731
        saved = lambda n: wait_for(d, lambda: el("status").text.startswith(  # noqa: E731
            f"saved {n}/"), f"saved {n}")
        d.get(served.url("ann"))
        wait_for(d, lambda: "Rating guidelines" in el("guidelines-text").text, "guidelines")
        screenshot(d, "rating-guidelines")
        keys("x")  # any key starts
        wait_for(d, lambda: el("rate").is_displayed(), "the first pair")
        # hostile text is shown as text: nothing ran, no element was made from it
        assert HOSTILE[0] in el("prompt").text and d.title == "rlhf rating"
        assert d.find_elements("css selector", "#left img, #right img, main script") == []
        assert "\\x1b[2J" in el("left").text + el("right").text
        assert not el("strength").is_displayed()  # asked only after a or b
        screenshot(d, "rating-pair")
        keys("a")
        wait_for(d, lambda: el("strength").is_displayed(), "the strength question")
        screenshot(d, "rating-strength")
        keys("3")
        saved(1)
        d.find_element("css selector", "[data-choice=tie]").click()
        saved(2)
        keys("b")
        keys("x")  # any other key: no strength
        saved(3)
        d.find_element("css selector", "[data-choice=left]").click()
        d.find_element("css selector", "[data-strength=clearly]").click()
        saved(4)
        keys("m")
        ActionChains(d).send_keys("A is too long\n").perform()
        keys("n")
        saved(5)
        # revise the first answer (the history lists the latest first)
        el("nav-history").click()
        wait_for(d, lambda: len(d.find_elements("css selector", ".revise")) == 5, "history")
        d.find_elements("css selector", ".revise")[-1].click()
        wait_for(d, lambda: "Revising" in el("rate-heading").text, "the revise view")
        keys("c")
        wait_for(d, lambda: el("status").text.startswith("revised: can't tell"), "revised")
        wait_for(d, lambda: "(revised)" in el("history-list").text, "the revised entry")
        screenshot(d, "rating-history")
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        el("nav-rate").click()
        wait_for(d, lambda: el("rate").is_displayed(), "the pair on a phone")
        a, b = el("left").rect, el("right").rect
        assert b["y"] > a["y"] + a["height"] - 1  # stacked: B below A
        screenshot(d, "rating-phone")
    finally:
        d.quit()
    store = ComparisonStore(tmp_path / "s.jsonl")
    comps = store.load()
    assert store.errors == []
    said = {n.about: n.text for n in notes(store.answers())}
    got = [(c.item_id, c.label, c.chose_left, c.strength, said.get(c.id, "")) for c in comps]
    first = comps[-1]
    assert got[:4] == [
        ("it1", "tie", None, None, ""),
        ("it2", comps[1].label, False, None, ""),
        ("it3", comps[2].left, True, "clearly", ""),
        ("it4", "both_bad", None, None, "A is too long")]
    assert got[4] == ("it0", "cant_tell", None, None, "")
    assert first.meta["revises"] and first.rater == "ann"
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    original = next(x for x in lines if x.get("id") == first.meta["revises"])
    assert (original["item_id"], original["strength"]) == ("it0", "much")
    assert original["label"] == original["left"]  # "a" pressed = the left side
    assert [x["type"] for x in lines].count("retract") == 1 and len(lines) == 8  # 1 note
    assert all(c.guidelines.startswith("guidelines") and c.seconds >= 0 for c in comps)


LOOP_RATE = """
import sys
from pathlib import Path
from rlhf.loop.config import LoopConfig, RaterConfig
from rlhf.loop.steps import rate_step
cfg = LoopConfig()
cfg.rater = RaterConfig(kind="web", name="ann,bob", port=int(sys.argv[2]), poll_seconds=0.2)
cfg.rater.check()
print("rated:", rate_step(cfg, Path(sys.argv[1]), 1, {}), flush=True)
"""


def start_loop_rating(code: str, out, port: int):
    """The loop's rating step (`code`, LOOP_RATE) in a subprocess serving `out`'s round 1:
    the process and its links by rater name, once its server listens (the links are printed
    before the server thread listens: wait for the server itself, not a guessed delay)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-c", code, str(out), str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    links = {}
    while len(links) < 2:  # LOOP_RATE's raters: ann, bob
        line = p.stderr.readline()
        assert line, "the loop printed no links"
        if "/r/" in line:
            links[line.split()[0]] = "/r/" + line.split("/r/")[1].strip()
        elif "link unchanged" in line:  # (a link is shown once: only its hash is kept)
            links[line.split()[0]] = None
    deadline = time.time() + 60
    while True:
        try:
            Client(port, "").call("/")
            return p, links
        except OSError:
            assert p.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.1)


def test_loop_web_mode_serves_waits_and_resumes_after_a_kill(tmp_path):
    out, port = tmp_path / "run", free_port()
    (out / "round_01").mkdir(parents=True)
    make_queue(out / "round_01" / "queue.jsonl", 4)

    proc, first_links = start_loop_rating(LOOP_RATE, out, port)
    ann = Client(port, first_links["ann"])
    _, pair = ann.call("/api/next")
    assert ann.call("/api/answer", {"nonce": pair["nonce"], "choice": "left"})[0] == 200
    proc.kill()
    proc.wait(timeout=10)
    proc, links = start_loop_rating(LOOP_RATE, out, port)
    assert links == {"ann": None, "bob": None}  # unchanged after a restart, not shown again
    links = first_links  # (and they still work)
    for name in ("ann", "bob"):
        c = Client(port, links[name])
        try:  # the server stops once every pair has an answer
            _, pair = c.call("/api/next")
            while not pair["done"]:
                status, r = c.call("/api/answer", {"nonce": pair["nonce"], "choice": "tie"})
                if status != 200:
                    break
                pair = r["next"]
        except OSError:
            break
    assert proc.wait(timeout=30) == 0
    assert "rated: True" in proc.stdout.read()
    comps = ComparisonStore(out / "comparisons.jsonl").load()
    assert {c.item_id for c in comps} == {f"it{i}" for i in range(4)}


def test_a_signal_ends_the_loops_wait_for_web_raters(tmp_path):
    """SIGTERM while the loop serves a round's pairs: the wait ends (rate_step says not rated,
    the loop then saves nothing new and exits as interrupted), the server stops, and the
    answers given so far are in the store."""
    out, port = tmp_path / "run", free_port()
    (out / "round_01").mkdir(parents=True)
    make_queue(out / "round_01" / "queue.jsonl", 4)
    code = "from rlhf.harness.folder import catch_signals\ncatch_signals()\n" + LOOP_RATE
    p, links = start_loop_rating(code, out, port)
    link = links["ann"]
    _, pair = Client(port, link).call("/api/next")
    assert Client(port, link).call("/api/answer", {"nonce": pair["nonce"],
                                                   "choice": "left"})[0] == 200
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    assert "rated: False" in p.stdout.read()
    assert len(ComparisonStore(out / "comparisons.jsonl").load()) == 1


def test_a_terminal_and_the_web_page_share_one_assignment_rule(tmp_path):
    import io

    from rlhf.raters.rate import run_session

    make_queue(tmp_path / "q.jsonl", 3)
    server = Server(tmp_path, ["ann"], "--repeat-rate", "0")  # overlap 1
    try:
        ann = Client(server.port, server.links["ann"])
        _, pair = ann.call("/api/next")  # it0 is on ann's screen: leased to her
        assert pair["prompt"] == [{"role": "", "text": "prompt 0"}]
        out = io.StringIO()
        run_session(tmp_path / "q.jsonl", tmp_path / "s.jsonl", "bob",
                    io.StringIO("s\nq\n"), out, width=80, repeat_rate=0)
        # bob's terminal skips it0, gets it1, skips it; it1 goes back to the others
        assert "prompt 0" not in out.getvalue() and "prompt 1" in out.getvalue()
        _, r = ann.call("/api/answer", {"nonce": pair["nonce"], "choice": "left"})
        assert r["next"]["prompt"][0]["text"] == "prompt 1"  # bob's skip handed it to ann
    finally:
        server.stop()


def test_two_server_processes_one_store_hidden_repeats_and_gold(tmp_path):
    from rlhf.feedback.items import Item
    from rlhf.feedback.queue import write_queue

    write_queue(tmp_path / "q.jsonl", [Item(f"prompt {i}", f"a{i}", f"b{i}", id=f"it{i}",
                                            gold="a" if i == 0 else None) for i in range(4)])
    one = Server(tmp_path, ["ann"], "--repeat-rate", "1", "--overlap", "1")
    two = Server(tmp_path, ["bob"], "--repeat-rate", "1", "--overlap", "1")
    try:
        ann, bob = Client(one.port, one.links["ann"]), Client(two.port, two.links["bob"])
        pa, pb = ann.call("/api/next")[1], bob.call("/api/next")[1]
        assert pa["prompt"] != pb["prompt"]  # two processes, one lease rule
        shown = {ann: pa, bob: pb}
        for _ in range(40):  # by turns: a rater whose last item is on the other's screen waits
            if all(p["done"] for p in shown.values()):
                break
            for c, pair in shown.items():
                if pair.get("waiting"):
                    shown[c] = c.call("/api/next")[1]
                elif not pair["done"]:
                    shown[c] = c.call("/api/answer", {"nonce": pair["nonce"],
                                                      "choice": "left"})[1]["next"]
        assert all(p["done"] for p in shown.values())
    finally:
        one.stop()
        two.stop()
    comps = ComparisonStore(tmp_path / "s.jsonl").load()
    firsts = {c.id: c for c in comps if c.repeat_of is None}
    repeats = [c for c in comps if c.repeat_of]
    assert sorted(c.item_id for c in firsts.values()) == [f"it{i}" for i in range(4)]
    assert len(repeats) == 4 and all(c.served_because == "repeat" for c in repeats)
    assert all(c.left != firsts[c.repeat_of].left and c.rater == firsts[c.repeat_of].rater
               for c in repeats)  # the same rater, the sides swapped
    assert [c.gold for c in comps if c.item_id == "it0"] == ["a", "a"]


def test_rater_names_and_tokens_kept_private_and_stable(tmp_path):
    import stat

    from rlhf.config import UserError
    from rlhf.raters.web import rater_names
    from rlhf.raters.web_tokens import digest, rater_tokens

    f = tmp_path / "raters.txt"
    f.write_text("ann  # team A\n\nbob\n")
    assert rater_names("cat", str(f)) == ["cat", "ann", "bob"]
    with pytest.raises(UserError, match="named twice"):
        rater_names("ann,ann", None)
    with pytest.raises(UserError, match="name the raters"):
        rater_names("", None)
    path = tmp_path / "s.jsonl.raters.json"
    hashes, first = rater_tokens(path, ["ann", "bob"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(set(first.values())) == 2 and all(len(t) >= 24 for t in first.values())
    assert hashes == {n: digest(t) for n, t in first.items()}  # only hashes are kept
    assert not any(t in path.read_text() for t in first.values())
    again, shown = rater_tokens(path, ["bob", "cat"])
    assert again["bob"] == hashes["bob"] and set(shown) == {"cat"}  # bob's link unchanged
    assert rater_tokens(path, ["ann"]) == ({"ann": hashes["ann"]}, {})
