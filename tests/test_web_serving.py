"""How `rlhf serve` starts: each bad flag or queue is one line and exit code 2, before
anything is printed or saved; a port in use costs no link and no token; a host beyond
loopback needs `--public` and gets a warning about plain HTTP; TLS with a self-signed
certificate made here (skipped without `openssl`); tokens kept only hashed, an old plain-text
raters file read and migrated, a link shown once and `--new-link` making a new one."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
from web_helpers import make_queue

from rlhf.cli import main
from rlhf.config import UserError
from rlhf.feedback.queue import read_queue
from rlhf.raters.web import make_app
from rlhf.raters.web_api import RatingServer
from rlhf.raters.web_serving import banner, bind, check_serving, uvicorn_server
from rlhf.raters.web_tokens import digest, rater_tokens


def serve(tmp_path, *flags, queue="q.jsonl") -> list[str]:
    return ["serve", str(tmp_path / queue), "--store", str(tmp_path / "s.jsonl"),
            "--raters", "ann,bob", *flags]


@pytest.mark.parametrize("flags, why", [
    (["--port", "-1"], "--port -1: a port from 1 to 65535"),
    (["--port", "70000"], "--port 70000: a port from 1 to 65535"),
    (["--overlap", "0"], "--overlap 0: at least 1 rater per item"),
    (["--repeat-rate", "2"], "--repeat-rate 2.0: a share from 0 to 1"),
    (["--repeat-rate", "nan"], "--repeat-rate nan: a share from 0 to 1"),
    (["--lease-seconds", "-5"], "--lease-seconds -5.0: a positive number of seconds"),
    (["--max-note-chars", "0"], "--max-note-chars and --max-correction-chars must be"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines connect: add --public"),
    (["--host", "192.168.1.2"], "--host 192.168.1.2 lets other machines connect"),
    (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "nope.pem", "--tls-key", "nope.key"], "--tls-cert nope.pem / --tls-key"),
    (["--new-link", "zed"], "--new-link zed: name raters among ann, bob"),
])
def test_each_bad_flag_is_one_line_and_nothing_is_printed_or_saved(tmp_path, capsys, flags,
                                                                    why):
    make_queue(tmp_path / "q.jsonl", 2)
    assert main(serve(tmp_path, *flags)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"rlhf serve: error: {why}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]  # no store, no tokens


def test_a_bad_queue_or_guidelines_file_is_one_line(tmp_path, capsys):
    make_queue(tmp_path / "q.jsonl", 2)
    (tmp_path / "latin1.jsonl").write_bytes((tmp_path / "q.jsonl").read_bytes() +
                                            '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "g.md").write_bytes("R\xe8gles".encode("latin-1"))
    for queue, flags, why in (("latin1.jsonl", [], "latin1.jsonl:3: not UTF-8 text"),
                              ("empty.jsonl", [], "nothing to rate: "),
                              ("q.jsonl", ["--guidelines", str(tmp_path / "g.md")],
                               "g.md: not UTF-8 text (byte 1)")):
        assert main(serve(tmp_path, *flags, queue=queue)) == 2
        out, err = capsys.readouterr()
        assert out == "" and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "s.jsonl.raters.json").exists()


def test_a_port_in_use_prints_no_link_and_saves_no_token(tmp_path, capsys):
    make_queue(tmp_path / "q.jsonl", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(serve(tmp_path, "--port", str(port))) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"port {port}: in use" in err and "no link was made" in err
    assert not (tmp_path / "s.jsonl.raters.json").exists()


def test_beyond_loopback_needs_public_and_warns_about_plain_http():
    check_serving("127.0.0.2", 8765)
    check_serving("::1", 8765)
    check_serving("localhost", 8765)
    with pytest.raises(UserError, match="add --public"):
        check_serving("::", 8765)
    check_serving("0.0.0.0", 8765, public=True)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    lines = banner(["ann", "bob"], {"ann": "TOK"}, sock, "0.0.0.0")
    sock.close()
    assert lines[0].startswith(f"warning: serving 0.0.0.0 port {port} to other machines over "
                               "plain HTTP: each link carries its rater's token")
    assert lines[2] == f"  {'ann':<20} http://0.0.0.0:{port}/r/TOK"
    assert lines[3].startswith(f"  {'bob':<20} (link unchanged")
    tls = banner(["ann"], {"ann": "TOK"}, bind("127.0.0.1", 0), "0.0.0.0", tls="c.pem")
    assert not tls[0].startswith("warning") and tls[1].split()[1].startswith("https://")


def test_tokens_are_kept_hashed_and_an_old_plain_file_is_migrated(tmp_path):
    path = tmp_path / "s.jsonl.raters.json"
    path.write_text(json.dumps({"ann": "old-ann-token", "zed": "old-zed-token"}))
    hashes, shown = rater_tokens(path, ["ann", "bob"])
    assert shown["ann"] == "old-ann-token" and set(shown) == {"ann", "bob"}  # a last time
    kept = json.loads(path.read_text())
    assert kept == {"ann": digest("old-ann-token"), "zed": digest("old-zed-token"),
                    "bob": digest(shown["bob"])}
    assert digest("x") == "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    server = RatingServer(read_queue(make_queue_file(tmp_path)), tmp_path / "s.jsonl",
                          digests=hashes, repeat_rate=0)
    assert server.rater("old-ann-token").name == "ann"
    assert server.rater(shown["bob"]).name == "bob" and server.rater("old-zed-token") is None
    assert rater_tokens(path, ["ann", "bob"]) == (hashes, {})  # a restart shows none
    renewed, shown = rater_tokens(path, ["ann", "bob"], renew=["ann"])
    assert set(shown) == {"ann"} and renewed["ann"] != hashes["ann"]
    server = RatingServer(read_queue(tmp_path / "q.jsonl"), tmp_path / "s.jsonl",
                          digests=renewed, repeat_rate=0)
    assert server.rater("old-ann-token") is None and server.rater(shown["ann"]).name == "ann"
    path.write_text('{"ann": ["not", "a", "hash"]}')
    with pytest.raises(UserError, match="expected {name: token hash}"):
        rater_tokens(path, ["ann"])


def make_queue_file(tmp_path):
    make_queue(tmp_path / "q.jsonl", 2)
    return tmp_path / "q.jsonl"


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by openssl (skips without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test TLS with")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_is_one_option_away(tmp_path):
    cert, key = self_signed(tmp_path)
    check_serving("127.0.0.1", 0, cert=cert, key=key)
    with pytest.raises(UserError, match="--tls-cert"):
        check_serving("127.0.0.1", 0, cert=key, key=cert)  # the two swapped
    app = make_app(RatingServer(read_queue(make_queue_file(tmp_path)), tmp_path / "s.jsonl",
                                {"ann": "tok"}, repeat_rate=0))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, cert, key)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                           context=ssl.create_default_context(cafile=cert))
        conn.request("GET", "/r/tok/api/next")
        r = conn.getresponse()
        assert r.status == 200 and not json.loads(r.read())["done"]
        assert "script-src 'self'" in r.getheader("Content-Security-Policy")
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):  # no plain HTTP answer
            plain.request("GET", "/r/tok/api/next")
            plain.getresponse().read()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
