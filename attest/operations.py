"""Operators' pages: GET /metrics (Prometheus, bearer token) and the Jobs page (/admin/jobs, admins).

/metrics answers only when ATTEST_METRICS_TOKEN is set, and only to `Authorization: Bearer <token>`
(compared in constant time): without a token configured it is 404, as if it did not exist; a missing or
wrong token is 401. It is not behind sign-in: Prometheus has no session. See attest/metrics.py for what
it reports and how.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, current_app, render_template, request

from attest import jobs as scheduler_jobs
from attest.auth.permissions import admin_required
from attest.db import utcnow
from attest.web import db, settings

bp = Blueprint("ops", __name__)


def _token_ok(configured: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), configured.encode())


@bp.get("/metrics")
def metrics():
    token = settings().metrics_token
    if not token:
        abort(404)
    if not _token_ok(token):
        return Response("A bearer token is needed (ATTEST_METRICS_TOKEN).\n", 401,
                        {"WWW-Authenticate": 'Bearer realm="attest-metrics"', "Content-Type": "text/plain"})
    from prometheus_client import CONTENT_TYPE_LATEST

    body = current_app.extensions["attest_metrics"].scrape()
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


@bp.get("/admin/jobs")
@admin_required
def jobs():
    """Every scheduled job: schedule, next run, last run and status, last success, last error, where it runs."""
    session = db()
    now = utcnow()
    rows = scheduler_jobs.status(session, now)
    last_seen = scheduler_jobs.scheduler_last_seen(session)
    running = last_seen is not None and now - last_seen < scheduler_jobs.SCHEDULER_SEEN_WITHIN
    return render_template("ops/jobs.html", rows=rows, last_seen=last_seen, scheduler_running=running)
