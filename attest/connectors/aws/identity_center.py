"""IAM Identity Center: the instance, identity-store users, groups and members, permission sets and
the account assignments of an account (with the entitlement and grant records they become).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from attest.connectors.aws.errors import describe, error_code
from attest.connectors.aws.policies import admin_statements, iam_admin_statements, policy_name_from_arn
from attest.connectors.aws.transforms import (
    OrgAccount,
    PermissionSetInfo,
    account_part,
    account_ref,
    permission_set_entitlement_ref,
    permission_set_id,
)
from attest.connectors.base import ConnectorError, EntitlementRecord, GrantRecord, Record


@dataclass
class IdentityCenter:
    instance_arn: str
    store_id: str



class IdentityCenterMixin:
    """Reads Identity Center (region `ic_region`); `_ic` caches the instance (None when there is none).
    Uses SessionsMixin's `_client` and `_pages`; `_assignment_records` notes, under `_lock`, what the
    sync resolves once every account is read (`_sso_by_account`, `_privileged_groups`)."""

    ic_region: str
    extra_privileged: list[str]
    _ic: IdentityCenter | None
    _ic_note: str | None
    _lock: threading.Lock
    _sso_by_account: dict[str, dict[str, list[tuple[str, str]]]]
    _privileged_groups: dict[str, set[str]]
    _client: Callable[..., Any]
    _pages: Callable[..., Iterator[dict[str, Any]]]

    def _identity_center(self) -> IdentityCenter | None:
        if hasattr(self, "_ic"):
            return self._ic
        sso = self._client("sso-admin", region=self.ic_region)
        try:
            instances = list(self._pages(sso, "list_instances", "Instances"))
        except ClientError as exc:
            code = error_code(exc)
            if code != "AccessDeniedException":
                raise
            self._ic, self._ic_note = None, (
                f"IAM Identity Center in {self.ic_region} is not readable with these credentials (AccessDenied); "
                "only IAM was synced")
            return None
        if not instances:
            self._ic, self._ic_note = None, f"no IAM Identity Center instance in {self.ic_region}; only IAM was synced"
            return None
        inst = instances[0]
        self._ic, self._ic_note = IdentityCenter(inst["InstanceArn"], inst["IdentityStoreId"]), None
        return self._ic

    def _read_permission_set(self, ic: IdentityCenter, arn: str) -> PermissionSetInfo:
        sso = self._client("sso-admin", region=self.ic_region)
        ps = sso.describe_permission_set(InstanceArn=ic.instance_arn, PermissionSetArn=arn)["PermissionSet"]
        info = PermissionSetInfo(arn=arn, name=ps.get("Name") or permission_set_id(arn),
                                 description=ps.get("Description"), session_duration=ps.get("SessionDuration"))
        info.managed_policies = [p["Arn"] for p in self._pages(
            sso, "list_managed_policies_in_permission_set", "AttachedManagedPolicies",
            InstanceArn=ic.instance_arn, PermissionSetArn=arn)]
        info.customer_managed = [f"{p.get('Path') or '/'}{p['Name']}" for p in self._pages(
            sso, "list_customer_managed_policy_references_in_permission_set", "CustomerManagedPolicyReferences",
            InstanceArn=ic.instance_arn, PermissionSetArn=arn)]
        doc = sso.get_inline_policy_for_permission_set(InstanceArn=ic.instance_arn, PermissionSetArn=arn).get("InlinePolicy")
        info.has_inline = bool(doc)
        info.inline_reasons = admin_statements(doc) if doc else []
        info.inline_iam_admin = iam_admin_statements(doc) if doc else []
        return info

    def _read_ic_users(self, ic: IdentityCenter) -> list[dict[str, Any]]:
        store = self._client("identitystore", region=self.ic_region)
        return list(self._pages(store, "list_users", "Users", IdentityStoreId=ic.store_id))

    def _read_ic_groups(self, ic: IdentityCenter) -> list[dict[str, Any]]:
        store = self._client("identitystore", region=self.ic_region)
        return list(self._pages(store, "list_groups", "Groups", IdentityStoreId=ic.store_id))

    def _read_ic_members(self, ic: IdentityCenter, group_id: str) -> list[str]:
        store = self._client("identitystore", region=self.ic_region)
        return [m["MemberId"]["UserId"] for m in self._pages(
            store, "list_group_memberships", "GroupMemberships", IdentityStoreId=ic.store_id, GroupId=group_id)
            if (m.get("MemberId") or {}).get("UserId")]

    def _read_assignments(self, ic: IdentityCenter, account_id: str) -> dict[str, list[dict[str, Any]]]:
        """Permission set ARN -> its assignments on this account (the sets provisioned to it, even unassigned)."""
        sso = self._client("sso-admin", region=self.ic_region)
        out: dict[str, list[dict[str, Any]]] = {}
        for ps_arn in self._pages(sso, "list_permission_sets_provisioned_to_account", "PermissionSets",
                                  InstanceArn=ic.instance_arn, AccountId=account_id):
            out[ps_arn] = list(self._pages(sso, "list_account_assignments", "AccountAssignments",
                                           InstanceArn=ic.instance_arn, AccountId=account_id, PermissionSetArn=ps_arn))
        return out

    def _assignment_records(self, ic: IdentityCenter, acct: OrgAccount, catalog: Mapping[str, PermissionSetInfo],
                            local_admin: Mapping[str, list[str]], scps: Iterable[str] = ()) -> Iterator[Record]:
        scp_names = sorted(set(scps))
        part = account_part(acct.id)
        label = f"{acct.name} ({acct.id})"
        for ps_arn, assignments in self._read_assignments(ic, acct.id).items():
            info = catalog.get(ps_arn)
            if info is None:  # created after the catalog was read; the next run will see it
                continue
            reasons = info.privileged_reasons(self.extra_privileged, local_admin)
            ref = permission_set_entitlement_ref(acct.id, ps_arn)
            yield EntitlementRecord(
                external_id=ref, resource_ref=account_ref(acct.id), name=f"PermissionSet:{info.name}",
                display_name=f"Permission set {info.name} on account {label}", description=info.description,
                purpose="permission", privileged=bool(reasons), part=part,
                attributes={"kind": "sso_permission_set", "account_id": acct.id, "permission_set_arn": ps_arn,
                            "permission_set_name": info.name, "instance_arn": ic.instance_arn,
                            "identity_store_id": ic.store_id, "managed_policies": [policy_name_from_arn(a) for a in info.managed_policies],
                            "customer_managed_policies": info.customer_managed, "inline_policy": info.has_inline,
                            "session_duration": info.session_duration, "privileged_reasons": reasons,
                            **({"limited_by": [f"SCP {n}" for n in scp_names],
                                "privileged_note": "administrator, limited by "
                                                   + ", ".join(f"SCP {n}" for n in scp_names)}
                               if reasons and scp_names else {})},
            )
            with self._lock:
                self._sso_by_account.setdefault(acct.id, {})[info.name] = [
                    (str(a.get("PrincipalType")), str(a.get("PrincipalId"))) for a in assignments]
            for a in assignments:
                ptype = a.get("PrincipalType")
                if ptype == "USER":
                    yield GrantRecord(entitlement_ref=ref, principal_ref=f"idc-user:{a['PrincipalId']}", part=part)
                elif ptype == "GROUP":
                    with self._lock:
                        self._privileged_groups.setdefault(a["PrincipalId"], set())
                        if reasons:
                            self._privileged_groups[a["PrincipalId"]].add(f"{info.name} on {label}")
                    yield GrantRecord(entitlement_ref=ref, principal_ref=f"idc-group:{a['PrincipalId']}",
                                      principal_type="resource", part=part)


def identity_center_failed(exc: BaseException) -> NoReturn:
    """What a failed Identity Center read means: the run fails (an Identity Center read is source-wide,
    and partial Identity Center data must end nothing), with AWS's refusal in words."""
    if isinstance(exc, ClientError):
        raise ConnectorError(f"IAM Identity Center: {exc.operation_name} failed: "
                             f"{describe(exc, operation=False)}") from None
    if isinstance(exc, BotoCoreError):
        raise ConnectorError(f"IAM Identity Center could not be read: {exc}") from None
    raise exc
