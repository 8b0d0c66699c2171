"""Serve a WSGI app on loopback in a background thread, with optional added latency per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class Latency:
    """WSGI middleware that sleeps before each request (benchmarks: 50 ms like a real WAN round trip)."""

    def __init__(self, app: Callable, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if self.seconds > 0:
            time.sleep(self.seconds)
        return self.app(environ, start_response)


class OneDateHandler(WSGIRequestHandler):
    """Exactly one `Date` header, as a real server sends: the app's own when it sets one (a fake whose clock is
    skewed, like Okta's fake), else the server's. (http.server adds its own Date before the app's headers.)"""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())
        self._dated = False

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "date":
            self._dated = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        if not getattr(self, "_dated", True):
            super().send_header("Date", self.date_time_string())
        super().end_headers()


@dataclass
class RunningServer:
    server: BaseWSGIServer
    thread: threading.Thread
    app: Any

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> RunningServer:
    """Start `app` on host:port (0 picks a free port) in a daemon thread; threaded, one thread a request."""
    wsgi = Latency(app, latency) if latency else app
    server = make_server(host, port, wsgi, threaded=True, request_handler=OneDateHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{port}", daemon=True)
    thread.start()
    return RunningServer(server, thread, app)
