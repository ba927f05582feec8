"""Hostile requests to the rating API: bodies of the wrong shape or type for every field of
every action, nested 5,000 deep or holding a lone surrogate, get 400 with a message (never a
500, nothing stored); every response, errors included (403, 404, 405, 409, 413, 415, 422, 431,
500), carries the security headers; a request head over 16 KiB is refused whether it arrives
whole (431) or in pieces (the parser's 400); and a Hypothesis property: any JSON-ish body to
any action gets a 2xx/4xx JSON answer, never a 500 or a traceback (bounded here, thousands of
examples under `-m slow`)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web_asgi import call
from web_helpers import make_mixed_queue

from rlhf.feedback.queue import read_queue
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.web import make_app
from rlhf.raters.web_api import ACTIONS, RatingServer
from rlhf.raters.web_checks import MAX_HEAD
from rlhf.raters.web_serving import bind, uvicorn_server

SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy",
            "cache-control", "x-frame-options")
DEEP = b'{"nonce": ' + b"[" * 5000 + b"]" * 5000 + b"}"
BAD = {  # action: bodies of the wrong shape (NONCE: the nonce of the item on screen)
    "answer": [{"nonce": "NONCE", "choice": ["left"]},
               {"nonce": "NONCE", "choice": "left", "strength": {"much": 1}},
               {"nonce": "NONCE", "places": "abc"}, {"nonce": "NONCE", "places": [[1], 2]},
               {"nonce": "NONCE", "places": [1, True, 2]}, {"nonce": "NONCE", "places": {}},
               {"nonce": "NONCE", "value": [5]}, {"nonce": "NONCE", "value": {"v": 5}},
               {"nonce": "NONCE", "text": 5}, {"nonce": "NONCE", "text": ["a"]},
               {"nonce": "NONCE", "note": {"x": 1}, "choice": "left"},
               {"nonce": "NONCE", "comment": 7, "choice": "left"},
               {"nonce": ["NONCE"], "choice": "left"}, {"nonce": True, "choice": "left"},
               {"nonce": "NONCE", "places": list(range(1, 70))}],
    "note": [{"text": ["hi"]}, {"text": 3}, {"text": None}, {"text": "hi", "nonce": {}}],
    "diff": [{"nonce": "NONCE", "text": 5}, {"nonce": "NONCE", "text": {"a": "b"}},
             {"nonce": 1.5, "text": "x"}],
    "revise": [{"id": ["x"], "choice": "tie"}, {"id": {}, "choice": "tie"},
               {"id": "ID", "choice": ["tie"]}, {"id": "ID", "choice": "left",
                                                  "strength": [2]}],
    "undo": [{"note": []}], "next": [{"nonce": {}}], "history": [{"id": 1}],
    "guidelines": [{"text": []}],
}


@pytest.fixture
def app(tmp_path):
    make_mixed_queue(tmp_path / "q.jsonl", 40)
    server = RatingServer(read_queue(tmp_path / "q.jsonl"), tmp_path / "s.jsonl",
                          {"ann": "tok"}, repeat_rate=0)
    return make_app(server)


def fill(body, nonce: str, answer_id: str):
    """`body` with NONCE / ID put in: the live nonce and a stored answer's id."""
    text = json.dumps(body).replace('"NONCE"', json.dumps(nonce)).replace('"ID"',
                                                                          json.dumps(answer_id))
    return json.loads(text)


def on_screen(app) -> tuple[str, str]:
    """(the nonce of the item on screen, the id of one stored comparison of ann's)."""
    status, _, shown = call(app, "/r/tok/api/next")
    assert status == 200 and shown["ask"] == "compare"
    status, _, out = call(app, "/r/tok/api/answer", {"nonce": shown["nonce"], "choice": "left"})
    assert status == 200
    return out["next"]["nonce"], out["id"]


def test_every_field_of_every_action_of_the_wrong_type_gets_400(app, tmp_path):
    nonce, answer_id = on_screen(app)
    assert set(BAD) == set(ACTIONS)
    for action, bodies in BAD.items():
        for body in bodies:
            status, headers, out = call(app, f"/r/tok/api/{action}",
                                        fill(body, nonce, answer_id))
            assert status == 400, (action, body, status, out)
            assert isinstance(out, dict) and out["error"], (action, body)
            assert all(h in headers for h in SECURITY)
    for raw in (DEEP, b'{"note": "\\ud800", "nonce": "x"}', b'{"a": 1', b"\xff\xfe", b"[]",
                b'"text"', b"1e999999", b'{"value": ' + b"9" * 5000 + b"}"):
        status, headers, out = call(app, "/r/tok/api/answer", raw=raw)
        assert status == 400 and out["error"], (raw[:40], status, out)
        assert "content-security-policy" in headers
    assert len(ComparisonStore(tmp_path / "s.jsonl").item_answers()) == 1  # only on_screen's
    assert call(app, "/r/tok/api/answer", {"nonce": nonce, "choice": "skip"})[0] == 200


def test_every_response_carries_the_security_headers(app, monkeypatch, capsys):
    nonce, _ = on_screen(app)
    big = json.dumps({"nonce": nonce, "note": "x" * 300_000}).encode()
    cases = {
        403: [("/r/nope/api/next", None, None)], 404: [("/nope", None, None),
                                                      ("/assets/x.py", None, None),
                                                      ("/r/tok/api/nope", None, None)],
        405: [("/r/tok/api/next", None, "PUT")], 409: [("/r/tok/api/answer",
                                                        {"nonce": "old", "choice": "tie"}, None)],
        413: [("/r/tok/api/answer", big, None)],
        422: [("/r/tok/api/answer", {"nonce": nonce, "choice": "skip", "note": "x" * 3000},
               None)],
    }
    for want, requests in cases.items():
        for path, body, method in requests:
            raw = body if isinstance(body, bytes) else None
            status, headers, _ = call(app, path, None if raw else body, raw=raw, method=method)
            assert status == want, (path, status)
            assert all(h in headers for h in SECURITY), (path, headers)
    status, headers, _ = call(app, "/r/tok/api/answer", raw=b"choice=tie",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "content-security-policy" in headers
    status, headers, out = call(app, "/r/tok/api/next", headers={"X-Big": "x" * (MAX_HEAD + 1)})
    assert status == 431 and "content-security-policy" in headers and "16384" in out["error"]
    server = app.app.state.server
    monkeypatch.setattr(server, "handle", lambda *a: 1 / 0)  # a bug: the last line of defence
    status, headers, out = call(app, "/r/tok/api/next")
    assert status == 500 and out == {"error": "the server failed; nothing was confirmed"}
    assert all(h in headers for h in SECURITY)
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" not in err and "/r/TOKEN/" in err
    assert "tok" not in err.replace("TOKEN", "")


@pytest.fixture
def live(app):
    """`app` served by uvicorn on a free loopback port (in a thread): the port."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def raw_request(port: int, head: bytes, finish: bool = True) -> bytes:
    """Send a request head (`finish`: with its blank line) and read the answer to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + (b"\r\n" if finish else b""))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_a_request_head_over_16_kib_is_refused_however_it_arrives(live):
    start = b"GET /r/nope/api/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    under = raw_request(live, start + b"X-Pad: " + b"a" * (15 * 1024) + b"\r\n")
    assert under.startswith(b"HTTP/1.1 403 ")  # read whole, then the token checked
    over = raw_request(live, start + b"X-Pad: " + b"a" * (20 * 1024) + b"\r\n")
    assert over[:13] in (b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")  # (400: it came in two reads)
    assert b"content-security-policy" in over.lower()
    # an unfinished head past the bound: the parser stops buffering and answers 400
    pieces = raw_request(live, start + b"X-Pad: " + b"a" * (17 * 1024), finish=False)
    assert pieces.startswith(b"HTTP/1.1 400 ") and b"content-security-policy" in pieces.lower()


# ---------------------------------------------------------------------- the property

FIELDS = ["nonce", "choice", "strength", "note", "comment", "text", "id", "value", "places",
          "other"]
SCALARS = st.none() | st.booleans() | st.integers(-10, 10**20) | st.floats() | st.text(
    max_size=30) | st.sampled_from(["NONCE", "ID", "left", "right", "tie", "skip", "much", "2"])
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSONISH | st.lists(
    st.integers(-3, 5), max_size=5), max_size=6)


def any_body_to_any_action(app, action: str, body, raw: bytes | None) -> None:
    nonce = call(app, "/r/tok/api/next")[2].get("nonce") or "none"
    data = raw if raw is not None else json.dumps(fill(body, nonce, "x")).encode()
    status, headers, out = call(app, f"/r/tok/api/{action}", raw=data)
    assert 200 <= status < 500 and status != 500, (action, data[:200], status, out)
    assert isinstance(out, dict), (action, data[:200], out)
    assert "Traceback" not in json.dumps(out) and "content-security-policy" in headers


ACTION = st.sampled_from(sorted(ACTIONS))
RAW = st.none() | st.none() | st.binary(max_size=40) | st.text(max_size=40).map(str.encode)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(action=ACTION, body=BODIES, raw=RAW)
def test_any_body_to_any_action_gets_an_answer_never_a_500(app, action, body, raw):
    any_body_to_any_action(app, action, body, raw)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(action=ACTION, body=BODIES, raw=RAW)
def test_any_body_to_any_action_many_more_examples(app, action, body, raw):
    any_body_to_any_action(app, action, body, raw)
