"""Serve a WSGI app on loopback in a background thread, with optional added latency per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class Latency:
    """WSGI middleware that sleeps before each request (benchmarks: 50 ms like a real WAN round trip)."""

    def __init__(self, app: Callable, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if self.seconds > 0:
            time.sleep(self.seconds)
        return self.app(environ, start_response)


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
    server = make_server(host, port, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{port}", daemon=True)
    thread.start()
    return RunningServer(server, thread, app)
