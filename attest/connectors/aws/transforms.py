"""Pure record building: what the AWS readers fetched, as Attest records (unit-tested on payloads).

The organization and its OUs, an account, IAM users/groups/roles/policies/access keys of one account
(`iam_records`, the longest: one nested helper per kind of record it emits), an Identity Center user;
the credential report parser; the external ids every record and revoke agree on. No API call here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from attest.connectors.aws.policies import (
    IAM_ADMIN_MANAGED,
    _document,
    admin_statements,
    boundary_limits,
    is_privileged_policy,
    policy_name_from_arn,
    trusted_principals,
)
from attest.connectors.base import AccountRecord, EntitlementRecord, GrantRecord, Record, ResourceRecord
from attest.connectors.managed import ManagedKind, emit
from attest.connectors.timestamps import parse_timestamp

# service-linked roles (owned by their service: IAM refuses edits to them) and Identity Center's own roles
# (AWSReservedSSO_*, created and owned by IAM Identity Center): not synced as roles; who reaches a role
# through an Identity Center role is (`trust.py`, with the permission_set contract)
SKIPPED_ROLE_PATHS = ("/aws-service-role/", "/aws-reserved/")
# the role AWS Organizations creates in an account it creates, trusted by the management account
# (CreateAccount's RoleName, "If you don't specify a role name, OrganizationAccountAccessRole is used";
# https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_accounts_access-cross-account-role.html)
ORGANIZATIONS_ROLE = "OrganizationAccountAccessRole"
EMAIL_TAG_KEYS = ("email", "e-mail", "mail")
KIND_TAG_KEYS = ("attest:kind", "kind")


def _parse_dt(value: Any) -> datetime | None:
    """AWS's timestamps: boto3's datetimes as they are (naive: UTC); anything else as text, trimmed, read by
    the one parser (connectors/timestamps.py), so the credential report's "N/A", "no_information" and
    "not_supported" are None like any other cell that is not a timestamp."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_timestamp(str(value).strip()) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


@dataclass(frozen=True)
class CredentialRow:
    """One user's row of the IAM credential report."""

    user: str
    arn: str
    created_at: datetime | None
    password_enabled: bool
    password_last_used: datetime | None
    mfa_active: bool
    keys: tuple[dict[str, Any], ...]

    @property
    def last_activity(self) -> datetime | None:
        times = [t for t in [self.password_last_used, *(_parse_dt(k.get("last_used_at")) for k in self.keys)] if t]
        return max(times) if times else None


def parse_credential_report(content: bytes | str, now: datetime | None = None) -> dict[str, CredentialRow]:
    """The credential report (CSV) by user ARN; the root user is keyed '<root_account>'."""
    now = now or datetime.now(UTC)
    text = content.decode() if isinstance(content, bytes) else content
    out: dict[str, CredentialRow] = {}
    for row in csv.DictReader(io.StringIO(text)):
        keys = []
        for slot in (1, 2):
            rotated = _parse_dt(row.get(f"access_key_{slot}_last_rotated"))
            active = row.get(f"access_key_{slot}_active") == "true"
            if not active and rotated is None:
                continue
            last_used = _parse_dt(row.get(f"access_key_{slot}_last_used_date"))
            service = row.get(f"access_key_{slot}_last_used_service")
            keys.append({
                "slot": slot,
                "status": "Active" if active else "Inactive",
                "created_at": _iso(rotated),
                "age_days": (now - rotated).days if rotated else None,
                "last_used_at": _iso(last_used),
                "last_used_service": service if service not in (None, "", "N/A", "not_supported") else None,
            })
        name = row.get("user") or ""
        key = "<root_account>" if name == "<root_account>" else row.get("arn") or name
        out[key] = CredentialRow(
            user=name,
            arn=row.get("arn") or "",
            created_at=_parse_dt(row.get("user_creation_time")),
            password_enabled=row.get("password_enabled") == "true",
            password_last_used=_parse_dt(row.get("password_last_used")),
            mfa_active=row.get("mfa_active") == "true",
            keys=tuple(keys),
        )
    return out


def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in items or () if t.get("Key") is not None}


def _tag(tags: Mapping[str, str], keys: Iterable[str]) -> str | None:
    lowered = {k.lower(): v for k, v in tags.items()}
    for key in keys:
        value = lowered.get(key)
        if value and value.strip():
            return value.strip()
    return None



def scim_managed(external_ids: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The managed-elsewhere contract for an Identity Center user or group provisioned over SCIM by an
    external identity provider (it carries ExternalIds, which only that provisioning sets); {} otherwise."""
    issuers = sorted({str(x.get("Issuer")) for x in external_ids if x.get("Issuer")})
    if not issuers:
        return {}
    return emit(ManagedKind.SCIM, f"the external identity provider ({', '.join(issuers)})",
                "IAM Identity Center ExternalIds")


def organizations_managed(role_name: str) -> dict[str, Any]:
    """The contract for AWS Organizations' own role in a member account; {} for any other role."""
    if role_name != ORGANIZATIONS_ROLE:
        return {}
    return emit(ManagedKind.ORGANIZATIONS, f"AWS Organizations ({ORGANIZATIONS_ROLE})")


def account_part(account_id: str) -> str:
    return f"aws:{account_id}"


def account_ref(account_id: str) -> str:
    return f"account:{account_id}"


def policy_resource_ref(account_id: str, policy_arn: str) -> str:
    return f"iam-policy:{account_id}:{policy_arn}"


def permission_set_id(permission_set_arn: str) -> str:
    return permission_set_arn.rsplit("/", 1)[-1]


def permission_set_entitlement_ref(account_id: str, permission_set_arn: str) -> str:
    return f"ps:{account_id}:{permission_set_id(permission_set_arn)}"


def parse_iam_arn(arn: str) -> tuple[str, str, str]:
    """arn:aws:iam::123456789012:user/path/name -> (account id, 'user', 'name')."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "iam":
        raise ValueError(f"not an IAM ARN: {arn!r}")
    kind, _, rest = parts[5].partition("/")
    return parts[4], kind, rest.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class OrgAccount:
    """A member account as Organizations' ListAccountsForParent describes it (its `Account` type)."""

    id: str  # the 12-digit account id
    name: str
    email: str | None = None  # the root user's address
    status: str = "ACTIVE"  # ACTIVE | SUSPENDED | PENDING_CLOSURE
    parent_ref: str | None = None  # the resource of its OU or root
    ou_path: str = ""  # "/Prod/Payments": the OU names from the root down
    joined_method: str | None = None  # INVITED | CREATED
    joined_at: datetime | None = None


@dataclass
class PermissionSetInfo:
    arn: str
    name: str
    description: str | None = None
    session_duration: str | None = None
    managed_policies: list[str] = field(default_factory=list)  # ARNs
    customer_managed: list[str] = field(default_factory=list)  # "path+name", e.g. "/Attest"
    inline_reasons: list[str] = field(default_factory=list)
    inline_iam_admin: list[str] = field(default_factory=list)
    has_inline: bool = False

    def iam_admin_reasons(self, local_iam_admin: Mapping[str, list[str]] | None = None) -> list[str]:
        """Why this set can manage IAM on an account (the last-administrator guard's definition)."""
        reasons = [f"managed policy {policy_name_from_arn(a)}" for a in self.managed_policies
                   if policy_name_from_arn(a) in IAM_ADMIN_MANAGED]
        reasons += [f"inline policy {r}" for r in self.inline_iam_admin]
        reasons += [f"customer-managed policy {ref.rsplit('/', 1)[-1]} {local_iam_admin[ref][0]}"
                    for ref in self.customer_managed if local_iam_admin and local_iam_admin.get(ref)]
        return reasons

    def privileged_reasons(self, extra: Iterable[str], local_admin: Mapping[str, list[str]] | None = None) -> list[str]:
        """Why this set is privileged on an account (its customer-managed references resolve there)."""
        reasons = [f"managed policy {policy_name_from_arn(a)}" for a in self.managed_policies
                   if is_privileged_policy(a, extra)]
        reasons += [f"inline policy {r}" for r in self.inline_reasons]
        for ref in self.customer_managed:
            name = ref.rsplit("/", 1)[-1]
            if name in set(extra):
                reasons.append(f"customer-managed policy {name}")
            elif local_admin and local_admin.get(ref):
                reasons.append(f"customer-managed policy {name} {local_admin[ref][0]}")
        return reasons


def org_records(org: Mapping[str, Any] | None, ous: Iterable[Mapping[str, Any]]) -> list[Record]:
    """The organization resource and its OUs (each under its parent; the root is the organization)."""
    if not org:
        return []
    out: list[Record] = [ResourceRecord(
        external_id=f"org:{org['Id']}", type="aws_organization", name=f"AWS Organization {org['Id']}",
        description=f"Management account {org.get('MasterAccountId')}",
        attributes={"management_account_id": org.get("MasterAccountId"), "feature_set": org.get("FeatureSet"),
                    "management_account_email": org.get("MasterAccountEmail")},
    )]
    for ou in ous:
        out.append(ResourceRecord(
            external_id=f"ou:{ou['Id']}", type="aws_ou", name=ou.get("Name") or ou["Id"],
            parent_ref=ou.get("ParentRef"), attributes={"ou_id": ou["Id"], "path": ou.get("Path")},
        ))
    return out


def account_resource(acct: OrgAccount, management_id: str | None, root: CredentialRow | None = None,
                     scps: Iterable[str] | None = None) -> ResourceRecord:
    attrs: dict[str, Any] = {
        "account_id": acct.id, "email": acct.email, "status": acct.status, "management": acct.id == management_id,
        "ou_path": acct.ou_path or None, "joined_method": acct.joined_method, "joined_at": _iso(acct.joined_at),
    }
    if scps:  # the service control policies in force on the account (root, its OUs, itself)
        attrs["service_control_policies"] = sorted(scps)
    if root is not None:
        attrs["root_mfa_active"] = root.mfa_active
        attrs["root_access_keys_active"] = sum(1 for k in root.keys if k["status"] == "Active")
        attrs["root_last_used_at"] = _iso(root.last_activity)
    return ResourceRecord(
        external_id=account_ref(acct.id), type="aws_account", name=f"{acct.name} ({acct.id})",
        description="management account" if acct.id == management_id else None,
        parent_ref=acct.parent_ref, attributes=attrs, part=account_part(acct.id),
    )


def iam_records(
    acct: OrgAccount,
    details: Mapping[str, list[dict[str, Any]]],
    report: Mapping[str, CredentialRow] | None,
    extra_privileged: Iterable[str] = (),
    now: datetime | None = None,
    *,
    scp_limits: Iterable[str] = (),
    own_roles: Iterable[str] = (),
) -> Iterator[Record]:
    """IAM users, groups, roles and policies of one account, from GetAccountAuthorizationDetails pages
    (merged: UserDetailList, GroupDetailList, RoleDetailList, Policies) and the credential report.

    A user missing from the report (created after it was generated: AWS reuses a report for up to four
    hours) carries what the per-user calls read (`_access_keys`, `_mfa`, `_login_profile`, see
    AwsConnector._per_user_credentials). `scp_limits`: the SCPs in force on the account that deny IAM
    administration (never the management account: SCPs do not apply to it); privileged entitlements
    name them. `own_roles`: the roles Attest itself assumes here; their last use is Attest's own, so it
    is not stored (it would rewrite the role on every sync and hide that nobody else uses it)."""
    now = now or datetime.now(UTC)
    extra = list(extra_privileged)
    part = account_part(acct.id)
    aref = account_ref(acct.id)
    label = f"{acct.name} ({acct.id})"
    scp_names = sorted(set(scp_limits))
    own = set(own_roles)

    def limited(privileged: bool) -> dict[str, Any]:
        """The SCPs that keep a privileged entitlement of this account from IAM administration."""
        if not privileged or not scp_names:
            return {}
        return {"limited_by": [f"SCP {n}" for n in scp_names],
                "privileged_note": f"administrator, limited by {', '.join(f'SCP {n}' for n in scp_names)}"}

    local_docs: dict[str, Any] = {}
    local_by_arn: dict[str, dict[str, Any]] = {}
    for pol in details.get("Policies", []):
        default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        doc = _document(default.get("Document")) if default else {}
        local_by_arn[pol["Arn"]] = {"doc": doc, "name": pol.get("PolicyName") or policy_name_from_arn(pol["Arn"]),
                                    "path": pol.get("Path", "/")}
        local_docs[pol["Arn"]] = doc

    def policy_reasons(arn: str) -> list[str]:
        reasons = []
        if is_privileged_policy(arn, extra):
            reasons.append(f"managed policy {policy_name_from_arn(arn)}")
        if arn in local_docs:
            reasons += admin_statements(local_docs[arn])
        return reasons

    emitted_policies: set[str] = set()

    def policy(arn: str, name: str | None = None) -> Iterator[Record]:
        if arn in emitted_policies:
            return
        emitted_policies.add(arn)
        name = name or policy_name_from_arn(arn)
        aws_managed = ":iam::aws:policy/" in arn
        reasons = policy_reasons(arn)
        ref = policy_resource_ref(acct.id, arn)
        yield ResourceRecord(
            external_id=ref, type="aws_iam_policy", name=f"{name} ({acct.id})", parent_ref=aref, part=part,
            description=("AWS managed policy" if aws_managed else "customer managed policy") + f" in account {label}",
            attributes={"account_id": acct.id, "policy_arn": arn, "aws_managed": aws_managed},
        )
        yield EntitlementRecord(
            external_id=f"{ref}:attached", resource_ref=ref, name=f"Policy:{name}",
            display_name=f"Policy {name} on account {label}", purpose="permission", privileged=bool(reasons),
            attributes={"kind": "iam_policy", "account_id": acct.id, "policy_arn": arn, "policy_name": name,
                        "aws_managed": aws_managed, "privileged_reasons": reasons, **limited(bool(reasons))},
            part=part,
        )

    for arn, meta in local_by_arn.items():
        yield from policy(arn, meta["name"])

    def access_key_records(user_arn: str, user: str, keys: Iterable[Mapping[str, Any]]) -> Iterator[Record]:
        """Each access key an entitlement of its user (named by its creation time: the credential report
        gives no key ids), held while the key is Active: a key created, deactivated, reactivated or
        deleted is a grant added or ended, so it is in the access history."""
        seen: set[str] = set()
        for k in sorted(keys, key=lambda k: (str(k.get("created_at") or ""), k.get("slot") or 0)):
            created = k.get("created_at") or "unknown"
            ref = f"{user_arn}:access-key:{created}"
            n = 2
            while ref in seen:
                ref, n = f"{user_arn}:access-key:{created}#{n}", n + 1
            seen.add(ref)
            yield EntitlementRecord(
                external_id=ref, resource_ref=aref, name=f"AccessKey:{created}",
                display_name=f"Access key of IAM user {user} created {created} on account {label}",
                purpose="permission", part=part,
                attributes={"kind": "iam_access_key", "account_id": acct.id, "user_name": user, "user_arn": user_arn,
                            "created_at": k.get("created_at")},
            )
            if k.get("status") == "Active":
                yield GrantRecord(entitlement_ref=ref, principal_ref=user_arn, part=part)

    def inline(principal_arn: str, principal_ref: str, principal_type: str, who: str,
               items: Iterable[Mapping[str, Any]]) -> Iterator[Record]:
        for item in items or ():
            name = item.get("PolicyName") or "inline"
            reasons = admin_statements(item.get("PolicyDocument"))
            ref = f"{principal_arn}:inline:{name}"
            yield EntitlementRecord(
                external_id=ref, resource_ref=aref, name=f"InlinePolicy:{name}",
                display_name=f"Inline policy {name} of {who} on account {label}", purpose="permission",
                privileged=bool(reasons),
                attributes={"kind": "iam_inline_policy", "account_id": acct.id, "policy_name": name,
                            "principal_arn": principal_arn, "privileged_reasons": reasons, **limited(bool(reasons))},
                part=part,
            )
            yield GrantRecord(entitlement_ref=ref, principal_ref=principal_ref, principal_type=principal_type, part=part)

    # groups: a group resource, its membership entitlement, and the policies it holds
    group_admin: dict[str, bool] = {}
    group_arn_by_name: dict[str, str] = {}
    for g in details.get("GroupDetailList", []):
        arn, name = g["Arn"], g["GroupName"]
        group_arn_by_name[name] = arn
        reasons = [r for p in g.get("AttachedManagedPolicies", []) for r in policy_reasons(p["PolicyArn"])]
        reasons += [r for p in g.get("GroupPolicyList", []) for r in admin_statements(p.get("PolicyDocument"))]
        group_admin[name] = bool(reasons)
        yield ResourceRecord(
            external_id=arn, type="aws_iam_group", name=f"{name} ({acct.id})", is_group=True, parent_ref=aref,
            description=f"IAM group in account {label}", part=part,
            attributes={"account_id": acct.id, "group_name": name, "path": g.get("Path"), "group_id": g.get("GroupId")},
        )
        yield EntitlementRecord(
            external_id=f"{arn}:member", resource_ref=arn, name="member", display_name=f"Member of IAM group {name} on account {label}",
            is_membership=True, privileged=bool(reasons), part=part,
            attributes={"kind": "iam_group_membership", "account_id": acct.id, "group_name": name, "group_arn": arn,
                        "privileged_reasons": reasons, **limited(bool(reasons))},
        )
        for p in g.get("AttachedManagedPolicies", []):
            yield from policy(p["PolicyArn"], p.get("PolicyName"))
            yield GrantRecord(entitlement_ref=f"{policy_resource_ref(acct.id, p['PolicyArn'])}:attached",
                              principal_ref=arn, principal_type="resource", part=part)
        yield from inline(arn, arn, "resource", f"group {name}", g.get("GroupPolicyList", []))

    def boundary(principal: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        arn_ = (principal.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if arn_:
            attrs["permissions_boundary"] = arn_
            if boundary_limits(arn_, local_policies):
                attrs["limited_by"] = [f"permissions boundary {policy_name_from_arn(arn_)}"]

    local_policies = {pol["Arn"]: pol for pol in details.get("Policies", [])}
    for u in details.get("UserDetailList", []):
        arn, name = u["Arn"], u["UserName"]
        tags = _tags(u.get("Tags"))
        row = (report or {}).get(arn)
        per_user = "_access_keys" in u  # read with per-user calls (no report, or not in it yet)
        email = _tag(tags, EMAIL_TAG_KEYS)
        console = row.password_enabled if row else (bool(u["_login_profile"]) if per_user else None)
        kind = (_tag(tags, KIND_TAG_KEYS) or "").lower()
        if kind not in ("human", "service"):
            # a service account only on evidence: no e-mail tag and, known, no console password
            kind = "service" if (not email and console is False) else "human"
        keys = list(row.keys) if row else list(u.get("_access_keys") or [])
        mfa = row.mfa_active if row else u.get("_mfa")
        last = row.last_activity if row else max(
            [t for t in [_parse_dt(u.get("PasswordLastUsed")), *(_parse_dt(k.get("last_used_at")) for k in keys)] if t],
            default=None)
        attrs: dict[str, Any] = {
            "account_id": acct.id, "path": u.get("Path"), "user_id": u.get("UserId"),
            "console_password": console,
            "password_last_used_at": _iso(row.password_last_used) if row else _iso(_parse_dt(u.get("PasswordLastUsed"))),
            "access_keys": keys,
            "active_access_keys": sum(1 for k in keys if k.get("status") == "Active"),
            "oldest_active_key_days": max((k.get("age_days") or 0 for k in keys if k.get("status") == "Active"), default=None),
            "credentials_from": "credential_report" if row else ("per_user_calls" if per_user else "unknown"),
        }
        boundary(u, attrs)
        yield AccountRecord(
            external_id=arn, login=name, display_name=name, kind=kind, tag_email=email,
            created_at=_parse_dt(u.get("CreateDate")), last_login_at=last, mfa_enabled=bool(mfa) if mfa is not None else None,
            attributes=attrs, part=part,
        )
        yield from access_key_records(arn, name, keys)
        for group in u.get("GroupList", []):
            garn = group_arn_by_name.get(group)
            if garn:
                yield GrantRecord(entitlement_ref=f"{garn}:member", principal_ref=arn, part=part)
        for p in u.get("AttachedManagedPolicies", []):
            yield from policy(p["PolicyArn"], p.get("PolicyName"))
            yield GrantRecord(entitlement_ref=f"{policy_resource_ref(acct.id, p['PolicyArn'])}:attached",
                              principal_ref=arn, part=part)
        yield from inline(arn, arn, "account", f"user {name}", u.get("UserPolicyList", []))

    for r in details.get("RoleDetailList", []):
        path = r.get("Path") or "/"
        if path.startswith(SKIPPED_ROLE_PATHS):
            continue  # service-linked roles and Identity Center's own roles: their access is reviewed at the source
        arn, name = r["Arn"], r["RoleName"]
        last_used = r.get("RoleLastUsed") or {}
        trust = trusted_principals(r.get("AssumeRolePolicyDocument"))
        role_attrs: dict[str, Any] = {
            "account_id": acct.id, "type": "role", "path": path, "role_id": r.get("RoleId"),
            "trusted_principals": trust,
            "external_trust": [p for p in trust if p.startswith("arn:") and f":{acct.id}:" not in p],
            "last_used_region": last_used.get("Region")}
        last_login = _parse_dt(last_used.get("LastUsedDate"))
        if name in own:
            # Attest's own AssumeRole is this role's last use: storing it would rewrite the role on every
            # sync and keep it from ever looking dormant. Not stored (RoleLastUsed cannot tell users apart).
            last_login = None
            role_attrs["last_used_region"] = None
            role_attrs["attest_role"] = True
            role_attrs["last_used_note"] = "not stored: Attest assumes this role on every sync"
        boundary(r, role_attrs)
        yield AccountRecord(
            external_id=arn, login=name, display_name=f"role {name}", kind="service",
            created_at=_parse_dt(r.get("CreateDate")), last_login_at=last_login,
            attributes=role_attrs, part=part,
        )
        for p in r.get("AttachedManagedPolicies", []):
            yield from policy(p["PolicyArn"], p.get("PolicyName"))
            yield GrantRecord(entitlement_ref=f"{policy_resource_ref(acct.id, p['PolicyArn'])}:attached",
                              principal_ref=arn, part=part, attributes=organizations_managed(name))
        yield from inline(arn, arn, "account", f"role {name}", r.get("RolePolicyList", []))



def identity_center_user(user: Mapping[str, Any], store_id: str) -> AccountRecord:
    emails = user.get("Emails") or []
    primary = next((e.get("Value") for e in emails if e.get("Primary")), None) or next(
        (e.get("Value") for e in emails if e.get("Value")), None)
    name = user.get("Name") or {}
    display = user.get("DisplayName") or " ".join(p for p in (name.get("GivenName"), name.get("FamilyName")) if p) or user["UserName"]
    return AccountRecord(
        external_id=f"idc-user:{user['UserId']}", login=user["UserName"], email=primary, display_name=display,
        kind="human", status="active",
        attributes={"identity_store_id": store_id, "user_id": user["UserId"], "title": user.get("Title"),
                    "external_ids": [f"{x.get('Issuer')}:{x.get('Id')}" for x in user.get("ExternalIds") or []]},
    )
