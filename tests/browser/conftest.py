"""Browser-test harness: a live Attest server and a headless Chromium driven by Playwright.

Fixtures (all function-scoped unless noted):

- `live_server` -> LiveServer: `create_app()` on a `fresh_db` database (real commits, its own file or
  PostgreSQL database), served by werkzeug's threaded `make_server` on a free 127.0.0.1 port in a
  daemon thread, with `ATTEST_BASE_URL` set to that address. Fields: `url` (base URL, no trailing
  slash), `app`, `settings`, `factory` (a sessionmaker on the same database: seed data with
  `with live_server.session() as s: ...` which commits on success), and helpers
  `live_server.url_for("/path")` and `live_server.sign_in(page, email, password)` (fills the local
  password form and waits until signed in).
  Settings overrides: override the `live_server_overrides` fixture in a test module (it may depend on
  other fixtures, e.g. a mock IdP's URL) and return a dict of Settings fields, e.g.
  `{"oidc_discovery_url": ..., "oidc_client_id": ...}`.
- `start_live_server` -> callable(**overrides) -> LiveServer: start more servers (or one with
  per-test settings); each is stopped at the end of the test.
- `browser` (session-scoped): Debian's `/usr/bin/chromium` launched headless through
  `playwright.sync_api` with the flags the sandboxed CI needs. Tests are skipped with a clear reason
  when Chromium or Playwright is missing (`make install-test` installs Chromium).
- `context` / `page`: a fresh browser context (own cookies) and page per test, 10 s default timeout.
  When the test fails, a full-page screenshot is saved to `test-artifacts/<test name>.png`.
- `github`: the sandbox's fake GitHub (orgs acme and beta, 12 members each) served over loopback; its `url`,
  and `hold`/`held`/`go` Events that stop a sync at its first read of the second org while the page is
  watched (tests/browser/helpers.py's `sync_now_with_progress` uses them).

Mark browser tests with `@pytest.mark.browser`. Use `page.expect_navigation()` or
`expect(page).to_have_url(...)` rather than sleeps.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from attest.config import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _Deferred:
    """A WSGI app set after the socket is bound, so the app can be built knowing its own URL."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass
class LiveServer:
    url: str
    app: Flask
    settings: Settings
    factory: sessionmaker[Session]
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the live server's database whose work is committed on success."""
        s = self.factory()
        try:
            with s.begin():
                yield s
        finally:
            s.close()

    def sign_in(self, page: Any, email: str, password: str, next_path: str | None = None) -> None:
        """Sign in with a local password through the real form; waits until the sign-in page is left."""
        page.goto(self.url_for("/login" + (f"?next={next_path}" if next_path else "")))
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        if re.search(r"/login(\?|$)", page.url):
            raise AssertionError(f"sign-in as {email} failed: {page.inner_text('main')[:300]}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.app.extensions["attest"].engine.dispose()


@pytest.fixture
def live_server_overrides() -> dict[str, Any]:
    """Settings fields for `live_server`; override this fixture in a test module to change them."""
    return {}


@pytest.fixture
def start_live_server(fresh_db) -> Iterator[Callable[..., LiveServer]]:
    from attest.app import create_app

    started: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        deferred = _Deferred()
        server = make_server("127.0.0.1", 0, deferred, threaded=True, request_handler=_QuietHandler)
        url = f"http://127.0.0.1:{server.server_port}"
        settings = fresh_db.settings.replace(**{"base_url": url, **overrides})
        app = create_app(settings)
        deferred.app = app
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"live-server-{server.server_port}", daemon=True)
        thread.start()
        live = LiveServer(url, app, settings, fresh_db.factory, server, thread)
        started.append(live)
        return live

    yield start
    for live in reversed(started):
        live.stop()


@pytest.fixture
def live_server(start_live_server, live_server_overrides) -> LiveServer:
    return start_live_server(**live_server_overrides)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (`make install-test` or `apt-get install chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a test dependency
        pytest.skip("playwright is not installed (`pip install -e '.[test]'`)")
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context, request) -> Iterator[Any]:
    pg = context.new_page()
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        try:
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            print(f"could not save a screenshot: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def github():
    """The fake GitHub with two orgs; `hold` (armed by the test) stops the sync at its first read of the second
    org until `go` is set, so the page can be seen while the run is going (an Event, not a sleep)."""
    from flask import request

    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, create_app
    from attest.connectors.sandbox.server import serve_in_thread

    app = create_app(orgs=("acme", "beta"), members=12, teams=3, repos=5, token=SANDBOX_TOKEN)
    hold, held, go = threading.Event(), threading.Event(), threading.Event()

    @app.before_request
    def gate():
        if hold.is_set() and "/beta" in request.path and not go.is_set():
            held.set()
            go.wait(30)

    with serve_in_thread(app) as server:
        app.url, app.hold, app.held, app.go = server.url, hold, held, go
        yield app
        go.set()
