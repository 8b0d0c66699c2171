"""GitHub connector: organizations, members, teams (nested), repositories and their permissions; revoke.

Works against github.com (`api_url` https://api.github.com) and GitHub Enterprise Server (`api_url`
https://HOST/api/v3; GraphQL is then https://HOST/api/graphql).

How it reads an organization (each org is a *part*: one that fails yields PartFailed and is left untouched):
- GraphQL `membersWithRole` (login, name, public and verified-domain e-mails, role) and `samlIdentityProvider.externalIdentities`
  (SAML NameID and e-mail) - 100 per query instead of a REST call per member.
- GraphQL `teams` with their immediate members and roles (maintainer/member) and parent team; a team with
  more than 100 members is paged on its own.
- GraphQL `repositories` with their direct collaborators and role (the repository permission source gives
  custom repository role names); a repository with more than 100 direct collaborators is paged on its own,
  by GraphQL too: REST's `role_name` (and `permissions`) are "the highest role assigned to the collaborator
  after considering all sources of grants, including: repo, teams, organization, and enterprise"
  (https://docs.github.com/en/rest/collaborators/collaborators#list-repository-collaborators), so only
  GraphQL's `permissionSources` tells the repository's own grant apart.
- REST `/orgs/{org}/teams/{slug}/repos` once per team: the team's repositories with `role_name`.
- REST for the rest: the org, members without 2FA (`filter=2fa_disabled`, owners only), outside
  collaborators, pending invitations, organization roles with their users and teams, custom repository roles.
  Optional features (custom roles, SAML, 2FA status) that the plan or the credentials lack degrade to a Note.

Rate limits are kept per budget, as GitHub names it in `x-ratelimit-resource` (core, graphql, search...;
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api). Redirects (301 for a
renamed or transferred repository, 302/307/308) are followed with the same method, DELETE included
(https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects).

Revokes are honest: a change is `done` only when a follow-up read shows the access gone, `unconfirmed` when
GitHub accepted the call but still shows it; an undo that GitHub answers with an invitation (201 for a
repository collaborator, `state: pending` for a membership) is `invited`, not re-granted.

The dumb layer (`_rest_list`, `_graphql`, `fetch_org`) does HTTP only; `org_records()` is a pure transform
of the fetched payloads into records and is unit-tested on recorded payloads.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from authlib.deprecate import AuthlibDeprecationWarning  # before authlib.jose: it installs a warning filter

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
from attest.connectors.fanout import Task, fan_out
from attest.connectors.http import HttpClient, HttpError, PageGuard, PagingError, require_https

with warnings.catch_warnings():  # authlib.jose warns that joserfc is its successor; authlib.jose is what we use
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.github.com"
PER_PAGE = 100
REPO_ROLES = ("pull", "triage", "push", "maintain", "admin")
GQL_ROLE = {"READ": "pull", "TRIAGE": "triage", "WRITE": "push", "MAINTAIN": "maintain", "ADMIN": "admin"}
PRIVILEGED_ORG_ROLES = {"all_repo_admin", "security_manager", "all_repo_maintain"}

MEMBERS_QUERY = """
query AttestMembers($login: String!, $after: String) {
  organization(login: $login) {
    membersWithRole(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges { role node { databaseId login name email organizationVerifiedDomainEmails(login: $login) } }
    }
  }
}"""
# the same without verified-domain e-mails, for servers or credentials that refuse that field
MEMBERS_QUERY_PLAIN = MEMBERS_QUERY.replace(" organizationVerifiedDomainEmails(login: $login)", "")

SAML_QUERY = """
query AttestSamlIdentities($login: String!, $after: String) {
  organization(login: $login) {
    samlIdentityProvider {
      externalIdentities(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        edges { node { guid samlIdentity { nameId username emails { value primary } } user { databaseId login } } }
      }
    }
  }
}"""

TEAMS_QUERY = """
query AttestTeams($login: String!, $after: String) {
  organization(login: $login) {
    teams(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        databaseId slug name description privacy
        parentTeam { databaseId slug }
        members(first: 100, membership: IMMEDIATE) {
          pageInfo { hasNextPage endCursor }
          edges { role node { databaseId login } }
        }
      }
    }
  }
}"""

TEAM_MEMBERS_QUERY = """
query AttestTeamMembers($login: String!, $slug: String!, $after: String) {
  organization(login: $login) {
    team(slug: $slug) {
      members(first: 100, after: $after, membership: IMMEDIATE) {
        pageInfo { hasNextPage endCursor }
        edges { role node { databaseId login } }
      }
    }
  }
}"""

# one page of a repository's direct collaborators: the fields both documents below read
COLLABORATOR_PAGE_FRAGMENT = """
fragment AttestCollaboratorPage on RepositoryCollaboratorConnection {
  totalCount
  pageInfo { hasNextPage endCursor }
  edges {
    permission
    permissionSources { roleName source { __typename ... on Repository { databaseId } } }
    node { databaseId login }
  }
}"""

REPOS_QUERY = """
query AttestRepositories($login: String!, $after: String) {
  organization(login: $login) {
    repositories(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        databaseId name nameWithOwner isArchived isPrivate isFork visibility
        collaborators(first: 100, affiliation: DIRECT) {
          ...AttestCollaboratorPage
        }
      }
    }
  }
}""" + COLLABORATOR_PAGE_FRAGMENT


REPO_COLLABORATORS_QUERY = """
query AttestRepositoryCollaborators($owner: String!, $name: String!, $after: String) {
  repository(owner: $owner, name: $name) {
    collaborators(first: 100, after: $after, affiliation: DIRECT) {
      ...AttestCollaboratorPage
    }
  }
}""" + COLLABORATOR_PAGE_FRAGMENT

# GitHub's organization invitation roles (`organization-invitation.role`: direct_member, admin,
# billing_manager, hiring_manager, reinstate; https://docs.github.com/en/rest/orgs/members#list-pending-organization-invitations).
# A billing manager is not a member and has no repository access ("Billing managers ... do not have access
# to the organization's repositories"; https://docs.github.com/en/organizations/managing-peoples-access-to-your-organization-with-roles/adding-a-billing-manager-to-your-organization):
# their own entitlement. `reinstate` restores a former member's membership. hiring_manager is not a
# membership and GitHub documents no access for it: skipped with a note.
INVITATION_ENTITLEMENT = {"admin": "admin", "direct_member": "member", "reinstate": "member",
                          "billing_manager": "billing_manager"}


def github_budget(method: str, url: str) -> str:
    """The rate-limit budget a request draws on, as GitHub names it in `x-ratelimit-resource`."""
    path = urlsplit(url).path
    if path.endswith("/graphql"):
        return "graphql"
    if "/search/code" in path:
        return "code_search"
    if "/search/" in path:
        return "search"
    return "core"


class GraphQLError(ConnectorError):
    def __init__(self, errors: list[dict[str, Any]], query_name: str) -> None:
        self.errors = errors
        self.types = {str(e.get("type") or "") for e in errors}
        message = "; ".join(str(e.get("message", "")) for e in errors)[:500]
        super().__init__(f"GitHub GraphQL {query_name} failed: {message}")


def graphql_url(api_url: str) -> str:
    """https://api.github.com -> /graphql; GHES https://HOST/api/v3 -> https://HOST/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


@dataclass
class OrgSnapshot:
    """Everything fetched for one organization (the raw payloads the pure transform reads)."""

    login: str
    org: dict[str, Any]
    members: list[dict[str, Any]] = field(default_factory=list)  # GraphQL member edges
    two_factor_disabled: set[int] | None = None  # user ids; None when the API did not tell
    saml: list[dict[str, Any]] | None = None  # GraphQL external identity nodes; None = no SAML
    outside_collaborators: list[dict[str, Any]] = field(default_factory=list)
    invitations: list[dict[str, Any]] = field(default_factory=list)
    org_roles: list[dict[str, Any]] | None = None  # each with "users" and "teams" lists
    repo_roles: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)  # GraphQL team nodes, members complete
    team_repos: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # team id -> REST repos
    repos: list[dict[str, Any]] = field(default_factory=list)  # GraphQL repo nodes, collaborators complete
    notes: list[str] = field(default_factory=list)


# --- the pure transform ----------------------------------------------------------------------------


def _is_service(login: str) -> bool:
    low = login.lower()
    return low.endswith(("[bot]", "-bot", "_bot", "-ci")) or low.startswith("bot-")


def _primary_email(saml_identity: Mapping[str, Any] | None) -> str | None:
    if not saml_identity:
        return None
    emails = saml_identity.get("emails") or []
    for e in emails:
        if e.get("primary") and e.get("value"):
            return e["value"]
    for e in emails:
        if e.get("value"):
            return e["value"]
    name_id = saml_identity.get("nameId") or ""
    return name_id if "@" in name_id else None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def org_records(snap: OrgSnapshot, *, skip_archived: bool = False,
                seen_accounts: set[str] | None = None) -> Iterator[Record]:
    """Records for one organization from its fetched payloads. `seen_accounts` dedupes across orgs."""
    seen = seen_accounts if seen_accounts is not None else set()
    login = snap.login
    oid = snap.org.get("id") or login
    part = f"github:{login}"
    org_ref = f"org:{oid}"
    org_attrs = {"org": login}
    yield ResourceRecord(
        external_id=org_ref, type="github_org", name=login, description=snap.org.get("description"),
        attributes={"org": login, "plan": (snap.org.get("plan") or {}).get("name"),
                    "two_factor_requirement_enabled": snap.org.get("two_factor_requirement_enabled"),
                    "default_repository_permission": snap.org.get("default_repository_permission"),
                    "saml_sso": snap.saml is not None},
        part=part)
    yield EntitlementRecord(f"{org_ref}:member", org_ref, "member", f"Member of {login}",
                            "Organization member", attributes={**org_attrs, "kind": "org_member"}, part=part)
    yield EntitlementRecord(f"{org_ref}:admin", org_ref, "admin", f"Owner of {login}",
                            "Organization owner: full control of the organization", purpose="permission",
                            privileged=True, attributes={**org_attrs, "kind": "org_admin"}, part=part)
    yield EntitlementRecord(f"{org_ref}:outside_collaborator", org_ref, "outside_collaborator",
                            f"Outside collaborator of {login}",
                            "Not a member; has access to one or more repositories",
                            attributes={**org_attrs, "kind": "outside_collaborator"}, part=part)

    # identities from SAML, by user id
    saml_by_user: dict[int, dict[str, Any]] = {}
    for node in snap.saml or []:
        user = node.get("user") or {}
        if user.get("databaseId") is not None and node.get("samlIdentity"):
            saml_by_user[int(user["databaseId"])] = node["samlIdentity"]
    twofa_off = snap.two_factor_disabled

    def account(uid: int, user_login: str, name: str | None, public_email: str | None,
                extra: dict[str, Any], domain_emails: list[str] | None = None) -> Iterator[Record]:
        ext = str(uid)
        if ext in seen:
            return
        seen.add(ext)
        saml = saml_by_user.get(uid)
        email = _primary_email(saml) or next(iter(domain_emails or ()), None) or (public_email or None)
        yield AccountRecord(
            external_id=ext, login=user_login, email=email, display_name=name or user_login,
            status="active", kind="service" if _is_service(user_login) else "human",
            mfa_enabled=None if twofa_off is None or extra.get("outside_collaborator") else uid not in twofa_off,
            saml_nameid=(saml or {}).get("nameId") or None,
            attributes={"github_login": user_login, "public_email": public_email or None, **extra}, part=part)

    # members
    for edge in snap.members:
        node = edge.get("node") or {}
        if node.get("databaseId") is None:
            continue
        uid = int(node["databaseId"])
        role = "admin" if edge.get("role") == "ADMIN" else "member"
        domain_emails = list(node.get("organizationVerifiedDomainEmails") or [])
        yield from account(uid, node["login"], node.get("name"), node.get("email"),
                           {"verified_domain_emails": domain_emails} if domain_emails else {}, domain_emails)
        yield GrantRecord(f"{org_ref}:{role}", str(uid), attributes={"login": node["login"]}, part=part)
    # outside collaborators
    for user in snap.outside_collaborators:
        yield from account(int(user["id"]), user["login"], user.get("name"), user.get("email"),
                           {"outside_collaborator": True})
        yield GrantRecord(f"{org_ref}:outside_collaborator", str(user["id"]),
                          attributes={"login": user["login"]}, part=part)
    # pending invitations: an account that does not exist yet but will hold the role once accepted
    billing = False
    for inv in snap.invitations:
        ext = f"invitation:{inv['id']}"
        who = inv.get("login") or inv.get("email") or ext
        role = INVITATION_ENTITLEMENT.get(str(inv.get("role") or "direct_member"))
        if role is None:
            yield Note(f"{login}: pending invitation {inv['id']} ({who}) is for the role {inv.get('role')!r}, which "
                       "is not an organization membership; not stored")
            continue
        if role == "billing_manager" and not billing:
            billing = True
            yield EntitlementRecord(f"{org_ref}:billing_manager", org_ref, "billing_manager",
                                    f"Billing manager of {login}",
                                    "Manages the organization's billing; not a member, no repository access",
                                    purpose="permission", attributes={**org_attrs, "kind": "org_billing_manager"},
                                    part=part)
        yield AccountRecord(
            external_id=ext, login=inv.get("login"), email=inv.get("email"), display_name=f"{who} (invited)",
            status="invited", created_at=_parse_time(inv.get("created_at")),
            attributes={"invitation_id": inv["id"], "invited_role": inv.get("role"),
                        "inviter": (inv.get("inviter") or {}).get("login"),
                        "invitation_source": inv.get("invitation_source")}, part=part)
        yield GrantRecord(f"{org_ref}:{role}", ext, attributes={
            "pending_invitation": True, "invitation_id": inv["id"], "email": inv.get("email"),
            "login": inv.get("login")}, part=part)

    # teams (nested through parentTeam)
    team_ref: dict[int, str] = {}
    team_slug: dict[int, str] = {}
    for team in snap.teams:
        team_ref[int(team["databaseId"])] = f"team:{team['databaseId']}"
        team_slug[int(team["databaseId"])] = team["slug"]
    for team in snap.teams:
        tid = int(team["databaseId"])
        ref = team_ref[tid]
        edges = (team.get("members") or {}).get("edges") or []
        maintainers = tuple(str(e["node"]["databaseId"]) for e in edges if e.get("role") == "MAINTAINER")
        parent = team.get("parentTeam") or None
        parent_id = int(parent["databaseId"]) if parent and parent.get("databaseId") is not None else None
        attrs = {"org": login, "slug": team["slug"], "privacy": (team.get("privacy") or "").lower() or None,
                 "parent_slug": parent.get("slug") if parent else None}
        yield ResourceRecord(external_id=ref, type="github_team", name=f"{login}/{team['slug']}",
                             description=team.get("description") or team.get("name"), is_group=True,
                             parent_ref=team_ref.get(parent_id, org_ref) if parent_id else org_ref,
                             owner_refs=maintainers, attributes=attrs, part=part)
        tattrs = {"org": login, "team_slug": team["slug"]}
        yield EntitlementRecord(f"{ref}:member", ref, "member", f"Member of team {login}/{team['slug']}",
                                is_membership=True, attributes={**tattrs, "kind": "team_member"}, part=part)
        yield EntitlementRecord(f"{ref}:maintainer", ref, "maintainer",
                                f"Maintainer of team {login}/{team['slug']}",
                                "Manages the team's members and settings", purpose="ownership",
                                attributes={**tattrs, "kind": "team_maintainer"}, part=part)
        for e in edges:
            uid = str(e["node"]["databaseId"])
            yield GrantRecord(f"{ref}:member", uid, attributes={"login": e["node"]["login"]}, part=part)
            if e.get("role") == "MAINTAINER":
                yield GrantRecord(f"{ref}:maintainer", uid, attributes={"login": e["node"]["login"]}, part=part)
        if parent_id is not None and parent_id in team_ref:
            # the child team is a member of its parent: its members get the parent's access
            yield GrantRecord(f"{team_ref[parent_id]}:member", ref, principal_type="resource",
                              attributes={"team_slug": team["slug"], "nested": True}, part=part)

    # custom organization roles (users and teams)
    for role in snap.org_roles or []:
        rref = f"{org_ref}:role:{role['id']}"
        perms = list(role.get("permissions") or [])
        privileged = (role.get("base_role") in ("admin", "maintain") or role.get("name") in PRIVILEGED_ORG_ROLES
                      or any(p.startswith(("write_organization", "admin_")) for p in perms))
        yield EntitlementRecord(rref, org_ref, f"role:{role['name']}", f"{role['name']} in {login}",
                                role.get("description"), purpose="permission", privileged=privileged,
                                attributes={**org_attrs, "kind": "org_role", "role_id": role["id"],
                                            "role_name": role["name"], "base_role": role.get("base_role"),
                                            "permissions": perms, "source": role.get("source")}, part=part)
        for user in role.get("users") or []:
            if user.get("assignment", "direct") in ("direct", "mixed"):
                yield GrantRecord(rref, str(user["id"]), attributes={"login": user["login"]}, part=part)
        for team in role.get("teams") or []:
            if int(team["id"]) in team_ref and team.get("assignment", "direct") in ("direct", "mixed"):
                yield GrantRecord(rref, team_ref[int(team["id"])], principal_type="resource",
                                  attributes={"team_slug": team["slug"]}, part=part)

    # repositories
    custom = {r["name"]: r for r in snap.repo_roles}
    archived: set[int] = set()
    repo_names: dict[int, str] = {}
    for repo in snap.repos:
        rid = int(repo["databaseId"])
        repo_names[rid] = repo["name"]
        if repo.get("isArchived"):
            archived.add(rid)
            if skip_archived:
                continue
        ref = f"repo:{rid}"
        collabs = (repo.get("collaborators") or {}).get("edges") or []
        roles = [_collaborator_role(e, rid) for e in collabs]
        owners = tuple(str(e["node"]["databaseId"]) for e, r in zip(collabs, roles, strict=True)
                       if r == "admin" or custom.get(r, {}).get("base_role") == "admin")
        yield ResourceRecord(
            external_id=ref, type="github_repo", name=repo.get("nameWithOwner") or f"{login}/{repo['name']}",
            parent_ref=org_ref, owner_refs=owners,
            attributes={"org": login, "repo": repo["name"], "archived": bool(repo.get("isArchived")),
                        "private": bool(repo.get("isPrivate")), "fork": bool(repo.get("isFork")),
                        "visibility": (repo.get("visibility") or "").lower() or None}, part=part)
        yield from _repo_entitlements(login, repo["name"], ref, custom, part)
        for e, role in zip(collabs, roles, strict=True):
            user = e["node"]
            yield GrantRecord(f"{ref}:{role}", str(user["databaseId"]),
                              attributes={"login": user["login"], "affiliation": "direct"}, part=part)
    # team access to repositories (REST /teams/{slug}/repos; role_name includes custom roles)
    for tid, repos in snap.team_repos.items():
        if tid not in team_ref:
            continue
        for repo in repos:
            rid = int(repo["id"])
            if rid not in repo_names or (skip_archived and rid in archived):
                continue
            role = normalize_role(repo.get("role_name") or _role_from_permissions(repo.get("permissions") or {}))
            yield GrantRecord(f"repo:{rid}:{role}", team_ref[tid], principal_type="resource",
                              attributes={"team_slug": team_slug[tid]}, part=part)


def _repo_entitlements(org: str, name: str, ref: str, custom: Mapping[str, Mapping[str, Any]],
                       part: str) -> Iterator[EntitlementRecord]:
    attrs = {"org": org, "repo": name, "kind": "repo"}
    for role in REPO_ROLES:
        yield EntitlementRecord(f"{ref}:{role}", ref, role, f"{role} on {org}/{name}", purpose="permission",
                                privileged=role == "admin", attributes={**attrs, "role": role}, part=part)
    for cname, spec in custom.items():
        yield EntitlementRecord(f"{ref}:{cname}", ref, cname, f"{cname} on {org}/{name}",
                                spec.get("description"), purpose="permission",
                                privileged=spec.get("base_role") == "admin",
                                attributes={**attrs, "role": cname, "custom": True, "base_role": spec.get("base_role")},
                                part=part)


ROLE_NAMES = {"read": "pull", "write": "push", "pull": "pull", "push": "push", "triage": "triage",
              "maintain": "maintain", "admin": "admin"}


def normalize_role(role_name: str) -> str:
    """GitHub's role_name says read/write where permissions say pull/push; custom role names stay as they are."""
    return ROLE_NAMES.get(role_name.lower(), role_name)


def _collaborator_role(edge: Mapping[str, Any], repo_id: int) -> str:
    for src in edge.get("permissionSources") or []:
        source = src.get("source") or {}
        if source.get("__typename") == "Repository" and int(source.get("databaseId") or -1) == repo_id \
                and src.get("roleName"):
            return normalize_role(str(src["roleName"]))
    if edge.get("role_name"):  # REST collaborator payload
        return normalize_role(edge["role_name"])
    return GQL_ROLE.get(str(edge.get("permission") or "").upper(), "pull")


def _role_from_permissions(perms: Mapping[str, Any]) -> str:
    for role in reversed(REPO_ROLES):
        if perms.get(role):
            return role
    return "pull"


# --- the connector ---------------------------------------------------------------------------------


class GitHubConnector(BaseConnector):
    kind: ClassVar[str] = "github"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("orgs", "organization logins to read (comma-separated)", required=True, type=list),
        Setting("api_url", "REST API base: https://api.github.com, or https://HOST/api/v3 for GitHub "
                "Enterprise Server", default=DEFAULT_API),
        Setting("skip_archived", "leave archived repositories out", default=False, type=bool),
        Setting("concurrency", "requests in flight at once (1-16)", default=4, type=int),
        Setting("app_id", "GitHub App ID (with the private_key secret)"),
        Setting("installation_id", "the App's installation ID (with the private_key secret)", type=int),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("private_key", "the GitHub App's private key (PEM)"),
        Setting("token", "a fine-grained or classic personal access token, instead of a GitHub App"),
    )

    token_refresh_margin: float = 300.0  # refresh an installation token this long before it expires

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not settings.get("orgs"):
            raise ValueError("setting 'orgs' needs at least one organization login")
        require_https(str(settings.get("api_url") or DEFAULT_API), "api_url")
        concurrency = int(settings.get("concurrency") or 4)
        if not 1 <= concurrency <= 16:
            raise ValueError("setting 'concurrency' must be between 1 and 16")
        if secrets.get("private_key"):
            if not settings.get("app_id") or not settings.get("installation_id"):
                raise ValueError("a GitHub App needs settings 'app_id' and 'installation_id' with the private_key secret")
            if "PRIVATE KEY" not in secrets["private_key"]:
                raise ValueError("secret 'private_key' must be the App's PEM private key (-----BEGIN ... PRIVATE KEY-----)")
        elif not secrets.get("token"):
            raise ValueError("a github source needs the secret 'private_key' (GitHub App, with app_id and "
                             "installation_id) or the secret 'token'")

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client: HttpClient | None = None
        self._app_client: HttpClient | None = None
        super().__init__(settings, secrets)
        self.check_config(self.settings, self.secrets)
        orgs = self.settings["orgs"]
        self.orgs = [o.strip() for o in (orgs.split(",") if isinstance(orgs, str) else orgs) if o.strip()]
        self.api_url = require_https(str(self.settings.get("api_url") or DEFAULT_API), "api_url")
        self.graphql_url = graphql_url(self.api_url)
        self.skip_archived = bool(self.settings.get("skip_archived"))
        self.concurrency = int(self.settings.get("concurrency") or 4)
        self._token_lock = threading.Lock()
        self._installation_token: str | None = None
        self._token_expires = 0.0
        self._token_lifetime = 3600.0
        self.token_refreshes = 0
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        budgets = {"budget": github_budget, "budget_header": "x-ratelimit-resource", "follow_redirects": True}
        self._client = HttpClient(self.api_url, headers=headers, auth_header=self._auth_header,
                                  max_concurrency=self.concurrency, rate_limit_on_403=True, default_wait=60.0,
                                  sleep=sleep, **budgets)
        if self.secrets.get("private_key"):
            self._app_client = HttpClient(self.api_url, headers=headers, max_concurrency=1,
                                          rate_limit_on_403=True, default_wait=60.0, sleep=sleep, **budgets)

    # -- counting ------------------------------------------------------------------------------------
    @property
    def calls(self) -> int:  # type: ignore[override]
        return (self._client.calls if self._client else 0) + (self._app_client.calls if self._app_client else 0)

    @calls.setter
    def calls(self, value: int) -> None:  # BaseConnector initialises it; the clients count
        pass

    @property
    def client(self) -> HttpClient:
        assert self._client is not None
        return self._client

    def close(self) -> None:
        if self._client:
            self._client.close()
        if self._app_client:
            self._app_client.close()

    # -- auth ----------------------------------------------------------------------------------------
    def _app_jwt(self) -> str:
        now = int(time.time())
        payload = {"iat": now - 60, "exp": now + 540, "iss": str(self.settings["app_id"])}
        try:
            token = JsonWebToken(["RS256"]).encode({"alg": "RS256", "typ": "JWT"}, payload, self.secrets["private_key"])
        except Exception as exc:  # a malformed key: say so without echoing it
            raise ConnectorError(f"the GitHub App private key could not sign a JWT ({type(exc).__name__})") from None
        return token.decode() if isinstance(token, bytes) else token

    def _refresh_installation_token(self) -> None:
        assert self._app_client is not None
        url = f"/app/installations/{int(self.settings['installation_id'])}/access_tokens"
        try:
            response = self._app_client.request("POST", url, headers={"Authorization": f"Bearer {self._app_jwt()}"})
        except HttpError as exc:
            if exc.status in (401, 403, 404):
                raise ConnectorError(
                    f"GitHub refused the App installation token (HTTP {exc.status}: {_message(exc)}); check app_id, "
                    "installation_id and the private key, and that the App is installed on the organization"
                ) from None
            raise
        body = response.json()
        expires = _parse_time(body.get("expires_at"))
        now = time.time()
        self._installation_token = body["token"]
        self._token_expires = expires.timestamp() if expires else now + 3600
        self._token_lifetime = max(self._token_expires - now, 1.0)
        self.token_refreshes += 1

    def _auth_header(self) -> dict[str, str]:
        token = self.secrets.get("token")
        if token and not self.secrets.get("private_key"):
            return {"Authorization": f"Bearer {token}"}
        with self._token_lock:
            margin = min(self.token_refresh_margin, self._token_lifetime * 0.2)
            if self._installation_token is None or time.time() >= self._token_expires - margin:
                self._refresh_installation_token()
            return {"Authorization": f"Bearer {self._installation_token}"}

    def _invalidate_token(self) -> None:
        with self._token_lock:
            self._installation_token = None

    # -- the dumb HTTP layer ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any):
        try:
            return self.client.request(method, path, **kwargs)
        except HttpError as exc:
            if exc.status == 401 and self._app_client is not None:
                self._invalidate_token()  # an installation token revoked or expired early: get a new one once
                return self.client.request(method, path, **kwargs)
            raise

    def _rest_list(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        out: list[Any] = []
        query = {"per_page": PER_PAGE, **dict(params or {})}
        try:
            for page in self.client.paginate(path, query):
                out.extend(page)
        except HttpError as exc:
            if exc.status == 401 and self._app_client is not None:
                self._invalidate_token()
                out = []
                for page in self.client.paginate(path, query):
                    out.extend(page)
            else:
                raise
        return out

    def _graphql(self, query: str, variables: Mapping[str, Any], name: str) -> dict[str, Any]:
        for attempt in range(5):
            response = self._request("POST", self.graphql_url, json={"query": query, "variables": dict(variables)})
            body = response.json()
            errors = body.get("errors") or []
            if errors and any(e.get("type") == "RATE_LIMITED" for e in errors) and attempt < 4:
                reset = response.headers.get("x-ratelimit-reset")
                wait = max(float(reset) - time.time(), 1.0) if reset else 60.0
                self.client.sleep(min(wait, self.client.max_wait))
                continue
            if errors:
                raise GraphQLError(errors, name)
            return body.get("data") or {}
        raise ConnectorError(f"GitHub GraphQL {name}: still rate limited after several waits")

    def _graphql_pages(self, query: str, variables: Mapping[str, Any], name: str,
                       path: Callable[[dict[str, Any]], dict[str, Any] | None],
                       after: str | None = None) -> Iterator[dict[str, Any]]:
        """Each page of a connection, following `pageInfo.endCursor` while `hasNextPage`. A cursor that
        repeats (or is missing while more pages are announced: paging would start over), or more pages
        than the client's cap, raise PagingError naming the connection."""
        guard = PageGuard(f"GitHub GraphQL {name} ({', '.join(f'{k}={v}' for k, v in variables.items())})",
                          self.client.max_pages, first=after)
        while True:
            data = self._graphql(query, {**variables, "after": after}, name)
            conn = path(data)
            if conn is None:
                return
            yield conn
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")
            if not cursor:
                raise PagingError(f"{guard.what}: hasNextPage without an endCursor after {guard.pages:,} pages; "
                                  "paging stopped (it would start over), nothing was changed")
            after = guard.check(cursor)

    def validate(self) -> None:
        for org in self.orgs:
            try:
                self._request("GET", f"/orgs/{quote(org)}")
            except HttpError as exc:
                raise ConnectorError(_explain(exc, org)) from None

    # -- fetching one organization -------------------------------------------------------------------
    def fetch_org(self, login: str) -> OrgSnapshot:
        o = quote(login)
        org = self._request("GET", f"/orgs/{o}").json()
        snap = OrgSnapshot(login=org.get("login") or login, org=org)

        def members() -> None:
            def read(query: str) -> None:
                snap.members.clear()
                for conn in self._graphql_pages(query, {"login": login}, "members",
                                                lambda d: (d.get("organization") or {}).get("membersWithRole")):
                    snap.members.extend(conn.get("edges") or [])
            try:
                read(MEMBERS_QUERY)
            except GraphQLError as exc:
                if "organizationVerifiedDomainEmails" not in str(exc):
                    raise
                snap.notes.append(f"{login}: verified-domain e-mails are not available ({exc}); accounts link by "
                                  "SAML identity or public e-mail")
                read(MEMBERS_QUERY_PLAIN)

        def saml() -> None:
            try:
                nodes: list[dict[str, Any]] = []
                found = False
                for conn in self._graphql_pages(
                        SAML_QUERY, {"login": login}, "SAML identities",
                        lambda d: ((d.get("organization") or {}).get("samlIdentityProvider") or {}).get("externalIdentities")):
                    found = True
                    nodes.extend(e["node"] for e in conn.get("edges") or [] if e.get("node"))
                if found:
                    snap.saml = nodes
                else:
                    snap.notes.append(f"{login}: SAML single sign-on is not enabled (or not visible to these "
                                      "credentials); accounts link by public e-mail or login")
            except (GraphQLError, HttpError) as exc:
                snap.notes.append(f"{login}: SAML identities are not available ({_short(exc)}); accounts link by "
                                  "public e-mail or login")

        def two_factor() -> None:
            try:
                users = self._rest_list(f"/orgs/{o}/members", {"filter": "2fa_disabled"})
                snap.two_factor_disabled = {int(u["id"]) for u in users}
            except HttpError as exc:
                if exc.status not in (403, 404, 422):
                    raise
                snap.notes.append(f"{login}: two-factor status is only shown to organization owners ({_short(exc)})")

        def outside() -> None:
            snap.outside_collaborators = self._rest_list(f"/orgs/{o}/outside_collaborators")

        def invitations() -> None:
            try:
                snap.invitations = self._rest_list(f"/orgs/{o}/invitations")
            except HttpError as exc:
                if exc.status not in (403, 404):
                    raise
                snap.notes.append(f"{login}: pending invitations are not visible to these credentials ({_short(exc)})")

        def org_roles() -> None:
            try:
                roles = self._request("GET", f"/orgs/{o}/organization-roles").json().get("roles") or []
                for role in roles:
                    role["users"] = self._rest_list(f"/orgs/{o}/organization-roles/{role['id']}/users")
                    role["teams"] = self._rest_list(f"/orgs/{o}/organization-roles/{role['id']}/teams")
                snap.org_roles = roles
            except HttpError as exc:
                if exc.status not in (403, 404, 422):
                    raise
                snap.notes.append(f"{login}: organization roles are not available ({_short(exc)}); the plan may "
                                  "lack custom organization roles")

        def repo_roles() -> None:
            try:
                snap.repo_roles = self._request("GET", f"/orgs/{o}/custom-repository-roles").json().get("custom_roles") or []
            except HttpError as exc:
                if exc.status not in (403, 404, 422):
                    raise
                snap.notes.append(f"{login}: custom repository roles are not available ({_short(exc)})")

        def teams() -> None:
            for conn in self._graphql_pages(TEAMS_QUERY, {"login": login}, "teams",
                                            lambda d: (d.get("organization") or {}).get("teams")):
                snap.teams.extend(conn.get("nodes") or [])

        def repos() -> None:
            for conn in self._graphql_pages(REPOS_QUERY, {"login": login}, "repositories",
                                            lambda d: (d.get("organization") or {}).get("repositories")):
                snap.repos.extend(conn.get("nodes") or [])

        # follow-ups, once what they follow is read: big teams and big repositories are paged on their own,
        # and every team's repositories are read by REST
        def teams_read(_: None) -> Iterator[Task]:
            for team in snap.teams:
                if (((team.get("members") or {}).get("pageInfo")) or {}).get("hasNextPage"):
                    yield Task(("team members", team.get("slug")), lambda t=team: self._all_team_members(login, t))

        def repos_read(_: None) -> Iterator[Task]:
            for repo in snap.repos:
                if (((repo.get("collaborators") or {}).get("pageInfo")) or {}).get("hasNextPage"):
                    yield Task(("repository collaborators", repo.get("name")),
                               lambda r=repo: self._all_direct_collaborators(login, r))
            for team in snap.teams:  # complete: the fan-out is ordered and `teams` comes before `repos`
                tid = int(team["databaseId"])
                yield Task(("team repositories", tid),
                           lambda t=team: self._rest_list(f"/orgs/{o}/teams/{quote(t['slug'])}/repos"),
                           then=lambda repos, tid=tid: _store(snap.team_repos, tid, repos))

        tasks = [Task("members", members), Task("teams", teams, then=teams_read),
                 Task("repos", repos, then=repos_read)] + [Task(fn.__name__, fn) for fn in (
                     saml, two_factor, outside, invitations, org_roles, repo_roles)]
        # ordered: the first error in this order is the one reported, run after run
        for _ in fan_out(tasks, workers=self.concurrency, ordered=True, name="github"):
            pass
        return snap

    def _all_team_members(self, login: str, team: dict[str, Any]) -> None:
        """A team with more than 100 members: page its members by GraphQL on its own."""
        edges: list[dict[str, Any]] = []
        for conn in self._graphql_pages(TEAM_MEMBERS_QUERY, {"login": login, "slug": team["slug"]}, "team members",
                                        lambda d: ((d.get("organization") or {}).get("team") or {}).get("members")):
            edges.extend(conn.get("edges") or [])
        team["members"] = {"edges": edges, "pageInfo": {"hasNextPage": False}}

    def _all_direct_collaborators(self, login: str, repo: dict[str, Any]) -> None:
        """A repository with more than 100 direct collaborators: the next pages by GraphQL, from the first
        page's cursor. Not REST: its `role_name` and `permissions` are the highest role from every source
        (teams, the organization's base permission), which would overstate the direct grant."""
        first = repo.get("collaborators") or {}
        edges = list(first.get("edges") or [])
        after = (first.get("pageInfo") or {}).get("endCursor")
        for conn in self._graphql_pages(REPO_COLLABORATORS_QUERY, {"owner": login, "name": repo["name"]},
                                        "repository collaborators",
                                        lambda d: (d.get("repository") or {}).get("collaborators"), after=after):
            edges.extend(conn.get("edges") or [])
        repo["collaborators"] = {"edges": edges, "pageInfo": {"hasNextPage": False}}

    def sync(self) -> Iterator[Record]:
        seen: set[str] = set()
        for login in self.orgs:
            part = f"github:{login}"
            try:
                snap = self.fetch_org(login)
            except HttpError as exc:
                if exc.status == 401:
                    raise ConnectorError(_explain(exc, login)) from None
                yield PartFailed(part, _explain(exc, login))
                continue
            except (GraphQLError, PagingError) as exc:
                yield PartFailed(part, str(exc))
                continue
            for message in snap.notes:
                yield Note(message)
            yield from org_records(snap, skip_archived=self.skip_archived, seen_accounts=seen)

    # -- revoke and undo -----------------------------------------------------------------------------
    def revoke(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=False)

    def grant(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=True)

    def _change(self, g: GrantRef, dry_run: bool, undo: bool) -> RevokeResult:
        attrs = {**dict(g.resource_attributes or {}), **dict(g.entitlement_attributes or {})}
        kind = attrs.get("kind") or _kind_from_ref(g.entitlement_ref)
        org = attrs.get("org") or (g.part or "").removeprefix("github:")
        if not org:
            raise RevokeRefused(f"cannot tell which organization {g.entitlement_ref} belongs to")
        o = quote(org)
        gattrs = dict(g.grant_attributes or {})
        login = g.principal_login or gattrs.get("login")
        if g.principal_type == "resource":
            slug = gattrs.get("team_slug")
            if not slug:
                raise RevokeRefused(f"cannot tell which team {g.principal_ref} is")
            if kind == "team_member":
                raise RevokeRefused(
                    f"team {org}/{slug} holds this access because it is nested under "
                    f"{org}/{attrs.get('team_slug')}; change the team's parent in GitHub's team settings")
            if kind == "repo":
                path = f"/orgs/{o}/teams/{quote(slug)}/repos/{o}/{quote(attrs['repo'])}"
                if undo:
                    return self._do(dry_run, "PUT", path, {"permission": attrs.get("role") or g.entitlement_name})
                # "Check team permissions for a repository": 204 with access, 404 without
                return self._do(dry_run, "DELETE", path, gone=lambda: self._missing(path))
            if kind == "org_role":
                path = f"/orgs/{o}/organization-roles/teams/{quote(slug)}/{attrs['role_id']}"
                listing = f"/orgs/{o}/organization-roles/{attrs['role_id']}/teams"
                return self._do(dry_run, "PUT" if undo else "DELETE", path,
                                gone=None if undo else lambda: self._absent(listing, "slug", slug))
            raise RevokeRefused(f"revoking {kind or g.entitlement_ref} from a team is not supported")

        if g.principal_ref.startswith("invitation:"):
            inv_id = int(gattrs.get("invitation_id") or g.principal_ref.split(":", 1)[1])
            if undo:
                body: dict[str, Any] = {"role": {"org_admin": "admin", "org_billing_manager": "billing_manager"}
                                        .get(kind or "", "direct_member")}
                email = gattrs.get("email") or (login if login and "@" in login else None)
                if email:
                    body["email"] = email
                elif login:
                    user = self._request("GET", f"/users/{quote(login)}").json()
                    body["invitee_id"] = user["id"]
                else:
                    raise RevokeRefused("the cancelled invitation has neither a login nor an e-mail to invite again")
                return self._do(dry_run, "POST", f"/orgs/{o}/invitations", body)
            return self._do(dry_run, "DELETE", f"/orgs/{o}/invitations/{inv_id}",
                            gone=lambda: self._absent(f"/orgs/{o}/invitations", "id", inv_id))

        if not login:
            raise RevokeRefused(f"account {g.principal_ref} has no GitHub login")
        u = quote(login)
        if kind == "org_member":
            if undo:
                return self._do(dry_run, "PUT", f"/orgs/{o}/memberships/{u}", {"role": "member"})
            role = self._org_role_of(o, u)
            if role is None:
                return RevokeResult((), dry_run, already_gone=True, detail=f"{login} is not a member of {org}")
            if role == "admin":
                self._refuse_last_owner(o, org, login)
            return self._do(dry_run, "DELETE", f"/orgs/{o}/members/{u}", gone=lambda: self._org_role_of(o, u) is None)
        if kind == "org_admin":
            if undo:
                return self._do(dry_run, "PUT", f"/orgs/{o}/memberships/{u}", {"role": "admin"})
            role = self._org_role_of(o, u)
            if role != "admin":
                return RevokeResult((), dry_run, already_gone=True, detail=f"{login} is not an owner of {org}")
            self._refuse_last_owner(o, org, login)
            return self._do(dry_run, "PUT", f"/orgs/{o}/memberships/{u}", {"role": "member"},
                            detail=f"{login} stays a member of {org} without owner rights",
                            gone=lambda: self._org_role_of(o, u) != "admin")
        if kind == "outside_collaborator":
            if undo:
                raise RevokeRefused(
                    f"GitHub has no single call that restores {login} as an outside collaborator; add them again "
                    "to the repositories they need (each repository grant can be restored on its own)")
            return self._do(dry_run, "DELETE", f"/orgs/{o}/outside_collaborators/{u}",
                            gone=lambda: self._absent(f"/orgs/{o}/outside_collaborators", "login", login))
        if kind == "org_role":
            path = f"/orgs/{o}/organization-roles/users/{u}/{attrs['role_id']}"
            listing = f"/orgs/{o}/organization-roles/{attrs['role_id']}/users"
            return self._do(dry_run, "PUT" if undo else "DELETE", path,
                            gone=None if undo else lambda: self._absent(listing, "login", login))
        if kind == "team_member":
            path = f"/orgs/{o}/teams/{quote(attrs['team_slug'])}/memberships/{u}"
            if undo:
                return self._do(dry_run, "PUT", path, {"role": "member"})
            return self._do(dry_run, "DELETE", path, gone=lambda: self._missing(path))
        if kind == "team_maintainer":
            path = f"/orgs/{o}/teams/{quote(attrs['team_slug'])}/memberships/{u}"
            if undo:
                return self._do(dry_run, "PUT", path, {"role": "maintainer"})
            try:
                current = self._request("GET", path).json().get("role")
            except HttpError as exc:
                if exc.status == 404:
                    return RevokeResult((), dry_run, already_gone=True, detail=f"{login} is not in the team")
                raise
            if current != "maintainer":
                return RevokeResult((), dry_run, already_gone=True, detail=f"{login} is no longer a maintainer")
            return self._do(dry_run, "PUT", path, {"role": "member"}, detail=f"{login} stays a team member",
                            gone=lambda: self._team_role_of(path) != "maintainer")
        if kind == "repo":
            path = f"/repos/{o}/{quote(attrs['repo'])}/collaborators/{u}"
            if undo:
                return self._do(dry_run, "PUT", path, {"permission": attrs.get("role") or g.entitlement_name})
            # the follow-up read lists direct collaborators only: "check if a user is a collaborator" (GET
            # .../collaborators/{username}) also answers 204 for access through teams or the base permission
            return self._do(dry_run, "DELETE", path, gone=lambda: self._absent(
                f"/repos/{o}/{quote(attrs['repo'])}/collaborators", "login", login, {"affiliation": "direct"}))
        raise RevokeRefused(f"revoking {g.entitlement_ref} is not supported by the GitHub connector")

    def _org_role_of(self, o: str, u: str) -> str | None:
        try:
            body = self._request("GET", f"/orgs/{o}/memberships/{u}").json()
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return body.get("role") if body.get("state", "active") == "active" else None

    def _refuse_last_owner(self, o: str, org: str, login: str) -> None:
        owners = [m["login"].lower() for m in self._rest_list(f"/orgs/{o}/members", {"role": "admin"})]
        if [x for x in owners if x != login.lower()]:
            return
        raise RevokeRefused(f"{login} is the last owner of the {org} organization; make someone else an owner first")

    def _missing(self, path: str) -> bool:
        """A follow-up read of one object: True when GitHub answers 404."""
        try:
            self._request("GET", path)
        except HttpError as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def _team_role_of(self, path: str) -> str | None:
        try:
            body = self._request("GET", path).json()
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return body.get("role")

    def _absent(self, path: str, key: str, value: Any, params: Mapping[str, Any] | None = None) -> bool:
        """A follow-up read of a listing: True when no item has `key` equal to `value` (logins: any case)."""
        want = str(value).lower()
        return not any(str(item.get(key)).lower() == want for item in self._rest_list(path, params))

    def _do(self, dry_run: bool, method: str, path: str, body: Mapping[str, Any] | None = None,
            detail: str = "", gone: Callable[[], bool] | None = None) -> RevokeResult:
        """One change. A revoke (`gone` given) is `done` only when the follow-up read shows the access gone;
        a re-grant that GitHub answers with an invitation is `invited`."""
        call = f"{method} {path}" + (f" {_compact(body)}" if body else "")
        if dry_run:
            return RevokeResult((call,), True, detail=detail)
        try:
            response = self._request(method, path, json=dict(body) if body is not None else None)
        except HttpError as exc:
            if exc.status == 404 and method == "DELETE":
                return RevokeResult((call,), False, already_gone=True, detail="already gone")
            raise ConnectorError(f"{method} {path} failed: HTTP {exc.status}: {_message(exc)}") from None
        moved = f" (GitHub redirected it to {urlsplit(str(response.url)).path})" \
            if urlsplit(str(response.url)).path.rstrip("/") != urlsplit(self.client.base_url + path).path.rstrip("/") else ""
        if gone is not None:
            try:
                confirmed = gone()
            except (HttpError, PagingError) as exc:
                return RevokeResult((call,), False, detail=f"{detail} GitHub accepted {method} {path}{moved}; the "
                                    f"follow-up read failed ({_short(exc)})".strip(), outcome="unconfirmed")
            if not confirmed:
                return RevokeResult((call,), False, outcome="unconfirmed", detail=(
                    f"{detail} GitHub accepted {method} {path}{moved} (HTTP {response.status_code}) but a follow-up "
                    "read still shows the access").strip())
            return RevokeResult((call,), False, detail=(detail + moved).strip())
        if _invited(method, response):
            who = path.rsplit("/", 1)[-1] if method == "PUT" else (body or {}).get("email") or "the person"
            return RevokeResult((call,), False, outcome="invited", detail=(
                f"GitHub answered {method} {path}{moved} with an invitation (HTTP {response.status_code}); {who} "
                "has the access only after accepting it").strip())
        return RevokeResult((call,), False, detail=(detail + moved).strip())


def _store(into: dict[int, Any], key: int, value: Any) -> tuple[()]:
    """Keep a follow-up's result (a fan-out `then` that emits no records)."""
    into[key] = value
    return ()


def _invited(method: str, response: Any) -> bool:
    """GitHub answers a grant with an invitation: 201 from PUT .../collaborators/{username} ("Response when a
    new invitation is created"), a membership in `state: pending` (PUT /orgs/{org}/memberships/{username},
    PUT /orgs/{org}/teams/{slug}/memberships/{username}), and every POST /orgs/{org}/invitations."""
    if method == "POST" and "/invitations" in str(response.url):
        return True
    if response.status_code == 201 and "/collaborators/" in str(response.url):
        return True
    if response.status_code == 200 and "/memberships/" in str(response.url):
        try:
            return (response.json() or {}).get("state") == "pending"
        except ValueError:
            return False
    return False


def _kind_from_ref(ref: str) -> str | None:
    if ref.startswith("repo:"):
        return "repo"
    if ref.startswith("team:"):
        return "team_maintainer" if ref.endswith(":maintainer") else "team_member"
    if ref.startswith("org:"):
        tail = ref.split(":", 2)[2] if ref.count(":") >= 2 else ""
        if tail == "admin":
            return "org_admin"
        if tail == "member":
            return "org_member"
        if tail == "outside_collaborator":
            return "outside_collaborator"
        if tail == "billing_manager":
            return "org_billing_manager"
        if tail.startswith("role:"):
            return "org_role"
    return None


def _compact(body: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in body.items())


def _message(exc: HttpError) -> str:
    if isinstance(exc.body, dict) and exc.body.get("message"):
        return str(exc.body["message"])[:200]
    return str(exc.body)[:200]


def _short(exc: Exception) -> str:
    if isinstance(exc, HttpError):
        return f"HTTP {exc.status}: {_message(exc)}"
    return str(exc)[:200]


def _explain(exc: HttpError, org: str) -> str:
    where = urlsplit(exc.url).path
    if exc.status == 401:
        return f"GitHub rejected the credentials (HTTP 401: {_message(exc)}); check the token or the App key"
    if exc.status == 404 and where.rstrip("/").endswith(f"/orgs/{org}"):
        return (f"organization {org!r} was not found, or the token / App installation cannot see it "
                "(is the App installed on it?)")
    if exc.status == 403:
        return (f"GitHub refused {exc.method} {where} (HTTP 403: {_message(exc)}); the token or App lacks a "
                "permission Attest needs (see docs/connectors/github.md)")
    return f"{org}: {exc.method} {where} failed: HTTP {exc.status}: {_message(exc)}"
