"""AWS: Organizations, IAM Identity Center and IAM across every account of an organization.

One source covers an AWS Organization (or a single account). What it reads:

- **Organizations** (management account, base credentials): the organization, its OUs (walked from the
  root with ListOrganizationalUnitsForParent) and its accounts (ListAccountsForParent per node, so an
  account arrives already placed under its OU: one call per node instead of one ListParents per account).
- **IAM Identity Center** (the instance of the management or delegated-administrator account):
  identity-store users, groups and memberships; permission sets with their managed, customer-managed and
  inline policies; account assignments per account (ListPermissionSetsProvisionedToAccount, then
  ListAccountAssignments per provisioned permission set).
- **IAM in every account**: the management account (or the account of the base credentials) directly,
  the others through STS AssumeRole into `assume_role_name`. One paginated GetAccountAuthorizationDetails
  gives users, groups, memberships, roles with their trust policies, and every attached, customer-managed
  and inline policy; the credential report gives console passwords, MFA, access keys (age, status, last
  use) and last activity for every user in one call. When the credential report cannot be had, and for
  the users it does not hold yet (AWS reuses a report for up to four hours), the connector reads
  ListAccessKeys/GetAccessKeyLastUsed/ListMFADevices/GetLoginProfile user by user. Each access key is an
  entitlement of its user, held while Active, so key changes are in the access history. Permissions
  boundaries of users and roles are stored; the roles Attest itself assumes keep no last use.
- **Service control policies** (ListPolicies, DescribePolicy, ListTargetsForPolicy): stored as `aws_scp`
  resources (part "aws:scps"); privileged entitlements of an account whose SCPs keep IAM administration
  from it, and users/roles whose boundary does, name the limitation (`limited_by`, `privileged_note`).

Accounts are read concurrently (at most `concurrency` at a time). Every record of an account carries
`part="aws:<account id>"`; an account whose role cannot be assumed (or whose reads fail) yields
`PartFailed` and its previous rows are left as they were, while the other accounts still sync. What is
derived from every account (an Identity Center group's privileged flag, from its assignments) is yielded
in a failed account's part in such a run, so the engine keeps its stored value.

`calls` counts every HTTP request sent to AWS (retries included), through botocore's `request-created`
event; `operations` counts API operations (one per call, however many attempts it took).

Revoke (and its undo, `grant`): remove a user from an IAM group, detach a managed policy from a
user/group/role, delete an Identity Center account assignment (waiting for the deletion status),
delete an identity-store group membership, deactivate an access key. Each first reads the live state
(already gone -> success, nothing changed), then the guards refuse to remove Attest's own access (the
principal of sts:GetCallerIdentity and the roles it assumes) and the last administrator path to the
management account (a path that can manage IAM), then the change is made (or, in a dry run, only
listed) and read back: `outcome` "done" only when the follow-up read shows it, else "unconfirmed".
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote, urlparse

from attest.connectors.base import (
    AccountRecord,
    BaseConnector,
    ConnectorError,
    EntitlementRecord,
    GrantRecord,
    GrantRef,
    Note,
    PartFailed,
    Record,
    ResourceRecord,
    RevokeRefused,
    RevokeResult,
    Setting,
)
from attest.connectors.http import MAX_PAGES, PageGuard, PagingError

# AWS managed policies that make their holder an administrator (or close enough to become one): privileged.
PRIVILEGED_MANAGED = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess")
# ...of which these can manage IAM itself, and so can make anyone an administrator: the last-administrator
# guard counts only these (PowerUserAccess allows everything but iam:*, organizations:* and account:*, so
# its holder cannot grant itself or anyone else more: https://docs.aws.amazon.com/aws-managed-policy/latest/reference/PowerUserAccess.html).
IAM_ADMIN_MANAGED = ("AdministratorAccess", "IAMFullAccess")
ROLE_SESSION_NAME = "attest"
CREDENTIAL_REPORT_MAX_AGE = timedelta(hours=4)  # AWS regenerates at most every 4 hours anyway
CREDENTIAL_REPORT_WAIT = 90.0  # seconds to wait for a report being generated before the per-user fallback
_UNCONFIRMED = "; AWS accepted the call, but a follow-up read still shows the access as it was (unconfirmed)"
VERIFY_TRIES = 6  # follow-up reads of a change (0.25 s doubling: about 8 s) before it is called unconfirmed
ASSIGNMENT_WAIT = 120.0  # seconds to wait for an Identity Center assignment change to finish
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
SCP_PART = "aws:scps"  # the part of the service control policies (read from the management account)
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ROLE_NAME_RE = re.compile(r"^[\w+=,.@/-]{1,64}$")
SKIPPED_ROLE_PATHS = ("/aws-service-role/", "/aws-reserved/")  # service-linked and Identity Center roles
EMAIL_TAG_KEYS = ("email", "e-mail", "mail")
KIND_TAG_KEYS = ("attest:kind", "kind")

# Largest page each list call accepts; the paginators ask for these so a listing takes the fewest calls.
PAGE = {
    "organizations": 20,
    "identitystore": 100,
    "sso-admin": 100,
    "iam": 1000,
}


# --- pure helpers (unit-tested on payloads) -------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _document(doc: Any) -> dict[str, Any]:
    """A policy document as a dict (IAM returns it URL-encoded when botocore does not decode it)."""
    if isinstance(doc, dict):
        return doc
    if not doc:
        return {}
    text = str(doc)
    if text.lstrip().startswith("%7B") or "%22" in text:
        text = unquote(text)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def admin_statements(doc: Any) -> list[str]:
    """Why a policy document makes its holder an administrator: reasons, empty when it does not.

    Counted: Allow of `*` / `*:*` on `*`, Allow of `iam:*` on `*` (IAM full access is an administrator
    in waiting), and Allow with NotAction on `*` (PowerUserAccess-style "everything but").
    """
    reasons: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        resources = [str(r) for r in _as_list(stmt.get("Resource"))]
        if "*" not in resources:
            continue
        actions = [str(a).lower() for a in _as_list(stmt.get("Action"))]
        if "*" in actions or "*:*" in actions:
            reasons.append("allows *:* on *")
        elif "iam:*" in actions:
            reasons.append("allows iam:* on *")
        elif "NotAction" in stmt:
            reasons.append("allows everything but NotAction on *")
    return reasons


def _actions(stmt: Mapping[str, Any], key: str) -> list[str]:
    return [str(a).lower() for a in _as_list(stmt.get(key))]


def _covers_iam(actions: Iterable[str]) -> bool:
    """Whether an action list names all of IAM (`*`, `*:*`, `iam:*`)."""
    return any(a in ("*", "*:*", "iam:*") for a in actions)


def iam_admin_statements(doc: Any) -> list[str]:
    """Why a policy document lets its holder manage IAM on every resource (and so make anyone, itself
    included, an administrator): reasons, empty when it does not. Stricter than admin_statements: an
    Allow with NotAction counts only when its NotAction leaves IAM allowed (PowerUserAccess excludes iam:*)."""
    reasons: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        if "*" not in [str(r) for r in _as_list(stmt.get("Resource"))]:
            continue
        if "NotAction" in stmt:
            excluded = _actions(stmt, "NotAction")
            if not _covers_iam(excluded) and not any(a.startswith("iam:") for a in excluded):
                reasons.append("allows everything but NotAction (IAM included) on *")
            continue
        actions = _actions(stmt, "Action")
        if "*" in actions or "*:*" in actions:
            reasons.append("allows *:* on *")
        elif "iam:*" in actions:
            reasons.append("allows iam:* on *")
    return reasons


def _touches_iam(doc: Any, effect: str) -> bool:
    """Whether a statement of `effect` in the document reaches IAM: `*`, `iam:*` or an iam: action, or a
    NotAction that leaves IAM in."""
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != effect:
            continue
        if "NotAction" in stmt:
            excluded = _actions(stmt, "NotAction")
            if not _covers_iam(excluded) and not any(a.startswith("iam:") for a in excluded):
                return True
            continue
        actions = _actions(stmt, "Action")
        if _covers_iam(actions) or any(a.startswith("iam:") for a in actions):
            return True
    return False


def denies_iam_admin(doc: Any) -> bool:
    """Whether a policy document (an SCP) denies IAM administration: a Deny of `*`, `iam:*` or any iam:
    action, or a Deny with NotAction that leaves IAM in (everything denied but a few services)."""
    return _touches_iam(doc, "Deny")


def allows_iam(doc: Any) -> bool:
    """Whether a policy document used as a filter (an SCP allow list, a permissions boundary) allows
    IAM at all: an Allow of `*`, `iam:*` or an iam: action, or an Allow with NotAction leaving IAM in."""
    return _touches_iam(doc, "Allow")


def policy_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def is_privileged_policy(arn: str, extra: Iterable[str] = ()) -> bool:
    """A managed policy privileged by name: the built-in list or the source's `privileged_policies`."""
    name = policy_name_from_arn(arn)
    wanted = {p.strip() for p in extra if p and p.strip()}
    return name in PRIVILEGED_MANAGED or name in wanted or arn in wanted


def _parse_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
    text = str(value).strip()
    if not text or text in ("N/A", "no_information", "not_supported"):
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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


def trusted_principals(doc: Any) -> list[str]:
    """Who a role's trust policy lets assume it: account/role ARNs, services, federated providers."""
    out: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        principal = stmt.get("Principal")
        if principal == "*":
            out.append("*")
            continue
        if isinstance(principal, dict):
            for kind in ("AWS", "Service", "Federated", "CanonicalUser"):
                for value in _as_list(principal.get(kind)):
                    label = f"{kind}:{value}" if kind != "AWS" else str(value)
                    if label not in out:
                        out.append(label)
    return out


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
    id: str
    name: str
    email: str | None = None
    status: str = "ACTIVE"
    parent_ref: str | None = None
    ou_path: str = ""
    joined_method: str | None = None
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
                              principal_ref=arn, part=part)
        yield from inline(arn, arn, "account", f"role {name}", r.get("RolePolicyList", []))


def local_admin_policies(details: Mapping[str, list[dict[str, Any]]], *, iam_admin: bool = False) -> dict[str, list[str]]:
    """Customer-managed policies of an account that grant admin (with iam_admin: that can manage IAM),
    keyed "path+name" (as permission sets reference them)."""
    judge = iam_admin_statements if iam_admin else admin_statements
    out: dict[str, list[str]] = {}
    for pol in details.get("Policies", []):
        default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        reasons = judge(default.get("Document")) if default else []
        if reasons:
            name = pol.get("PolicyName") or policy_name_from_arn(pol["Arn"])
            out[f"{pol.get('Path', '/')}{name}"] = reasons
    return out


def boundary_limits(boundary_arn: str, local: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a permissions boundary keeps its holder from managing IAM. A boundary caps what the
    identity policies allow (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html):
    a customer-managed boundary is read from its default version (`local`: the account's policies by ARN, as
    GetAccountAuthorizationDetails returns them); an AWS managed one limits unless it is itself an IAM admin."""
    pol = local.get(boundary_arn)
    if pol is not None:
        default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        return not (default and iam_admin_statements(default.get("Document")))
    return policy_name_from_arn(boundary_arn) not in IAM_ADMIN_MANAGED


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


# --- the connector ---------------------------------------------------------------------------------


class _Counter:
    """Thread-safe counts of requests and operations, by operation name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.operations = 0
        self.by_operation: dict[str, int] = defaultdict(int)

    def request(self, **kwargs: Any) -> None:
        with self.lock:
            self.requests += 1

    def operation(self, model: Any = None, **kwargs: Any) -> None:
        with self.lock:
            self.operations += 1
            name = getattr(model, "name", None) or kwargs.get("event_name", "?").rsplit(".", 1)[-1]
            service = getattr(getattr(model, "service_model", None), "endpoint_prefix", "")
            self.by_operation[f"{service}:{name}"] += 1


@dataclass
class _Org:
    base_account: str
    partition: str
    management_id: str
    org: dict[str, Any] | None
    ous: list[dict[str, Any]]
    accounts: list[OrgAccount]


@dataclass
class _IdentityCenter:
    instance_arn: str
    store_id: str


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _botocore_session():
    """A botocore session sharing one process-wide model loader: every sync (and every account's clients)
    would otherwise parse the same service JSON again, ~1 s of CPU per connector."""
    global _LOADER
    import botocore.session

    session = botocore.session.get_session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _LOADER)
    return session


class AwsConnector(BaseConnector):
    kind: ClassVar[str] = "aws"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("region", "AWS region for STS and regional calls", default="us-east-1"),
        Setting("identity_center_region", "region of the IAM Identity Center instance (default: region)"),
        Setting("assume_role_name", "role assumed in each member account (the management account is read with "
                "the base credentials)", default="AttestAudit"),
        Setting("remediation_role_name", "role assumed in member accounts to revoke (default: assume_role_name)"),
        Setting("external_id", "sts:ExternalId the member-account roles require, if any"),
        Setting("accounts", "only these account ids (comma-separated; default: every account)", type=list),
        Setting("endpoint_url", "AWS endpoint override (tests, the sandbox); http only on loopback"),
        Setting("concurrency", "accounts read at the same time", default=8, type=int),
        Setting("privileged_policies", "more policy names or ARNs that make a grant privileged (comma-separated)",
                type=list),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("access_key_id", "access key id (default: the standard boto3 credential chain)"),
        Setting("secret_access_key", "secret access key (with access_key_id)"),
        Setting("session_token", "session token, for temporary credentials"),
    )

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if bool(secrets.get("access_key_id")) != bool(secrets.get("secret_access_key")):
            raise ValueError("secrets access_key_id and secret_access_key go together: give both or neither "
                             "(neither uses the standard boto3 credential chain)")
        if secrets.get("session_token") and not secrets.get("access_key_id"):
            raise ValueError("secret session_token needs access_key_id and secret_access_key")
        for name in ("region", "identity_center_region"):
            value = settings.get(name)
            if value and not REGION_RE.match(str(value)):
                raise ValueError(f"setting {name} must be an AWS region such as us-east-1, not {value!r}")
        for name in ("assume_role_name", "remediation_role_name"):
            value = settings.get(name)
            if value and not ROLE_NAME_RE.match(str(value)):
                raise ValueError(f"setting {name} must be an IAM role name, not {value!r}")
        bad = [a for a in settings.get("accounts") or [] if not ACCOUNT_ID_RE.match(str(a))]
        if bad:
            raise ValueError(f"setting accounts must list 12-digit account ids; not: {', '.join(map(str, bad))}")
        concurrency = settings.get("concurrency")
        if concurrency is not None and not 1 <= int(concurrency) <= 64:
            raise ValueError("setting concurrency must be between 1 and 64")
        url = settings.get("endpoint_url")
        if url:
            parsed = urlparse(str(url))
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"setting endpoint_url must be an http(s) URL, not {url!r}")
            if parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("setting endpoint_url must use https (plain http is allowed on loopback only)")

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(settings, secrets)
        self.check_config(self.settings, self.secrets)
        self.region = self.settings.get("region") or "us-east-1"
        self.ic_region = self.settings.get("identity_center_region") or self.region
        self.role_name = self.settings.get("assume_role_name") or "AttestAudit"
        self.remediation_role = self.settings.get("remediation_role_name") or self.role_name
        self.external_id = self.settings.get("external_id") or None
        self.allow = [str(a) for a in self.settings.get("accounts") or []]
        self.endpoint_url = self.settings.get("endpoint_url") or None
        self.concurrency = int(self.settings.get("concurrency") or 8)
        self.extra_privileged = list(self.settings.get("privileged_policies") or [])
        # (event name, handler) pairs registered first on every client: tests inject upstream failures here
        self.hooks: list[tuple[str, Callable[..., Any]]] = []
        self.max_pages = MAX_PAGES  # pages of one listing before paging is stopped as a loop
        self.counter = _Counter()
        self.stats: dict[str, Any] = {"max_concurrent_accounts": 0}
        self._active_accounts = 0
        self._lock = threading.Lock()
        self._session = None
        self._clients: dict[tuple[str, str, str | None], Any] = {}
        self._org: _Org | None = None
        self._org_note: str | None = None
        self._privileged_groups: dict[str, set[str]] = {}
        self._caller_arn = ""
        self._root_ids: list[str] = []
        self._scps: dict[str, dict[str, Any]] = {}  # policy id -> name, denies/allows IAM, target ids
        self._scps_failed = False

    # calls is read by the sync engine; it is every HTTP request sent, retries included
    @property  # type: ignore[override]
    def calls(self) -> int:
        return self.counter.requests

    @calls.setter
    def calls(self, value: int) -> None:  # BaseConnector.__init__ sets 0
        pass

    @property
    def operations(self) -> int:
        return self.counter.operations

    # --- sessions and clients ---------------------------------------------------------------------
    def _config(self):
        from botocore.config import Config

        return Config(
            retries={"mode": "adaptive", "max_attempts": 10},
            max_pool_connections=max(10, self.concurrency * 2),
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="attest",
        )

    def _base_session(self):
        if self._session is None:
            import boto3

            kwargs: dict[str, Any] = {"region_name": self.region, "botocore_session": _botocore_session()}
            if self.secrets.get("access_key_id"):
                kwargs.update(aws_access_key_id=self.secrets["access_key_id"],
                              aws_secret_access_key=self.secrets["secret_access_key"],
                              aws_session_token=self.secrets.get("session_token") or None)
            self._session = boto3.Session(**kwargs)
        return self._session

    def _client(self, service: str, creds: Mapping[str, str] | None = None, region: str | None = None):
        """A client with the counting hooks; base credentials when creds is None. Cached per credentials."""
        region = region or self.region
        key = (service, region, creds["AccessKeyId"] if creds else None)
        with self._lock:  # boto3 sessions are not thread-safe; clients are
            client = self._clients.get(key)
            if client is not None:
                return client
            kwargs: dict[str, Any] = {"region_name": region, "config": self._config()}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            if creds:
                kwargs.update(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                              aws_session_token=creds.get("SessionToken"))
            client = self._base_session().client(service, **kwargs)
            events = client.meta.events
            events.register("request-created", self.counter.request)
            events.register("before-call", self.counter.operation)
            for event, handler in self.hooks:
                events.register_first(event, handler)
            self._clients[key] = client
            return client

    def _pages(self, client, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        service = client.meta.service_model.service_name
        size = PAGE.get(service)
        config = {"PageSize": size} if size else {}
        for page in self._paginate(client, operation, config, **kwargs):
            yield from page.get(key, [])

    def _paginate(self, client, operation: str, config: Mapping[str, Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
        """botocore's paginator, guarded: a next token already seen (botocore itself only notices one
        repeated twice in a row) or more pages than `max_pages` raise PagingError naming the operation."""
        from botocore.exceptions import PaginationError

        what = f"AWS {client.meta.service_model.service_name}:{client.meta.method_to_api_mapping.get(operation, operation)}"
        guard = PageGuard(what, self.max_pages)
        try:
            for page in client.get_paginator(operation).paginate(PaginationConfig=dict(config), **kwargs):
                yield page
                token = next((page[k] for k in ("NextToken", "Marker", "nextToken") if page.get(k)), None)
                if token is not None:
                    guard.check(str(token)[:200])
        except PaginationError as exc:
            raise PagingError(f"{what}: {exc.kwargs.get('message') or exc}; paging stopped (an upstream paging "
                              "loop), nothing was changed") from None

    def _assume(self, account_id: str, role_name: str) -> dict[str, str]:
        org = self._org
        partition = org.partition if org else "aws"
        kwargs: dict[str, Any] = {
            "RoleArn": f"arn:{partition}:iam::{account_id}:role/{role_name}",
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": 3600,
        }
        if self.external_id:
            kwargs["ExternalId"] = self.external_id
        return self._client("sts").assume_role(**kwargs)["Credentials"]

    def _account_creds(self, account_id: str, role_name: str) -> dict[str, str] | None:
        """None (base credentials) for the account of the base credentials, else assumed-role credentials."""
        org = self._load_org()
        if account_id == org.base_account:
            return None
        return self._assume(account_id, role_name)

    # --- organization -------------------------------------------------------------------------------
    def _load_org(self) -> _Org:
        if self._org is not None:
            return self._org
        from botocore.exceptions import ClientError

        ident = self._client("sts").get_caller_identity()
        base_account = ident["Account"]
        self._caller_arn = str(ident.get("Arn") or "")
        partition = ident["Arn"].split(":")[1] if ident.get("Arn", "").startswith("arn:") else "aws"
        orgs = self._client("organizations")
        try:
            org = orgs.describe_organization()["Organization"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("AWSOrganizationsNotInUseException", "AccessDeniedException"):
                raise
            self._org = _Org(base_account, partition, base_account, None, [],
                             [OrgAccount(base_account, base_account)])
            self._org_note = (
                f"account {base_account} is not in an AWS Organization; syncing it alone"
                if code == "AWSOrganizationsNotInUseException" else
                f"Organizations is not readable with these credentials ({code}); syncing account {base_account} alone"
            )
            return self._org
        self._org_note = None
        roots = list(self._pages(orgs, "list_roots", "Roots"))
        self._root_ids = [r["Id"] for r in roots]
        ous: list[dict[str, Any]] = []
        accounts: list[OrgAccount] = []
        org_ref = f"org:{org['Id']}"
        # breadth-first from each root; the root itself is represented by the organization resource
        queue: list[tuple[str, str, str]] = [(r["Id"], org_ref, "") for r in roots]
        while queue:
            node_id, node_ref, path = queue.pop(0)
            for a in self._pages(orgs, "list_accounts_for_parent", "Accounts", ParentId=node_id):
                accounts.append(OrgAccount(
                    id=a["Id"], name=a.get("Name") or a["Id"], email=a.get("Email"), status=a.get("Status", "ACTIVE"),
                    parent_ref=node_ref, ou_path=path or "/", joined_method=a.get("JoinedMethod"),
                    joined_at=_parse_dt(a.get("JoinedTimestamp")),
                ))
            for ou in self._pages(orgs, "list_organizational_units_for_parent", "OrganizationalUnits", ParentId=node_id):
                ou_path = f"{path}/{ou.get('Name') or ou['Id']}"
                ous.append({"Id": ou["Id"], "Name": ou.get("Name"), "ParentRef": node_ref, "Path": ou_path})
                queue.append((ou["Id"], f"ou:{ou['Id']}", ou_path))
        self._org = _Org(base_account, partition, org.get("MasterAccountId") or base_account, org, ous, accounts)
        return self._org

    def _selected_accounts(self, org: _Org) -> tuple[list[OrgAccount], list[str]]:
        active = [a for a in org.accounts if a.status not in ("SUSPENDED", "CLOSED", "PENDING_CLOSURE")]
        if not self.allow:
            return active, []
        known = {a.id for a in org.accounts}
        return [a for a in active if a.id in self.allow], [a for a in self.allow if a not in known]

    # --- who Attest is -------------------------------------------------------------------------------
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

    # --- service control policies -------------------------------------------------------------------
    def _read_scps(self) -> Iterator[Record]:
        """Service control policies (Organizations ListPolicies, DescribePolicy, ListTargetsForPolicy,
        filter SERVICE_CONTROL_POLICY), kept for the account tasks (which name the SCPs that deny IAM
        administration) and yielded as `aws_scp` resources of part "aws:scps"."""
        from botocore.exceptions import ClientError

        self._scps, self._scps_failed = {}, False
        org = self._load_org()
        if org.org is None:
            return
        orgs = self._client("organizations")
        try:
            summaries = list(self._pages(orgs, "list_policies", "Policies", Filter="SERVICE_CONTROL_POLICY"))
            for p in summaries:
                pid = p["Id"]
                doc = orgs.describe_policy(PolicyId=pid)["Policy"].get("Content")
                targets = list(self._pages(orgs, "list_targets_for_policy", "Targets", PolicyId=pid))
                self._scps[pid] = {"name": p.get("Name") or pid, "arn": p.get("Arn"), "aws_managed": p.get("AwsManaged"),
                                   "description": p.get("Description"), "denies_iam_admin": denies_iam_admin(doc),
                                   "allows_iam": allows_iam(doc), "targets": sorted(t["TargetId"] for t in targets)}
        except ClientError as exc:
            err = exc.response.get("Error", {})
            self._scps = {}
            if err.get("Code") in ("PolicyTypeNotEnabledException", "AWSOrganizationsNotInUseException"):
                yield Note("service control policies are not enabled in this organization")
                return
            self._scps_failed = True
            yield PartFailed(SCP_PART, f"service control policies could not be read ({exc.operation_name}: "
                                       f"{err.get('Code')}: {err.get('Message')}); the stored ones are kept. "
                                       "Attest needs organizations:ListPolicies, DescribePolicy and ListTargetsForPolicy")
            return
        org_ref = f"org:{org.org['Id']}"
        for pid, scp in sorted(self._scps.items()):
            yield ResourceRecord(
                external_id=f"scp:{pid}", type="aws_scp", name=scp["name"], description=scp["description"],
                parent_ref=org_ref, part=SCP_PART,
                attributes={"policy_id": pid, "arn": scp["arn"], "aws_managed": scp["aws_managed"],
                            "targets": scp["targets"], "denies_iam_admin": scp["denies_iam_admin"]},
            )

    def _scp_levels(self, acct: OrgAccount) -> list[set[str]]:
        """The target ids of each level whose SCPs apply to an account: the root, each OU down, the account."""
        org = self._load_org()
        parent_of = {f"ou:{o['Id']}": o.get("ParentRef") for o in org.ous}
        chain: list[str] = []
        ref = acct.parent_ref
        while ref and ref.startswith("ou:") and ref not in chain:
            chain.append(ref)
            ref = parent_of.get(ref)
        return [set(self._root_ids), *({r.removeprefix("ou:")} for r in reversed(chain)), {acct.id}]

    def _scps_in_force(self, acct: OrgAccount) -> list[str]:
        """Names of the SCPs in force on an account; none on the management account (SCPs do not apply to
        it: https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html)."""
        if acct.id == self._load_org().management_id or not self._scps:
            return []
        targets = set().union(*self._scp_levels(acct))
        return sorted({p["name"] for p in self._scps.values() if targets & set(p["targets"])})

    def _scp_limits(self, acct: OrgAccount) -> list[str]:
        """Names of the SCPs that keep IAM administration from an account: one that denies it, or a level
        (root, OU, the account) none of whose SCPs allows IAM (an allow list without iam)."""
        if acct.id == self._load_org().management_id or not self._scps:
            return []
        out: set[str] = set()
        for level in self._scp_levels(acct):
            attached = [p for p in self._scps.values() if level & set(p["targets"])]
            out |= {p["name"] for p in attached if p["denies_iam_admin"]}
            if attached and not any(p["allows_iam"] for p in attached):
                out |= {p["name"] for p in attached}
        return sorted(out)

    # --- validate -----------------------------------------------------------------------------------
    def validate(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            org = self._load_org()
            if self.allow:
                _, unknown = self._selected_accounts(org)
                if unknown:
                    raise ConnectorError(f"accounts not in the organization: {', '.join(unknown)}")
            self._identity_center()
        except NoCredentialsError:
            raise ConnectorError("no AWS credentials: set the secrets access_key_id/secret_access_key, or give the "
                                 "process a profile, environment variables or an instance role") from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise ConnectorError(f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as exc:
            raise ConnectorError(f"cannot reach AWS: {exc}") from None

    # --- Identity Center ----------------------------------------------------------------------------
    def _identity_center(self) -> _IdentityCenter | None:
        from botocore.exceptions import ClientError

        if hasattr(self, "_ic"):
            return self._ic
        sso = self._client("sso-admin", region=self.ic_region)
        try:
            instances = list(self._pages(sso, "list_instances", "Instances"))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
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
        self._ic, self._ic_note = _IdentityCenter(inst["InstanceArn"], inst["IdentityStoreId"]), None
        return self._ic

    def _read_permission_set(self, ic: _IdentityCenter, arn: str) -> PermissionSetInfo:
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

    def _read_ic_users(self, ic: _IdentityCenter) -> list[dict[str, Any]]:
        store = self._client("identitystore", region=self.ic_region)
        return list(self._pages(store, "list_users", "Users", IdentityStoreId=ic.store_id))

    def _read_ic_groups(self, ic: _IdentityCenter) -> list[dict[str, Any]]:
        store = self._client("identitystore", region=self.ic_region)
        return list(self._pages(store, "list_groups", "Groups", IdentityStoreId=ic.store_id))

    def _read_ic_members(self, ic: _IdentityCenter, group_id: str) -> list[str]:
        store = self._client("identitystore", region=self.ic_region)
        return [m["MemberId"]["UserId"] for m in self._pages(
            store, "list_group_memberships", "GroupMemberships", IdentityStoreId=ic.store_id, GroupId=group_id)
            if (m.get("MemberId") or {}).get("UserId")]

    def _read_assignments(self, ic: _IdentityCenter, account_id: str) -> dict[str, list[dict[str, Any]]]:
        """Permission set ARN -> its assignments on this account (the sets provisioned to it, even unassigned)."""
        sso = self._client("sso-admin", region=self.ic_region)
        out: dict[str, list[dict[str, Any]]] = {}
        for ps_arn in self._pages(sso, "list_permission_sets_provisioned_to_account", "PermissionSets",
                                  InstanceArn=ic.instance_arn, AccountId=account_id):
            out[ps_arn] = list(self._pages(sso, "list_account_assignments", "AccountAssignments",
                                           InstanceArn=ic.instance_arn, AccountId=account_id, PermissionSetArn=ps_arn))
        return out

    # --- IAM ----------------------------------------------------------------------------------------
    def _read_iam(self, iam) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [],
                                                   "Policies": []}
        for page in self._paginate(iam, "get_account_authorization_details", {"PageSize": PAGE["iam"]},
                                   Filter=["User", "Group", "Role", "LocalManagedPolicy"]):
            for key in merged:
                merged[key].extend(page.get(key, []))
        return merged

    def _read_credential_report(self, iam) -> tuple[dict[str, CredentialRow] | None, str | None]:
        """The credential report, reusing one generated in the last 4 hours. (None, why) when unavailable.

        GetCredentialReport first (a recent report costs one call); else GenerateCredentialReport once and
        poll GetCredentialReport until the new report is there.
        """
        from botocore.exceptions import ClientError

        waiting = ("ReportNotPresent", "ReportExpired", "ReportInProgress")

        def fresh(resp: Mapping[str, Any]) -> bool:
            when = _parse_dt(resp.get("GeneratedTime"))
            return when is None or datetime.now(UTC) - when < CREDENTIAL_REPORT_MAX_AGE

        try:
            resp = iam.get_credential_report()
            if fresh(resp):
                return parse_credential_report(resp["Content"]), None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") not in waiting:
                return None, f"{err.get('Code')}: {err.get('Message')}"
        try:
            state = iam.generate_credential_report().get("State")
        except ClientError as exc:
            err = exc.response.get("Error", {})
            return None, f"{err.get('Code')}: {err.get('Message')}"
        deadline = time.monotonic() + CREDENTIAL_REPORT_WAIT
        delay = 0.0 if state == "COMPLETE" else 0.25
        while True:
            if delay:
                time.sleep(delay)
            try:  # the report we asked for (AWS answers ReportInProgress until it is ready)
                return parse_credential_report(iam.get_credential_report()["Content"]), None
            except ClientError as exc:
                err = exc.response.get("Error", {})
                if err.get("Code") not in waiting:
                    return None, f"{err.get('Code')}: {err.get('Message')}"
            if time.monotonic() > deadline:
                return None, f"the credential report was not ready within {CREDENTIAL_REPORT_WAIT:.0f}s"
            delay = min(max(delay * 2, 0.25), 4.0)

    def _per_user_credentials(self, iam, users: list[dict[str, Any]]) -> None:
        """Fallback without the credential report: keys, MFA and console password user by user."""
        from botocore.exceptions import ClientError

        now = datetime.now(UTC)
        for u in users:
            name = u["UserName"]
            keys = []
            for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=name):
                last = iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"]).get("AccessKeyLastUsed") or {}
                created = _parse_dt(k.get("CreateDate"))
                keys.append({"id": k["AccessKeyId"], "status": k.get("Status"), "created_at": _iso(created),
                             "age_days": (now - created).days if created else None,
                             "last_used_at": _iso(_parse_dt(last.get("LastUsedDate"))),
                             "last_used_service": last.get("ServiceName") if last.get("ServiceName") != "N/A" else None})
            u["_access_keys"] = keys
            u["_mfa"] = any(True for _ in self._pages(iam, "list_mfa_devices", "MFADevices", UserName=name))
            try:
                iam.get_login_profile(UserName=name)
                u["_login_profile"] = True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                    raise
                u["_login_profile"] = False

    # --- one account ----------------------------------------------------------------------------------
    def _account_task(self, acct: OrgAccount, ic: _IdentityCenter | None,
                      catalog: Mapping[str, PermissionSetInfo]) -> list[Record]:
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            self._active_accounts += 1
            self.stats["max_concurrent_accounts"] = max(self.stats["max_concurrent_accounts"], self._active_accounts)
        org = self._load_org()
        part = account_part(acct.id)
        try:
            try:
                creds = self._account_creds(acct.id, self.role_name)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                return [account_resource(acct, org.management_id), PartFailed(
                    part, f"cannot assume role {self.role_name} in account {acct.id} ({acct.name}): "
                          f"{err.get('Code')}: {err.get('Message')}; its previous access is kept as it was")]
            try:
                iam = self._client("iam", creds)
                details = self._read_iam(iam)
                report, why = self._read_credential_report(iam)
                out: list[Record] = []
                if report is None:
                    self._per_user_credentials(iam, details["UserDetailList"])
                    out.append(Note(f"account {acct.id}: credential report unavailable ({why}); "
                                    "read keys, MFA and passwords user by user"))
                else:
                    # AWS reuses a report for up to four hours: users created since are not in it
                    missing = [u for u in details["UserDetailList"] if u["Arn"] not in report]
                    if missing:
                        self._per_user_credentials(iam, missing)
                        out.append(Note(f"account {acct.id}: {len(missing)} IAM user(s) created after the credential "
                                        "report was generated; read their keys, MFA and passwords user by user"))
                scps = self._scp_limits(acct)
                out.append(account_resource(acct, org.management_id, (report or {}).get("<root_account>"),
                                            scps=self._scps_in_force(acct)))
                out.extend(iam_records(acct, details, report, self.extra_privileged, scp_limits=scps,
                                       own_roles=self._own_roles(acct.id)))
                with self._lock:  # for the trust paths, resolved across accounts once all are read
                    self._trust_inputs[acct.id] = (acct, details, tuple(scps))
                if ic is not None:
                    out.extend(self._assignment_records(ic, acct, catalog, local_admin_policies(details), scps))
                if self._scps_failed and acct.id != org.management_id:
                    # what SCPs limit was not read: privileged entitlements (their limitation comes from the
                    # SCPs) and the account's SCP list are yielded in the SCPs' failed part, so they keep
                    # their stored values (sync rule 4)
                    out = [r._replace(part=SCP_PART) if (isinstance(r, EntitlementRecord) and r.privileged)
                           or (isinstance(r, ResourceRecord) and r.type == "aws_account") else r for r in out]
                return out
            except (ClientError, BotoCoreError, PagingError) as exc:
                if isinstance(exc, ClientError):
                    err = exc.response.get("Error", {})
                    why = f"{exc.operation_name}: {err.get('Code')}: {err.get('Message')}"
                else:
                    why = str(exc)
                return [account_resource(acct, org.management_id), PartFailed(
                    part, f"account {acct.id} ({acct.name}) could not be read ({why}); "
                          "its previous access is kept as it was")]
        finally:
            with self._lock:
                self._active_accounts -= 1

    def _assignment_records(self, ic: _IdentityCenter, acct: OrgAccount, catalog: Mapping[str, PermissionSetInfo],
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

    # --- sync ---------------------------------------------------------------------------------------
    def sync(self) -> Iterator[Record]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            org = self._load_org()
        except NoCredentialsError:
            raise ConnectorError("no AWS credentials: set the secrets access_key_id/secret_access_key, or give the "
                                 "process a profile, environment variables or an instance role") from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise ConnectorError(f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as exc:
            raise ConnectorError(f"cannot reach AWS: {exc}") from None
        if self._org_note:
            yield Note(self._org_note)
        accounts, unknown = self._selected_accounts(org)
        if unknown:
            yield Note(f"accounts in the allow-list but not in the organization: {', '.join(unknown)}")
        yield from org_records(org.org, org.ous)
        yield from self._read_scps()
        self._privileged_groups: dict[str, set[str]] = {}
        self._trust_inputs: dict[str, tuple[OrgAccount, Any, tuple[str, ...]]] = {}
        self._sso_by_account: dict[str, dict[str, list[tuple[str, str]]]] = {}

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="attest-aws")
        try:
            try:
                ic = self._identity_center()
            except (ClientError, BotoCoreError) as exc:
                raise ConnectorError(f"IAM Identity Center could not be read: {exc}") from None
            if self._ic_note:
                yield Note(self._ic_note)
            catalog: dict[str, PermissionSetInfo] = {}
            users_f: Future | None = None
            groups_f: Future | None = None
            if ic is not None:
                sso = self._client("sso-admin", region=self.ic_region)
                users_f = pool.submit(self._read_ic_users, ic)
                groups_f = pool.submit(self._read_ic_groups, ic)
                arns = list(self._pages(sso, "list_permission_sets", "PermissionSets", InstanceArn=ic.instance_arn))
                for f in [pool.submit(self._read_permission_set, ic, arn) for arn in arns]:
                    info = self._ic_result(f)
                    catalog[info.arn] = info
            account_fs = [pool.submit(self._account_task, acct, ic, catalog) for acct in accounts]
            member_fs: dict[str, Future] = {}
            groups: list[dict[str, Any]] = []
            if ic is not None:
                for user in self._ic_result(users_f):
                    yield identity_center_user(user, ic.store_id)
                groups = self._ic_result(groups_f)
                member_fs = {g["GroupId"]: pool.submit(self._read_ic_members, ic, g["GroupId"]) for g in groups}
            failed: list[str] = []
            for f in as_completed(account_fs):
                records = f.result()
                failed += [r.part for r in records if isinstance(r, PartFailed)]
                yield from records
            # an Identity Center group is privileged through its assignments, which live in the accounts:
            # when an account could not be read, the group's membership entitlement is derived partly from
            # an unread part, so it is yielded in that part and the sync engine keeps its stored value
            # (privileged flag and privileged_via) instead of recomputing it from the accounts it could read
            derived_part = min(failed) if failed else None
            for g in groups:
                gid = g["GroupId"]
                ref = f"idc-group:{gid}"
                name = g.get("DisplayName") or gid
                held = sorted(self._privileged_groups.get(gid, ()))
                yield ResourceRecord(
                    external_id=ref, type="aws_sso_group", name=name, description=g.get("Description"), is_group=True,
                    attributes={"identity_store_id": ic.store_id, "group_id": gid,
                                "external_ids": [f"{x.get('Issuer')}:{x.get('Id')}" for x in g.get("ExternalIds") or []]},
                )
                yield EntitlementRecord(
                    external_id=f"{ref}:member", resource_ref=ref, name="member",
                    display_name=f"Member of Identity Center group {name}", is_membership=True, privileged=bool(held),
                    attributes={"kind": "sso_group_membership", "identity_store_id": ic.store_id, "group_id": gid,
                                "group_name": name, "privileged_via": held[:20]},
                    part=derived_part,
                )
                for uid in self._ic_result(member_fs[gid]):
                    yield GrantRecord(entitlement_ref=f"{ref}:member", principal_ref=f"idc-user:{uid}")
            yield from self._trust_paths(org, [p for p in failed if p != SCP_PART])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _trust_paths(self, org: _Org, failed: list[str]) -> Iterator[Record]:
        """Who can assume which role (attest.connectors.aws_trust), resolved across every account read. A
        path depends on the role's account and the caller's, so when an account could not be read the
        stored paths are all kept as they were (their part fails) instead of ending those it cannot see."""
        from attest.connectors.aws_trust import TRUST_PART, AccountIam, trust_records

        if failed:
            yield PartFailed(TRUST_PART, f"role trust paths are resolved across accounts and {', '.join(failed)} "
                                         "could not be read; the stored trust paths are kept as they were")
            return
        accounts = [AccountIam(acct.id, acct.name, details, self._sso_by_account.get(acct.id, {}), scps)
                    for acct, details, scps in (self._trust_inputs[k] for k in sorted(self._trust_inputs))]
        yield from trust_records(accounts, [a.id for a in org.accounts], extra_privileged=self.extra_privileged)

    @staticmethod
    def _ic_result(future: Future | None) -> Any:
        """An Identity Center read is source-wide: its failure fails the run (partial IC data ends nothing)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return future.result() if future is not None else []
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise ConnectorError(f"IAM Identity Center: {exc.operation_name} failed: {err.get('Code')}: "
                                 f"{err.get('Message')}") from None
        except BotoCoreError as exc:
            raise ConnectorError(f"IAM Identity Center could not be read: {exc}") from None

    def close(self) -> None:
        self._clients.clear()

    # --- revoke / undo ------------------------------------------------------------------------------
    def revoke(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, remove=True, dry_run=dry_run)

    def grant(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, remove=False, dry_run=dry_run)

    def _change(self, ref: GrantRef, *, remove: bool, dry_run: bool) -> RevokeResult:
        from botocore.exceptions import BotoCoreError, ClientError

        attrs = dict(ref.entitlement_attributes or {})
        kind = attrs.get("kind") or _kind_from_ref(ref.entitlement_ref)
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
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError):
                err = exc.response.get("Error", {})
                raise ConnectorError(f"AWS refused {exc.operation_name}: {err.get('Code')}: {err.get('Message')}") from None
            raise ConnectorError(f"cannot reach AWS: {exc}") from None
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
            from botocore.exceptions import ClientError

            try:
                return next((k for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=user)
                             if _iso(_parse_dt(k.get("CreateDate"))) == created), None)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
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

    def _iam_user_in_group(self, iam, user: str, group: str) -> bool | None:
        from botocore.exceptions import ClientError

        try:
            return any(g["GroupName"] == group for g in self._pages(iam, "list_groups_for_user", "Groups", UserName=user))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                return None
            raise

    # IAM managed policy attachment
    def _iam_policy(self, ref: GrantRef, attrs: Mapping[str, Any], remove: bool, dry_run: bool) -> RevokeResult:
        from botocore.exceptions import ClientError

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
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
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
        from botocore.exceptions import ClientError

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
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
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
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                return False

        outcome = "done"
        if not dry_run:
            outcome = self._confirm(lambda: member() != remove, call)
        return RevokeResult((call,), dry_run, outcome=outcome,
                            detail=f"{'removed' if remove else 'added'} {who} {'from' if remove else 'to'} Identity "
                                   f"Center group {group}{_UNCONFIRMED if outcome == 'unconfirmed' else ''}")

    # --- the last-administrator guard -----------------------------------------------------------------
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
        from botocore.exceptions import ClientError

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
        from botocore.exceptions import ClientError

        try:
            iam.get_login_profile(UserName=user)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
        return any(k.get("Status") == "Active" for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata",
                                                                     UserName=user))


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
