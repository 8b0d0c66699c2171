"""The API tokens page: create (the token shown once, only its hash stored), list, revoke (the API answers
401 at once), service tokens for admins only, CSRF on its forms."""

from __future__ import annotations

import re

from sqlalchemy import select

from attest.auth.models import ApiToken
from tests.factories import login_as


def _token_in(html: str) -> str:
    match = re.search(r"<code[^>]*data-token>(attest_[A-Za-z0-9_-]+)</code>", html)
    assert match, html
    return match.group(1)


def test_create_shows_the_token_once_and_it_works_until_revoked(nocsrf_app, client, session, api_world):
    user = api_world.a.manager_user
    login_as(nocsrf_app, client, user)
    r = client.post("/tokens", data={"name": "laptop", "scopes": ["reviews:read"], "days": "30"})
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    token = _token_in(r.get_data(as_text=True))
    row = session.scalar(select(ApiToken).where(ApiToken.name == "laptop"))
    assert row.token_hash == ApiToken.hash_token(token) and token not in str(vars(row))
    assert row.scopes == ["reviews:read"] and row.kind == "personal" and row.user_id == user.id
    listing = client.get("/tokens").get_data(as_text=True)
    assert "laptop" in listing and token not in listing and row.prefix in listing
    row.expires_at = row.created_at  # shown as expired (and refused by the API) once its time is up
    session.commit()
    assert "expired" in client.get("/tokens").get_data(as_text=True)
    row.expires_at = None
    session.commit()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/items/{api_world.a.items[0].id}", headers=auth).status_code == 200
    # revoke: the API refuses it at once
    assert client.post(f"/tokens/{row.id}/revoke").status_code == 303
    assert client.get(f"/api/v1/items/{api_world.a.items[0].id}", headers=auth).status_code == 401
    assert "revoked" in client.get("/tokens").get_data(as_text=True)


def test_refused_input_creates_nothing_and_others_tokens_cannot_be_revoked(nocsrf_app, client, session, api_world):
    login_as(nocsrf_app, client, api_world.a.manager_user)
    for data in ({"name": "", "scopes": ["reviews:read"]}, {"name": "x", "scopes": ["sources:write"]},
                 {"name": "x", "scopes": ["reviews:read"], "kind": "service"}, {"name": "x"}):
        assert client.post("/tokens", data=data).status_code in (400, 403), data
    assert session.scalar(select(ApiToken.id).where(ApiToken.user_id == api_world.a.manager_user.id)) is None
    login_as(nocsrf_app, client, api_world.admin)
    r = client.post("/tokens", data={"name": "ci", "kind": "service", "scopes": ["reviews:read", "sources:write"]})
    assert r.status_code == 201
    svc = session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
    assert svc.kind == "service" and svc.scopes == ["reviews:read", "sources:write"]
    login_as(nocsrf_app, client, api_world.a.manager_user)
    assert 'data-token-name="ci"' not in client.get("/tokens").get_data(as_text=True)
    assert client.post(f"/tokens/{svc.id}/revoke").status_code == 404
    session.refresh(svc)
    assert svc.revoked_at is None
    # another admin sees the service token (with its owner) and may stop it
    from tests.factories import make_user

    other_admin = make_user(session, "second.admin@acme.example", roles=("admin",))
    session.commit()
    login_as(nocsrf_app, client, other_admin)
    assert "ada.admin@acme.example" in client.get("/tokens").get_data(as_text=True)
    assert client.post(f"/tokens/{svc.id}/revoke").status_code == 303
    session.refresh(svc)
    assert svc.revoked_by == "second.admin@acme.example"


def test_token_forms_need_the_csrf_token(app, client, session, api_world):
    login_as(app, client, api_world.a.manager_user)
    assert client.post("/tokens", data={"name": "x", "scopes": ["reviews:read"]}).status_code == 400
    assert session.scalar(select(ApiToken.id)) is None
    page = client.get("/tokens").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/tokens", data={"name": "x", "scopes": ["reviews:read"], "csrf_token": csrf}).status_code == 201
