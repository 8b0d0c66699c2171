"""Server-side sessions (attest/auth/sessions.py): sign-out ends every copy of the cookie, the idle and
absolute time-outs are the server's, and one sign-out leaves the user's other browsers signed in.

The clock is injected through `app.config["ATTEST_CLOCK"]`: no sleeps.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from attest.auth.models import UserSession
from tests.factories import Clock, login_as, make_user

PASSWORD = "correct horse battery staple"
COOKIE = "attest_session"


@pytest.fixture
def clock(app) -> Clock:
    c = Clock()
    app.config["ATTEST_CLOCK"] = c
    return c


def _csrf(page: str, attr: str = 'name="csrf_token" type="hidden" value="') -> str:
    return page.split(attr)[1].split('"')[0]


def _sign_in(client, email="admin@acme.example", password=PASSWORD):
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]


def _sign_out(client):
    token = _csrf(client.get("/").get_data(as_text=True), 'name="csrf_token" value="')
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


def _copy_cookie(app, source):
    """Another browser holding a copy of `source`'s session cookie (same user agent and address, as a
    careful attacker would send)."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, source.get_cookie(COOKIE).value)
    return thief


@pytest.fixture
def admin(session):
    user = make_user(session, "admin@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    return user


def test_a_cookie_copied_before_sign_out_is_refused_after_it(app, client, session, admin, clock):
    _sign_in(client)
    thief = _copy_cookie(app, client)
    assert thief.get("/sources").status_code == 200  # the copy works while the session lives
    _sign_out(client)
    response = thief.get("/sources")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    row = session.scalar(select(UserSession))
    assert row.ended_reason == "signed out" and row.ended_at == clock.now


def test_htmx_with_an_ended_session_gets_a_401_that_redirects_the_page(app, session, admin, clock):
    victim = app.test_client()
    _sign_in(victim)
    kept = victim.get_cookie(COOKIE).value
    _sign_out(victim)
    thief = app.test_client()
    thief.set_cookie(COOKIE, kept)
    answer = thief.get("/sources", headers={"HX-Request": "true"})
    assert answer.status_code == 401 and answer.headers["HX-Redirect"] == "/login"
    assert "Sources" not in answer.get_data(as_text=True)


def test_other_sessions_of_the_user_survive_one_sign_out(app, session, admin, clock):
    laptop, phone = app.test_client(), app.test_client()
    _sign_in(laptop)
    _sign_in(phone)
    laptop_copy = _copy_cookie(app, laptop)
    _sign_out(laptop)
    assert phone.get("/sources").status_code == 200
    assert laptop_copy.get("/sources").status_code == 302
    live = session.scalars(select(UserSession).where(UserSession.ended_at.is_(None))).all()
    assert len(live) == 1 and live[0].user_id == admin.id


def test_idle_time_out_is_enforced_by_the_server(app, client, session, admin, clock):
    _sign_in(client)
    copy = _copy_cookie(app, client)
    for _ in range(3):  # activity keeps the session alive: 3 x 25 minutes > the 30 minute idle limit
        clock.advance(minutes=25)
        assert client.get("/sources").status_code == 200
    clock.advance(minutes=31)
    response = client.get("/sources")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert copy.get("/sources").status_code == 302  # the server ended it: no copy of the cookie helps
    row = session.scalar(select(UserSession))
    assert row.ended_reason == "idle"
    assert "timed out" in client.get("/login").get_data(as_text=True)


def test_absolute_time_out_ends_even_an_active_session(app, client, session, admin, clock):
    _sign_in(client)
    statuses = []
    for _ in range(12 * 3 + 2):  # a request every 20 minutes: never idle
        clock.advance(minutes=20)
        statuses.append(client.get("/sources").status_code)
    # allowed up to 12 hours after sign-in (ATTEST_SESSION_MAX_HOURS), refused from then on
    assert statuses == [200] * 36 + [302, 302]
    assert session.scalar(select(UserSession)).ended_reason == "expired"


def test_last_seen_is_written_at_most_once_a_minute(app, client, session, admin, clock):
    _sign_in(client)
    row = session.scalar(select(UserSession))
    assert row.created_at == clock.now and row.ip == "127.0.0.1" and row.method == "password"
    clock.advance(seconds=30)
    client.get("/sources")
    session.expire_all()
    assert session.scalar(select(UserSession)).last_seen_at == row.created_at
    clock.advance(seconds=45)
    client.get("/sources")
    session.expire_all()
    assert session.scalar(select(UserSession)).last_seen_at == clock.now


def test_a_session_without_a_server_record_is_refused(app, client, session, admin, clock):
    """A cookie signed with the right key but naming no live record (a forged token, or a session
    signed in before the upgrade) is anonymous."""
    login_as(app, client, admin)
    assert client.get("/sources").status_code == 200
    with client.session_transaction() as sess:
        sess["sid"] = "not-a-session"
    assert client.get("/sources").status_code == 302
    login_as(app, client, admin)
    with client.session_transaction() as sess:
        del sess["sid"]
    assert client.get("/sources").status_code == 302


def test_a_signed_in_request_reads_the_user_and_their_session_in_one_statement(app, client, session, admin, clock):
    """Issue 19: every request reads them first. Another user's session token is still refused: the record is
    found by its token alone and belongs to someone else."""
    login_as(app, client, admin)
    statements: list[str] = []
    engine = session.get_bind().engine
    listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get("/sources").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    reads = [s for s in statements if "FROM app_user" in s or "FROM user_session" in s]
    assert len(reads) == 1 and "user_session" in reads[0] and "app_user" in reads[0]
    other = make_user(session, "other@acme.example", roles=["admin"], password=PASSWORD)
    session.commit()
    theirs = app.test_client()
    login_as(app, theirs, other)
    with theirs.session_transaction() as sess:
        their_token = sess["sid"]
    with client.session_transaction() as sess:
        sess["sid"] = their_token  # a signed cookie of the admin naming the other user's session
    assert client.get("/sources").status_code == 302
    assert theirs.get("/sources").status_code == 200
