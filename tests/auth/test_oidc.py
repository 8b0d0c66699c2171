"""OIDC single sign-on against oidc-provider-mock running as a real server on loopback.

Attest's side runs in the Flask test client; its back-channel calls (discovery, token, JWKS) go over
HTTP to the mock. Tampering is done the way an attacker or a broken IdP would: a changed `state` in
the callback, a token minted for another nonce, ID tokens re-signed with changed claims or a key the
IdP does not publish (see tests/auth/mock_idp.py).
"""

from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import urlsplit

import oidc_provider_mock
import pytest
from sqlalchemy import select

from attest.auth.models import User
from attest.auth.oidc import SsoError, map_roles, profile_from_claims
from attest.config import SettingsError, load_settings
from attest.connectors.sandbox.server import serve_in_thread
from attest.trail.models import AuditEvent
from tests.auth.mock_idp import Flow, TokenForger, serve_keep_alive
from tests.factories import login_as, make_identity, make_user

ADA = "ada@acme.example"


@pytest.fixture
def idp():
    forger = TokenForger(oidc_provider_mock.app(require_nonce=True))
    with serve_in_thread(forger) as server:
        forger.url = server.url
        yield forger


@pytest.fixture
def sso_settings(settings, idp):
    return settings.replace(
        oidc_discovery_url=idp.discovery_url, oidc_client_id="attest-test", oidc_client_secret="client-secret-1",
        oidc_provider_name="Mock IdP", oidc_admin_groups=("attest-admins",),
        oidc_auditor_groups=("attest-auditors", "Compliance"),
    )


def _make_app(sso_settings, factory):
    from attest.app import create_app

    application = create_app(sso_settings)
    state = application.extensions["attest"]
    state.engine.dispose()
    state.factory = factory
    return application


@pytest.fixture
def sso_app(sso_settings, factory):
    return _make_app(sso_settings, factory)


@pytest.fixture
def flow(sso_app, idp):
    return Flow(sso_app.test_client(), idp)


def new_flow(sso_app, idp) -> Flow:
    """Another browser (no cookies)."""
    return Flow(sso_app.test_client(), idp)


def events(session, action=None):
    session.expire_all()
    stmt = select(AuditEvent).order_by(AuditEvent.seq)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return list(session.scalars(stmt))


def signed_in(client) -> bool:
    response = client.get("/")
    return response.status_code == 200


@pytest.fixture
def ada(session):
    person = make_identity(session, ADA, "Ada Lovelace", employee_id="E100")
    session.commit()
    return person


# --- the happy path --------------------------------------------------------------------------------


def test_sign_in_links_identity_maps_roles_and_uses_pkce(flow, idp, session, ada):
    idp.set_user("okta|ada", email=ADA, email_verified=True, name="Ada Lovelace",
                 groups=["engineering", "attest-auditors"])
    flow.start()
    query = flow.query()
    assert query["response_type"] == "code" and query["client_id"] == "attest-test"
    assert query["scope"].split() == ["openid", "email", "profile"]
    assert query["redirect_uri"] == "http://127.0.0.1:5000/login/oidc/callback"
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"]
    flow.authorize("okta|ada")
    response = flow.callback()
    assert response.status_code == 302 and response.headers["Location"] == "/"

    # PKCE: the verifier sent to the token endpoint hashes to the challenge sent to the browser
    (token_request,) = idp.token_requests
    verifier = token_request["code_verifier"][0]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == query["code_challenge"]

    home = flow.client.get("/")
    assert home.status_code == 200 and "Ada Lovelace" in home.get_data(as_text=True)
    user = session.scalar(select(User).where(User.email == ADA))
    assert user.oidc_subject == "okta|ada" and user.identity_id == ada.id
    assert user.idp_roles == ["auditor"] and user.local_roles == [] and user.last_login_at is not None
    assert flow.client.get("/identities").status_code == 200  # auditors read everything
    with flow.client.session_transaction() as sess:
        assert sess["login_method"] == "oidc" and not any(k.startswith("_state_") for k in sess)
    actions = [e.action for e in events(session)]
    assert actions == ["user.create", "user.roles", "user.link", "login.success"]
    success = events(session, "login.success")[0]
    assert success.actor == ADA and success.after["method"] == "oidc" and success.after["identity_id"] == ada.id


def test_a_manager_without_roles_signs_in_and_reviews_only_their_own(flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True, groups=["engineering"])
    response = flow.sign_in("ada")
    assert response.status_code == 302
    user = session.scalar(select(User).where(User.email == ADA))
    assert user.idp_roles == [] and user.identity_id == ada.id
    assert flow.client.get("/").status_code == 200
    assert flow.client.get("/identities").status_code == 403


def test_session_is_reissued_at_sign_in(flow, idp, ada):
    with flow.client.session_transaction() as sess:
        sess["planted"] = "by an attacker before sign-in"
    idp.set_user("ada", email=ADA, email_verified=True)
    assert flow.sign_in("ada").status_code == 302
    with flow.client.session_transaction() as sess:
        assert "planted" not in sess and sess["_user_id"]


def test_role_change_at_the_idp_takes_effect_at_next_sign_in(sso_app, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True, groups=["attest-admins"])
    first = new_flow(sso_app, idp)
    assert first.sign_in("ada").status_code == 302
    assert first.client.get("/sources").status_code == 200
    user = session.scalar(select(User).where(User.email == ADA))
    assert user.idp_roles == ["admin"]

    idp.set_user("ada", email=ADA, email_verified=True, groups=["compliance"])  # moved at the IdP
    second = new_flow(sso_app, idp)
    assert second.sign_in("ada").status_code == 302
    session.expire_all()
    user = session.get(User, user.id)
    assert user.idp_roles == ["auditor"]
    assert second.client.get("/sources").status_code == 200  # auditor reads
    changes = events(session, "user.roles")
    assert [(e.before, e.after["idp_roles"]) for e in changes] == [
        ({"idp_roles": []}, ["admin"]), ({"idp_roles": ["admin"]}, ["auditor"])]
    assert changes[-1].actor == "idp:Mock IdP" and changes[-1].after["groups"] == ["compliance"]

    idp.set_user("ada", email=ADA, email_verified=True, groups=[])
    third = new_flow(sso_app, idp)
    assert third.sign_in("ada").status_code == 302
    assert third.client.get("/sources").status_code == 403
    assert len(events(session, "user.roles")) == 3


def test_unchanged_roles_are_not_audited_again(sso_app, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True, groups="attest-admins other")  # a space-separated string works too
    for _ in range(2):
        assert new_flow(sso_app, idp).sign_in("ada").status_code == 302
    assert len(events(session, "user.roles")) == 1
    assert len(events(session, "login.success")) == 2


# --- refusals --------------------------------------------------------------------------------------


def _assert_refused(response, session, status, text, reason, successes=0):
    body = response.get_data(as_text=True)
    assert response.status_code == status, body[:800]
    assert text in body, body[:1500]
    failures = events(session, "login.failed")
    assert failures and failures[-1].after["method"] == "oidc" and reason in failures[-1].after["reason"]
    assert len(events(session, "login.success")) == successes


def test_tampered_state_is_refused(flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True)
    flow.start()
    callback = flow.authorize("ada")
    tampered = callback.replace("state=", "state=x")
    response = flow.callback(tampered)
    _assert_refused(response, session, 400, "state check failed", "state mismatch")
    assert not signed_in(flow.client)
    assert idp.token_requests == []  # the code was never exchanged


def test_callback_cannot_be_replayed_or_used_in_another_browser(sso_app, flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True)
    flow.start()
    callback = flow.authorize("ada")
    # an attacker sends the victim a callback from the attacker's own sign-in (login CSRF): refused
    other = new_flow(sso_app, idp)
    _assert_refused(other.callback(callback), session, 400, "not started in this browser", "state mismatch")
    assert flow.callback().status_code == 302  # the browser that started it signs in
    replay = new_flow(sso_app, idp)
    assert replay.callback(callback).status_code == 400


def test_wrong_nonce_is_refused(flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True)
    idp.rewrite_authorize = {"nonce": "a-nonce-from-another-sign-in"}  # the IdP mints a token for it
    response = flow.sign_in("ada")
    _assert_refused(response, session, 401, "nonce check failed", "id token claim invalid: nonce")
    assert not signed_in(flow.client)


@pytest.mark.parametrize(("forge", "text", "reason"), [
    (lambda c: {**c, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
     "the ID token has expired", "id token expired"),
    (lambda c: {**c, "aud": "another-app"}, "audience check failed", "claim invalid: aud"),
    (lambda c: {**c, "iss": "https://evil.example"}, "issuer check failed", "claim invalid: iss"),
    (lambda c: {k: v for k, v in c.items() if k != "exp"}, "has no exp claim", "claim missing: exp"),
], ids=["expired", "wrong-audience", "wrong-issuer", "no-expiry"])
def test_id_token_claims_are_validated(flow, idp, session, ada, forge, text, reason):
    idp.set_user("ada", email=ADA, email_verified=True)
    idp.forge = forge
    response = flow.sign_in("ada")
    _assert_refused(response, session, 401, text, reason)
    assert not signed_in(flow.client)


def test_correctly_resigned_token_passes(flow, idp, session, ada):
    """Control for the test above: the forger's own published key and untouched claims are accepted."""
    idp.set_user("ada", email=ADA, email_verified=True)
    idp.forge = lambda claims: claims
    assert flow.sign_in("ada").status_code == 302
    assert signed_in(flow.client)


def test_signing_key_rotation_at_the_idp_needs_nothing(sso_app, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True)
    assert new_flow(sso_app, idp).sign_in("ada").status_code == 302  # the mock's key, now cached
    idp.forge = lambda claims: claims  # the IdP rotates to a new key (a new key id in its JWKS)
    assert new_flow(sso_app, idp).sign_in("ada").status_code == 302
    assert len(events(session, "login.success")) == 2


def test_wrongly_signed_id_token_is_refused(flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=True)
    idp.rogue = True  # signed with a key the IdP does not publish, under a published key id
    response = flow.sign_in("ada")
    _assert_refused(response, session, 401, "signature does not match", "signature invalid")
    assert not signed_in(flow.client)


def test_person_without_identity_gets_a_clear_page_and_no_session(sso_app, flow, idp, session, ada):
    idp.set_user("newbie", email="new.hire@acme.example", email_verified=True, groups=["engineering"])
    response = flow.sign_in("newbie")
    _assert_refused(response, session, 403, "has no person with this e-mail", "no matching identity")
    body = response.get_data(as_text=True)
    assert "You are not signed in to Attest" in body and "new.hire@acme.example" in body
    assert not signed_in(flow.client)
    # the attempt is visible to admins, who can link the person; then the next sign-in works
    user = session.scalar(select(User).where(User.email == "new.hire@acme.example"))
    assert user is not None and user.identity_id is None and user.last_login_at is None
    person = make_identity(session, "nh@acme.example", "New Hire")
    admin = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    admin_client = sso_app.test_client()
    login_as(sso_app, admin_client, admin)
    page = admin_client.get("/admin/users")
    assert "new.hire@acme.example" in page.get_data(as_text=True) and "not linked" in page.get_data(as_text=True)
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    linked = admin_client.post(f"/admin/users/{user.id}/identity", data={"person": "nh@acme.example", "csrf_token": token})
    assert linked.status_code == 302
    again = new_flow(sso_app, idp)
    assert again.sign_in("newbie").status_code == 302 and signed_in(again.client)
    session.expire_all()
    assert session.get(User, user.id).identity_id == person.id
    assert events(session, "user.link")[-1].actor == "root@acme.example"


def test_admin_or_auditor_without_identity_may_sign_in(flow, idp, session):
    idp.set_user("ext-auditor", email="auditor@audit-firm.example", email_verified=True, groups=["Compliance"])
    assert flow.sign_in("ext-auditor").status_code == 302
    assert flow.client.get("/identities").status_code == 200


def test_unverified_email_is_refused(flow, idp, session, ada):
    idp.set_user("ada", email=ADA, email_verified=False)
    response = flow.sign_in("ada")
    _assert_refused(response, session, 403, "is not verified", "email not verified")
    assert not signed_in(flow.client)
    assert session.scalar(select(User).where(User.email == ADA)) is None


def test_terminated_person_is_refused(flow, idp, session):
    make_identity(session, "gone@acme.example", "Gone", status="terminated")
    session.commit()
    idp.set_user("gone", email="gone@acme.example", email_verified=True, groups=["attest-admins"])
    _assert_refused(flow.sign_in("gone"), session, 403, "employment as ended", "identity terminated")
    assert not signed_in(flow.client)


def test_deactivated_user_is_refused(flow, idp, session, ada):
    user = make_user(session, ADA, identity=ada)
    user.active = False
    session.commit()
    idp.set_user("ada", email=ADA, email_verified=True)
    _assert_refused(flow.sign_in("ada"), session, 403, "deactivated", "deactivated")


def test_reused_email_with_a_new_subject_is_not_merged(sso_app, flow, idp, session, ada):
    idp.set_user("ada-old", email=ADA, email_verified=True)
    assert flow.sign_in("ada-old").status_code == 302
    idp.set_user("ada-new", email=ADA, email_verified=True)  # the IdP re-issued the address
    other = new_flow(sso_app, idp)
    _assert_refused(other.sign_in("ada-new"), session, 403, "belongs to another", "another subject",
                    successes=1)


def test_idp_denial_is_shown_and_audited(flow, idp, session):
    flow.start()
    flow.authorize("ada", deny=True)
    response = flow.callback()
    _assert_refused(response, session, 401, "did not sign you in (access_denied", "idp error: access_denied")


# --- redirects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["https://evil.example/phish", "//evil.example", "/\\evil.example",
                                  "javascript:alert(1)", "http:evil.example"])
def test_open_redirect_through_next_is_refused_across_the_round_trip(flow, idp, ada, evil):
    idp.set_user("ada", email=ADA, email_verified=True, groups=["attest-admins"])
    flow.start(next_url=evil)
    assert "evil" not in flow.authorize_url
    flow.authorize("ada")
    response = flow.callback()
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_next_survives_the_round_trip(flow, idp, ada):
    idp.set_user("ada", email=ADA, email_verified=True, groups=["attest-admins"])
    response = flow.sign_in("ada", next_url="/identities?q=lovelace")
    assert response.headers["Location"] == "/identities?q=lovelace"
    assert urlsplit(response.headers["Location"]).netloc == ""


# --- configuration ------------------------------------------------------------------------------------


def test_login_page_offers_sso_and_local_passwords_can_be_turned_off(sso_settings, factory, session):
    make_user(session, "root@acme.example", roles=["admin"], password="correct horse battery staple")
    session.commit()
    app = _make_app(sso_settings.replace(local_login=False), factory)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "Sign in with Mock IdP" in page and 'name="password"' not in page
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    response = client.post("/login", data={"email": "root@acme.example", "password": "correct horse battery staple",
                                           "csrf_token": token})
    assert response.status_code == 401 and "turned off" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_link_by_a_configured_claim(sso_settings, factory, idp, session):
    person = make_identity(session, "grace@acme.example", "Grace Hopper", employee_id="E-42")
    session.commit()
    app = _make_app(sso_settings.replace(oidc_link_claim="employee_number", oidc_link_attribute="employee_id"),
                    factory)
    idp.set_user("grace", email="ghopper@personal.example", email_verified=True, employee_number="E-42")
    assert Flow(app.test_client(), idp).sign_in("grace").status_code == 302
    assert session.scalar(select(User).where(User.oidc_subject == "grace")).identity_id == person.id


def test_unreachable_idp_gives_a_clear_page(settings, factory):
    app = _make_app(settings.replace(oidc_discovery_url="http://127.0.0.1:9/.well-known/openid-configuration",
                                     oidc_client_id="x"), factory)
    response = app.test_client().get("/login/oidc")
    assert response.status_code == 502 and "could not reach" in response.get_data(as_text=True)


def test_sso_routes_are_absent_without_configuration(client):
    assert client.get("/login/oidc").status_code == 404
    assert "Sign in with" not in client.get("/login").get_data(as_text=True)


def _env(**extra):
    return {"ATTEST_ENV": "development", "ATTEST_SECRET_KEY": "k" * 40, "ATTEST_DATABASE_URL": "sqlite://",
            "ATTEST_ENCRYPTION_KEYS": "", "ATTEST_INSTANCE_PATH": "/tmp/attest-settings-test",
            "ATTEST_OIDC_CLIENT_ID": "attest", **extra}


@pytest.mark.parametrize(("extra", "message"), [
    ({"ATTEST_OIDC_DISCOVERY_URL": "http://idp.example/.well-known/openid-configuration"}, "must use https"),
    ({"ATTEST_OIDC_DISCOVERY_URL": "ftp://idp.example/x"}, "must be an https URL"),
    ({"ATTEST_OIDC_DISCOVERY_URL": "https://idp.example/x", "ATTEST_OIDC_SCOPES": "email profile"}, "must include openid"),
    ({"ATTEST_OIDC_DISCOVERY_URL": "https://idp.example/x", "ATTEST_OIDC_LINK_ATTRIBUTE": "phone"},
     "ATTEST_OIDC_LINK_ATTRIBUTE must be one of"),
])
def test_bad_oidc_settings_are_refused(extra, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=_env(**extra))


def test_loopback_http_idp_is_allowed_outside_production_only():
    url = "http://127.0.0.1:5104/.well-known/openid-configuration"
    assert load_settings(environ=_env(ATTEST_OIDC_DISCOVERY_URL=url)).oidc_enabled
    prod = _env(ATTEST_OIDC_DISCOVERY_URL=url, ATTEST_ENV="production",
                ATTEST_ENCRYPTION_KEYS="x8Yc7oYzVvGJ0vS1sJ0C1aZ7m2r2vJQ0dD3o5bq6H2Y=")
    with pytest.raises(SettingsError, match="https in production"):
        load_settings(environ=prod)


# --- claims -> profile (pure) -------------------------------------------------------------------------


def test_roles_claim_forms_and_mapping(settings):
    cfg = settings.replace(oidc_admin_groups=("IAM-Admins",), oidc_auditor_groups=("grc",),
                           oidc_roles_claim="realm_access.roles")
    claims = {"sub": "1", "email": "X@Acme.Example", "realm_access": {"roles": ["iam-admins", "GRC"]}}
    profile = profile_from_claims(cfg, claims)
    assert profile.email == "x@acme.example" and profile.roles == ("admin", "auditor")
    assert map_roles(cfg, ()) == ()
    # Entra ID without the optional email claim: the UPN is used
    entra = profile_from_claims(settings, {"sub": "2", "preferred_username": "Lin@Contoso.example", "name": "Lin"})
    assert entra.email == "lin@contoso.example" and entra.name == "Lin"
    with pytest.raises(SsoError, match="no e-mail address"):
        profile_from_claims(settings, {"sub": "3"})
    with pytest.raises(SsoError, match="not verified"):
        profile_from_claims(settings, {"sub": "4", "email": "a@b.example", "email_verified": "false"})


def test_a_sign_in_holds_the_audit_chain_only_for_its_events(sso_settings, connection, session, ada):
    """Every audited write waits for the chain's head (a row lock): a sign-in takes it last, after its own
    user row is written, and writes its events in one statement, so 50 reviewers signing in at once queue on
    it as briefly as possible. The events are the same, in the same order, and the chain verifies."""
    from sqlalchemy import event

    from attest.audit.log import verify_chain
    from attest.auth.oidc import SsoProfile, complete_sign_in
    from attest.trail.chain import record

    record(session, actor="admin@acme.example", action="source.create")  # the chain has a head already
    session.commit()
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()).lower())

    profile = SsoProfile(subject="okta|ada", email=ADA, name="Ada Lovelace", link_value=ADA,
                         groups=("attest-auditors",), roles=("auditor",), email_verified=True)
    event.listen(connection, "before_cursor_execute", seen)
    try:
        outcome = complete_sign_in(session, sso_settings, profile)
    finally:
        event.remove(connection, "before_cursor_execute", seen)
    session.commit()
    assert outcome.refused is None and outcome.user.identity_id == ada.id
    lock = next(i for i, sql in enumerate(statements) if sql.startswith("update audit_head"))
    held = [sql.split(" (")[0].split(" set ")[0] for sql in statements[lock + 1:] if not sql.startswith("savepoint")]
    assert held == ["insert into audit_event", "update audit_head"]  # nothing else while the head is held
    assert any(sql.startswith("insert into app_user") for sql in statements[:lock])
    assert [e.action for e in events(session)][1:] == ["user.create", "user.roles", "user.link", "login.success"]
    assert verify_chain(session) is None


def test_sign_ins_reuse_one_connection_to_the_idp(settings, factory, session, ada):
    """Each back-channel call (discovery, token, JWKS, userinfo) used to open and close its own connection:
    over https a TCP and TLS handshake, twice per sign-in. Against an IdP that keeps connections alive, as
    real ones do, sign-ins one after another now share one connection; one the IdP closed is replaced, not
    failed on; and every check still runs (the last sign-in is refused: its state was changed)."""
    connections: list[tuple[str, int]] = []
    forger = TokenForger(oidc_provider_mock.app(require_nonce=True))

    def recording(environ, start_response):
        if not environ["PATH_INFO"].startswith(("/oauth2/authorize", "/users/")):  # not the browser's
            connections.append((environ["PATH_INFO"], environ["REMOTE_PORT"]))
        return forger(environ, start_response)

    with serve_keep_alive(recording) as server:
        forger.url = server.url
        app = _make_app(settings.replace(oidc_discovery_url=forger.discovery_url, oidc_client_id="attest-test",
                                         oidc_client_secret="client-secret-1"), factory)
        forger.set_user("ada", email=ADA, email_verified=True, name="Ada Lovelace")  # no groups: userinfo asked
        for _ in range(2):
            assert Flow(app.test_client(), forger).sign_in("ada").status_code == 302
        first = {port for _, port in connections}
        server.drop_connections()  # the IdP's idle time-out
        assert Flow(app.test_client(), forger).sign_in("ada").status_code == 302
        tampered = Flow(app.test_client(), forger)
        tampered.start()
        tampered.authorize("ada")
        refused = tampered.callback(tampered.callback_url.replace("state=", "state=x"))
        assert refused.status_code == 400
    assert [path for path, _ in connections] == ["/.well-known/openid-configuration", "/oauth2/token", "/jwks",
                                                 "/userinfo"] + ["/oauth2/token", "/userinfo"] * 2
    assert len(first) == 1 and len({port for _, port in connections} - first) == 1
    assert [e.action for e in events(session)].count("login.success") == 3
