"""Sessions, clients and paging: how the AWS connector talks to AWS.

One boto3 session per connector (sharing one process-wide botocore model loader), one client per
(service, region, credentials) with the request/operation counters and the test hooks registered, guarded
pagination (a repeated next token or too many pages is a paging loop), and STS AssumeRole into an account.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import PaginationError

from attest.connectors.http import PageGuard, PagingError

if TYPE_CHECKING:
    from attest.connectors.aws.organizations import Org

ROLE_SESSION_NAME = "attest"

# Largest page each list call accepts; the paginators ask for these so a listing takes the fewest calls.
PAGE = {
    "organizations": 20,
    "identitystore": 100,
    "sso-admin": 100,
    "iam": 1000,
}


class _Counter:
    """Thread-safe counts of requests and operations, by operation name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.operations = 0
        self.by_operation: dict[str, int] = defaultdict(int)

    def request(self, **kwargs: Any) -> None:
        with self.lock:
            self.requests += 1

    def operation(self, model: Any = None, **kwargs: Any) -> None:
        with self.lock:
            self.operations += 1
            name = getattr(model, "name", None) or kwargs.get("event_name", "?").rsplit(".", 1)[-1]
            service = getattr(getattr(model, "service_model", None), "endpoint_prefix", "")
            self.by_operation[f"{service}:{name}"] += 1



_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _botocore_session():
    """A botocore session sharing one process-wide model loader: every sync (and every account's clients)
    would otherwise parse the same service JSON again, ~1 s of CPU per connector."""
    global _LOADER
    session = botocore.session.get_session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _LOADER)
    return session


class SessionsMixin:
    """The connector's clients and paging (state set by AwsConnector.__init__; `_load_org` and `_org`
    from OrganizationsMixin)."""

    region: str
    endpoint_url: str | None
    external_id: str | None
    concurrency: int
    secrets: Mapping[str, str]
    hooks: list[tuple[str, Callable[..., Any]]]
    max_pages: int
    counter: _Counter
    _lock: threading.Lock
    _session: Any
    _clients: dict[tuple[str, str, str | None], Any]
    _org: Org | None
    _load_org: Callable[[], Org]

    def _config(self):
        return Config(
            retries={"mode": "adaptive", "max_attempts": 10},
            max_pool_connections=max(10, self.concurrency * 2),
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="attest",
        )

    def _base_session(self):
        if self._session is None:
            kwargs: dict[str, Any] = {"region_name": self.region, "botocore_session": _botocore_session()}
            if self.secrets.get("access_key_id"):
                kwargs.update(aws_access_key_id=self.secrets["access_key_id"],
                              aws_secret_access_key=self.secrets["secret_access_key"],
                              aws_session_token=self.secrets.get("session_token") or None)
            self._session = boto3.Session(**kwargs)
        return self._session

    def _client(self, service: str, creds: Mapping[str, str] | None = None, region: str | None = None):
        """A client with the counting hooks; base credentials when creds is None. Cached per credentials."""
        region = region or self.region
        key = (service, region, creds["AccessKeyId"] if creds else None)
        with self._lock:  # boto3 sessions are not thread-safe; clients are
            client = self._clients.get(key)
            if client is not None:
                return client
            kwargs: dict[str, Any] = {"region_name": region, "config": self._config()}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            if creds:
                kwargs.update(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                              aws_session_token=creds.get("SessionToken"))
            client = self._base_session().client(service, **kwargs)
            events = client.meta.events
            events.register("request-created", self.counter.request)
            events.register("before-call", self.counter.operation)
            for event, handler in self.hooks:
                events.register_first(event, handler)
            self._clients[key] = client
            return client

    def _pages(self, client, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        service = client.meta.service_model.service_name
        size = PAGE.get(service)
        config = {"PageSize": size} if size else {}
        for page in self._paginate(client, operation, config, **kwargs):
            yield from page.get(key, [])

    def _paginate(self, client, operation: str, config: Mapping[str, Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
        """botocore's paginator, guarded: a next token already seen (botocore itself only notices one
        repeated twice in a row) or more pages than `max_pages` raise PagingError naming the operation."""
        what = f"AWS {client.meta.service_model.service_name}:{client.meta.method_to_api_mapping.get(operation, operation)}"
        guard = PageGuard(what, self.max_pages)
        try:
            for page in client.get_paginator(operation).paginate(PaginationConfig=dict(config), **kwargs):
                yield page
                token = next((page[k] for k in ("NextToken", "Marker", "nextToken") if page.get(k)), None)
                if token is not None:
                    guard.check(str(token)[:200])
        except PaginationError as exc:
            raise PagingError(f"{what}: {exc.kwargs.get('message') or exc}; paging stopped (an upstream paging "
                              "loop), nothing was changed") from None

    def _assume(self, account_id: str, role_name: str) -> dict[str, str]:
        org = self._org
        partition = org.partition if org else "aws"
        kwargs: dict[str, Any] = {
            "RoleArn": f"arn:{partition}:iam::{account_id}:role/{role_name}",
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": 3600,
        }
        if self.external_id:
            kwargs["ExternalId"] = self.external_id
        return self._client("sts").assume_role(**kwargs)["Credentials"]

    def _account_creds(self, account_id: str, role_name: str) -> dict[str, str] | None:
        """None (base credentials) for the account of the base credentials, else assumed-role credentials."""
        org = self._load_org()
        if account_id == org.base_account:
            return None
        return self._assume(account_id, role_name)
