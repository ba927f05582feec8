"""Helpers for the rating-page tests: a real `rlhf serve` process on loopback and a small
HTTP client (the standard library's, one keep-alive connection per rater)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlhf.feedback.queue import write_queue
from rlhf.feedback.records import Item

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ('<script>document.title="pwned"</script>',
           '"><img src=x onerror="document.title=\'pwned\'">',
           "\x1b[2J\x1b]0;TITLE\x07erased?")


def make_queue(path, n, hostile=False) -> list[Item]:
    items = []
    for i in range(n):
        a, b = f"response a{i}", f"response b{i}"
        if hostile and i == 0:
            a, b = f"{HOSTILE[0]} {HOSTILE[1]}", HOSTILE[2]
        items.append(Item(f"prompt {i}" + (f" {HOSTILE[0]}" if hostile else ""), a, b,
                          id=f"it{i}"))
    write_queue(path, items)
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m rlhf serve` in a subprocess; `.links` maps rater name -> URL path."""

    def __init__(self, tmp_path, raters, *extra, port=None):
        self.args = [sys.executable, "-m", "rlhf", "serve", str(tmp_path / "q.jsonl"),
                     "--store", str(tmp_path / "s.jsonl"), "--raters", ",".join(raters),
                     *extra]
        self.n_raters = len(raters)
        self.port = port or free_port()
        self.start()

    def start(self):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.links, self.banner = {}, []
        for line in self.proc.stdout:
            self.banner.append(line)
            if "/r/" in line:
                name, url = line.split()
                self.links[name] = "/r/" + url.split("/r/")[1]
            if len(self.links) == self.n_raters:
                break
        threading.Thread(target=lambda: [self.banner.append(x) for x in self.proc.stdout],
                         daemon=True).start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start: " + "".join(self.banner))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.links[name]}"

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Client:
    """One rater's HTTP connection: `call(path, body)` -> (status, JSON or text)."""

    def __init__(self, port: int, base: str):
        self.port, self.base = port, base
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, path: str, body=None, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdr = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request("GET" if data is None else "POST", self.base + path, data, hdr)
            r = self.conn.getresponse()
            text = r.read().decode()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text
