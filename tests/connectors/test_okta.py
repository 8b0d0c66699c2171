"""The Okta connector over real HTTP against the fake Okta service, asserting on the database."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import func, select

from attest.connectors.base import ConnectorError, GrantRef, RevokeRefused
from attest.connectors.okta import OktaConnector
from attest.connectors.okta.client import READ_SCOPES, rate_family
from attest.connectors.sandbox.okta_fake import Stamp, create_app
from attest.connectors.sandbox.server import serve_in_thread
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource
from attest.entitlements.queries import effective_access
from attest.entitlements.sync import run_sync
from tests.factories import UpstreamTime, make_source

logging.getLogger("werkzeug").setLevel(logging.ERROR)


def no_sleep(_seconds: float) -> None:
    pass


@pytest.fixture
def okta():
    app = create_app(demo=True)
    with serve_in_thread(app) as server:
        app.url = server.url
        yield app


def connector(okta, sleep=no_sleep, clock=time.time, **settings) -> OktaConnector:
    return OktaConnector({"domain": okta.url, **settings}, {"token": "sandbox-token"}, sleep=sleep, clock=clock)


def sync(factory, settings, session, okta, conn=None, **kw):
    return run_sync(factory, settings, "okta", connector=conn or connector(okta, **kw), force=True)


@pytest.fixture
def source(session):
    src = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    return src


def active(session, model, **where):
    stmt = select(func.count()).select_from(model).where(model.ended_at.is_(None))
    for k, v in where.items():
        stmt = stmt.where(getattr(model, k) == v)
    return session.scalar(stmt)


def expected(okta, include_inactive=False):
    apps = [a for a in okta.app_ids if include_inactive or okta.apps[a]["status"] == "ACTIVE"]
    memberships = sum(len(m) for m in okta.members.values())
    direct = sum(len(okta.app_users[a]) for a in apps)
    app_groups = sum(len(okta.app_groups[a]) for a in apps)
    return {"users": len(okta.users), "groups": len(okta.groups), "apps": len(apps), "memberships": memberships,
            "direct": direct, "app_groups": app_groups, "roles": len(okta.roles)}


def test_full_sync_people_managers_groups_apps_roles(factory, session, settings, source, okta):
    result = sync(factory, settings, session, okta)
    assert result.status == "succeeded", result.error
    exp = expected(okta)
    assert active(session, Identity) == exp["users"]
    assert active(session, Account) == exp["users"]
    assert active(session, Resource, type="okta_group") == exp["groups"]
    assert active(session, Resource, type="okta_app") == exp["apps"]
    assert result.stats["read"]["grants"] == exp["memberships"] + exp["direct"] + exp["app_groups"] + exp["roles"]
    assert active(session, Grant) == result.stats["read"]["grants"]
    # every request was counted, none wasted on empty groups or groups without admin roles
    assert result.api_calls == len(okta.log)
    empty = {g for g, m in okta.members.items() if not m}
    assert empty and not any(p.endswith("/users") and p.split("/")[4] in empty for _, p, _ in okta.log if "/groups/" in p)
    role_calls = {p.split("/")[4] for _, p, _ in okta.log if p.startswith("/api/v1/groups/") and p.endswith("/roles")}
    assert role_calls == {g for g in okta.groups if okta.has_admin_privilege(g)}

    # people: DEPROVISIONED users are terminated identities, every account is linked to its person
    deprovisioned = [u for u, d in okta.users.items() if d["status"] == "DEPROVISIONED"]
    assert deprovisioned
    assert active(session, Identity, status="terminated") == len(deprovisioned)
    assert session.scalar(select(func.count()).select_from(Account).where(Account.identity_id.is_(None))) == 0
    # managers: managerId holds the manager's employee number; some users only have `manager` (a login)
    for i in (8, 22, 50):  # 22 only has `manager`
        uid, mgr = okta.user_ids[i], okta.user_ids[(i - 1) // 7]
        person = session.scalar(select(Identity).where(Identity.external_id == uid))
        assert person.manager is not None and person.manager.external_id == mgr, i
    assert session.scalar(select(Identity).where(Identity.external_id == okta.user_ids[0])).manager_id is None
    # non-ASCII names survive
    assert session.scalar(select(Identity).where(Identity.display_name == "Zoë Ørsted"))
    assert session.scalar(select(Identity).where(Identity.display_name.like("Søren%")))

    # rule-managed groups are marked with the rule's name; admin roles are privileged
    ruled = okta.rules[0]["actions"]["assignUserToGroups"]["groupIds"][0]
    group = session.scalar(select(Resource).where(Resource.external_id == ruled))
    assert group.attributes["rule_managed"] is True and group.attributes["rules"] == [okta.rules[0]["name"]]
    supers = session.scalars(select(Grant).join(Entitlement).where(
        Entitlement.external_id == "role:SUPER_ADMIN:assigned", Grant.ended_at.is_(None))).all()
    assert len(supers) == 2 and all(g.entitlement.privileged for g in supers)
    # last SSO per app lands on the account
    with_sso = session.scalars(select(Account)).all()
    assert sum(1 for a in with_sso if a.attributes.get("app_last_sso")) > 50

    # an unchanged resync changes nothing
    again = sync(factory, settings, session, okta)
    assert again.status == "succeeded"
    assert sum(again.stats["added"].values()) == 0 and sum(again.stats["ended"].values()) == 0


def test_app_access_through_a_group_is_effective_access(factory, session, settings, source, okta):
    assert sync(factory, settings, session, okta).status == "succeeded"
    aid = next(a for a in okta.app_ids[1:] if okta.app_groups[a] and okta.apps[a]["status"] == "ACTIVE")
    gid = next(iter(okta.app_groups[aid]))
    uid = next(u for u in sorted(okta.members[gid]) if u not in okta.app_users[aid])
    account = session.scalar(select(Account).where(Account.external_id == uid))
    held = [h for h in effective_access(session, [account.id]) if h.grant.entitlement.external_id == f"{aid}:assignment"]
    assert held and held[0].via and held[0].via[-1].external_id == gid
    assert held[0].how.startswith("via ")
    # the inactive app appears only when asked for
    inactive = next(a for a in okta.app_ids if okta.apps[a]["status"] == "INACTIVE")
    assert not session.scalar(select(Resource).where(Resource.external_id == inactive))
    assert sync(factory, settings, session, okta, include_inactive_apps=True).status == "succeeded"
    assert session.scalar(select(Resource).where(Resource.external_id == inactive, Resource.ended_at.is_(None)))


def test_mid_sync_500_is_retried_and_nothing_is_lost(factory, session, settings, source, okta):
    okta.faults.fail_requests = {3, 20, 21, 40}
    result = sync(factory, settings, session, okta)
    assert result.status == "succeeded", result.error
    assert sum(1 for _, _, s in okta.log if s == 500) == 4
    exp = expected(okta)
    assert result.stats["read"]["grants"] == exp["memberships"] + exp["direct"] + exp["app_groups"] + exp["roles"]
    assert active(session, Identity) == exp["users"]


def test_a_500_that_does_not_go_away_fails_the_run_and_changes_nothing(factory, session, settings, source, okta):
    assert sync(factory, settings, session, okta).status == "succeeded"
    grants, accounts = active(session, Grant), active(session, Account)
    okta.faults.fail_paths = {"/api/v1/groups/": -1}  # every member list fails, every time
    result = sync(factory, settings, session, okta)
    assert result.status == "failed" and "HTTP 500" in result.error
    assert active(session, Grant) == grants and active(session, Account) == accounts


OktaTime = UpstreamTime  # Okta's clock and the connector's sleep in one


def timed_connector(okta, clock: OktaTime, **settings) -> OktaConnector:
    return connector(okta, sleep=clock.sleep, clock=clock, **settings)  # the clients' holds and pacing: the same clock


def refusals(okta) -> list[tuple[str, Stamp]]:
    """The requests the fake answered 429, with their times on Okta's clock."""
    return [(path, stamp) for (_, path, status), stamp in zip(okta.log, okta.timeline, strict=True) if status == 429]


def early_requests(okta) -> list[tuple[str, float]]:
    """Requests that came back too soon: after a 429 answered at t announcing reset R, any request that arrived
    after t and before R, on Okta's clock."""
    return [(path, stamp.arrived) for (_, path, _), stamp in zip(okta.log, okta.timeline, strict=True)
            for _, refused in refusals(okta) if refused.answered < stamp.arrived < refused.reset]


def test_429_storm_waits_for_the_reset_and_finishes(factory, session, settings, source):
    clock = OktaTime()
    okta = create_app(demo=True, clock=clock)
    okta.faults.storm_at = 8  # from the 8th request every answer is 429 for 1 s of Okta's time
    okta.faults.storm_seconds = 1.0
    with serve_in_thread(okta) as server:
        okta.url = server.url
        conn = timed_connector(okta, clock)
        result = sync(factory, settings, session, okta, conn=conn)
    assert result.status == "succeeded", result.error
    refused = [stamp for _, stamp in refusals(okta)]
    assert refused, "the storm never hit"
    began, reset = refused[0].arrived, math.ceil(okta.faults.storm_until)
    assert {stamp.reset for stamp in refused} == {reset}
    # each 429 made the connector wait for the reset, read against that answer's Date, plus the second Okta's
    # SDK adds (okta-sdk-python calculate_backoff)
    assert sorted(conn.http.waits) == sorted(max(reset - math.floor(s.answered), 0) + 1.0 for s in refused)
    # never hammering: only requests already in flight when the storm began were refused (one per worker at
    # most), and nothing at all came back before the reset
    assert {stamp.arrived for stamp in refused} == {began} and len(refused) <= conn.concurrency
    assert not early_requests(okta)
    assert clock() >= reset
    exp = expected(okta)
    assert result.stats["read"]["grants"] == exp["memberships"] + exp["direct"] + exp["app_groups"] + exp["roles"]


def test_a_bad_api_token_fails_at_once_with_a_clear_message(factory, session, settings, source, okta):
    conn = OktaConnector({"domain": okta.url}, {"token": "00TOKEN-xyzzy-NOT-VALID"}, sleep=no_sleep)
    result = sync(factory, settings, session, okta, conn=conn)
    assert result.status == "failed"
    assert "rejected the API token" in result.error and "E0000011" in result.error
    assert "xyzzy" not in result.error  # the secret never reaches the message
    assert active(session, Identity) == 0


def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keypair():
    return rsa_pem()


@pytest.fixture
def oauth_okta(keypair):
    app = create_app(demo=True, oauth_clients={"0oaservice": {
        "public_key": keypair[1], "scopes": list(READ_SCOPES) + ["okta.groups.manage", "okta.apps.manage", "okta.roles.manage"]}})
    with serve_in_thread(app) as server:
        app.url = server.url
        yield app


def oauth_connector(okta, keypair, client_id="0oaservice") -> OktaConnector:
    return OktaConnector({"domain": okta.url}, {"client_id": client_id, "private_key": keypair[0]}, sleep=no_sleep)


def test_oauth_service_app_with_private_key_jwt(factory, session, settings, source, oauth_okta, keypair):
    conn = oauth_connector(oauth_okta, keypair)
    result = sync(factory, settings, session, oauth_okta, conn=conn)
    assert result.status == "succeeded", result.error
    assert active(session, Identity) == len(oauth_okta.users)
    token_calls = [p for _, p, _ in oauth_okta.log if p == "/oauth2/v1/token"]
    assert len(token_calls) == 1  # cached for the whole run
    assert result.api_calls == len(oauth_okta.log)  # the token request is counted too
    # an access token that Okta stops honouring is refreshed once, transparently
    conn2 = oauth_connector(oauth_okta, keypair)
    conn2.validate()
    oauth_okta.access_tokens.clear()
    conn2.validate()
    assert len([p for _, p, _ in oauth_okta.log if p == "/oauth2/v1/token"]) == 3
    # a key Okta does not know is refused with a message about the key registration
    other = OktaConnector({"domain": oauth_okta.url}, {"client_id": "0oaservice", "private_key": rsa_pem()[0]},
                          sleep=no_sleep)
    with pytest.raises(ConnectorError, match="client assertion"):
        other.validate()


def test_an_ec_p256_key_signs_the_client_assertion_with_es256(oauth_okta):
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    oauth_okta.oauth_clients["0oaec"] = {"public_key": public, "scopes": list(READ_SCOPES)}
    conn = OktaConnector({"domain": oauth_okta.url}, {"client_id": "0oaec", "private_key": private}, sleep=no_sleep)
    conn.validate()  # the fake verifies the assertion against the registered EC key
    assert ("POST", "/oauth2/v1/token", 200) in oauth_okta.log


def test_a_token_without_a_scope_fails_naming_the_scope(factory, session, settings, source, oauth_okta, keypair):
    oauth_okta.faults.drop_scopes = {"okta.logs.read"}
    with pytest.raises(ConnectorError, match="lacks the scope okta.logs.read"):  # `attest sources test`
        oauth_connector(oauth_okta, keypair).validate()
    # the System Log is optional (issue 17): the sync succeeds without the last-SSO signal, with a note
    result = sync(factory, settings, session, oauth_okta, conn=oauth_connector(oauth_okta, keypair))
    assert result.status == "succeeded", result.error
    assert any("okta.logs.read" in n and "log_days=0" in n for n in result.notes)
    assert any(s == 403 for _, _, s in oauth_okta.log)
    # a scope the app was never granted is refused at the token endpoint, also by name
    oauth_okta.faults.drop_scopes = set()
    oauth_okta.oauth_clients["0oaservice"]["scopes"] = [s for s in READ_SCOPES if s != "okta.roles.read"]
    result = sync(factory, settings, session, oauth_okta, conn=oauth_connector(oauth_okta, keypair))
    assert result.status == "failed" and "okta.roles.read" in result.error


def test_odd_payloads_are_reported_per_record(factory, session, settings, source):
    app = create_app(demo=True, odd_payloads=True)
    with serve_in_thread(app) as server:
        app.url = server.url
        result = sync(factory, settings, session, app)
    assert result.status == "succeeded", result.error
    notes = " | ".join(result.notes)
    assert "ON_SABBATICAL" in notes and "FEDERATED_GROUP" in notes and "no profile" in notes
    odd = session.scalar(select(Identity).where(Identity.external_id == app.user_ids[5]))
    assert odd.status == "active" and odd.attributes["okta_status"] == "ON_SABBATICAL"
    assert active(session, Identity) == len(app.users) - 1  # the broken one is skipped, the rest are there
    fed = session.scalar(select(Resource).where(Resource.external_id == app.group_ids[2]))
    assert fed.attributes["type"] == "FEDERATED_GROUP" and fed.is_group


def test_settings_are_validated():
    from attest.connectors.registry import validate_settings

    with pytest.raises(ValueError, match="https"):
        validate_settings("okta", {"domain": "http://acme.okta.com"}, {"token": "t"})
    with pytest.raises(ValueError, match="either the secret token"):
        validate_settings("okta", {"domain": "https://acme.okta.com"}, {"token": "t", "client_id": "c"})
    with pytest.raises(ValueError, match="needs the secret token"):
        validate_settings("okta", {"domain": "https://acme.okta.com"}, {})
    with pytest.raises(ValueError, match="PEM"):
        validate_settings("okta", {"domain": "https://acme.okta.com"}, {"client_id": "c", "private_key": "nope"})
    # a key private_key_jwt cannot sign with is refused when the source is saved, saying what would do
    for key, kind in ((ed25519.Ed25519PrivateKey.generate(), "a key of type Ed25519"),
                      (ec.generate_private_key(ec.SECP384R1()), "an EC key on secp384r1")):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        with pytest.raises(ValueError, match=f"private_key must be an RSA key or an EC P-256 key; this is {kind}"):
            validate_settings("okta", {"domain": "https://acme.okta.com"}, {"client_id": "c", "private_key": pem})
    with pytest.raises(ValueError, match="log_days"):
        validate_settings("okta", {"domain": "https://acme.okta.com", "log_days": "365"}, {"token": "t"})
    clean, _ = validate_settings("okta", {"domain": "http://127.0.0.1:5101"}, {"token": "t"})
    assert clean["concurrency"] == 4 and clean["log_days"] == 90 and clean["manager_attribute"] == "managerId"


# --- revoke and undo ----------------------------------------------------------------------------------


def ref(entitlement_ref: str, principal: str, principal_type: str = "account", **kw) -> GrantRef:
    resource = entitlement_ref.rsplit(":", 1)[0] if not entitlement_ref.startswith("role:") else \
        entitlement_ref.rsplit(":", 1)[0]
    return GrantRef(source_kind="okta", key=f"{entitlement_ref}|a|{principal}", entitlement_ref=entitlement_ref,
                    entitlement_name=kw.pop("name", "member"), resource_ref=resource, resource_type=kw.pop("rtype", "okta_group"),
                    principal_type=principal_type, principal_ref=principal, principal_login=principal, **kw)


def writes(okta) -> list[tuple[str, str, int]]:
    return [e for e in okta.log if e[0] != "GET"]


def test_revoke_group_membership_dry_run_then_real_then_idempotent_then_undo(okta):
    conn = connector(okta)
    gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "OKTA_GROUP" and okta.members[g]
               and not okta.has_admin_privilege(g)
               and g not in {x for r in okta.rules for x in r["actions"]["assignUserToGroups"]["groupIds"]})
    uid = sorted(okta.members[gid])[0]
    attrs = {"type": "OKTA_GROUP", "rule_managed": False, "has_admin_privilege": False}
    dry = conn.revoke(ref(f"{gid}:member", uid, resource_attributes=attrs), dry_run=True)
    assert dry.dry_run and dry.calls == (f"DELETE /api/v1/groups/{gid}/users/{uid}",)
    assert uid in okta.members[gid] and not writes(okta)
    done = conn.revoke(ref(f"{gid}:member", uid, resource_attributes=attrs), dry_run=False)
    assert not done.dry_run and uid not in okta.members[gid]
    again = conn.revoke(ref(f"{gid}:member", uid, resource_attributes=attrs), dry_run=False)
    assert uid not in okta.members[gid] and not again.dry_run  # already gone: still a success
    undo = conn.grant(ref(f"{gid}:member", uid, resource_attributes=attrs), dry_run=False)
    assert undo.calls == (f"PUT /api/v1/groups/{gid}/users/{uid}",) and uid in okta.members[gid]


def test_revoke_refuses_rule_managed_and_imported_group_memberships(okta):
    conn = connector(okta)
    rule = okta.rules[0]
    gid = rule["actions"]["assignUserToGroups"]["groupIds"][0]
    uid = sorted(okta.members[gid])[0] if okta.members[gid] else okta.user_ids[3]
    with pytest.raises(RevokeRefused, match=rule["name"]):
        conn.revoke(ref(f"{gid}:member", uid, resource_attributes={"type": "OKTA_GROUP", "rule_managed": True,
                                                                    "rules": [rule["name"]]}), dry_run=True)
    ad = next(g for g in okta.group_ids if okta.groups[g]["type"] == "APP_GROUP")
    with pytest.raises(RevokeRefused, match="APP_GROUP"):
        conn.revoke(ref(f"{ad}:member", okta.user_ids[3], resource_attributes={"type": "APP_GROUP"}), dry_run=False)
    assert not writes(okta)


def test_revoke_app_assignment_is_idempotent_and_undoable(okta):
    conn = connector(okta)
    aid = okta.app_ids[1]
    uid = sorted(okta.app_users[aid])[0]
    r = ref(f"{aid}:assignment", uid, name="assigned", rtype="okta_app", grant_attributes={"scope": "USER"})
    assert conn.revoke(r, dry_run=True).calls == (f"DELETE /api/v1/apps/{aid}/users/{uid}",)
    assert uid in okta.app_users[aid]
    assert not conn.revoke(r, dry_run=False).already_gone and uid not in okta.app_users[aid]
    assert conn.revoke(r, dry_run=False).already_gone  # Okta answers 404 now: already gone is success
    assert conn.grant(r, dry_run=False).calls == (f"POST /api/v1/apps/{aid}/users",) and uid in okta.app_users[aid]
    with pytest.raises(RevokeRefused, match="through a group"):
        conn.revoke(ref(f"{aid}:assignment", uid, grant_attributes={"scope": "GROUP"}), dry_run=True)


def test_revoke_admin_roles_guards_the_last_super_admin(okta):
    conn = connector(okta)
    supers = [r for r in okta.roles.values() if r.type == "SUPER_ADMIN"]
    org_admin = next(r for r in okta.roles.values() if r.type == "ORG_ADMIN")
    org = ref("role:ORG_ADMIN:assigned", org_admin.assignee, name="ORG_ADMIN", rtype="okta_admin_role",
              entitlement_attributes={"role_type": "ORG_ADMIN"})
    dry = conn.revoke(org, dry_run=True)
    assert dry.calls == (f"DELETE /api/v1/users/{org_admin.assignee}/roles/{org_admin.id}",) and org_admin.id in okta.roles
    assert not conn.revoke(org, dry_run=False).already_gone and org_admin.id not in okta.roles
    assert conn.revoke(org, dry_run=False).already_gone
    undo = conn.grant(org, dry_run=False)
    assert undo.calls == (f"POST /api/v1/users/{org_admin.assignee}/roles",)
    assert any(r.type == "ORG_ADMIN" and r.assignee == org_admin.assignee for r in okta.roles.values())

    def sup(r):
        return ref("role:SUPER_ADMIN:assigned", r.assignee, name="SUPER_ADMIN", rtype="okta_admin_role",
                   entitlement_attributes={"role_type": "SUPER_ADMIN"})

    conn.revoke(sup(supers[0]), dry_run=False)
    with pytest.raises(RevokeRefused, match="last Super Administrator"):
        conn.revoke(sup(supers[1]), dry_run=True)
    with pytest.raises(RevokeRefused, match="last Super Administrator"):
        conn.revoke(sup(supers[1]), dry_run=False)
    assert supers[1].id in okta.roles
    # a custom role held by a group
    custom = next(r for r in okta.roles.values() if r.type == "CUSTOM" and r.assignee_type == "GROUP")
    c = ref(f"role:custom:{custom.role}:{custom.resource_set}", custom.assignee, "resource", name="CUSTOM",
            rtype="okta_admin_role", entitlement_attributes={"role": custom.role, "resource_set": custom.resource_set})
    assert conn.revoke(c, dry_run=False).calls == (f"DELETE /api/v1/groups/{custom.assignee}/roles/{custom.id}",)
    assert conn.grant(c, dry_run=False).calls == (f"POST /api/v1/groups/{custom.assignee}/roles",)
    assert any(r.type == "CUSTOM" and r.assignee == custom.assignee for r in okta.roles.values())


def test_revoke_with_a_read_only_oauth_app_names_the_manage_scope(oauth_okta, keypair):
    oauth_okta.oauth_clients["0oaservice"]["scopes"] = list(READ_SCOPES)
    conn = oauth_connector(oauth_okta, keypair)
    aid = oauth_okta.app_ids[1]
    uid = sorted(oauth_okta.app_users[aid])[0]
    with pytest.raises(ConnectorError, match="okta.groups.manage"):
        conn.revoke(ref(f"{aid}:assignment", uid, grant_attributes={"scope": "USER"}), dry_run=False)
    assert uid in oauth_okta.app_users[aid]


def test_rate_limit_headers_slow_the_sync_down_and_it_finishes(factory, session, settings, source):
    clock = OktaTime()
    app = create_app(demo=True, rate_limit=25, rate_window=1.0, clock=clock)
    with serve_in_thread(app) as server:
        app.url = server.url
        conn = timed_connector(app, clock, concurrency=1)  # one request at a time: every wait is the pacing's
        result = sync(factory, settings, session, app, conn=conn)
    assert result.status == "succeeded", result.error
    # slowed down: the busiest bucket's requests were spread over as many 1 s windows as they need...
    busiest = max(Counter(rate_family(path) for _, path, _ in app.log).values())
    assert busiest > 25 and clock() - OktaTime.START >= busiest // 25
    # ...by waiting, as X-Rate-Limit-Remaining ran out, at most until the X-Rate-Limit-Reset announced (a window
    # away), and never into a spent bucket: not one 429
    assert clock.slept and max(clock.slept) <= 1.0
    assert not refusals(app) and not conn.http.waits
    exp = expected(app)
    assert result.stats["read"]["grants"] == exp["memberships"] + exp["direct"] + exp["app_groups"] + exp["roles"]
    assert active(session, Identity) == exp["users"]


def test_log_days_zero_skips_the_system_log(factory, session, settings, source, okta):
    result = sync(factory, settings, session, okta, log_days=0)
    assert result.status == "succeeded", result.error
    assert not any(p == "/api/v1/logs" for _, p, _ in okta.log)
    assert any("log_days is 0" in n for n in result.notes)
    assert not any(a.attributes.get("app_last_sso") for a in session.scalars(select(Account)))


def test_a_custom_roles_resource_set_is_named_by_its_label_not_its_id(factory, session, settings, source, okta):
    """Issue 20: a reviewer saw 'CUSTOM on iamEDNIaDbgHJQ0Db2d1'. The resource set's label (GET
    /api/v1/iam/resource-sets) names it as the Admin Console does; the id stays in the entitlement's key."""
    rset = okta.resource_set
    assert sync(factory, settings, session, okta).status == "succeeded"
    ent = session.scalar(select(Entitlement).where(Entitlement.external_id.like(f"role:custom:%:{rset}")))
    assert ent.name == "CUSTOM on All applications" and rset not in ent.name
    assert ent.display_name == "Access Reviewer (custom) on All applications"
    # a resource set the listing does not return (deleted meanwhile): the id stays, the sync still succeeds
    okta.resource_sets.clear()
    assert sync(factory, settings, session, okta).status == "succeeded"
    session.expire_all()
    assert session.get(Entitlement, ent.id).name == f"CUSTOM on {rset}"
