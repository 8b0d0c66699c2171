"""Structured logs: one JSON object per line (python-json-logger), or readable text in development.

Every record made while a request is served carries its request id, the signed-in user (id and e-mail,
nothing else), the route (the URL rule's endpoint), the method and the path; the request's own line
(logger `attest.request`) adds the status and the duration. A traceback is the `exc_info` field of its
record, never raw lines. Extra fields whose name looks secret (password, token, secret, ...) are
redacted before a record is written, like the audit trail's `_scrub`.

ATTEST_LOG_FORMAT=json|text picks the format (json by default, text in development); ATTEST_LOG_LEVEL the level.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

HANDLER_NAME = "attest"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# the same idea as the audit trail's scrub (attest/trail/chain.py): a field named like a secret is never written
SECRET_WORDS = ("password", "passwd", "secret", "token", "private_key", "api_key", "authorization", "cookie")
REQUEST_FIELDS = ("request_id", "user_id", "user", "route", "method", "path")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s %(user)s %(route)s] %(message)s"


def _secret_name(name: str) -> bool:
    name = name.lower()
    return any(word in name for word in SECRET_WORDS)


def scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: "[redacted]" if _secret_name(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def sane_request_id(value: str | None) -> str:
    """An incoming X-Request-ID if it looks like one (letters, digits, . _ : -, up to 128), else a new id."""
    if value and REQUEST_ID_RE.fullmatch(value):
        return value
    return secrets.token_hex(16)


class RequestContext(logging.Filter):
    """Adds the request's fields to every record made while it is served (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context, request

        values: dict[str, Any] = {}
        if has_request_context():
            values = dict.fromkeys(REQUEST_FIELDS)
            values["request_id"] = g.get("request_id")
            values["method"] = request.method
            values["path"] = request.path  # never the query string: it may carry a code or a token
            values["route"] = request.url_rule.endpoint if request.url_rule is not None else None
            # only a user already loaded: loading one here would query the database inside a log call
            user = g.get("_login_user")
            if user is not None and getattr(user, "is_authenticated", False):
                values["user_id"] = getattr(user, "id", None)
                values["user"] = getattr(user, "email", None)
        for name, value in values.items():
            if not hasattr(record, name) or getattr(record, name) is None:
                setattr(record, name, value)
        return True


class AttestJsonFormatter(JsonFormatter):
    """python-json-logger with a UTC timestamp, the level and logger names, and secret-looking fields redacted."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return scrub(super().process_log_record(log_data))


class TextFormatter(logging.Formatter):
    """Development: one readable line, the traceback below it."""

    def format(self, record: logging.LogRecord) -> str:
        for name in ("request_id", "user", "route"):
            if getattr(record, name, None) is None:
                setattr(record, name, "-")
        return super().format(record)


def formatter(log_format: str) -> logging.Formatter:
    return AttestJsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (a stream given to setStream wins)."""

    def __init__(self) -> None:
        super().__init__()
        self._target: Any = None

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return self._target if self._target is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        self._target = None if value is sys.stderr else value


def configure(log_format: str, level: str) -> logging.Handler:
    """Install (or replace) Attest's one handler on the root logger: every library's records go through it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    handler = StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestContext())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    # httpx logs full request URLs at INFO; keep query strings (which may carry tokens) out of the log
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # the app's own request line replaces the development server's access line
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return handler


def init_app(app: Any) -> None:
    """Request ids and one `attest.request` line per request (method, route, status, duration, user)."""
    from flask import g, request
    from flask.logging import default_handler

    app.logger.removeHandler(default_handler)  # Flask's own handler would print tracebacks raw
    access = logging.getLogger("attest.request")

    @app.before_request
    def start_request() -> None:
        g.request_id = sane_request_id(request.headers.get("X-Request-ID"))
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response):
        from flask_login import current_user

        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.endpoint != "static":
            # load the user so the line names them; the line is written even when the user cannot be read
            with contextlib.suppress(Exception):
                current_user.is_authenticated  # noqa: B018
        started = g.get("request_started")
        duration = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
        access.info("%s %s %s", request.method, request.path, response.status_code,
                    extra={"status": response.status_code, "duration_ms": duration})
        return response

