"""Sign-in and sign-out pages."""

from __future__ import annotations

import time

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from attest.audit.log import record as audit
from attest.auth.login import LoginError, authenticate_local, safe_next
from attest.web import settings, write

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def start_session(user, method: str) -> None:
    """Clear whatever session existed (no fixation), then sign in with fresh time-outs."""
    next_url = session.get("next")
    session.clear()
    login_user(user)
    now = time.time()
    session["signed_in_at"] = now
    session["seen_at"] = now
    session["login_method"] = method
    session.permanent = True
    if next_url:
        session["next"] = next_url


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next"), url_for("home.index")))
    form = LoginForm()
    cfg = settings()
    if form.validate_on_submit():
        with write() as s:  # a failure is committed too: its audit event and the failure count must stay
            try:
                user, error = authenticate_local(s, cfg, form.email.data, form.password.data), None
            except LoginError as exc:
                user, error = None, str(exc)
        if user is None:
            flash(error, "danger")
            return render_template("auth/login.html", form=form, settings=cfg), 401
        start_session(user, "password")
        return redirect(safe_next(request.args.get("next"), url_for("home.index")))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, settings=cfg), status


@bp.post("/logout")
@login_required
def logout():
    with write() as s:
        audit(s, actor=current_user.email, action="logout", object_type="user", object_id=str(current_user.id))
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
