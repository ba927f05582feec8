"""Calling the rating app in-process, without a socket: one request through the ASGI
interface (what uvicorn does), fast enough for property tests of thousands of bodies. The
answer is (status, headers with lower-case names, decoded JSON or text)."""

from __future__ import annotations

import asyncio
import json


async def _call(app, method: str, path: str, body: bytes, headers: dict) -> tuple:
    hdrs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if method == "POST":
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": hdrs,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict = {"body": b""}

    async def receive():
        return sent.pop() if sent else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out


def call(app, path: str, body=None, raw: bytes | None = None, method: str | None = None,
         headers: dict | None = None) -> tuple[int, dict, object]:
    """One request to `app`: POST `body` as JSON (or the bytes `raw`), else GET."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    method = method or ("GET" if data is None else "POST")
    out = asyncio.run(_call(app, method, path, data or b"",
                            {"Content-Type": "application/json", **(headers or {})}))
    text = out["body"].decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return out["status"], out["headers"], parsed
