"""Helpers for the rating-page tests: a real `rlhf serve` process on loopback, a small HTTP
client (the standard library's, one keep-alive connection per rater), queues mixing every kind
of item with a client's answer to each, and headless Chromium for the browser tests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlhf.feedback.items import Item
from rlhf.feedback.queue import write_queue

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
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


LIKERT7 = {"name": "likert7", "low": 1, "high": 7,
           "anchors": {"1": "very bad", "4": "acceptable", "7": "excellent"}}


def mixed_item(i: int) -> Item:
    """Item i of a queue mixing every kind, by i % 5: compare, rank 3, rate (thumbs), rate
    (1-7), correct."""
    prompt, kind = f"prompt {i}", i % 5
    if kind == 0:
        return Item(prompt, f"a{i}", f"b{i}", id=f"it{i}")
    if kind == 1:
        return Item(prompt, f"a{i}", f"b{i}", id=f"it{i}", ask="rank", others=[f"c{i}"])
    if kind in (2, 3):
        return Item(prompt, f"r{i}", id=f"it{i}", ask="rate", scale=LIKERT7 if kind == 3 else None)
    return Item(prompt, f"draft {i}", id=f"it{i}", ask="correct")


def make_mixed_queue(path, n) -> list[Item]:
    items = [mixed_item(i) for i in range(n)]
    write_queue(path, items)
    return items


def answer_for(shown: dict, n: int, name: str) -> dict:
    """A client's n-th answer to the item `shown` (the page's payload), whatever it asks: every
    seventh a skip, every third with a note."""
    body: dict = {"nonce": shown["nonce"]}
    if n % 3 == 2:
        body["note"] = f"note {name} {n}"
    ask = shown["ask"]
    if n % 7 == 6:
        body["choice"] = "skip"
    elif ask == "compare":
        body["choice"] = ("left", "right", "tie")[n % 3]
    elif ask == "rank":
        k = len(shown["responses"])
        body["places"] = [(j + n) % k + 1 for j in range(k)]
    elif ask == "rate":
        low, high = shown["scale"]["low"], shown["scale"]["high"]
        body["value"] = low + n % (high - low + 1)
    else:
        body["text"] = f"{shown['prefill']} (fixed by {name})"
    return body


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
        self.links, self.banner = getattr(self, "links", {}), []  # (a restart: links unchanged)
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


# ---------------------------------------------------------------------- the browser


def screenshot(d, name):
    """Save the page as RLHF_SCREENSHOTS/NAME.png when that variable names a folder."""
    folder = os.environ.get("RLHF_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        d.save_screenshot(os.path.join(folder, name + ".png"))


def browser(width, height):
    """Headless Chromium at width x height (skips the test when it is not installed)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and shutil.which(DRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(scripts/install.sh installs them as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run",
              "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700})
    return d


def wait_for(d, cond, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - an element between two renders
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; status: "
                         f"{d.find_element('id', 'status').text!r}")
