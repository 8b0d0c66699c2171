"""Revoke and its undo (group membership, app assignment, admin role), each read back:
"done" only once a follow-up read shows the change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attest.connectors.base import (
    ChangeRevoker,
    GrantRef,
    RevokeRefused,
    RevokeResult,
)
from attest.connectors.http import HttpError
from attest.connectors.managed import managed_elsewhere, refusal
from attest.connectors.okta.client import MANAGE_SCOPES, PAGE, READ_SCOPES
from attest.connectors.okta.guard import _drop, _drop_group
from attest.connectors.okta.transforms import role_refs


class ProvisioningMixin(ChangeRevoker):
    """Revoke and undo of OktaConnector, each confirmed by a follow-up read."""

    # -- revoke and undo ----------------------------------------------------------------------------------
    def _change(self, ref: GrantRef, dry_run: bool, undo: bool) -> RevokeResult:
        self._scopes = READ_SCOPES[:-1] + MANAGE_SCOPES
        who = ref.principal_login or ref.principal_ref
        ent = ref.entitlement_ref
        if ent.endswith(":member") and ref.principal_type == "account":
            gid, uid = ent[: -len(":member")], ref.principal_ref
            path = f"/api/v1/groups/{gid}/users/{uid}"
            if not undo:
                found = managed_elsewhere(ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
                if found is not None:
                    raise refusal(found, who, f"group {gid}")
                gtype = ref.resource_attributes.get("type")
                if gtype and gtype != "OKTA_GROUP":
                    raise RevokeRefused(f"group {gid} is a {gtype}: Attest changes only OKTA_GROUP memberships")
                if ref.resource_attributes.get("has_admin_privilege") is not False:
                    self._guard_super_admin(lambda paths: _drop(paths, uid, ("group", gid)), who)
            return self._do("PUT" if undo else "DELETE", path, dry_run,
                            confirm=None if undo else lambda: self._still_in_group(gid, uid))
        if ent.endswith(":assignment"):
            aid = ent[: -len(":assignment")]
            if ref.principal_type == "account":
                found = managed_elsewhere(ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
                if found is not None and not undo:
                    raise refusal(found, who, f"app {aid}")
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
