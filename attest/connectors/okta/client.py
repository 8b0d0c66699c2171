"""Okta's HTTP layer, dumb: the client, the API token or OAuth service-app token, paging, and the
errors that name the missing scope or admin role. Rate limits are kept per endpoint family.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from attest.connectors.base import ConnectorError
from attest.connectors.http import HttpClient, HttpError, PageGuard, next_link
from attest.connectors.keys import signing_algorithm

# largest page size each endpoint allows (groups: Okta's recommended ceiling, see the module docstring)
PAGE = {"users": 200, "groups": 200, "group_users": 1000, "group_owners": 1000, "group_rules": 200, "apps": 200,
        "app_users": 500, "app_groups": 200, "assignees": 100, "logs": 1000, "user_groups": 200}


OKTA_ALGORITHMS = ("RS256", "ES256")  # the keys private_key_jwt signs with here (connectors/keys.py)
READ_SCOPES = ("okta.users.read", "okta.groups.read", "okta.apps.read", "okta.roles.read", "okta.logs.read")
MANAGE_SCOPES = ("okta.groups.manage", "okta.apps.manage", "okta.roles.manage")
SCOPE_FOR_PATH = (("/api/v1/logs", "okta.logs.read"), ("/api/v1/iam", "okta.roles.read"),
                  ("/roles", "okta.roles.read"), ("/api/v1/apps", "okta.apps.read"),
                  ("/api/v1/groups", "okta.groups.read"), ("/api/v1/users", "okta.users.read"))


def rate_family(url: str) -> str:
    """Okta's rate-limit bucket of a request (https://developer.okta.com/docs/reference/rl-global-mgmt/):
    `/api/v1/groups` (list, create), `/api/v1/groups/{id}` (one object), `/api/v1/groups*` (every other call
    under it: members, owners, roles, rules), likewise users, apps, iam; `/api/v1/logs` alone."""
    parts = urlsplit(url).path.rstrip("/").split("/")
    if len(parts) <= 4 or parts[1:3] != ["api", "v1"]:
        return "/".join(parts[:4]) or "/"
    if len(parts) == 5 and parts[4] not in ("rules", "assignees"):
        return "/".join(parts[:4]) + "/{id}"
    return "/".join(parts[:4]) + "*"


def concurrency_429(response: Any, budget: Any) -> bool:
    """A 429 for too many requests in flight, not for a spent per-minute budget: Okta's headers then report
    the concurrent values (rl-best-practices); okta-sdk-python (okta/request_executor.py): "both
    X-Rate-Limit-Limit and X-Rate-Limit-Remaining being 0 indicates concurrent rate limit error". A limit
    other than the one the family's own answers carried is the concurrent one too."""
    def num(name: str) -> int | None:
        try:
            return int(float(response.headers[name]))
        except (KeyError, ValueError):
            return None

    limit, remaining = num("x-rate-limit-limit"), num("x-rate-limit-remaining")
    if limit == 0 and remaining == 0:
        return True
    known = getattr(budget, "limit", None)
    return bool(known) and limit is not None and limit != known


def _scope_from_header(headers: Mapping[str, str]) -> str | None:
    value = {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "")
    m = re.search(r'scope="([^"]+)"', value)
    return m.group(1) if m else None


def _scope_for(path: str, method: str) -> str:
    for prefix, scope in SCOPE_FOR_PATH:
        if prefix in path:
            return scope.replace(".read", ".manage") if method != "GET" else scope
    return "okta.users.read"


class HttpMixin:
    """The HTTP layer of OktaConnector (dumb: raises on failure)."""

    # -- calls: every request, token requests included ----------------------------------------------
    @property
    def calls(self) -> int:  # type: ignore[override]
        return self._base_calls + sum(c.calls for c in (self._http, self._token_http) if c is not None)

    @calls.setter
    def calls(self, value: int) -> None:
        self._base_calls = value

    @property
    def oauth(self) -> bool:
        return not self.secrets.get("token")

    # -- HTTP layer (dumb: raises on failure) --------------------------------------------------------
    @property
    def http(self) -> HttpClient:
        with self._token_lock:
            if self._http is None:
                self._http = HttpClient(self.domain, auth_header=self._auth_header, max_concurrency=self.concurrency,
                                        headers={"User-Agent": "attest-okta/0.1"}, sleep=self._sleep, clock=self._clock,
                                        budget=lambda method, url: rate_family(url), server_date=True,
                                        reset_margin=1.0, concurrency_limited=concurrency_429)
            return self._http

    def close(self) -> None:
        for client in (self._http, self._token_http):
            if client is not None:
                client.close()

    def _auth_header(self) -> dict[str, str]:
        if not self.oauth:
            return {"Authorization": f"SSWS {self.secrets['token']}"}
        return {"Authorization": f"Bearer {self._access_token(self._scopes)}"}

    def _access_token(self, scopes: tuple[str, ...]) -> str:
        with self._token_lock:
            cached = self._tokens.get(scopes)
            if cached and cached[1] - 60 > self._clock():
                return cached[0]
            token, lifetime = self._fetch_token(scopes)
            self._tokens[scopes] = (token, self._clock() + lifetime)
            return token

    def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        from authlib.oauth2.rfc7523 import private_key_jwt_sign

        url = f"{self.domain}/oauth2/v1/token"
        header = {"kid": self.settings["key_id"]} if self.settings.get("key_id") else None
        key, alg = self._signing_key()
        assertion = private_key_jwt_sign(key, self.secrets["client_id"], url, alg=alg, header=header,
                                         expires_at=int(time.time()) + 300)
        if isinstance(assertion, bytes):
            assertion = assertion.decode()
        if self._token_http is None:
            self._token_http = HttpClient(self.domain, max_concurrency=1, sleep=self._sleep, clock=self._clock,
                                          server_date=True,
                                          reset_margin=1.0)
        try:
            response = self._token_http.request("POST", "/oauth2/v1/token", data={
                "grant_type": "client_credentials", "scope": " ".join(scopes),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            })
        except HttpError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error, desc = body.get("error", f"HTTP {exc.status}"), body.get("error_description", "")
            if error == "invalid_scope":
                raise ConnectorError(
                    f"Okta refused the OAuth token request: {desc or error}. Grant these scopes to the service app "
                    f"(Admin Console > Applications > the app > Okta API Scopes): {', '.join(scopes)}") from None
            if error == "invalid_client":
                raise ConnectorError(
                    f"Okta rejected the service app's client assertion: {desc or error}. Check the client_id, that "
                    "the app uses 'Public key / Private key' client authentication with this key's public half "
                    "registered (and key_id set when it has several keys), and that 'Require DPoP' is off.") from None
            raise ConnectorError(f"Okta's token endpoint failed: {error} {desc}".strip()) from None
        payload = response.json()
        token = payload.get("access_token")
        if not token:
            raise ConnectorError("Okta's token endpoint answered without an access_token")
        return token, float(payload.get("expires_in") or 3600)

    def _signing_key(self) -> tuple[Any, str]:
        """The private key as a JWK object and its algorithm (connectors/keys.py: RS256 for RSA keys, ES256
        for EC P-256 keys)."""
        from joserfc.jwk import ECKey, RSAKey

        pem = self.secrets["private_key"]
        algorithm = signing_algorithm(pem, "private_key", OKTA_ALGORITHMS)
        return (RSAKey if algorithm == "RS256" else ECKey).import_key(pem), algorithm

    def _call(self, fn: Callable[[], Any], method: str, path: str, raw: bool = False) -> Any:
        """Run one request; an expired OAuth token is refreshed once; 401/403 become a ConnectorError
        (unless `raw`: the caller handles them); an org that cannot be reached is named with its host."""
        try:
            return fn()
        except HttpError as exc:
            if exc.status == 401 and self.oauth and not (isinstance(exc.body, dict)
                                                         and exc.body.get("errorCode") == "E0000015"):
                with self._token_lock:
                    self._tokens.pop(self._scopes, None)
                try:
                    return fn()
                except HttpError as again:
                    exc = again
            if exc.status == 0:
                raise ConnectorError(
                    f"Could not reach Okta at {self.domain} ({method} {path}: {exc.body}). Check the source's domain "
                    "setting (your org URL, like https://acme.okta.com), DNS, and any proxy or firewall between "
                    "Attest and Okta.") from None
            if exc.status in (401, 403) and not raw:
                raise self._auth_error(exc, method, path) from None
            raise

    def _auth_error(self, exc: HttpError, method: str, path: str) -> ConnectorError:
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("errorCode") or f"HTTP {exc.status}"
        summary = body.get("errorSummary") or ""
        if exc.status == 401:
            what = "the OAuth access token" if self.oauth else "the API token"
            return ConnectorError(f"Okta rejected {what} on {method} {path} ({code} {summary}). "
                                  + ("Check the service app is active and its key is registered." if self.oauth else
                                     "The token is wrong, expired or revoked, or the admin who created it was "
                                     "deactivated: create a new token and update the source's secret."))
        scope = _scope_from_header(exc.headers) or _scope_for(path, method)
        if self.oauth:
            return ConnectorError(f"Okta at {self.domain} refused {method} {path} ({code} {summary}): the service "
                                  f"app's token lacks the scope {scope}. Grant {scope} to the app (Admin Console > Applications > "
                                  "the app > Okta API Scopes) and give the app an admin role that can read it.")
        return ConnectorError(f"Okta at {self.domain} refused {method} {path} ({code} {summary}): the API token's admin "
                              f"lacks the permission behind {scope}. Create the token as an admin with the Read-Only "
                              "Administrator role (Super Administrator to also revoke access).")

    def _pages(self, path: str, params: Mapping[str, Any] | None = None, raw: bool = False) -> Iterator[list[Any]]:
        """Each page's JSON list, following only the `Link: rel="next"` header (absolute URLs). A `next`
        link back at a page already served, or more pages than the client's cap, raise PagingError."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        guard = PageGuard(f"Okta GET {path}", self.http.max_pages)
        while url:
            response = self._call(lambda u=url, q=query: self.http.get(u, params=q), "GET", path, raw)
            guard.seen_url(str(response.url))
            query = None
            try:
                page = response.json()
            except ValueError:
                raise HttpError(response.status_code, "GET", str(response.url), "response is not JSON") from None
            if not isinstance(page, list):
                raise HttpError(response.status_code, "GET", str(response.url),
                                f"expected a JSON list, got {type(page).__name__}")
            yield page
            url = guard.check(next_link(response))

    def _get_json(self, path: str) -> Any:
        return self._call(lambda: self.http.get_json(path), "GET", path)

    def _get_assignees(self) -> list[str]:
        """Users with admin role assignments; this endpoint pages in the body (`_links.next.href`)."""
        out: list[str] = []
        url: str | None = "/api/v1/iam/assignees/users"
        params: dict[str, Any] | None = {"limit": PAGE["assignees"]}
        guard = PageGuard("Okta GET /api/v1/iam/assignees/users", self.http.max_pages)
        while url:
            response = self._call(lambda u=url, p=params: self.http.get(u, params=p), "GET", "/api/v1/iam/assignees/users")
            guard.seen_url(str(response.url))
            params = None
            body = response.json()
            for row in (body.get("value") or []) if isinstance(body, dict) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    out.append(row["id"])
            url = guard.check(next_link(response) or (
                ((body.get("_links") or {}).get("next") or {}).get("href") if isinstance(body, dict) else None))
        return out

    def _get_resource_set_labels(self) -> dict[str, str]:
        """Resource set id -> label (GET /api/v1/iam/resource-sets, paged in the body by `_links.next.href`),
        so a custom role's entitlement names its resource set as an admin sees it, not by its id. An org
        without custom roles (or an edition without the endpoint) answers 404: no labels, ids stay."""
        out: dict[str, str] = {}
        url: str | None = "/api/v1/iam/resource-sets"
        guard = PageGuard("Okta GET /api/v1/iam/resource-sets", self.http.max_pages)
        while url:
            try:
                response = self._call(lambda u=url: self.http.get(u), "GET", "/api/v1/iam/resource-sets")
            except HttpError as exc:
                if exc.status == 404:
                    return out
                raise
            guard.seen_url(str(response.url))
            body = response.json()
            for row in (body.get("resource-sets") or []) if isinstance(body, dict) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("label"), str):
                    out[row["id"]] = row["label"]
            url = guard.check(next_link(response) or (
                ((body.get("_links") or {}).get("next") or {}).get("href") if isinstance(body, dict) else None))
        return out

    def _logs_unreadable(self, exc: HttpError) -> str:
        """What to do about a System Log that answered 401/403/404."""
        body = exc.body if isinstance(exc.body, dict) else {}
        code = f"HTTP {exc.status} {body.get('errorCode') or ''}".strip()
        if exc.status == 404:
            why = "the endpoint was not found there"
            fix = "check the domain is your Okta org URL"
        elif self.oauth:
            why = "the service app's token lacks the scope okta.logs.read"
            fix = ("grant okta.logs.read to the app (Admin Console > Applications > the app > Okta API Scopes) "
                   "with an admin role that can read the System Log")
        else:
            why = "the API token's admin may not read the System Log (okta.logs.read)"
            fix = "create the token as an admin with the Read-Only Administrator role or higher"
        return (f"Okta at {self.domain} did not let Attest read the System Log (GET /api/v1/logs: {code}): {why}, so "
                f"the last SSO per app is not read. To fix it, {fix}; or set log_days=0 to stop reading it.")

    def _get_json_list(self, path: str, gone_ok: bool = False) -> list[Any]:
        """A JSON list; with `gone_ok`, [] when the object was deleted meanwhile (404)."""
        try:
            data = self._get_json(path)
        except HttpError as exc:
            if gone_ok and exc.status == 404:
                return []
            raise
        return data if isinstance(data, list) else []

    def _list(self, path: str, params: Mapping[str, Any]) -> list[Any]:
        """Every row of a paged listing."""
        return [row for page in self._pages(path, params) for row in page]
