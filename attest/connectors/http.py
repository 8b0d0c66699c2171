"""One small HTTP helper for REST connectors (Okta, GitHub): Link paging, rate limits, retries, counting.

- `paginate()` follows only the `Link: <...>; rel="next"` header, as both vendors document (parsed by
  httpx, `response.links`; see `next_link`).
- Rate limits: on 429 (or a 403 that carries rate-limit headers, GitHub's secondary limit) it waits for
  `Retry-After`, else until `X-RateLimit-Reset`/`X-Rate-Limit-Reset` (epoch seconds), else `default_wait`
  (doubling while the same request keeps being refused), then retries; other threads hold back meanwhile.
  When the remaining budget falls under `slowdown_below` of the limit, requests are spaced so the budget
  lasts until the reset.
- Rate-limit state is kept per budget (`rates`, keyed by `budget(method, url)`; the response may name its
  budget itself, `budget_header`, e.g. GitHub's `x-ratelimit-resource`: core, graphql, search...), so one
  exhausted budget never slows the calls that draw on another. Without `budget` there is one budget, "".
- Clock skew (`server_date`): the wait on a 429 and the pacing read `X-Rate-Limit-Reset` against the
  response's own `Date` header (the upstream's clock), plus `reset_margin`, as Okta's SDK does
  (okta-sdk-python okta/request_executor.py: `calculate_backoff` returns `retry_limit_reset - date_time + 1`),
  so a local clock ahead of the upstream's never turns a wait into an immediate retry. Holds after a 429
  are per budget too.
- Concurrency limits (`concurrency_limited(response, budget_state)`, a connector's rule that says when a
  429 refused a request for being one too many in flight): the client halves the requests it keeps in
  flight (never below 1), holds every budget for a short back-off, and later adds one slot back after
  `increase_after` untroubled requests, but never up to a level that was refused (AIMD).
- Redirects (`follow_redirects`): 301/302/307/308 are re-issued with the same method and body to
  `Location` (GitHub: "the request should be repeated verbatim"), at most `max_redirects` times and only
  on the same origin (credentials never go to another host); a redirect not followed is an HttpError,
  never a success.
- Transient failures (5xx, timeouts, connection resets) are retried with exponential back-off.
- Any other 4xx raises HttpError at once with the status, the vendor's error body and the request.
- `calls` counts every request sent, retries included; it is thread-safe, and `max_concurrency`
  bounds requests in flight across the threads that share this client.
- Paging never loops (issue 16): a `next` link (or a cursor, see PageGuard) that points at a page
  already read, or more than `max_pages` pages (MAX_PAGES, 100,000 by default) in one listing, stops
  with a PagingError naming the listing; upstreams have answered with the same `next` link hundreds of
  times in a row.
- Secrets never leave in an error: an HttpError's body and message are redacted (attest/redact.py) of
  the credentials this client sent and of anything that looks like one, because error pages echo the
  request's `Authorization` header.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from attest.connectors.base import ConnectorError
from attest.redact import install_filter, redact_value

log = install_filter(logging.getLogger(__name__))

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
MAX_PAGES = 100_000  # pages of one listing (20 million Okta users at 200 a page): beyond it, a loop


class HttpError(Exception):
    """An upstream refused or failed. `body` (the vendor's parsed error body) and the message are
    redacted: of `secrets` (the credentials sent) and of anything that looks like a secret."""

    def __init__(self, status: int, method: str, url: str, body: Any, headers: Mapping[str, str] | None = None,
                 secrets: Iterable[str] = ()):
        self.status = status
        self.method = method
        self.url = _redact_url(url)
        self.body = redact_value(body, tuple(secrets))
        self.headers = {k: v for k, v in dict(headers or {}).items() if k.lower() not in _SECRET_HEADERS}
        super().__init__(f"{method} {self.url} -> HTTP {status}: {_summarize(self.body)}")


_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


class PagingError(ConnectorError):
    """Paging was stopped: a `next` link or cursor repeated, or the page cap was reached."""


class PageGuard:
    """Follows one listing's pages: `check(token)` before each `next` link or cursor is followed.

    A token already seen (the upstream points back at a page it served) or more than `max_pages` pages
    raise PagingError naming the listing, instead of paging forever."""

    def __init__(self, what: str, max_pages: int = MAX_PAGES, first: str | None = None) -> None:
        self.what = what
        self.max_pages = max_pages
        self.pages = 1
        self.seen: set[str] = {first} if first else set()

    def check(self, token: str | None) -> str | None:
        if token is None:
            return None
        if token in self.seen:
            raise PagingError(
                f"{self.what}: the upstream's next page ({_show(token)}) is one it already served, after "
                f"{self.pages:,} pages; paging stopped (an upstream paging loop), nothing was changed")
        if self.pages >= self.max_pages:
            raise PagingError(
                f"{self.what}: more than {self.max_pages:,} pages; paging stopped at the page cap (MAX_PAGES, "
                "docs/connectors), nothing was changed")
        self.seen.add(token)
        self.pages += 1
        return token

    def seen_url(self, url: str) -> None:
        """Also count the URL a page was served from (its `self`), so a `next` link back at it repeats."""
        self.seen.add(url)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _show(token: str) -> str:
    """A next link without its query (it may carry a token), or a cursor as it is."""
    return _redact_url(token) if "://" in token else token[:100]


def _summarize(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("errorSummary", "message", "error_description", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def require_https(url: str, setting: str = "domain") -> str:
    """https is required except for loopback hosts (tests, the sandbox)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{setting} must be a URL like https://example.com, not {url!r}")
    if parts.scheme != "https" and (parts.hostname or "") not in LOOPBACK_HOSTS:
        raise ValueError(f"{setting} must use https (plain http is only allowed for loopback hosts)")
    return url.rstrip("/")


def next_link(response: httpx.Response) -> str | None:
    """The response's `Link: <...>; rel="next"` target as an absolute URL, or None. httpx parses the header
    (`response.links`); a relation may list several names (rel="next last"); a relative target resolves
    against the request's URL (RFC 8288)."""
    target = None
    for link in response.links.values():
        if "next" in link.get("rel", "").split() and link.get("url"):
            target = link["url"]  # the last one named next, as a dict of relations would keep
    if not target:
        return None
    url = response.url.join(target)
    here = response.url
    if (url.scheme, url.host, url.port) != (here.scheme, here.host, here.port):
        # the next request would carry the source's token: never to another origin (as redirects)
        raise PagingError(
            f"GET {_redact_url(str(here))}: the upstream's next page points at another origin "
            f"({url.scheme}://{url.host}{':' + str(url.port) if url.port else ''}); paging stopped so the "
            "source's credentials are not sent there, nothing was changed")
    return str(url)


@dataclass
class RateLimitState:
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


REDIRECTS = (301, 302, 307, 308)


class HttpClient:
    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth_header: Callable[[], Mapping[str, str]] | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        max_concurrency: int = 4,
        default_wait: float = 60.0,
        max_wait: float = 900.0,
        slowdown_below: float = 0.1,
        rate_limit_on_403: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        max_pages: int = MAX_PAGES,
        budget: Callable[[str, str], str] | None = None,
        budget_header: str | None = None,
        follow_redirects: bool = False,
        max_redirects: int = 5,
        server_date: bool = False,
        reset_margin: float = 0.05,
        concurrency_limited: Callable[[httpx.Response, RateLimitState | None], bool] | None = None,
        increase_after: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth_header = auth_header
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/json", "User-Agent": "attest/0.1", **dict(headers or {})},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max(max_concurrency, 1) * 2),
        )
        self.max_retries = max_retries
        self.default_wait = default_wait
        self.max_wait = max_wait
        self.slowdown_below = slowdown_below
        self.rate_limit_on_403 = rate_limit_on_403
        self.max_pages = max_pages
        self.sleep = sleep
        self._slots = _Slots(max(max_concurrency, 1))
        self._lock = threading.Lock()
        self.calls = 0
        self.waits: list[float] = []  # every rate-limit wait, for reports and tests
        self._holds: dict[str, float] = {}  # budget ("*": all) -> after a 429, threads hold back until then
        self.server_date = server_date
        self.reset_margin = reset_margin
        self.concurrency_limited = concurrency_limited
        self.increase_after = increase_after
        self.clock = clock
        self.concurrency_events = 0  # 429s for too many requests in flight (each halved `concurrency`)
        self._calm = 0  # requests answered since the last concurrency 429
        self.budget = budget or (lambda method, url: "")
        self.budget_header = budget_header
        self.rates: dict[str, RateLimitState] = {}  # budget -> its last observed state
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects

    def close(self) -> None:
        self._client.close()

    # -- rate limit bookkeeping --------------------------------------------------------------------
    @staticmethod
    def _header_int(headers: httpx.Headers, *names: str) -> int | None:
        for name in names:
            value = headers.get(name)
            if value is not None:
                try:
                    return int(float(value))
                except ValueError:
                    return None
        return None

    @property
    def concurrency(self) -> int:
        """Requests this client keeps in flight now (lowered after a concurrency 429)."""
        return self._slots.limit

    def _server_now(self, response: httpx.Response) -> float:
        """The upstream's clock when it answered (its `Date` header) with `server_date`, else the local clock."""
        if self.server_date and response.headers.get("date"):
            try:
                return parsedate_to_datetime(response.headers["date"]).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
        return self.clock()

    @property
    def rate(self) -> RateLimitState:
        """The state of the one budget of a client without `budget` (the last observed one otherwise)."""
        return self.rates.get("") or next(reversed(self.rates.values()), RateLimitState())

    def _observe(self, response: httpx.Response, key: str) -> None:
        h = response.headers
        limit = self._header_int(h, "x-rate-limit-limit", "x-ratelimit-limit")
        remaining = self._header_int(h, "x-rate-limit-remaining", "x-ratelimit-remaining")
        reset = self._header_int(h, "x-rate-limit-reset", "x-ratelimit-reset")
        if remaining is None:
            return
        if self.budget_header and h.get(self.budget_header):
            key = h[self.budget_header]
        if reset is not None and self.server_date:  # the reset on the local clock: skew taken out
            reset = self.clock() + (reset - self._server_now(response))
        with self._lock:
            self.rates[key] = RateLimitState(limit, remaining, float(reset) if reset is not None else None)

    def _pace(self, key: str) -> None:
        """Spread the remaining budget over the time left when it runs low."""
        state = self.rates.get(key)
        if state is None or not state.limit or state.remaining is None or state.reset_at is None:
            return
        if state.remaining > state.limit * self.slowdown_below:
            return
        left = state.reset_at - self.clock()
        if left <= 0:
            return
        delay = min(left / max(state.remaining, 1), self.max_wait)
        if delay > 0.01:
            self.sleep(delay)

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        h = response.headers
        retry_after = h.get("retry-after")
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_wait)
            except ValueError:
                pass
        reset = self._header_int(h, "x-rate-limit-reset", "x-ratelimit-reset")
        remaining = self._header_int(h, "x-rate-limit-remaining", "x-ratelimit-remaining")
        if reset is not None and (remaining is None or remaining == 0 or response.status_code == 429):
            return min(max(reset - self._server_now(response), 0.0) + self.reset_margin, self.max_wait)
        return self.default_wait

    def _is_rate_limited(self, response: httpx.Response) -> bool:
        if response.status_code == 429:
            return True
        if response.status_code == 403 and self.rate_limit_on_403:
            h = response.headers
            if h.get("retry-after") is not None:
                return True
            if h.get("x-ratelimit-remaining") == "0":
                return True
            try:
                message = str(response.json().get("message", "")).lower()
            except Exception:
                message = ""
            return "rate limit" in message
        return False

    # -- requests ----------------------------------------------------------------------------------
    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        limited = 0  # rate-limit refusals of this request
        redirects = 0
        key = self.budget(method, str(url))
        while True:
            self._pace(key)
            hold = max(self._holds.get(key, 0.0), self._holds.get("*", 0.0)) - self.clock()
            if hold > 0:  # another thread was told to wait: do not send into the limit
                self.sleep(hold)
            headers = dict(kwargs.pop("headers", {}) or {})
            if self._auth_header is not None:
                headers.update(self._auth_header())
            sent = [v for k, v in headers.items() if k.lower() in _SECRET_HEADERS]  # redacted from errors
            try:
                with self._slots:
                    with self._lock:
                        self.calls += 1
                    response = self._client.request(method, url, headers=headers, **kwargs)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise HttpError(0, method, str(self._client.base_url.join(str(url))), f"{type(exc).__name__}: {exc}",
                                    secrets=sent) from exc
                self.sleep(self._backoff(attempt))
                kwargs["headers"] = headers
                continue
            kwargs["headers"] = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            concurrent = response.status_code == 429 and self.concurrency_limited is not None and \
                self.concurrency_limited(response, self.rates.get(key))
            if not concurrent:  # a concurrency 429 reports the concurrent values, not the budget's (Okta)
                self._observe(response, key)
            self._adapt(concurrent)
            if response.status_code in REDIRECTS:
                if not self.follow_redirects:  # never a success: the request did not reach what it meant
                    raise HttpError(response.status_code, method, str(response.url), _body(response),
                                    response.headers, secrets=sent)
                url = self._redirect_target(method, str(url), response, redirects, sent)
                redirects += 1
                continue
            if self._is_rate_limited(response):
                attempt += 1
                if attempt > self.max_retries + 4:
                    raise HttpError(response.status_code, method, str(response.url), _body(response), secrets=sent)
                wait = self._backoff(attempt) if concurrent else self._rate_limit_wait(response)
                limited += 1
                if limited > 1 and wait == self.default_wait and response.headers.get("retry-after") is None:
                    # a limit that keeps refusing without saying how long: wait exponentially longer (GitHub)
                    wait = min(self.default_wait * 2 ** (limited - 1), self.max_wait)
                with self._lock:
                    self.waits.append(wait)
                    hold_key = "*" if concurrent else key
                    self._holds[hold_key] = max(self._holds.get(hold_key, 0.0), self.clock() + wait)
                log.info("rate limited on %s %s; waiting %.1fs", method, _redact_url(str(response.url)), wait)
                self.sleep(wait)
                continue
            if response.status_code >= 500:
                attempt += 1
                if attempt > self.max_retries:
                    raise HttpError(response.status_code, method, str(response.url), _body(response), secrets=sent)
                self.sleep(self._backoff(attempt))
                continue
            if response.status_code >= 400:
                raise HttpError(response.status_code, method, str(response.url), _body(response), response.headers,
                                secrets=sent)
            return response

    def _adapt(self, concurrent: bool) -> None:
        """AIMD on requests in flight: halve after a concurrency 429, add one after `increase_after` calm
        answers, never back up to a level that was refused."""
        with self._lock:
            if concurrent:
                self.concurrency_events += 1
                self._calm = 0
                now = self._slots.limit
                self._slots.ceiling = max(1, min(self._slots.ceiling, now - 1))
                if now > 1:
                    self._slots.set(max(1, now // 2))
                    log.info("too many requests in flight for the upstream; lowered concurrency to %d",
                             self._slots.limit)
                return
            self._calm += 1
            if self._calm >= self.increase_after and self._slots.limit < self._slots.ceiling:
                self._calm = 0
                self._slots.set(self._slots.limit + 1)

    def _redirect_target(self, method: str, url: str, response: httpx.Response, hops: int,
                         sent: list[str]) -> str:
        """Where a 301/302/307/308 sends the same request: same origin only, at most `max_redirects` hops."""
        location = response.headers.get("location")
        if not location:
            raise HttpError(response.status_code, method, str(response.url), "a redirect without a Location",
                            response.headers, secrets=sent)
        target = response.url.join(location)
        origin = self._client.base_url
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
            raise HttpError(response.status_code, method, str(response.url),
                            f"redirected to another host ({target.scheme}://{target.host}); not followed, so the "
                            "credentials are not sent there", response.headers, secrets=sent)
        if hops >= self.max_redirects:
            raise HttpError(response.status_code, method, str(response.url),
                            f"more than {self.max_redirects} redirects", response.headers, secrets=sent)
        log.info("%s %s redirected (HTTP %s) to %s", method, _redact_url(str(response.url)), response.status_code,
                 _redact_url(str(target)))
        return str(target)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(0.25 * (2 ** (attempt - 1)), 20.0) * (0.75 + random.random() / 2)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def get_json(self, url: str, **kwargs: Any) -> Any:
        response = self.get(url, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise HttpError(response.status_code, "GET", str(response.url), "response is not JSON") from exc

    def paginate(self, url: str, params: Mapping[str, Any] | None = None) -> Iterator[list[Any]]:
        """Yield each page's JSON list, following rel="next" until there is none; a `next` link back at a
        page already served, or more than `max_pages` pages, raise PagingError (see PageGuard)."""
        next_url: str | None = url
        first = True
        guard = PageGuard(f"GET {_redact_url(str(self._client.base_url.join(url)))}", self.max_pages)
        while next_url:
            response = self.get(next_url, params=params if first else None)
            guard.seen_url(str(response.url))
            first = False
            try:
                page = response.json()
            except ValueError as exc:
                raise HttpError(response.status_code, "GET", str(response.url), "response is not JSON") from exc
            if not isinstance(page, list):
                raise HttpError(response.status_code, "GET", str(response.url), f"expected a JSON list, got {type(page).__name__}")
            yield page
            next_url = guard.check(next_link(response))


class _Slots:
    """At most `limit` requests in flight; the limit can change while requests run (see HttpClient._adapt)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ceiling = limit
        self.busy = 0
        self._cond = threading.Condition()

    def set(self, limit: int) -> None:
        with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()

    def __enter__(self) -> _Slots:
        with self._cond:
            while self.busy >= self.limit:
                self._cond.wait()
            self.busy += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify_all()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]
