"""The AWS connector against moto answering as AWS documents it (issue 17): one test per defect found
against a multi-account organization, each citing the AWS reference its fake follows.

The organization is seeded once for the module (moto's managed-policy loading is slow); every test puts
back what it changes. moto gaps are listed in attest/connectors/sandbox/aws_moto.py; where moto differs
from AWS the test makes it answer as AWS does (credential_reports_as_aws, the AccessDenied hook of
test_aws.deny_assume_role).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from attest.connectors.base import RevokeRefused
from attest.entitlements.models import AccessChange, Account, Entitlement, Grant, Resource
from attest.entitlements.sync import run_sync
from tests.connectors.test_aws import (
    SETTINGS,
    active,
    aws_error,
    boto,
    connector,
    deny_assume_role,
    grant_ref,
)
from tests.factories import login_as, make_identity, make_user

moto = pytest.importorskip("moto")

DENY_IAM_SCP = {"Version": "2012-10-17", "Statement": [
    {"Sid": "NoIamAdmin", "Effect": "Deny", "Action": ["iam:*"], "Resource": "*"}]}


def _sync(factory, settings, conn=None, status="succeeded"):
    result = run_sync(factory, settings, "aws", connector=conn or connector())
    assert result.status == status, (result.error, result.failed_parts)
    return result


def _account(session, source_id, arn) -> Account:
    session.expire_all()
    return session.scalar(select(Account).where(Account.source_id == source_id, Account.external_id == arn))


def _entitlement(session, source_id, ref) -> Entitlement:
    session.expire_all()
    return session.scalar(select(Entitlement).where(Entitlement.source_id == source_id, Entitlement.external_id == ref))


# --- the credential report is reused for up to four hours ------------------------------------------------


def test_user_created_after_the_credential_report_is_read_user_by_user(org, factory, session, settings, source):
    """AWS reuses a credential report for up to four hours (GenerateCredentialReport:
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_GenerateCredentialReport.html; IAM user guide,
    "Getting credential reports for your AWS account"): a user created since is missing from it. Such users
    get the per-user calls (ListAccessKeys, GetLoginProfile, ListMFADevices) and say so."""
    from attest.connectors.sandbox.aws_moto import credential_reports_as_aws

    acct = org.account_ids[1]
    iam = boto("iam", acct)
    with credential_reports_as_aws():
        assert iam.generate_credential_report()["State"] == "STARTED"
        generated = iam.get_credential_report()["GeneratedTime"]
        # created after the report: a person (console password, no e-mail tag) and a key-only robot
        iam.create_user(UserName="late.joiner")
        iam.create_login_profile(UserName="late.joiner", Password="Late-password-1!")
        iam.create_access_key(UserName="late.joiner")
        iam.create_user(UserName="late-robot")
        iam.create_access_key(UserName="late-robot")
        try:
            assert iam.generate_credential_report()["State"] == "COMPLETE"  # reused, not regenerated
            assert iam.get_credential_report()["GeneratedTime"] == generated
            assert b"late.joiner" not in iam.get_credential_report()["Content"]
            conn = connector()
            result = _sync(factory, settings, conn)
            person = _account(session, source.id, f"arn:aws:iam::{acct}:user/late.joiner")
            assert person.attributes["credentials_from"] == "per_user_calls"
            assert person.attributes["console_password"] is True
            assert person.attributes["active_access_keys"] == 1
            assert person.mfa_enabled is False  # known: no MFA device (not unknown)
            assert person.kind == "human"  # a console password: a person, e-mail tag or not
            robot = _account(session, source.id, f"arn:aws:iam::{acct}:user/late-robot")
            assert robot.kind == "service" and robot.attributes["console_password"] is False
            assert robot.attributes["active_access_keys"] == 1
            # the users in the report still come from it, and the per-user calls were really made
            first = org.iam_users[acct][0]
            assert _account(session, source.id, f"arn:aws:iam::{acct}:user/{first}").attributes[
                "credentials_from"] == "credential_report"
            for op in ("ListAccessKeys", "GetLoginProfile", "ListMFADevices"):
                assert conn.counter.by_operation[f"iam:{op}"] == 2, op  # the two late users only
            assert any("created after the credential report" in n for n in result.notes)
        finally:
            for name in ("late.joiner", "late-robot"):
                for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
                    iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
            iam.delete_login_profile(UserName="late.joiner")
            iam.delete_user(UserName="late.joiner")
            iam.delete_user(UserName="late-robot")


def test_a_report_older_than_four_hours_is_generated_again(org, factory, session, settings, source):
    from attest.connectors.sandbox.aws_moto import credential_reports_as_aws

    clock = {"now": datetime.now(UTC) - timedelta(hours=5)}
    acct = org.account_ids[2]
    iam = boto("iam", acct)
    with credential_reports_as_aws(clock=lambda: clock["now"]):
        iam.generate_credential_report()
        clock["now"] = datetime.now(UTC)
        iam.create_user(UserName="after-old-report")
        try:
            conn = connector()
            _sync(factory, settings, conn)
            # the 5-hour-old report is not used: a new one is generated and holds the new user
            assert conn.counter.by_operation["iam:GenerateCredentialReport"] >= 1
            user = _account(session, source.id, f"arn:aws:iam::{acct}:user/after-old-report")
            assert user.attributes["credentials_from"] == "credential_report"
        finally:
            iam.delete_user(UserName="after-old-report")


# --- a partial run keeps what it derived from the unread account ------------------------------------------


def test_partial_run_keeps_the_privileged_flag_derived_from_the_unread_account(org, factory, session, settings,
                                                                             source):
    """An Identity Center group is privileged through its account assignments. When the only account
    holding its admin assignment cannot be read (AssumeRole answered AccessDenied:
    https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors), the
    partial run keeps the group membership's privileged flag and reasons as they were."""
    broken = org.account_ids[1]
    store, sso = boto("identitystore"), boto("sso-admin")
    gid = store.create_group(IdentityStoreId=org.store_id, DisplayName="prod-breakglass")["GroupId"]
    uid = next(iter(org.ic_users.values()))
    mid = store.create_group_membership(IdentityStoreId=org.store_id, GroupId=gid, MemberId={"UserId": uid})["MembershipId"]
    admin_ps = org.permission_sets["AdministratorAccess"]
    args = {"InstanceArn": org.instance_arn, "TargetId": broken, "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": admin_ps, "PrincipalType": "GROUP", "PrincipalId": gid}
    sso.create_account_assignment(**args)
    try:
        _sync(factory, settings)
        ref = f"idc-group:{gid}:member"
        before = _entitlement(session, source.id, ref)
        assert before.privileged and before.attributes["privileged_via"]
        via, record_hash = list(before.attributes["privileged_via"]), before.record_hash
        broken_account = session.scalar(select(Resource).where(Resource.source_id == source.id,
                                                               Resource.external_id == f"account:{broken}"))
        account_attrs = dict(broken_account.attributes)

        def privileged_grants() -> int:
            session.expire_all()
            return len(session.scalars(select(Grant.id).join(Entitlement, Grant.entitlement_id == Entitlement.id).where(
                Grant.source_id == source.id, Grant.ended_at.is_(None), Entitlement.privileged.is_(True))).all())

        n_privileged = privileged_grants()
        conn = connector()
        conn.hooks.append(deny_assume_role(broken))
        partial = _sync(factory, settings, conn, status="partial")
        assert [p["part"] for p in partial.failed_parts] == [f"aws:{broken}", "aws:trust"]  # trust paths span accounts: kept too
        after = _entitlement(session, source.id, ref)
        assert after.privileged is True
        assert after.attributes["privileged_via"] == via and after.record_hash == record_hash
        assert after.part is None
        assert privileged_grants() == n_privileged
        session.expire_all()
        assert session.get(Resource, broken_account.id).attributes == account_attrs
        # the next full run recomputes it from every account
        _sync(factory, settings)
        assert _entitlement(session, source.id, ref).privileged
    finally:
        sso.delete_account_assignment(**args)
        store.delete_group_membership(IdentityStoreId=org.store_id, MembershipId=mid)
        store.delete_group(IdentityStoreId=org.store_id, GroupId=gid)


# --- the last-administrator guard: PowerUserAccess cannot manage IAM --------------------------------------


def test_power_user_is_not_an_administrator_path(org, factory, session, settings, source):
    """PowerUserAccess allows everything except iam:*, organizations:* and account:*
    (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/PowerUserAccess.html): its holder
    cannot make anyone an administrator, so it does not keep the last administrator removable."""
    mgmt = org.management_id
    iam = boto("iam")
    iam.create_user(UserName="power.user", Tags=[{"Key": "email", "Value": "power@demo.example"}])
    iam.create_login_profile(UserName="power.user", Password="Power-password-1!")
    iam.attach_user_policy(UserName="power.user", PolicyArn="arn:aws:iam::aws:policy/PowerUserAccess")
    _sync(factory, settings)
    gid = org.ic_groups["aws-admins"]
    conn = connector()
    refs = [grant_ref(session, active(session, source.id, f"idc-group:{gid}:member|a|idc-user:{u}"))
            for u in org.ic_members[gid]]
    admin_user = org.iam_users[mgmt][0]
    iam_ref = grant_ref(session, active(session, source.id,
                                        f"arn:aws:iam::{mgmt}:group/Admins:member|a|arn:aws:iam::{mgmt}:user/{admin_user}"))
    try:
        for r in refs:
            conn.revoke(r, dry_run=False)
        with pytest.raises(RevokeRefused, match=f"last administrator path to the management account {mgmt}"):
            conn.revoke(iam_ref, dry_run=True)
        # an inline policy allowing iam:* on * is an administrator path
        iam.put_user_policy(UserName="power.user", PolicyName="iam-admin", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}))
        assert connector().revoke(iam_ref, dry_run=True).calls
    finally:
        for r in refs:
            conn.grant(r, dry_run=False)
        iam.delete_user_policy(UserName="power.user", PolicyName="iam-admin") if iam.list_user_policies(
            UserName="power.user")["PolicyNames"] else None
        iam.detach_user_policy(UserName="power.user", PolicyArn="arn:aws:iam::aws:policy/PowerUserAccess")
        iam.delete_login_profile(UserName="power.user")
        iam.delete_user(UserName="power.user")


# --- Attest's own access is not revoked through Attest -----------------------------------------------------


def test_revoke_refuses_the_role_attest_assumes(org, factory, session, settings, source):
    """The role Attest assumes in a member account (sts:AssumeRole; the session's identity is the role:
    https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html) is Attest's own access:
    detaching a policy from it is refused, dry run included."""
    acct = org.account_ids[1]
    iam = boto("iam", acct)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    iam.attach_role_policy(RoleName="AttestAudit", PolicyArn=admin)
    try:
        _sync(factory, settings)
        role = f"arn:aws:iam::{acct}:role/AttestAudit"
        ref = grant_ref(session, active(session, source.id, f"iam-policy:{acct}:{admin}:attached|a|{role}"))
        with pytest.raises(RevokeRefused, match="is the role Attest assumes in account"):
            connector().revoke(ref, dry_run=True)
        with pytest.raises(RevokeRefused, match="Attest could no longer read"):
            connector().revoke(ref, dry_run=False)
        assert any(p["PolicyArn"] == admin for p in iam.list_attached_role_policies(RoleName="AttestAudit")["AttachedPolicies"])
        # another role's grant is not Attest's own
        other = grant_ref(session, active(session, source.id, f"iam-policy:{acct}:arn:aws:iam::aws:policy/ReadOnlyAccess"
                                                              f":attached|a|arn:aws:iam::{acct}:role/vendor-auditor"))
        assert connector().revoke(other, dry_run=True).calls
    finally:
        iam.detach_role_policy(RoleName="AttestAudit", PolicyArn=admin)


def test_revoke_refuses_the_iam_user_of_attests_own_credentials(org, factory, session, settings, source):
    """With an IAM user's access key as the base credentials, GetCallerIdentity names that user
    (arn:aws:iam::<account>:user/<name>); its own group membership is not revoked through Attest."""
    mgmt = org.management_id
    iam = boto("iam")
    iam.create_user(UserName="attest-reader")
    iam.add_user_to_group(GroupName="ReadOnly", UserName="attest-reader")
    key = iam.create_access_key(UserName="attest-reader")["AccessKey"]
    try:
        from attest.connectors.aws import AwsConnector

        conn = AwsConnector(SETTINGS, {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]})
        _sync(factory, settings, conn)
        ref = grant_ref(session, active(session, source.id, f"arn:aws:iam::{mgmt}:group/ReadOnly:member"
                                                            f"|a|arn:aws:iam::{mgmt}:user/attest-reader"))
        own = AwsConnector(SETTINGS, {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]})
        with pytest.raises(RevokeRefused, match="Attest's own credentials"):
            own.revoke(ref, dry_run=True)
        assert connector().revoke(ref, dry_run=True).calls  # other credentials: not their own user
    finally:
        iam.delete_access_key(UserName="attest-reader", AccessKeyId=key["AccessKeyId"])
        iam.remove_user_from_group(GroupName="ReadOnly", UserName="attest-reader")
        iam.delete_user(UserName="attest-reader")


# --- access keys are in the access history ----------------------------------------------------------------


@pytest.mark.slow
def test_access_keys_created_deactivated_and_deleted_are_access_changes(org, factory, session, settings, source):
    """Access keys (CreateAccessKey, UpdateAccessKey Status=Inactive, DeleteAccessKey:
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateAccessKey.html) held by a user are grants:
    each change is an AccessChange of the run that saw it."""
    acct = org.account_ids[2]
    user = org.iam_users[acct][1]  # a person without a key in the seed
    user_arn = f"arn:aws:iam::{acct}:user/{user}"
    iam = boto("iam", acct)
    _sync(factory, settings)

    def key_changes() -> list[tuple[str, str | None]]:
        session.expire_all()
        rows = session.execute(select(AccessChange.change, AccessChange.reason).join(Grant, AccessChange.grant_id == Grant.id)
                               .join(Entitlement, Grant.entitlement_id == Entitlement.id)
                               .where(AccessChange.source_id == source.id, Grant.principal_account_id.is_not(None),
                                      Entitlement.external_id.like(f"{user_arn}:access-key:%"))
                               .order_by(AccessChange.id)).all()
        return [tuple(r) for r in rows]

    assert key_changes() == []
    key = iam.create_access_key(UserName=user)["AccessKey"]
    try:
        _sync(factory, settings)
        assert key_changes() == [("added", None)]
        ent = session.scalar(select(Entitlement).where(Entitlement.source_id == source.id,
                                                       Entitlement.external_id.like(f"{user_arn}:access-key:%")))
        assert ent.attributes["kind"] == "iam_access_key" and ent.ended_at is None
        # revoke = deactivate the key (confirmed by a follow-up read); the next sync ends the grant
        ref = grant_ref(session, active(session, source.id, f"{ent.external_id}|a|{user_arn}"))
        done = connector().revoke(ref, dry_run=False)
        assert done.calls == (f"iam:UpdateAccessKey account={acct} UserName={user} AccessKeyId={key['AccessKeyId']} "
                              "Status=Inactive",)
        assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"][0]["Status"] == "Inactive"
        _sync(factory, settings)
        assert key_changes() == [("added", None), ("ended", "not_seen")]
        iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Active")
        _sync(factory, settings)
        assert key_changes() == [("added", None), ("ended", "not_seen"), ("added", None)]
    finally:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    _sync(factory, settings)
    assert key_changes()[-1] == ("ended", "not_seen")
    session.expire_all()
    assert session.get(Entitlement, ent.id).ended_at is not None  # the key is gone, not only inactive


# --- permission boundaries and SCPs ----------------------------------------------------------------------


def test_role_boundaries_and_scps_are_stored_and_named_beside_privileged_access(org, factory, session, settings,
                                                                                source, app, client):
    """Roles' permission boundaries (RoleDetail.PermissionsBoundary of GetAccountAuthorizationDetails:
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_RoleDetail.html) and service control policies
    (Organizations ListPolicies/DescribePolicy/ListTargetsForPolicy, filter SERVICE_CONTROL_POLICY:
    https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListPolicies.html) are stored; access
    they keep from IAM administration stays privileged, with the limitation beside it. SCPs do not apply to
    the management account."""
    member, mgmt = org.account_ids[1], org.management_id
    iam = boto("iam", member)
    orgs = boto("organizations")
    deploy = f"arn:aws:iam::{member}:policy/DeployApp"
    iam.put_role_permissions_boundary(RoleName="app-runtime", PermissionsBoundary=deploy)
    scp = orgs.create_policy(Name="DenyIamAdmin", Description="no IAM changes in member accounts",
                             Type="SERVICE_CONTROL_POLICY", Content=json.dumps(DENY_IAM_SCP))["Policy"]["PolicySummary"]
    orgs.attach_policy(PolicyId=scp["Id"], TargetId=member)
    admin_user = org.iam_users[member][0]  # in Admins, e-mail tag: linked to this person
    tag = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=admin_user)["Tags"]}
    person = make_identity(session, tag["email"], "Admin Person")
    session.commit()
    try:
        conn = connector()
        _sync(factory, settings, conn)
        for op in ("ListPolicies", "DescribePolicy", "ListTargetsForPolicy"):
            assert conn.counter.by_operation[f"organizations:{op}"] >= 1
        role = _account(session, source.id, f"arn:aws:iam::{member}:role/app-runtime")
        assert role.attributes["permissions_boundary"] == deploy
        assert role.attributes["limited_by"] == ["permissions boundary DeployApp"]
        stored = session.scalar(select(Resource).where(Resource.source_id == source.id,
                                                       Resource.external_id == f"scp:{scp['Id']}"))
        assert stored.type == "aws_scp" and stored.name == "DenyIamAdmin" and member in stored.attributes["targets"]
        assert stored.attributes["denies_iam_admin"] is True
        account = session.scalar(select(Resource).where(Resource.source_id == source.id,
                                                        Resource.external_id == f"account:{member}"))
        assert "DenyIamAdmin" in account.attributes["service_control_policies"]
        admin_ps = org.permission_sets["AdministratorAccess"].rsplit("/", 1)[-1]
        limited = _entitlement(session, source.id, f"ps:{member}:{admin_ps}")
        assert limited.privileged  # still shown as privileged access...
        assert limited.attributes["limited_by"] == ["SCP DenyIamAdmin"]  # ...with its limitation
        assert limited.attributes["privileged_note"] == "administrator, limited by SCP DenyIamAdmin"
        admins = _entitlement(session, source.id, f"arn:aws:iam::{member}:group/Admins:member")
        assert admins.privileged and admins.attributes["limited_by"] == ["SCP DenyIamAdmin"]
        unlimited = _entitlement(session, source.id, f"ps:{mgmt}:{admin_ps}")
        assert unlimited.privileged and "limited_by" not in unlimited.attributes  # SCPs spare the management account
        assert "limited_by" not in _entitlement(session, source.id, f"ps:{member}:{org.permission_sets['ReadOnly'].rsplit('/', 1)[-1]}").attributes
        # the person's page shows the limitation where it shows the privileged access
        admin = make_user(session, "admin@acme.example", roles=["admin"])
        session.commit()
        login_as(app, client, admin)
        page = client.get(f"/identities/{person.id}").get_data(as_text=True)
        assert "Member of IAM group Admins on account" in page
        assert "administrator, limited by SCP DenyIamAdmin" in page
        # SCPs that cannot be read (AccessDenied on ListPolicies) fail their own part: the stored SCPs and
        # the limitations derived from them are kept, while the rest of the run applies
        denied = connector()
        denied.hooks.append(("before-send.organizations.ListPolicies", lambda **_: aws_error(
            400, "AccessDeniedException", "not authorized to perform organizations:ListPolicies", "json")))
        partial = _sync(factory, settings, denied, status="partial")
        assert [p["part"] for p in partial.failed_parts] == ["aws:scps"]
        assert "organizations:ListPolicies" in partial.failed_parts[0]["reason"]
        kept = _entitlement(session, source.id, f"ps:{member}:{admin_ps}")
        assert kept.attributes["limited_by"] == ["SCP DenyIamAdmin"] and kept.part == f"aws:{member}"
        session.expire_all()
        assert session.get(Resource, stored.id).ended_at is None
        assert "DenyIamAdmin" in session.get(Resource, account.id).attributes["service_control_policies"]
    finally:
        orgs.detach_policy(PolicyId=scp["Id"], TargetId=member)
        orgs.delete_policy(PolicyId=scp["Id"])
        iam.delete_role_permissions_boundary(RoleName="app-runtime")


# --- Attest's own role ------------------------------------------------------------------------------------


def test_attest_own_role_is_not_rewritten_by_its_own_assume_role(org, factory, session, settings, source):
    """AWS records a role's last use (RoleLastUsed: https://docs.aws.amazon.com/IAM/latest/APIReference/API_RoleLastUsed.html)
    when its assumed-role credentials are used, Attest's own sync included (moto does the same). That use
    is not stored, so a resync with no change writes nothing for the role."""
    _sync(factory, settings)
    again = _sync(factory, settings)
    assert again.stats["updated"]["accounts"] == 0, again.stats["updated"]
    assert again.stats["updated"]["resources"] == 0 and again.stats["updated"]["entitlements"] == 0
    for acct in org.account_ids[1:]:
        role = _account(session, source.id, f"arn:aws:iam::{acct}:role/AttestAudit")
        assert role.last_login_at is None and role.attributes["attest_role"] is True
        assert "Attest assumes this role" in role.attributes["last_used_note"]
    # moto did record the use (as AWS does): the connector chose not to store it
    last = boto("iam", org.account_ids[1]).get_role(RoleName="AttestAudit")["Role"].get("RoleLastUsed") or {}
    assert last.get("LastUsedDate") is not None


# --- revoke results are honest ---------------------------------------------------------------------------


def test_a_revoke_is_done_only_when_a_follow_up_read_confirms_it(org, factory, session, settings, source, monkeypatch):
    """IAM is eventually consistent (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency):
    a 200 to RemoveUserFromGroup is not proof the access is gone. Here the membership is still there when
    the connector reads it back (re-added behind its back): the revoke is `unconfirmed`, not done; without
    the interference the same revoke is `done`."""
    import attest.connectors.aws.provisioning as aws  # the module whose VERIFY_TRIES the revoke reads

    monkeypatch.setattr(aws, "VERIFY_TRIES", 2)
    _sync(factory, settings)
    acct = org.account_ids[1]
    user = org.iam_users[acct][1]
    ref = grant_ref(session, active(session, source.id,
                                    f"arn:aws:iam::{acct}:group/ReadOnly:member|a|arn:aws:iam::{acct}:user/{user}"))
    iam = boto("iam", acct)

    def still_there(**_):  # AWS answered 200, yet reads still show the membership
        iam.add_user_to_group(GroupName="ReadOnly", UserName=user)

    conn = connector()
    conn.hooks.append(("after-call.iam.RemoveUserFromGroup", still_there))
    try:
        result = conn.revoke(ref, dry_run=False)
        assert result.outcome == "unconfirmed" and not result.already_gone
        assert "follow-up read still shows the access" in result.detail
        assert any(g["GroupName"] == "ReadOnly" for g in iam.list_groups_for_user(UserName=user)["Groups"])
        confirmed = connector().revoke(ref, dry_run=False)
        assert confirmed.outcome == "done" and "unconfirmed" not in confirmed.detail
    finally:
        if not any(g["GroupName"] == "ReadOnly" for g in iam.list_groups_for_user(UserName=user)["Groups"]):
            iam.add_user_to_group(GroupName="ReadOnly", UserName=user)


# --- throttling ----------------------------------------------------------------------------------------------


def test_every_client_uses_botocores_adaptive_retry_mode(org):
    """Throttling per service: botocore's adaptive mode keeps a client-side rate limiter per client, so
    each AWS service (and account) has its own budget
    (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html,
    https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html#adaptive-retry-mode)."""
    conn = connector()
    iam, sso = conn._client("iam"), conn._client("sso-admin")
    assert iam.meta.config.retries["mode"] == "adaptive" and sso.meta.config.retries["mode"] == "adaptive"
    assert iam is not sso
