"""OktaConnector: its settings, validate, and the sync that describes what to fetch (`_SyncRun`:
what each read's result means and which reads it opens; the fan-out engine runs them).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from attest.connectors.base import (
    BaseConnector,
    ConnectorError,
    EntitlementRecord,
    GrantRecord,
    Note,
    Record,
    ResourceRecord,
    Setting,
)
from attest.connectors.fanout import Task, fan_out, read_ahead
from attest.connectors.http import HttpClient, HttpError, require_https
from attest.connectors.keys import signing_algorithm
from attest.connectors.okta.client import OKTA_ALGORITHMS, PAGE, READ_SCOPES, HttpMixin
from attest.connectors.okta.guard import GuardMixin
from attest.connectors.okta.provisioning import ProvisioningMixin
from attest.connectors.okta.readers import ReadersMixin
from attest.connectors.okta.transforms import (
    UserIndex,
    admin_flag,
    app_records,
    group_records,
    role_records,
    rule_map,
    user_records,
)

log = logging.getLogger(__name__)


class OktaConnector(HttpMixin, ReadersMixin, ProvisioningMixin, GuardMixin, BaseConnector):
    kind: ClassVar[str] = "okta"
    AUTHORITATIVE_DEFAULT: ClassVar[bool] = True
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("domain", "your Okta org URL, e.g. https://acme.okta.com (https required except loopback)", required=True),
        Setting("concurrency", "requests in flight at once", default=4, type=int, bounds=(1, 16)),
        Setting("manager_attribute", "the profile attribute holding the manager (an Okta user id, login, e-mail "
                "or employee number); `manager` is the fallback", default="managerId"),
        Setting("log_days", "days of System Log to read for the last SSO per app (Okta keeps 90; 0 turns it off)",
                default=90, type=int, bounds=(0, 90)),
        Setting("include_inactive_apps", "also sync apps that are INACTIVE", default=False, type=bool),
        Setting("key_id", "OAuth: the key id (kid) of the app's public key, when the app has several"),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("token", "an Okta API token (SSWS)"),
        Setting("client_id", "OAuth: the client id of an API Services app using private_key_jwt"),
        Setting("private_key", "OAuth: the app's private key, PEM (RSA or EC)"),
    )

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        require_https(str(settings.get("domain", "")), "domain")
        path = urlsplit(str(settings["domain"])).path.strip("/")
        if path:
            raise ValueError(f"domain must be the org URL only (like https://acme.okta.com), without the path /{path}")
        has_token = bool(secrets.get("token"))
        has_oauth = bool(secrets.get("client_id") or secrets.get("private_key"))
        if has_token and has_oauth:
            raise ValueError("give either the secret token (API token) or client_id with private_key (OAuth), not both")
        if not has_token and not has_oauth:
            raise ValueError("an Okta source needs the secret token (API token), or client_id and private_key (OAuth service app)")
        if has_oauth:
            if not secrets.get("client_id") or not secrets.get("private_key"):
                raise ValueError("OAuth needs both secrets client_id and private_key")
            signing_algorithm(secrets["private_key"], "private_key", OKTA_ALGORITHMS)

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        """`sleep` waits out rate limits; `clock` (epoch seconds) is what the HTTP clients pace and hold on and
        when a cached access token is due: a test's fake clock (with its sleep) moves them all."""
        super().__init__(settings, secrets)
        self.domain = require_https(str(self.settings.get("domain", "")), "domain")
        self.concurrency = int(self.settings.get("concurrency") or 4)
        self.manager_attribute = str(self.settings.get("manager_attribute") or "managerId")
        self.log_days = int(self.settings.get("log_days") if self.settings.get("log_days") is not None else 90)
        self.include_inactive_apps = bool(self.settings.get("include_inactive_apps"))
        self._sleep = sleep
        self._clock = clock
        self._http: HttpClient | None = None
        self._token_http: HttpClient | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._token_lock = threading.RLock()
        self._scopes: tuple[str, ...] = READ_SCOPES
        self._owners_off: str | None = None  # why group owners are not read (set once, for the run)

    def validate(self) -> None:
        """One cheap read per scope the sync needs: a missing scope or role is named before any sync."""
        self._scopes = READ_SCOPES if self.log_days else READ_SCOPES[:-1]
        for path in ("/api/v1/users?limit=1", "/api/v1/groups?limit=1", "/api/v1/apps?limit=1",
                     "/api/v1/iam/assignees/users?limit=1"):
            self._get_json(path)
        if self.log_days:
            until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            path = f"/api/v1/logs?limit=1&since={since}&until={until}"
            try:
                self._call(lambda: self.http.get_json(path), "GET", "/api/v1/logs", raw=True)
            except HttpError as exc:
                if exc.status in (401, 403, 404):
                    raise ConnectorError(self._logs_unreadable(exc) + " Everything else is readable; a sync "
                                         "still runs and leaves the last-SSO signal out.") from None
                raise

    # -- sync ------------------------------------------------------------------------------------------
    def sync(self) -> Iterator[Record]:
        """Records as they are read. Reading runs ahead on its own thread (fanout.read_ahead), handing over
        batches through a bounded queue, so requests keep flowing while the caller stages records."""
        self._scopes = READ_SCOPES if self.log_days else READ_SCOPES[:-1]
        yield from read_ahead(self._records, name="okta-sync")

    def _records(self, stop: threading.Event) -> Iterator[Record]:
        """Every read is a fan-out task (attest/connectors/fanout.py: `concurrency` workers, records handed
        over as reads finish); _SyncRun says what each result means and which reads it opens."""
        self._owners_off = None
        self._resource_sets = self._get_resource_set_labels()  # one request: names for custom roles' sets
        if not self.log_days:
            yield Note("log_days is 0: the last SSO per app is not read")
        yield from fan_out(_SyncRun(self).first_tasks(), workers=self.concurrency, stop=stop, name="okta")


USER_KINDS = frozenset({"users", "users_deprovisioned", "logs"})


class _SyncRun:
    """One Okta sync's reads as fan-out tasks, and what each result means (`KINDS`: a handler per kind of
    read). The fetches run on the fan-out's workers and do HTTP only; the handlers run one at a time on the
    caller's thread, so this bookkeeping needs no lock. Joins: users are emitted once both user listings
    and the System Log are read (the last SSO goes into the account), groups once groups and rules are
    (rule-managed marks), a group once its own members and owners are, an app once both its assignment
    lists are; a role resource or entitlement is emitted once."""

    def __init__(self, conn: OktaConnector) -> None:
        self.conn = conn
        self.index = UserIndex()
        self.users: list[dict[str, Any]] = []
        self.sso: dict[str, dict[str, str]] = {}
        self.groups: list[dict[str, Any]] | None = None
        self.rules: dict[str, list[str]] | None = None
        self.role_groups_done: set[str] = set()
        self.seen_roles: set[str] = set()
        self.apps_open: dict[str, list[Any]] = {}  # app id -> [app, lists still to read, grants read so far]
        self.owners_noted = False
        self.waiting = {"users", "users_deprovisioned", "groups", "rules", "apps", "assignees"}
        if conn.log_days:
            self.waiting.add("logs")

    def task(self, kind: str, key: Any, fetch: Callable[[], Any]) -> Task:
        return Task((kind, key), fetch, then=lambda result: self.done(kind, key, result))

    def first_tasks(self) -> list[Task]:
        c = self.conn
        apps_params: dict[str, Any] = {"limit": PAGE["apps"]}
        if not c.include_inactive_apps:
            apps_params["filter"] = 'status eq "ACTIVE"'
        tasks = [
            self.task("users", None, lambda: c._fetch_users({})),
            self.task("users_deprovisioned", None, lambda: c._fetch_users({"filter": 'status eq "DEPROVISIONED"'})),
            self.task("groups", None, lambda: c._list("/api/v1/groups", {"limit": PAGE["groups"], "expand": "stats"})),
            self.task("rules", None, lambda: c._list("/api/v1/groups/rules", {"limit": PAGE["group_rules"]})),
            self.task("apps", None, lambda: c._list("/api/v1/apps", apps_params)),
            self.task("assignees", None, c._get_assignees),
        ]
        if c.log_days:
            tasks.append(self.task("logs", None, c._fetch_sso_optional))
        return tasks

    def done(self, kind: str, key: Any, result: Any) -> Iterator[Record | Task]:
        self.waiting.discard(kind)
        yield from self.KINDS[kind](self, key, result)
        if self.conn._owners_off and not self.owners_noted:  # set by a group read on a worker
            self.owners_noted = True
            yield Note(self.conn._owners_off)

    # -- users and their last SSO --------------------------------------------------------------------
    def users_read(self, _key: None, users: list[dict[str, Any]]) -> Iterator[Record]:
        for user in users:
            self.index.add(user)
        self.users.extend(users)
        yield from self.users_ready()

    def logs_read(self, _key: None, result: tuple[dict[str, dict[str, str]], str | None]) -> Iterator[Record]:
        self.sso, note = result
        if note:
            yield Note(note)
        yield from self.users_ready()

    def users_ready(self) -> Iterator[Record]:
        if self.waiting & USER_KINDS or not self.users:
            return
        for user in self.users:
            uid = user.get("id")
            yield from user_records(user, self.index, self.conn.manager_attribute,
                                    self.sso.get(uid) if isinstance(uid, str) else None)
        self.users = []

    # -- groups, their members, owners and roles -----------------------------------------------------
    def groups_read(self, _key: None, groups: list[dict[str, Any]]) -> Iterator[Record | Task]:
        self.groups = groups
        yield from self.groups_ready()

    def rules_read(self, _key: None, rules: list[Any]) -> Iterator[Record | Task]:
        self.rules = rule_map(rules)
        yield from self.groups_ready()

    def groups_ready(self) -> Iterator[Record | Task]:
        """Each group is read (members when its stats count any, owners) in one task and emitted when that
        task is done, so a group deleted meanwhile is left out whole."""
        if self.groups is None or self.rules is None:
            return
        groups, rules, self.groups = self.groups, self.rules, []
        no_stats = 0
        for group in groups:
            if not isinstance(group, Mapping):
                continue
            gid = group.get("id")
            if not isinstance(gid, str) or not gid:
                yield from group_records(group, rules)
                continue
            stats = (group.get("_embedded") or {}).get("stats") if isinstance(group.get("_embedded"), Mapping) else None
            count = stats.get("usersCount") if isinstance(stats, Mapping) else None
            if not isinstance(count, int):
                no_stats += 1
            need_members = count is None or count > 0
            yield self.task("group", (group, sorted(rules.get(gid, []))),
                            lambda g=gid, m=need_members: self.conn._fetch_group(g, m))
            if admin_flag(stats) is not False:  # Okta's `hasAdminPrivlege`: false means no group role to read
                yield from self.group_roles(gid)
        if no_stats:
            yield Note(f"{no_stats} Okta groups came without stats; their members and roles were read to be sure")

    def group_read(self, key: tuple[Mapping[str, Any], list[str]],
                   result: tuple[list[str] | None, list[Mapping[str, Any]]]) -> Iterator[Record]:
        group, rule_names = key
        gid = group["id"]
        members, owners = result
        if members is None:
            yield Note(f"Okta group {gid} ({(group.get('profile') or {}).get('name') or gid}) was "
                       "deleted while the sync ran (404 on its members or owners); treated as deleted")
            return
        yield from group_records(group, self.rules or {}, owners)
        attrs = {"rules": rule_names} if rule_names else {}
        for uid in members:
            yield GrantRecord(entitlement_ref=f"{gid}:member", principal_ref=uid, attributes=attrs)

    # -- admin roles ---------------------------------------------------------------------------------
    def assignees_read(self, _key: None, user_ids: list[str]) -> Iterator[Task]:
        for uid in user_ids:
            yield self.task("user_roles", uid,
                            lambda u=uid: self.conn._get_json_list(f"/api/v1/users/{u}/roles", gone_ok=True))

    def group_roles(self, gid: str) -> Iterator[Task]:
        if gid not in self.role_groups_done:
            self.role_groups_done.add(gid)
            yield self.task("group_roles", gid,
                            lambda: self.conn._get_json_list(f"/api/v1/groups/{gid}/roles", gone_ok=True))

    def user_roles_read(self, uid: str, roles: list[Any]) -> Iterator[Record | Task]:
        for role in roles:
            if not isinstance(role, Mapping):
                continue
            if str(role.get("assignmentType", "USER")).upper() == "GROUP":  # read with the group's roles
                href = ((role.get("_links") or {}).get("assignee") or {}).get("href", "")
                m = re.search(r"/groups/([^/?]+)", href or "")
                if m:
                    yield from self.group_roles(m.group(1))
                continue
            yield from self.roles_out(role_records(role, uid, "account", self.conn._resource_sets))

    def group_roles_read(self, gid: str, roles: list[Any]) -> Iterator[Record]:
        for role in roles:
            if isinstance(role, Mapping):
                yield from self.roles_out(role_records(role, gid, "resource", self.conn._resource_sets))

    def roles_out(self, recs: list[Record]) -> Iterator[Record]:
        for rec in recs:
            if isinstance(rec, ResourceRecord | EntitlementRecord):
                key = f"{type(rec).__name__}:{rec.external_id}"
                if key in self.seen_roles:
                    continue
                self.seen_roles.add(key)
            yield rec

    # -- apps and their assignments ------------------------------------------------------------------
    def apps_read(self, _key: None, apps: list[Any]) -> Iterator[Record | Task]:
        for app in apps:
            aid = app.get("id") if isinstance(app, Mapping) else None
            if not isinstance(aid, str) or not aid:
                yield from app_records(app if isinstance(app, Mapping) else {})
                continue
            self.apps_open[aid] = [app, 2, []]
            yield self.task("app_users", aid, lambda a=aid: self.conn._fetch_app_users(a))
            yield self.task("app_groups", aid, lambda a=aid: self.conn._fetch_app_groups(a))

    def app_list_read(self, aid: str, recs: list[Record] | None) -> Iterator[Record]:
        entry = self.apps_open.get(aid)
        if entry is None:
            return
        if recs is None:  # the app answered 404: deleted while the sync ran
            del self.apps_open[aid]
            yield Note(f"Okta app {aid} ({entry[0].get('label') or aid}) was deleted while the sync ran "
                       "(404 on its assignments); treated as deleted")
            return
        entry[2].extend(recs)
        entry[1] -= 1
        if entry[1] == 0:
            del self.apps_open[aid]
            yield from app_records(entry[0])
            yield from entry[2]

    KINDS: ClassVar[dict[str, Callable[..., Iterator[Any]]]] = {
        "users": users_read, "users_deprovisioned": users_read, "logs": logs_read,
        "groups": groups_read, "rules": rules_read, "group": group_read,
        "assignees": assignees_read, "user_roles": user_roles_read, "group_roles": group_roles_read,
        "apps": apps_read, "app_users": app_list_read, "app_groups": app_list_read,
    }
