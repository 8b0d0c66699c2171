"""Okta: people and managers, groups (rule-managed marked), apps, admin roles and SSO usage; revoke and undo.

Reads the Okta Management API with an API token (`SSWS`) or an OAuth 2.0 service app (client credentials
with a `private_key_jwt` client assertion signed through Authlib; the token is cached and refreshed).

- `/api/v1/users` (and `filter=status eq "DEPROVISIONED"`, which Okta leaves out by default): one
  IdentityRecord and one AccountRecord per user; the manager from the profile attribute named by the
  `manager_attribute` setting (an Okta user id, login, e-mail or employee number), else `manager`.
- `/api/v1/groups?expand=stats`: groups with a `member` entitlement; members read only for groups whose
  stats count any; groups filled by an ACTIVE rule (`/api/v1/groups/rules`) are marked rule-managed.
  The stats flag is read as Okta spells it, `hasAdminPrivlege` (Management OpenAPI and okta-sdk-python's
  GroupEmbeddedStats alias), and as `hasAdminPrivilege` should Okta ever correct it.
- `/api/v1/groups/{id}/owners` (Group Owners API, Okta Identity Governance): USER owners become the group
  resource's owners (owner_refs), GROUP owners its `owner_groups` attribute. An org without the feature
  (401 E0000015) or a token that may not read them (403) skips owners for the rest of the run with a Note.
  A group is emitted once its members and owners are read: a group deleted while the sync ran (404) is
  left out with a Note, as is an app deleted meanwhile, instead of failing the run.
- `/api/v1/apps` (active only unless `include_inactive_apps`), `/apps/{id}/users` (direct USER-scope
  assignments become grants; GROUP-scope ones are the group's grant) and `/apps/{id}/groups`.
- Admin roles: `/api/v1/iam/assignees/users` then `/users/{id}/roles` (USER assignments), and
  `/groups/{id}/roles` for groups whose stats say they hold an admin role; all `privileged`.
- `/api/v1/logs` (`user.authentication.sso`, last `log_days` days): the last SSO per user and app, in the
  account's `app_last_sso` attribute ({app id: ISO time}) so reviews can show dormant app access. The
  signal is optional: a System Log that answers 403 (no okta.logs.read) or 404 leaves it out with a Note
  saying what to do (grant the scope, or log_days=0); the run succeeds.

Paging follows only `Link: rel="next"` with each endpoint's largest page size (groups use 200, Okta's
recommended ceiling for accurate results); a `next` link back at a page already read, or more pages than
the page cap (http.MAX_PAGES), stops the run with a PagingError instead of paging forever. Requests run on a bounded thread pool over one HttpClient
(retries of 5xx and timeouts). Rate limits are kept per Okta endpoint family (`rate_family`: Okta limits
`/api/v1/users`, `/api/v1/users/{id}`, `/api/v1/users*`, the same for groups and apps, and `/api/v1/logs`
separately, https://developer.okta.com/docs/reference/rl-global-mgmt/); a 429 waits
`X-Rate-Limit-Reset - Date + 1` on Okta's own clock, as okta-sdk-python does (okta/request_executor.py,
`calculate_backoff`), so a local clock ahead of Okta's does not burn the retries. A 429 for too many
requests in flight (limit and remaining 0, https://developer.okta.com/docs/reference/rl-best-practices/)
halves the requests kept in flight for the rest of the run. 401/403 stop the run with a ConnectorError
naming the missing scope or admin role; an unreachable org names the host. Odd payloads become Notes,
never crashes. A revoke is "done" only once a follow-up read shows the access gone ("unconfirmed" when
Okta accepted the call but still shows the access).

Split per DESIGN: `_get_*`/`_pages` do HTTP only; the module-level `*_records` functions are pure
transforms from Okta payloads to records (unit-tested on recorded payloads).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from attest.connectors.base import (
    AccountRecord,
    BaseConnector,
    ConnectorError,
    EntitlementRecord,
    GrantRecord,
    GrantRef,
    IdentityRecord,
    Note,
    Record,
    ResourceRecord,
    RevokeRefused,
    RevokeResult,
    Setting,
)
from attest.connectors.fanout import Task, fan_out, read_ahead
from attest.connectors.http import HttpClient, HttpError, PageGuard, next_link, require_https

log = logging.getLogger(__name__)

# largest page size each endpoint allows (groups: Okta's recommended ceiling, see the module docstring)
PAGE = {"users": 200, "groups": 200, "group_users": 1000, "group_owners": 1000, "group_rules": 200, "apps": 200,
        "app_users": 500, "app_groups": 200, "assignees": 100, "logs": 1000, "user_groups": 200}
READ_SCOPES = ("okta.users.read", "okta.groups.read", "okta.apps.read", "okta.roles.read", "okta.logs.read")
MANAGE_SCOPES = ("okta.groups.manage", "okta.apps.manage", "okta.roles.manage")
SCOPE_FOR_PATH = (("/api/v1/logs", "okta.logs.read"), ("/api/v1/iam", "okta.roles.read"),
                  ("/roles", "okta.roles.read"), ("/api/v1/apps", "okta.apps.read"),
                  ("/api/v1/groups", "okta.groups.read"), ("/api/v1/users", "okta.users.read"))
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


def rate_family(url: str) -> str:
    """Okta's rate-limit bucket of a request (https://developer.okta.com/docs/reference/rl-global-mgmt/):
    `/api/v1/groups` (list, create), `/api/v1/groups/{id}` (one object), `/api/v1/groups*` (every other call
    under it: members, owners, roles, rules), likewise users, apps, iam; `/api/v1/logs` alone."""
    parts = urlsplit(url).path.rstrip("/").split("/")
    if len(parts) <= 4 or parts[1:3] != ["api", "v1"]:
        return "/".join(parts[:4]) or "/"
    if len(parts) == 5 and parts[4] not in ("rules", "assignees"):
        return "/".join(parts[:4]) + "/{id}"
    return "/".join(parts[:4]) + "*"


def concurrency_429(response: Any, budget: Any) -> bool:
    """A 429 for too many requests in flight, not for a spent per-minute budget: Okta's headers then report
    the concurrent values (rl-best-practices); okta-sdk-python (okta/request_executor.py): "both
    X-Rate-Limit-Limit and X-Rate-Limit-Remaining being 0 indicates concurrent rate limit error". A limit
    other than the one the family's own answers carried is the concurrent one too."""
    def num(name: str) -> int | None:
        try:
            return int(float(response.headers[name]))
        except (KeyError, ValueError):
            return None

    limit, remaining = num("x-rate-limit-limit"), num("x-rate-limit-remaining")
    if limit == 0 and remaining == 0:
        return True
    known = getattr(budget, "limit", None)
    return bool(known) and limit is not None and limit != known


def admin_flag(stats: Any) -> bool | None:
    """The group stats' admin-role flag (either spelling), or None when Okta did not say."""
    if isinstance(stats, Mapping):
        for key in ADMIN_STAT:
            if isinstance(stats.get(key), bool):
                return stats[key]
    return None


class GroupGone(Exception):
    """The group (or app) was deleted while the sync ran: Okta answers 404 for it now."""


# --- pure transforms (recorded payload -> records) ------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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
    if gtype == "APP_GROUP":
        attrs["mastered_by"] = source.rsplit("/", 1)[-1] if source else "the directory or app it is imported from"
    if gtype == "BUILT_IN":
        attrs["mastered_by"] = "Okta (built-in group)"
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


def role_records(role: Mapping[str, Any], principal: str, principal_type: str) -> list[Record]:
    """A role assignment -> the role Resource, its privileged entitlement and the grant."""
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
                          name=f"CUSTOM on {rset}" if custom else str(attrs["role_type"]),
                          display_name=label + (f" (resource set {rset})" if custom and rset else ""),
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


# --- the connector ---------------------------------------------------------------------------------------


class OktaConnector(BaseConnector):
    kind: ClassVar[str] = "okta"
    AUTHORITATIVE_DEFAULT: ClassVar[bool] = True
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("domain", "your Okta org URL, e.g. https://acme.okta.com (https required except loopback)", required=True),
        Setting("concurrency", "requests in flight at once (1-16)", default=4, type=int),
        Setting("manager_attribute", "the profile attribute holding the manager (an Okta user id, login, e-mail "
                "or employee number); `manager` is the fallback", default="managerId"),
        Setting("log_days", "days of System Log to read for the last SSO per app (0-90; 0 turns it off)",
                default=90, type=int),
        Setting("include_inactive_apps", "also sync apps that are INACTIVE", default=False, type=bool),
        Setting("key_id", "OAuth: the key id (kid) of the app's public key, when the app has several"),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("token", "an Okta API token (SSWS)"),
        Setting("client_id", "OAuth: the client id of an API Services app using private_key_jwt"),
        Setting("private_key", "OAuth: the app's private key, PEM (RSA or EC)"),
    )

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        require_https(str(settings.get("domain", "")), "domain")
        path = urlsplit(str(settings["domain"])).path.strip("/")
        if path:
            raise ValueError(f"domain must be the org URL only (like https://acme.okta.com), without the path /{path}")
        if not 1 <= int(settings.get("concurrency", 4)) <= 16:
            raise ValueError("concurrency must be between 1 and 16")
        if not 0 <= int(settings.get("log_days", 90)) <= 90:
            raise ValueError("log_days must be between 0 and 90 (Okta keeps 90 days of System Log)")
        has_token = bool(secrets.get("token"))
        has_oauth = bool(secrets.get("client_id") or secrets.get("private_key"))
        if has_token and has_oauth:
            raise ValueError("give either the secret token (API token) or client_id with private_key (OAuth), not both")
        if not has_token and not has_oauth:
            raise ValueError("an Okta source needs the secret token (API token), or client_id and private_key (OAuth service app)")
        if has_oauth:
            if not secrets.get("client_id") or not secrets.get("private_key"):
                raise ValueError("OAuth needs both secrets client_id and private_key")
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            try:
                load_pem_private_key(secrets["private_key"].encode(), password=None)
            except (ValueError, TypeError):
                raise ValueError("private_key must be an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----...)") from None

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings, secrets)
        self.domain = require_https(str(self.settings.get("domain", "")), "domain")
        self.concurrency = max(1, min(int(self.settings.get("concurrency") or 4), 16))
        self.manager_attribute = str(self.settings.get("manager_attribute") or "managerId")
        self.log_days = int(self.settings.get("log_days") if self.settings.get("log_days") is not None else 90)
        self.include_inactive_apps = bool(self.settings.get("include_inactive_apps"))
        self._sleep = sleep
        self._http: HttpClient | None = None
        self._token_http: HttpClient | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._token_lock = threading.RLock()
        self._scopes: tuple[str, ...] = READ_SCOPES
        self._owners_off: str | None = None  # why group owners are not read (set once, for the run)

    # -- calls: every request, token requests included ----------------------------------------------
    @property
    def calls(self) -> int:  # type: ignore[override]
        return self._base_calls + sum(c.calls for c in (self._http, self._token_http) if c is not None)

    @calls.setter
    def calls(self, value: int) -> None:
        self._base_calls = value

    @property
    def oauth(self) -> bool:
        return not self.secrets.get("token")

    # -- HTTP layer (dumb: raises on failure) --------------------------------------------------------
    @property
    def http(self) -> HttpClient:
        with self._token_lock:
            if self._http is None:
                self._http = HttpClient(self.domain, auth_header=self._auth_header, max_concurrency=self.concurrency,
                                        headers={"User-Agent": "attest-okta/0.1"}, sleep=self._sleep,
                                        budget=lambda method, url: rate_family(url), server_date=True,
                                        reset_margin=1.0, concurrency_limited=concurrency_429)
            return self._http

    def close(self) -> None:
        for client in (self._http, self._token_http):
            if client is not None:
                client.close()

    def _auth_header(self) -> dict[str, str]:
        if not self.oauth:
            return {"Authorization": f"SSWS {self.secrets['token']}"}
        return {"Authorization": f"Bearer {self._access_token(self._scopes)}"}

    def _access_token(self, scopes: tuple[str, ...]) -> str:
        with self._token_lock:
            cached = self._tokens.get(scopes)
            if cached and cached[1] - 60 > time.time():
                return cached[0]
            token, lifetime = self._fetch_token(scopes)
            self._tokens[scopes] = (token, time.time() + lifetime)
            return token

    def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        from authlib.oauth2.rfc7523 import private_key_jwt_sign

        url = f"{self.domain}/oauth2/v1/token"
        header = {"kid": self.settings["key_id"]} if self.settings.get("key_id") else None
        key, alg = self._signing_key()
        assertion = private_key_jwt_sign(key, self.secrets["client_id"], url, alg=alg, header=header,
                                         expires_at=int(time.time()) + 300)
        if isinstance(assertion, bytes):
            assertion = assertion.decode()
        if self._token_http is None:
            self._token_http = HttpClient(self.domain, max_concurrency=1, sleep=self._sleep, server_date=True,
                                          reset_margin=1.0)
        try:
            response = self._token_http.request("POST", "/oauth2/v1/token", data={
                "grant_type": "client_credentials", "scope": " ".join(scopes),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            })
        except HttpError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error, desc = body.get("error", f"HTTP {exc.status}"), body.get("error_description", "")
            if error == "invalid_scope":
                raise ConnectorError(
                    f"Okta refused the OAuth token request: {desc or error}. Grant these scopes to the service app "
                    f"(Admin Console > Applications > the app > Okta API Scopes): {', '.join(scopes)}") from None
            if error == "invalid_client":
                raise ConnectorError(
                    f"Okta rejected the service app's client assertion: {desc or error}. Check the client_id, that "
                    "the app uses 'Public key / Private key' client authentication with this key's public half "
                    "registered (and key_id set when it has several keys), and that 'Require DPoP' is off.") from None
            raise ConnectorError(f"Okta's token endpoint failed: {error} {desc}".strip()) from None
        payload = response.json()
        token = payload.get("access_token")
        if not token:
            raise ConnectorError("Okta's token endpoint answered without an access_token")
        return token, float(payload.get("expires_in") or 3600)

    def _signing_key(self) -> tuple[Any, str]:
        """The private key as a JWK object (RS256 for RSA keys, ES256 for EC P-256 keys)."""
        from joserfc.jwk import ECKey, RSAKey

        pem = self.secrets["private_key"]
        try:
            return RSAKey.import_key(pem), "RS256"
        except (ValueError, TypeError):
            return ECKey.import_key(pem), "ES256"

    def _call(self, fn: Callable[[], Any], method: str, path: str, raw: bool = False) -> Any:
        """Run one request; an expired OAuth token is refreshed once; 401/403 become a ConnectorError
        (unless `raw`: the caller handles them); an org that cannot be reached is named with its host."""
        try:
            return fn()
        except HttpError as exc:
            if exc.status == 401 and self.oauth and not (isinstance(exc.body, dict)
                                                         and exc.body.get("errorCode") == "E0000015"):
                with self._token_lock:
                    self._tokens.pop(self._scopes, None)
                try:
                    return fn()
                except HttpError as again:
                    exc = again
            if exc.status == 0:
                raise ConnectorError(
                    f"Could not reach Okta at {self.domain} ({method} {path}: {exc.body}). Check the source's domain "
                    "setting (your org URL, like https://acme.okta.com), DNS, and any proxy or firewall between "
                    "Attest and Okta.") from None
            if exc.status in (401, 403) and not raw:
                raise self._auth_error(exc, method, path) from None
            raise

    def _auth_error(self, exc: HttpError, method: str, path: str) -> ConnectorError:
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("errorCode") or f"HTTP {exc.status}"
        summary = body.get("errorSummary") or ""
        if exc.status == 401:
            what = "the OAuth access token" if self.oauth else "the API token"
            return ConnectorError(f"Okta rejected {what} on {method} {path} ({code} {summary}). "
                                  + ("Check the service app is active and its key is registered." if self.oauth else
                                     "The token is wrong, expired or revoked, or the admin who created it was "
                                     "deactivated: create a new token and update the source's secret."))
        scope = _scope_from_header(exc.headers) or _scope_for(path, method)
        if self.oauth:
            return ConnectorError(f"Okta at {self.domain} refused {method} {path} ({code} {summary}): the service "
                                  f"app's token lacks the scope {scope}. Grant {scope} to the app (Admin Console > Applications > "
                                  "the app > Okta API Scopes) and give the app an admin role that can read it.")
        return ConnectorError(f"Okta at {self.domain} refused {method} {path} ({code} {summary}): the API token's admin "
                              f"lacks the permission behind {scope}. Create the token as an admin with the Read-Only "
                              "Administrator role (Super Administrator to also revoke access).")

    def _pages(self, path: str, params: Mapping[str, Any] | None = None, raw: bool = False) -> Iterator[list[Any]]:
        """Each page's JSON list, following only the `Link: rel="next"` header (absolute URLs). A `next`
        link back at a page already served, or more pages than the client's cap, raise PagingError."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        guard = PageGuard(f"Okta GET {path}", self.http.max_pages)
        while url:
            response = self._call(lambda u=url, q=query: self.http.get(u, params=q), "GET", path, raw)
            guard.seen_url(str(response.url))
            query = None
            try:
                page = response.json()
            except ValueError:
                raise HttpError(response.status_code, "GET", str(response.url), "response is not JSON") from None
            if not isinstance(page, list):
                raise HttpError(response.status_code, "GET", str(response.url),
                                f"expected a JSON list, got {type(page).__name__}")
            yield page
            url = guard.check(next_link(response))

    def _get_json(self, path: str) -> Any:
        return self._call(lambda: self.http.get_json(path), "GET", path)

    def _get_assignees(self) -> list[str]:
        """Users with admin role assignments; this endpoint pages in the body (`_links.next.href`)."""
        out: list[str] = []
        url: str | None = "/api/v1/iam/assignees/users"
        params: dict[str, Any] | None = {"limit": PAGE["assignees"]}
        guard = PageGuard("Okta GET /api/v1/iam/assignees/users", self.http.max_pages)
        while url:
            response = self._call(lambda u=url, p=params: self.http.get(u, params=p), "GET", "/api/v1/iam/assignees/users")
            guard.seen_url(str(response.url))
            params = None
            body = response.json()
            for row in (body.get("value") or []) if isinstance(body, dict) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    out.append(row["id"])
            url = guard.check(next_link(response) or (
                ((body.get("_links") or {}).get("next") or {}).get("href") if isinstance(body, dict) else None))
        return out

    def validate(self) -> None:
        """One cheap read per scope the sync needs: a missing scope or role is named before any sync."""
        self._scopes = READ_SCOPES if self.log_days else READ_SCOPES[:-1]
        for path in ("/api/v1/users?limit=1", "/api/v1/groups?limit=1", "/api/v1/apps?limit=1",
                     "/api/v1/iam/assignees/users?limit=1"):
            self._get_json(path)
        if self.log_days:
            until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            path = f"/api/v1/logs?limit=1&since={since}&until={until}"
            try:
                self._call(lambda: self.http.get_json(path), "GET", "/api/v1/logs", raw=True)
            except HttpError as exc:
                if exc.status in (401, 403, 404):
                    raise ConnectorError(self._logs_unreadable(exc) + " Everything else is readable; a sync "
                                         "still runs and leaves the last-SSO signal out.") from None
                raise

    def _logs_unreadable(self, exc: HttpError) -> str:
        """What to do about a System Log that answered 401/403/404."""
        body = exc.body if isinstance(exc.body, dict) else {}
        code = f"HTTP {exc.status} {body.get('errorCode') or ''}".strip()
        if exc.status == 404:
            why = "the endpoint was not found there"
            fix = "check the domain is your Okta org URL"
        elif self.oauth:
            why = "the service app's token lacks the scope okta.logs.read"
            fix = ("grant okta.logs.read to the app (Admin Console > Applications > the app > Okta API Scopes) "
                   "with an admin role that can read the System Log")
        else:
            why = "the API token's admin may not read the System Log (okta.logs.read)"
            fix = "create the token as an admin with the Read-Only Administrator role or higher"
        return (f"Okta at {self.domain} did not let Attest read the System Log (GET /api/v1/logs: {code}): {why}, so "
                f"the last SSO per app is not read. To fix it, {fix}; or set log_days=0 to stop reading it.")

    def _get_json_list(self, path: str, gone_ok: bool = False) -> list[Any]:
        """A JSON list; with `gone_ok`, [] when the object was deleted meanwhile (404)."""
        try:
            data = self._get_json(path)
        except HttpError as exc:
            if gone_ok and exc.status == 404:
                return []
            raise
        return data if isinstance(data, list) else []

    # -- sync ------------------------------------------------------------------------------------------
    def sync(self) -> Iterator[Record]:
        """Records as they are read. Reading runs ahead on its own thread (fanout.read_ahead), handing over
        batches through a bounded queue, so requests keep flowing while the caller stages records."""
        self._scopes = READ_SCOPES if self.log_days else READ_SCOPES[:-1]
        yield from read_ahead(self._records, name="okta-sync")

    def _records(self, stop: threading.Event) -> Iterator[Record]:
        """Every read is a fan-out task (attest/connectors/fanout.py: `concurrency` workers, records handed
        over as reads finish); _SyncRun says what each result means and which reads it opens."""
        self._owners_off = None
        if not self.log_days:
            yield Note("log_days is 0: the last SSO per app is not read")
        yield from fan_out(_SyncRun(self).first_tasks(), workers=self.concurrency, stop=stop, name="okta")

    def _list(self, path: str, params: Mapping[str, Any]) -> list[Any]:
        """Every row of a paged listing."""
        return [row for page in self._pages(path, params) for row in page]

    def _fetch_group(self, gid: str, need_members: bool) -> tuple[list[str] | None, list[Mapping[str, Any]]]:
        """(member ids, owners) of one group; (None, []) when it was deleted while the sync ran."""
        try:
            members = self._fetch_member_ids(gid) if need_members else []
            owners = self._fetch_owners(gid)
        except GroupGone:
            return None, []
        except HttpError as exc:
            if exc.status == 404:
                return None, []
            raise
        return members, owners

    def _fetch_owners(self, gid: str) -> list[Mapping[str, Any]]:
        """The group's owners (Group Owners API, paged); [] for the rest of the run once Okta says the org or
        the token may not read them."""
        if self._owners_off:
            return []
        path = f"/api/v1/groups/{gid}/owners"
        try:
            return [o for page in self._pages(path, {"limit": PAGE["group_owners"]}, raw=True) for o in page
                    if isinstance(o, Mapping)]
        except HttpError as exc:
            if exc.status == 404:
                try:  # the group, or the endpoint? ask for the group itself
                    self._call(lambda: self.http.get_json(f"/api/v1/groups/{gid}"), "GET", f"/api/v1/groups/{gid}", raw=True)
                except HttpError as again:
                    if again.status == 404:
                        raise GroupGone(gid) from None
                    raise
            if exc.status not in (401, 403, 404):
                raise
            body = exc.body if isinstance(exc.body, dict) else {}
            code = f"HTTP {exc.status} {body.get('errorCode') or ''}".strip()
            why = ("the org does not have the Group Owners API (it comes with Okta Identity Governance)"
                   if exc.status != 403 else "the token may not read them (okta.groups.read and an admin role "
                   "that can see group owners)")
            self._owners_off = (f"Okta group owners were not read (GET {path}: {code}): {why}; name the owners of "
                                "Okta groups in Attest by hand, or route their reviews to a named reviewer")
            return []

    def _fetch_users(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self._pages("/api/v1/users", {"limit": PAGE["users"], **params}):
            out.extend(u for u in page if isinstance(u, dict))
        return out

    def _fetch_member_ids(self, gid: str) -> list[str]:
        return [u["id"] for page in self._pages(f"/api/v1/groups/{gid}/users", {"limit": PAGE["group_users"]})
                for u in page if isinstance(u, Mapping) and isinstance(u.get("id"), str)]

    def _fetch_app_grants(self, aid: str, what: str, to_record) -> list[Record] | None:
        """An app's assignments (`users` or `groups`) as grants; None when the app answered 404 (deleted
        while the sync ran)."""
        out: list[Record] = []
        try:
            for page in self._pages(f"/api/v1/apps/{aid}/{what}", {"limit": PAGE[f"app_{what}"]}):
                for row in page:
                    if isinstance(row, Mapping):
                        rec = to_record(aid, row)
                        if rec is not None:
                            out.append(rec)
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return out

    def _fetch_app_users(self, aid: str) -> list[Record] | None:
        """Direct assignments as grants; None when the app answered 404 (deleted while the sync ran)."""
        return self._fetch_app_grants(aid, "users", app_user_grant)

    def _fetch_app_groups(self, aid: str) -> list[Record] | None:
        return self._fetch_app_grants(aid, "groups", app_group_grant)

    def _fetch_sso_optional(self) -> tuple[dict[str, dict[str, str]], str | None]:
        """The last SSO per user and app, and a Note when the System Log could not be read (the signal is
        optional: a 401/403/404 there never fails the run)."""
        try:
            return self._fetch_sso(), None
        except HttpError as exc:
            if exc.status in (401, 403, 404):
                return {}, self._logs_unreadable(exc)
            raise

    def _fetch_sso(self) -> dict[str, dict[str, str]]:
        until = datetime.now(UTC).replace(microsecond=0)
        since = until - timedelta(days=self.log_days)
        params = {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "filter": f'eventType eq "{SSO_EVENT}"', "limit": PAGE["logs"], "sortOrder": "ASCENDING"}
        out: dict[str, dict[str, str]] = {}
        for page in self._pages("/api/v1/logs", params, raw=True):
            if not page:
                break  # a bounded request ends with an empty page at the latest
            last_sso(page, out)
        return out

    # -- revoke and undo ----------------------------------------------------------------------------------
    def revoke(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=False)

    def grant(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=True)

    def _change(self, ref: GrantRef, dry_run: bool, undo: bool) -> RevokeResult:
        self._scopes = READ_SCOPES[:-1] + MANAGE_SCOPES
        who = ref.principal_login or ref.principal_ref
        ent = ref.entitlement_ref
        if ent.endswith(":member") and ref.principal_type == "account":
            gid, uid = ent[: -len(":member")], ref.principal_ref
            path = f"/api/v1/groups/{gid}/users/{uid}"
            if not undo:
                rules = ref.resource_attributes.get("rules") or ref.grant_attributes.get("rules")
                if rules or ref.resource_attributes.get("rule_managed"):
                    raise RevokeRefused(
                        f"{who} is in group {gid} through group rule {', '.join(map(str, rules or ['(unnamed)']))}; "
                        "removing the membership would be undone by the rule. Change the rule or the profile "
                        "attribute it matches.")
                gtype = ref.resource_attributes.get("type")
                if gtype and gtype != "OKTA_GROUP":
                    raise RevokeRefused(f"group {gid} is a {gtype}: its members are managed by "
                                        f"{ref.resource_attributes.get('mastered_by') or 'its source'}, not in Okta")
                if ref.resource_attributes.get("has_admin_privilege") is not False:
                    self._guard_super_admin(lambda paths: _drop(paths, uid, ("group", gid)), who)
            return self._do("PUT" if undo else "DELETE", path, dry_run,
                            confirm=None if undo else lambda: self._still_in_group(gid, uid))
        if ent.endswith(":assignment"):
            aid = ent[: -len(":assignment")]
            if ref.principal_type == "account":
                if str(ref.grant_attributes.get("scope", "USER")).upper() == "GROUP":
                    raise RevokeRefused(f"{who} is assigned to app {aid} through a group; remove the group membership instead")
                if undo:
                    return self._do("POST", f"/api/v1/apps/{aid}/users", dry_run,
                                    json={"id": ref.principal_ref, "scope": "USER"})
                return self._do("DELETE", f"/api/v1/apps/{aid}/users/{ref.principal_ref}", dry_run,
                                confirm=lambda: self._still_there(f"/api/v1/apps/{aid}/users/{ref.principal_ref}",
                                                                  lambda row: str(row.get("scope", "USER")).upper() == "USER"))
            gpath = f"/api/v1/apps/{aid}/groups/{ref.principal_ref}"
            return self._do("PUT" if undo else "DELETE", gpath, dry_run, json={} if undo else None,
                            confirm=None if undo else lambda: self._still_there(gpath))
        if ent.startswith("role:"):
            return self._change_role(ref, dry_run, undo, who)
        raise RevokeRefused(f"Attest cannot change {ref.entitlement_name!r} ({ent}) in Okta automatically")

    def _change_role(self, ref: GrantRef, dry_run: bool, undo: bool, who: str) -> RevokeResult:
        base = "users" if ref.principal_type == "account" else "groups"
        pid = ref.principal_ref
        attrs = dict(ref.entitlement_attributes)
        custom = ref.entitlement_ref.startswith("role:custom:")
        rtype = "CUSTOM" if custom else (attrs.get("role_type") or ref.entitlement_ref.split(":")[1])
        if undo:
            body: dict[str, Any] = {"type": rtype}
            if custom:
                body.update({"role": attrs.get("role"), "resource-set": attrs.get("resource_set")})
            return self._do("POST", f"/api/v1/{base}/{pid}/roles", dry_run, json=body)
        if rtype == "SUPER_ADMIN":
            key = ("user", pid) if base == "users" else ("group", pid)
            self._guard_super_admin(lambda paths: _drop(paths, pid, key) if base == "users" else _drop_group(paths, pid), who)
        # find the live assignment id (it changes when a role is re-granted)
        assignment = None
        try:
            roles = self._get_json_list(f"/api/v1/{base}/{pid}/roles")
        except HttpError as exc:
            if exc.status == 404:
                return RevokeResult(calls=(), dry_run=dry_run, already_gone=True, detail=f"{who} no longer exists in Okta")
            raise
        for role in roles:
            if not isinstance(role, Mapping) or str(role.get("assignmentType", "USER")).upper() != ("USER" if base == "users" else "GROUP"):
                continue
            refs = role_refs(role)
            if refs and refs[1] == ref.entitlement_ref:
                assignment = role.get("id")
        if assignment is None:
            return RevokeResult(calls=(), dry_run=dry_run, already_gone=True,
                                detail=f"{who} no longer holds {ref.entitlement_name}")
        rpath = f"/api/v1/{base}/{pid}/roles/{assignment}"
        return self._do("DELETE", rpath, dry_run, confirm=lambda: self._still_there(rpath))

    # -- confirming reads: (still there?, the call made) ------------------------------------------------
    def _still_in_group(self, gid: str, uid: str) -> tuple[bool, str]:
        """Is the user still in the group? Read the user's groups (GET /api/v1/users/{id}/groups)."""
        path = f"/api/v1/users/{uid}/groups"
        try:
            for page in self._pages(path, {"limit": PAGE["user_groups"]}):
                if any(isinstance(g, Mapping) and g.get("id") == gid for g in page):
                    return True, f"GET {path}"
        except HttpError as exc:
            if exc.status != 404:
                raise
        return False, f"GET {path}"

    def _still_there(self, path: str, counts: Callable[[Mapping[str, Any]], bool] | None = None) -> tuple[bool, str]:
        """Does GET path still find the assignment (404 once it is gone)?"""
        try:
            row = self._get_json(path)
        except HttpError as exc:
            if exc.status == 404:
                return False, f"GET {path}"
            raise
        return (counts(row) if counts and isinstance(row, Mapping) else True), f"GET {path}"

    def _do(self, method: str, path: str, dry_run: bool, json: Any = None,
            confirm: Callable[[], tuple[bool, str]] | None = None) -> RevokeResult:
        """Make one change. A removal with `confirm` is "done" only once a follow-up read shows the access
        gone; if Okta still shows it, the outcome is "unconfirmed" (remediation records it as such)."""
        call = f"{method} {path}"
        if dry_run:
            return RevokeResult(calls=(call,), dry_run=True, detail="dry run: nothing was changed")
        try:
            self._call(lambda: self.http.request(method, path, json=json) if json is not None
                       else self.http.request(method, path), method, path)
        except HttpError as exc:
            if method == "DELETE" and exc.status == 404:
                return RevokeResult(calls=(call,), dry_run=False, already_gone=True, detail="already gone in Okta")
            if method in ("POST", "PUT") and exc.status == 409:
                return RevokeResult(calls=(call,), dry_run=False, already_gone=False, detail="already present in Okta")
            raise
        if confirm is None:
            return RevokeResult(calls=(call,), dry_run=False, detail="done")
        still, read = confirm()
        if still:
            return RevokeResult(calls=(call,), dry_run=False, outcome="unconfirmed",
                                detail=f"Okta at {self.domain} accepted {call}, but {read} still shows the access "
                                       "(Okta may apply it late, or something in between did not pass it on); the "
                                       "next sync verifies it or flags it as reappeared")
        return RevokeResult(calls=(call,), dry_run=False, detail=f"done: {read} confirms the access is gone")

    def _super_admin_paths(self) -> dict[str, set[tuple[str, str]]]:
        """user id -> how they hold SUPER_ADMIN: ("user", id) for a direct assignment, ("group", gid) via a group."""
        paths: dict[str, set[tuple[str, str]]] = {}
        groups: set[str] = set()
        for uid in self._get_assignees():
            for role in self._get_json_list(f"/api/v1/users/{uid}/roles"):
                if not isinstance(role, Mapping) or role.get("type") != "SUPER_ADMIN":
                    continue
                if str(role.get("assignmentType", "USER")).upper() == "USER":
                    paths.setdefault(uid, set()).add(("user", uid))
                else:
                    m = re.search(r"/groups/([^/?]+)", ((role.get("_links") or {}).get("assignee") or {}).get("href", ""))
                    if m:
                        groups.add(m.group(1))
        for gid in groups:
            for uid in self._fetch_member_ids(gid):
                paths.setdefault(uid, set()).add(("group", gid))
        return paths

    def _guard_super_admin(self, after: Callable[[dict[str, set[tuple[str, str]]]], dict[str, set[tuple[str, str]]]],
                           who: str) -> None:
        paths = self._super_admin_paths()
        if not paths:
            return
        remaining = {u: p for u, p in after(paths).items() if p}
        if not remaining:
            raise RevokeRefused(f"{who} holds the last Super Administrator role in this Okta org; removing it "
                                "would leave nobody able to administer Okta. Assign another Super Administrator first.")


# --- one sync's reads ----------------------------------------------------------------------------------

USER_KINDS = frozenset({"users", "users_deprovisioned", "logs"})


class _SyncRun:
    """One Okta sync's reads as fan-out tasks, and what each result means (`KINDS`: a handler per kind of
    read). The fetches run on the fan-out's workers and do HTTP only; the handlers run one at a time on the
    caller's thread, so this bookkeeping needs no lock. Joins: users are emitted once both user listings
    and the System Log are read (the last SSO goes into the account), groups once groups and rules are
    (rule-managed marks), a group once its own members and owners are, an app once both its assignment
    lists are; a role resource or entitlement is emitted once."""

    def __init__(self, conn: OktaConnector) -> None:
        self.conn = conn
        self.index = UserIndex()
        self.users: list[dict[str, Any]] = []
        self.sso: dict[str, dict[str, str]] = {}
        self.groups: list[dict[str, Any]] | None = None
        self.rules: dict[str, list[str]] | None = None
        self.role_groups_done: set[str] = set()
        self.seen_roles: set[str] = set()
        self.apps_open: dict[str, list[Any]] = {}  # app id -> [app, lists still to read, grants read so far]
        self.owners_noted = False
        self.waiting = {"users", "users_deprovisioned", "groups", "rules", "apps", "assignees"}
        if conn.log_days:
            self.waiting.add("logs")

    def task(self, kind: str, key: Any, fetch: Callable[[], Any]) -> Task:
        return Task((kind, key), fetch, then=lambda result: self.done(kind, key, result))

    def first_tasks(self) -> list[Task]:
        c = self.conn
        apps_params: dict[str, Any] = {"limit": PAGE["apps"]}
        if not c.include_inactive_apps:
            apps_params["filter"] = 'status eq "ACTIVE"'
        tasks = [
            self.task("users", None, lambda: c._fetch_users({})),
            self.task("users_deprovisioned", None, lambda: c._fetch_users({"filter": 'status eq "DEPROVISIONED"'})),
            self.task("groups", None, lambda: c._list("/api/v1/groups", {"limit": PAGE["groups"], "expand": "stats"})),
            self.task("rules", None, lambda: c._list("/api/v1/groups/rules", {"limit": PAGE["group_rules"]})),
            self.task("apps", None, lambda: c._list("/api/v1/apps", apps_params)),
            self.task("assignees", None, c._get_assignees),
        ]
        if c.log_days:
            tasks.append(self.task("logs", None, c._fetch_sso_optional))
        return tasks

    def done(self, kind: str, key: Any, result: Any) -> Iterator[Record | Task]:
        self.waiting.discard(kind)
        yield from self.KINDS[kind](self, key, result)
        if self.conn._owners_off and not self.owners_noted:  # set by a group read on a worker
            self.owners_noted = True
            yield Note(self.conn._owners_off)

    # -- users and their last SSO --------------------------------------------------------------------
    def users_read(self, _key: None, users: list[dict[str, Any]]) -> Iterator[Record]:
        for user in users:
            self.index.add(user)
        self.users.extend(users)
        yield from self.users_ready()

    def logs_read(self, _key: None, result: tuple[dict[str, dict[str, str]], str | None]) -> Iterator[Record]:
        self.sso, note = result
        if note:
            yield Note(note)
        yield from self.users_ready()

    def users_ready(self) -> Iterator[Record]:
        if self.waiting & USER_KINDS or not self.users:
            return
        for user in self.users:
            uid = user.get("id")
            yield from user_records(user, self.index, self.conn.manager_attribute,
                                    self.sso.get(uid) if isinstance(uid, str) else None)
        self.users = []

    # -- groups, their members, owners and roles -----------------------------------------------------
    def groups_read(self, _key: None, groups: list[dict[str, Any]]) -> Iterator[Record | Task]:
        self.groups = groups
        yield from self.groups_ready()

    def rules_read(self, _key: None, rules: list[Any]) -> Iterator[Record | Task]:
        self.rules = rule_map(rules)
        yield from self.groups_ready()

    def groups_ready(self) -> Iterator[Record | Task]:
        """Each group is read (members when its stats count any, owners) in one task and emitted when that
        task is done, so a group deleted meanwhile is left out whole."""
        if self.groups is None or self.rules is None:
            return
        groups, rules, self.groups = self.groups, self.rules, []
        no_stats = 0
        for group in groups:
            if not isinstance(group, Mapping):
                continue
            gid = group.get("id")
            if not isinstance(gid, str) or not gid:
                yield from group_records(group, rules)
                continue
            stats = (group.get("_embedded") or {}).get("stats") if isinstance(group.get("_embedded"), Mapping) else None
            count = stats.get("usersCount") if isinstance(stats, Mapping) else None
            if not isinstance(count, int):
                no_stats += 1
            need_members = count is None or count > 0
            yield self.task("group", (group, sorted(rules.get(gid, []))),
                            lambda g=gid, m=need_members: self.conn._fetch_group(g, m))
            if admin_flag(stats) is not False:  # Okta's `hasAdminPrivlege`: false means no group role to read
                yield from self.group_roles(gid)
        if no_stats:
            yield Note(f"{no_stats} Okta groups came without stats; their members and roles were read to be sure")

    def group_read(self, key: tuple[Mapping[str, Any], list[str]],
                   result: tuple[list[str] | None, list[Mapping[str, Any]]]) -> Iterator[Record]:
        group, rule_names = key
        gid = group["id"]
        members, owners = result
        if members is None:
            yield Note(f"Okta group {gid} ({(group.get('profile') or {}).get('name') or gid}) was "
                       "deleted while the sync ran (404 on its members or owners); treated as deleted")
            return
        yield from group_records(group, self.rules or {}, owners)
        attrs = {"rules": rule_names} if rule_names else {}
        for uid in members:
            yield GrantRecord(entitlement_ref=f"{gid}:member", principal_ref=uid, attributes=attrs)

    # -- admin roles ---------------------------------------------------------------------------------
    def assignees_read(self, _key: None, user_ids: list[str]) -> Iterator[Task]:
        for uid in user_ids:
            yield self.task("user_roles", uid,
                            lambda u=uid: self.conn._get_json_list(f"/api/v1/users/{u}/roles", gone_ok=True))

    def group_roles(self, gid: str) -> Iterator[Task]:
        if gid not in self.role_groups_done:
            self.role_groups_done.add(gid)
            yield self.task("group_roles", gid,
                            lambda: self.conn._get_json_list(f"/api/v1/groups/{gid}/roles", gone_ok=True))

    def user_roles_read(self, uid: str, roles: list[Any]) -> Iterator[Record | Task]:
        for role in roles:
            if not isinstance(role, Mapping):
                continue
            if str(role.get("assignmentType", "USER")).upper() == "GROUP":  # read with the group's roles
                href = ((role.get("_links") or {}).get("assignee") or {}).get("href", "")
                m = re.search(r"/groups/([^/?]+)", href or "")
                if m:
                    yield from self.group_roles(m.group(1))
                continue
            yield from self.roles_out(role_records(role, uid, "account"))

    def group_roles_read(self, gid: str, roles: list[Any]) -> Iterator[Record]:
        for role in roles:
            if isinstance(role, Mapping):
                yield from self.roles_out(role_records(role, gid, "resource"))

    def roles_out(self, recs: list[Record]) -> Iterator[Record]:
        for rec in recs:
            if isinstance(rec, ResourceRecord | EntitlementRecord):
                key = f"{type(rec).__name__}:{rec.external_id}"
                if key in self.seen_roles:
                    continue
                self.seen_roles.add(key)
            yield rec

    # -- apps and their assignments ------------------------------------------------------------------
    def apps_read(self, _key: None, apps: list[Any]) -> Iterator[Record | Task]:
        for app in apps:
            aid = app.get("id") if isinstance(app, Mapping) else None
            if not isinstance(aid, str) or not aid:
                yield from app_records(app if isinstance(app, Mapping) else {})
                continue
            self.apps_open[aid] = [app, 2, []]
            yield self.task("app_users", aid, lambda a=aid: self.conn._fetch_app_users(a))
            yield self.task("app_groups", aid, lambda a=aid: self.conn._fetch_app_groups(a))

    def app_list_read(self, aid: str, recs: list[Record] | None) -> Iterator[Record]:
        entry = self.apps_open.get(aid)
        if entry is None:
            return
        if recs is None:  # the app answered 404: deleted while the sync ran
            del self.apps_open[aid]
            yield Note(f"Okta app {aid} ({entry[0].get('label') or aid}) was deleted while the sync ran "
                       "(404 on its assignments); treated as deleted")
            return
        entry[2].extend(recs)
        entry[1] -= 1
        if entry[1] == 0:
            del self.apps_open[aid]
            yield from app_records(entry[0])
            yield from entry[2]

    KINDS: ClassVar[dict[str, Callable[..., Iterator[Any]]]] = {
        "users": users_read, "users_deprovisioned": users_read, "logs": logs_read,
        "groups": groups_read, "rules": rules_read, "group": group_read,
        "assignees": assignees_read, "user_roles": user_roles_read, "group_roles": group_roles_read,
        "apps": apps_read, "app_users": app_list_read, "app_groups": app_list_read,
    }


def _drop(paths: dict[str, set[tuple[str, str]]], uid: str, path: tuple[str, str]) -> dict[str, set[tuple[str, str]]]:
    out = {u: set(p) for u, p in paths.items()}
    if uid in out:
        out[uid].discard(path)
    return out


def _drop_group(paths: dict[str, set[tuple[str, str]]], gid: str) -> dict[str, set[tuple[str, str]]]:
    return {u: {p for p in ps if p != ("group", gid)} for u, ps in paths.items()}


def _scope_from_header(headers: Mapping[str, str]) -> str | None:
    value = {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "")
    m = re.search(r'scope="([^"]+)"', value)
    return m.group(1) if m else None


def _scope_for(path: str, method: str) -> str:
    for prefix, scope in SCOPE_FOR_PATH:
        if prefix in path:
            return scope.replace(".read", ".manage") if method != "GET" else scope
    return "okta.users.read"
