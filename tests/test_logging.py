"""Structured logs: every line the real handler writes is one JSON object with the request id, the user and
the route; a traceback is inside its record; secret-looking fields are redacted; X-Request-ID is honoured
when sane and returned."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from attest import logs
from attest.config import SettingsError, load_settings
from tests.conftest import make_settings
from tests.factories import login_as, make_user


def _app(databases, factory, tmp_path, **overrides):
    from attest.app import create_app

    application = create_app(make_settings(databases.url, tmp_path, log_level="INFO", **overrides))
    state = application.extensions["attest"]
    state.engine.dispose()
    state.factory = factory

    def boom():
        logging.getLogger("attest.test").warning("about to fail", extra={"client_secret": "hunter2-secret",
                                                                         "note": 'a "quoted"\nvalue'})
        raise RuntimeError("the handler failed on purpose")

    application.add_url_rule("/_test/boom", "test_boom", boom)

    @application.cli.command("test-boom")
    def cli_boom():
        raise RuntimeError("the command failed on purpose")

    return application


@contextmanager
def _capture() -> Iterator[io.StringIO]:
    """Point Attest's own handler (the one create_app installed on the root logger) at a buffer."""
    handlers = [h for h in logging.getLogger().handlers if h.get_name() == logs.HANDLER_NAME]
    assert len(handlers) == 1
    buffer = io.StringIO()
    handlers[0].setStream(buffer)
    try:
        yield buffer
    finally:
        handlers[0].setStream(sys.stderr)


def test_every_log_line_is_json_with_request_id_user_and_route(databases, factory, session, tmp_path):
    from attest.cli import main

    app = _app(databases, factory, tmp_path, log_format="json")
    admin = make_user(session, "admin@acme.example", roles=["admin"], password="correct horse battery 9")
    session.commit()
    client = app.test_client()
    anonymous = app.test_client()
    with _capture() as buffer:
        login_as(app, client, admin)
        page = client.get("/", headers={"X-Request-ID": "req-abc.123"})
        missing = client.get('/no/such/"page"')
        failed = client.get("/_test/boom", headers={"X-Request-ID": "bad id {\"x\": 1}" + "y" * 200})
        redirected = anonymous.get("/")
        cli = CliRunner().invoke(main, ["test-boom"], obj=ScriptInfo(create_app=lambda: app))

    assert page.status_code == 200 and page.headers["X-Request-ID"] == "req-abc.123"
    assert missing.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", missing.headers["X-Request-ID"])
    assert failed.status_code == 500
    failed_id = failed.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", failed_id)  # the hostile incoming id was replaced
    assert redirected.status_code == 302
    assert cli.exit_code == 1 and "Traceback" not in cli.stdout

    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every single line parses
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    requests = {r["request_id"]: r for r in records if r["logger"] == "attest.request"}

    home = requests["req-abc.123"]
    assert home["route"] == "home.index" and home["method"] == "GET" and home["status"] == 200
    assert home["user"] == "admin@acme.example" and home["user_id"] == admin.id
    assert isinstance(home["duration_ms"], int | float)

    not_found = requests[missing.headers["X-Request-ID"]]
    assert not_found["status"] == 404 and not_found["route"] is None and not_found["path"] == '/no/such/"page"'

    boom = requests[failed_id]
    assert boom["status"] == 500 and boom["route"] == "test_boom" and boom["user"] == "admin@acme.example"
    errors = [r for r in records if r["level"] == "ERROR" and r.get("request_id") == failed_id]
    assert len(errors) == 1 and errors[0]["route"] == "test_boom" and errors[0]["user_id"] == admin.id
    assert errors[0]["exc_info"].startswith("Traceback") and "the handler failed on purpose" in errors[0]["exc_info"]
    warning = next(r for r in records if r["message"] == "about to fail")
    assert warning["client_secret"] == "[redacted]" and warning["request_id"] == failed_id
    assert warning["note"] == 'a "quoted"\nvalue'

    anon = [r for r in requests.values() if r["status"] == 302]
    assert anon and anon[0]["user"] is None and anon[0]["route"] == "home.index"

    cli_errors = [r for r in records if r["logger"] == "attest.cli"]
    assert len(cli_errors) == 1 and "the command failed on purpose" in cli_errors[0]["exc_info"]
    assert "Traceback" in cli_errors[0]["exc_info"]

    everything = buffer.getvalue()
    assert "hunter2" not in everything and "correct horse" not in everything
    assert not any(line.startswith(("Traceback", " ")) for line in lines)  # no raw traceback line


def test_text_format_for_development_and_settings_are_checked(databases, factory, tmp_path):
    app = _app(databases, factory, tmp_path, log_format="text")
    with _capture() as buffer:
        app.test_client().get("/healthz", headers={"X-Request-ID": "txt-1"})
    assert "txt-1" in buffer.getvalue() and "home.healthz" in buffer.getvalue()
    base = {"ATTEST_ENV": "development", "ATTEST_DATABASE_URL": "sqlite://",
            "ATTEST_INSTANCE_PATH": str(tmp_path / "i"), "ATTEST_ENCRYPTION_KEYS": "", "ATTEST_SECRET_KEY": "x" * 40}
    assert load_settings(environ=base).log_format == "text"
    assert load_settings(environ={**base, "ATTEST_ENV": "test"}).log_format == "json"
    assert load_settings(environ={**base, "ATTEST_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="ATTEST_LOG_FORMAT"):
        load_settings(environ={**base, "ATTEST_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="ATTEST_LOG_LEVEL"):
        load_settings(environ={**base, "ATTEST_LOG_LEVEL": "LOUD"})
