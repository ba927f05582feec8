"""`rlhf serve QUEUE... --store STORE --raters ann,bob`: the rating page, served to browsers.

A Starlette app on uvicorn (an ASGI stack: one process serves many raters, each request's
store work runs in a worker thread), bound to 127.0.0.1 unless `--host` says otherwise. Each
rater gets one private link `/r/TOKEN` (a random token, kept in `STORE.raters.json`, mode 0600,
so links survive a restart); a wrong or missing token gets 403 and nothing else. A rater sees
and answers only their own work: the pair on their screen (named by a one-time nonce), their
history, their revisions.

The page is static (`web_page.html/.js/.css`, package data); it fetches JSON and puts every
text in with `textContent`, never as HTML, under a Content-Security-Policy that allows only
its own script; texts pass through `feedback.text.visible` first, so escapes stay visible.
Everything else is the terminal's: the same `Session` (assignment leases, hidden repeats with
sides swapped, gold items, sides drawn per item and stored apart from the label, time per item,
guidelines version), the same store, the same answers and keys. An answer is confirmed only
after the store has fsynced it. Requests over `MAX_BODY` bytes are refused (413).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rlhf.config import UserError
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import Item, RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.feedback.text import visible
from rlhf.raters.session import (
    GUIDELINES,
    SHOWN_LABELS,
    STRENGTH_WORDS,
    Session,
    Shown,
    marker,
    read_guidelines,
)

MAX_BODY = 16 * 1024
"""Largest request body accepted (bytes); an answer with a comment is well under 4 KiB."""
MAX_COMMENT = 2000
"""Longest comment kept (characters)."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CHOICES = {"left", "right", *SHOWN_LABELS.values()}


@dataclass
class Rater:
    """One rater's state on the server: their session and the pair on their screen."""

    name: str
    session: Session
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonce: str | None = None
    shown: Shown | None = None


def load_tokens(path: Path, names: list[str]) -> dict[str, str]:
    """{name: token} for `names`, reusing tokens kept in `path`, adding new ones (0600)."""
    kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tokens = {n: kept.get(n) or secrets.token_urlsafe(18) for n in names}
    if tokens != {n: kept.get(n) for n in names}:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**kept, **tokens}, f)
        os.replace(tmp, path)
    return tokens


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def shown_payload(r: Rater) -> dict:
    """What the page gets for the pair on screen: texts (escapes made visible), notes and
    progress; never the side drawn, the item id, a repeat or gold flag."""
    done, total, _ = r.session.progress()
    if r.shown is None:
        return {"done": True, "progress": [done, total], "summary": r.session.summary()}
    left, right = r.shown.texts
    return {"done": False, "nonce": r.nonce, "prompt": visible(r.shown.item.prompt),
            "left": visible(left), "right": visible(right),
            "notes": list(marker((left, right))), "progress": [done, total]}


def _serve_next(r: Rater) -> dict:
    """The pair now on the rater's screen (a reload shows the same one and renews its lease,
    unless the lease ran out and the item went to others), else the next."""
    s = r.session
    if r.shown is not None and r.shown.repeat_of is None and s.store.claim(
            r.name, [r.shown.item.id], s.overlap, s.lease_seconds) is None:
        r.shown = None
    if r.shown is None:
        r.shown = r.session.next()
        r.nonce = secrets.token_urlsafe(9) if r.shown else None
    return shown_payload(r)


def _choice(body: dict) -> tuple[str, str | None, str]:
    choice = body.get("choice")
    strength = body.get("strength") or None
    comment = body.get("comment") or ""
    if choice not in CHOICES or (strength is not None and strength not in STRENGTH_WORDS):
        raise RecordError(f"unknown answer {choice!r} / strength {strength!r}")
    if not isinstance(comment, str):
        raise RecordError("comment: expected text")
    return choice, STRENGTH_WORDS.get(strength) if strength else None, comment[:MAX_COMMENT]


def _history(r: Rater) -> dict:
    r.session.refresh()
    rows = []
    for c in reversed(r.session.mine[-500:]):
        left, right = (c.a, c.b) if c.left == "a" else (c.b, c.a)
        rows.append({"id": c.id, "prompt": visible(c.prompt), "left": visible(left),
                     "right": visible(right), "answer": r.session.described(c),
                     "revised": "revises" in c.meta})
    return {"answers": rows}


class RatingServer:
    """The app's state: items, raters by token digest, the store path, session settings."""

    def __init__(self, items: list[Item], store_path, tokens: dict[str, str],
                 guidelines_path=None, **session_kw):
        self.version, self.text = read_guidelines(guidelines_path)
        store = ComparisonStore(store_path)  # one parse cache for every rater's session
        self.raters = {_digest(tok): Rater(name, Session(
            items, store, name, guidelines=self.version, **session_kw))
            for name, tok in tokens.items()}

    def rater(self, token: str) -> Rater | None:
        return self.raters.get(_digest(token))

    def handle(self, r: Rater, action: str, body: dict) -> tuple[int, dict]:
        """One API call for rater `r` (run in a worker thread, under the rater's lock)."""
        with r.lock:
            if action == "guidelines":
                return 200, {"version": self.version, "text": visible(self.text),
                             "rater": visible(r.name)}
            if action == "next":
                return 200, _serve_next(r)
            if action == "answer":
                if r.shown is None or body.get("nonce") != r.nonce:
                    return 409, {"error": "this pair is no longer on your screen; reload"}
                choice, strength, comment = _choice(body)
                c = r.session.answer(r.shown, choice, strength, comment)  # fsynced
                r.shown = r.nonce = None
                done, total, _ = r.session.progress()
                return 200, {"saved": f"saved {done}/{total}: {visible(r.session.described(c))}",
                             "id": c.id, "next": _serve_next(r)}
            if action == "undo":
                c = r.session.undo()
                r.shown = r.nonce = None
                return 200, {"undone": visible(r.session.described(c)) if c else None,
                             "next": _serve_next(r)}
            if action == "history":
                return 200, _history(r)
            if action == "revise":
                choice, strength, comment = _choice(body)
                try:
                    c = r.session.revise(str(body.get("id")), choice, strength, comment)
                except KeyError:
                    return 404, {"error": "no such answer of yours"}
                return 200, {"saved": f"revised: {visible(r.session.described(c))}", "id": c.id}
        return 404, {"error": "unknown action"}


TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}


def _forbidden() -> Response:
    return Response("forbidden\n", 403, headers=HEADERS, media_type="text/plain")


async def _root(request: Request) -> Response:
    return _forbidden()


async def _asset(request: Request) -> Response:
    ext = request.path_params["ext"]
    if ext not in TYPES:
        return Response("not found\n", 404, headers=HEADERS, media_type="text/plain")
    return Response(request.app.state.files[ext], headers=HEADERS, media_type=TYPES[ext])


async def _page(request: Request) -> Response:
    if request.app.state.server.rater(request.path_params["token"]) is None:
        return _forbidden()
    return Response(request.app.state.files["html"], headers=HEADERS, media_type="text/html")


async def _read_json(request: Request) -> dict | JSONResponse:
    """The request's JSON object, or the error response (415 unless JSON, 413 over MAX_BODY,
    400)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        # (a cross-site form or a no-preflight fetch cannot send this type)
        return JSONResponse({"error": "send application/json"}, 415, headers=HEADERS)
    size = request.headers.get("content-length")
    if size is None or not size.isdigit() or int(size) > MAX_BODY:
        return JSONResponse({"error": f"a body of at most {MAX_BODY} bytes, with its "
                                      "Content-Length"}, 413, headers=HEADERS)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "request too large"}, 413, headers=HEADERS)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"error": "expected a JSON object"}, 400, headers=HEADERS)
    return body


async def _api(request: Request) -> Response:
    server: RatingServer = request.app.state.server
    r = server.rater(request.path_params["token"])
    if r is None:
        return _forbidden()
    body: dict = {}
    if request.method == "POST":
        body = await _read_json(request)
        if isinstance(body, Response):
            return body
    try:
        status, out = await run_in_threadpool(
            server.handle, r, request.path_params["action"], body)
    except RecordError as e:
        status, out = 400, {"error": str(e)}
    except UserError as e:  # the store cannot be written: nothing was confirmed
        status, out = 503, {"error": str(e)}
    return JSONResponse(out, status, headers=HEADERS)


def make_app(server: RatingServer) -> Starlette:
    """The Starlette app: the page, its assets, and the JSON API under each rater's link."""
    app = Starlette(routes=[
        Route("/", _root), Route("/assets/page.{ext}", _asset),
        Route("/r/{token}", _page), Route("/r/{token}/", _page),
        Route("/r/{token}/api/{action}", _api, methods=["GET", "POST"]),
    ])
    assets = resources.files("rlhf.raters")
    app.state.files = {ext: assets.joinpath(f"web_page.{ext}").read_bytes() for ext in TYPES}
    app.state.server = server
    return app


def rater_names(names: str | None, names_file: str | None) -> list[str]:
    """Rater names from `--raters a,b` and/or `--raters-file` (one per line, # comments)."""
    out = [n.strip() for n in (names or "").split(",") if n.strip()]
    if names_file:
        for line in Path(names_file).read_text(encoding="utf-8").splitlines():
            if line.split("#")[0].strip():
                out.append(line.split("#")[0].strip())
    if not out:
        raise UserError("name the raters: --raters ann,bob or --raters-file FILE")
    if len(set(out)) != len(out):
        raise UserError(f"a rater is named twice in {out}")
    return out


def build(queues: list, store_path, names: list[str], guidelines=None, **session_kw):
    """(app, {name: token}) for serving `queues` into `store_path`; repairs and checks the
    store first (one line each)."""
    items, seen = [], set()
    for q in queues:
        for it in read_queue(q):
            if it.id in seen:
                raise RecordError(f"{q}: item id {it.id!r} is in two queues")
            seen.add(it.id)
            items.append(it)
    store = ComparisonStore(store_path)
    store.check_writable()
    note = store.repair()
    if note:
        print(note, file=sys.stderr)
    tokens = load_tokens(Path(str(store_path) + ".raters.json"), names)
    return make_app(RatingServer(items, store_path, tokens, guidelines, **session_kw)), tokens


def links(tokens: dict[str, str], host: str, port: int) -> list[str]:
    return [f"  {name:<20} http://{host}:{port}/r/{tok}" for name, tok in tokens.items()]


def serve_until_rated(queue, store_path, names: list[str], host: str = "127.0.0.1",
                      port: int = 8765, poll_seconds: float = 2.0, say=print, stop=None,
                      **session_kw) -> bool:
    """Serve `queue` (the loop's human mode `rater.kind: web`): print the links, wait until
    every pair has an answer, stop the server; True when rated, False when `stop()` asked
    to end the wait first (a signal). Killed, it resumes with the same links (tokens are kept
    beside the store) and the answers so far."""
    import uvicorn

    items = read_queue(queue)
    app, tokens = build([queue], store_path, names, **session_kw)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           h11_max_incomplete_event_size=MAX_BODY))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    say("rating links (one per rater; keep them private):\n" +
        "\n".join(links(tokens, host, port)))
    store, wanted = ComparisonStore(store_path), {it.id for it in items}
    try:
        while thread.is_alive():
            left = wanted - {c.item_id for c in store.load()}
            if not left:
                return True
            if stop is not None and stop():
                return False
            time.sleep(poll_seconds)
        raise UserError(f"the rating server stopped (is port {port} in use?)")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("queues", nargs="+", metavar="QUEUE", help="queue file(s) to rate")
    p.add_argument("--store", required=True, help="comparison store (JSONL)")
    p.add_argument("--raters", help="rater names, comma-separated")
    p.add_argument("--raters-file", help="a file of rater names, one per line")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--guidelines", help=f"guidelines file (default {GUIDELINES.name})")
    p.add_argument("--overlap", type=int, default=1, help="raters per item")
    p.add_argument("--repeat-rate", type=float, default=0.1, help="share of hidden repeats")
    p.add_argument("--seed", type=int, default=0, help="seed of side and repeat draws")
    p.add_argument("--lease-seconds", type=float, default=900,
                   help="how long a pair on screen stays reserved for its rater")
    a = p.parse_args(argv)
    import uvicorn

    app, tokens = build(a.queues, a.store, rater_names(a.raters, a.raters_file), a.guidelines,
                        overlap=a.overlap, repeat_rate=a.repeat_rate, seed=a.seed,
                        lease_seconds=a.lease_seconds)
    print("rating links (one per rater; keep them private):\n" +
          "\n".join(links(tokens, a.host, a.port)), flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning",
                h11_max_incomplete_event_size=MAX_BODY)
    return 0
