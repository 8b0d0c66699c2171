"""Fixtures for the REST API tests: a review world (two managers with items in one campaign, an admin, an
auditor), tokens made through the same service as the Tokens page, and a client that sends them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from attest.auth import tokens
from attest.auth.models import User
from tests.factories import make_user
from tests.reviews.factories import ReviewSetup, add_reviewer, make_grant, make_item, review_setup


@dataclass
class ApiWorld:
    a: ReviewSetup
    b_user: User
    b_items: list
    admin: User
    auditor: User


@pytest.fixture
def api_world(session) -> ApiWorld:
    from attest.entitlements.models import Account

    a = review_setup(session, people=3, per_person=2)
    b_identity, b_user = add_reviewer(session, "bruno.boss@acme.example", "Bruno Boss")
    b_items = []
    for n, person in enumerate(a.people[:2]):
        account = session.get(Account, a.items[n * 2].account_id)
        grant, resource, ent = make_grant(session, a.source, account, f"Bruno-App-{n}")
        b_items.append(make_item(session, a.campaign, b_identity, person, account, grant, resource, ent, a.source))
    admin = make_user(session, "ada.admin@acme.example", roles=("admin",))
    auditor = make_user(session, "otto.auditor@acme.example", roles=("auditor",))
    session.commit()
    return ApiWorld(a, b_user, b_items, admin, auditor)


@pytest.fixture
def make_token(session):
    counter = iter(range(1, 10**6))

    def make(user: User, scopes: list[str] | None = None, kind: str = "personal", days: int | None = 90,
             name: str | None = None) -> str:
        allowed = tokens.allowed_scopes(user, kind)
        created = tokens.create_token(session, user, name or f"token-{next(counter)}",
                                      scopes if scopes is not None else allowed, kind=kind, days=days)
        session.commit()
        return created.token

    return make


class Api:
    def __init__(self, client, token: str | None) -> None:
        self.client = client
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**h, **(extra or {})}

    def get(self, path: str, **kw: Any):
        return self.client.get("/api/v1" + path, headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, json: Any = None, **kw: Any):
        return self.client.post("/api/v1" + path, json=json if json is not None else {},
                                headers=self.headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any):
        return self.client.patch("/api/v1" + path, json=json if json is not None else {},
                                 headers=self.headers(kw.pop("headers", None)), **kw)


@pytest.fixture
def api(client):
    return lambda token: Api(client, token)

