"""`rlhf serve QUEUE... --store STORE --raters ann,bob`: the rating page, served to browsers.

A Starlette app on uvicorn (one process serves many raters; each request's store work runs in
a worker thread), bound to 127.0.0.1 unless `--host` says otherwise; an address beyond
loopback needs `--public`, and without `--tls-cert`/`--tls-key` a warning says that the links
(which carry the tokens) then travel in plain HTTP. Everything is checked before anything is
printed or saved (the flags, the queues, the store), and the port is bound before a link is
made: a port in use costs no token. Each rater gets one private link `/r/TOKEN`; the token is
kept only as its hash (`raters.web_tokens`), so a link is shown once, when made, and
`--new-link NAME` makes a new one. A wrong or missing token gets 403 and nothing else. A rater
sees and answers only their own work: the item on screen (named by a one-time nonce), their
history.

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
(`raters.guidelines`). `raters.web_api` builds what the page gets and records its answers;
`raters.web_checks` checks each request (a body over `max_body` bytes: 413; a malformed one:
400; a head over 16 KiB: 431) and puts the security headers on every response; the rest is the
terminal's: the same `Session`, store and keys. An answer is confirmed if and only if the store
has fsynced it: a store that cannot be written gets 503 (nothing saved, the item stays on
screen), and what fails after the write (the leases on a full disk) is a warning with "saved".
"""

from __future__ import annotations

import argparse
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
from rlhf.feedback.items import Item
from rlhf.feedback.queue import read_queue
from rlhf.feedback.records import RecordError
from rlhf.feedback.store import ComparisonStore
from rlhf.raters.session import GUIDELINES, MAX_CORRECTION, MAX_NOTE, Refused, read_guidelines
from rlhf.raters.web_api import MAX_BODY, RatingServer, max_body  # noqa: F401 (re-exported)
from rlhf.raters.web_checks import CSP, HEADERS, MAX_HEAD, BadBody, Guard, read_body
from rlhf.raters.web_serving import (
    banner,
    bind,
    check_serving,
    fewer_malloc_arenas,
    uvicorn_server,
)
from rlhf.raters.web_tokens import rater_tokens

MAX_HEADERS = MAX_HEAD
"""Largest request head accepted (bytes); a larger one gets 431 (`raters.web_checks`)."""
__all__ = ["CSP", "HEADERS", "MAX_BODY", "MAX_HEADERS", "build", "cli", "make_app",
           "rater_names", "serve_until_rated"]
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
ASSETS = {"page.css": "web_page.css", "page.js": "web_page.js",
          "page_rank.js": "web_page_rank.js", "page_rate.js": "web_page_rate.js",
          "page_views.js": "web_page_views.js"}
"""The page's static files by the name it asks for (/assets/NAME), all from `rlhf.raters`."""


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
    """The request's JSON object, checked (`web_checks.read_body`), or the error response
    (415 unless JSON, 413 over the server's `max_body`, 400 malformed)."""
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
        return read_body(raw)
    except BadBody as e:
        return JSONResponse({"error": str(e)}, 400, headers=HEADERS)


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
    except (UserError, OSError) as e:  # the store cannot be written: nothing was confirmed
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        status, out = 503, {"error": f"{why} (nothing was saved: try again later)"
                            if isinstance(e, OSError) else why}
    return JSONResponse(out, status, headers=HEADERS)


async def _failed(request: Request, exc: Exception) -> Response:
    """A 500 in JSON (the framework's last handler; `Guard` logs the error in one line)."""
    return JSONResponse({"error": "the server failed; nothing was confirmed"}, 500,
                        headers=HEADERS)


def make_app(server: RatingServer) -> Guard:
    """The app: the page, its assets, and the JSON API under each rater's link, inside
    `Guard` (head size, security headers on every response, one-line errors). The Starlette
    app is `.app` (its `state.server` is `server`)."""
    app = Starlette(routes=[
        Route("/", _root), Route("/assets/{name}", _asset),
        Route("/r/{token}", _page), Route("/r/{token}/", _page),
        Route("/r/{token}/api/{action}", _api, methods=["GET", "POST"]),
    ], exception_handlers={Exception: _failed})
    assets = resources.files("rlhf.raters")
    app.state.files = {name: assets.joinpath(f).read_bytes() for name, f in ASSETS.items()}
    app.state.page = assets.joinpath("web_page.html").read_bytes()
    app.state.server = server
    return Guard(app)


def rater_names(names: str | None, names_file: str | None) -> list[str]:
    """Rater names from `--raters a,b` and/or `--raters-file` (one per line, # comments)."""
    out = [n.strip() for n in (names or "").split(",") if n.strip()]
    if names_file:
        try:
            text = Path(names_file).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{names_file}: not UTF-8 text (byte {e.start})") from None
        for line in text.splitlines():
            if line.split("#")[0].strip():
                out.append(line.split("#")[0].strip())
    if not out:
        raise UserError("name the raters: --raters ann,bob or --raters-file FILE")
    if len(set(out)) != len(out):
        raise UserError(f"a rater is named twice in {out}")
    return out


def queue_items(queues: list) -> list[Item]:
    """The items of every queue (one line for a bad file: not UTF-8, an id in two queues,
    no items at all)."""
    items, seen = [], set()
    for q in queues:
        for it in read_queue(q):  # (one line naming file and line for a bad one)
            if it.id in seen:
                raise RecordError(f"{q}: item id {it.id!r} is in two queues")
            seen.add(it.id)
            items.append(it)
    if not items:
        raise UserError(f"nothing to rate: {', '.join(map(str, queues))} holds no items")
    return items


def build(queues: list, store_path, names: list[str], guidelines=None, renew=(),
          **session_kw):
    """(app, {name: token} of the links to show now) for serving `queues` into
    `store_path`; checks the queues and the store (and repairs its tail) first, one line
    each. Tokens are made, and saved hashed, last (`web_tokens.rater_tokens`)."""
    items = queue_items(queues)
    store = ComparisonStore(store_path)
    store.check_writable()
    note = store.repair()
    if note:
        print(note, file=sys.stderr)
    digests, shown = rater_tokens(Path(str(store_path) + ".raters.json"), names, renew)
    return make_app(RatingServer(items, store_path, guidelines_path=guidelines,
                                 digests=digests, **session_kw)), shown


def serve_until_rated(queue, store_path, names: list[str], host: str = "127.0.0.1",
                      port: int = 8765, poll_seconds: float = 2.0, say=print, stop=None,
                      **session_kw) -> bool:
    """Serve `queue` (the loop's human mode `rater.kind: web`): print the links (new ones;
    a link given before is unchanged), wait until every item has an answer, stop the server;
    True when rated, False when `stop()` asked to end the wait first (a signal). Killed, it
    resumes with the same links (their hashes are kept beside the store) and the answers."""
    items = queue_items([queue])
    check_serving(host, port)
    sock = bind(host, port)
    app, shown = build([queue], store_path, names, **session_kw)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    say("\n".join(banner(names, shown, sock, host)))
    store, wanted = ComparisonStore(store_path), {it.id for it in items}
    try:
        while thread.is_alive():
            left = wanted - store.answered_item_ids()
            if not left:
                return True
            if stop is not None and stop():
                return False
            time.sleep(poll_seconds)
        raise UserError(f"the rating server on port {port} stopped")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlhf serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("queues", nargs="+", metavar="QUEUE", help="queue file(s) to rate")
    p.add_argument("--store", required=True, help="comparison store (JSONL)")
    p.add_argument("--raters", help="rater names, comma-separated")
    p.add_argument("--raters-file", help="a file of rater names, one per line")
    p.add_argument("--new-link", default="", metavar="NAME[,NAME]",
                   help="make a new link for these raters (their old link stops working)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--public", action="store_true",
                   help="allow a --host beyond loopback (other machines can connect)")
    p.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
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
    check_session_flags(a.overlap, a.repeat_rate, a.lease_seconds, a.max_note_chars,
                        a.max_correction_chars)
    check_serving(a.host, a.port, a.public, a.tls_cert, a.tls_key)
    names = rater_names(a.raters, a.raters_file)
    renew = [n.strip() for n in a.new_link.split(",") if n.strip()]
    if set(renew) - set(names):
        raise UserError(f"--new-link {a.new_link}: name raters among {', '.join(names)}")
    queue_items(a.queues)  # (read again by `build`: a bad queue fails before the bind)
    try:
        read_guidelines(a.guidelines)
    except UnicodeDecodeError as e:
        raise UserError(f"{a.guidelines}: not UTF-8 text (byte {e.start})") from None
    sock = bind(a.host, a.port)
    app, shown = build(a.queues, a.store, names, a.guidelines, renew,
                       overlap=a.overlap, repeat_rate=a.repeat_rate, seed=a.seed,
                       lease_seconds=a.lease_seconds, max_note=a.max_note_chars,
                       max_correction=a.max_correction_chars)
    print("\n".join(banner(names, shown, sock, a.host, a.tls_cert)), flush=True)
    fewer_malloc_arenas()
    uvicorn_server(app, a.tls_cert, a.tls_key).run(sockets=[sock])
    return 0


def check_session_flags(overlap: int, repeat_rate: float, lease_seconds: float,
                        max_note: int, max_correction: int) -> None:
    """One line (UserError) for the first session flag out of its range."""
    if overlap < 1:
        raise UserError(f"--overlap {overlap}: at least 1 rater per item")
    if not 0 <= repeat_rate <= 1:
        raise UserError(f"--repeat-rate {repeat_rate}: a share from 0 to 1")
    if not 0 < lease_seconds < 1e9:
        raise UserError(f"--lease-seconds {lease_seconds}: a positive number of seconds")
    if max_note < 1 or max_correction < 1:
        raise UserError("--max-note-chars and --max-correction-chars must be at least 1")
