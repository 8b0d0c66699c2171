"""Okta's pure transforms, on payloads shaped like the ones Okta's API reference documents."""

from __future__ import annotations

from datetime import UTC, datetime

from attest.connectors.base import (
    AccountRecord,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    Note,
    ResourceRecord,
)
from attest.connectors.okta.transforms import (
    UserIndex,
    app_group_grant,
    app_records,
    app_user_grant,
    group_records,
    last_sso,
    role_records,
    rule_map,
    user_records,
)

MANAGER = {
    "id": "00ub0oNGTSWTBKOLGLNR", "status": "ACTIVE", "created": "2013-06-24T16:39:18.000Z",
    "lastLogin": "2013-06-24T17:39:19.000Z",
    "profile": {"firstName": "Isaac", "lastName": "Brock", "email": "isaac.brock@example.com",
                "login": "isaac.brock@example.com", "employeeNumber": "E1001", "department": "Engineering"},
}
REPORT = {
    "id": "00u1f96ECLNVOKVMUSEA", "status": "DEPROVISIONED", "created": "2013-12-12T16:14:22.000Z",
    "statusChanged": "2024-02-01T10:00:00.000Z", "lastLogin": None,
    "profile": {"firstName": "Zoë", "lastName": "Ørsted", "displayName": "Zoë Ørsted", "email": "zoe@example.com",
                "login": "zoe@example.com", "employeeNumber": "E2002", "title": "Ingénieure", "managerId": "E1001"},
}


def index_of(*users) -> UserIndex:
    idx = UserIndex()
    for u in users:
        idx.add(u)
    return idx


def test_user_becomes_identity_and_account_with_manager_by_employee_number():
    recs = user_records(REPORT, index_of(MANAGER, REPORT), "managerId", {"0oa1": "2026-11-01T10:00:00.000Z"})
    identity = next(r for r in recs if isinstance(r, IdentityRecord))
    account = next(r for r in recs if isinstance(r, AccountRecord))
    assert identity.external_id == "00u1f96ECLNVOKVMUSEA"
    assert identity.display_name == "Zoë Ørsted" and identity.title == "Ingénieure"
    assert identity.status == "terminated"  # DEPROVISIONED
    assert identity.manager_ref == "00ub0oNGTSWTBKOLGLNR"  # E1001 resolved to the manager's Okta id
    assert identity.employee_id == "E2002"
    assert account.identity_ref == identity.external_id and account.status == "deprovisioned"
    assert account.attributes["app_last_sso"] == {"0oa1": "2026-11-01T10:00:00.000Z"}
    assert account.last_login_at is None and account.created_at == datetime(2013, 12, 12, 16, 14, 22, tzinfo=UTC)


def test_manager_falls_back_to_the_manager_attribute_as_a_login():
    user = {**REPORT, "status": "SUSPENDED", "profile": {**REPORT["profile"], "managerId": None,
                                                         "manager": "Isaac.Brock@example.com"}}
    identity = next(r for r in user_records(user, index_of(MANAGER, user)) if isinstance(r, IdentityRecord))
    assert identity.manager_ref == "00ub0oNGTSWTBKOLGLNR"
    assert identity.status == "suspended"
    # a custom manager attribute holding an Okta user id
    user = {**REPORT, "profile": {**REPORT["profile"], "managerId": None, "bossId": "00ub0oNGTSWTBKOLGLNR"}}
    identity = next(r for r in user_records(user, index_of(user), "bossId") if isinstance(r, IdentityRecord))
    assert identity.manager_ref == "00ub0oNGTSWTBKOLGLNR"


def test_unknown_status_and_missing_profile_are_reported_not_fatal():
    recs = user_records({**MANAGER, "status": "ON_SABBATICAL"}, index_of(MANAGER))
    assert any(isinstance(r, Note) and "ON_SABBATICAL" in r.message for r in recs)
    assert next(r for r in recs if isinstance(r, IdentityRecord)).status == "active"
    recs = user_records({"id": "00uX", "status": "ACTIVE"}, UserIndex())
    assert len(recs) == 1 and isinstance(recs[0], Note) and "no profile" in recs[0].message
    assert isinstance(user_records({"profile": {}}, UserIndex())[0], Note)


def test_groups_rules_and_unknown_types():
    rules = rule_map([
        {"id": "0pr1", "status": "ACTIVE", "name": "Engineering group rule",
         "actions": {"assignUserToGroups": {"groupIds": ["00g1"]}}},
        {"id": "0pr2", "status": "INACTIVE", "name": "Old rule", "actions": {"assignUserToGroups": {"groupIds": ["00g2"]}}},
        {"id": "0pr3", "status": "ACTIVE", "name": "Broken rule", "actions": None},
    ])
    assert rules == {"00g1": ["Engineering group rule"]}
    recs = group_records({"id": "00g1", "type": "OKTA_GROUP", "profile": {"name": "Ingeniería", "description": "x"},
                          "_embedded": {"stats": {"usersCount": 3, "hasAdminPrivilege": False}}}, rules)
    res = next(r for r in recs if isinstance(r, ResourceRecord))
    ent = next(r for r in recs if isinstance(r, EntitlementRecord))
    assert res.is_group and res.name == "Ingeniería" and res.attributes["rule_managed"] is True
    assert res.attributes["rules"] == ["Engineering group rule"] and res.attributes["has_admin_privilege"] is False
    assert ent.is_membership and ent.external_id == "00g1:member"
    odd = group_records({"id": "00g9", "type": "FEDERATED_GROUP", "profile": {}}, {})
    assert any(isinstance(r, Note) and "FEDERATED_GROUP" in r.message for r in odd)
    assert next(r for r in odd if isinstance(r, ResourceRecord)).name == "00g9"
    app_group = next(r for r in group_records({"id": "00g5", "type": "APP_GROUP", "profile": {"name": "ad-eng"}}, {})
                     if isinstance(r, ResourceRecord))
    assert app_group.attributes["type"] == "APP_GROUP" and app_group.attributes["mastered_by"]


def test_apps_direct_and_group_assignments():
    recs = app_records({"id": "0oa1", "label": "Salesforce.com", "status": "ACTIVE", "signOnMode": "SAML_2_0"})
    assert [type(r) for r in recs] == [ResourceRecord, EntitlementRecord]
    direct = app_user_grant("0oa1", {"id": "00u1", "scope": "USER", "status": "PROVISIONED",
                                     "credentials": {"userName": "saml.test@example.com"}, "created": "2024-01-31T18:25:01.000Z"})
    assert direct == GrantRecord("0oa1:assignment", "00u1", attributes={
        "scope": "USER", "app_user_status": "PROVISIONED", "app_username": "saml.test@example.com",
        "assigned_at": "2024-01-31T18:25:01.000Z"})
    assert app_user_grant("0oa1", {"id": "00u2", "scope": "GROUP"}) is None  # the group's grant covers it
    group = app_group_grant("0oa1", {"id": "00g15acRUy0SYb9GT0g4", "priority": 0})
    assert group.principal_type == "resource" and group.principal_ref == "00g15acRUy0SYb9GT0g4"


def test_standard_and_custom_roles_are_privileged():
    std = role_records({"id": "ra125eqBFpETrMwu80g4", "label": "Organization administrator", "type": "ORG_ADMIN",
                        "status": "ACTIVE", "assignmentType": "USER"}, "00u1", "account")
    ent = next(r for r in std if isinstance(r, EntitlementRecord))
    grant = next(r for r in std if isinstance(r, GrantRecord))
    assert ent.privileged and ent.external_id == "role:ORG_ADMIN:assigned" and ent.name == "ORG_ADMIN"
    assert grant.attributes["assignment_id"] == "ra125eqBFpETrMwu80g4"
    custom = role_records({"id": "irb1", "label": "Access Reviewer", "type": "CUSTOM", "role": "cr0abc",
                           "resource-set": "iamXYZ", "assignmentType": "GROUP"}, "00g1", "resource")
    ent = next(r for r in custom if isinstance(r, EntitlementRecord))
    assert ent.privileged and ent.external_id == "role:custom:cr0abc:iamXYZ"
    assert next(r for r in custom if isinstance(r, GrantRecord)).principal_type == "resource"
    assert isinstance(role_records({"id": "x"}, "00u1", "account")[0], Note)


def test_last_sso_keeps_the_latest_success_per_user_and_app():
    def ev(uid, app, when, result="SUCCESS", etype="user.authentication.sso"):
        return {"eventType": etype, "published": when, "outcome": {"result": result}, "actor": {"id": uid, "type": "User"},
                "target": [{"id": app, "type": "AppInstance"}, {"id": "0ua1", "type": "AppUser"}]}

    out = last_sso([
        ev("00u1", "0oa1", "2026-10-01T00:00:00.000Z"), ev("00u1", "0oa1", "2026-11-01T00:00:00.000Z"),
        ev("00u1", "0oa1", "2026-11-20T00:00:00.000Z", result="FAILURE"), ev("00u1", "0oa2", "2026-09-01T00:00:00.000Z"),
        ev("00u2", "0oa1", "2026-11-21T00:00:00.000Z", etype="user.session.start"), {"eventType": "user.authentication.sso"},
    ])
    assert out == {"00u1": {"0oa1": "2026-11-01T00:00:00.000Z", "0oa2": "2026-09-01T00:00:00.000Z"}}
