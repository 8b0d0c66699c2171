"""The Users page: who can sign in, their roles (from the IdP and granted here) and linked person.

Admins and auditors read it; only admins grant or remove Attest's own `admin`/`auditor` roles
(audited `user.roles`) and link a user to a person (audited `user.link`). Roles from the IdP's groups
claim are shown but change only at the IdP (they are refreshed at each sign-in).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from attest.auth import users
from attest.auth.login import UserError
from attest.auth.models import ROLES
from attest.auth.permissions import read_all_required, require_admin_write
from attest.web import db, settings, write

bp = Blueprint("auth_admin", __name__)


@bp.record_once
def _add_nav(state) -> None:
    state.app.extensions.setdefault("attest_nav", []).append(("auth_admin.users", "Users"))


@bp.get("/admin/users", endpoint="users")
@read_all_required
def users_page():
    q = request.args.get("q", "")[:200]
    page = users.list_users(db(), q=q, after=request.args.get("after") or None)
    return render_template("auth/users.html", page=page, roles=ROLES, settings=settings(), q=q)


def _back():
    return redirect(url_for("auth_admin.users", q=request.form.get("q") or None))


@bp.post("/admin/users/<int:user_id>/roles")
@read_all_required
def set_roles(user_id: int):
    require_admin_write()
    roles = request.form.getlist("roles")
    try:
        with write() as s:
            user = users.change_local_roles(s, user_id, roles, current_user)
            label, now = user.email, sorted(user.local_roles or [])
    except UserError as exc:
        if str(exc).startswith("no user"):
            abort(404)
        flash(str(exc), "danger")
        return _back()
    flash(f"Roles granted in Attest to {label}: {', '.join(now) or 'none'}.", "success")
    return _back()


@bp.post("/admin/users/<int:user_id>/identity")
@read_all_required
def link(user_id: int):
    require_admin_write()
    person = request.form.get("person", "")[:320]
    try:
        with write() as s:
            user = users.link_identity(s, user_id, person, actor=current_user.email)
            label = user.email
            linked = user.identity.display_name if user.identity else None
    except UserError as exc:
        if str(exc).startswith("no user"):
            abort(404)
        flash(str(exc), "danger")
        return _back()
    flash(f"Linked {label} to {linked}." if linked else f"{label} is no longer linked to a person.", "success")
    return _back()
