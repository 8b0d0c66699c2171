"""The home page: what each role needs first."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from attest import readiness
from attest.entitlements import queries
from attest.entitlements.models import Source, SyncRun
from attest.web import db, state

bp = Blueprint("home", __name__)


@bp.get("/")
@login_required
def index():
    session = db()
    context = {}
    if current_user.can_read_all:
        context["stats"] = queries.stats(session)
        context["recent_runs"] = session.execute(
            select(SyncRun, Source.name).join(Source, Source.id == SyncRun.source_id).order_by(SyncRun.id.desc()).limit(8)
        ).all()
        context["orphaned"] = queries.orphaned_accounts(session, limit=5)
        context["terminated"] = queries.terminated_with_access(session, limit=5)
    return render_template("home.html", **context)


@bp.get("/favicon.ico")
def favicon():
    """Browsers and bookmark tools ask for /favicon.ico whatever the page links: the SVG icon, not a 404."""
    response = current_app.send_static_file("favicon.svg")
    response.cache_control.max_age = 86400
    return response


@bp.get("/healthz")
def healthz():
    """Liveness: this process answers. Reads nothing (a load balancer must not restart every web worker
    because the database is down: /readyz says that)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Readiness, as JSON: 200 when the database answers and its schema is this version's; 503 otherwise.
    Also says whether a scheduler holds its leases (jobs run), without failing on it: web pages work
    without one."""
    report = readiness.check(state().engine)
    return report, 200 if report["ready"] else 503, ({} if report["ready"] else {"Retry-After": "30"})
