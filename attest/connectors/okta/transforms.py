"""Pure transforms from Okta payloads into records (unit-tested on recorded payloads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attest.connectors.base import (
    AccountRecord,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    Note,
    Record,
    ResourceRecord,
)
from attest.connectors.managed import ManagedKind, emit
from attest.connectors.timestamps import parse_timestamp as parse_time  # Okta's JSON: always strings

STATUS_MAP = {  # Okta user status -> identity status
    "ACTIVE": "active", "PASSWORD_EXPIRED": "active", "LOCKED_OUT": "active", "RECOVERY": "active",
    "PROVISIONED": "active", "STAGED": "active", "SUSPENDED": "suspended", "DEPROVISIONED": "terminated",
}


ACCOUNT_STATUS = {"ACTIVE": "active", "PASSWORD_EXPIRED": "active", "LOCKED_OUT": "locked", "RECOVERY": "active",
                  "PROVISIONED": "pending", "STAGED": "pending", "SUSPENDED": "suspended",
                  "DEPROVISIONED": "deprovisioned"}


GROUP_TYPES = ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")
SSO_EVENT = "user.authentication.sso"
ADMIN_STAT = ("hasAdminPrivlege", "hasAdminPrivilege")  # Okta's spelling first (OpenAPI, okta-sdk-python)


def admin_flag(stats: Any) -> bool | None:
    """The group stats' admin-role flag (either spelling), or None when Okta did not say."""
    if isinstance(stats, Mapping):
        for key in ADMIN_STAT:
            if isinstance(stats.get(key), bool):
                return stats[key]
    return None


def _s(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass
class UserIndex:
    """What manager resolution needs to know about every user: employee numbers, logins, e-mails, ids."""

    ids: set[str] = field(default_factory=set)
    by_employee_number: dict[str, str] = field(default_factory=dict)
    by_login: dict[str, str] = field(default_factory=dict)

    def add(self, user: Mapping[str, Any]) -> None:
        uid = user.get("id")
        profile = user.get("profile")
        if not isinstance(uid, str) or not isinstance(profile, Mapping):
            return
        self.ids.add(uid)
        if _s(profile.get("employeeNumber")):
            self.by_employee_number.setdefault(str(profile["employeeNumber"]).strip(), uid)
        for key in ("login", "email"):
            if _s(profile.get(key)):
                self.by_login.setdefault(str(profile[key]).strip().lower(), uid)

    def resolve(self, ref: str | None) -> str | None:
        """The manager as an Okta user id when it can be found; else the value as given (a login or e-mail)."""
        if not ref:
            return None
        if ref in self.ids:
            return ref
        return self.by_employee_number.get(ref) or self.by_login.get(ref.lower()) or ref


def user_records(user: Mapping[str, Any], index: UserIndex, manager_attribute: str = "managerId",
                 last_sso: Mapping[str, str] | None = None) -> list[Record]:
    """One Okta user -> IdentityRecord + AccountRecord (or a Note when the payload cannot be used)."""
    uid = user.get("id")
    profile = user.get("profile")
    if not isinstance(uid, str) or not uid:
        return [Note(f"Okta returned a user without an id; skipped ({str(user)[:120]})")]
    if not isinstance(profile, Mapping):
        return [Note(f"Okta user {uid} has no profile; skipped")]
    okta_status = str(user.get("status") or "").upper()
    notes: list[Record] = []
    status = STATUS_MAP.get(okta_status)
    if status is None:
        notes.append(Note(f"Okta user {uid} has an unknown status {okta_status or '(none)'!r}; treated as active"))
        status = "active"
    login = _s(profile.get("login"))
    email = _s(profile.get("email")) or (login if login and "@" in login else None)
    first, last = _s(profile.get("firstName")), _s(profile.get("lastName"))
    name = _s(profile.get("displayName")) or " ".join(p for p in (first, last) if p) or login or uid
    manager_raw = _s(profile.get(manager_attribute)) or _s(profile.get("manager"))
    manager = index.resolve(manager_raw)
    user_type = _s(profile.get("userType"))
    kind = "service" if (user_type or "").lower() in ("service", "service account", "system") else "human"
    attrs = {k: v for k, v in (("okta_status", okta_status or None), ("user_type", user_type),
                               ("status_changed", _s(user.get("statusChanged")))) if v}
    identity = IdentityRecord(
        external_id=uid, display_name=name, email=email, login=login,
        employee_id=_s(profile.get("employeeNumber")), department=_s(profile.get("department")),
        title=_s(profile.get("title")), manager_ref=manager if manager != uid else None, status=status, kind=kind,
        attributes=attrs,
    )
    account_attrs = dict(attrs)
    if last_sso:
        account_attrs["app_last_sso"] = dict(sorted(last_sso.items()))
    account = AccountRecord(
        external_id=uid, login=login, email=email, display_name=name,
        status=ACCOUNT_STATUS.get(okta_status, okta_status.lower() or "active"), kind=kind,
        last_login_at=parse_time(user.get("lastLogin")), created_at=parse_time(user.get("created")),
        identity_ref=uid, saml_nameid=login, attributes=account_attrs,
    )
    return [*notes, identity, account]


def group_records(group: Mapping[str, Any], rules: Mapping[str, list[str]],
                  owners: Iterable[Mapping[str, Any]] = ()) -> list[Record]:
    """One Okta group -> the group Resource (with its owners) and its `member` entitlement."""
    gid = group.get("id")
    if not isinstance(gid, str) or not gid:
        return [Note(f"Okta returned a group without an id; skipped ({str(group)[:120]})")]
    profile = group.get("profile") if isinstance(group.get("profile"), Mapping) else {}
    gtype = str(group.get("type") or "")
    notes: list[Record] = []
    if gtype not in GROUP_TYPES:
        notes.append(Note(f"Okta group {gid} has an unknown type {gtype or '(none)'!r}; synced as a group"))
    name = _s(profile.get("name")) or gid
    rule_names = sorted(rules.get(gid, []))
    attrs: dict[str, Any] = {"type": gtype or None, "rule_managed": bool(rule_names)}
    if rule_names:
        attrs["rules"] = rule_names
    stats = (group.get("_embedded") or {}).get("stats") if isinstance(group.get("_embedded"), Mapping) else None
    flag = admin_flag(stats)
    if flag is not None:
        attrs["has_admin_privilege"] = flag
    owner_users: list[str] = []
    owner_groups: list[str] = []
    for owner in owners:
        oid = owner.get("id") if isinstance(owner, Mapping) else None
        if isinstance(oid, str) and oid:
            (owner_groups if str(owner.get("type", "USER")).upper() == "GROUP" else owner_users).append(oid)
    if owner_groups:
        attrs["owner_groups"] = sorted(owner_groups)
    source = ((group.get("_links") or {}).get("source") or {}).get("href") if isinstance(group.get("_links"), Mapping) else None
    source_id = (group.get("source") or {}).get("id") if isinstance(group.get("source"), Mapping) else None
    source_id = source_id or (source.rsplit("/", 1)[-1] if source else None)
    if rule_names:
        attrs.update(emit(ManagedKind.GROUP_RULE, ", ".join(rule_names)))
    if gtype == "APP_GROUP":
        attrs["mastered_by"] = source_id or "the directory or app it is imported from"
        # an Active Directory group's profile names its domain (windowsDomainQualifiedName, dn)
        ad_name = _s(profile.get("windowsDomainQualifiedName")) or _s(profile.get("dn"))
        by = f"Active Directory ({ad_name})" if ad_name else f"app {source_id}" if source_id else ""
        attrs.update(emit(ManagedKind.IMPORTED_GROUP, by, "Okta group type APP_GROUP"))
    if gtype == "BUILT_IN":
        attrs["mastered_by"] = "Okta (built-in group)"
        attrs.update(emit(ManagedKind.BUILT_IN, "Okta", "Okta group type BUILT_IN"))
    return [
        *notes,
        ResourceRecord(external_id=gid, type="okta_group", name=name, description=_s(profile.get("description")),
                       is_group=True, owner_refs=tuple(sorted(set(owner_users))), attributes=attrs),
        EntitlementRecord(external_id=f"{gid}:member", resource_ref=gid, name="member",
                          display_name=f"Member of {name}", is_membership=True,
                          attributes={"rules": rule_names} if rule_names else {}),
    ]


def rule_map(rules: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """group id -> names of the ACTIVE group rules that assign users to it."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        if str(rule.get("status", "")).upper() != "ACTIVE":
            continue
        actions = rule.get("actions") if isinstance(rule.get("actions"), Mapping) else {}
        assign = actions.get("assignUserToGroups") if isinstance(actions.get("assignUserToGroups"), Mapping) else {}
        for gid in assign.get("groupIds") or []:
            out.setdefault(str(gid), []).append(str(rule.get("name") or rule.get("id")))
    return out


def app_records(app: Mapping[str, Any]) -> list[Record]:
    aid = app.get("id")
    if not isinstance(aid, str) or not aid:
        return [Note(f"Okta returned an app without an id; skipped ({str(app)[:120]})")]
    label = _s(app.get("label")) or _s(app.get("name")) or aid
    attrs = {k: v for k, v in (("status", _s(app.get("status"))), ("sign_on_mode", _s(app.get("signOnMode"))),
                               ("app_name", _s(app.get("name")))) if v}
    return [
        ResourceRecord(external_id=aid, type="okta_app", name=label, description=_s(app.get("signOnMode")),
                       attributes=attrs),
        EntitlementRecord(external_id=f"{aid}:assignment", resource_ref=aid, name="assigned",
                          display_name=f"Assigned to {label}"),
    ]


def app_user_grant(aid: str, app_user: Mapping[str, Any]) -> GrantRecord | None:
    """A direct (USER-scope) app assignment -> a grant; GROUP-scope rows are the group's grant."""
    uid = app_user.get("id")
    if not isinstance(uid, str) or str(app_user.get("scope", "USER")).upper() != "USER":
        return None
    creds = app_user.get("credentials") if isinstance(app_user.get("credentials"), Mapping) else {}
    attrs = {k: v for k, v in (("scope", "USER"), ("app_user_status", _s(app_user.get("status"))),
                               ("app_username", _s(creds.get("userName"))),
                               ("assigned_at", _s(app_user.get("created")))) if v}
    return GrantRecord(entitlement_ref=f"{aid}:assignment", principal_ref=uid, attributes=attrs)


def app_group_grant(aid: str, assignment: Mapping[str, Any]) -> GrantRecord | None:
    gid = assignment.get("id")
    if not isinstance(gid, str):
        return None
    attrs = {"scope": "GROUP"}
    if assignment.get("priority") is not None:
        attrs["priority"] = assignment["priority"]
    return GrantRecord(entitlement_ref=f"{aid}:assignment", principal_ref=gid, principal_type="resource",
                       attributes=attrs)


def role_refs(role: Mapping[str, Any]) -> tuple[str, str, str, dict[str, Any]] | None:
    """(resource ext id, entitlement ext id, label, attributes) of one role assignment, or None."""
    rtype = _s(role.get("type"))
    if not rtype:
        return None
    label = _s(role.get("label")) or rtype.replace("_", " ").title()
    if rtype == "CUSTOM":
        role_id, rset = _s(role.get("role")), _s(role.get("resource-set"))
        if not role_id:
            return None
        return (f"role:custom:{role_id}", f"role:custom:{role_id}:{rset or '-'}", label,
                {"role": role_id, "resource_set": rset})
    return f"role:{rtype}", f"role:{rtype}:assigned", label, {"role_type": rtype}


def role_records(role: Mapping[str, Any], principal: str, principal_type: str,
                 resource_sets: Mapping[str, str] | None = None) -> list[Record]:
    """A role assignment -> the role Resource, its privileged entitlement and the grant. `resource_sets`
    (id -> label) names a custom role's resource set as the Admin Console does."""
    refs = role_refs(role)
    if refs is None:
        return [Note(f"Okta returned a role assignment without a type for {principal}; skipped")]
    res_ref, ent_ref, label, attrs = refs
    custom = res_ref.startswith("role:custom:")
    name = label if not custom else label
    rset = attrs.get("resource_set")
    return [
        ResourceRecord(external_id=res_ref, type="okta_admin_role", name=name,
                       description="Okta custom admin role" if custom else "Okta standard admin role",
                       attributes={k: v for k, v in attrs.items() if k != "resource_set"}),
        EntitlementRecord(external_id=ent_ref, resource_ref=res_ref,
                          name=f"CUSTOM on {(resource_sets or {}).get(rset) or rset}" if custom else str(attrs["role_type"]),
                          display_name=label + (f" on {(resource_sets or {})[rset]}" if custom and rset in (resource_sets or {})
                                                else f" (resource set {rset})" if custom and rset else ""),
                          purpose="permission", privileged=True, attributes=attrs),
        GrantRecord(entitlement_ref=ent_ref, principal_ref=principal, principal_type=principal_type,
                    attributes={"assignment_id": _s(role.get("id")), "assignment_type": _s(role.get("assignmentType"))}),
    ]


def last_sso(events: Iterable[Mapping[str, Any]], into: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """user id -> {app id: latest successful SSO time} from System Log events."""
    out = into if into is not None else {}
    for ev in events:
        if ev.get("eventType") != SSO_EVENT:
            continue
        outcome = ev.get("outcome") if isinstance(ev.get("outcome"), Mapping) else {}
        if outcome.get("result") not in (None, "SUCCESS"):
            continue
        actor = ev.get("actor") if isinstance(ev.get("actor"), Mapping) else {}
        uid, when = actor.get("id"), ev.get("published")
        if not isinstance(uid, str) or not isinstance(when, str):
            continue
        for target in ev.get("target") or []:
            if isinstance(target, Mapping) and target.get("type") == "AppInstance" and isinstance(target.get("id"), str):
                apps = out.setdefault(uid, {})
                if when > apps.get(target["id"], ""):
                    apps[target["id"]] = when
    return out
