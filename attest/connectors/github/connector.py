"""GitHubConnector: its settings, validate, and the sync over each organization (a part).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from attest.connectors.base import (
    BaseConnector,
    ConnectorError,
    Note,
    PartFailed,
    Record,
    Setting,
)
from attest.connectors.github.client import (
    DEFAULT_API,
    GraphQLError,
    HttpMixin,
    _explain,
    github_budget,
    graphql_url,
)
from attest.connectors.github.provisioning import ProvisioningMixin
from attest.connectors.github.readers import ReadersMixin
from attest.connectors.github.transforms import org_records
from attest.connectors.http import HttpClient, HttpError, PagingError, require_https
from attest.connectors.keys import signing_algorithm

log = logging.getLogger(__name__)


class GitHubConnector(HttpMixin, ReadersMixin, ProvisioningMixin, BaseConnector):
    kind: ClassVar[str] = "github"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("orgs", "organization logins to read (comma-separated)", required=True, type=list),
        Setting("api_url", "REST API base: https://api.github.com, or https://HOST/api/v3 for GitHub "
                "Enterprise Server", default=DEFAULT_API),
        Setting("skip_archived", "leave archived repositories out", default=False, type=bool),
        Setting("concurrency", "requests in flight at once", default=4, type=int, bounds=(1, 16)),
        Setting("app_id", "GitHub App ID (with the private_key secret)"),
        Setting("installation_id", "the App's installation ID (with the private_key secret)", type=int),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = (
        Setting("private_key", "the GitHub App's private key (PEM)"),
        Setting("token", "a fine-grained or classic personal access token, instead of a GitHub App"),
    )

    token_refresh_margin: float = 300.0  # refresh an installation token this long before it expires

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not settings.get("orgs"):
            raise ValueError("setting 'orgs' needs at least one organization login")
        require_https(str(settings.get("api_url") or DEFAULT_API), "api_url")
        if secrets.get("private_key"):
            if not settings.get("app_id") or not settings.get("installation_id"):
                raise ValueError("a GitHub App needs settings 'app_id' and 'installation_id' with the private_key secret")
            signing_algorithm(secrets["private_key"], "private_key", ("RS256",))
        elif not secrets.get("token"):
            raise ValueError("a github source needs the secret 'private_key' (GitHub App, with app_id and "
                             "installation_id) or the secret 'token'")

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        """`sleep` waits out rate limits; `clock` (epoch seconds) says when an installation token is due for
        refresh. Tests hand fakes of both, so they drive time instead of waiting for it."""
        self._clock = clock
        self._client: HttpClient | None = None
        self._app_client: HttpClient | None = None
        super().__init__(settings, secrets)
        self.check_config(self.settings, self.secrets)
        orgs = self.settings["orgs"]
        self.orgs = [o.strip() for o in (orgs.split(",") if isinstance(orgs, str) else orgs) if o.strip()]
        self.api_url = require_https(str(self.settings.get("api_url") or DEFAULT_API), "api_url")
        self.graphql_url = graphql_url(self.api_url)
        self.skip_archived = bool(self.settings.get("skip_archived"))
        self.concurrency = int(self.settings.get("concurrency") or 4)
        self._token_lock = threading.Lock()
        self._installation_token: str | None = None
        self._token_expires = 0.0
        self._token_lifetime = 3600.0
        self.token_refreshes = 0
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        # the clients pace and wait on the connector's clock: a test's fake clock moves them all
        budgets = {"budget": github_budget, "budget_header": "x-ratelimit-resource", "follow_redirects": True,
                   "sleep": sleep, "clock": clock}
        self._client = HttpClient(self.api_url, headers=headers, auth_header=self._auth_header,
                                  max_concurrency=self.concurrency, rate_limit_on_403=True, default_wait=60.0,
                                  **budgets)
        if self.secrets.get("private_key"):
            self._app_client = HttpClient(self.api_url, headers=headers, max_concurrency=1,
                                          rate_limit_on_403=True, default_wait=60.0, **budgets)

    def validate(self) -> None:
        """Reach each organization and one page of what a sync cannot do without (its members: the
        Members permission), so a missing permission is named before the first sync, not during it."""
        for org in self.orgs:
            try:
                self._request("GET", f"/orgs/{quote(org)}")
                self._request("GET", f"/orgs/{quote(org)}/members", params={"per_page": 1})
            except HttpError as exc:
                raise ConnectorError(_explain(exc, org)) from None

    def sync(self) -> Iterator[Record]:
        seen: set[str] = set()
        for login in self.orgs:
            part = f"github:{login}"
            try:
                snap = self.fetch_org(login)
            except HttpError as exc:
                if exc.status == 401:
                    raise ConnectorError(_explain(exc, login)) from None
                yield PartFailed(part, _explain(exc, login))
                continue
            except (GraphQLError, PagingError) as exc:
                yield PartFailed(part, str(exc))
                continue
            for message in snap.notes:
                yield Note(message)
            yield from org_records(snap, skip_archived=self.skip_archived, seen_accounts=seen)
