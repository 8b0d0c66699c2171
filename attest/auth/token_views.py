"""The API tokens page: every signed-in user creates, lists and revokes their own personal tokens; admins
also their service tokens. A new token is shown once, on the answer to its creation (never stored in clear,
never in the session, a log or the audit trail). Forms carry CSRF tokens (Flask-WTF's CSRFProtect)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from attest.auth import tokens
from attest.db import utcnow
from attest.inputs import parse_int
from attest.web import db, write

bp = Blueprint("tokens", __name__)


def _page(created: tokens.CreatedToken | None = None, error: str | None = None, status: int = 200):
    rows = tokens.visible_tokens(db(), current_user)
    return render_template("auth/tokens.html", rows=rows, created=created, error=error,
                           personal_scopes=tokens.allowed_scopes(current_user, "personal"),
                           service_scopes=tokens.allowed_scopes(current_user, "service"),
                           max_days=tokens.MAX_DAYS, now=utcnow()), status


@bp.get("/tokens", endpoint="index")
@login_required
def index():
    return _page()


@bp.post("/tokens", endpoint="create")
@login_required
def create():
    kind = request.form.get("kind", "personal")
    days = parse_int(request.form.get("days", ""), low=1, high=tokens.MAX_DAYS)
    if request.form.get("days", "").strip() and days is None:
        return _page(error=f"A token expires after 1 to {tokens.MAX_DAYS} days.", status=400)
    if kind == "service" and not current_user.is_admin:
        abort(403)
    try:
        with write() as session:
            created = tokens.create_token(session, current_user, request.form.get("name", ""),
                                          request.form.getlist("scopes"), kind=kind, days=days or 90)
    except tokens.TokenError as exc:
        db().rollback()
        return _page(error=str(exc), status=400)
    response = _page(created=created)
    return response[0], 201, {"Cache-Control": "no-store"}


@bp.post("/tokens/<int:token_id>/revoke", endpoint="revoke")
@login_required
def revoke(token_id: int):
    with write() as session:
        row = tokens.revoke_token(session, current_user, token_id)
        if row is None:
            abort(404)
        name = row.name
    flash(f"Revoked the token {name}: it stops working now.", "success")
    return redirect(url_for("tokens.index"), 303)
