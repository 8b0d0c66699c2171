"""The admin-path guards of revoke: never remove Attest's own access, never the last administrator path.

Attest's own access is the principal of sts:GetCallerIdentity and the roles it assumes. The last
administrator path to the management account is read live (IAM users of the management account that can
manage IAM and have a credential, Identity Center users holding an IAM-admin permission set on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from attest.connectors.aws.errors import error_code
from attest.connectors.aws.identity_center import IdentityCenter
from attest.connectors.aws.organizations import Org
from attest.connectors.aws.policies import (
    IAM_ADMIN_MANAGED,
    boundary_limits,
    iam_admin_statements,
    local_admin_policies,
    policy_name_from_arn,
)
from attest.connectors.aws.transforms import PermissionSetInfo
from attest.connectors.base import GrantRef, RevokeRefused


class GuardMixin:
    """Refuses a revoke that would cut Attest's own access or the last administrator path. Reads through
    the other mixins (`_client`, `_pages`, `_load_org`, `_read_iam`, `_identity_center`, ...)."""

    role_name: str
    remediation_role: str
    ic_region: str
    _caller_arn: str
    _client: Callable[..., Any]
    _pages: Callable[..., Iterator[dict[str, Any]]]
    _load_org: Callable[[], Org]
    _read_iam: Callable[[Any], dict[str, list[dict[str, Any]]]]
    _identity_center: Callable[[], IdentityCenter | None]
    _read_assignments: Callable[[IdentityCenter, str], dict[str, list[dict[str, Any]]]]
    _read_permission_set: Callable[[IdentityCenter, str], PermissionSetInfo]
    _remediation_creds: Callable[[str], dict[str, str] | None]

    def _caller(self) -> tuple[str, str, str] | None:
        """(account id, 'user'|'role', name) of the base credentials (sts:GetCallerIdentity), None for root."""
        self._load_org()
        arn = self._caller_arn
        parts = arn.split(":", 5)
        if len(parts) != 6:
            return None
        kind, _, rest = parts[5].partition("/")
        if parts[2] == "sts" and kind == "assumed-role":
            return parts[4], "role", rest.split("/", 1)[0]
        if parts[2] == "iam" and kind in ("user", "role"):
            return parts[4], kind, rest.rsplit("/", 1)[-1]
        return None

    def _own_roles(self, account_id: str) -> set[str]:
        """The roles Attest itself assumes in an account: the read and remediation roles of a member
        account, the role of the base credentials in theirs."""
        org = self._load_org()
        out = set() if account_id == org.base_account else {self.role_name, self.remediation_role}
        caller = self._caller()
        if caller and caller[0] == account_id and caller[1] == "role":
            out.add(caller[2])
        return out

    def _own_principal(self, account_id: str, ptype: str, name: str) -> str | None:
        """Why the IAM principal is Attest's own (then its access must not be revoked through Attest)."""
        caller = self._caller()
        if caller and caller == (account_id, ptype, name):
            return f"the {ptype} of Attest's own credentials ({self._caller_arn}, sts:GetCallerIdentity)"
        if ptype == "role" and name in self._own_roles(account_id):
            return f"the role Attest assumes in account {account_id} to read or revoke"
        return None

    def _refuse_own(self, account_id: str, ptype: str, name: str, what: str) -> None:
        why = self._own_principal(account_id, ptype, name)
        if why:
            raise RevokeRefused(
                f"refusing to {what}: {ptype} {name} in account {account_id} is {why}; without this access "
                "Attest could no longer read or revoke AWS access. Change it in IAM yourself if that is intended.")

    def _guard(self, account_id: str | None, removed: set[tuple], ref: GrantRef) -> None:
        """Refuse when the change would leave nobody with an administrator path to the management account.

        Read live (not from the database): IAM users of the management account holding an admin policy
        (directly or through a group) and having a password or an active key, and Identity Center users
        holding a privileged permission set on it (directly or through a group). Root is not counted.
        """
        org = self._load_org()
        mgmt = org.management_id
        if account_id is not None and account_id != mgmt:
            return
        paths = self._admin_paths(mgmt)
        before = {holder for holder, _ in paths}
        after = {holder for holder, edges in paths if not (edges & removed)}
        if before and not after:
            raise RevokeRefused(
                f"refusing to remove the last administrator path to the management account {mgmt}: "
                f"{', '.join(sorted(before))} would lose it and nobody else holds it. Grant another administrator "
                "first, then revoke.")

    def _admin_paths(self, mgmt: str) -> list[tuple[str, frozenset]]:
        paths: list[tuple[str, frozenset]] = []
        iam = self._client("iam", self._remediation_creds(mgmt))
        details = self._read_iam(iam)
        local = {p["Arn"]: p for p in details["Policies"]}

        def admin_policy(arn: str) -> bool:
            """An administrator path is one that can manage IAM (AdministratorAccess, IAMFullAccess, a
            policy allowing * or iam:* on *): PowerUserAccess and other "privileged" policies cannot."""
            if policy_name_from_arn(arn) in IAM_ADMIN_MANAGED and ":iam::aws:policy/" in arn:
                return True
            pol = local.get(arn)
            if not pol:
                return False
            default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
            return bool(default and iam_admin_statements(default.get("Document")))

        group_edges: dict[str, list[frozenset]] = {}
        for g in details["GroupDetailList"]:
            edges = [frozenset({("iam_policy", "group", g["GroupName"], p["PolicyArn"])})
                     for p in g.get("AttachedManagedPolicies", []) if admin_policy(p["PolicyArn"])]
            edges += [frozenset() for p in g.get("GroupPolicyList", []) if iam_admin_statements(p.get("PolicyDocument"))]
            group_edges[g["GroupName"]] = edges
        for u in details["UserDetailList"]:
            name = u["UserName"]
            user_paths = [frozenset({("iam_policy", "user", name, p["PolicyArn"])})
                          for p in u.get("AttachedManagedPolicies", []) if admin_policy(p["PolicyArn"])]
            user_paths += [frozenset() for p in u.get("UserPolicyList", []) if iam_admin_statements(p.get("PolicyDocument"))]
            for group in u.get("GroupList", []):
                user_paths += [e | {("iam_membership", name, group)} for e in group_edges.get(group, [])]
            if not user_paths:
                continue
            boundary = (u.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
            if boundary and boundary_limits(boundary, local):
                continue  # a permissions boundary that does not allow IAM: not an administrator
            if not self._has_credentials(iam, name):
                continue
            paths += [(f"IAM user {name}", e) for e in user_paths]

        ic = self._identity_center()
        if ic is None:
            return paths
        store = self._client("identitystore", region=self.ic_region)
        local_admin = local_admin_policies(details, iam_admin=True)
        for ps_arn, assignments in self._read_assignments(ic, mgmt).items():
            info = self._read_permission_set(ic, ps_arn)
            if not info.iam_admin_reasons(local_admin):
                continue
            for a in assignments:
                pid = a["PrincipalId"]
                edge = ("sso_assignment", ps_arn, a["PrincipalType"], pid)
                if a["PrincipalType"] == "USER":
                    paths.append((f"Identity Center user {pid}", frozenset({edge})))
                else:
                    try:
                        members = list(self._pages(store, "list_group_memberships", "GroupMemberships",
                                                   IdentityStoreId=ic.store_id, GroupId=pid))
                    except ClientError:
                        members = []
                    for m in members:
                        uid = (m.get("MemberId") or {}).get("UserId")
                        if uid:
                            paths.append((f"Identity Center user {uid}",
                                          frozenset({edge, ("sso_membership", pid, uid)})))
        return paths

    def _has_credentials(self, iam, user: str) -> bool:
        try:
            iam.get_login_profile(UserName=user)
            return True
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
        return any(k.get("Status") == "Active" for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata",
                                                                     UserName=user))

