"""IAM of one account: GetAccountAuthorizationDetails, the credential report, and the per-user calls
that stand in for the report (no report, or users created after it was generated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from attest.connectors.aws.errors import describe, error_code
from attest.connectors.aws.sessions import PAGE
from attest.connectors.aws.transforms import CredentialRow, _iso, _parse_dt, parse_credential_report

CREDENTIAL_REPORT_MAX_AGE = timedelta(hours=4)  # AWS regenerates at most every 4 hours anyway
CREDENTIAL_REPORT_WAIT = 90.0  # seconds to wait for a report being generated before the per-user fallback


class IamMixin:
    """Reads IAM through a client of the account (`iam`), paging with SessionsMixin's `_pages`."""

    _pages: Callable[..., Iterator[dict[str, Any]]]
    _paginate: Callable[..., Iterator[dict[str, Any]]]

    def _read_iam(self, iam) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [],
                                                   "Policies": []}
        for page in self._paginate(iam, "get_account_authorization_details", {"PageSize": PAGE["iam"]},
                                   Filter=["User", "Group", "Role", "LocalManagedPolicy"]):
            for key in merged:
                merged[key].extend(page.get(key, []))
        return merged

    def _read_credential_report(self, iam) -> tuple[dict[str, CredentialRow] | None, str | None]:
        """The credential report, reusing one generated in the last 4 hours. (None, why) when unavailable.

        GetCredentialReport first (a recent report costs one call); else GenerateCredentialReport once and
        poll GetCredentialReport until the new report is there.
        """
        waiting = ("ReportNotPresent", "ReportExpired", "ReportInProgress")

        def fresh(resp: Mapping[str, Any]) -> bool:
            when = _parse_dt(resp.get("GeneratedTime"))
            return when is None or datetime.now(UTC) - when < CREDENTIAL_REPORT_MAX_AGE

        try:
            resp = iam.get_credential_report()
            if fresh(resp):
                return parse_credential_report(resp["Content"]), None
        except ClientError as exc:
            if error_code(exc) not in waiting:
                return None, describe(exc, operation=False)
        try:
            state = iam.generate_credential_report().get("State")
        except ClientError as exc:
            return None, describe(exc, operation=False)
        deadline = time.monotonic() + CREDENTIAL_REPORT_WAIT
        delay = 0.0 if state == "COMPLETE" else 0.25
        while True:
            if delay:
                time.sleep(delay)
            try:  # the report we asked for (AWS answers ReportInProgress until it is ready)
                return parse_credential_report(iam.get_credential_report()["Content"]), None
            except ClientError as exc:
                if error_code(exc) not in waiting:
                    return None, describe(exc, operation=False)
            if time.monotonic() > deadline:
                return None, f"the credential report was not ready within {CREDENTIAL_REPORT_WAIT:.0f}s"
            delay = min(max(delay * 2, 0.25), 4.0)

    def _per_user_credentials(self, iam, users: list[dict[str, Any]]) -> None:
        """Fallback without the credential report: keys, MFA and console password user by user."""
        now = datetime.now(UTC)
        for u in users:
            name = u["UserName"]
            keys = []
            for k in self._pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=name):
                last = iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"]).get("AccessKeyLastUsed") or {}
                created = _parse_dt(k.get("CreateDate"))
                keys.append({"id": k["AccessKeyId"], "status": k.get("Status"), "created_at": _iso(created),
                             "age_days": (now - created).days if created else None,
                             "last_used_at": _iso(_parse_dt(last.get("LastUsedDate"))),
                             "last_used_service": last.get("ServiceName") if last.get("ServiceName") != "N/A" else None})
            u["_access_keys"] = keys
            u["_mfa"] = any(True for _ in self._pages(iam, "list_mfa_devices", "MFADevices", UserName=name))
            try:
                iam.get_login_profile(UserName=name)
                u["_login_profile"] = True
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                u["_login_profile"] = False

    def _iam_user_in_group(self, iam, user: str, group: str) -> bool | None:
        try:
            return any(g["GroupName"] == group for g in self._pages(iam, "list_groups_for_user", "Groups", UserName=user))
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise

