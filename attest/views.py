"""The home page: what each role needs first."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from attest.entitlements import queries
from attest.entitlements.models import Source, SyncRun
from attest.web import db

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


@bp.get("/healthz")
def healthz():
    db().execute(select(1))
    return {"status": "ok"}
