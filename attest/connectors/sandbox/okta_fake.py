"""A fake Okta Management API (a WSGI app) that follows Okta's published reference.

Why one module of some 1,100 lines: one upstream whose routes share one org, one clock, one rate-limit
bucket table and one error shape (Okta's E0000xxx bodies); kept together so the fake reads against
Okta's reference page by page.

What it serves, as Okta documents it:
- `GET /api/v1/users` (DEPROVISIONED users only with `filter=status eq "DEPROVISIONED"`, as in Okta),
  `/api/v1/groups` (`expand=stats` embeds usersCount/appsCount/groupPushMappingsCount/hasAdminPrivlege,
  spelled as Okta spells it: Management OpenAPI `Group._embedded.stats.hasAdminPrivlege`,
  github.com/okta/okta-management-openapi-spec dist/current/management-minimal.yaml, and
  okta-sdk-python okta/models/group_embedded_stats.py `alias="hasAdminPrivlege"`), `/groups/{id}/users`,
  `/groups/{id}/owners` (Group Owners API, `listGroupOwners`: GroupOwner objects {id, type USER|GROUP,
  displayName, originType, originId, resolved, lastUpdated}, `limit` default 1000, cursor `after`; only
  with Okta Identity Governance, so `group_owners=False` answers 401 E0000015 "You do not have permission
  to access the feature you are requesting", https://developer.okta.com/docs/reference/error-codes/#E0000015),
  `/groups/rules`, `/groups/{id}/roles`, `/api/v1/apps` (`filter=status eq "ACTIVE"`), `/apps/{id}/users`
  (scope USER or GROUP), `/apps/{id}/groups`, `/api/v1/iam/assignees/users` (body-paged `value` +
  `_links.next`), `/users/{id}/roles`, `/api/v1/logs` (bounded by since/until, `eventType eq` filter).
- Paging: `limit` clamped to each endpoint's documented cap, an opaque `after` cursor, and absolute
  `Link: <...>; rel="next"` URLs (plus rel="self").
- Rate limits: X-Rate-Limit-Limit/Remaining/Reset on every response, per endpoint bucket and window;
  429 with errorCode E0000047 when a bucket is spent. Buckets follow Okta's management rate limits
  (https://developer.okta.com/docs/reference/rl-global-mgmt/): `/api/v1/users` (list, create),
  `/api/v1/users/{id}` (one object), `/api/v1/users*` (every other call under it), the same for groups,
  apps and the rest, and `/api/v1/logs` on its own; `rate_limits` sets a bucket's own limit. Every response
  carries a `Date` header from the fake's clock (`create_app(clock=...)`, epoch seconds, default time.time;
  skewable, or a test's fake clock that moves only when the connector's injected sleep waits), and the
  windows, the reset and the 429 storm are on that clock: Okta's SDK waits `X-Rate-Limit-Reset - Date + 1`
  (okta-sdk-python okta/request_executor.py, calculate_backoff). `timeline` keeps, per request, that clock
  when it arrived and when it was answered, and the reset it was answered with.
- Concurrency limit (`concurrency_limit`, `hold_seconds` each request stays in flight): a request over the
  limit gets 429 E0000047 whose headers report the concurrent values, X-Rate-Limit-Limit 0 and
  X-Rate-Limit-Remaining 0 with an estimated reset a second away (Okta, "Rate limit best practices":
  https://developer.okta.com/docs/reference/rl-best-practices/ "when a request exceeds the limit for
  concurrent requests, X-Rate-Limit-Limit, X-Rate-Limit-Remaining, and X-Rate-Limit-Reset report the
  concurrent values"; okta-sdk-python okta/request_executor.py: "both X-Rate-Limit-Limit and
  X-Rate-Limit-Remaining being 0 indicates concurrent rate limit error").
- Errors with errorCode/errorSummary/errorLink/errorId/errorCauses: 401 E0000011 (invalid token), 403
  E0000006 (an OAuth token without the scope, with a WWW-Authenticate header naming it), 404 E0000007.
- OAuth 2.0 service apps: `POST /oauth2/v1/token` with client_credentials and a private_key_jwt client
  assertion, verified against the registered public key; tokens carry the granted scopes and expire.
- Writes used by remediation and undo: PUT/DELETE group membership, POST/DELETE app user assignment,
  PUT/DELETE app group assignment, POST/DELETE user and group role assignments; and the reads that confirm
  them: `GET /users/{id}/groups`, `/apps/{id}/users/{userId}`, `/apps/{id}/groups/{groupId}`,
  `/users|groups/{id}/roles/{roleAssignmentId}` (404 E0000007 once gone).

Faults for tests (`OktaFake.faults`): `logs_status` (the System Log answers 403 E0000006, a token or admin
without okta.logs.read, or 404), `delete_groups` (groups deleted right after the groups list was served:
deleted while the sync ran, so their members, owners and roles answer 404 E0000007), `ignore_deletes`
(a DELETE answers 204 but changes nothing, as a caching proxy or a lagging replica would), a 500 on the Nth request or on requests whose path starts with a
prefix, a 429 storm (every request answered 429 for a few seconds, with a short reset), and OAuth tokens
issued without some scope. What an upstream incident or a buggy proxy does to a list (`faults.lists`, or
`create_app(faults=...)`, keyed by the PAGE_LIMITS name of the listing: "users", "groups", "group_users",
"apps", "app_users", ...): {"empty": True} answers 200 with [] and no next link; {"cut_at_page": k} answers
page k with half its items and no rel="next"; {"drop_next_at": k} answers page k whole but without
rel="next"; {"repeat_next": True} gives every page a rel="next" pointing at that same page again (as seen
against Okta's own example payloads). `faults.echo_auth` makes error bodies echo the request's
Authorization header, as a debugging proxy's error page does. Okta itself documents the Link header
paging these break: https://developer.okta.com/docs/api/#pagination (RFC 8288 links, rel="self" and
rel="next", the last page has no "next"). The org is deterministic and sized by parameters (benchmarks build 20,000
users / 2,000 groups / 200 apps / 200,000 memberships).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any, NamedTuple
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from attest.connectors.sandbox.faults import page_under_fault

# -- documented page sizes: (default, maximum) ------------------------------------------------------
PAGE_LIMITS: dict[str, tuple[int, int]] = {
    "users": (200, 200),
    "groups": (10000, 10000),
    "group_users": (1000, 1000),
    "group_owners": (1000, 1000),
    "user_groups": (200, 200),
    "group_rules": (50, 200),
    "apps": (20, 200),
    "app_users": (50, 500),
    "app_groups": (20, 200),
    "assignees": (100, 100),
    "logs": (100, 1000),
}

SCOPES = {
    "users": "okta.users.read", "groups": "okta.groups.read", "apps": "okta.apps.read",
    "roles": "okta.roles.read", "logs": "okta.logs.read",
}
MANAGE = {"groups": "okta.groups.manage", "apps": "okta.apps.manage", "roles": "okta.roles.manage",
          "users": "okta.users.manage"}

FIRST = ("Ada", "Grace", "Alan", "Zoë", "Søren", "Łukasz", "José", "Chloé", "Björn", "Ngọc", "Margaret",
         "Dennis", "Barbara", "Ken", "Frances", "Edsger", "Radia", "Tim", "Hedy", "Katherine", "Donald",
         "Sophie", "Guido", "Joan", "Anita", "Bjarne", "Lynn", "Vint", "Shafi", "Leslie", "Mary", "Yukihiro",
         "Élodie", "Siobhán", "Małgorzata", "Jürgen", "Øystein", "Ayşe", "Dmitri", "Priya")
LAST = ("Lovelace", "Hopper", "Turing", "Ørsted", "Núñez", "Kowalski", "Müller", "Dijkstra", "Perlman",
        "Lamarr", "Johnson", "Knuth", "van Rossum", "Clarke", "Wirth", "Stroustrup", "Conway", "Cerf",
        "Goldwasser", "Lamport", "Shaw", "Matsumoto", "Nguyễn", "O'Brien", "Şahin", "Søndergaard", "Brontë",
        "Hamilton", "Ritchie", "Liskov")


def person_name(i: int) -> tuple[str, str]:
    """(first, last) of person i of the demo org. Surnames move on by one per person (and by 11 more per
    round of first names), so a manager's reports (people 7m+1..7m+7) do not all share one surname and a
    search for a surname does not match a whole team; a pair repeats only after len(FIRST) * len(LAST)."""
    return FIRST[i % len(FIRST)], LAST[(i + i // len(FIRST)) % len(LAST)]


DEPARTMENTS = ("Engineering", "Finance", "Sales", "Marketing", "Operations", "Legal", "People", "Support",
               "Security", "Product")
TITLES = ("Engineer", "Senior Engineer", "Analyst", "Manager", "Director", "Specialist", "Lead", "Associate")
APP_NAMES = ("Salesforce", "Workday", "NetSuite", "Slack", "Zoom", "Jira", "Confluence", "Figma", "Datadog",
             "PagerDuty", "Snowflake", "Tableau", "Zendesk", "DocuSign", "Greenhouse", "Expensify", "1Password",
             "Looker", "Gong", "HubSpot", "AWS IAM Identity Center", "GitHub Enterprise", "Google Workspace",
             "Box", "Notion")
SIGN_ON = ("SAML_2_0", "OPENID_CONNECT", "SAML_2_0", "BOOKMARK", "AUTO_LOGIN", "SAML_2_0")
STANDARD_ROLES = {
    "SUPER_ADMIN": "Super Administrator", "ORG_ADMIN": "Organizational Administrator",
    "APP_ADMIN": "Application Administrator", "USER_ADMIN": "Group Administrator",
    "HELP_DESK_ADMIN": "Help Desk Administrator", "READ_ONLY_ADMIN": "Read Only Administrator",
    "GROUP_MEMBERSHIP_ADMIN": "Group Membership Administrator", "REPORT_ADMIN": "Report Administrator",
    "API_ACCESS_MANAGEMENT_ADMIN": "API Access Management Administrator",
}
EPOCH = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
AD_APP_ID = "0oa1adirectory0000000"  # the Active Directory integration (an app in Okta) imported groups come from
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def okta_id(prefix: str, n: int | str) -> str:
    """A deterministic 20-character Okta-style id (00u..., 00g..., 0oa...)."""
    digest = int.from_bytes(hashlib.sha1(f"{prefix}:{n}".encode(), usedforsecurity=False).digest()[:12], "big")
    chars = []
    for _ in range(20 - len(prefix)):
        digest, r = divmod(digest, 62)
        chars.append(_B62[r])
    return prefix + "".join(chars)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") if dt else None


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Faults:
    fail_requests: set[int] = field(default_factory=set)  # answer 500 to these request numbers (1-based)
    fail_paths: dict[str, int] = field(default_factory=dict)  # path prefix -> times to fail (-1: always)
    storm_at: int | None = None  # when this request number arrives, answer 429 to everything for...
    storm_seconds: float = 1.0  # ...this long
    storm_until: float = 0.0
    drop_scopes: set[str] = field(default_factory=set)  # OAuth tokens are issued without these scopes
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)  # listing -> empty/cut_at_page/drop_next_at/repeat_next
    echo_auth: bool = False  # error bodies echo the request's Authorization header (a proxy's debug page)
    logs_status: int | None = None  # the System Log answers 403 (no okta.logs.read) or 404
    delete_groups: set[str] = field(default_factory=set)  # deleted right after the groups list is served
    ignore_deletes: bool = False  # DELETE answers 204 and changes nothing


class Stamp(NamedTuple):
    """One request on Okta's clock, for tests that check nothing came back before a reset the fake announced."""

    arrived: float  # the fake's clock when the request arrived
    answered: float  # ... when it was answered (the response's Date header says it to the second)
    reset: int | None  # the X-Rate-Limit-Reset it was answered with (epoch seconds)


@dataclass
class RoleAssignment:
    id: str
    type: str  # SUPER_ADMIN ... or CUSTOM
    assignee_type: str  # USER | GROUP
    assignee: str  # user or group id
    role: str | None = None  # custom role id
    resource_set: str | None = None
    label: str = ""


class OktaFake:
    """The org's state and the request handler; `create_app` wraps it as a WSGI app."""

    def __init__(self, *, users: int = 300, groups: int = 40, apps: int = 12, memberships: int | None = None,
                 seed: int = 7, ssws_tokens: dict[str, str] | None = None,
                 oauth_clients: dict[str, dict[str, Any]] | None = None, rate_limit: int = 600,
                 rate_window: float = 60.0, sso_events: int | None = None, token_lifetime: int = 3600,
                 odd_payloads: bool = False, rate_limits: dict[str, int] | None = None,
                 concurrency_limit: int | None = None, hold_seconds: float = 0.0, group_owners: bool = True,
                 clock: Any = None) -> None:
        self.lock = threading.RLock()
        self.rate_limits = dict(rate_limits or {})  # bucket -> its own per-window limit
        self.concurrency_limit = concurrency_limit
        self.hold_seconds = hold_seconds
        self.in_flight = 0
        self.group_owners_enabled = group_owners
        self.clock = clock or time.time  # Okta's clock: Date, X-Rate-Limit-Reset and the windows follow it
        self.seed = seed
        self.ssws_tokens = dict(ssws_tokens if ssws_tokens is not None else {"sandbox-token": "SUPER_ADMIN"})
        self.oauth_clients = dict(oauth_clients or {})  # client_id -> {"public_key": pem, "scopes": [...]}
        self.access_tokens: dict[str, tuple[set[str], float]] = {}
        self.token_lifetime = token_lifetime
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.buckets: dict[str, tuple[float, int]] = {}  # bucket -> (window reset epoch, used)
        self.faults = Faults()
        self.requests = 0
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.timeline: list[Stamp] = []  # when each request of `log` arrived and was answered, and its reset
        self.used_jti: set[str] = set()
        self._json_cache: dict[tuple[str, str], _Raw] = {}
        self._build(users, groups, apps, memberships, sso_events, odd_payloads)

    # -- the org ---------------------------------------------------------------------------------
    def _build(self, n_users: int, n_groups: int, n_apps: int, memberships: int | None,
               sso_events: int | None, odd: bool) -> None:
        n_users = max(n_users, 2)
        self.user_ids = [okta_id("00u", i) for i in range(n_users)]
        self.users: dict[str, dict[str, Any]] = {}
        for i, uid in enumerate(self.user_ids):
            r = random.Random(self.seed * 1_000_003 + i)
            first, last = person_name(i)
            login = f"{_ascii(first)}.{_ascii(last)}{i}@acme.example".lower()
            dept = DEPARTMENTS[(i // 7) % len(DEPARTMENTS)] if i else "Operations"
            status = "ACTIVE"
            roll = r.random()
            if i >= 10:
                if roll < 0.03:
                    status = "DEPROVISIONED"
                elif roll < 0.04:
                    status = "SUSPENDED"
                elif roll < 0.045:
                    status = "LOCKED_OUT"
                elif roll < 0.05:
                    status = "PASSWORD_EXPIRED"
                elif roll < 0.055:
                    status = "STAGED"
            created = EPOCH - timedelta(days=30 + i % 1500)
            profile: dict[str, Any] = {
                "firstName": first, "lastName": last, "displayName": f"{first} {last}", "email": login,
                "login": login, "employeeNumber": f"E{100000 + i}", "department": dept,
                "title": "Chief Executive Officer" if i == 0 else r.choice(TITLES), "mobilePhone": None,
                "secondEmail": None, "userType": "Employee" if r.random() > 0.08 else "Contractor",
            }
            if i:
                mgr = (i - 1) // 7
                if i % 11 == 0:  # some HR feeds only fill `manager` (a login)
                    profile["manager"] = self.users[self.user_ids[mgr]]["profile"]["login"]
                else:
                    profile["managerId"] = f"E{100000 + mgr}"  # the manager's employee number, as HR sends it
                    profile["manager"] = " ".join(person_name(mgr))
            if odd and i == 5:
                status = "ON_SABBATICAL"  # a status this connector has never seen
            self.users[uid] = {
                "id": uid, "status": status, "created": iso(created),
                "activated": None if status == "STAGED" else iso(created + timedelta(hours=1)),
                "statusChanged": iso(created + timedelta(days=i % 40)),
                "lastLogin": None if status == "STAGED" else iso(EPOCH - timedelta(days=r.choice((0, 1, 2, 5, 9, 30, 75, 200)), minutes=i % 600)),
                "lastUpdated": iso(created + timedelta(days=10)), "passwordChanged": iso(created),
                "type": {"id": "oty1dfj2oAZmYtW9B0h7"}, "profile": profile,
                "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
                "_links": {"self": {"href": f"/api/v1/users/{uid}"}},
            }
        if odd:  # a user whose payload lacks a profile: reported, not fatal
            bad = okta_id("00u", "broken")
            self.user_ids.append(bad)
            self.users[bad] = {"id": bad, "status": "ACTIVE", "created": iso(EPOCH)}

        # groups: Everyone (BUILT_IN, every user), OKTA_GROUP, some APP_GROUP (from AD), a few empty
        n_groups = max(n_groups, 3)
        self.group_ids = [okta_id("00g", g) for g in range(n_groups)]
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, set[str]] = {}
        everyone = self.group_ids[0]
        live = [u for u in self.user_ids if self.users[u].get("status") != "DEPROVISIONED" and "profile" in self.users[u]]
        self.members[everyone] = set(live)
        for g, gid in enumerate(self.group_ids):
            if g == 0:
                gtype, name, desc = "BUILT_IN", "Everyone", "All users in your organization"
            elif g % 9 == 4:
                gtype, name, desc = "APP_GROUP", f"ad-{DEPARTMENTS[g % len(DEPARTMENTS)].lower()}-{g}", "Imported from Active Directory"
            else:
                gtype, name, desc = "OKTA_GROUP", f"{DEPARTMENTS[g % len(DEPARTMENTS)]} – team {g}", f"{DEPARTMENTS[g % len(DEPARTMENTS)]} team {g}"
            if odd and g == 2:
                gtype = "FEDERATED_GROUP"
            self.groups[gid] = {
                "id": gid, "created": iso(EPOCH - timedelta(days=400 + g)), "lastUpdated": iso(EPOCH - timedelta(days=g % 50)),
                "lastMembershipUpdated": iso(EPOCH - timedelta(days=g % 20)), "objectClass": ["okta:user_group"],
                "type": gtype, "profile": {"name": name, "description": desc}, "_links": {},
            }
            if gtype == "APP_GROUP":
                # an imported group: Group.source.id and _links.source name the app it comes from, and an
                # Active Directory group's profile carries its AD names (Groups API, Group object: "source:
                # The ID of the source application for the returned group. This property is only present
                # if the type is APP_GROUP"; "_links.source: the URL for the source app of the group";
                # https://developer.okta.com/docs/api/openapi/okta-management/management/tag/Group/)
                self.groups[gid]["source"] = {"id": AD_APP_ID}
                self.groups[gid]["profile"].update({
                    "samAccountName": name, "dn": f"CN={name},OU=Groups,DC=corp,DC=acme,DC=example",
                    "windowsDomainQualifiedName": f"ACME\\{name}", "groupType": "Security", "groupScope": "Global"})
            self.members.setdefault(gid, set())
        # spread the remaining memberships over the other groups, skewed, with about 1 in 12 empty
        total = memberships if memberships is not None else n_users * 5
        rest = max(total - len(self.members[everyone]), 0)
        others = [gid for g, gid in enumerate(self.group_ids) if g and g % 12 != 7]
        weights = [1.0 / (1 + (k % 50)) ** 0.6 for k in range(len(others))]
        wsum = sum(weights) or 1.0
        sizes = [min(int(rest * w / wsum), len(live)) for w in weights]
        short = rest - sum(sizes)
        k = 0
        while short > 0 and others:
            if sizes[k % len(others)] < len(live):
                sizes[k % len(others)] += 1
                short -= 1
            k += 1
        for gid, size in zip(others, sizes, strict=True):
            if not size:
                continue
            start = int(hashlib.sha1(gid.encode(), usedforsecurity=False).hexdigest(), 16) % len(live)
            step = _coprime_step(len(live), start)
            self.members[gid] = {live[(start + j * step) % len(live)] for j in range(size)}

        # group rules: about 1 in 15 OKTA_GROUPs is filled by an ACTIVE rule; one INACTIVE rule
        self.rules: list[dict[str, Any]] = []
        okta_groups = [gid for gid in self.group_ids if self.groups[gid]["type"] == "OKTA_GROUP"]
        for k, gid in enumerate(okta_groups[::15]):
            dept = DEPARTMENTS[k % len(DEPARTMENTS)]
            self.rules.append(self._rule(okta_id("0pr", k), f"{dept} auto-membership", "ACTIVE", gid, dept))
        if len(okta_groups) > 3:
            self.rules.append(self._rule(okta_id("0pr", "inactive"), "Old contractors rule", "INACTIVE",
                                         okta_groups[3], "Contractors"))

        # apps: active and a few inactive; assigned to groups and to users directly
        n_apps = max(n_apps, 1)
        self.app_ids = [okta_id("0oa", a) for a in range(n_apps)]
        self.apps: dict[str, dict[str, Any]] = {}
        self.app_groups: dict[str, dict[str, int]] = {}  # app -> group -> priority
        self.app_users: dict[str, dict[str, dict[str, Any]]] = {}  # app -> user -> direct assignment
        group_pool = [gid for gid in self.group_ids[1:] if self.members[gid]] or self.group_ids[1:]
        for a, aid in enumerate(self.app_ids):
            label = APP_NAMES[a % len(APP_NAMES)] + ("" if a < len(APP_NAMES) else f" {a // len(APP_NAMES) + 1}")
            status = "INACTIVE" if a % 10 == 9 else "ACTIVE"
            self.apps[aid] = {
                "id": aid, "name": re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_"), "label": label,
                "status": status, "created": iso(EPOCH - timedelta(days=700 - a)), "lastUpdated": iso(EPOCH - timedelta(days=a % 30)),
                "signOnMode": SIGN_ON[a % len(SIGN_ON)], "features": [], "visibility": {"hide": {"iOS": False, "web": False}},
                "_links": {},
            }
            self.app_groups[aid] = {}
            if a == 0:
                self.app_groups[aid][everyone] = 0  # one app for everybody, through Everyone
            elif group_pool:
                for p in range(1 + a % 2):
                    self.app_groups[aid][group_pool[(a * 7 + p * 13) % len(group_pool)]] = p
            direct: dict[str, dict[str, Any]] = {}
            n_direct = max(1, min(len(live) // 40, 400)) if a else 0
            r = random.Random(self.seed * 31 + a)
            for uid in r.sample(live, min(n_direct, len(live))):
                direct[uid] = {"created": iso(EPOCH - timedelta(days=r.randint(1, 600)))}
            self.app_users[aid] = direct

        # admin roles: two super admins, a few standard roles, a help-desk group, custom roles
        self.roles: dict[str, RoleAssignment] = {}
        people = [u for u in live if self.users[u]["status"] == "ACTIVE"]

        def assign(kind: str, who: str, rtype: str, role: str | None = None, rset: str | None = None,
                   label: str | None = None) -> None:
            rid = okta_id("ra" if rtype != "CUSTOM" else "irb", f"{kind}{who}{rtype}{role}")
            self.roles[rid] = RoleAssignment(rid, rtype, kind, who, role, rset, label or STANDARD_ROLES.get(rtype, rtype))

        assign("USER", people[0], "SUPER_ADMIN")
        assign("USER", people[1 % len(people)], "SUPER_ADMIN")
        for k, rtype in enumerate(("ORG_ADMIN", "APP_ADMIN", "USER_ADMIN", "REPORT_ADMIN")):
            assign("USER", people[(k * 17 + 3) % len(people)], rtype)
        self.custom_role = okta_id("cr0", "access-reviewer")
        self.resource_set = okta_id("iam", "all-apps")
        # Resource sets (GET /api/v1/iam/resource-sets: {"resource-sets": [ResourceSet], "_links": {"next"?}};
        # ResourceSet = id, label, description, created, lastUpdated, _links: the Management OpenAPI's
        # ResourceSets / ResourceSet schemas, okta-sdk-nodejs jsdocs ResourceSet.md)
        self.resource_sets = {self.resource_set: {"label": "All applications",
                                                  "description": "Every app in the org (for the access reviewers)"}}
        assign("USER", people[(11 * 7 + 2) % len(people)], "CUSTOM", self.custom_role, self.resource_set,
               "Access Reviewer (custom)")
        admin_groups = [gid for gid in okta_groups if self.members[gid]][:2]
        if admin_groups:
            assign("GROUP", admin_groups[0], "HELP_DESK_ADMIN")
            assign("GROUP", admin_groups[0], "CUSTOM", self.custom_role, self.resource_set, "Access Reviewer (custom)")
        if len(admin_groups) > 1:
            assign("GROUP", admin_groups[1], "READ_ONLY_ADMIN")

        # group owners (Group Owners API): about 1 in 3 OKTA_GROUPs has one or two people as owners; one
        # group is owned by another group (type GROUP)
        self.owners: dict[str, list[tuple[str, str]]] = {gid: [] for gid in self.group_ids}
        for k, gid in enumerate(okta_groups):
            if k % 3 == 0 and people:
                self.owners[gid].append(("USER", people[(k * 13 + 5) % len(people)]))
                if k % 2 == 0:
                    self.owners[gid].append(("USER", people[(k * 29 + 11) % len(people)]))
        if len(okta_groups) > 2:
            self.owners[okta_groups[1]].append(("GROUP", okta_groups[2]))

        # System Log: user.authentication.sso events into apps the user can reach, over the last 120 days
        self.events: list[dict[str, Any]] = []
        n_events = sso_events if sso_events is not None else len(live)
        r = random.Random(self.seed * 77)
        reach: list[tuple[str, str]] = []
        for aid in self.app_ids:
            if self.apps[aid]["status"] != "ACTIVE":
                continue
            for uid in list(self.app_users[aid])[:50]:
                reach.append((uid, aid))
            for gid in self.app_groups[aid]:
                for uid in sorted(self.members[gid])[:max(n_events // max(len(self.app_ids), 1), 5)]:
                    reach.append((uid, aid))
        for e in range(n_events if reach else 0):
            uid, aid = reach[r.randrange(len(reach))]
            when = EPOCH - timedelta(days=r.random() ** 2 * 120, seconds=e)
            self.events.append(self._event(uid, aid, when, e))
        self.events.sort(key=lambda ev: ev["published"])

    @staticmethod
    def _rule(rid: str, name: str, status: str, gid: str, dept: str) -> dict[str, Any]:
        return {
            "type": "group_rule", "id": rid, "status": status, "name": name,
            "created": iso(EPOCH - timedelta(days=300)), "lastUpdated": iso(EPOCH - timedelta(days=20)),
            "conditions": {"people": {"users": {"exclude": []}, "groups": {"exclude": []}},
                           "expression": {"value": f'user.department=="{dept}"', "type": "urn:okta:expression:1.0"}},
            "actions": {"assignUserToGroups": {"groupIds": [gid]}},
        }

    def _event(self, uid: str, aid: str, when: datetime, n: int) -> dict[str, Any]:
        user, app = self.users[uid], self.apps[aid]
        return {
            "uuid": str(uuid.UUID(int=random.Random(n * 7919 + self.seed).getrandbits(128))),
            "published": iso(when).replace(".000Z", f".{n % 1000:03d}Z"), "eventType": "user.authentication.sso",
            "version": "0", "severity": "INFO", "displayMessage": "User single sign on to app",
            "actor": {"id": uid, "type": "User", "alternateId": user["profile"]["login"],
                      "displayName": user["profile"]["displayName"]},
            "client": {"zone": "null", "ipAddress": f"198.51.100.{n % 250}"},
            "outcome": {"result": "SUCCESS"},
            "target": [{"id": aid, "type": "AppInstance", "alternateId": app["label"], "displayName": app["label"]},
                       {"id": okta_id("0ua", f"{aid}{uid}"), "type": "AppUser", "alternateId": user["profile"]["login"],
                        "displayName": user["profile"]["displayName"]}],
        }

    # -- counts the benchmark uses to compute the minimum number of requests ---------------------
    def app_user_rows(self, aid: str) -> list[tuple[str, str]]:
        """(user id, scope) of everyone assigned to the app: direct (USER) first, then via groups (GROUP)."""
        direct = self.app_users.get(aid, {})
        rows = [(u, "USER") for u in sorted(direct)]
        via: set[str] = set()
        for gid in self.app_groups.get(aid, {}):
            via |= self.members.get(gid, set())
        rows += [(u, "GROUP") for u in sorted(via - set(direct))]
        return rows

    def has_admin_privilege(self, gid: str) -> bool:
        return any(r.assignee_type == "GROUP" and r.assignee == gid for r in self.roles.values())

    # -- HTTP plumbing -----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        arrived = self.clock()
        with self.lock:
            self.requests += 1
            n = self.requests
            self.in_flight += 1
            over = self.concurrency_limit is not None and self.in_flight > self.concurrency_limit
        try:
            if over:  # the concurrent values: limit 0, remaining 0, an estimated reset (see the docstring)
                answered = self.clock()
                response = self._error(429, "E0000047", "API call exceeded rate limit due to too many requests.",
                                       rate=(0, 0, math.ceil(answered + 1)))
            else:
                if self.hold_seconds:
                    time.sleep(self.hold_seconds)  # the request's time on Okta's side, in flight
                # one reading of the clock decides the answer and dates it: its Date is never later than the
                # reset it was answered with (a test's clock jumps while another request waits)
                answered = self.clock()
                response = self._dispatch(request, n, answered)
        finally:
            with self.lock:
                self.in_flight -= 1
        response.headers["Date"] = formatdate(answered, usegmt=True)
        if self.faults.echo_auth and response.status_code >= 400:
            _echo_auth(response, request)
        reset = response.headers.get("X-Rate-Limit-Reset")
        with self.lock:
            self.log.append((request.method, request.path, response.status_code))
            self.timeline.append(Stamp(arrived, answered, int(reset) if reset is not None else None))
        return response(environ, start_response)

    def _dispatch(self, request: Request, n: int, now: float) -> Response:
        base = request.host_url.rstrip("/")
        f = self.faults
        if f.storm_at is not None and n >= f.storm_at and not f.storm_until:
            f.storm_until = now + f.storm_seconds
        bucket = _bucket(request.path)
        if f.storm_until and now < f.storm_until:
            return self._error(429, "E0000047", "API call exceeded rate limit due to too many requests.",
                               rate=(self.rate_limit, 0, math.ceil(f.storm_until)))
        if n in f.fail_requests:
            return self._error(500, "E0000009", "Internal Server Error", rate=self._rate(bucket, now))
        for prefix, times in list(f.fail_paths.items()):
            if request.path.startswith(prefix) and times != 0:
                if times > 0:
                    f.fail_paths[prefix] = times - 1
                return self._error(500, "E0000009", "Internal Server Error", rate=self._rate(bucket, now))
        if request.path == "/oauth2/v1/token":
            return self._token(request, base)
        rate = self._take(bucket, now)
        if rate[1] < 0:
            return self._error(429, "E0000047", "API call exceeded rate limit due to too many requests.",
                               rate=(rate[0], 0, rate[2]))
        scopes = self._authenticate(request)
        if scopes is False:
            return self._error(401, "E0000011", "Invalid token provided", rate=rate)
        try:
            return self._route(request, base, scopes, rate)
        except _ApiError as exc:
            return self._error(exc.status, exc.code, exc.summary, rate=rate, scope=exc.scope,
                               resource=request.path, base=base)

    def _rate(self, bucket: str, now: float) -> tuple[int, int, int]:
        with self.lock:
            reset, used = self.buckets.get(bucket, (0.0, 0))
            if now >= reset:
                reset, used = now + self.rate_window, 0
                self.buckets[bucket] = (reset, used)
            limit = self.rate_limits.get(bucket, self.rate_limit)
            return limit, max(limit - used, 0), math.ceil(reset)

    def _take(self, bucket: str, now: float) -> tuple[int, int, int]:
        with self.lock:
            reset, used = self.buckets.get(bucket, (0.0, 0))
            if now >= reset:
                reset, used = now + self.rate_window, 0
            used += 1
            self.buckets[bucket] = (reset, used)
            limit = self.rate_limits.get(bucket, self.rate_limit)
            return limit, limit - used, math.ceil(reset)

    def _authenticate(self, request: Request) -> set[str] | None | bool:
        """None: an SSWS token (admin permissions); a set: an OAuth token's scopes; False: invalid."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "SSWS" and value in self.ssws_tokens:
            return None
        if scheme == "Bearer":
            with self.lock:
                entry = self.access_tokens.get(value)
            if entry and entry[1] > time.time():
                return entry[0]
        return False

    def _error(self, status: int, code: str, summary: str, *, rate: tuple[int, int, int] | None = None,
               scope: str | None = None, resource: str | None = None, base: str = "") -> Response:
        body = {"errorCode": code, "errorSummary": summary, "errorLink": code,
                "errorId": "oae" + uuid.uuid4().hex[:19], "errorCauses": []}
        response = Response(json.dumps(body), status=status, content_type="application/json")
        if rate:
            _rate_headers(response, rate)
        if scope:
            response.headers["WWW-Authenticate"] = (
                f'Bearer authorization_uri="{base}/oauth2/v1/authorize", realm="IdP", scope="{scope}", '
                f'error="insufficient_scope", error_description="The access token provided does not contain the '
                f'required scopes.", resource="{resource}"')
        return response

    # -- OAuth 2.0 token endpoint (client_credentials + private_key_jwt) ---------------------------
    def _token(self, request: Request, base: str) -> Response:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import ECKey, RSAKey

        def fail(status: int, error: str, description: str) -> Response:
            return Response(json.dumps({"error": error, "error_description": description}), status=status,
                            content_type="application/json")

        form = request.form
        if form.get("grant_type") != "client_credentials":
            return fail(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return fail(401, "invalid_client", "Client authentication failed: a private_key_jwt client assertion is required.")
        assertion = form.get("client_assertion", "")
        try:
            unverified = json.loads(_b64(assertion.split(".")[1]))
        except (ValueError, IndexError):
            return fail(401, "invalid_client", "The client_assertion is not a valid JWT.")
        client_id = unverified.get("sub")
        client = self.oauth_clients.get(client_id or "")
        if client is None:
            return fail(401, "invalid_client", "The client_assertion token has an invalid client_id.")
        # "Okta supports both RSA and Elliptic Curve (EC) keys" for a service app's private_key_jwt
        # (developer.okta.com/docs/guides/implement-oauth-for-okta-serviceapp/create-publicprivate-keypair)
        public = client["public_key"]
        try:
            key = (ECKey if _is_ec(public) else RSAKey).import_key(public)
            token = jwt.decode(assertion, key)
        except (JoseError, ValueError):
            return fail(401, "invalid_client", "The client_assertion signature is invalid.")
        claims = token.claims
        aud = f"{base}/oauth2/v1/token"
        now = time.time()
        if claims.get("iss") != client_id or claims.get("aud") != aud:
            return fail(401, "invalid_client", f"The audience claim for client_assertion must be the endpoint invoked for the request ({aud}).")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now or claims["exp"] > now + 3600 + 60:
            return fail(401, "invalid_client", "The client_assertion token is expired or lives longer than an hour.")
        jti = claims.get("jti")
        if not jti or jti in self.used_jti:
            return fail(401, "invalid_client", "The client_assertion token has already been used (jti).")
        self.used_jti.add(jti)
        requested = set((form.get("scope") or "").split())
        if not requested:
            return fail(400, "invalid_scope", "The authorization server requires a scope.")
        not_granted = sorted(requested - set(client.get("scopes", ())))
        if not_granted:
            return fail(400, "invalid_scope", f"The following scopes are not allowed: {', '.join(not_granted)}")
        granted = requested - self.faults.drop_scopes
        access = "eyJraWQiOiJzYW5kYm94In0." + uuid.uuid4().hex + uuid.uuid4().hex
        with self.lock:
            self.access_tokens[access] = (granted, now + self.token_lifetime)
        return Response(json.dumps({"token_type": "Bearer", "expires_in": self.token_lifetime,
                                    "access_token": access, "scope": " ".join(sorted(granted))}),
                        content_type="application/json")

    # -- routes ------------------------------------------------------------------------------------
    def _route(self, request: Request, base: str, scopes: set[str] | None, rate: tuple[int, int, int]) -> Response:
        path, method = request.path.rstrip("/"), request.method
        parts = path.split("/")[1:]  # api, v1, ...
        if parts[:2] != ["api", "v1"]:
            raise _ApiError(404, "E0000022", "The endpoint does not support the provided HTTP method")
        p = parts[2:]
        args = request.args

        def need(area: str, write: bool = False) -> None:
            scope = (MANAGE if write else SCOPES)[area]
            if scopes is not None and scope not in scopes and not (not write and MANAGE.get(area) in scopes):
                raise _ApiError(403, "E0000006", "You do not have permission to perform the requested action", scope)

        if method == "GET":
            if p == ["users"]:
                need("users")
                flt = args.get("filter", "")
                if re.fullmatch(r'\s*status\s+eq\s+"DEPROVISIONED"\s*', flt):
                    ids = [u for u in self.user_ids if self.users[u].get("status") == "DEPROVISIONED"]
                elif flt:
                    m = re.fullmatch(r'\s*status\s+eq\s+"([A-Z_]+)"\s*', flt)
                    if not m:
                        raise _ApiError(400, "E0000031", "Invalid search criteria.")
                    ids = [u for u in self.user_ids if self.users[u].get("status") == m.group(1)]
                else:
                    ids = [u for u in self.user_ids if self.users[u].get("status") != "DEPROVISIONED"]
                return self._page(request, base, "users", ids, lambda u: self._user_json(u, base), rate)
            if p == ["groups"]:
                need("groups")
                expand = args.get("expand", "")
                page = self._page(request, base, "groups", self.group_ids, lambda g: self._group(g, base, expand == "stats"), rate)
                for gid in sorted(self.faults.delete_groups):
                    self.delete_group(gid)
                self.faults.delete_groups = set()
                return page
            if p == ["groups", "rules"]:
                need("groups")
                rules = {r["id"]: r for r in self.rules}
                return self._page(request, base, "group_rules", list(rules), lambda r: rules[r], rate)
            if len(p) == 3 and p[0] == "groups" and p[2] == "users":
                need("groups")
                gid = self._require_group(p[1])
                return self._page(request, base, "group_users", sorted(self.members[gid]), lambda u: self._user_json(u, base), rate)
            if len(p) == 3 and p[0] == "groups" and p[2] == "owners":
                need("groups")
                if not self.group_owners_enabled:  # Group Owners needs Okta Identity Governance
                    raise _ApiError(401, "E0000015", "You do not have permission to access the feature you are requesting")
                gid = self._require_group(p[1])
                owners = {o[1]: o for o in self.owners.get(gid, [])}
                return self._page(request, base, "group_owners", list(owners), lambda o: self._owner(owners[o]), rate)
            if len(p) == 3 and p[0] == "users" and p[2] == "groups":
                need("users")
                uid = self._require_user(p[1])
                mine = [g for g in self.group_ids if uid in self.members.get(g, set())]
                return self._page(request, base, "user_groups", mine, lambda g: self._group(g, base, False), rate)
            if len(p) == 4 and p[0] == "apps" and p[2] == "users":
                need("apps")
                aid = self._require_app(p[1])
                rows = dict(self.app_user_rows(aid))
                if p[3] not in rows:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {p[3]} (AppUser)")
                return _json(self._app_user(aid, p[3], rows[p[3]], base), rate)
            if len(p) == 4 and p[0] == "apps" and p[2] == "groups":
                need("apps")
                aid = self._require_app(p[1])
                if p[3] not in self.app_groups[aid]:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {p[3]} (ApplicationGroupAssignment)")
                return _json({"id": p[3], "priority": self.app_groups[aid][p[3]], "profile": {}}, rate)
            if len(p) == 4 and p[0] in ("users", "groups") and p[2] == "roles":
                need("roles")
                who = self._require_user(p[1]) if p[0] == "users" else self._require_group(p[1])
                role = self.roles.get(p[3])
                if role is None or role.assignee != who:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {p[3]} (Role)")
                return _json(self._role(role, base), rate)
            if len(p) == 3 and p[0] == "groups" and p[2] == "roles":
                need("roles")
                gid = self._require_group(p[1])
                roles = [self._role(r, base) for r in self.roles.values() if r.assignee_type == "GROUP" and r.assignee == gid]
                return _json(roles, rate)
            if p == ["apps"]:
                need("apps")
                flt = args.get("filter", "")
                ids = [a for a in self.app_ids if not flt or re.fullmatch(r'\s*status\s+eq\s+"ACTIVE"\s*', flt) and self.apps[a]["status"] == "ACTIVE"]
                return self._page(request, base, "apps", ids, lambda a: self._app(a, base), rate)
            if len(p) == 3 and p[0] == "apps" and p[2] == "users":
                need("apps")
                aid = self._require_app(p[1])
                rows = dict(self.app_user_rows(aid))
                return self._page(request, base, "app_users", list(rows), lambda u: self._app_user(aid, u, rows[u], base), rate)
            if len(p) == 3 and p[0] == "apps" and p[2] == "groups":
                need("apps")
                aid = self._require_app(p[1])
                groups = self.app_groups[aid]
                return self._page(request, base, "app_groups", sorted(groups, key=lambda g: (groups[g], g)),
                                  lambda g: {"id": g, "priority": groups[g], "lastUpdated": iso(EPOCH), "profile": {},
                                             "_links": {"group": {"href": f"{base}/api/v1/groups/{g}"}}}, rate)
            if p[:2] == ["iam", "resource-sets"] and len(p) in (2, 3):
                need("roles")
                ids = sorted(self.resource_sets) if len(p) == 2 else [p[2]]
                if len(p) == 3 and p[2] not in self.resource_sets:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {p[2]} (ResourceSet)")
                sets = [{"id": i, **self.resource_sets[i], "created": iso(EPOCH - timedelta(days=120)),
                         "lastUpdated": iso(EPOCH - timedelta(days=120)),
                         "_links": {"self": {"href": f"{base}/api/v1/iam/resource-sets/{i}"},
                                    "resources": {"href": f"{base}/api/v1/iam/resource-sets/{i}/resources"},
                                    "bindings": {"href": f"{base}/api/v1/iam/resource-sets/{i}/bindings"}}}
                        for i in ids]
                return _json(sets[0] if len(p) == 3 else {"resource-sets": sets, "_links": {}}, rate)
            if p == ["iam", "assignees", "users"]:
                need("roles")
                holders = sorted({r.assignee for r in self.roles.values() if r.assignee_type == "USER"})
                return self._assignees(request, base, holders, rate)
            if len(p) == 3 and p[0] == "users" and p[2] == "roles":
                need("roles")
                uid = self._require_user(p[1])
                groups_of = {g for g, m in self.members.items() if uid in m}
                roles = [self._role(r, base) for r in self.roles.values()
                         if (r.assignee_type == "USER" and r.assignee == uid)
                         or (r.assignee_type == "GROUP" and r.assignee in groups_of)]
                for role in roles:
                    if role["assignmentType"] == "GROUP":
                        role["assignmentType"] = "GROUP"
                return _json(roles, rate)
            if p == ["logs"]:
                need("logs")
                if self.faults.logs_status == 403:
                    raise _ApiError(403, "E0000006", "You do not have permission to perform the requested action")
                if self.faults.logs_status == 404:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {path} (Endpoint)")
                return self._logs(request, base, rate)
            if len(p) == 2 and p[0] == "users":
                need("users")
                return _json(self._user(self._require_user(p[1]), base), rate)
            raise _ApiError(404, "E0000007", f"Not found: Resource not found: {path} (Endpoint)")

        # writes
        if len(p) == 4 and p[0] == "groups" and p[2] == "users" and method in ("PUT", "DELETE"):
            need("groups", write=True)
            gid, uid = self._require_group(p[1]), self._require_user(p[3])
            if self.groups[gid]["type"] != "OKTA_GROUP":
                raise _ApiError(400, "E0000001", f"API validation failed: you can only modify members of OKTA_GROUP groups, not {self.groups[gid]['type']}")
            if method == "DELETE" and self.faults.ignore_deletes:
                return _empty(rate)
            with self.lock:
                (self.members[gid].add if method == "PUT" else self.members[gid].discard)(uid)
            return _empty(rate)
        if len(p) == 4 and p[0] == "apps" and p[2] == "users" and method == "DELETE":
            need("apps", write=True)
            aid, uid = self._require_app(p[1]), p[3]
            with self.lock:
                if uid not in self.app_users[aid]:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {uid} (AppUser)")
                if not self.faults.ignore_deletes:
                    del self.app_users[aid][uid]
            return _empty(rate)
        if len(p) == 3 and p[0] == "apps" and p[2] == "users" and method == "POST":
            need("apps", write=True)
            aid = self._require_app(p[1])
            body = request.get_json(silent=True) or {}
            uid = self._require_user(str(body.get("id", "")))
            with self.lock:
                self.app_users[aid].setdefault(uid, {"created": iso(datetime.now(UTC))})
            return _json(self._app_user(aid, uid, "USER", base), rate)
        if len(p) == 4 and p[0] == "apps" and p[2] == "groups" and method in ("PUT", "DELETE"):
            need("apps", write=True)
            aid, gid = self._require_app(p[1]), self._require_group(p[3])
            with self.lock:
                if method == "PUT":
                    self.app_groups[aid].setdefault(gid, len(self.app_groups[aid]))
                elif gid in self.app_groups[aid]:
                    if not self.faults.ignore_deletes:
                        del self.app_groups[aid][gid]
                else:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {gid} (ApplicationGroupAssignment)")
            return _json({"id": gid, "priority": self.app_groups[aid].get(gid, 0)}, rate) if method == "PUT" else _empty(rate)
        if len(p) == 4 and p[0] in ("users", "groups") and p[2] == "roles" and method == "DELETE":
            need("roles", write=True)
            who = self._require_user(p[1]) if p[0] == "users" else self._require_group(p[1])
            with self.lock:
                role = self.roles.get(p[3])
                if role is None or role.assignee != who:
                    raise _ApiError(404, "E0000007", f"Not found: Resource not found: {p[3]} (Role)")
                if not self.faults.ignore_deletes:
                    del self.roles[p[3]]
            return _empty(rate)
        if len(p) == 3 and p[0] in ("users", "groups") and p[2] == "roles" and method == "POST":
            need("roles", write=True)
            kind = "USER" if p[0] == "users" else "GROUP"
            who = self._require_user(p[1]) if kind == "USER" else self._require_group(p[1])
            body = request.get_json(silent=True) or {}
            rtype = str(body.get("type", ""))
            if rtype != "CUSTOM" and rtype not in STANDARD_ROLES:
                raise _ApiError(400, "E0000001", f"API validation failed: unknown role type {rtype!r}")
            role_id, rset = (body.get("role"), body.get("resource-set")) if rtype == "CUSTOM" else (None, None)
            with self.lock:
                for existing in self.roles.values():
                    if (existing.assignee, existing.type, existing.role, existing.resource_set) == (who, rtype, role_id, rset):
                        raise _ApiError(409, "E0000090", "Duplicate role assignment exception.")
                rid = okta_id("ra" if rtype != "CUSTOM" else "irb", f"{kind}{who}{rtype}{role_id}{time.time_ns()}")
                label = "Access Reviewer (custom)" if rtype == "CUSTOM" else STANDARD_ROLES[rtype]
                self.roles[rid] = RoleAssignment(rid, rtype, kind, who, role_id, rset, label)
                out = self._role(self.roles[rid], base)
            return _json(out, rate, status=201)
        raise _ApiError(405, "E0000022", "The endpoint does not support the provided HTTP method")

    # -- representations ---------------------------------------------------------------------------
    def _user(self, uid: str, base: str) -> dict[str, Any]:
        user = dict(self.users[uid])
        user["_links"] = {"self": {"href": f"{base}/api/v1/users/{uid}"}}
        return user

    def _user_json(self, uid: str, base: str) -> _Raw:
        """A user's JSON, serialized once per base URL (users never change here; pages just join them)."""
        key = (uid, base)
        cached = self._json_cache.get(key)
        if cached is None:
            cached = self._json_cache[key] = _Raw(json.dumps(self._user(uid, base), ensure_ascii=False))
        return cached

    def _group(self, gid: str, base: str, stats: bool) -> dict[str, Any]:
        group = dict(self.groups[gid])
        group["_links"] = {"users": {"href": f"{base}/api/v1/groups/{gid}/users"},
                           "apps": {"href": f"{base}/api/v1/groups/{gid}/apps"}}
        if "source" in group:
            group["_links"]["source"] = {"href": f"{base}/api/v1/apps/{group['source']['id']}"}
        if stats:
            group["_embedded"] = {"stats": {
                "usersCount": len(self.members[gid]),
                "appsCount": sum(1 for a in self.app_ids if gid in self.app_groups[a]),
                # Okta's spelling (see the module docstring): hasAdminPrivlege
                "groupPushMappingsCount": 0, "hasAdminPrivlege": self.has_admin_privilege(gid),
                "_links": {"self": {"href": f"{base}/api/v1/groups/{gid}/stats"}}}}
        return group

    def _owner(self, owner: tuple[str, str]) -> dict[str, Any]:
        """A GroupOwner as the Group Owners API returns it (ListsOwnersMultipleResponse in the spec)."""
        kind, oid = owner
        if kind == "USER":
            name = self.users[oid]["profile"]["displayName"]
        else:
            name = self.groups[oid]["profile"]["name"] if oid in self.groups else oid
        return {"id": oid, "type": kind, "resolved": True, "originId": None, "originType": "OKTA_DIRECTORY",
                "displayName": name, "lastUpdated": iso(EPOCH - timedelta(days=30))}

    def delete_group(self, gid: str) -> None:
        """Delete a group as Okta does: gone from lists; its members, owners, roles and app assignments too."""
        with self.lock:
            if gid not in self.groups:
                return
            del self.groups[gid]
            self.group_ids.remove(gid)
            self.members.pop(gid, None)
            self.owners.pop(gid, None)
            for assigned in self.app_groups.values():
                assigned.pop(gid, None)
            for rid in [r for r, role in self.roles.items() if role.assignee_type == "GROUP" and role.assignee == gid]:
                del self.roles[rid]

    def _app(self, aid: str, base: str) -> dict[str, Any]:
        app = dict(self.apps[aid])
        app["_links"] = {"users": {"href": f"{base}/api/v1/apps/{aid}/users"},
                         "groups": {"href": f"{base}/api/v1/apps/{aid}/groups"}}
        return app

    def _app_user(self, aid: str, uid: str, scope: str, base: str) -> dict[str, Any]:
        user = self.users[uid]
        created = self.app_users.get(aid, {}).get(uid, {}).get("created") or iso(EPOCH - timedelta(days=30))
        login = user.get("profile", {}).get("login", uid)
        return {"id": uid, "externalId": None, "created": created, "lastUpdated": created, "scope": scope,
                "status": "ACTIVE" if self.apps[aid]["signOnMode"] == "BOOKMARK" else "PROVISIONED",
                "statusChanged": created, "passwordChanged": None, "syncState": "DISABLED", "lastSync": None,
                "credentials": {"userName": login}, "profile": {"email": login},
                "_links": {"app": {"href": f"{base}/api/v1/apps/{aid}"}, "user": {"href": f"{base}/api/v1/users/{uid}"}}}

    def _role(self, r: RoleAssignment, base: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r.id, "label": r.label, "type": r.type, "status": "ACTIVE", "created": iso(EPOCH - timedelta(days=90)),
            "lastUpdated": iso(EPOCH - timedelta(days=90)), "assignmentType": r.assignee_type,
            "_links": {"assignee": {"href": f"{base}/api/v1/{'users' if r.assignee_type == 'USER' else 'groups'}/{r.assignee}"}},
        }
        if r.type == "CUSTOM":
            out["role"] = r.role
            out["resource-set"] = r.resource_set
            out["_links"]["role"] = {"href": f"{base}/api/v1/iam/roles/{r.role}"}
            out["_links"]["resource-set"] = {"href": f"{base}/api/v1/iam/resource-sets/{r.resource_set}"}
        return out

    def _require_user(self, uid: str) -> str:
        if uid not in self.users:
            raise _ApiError(404, "E0000007", f"Not found: Resource not found: {uid} (User)")
        return uid

    def _require_group(self, gid: str) -> str:
        if gid not in self.groups:
            raise _ApiError(404, "E0000007", f"Not found: Resource not found: {gid} (UserGroup)")
        return gid

    def _require_app(self, aid: str) -> str:
        if aid not in self.apps:
            raise _ApiError(404, "E0000007", f"Not found: Resource not found: {aid} (AppInstance)")
        return aid

    # -- paging --------------------------------------------------------------------------------------
    def _page(self, request: Request, base: str, kind: str, ids: list[str], render: Any,
              rate: tuple[int, int, int]) -> Response:
        default, cap = PAGE_LIMITS[kind]
        limit = _limit(request.args.get("limit"), default, cap)
        after = request.args.get("after")
        start = 0
        if after:
            try:
                start = ids.index(_b64(after)) + 1
            except ValueError:
                start = len(ids)  # a cursor past the end (its item was removed meanwhile): nothing after it
        chunk = ids[start:start + limit]
        more = start + limit < len(ids) and bool(chunk)
        fault = self.faults.lists.get(kind) or {}
        number = start // limit + 1  # every page before the last is full
        chunk, has_next = page_under_fault(fault, number, chunk)
        more = more and has_next
        response = _json([render(i) for i in chunk], rate)
        self_url = f'{base}{request.full_path.rstrip("?")}'
        links = [f'<{self_url}>; rel="self"']
        if fault.get("repeat_next"):
            links.append(f'<{self_url}>; rel="next"')
        elif more:
            params = {k: v for k, v in request.args.items() if k not in ("after", "limit")}
            params.update({"after": _b64e(chunk[-1]), "limit": str(limit)})
            links.append(f'<{base}{request.path}?{urlencode(params)}>; rel="next"')
        response.headers["Link"] = ", ".join(links)
        return response

    def _assignees(self, request: Request, base: str, holders: list[str], rate: tuple[int, int, int]) -> Response:
        default, cap = PAGE_LIMITS["assignees"]
        limit = _limit(request.args.get("limit"), default, cap)
        after = request.args.get("after")
        start = holders.index(_b64(after)) + 1 if after and _b64(after) in holders else 0
        chunk = holders[start:start + limit]
        links: dict[str, Any] = {}
        if start + limit < len(holders) and chunk:
            links["next"] = {"href": f"{base}/api/v1/iam/assignees/users?{urlencode({'after': _b64e(chunk[-1]), 'limit': limit})}"}
        body = {"value": [{"id": u, "orn": f"orn:okta:directory:00o1sandbox:users:{u}",
                           "_links": {"self": {"href": f"{base}/api/v1/users/{u}"},
                                      "roles": {"href": f"{base}/api/v1/users/{u}/roles"}}} for u in chunk],
                "_links": links}
        return _json(body, rate)

    def _logs(self, request: Request, base: str, rate: tuple[int, int, int]) -> Response:
        args = request.args
        until = parse_iso(args["until"]) if args.get("until") else None
        since = parse_iso(args["since"]) if args.get("since") else (until or datetime.now(UTC)) - timedelta(days=7)
        flt = args.get("filter", "")
        event_type = None
        if flt:
            m = re.fullmatch(r'\s*eventType\s+eq\s+"([a-z0-9_.]+)"\s*', flt)
            if not m:
                raise _ApiError(400, "E0000031", "Invalid search criteria.")
            event_type = m.group(1)
        lo, hi = iso(since), iso(until) if until else None
        ids = [i for i, ev in enumerate(self.events)
               if ev["published"] >= lo and (hi is None or ev["published"] < hi)
               and (event_type is None or ev["eventType"] == event_type)]
        if args.get("sortOrder") == "DESCENDING":
            ids.reverse()
        default, cap = PAGE_LIMITS["logs"]
        limit = _limit(args.get("limit"), default, cap)
        after = args.get("after")
        start = 0
        if after:
            marker = int(_b64(after))
            start = next((k + 1 for k, i in enumerate(ids) if i == marker), len(ids))
        chunk = ids[start:start + limit]
        response = _json([self.events[i] for i in chunk], rate)
        links = [f'<{base}{request.full_path.rstrip("?")}>; rel="self"']
        more = start + limit < len(ids)
        if more or until is None:  # a polling request (no `until`) always has a next link, as in Okta
            params = {k: v for k, v in args.items() if k not in ("after", "limit")}
            params.update({"after": _b64e(str(chunk[-1] if chunk else (ids[start - 1] if start else -1))), "limit": str(limit)})
            links.append(f'<{base}{request.path}?{urlencode(params)}>; rel="next"')
        response.headers["Link"] = ", ".join(links)
        return response


class _ApiError(Exception):
    def __init__(self, status: int, code: str, summary: str, scope: str | None = None) -> None:
        super().__init__(summary)
        self.status, self.code, self.summary, self.scope = status, code, summary, scope


def _bucket(path: str) -> str:
    """Okta's management rate-limit bucket of a path (https://developer.okta.com/docs/reference/rl-global-mgmt/):
    `/api/v1/groups` (list, create), `/api/v1/groups/{id}` (one group), `/api/v1/groups*` (every other call
    under it: members, owners, roles, rules...); `/api/v1/logs` alone. Attest's okta.rate_family mirrors it."""
    parts = path.rstrip("/").split("/")
    if len(parts) <= 4 or parts[1:3] != ["api", "v1"]:
        return "/".join(parts[:4]) or path
    if len(parts) == 5 and parts[4] not in ("rules", "assignees"):
        return "/".join(parts[:4]) + "/{id}"
    return "/".join(parts[:4]) + "*"


def _limit(raw: str | None, default: int, cap: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    return max(1, min(value, cap))


def _echo_auth(response: Response, request: Request) -> None:
    """The fault `echo_auth`: the error body quotes the request's headers, Authorization included."""
    try:
        body = json.loads(response.get_data(as_text=True) or "{}")
    except ValueError:
        body = {}
    header = request.headers.get("Authorization", "")
    body["errorSummary"] = f"{body.get('errorSummary', 'Error')} (request headers: Authorization: {header})"
    body["errorCauses"] = [{"errorSummary": f"debug: token={header.partition(' ')[2]}"}]
    response.set_data(json.dumps(body))


def _rate_headers(response: Response, rate: tuple[int, int, int]) -> None:
    limit, remaining, reset = rate
    response.headers["X-Rate-Limit-Limit"] = str(limit)
    response.headers["X-Rate-Limit-Remaining"] = str(max(remaining, 0))
    response.headers["X-Rate-Limit-Reset"] = str(reset)


class _Raw(str):
    """Already-serialized JSON (a cached user object)."""


def _json(payload: Any, rate: tuple[int, int, int], status: int = 200) -> Response:
    if isinstance(payload, list) and payload and all(isinstance(p, _Raw) for p in payload):
        body = "[" + ",".join(payload) + "]"
    else:
        body = json.dumps(payload, ensure_ascii=False)
    response = Response(body, status=status, content_type="application/json; charset=utf-8")
    _rate_headers(response, rate)
    return response


def _empty(rate: tuple[int, int, int]) -> Response:
    response = Response(status=204)
    _rate_headers(response, rate)
    return response


def _b64e(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _b64(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()


def _ascii(name: str) -> str:
    import unicodedata

    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", name.replace("ø", "o").replace("Ø", "O")
                                                           .replace("ł", "l").replace("Ł", "L")).lower())


def _coprime_step(n: int, seed: int) -> int:
    step = (seed % max(n - 1, 1)) + 1
    while math.gcd(step, n) != 1:
        step += 1
    return step


def create_app(demo: bool = False, faults: dict[str, dict[str, Any]] | None = None, **options: Any) -> OktaFake:
    """A WSGI app serving a fake Okta org. demo=True: a few hundred people with every kind of access.
    `faults`: list faults by listing (see Faults.lists)."""
    if demo:
        options.setdefault("users", 300)
        options.setdefault("groups", 40)
        options.setdefault("apps", 14)
        options.setdefault("memberships", 2400)
    fake = OktaFake(**options)
    fake.faults.lists = dict(faults or {})
    return fake


def _is_ec(public_pem: str) -> bool:
    """A registered public key (SubjectPublicKeyInfo PEM) is an EC key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return isinstance(load_pem_public_key(public_pem.encode()), ec.EllipticCurvePublicKey)
