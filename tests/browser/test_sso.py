"""The whole SSO round trip in Chromium: Attest's sign-in page, the mock IdP's page, back signed in.

The IdP is the demo's (`attest.connectors.sandbox.idp`, oidc-provider-mock) served on a loopback port;
Attest is a live server on a fresh database.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from attest.auth.models import User
from attest.connectors.sandbox import idp as demo_idp
from attest.connectors.sandbox.server import serve_in_thread
from attest.trail.models import AuditEvent
from tests.factories import make_identity, make_user

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"


@pytest.fixture
def idp():
    with serve_in_thread(demo_idp.create_app(demo=True)) as server:
        yield server


@pytest.fixture
def live_server_overrides(idp):
    return {
        "oidc_discovery_url": f"{idp.url}/.well-known/openid-configuration",
        "oidc_client_id": demo_idp.CLIENT_ID,
        "oidc_client_secret": "demo-secret",
        "oidc_provider_name": demo_idp.PROVIDER_NAME,
        "oidc_admin_groups": (demo_idp.ADMIN_GROUP,),
        "oidc_auditor_groups": (demo_idp.AUDITOR_GROUP,),
    }


def _sso_to_idp(page, live_server, idp, path="/login"):
    page.goto(live_server.url_for(path))
    with page.expect_navigation():
        page.get_by_role("link", name="Sign in with Demo IdP").click()
    assert page.url.startswith(f"{idp.url}/oauth2/authorize?"), page.url
    assert "code_challenge_method=S256" in page.url
    assert page.get_by_role("heading", name="Demo IdP: sign in").is_visible()


def test_sso_round_trip_signs_a_manager_in(page, live_server, idp):
    with live_server.session() as s:
        make_identity(s, "grace.hopper@acme.example", "Grace Hopper")
    _sso_to_idp(page, live_server, idp)
    page.fill("#sub", "Grace.Hopper@acme.example")
    # a reviewer lands on their own reviews (the inbox), or the home page when there is no inbox
    with page.expect_navigation(url=re.compile(re.escape(live_server.url) + r"/(reviews)?$")):
        page.get_by_role("button", name="Sign in", exact=True).click()
    assert page.locator(".navbar").get_by_text("Grace Hopper").is_visible()
    assert "not linked to a person" not in page.content()
    with live_server.session() as s:
        user = s.scalar(select(User).where(User.email == "grace.hopper@acme.example"))
        assert user.identity_id is not None and user.oidc_subject == "Grace.Hopper@acme.example"
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "login.success")).after["method"] == "oidc"
    # a reviewer does not see the admin pages, and sign-out ends the session
    assert page.goto(live_server.url_for("/identities")).status == 403
    page.goto(live_server.url_for("/"))
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert "/login" in page.url
    assert page.goto(live_server.url_for("/")).url.startswith(live_server.url_for("/login"))


def test_sso_admin_from_groups_lands_on_next(page, live_server, idp):
    _sso_to_idp(page, live_server, idp, path="/login?next=/admin/users")
    with page.expect_navigation(url=re.compile(r"/admin/users$")):
        page.get_by_role("button", name="Demo Admin (admin@demo.example)").click()
    row = page.locator("tr[data-user='admin@demo.example']")
    assert row.is_visible() and "admin" in row.inner_text()
    assert page.locator(".navbar").get_by_text("admin", exact=True).is_visible()


def test_sso_person_without_identity_sees_why(page, live_server, idp):
    _sso_to_idp(page, live_server, idp)
    page.fill("#sub", "stranger@elsewhere.example")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in", exact=True).click()
    assert page.get_by_role("heading", name="You are not signed in to Attest").is_visible()
    assert "stranger@elsewhere.example" in page.inner_text("#no-identity")
    assert page.goto(live_server.url_for("/")).url.startswith(live_server.url_for("/login"))


def test_admin_grants_a_role_on_the_users_page(page, live_server):
    """The harness's local sign-in, and the Users page's role form in a real browser."""
    with live_server.session() as s:
        make_user(s, "root@acme.example", roles=["admin"], password=PASSWORD)
        make_user(s, "lin@acme.example")
    live_server.sign_in(page, "root@acme.example", PASSWORD, next_path="/admin/users")
    row = page.locator("tr[data-user='lin@acme.example']")
    row.get_by_label("auditor").check()
    with page.expect_navigation():
        row.get_by_role("button", name="Save").click()
    assert "Roles granted in Attest to lin@acme.example: auditor" in page.inner_text("main")
    with live_server.session() as s:
        assert s.scalar(select(User).where(User.email == "lin@acme.example")).local_roles == ["auditor"]
        change = s.scalar(select(AuditEvent).where(AuditEvent.action == "user.roles"))
        assert change.actor == "root@acme.example" and change.after == {"local_roles": ["auditor"]}
