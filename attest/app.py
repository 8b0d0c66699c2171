"""create_app(config=None) -> Flask. Extensions, blueprints and CLI commands are registered here."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Flask, flash, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_login.utils import login_url
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from attest import api, inputs, logs, metrics, templating
from attest.api.core import api_error_response
from attest.audit.views import bp as audit_bp
from attest.auth import oidc, sessions
from attest.auth.admin_views import bp as auth_admin_bp
from attest.auth.models import User
from attest.auth.token_views import bp as tokens_bp
from attest.auth.views import bp as auth_bp
from attest.charts import bp as charts_bp
from attest.config import Settings, load_settings
from attest.db import make_engine, make_session_factory, unavailable
from attest.entitlements import keys
from attest.entitlements.views import bp as entitlements_bp
from attest.extensions import csrf, login_manager
from attest.operations import bp as ops_bp
from attest.reviews import campaign_views, definition_views  # noqa: F401 - they add pages to reviews_bp
from attest.reviews.team_views import bp as team_bp
from attest.reviews.views import bp as reviews_bp
from attest.views import bp as home_bp
from attest.web import TEMPLATE_ENUMS, AttestState, close_db, db, write
from attest.web import settings as current_settings


def create_app(config: Settings | dict[str, Any] | None = None) -> Flask:
    settings = config if isinstance(config, Settings) else load_settings(**(config or {}))
    app = Flask(__name__, instance_path=settings.instance_path, instance_relative_config=False)
    register_config(app, settings)
    register_logging(app, settings)
    register_database(app, settings)
    register_metrics(app)
    settings = register_keys(app, settings)
    register_extensions(app)
    register_sso(app, settings)
    register_security(app, settings)
    register_inputs(app)
    register_blueprints(app)
    register_template_helpers(app)
    register_errors(app)
    register_cli(app)
    return app


ERROR_TEXT = {
    400: ("Bad request", "The request was not understood. Nothing was changed."),
    401: ("Sign in needed", "Please sign in."),
    403: ("Not allowed", "Your role does not allow this. Nothing was changed."),
    404: ("Not found", "There is nothing here, or it is not yours to see."),
    409: ("Conflict", "Someone changed this at the same time. Reload and try again."),
    413: ("Too large", "The upload is too large."),
    500: ("Something went wrong", "The error was logged. Nothing was changed."),
}


RETRY_AFTER_SECONDS = 30


def register_errors(app: Flask) -> None:
    def render(code: int, message: str | None = None):
        title, default = ERROR_TEXT.get(code, ("Error", ""))
        if request.path.startswith("/api/"):  # the API's one error shape (attest/api/errors.py)
            return api_error_response(code, message)
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error=title, message=message or default, status=code), code
        return render_template("errors/error.html", code=code, title=title, message=message or default), code

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render(400, "The form expired or did not come from Attest (CSRF check failed). Nothing was changed.")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code in (301, 302, 303, 307, 308) or exc.code is None:
            return exc
        message = exc.description if exc.code in (400, 409) and exc.description and not exc.description.startswith("The ") else None
        return render(exc.code, message)

    @app.errorhandler(Exception)
    def unhandled(exc):
        if unavailable(exc):
            return database_unavailable(exc)
        logging.getLogger("attest").exception("unhandled error on %s %s", request.method, request.path)
        return render(500)

    def database_unavailable(exc: BaseException):
        """The database is down, unreachable or locked: a 503 in Attest's style that says the last action may
        not have been saved, with Retry-After; nothing on the way reads the database."""
        logging.getLogger("attest").error("database unavailable on %s %s: %s", request.method, request.path,
                                          str(getattr(exc, "orig", None) or exc).splitlines()[0][:300])
        # the signed-in user cannot be loaded now: templates (Flask-Login's context processor) must not try again
        g._login_user = login_manager.anonymous_user()
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        message = ("The database is unavailable. What you were saving may not have been saved: check once "
                   "Attest answers again.")
        if request.path.startswith("/api/"):
            return api_error_response(503)
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error="Database unavailable", message=message, status=503), 503, retry
        if request.headers.get("HX-Request") == "true":
            return message, 503, {**retry, "Content-Type": "text/plain; charset=utf-8"}
        return render_template("errors/unavailable.html", retry_after=RETRY_AFTER_SECONDS), 503, retry


def register_config(app: Flask, settings: Settings) -> None:
    secure = settings.base_url.startswith("https://") or settings.is_production
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="attest_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_max_hours),
        # the cookie is written only when the session changes (sign-in, a flash), not re-sent on every answer:
        # an answer to a request the page made in the background (the definition form's live preview) would
        # otherwise overwrite the cookie a form post just set, flash and all, with the one it was sent with.
        # Its expiry stays sign-in + session_max_hours; the server-side session row enforces idle and maximum age.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,  # the session's own time-outs bound the token
        MAX_CONTENT_LENGTH=1024 * 1024,  # forms only (definitions are at most 64 KiB of YAML): larger is 413
        TESTING=settings.env == "test",
        PREFERRED_URL_SCHEME="https" if secure else "http",
    )


def register_logging(app: Flask, settings: Settings) -> None:
    """JSON lines (or text in development) with request id, user and route on every record (attest/logs.py)."""
    logs.configure(settings.log_format, settings.log_level)
    logs.init_app(app)


def register_database(app: Flask, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    app.extensions["attest"] = AttestState(settings, engine, make_session_factory(engine))
    app.teardown_appcontext(close_db)


def register_metrics(app: Flask) -> None:
    """Request latency per route, timed before any other hook runs (attest/metrics.py; GET /metrics)."""
    metrics.init_app(app)


def register_keys(app: Flask, settings: Settings) -> Settings:
    """The encryption keys decrypt what is stored, or the app does not start (attest/entitlements/keys.py).

    The CLI defers the check to the commands that touch secrets (`defer_key_check=True`)."""
    state = app.extensions["attest"]
    try:
        state.settings = keys.start_up(state.factory, settings,
                                       verify_keys=not settings.defer_key_check)
    except keys.KeyCheckError as exc:
        logging.getLogger("attest.keys").critical("%s", exc)
        raise
    return state.settings


def register_extensions(app: Flask) -> None:
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load_user(login_id: str) -> User | None:
        uid, _, generation = login_id.partition(":")
        token = session.get(sessions.COOKIE_KEY)
        try:
            # the user and the server-side session record their cookie names, in one statement
            user, row = sessions.user_and_session(db(), int(uid), token)
        except ValueError:
            return None
        if user is None or not user.active or str(user.session_generation) != generation:
            return None
        # the server-side session record (attest/auth/sessions.py): ended at sign-out, idle, too old
        verdict = sessions.judge(current_settings(), token, row, user.id, sessions.clock())
        if not verdict.ok:
            g.session_refused = verdict
            return None
        g.session_touch = verdict.row.id if verdict.touch else None
        return user

    @login_manager.unauthorized_handler
    def unauthorized():
        """Sign-in needed: htmx gets a 401 that sends the whole page to the sign-in form (not a login
        page swapped into a table row), JSON callers a 401, browsers the sign-in page."""
        if request.headers.get("HX-Request") == "true":
            return "", 401, {"HX-Redirect": url_for("auth.login")}
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error="Sign in needed", message="Please sign in.", status=401), 401
        flash(login_manager.login_message, login_manager.login_message_category)
        return redirect(login_url(login_manager.login_view, request.url))


def register_sso(app: Flask, settings: Settings) -> None:
    """OIDC single sign-on (Authlib's Flask client) when ATTEST_OIDC_DISCOVERY_URL is set."""
    oidc.init_app(app, settings)


def register_security(app: Flask, settings: Settings) -> None:
    if settings.proxy_count:
        # behind a load balancer: take the client address and scheme from X-Forwarded-* (audit IPs,
        # Secure cookies), trusting exactly as many hops as there are proxies
        n = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]

    @app.before_request
    def request_id_and_session_rules():
        if request.endpoint == "static":
            return None
        if getattr(g, "api_token_auth", False) or request.path.startswith("/api/"):
            return None  # the API authenticates by token only, never by the session cookie (attest/api/core.py)
        # the server-side session rules (attest/auth/sessions.py), checked when the user is loaded
        signed_in = current_user.is_authenticated
        refused = g.pop("session_refused", None)
        if refused is not None:
            token = session.get(sessions.COOKIE_KEY)
            session.clear()  # the view goes on anonymous: a page that needs sign-in sends to the sign-in page
            if refused.timed_out:
                with write() as s:
                    sessions.end(s, token, refused.reason, sessions.clock())
                flash("Your session timed out. Please sign in again.", "warning")
        elif signed_in and g.get("session_touch"):
            with write() as s:  # at most once a minute per session (sessions.TOUCH_EVERY)
                sessions.touch(s, g.pop("session_touch"), sessions.clock())
        return None

    @app.after_request
    def security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "font-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if current_user.is_authenticated and request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response


def register_inputs(app: Flask) -> None:
    """Ids, NUL bytes (attest/inputs.py): before the blueprints, whose rules compile with these converters."""
    inputs.init_app(app)


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(home_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(auth_admin_bp)
    app.register_blueprint(entitlements_bp)
    app.register_blueprint(reviews_bp)
    app.register_blueprint(team_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(charts_bp)
    app.register_blueprint(ops_bp)
    api.init_app(app)  # /api/v1 (token auth, CSRF-exempt)
    app.register_blueprint(tokens_bp)


def register_template_helpers(app: Flask) -> None:
    templating.register(app)
    app.jinja_env.globals.update(TEMPLATE_ENUMS)


def register_cli(app: Flask) -> None:
    from attest.cli import register  # local: attest.cli imports this module (create_app), a real cycle

    register(app)
