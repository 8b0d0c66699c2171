"""Break-glass local passwords: sign-in, lock-out, safe redirects, session time-outs."""

from __future__ import annotations

from sqlalchemy import select

from attest.auth.login import safe_next
from attest.trail.models import AuditEvent
from tests.factories import make_user

PASSWORD = "correct horse battery staple"


def _login(client, email, password, next_url=None):
    page = client.get("/login")
    token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    url = "/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"email": email, "password": password, "csrf_token": token})


def test_sign_in_and_out(client, session):
    make_user(session, "admin@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    response = _login(client, "admin@acme.example", PASSWORD)
    assert response.status_code == 302
    assert client.get("/sources").status_code == 200
    home = client.get("/").get_data(as_text=True)
    token = home.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/sources").status_code == 302
    actions = [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    assert "login.success" in actions and "logout" in actions


def test_repeated_failures_throttle_and_are_audited(client, session):
    """Five failures: the sixth attempt is refused (429, even with the right password) and the block is
    audited once; the answers never say whether the account exists (tests/auth/test_login_limits.py)."""
    make_user(session, "admin@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    for _ in range(5):
        assert _login(client, "admin@acme.example", "wrong password!").status_code == 401
    response = _login(client, "admin@acme.example", PASSWORD)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "locked" not in response.get_data(as_text=True)
    actions = [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    assert actions.count("login.failed") == 5 and actions.count("login.throttle") == 1
    assert "login.success" not in actions


def test_unknown_user_gets_the_same_message(client, session):
    response = _login(client, "nobody@acme.example", "whatever it is")
    assert response.status_code == 401 and "Wrong e-mail or password" in response.get_data(as_text=True)


def test_next_redirect_is_never_open(client, session):
    make_user(session, "admin@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    response = _login(client, "admin@acme.example", PASSWORD, next_url="https://evil.example/")
    assert response.headers["Location"] == "/"
    for bad in ["//evil.example", "https://evil.example", "/\\evil.example", "javascript:alert(1)", "\\\\evil"]:
        assert safe_next(bad) == "/"
    assert safe_next("/identities?q=x") == "/identities?q=x"


def test_idle_timeout_signs_out(app, client, session):
    from datetime import timedelta

    from attest.db import utcnow
    from tests.factories import login_as

    now = [utcnow()]
    app.config["ATTEST_CLOCK"] = lambda: now[0]
    user = make_user(session, "admin@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, user)
    assert client.get("/sources").status_code == 200
    now[0] += timedelta(minutes=31)
    response = client.get("/sources")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_behind_a_proxy_the_audit_trail_records_the_client_address(databases, tmp_path, factory, session):
    from attest.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(databases.url, tmp_path, proxy_count=1))
    app.extensions["attest"].engine.dispose()
    app.extensions["attest"].factory = factory
    client = app.test_client()
    make_user(session, "admin@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    page = client.get("/login")
    token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/login", data={"email": "admin@acme.example", "password": PASSWORD, "csrf_token": token},
                headers={"X-Forwarded-For": "203.0.113.7"})
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "login.success")).one()
    assert event.ip == "203.0.113.7"
