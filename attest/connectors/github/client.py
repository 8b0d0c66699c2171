"""GitHub's HTTP layer, dumb (raises on failure): the token or the App's installation token, REST
lists, GraphQL queries and their pages, rate-limit budgets as GitHub names them, and the wording of a
failure.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from authlib.deprecate import AuthlibDeprecationWarning  # before authlib.jose: it installs a warning filter

from attest.connectors.base import ConnectorError
from attest.connectors.http import HttpClient, HttpError, PageGuard, PagingError
from attest.connectors.timestamps import parse_timestamp

with warnings.catch_warnings():  # authlib.jose warns that joserfc is its successor; authlib.jose is what we use
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken


DEFAULT_API = "https://api.github.com"
PER_PAGE = 100


def github_budget(method: str, url: str) -> str:
    """The rate-limit budget a request draws on, as GitHub names it in `x-ratelimit-resource`."""
    path = urlsplit(url).path
    if path.endswith("/graphql"):
        return "graphql"
    if "/search/code" in path:
        return "code_search"
    if "/search/" in path:
        return "search"
    return "core"


class GraphQLError(ConnectorError):
    def __init__(self, errors: list[dict[str, Any]], query_name: str) -> None:
        self.errors = errors
        self.types = {str(e.get("type") or "") for e in errors}
        message = "; ".join(str(e.get("message", "")) for e in errors)[:500]
        super().__init__(f"GitHub GraphQL {query_name} failed: {message}")


def graphql_url(api_url: str) -> str:
    """https://api.github.com -> /graphql; GHES https://HOST/api/v3 -> https://HOST/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def _message(exc: HttpError) -> str:
    if isinstance(exc.body, dict) and exc.body.get("message"):
        return str(exc.body["message"])[:200]
    return str(exc.body)[:200]


def _short(exc: Exception) -> str:
    if isinstance(exc, HttpError):
        return f"HTTP {exc.status}: {_message(exc)}"
    return str(exc)[:200]


def _missing(exc: HttpError) -> str:
    """What the credentials lack, in GitHub's own words where its answer names it: a GitHub App or a
    fine-grained token gets `x-accepted-github-permissions` (permission sets that would do, separated by
    ";"), a classic token `x-accepted-oauth-scopes` beside its own `x-oauth-scopes`."""
    headers = {k.lower(): v for k, v in exc.headers.items()}
    permissions = headers.get("x-accepted-github-permissions", "").strip()
    if permissions:
        sets = [p.strip() for p in permissions.split(";") if p.strip()]
        return (f"the GitHub App (or fine-grained token) lacks the permission {' or '.join(sets)}: grant it in the "
                "App's permissions and accept the change on the installation (docs/connectors/github.md)")
    scopes = headers.get("x-accepted-oauth-scopes", "").strip()
    if scopes:
        has = headers.get("x-oauth-scopes", "").strip() or "none"
        return (f"the token lacks the OAuth scope {scopes} (it has: {has}); see docs/connectors/github.md")
    return "the token or App lacks a permission Attest needs (see docs/connectors/github.md)"


def _explain(exc: HttpError, org: str) -> str:
    where = urlsplit(exc.url).path
    if exc.status == 401:
        return f"GitHub rejected the credentials (HTTP 401: {_message(exc)}); check the token or the App key"
    if exc.status == 404 and where.rstrip("/").endswith(f"/orgs/{org}"):
        return (f"organization {org!r} was not found, or the token / App installation cannot see it "
                "(is the App installed on it?)")
    if exc.status == 403:
        return f"GitHub refused {exc.method} {where} (HTTP 403: {_message(exc)}); {_missing(exc)}"
    return f"{org}: {exc.method} {where} failed: HTTP {exc.status}: {_message(exc)}"


class HttpMixin:
    """The HTTP layer of GitHubConnector (dumb: raises on failure)."""

    # -- counting ------------------------------------------------------------------------------------
    @property
    def calls(self) -> int:  # type: ignore[override]
        return (self._client.calls if self._client else 0) + (self._app_client.calls if self._app_client else 0)

    @calls.setter
    def calls(self, value: int) -> None:  # BaseConnector initialises it; the clients count
        pass

    @property
    def client(self) -> HttpClient:
        assert self._client is not None
        return self._client

    def close(self) -> None:
        if self._client:
            self._client.close()
        if self._app_client:
            self._app_client.close()

    # -- auth ----------------------------------------------------------------------------------------
    def _app_jwt(self) -> str:
        now = int(time.time())
        payload = {"iat": now - 60, "exp": now + 540, "iss": str(self.settings["app_id"])}
        try:
            token = JsonWebToken(["RS256"]).encode({"alg": "RS256", "typ": "JWT"}, payload, self.secrets["private_key"])
        except Exception as exc:  # a malformed key: say so without echoing it
            raise ConnectorError(f"the GitHub App private key could not sign a JWT ({type(exc).__name__})") from None
        return token.decode() if isinstance(token, bytes) else token

    def _refresh_installation_token(self) -> None:
        assert self._app_client is not None
        url = f"/app/installations/{int(self.settings['installation_id'])}/access_tokens"
        try:
            response = self._app_client.request("POST", url, headers={"Authorization": f"Bearer {self._app_jwt()}"})
        except HttpError as exc:
            if exc.status in (401, 403, 404):
                raise ConnectorError(
                    f"GitHub refused the App installation token (HTTP {exc.status}: {_message(exc)}); check app_id, "
                    "installation_id and the private key, and that the App is installed on the organization"
                ) from None
            raise
        body = response.json()
        expires = parse_timestamp(body.get("expires_at"))
        now = self._clock()
        self._installation_token = body["token"]
        self._token_expires = expires.timestamp() if expires else now + 3600
        self._token_lifetime = max(self._token_expires - now, 1.0)
        self.token_refreshes += 1

    def _auth_header(self) -> dict[str, str]:
        token = self.secrets.get("token")
        if token and not self.secrets.get("private_key"):
            return {"Authorization": f"Bearer {token}"}
        with self._token_lock:
            margin = min(self.token_refresh_margin, self._token_lifetime * 0.2)
            if self._installation_token is None or self._clock() >= self._token_expires - margin:
                self._refresh_installation_token()
            return {"Authorization": f"Bearer {self._installation_token}"}

    def _invalidate_token(self) -> None:
        with self._token_lock:
            self._installation_token = None

    # -- the dumb HTTP layer ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any):
        try:
            return self.client.request(method, path, **kwargs)
        except HttpError as exc:
            if exc.status == 401 and self._app_client is not None:
                self._invalidate_token()  # an installation token revoked or expired early: get a new one once
                return self.client.request(method, path, **kwargs)
            raise

    def _rest_list(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        out: list[Any] = []
        query = {"per_page": PER_PAGE, **dict(params or {})}
        try:
            for page in self.client.paginate(path, query):
                out.extend(page)
        except HttpError as exc:
            if exc.status == 401 and self._app_client is not None:
                self._invalidate_token()
                out = []
                for page in self.client.paginate(path, query):
                    out.extend(page)
            else:
                raise
        return out

    def _graphql(self, query: str, variables: Mapping[str, Any], name: str) -> dict[str, Any]:
        for attempt in range(5):
            response = self._request("POST", self.graphql_url, json={"query": query, "variables": dict(variables)})
            body = response.json()
            errors = body.get("errors") or []
            if errors and any(e.get("type") == "RATE_LIMITED" for e in errors) and attempt < 4:
                reset = response.headers.get("x-ratelimit-reset")
                wait = max(float(reset) - time.time(), 1.0) if reset else 60.0
                self.client.sleep(min(wait, self.client.max_wait))
                continue
            if errors:
                raise GraphQLError(errors, name)
            return body.get("data") or {}
        raise ConnectorError(f"GitHub GraphQL {name}: still rate limited after several waits")

    def _graphql_pages(self, query: str, variables: Mapping[str, Any], name: str,
                       path: Callable[[dict[str, Any]], dict[str, Any] | None],
                       after: str | None = None) -> Iterator[dict[str, Any]]:
        """Each page of a connection, following `pageInfo.endCursor` while `hasNextPage`. A cursor that
        repeats (or is missing while more pages are announced: paging would start over), or more pages
        than the client's cap, raise PagingError naming the connection."""
        guard = PageGuard(f"GitHub GraphQL {name} ({', '.join(f'{k}={v}' for k, v in variables.items())})",
                          self.client.max_pages, first=after)
        while True:
            data = self._graphql(query, {**variables, "after": after}, name)
            conn = path(data)
            if conn is None:
                return
            yield conn
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")
            if not cursor:
                raise PagingError(f"{guard.what}: hasNextPage without an endCursor after {guard.pages:,} pages; "
                                  "paging stopped (it would start over), nothing was changed")
            after = guard.check(cursor)
