"""Sign-in and sign-out pages."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from attest.auth import oidc, sessions
from attest.auth.login import LoginError, Throttled, authenticate_local, safe_next
from attest.auth.models import User
from attest.trail.chain import record as audit
from attest.web import db, settings, write

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def start_session(user, method: str) -> None:
    """Clear whatever session existed (no fixation), then sign in with a new server-side session record
    (`attest.auth.sessions`: checked on every request, ended at sign-out and by the time-outs)."""
    next_url = session.get("next")
    now = sessions.clock()
    with write() as s:
        token = sessions.start(s, user.id, method, now, ip=request.remote_addr,
                               user_agent=request.headers.get("User-Agent"))
    session.clear()
    login_user(user)
    session[sessions.COOKIE_KEY] = token
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
        retry_after = None
        with write() as s:  # a failure is committed too: its audit event and the failure count must stay
            try:
                user, error = authenticate_local(s, cfg, form.email.data, form.password.data,
                                                 address=request.remote_addr, now=sessions.clock()), None
            except Throttled as exc:
                user, error, retry_after = None, str(exc), exc.retry_after
            except LoginError as exc:
                user, error = None, str(exc)
        if user is None:
            flash(error, "danger")
            page = render_template("auth/login.html", form=form, settings=cfg)
            if retry_after is not None:
                return page, 429, {"Retry-After": str(retry_after)}
            return page, 401
        start_session(user, "password")
        return redirect(safe_next(request.args.get("next"), url_for("home.index")))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, settings=cfg), status


def _landing(user) -> str:
    """Where a sign-in lands without a `next`: a reviewer's own reviews, everyone else's home page."""
    from flask import current_app

    if not user.can_read_all and "reviews.inbox" in current_app.view_functions:
        return url_for("reviews.inbox")
    return url_for("home.index")


# not "next": Flask-Login's strong session protection clears that key from an anonymous session
SSO_NEXT = "sso_next"


def _sso_refused(error, template: str = "auth/sso_failed.html"):
    session.pop(SSO_NEXT, None)
    return render_template(template, error=error, settings=settings()), error.status


@bp.get("/login/oidc")
def oidc_login():
    """Start single sign-on: the IdP's page, with state, nonce and PKCE kept in this browser's session."""
    cfg = settings()
    if not cfg.oidc_enabled or oidc.client() is None:
        abort(404)
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next"), _landing(current_user)))
    target = safe_next(request.args.get("next"), "")
    if target:
        session[SSO_NEXT] = target
    else:
        session.pop(SSO_NEXT, None)
    try:
        return oidc.authorize_redirect(cfg)
    except oidc.SsoError as exc:
        return _sso_refused(exc)


@bp.get("/login/oidc/callback")
def oidc_callback():
    """The IdP sends the browser back here: verify, link, map roles, and start a fresh session."""
    cfg = settings()
    if not cfg.oidc_enabled or oidc.client() is None:
        abort(404)
    try:
        profile = oidc.profile_from_claims(cfg, oidc.verify_callback(cfg))
    except oidc.SsoError as exc:
        with write() as s:
            oidc.audit_failure(s, exc)
        return _sso_refused(exc)
    with write() as s:
        outcome = oidc.complete_sign_in(s, cfg, profile)
        user_id = outcome.user.id if outcome.user is not None else None
    if outcome.refused is not None:
        template = "auth/no_identity.html" if isinstance(outcome.refused, oidc.NoIdentityError) else "auth/sso_failed.html"
        return _sso_refused(outcome.refused, template)
    user = db().get(User, user_id)
    target = session.pop(SSO_NEXT, None)
    start_session(user, "oidc")
    return redirect(safe_next(target, _landing(user)))


@bp.post("/logout")
@login_required
def logout():
    """Ends this session's server-side record: every copy of this cookie stops working; the user's
    sessions in other browsers go on."""
    with write() as s:
        sessions.end(s, session.get(sessions.COOKIE_KEY), "signed out", sessions.clock())
        audit(s, actor=current_user.email, action="logout", object_type="user", object_id=str(current_user.id))
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
