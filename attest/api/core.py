"""The API's machinery: the spectree instance, the blueprint, token authentication, the per-token rate limit,
the audit of every call, scope checks, route declarations (`Routes`), response models made from rows
(`model_of`, `out`), opaque keyset cursors and ETags.

Request order under /api/v1 (besides the docs and the OpenAPI document, which need no token):
1. `authenticate`: `Authorization: Bearer <token>` or 401 (`WWW-Authenticate: Bearer`); cookies are never
   read (the app's session hook skips /api/, Flask-Login is given the token's user for the request).
2. `take_from_bucket`: one token from the token's bucket or 429 with `Retry-After`; every answer carries
   `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`. The bucket lives in the `api_token` row
   (one UPDATE per call, the same one that stamps `last_used_at`) so several web workers share one budget.
3. the view, declared with `Routes(tag).get/post/...(rule, scope, role, ...)`: `@requires(scope, role)` (403),
   spectree's validation (422), the service call.
4. `audit_call` (after the response): one `api.call` audit event per call, reads and writes alike, with the
   token's id, name, kind and user, the method, path and status (writes also leave their own events from
   the services they call).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import logging
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import partialmethod, wraps
from types import UnionType
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from flask import Blueprint, g, request
from flask_login import AnonymousUserMixin
from pydantic import BaseModel, ConfigDict, Field, create_model
from spectree import Response as SpecResponse
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from sqlalchemy import Select, select
from sqlalchemy.orm import Mapped, Session

from attest.api.errors import (
    ApiError,
    error_response,
    from_api_error,
    rewrite_response_validation_error,
    rewrite_validation_error,
)
from attest.auth import tokens
from attest.auth.models import ApiToken
from attest.db import utcnow
from attest.entitlements.queries import BadCursor
from attest.inputs import MAX_ID
from attest.reviews.decisions import Forbidden, NotFound
from attest.trail.chain import record
from attest.web import db, settings, write

PREFIX = "/api/v1"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

clock: Callable[[], datetime] = utcnow  # tests inject tests.factories.Clock here

spec = SpecTree(
    "flask",
    title="Attest API",
    version="1",
    description=("Attest's REST API. Authenticate with `Authorization: Bearer <token>` (tokens are created on "
                 "the Tokens page). Errors: `{\"error\": {\"code\", \"message\", \"details\"}}`. Lists are "
                 "keyset-paged: pass the answer's `next` as `after`. Writes accept `If-Match` with the ETag "
                 "of the object read (412 when it changed). See docs/api.md."),
    openapi_version="3.1.0",
    mode="strict",
    annotations=False,
    path="api/v1/docs",
    validation_error_status=422,
    before=rewrite_validation_error,
    after=rewrite_response_validation_error,
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer"))],
    security={"bearer": []},
    # plain component names (`ErrorBody`, not `ErrorBody.f01dade`); tests/api check that none collide
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)

bp = Blueprint("api", __name__, url_prefix=PREFIX)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


ERROR_STATUSES = (400, 401, 403, 404, 409, 412, 422, 429)


def responses(ok: type[BaseModel] | None, status: int = 200, **extra: type[BaseModel] | None) -> SpecResponse:
    """A spectree Response: `ok` for `status`, ErrorBody for every error status."""
    codes: dict[str, Any] = {f"HTTP_{c}": ErrorBody for c in ERROR_STATUSES}
    codes[f"HTTP_{status}"] = ok
    codes.update(extra)
    return SpecResponse(**codes)


# a database id given in a query or a body: 1..MAX_ID, as in the URLs (attest/inputs.py)
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def one_of(values: Any) -> str:
    """The `pattern` of a field that takes one of `values` (a StrEnum's: its one home is next to its model)."""
    return f"^({'|'.join(values)})$"


class Paging(BaseModel):
    # the cursor query of every listing: `after` (the `next` of the previous page) and `limit`
    model_config = ConfigDict(extra="forbid")
    after: str | None = Field(default=None, max_length=2000)
    limit: int = Field(default=50, ge=1, le=500)


def page_of(item: type[BaseModel], name: str) -> type[BaseModel]:
    """The response model `name` of a listing: `data`, a page of `item`, and `next`, the cursor of the next
    page (null on the last one)."""
    return create_model(name, data=(list[item], ...), next=(str | None, None))  # type: ignore[valid-type]


def model_of(row: type, name: str, fields: str = "", **extra: Any) -> type[BaseModel]:
    """The response model `name` of the rows of `row` (an ORM model, or a service's row dataclass answered as
    its `as_dict()`): the `fields` named (space-separated; default: every field of the dataclass) in that order,
    typed as the row declares them (`Mapped[...]` unwrapped), a datetime as its ISO string, a type that admits
    None optional (default None); `extra` types the fields the row does not have (computed by the view), or
    gives one `(type, default)` as pydantic's create_model takes it."""
    hints = get_type_hints(row)
    declared: dict[str, Any] = {}
    for field in fields.split() or [f.name for f in dataclasses.fields(row)]:
        hint = extra[field] if field in extra else hints[field]
        if isinstance(hint, tuple):  # (type, default), as pydantic's create_model takes it
            declared[field] = hint
            continue
        if get_origin(hint) is Mapped:
            hint = get_args(hint)[0]
        kinds = get_args(hint) if isinstance(hint, UnionType) else (hint,)
        kind = functools.reduce(operator.or_, [str if k is datetime else k for k in kinds])
        declared[field] = (kind, None if type(None) in kinds else ...)
    return create_model(name, **declared)


def out(model: type[BaseModel], row: Any, **values: Any) -> dict[str, Any]:
    """`row` answered as `model`: each of its fields from `values`, else the row's attribute of that name; a
    datetime as its ISO string."""
    answer = {}
    for field in model.model_fields:
        value = values[field] if field in values else getattr(row, field)
        answer[field] = value.isoformat() if isinstance(value, datetime) else value
    return answer


# --- who is calling ------------------------------------------------------------------------------------


class Caller:
    """The token of this request and the user it acts as."""

    def __init__(self, token: ApiToken) -> None:
        self.token = token
        self.user = token.user
        self.kind = token.kind
        self.scopes = set(token.scopes or [])
        self.actor = tokens.token_actor(token)

    @property
    def is_service(self) -> bool:
        return self.kind == "service"


def caller() -> Caller:
    c = g.get("api_caller")
    if c is None:  # pragma: no cover - the before_request hook guarantees it
        raise ApiError(401)
    return c


def _refuse(reason: str) -> ApiError:
    text = {"invalid": "The token is not valid.", "expired": "The token has expired.",
            "revoked": "The token was revoked.", "user_inactive": "The token's user is deactivated.",
            "owner_not_admin": "The service token's owner is no longer an administrator.",
            "missing": "A token is needed: Authorization: Bearer <token>."}[reason]
    error = "invalid_request" if reason == "missing" else "invalid_token"
    return ApiError(401, text, code="unauthenticated", details={"reason": reason},
                    headers={"WWW-Authenticate": f'Bearer realm="attest", error="{error}"'})


PUBLIC_ENDPOINTS = {"api.openapi", "api.docs"}


@bp.before_app_request
def _api_requests_never_use_the_session() -> None:
    """Under /api/ nobody is signed in by a cookie: Flask-Login is handed an anonymous user now (the
    token's user after authentication), so the session cookie is never read."""
    if request.path.startswith("/api/"):
        g._login_user = AnonymousUserMixin()
        g.api_token_auth = True


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _refuse("missing")
    now = clock()
    with write() as session:
        found = tokens.check_token(session, presented, now)
        if isinstance(found, tokens.Refusal):
            raise _refuse(found.reason)
        row = locked(session, ApiToken, found.id)
        assert row is not None
        allowed, remaining, reset, retry = take_from_bucket(row, now)
        row.last_used_at = now
        user = row.user
        g.api_rate = (remaining, reset)
        g.api_caller = Caller(row)
    g._login_user = user
    if not allowed:
        raise ApiError(429, f"Too many requests for this token: retry in {retry} s.",
                       headers={"Retry-After": str(retry)})
    return None


def rate_settings() -> tuple[int, float]:
    """(burst, calls per second): ATTEST_API_RATE_BURST and ATTEST_API_RATE_PER_SECOND."""
    s = settings()
    return int(s.api_rate_burst), float(s.api_rate_per_second)


def take_from_bucket(row: ApiToken, now: datetime) -> tuple[bool, int, int, int]:
    """Refill the token's bucket for the time since its last call and take one; (allowed, remaining,
    seconds until full, seconds to wait when refused). The row is locked by the caller."""
    capacity, rate = rate_settings()
    level = float(capacity) if row.rate_tokens is None or row.rate_at is None else row.rate_tokens
    if row.rate_at is not None:
        elapsed = max(0.0, (now - row.rate_at).total_seconds())
        level = min(float(capacity), level + elapsed * rate)
    allowed = level >= 1.0
    if allowed:
        level -= 1.0
    row.rate_tokens = level
    row.rate_at = now
    reset = math.ceil((capacity - level) / rate) if rate > 0 else 0
    retry = 0 if allowed else max(1, math.ceil((1.0 - level) / rate)) if rate > 0 else 3600
    return allowed, int(level), reset, retry


@bp.after_request
def rate_headers_and_audit(response):
    rate = g.get("api_rate")
    if rate is not None:
        capacity, _rate = rate_settings()
        response.headers["RateLimit-Limit"] = str(capacity)
        response.headers["RateLimit-Remaining"] = str(rate[0])
        response.headers["RateLimit-Reset"] = str(rate[1])
    etag = g.get("api_etag")
    if etag and response.status_code < 300:
        response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-store"
    audit_call(response.status_code)
    return response


def audit_call(status: int) -> None:
    """One `api.call` event per authenticated call (its own transaction: a refused write is audited too)."""
    c = g.pop("api_caller", None)
    if c is None:
        return
    session = db()
    try:
        session.rollback()
        with write() as s:
            record(s, actor=c.actor, action="api.call", object_type="api_token", object_id=str(c.token.id),
                   after={"credential": c.token.name, "credential_kind": c.kind, "user": c.user.email,
                          "method": request.method, "path": request.path[:500],
                          "query": request.query_string.decode("utf-8", "replace")[:500], "status": status})
    except Exception:  # the answer stands; the failure is logged (the database is probably unavailable)
        logging.getLogger("attest.api").exception("could not audit the API call %s %s", request.method, request.path)
        session.rollback()


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return from_api_error(exc)


# --- permissions ------------------------------------------------------------------------------------------


def requires(scope: str, role: str | None = None) -> Callable[[F], F]:
    """The token holds `scope`, and its user holds `role` (`read_all`: admin or auditor; `admin`) now."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            c = caller()
            if scope not in c.scopes:
                raise ApiError(403, f"The token lacks the scope {scope}.", code="insufficient_scope",
                               details={"required_scope": scope})
            if role == "admin" and not c.user.is_admin:
                raise ApiError(403, "Only administrators may do this.")
            if role == "read_all" and not c.user.can_read_all:
                raise ApiError(403, "Only administrators and auditors may read this.")
            if role == "reviewer" and (c.is_service or c.user.identity_id is None):
                raise ApiError(403, "Only a person's own token reviews: this token has no reviewer identity.")
            return view(*args, **kwargs)

        wrapped.api_scope = scope  # type: ignore[attr-defined]
        wrapped.api_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


class Routes:
    """The routes of one area of the API, under its OpenAPI tag. `@routes.get(rule, scope, role, resp=..., ...)`
    stands for the prologue every route had: `@bp.get(rule)`, `@requires(scope, role)` and
    `@spec.validate(query=..., json=..., resp=responses(resp, status), tags=[tag])`. `resp=None` is a route
    spectree does not wrap (its operation is documented by hand)."""

    def __init__(self, tag: str) -> None:
        self.tags = [tag]

    def route(self, method: str, rule: str, scope: str, role: str | None = None, *, resp: type[BaseModel] | None,
              status: int = 200, query: type[BaseModel] | None = None,
              json: type[BaseModel] | None = None) -> Callable[[F], F]:
        def decorator(view: F) -> F:
            if resp is not None:
                view = spec.validate(query=query, json=json, resp=responses(resp, status), tags=self.tags)(view)
            guarded = requires(scope, role)(view)
            bp.route(rule, methods=[method])(guarded)
            return guarded

        return decorator

    get = partialmethod(route, "GET")
    post = partialmethod(route, "POST")
    put = partialmethod(route, "PUT")
    patch = partialmethod(route, "PATCH")


@contextmanager
def refused_as(status: int, *errors: type[Exception], code: str | None = None) -> Iterator[None]:
    """A service's refusal (one of `errors`) as an ApiError with `status` (and `code`) and its message."""
    try:
        yield
    except errors as exc:
        raise ApiError(status, str(exc), code=code) from None


def bad_cursors() -> AbstractContextManager[None]:
    """A page link (`after`) the query refuses (`BadCursor`) as 400 `bad_cursor`."""
    return refused_as(400, BadCursor, code="bad_cursor")


@contextmanager
def refusals() -> Iterator[None]:
    """The services' refusals as API errors (attest/web.py's `refusals` for the pages): `NotFound` is 404
    (never 403: what is not the caller's does not exist for them), `Forbidden` is 403 with its reason."""
    try:
        yield
    except NotFound:
        raise ApiError(404) from None
    except Forbidden as exc:
        raise ApiError(403, str(exc)) from None


# --- paging, ETags -------------------------------------------------------------------------------------------


def encode_cursor(kind: str, value: Any) -> str | None:
    """An opaque `next` cursor for `value` (the underlying keyset position) of a list `kind`."""
    if value is None:
        return None
    raw = json.dumps([kind, value], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, of: type | tuple[type, ...] = object) -> Any:
    """The keyset position in a `next` cursor of the list `kind` (None for the first page); 400 for a cursor
    this API did not make, one of another list, or one whose position is not of the type `of`."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_kind, value = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError(400, "That `after` cursor is not one this API made: start from the first page.",
                       code="bad_cursor") from None
    if got_kind != kind:
        raise ApiError(400, "That `after` cursor belongs to another list.", code="bad_cursor")
    if value is not None and not isinstance(value, of):
        raise ApiError(400, "bad cursor", code="bad_cursor")
    return value


def get_or_404(model: type[T], ident: int) -> T:
    """The row of `model` with this id, read in the request's session, or 404."""
    row = db().get(model, ident)
    if row is None:
        raise ApiError(404)
    return row


def locked(session: Session, model: type[T], ident: int) -> T | None:
    """The row of `model` with this id, locked for the rest of the transaction (FOR UPDATE on PostgreSQL) and
    read afresh, or None."""
    return session.scalar(select(model).where(model.id == ident).with_for_update(of=model)  # type: ignore[attr-defined]
                          .execution_options(populate_existing=True))


def locked_or_404(session: Session, model: type[T], ident: int) -> T:
    """`locked`, or 404 when there is no such row."""
    row = locked(session, model, ident)
    if row is None:
        raise ApiError(404)
    return row


def id_page(kind: str, stmt: Select[Any], key: Any, after: int | None, limit: int,
            out: Callable[..., dict[str, Any]], *, newest_first: bool = False) -> dict[str, Any]:
    """A listing's answer: the rows of `stmt` after the position `after` (decoded from the cursor of the list
    `kind`) in the order of the integer column `key` (descending when `newest_first`), at most `limit`, each
    turned into JSON by `out(*row)`, and the cursor of the next page (null on the last one)."""
    if after is not None:
        stmt = stmt.where(key < after if newest_first else key > after)
    rows = db().execute(stmt.order_by(key.desc() if newest_first else key).limit(limit + 1)).all()
    page = rows[:limit]
    last = getattr(page[-1][0], key.key) if len(rows) > limit else None
    return {"data": [out(*row) for row in page], "next": encode_cursor(kind, last)}


def make_etag(*parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:20]
    return f'"{digest}"'


def set_etag(etag: str) -> None:
    g.api_etag = etag


def if_match() -> list[str] | None:
    """The ETags of `If-Match` (None when absent; `*` matches anything)."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    return [p.strip().removeprefix("W/") for p in raw.split(",") if p.strip()]


def check_if_match(current: str) -> None:
    wanted = if_match()
    if wanted is not None and "*" not in wanted and current not in wanted:
        raise ApiError(412, details={"etag": current})


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def api_error_response(status: int, message: str | None = None):
    """For attest/app.py's error handlers: their answer under /api/."""
    headers = {"Retry-After": "30"} if status == 503 else None
    return error_response(status, message, headers=headers)
