"""The AWS connector against moto in-process (`mock_aws`): an organization of three accounts with
Identity Center and IAM in each, synced into the database; a member account whose role cannot be
assumed; throttling; revoke, verified by the next sync, and undo; the last-administrator guard.

moto's managed-policy loading is slow, so the organization is seeded once for the module; every test
that changes it puts it back (revoke then undo) so the tests stay independent.
moto gaps (see attest/connectors/sandbox/aws_moto.py): sso-admin CreateInstance is not implemented (an
instance exists up front); STS AssumeRole never checks the role, so an unassumable role is injected as
AWS's AccessDenied answer through a botocore hook on the connector's clients.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from attest.connectors.aws import AwsConnector
from attest.connectors.aws.policies import admin_statements, trusted_principals
from attest.connectors.aws.transforms import parse_credential_report
from attest.connectors.base import GrantRef, RevokeRefused
from attest.entitlements.models import Account, Entitlement, Grant, Resource, SyncRun
from attest.entitlements.sync import run_sync
from tests.connectors.conftest import AWS_SETTINGS
from tests.factories import make_identity

moto = pytest.importorskip("moto")

SETTINGS = AWS_SETTINGS


# --- helpers shared with test_aws_server.py ------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def aws_error(status: int, code: str, message: str, protocol: str):
    """An AWS error response as botocore receives it from the wire (parsed, retried like the real one)."""
    from botocore.awsrequest import AWSResponse

    if protocol == "query":
        body = (f'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
                f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>r1</RequestId></ErrorResponse>").encode()
        headers = {"Content-Type": "text/xml"}
    else:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    return AWSResponse("https://aws.example/", status, headers, _Raw(body))


def deny_assume_role(account_id: str):
    """A before-send hook: AssumeRole into `account_id` is refused as AWS would refuse it."""

    def handler(request, **_):
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if f"iam%3A%3A{account_id}%3Arole" in body or f"iam::{account_id}:role" in body:
            return aws_error(403, "AccessDenied", f"User is not authorized to perform: sts:AssumeRole on "
                             f"arn:aws:iam::{account_id}:role/AttestAudit", "query")
        return None

    return "before-send.sts.AssumeRole", handler


def throttle(event: str, times: int, protocol: str):
    """A before-send hook answering the first `times` requests of an operation with throttling."""
    seen = {"n": 0}

    def handler(**_):
        if seen["n"] < times:
            seen["n"] += 1
            code = "Throttling" if protocol == "query" else "ThrottlingException"
            return aws_error(400, code, "Rate exceeded", protocol)
        return None

    return event, handler, seen


def grant_ref(session, grant: Grant) -> GrantRef:
    ent = grant.entitlement
    res = ent.resource
    if grant.principal_type == "account":
        principal_ref, login = grant.account.external_id, grant.account.login
    else:
        principal_ref, login = grant.group.external_id, grant.group.name
    return GrantRef(source_kind="aws", key=grant.key, entitlement_ref=ent.external_id, entitlement_name=ent.name,
                    resource_ref=ent.resource_ref, resource_type=res.type if res else "",
                    principal_type=grant.principal_type, principal_ref=principal_ref, principal_login=login,
                    resource_attributes=dict(res.attributes or {}) if res else {},
                    entitlement_attributes=dict(ent.attributes or {}), grant_attributes=dict(grant.attributes or {}),
                    part=grant.part)


def active(session, source_id: int, key: str) -> Grant | None:
    return session.scalar(select(Grant).where(Grant.source_id == source_id, Grant.key == key, Grant.ended_at.is_(None)))


def assert_org_in_database(session, source_id: int, org) -> None:
    """What a reviewer would look for after syncing the seeded organization."""

    def res(rtype):
        return {r.external_id: r for r in session.scalars(
            select(Resource).where(Resource.source_id == source_id, Resource.type == rtype, Resource.ended_at.is_(None)))}

    accounts = res("aws_account")
    assert set(accounts) == {f"account:{a}" for a in org.account_ids}
    ous = res("aws_ou")
    assert {o.name for o in ous.values()} == {"Production", "Development"}
    mgmt = accounts[f"account:{org.management_id}"]
    assert mgmt.attributes["management"] is True and mgmt.parent.type == "aws_organization"
    for acct in org.account_ids[1:]:
        r = accounts[f"account:{acct}"]
        assert r.part == f"aws:{acct}" and r.parent.type == "aws_ou"
        assert r.name == f"{org.account_names[acct]} ({acct})"

    # permission sets: one entitlement per set and account, privileged from the policies
    ents = {e.external_id: e for e in session.scalars(
        select(Entitlement).where(Entitlement.source_id == source_id, Entitlement.ended_at.is_(None)))}
    ps = {(e.attributes["account_id"], e.attributes["permission_set_name"]): e for e in ents.values()
          if e.attributes.get("kind") == "sso_permission_set"}
    for acct in org.account_ids:
        admin = ps[(acct, "AdministratorAccess")]
        assert admin.privileged and admin.name == "PermissionSet:AdministratorAccess"
        assert admin.display_name == f"Permission set AdministratorAccess on account {org.account_names[acct]} ({acct})"
        assert admin.resource_id == accounts[f"account:{acct}"].id and admin.part == f"aws:{acct}"
        assert not ps[(acct, "ReadOnly")].privileged
        assert not ps[(acct, "Deploy")].privileged  # customer-managed DeployApp + a read-only inline policy
        breakglass = ps[(acct, "BreakGlass")]  # customer-managed BreakGlassAdmin resolves to *:* in the account
        assert breakglass.privileged and "BreakGlassAdmin" in breakglass.attributes["privileged_reasons"][0]

    # Identity Center users and groups; a group assignment is held by the group
    ic_users = {a.external_id: a for a in session.scalars(select(Account).where(
        Account.source_id == source_id, Account.external_id.like("idc-user:%")))}
    assert len(ic_users) == len(org.ic_users)
    for username, uid in org.ic_users.items():
        assert ic_users[f"idc-user:{uid}"].login == username and ic_users[f"idc-user:{uid}"].email
        assert ic_users[f"idc-user:{uid}"].part is None
    admins_gid = org.ic_groups["aws-admins"]
    group = session.scalar(select(Resource).where(Resource.source_id == source_id,
                                                  Resource.external_id == f"idc-group:{admins_gid}"))
    assert group.is_group and group.type == "aws_sso_group"
    membership = ents[f"idc-group:{admins_gid}:member"]
    assert membership.is_membership and membership.privileged
    for acct, ps_arn, ptype, pid in org.assignments:
        ent_ref = f"ps:{acct}:{ps_arn.rsplit('/', 1)[-1]}"
        key = f"{ent_ref}|{'r' if ptype == 'GROUP' else 'a'}|idc-{'group' if ptype == 'GROUP' else 'user'}:{pid}"
        g = active(session, source_id, key)
        assert g is not None, key
        assert g.part == f"aws:{acct}"
        assert g.principal_type == ("resource" if ptype == "GROUP" else "account")
    for gid, members in org.ic_members.items():
        for uid in members:
            assert active(session, source_id, f"idc-group:{gid}:member|a|idc-user:{uid}") is not None

    # IAM: users with e-mail tags, keys, MFA, console passwords; the service user; roles; policies
    for acct in org.account_ids:
        iam_users = {a.login: a for a in session.scalars(select(Account).where(
            Account.source_id == source_id, Account.part == f"aws:{acct}", Account.external_id.like("%:user/%")))}
        assert set(iam_users) == set(org.iam_users[acct])
        person = iam_users[org.iam_users[acct][0]]
        assert person.kind == "human" and person.tag_email and person.tag_email.endswith("@demo.example")
        assert person.mfa_enabled is True and person.attributes["console_password"] is True
        assert person.attributes["access_keys"][0]["status"] == "Active"
        assert person.attributes["access_keys"][0]["age_days"] == 0
        assert person.attributes["credentials_from"] == "credential_report"
        svc = iam_users[f"svc-deploy-{org.account_ids.index(acct):02d}"]
        assert svc.kind == "service" and svc.attributes["console_password"] is False
        assert svc.attributes["active_access_keys"] == 1
        admins = ents[f"arn:aws:iam::{acct}:group/Admins:member"]
        assert admins.privileged and admins.is_membership
        assert active(session, source_id, f"arn:aws:iam::{acct}:group/Admins:member|a|{person.external_id}")
        admin_policy = f"iam-policy:{acct}:arn:aws:iam::aws:policy/AdministratorAccess:attached"
        assert ents[admin_policy].privileged
        # the group holds the policy: effective access for its members
        assert active(session, source_id, f"{admin_policy}|r|arn:aws:iam::{acct}:group/Admins")
        roles = {a.login: a for a in session.scalars(select(Account).where(
            Account.source_id == source_id, Account.part == f"aws:{acct}", Account.external_id.like("%:role/%")))}
        assert roles["vendor-auditor"].kind == "service"
        assert roles["vendor-auditor"].attributes["external_trust"] == ["arn:aws:iam::999988887777:root"]
        assert roles["app-runtime"].attributes["trusted_principals"] == ["Service:ecs-tasks.amazonaws.com"]
        if acct != org.management_id:
            assert "AttestAudit" in roles
        inline = [e for e in ents.values() if e.attributes.get("kind") == "iam_inline_policy"
                  and e.attributes["account_id"] == acct]
        # plus, in the first member account, the developer's sts:AssumeRole on the cross-account role (aws_trust)
        developer = org.cross_account.get("developer", "")
        expected = ["InlinePolicy:read-logs"] + (["InlinePolicy:assume-deploy"] if f":{acct}:" in developer else [])
        assert sorted(e.name for e in inline) == sorted(expected) and not any(e.privileged for e in inline)


# --- fixtures --------------------------------------------------------------------------------------------


def connector(**settings) -> AwsConnector:
    return AwsConnector({**SETTINGS, **settings}, {})


def boto(service: str, account_id: str | None = None):
    import boto3

    if account_id is None:
        return boto3.client(service, region_name="us-east-1")
    creds = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole", RoleSessionName="test")["Credentials"]
    return boto3.client(service, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


# --- pure transforms ---------------------------------------------------------------------------------------


def test_admin_statements_and_trust_and_credential_report():
    assert admin_statements({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    assert admin_statements({"Statement": {"Effect": "Allow", "Action": ["s3:Get*", "*:*"], "Resource": ["*"]}})
    assert admin_statements({"Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]})
    assert admin_statements({"Statement": [{"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "*"}]})
    assert not admin_statements({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]})
    assert not admin_statements({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b/*"}]})
    assert admin_statements('%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C'
                            '%22Resource%22%3A%22*%22%7D%5D%7D')  # URL-encoded, as IAM sends it
    assert trusted_principals({"Statement": [{"Effect": "Allow", "Principal": {
        "AWS": ["arn:aws:iam::1:root"], "Service": "ec2.amazonaws.com"}}]}) == ["arn:aws:iam::1:root", "Service:ec2.amazonaws.com"]
    report = (
        "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,"
        "mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
        "access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
        "access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
        "cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n"
        "<root_account>,arn:aws:iam::1:root,2020-01-01T00:00:00+00:00,not_supported,2026-11-01T10:00:00+00:00,"
        "not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n"
        "ada,arn:aws:iam::1:user/ada,2025-01-01T00:00:00+00:00,true,2026-11-20T08:00:00+00:00,N/A,N/A,false,"
        "true,2025-11-28T00:00:00+00:00,2026-11-27T09:00:00+00:00,us-east-1,s3,false,2024-01-01T00:00:00+00:00,"
        "N/A,N/A,N/A,false,N/A,false,N/A\n"
    )
    rows = parse_credential_report(report, now=datetime(2026, 11, 28, tzinfo=UTC))
    ada = rows["arn:aws:iam::1:user/ada"]
    assert ada.password_enabled and not ada.mfa_active
    assert ada.keys[0] == {"slot": 1, "status": "Active", "created_at": "2025-11-28T00:00:00+00:00", "age_days": 365,
                           "last_used_at": "2026-11-27T09:00:00+00:00", "last_used_service": "s3"}
    assert ada.keys[1]["status"] == "Inactive" and ada.keys[1]["last_used_at"] is None
    assert ada.last_activity == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert rows["<root_account>"].mfa_active


def test_settings_are_checked_with_clear_messages():
    from attest.connectors.registry import validate_settings

    with pytest.raises(ValueError, match="access_key_id and secret_access_key go together"):
        validate_settings("aws", {}, {"access_key_id": "AKIA..."})
    with pytest.raises(ValueError, match="must be an AWS region"):
        validate_settings("aws", {"region": "Frankfurt"})
    with pytest.raises(ValueError, match="12-digit account ids; not: 123"):
        validate_settings("aws", {"accounts": "123456789012,123"})
    with pytest.raises(ValueError, match="https"):
        validate_settings("aws", {"endpoint_url": "http://aws.example.com"})
    with pytest.raises(ValueError, match="between 1 and 64"):
        validate_settings("aws", {"concurrency": "0"})
    clean, _ = validate_settings("aws", {"region": "eu-west-1", "assume_role_name": "AttestAudit",
                                         "privileged_policies": "BreakGlass, SecurityAdmin",
                                         "endpoint_url": "http://127.0.0.1:5103"})
    assert clean["privileged_policies"] == ["BreakGlass", "SecurityAdmin"] and clean["concurrency"] == 8


# --- sync ---------------------------------------------------------------------------------------------------


def test_sync_organization_into_database(org, factory, session, settings, source):
    conn = connector()
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "succeeded", result.error
    assert not result.failed_parts
    assert_org_in_database(session, source.id, org)
    # every request counted; each listing took the fewest pages (nothing was retried)
    run = session.get(SyncRun, result.run_id)
    assert run.api_calls == conn.calls == conn.operations == sum(conn.counter.by_operation.values())
    assert conn.counter.by_operation["iam:GetAccountAuthorizationDetails"] == 3
    assert conn.counter.by_operation["sts:AssumeRole"] == 2  # the management account uses the base credentials
    assert conn.stats["max_concurrent_accounts"] >= 2

    # an unchanged second sync changes nothing
    again = run_sync(factory, settings, "aws", connector=connector())
    assert again.status == "succeeded", again.error
    assert again.stats["added"]["grants"] == 0 and again.stats["ended"]["grants"] == 0


def test_validate_checks_access_and_the_allow_list(org):
    from attest.connectors.base import ConnectorError

    connector().validate()
    connector(accounts=[org.account_ids[1]]).validate()
    with pytest.raises(ConnectorError, match="accounts not in the organization: 999999999999"):
        connector(accounts=["999999999999"]).validate()


def test_allow_list_limits_the_accounts_read(org, factory, session, settings, source):
    conn = connector(accounts=[org.account_ids[1]])
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "succeeded", result.error
    parts = set(session.scalars(select(Account.part).where(Account.source_id == source.id,
                                                           Account.part.is_not(None))))
    # besides the account read, only the principals its roles trust outside the organization (aws:trust)
    assert parts - {"aws:trust"} == {f"aws:{org.account_ids[1]}"}
    assert conn.counter.by_operation["iam:GetAccountAuthorizationDetails"] == 1


def test_accounts_link_to_people_by_email_tag_and_username(org, factory, session, settings, source):
    from attest.connectors.sandbox.aws_moto import default_people

    people = default_people(12)
    for p in people[:6]:
        make_identity(session, p.email, f"{p.first} {p.last}")
    session.commit()
    assert run_sync(factory, settings, "aws", connector=connector()).status == "succeeded"
    ic = session.scalar(select(Account).where(Account.source_id == source.id, Account.login == people[0].email))
    assert ic.identity is not None and ic.identity.email == people[0].email and ic.link_method == "email"
    tagged = session.scalars(select(Account).where(Account.source_id == source.id, Account.tag_email == people[0].email,
                                                   Account.external_id.like("%:user/%"))).all()
    assert tagged and all(a.link_method == "tag" and a.identity.email == people[0].email for a in tagged)
    svc = session.scalar(select(Account).where(Account.source_id == source.id, Account.login == "svc-deploy-00"))
    assert svc.identity_id is None and svc.kind == "service"  # orphaned, and a service account


def test_unassumable_member_account_gives_a_partial_run_and_keeps_its_grants(org, factory, session, settings, source):
    first = run_sync(factory, settings, "aws", connector=connector())
    assert first.status == "succeeded", first.error
    broken, healthy = org.account_ids[1], org.account_ids[2]
    b_user, h_user = org.iam_users[broken][1], org.iam_users[healthy][1]
    b_key = f"arn:aws:iam::{broken}:group/ReadOnly:member|a|arn:aws:iam::{broken}:user/{b_user}"
    h_key = f"arn:aws:iam::{healthy}:group/ReadOnly:member|a|arn:aws:iam::{healthy}:user/{h_user}"
    assert active(session, source.id, b_key) and active(session, source.id, h_key)
    # both memberships go away upstream, but the broken account's role can no longer be assumed
    boto("iam", broken).remove_user_from_group(GroupName="ReadOnly", UserName=b_user)
    boto("iam", healthy).remove_user_from_group(GroupName="ReadOnly", UserName=h_user)
    try:
        conn = connector()
        conn.hooks.append(deny_assume_role(broken))
        second = run_sync(factory, settings, "aws", connector=conn)
        assert second.status == "partial", second.error
        assert [p["part"] for p in second.failed_parts] == [f"aws:{broken}", "aws:trust"]  # trust paths span accounts: kept too
        assert "cannot assume role AttestAudit" in second.failed_parts[0]["reason"]
        assert "AccessDenied" in second.failed_parts[0]["reason"]
        session.expire_all()
        assert active(session, source.id, b_key) is not None  # partial data never ends grants
        assert active(session, source.id, h_key) is None  # the healthy account synced
        ended = session.scalar(select(Grant).where(Grant.source_id == source.id, Grant.key == h_key))
        assert ended.ended_reason == "not_seen"
        # the broken account's other grants (IAM and Identity Center) are all still active
        still = session.scalar(select(func.count()).select_from(Grant).where(
            Grant.source_id == source.id, Grant.part == f"aws:{broken}", Grant.ended_at.is_(None)))
        assert still >= 10
    finally:
        boto("iam", broken).add_user_to_group(GroupName="ReadOnly", UserName=b_user)
        boto("iam", healthy).add_user_to_group(GroupName="ReadOnly", UserName=h_user)


def test_throttling_is_retried_and_the_sync_finishes(org, factory, session, settings, source):
    conn = connector()
    event, handler, seen = throttle("before-send.sso-admin.ListAccountAssignments", 2, "json")
    event2, handler2, seen2 = throttle("before-send.iam.GetAccountAuthorizationDetails", 1, "query")
    conn.hooks += [(event, handler), (event2, handler2)]
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "succeeded", result.error
    assert seen["n"] == 2 and seen2["n"] == 1
    assert conn.calls == conn.operations + 3  # three throttled requests were sent again
    assert result.api_calls == conn.calls
    assert_org_in_database(session, source.id, org)


def test_without_the_credential_report_keys_mfa_and_passwords_are_read_per_user(org, factory, session, settings,
                                                                                 source):
    def denied(**_):
        return aws_error(403, "AccessDenied", "not authorized to perform iam:GetCredentialReport", "query")

    conn = connector(privileged_policies=["ReadOnlyAccess"])
    conn.hooks.append(("before-send.iam.GetCredentialReport", denied))
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "succeeded", result.error
    assert any("credential report unavailable (AccessDenied" in n for n in result.notes)
    acct = org.account_ids[1]
    person = session.scalar(select(Account).where(Account.source_id == source.id,
                                                  Account.external_id == f"arn:aws:iam::{acct}:user/{org.iam_users[acct][0]}"))
    assert person.attributes["credentials_from"] == "per_user_calls"
    assert person.attributes["access_keys"][0]["id"].startswith("AKIA")
    assert person.attributes["access_keys"][0]["status"] == "Active"
    assert person.mfa_enabled is True and person.attributes["console_password"] is True
    svc = session.scalar(select(Account).where(Account.source_id == source.id, Account.login == "svc-deploy-01"))
    assert svc.kind == "service" and svc.attributes["console_password"] is False
    for op in ("ListAccessKeys", "GetAccessKeyLastUsed", "ListMFADevices", "GetLoginProfile"):
        assert conn.counter.by_operation[f"iam:{op}"] > 0
    # privileged_policies: ReadOnlyAccess counts as privileged for this source
    readonly = session.scalar(select(Entitlement).where(Entitlement.source_id == source.id,
                                                        Entitlement.name == "PermissionSet:ReadOnly",
                                                        Entitlement.part == f"aws:{acct}"))
    assert readonly.privileged and readonly.attributes["privileged_reasons"] == ["managed policy ReadOnlyAccess"]


# --- revoke ------------------------------------------------------------------------------------------------


def _sync(factory, settings):
    result = run_sync(factory, settings, "aws", connector=connector())
    assert result.status == "succeeded", result.error
    return result


def test_revoke_iam_group_membership_dry_run_real_verified_then_undo(org, factory, session, settings, source):
    _sync(factory, settings)
    acct = org.account_ids[1]
    user = org.iam_users[acct][1]
    key = f"arn:aws:iam::{acct}:group/ReadOnly:member|a|arn:aws:iam::{acct}:user/{user}"
    grant = active(session, source.id, key)
    ref = grant_ref(session, grant)
    conn = connector()
    dry = conn.revoke(ref, dry_run=True)
    assert dry.dry_run and dry.calls == (f"iam:RemoveUserFromGroup account={acct} GroupName=ReadOnly UserName={user}",)
    assert _sync(factory, settings).stats["ended"]["grants"] == 0  # a dry run changes nothing
    done = conn.revoke(ref, dry_run=False)
    assert not done.dry_run and not done.already_gone
    again = conn.revoke(ref, dry_run=False)  # idempotent
    assert again.already_gone and again.calls == ()
    _sync(factory, settings)
    session.expire_all()
    assert active(session, source.id, key) is None  # verified by the next sync
    undo = conn.grant(ref, dry_run=False)
    assert undo.calls == (f"iam:AddUserToGroup account={acct} GroupName=ReadOnly UserName={user}",)
    assert conn.grant(ref, dry_run=False).already_gone
    _sync(factory, settings)
    assert active(session, source.id, key) is not None


def test_revoke_detaches_a_managed_policy_from_a_role_and_a_group(org, factory, session, settings, source):
    _sync(factory, settings)
    acct = org.account_ids[2]
    role_key = (f"iam-policy:{acct}:arn:aws:iam::aws:policy/ReadOnlyAccess:attached"
                f"|a|arn:aws:iam::{acct}:role/vendor-auditor")
    group_key = (f"iam-policy:{acct}:arn:aws:iam::aws:policy/ReadOnlyAccess:attached"
                 f"|r|arn:aws:iam::{acct}:group/ReadOnly")
    conn = connector()
    refs = [grant_ref(session, active(session, source.id, k)) for k in (role_key, group_key)]
    results = [conn.revoke(r, dry_run=False) for r in refs]
    assert results[0].calls == (f"iam:DetachRolePolicy account={acct} RoleName=vendor-auditor "
                                "PolicyArn=arn:aws:iam::aws:policy/ReadOnlyAccess",)
    assert results[1].calls[0].startswith("iam:DetachGroupPolicy")
    _sync(factory, settings)
    session.expire_all()
    assert active(session, source.id, role_key) is None and active(session, source.id, group_key) is None
    for r in refs:
        assert conn.grant(r, dry_run=False).calls[0].startswith("iam:Attach")
    _sync(factory, settings)
    assert active(session, source.id, role_key) and active(session, source.id, group_key)


def test_revoke_identity_center_assignment_waits_for_the_deletion(org, factory, session, settings, source):
    _sync(factory, settings)
    acct, ps_arn, ptype, pid = next(a for a in org.assignments if a[2] == "USER" and a[0] != org.management_id)
    key = f"ps:{acct}:{ps_arn.rsplit('/', 1)[-1]}|a|idc-user:{pid}"
    ref = grant_ref(session, active(session, source.id, key))
    conn = connector()
    polled: list[str] = []

    def in_progress(parsed, **_):  # AWS answers IN_PROGRESS first; moto finishes at once
        for key in ("AccountAssignmentDeletionStatus", "AccountAssignmentCreationStatus"):
            if key in parsed:
                parsed[key]["Status"] = "IN_PROGRESS"

    conn.hooks += [("after-call.sso-admin.DeleteAccountAssignment", in_progress),
                   ("after-call.sso-admin.CreateAccountAssignment", in_progress),
                   ("before-call.sso-admin", lambda model, **_: polled.append(model.name))]
    dry = conn.revoke(ref)
    assert dry.calls[0] == (f"sso:DeleteAccountAssignment TargetId={acct} PermissionSetArn={ps_arn} "
                            f"PrincipalType=USER PrincipalId={pid}")
    assert "DeleteAccountAssignment" not in polled
    done = conn.revoke(ref, dry_run=False)
    assert not done.already_gone
    # then a follow-up read confirms the assignment is gone before the revoke is reported done
    assert polled[-3:] == ["DeleteAccountAssignment", "DescribeAccountAssignmentDeletionStatus", "ListAccountAssignments"]
    assert conn.revoke(ref, dry_run=False).already_gone
    _sync(factory, settings)
    session.expire_all()
    assert active(session, source.id, key) is None
    conn.grant(ref, dry_run=False)
    assert polled[-3:] == ["CreateAccountAssignment", "DescribeAccountAssignmentCreationStatus", "ListAccountAssignments"]
    _sync(factory, settings)
    assert active(session, source.id, key) is not None


def test_revoke_identity_center_group_membership(org, factory, session, settings, source):
    _sync(factory, settings)
    gid = org.ic_groups["aws-developers"]
    uid = org.ic_members[gid][0]
    key = f"idc-group:{gid}:member|a|idc-user:{uid}"
    ref = grant_ref(session, active(session, source.id, key))
    conn = connector()
    result = conn.revoke(ref, dry_run=False)
    assert result.calls[0].startswith(f"identitystore:DeleteGroupMembership IdentityStoreId={org.store_id}")
    assert conn.revoke(ref, dry_run=False).already_gone
    _sync(factory, settings)
    session.expire_all()
    assert active(session, source.id, key) is None
    assert conn.grant(ref, dry_run=False).calls[0].startswith("identitystore:CreateGroupMembership")
    _sync(factory, settings)
    assert active(session, source.id, key) is not None


def test_revoking_for_a_deleted_principal_is_already_gone_and_its_undo_says_why(org):
    from attest.connectors.base import ConnectorError

    acct = org.account_ids[1]
    membership = GrantRef(source_kind="aws", key="k", entitlement_ref=f"arn:aws:iam::{acct}:group/ReadOnly:member",
                          entitlement_name="member", resource_ref=f"arn:aws:iam::{acct}:group/ReadOnly",
                          resource_type="aws_iam_group", principal_type="account",
                          principal_ref=f"arn:aws:iam::{acct}:user/departed",
                          entitlement_attributes={"kind": "iam_group_membership", "group_name": "ReadOnly",
                                                  "account_id": acct})
    policy_arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    attachment = GrantRef(source_kind="aws", key="k", entitlement_ref=f"iam-policy:{acct}:{policy_arn}:attached",
                          entitlement_name="Policy:ReadOnlyAccess", resource_ref=f"iam-policy:{acct}:{policy_arn}",
                          resource_type="aws_iam_policy", principal_type="account",
                          principal_ref=f"arn:aws:iam::{acct}:role/decommissioned",
                          entitlement_attributes={"kind": "iam_policy", "policy_arn": policy_arn, "account_id": acct})
    conn = connector()
    for ref in (membership, attachment):
        gone = conn.revoke(ref, dry_run=False)
        assert gone.already_gone and gone.calls == () and "no longer exists" in gone.detail
        with pytest.raises(ConnectorError, match="no longer exists"):
            conn.grant(ref, dry_run=False)


def test_inline_policies_are_not_revoked_automatically(org, factory, session, settings, source):
    _sync(factory, settings)
    acct = org.account_ids[0]
    user = org.iam_users[acct][1]
    arn = f"arn:aws:iam::{acct}:user/{user}"
    ref = grant_ref(session, active(session, source.id, f"{arn}:inline:read-logs|a|{arn}"))
    with pytest.raises(RevokeRefused, match="inline policy"):
        connector().revoke(ref)


def test_last_administrator_path_to_the_management_account_is_refused(org, factory, session, settings, source):
    """Management-account admin paths in the seed: the IAM user in Admins, and the two Identity Center
    users of aws-admins (AdministratorAccess on the management account)."""
    _sync(factory, settings)
    mgmt = org.management_id
    gid = org.ic_groups["aws-admins"]
    u0, u1 = org.ic_members[gid]
    admin_user = org.iam_users[mgmt][0]
    conn = connector()
    refs = [grant_ref(session, active(session, source.id, f"idc-group:{gid}:member|a|idc-user:{u}")) for u in (u0, u1)]
    iam_ref = grant_ref(session, active(session, source.id,
                                        f"arn:aws:iam::{mgmt}:group/Admins:member|a|arn:aws:iam::{mgmt}:user/{admin_user}"))
    try:
        assert not conn.revoke(refs[0], dry_run=False).already_gone
        assert not conn.revoke(refs[1], dry_run=False).already_gone  # the IAM administrator remains
        with pytest.raises(RevokeRefused, match=f"last administrator path to the management account {mgmt}"):
            conn.revoke(iam_ref, dry_run=True)  # a dry run is refused too
        with pytest.raises(RevokeRefused, match=f"IAM user {admin_user}"):
            conn.revoke(iam_ref, dry_run=False)
        assert boto("iam").list_groups_for_user(UserName=admin_user)["Groups"][0]["GroupName"] == "Admins"
    finally:
        for r in refs:
            conn.grant(r, dry_run=False)
    assert conn.revoke(iam_ref, dry_run=True).calls  # with the others back, it would be allowed
