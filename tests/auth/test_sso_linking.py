"""Single sign-on never takes over an account it cannot prove is the person's (attest/auth/oidc.py).

Against oidc-provider-mock (tests/auth/mock_idp.py): an ID token links to an existing user, or creates
one, only with a verified e-mail (`email_verified: true`, or a domain in ATTEST_OIDC_VERIFIED_DOMAINS);
break-glass local accounts (a password, `attest users create-admin`) are never linked to nor signed in
through SSO, whatever the token says.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.auth.models import User
from attest.config import load_settings
from tests.auth.mock_idp import Flow
from tests.auth.test_oidc import _make_app, events, idp, sso_app, sso_settings  # noqa: F401 - fixtures
from tests.factories import make_identity, make_user

PASSWORD = "correct horse battery staple"
VICTIM = "victim@acme.example"


@pytest.fixture
def break_glass(session):
    user = make_user(session, VICTIM, roles=["admin"], password=PASSWORD)
    make_identity(session, VICTIM, "Victor Tim")
    session.commit()
    return user


def _is_signed_in(client) -> bool:
    return client.get("/").status_code == 200


@pytest.mark.parametrize("verified", [None, False, "false", True], ids=["no claim", "false", "'false'", "true"])
def test_sso_never_takes_over_a_break_glass_admin(sso_app, idp, session, break_glass, verified):  # noqa: F811
    claims = {"email": VICTIM, "name": "Not Victor"}
    if verified is not None:
        claims["email_verified"] = verified
    idp.set_user("attacker", **claims)
    flow = Flow(sso_app.test_client(), idp)
    response = flow.sign_in("attacker")
    assert response.status_code == 403
    assert not _is_signed_in(flow.client) and flow.client.get("/sources").status_code == 302
    session.expire_all()
    user = session.get(User, break_glass.id)
    assert user.oidc_subject is None and user.display_name == "victim" and user.roles == {"admin"}
    assert session.scalar(select(User).where(User.oidc_subject == "attacker")) is None
    failed = events(session, "login.failed")[-1]
    assert failed.after["method"] == "oidc" and "login.success" not in [e.action for e in events(session)]
    if verified is True:
        assert failed.after["reason"] == "break-glass account" and "break-glass" in response.get_data(as_text=True)


def test_a_break_glass_admin_bound_to_a_subject_is_not_signed_in_by_it(sso_app, idp, session, break_glass):  # noqa: F811
    """A user who is both (an SSO user later given a password by create-admin) signs in by password only."""
    break_glass.oidc_subject = "victor"
    session.commit()
    idp.set_user("victor", email=VICTIM, email_verified=True)
    flow = Flow(sso_app.test_client(), idp)
    assert flow.sign_in("victor").status_code == 403 and not _is_signed_in(flow.client)


def test_an_unverified_e_mail_neither_adopts_a_user_nor_links_a_person(sso_app, idp, session):  # noqa: F811
    person = make_identity(session, "ada@acme.example", "Ada Lovelace")
    existing = make_user(session, "ada@acme.example", roles=["auditor"])  # made by an admin, never signed in
    session.commit()
    idp.set_user("mallory", email="ada@acme.example", groups=["engineering"])  # no email_verified
    flow = Flow(sso_app.test_client(), idp)
    response = flow.sign_in("mallory")
    assert response.status_code == 403 and "is verified" in response.get_data(as_text=True)
    assert not _is_signed_in(flow.client)
    session.expire_all()
    assert session.get(User, existing.id).oidc_subject is None
    assert session.scalar(select(User).where(User.oidc_subject == "mallory")) is None
    assert events(session, "login.failed")[-1].after["reason"] == "email not verified"
    # the same person with a verified e-mail is adopted and linked
    idp.set_user("ada", email="ada@acme.example", email_verified=True)
    assert Flow(sso_app.test_client(), idp).sign_in("ada").status_code == 302
    session.expire_all()
    adopted = session.get(User, existing.id)
    assert adopted.oidc_subject == "ada" and adopted.identity_id == person.id


def test_an_unverified_e_mail_signs_in_only_its_own_subject_and_changes_nothing(sso_app, idp, session):  # noqa: F811
    make_identity(session, "grace@acme.example", "Grace Hopper")
    other = make_identity(session, "boss@acme.example", "The Boss")
    user = make_user(session, "grace@acme.example")
    user.oidc_subject = "grace"
    session.commit()
    idp.set_user("grace", email="boss@acme.example", email_verified=False)
    assert Flow(sso_app.test_client(), idp).sign_in("grace").status_code == 403  # false is refused outright
    idp.set_user("grace", email="boss@acme.example", groups=["attest-auditors"])  # unverified, other address
    flow = Flow(sso_app.test_client(), idp)
    assert flow.sign_in("grace").status_code == 302 and _is_signed_in(flow.client)
    session.expire_all()
    user = session.get(User, user.id)
    assert user.email == "grace@acme.example" and user.identity_id != other.id  # no e-mail change, no link


def test_a_configured_verified_domain_stands_in_for_the_claim(sso_settings, factory, idp, session):  # noqa: F811
    """Entra ID sends no email_verified: ATTEST_OIDC_VERIFIED_DOMAINS names the tenant's domains."""
    person = make_identity(session, "lin@contoso.example", "Lin")
    session.commit()
    app = _make_app(sso_settings.replace(oidc_verified_domains=("contoso.example",)), factory)
    idp.set_user("lin", email="Lin@Contoso.example")
    assert Flow(app.test_client(), idp).sign_in("lin").status_code == 302
    assert session.scalar(select(User).where(User.oidc_subject == "lin")).identity_id == person.id
    idp.set_user("eve", email="eve@elsewhere.example")
    assert Flow(app.test_client(), idp).sign_in("eve").status_code == 403


def test_verified_domains_setting():
    env = {"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": "sqlite://", "ATTEST_INSTANCE_PATH": "/tmp/attest-vd",
           "ATTEST_OIDC_VERIFIED_DOMAINS": "Contoso.example, @fabrikam.example"}
    assert load_settings(environ=env).oidc_verified_domains == ("contoso.example", "fabrikam.example")
