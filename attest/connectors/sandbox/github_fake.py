"""A fake GitHub (REST v3 + the GraphQL queries Attest uses), deterministic and sized by parameters.

Why one module of some 1,300 lines: it is one upstream, and its routes share one in-memory org, one rate
limiter and one error shape; split by endpoint, each part would import all three and a reader checking the
fake against GitHub's reference would have to follow the org across files.

It follows GitHub's API reference where Attest depends on it:

- REST paging: `per_page` (default 30, max 100) and `page`, with a `Link` header carrying rel="next",
  "last", "first" and "prev" as GitHub sends them.
- Primary rate limit per token and resource (`core`, `graphql`): `x-ratelimit-limit/remaining/used/reset/
  resource` on every response; over the limit, 403 "API rate limit exceeded" with remaining 0.
- Secondary rate limits, injected: `state.inject_secondary(at=N, retry_after=1)` answers the Nth request
  with 403 "You have exceeded a secondary rate limit" and `retry-after`; a request that comes back before
  the wait is over is counted in `state.secondary_violations` and refused again.
- One clock (`create_app(clock=...)`, epoch seconds, default time.time) for the primary window and its
  `x-ratelimit-reset`, the secondary limit's `retry-after` window, token expiry and timestamps: a test's
  fake clock that moves only when the connector's injected sleep waits sees every wait without spending
  it. `state.timeline` keeps, per request, that clock when it arrived and was answered, its status, the
  limit that refused it if one did, and the `x-ratelimit-reset` and `retry-after` it was answered with (GitHub: "If you exceed your primary rate
  limit ... you should not retry your request until after the time specified by the x-ratelimit-reset
  header"; "If the retry-after response header is present, you should not retry your request until after
  that many seconds has elapsed", https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#handle-rate-limit-errors-appropriately).
- Errors with GitHub's body: {"message", "documentation_url", "status"}.
- Plans: `plan="free"` lacks custom organization roles, custom repository roles and SAML SSO (404 on
  those endpoints, `samlIdentityProvider: null` in GraphQL), as GitHub answers.
- GitHub App auth: `POST /app/installations/{id}/access_tokens` with an RS256 app JWT (iat/exp/iss),
  verified with the app's public key; installation tokens expire after `token_ttl` seconds.
- A failure injected on the Nth request (`fail_at`, `fail_count`, `fail_status`, `fail_path`).
- What an upstream incident or a buggy proxy does to a list (`state.faults`, or `create_app(faults=...)`),
  keyed by the GraphQL connection ("membersWithRole", "teams", "repositories", "members" of a team,
  "collaborators", "externalIdentities") or the REST view ("outside_collaborators", "team_repos", ...):
  {"empty": True} no items and no next page; {"cut_at_page": k} page k with half its items and no next
  page; {"drop_next_at": k} page k whole but `hasNextPage: false` / no rel="next"; {"repeat_next": True}
  a next page that is the same page again (the same `endCursor` as the request's `after`; a rel="next"
  equal to the request's URL). GitHub documents both forms of paging these break:
  https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api (the Link header;
  the last page has no rel="next") and https://docs.github.com/en/graphql/guides/using-pagination-in-the-graphql-api
  (`pageInfo { hasNextPage endCursor }`). `state.echo_auth` makes error bodies echo the request's
  Authorization header, as a debugging proxy's error page does. `state.deferred_deletes` answers a
  collaborator removal 204 but applies it only at `state.apply_deferred()` (a lagging replica or an
  incident: the answer alone does not prove the access is gone).
- Served both at the root (github.com layout: /orgs/..., /graphql) and under /api/v3 + /api/graphql
  (GitHub Enterprise Server layout).
- Renamed repositories (`state.rename_repo(org, old, new)`): a request under /repos/{owner}/{old-name}/...
  is redirected to /repositories/{id}/..., 301 for GET and HEAD, 307 for every other method (DELETE, PUT,
  POST, PATCH), with GitHub's body {"message": "Moved Permanently", "url", "documentation_url"}; the
  `redirect_status` of a rename can make it 308 (or 302). GitHub: "The API uses HTTP redirection where
  appropriate. Clients should assume that any request may result in a redirection ... 301 Permanent
  redirection ... 302, 307 Temporary redirection. The request should be repeated verbatim to the URI
  specified in the Location header" (https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects,
  https://docs.github.com/en/rest/overview/resources-in-the-rest-api#http-redirects); repository renames
  answer 301 for GET and 307 for the other methods (https://github.blog/changelog/2015-05-26-repository-redirects-are-coming/,
  "Repository redirects are coming" on developer.github.com, 2015).
- `PUT /repos/{owner}/{repo}/collaborators/{username}`: 201 with a repository invitation for someone who is
  not yet a collaborator nor an organization member (they must accept it), 204 when they are added at once
  (an existing collaborator, an organization member)
  (https://docs.github.com/en/rest/collaborators/collaborators#add-a-repository-collaborator: "201 Response
  when a new invitation is created", "204 Response when: an existing collaborator is added as a
  collaborator; an organization member is added as an individual collaborator ...").
- Collaborators' `role_name` (REST) and `permission` (GraphQL) are the highest role after every source of
  the grant (the repository, teams including parent teams, the organization's base permission, owners);
  only GraphQL's `permissionSources` tells the repository's own grant apart: "The `role_name` is the
  highest role assigned to the collaborator after considering all sources of grants, including: repo,
  teams, organization, and enterprise. There is presently not a way to differentiate between an
  organization level grant and a repository level grant from this endpoint response."
  (https://docs.github.com/en/rest/collaborators/collaborators#list-repository-collaborators;
  https://docs.github.com/en/graphql/reference/objects#permissionsource).
- Organization invitations carry GitHub's roles: direct_member, admin, billing_manager, hiring_manager,
  reinstate (https://docs.github.com/en/rest/orgs/members#list-pending-organization-invitations,
  `organization-invitation.role` in github/rest-api-description).
- Team synchronization (`create_app(team_sync=True)`, the demo's org: every third team connected to an IdP
  group): `GET /orgs/{org}/teams/{team_slug}/team-sync/group-mappings` lists a team's IdP groups, 403 "This
  team is not externally managed" for an org without it; a synced team's membership cannot be changed
  through the API (403), as GitHub documents (see `team_sync_mappings` and `team_membership`).

GraphQL is executed by graphql-core against a schema that is the subset of GitHub's schema used here.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from authlib.deprecate import AuthlibDeprecationWarning  # before authlib.jose: it installs a warning filter
from flask import Flask, Response, request
from graphql import build_schema, graphql_sync

from attest.connectors.sandbox.faults import page_under_fault

with warnings.catch_warnings():  # authlib.jose warns that joserfc is its successor; authlib.jose is what we use
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken
    from authlib.jose.errors import JoseError

DOCS = "https://docs.github.com/rest"
SANDBOX_TOKEN = "ghp_sandbox_token_for_attest"
ROLES = ("pull", "triage", "push", "maintain", "admin")
ROLE_PERMS = {  # role_name -> REST `permissions` object
    "pull": {"pull": True, "triage": False, "push": False, "maintain": False, "admin": False},
    "triage": {"pull": True, "triage": True, "push": False, "maintain": False, "admin": False},
    "push": {"pull": True, "triage": True, "push": True, "maintain": False, "admin": False},
    "maintain": {"pull": True, "triage": True, "push": True, "maintain": True, "admin": False},
    "admin": {"pull": True, "triage": True, "push": True, "maintain": True, "admin": True},
}
ROLE_NAME = {"pull": "read", "push": "write"}  # REST/GraphQL role_name says read/write for pull/push
GQL_PERMISSION = {"pull": "READ", "triage": "TRIAGE", "push": "WRITE", "maintain": "MAINTAIN", "admin": "ADMIN"}
AREAS = ("platform", "payments", "identity", "data", "mobile", "web", "infra", "security", "growth", "search",
         "billing", "ml", "devex", "sre", "support")

SCHEMA = build_schema("""
type Query {
  organization(login: String!): Organization
  repository(owner: String!, name: String!): Repository
  rateLimit: RateLimit
}
type RateLimit { cost: Int! limit: Int! remaining: Int! used: Int! resetAt: String! }
type PageInfo { hasNextPage: Boolean! endCursor: String hasPreviousPage: Boolean! startCursor: String }
type Organization {
  login: String!
  databaseId: Int
  name: String
  membersWithRole(first: Int, after: String): OrganizationMemberConnection!
  samlIdentityProvider: OrganizationIdentityProvider
  teams(first: Int, after: String, rootTeamsOnly: Boolean): TeamConnection!
  team(slug: String!): Team
  repositories(first: Int, after: String): RepositoryConnection!
}
enum OrganizationMemberRole { ADMIN MEMBER }
type OrganizationMemberConnection { totalCount: Int! pageInfo: PageInfo! edges: [OrganizationMemberEdge] nodes: [User] }
type OrganizationMemberEdge { cursor: String! role: OrganizationMemberRole hasTwoFactorEnabled: Boolean node: User }
type User { databaseId: Int login: String! name: String email: String! organizationVerifiedDomainEmails(login: String!): [String!]! }
type OrganizationIdentityProvider { ssoUrl: String externalIdentities(first: Int, after: String): ExternalIdentityConnection! }
type ExternalIdentityConnection { totalCount: Int! pageInfo: PageInfo! edges: [ExternalIdentityEdge] nodes: [ExternalIdentity] }
type ExternalIdentityEdge { cursor: String! node: ExternalIdentity }
type ExternalIdentity { guid: String! samlIdentity: ExternalIdentitySamlAttributes user: User }
type UserEmailMetadata { value: String! primary: Boolean type: String }
type ExternalIdentitySamlAttributes { nameId: String username: String givenName: String familyName: String emails: [UserEmailMetadata!] }
enum TeamPrivacy { SECRET VISIBLE }
enum TeamMembershipType { IMMEDIATE CHILD_TEAM ALL }
enum TeamMemberRole { MAINTAINER MEMBER }
type TeamConnection { totalCount: Int! pageInfo: PageInfo! nodes: [Team] edges: [TeamEdge] }
type TeamEdge { cursor: String! node: Team }
type Team {
  databaseId: Int
  slug: String!
  name: String!
  description: String
  privacy: TeamPrivacy!
  parentTeam: Team
  members(first: Int, after: String, membership: TeamMembershipType): TeamMemberConnection!
}
type TeamMemberConnection { totalCount: Int! pageInfo: PageInfo! edges: [TeamMemberEdge] nodes: [User] }
type TeamMemberEdge { cursor: String! role: TeamMemberRole! node: User! }
enum RepositoryPermission { ADMIN MAINTAIN WRITE TRIAGE READ }
enum CollaboratorAffiliation { OUTSIDE DIRECT ALL }
enum RepositoryVisibility { PRIVATE PUBLIC INTERNAL }
type RepositoryConnection { totalCount: Int! pageInfo: PageInfo! nodes: [Repository] }
type Repository {
  databaseId: Int
  name: String!
  nameWithOwner: String!
  isArchived: Boolean!
  isPrivate: Boolean!
  isFork: Boolean!
  visibility: RepositoryVisibility!
  collaborators(first: Int, after: String, affiliation: CollaboratorAffiliation): RepositoryCollaboratorConnection
}
type RepositoryCollaboratorConnection { totalCount: Int! pageInfo: PageInfo! edges: [RepositoryCollaboratorEdge] }
type RepositoryCollaboratorEdge { cursor: String! permission: RepositoryPermission! permissionSources: [PermissionSource!] node: User! }
union PermissionGranter = Organization | Repository | Team
type PermissionSource { permission: String! roleName: String source: PermissionGranter! }
""")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeOrg:
    login: str
    id: int
    plan: str = "enterprise"
    saml: bool = True
    members: dict[int, str] = field(default_factory=dict)  # user id -> admin | member
    outside: set[int] = field(default_factory=set)
    invitations: dict[int, dict[str, Any]] = field(default_factory=dict)
    teams: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {slug, name, parent, members{uid: role}, repos{rid: role}}
    repos: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {name, archived, private, collaborators{uid: role}}
    org_roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    repo_roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    saml_identities: dict[int, dict[str, str]] = field(default_factory=dict)  # uid -> {nameId, email}
    work_emails: dict[int, str] = field(default_factory=dict)  # uid -> e-mail on the org's verified domain
    verified_domains: bool = False  # enterprise orgs without SAML verify their domain
    two_factor_disabled: set[int] = field(default_factory=set)
    renamed: dict[str, tuple[int, int]] = field(default_factory=dict)  # old name (lower) -> (repo id, status)
    base_permission: str = "read"  # default_repository_permission: read | write | admin | none
    # team synchronization (GitHub Enterprise Cloud with SAML SSO through Entra ID or Okta): teams whose
    # members an IdP group sets; each team's {"idp_groups": [GroupMapping groups]}
    team_sync: bool = False

    @property
    def has_custom_roles(self) -> bool:
        return self.plan == "enterprise"

    def team_by_slug(self, slug: str) -> dict[str, Any] | None:
        for team in self.teams.values():
            if team["slug"] == slug.lower():
                return team
        return None

    def repo_by_name(self, name: str) -> dict[str, Any] | None:
        for repo in self.repos.values():
            if repo["name"].lower() == name.lower():
                return repo
        return None


class Stamp(NamedTuple):
    """One request on the fake's clock, for tests that check nothing came back before a wait GitHub announced."""

    number: int  # the request's number in arrival order (the fake's `requests` count)
    request: str  # "METHOD /path"
    arrived: float  # the fake's clock when the request arrived
    answered: float  # ... when it was answered
    status: int
    limited: str | None  # "primary" or "secondary": refused for that rate limit
    reset: int | None  # the x-ratelimit-reset it was answered with (epoch seconds)
    retry_after: int | None  # the retry-after it was answered with (seconds)


@dataclass
class Injection:
    at: int
    status: int
    count: int
    retry_after: float | None = None
    path: str | None = None
    served: int = 0


class FakeGitHub:
    """The service's state: users, orgs, tokens, counters and injected faults. Tests reach it as app.github."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[int, dict[str, Any]] = {}
        self.logins: dict[str, int] = {}
        self.orgs: dict[str, FakeOrg] = {}
        self.tokens: dict[str, float | None] = {SANDBOX_TOKEN: None}  # token -> expiry (None: never)
        self.app_id: str | None = None
        self.app_public_key: str | None = None
        self.installation_id: int | None = None
        self.token_ttl = 3600.0
        self.rate_limit = 5000
        self.graphql_limit = 5000
        self.rate_window = 3600.0
        self.windows: dict[tuple[str, str], list[float]] = {}  # (token, resource) -> [used, reset_at]
        self.requests = 0
        self.rest_requests = 0
        self.graphql_requests = 0
        self.token_exchanges = 0
        self.unauthorized = 0  # requests refused with 401 (a bad or expired token)
        self.primary_limited = 0  # requests refused for the primary rate limit
        self.log: list[str] = []
        self.clock: Callable[[], float] = time.time  # GitHub's clock (epoch seconds): create_app(clock=...)
        self.timeline: list[Stamp] = []  # per answered request: when it arrived and was answered, and its waits
        self.secondary: list[Injection] = []
        self.secondary_until = 0.0
        self.secondary_violations = 0
        self.failures: list[Injection] = []
        self.mutations: list[str] = []
        self.redirects: list[str] = []  # redirects served for renamed repositories
        self.repo_invitations: dict[int, dict[str, Any]] = {}  # repository invitations not yet accepted
        self.deferred_deletes = False  # a fault: collaborator removals answered 204 but applied later
        self.deferred: list[Callable[[], Any]] = []
        self.faults: dict[str, dict[str, Any]] = {}  # list faults by connection or REST view (see the module doc)
        self.echo_auth = False  # error bodies echo the request's Authorization header
        # permissions the App installation was not granted (e.g. {"members"}): requests that need one answer
        # 403 "Resource not accessible by integration" with `x-accepted-github-permissions` (PERMISSION_GATES)
        self.withheld: set[str] = set()

    # -- setup --------------------------------------------------------------------------------------
    def add_user(self, uid: int, login: str, name: str | None = None, email: str | None = None) -> dict[str, Any]:
        user = {"id": uid, "login": login, "name": name, "email": email}
        self.users[uid] = user
        self.logins[login.lower()] = uid
        return user

    def user(self, login: str) -> dict[str, Any] | None:
        uid = self.logins.get(login.lower())
        return self.users.get(uid) if uid is not None else None

    def inject_secondary(self, at: int, retry_after: float | None = 1.0, status: int = 403, count: int = 1) -> None:
        """Answer the `at`-th request from now (1 = the next one) with a secondary rate limit."""
        with self.lock:
            self.secondary.append(Injection(self.requests + at, status, count, retry_after))

    def inject_failure(self, at: int = 1, status: int = 500, count: int = 1, path: str | None = None) -> None:
        """Fail `count` requests from the `at`-th one on (only those whose path contains `path`)."""
        with self.lock:
            self.failures.append(Injection(self.requests + at, status, count, None, path))

    def rename_repo(self, org: str, old: str, new: str, redirect_status: int | None = None) -> None:
        """Rename a repository; requests under the old name are redirected as GitHub does (301 for GET/HEAD,
        307 for other methods; `redirect_status` forces one status, e.g. 308)."""
        o = self.orgs[org.lower()]
        repo = o.repo_by_name(old)
        assert repo is not None
        repo["name"] = new
        o.renamed[old.lower()] = (repo["id"], redirect_status or 0)

    def apply_deferred(self) -> None:
        with self.lock:
            for change in self.deferred:
                change()
            self.deferred.clear()

    def issue_token(self) -> tuple[str, float]:
        token = "ghs_" + secrets.token_hex(18)
        expires = self.clock() + self.token_ttl
        self.tokens[token] = expires
        return token, expires


# --- the synthetic organisation ------------------------------------------------------------------


def demo_email(i: int, domain: str = "demo.example") -> str:
    """The e-mail of person i of the demo organisation (the demo connector's formula)."""
    from attest.connectors.demo import FIRST, LAST

    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    return f"{first.lower()}.{last.lower().replace(' ', '')}{i}@{domain}"


def _person(i: int) -> tuple[str, str]:
    from attest.connectors.demo import FIRST, LAST

    return FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]


def okta_demo_person(i: int) -> tuple[str, str]:
    """Person i of the sandbox Okta's demo org (the demo's authoritative source)."""
    from attest.connectors.sandbox.okta_fake import person_name

    return person_name(i)


def okta_demo_email(i: int) -> str:
    from attest.connectors.sandbox.okta_fake import _ascii

    first, last = okta_demo_person(i)
    return f"{_ascii(first)}.{_ascii(last)}{i}@acme.example"


def _login(first: str, last: str, i: int) -> str:
    import unicodedata

    text = unicodedata.normalize("NFKD", f"{first}-{last}".replace("ø", "o").replace("Ø", "O").replace("ł", "l"))
    return re.sub(r"[^a-z0-9-]", "", text.lower().replace(" ", "")) + f"-{i}"


def populate(state: FakeGitHub, login: str, *, org_id: int, members: int, teams: int, repos: int, seed: int,
             plan: str, saml: bool, owners: int, domain: str, person_offset: int = 0,
             email: Callable[[int], str] | None = None, big_team: bool = False,
             person: Callable[[int], tuple[str, str]] = _person, team_sync: bool = False) -> FakeOrg:
    """Build one deterministic org: people i = person_offset.. are its members (SAML NameID = their e-mail)."""
    email = email or (lambda i: demo_email(i, domain))
    rng = random.Random(seed * 7919 + org_id)
    org = FakeOrg(login=login, id=org_id, plan=plan, saml=saml and plan == "enterprise",
                  verified_domains=plan == "enterprise" and not saml)
    org.team_sync = team_sync and org.saml  # team sync needs SAML SSO (GitHub Enterprise Cloud)
    member_ids: list[int] = []
    for k in range(members):
        i = person_offset + k
        first, last = person(i)
        uid = 1000 + i
        user = state.users.get(uid) or state.add_user(
            uid, _login(first, last, i), f"{first} {last}",
            email(i) if i % 5 == 0 else None)  # every fifth person shows a public e-mail
        member_ids.append(uid)
        org.members[uid] = "admin" if k < owners else "member"
        if k % 37 != 35:  # a few members never added their work e-mail to GitHub
            org.work_emails[uid] = email(i)
        if k % 23 == 7:
            org.two_factor_disabled.add(uid)
        if org.saml and k % 37 != 36:  # a few members never linked their SAML identity
            org.saml_identities[uid] = {"nameId": email(i), "email": email(i), "username": user["login"]}
    # a bot account with no person behind it
    bot_id = 500000 + org_id
    state.users.get(bot_id) or state.add_user(bot_id, f"{login}-deploy-bot", "Deploy bot", None)
    org.members[bot_id] = "member"
    member_ids.append(bot_id)
    # outside collaborators and pending invitations
    n_outside = max(2, members // 50)
    outside_ids = []
    for j in range(n_outside):
        uid = 900000 + org_id * 1000 + j
        state.users.get(uid) or state.add_user(uid, f"{login}-contractor-{j}", f"Contractor {j}",
                                               f"contractor{j}@partner.example" if j % 2 == 0 else None)
        org.outside.add(uid)
        outside_ids.append(uid)
    for j in range(max(1, members // 100)):
        inv_id = 70000 + org_id * 100 + j
        org.invitations[inv_id] = {
            "id": inv_id, "login": None, "email": f"new.hire{j}@{domain}",
            "role": "admin" if j == 0 and members >= 100 else "direct_member",
            "created_at": "2026-11-20T10:00:00Z", "team_count": 1, "invitation_source": "member",
        }
    # teams: a tree (fan-out 3) under a few roots; every team has a maintainer and a handful of members
    roots = max(1, teams // 10)
    for k in range(teams):
        tid = org_id * 100000 + k + 1
        parent = None if k < roots else org_id * 100000 + (k - roots) // 3 + 1
        area = AREAS[k % len(AREAS)]
        slug = f"{area}-{k}"
        size = rng.randint(3, 12)
        chosen = rng.sample(member_ids[:-1], min(size, len(member_ids) - 1)) if len(member_ids) > 1 else []
        tmembers = {uid: "member" for uid in chosen}
        if chosen:
            tmembers[chosen[0]] = "maintainer"
        org.teams[tid] = {"id": tid, "slug": slug, "name": f"{area.title()} {k}", "parent": parent,
                          "privacy": "closed", "description": f"The {area} team", "members": tmembers, "repos": {},
                          "idp_groups": []}
        if org.team_sync and k % 3 == 2:  # every third team is connected to an IdP group
            org.teams[tid]["idp_groups"] = [{
                "group_id": f"{org_id:04x}{k:04x}-aaaa-4bbb-8ccc-{tid:012x}", "group_name": f"GH-{area}-{k}",
                "group_description": f"{area.title()} {k} team members, from the identity provider"}]
    if big_team and member_ids:
        tid = org_id * 100000 + teams + 1
        org.teams[tid] = {"id": tid, "slug": "everyone", "name": "Everyone", "parent": None, "privacy": "closed",
                          "description": "All members", "members": {uid: "member" for uid in member_ids[:-1]},
                          "repos": {}, "idp_groups": []}
    # custom roles (enterprise plan)
    if org.has_custom_roles:
        org.repo_roles[201] = {"id": 201, "name": "security-triager", "description": "Triage plus security alerts",
                               "base_role": "triage", "permissions": ["view_secret_scanning_alerts"]}
        org.org_roles[8132] = {"id": 8132, "name": "security-auditor", "description": "Reads audit logs",
                               "permissions": ["read_audit_logs"], "base_role": None, "source": "Organization",
                               "users": set(member_ids[3:5]), "teams": set()}
        org.org_roles[8] = {"id": 8, "name": "all_repo_admin", "description": "Admin access to all repositories",
                            "permissions": [], "base_role": "admin", "source": "Predefined",
                            "users": set(member_ids[5:6]), "teams": set(list(org.teams)[:1])}
    # repositories: each shared with one or two teams; some with direct collaborators
    team_ids = list(org.teams)
    role_choices = ("pull", "push", "push", "push", "triage", "maintain", "admin")
    for r in range(repos):
        rid = org_id * 1000000 + r + 1
        repo = {"id": rid, "name": f"{AREAS[r % len(AREAS)]}-svc-{r}", "archived": r % 17 == 16,
                "private": r % 4 != 0, "fork": r % 29 == 28, "collaborators": {}}
        org.repos[rid] = repo
        if team_ids:
            for tid in rng.sample(team_ids, min(len(team_ids), rng.randint(1, 2))):
                role = "security-triager" if (org.repo_roles and r % 31 == 5) else rng.choice(role_choices)
                org.teams[tid]["repos"][rid] = role
        if r % 10 == 3 and member_ids:
            repo["collaborators"][rng.choice(member_ids[:-1])] = rng.choice(("push", "admin", "maintain"))
        if outside_ids and r % max(repos // len(outside_ids), 1) == 0:
            repo["collaborators"][outside_ids[(r // max(repos // len(outside_ids), 1)) % len(outside_ids)]] = "push"
    for j, uid in enumerate(outside_ids):  # every outside collaborator collaborates somewhere
        if org.repos and not any(uid in rp["collaborators"] for rp in org.repos.values()):
            list(org.repos.values())[j % len(org.repos)]["collaborators"][uid] = "pull"
    state.orgs[login.lower()] = org
    return org


# What a GitHub App (or fine-grained token) needs for the REST routes Attest reads: GitHub answers a request
# the installation lacks a permission for with 403 {"message": "Resource not accessible by integration"} and
# names the permission sets that would allow it in `x-accepted-github-permissions`, sets separated by ";"
# (https://github.blog/changelog/2023-08-10-x-accepted-github-permissions-header-for-fine-grained-permission-actors,
# https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#insufficient-permission-errors;
# the permission per route: https://docs.github.com/en/rest/authentication/permissions-required-for-github-apps).
PERMISSION_GATES: tuple[tuple[str, str], ...] = (
    (r"^(/api/v3)?/orgs/[^/]+/(members|outside_collaborators|invitations|teams)(/|$)", "members=read"),
    (r"^(/api/v3)?/orgs/[^/]+/organization-roles(/|$)", "organization_custom_org_roles=read"),
    (r"^(/api/v3)?/orgs/[^/]+/custom-repository-roles(/|$)", "organization_custom_roles=read"),
)


# --- the WSGI app --------------------------------------------------------------------------------


def create_app(*, demo: bool = False, org: str = "acme", orgs: tuple[str, ...] | list[str] | None = None,
               members: int = 30, teams: int = 8, repos: int = 20, seed: int = 1, plan: str = "enterprise",
               saml: bool = True, owners: int = 2, domain: str = "demo.example", big_team: bool = False,
               app_id: str | None = None, app_public_key: str | None = None, installation_id: int | None = None,
               token: str | None = None, token_ttl: float = 3600.0, rate_limit: int = 5000,
               rate_window: float = 3600.0, email: Callable[[int], str] | None = None,
               person_offset: int = 0, fail_at: int | None = None, fail_status: int = 500,
               fail_count: int = 1, fail_path: str | None = None,
               faults: dict[str, dict[str, Any]] | None = None, team_sync: bool = False,
               clock: Callable[[], float] = time.time) -> Flask:
    """The fake GitHub. `orgs` builds several orgs of the same size (people split between them).

    `fail_at=N` answers the Nth request (and `fail_count - 1` more, only those whose path contains
    `fail_path` when given) with `fail_status`; `app.github.inject_secondary(...)` injects a secondary limit.
    `clock` is GitHub's clock (epoch seconds): rate-limit windows, resets, retry-after and token expiry.
    """
    state = FakeGitHub()
    state.clock = clock
    state.faults = dict(faults or {})
    if fail_at:
        state.inject_failure(at=fail_at, status=fail_status, count=fail_count, path=fail_path)
    person = _person
    if demo:  # the demo org's people are the sandbox Okta's (SAML NameID = their Okta login)
        org, members, teams, repos, big_team, team_sync = "acme-corp", 120, 14, 40, True, True
        email, person = email or okta_demo_email, okta_demo_person
    names = list(orgs) if orgs else [org]
    for n, name in enumerate(names):
        populate(state, name, org_id=n + 1, members=members, teams=teams, repos=repos, seed=seed, plan=plan,
                 saml=saml, owners=owners, domain=domain, person_offset=person_offset + n * members,
                 email=email, big_team=big_team, person=person, team_sync=team_sync)
    if token:
        state.tokens[token] = None
    state.app_id, state.app_public_key, state.installation_id = app_id, app_public_key, installation_id
    state.token_ttl, state.rate_limit, state.graphql_limit, state.rate_window = token_ttl, rate_limit, rate_limit, rate_window

    app = Flask("attest-sandbox-github")
    app.github = state  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"message": message, "documentation_url": DOCS, "status": str(status)}
        if state.echo_auth:  # the fault: a debugging proxy's error page quotes the request
            body["message"] = f"{message} (request: Authorization: {request.headers.get('Authorization', '')})"
            body["errors"] = [{"detail": f"token={request.headers.get('Authorization', '').partition(' ')[2]}"}]
        return Response(json.dumps(body), status, headers=headers or {}, mimetype="application/json")

    def ok(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(payload), status, headers=headers or {}, mimetype="application/json")

    def no_content() -> Response:
        return Response(status=204)

    def page(items: list[Any]) -> Response:
        try:
            per_page = max(1, min(int(request.args.get("per_page", 30)), 100))
            number = max(1, int(request.args.get("page", 1)))
        except ValueError:
            return error(422, "Validation Failed")
        last = max(1, -(-len(items) // per_page))
        chunk = items[(number - 1) * per_page: number * per_page]
        links = []
        fault = state.faults.get((request.endpoint or "").removesuffix("_ghes")) or {}
        chunk, has_next = page_under_fault(fault, number, chunk)
        if not has_next:
            last = number
        if fault.get("repeat_next"):
            return ok(chunk, headers={"Link": f'<{request.url}>; rel="next"'})

        def url(n: int) -> str:
            args = request.args.to_dict()
            args["page"] = str(n)
            args["per_page"] = str(per_page)
            return f"{request.base_url}?{urlencode(args)}"

        if number < last:
            links += [f'<{url(number + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if number > 1:
            links += [f'<{url(1)}>; rel="first"', f'<{url(number - 1)}>; rel="prev"']
        return ok(chunk, headers={"Link": ", ".join(links)} if links else {})

    def simple_user(uid: int) -> dict[str, Any]:
        u = state.users[uid]
        return {"login": u["login"], "id": uid, "node_id": f"U_{uid}", "type": "User", "site_admin": False,
                "url": f"https://api.github.com/users/{u['login']}", "html_url": f"https://github.com/{u['login']}"}

    def repo_json(o: FakeOrg, repo: dict[str, Any]) -> dict[str, Any]:
        return {"id": repo["id"], "node_id": f"R_{repo['id']}", "name": repo["name"],
               "full_name": f"{o.login}/{repo['name']}", "private": repo["private"], "fork": repo["fork"],
               "archived": repo["archived"], "visibility": "private" if repo["private"] else "public",
               "owner": {"login": o.login, "id": o.id, "type": "Organization"}}

    def base_role(o: FakeOrg, role: str) -> str:
        for rr in o.repo_roles.values():
            if rr["name"] == role:
                return rr["base_role"]
        return role

    def get_org(name: str) -> FakeOrg | None:
        return state.orgs.get(name.lower())

    # -- the gate every request goes through: auth, faults, rate limits ------------------------------
    @app.before_request
    def gate() -> Response | None:
        if request.path == "/_sandbox/stats":  # the sandbox's own counters (benchmarks), not a GitHub API
            return ok({"requests": state.requests, "rest": state.rest_requests, "graphql": state.graphql_requests,
                       "token_exchanges": state.token_exchanges, "secondary_violations": state.secondary_violations})
        with state.lock:
            state.requests += 1
            n = state.requests
            path = request.path
            is_graphql = path.endswith("/graphql")
            if is_graphql:
                state.graphql_requests += 1
            elif "/access_tokens" in path:
                state.token_exchanges += 1
            else:
                state.rest_requests += 1
            state.log.append(f"{request.method} {path}")
            now = state.clock()
            request.environ["fake.arrived"] = (n, now)
            if state.secondary_until and now < state.secondary_until:
                state.secondary_violations += 1
                request.environ["fake.limited"] = "secondary"
                return error(403, "You have exceeded a secondary rate limit. Please wait a few minutes before "
                             "you try again.", {"retry-after": str(max(1, int(state.secondary_until - now + 0.999)))})
            for inj in state.secondary:
                if inj.at <= n and inj.served < inj.count:
                    inj.served += 1
                    request.environ["fake.limited"] = "secondary"
                    headers = {}
                    if inj.retry_after is not None:
                        headers["retry-after"] = str(inj.retry_after)
                        state.secondary_until = now + inj.retry_after
                    return error(inj.status, "You have exceeded a secondary rate limit. Please wait a few minutes "
                                 "before you try again. If you reach out to GitHub Support for help, please include "
                                 f"the request ID {secrets.token_hex(8).upper()}.", headers)
            for inj in state.failures:
                if inj.at <= n and inj.served < inj.count and (inj.path is None or inj.path in path):
                    inj.served += 1
                    return error(inj.status, "Server Error" if inj.status >= 500 else "Forbidden")
            if "/access_tokens" in path:
                return None  # authenticated by the app JWT in the view
            header = request.headers.get("Authorization", "")
            scheme, _, tok = header.partition(" ")
            expiry = state.tokens.get(tok)
            if scheme.lower() not in ("token", "bearer") or tok not in state.tokens or (
                    expiry is not None and now >= expiry):
                state.unauthorized += 1
                return error(401, "Bad credentials")
            resource = "graphql" if is_graphql else "core"
            limit = state.graphql_limit if is_graphql else state.rate_limit
            window = state.windows.get((tok, resource))
            if window is None or now >= window[1]:
                window = [0, now + state.rate_window]
                state.windows[(tok, resource)] = window
            request.environ["fake.rate"] = (limit, window, resource)
            if window[0] >= limit:
                state.primary_limited += 1
                request.environ["fake.limited"] = "primary"
                return error(403, "API rate limit exceeded for installation. If you reach out to GitHub Support "
                             "for help, please include the request ID.", _rate_headers(limit, window, resource))
            window[0] += 1
            for pattern, needed in PERMISSION_GATES:
                if needed.partition("=")[0] in state.withheld and re.match(pattern, path):
                    return error(403, "Resource not accessible by integration",
                                 {"x-accepted-github-permissions": needed, **_rate_headers(limit, window, resource)})
        return _renamed_redirect(path)

    def _renamed_redirect(path: str) -> Response | None:
        """A request under a renamed repository's old name: 301 (GET/HEAD) or 307 to /repositories/{id}/..."""
        m = re.match(r"^(/api/v3)?/repos/([^/]+)/([^/]+)(/.*)?$", path)
        o = get_org(m.group(2)) if m else None
        if o is None or m.group(3).lower() not in o.renamed:
            return None
        rid, forced = o.renamed[m.group(3).lower()]
        status = forced or (301 if request.method in ("GET", "HEAD") else 307)
        target = f"{request.host_url.rstrip('/')}{m.group(1) or ''}/repositories/{rid}{m.group(4) or ''}"
        if request.query_string:
            target += "?" + request.query_string.decode()
        state.redirects.append(f"{request.method} {path} -> {status}")
        body = {"message": "Moved Permanently" if status in (301, 308) else "Temporary Redirect", "url": target,
                "documentation_url": "https://docs.github.com/v3/#http-redirects"}
        return Response(json.dumps(body), status, headers={"Location": target}, mimetype="application/json")

    def _rate_headers(limit: int, window: list[float], resource: str) -> dict[str, str]:
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(max(0, limit - int(window[0]))),
                "x-ratelimit-used": str(int(window[0])), "x-ratelimit-reset": str(int(window[1] + 0.999)),
                "x-ratelimit-resource": resource}

    @app.after_request
    def rate_headers(response: Response) -> Response:
        rate = request.environ.get("fake.rate")
        if rate and "x-ratelimit-limit" not in response.headers:
            limit, window, resource = rate
            for k, v in _rate_headers(limit, window, resource).items():
                response.headers[k] = v
        response.headers["x-github-api-version-selected"] = "2022-11-28"
        if "fake.arrived" in request.environ:
            number, arrived = request.environ["fake.arrived"]
            reset, retry_after = response.headers.get("x-ratelimit-reset"), response.headers.get("retry-after")
            with state.lock:
                state.timeline.append(Stamp(number, f"{request.method} {request.path}", arrived, state.clock(),
                                            response.status_code, request.environ.get("fake.limited"), int(reset) if reset is not None else None,
                                            int(float(retry_after)) if retry_after is not None else None))
        return response

    def route(rule: str, methods: tuple[str, ...] = ("GET",)) -> Callable:
        def deco(fn: Callable) -> Callable:
            app.add_url_rule(rule, fn.__name__, fn, methods=list(methods))
            app.add_url_rule("/api/v3" + rule, fn.__name__ + "_ghes", fn, methods=list(methods))
            return fn
        return deco

    # -- GitHub App ------------------------------------------------------------------------------------
    @route("/app/installations/<int:iid>/access_tokens", ("POST",))
    def access_tokens(iid: int) -> Response:
        if not state.app_public_key:
            return error(404, "Not Found")
        header = request.headers.get("Authorization", "")
        scheme, _, token_ = header.partition(" ")
        if scheme.lower() != "bearer" or not token_:
            return error(401, "A JSON web token could not be decoded")
        try:
            claims = JsonWebToken(["RS256"]).decode(token_, state.app_public_key)
        except (JoseError, ValueError):
            return error(401, "A JSON web token could not be decoded")
        now = state.clock()
        if str(claims.get("iss")) != str(state.app_id):
            return error(401, "'Issuer' claim ('iss') must be an Integer")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            return error(401, "Missing 'issued at' or 'expiration time' claim")
        if exp <= now:
            return error(401, "'Expiration time' claim ('exp') must be a numeric value representing the future time "
                         "at which the assertion expires")
        if exp - iat > 600 + 1 or iat > now + 60:
            return error(401, "'Expiration time' claim ('exp') is too far in the future")
        if state.installation_id is not None and iid != state.installation_id:
            return error(404, "Not Found")
        with state.lock:
            tok, expires = state.issue_token()
        return ok({"token": tok, "expires_at": _iso(expires), "repository_selection": "all",
                   "permissions": {"members": "write", "administration": "write", "metadata": "read",
                                   "organization_administration": "read"}}, 201)

    # -- organisations ---------------------------------------------------------------------------------
    @route("/orgs/<name>")
    def org_get(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        return ok({"login": o.login, "id": o.id, "node_id": f"O_{o.id}", "type": "Organization",
                   "plan": {"name": o.plan}, "two_factor_requirement_enabled": False,
                   "default_repository_permission": "read", "members_can_create_repositories": False})

    @route("/orgs/<name>/members")
    def org_members(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        role = request.args.get("role", "all")
        filt = request.args.get("filter", "all")
        if role not in ("all", "admin", "member") or filt not in ("all", "2fa_disabled", "2fa_insecure"):
            return error(422, "Validation Failed")
        ids = [u for u, r in sorted(o.members.items()) if role == "all" or r == role]
        if filt == "2fa_disabled":
            ids = [u for u in ids if u in o.two_factor_disabled]
        elif filt == "2fa_insecure":
            ids = []
        return page([simple_user(u) for u in ids])

    @route("/orgs/<name>/members/<login>", ("DELETE",))
    def org_member_delete(name: str, login: str) -> Response:
        o = get_org(name)
        u = state.user(login)
        if o is None:
            return error(404, "Not Found")
        if u is None or u["id"] not in o.members:
            return no_content()  # GitHub answers 204 for a user who is not a member
        if o.members[u["id"]] == "admin" and sum(1 for r in o.members.values() if r == "admin") == 1:
            return error(403, "You cannot remove the last owner of an organization.")
        _remove_member(o, u["id"])
        state.mutations.append(f"DELETE member {login}")
        return no_content()

    def _remove_member(o: FakeOrg, uid: int) -> None:
        o.members.pop(uid, None)
        for team in o.teams.values():
            team["members"].pop(uid, None)
        for repo in o.repos.values():
            repo["collaborators"].pop(uid, None)
        for role in o.org_roles.values():
            role["users"].discard(uid)

    @route("/orgs/<name>/memberships/<login>", ("GET", "PUT", "DELETE"))
    def org_membership(name: str, login: str) -> Response:
        o = get_org(name)
        u = state.user(login)
        if o is None or u is None:
            return error(404, "Not Found")
        uid = u["id"]
        if request.method == "GET":
            if uid not in o.members:
                return error(404, "Not Found")
            return ok({"state": "active", "role": o.members[uid], "organization": {"login": o.login},
                       "user": simple_user(uid)})
        if request.method == "DELETE":
            if uid not in o.members:
                return error(404, "Not Found")
            if o.members[uid] == "admin" and sum(1 for r in o.members.values() if r == "admin") == 1:
                return error(403, "You cannot remove the last owner of an organization.")
            _remove_member(o, uid)
            state.mutations.append(f"DELETE membership {login}")
            return no_content()
        body = request.get_json(silent=True) or {}
        role = body.get("role", "member")
        if role not in ("admin", "member"):
            return error(422, "Validation Failed")
        if uid in o.members:
            if o.members[uid] == "admin" and role == "member" and sum(1 for r in o.members.values() if r == "admin") == 1:
                return error(403, "You cannot demote the last owner of an organization.")
            o.members[uid] = role
            state.mutations.append(f"PUT membership {login} {role}")
            return ok({"state": "active", "role": role, "organization": {"login": o.login}, "user": simple_user(uid)})
        inv_id = max(o.invitations, default=80000) + 1
        o.invitations[inv_id] = {"id": inv_id, "login": u["login"], "email": None,
                                 "role": "admin" if role == "admin" else "direct_member",
                                 "created_at": _iso(state.clock()), "team_count": 0, "invitation_source": "member"}
        state.mutations.append(f"PUT membership {login} {role} (invited)")
        return ok({"state": "pending", "role": role, "organization": {"login": o.login}, "user": simple_user(uid)})

    @route("/orgs/<name>/outside_collaborators")
    def outside_collaborators(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        return page([simple_user(u) for u in sorted(o.outside)])

    @route("/orgs/<name>/outside_collaborators/<login>", ("DELETE",))
    def outside_collaborator_delete(name: str, login: str) -> Response:
        o = get_org(name)
        u = state.user(login)
        if o is None:
            return error(404, "Not Found")
        if u is None or u["id"] not in o.outside:
            return error(404, "Not Found")
        if u["id"] in o.members:
            return error(422, "You cannot specify an organization member to remove as an outside collaborator.")
        o.outside.discard(u["id"])
        for repo in o.repos.values():
            repo["collaborators"].pop(u["id"], None)
        state.mutations.append(f"DELETE outside collaborator {login}")
        return no_content()

    @route("/orgs/<name>/invitations")
    def invitations(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        out = []
        for inv in sorted(o.invitations.values(), key=lambda i: i["id"]):
            item = dict(inv)
            item["node_id"] = f"OI_{inv['id']}"
            item["inviter"] = simple_user(next(iter(o.members))) if o.members else None
            out.append(item)
        return page(out)

    @route("/orgs/<name>/invitations", ("POST",))
    def invitation_create(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        body = request.get_json(silent=True) or {}
        role = body.get("role", "direct_member")
        if role not in ("admin", "direct_member", "billing_manager", "reinstate"):  # POST's enum (no hiring_manager)
            return error(422, "Validation Failed")
        login_ = None
        if body.get("invitee_id") is not None:
            user = state.users.get(int(body["invitee_id"]))
            if user is None:
                return error(422, "Validation Failed")
            login_ = user["login"]
        elif not body.get("email"):
            return error(422, "Validation Failed: invitee_id or email is required")
        inv_id = max(o.invitations, default=80000) + 1
        inv = {"id": inv_id, "login": login_, "email": body.get("email"), "role": role,
               "created_at": _iso(state.clock()), "team_count": 0, "invitation_source": "member"}
        o.invitations[inv_id] = inv
        state.mutations.append(f"POST invitation {login_ or body.get('email')} {role}")
        return ok(inv, 201)

    @route("/users/<login>")
    def user_get(login: str) -> Response:
        u = state.user(login)
        if u is None:
            return error(404, "Not Found")
        return ok(simple_user(u["id"]) | {"name": u["name"], "email": u["email"]})

    @route("/orgs/<name>/organization-roles/users/<login>/<int:role_id>", ("PUT", "DELETE"))
    def org_role_user(name: str, login: str, role_id: int) -> Response:
        o = get_org(name)
        u = state.user(login)
        if o is None or not o.has_custom_roles or role_id not in o.org_roles or u is None:
            return error(404, "Not Found")
        if request.method == "PUT":
            o.org_roles[role_id]["users"].add(u["id"])
        else:
            o.org_roles[role_id]["users"].discard(u["id"])
        state.mutations.append(f"{request.method} org role {role_id} user {login}")
        return no_content()

    @route("/orgs/<name>/organization-roles/teams/<slug>/<int:role_id>", ("PUT", "DELETE"))
    def org_role_team(name: str, slug: str, role_id: int) -> Response:
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        if o is None or not o.has_custom_roles or role_id not in o.org_roles or t is None:
            return error(404, "Not Found")
        if request.method == "PUT":
            o.org_roles[role_id]["teams"].add(t["id"])
        else:
            o.org_roles[role_id]["teams"].discard(t["id"])
        state.mutations.append(f"{request.method} org role {role_id} team {slug}")
        return no_content()

    @route("/orgs/<name>/invitations/<int:inv_id>", ("DELETE",))
    def invitation_delete(name: str, inv_id: int) -> Response:
        o = get_org(name)
        if o is None or inv_id not in o.invitations:
            return error(404, "Not Found")
        del o.invitations[inv_id]
        state.mutations.append(f"DELETE invitation {inv_id}")
        return no_content()

    # -- teams ---------------------------------------------------------------------------------------
    def team_json(o: FakeOrg, t: dict[str, Any]) -> dict[str, Any]:
        parent = o.teams.get(t["parent"]) if t["parent"] else None
        return {"id": t["id"], "node_id": f"T_{t['id']}", "name": t["name"], "slug": t["slug"],
                "description": t["description"], "privacy": t["privacy"], "permission": "pull",
                "parent": {"id": parent["id"], "slug": parent["slug"], "name": parent["name"]} if parent else None}

    @route("/orgs/<name>/teams")
    def teams_list(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        return page([team_json(o, t) for t in sorted(o.teams.values(), key=lambda t: t["id"])])

    @route("/orgs/<name>/teams/<slug>/members")
    def team_members(name: str, slug: str) -> Response:
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        if t is None:
            return error(404, "Not Found")
        role = request.args.get("role", "all")
        return page([simple_user(u) for u, r in sorted(t["members"].items()) if role in ("all", r)])

    @route("/orgs/<name>/teams/<slug>/memberships/<login>", ("GET", "PUT", "DELETE"))
    def team_membership(name: str, slug: str, login: str) -> Response:
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        u = state.user(login)
        if t is None or u is None:
            return error(404, "Not Found")
        uid = u["id"]
        if request.method == "GET":
            if uid not in t["members"]:
                return error(404, "Not Found")
            return ok({"role": t["members"][uid], "state": "active"})
        if t.get("idp_groups"):
            # "When you have team synchronization set up for a team with your organization's identity
            # provider (IdP), you will see an error if you attempt to use the API for making changes to the
            # team's membership" (https://docs.github.com/en/rest/teams/members#remove-team-membership-for-a-user:
            # 403 "Forbidden if team synchronization is set up")
            return error(403, "Team membership is managed by an identity provider through team synchronization; "
                              "change the membership of the connected IdP group instead")
        if request.method == "DELETE":
            if uid not in t["members"]:
                return error(404, "Not Found")
            del t["members"][uid]
            state.mutations.append(f"DELETE team {slug} member {login}")
            return no_content()
        role = (request.get_json(silent=True) or {}).get("role", "member")
        if role not in ("member", "maintainer"):
            return error(422, "Validation Failed")
        if uid not in o.members:
            return error(422, "Validation Failed: the user is not a member of the organization")
        t["members"][uid] = role
        state.mutations.append(f"PUT team {slug} member {login} {role}")
        return ok({"role": role, "state": "active"})

    @route("/orgs/<name>/teams/<slug>/team-sync/group-mappings")
    def team_sync_mappings(name: str, slug: str) -> Response:
        """List IdP groups for a team (https://docs.github.com/en/enterprise-cloud@latest/rest/teams/team-sync#list-idp-groups-for-a-team):
        200 {"groups": [{"group_id", "group_name", "group_description"}]} (the GroupMapping schema; an
        empty list for a team with no connection). Only with team synchronization enabled ("Team
        synchronization must be enabled to use these endpoints"); otherwise GitHub answers 403 "This team
        is not externally managed. Learn more at https://docs.github.com/articles/synchronizing-teams-between-your-identity-provider-and-github"
        (as reported in integrations/terraform-provider-github#1041 and octokit/rest.js#508)."""
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        if t is None:
            return error(404, "Not Found")
        if not o.team_sync:
            return error(403, "This team is not externally managed. Learn more at "
                              "https://docs.github.com/articles/synchronizing-teams-between-your-identity-provider-and-github")
        return ok({"groups": [dict(g) for g in t.get("idp_groups") or []]})

    @route("/orgs/<name>/teams/<slug>/repos")
    def team_repos(name: str, slug: str) -> Response:
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        if t is None:
            return error(404, "Not Found")
        out = []
        for rid, role in sorted(t["repos"].items()):
            repo = o.repos.get(rid)
            if repo is None:
                continue
            item = repo_json(o, repo)
            item["permissions"] = dict(ROLE_PERMS[base_role(o, role)])
            item["role_name"] = ROLE_NAME.get(role, role)
            out.append(item)
        return page(out)

    @route("/orgs/<name>/teams/<slug>/repos/<owner>/<repo_name>", ("GET", "PUT", "DELETE"))
    def team_repo(name: str, slug: str, owner: str, repo_name: str) -> Response:
        o = get_org(name)
        t = o.team_by_slug(slug) if o else None
        repo = o.repo_by_name(repo_name) if o and owner.lower() == o.login.lower() else None
        if t is None or repo is None:
            return error(404, "Not Found")
        if request.method == "GET":
            if repo["id"] not in t["repos"]:
                return error(404, "Not Found")
            return no_content()
        if request.method == "DELETE":
            t["repos"].pop(repo["id"], None)  # GitHub answers 204 either way
            state.mutations.append(f"DELETE team {slug} repo {repo_name}")
            return no_content()
        perm = (request.get_json(silent=True) or {}).get("permission", "push")
        if perm not in ROLES and perm not in {r["name"] for r in o.repo_roles.values()}:
            return error(422, "Validation Failed")
        t["repos"][repo["id"]] = perm
        state.mutations.append(f"PUT team {slug} repo {repo_name} {perm}")
        return no_content()

    # -- repositories --------------------------------------------------------------------------------
    @route("/orgs/<name>/repos")
    def org_repos(name: str) -> Response:
        o = get_org(name)
        if o is None:
            return error(404, "Not Found")
        return page([repo_json(o, r) for r in sorted(o.repos.values(), key=lambda r: r["id"])])

    @route("/repos/<owner>/<repo_name>/collaborators")
    def collaborators(owner: str, repo_name: str) -> Response:
        o = get_org(owner)
        repo = o.repo_by_name(repo_name) if o else None
        if repo is None:
            return error(404, "Not Found")
        affiliation = request.args.get("affiliation", "all")
        if affiliation not in ("direct", "outside", "all"):
            return error(422, "Validation Failed")
        out = []
        for uid in sorted(repo["collaborators"]):
            if affiliation == "outside" and uid not in o.outside:
                continue
            # role_name and permissions: the highest role after all sources of grants (GitHub's docs above)
            best = effective_role(o, repo, uid)
            item = simple_user(uid)
            item["permissions"] = dict(ROLE_PERMS[base_role(o, best)])
            item["role_name"] = ROLE_NAME.get(best, best)
            out.append(item)
        return page(out)

    @route("/repositories/<int:rid>/collaborators")
    def collaborators_by_id(rid: int) -> Response:
        o, repo = repo_by_id(rid)
        return collaborators(o.login, repo["name"]) if repo else error(404, "Not Found")

    @route("/repositories/<int:rid>/collaborators/<login>", ("GET", "PUT", "DELETE"))
    def collaborator_by_id(rid: int, login: str) -> Response:
        o, repo = repo_by_id(rid)
        return collaborator(o.login, repo["name"], login) if repo else error(404, "Not Found")

    def repo_by_id(rid: int) -> tuple[Any, dict[str, Any] | None]:
        for o in state.orgs.values():
            if rid in o.repos:
                return o, o.repos[rid]
        return None, None

    @route("/repos/<owner>/<repo_name>/collaborators/<login>", ("GET", "PUT", "DELETE"))
    def collaborator(owner: str, repo_name: str, login: str) -> Response:
        o = get_org(owner)
        repo = o.repo_by_name(repo_name) if o else None
        u = state.user(login)
        if repo is None or u is None:
            return error(404, "Not Found")
        if request.method == "GET":  # "Check if a user is a repository collaborator": any source of access
            return no_content() if effective_role(o, repo, u["id"]) else error(404, "Not Found")
        if request.method == "DELETE":
            if state.deferred_deletes:  # the fault: accepted (204) but applied only later (state.apply_deferred)
                state.deferred.append(lambda: repo["collaborators"].pop(u["id"], None))
                return no_content()
            repo["collaborators"].pop(u["id"], None)  # 204 whether or not they were one
            state.mutations.append(f"DELETE collaborator {repo_name} {login}")
            return no_content()
        perm = (request.get_json(silent=True) or {}).get("permission", "push")
        if perm not in ROLES and perm not in {r["name"] for r in o.repo_roles.values()}:
            return error(422, "Validation Failed")
        if u["id"] not in repo["collaborators"] and u["id"] not in o.members:
            # not a collaborator yet and not a member: GitHub invites them (201); they must accept
            inv_id = 90000 + len(state.repo_invitations) + 1
            inv = {"id": inv_id, "node_id": f"RI_{inv_id}", "repository": repo_json(o, repo),
                   "invitee": simple_user(u["id"]), "inviter": simple_user(next(iter(o.members))) if o.members else None,
                   "permissions": "write" if perm == "push" else ("read" if perm == "pull" else perm),
                   "created_at": _iso(state.clock()), "expired": False,
                   "url": f"https://api.github.com/user/repository_invitations/{inv_id}",
                   "html_url": f"https://github.com/{o.login}/{repo['name']}/invitations"}
            state.repo_invitations[inv_id] = {**inv, "repo_id": repo["id"], "uid": u["id"], "role": perm}
            state.mutations.append(f"PUT collaborator {repo['name']} {login} {perm} (invited)")
            return ok(inv, 201)
        repo["collaborators"][u["id"]] = perm
        if u["id"] not in o.members:
            o.outside.add(u["id"])
        state.mutations.append(f"PUT collaborator {repo['name']} {login} {perm}")
        return no_content()

    def effective_role(o: FakeOrg, repo: dict[str, Any], uid: int) -> str | None:
        """The highest role a person holds on a repository from every source: the repository's own grant, the
        teams they are in (and those teams' parents), the organization's base permission, owner."""
        return max(role_sources(o, repo, uid).values(), key=lambda r: ROLES.index(base_role(o, r)), default=None)

    def role_sources(o: FakeOrg, repo: dict[str, Any], uid: int) -> dict[tuple[str, int], str]:
        """(source kind, source id) -> role, for every source of a person's access to a repository."""
        out: dict[tuple[str, int], str] = {}
        if uid in repo["collaborators"]:
            out[("Repository", repo["id"])] = repo["collaborators"][uid]
        for t in o.teams.values():
            if uid not in t["members"]:
                continue
            team = t
            while team is not None:  # a child team's members get the access of its parent teams
                if repo["id"] in team["repos"]:
                    out[("Team", team["id"])] = team["repos"][repo["id"]]
                team = o.teams.get(team["parent"]) if team["parent"] else None
        if o.members.get(uid) == "admin":
            out[("Organization", o.id)] = "admin"
        elif uid in o.members and o.base_permission != "none":
            out[("Organization", o.id)] = {"read": "pull", "write": "push"}.get(o.base_permission, o.base_permission)
        return out

    # -- custom roles --------------------------------------------------------------------------------
    @route("/orgs/<name>/organization-roles")
    def org_roles(name: str) -> Response:
        o = get_org(name)
        if o is None or not o.has_custom_roles:
            return error(404, "Not Found")
        roles = [{k: v for k, v in r.items() if k not in ("users", "teams")}
                 | {"organization": {"login": o.login, "id": o.id}, "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z"} for r in o.org_roles.values()]
        return ok({"total_count": len(roles), "roles": roles})

    @route("/orgs/<name>/organization-roles/<int:role_id>/users")
    def org_role_users(name: str, role_id: int) -> Response:
        o = get_org(name)
        if o is None or not o.has_custom_roles or role_id not in o.org_roles:
            return error(404, "Not Found")
        out = []
        for uid in sorted(o.org_roles[role_id]["users"]):
            item = simple_user(uid)
            item["assignment"] = "direct"
            out.append(item)
        return page(out)

    @route("/orgs/<name>/organization-roles/<int:role_id>/teams")
    def org_role_teams(name: str, role_id: int) -> Response:
        o = get_org(name)
        if o is None or not o.has_custom_roles or role_id not in o.org_roles:
            return error(404, "Not Found")
        out = []
        for tid in sorted(o.org_roles[role_id]["teams"]):
            item = team_json(o, o.teams[tid])
            item["assignment"] = "direct"
            out.append(item)
        return page(out)

    @route("/orgs/<name>/custom-repository-roles")
    def repo_roles(name: str) -> Response:
        o = get_org(name)
        if o is None or not o.has_custom_roles:
            return error(404, "Not Found")
        roles = [dict(r) | {"organization": {"login": o.login, "id": o.id}} for r in o.repo_roles.values()]
        return ok({"total_count": len(roles), "custom_roles": roles})

    # -- GraphQL ---------------------------------------------------------------------------------------
    def connection(items: list[Any], first: int | None, after: str | None, make_edge: Callable[[Any], dict],
                   extra: dict[str, Any] | None = None, name: str = "") -> dict[str, Any]:
        if first is None or first < 1 or first > 100:
            raise ValueError("You must provide a `first` or `last` value between 1 and 100 to properly paginate "
                             "this connection.")
        start = 0
        if after:
            try:
                start = int(base64.b64decode(after).decode().split(":", 1)[1]) + 1
            except (ValueError, IndexError) as exc:
                raise ValueError(f"`{after}` does not appear to be a valid cursor.") from exc
        chunk = items[start:start + first]
        more = start + first < len(items)
        fault = state.faults.get(name) or {}
        chunk, has_next = page_under_fault(fault, start // first + 1, chunk)
        more = more and has_next
        edges = []
        for k, item in enumerate(chunk):
            edge = make_edge(item)
            edge["cursor"] = base64.b64encode(f"cursor:{start + k}".encode()).decode()
            edges.append(edge)
        end = edges[-1]["cursor"] if edges else None
        if fault.get("repeat_next"):  # the next page is this page again
            more, end = True, after or base64.b64encode(b"cursor:-1").decode()
        return {"totalCount": len(items), "edges": edges, "nodes": [e["node"] for e in edges],
                "pageInfo": {"hasNextPage": more, "endCursor": end,
                             "hasPreviousPage": start > 0, "startCursor": edges[0]["cursor"] if edges else None},
                **(extra or {})}

    def gql_user(uid: int) -> dict[str, Any]:
        u = state.users[uid]

        def verified(info: Any, login: str) -> list[str]:
            o = state.orgs.get(login.lower())
            if o is None or not o.verified_domains or uid not in o.members or uid not in o.work_emails:
                return []
            return [o.work_emails[uid]]

        return {"databaseId": uid, "login": u["login"], "name": u["name"], "email": u["email"] or "",
                "organizationVerifiedDomainEmails": verified}

    def gql_team(o: FakeOrg, t: dict[str, Any]) -> dict[str, Any]:
        def members(info: Any, first: int | None = None, after: str | None = None,
                    membership: str = "ALL") -> dict[str, Any]:
            ids = dict(t["members"])
            if membership in ("ALL", "CHILD_TEAM"):
                stack = [c for c in o.teams.values() if c["parent"] == t["id"]]
                child: dict[int, str] = {}
                while stack:
                    c = stack.pop()
                    child.update({u: "member" for u in c["members"]})
                    stack += [g for g in o.teams.values() if g["parent"] == c["id"]]
                if membership == "CHILD_TEAM":
                    ids = {u: r for u, r in child.items() if u not in t["members"]}
                else:
                    ids = {**child, **ids}
            return connection(sorted(ids.items()), first, after,
                              lambda item: {"role": item[1].upper(), "node": gql_user(item[0])}, name="members")

        parent = o.teams.get(t["parent"]) if t["parent"] else None
        return {"databaseId": t["id"], "slug": t["slug"], "name": t["name"], "description": t["description"],
                "privacy": "VISIBLE" if t["privacy"] == "closed" else "SECRET",
                "parentTeam": (lambda info: gql_team(o, parent)) if parent else None, "members": members}

    def gql_repo(o: FakeOrg, repo: dict[str, Any]) -> dict[str, Any]:
        def collabs(info: Any, first: int | None = None, after: str | None = None,
                    affiliation: str = "ALL") -> dict[str, Any]:
            items = sorted(repo["collaborators"].items())
            if affiliation == "OUTSIDE":
                items = [i for i in items if i[0] in o.outside]
            def edge(item: tuple[int, str]) -> dict[str, Any]:
                # `permission` is the effective one; `permissionSources` names each source
                # (https://docs.github.com/en/graphql/reference/objects#repositorycollaboratoredge)
                sources = role_sources(o, repo, item[0])
                best = effective_role(o, repo, item[0]) or item[1]
                return {"permission": GQL_PERMISSION[base_role(o, best)], "node": gql_user(item[0]),
                        "permissionSources": [
                            {"permission": GQL_PERMISSION[base_role(o, role)], "roleName": ROLE_NAME.get(role, role),
                             "source": {"__typename": kind, "databaseId": sid,
                                        "name": repo["name"] if kind == "Repository" else str(sid)}}
                            for (kind, sid), role in sources.items()]}

            return connection(items, first, after, edge, name="collaborators")

        return {"databaseId": repo["id"], "name": repo["name"], "nameWithOwner": f"{o.login}/{repo['name']}",
                "isArchived": repo["archived"], "isPrivate": repo["private"], "isFork": repo["fork"],
                "visibility": "PRIVATE" if repo["private"] else "PUBLIC", "collaborators": collabs}

    def gql_org(o: FakeOrg) -> dict[str, Any]:
        def members_with_role(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
            return connection(sorted(o.members.items()), first, after, lambda item: {
                "role": item[1].upper(), "hasTwoFactorEnabled": item[0] not in o.two_factor_disabled,
                "node": gql_user(item[0])}, name="membersWithRole")

        def identities(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
            items = sorted(o.saml_identities.items())
            return connection(items, first, after, lambda item: {"node": {
                "guid": f"guid-{o.id}-{item[0]}",
                "samlIdentity": {"nameId": item[1]["nameId"], "username": item[1]["username"],
                                 "emails": [{"value": item[1]["email"], "primary": True, "type": "work"}]},
                "user": gql_user(item[0]) if item[0] in o.members else None}}, name="externalIdentities")

        def teams_(info: Any, first: int | None = None, after: str | None = None,
                   rootTeamsOnly: bool = False) -> dict[str, Any]:  # noqa: N803 - GraphQL argument name
            items = sorted(o.teams.values(), key=lambda t: t["id"])
            if rootTeamsOnly:
                items = [t for t in items if not t["parent"]]
            return connection(items, first, after, lambda t: {"node": gql_team(o, t)}, name="teams")

        def team(info: Any, slug: str) -> dict[str, Any] | None:
            t = o.team_by_slug(slug)
            return gql_team(o, t) if t else None

        def repositories(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
            return connection(sorted(o.repos.values(), key=lambda r: r["id"]), first, after,
                              lambda r: {"node": gql_repo(o, r)}, name="repositories")

        return {"login": o.login, "databaseId": o.id, "name": o.login.title(),
                "membersWithRole": members_with_role,
                "samlIdentityProvider": {"ssoUrl": f"https://idp.example/sso/{o.login}",
                                         "externalIdentities": identities} if o.saml else None,
                "teams": teams_, "team": team, "repositories": repositories}

    def gql_repository(owner: str, name: str) -> dict[str, Any] | None:
        o = get_org(owner)
        repo = o.repo_by_name(name) if o else None
        return gql_repo(o, repo) if repo else None

    def resolve_type(value: Any, info: Any, type_: Any) -> str:
        return value.get("__typename", "Repository")

    SCHEMA.get_type("PermissionGranter").resolve_type = resolve_type  # type: ignore[union-attr]

    @app.route("/graphql", methods=["POST"])
    @app.route("/api/graphql", methods=["POST"])
    def graphql_endpoint() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return error(400, "Problems parsing JSON")
        root = {
            "organization": lambda info, login: gql_org(state.orgs[login.lower()]) if login.lower() in state.orgs else None,
            "repository": lambda info, owner, name: gql_repository(owner, name),
            "rateLimit": lambda info: {"cost": 1, "limit": state.graphql_limit, "remaining": state.graphql_limit,
                                       "used": 0, "resetAt": _iso(state.clock() + 3600)},
        }
        result = graphql_sync(SCHEMA, body["query"], root_value=root, variable_values=body.get("variables") or {},
                              operation_name=body.get("operationName"))
        out: dict[str, Any] = {}
        if result.errors:
            errs = []
            for e in result.errors:
                item = {"message": e.message, "locations": [{"line": loc.line, "column": loc.column}
                                                            for loc in (e.locations or [])]}
                if e.path:
                    item["path"] = list(e.path)
                    if "organization" in e.path and result.data and result.data.get("organization") is None:
                        item["type"] = "NOT_FOUND"
                errs.append(item)
            out["errors"] = errs
        if result.data is not None or not result.errors:
            out["data"] = result.data
        if result.data is None and result.errors and all("path" not in e for e in out["errors"]):
            return ok(out)  # a query that does not validate: 200 with errors only, as GitHub answers
        # GitHub reports an unknown organization as an error of type NOT_FOUND with data.organization null
        if result.data is not None and result.data.get("organization", 1) is None:
            out.setdefault("errors", []).append({"type": "NOT_FOUND", "path": ["organization"],
                                                 "message": "Could not resolve to an Organization with the login "
                                                            f"of '{(body.get('variables') or {}).get('login', '')}'."})
        return ok(out)

    @app.errorhandler(404)
    def not_found(_: Any) -> Response:
        return error(404, "Not Found")

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Response:
        return error(404, "Not Found")

    return app
