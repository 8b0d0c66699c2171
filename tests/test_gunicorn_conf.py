"""`attest serve`'s gunicorn settings (attest/gunicorn_conf.py): one worker serves several requests at once
(threads), so a request waiting on the database does not hold up the next one (issue 19, part 6)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attest import gunicorn_conf

# a WSGI app whose /wait answers only once /release was asked for: one request at a time would never finish
BLOCKING_APP = '''
import threading
waiting, released = threading.Event(), threading.Event()

def app(environ, start_response):
    if environ["PATH_INFO"] == "/release":
        if not waiting.is_set():  # /wait is not in progress yet: ask again
            start_response("409 Conflict", [("Content-Type", "text/plain")])
            return [b"nothing waits yet"]
        released.set()
    elif waiting.set() or not released.wait(20):
        start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
        return [b"never released"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gunicorn exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)  # polling for the port, not waiting out a fixed time
    raise AssertionError("gunicorn did not listen")


@contextmanager
def _gunicorn(tmp_path: Path, module: str, source: str) -> Iterator[int]:
    """One gunicorn worker with attest/gunicorn_conf.py serving `module:app` (written from `source`): its port."""
    (tmp_path / f"{module}.py").write_text(source)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "--config", "python:attest.gunicorn_conf", "--chdir", str(tmp_path), f"{module}:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def test_one_worker_serves_a_second_request_while_the_first_waits(tmp_path: Path):
    assert gunicorn_conf.worker_class == "gthread" and gunicorn_conf.threads >= 2
    with _gunicorn(tmp_path, "blocking_app", BLOCKING_APP) as port:
        answers: dict[str, str] = {}

        def get(path: str) -> None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:  # noqa: S310 - loopback
                    answers[path] = f"{r.status} {r.read().decode()}"
            except urllib.error.HTTPError as exc:
                answers[path] = f"{exc.code} {exc.read().decode()}"

        waiting = threading.Thread(target=get, args=("/wait",))
        waiting.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # served by the same (only) worker while /wait is in progress
            get("/release")
            if answers["/release"].startswith("200"):
                break
        waiting.join(30)
        assert answers == {"/release": "200 /release", "/wait": "200 /wait"}


INTERVAL_APP = """
import sys

def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [repr(sys.getswitchinterval()).encode()]
"""


def test_a_worker_hands_the_gil_over_within_a_millisecond(tmp_path: Path):
    """A worker's threads take turns on the GIL every SWITCH_INTERVAL (1 ms), not CPython's 5 ms: a thread back
    from PostgreSQL (perhaps holding the audit chain's head) waits less behind one rendering a page."""
    with _gunicorn(tmp_path, "interval_app", INTERVAL_APP) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:  # noqa: S310 - loopback
            assert float(r.read().decode()) == gunicorn_conf.SWITCH_INTERVAL == 0.001
        assert sys.getswitchinterval() == 0.005  # this process (the arbiter's parent) is not changed
