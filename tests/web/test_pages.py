"""Pages behind login: roles enforced on every route, CSRF on every form, security headers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.connectors.base import ResourceRecord
from attest.connectors.managed import ManagedKind, emit
from attest.entitlements.models import Account, Identity, Resource
from attest.entitlements.sync import run_sync
from tests.entitlements.test_sync import org
from tests.factories import ListConnector, login_as, make_source, make_user

ADMIN_PAGES = ["/sources", "/identities", "/resources", "/findings/orphaned", "/findings/terminated"]


@pytest.fixture
def synced(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(4)))
    return session


def test_anonymous_is_sent_to_login(client):
    for path in ["/"] + ADMIN_PAGES:
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_reviewer_cannot_open_admin_pages(app, client, synced):
    person = synced.scalar(select(Identity).where(Identity.external_id == "p1"))
    reviewer = make_user(synced, "person1@acme.example", identity=person)
    synced.commit()
    login_as(app, client, reviewer)
    assert client.get("/").status_code == 200
    for path in ADMIN_PAGES + [f"/identities/{person.id}", "/sources/1", "/resources/1"]:
        assert client.get(path).status_code == 403, path
    account = synced.scalar(select(Account).limit(1))
    # with a valid form the role decides: exactly 403 (a CSRF failure would be 400 for anyone)
    app.config["WTF_CSRF_ENABLED"] = False
    assert client.post("/accounts/link", data={"account_id": account.id}).status_code == 403


def test_admin_and_auditor_read_everything(app, client, synced):
    person = synced.scalar(select(Identity).where(Identity.external_id == "p1"))
    for roles in (["admin"], ["auditor"]):
        user = make_user(synced, f"{roles[0]}@acme.example", roles=roles)
        synced.commit()
        login_as(app, client, user)
        for path in ADMIN_PAGES + [f"/identities/{person.id}"]:
            response = client.get(path)
            assert response.status_code == 200, (roles, path)
        page = client.get(f"/identities/{person.id}").get_data(as_text=True)
        assert "via Everyone" in page and "Payroll" in page


def test_auditor_cannot_link_accounts(app, client, synced):
    auditor = make_user(synced, "auditor@acme.example", roles=["auditor"])
    synced.commit()
    login_as(app, client, auditor)
    app.config["WTF_CSRF_ENABLED"] = False
    account = synced.scalar(select(Account).limit(1))
    assert client.post("/accounts/link", data={"account_id": account.id}).status_code == 403


def test_forged_form_post_without_csrf_is_refused_and_changes_nothing(app, client, synced):
    admin = make_user(synced, "admin@acme.example", roles=["admin"])
    synced.commit()
    login_as(app, client, admin)
    account = synced.scalar(select(Account).where(Account.external_id == "u2"))
    before = account.identity_id
    response = client.post("/accounts/link", data={"account_id": account.id, "identity_email": ""})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    synced.expire_all()
    assert synced.get(Account, account.id).identity_id == before


def test_security_headers_and_cookie_flags(app, client, session):
    make_user(session, "admin@acme.example", roles=["admin"], password="correct horse battery")
    session.commit()
    response = client.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert app.config["SESSION_COOKIE_HTTPONLY"] and app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_admin_links_an_orphaned_account_by_hand(app, client, synced, factory, settings):
    admin = make_user(synced, "admin@acme.example", roles=["admin"])
    make_source(synced, "gh")
    synced.commit()
    from attest.connectors.base import AccountRecord

    run_sync(factory, settings, "gh", connector=ListConnector([AccountRecord("octo", login="octocat")]))
    login_as(app, client, admin)
    app.config["WTF_CSRF_ENABLED"] = False
    octo = synced.scalar(select(Account).where(Account.external_id == "octo"))
    response = client.post("/accounts/link", data={"account_id": octo.id, "identity_email": "person3@acme.example"})
    assert response.status_code == 302
    synced.expire_all()
    octo = synced.get(Account, octo.id)
    assert octo.identity.external_id == "p3" and octo.link_method == "manual"


def test_resources_say_which_are_mastered_elsewhere_through_the_one_contract(app, client, factory, session, settings):
    """The resources list badges, and the resource page explains, a group whose members something outside the
    source masters: read through connectors/managed.managed_elsewhere, so the contract a connector emits today
    and the keys rows synced before it carry give the same answer as on the review and remediation pages."""
    extra = [
        ResourceRecord("ad", "group", "ad-finance", is_group=True,
                       attributes=emit(ManagedKind.IMPORTED_GROUP, "Active Directory (ACME\\ad-finance)")),
        ResourceRecord("old", "group", "Engineers by rule", is_group=True,
                       attributes={"rule_managed": True, "rules": ["Engineers by department"]}),  # before the contract
    ]
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(2, extra=extra)))
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    page = client.get("/resources").get_data(as_text=True)
    rows = {name: row for row in page.split("<tr>")[1:] if (name := next(
        (n for n in ("ad-finance", "Engineers by rule", "Engineering", "Payroll") if f">{n}</a>" in row), None))}
    assert "managed-badge" in rows["ad-finance"] and ">imported</span>" in rows["ad-finance"]
    assert "Active Directory (ACME\\ad-finance)" in rows["ad-finance"]  # the title names where to change it
    assert ">rule-managed</span>" in rows["Engineers by rule"] and "Engineers by department" in rows["Engineers by rule"]
    assert "managed-badge" not in rows["Engineering"] and "managed-badge" not in rows["Payroll"]
    ad = session.scalar(select(Resource).where(Resource.external_id == "ad"))
    detail = client.get(f"/resources/{ad.id}").get_data(as_text=True)
    assert "managed-note" in detail and "is imported from Active Directory (ACME\\ad-finance)" in detail
    payroll = session.scalar(select(Resource).where(Resource.external_id == "app"))
    assert "managed-note" not in client.get(f"/resources/{payroll.id}").get_data(as_text=True)


def test_an_answer_writes_the_session_cookie_only_when_the_session_changed(app, client, synced):
    """A background request of the page (the definition form's live preview, htmx) must not send back the cookie
    it came with: answered after a form post that set a flash, it would overwrite that post's cookie and lose
    the flash ("Saved the definition ..." went missing in the browser journey)."""
    admin = make_user(synced, "admin@acme.example", roles=["admin"])
    synced.commit()
    login_as(app, client, admin)
    with client.session_transaction() as sess:
        sess.permanent = True  # as a real sign-in leaves it (auth/views.py)
    client.get("/resources")  # the first page stores the CSRF token: the session changed, the cookie is written
    again = client.get("/resources")
    assert again.status_code == 200
    assert not [c for c in again.headers.getlist("Set-Cookie") if c.startswith("attest_session=")]
