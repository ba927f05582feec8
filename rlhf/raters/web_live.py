"""The rating page on a queue that changes while it is served (the loop's `mode: async`).

`LiveServer` serves the items of a queue file the way `rlhf serve` does (`raters.web.build`:
the same app, store, links and sessions), on uvicorn in a background thread of the calling
process, and lets the caller change what is served while raters work: `set_items(servable,
known)` hands every rater's session the items to serve now (the newest first, say) and every
item ever served (`known`: answers to retired items still count as the rater's). Each rater's
session is changed under the rater's lock, so never in the middle of a request. While the
queue may grow, a rater with nothing left sees "waiting for new items" (`Rater.waits`) and the
page asks again by itself; `close` ends that, and stops the server.

Why a thread of the loop and not a process of its own: the server must see each new item the
moment the sampler writes it, and the sessions live in this process's memory; a kill of the
loop takes the server with it (no orphan holding the port), and no answer is lost, since an
answer is confirmed only once the store has fsynced it. uvicorn's event loop waits on sockets
and torch releases the interpreter lock in its kernels, so the page keeps answering while the
loop trains (benchmarks/async_loop.py: raters idle under 1% of the time).
"""

from __future__ import annotations

import threading
from pathlib import Path

from rlhf.config import UserError
from rlhf.feedback.items import Item
from rlhf.raters.web import build
from rlhf.raters.web_api import RatingServer
from rlhf.raters.web_serving import banner, bind, check_serving, uvicorn_server


class LiveServer:
    """The page for `queue` (a file with at least one item) into `store_path`, for `names`,
    served until `close()`; `links` is what `banner` prints (new links, or "unchanged")."""

    def __init__(self, queue: Path, store_path: Path, names: list[str],
                 host: str = "127.0.0.1", port: int = 8765, **session_kw):
        check_serving(host, port)
        self.sock = bind(host, port)
        try:
            app, shown = build([queue], store_path, names, **session_kw)
        except BaseException:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.links = banner(names, shown, self.sock, host)
        self.rating: RatingServer = app.app.state.server
        for r in self.rating.raters.values():
            r.waits = True
        self.uvicorn = uvicorn_server(app)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name="rating-server")
        self.thread.start()

    def set_items(self, servable: list[Item], known: list[Item]) -> None:
        """Serve `servable` (in this order of preference) from now on; `known`: every item
        ever served (a superset), so that answers to retired items stay the raters'."""
        by_id = {it.id: it for it in known}
        for r in self.rating.raters.values():
            with r.lock:
                r.session.items = list(servable)
                r.session.by_id = dict(by_id)

    def check_alive(self) -> None:
        """UserError when the server thread has stopped (it should run until `close`)."""
        if not self.thread.is_alive():
            raise UserError(f"the rating server on port {self.port} stopped")

    def close(self) -> None:
        """The end of the run: pages stop waiting (they end), then the server stops."""
        for r in self.rating.raters.values():
            with r.lock:
                r.waits = False
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
