"""A loopback HTTP server for media-fetch tests, with routes a hostile server would serve."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Site:
    """One HTTP server on a loopback address; counts requests by path."""

    def __init__(self, host: str, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.hits: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                site.hits[path] += 1
                routes.get(path, lambda h: h.send_error(404))(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def drip(handler: BaseHTTPRequestHandler) -> None:
    """A byte a second of a declared 1,000: each read returns in time, the whole never does."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    try:
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(1)
    except OSError:  # the client gave up and closed: what the test wants
        pass
