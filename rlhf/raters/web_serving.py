"""Where and how `rlhf serve` listens: loopback unless `--public` says otherwise, TLS one
option away, the port bound before any link is made, and uvicorn set up with the request-head
bound (`web_checks.MAX_HEAD`) and the security headers on its own error answers too.

Binding beyond loopback (`--host 0.0.0.0`, a LAN address, a host name other than localhost)
must be asked for with `--public`; without TLS (`--tls-cert`, `--tls-key`: PEM files handed to
uvicorn) a warning then says that the links, which carry the raters' tokens, cross the network
in plain HTTP. The certificate and key are loaded once before serving, so a wrong pair is one
line, not a failed start.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import ssl

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rlhf.config import UserError
from rlhf.raters.web_checks import HEADERS, MAX_HEAD
from rlhf.raters.web_tokens import link_lines


def loopback(host: str) -> bool:
    """Whether `host` is this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serving(host: str, port: int, public: bool = False, cert: str | None = None,
                  key: str | None = None) -> None:
    """One line (UserError) for a port out of range, a host beyond loopback without
    `public`, or a TLS certificate and key that do not load as a pair."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: a port from 1 to 65535 (0 picks a free one)")
    if not loopback(host) and not public:
        raise UserError(f"--host {host} lets other machines connect: add --public to mean it "
                        "(with --tls-cert and --tls-key, so that links are not sent in plain "
                        "HTTP)")
    if bool(cert) != bool(key):
        raise UserError("--tls-cert and --tls-key go together (a certificate and its key)")
    if cert:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise UserError(f"--tls-cert {cert} / --tls-key {key}: "
                            f"{getattr(e, 'strerror', None) or e}") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), made before any link: a port in use is one line
    and costs no token."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserError(f"--host {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "in use (another server?): choose another --port" \
            if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        raise UserError(f"cannot listen on {host} port {port}: {why}; no link was "
                        "made") from None
    return sock


def banner(names: list[str], shown: dict[str, str], sock: socket.socket, host: str,
           tls: str | None = None) -> list[str]:
    """What `rlhf serve` prints: a warning when serving beyond loopback without TLS, then
    one line per rater (a new link, or that the one given before is unchanged)."""
    port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    base = f"{'https' if tls else 'http'}://{shown_host}:{port}"
    out = []
    if not loopback(host) and not tls:
        out.append(f"warning: serving {host} port {port} to other machines over plain HTTP: "
                   "each link carries its rater's token, readable on the way; use "
                   "--tls-cert and --tls-key (or a TLS proxy)")
    out.append("rating links (one per rater; keep them private; each is shown once, only "
               "its hash is kept):")
    return out + link_lines(names, shown, base)


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, whose own 400 (a malformed request, a head still
    incomplete past `MAX_HEAD` bytes) carries the security headers too."""

    def send_400_response(self, msg: str) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                   *((k.lower().encode(), v.encode()) for k, v in HEADERS.items())]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=msg.encode("ascii")), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_server(app, cert: str | None = None, key: str | None = None) -> uvicorn.Server:
    """The uvicorn server for `app` (run it with `.run(sockets=[bind(...)])`)."""
    return uvicorn.Server(uvicorn.Config(
        app, log_level="warning", http=GuardedH11, h11_max_incomplete_event_size=MAX_HEAD,
        ssl_certfile=cert, ssl_keyfile=key, server_header=False))


def fewer_malloc_arenas(n: int = 2) -> bool:
    """Ask glibc for at most `n` malloc arenas (`mallopt(M_ARENA_MAX)`, what the environment
    variable MALLOC_ARENA_MAX=n does), before the worker threads start: each thread would
    otherwise get an arena of its own, whose freed memory stays with the process, and the
    server's memory would grow with the answers it handled (`benchmarks/web_soak.py`, 50
    raters: +15% in 10 minutes with the default, +4% in 5 minutes with 2). False without
    glibc (nothing changed)."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-8, n) == 1  # (-8: M_ARENA_MAX)
    except (OSError, AttributeError):
        return False
