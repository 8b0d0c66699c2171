"""Small factory functions that seed data for tests, and a connector that replays given records."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from flask import Flask
from flask.testing import FlaskClient
from flask_login.utils import _create_identifier
from sqlalchemy.orm import Session

from attest.auth.models import User
from attest.connectors.base import BaseConnector, Record, Setting
from attest.entitlements.models import Identity, Source


class ListConnector(BaseConnector):
    """Replays records; raises `fail_with` after `fail_after` records (a failure mid-sync)."""

    kind: ClassVar[str] = "demo"
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, records: Iterable[Record], fail_after: int | None = None,
                 fail_with: Exception | None = None) -> None:
        super().__init__({}, {})
        self.records = list(records)
        self.fail_after = fail_after
        self.fail_with = fail_with or ConnectionError("upstream returned HTTP 500 on the last page")

    def validate(self) -> None:
        self.calls += 1

    def sync(self) -> Iterator[Record]:
        for i, rec in enumerate(self.records):
            if self.fail_after is not None and i >= self.fail_after:
                raise self.fail_with
            if i % 100 == 0:
                self.calls += 1
            yield rec


class Clock:
    """A clock a test moves by hand (inject it where the code takes one): no sleeps."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class UpstreamTime:
    """An upstream's clock (epoch seconds, as rate-limit reset headers say it) and the connector's sleep in
    one: time passes only while the connector waits, so a test sees every wait it asked for without spending
    it. Hand it to the fake as its clock and to the connector as `sleep=clock.sleep`."""

    START = 1_795_000_000.0  # a whole second, as reset headers and Date say it

    def __init__(self) -> None:
        self.now = self.START
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.now += max(seconds, 0.0)


def make_source(session: Session, name: str = "src", kind: str = "demo", authoritative: bool = False,
                settings: dict[str, Any] | None = None) -> Source:
    source = Source(kind=kind, name=name, settings=settings or {}, authoritative=authoritative, enabled=True)
    session.add(source)
    session.flush()
    return source


def make_identity(session: Session, email: str, name: str = "", manager: Identity | None = None,
                  status: str = "active", source: Source | None = None, **kw: Any) -> Identity:
    identity = Identity(
        source_id=source.id if source else None, external_id=kw.pop("external_id", email), email=email,
        email_normalized=email.lower(), login=kw.pop("login", email), display_name=name or email.split("@")[0],
        manager_id=manager.id if manager else None, status=status, **kw,
    )
    session.add(identity)
    session.flush()
    return identity


def make_user(session: Session, email: str, roles: Iterable[str] = (), identity: Identity | None = None,
              password: str | None = None) -> User:
    from attest.auth.login import hash_password

    user = User(email=email.lower(), display_name=email.split("@")[0], local_roles=sorted(roles), idp_roles=[],
                identity_id=identity.id if identity else None,
                password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return user


def login_as(app: Flask, client: FlaskClient, user: User) -> None:
    """Sign a user in on the test client the way a completed sign-in leaves the session (a server-side
    session record included, committed through the app's own session factory)."""
    from attest.auth import sessions

    with app.test_request_context(environ_base=client.environ_base):
        identifier = _create_identifier()
        now = sessions.clock()
    db = app.extensions["attest"].factory()
    try:
        token = sessions.start(db, user.id, "test", now, ip=client.environ_base.get("REMOTE_ADDR", "127.0.0.1"))
        db.commit()
    finally:
        db.close()
    with client.session_transaction() as sess:
        sess["_user_id"] = user.get_id()
        sess["_fresh"] = True
        sess["_id"] = identifier
        sess[sessions.COOKIE_KEY] = token
        sess["login_method"] = "test"
