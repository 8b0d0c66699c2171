"""What one sync reads from Okta beyond plain listings: a group's members and owners, an app's
assignments, the last SSO per user and app from the System Log. HTTP only; the records are built in
`transforms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from attest.connectors.base import Record
from attest.connectors.http import HttpError
from attest.connectors.okta.client import PAGE
from attest.connectors.okta.transforms import SSO_EVENT, app_group_grant, app_user_grant, last_sso


class GroupGone(Exception):
    """The group (or app) was deleted while the sync ran: Okta answers 404 for it now."""


class ReadersMixin:
    """The reads of a sync beyond plain listings (HTTP only)."""

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
