"""`rlhf serve QUEUE... --store STORE --raters ann,bob`: the rating page, served to browsers.

A Starlette app on uvicorn (one process serves many raters; each request's store work runs in
a worker thread), bound to 127.0.0.1 unless `--host` says otherwise. Each rater gets one
private link `/r/TOKEN` (a random token, kept in `STORE.raters.json`, mode 0600, so links
survive a restart); a wrong or missing token gets 403 and nothing else. A rater sees and
answers only their own work: the item on screen (named by a one-time nonce), their history.

Items of every kind (compare two, rank K, rate one, correct one): the page gets what the item
asks, the prompt as its turns, the responses as shown, a rating's scale, a correction's text to
prefill; never the side drawn, the item id, a repeat or gold flag. Any answer may carry a note
(`note`, or `comment`, its old name); a note may stand alone (about the item on screen when it
names it). An answer the session refuses (a note or correction over its limit, an empty or
unchanged correction) gets 422 with the reason, and nothing is saved or cut short. The page is
static (`web_page.html`, `web_page.css` and the scripts `web_page.js`, `web_page_rank.js`,
`web_page_rate.js`, `web_page_views.js`, under /assets/); it puts every text in with
`textContent`, never as HTML, under a Content-Security-Policy that allows only its own scripts;
texts pass through `feedback.text.visible` first, the guidelines come as a tree of blocks
(`raters.guidelines`). `raters.web_api` builds what the page gets and records its answers; the
rest is the terminal's: the same `Session`, store and keys. An answer is confirmed once the
store has fsynced it. A body over `max_body` bytes gets 413.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rlhf.config import UserError
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.session import GUIDELINES, MAX_CORRECTION, MAX_NOTE, Refused
from rlhf.raters.web_api import MAX_BODY, RatingServer, max_body  # noqa: F401 (re-exported)

MAX_HEADERS = 16 * 1024
"""Largest request head uvicorn buffers (bytes)."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


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


TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
ASSETS = {"page.css": "web_page.css", "page.js": "web_page.js",
          "page_rank.js": "web_page_rank.js", "page_rate.js": "web_page_rate.js",
          "page_views.js": "web_page_views.js"}
"""The page's static files by the name it asks for (/assets/NAME), all from `rlhf.raters`."""
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}


def _forbidden() -> Response:
    return Response("forbidden\n", 403, headers=HEADERS, media_type="text/plain")


async def _root(request: Request) -> Response:
    return _forbidden()


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        return Response("not found\n", 404, headers=HEADERS, media_type="text/plain")
    return Response(request.app.state.files[name], headers=HEADERS,
                    media_type=TYPES[name.rsplit(".", 1)[1]])


async def _page(request: Request) -> Response:
    if request.app.state.server.rater(request.path_params["token"]) is None:
        return _forbidden()
    return Response(request.app.state.page, headers=HEADERS, media_type="text/html")


async def _read_json(request: Request) -> dict | JSONResponse:
    """The request's JSON object, or the error response (415 unless JSON, 413 over the
    server's `max_body`, 400)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        # (a cross-site form or a no-preflight fetch cannot send this type)
        return JSONResponse({"error": "send application/json"}, 415, headers=HEADERS)
    size, limit = request.headers.get("content-length"), request.app.state.server.max_body
    if size is None or not size.isdigit() or int(size) > limit:
        return JSONResponse({"error": f"a body of at most {limit} bytes, with its "
                                      "Content-Length"}, 413, headers=HEADERS)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
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
    except Refused as e:  # nothing saved; the item stays on screen to be fixed
        status, out = 422, {"error": str(e), "refused": True}
    except RecordError as e:
        status, out = 400, {"error": str(e)}
    except UserError as e:  # the store cannot be written: nothing was confirmed
        status, out = 503, {"error": str(e)}
    return JSONResponse(out, status, headers=HEADERS)


def make_app(server: RatingServer) -> Starlette:
    """The Starlette app: the page, its assets, and the JSON API under each rater's link."""
    app = Starlette(routes=[
        Route("/", _root), Route("/assets/{name}", _asset),
        Route("/r/{token}", _page), Route("/r/{token}/", _page),
        Route("/r/{token}/api/{action}", _api, methods=["GET", "POST"]),
    ])
    assets = resources.files("rlhf.raters")
    app.state.files = {name: assets.joinpath(f).read_bytes() for name, f in ASSETS.items()}
    app.state.page = assets.joinpath("web_page.html").read_bytes()
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
    every item has an answer, stop the server; True when rated, False when `stop()` asked
    to end the wait first (a signal). Killed, it resumes with the same links (tokens are kept
    beside the store) and the answers so far."""
    import uvicorn

    items = read_queue(queue)
    app, tokens = build([queue], store_path, names, **session_kw)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           h11_max_incomplete_event_size=MAX_HEADERS))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    say("rating links (one per rater; keep them private):\n" +
        "\n".join(links(tokens, host, port)))
    store, wanted = ComparisonStore(store_path), {it.id for it in items}
    try:
        while thread.is_alive():
            left = wanted - store.answered_item_ids()
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
                   help="how long an item on screen stays reserved for its rater")
    p.add_argument("--max-note-chars", type=int, default=MAX_NOTE,
                   help="longest note accepted; a longer one is refused with a message")
    p.add_argument("--max-correction-chars", type=int, default=MAX_CORRECTION,
                   help="longest correction accepted; a longer one is refused")
    a = p.parse_args(argv)
    if a.max_note_chars < 1 or a.max_correction_chars < 1:
        raise UserError("--max-note-chars and --max-correction-chars must be at least 1")
    import uvicorn

    app, tokens = build(a.queues, a.store, rater_names(a.raters, a.raters_file), a.guidelines,
                        overlap=a.overlap, repeat_rate=a.repeat_rate, seed=a.seed,
                        lease_seconds=a.lease_seconds, max_note=a.max_note_chars,
                        max_correction=a.max_correction_chars)
    print("rating links (one per rater; keep them private):\n" +
          "\n".join(links(tokens, a.host, a.port)), flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning",
                h11_max_incomplete_event_size=MAX_HEADERS)
    return 0
