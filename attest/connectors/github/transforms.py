"""Pure transforms of the fetched payloads (an OrgSnapshot) into records, unit-tested on recorded
payloads; repository roles as GitHub names them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from attest.connectors.base import (
    AccountRecord,
    EntitlementRecord,
    GrantRecord,
    Note,
    Record,
    ResourceRecord,
)
from attest.connectors.managed import ManagedKind, emit
from attest.connectors.timestamps import parse_timestamp

REPO_ROLES = ("pull", "triage", "push", "maintain", "admin")
GQL_ROLE = {"READ": "pull", "TRIAGE": "triage", "WRITE": "push", "MAINTAIN": "maintain", "ADMIN": "admin"}
PRIVILEGED_ORG_ROLES = {"all_repo_admin", "security_manager", "all_repo_maintain"}


# GitHub's organization invitation roles (`organization-invitation.role`: direct_member, admin,
# billing_manager, hiring_manager, reinstate; https://docs.github.com/en/rest/orgs/members#list-pending-organization-invitations).
# A billing manager is not a member and has no repository access ("Billing managers ... do not have access
# to the organization's repositories"; https://docs.github.com/en/organizations/managing-peoples-access-to-your-organization-with-roles/adding-a-billing-manager-to-your-organization):
# their own entitlement. `reinstate` restores a former member's membership. hiring_manager is not a
# membership and GitHub documents no access for it: skipped with a note.
INVITATION_ENTITLEMENT = {"admin": "admin", "direct_member": "member", "reinstate": "member",
                          "billing_manager": "billing_manager"}


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
    team_sync: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # team id -> its IdP groups
    notes: list[str] = field(default_factory=list)


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
            status="invited", created_at=parse_timestamp(inv.get("created_at")),
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
        idp_groups = [str(g.get("group_name") or g.get("group_id")) for g in snap.team_sync.get(tid) or []]
        if idp_groups:  # team synchronization: the IdP groups set the team's members
            attrs["idp_groups"] = idp_groups
            attrs.update(emit(ManagedKind.IDP_TEAM_SYNC, ", ".join(idp_groups), "GitHub team synchronization"))
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
