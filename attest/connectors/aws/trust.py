"""Who can assume which AWS role: role trust policies resolved to principals of the organization.

Pure: works on what the AWS connector already reads (each account's merged GetAccountAuthorizationDetails
and the Identity Center account assignments); no API call of its own. `trust_records()` yields, for every
role an account holds (service-linked and Identity Center roles aside), a resource `iam-role:<arn>`
(type `aws_iam_role`) with one entitlement `assume` (purpose permission, privileged when the role is),
granted to each principal its trust policy resolves to, with the path in the grant's attributes
(`via_path`: "role assumption: user X -> role Y in account Z", shown as "via ..." on the person page
and on review items; the trust statement and its conditions).

How a trust statement's principal is resolved (an Allow statement whose Action covers sts:AssumeRole):
- an IAM user or role by ARN, of an account of the organization -> that user or role. A principal in the
  role's own account needs nothing more; one in another account also needs its own identity policies to
  allow sts:AssumeRole on the role (AWS evaluates both sides): `caller_policy_allows` says whether they do.
  The grant is emitted either way (the trust is the reviewable access; an edit of a policy activates it).
- an Identity Center role `AWSReservedSSO_<PermissionSet>_<hash>` (by ARN) -> the users and groups
  assigned that permission set in that account (group grants expand to members with the group path kept).
- a whole account of the organization (`arn:aws:iam::<id>:root` or the bare id) -> the users and roles of
  that account whose identity policies allow sts:AssumeRole on the role's ARN (or a pattern matching it),
  an Identity Center role counting as its permission set's assignees.
- an account outside the organization (or a principal in one) -> an account record `aws-trust:<principal>`
  ("outside the organization"), its grant marked `trust_outside_org`.
- `"*"` (or `"AWS": "*"`, or Allow with NotPrincipal) -> an account record `aws-trust:*` ("any AWS
  principal"), its grant marked `wildcard_trust` (and `trust_outside_org` unless a condition on
  aws:PrincipalOrgID / aws:PrincipalOrgPaths / aws:PrincipalAccount narrows it), plus every principal of
  the organization whose identity policies allow sts:AssumeRole on the role.
- services and federated providers (SAML, OIDC) are listed on the entitlement (`services`, `federated`),
  not granted: they are not principals of the organization. Unique ids (a deleted principal: AWS shows
  its AIDA.../AROA... id) are listed as `unresolved`.

Approximations (documented in docs/connectors/aws.md, "Trust paths"):
- Conditions are recorded, not evaluated (`conditions` on the grant); a conditional path is still a path.
- Identity policies: customer-managed and inline documents are evaluated (Allow matching the action and
  the role's ARN, minus an explicit Deny without conditions); AWS managed policies are judged by name,
  because the connector reads only local policy documents: AdministratorAccess and PowerUserAccess allow
  sts:AssumeRole on every role, others are taken not to. Permission boundaries, SCPs and session policies
  of the caller are not applied.
- One hop: a role that may assume another role is granted that role; the chain from a person through
  two roles is not followed (the first role's page shows who can reach it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from attest.connectors.aws.policies import (
    _as_list,
    _document,
    admin_statements,
    is_privileged_policy,
    policy_name_from_arn,
)
from attest.connectors.aws.transforms import account_ref, organizations_managed
from attest.connectors.base import AccountRecord, EntitlementRecord, GrantRecord, Record, ResourceRecord
from attest.connectors.managed import ManagedKind, emit

TRUST_PART = "aws:trust"  # role trust paths are resolved across accounts: one part for all of them
ROLE_RESOURCE_TYPE = "aws_iam_role"
ASSUME = "assume"
KIND = "aws_role_assumption"
# AWS managed policies whose documents allow sts:AssumeRole on every resource (the connector does not
# read AWS managed documents): AdministratorAccess (Action *), PowerUserAccess (NotAction iam:*,
# organizations:*, account:* leaves sts in).
ASSUME_ALLOWING_MANAGED = ("AdministratorAccess", "PowerUserAccess")
ORG_CONDITION_KEYS = ("aws:principalorgid", "aws:principalorgpaths", "aws:principalaccount")
SSO_ROLE_RE = re.compile(r"^AWSReservedSSO_(?P<ps>.+)_(?P<hash>[0-9a-f]{8,32})$")
SKIPPED_TARGET_PATHS = ("/aws-service-role/", "/aws-reserved/")
ARN_RE = re.compile(r"^arn:(?P<partition>aws[\w-]*):(?P<service>iam|sts)::(?P<account>\d{12}):(?P<rest>.+)$")


# --- trust policy statements ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrustStatement:
    index: int
    sid: str | None
    aws: tuple[str, ...]  # AWS principals as written ("*", ARNs, bare account ids, unique ids)
    services: tuple[str, ...]
    federated: tuple[str, ...]
    conditions: Mapping[str, Any]
    not_principal: bool = False  # Allow with NotPrincipal: everyone but the named (treated as a wildcard)

    @property
    def wildcard(self) -> bool:
        return self.not_principal or "*" in self.aws

    @property
    def narrowed_to_org(self) -> bool:
        """A condition on the caller's organization or account narrows a wildcard to it (not evaluated)."""
        return any(key.lower() in ORG_CONDITION_KEYS for block in self.conditions.values()
                   if isinstance(block, Mapping) for key in block)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"statement": self.index}
        if self.sid:
            out["sid"] = self.sid
        if self.conditions:
            out["conditions"] = dict(self.conditions)
        return out


def _covers(actions: Iterable[str], action: str) -> bool:
    action = action.lower()
    return any(fnmatchcase(action, str(a).lower()) for a in actions)


def trust_statements(doc: Any) -> list[TrustStatement]:
    """The Allow statements of a role trust policy that let a principal call sts:AssumeRole."""
    out: list[TrustStatement] = []
    for i, stmt in enumerate(_as_list(_document(doc).get("Statement"))):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        if "NotAction" in stmt:
            if _covers(_as_list(stmt.get("NotAction")), "sts:AssumeRole"):
                continue
        elif not _covers(_as_list(stmt.get("Action")), "sts:AssumeRole"):
            continue  # sts:AssumeRoleWithSAML / WithWebIdentity / TagSession only
        cond = stmt.get("Condition") if isinstance(stmt.get("Condition"), Mapping) else {}
        common = {"index": i, "sid": stmt.get("Sid"), "conditions": cond}
        if "NotPrincipal" in stmt:
            out.append(TrustStatement(aws=("*",), services=(), federated=(), not_principal=True, **common))
            continue
        principal = stmt.get("Principal")
        if principal == "*":
            out.append(TrustStatement(aws=("*",), services=(), federated=(), **common))
            continue
        if not isinstance(principal, Mapping):
            continue
        out.append(TrustStatement(
            aws=tuple(str(p).strip() for p in _as_list(principal.get("AWS"))),
            services=tuple(str(p) for p in _as_list(principal.get("Service"))),
            federated=tuple(str(p) for p in _as_list(principal.get("Federated"))), **common))
    return out


@dataclass(frozen=True)
class Principal:
    """An AWS principal as a trust policy names it."""

    kind: str  # wildcard | account | user | role | assumed_role | unique_id
    account_id: str | None = None
    name: str | None = None
    arn: str | None = None
    raw: str = ""


def parse_principal(value: str) -> Principal:
    if value == "*":
        return Principal("wildcard", raw=value)
    if re.fullmatch(r"\d{12}", value):
        return Principal("account", value, raw=value)
    m = ARN_RE.match(value)
    if not m:
        return Principal("unique_id", raw=value)
    acct, rest = m["account"], m["rest"]
    if rest == "root":
        return Principal("account", acct, arn=value, raw=value)
    kind, _, path = rest.partition("/")
    if m["service"] == "sts" and kind == "assumed-role":
        return Principal("assumed_role", acct, path.split("/", 1)[0], arn=value, raw=value)
    if kind in ("user", "role"):
        return Principal(kind, acct, path.rsplit("/", 1)[-1], arn=value, raw=value)
    return Principal("unique_id", acct, raw=value)


# --- identity policies: may this principal call sts:AssumeRole on that role? -------------------------------


def _resource_matches(patterns: Iterable[str], arn: str) -> bool:
    return any(fnmatchcase(arn, str(p)) for p in patterns)


def policy_allows_assume(doc: Any, role_arn: str) -> tuple[bool, bool]:
    """(allows, denies) sts:AssumeRole on `role_arn` by one identity policy document. A Deny counts only
    without conditions (a conditional Deny may not apply); an Allow counts with or without them."""
    allows = denies = False
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict):
            continue
        if "NotAction" in stmt:
            action_ok = not _covers(_as_list(stmt.get("NotAction")), "sts:AssumeRole")
        else:
            action_ok = _covers(_as_list(stmt.get("Action")), "sts:AssumeRole")
        if not action_ok:
            continue
        if "NotResource" in stmt:
            resource_ok = not _resource_matches(_as_list(stmt.get("NotResource")), role_arn)
        else:
            resource_ok = _resource_matches(_as_list(stmt.get("Resource")), role_arn)
        if not resource_ok:
            continue
        if stmt.get("Effect") == "Allow":
            allows = True
        elif stmt.get("Effect") == "Deny" and not stmt.get("Condition"):
            denies = True
    return allows, denies


@dataclass
class AccountIam:
    """What the connector read of one account, as this module needs it."""

    id: str
    name: str
    details: Mapping[str, list[dict[str, Any]]]  # merged GetAccountAuthorizationDetails
    # permission set name -> [(USER|GROUP, principal id)] assigned in this account
    sso_assignments: Mapping[str, list[tuple[str, str]]] = field(default_factory=dict)
    scp_limits: tuple[str, ...] = ()  # the SCPs in force that keep IAM administration from it

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    def local_docs(self) -> dict[str, Any]:
        docs = {}
        for pol in self.details.get("Policies", []):
            default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
            docs[pol["Arn"]] = _document(default.get("Document")) if default else {}
        return docs


class _Caller:
    """One account's principals and whether their identity policies allow assuming a given role."""

    def __init__(self, acct: AccountIam) -> None:
        self.acct = acct
        self.docs = acct.local_docs()
        self.groups = {g["GroupName"]: g for g in acct.details.get("GroupDetailList", [])}
        self.users = {u["Arn"]: u for u in acct.details.get("UserDetailList", [])}
        self.roles = {r["Arn"]: r for r in acct.details.get("RoleDetailList", [])}
        self.roles_by_name = {r["RoleName"]: r for r in self.roles.values()}
        self.users_by_name = {u["UserName"]: u for u in self.users.values()}

    def _policies(self, principal: Mapping[str, Any], managed_key: str, inline_key: str) -> Iterator[Any]:
        for p in principal.get(managed_key) or ():
            arn = p.get("PolicyArn", "")
            if arn in self.docs:
                yield self.docs[arn]
            elif arn.rsplit("/", 1)[-1] in ASSUME_ALLOWING_MANAGED and ":iam::aws:policy/" in arn:
                yield {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
        for p in principal.get(inline_key) or ():
            yield p.get("PolicyDocument")

    def allows(self, principal: Mapping[str, Any], role_arn: str, *, user: bool) -> bool:
        docs = list(self._policies(principal, "AttachedManagedPolicies", "UserPolicyList" if user else "RolePolicyList"))
        if user:
            for gname in principal.get("GroupList") or ():
                g = self.groups.get(gname)
                if g:
                    docs += list(self._policies(g, "AttachedManagedPolicies", "GroupPolicyList"))
        verdicts = [policy_allows_assume(d, role_arn) for d in docs]
        return any(a for a, _ in verdicts) and not any(d for _, d in verdicts)


# --- records --------------------------------------------------------------------------------------------


def role_resource_ref(role_arn: str) -> str:
    return f"iam-role:{role_arn}"


def assume_entitlement_ref(role_arn: str) -> str:
    return f"{role_resource_ref(role_arn)}:{ASSUME}"


def external_principal_ref(principal: str) -> str:
    return f"aws-trust:{principal}"


def _role_privilege(acct: AccountIam, role: Mapping[str, Any], docs: Mapping[str, Any],
                    extra: Iterable[str]) -> list[str]:
    reasons: list[str] = []
    for p in role.get("AttachedManagedPolicies") or ():
        arn = p.get("PolicyArn", "")
        if is_privileged_policy(arn, extra):
            reasons.append(f"managed policy {policy_name_from_arn(arn)}")
        elif arn in docs and admin_statements(docs[arn]):
            reasons.append(f"policy {policy_name_from_arn(arn)} {admin_statements(docs[arn])[0]}")
    for p in role.get("RolePolicyList") or ():
        for r in admin_statements(p.get("PolicyDocument")):
            reasons.append(f"inline policy {p.get('PolicyName')} {r}")
    return reasons


def _resolve(acct: AccountIam, role_arn: str, target: str, statements: list[TrustStatement],
             callers: Mapping[str, _Caller], org_ids: set[str], externals: dict[str, AccountRecord],
             ) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """The principals one role's trust statements resolve to: {(principal type, ref): grant attributes}."""
    unresolved: list[str] = []
    grants: dict[tuple[str, str], dict[str, Any]] = {}

    def grant(principal_ref: str, ptype: str, via: str, st: TrustStatement, how: str,
              **extra_attrs: Any) -> None:
        key = (ptype, principal_ref)
        attrs = {"kind": KIND, "via_path": f"role assumption: {via} -> {target}", "how": how,
                 "role_arn": role_arn, "trust": st.describe(), **extra_attrs}
        if st.conditions:
            attrs["conditions"] = dict(st.conditions)
        old = grants.get(key)
        if old is None or (old.get("conditions") and not attrs.get("conditions")):
            grants[key] = attrs  # an unconditional path wins over a conditional one

    def assignees(owner: AccountIam, ps_name: str, st: TrustStatement, how: str, sso_role: str) -> None:
        # the path runs through a role IAM Identity Center owns: the change belongs to the assignment
        managed = emit(ManagedKind.PERMISSION_SET, f"permission set {ps_name} in account {owner.label}",
                       f"role {sso_role}")
        for ptype, pid in owner.sso_assignments.get(ps_name, ()):
            if ptype == "USER":
                grant(f"idc-user:{pid}", "account",
                      f"permission set {ps_name} ({sso_role}) in account {owner.label}", st, how, **managed)
            elif ptype == "GROUP":
                grant(f"idc-group:{pid}", "resource",
                      f"permission set {ps_name} ({sso_role}) in account {owner.label}", st, how, **managed)

    def whole_account(owner_id: str, st: TrustStatement, how: str) -> None:
        caller = callers.get(owner_id)
        if caller is None:
            return  # an account of the organization that was not read: nothing to resolve it to
        for u in caller.users.values():
            if caller.allows(u, role_arn, user=True):
                grant(u["Arn"], "account", f"user {u['UserName']} in account {caller.acct.label}", st, how,
                      caller_policy_allows=True)
        for r in caller.roles.values():
            if r["Arn"] == role_arn or not caller.allows(r, role_arn, user=False):
                continue
            m = SSO_ROLE_RE.match(r["RoleName"])
            if m and (r.get("Path") or "").startswith("/aws-reserved/"):
                assignees(caller.acct, m["ps"], st, how, r["RoleName"])
            elif not (r.get("Path") or "/").startswith(SKIPPED_TARGET_PATHS):
                grant(r["Arn"], "account", f"role {r['RoleName']} in account {caller.acct.label}", st, how,
                      caller_policy_allows=True)

    for st in statements:
        if st.wildcard:
            outside = not st.narrowed_to_org
            ext = external_principal_ref("*")
            externals.setdefault(ext, AccountRecord(
                external_id=ext, login="*", display_name="any AWS principal (*)", kind="service",
                attributes={"trust_principal": "*", "outside_org": True}, part=TRUST_PART))
            grant(ext, "account", "any AWS principal (*)", st, "wildcard", wildcard_trust=True,
                  trust_outside_org=outside)
            for owner_id in sorted(callers):
                whole_account(owner_id, st, "wildcard")
        for raw in st.aws:
            if raw == "*":
                continue
            p = parse_principal(raw)
            if p.kind == "unique_id" or p.account_id is None:
                unresolved.append(raw)
                continue
            if p.account_id not in org_ids:
                ext = external_principal_ref(raw)
                what = (f"account {p.account_id}" if p.kind == "account"
                        else f"{p.kind.replace('_', ' ')} {p.name} of account {p.account_id}")
                externals.setdefault(ext, AccountRecord(
                    external_id=ext, login=raw, display_name=f"outside the organization: {what}",
                    kind="service", part=TRUST_PART,
                    attributes={"trust_principal": raw, "outside_org": True, "aws_account_id": p.account_id}))
                grant(ext, "account", f"{what} (outside the organization)", st, "outside_org",
                      trust_outside_org=True)
                continue
            caller = callers.get(p.account_id)
            if p.kind == "account":
                whole_account(p.account_id, st, "account_root")
                continue
            if caller is None:
                unresolved.append(raw)
                continue
            if p.kind == "user":
                u = caller.users.get(raw) or caller.users_by_name.get(p.name or "")
                if u is None:
                    unresolved.append(raw)
                    continue
                allows = True if p.account_id == acct.id else caller.allows(u, role_arn, user=True)
                grant(u["Arn"], "account", f"user {u['UserName']} in account {caller.acct.label}", st, "named",
                      caller_policy_allows=allows)
                continue
            # a role (or a session of one)
            r = caller.roles.get(raw) or caller.roles_by_name.get(p.name or "")
            sso = SSO_ROLE_RE.match(p.name or "")
            if sso and (r is None or (r.get("Path") or "").startswith("/aws-reserved/")):
                assignees(caller.acct, sso["ps"], st, "permission_set", p.name or "")
                continue
            if r is None or (r.get("Path") or "/").startswith(SKIPPED_TARGET_PATHS):
                unresolved.append(raw)
                continue
            allows = True if p.account_id == acct.id else caller.allows(r, role_arn, user=False)
            grant(r["Arn"], "account", f"role {r['RoleName']} in account {caller.acct.label}", st, "named",
                  caller_policy_allows=allows)

    return grants, unresolved


def trust_records(accounts: Iterable[AccountIam], org_account_ids: Iterable[str], *,
                  extra_privileged: Iterable[str] = ()) -> Iterator[Record]:
    """The role-assumption records of every role of `accounts` (see the module doc). `org_account_ids`:
    every account of the organization (also those not read: a principal of an account of the organization
    that was not selected is still inside it). Every record is in part TRUST_PART."""
    accts = list(accounts)
    org_ids = set(org_account_ids) | {a.id for a in accts}
    callers = {a.id: _Caller(a) for a in accts}
    extra = list(extra_privileged)
    externals: dict[str, AccountRecord] = {}

    for acct in accts:
        caller_here = callers[acct.id]
        for role in acct.details.get("RoleDetailList", []):
            if (role.get("Path") or "/").startswith(SKIPPED_TARGET_PATHS):
                continue
            role_arn, role_name = role["Arn"], role["RoleName"]
            statements = trust_statements(role.get("AssumeRolePolicyDocument"))
            reasons = _role_privilege(acct, role, caller_here.docs, extra)
            limits = [f"SCP {n}" for n in acct.scp_limits] if reasons else []
            ref = role_resource_ref(role_arn)
            target = f"role {role_name} in account {acct.label}"
            services = sorted({s for st in statements for s in st.services})
            federated = sorted({f for st in statements for f in st.federated})
            grants, unresolved = _resolve(acct, role_arn, target, statements, callers, org_ids, externals)

            attrs: dict[str, Any] = {
                "kind": KIND, "account_id": acct.id, "role_arn": role_arn, "role_name": role_name,
                "trusted_principals": sorted({p for st in statements for p in st.aws}),
                "services": services, "federated": federated, "unresolved": sorted(set(unresolved)),
                "wildcard_trust": any(st.wildcard for st in statements),
                "trust_outside_org": any(g.get("trust_outside_org") for g in grants.values()),
                "privileged_reasons": reasons, **organizations_managed(role_name),
            }
            if limits:
                attrs["limited_by"] = limits
                attrs["privileged_note"] = f"administrator, limited by {', '.join(limits)}"
            yield ResourceRecord(
                external_id=ref, type=ROLE_RESOURCE_TYPE, name=f"role {role_name} ({acct.id})",
                description=f"IAM role in account {acct.label}; who can assume it, from its trust policy",
                parent_ref=account_ref(acct.id), part=TRUST_PART,
                attributes={"account_id": acct.id, "role_arn": role_arn, "role_name": role_name},
            )
            yield EntitlementRecord(
                external_id=assume_entitlement_ref(role_arn), resource_ref=ref, name=ASSUME,
                display_name=f"Assume role {role_name} in account {acct.label}", purpose="permission",
                privileged=bool(reasons), attributes=attrs, part=TRUST_PART,
            )
            for (ptype, pref), gattrs in sorted(grants.items()):
                yield GrantRecord(entitlement_ref=assume_entitlement_ref(role_arn), principal_ref=pref,
                                  principal_type=ptype, attributes=gattrs, part=TRUST_PART)
    yield from externals.values()
