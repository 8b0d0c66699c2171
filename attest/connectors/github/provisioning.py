"""Revoke and its undo (org membership and roles, team membership, repository access), each
read back: "done" only once a follow-up read shows it, "invited" when GitHub answers with an invitation;
the last owner of an organization is never removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from attest.connectors.base import (
    ChangeRevoker,
    ConnectorError,
    GrantRef,
    RevokeRefused,
    RevokeResult,
)
from attest.connectors.github.client import _message, _short
from attest.connectors.http import HttpError, PagingError
from attest.connectors.managed import managed_elsewhere, refusal


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


class ProvisioningMixin(ChangeRevoker):
    """Revoke and undo of GitHubConnector, each confirmed by a follow-up read."""

    # -- revoke and undo -----------------------------------------------------------------------------
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
        if kind in ("team_member", "team_maintainer") and not undo:
            # a team synchronised with IdP groups: GitHub refuses membership changes (403) and the IdP would
            # set them back; the change belongs in the IdP group
            found = managed_elsewhere(g.grant_attributes, g.entitlement_attributes, g.resource_attributes)
            if found is not None:
                raise refusal(found, login or g.principal_ref, f"{org}/{attrs.get('team_slug')}")
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
