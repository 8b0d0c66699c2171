"""Jinja filters and globals shared by every page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Flask, request


def fmt_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime(fmt) + " UTC"


def fmt_date(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = (datetime.now(UTC) - value).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


STATUS_CLASSES = {
    "succeeded": "success", "partial": "warning", "failed": "danger", "aborted": "danger", "running": "info",
    "active": "success", "terminated": "danger", "suspended": "warning", "draft": "secondary", "closed": "dark",
    "cancelled": "secondary", "pending": "secondary", "verified": "success", "reappeared": "danger",
}


def status_class(value: str | None) -> str:
    return STATUS_CLASSES.get(value or "", "secondary")


def url_with(**changes: Any) -> str:
    """The current URL with some query arguments changed (None removes one)."""
    args = request.args.to_dict()
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    return request.path + ("?" + urlencode(args) if args else "")


def register(app: Flask) -> None:
    app.jinja_env.filters.update(dt=fmt_dt, date=fmt_date, ago=ago, status_class=status_class)
    app.jinja_env.globals.update(url_with=url_with)
    app.extensions.setdefault("attest_nav", [])  # (endpoint, label) pairs blueprints add for admins/auditors

    @app.context_processor
    def navigation() -> dict[str, Any]:
        return {"nav_endpoints": set(app.view_functions), "extra_nav": app.extensions["attest_nav"]}

    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
