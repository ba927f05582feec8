"""What reaches the rating API is checked before it is used: request bodies by size, depth,
shape and type (`read_body`), request heads by size, and every response, errors included,
carries the page's security headers (`Guard`).

A body is one JSON object of at most the server's `max_body` bytes, nested at most
`MAX_DEPTH` deep (the parser itself stops near Python's recursion limit), whose known fields
have the types `FIELDS` gives (`places` a list of at most `MAX_PLACES` whole numbers); fields
no action reads are ignored. Texts must be encodable as UTF-8 (a lone surrogate escaped as
`\\ud800` is refused: it could not be stored). Anything else is `BadBody` (400 with the
reason), before any action sees it; the actions then check values (an unknown choice, a rating
out of range). A request head (request line and headers) over
`MAX_HEAD` bytes gets 431, whatever the HTTP parser let through; an unexpected error gets a 500
JSON answer and one line on stderr (no traceback, the rater's token left out).
"""

from __future__ import annotations

import json
import re
import sys

MAX_HEAD = 16 * 1024
"""Largest request head accepted (bytes): request line and headers; a larger one gets 431."""
MAX_DEPTH = 4
"""Deepest nesting of arrays and objects a body may have (the object, `places`: 2)."""
MAX_PLACES = 64
"""Most responses a ranking answer may place."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}
"""Sent with every response of the rating server (`Guard` adds any a response lacks)."""

TEXT, NUMBER = (str,), (int, float)
FIELDS: dict[str, tuple[type, ...]] = {
    "nonce": TEXT, "choice": TEXT, "strength": TEXT + (type(None),),
    "note": TEXT + (type(None),), "comment": TEXT + (type(None),), "text": TEXT,
    "id": TEXT, "value": TEXT + NUMBER + (type(None),), "places": (list,),
}
"""The type(s) each field may have (JSON null is None; a rating's `value` that is not a whole
number is the session's to refuse, 422, as a value out of range is)."""


class BadBody(ValueError):
    """A request body the API will not read: the message says why (answered with 400)."""


def depth(value) -> int:
    """How deeply arrays and objects nest in the parsed JSON `value` (0 for a scalar),
    walked without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _text_ok(key: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadBody(f"{key}: not valid text (an unpaired surrogate)") from None


def check_fields(body: dict) -> dict:
    """`body` when each known field has its type (`FIELDS`); else `BadBody` naming the field."""
    for key, value in body.items():
        kinds = FIELDS.get(key)
        if kinds is None:
            continue  # no action reads it
        if not isinstance(value, kinds) or isinstance(value, bool):
            want = " or ".join(sorted({"text" if k is str else "a number" if k in NUMBER
                                       else "null" if k is type(None) else "a list"
                                       for k in kinds}))
            raise BadBody(f"{key}: expected {want}, got {type(value).__name__}")
        if isinstance(value, str):
            _text_ok(key, value)
        if key == "places":
            if len(value) > MAX_PLACES or not all(
                    isinstance(p, int) and not isinstance(p, bool) for p in value):
                raise BadBody(f"places: expected at most {MAX_PLACES} whole numbers")
    return body


def read_body(raw: bytes) -> dict:
    """The JSON object `raw` holds, checked (see the module docstring); else `BadBody`."""
    try:
        body = json.loads(raw)
    except RecursionError:  # (the parser stops at Python's recursion limit, ~1000 deep)
        raise BadBody(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # (UnicodeDecodeError is one)
        raise BadBody("the body is not JSON text") from None
    if depth(body) > MAX_DEPTH:
        raise BadBody(f"the body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(body, dict):
        raise BadBody("expected a JSON object")
    return check_fields(body)


def head_size(scope: dict) -> int:
    """Bytes of the request head: `METHOD PATH?QUERY HTTP/1.1\\r\\n` and `name: value\\r\\n`
    for each header."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") + \
        len(scope.get("query_string") or b"") + 12
    return line + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))


def _redacted(path: str) -> str:
    return re.sub(r"/r/[^/]+", "/r/TOKEN", path)


class Guard:
    """ASGI middleware around the app: 431 for a head over `MAX_HEAD`; `HEADERS` on every
    response (a 404, 405 or 500 of the framework too); an unexpected error answered 500 in
    JSON (when nothing was sent yet) and logged as one line."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def guarded_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *(
                    (k.lower().encode(), v.encode()) for k, v in HEADERS.items()
                    if k.lower().encode() not in have)]}
            await send(message)

        if head_size(scope) > MAX_HEAD:
            return await _json(guarded_send, 431, f"a request head of at most {MAX_HEAD} bytes")
        try:
            await self.app(scope, receive, guarded_send)
        except Exception as e:  # noqa: BLE001 - the last line of defence: answer, log one line
            print(f"rating server: {type(e).__name__} on {scope.get('method')} "
                  f"{_redacted(scope.get('path', ''))}: {e}"[:500], file=sys.stderr, flush=True)
            if not started:
                await _json(guarded_send, 500, "the server failed; nothing was confirmed")


async def _json(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
