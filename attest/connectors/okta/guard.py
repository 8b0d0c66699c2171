"""The last super administrator, which a revoke never removes: every path (direct role or group
holding the role) by which someone is SUPER_ADMIN, and the check that a change leaves one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from attest.connectors.base import RevokeRefused


def _drop(paths: dict[str, set[tuple[str, str]]], uid: str, path: tuple[str, str]) -> dict[str, set[tuple[str, str]]]:
    out = {u: set(p) for u, p in paths.items()}
    if uid in out:
        out[uid].discard(path)
    return out


def _drop_group(paths: dict[str, set[tuple[str, str]]], gid: str) -> dict[str, set[tuple[str, str]]]:
    return {u: {p for p in ps if p != ("group", gid)} for u, ps in paths.items()}


class GuardMixin:
    """The last SUPER_ADMIN path, which a change never removes."""

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
