"""Revoke and its undo (`grant`): the changes the AWS connector can make, each read back.

Each change first reads the live state (already gone -> success, nothing changed), then the guards
(guard.py) refuse Attest's own access and the last administrator path, then the change is made (in a
dry run only listed) and read back: `outcome` "done" only when the follow-up read shows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError

from attest.connectors.aws.errors import AWS_ERRORS, connector_error, error_code
from attest.connectors.aws.identity_center import IdentityCenter
from attest.connectors.aws.policies import policy_name_from_arn
from attest.connectors.aws.transforms import _iso, _parse_dt, parse_iam_arn, permission_set_id
from attest.connectors.base import ChangeRevoker, ConnectorError, GrantRef, RevokeRefused, RevokeResult
from attest.connectors.managed import managed_elsewhere, refusal

_UNCONFIRMED = "; AWS accepted the call, but a follow-up read still shows the access as it was (unconfirmed)"
VERIFY_TRIES = 6  # follow-up reads of a change (0.25 s doubling: about 8 s) before it is called unconfirmed
ASSIGNMENT_WAIT = 120.0  # seconds to wait for an Identity Center assignment change to finish


class ProvisioningMixin(ChangeRevoker):
    """revoke/grant of IAM group memberships, managed policies, access keys, Identity Center assignments
    and group memberships. Reads through the other mixins; refuses through GuardMixin."""

    remediation_role: str
    ic_region: str
    _ic_note: str | None
    _client: Callable[..., Any]
    _pages: Callable[..., Iterator[dict[str, Any]]]
    _account_creds: Callable[[str, str], dict[str, str] | None]
    _identity_center: Callable[[], IdentityCenter | None]
    _iam_user_in_group: Callable[[Any, str, str], bool | None]
    _caller: Callable[[], tuple[str, str, str] | None]
    _refuse_own: Callable[[str, str, str, str], None]
    _guard: Callable[[str | None, set[tuple], GrantRef], None]

    def _change(self, ref: GrantRef, dry_run: bool, undo: bool) -> RevokeResult:
        remove = not undo
        attrs = dict(ref.entitlement_attributes or {})
        kind = attrs.get("kind") or _kind_from_ref(ref.entitlement_ref)
        found = managed_elsewhere(ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
        if remove and found is not None:  # a SCIM group, AWS Organizations' role: the change belongs elsewhere
            raise refusal(found, ref.principal_login or ref.principal_ref,
                          str(attrs.get("group_name") or attrs.get("role_name") or ref.resource_ref))
        try:
            if kind == "iam_group_membership":
                return self._iam_membership(ref, attrs, remove, dry_run)
            if kind == "iam_policy":
                return self._iam_policy(ref, attrs, remove, dry_run)
            if kind == "sso_permission_set":
                return self._sso_assignment(ref, attrs, remove, dry_run)
            if kind == "sso_group_membership":
                return self._sso_membership(ref, attrs, remove, dry_run)
            if kind == "iam_access_key":
                return self._iam_access_key(ref, attrs, remove, dry_run)
            if kind == "iam_inline_policy":
                raise RevokeRefused(
                    f"{ref.entitlement_name} is an inline policy embedded in {attrs.get('principal_arn')}; "
                    "Attest does not rewrite policy documents. Remove it in IAM (iam:Delete*Policy) or ask the owner.")
        except AWS_ERRORS as exc:
            raise connector_error(exc) from None
        raise RevokeRefused(f"grants of kind {kind or ref.entitlement_ref!r} cannot be revoked through the AWS connector")

    def _remediation_creds(self, account_id: str) -> dict[str, str] | None:
        return self._account_creds(account_id, self.remediation_role)

    # IAM group membership
    def _iam_membership(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        account_id, ptype, user = parse_iam_arn(ref.principal_ref)
        group = attrs.get("group_name") or parse_iam_arn(ref.entitlement_ref.removesuffix(":member"))[2]
        if ptype != "user":
            raise RevokeRefused(f"{ref.principal_ref} is not an IAM user")
        iam = self._client("iam", self._remediation_creds(account_id))
        present = self._iam_user_in_group(iam, user, group)
        if present is None and not remove:
            raise ConnectorError(f"IAM user {user} no longer exists in account {account_id}; cannot add it back to {group}")
        verb = "RemoveUserFromGroup" if remove else "AddUserToGroup"
        call = f"iam:{verb} account={account_id} GroupName={group} UserName={user}"
        if present is None or present != remove:
            return RevokeResult((), dry_run, already_gone=True,
                                detail=f"user {user} is {'not ' if remove else 'already '}in group {group}"
                                       if present is not None else f"user {user} no longer exists in {account_id}")
        if remove:
            self._refuse_own(account_id, "user", user, f"remove it from IAM group {group}")
            self._guard(account_id, {("iam_membership", user, group)}, ref)
        outcome = "done"
        if not dry_run:
            getattr(iam, "remove_user_from_group" if remove else "add_user_to_group")(GroupName=group, UserName=user)
            outcome = self._confirm(lambda: bool(self._iam_user_in_group(iam, user, group)) != remove, call)
        return RevokeResult((call,), dry_run, outcome=outcome,
                            detail=f"{'removed' if remove else 'added'} user {user} {'from' if remove else 'to'} "
                                   f"IAM group {group} in {account_id}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")

    def _confirm(self, done: Callable[[], bool], call: str) -> str:
        """"done" only when a follow-up read shows the change; else "unconfirmed" (AWS accepted the call but
        still shows the access as it was: the next sync verifies or flags it). IAM and Identity Center are
        eventually consistent (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency),
        so the read is repeated for a few seconds first."""
        delay = 0.25
        for attempt in range(VERIFY_TRIES):
            if done():
                return "done"
            if attempt + 1 < VERIFY_TRIES:
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        return "unconfirmed"

    # IAM access key (deactivate; the undo activates it again)
    def _iam_access_key(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        account_id, ptype, user = parse_iam_arn(ref.principal_ref)
        if ptype != "user":
            raise RevokeRefused(f"{ref.principal_ref} is not an IAM user")
        created = attrs.get("created_at")
        iam = self._client("iam", self._remediation_creds(account_id))

        def key() -> dict[str, Any] | None:
            try:
                return next((k for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=user)
                             if _iso(_parse_dt(k.get("CreateDate"))) == created), None)
            except ClientError as exc:
                if error_code(exc) == "NoSuchEntity":
                    return None
                raise

        found = key()
        if found is None:
            if not remove:
                raise ConnectorError(f"the access key of IAM user {user} created {created} no longer exists in "
                                     f"account {account_id}; it cannot be activated again")
            return RevokeResult((), dry_run, already_gone=True, detail=f"the access key of {user} created {created} "
                                                                     "no longer exists")
        want = "Inactive" if remove else "Active"
        if found.get("Status") == want:
            return RevokeResult((), dry_run, already_gone=True, detail=f"the access key of {user} is already {want}")
        if remove:
            self._refuse_own(account_id, "user", user, "deactivate its access key")
        call = f"iam:UpdateAccessKey account={account_id} UserName={user} AccessKeyId={found['AccessKeyId']} Status={want}"
        outcome = "done"
        if not dry_run:
            iam.update_access_key(UserName=user, AccessKeyId=found["AccessKeyId"], Status=want)
            outcome = self._confirm(lambda: (key() or {}).get("Status", "Inactive") == want, call)
        return RevokeResult((call,), dry_run, outcome=outcome,
                            detail=f"{'deactivated' if remove else 'activated'} the access key of IAM user {user} "
                                   f"created {created} in {account_id}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")


    def _iam_policy(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        account_id, ptype, name = parse_iam_arn(ref.principal_ref)
        policy_arn = attrs.get("policy_arn") or ref.entitlement_ref.split(":", 2)[2].removesuffix(":attached")
        if ptype not in ("user", "group", "role"):
            raise RevokeRefused(f"cannot detach a policy from {ref.principal_ref}")
        title = ptype.capitalize()
        iam = self._client("iam", self._remediation_creds(account_id))
        try:
            attached = any(p["PolicyArn"] == policy_arn for p in self._pages(
                iam, f"list_attached_{ptype}_policies", "AttachedPolicies", **{f"{title}Name": name}))
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            if not remove:
                raise ConnectorError(f"IAM {ptype} {name} no longer exists in account {account_id}; "
                                     f"cannot attach {policy_name_from_arn(policy_arn)} to it again") from None
            return RevokeResult((), dry_run, already_gone=True, detail=f"{ptype} {name} no longer exists in {account_id}")
        pname = policy_name_from_arn(policy_arn)
        if attached != remove:
            return RevokeResult((), dry_run, already_gone=True,
                                detail=f"policy {pname} is {'not ' if remove else 'already '}attached to {ptype} {name}")
        if remove:
            what = f"detach {pname} from it"
            if ptype == "group":
                caller = self._caller()
                if caller and caller[:2] == (account_id, "user") and self._iam_user_in_group(iam, caller[2], name):
                    self._refuse_own(account_id, "user", caller[2], f"detach {pname} from its IAM group {name}")
            else:
                self._refuse_own(account_id, ptype, name, what)
            self._guard(account_id, {("iam_policy", ptype, name, policy_arn)}, ref)
        verb = f"{'Detach' if remove else 'Attach'}{title}Policy"
        call = f"iam:{verb} account={account_id} {title}Name={name} PolicyArn={policy_arn}"
        outcome = "done"
        if not dry_run:
            getattr(iam, f"{'detach' if remove else 'attach'}_{ptype}_policy")(**{f"{title}Name": name, "PolicyArn": policy_arn})
            outcome = self._confirm(lambda: any(p["PolicyArn"] == policy_arn for p in self._pages(
                iam, f"list_attached_{ptype}_policies", "AttachedPolicies", **{f"{title}Name": name})) != remove, call)
        return RevokeResult((call,), dry_run, outcome=outcome,
                            detail=f"{'detached' if remove else 'attached'} policy {pname} {'from' if remove else 'to'} "
                                   f"{ptype} {name} in {account_id}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")

    # Identity Center account assignment
    def _sso_assignment(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        ic = self._identity_center()
        if ic is None:
            raise ConnectorError(self._ic_note or "IAM Identity Center is not available")
        account_id = attrs.get("account_id") or ref.entitlement_ref.split(":")[1]
        ps_arn = attrs.get("permission_set_arn")
        if not ps_arn:
            raise RevokeRefused(f"{ref.entitlement_ref} does not name its permission set; sync the source again first")
        instance = attrs.get("instance_arn") or ic.instance_arn
        ptype, pid = _ic_principal(ref.principal_ref)
        sso = self._client("sso-admin", region=self.ic_region)
        present = any(a.get("PrincipalType") == ptype and a.get("PrincipalId") == pid for a in self._pages(
            sso, "list_account_assignments", "AccountAssignments", InstanceArn=instance, AccountId=account_id,
            PermissionSetArn=ps_arn))
        name = attrs.get("permission_set_name") or permission_set_id(ps_arn)
        who = ref.principal_login or f"{ptype.lower()} {pid}"
        if present != remove:
            return RevokeResult((), dry_run, already_gone=True,
                                detail=f"{who} {'has no' if remove else 'already has'} permission set {name} on {account_id}")
        if remove:
            self._guard(account_id, {("sso_assignment", ps_arn, ptype, pid)}, ref)
        verb = "DeleteAccountAssignment" if remove else "CreateAccountAssignment"
        args = {"InstanceArn": instance, "TargetId": account_id, "TargetType": "AWS_ACCOUNT",
                "PermissionSetArn": ps_arn, "PrincipalType": ptype, "PrincipalId": pid}
        calls = (f"sso:{verb} TargetId={account_id} PermissionSetArn={ps_arn} PrincipalType={ptype} PrincipalId={pid}",
                 f"sso:DescribeAccountAssignment{'Deletion' if remove else 'Creation'}Status (until it finishes)")
        outcome = "done"
        if not dry_run:
            if remove:
                status = sso.delete_account_assignment(**args)["AccountAssignmentDeletionStatus"]
            else:
                status = sso.create_account_assignment(**args)["AccountAssignmentCreationStatus"]
            self._wait_assignment(sso, instance, status, remove)
            outcome = self._confirm(lambda: any(a.get("PrincipalType") == ptype and a.get("PrincipalId") == pid for a in self._pages(
                sso, "list_account_assignments", "AccountAssignments", InstanceArn=instance, AccountId=account_id,
                PermissionSetArn=ps_arn)) != remove, calls[0])
        return RevokeResult(calls, dry_run, outcome=outcome,
                            detail=f"{'removed' if remove else 'gave'} permission set {name} on {account_id} "
                                   f"{'from' if remove else 'to'} {who}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")

    def _wait_assignment(self, sso, instance: str, status: Mapping[str, Any], remove: bool) -> None:
        deadline = time.monotonic() + ASSIGNMENT_WAIT
        delay = 0.5
        what = "deletion" if remove else "creation"
        while status.get("Status") == "IN_PROGRESS":
            if time.monotonic() > deadline:
                raise ConnectorError(f"the account assignment {what} (request {status.get('RequestId')}) was still in "
                                     f"progress after {ASSIGNMENT_WAIT:.0f}s; the next sync will show whether it finished")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            if remove:
                status = sso.describe_account_assignment_deletion_status(
                    InstanceArn=instance, AccountAssignmentDeletionRequestId=status["RequestId"])["AccountAssignmentDeletionStatus"]
            else:
                status = sso.describe_account_assignment_creation_status(
                    InstanceArn=instance, AccountAssignmentCreationRequestId=status["RequestId"])["AccountAssignmentCreationStatus"]
        if status.get("Status") == "FAILED":
            raise ConnectorError(f"IAM Identity Center reported the assignment {what} failed: {status.get('FailureReason')}")

    # identity-store group membership
    def _sso_membership(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        ic = self._identity_center()
        if ic is None:
            raise ConnectorError(self._ic_note or "IAM Identity Center is not available")
        store_id = attrs.get("identity_store_id") or ic.store_id
        gid = attrs.get("group_id") or ref.entitlement_ref.split(":")[1]
        ptype, uid = _ic_principal(ref.principal_ref)
        if ptype != "USER":
            raise RevokeRefused("Identity Center groups do not nest; only users can be removed from a group")
        store = self._client("identitystore", region=self.ic_region)
        try:
            membership_id = store.get_group_membership_id(
                IdentityStoreId=store_id, GroupId=gid, MemberId={"UserId": uid})["MembershipId"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            membership_id = None
        group = attrs.get("group_name") or gid
        who = ref.principal_login or uid
        if (membership_id is not None) != remove:
            return RevokeResult((), dry_run, already_gone=True,
                                detail=f"{who} is {'not ' if remove else 'already '}a member of {group}")
        if remove:
            self._guard(None, {("sso_membership", gid, uid)}, ref)
            call = f"identitystore:DeleteGroupMembership IdentityStoreId={store_id} MembershipId={membership_id}"
            if not dry_run:
                store.delete_group_membership(IdentityStoreId=store_id, MembershipId=membership_id)
        else:
            call = f"identitystore:CreateGroupMembership IdentityStoreId={store_id} GroupId={gid} UserId={uid}"
            if not dry_run:
                store.create_group_membership(IdentityStoreId=store_id, GroupId=gid, MemberId={"UserId": uid})

        def member() -> bool:
            try:
                store.get_group_membership_id(IdentityStoreId=store_id, GroupId=gid, MemberId={"UserId": uid})
                return True
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                return False

        outcome = "done"
        if not dry_run:
            outcome = self._confirm(lambda: member() != remove, call)
        return RevokeResult((call,), dry_run, outcome=outcome,
                            detail=f"{'removed' if remove else 'added'} {who} {'from' if remove else 'to'} Identity "
                                   f"Center group {group}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")



def _kind_from_ref(entitlement_ref: str) -> str | None:
    if entitlement_ref.startswith("ps:"):
        return "sso_permission_set"
    if entitlement_ref.startswith("idc-group:") and entitlement_ref.endswith(":member"):
        return "sso_group_membership"
    if entitlement_ref.startswith("iam-policy:") and entitlement_ref.endswith(":attached"):
        return "iam_policy"
    if ":inline:" in entitlement_ref:
        return "iam_inline_policy"
    if ":access-key:" in entitlement_ref:
        return "iam_access_key"
    if ":group/" in entitlement_ref and entitlement_ref.endswith(":member"):
        return "iam_group_membership"
    return None


def _ic_principal(principal_ref: str) -> tuple[str, str]:
    if principal_ref.startswith("idc-user:"):
        return "USER", principal_ref.split(":", 1)[1]
    if principal_ref.startswith("idc-group:"):
        return "GROUP", principal_ref.split(":", 1)[1]
    raise RevokeRefused(f"{principal_ref} is not an Identity Center user or group")
