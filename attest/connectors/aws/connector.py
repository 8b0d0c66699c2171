"""The AWS connector: settings, validation, and the sync that puts the readers together.

`AwsConnector` is the readers and changers of the package's modules (each a mixin holding one idea:
sessions, organizations, identity_center, iam, guard, provisioning) plus what only the whole needs: its
settings, `validate`, and `sync`, which reads the accounts concurrently (at most `concurrency` at a time)
and resolves what depends on every account (Identity Center groups' privileged flag, role trust paths).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from attest.connectors.aws.errors import AWS_ERRORS, connector_error, describe
from attest.connectors.aws.guard import GuardMixin
from attest.connectors.aws.iam import IamMixin
from attest.connectors.aws.identity_center import IdentityCenter, IdentityCenterMixin, identity_center_failed
from attest.connectors.aws.organizations import SCP_PART, Org, OrganizationsMixin
from attest.connectors.aws.policies import local_admin_policies
from attest.connectors.aws.provisioning import ProvisioningMixin
from attest.connectors.aws.sessions import SessionsMixin, _Counter
from attest.connectors.aws.transforms import (
    OrgAccount,
    PermissionSetInfo,
    account_part,
    account_resource,
    iam_records,
    identity_center_user,
    org_records,
    scim_managed,
)
from attest.connectors.aws.trust import TRUST_PART, AccountIam, trust_records
from attest.connectors.base import (
    BaseConnector,
    ConnectorError,
    EntitlementRecord,
    GrantRecord,
    Note,
    PartFailed,
    Record,
    ResourceRecord,
    Setting,
)
from attest.connectors.fanout import Task, fan_out
from attest.connectors.http import MAX_PAGES, PagingError

ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ROLE_NAME_RE = re.compile(r"^[\w+=,.@/-]{1,64}$")


class AwsConnector(SessionsMixin, OrganizationsMixin, IdentityCenterMixin, IamMixin, GuardMixin, ProvisioningMixin,
                   BaseConnector):
    kind: ClassVar[str] = "aws"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("region", "AWS region for STS and regional calls", default="us-east-1"),
        Setting("identity_center_region", "region of the IAM Identity Center instance (default: region)"),
        Setting("assume_role_name", "role assumed in each member account (the management account is read with "
                "the base credentials)", default="AttestAudit"),
        Setting("remediation_role_name", "role assumed in member accounts to revoke (default: assume_role_name)"),
        Setting("external_id", "sts:ExternalId the member-account roles require, if any"),
        Setting("accounts", "only these account ids (comma-separated; default: every account)", type=list),
        Setting("endpoint_url", "AWS endpoint override (tests, the sandbox); http only on loopback"),
        Setting("concurrency", "accounts read at the same time", default=8, type=int, bounds=(1, 64)),
        Setting("privileged_policies", "more policy names or ARNs that make a grant privileged (comma-separated)",
                type=list),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("access_key_id", "access key id; leave the secrets empty to use the standard boto3 credential "
                "chain (environment, shared config files, the instance's or task's role)"),
        Setting("secret_access_key", "secret access key (with access_key_id)"),
        Setting("session_token", "session token, for temporary credentials"),
    )

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if bool(secrets.get("access_key_id")) != bool(secrets.get("secret_access_key")):
            raise ValueError("secrets access_key_id and secret_access_key go together: give both or neither "
                             "(neither uses the standard boto3 credential chain)")
        if secrets.get("session_token") and not secrets.get("access_key_id"):
            raise ValueError("secret session_token needs access_key_id and secret_access_key")
        for name in ("region", "identity_center_region"):
            value = settings.get(name)
            if value and not REGION_RE.match(str(value)):
                raise ValueError(f"setting {name} must be an AWS region such as us-east-1, not {value!r}")
        for name in ("assume_role_name", "remediation_role_name"):
            value = settings.get(name)
            if value and not ROLE_NAME_RE.match(str(value)):
                raise ValueError(f"setting {name} must be an IAM role name, not {value!r}")
        bad = [a for a in settings.get("accounts") or [] if not ACCOUNT_ID_RE.match(str(a))]
        if bad:
            raise ValueError(f"setting accounts must list 12-digit account ids; not: {', '.join(map(str, bad))}")
        url = settings.get("endpoint_url")
        if url:
            parsed = urlparse(str(url))
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"setting endpoint_url must be an http(s) URL, not {url!r}")
            if parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("setting endpoint_url must use https (plain http is allowed on loopback only)")

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(settings, secrets)
        self.check_config(self.settings, self.secrets)
        self.region = self.settings.get("region") or "us-east-1"
        self.ic_region = self.settings.get("identity_center_region") or self.region
        self.role_name = self.settings.get("assume_role_name") or "AttestAudit"
        self.remediation_role = self.settings.get("remediation_role_name") or self.role_name
        self.external_id = self.settings.get("external_id") or None
        self.allow = [str(a) for a in self.settings.get("accounts") or []]
        self.endpoint_url = self.settings.get("endpoint_url") or None
        self.concurrency = int(self.settings.get("concurrency") or 8)
        self.extra_privileged = list(self.settings.get("privileged_policies") or [])
        # (event name, handler) pairs registered first on every client: tests inject upstream failures here
        self.hooks: list[tuple[str, Callable[..., Any]]] = []
        self.max_pages = MAX_PAGES  # pages of one listing before paging is stopped as a loop
        self.counter = _Counter()
        self.stats: dict[str, Any] = {"max_concurrent_accounts": 0}
        self._active_accounts = 0
        self._lock = threading.Lock()
        self._session = None
        self._clients: dict[tuple[str, str, str | None], Any] = {}
        self._org: Org | None = None
        self._org_note: str | None = None
        self._privileged_groups: dict[str, set[str]] = {}
        self._caller_arn = ""
        self._root_ids: list[str] = []
        self._scps: dict[str, dict[str, Any]] = {}  # policy id -> name, denies/allows IAM, target ids
        self._scps_failed = False

    # calls is read by the sync engine; it is every HTTP request sent, retries included
    @property  # type: ignore[override]
    def calls(self) -> int:
        return self.counter.requests

    @calls.setter
    def calls(self, value: int) -> None:  # BaseConnector.__init__ sets 0
        pass

    @property
    def operations(self) -> int:
        return self.counter.operations

    # --- validate -----------------------------------------------------------------------------------
    def validate(self) -> None:
        try:
            org = self._load_org()
            if self.allow:
                _, unknown = self._selected_accounts(org)
                if unknown:
                    raise ConnectorError(f"accounts not in the organization: {', '.join(unknown)}")
            self._identity_center()
        except AWS_ERRORS as exc:
            raise connector_error(exc) from None


    # --- one account ----------------------------------------------------------------------------------
    def _account_task(self, acct: OrgAccount, ic: IdentityCenter | None,
                      catalog: Mapping[str, PermissionSetInfo]) -> list[Record]:
        with self._lock:
            self._active_accounts += 1
            self.stats["max_concurrent_accounts"] = max(self.stats["max_concurrent_accounts"], self._active_accounts)
        org = self._load_org()
        part = account_part(acct.id)
        try:
            try:
                creds = self._account_creds(acct.id, self.role_name)
            except ClientError as exc:
                return [account_resource(acct, org.management_id), PartFailed(
                    part, f"cannot assume role {self.role_name} in account {acct.id} ({acct.name}): "
                          f"{describe(exc, operation=False)}; its previous access is kept as it was")]
            try:
                iam = self._client("iam", creds)
                details = self._read_iam(iam)
                report, why = self._read_credential_report(iam)
                out: list[Record] = []
                if report is None:
                    self._per_user_credentials(iam, details["UserDetailList"])
                    out.append(Note(f"account {acct.id}: credential report unavailable ({why}); "
                                    "read keys, MFA and passwords user by user"))
                else:
                    # AWS reuses a report for up to four hours: users created since are not in it
                    missing = [u for u in details["UserDetailList"] if u["Arn"] not in report]
                    if missing:
                        self._per_user_credentials(iam, missing)
                        out.append(Note(f"account {acct.id}: {len(missing)} IAM user(s) created after the credential "
                                        "report was generated; read their keys, MFA and passwords user by user"))
                scps = self._scp_limits(acct)
                out.append(account_resource(acct, org.management_id, (report or {}).get("<root_account>"),
                                            scps=self._scps_in_force(acct)))
                out.extend(iam_records(acct, details, report, self.extra_privileged, scp_limits=scps,
                                       own_roles=self._own_roles(acct.id)))
                with self._lock:  # for the trust paths, resolved across accounts once all are read
                    self._trust_inputs[acct.id] = (acct, details, tuple(scps))
                if ic is not None:
                    out.extend(self._assignment_records(ic, acct, catalog, local_admin_policies(details), scps))
                if self._scps_failed and acct.id != org.management_id:
                    # what SCPs limit was not read: privileged entitlements (their limitation comes from the
                    # SCPs) and the account's SCP list are yielded in the SCPs' failed part, so they keep
                    # their stored values (sync rule 4)
                    out = [r._replace(part=SCP_PART) if (isinstance(r, EntitlementRecord) and r.privileged)
                           or (isinstance(r, ResourceRecord) and r.type == "aws_account") else r for r in out]
                return out
            except (*AWS_ERRORS, PagingError) as exc:
                return [account_resource(acct, org.management_id), PartFailed(
                    part, f"account {acct.id} ({acct.name}) could not be read ({describe(exc)}); "
                          "its previous access is kept as it was")]
        finally:
            with self._lock:
                self._active_accounts -= 1


    # --- sync ---------------------------------------------------------------------------------------
    def sync(self) -> Iterator[Record]:
        try:
            org = self._load_org()
        except AWS_ERRORS as exc:
            raise connector_error(exc) from None
        if self._org_note:
            yield Note(self._org_note)
        accounts, unknown = self._selected_accounts(org)
        if unknown:
            yield Note(f"accounts in the allow-list but not in the organization: {', '.join(unknown)}")
        yield from org_records(org.org, org.ous)
        yield from self._read_scps()
        self._privileged_groups: dict[str, set[str]] = {}
        self._trust_inputs: dict[str, tuple[OrgAccount, Any, tuple[str, ...]]] = {}
        self._sso_by_account: dict[str, dict[str, list[tuple[str, str]]]] = {}

        try:
            ic = self._identity_center()
        except AWS_ERRORS as exc:
            raise ConnectorError(f"IAM Identity Center could not be read: {exc}") from None
        if self._ic_note:
            yield Note(self._ic_note)
        run = _SyncRun(self, ic, accounts)
        # every read is a fan-out task (attest/connectors/fanout.py: at most `concurrency` at a time, records
        # handed over as reads finish); _SyncRun says what each result means and which reads it opens
        yield from fan_out(run.first_tasks(), workers=self.concurrency, name="attest-aws")
        if ic is not None:
            yield from run.group_records(ic)
        yield from self._trust_paths(org, [p for p in run.failed if p != SCP_PART])

    def _trust_paths(self, org: Org, failed: list[str]) -> Iterator[Record]:
        """Who can assume which role (attest.connectors.aws.trust), resolved across every account read. A
        path depends on the role's account and the caller's, so when an account could not be read the
        stored paths are all kept as they were (their part fails) instead of ending those it cannot see."""
        if failed:
            yield PartFailed(TRUST_PART, f"role trust paths are resolved across accounts and {', '.join(failed)} "
                                         "could not be read; the stored trust paths are kept as they were")
            return
        accounts = [AccountIam(acct.id, acct.name, details, self._sso_by_account.get(acct.id, {}), scps)
                    for acct, details, scps in (self._trust_inputs[k] for k in sorted(self._trust_inputs))]
        yield from trust_records(accounts, [a.id for a in org.accounts], extra_privileged=self.extra_privileged)


    def close(self) -> None:
        self._clients.clear()


class _SyncRun:
    """What the sync reads once the organization and the SCPs are in, as fan-out tasks, and what each
    result means. Identity Center users, groups and the permission set catalog are read side by side;
    the accounts once the whole catalog is in (their assignments are judged by it); each group's members
    once the groups are listed. `then` runs on the sync's own thread, so the state here needs no lock.
    An Identity Center read is source-wide: its failure fails the run (partial IC data ends nothing)."""

    def __init__(self, conn: AwsConnector, ic: IdentityCenter | None, accounts: list[OrgAccount]) -> None:
        self.conn, self.ic, self.accounts = conn, ic, accounts
        self.catalog: dict[str, PermissionSetInfo] = {}
        self.unread_sets = 0
        self.groups: list[dict[str, Any]] = []
        self.members: dict[str, list[str]] = {}
        self.failed: list[str] = []

    def first_tasks(self) -> list[Task]:
        conn, ic = self.conn, self.ic
        if ic is None:
            return self.account_tasks()
        sso = conn._client("sso-admin", region=conn.ic_region)
        return [
            Task("ic-users", partial(conn._read_ic_users, ic), then=self.users, on_error=identity_center_failed),
            Task("ic-groups", partial(conn._read_ic_groups, ic), then=self.listed_groups,
                 on_error=identity_center_failed),
            Task("permission-sets", lambda: list(conn._pages(sso, "list_permission_sets", "PermissionSets",
                                                             InstanceArn=ic.instance_arn)), then=self.listed_sets),
        ]

    def account_tasks(self) -> list[Task]:
        return [Task(("account", acct.id), partial(self.conn._account_task, acct, self.ic, self.catalog),
                     then=self.account) for acct in self.accounts]

    def users(self, users: list[dict[str, Any]]) -> Iterator[Record]:
        store_id = self.ic.store_id if self.ic else ""
        return (identity_center_user(user, store_id) for user in users)

    def listed_sets(self, arns: list[str]) -> list[Task]:
        if not arns:
            return self.account_tasks()
        self.unread_sets = len(arns)
        return [Task(("permission-set", arn), partial(self.conn._read_permission_set, self.ic, arn),
                     then=self.permission_set, on_error=identity_center_failed) for arn in arns]

    def permission_set(self, info: PermissionSetInfo) -> list[Task]:
        self.catalog[info.arn] = info
        self.unread_sets -= 1
        return self.account_tasks() if self.unread_sets == 0 else []

    def listed_groups(self, groups: list[dict[str, Any]]) -> list[Task]:
        self.groups = groups
        return [Task(("members", g["GroupId"]), partial(self.conn._read_ic_members, self.ic, g["GroupId"]),
                     then=partial(self.group_members, g["GroupId"]), on_error=identity_center_failed)
                for g in groups]

    def group_members(self, group_id: str, user_ids: list[str]) -> list[Record]:
        self.members[group_id] = user_ids
        return []

    def account(self, records: list[Record]) -> list[Record]:
        self.failed += [r.part for r in records if isinstance(r, PartFailed)]
        return records

    def group_records(self, ic: IdentityCenter) -> Iterator[Record]:
        """Each Identity Center group, its membership entitlement and its members' grants. A group is
        privileged through its assignments, which live in the accounts: when an account could not be read,
        the group's membership entitlement is derived partly from an unread part, so it is yielded in that
        part and the sync engine keeps its stored value (privileged flag and privileged_via) instead of
        recomputing it from the accounts it could read."""
        derived_part = min(self.failed) if self.failed else None
        for g in self.groups:
            gid = g["GroupId"]
            ref = f"idc-group:{gid}"
            name = g.get("DisplayName") or gid
            held = sorted(self.conn._privileged_groups.get(gid, ()))
            external = [x for x in g.get("ExternalIds") or [] if isinstance(x, Mapping)]
            yield ResourceRecord(
                external_id=ref, type="aws_sso_group", name=name, description=g.get("Description"), is_group=True,
                attributes={"identity_store_id": ic.store_id, "group_id": gid,
                            "external_ids": [f"{x.get('Issuer')}:{x.get('Id')}" for x in external],
                            **scim_managed(external)},
            )
            yield EntitlementRecord(
                external_id=f"{ref}:member", resource_ref=ref, name="member",
                display_name=f"Member of Identity Center group {name}", is_membership=True, privileged=bool(held),
                attributes={"kind": "sso_group_membership", "identity_store_id": ic.store_id, "group_id": gid,
                            "group_name": name, "privileged_via": held[:20]},
                part=derived_part,
            )
            for uid in self.members.get(gid, []):
                yield GrantRecord(entitlement_ref=f"{ref}:member", principal_ref=f"idc-user:{uid}")
