"""What one organization's sync reads (`fetch_org` into an OrgSnapshot): GraphQL for members, teams
and repositories, REST for the rest, each follow-up a fan-out task. HTTP only; records are built in
`transforms`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from attest.connectors.fanout import Task, fan_out
from attest.connectors.github.client import GraphQLError, _short
from attest.connectors.github.queries import (
    MEMBERS_QUERY,
    MEMBERS_QUERY_PLAIN,
    REPO_COLLABORATORS_QUERY,
    REPOS_QUERY,
    SAML_QUERY,
    TEAM_MEMBERS_QUERY,
    TEAMS_QUERY,
)
from attest.connectors.github.transforms import OrgSnapshot
from attest.connectors.http import HttpError


def _store(into: dict[int, Any], key: int, value: Any) -> tuple[()]:
    """Keep a follow-up's result (a fan-out `then` that emits no records)."""
    into[key] = value
    return ()


class ReadersMixin:
    """What one organization's sync reads (HTTP only)."""

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
        self._team_sync(login, snap)
        return snap

    def _team_sync(self, login: str, snap: OrgSnapshot) -> None:
        """Each team's IdP group connections (team synchronization: GET /orgs/{org}/teams/{slug}/team-sync/
        group-mappings, "Members" organization permission (read)). Team sync needs SAML SSO, so an org without
        SAML is not asked; an org without team sync answers the first team with 403 ("This team is not
        externally managed"), and its other teams are not asked: a Note, never a failed sync."""
        if snap.saml is None or not snap.teams:
            return
        o = quote(login)
        teams = sorted(snap.teams, key=lambda t: int(t["databaseId"]))

        def read(team: dict[str, Any]) -> list[dict[str, Any]]:
            path = f"/orgs/{o}/teams/{quote(team['slug'])}/team-sync/group-mappings"
            return list(self._request("GET", path).json().get("groups") or [])

        try:
            snap.team_sync[int(teams[0]["databaseId"])] = read(teams[0])
        except HttpError as exc:
            if exc.status not in (403, 404, 422):
                raise
            snap.notes.append(f"{login}: team synchronization is not available ({_short(exc)}); team "
                              "memberships are taken as managed in GitHub")
            return
        tasks = [Task(("team sync", t["slug"]), lambda t=t: read(t),
                      then=lambda groups, tid=int(t["databaseId"]): _store(snap.team_sync, tid, groups))
                 for t in teams[1:]]
        for _ in fan_out(tasks, workers=self.concurrency, ordered=True, name="github"):
            pass

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
