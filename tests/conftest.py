"""Test fixtures: a migrated database per test session, a SAVEPOINT per test, factories for data.

The engine is SQLite by default; set ATTEST_TEST_DATABASE_URL to a PostgreSQL server URL (for example
postgresql://postgres@127.0.0.1:5432/postgres) and every test runs on PostgreSQL instead: the session
creates its own databases there and drops them at the end, never touching others.

- `factory`/`session`: bound to one connection inside an outer transaction that is rolled back after the
  test; a service's `with session.begin()` becomes a SAVEPOINT (SQLAlchemy's "join into an external
  transaction" recipe). Nothing a test writes survives it.
- `fresh_db`: a database of its own with real commits, for tests that need several connections at once
  (scheduler processes, concurrent decisions, a live server for the browser).
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from attest.config import Settings, load_settings
from attest.db import make_engine

PG_ADMIN_URL = os.environ.get("ATTEST_TEST_DATABASE_URL", "")
_counter = itertools.count()


def _pg_url(admin_url: str, name: str) -> str:
    url = make_url(admin_url).set(database=name)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _pg_admin() -> Engine:
    return create_engine(_pg_url(PG_ADMIN_URL, make_url(PG_ADMIN_URL).database or "postgres"),
                         isolation_level="AUTOCOMMIT")


def _migrate(url: str) -> None:
    from alembic import command

    from attest.cli import alembic_config

    command.upgrade(alembic_config(url), "head")


@dataclass
class Databases:
    """The session's databases: `url` for SAVEPOINT tests, a migrated template to clone for fresh ones."""

    url: str
    template: str  # a PostgreSQL database name, or a SQLite file path
    tmp: Path
    created: list[str]

    def fresh(self) -> str:
        n = next(_counter)
        if PG_ADMIN_URL:
            name = f"{self.template}_f{n}"
            with _pg_admin().connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            self.created.append(name)
            return _pg_url(PG_ADMIN_URL, name)
        path = self.tmp / f"fresh{n}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def drop(self, url: str) -> None:
        if PG_ADMIN_URL:
            name = make_url(url).database
            with _pg_admin().connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if name in self.created:
                self.created.remove(name)


@pytest.fixture(scope="session")
def databases(tmp_path_factory) -> Iterator[Databases]:
    tmp = tmp_path_factory.mktemp("db")
    if PG_ADMIN_URL:
        prefix = f"attest_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        template, main = f"{prefix}_tpl", f"{prefix}_main"
        with _pg_admin().connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{template}"'))
        _migrate(_pg_url(PG_ADMIN_URL, template))
        with _pg_admin().connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{main}" TEMPLATE "{template}"'))
        dbs = Databases(_pg_url(PG_ADMIN_URL, main), template, tmp, [template, main])
        try:
            yield dbs
        finally:
            with _pg_admin().connect() as conn:
                for name in reversed(dbs.created):
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        template = tmp / "template.db"
        _migrate(f"sqlite:///{template}")
        main = tmp / "main.db"
        shutil.copyfile(template, main)
        yield Databases(f"sqlite:///{main}", str(template), tmp, [])


@pytest.fixture(scope="session")
def engine(databases) -> Iterator[Engine]:
    eng = make_engine(databases.url)
    yield eng
    eng.dispose()


def make_settings(database_url: str, tmp: Path, **overrides) -> Settings:
    environ = {
        "ATTEST_ENV": "test",
        "ATTEST_DATABASE_URL": database_url,
        "ATTEST_INSTANCE_PATH": str(tmp / "instance"),
        "ATTEST_LOG_LEVEL": "WARNING",
    }
    return load_settings(environ=environ, **overrides)


@pytest.fixture
def settings(databases, tmp_path) -> Settings:
    return make_settings(databases.url, tmp_path)


@pytest.fixture
def connection(engine):
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        if outer.is_active:
            outer.rollback()
        conn.close()


@pytest.fixture
def factory(connection) -> sessionmaker[Session]:
    return sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def session(factory) -> Iterator[Session]:
    s = factory()
    try:
        yield s
    finally:
        s.close()


@dataclass
class FreshDb:
    url: str
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]


@pytest.fixture
def fresh_db(databases, tmp_path) -> Iterator[FreshDb]:
    url = databases.fresh()
    eng = make_engine(url)
    try:
        yield FreshDb(url, make_settings(url, tmp_path), eng,
                      sessionmaker(bind=eng, expire_on_commit=False))
    finally:
        eng.dispose()
        databases.drop(url)


@pytest.fixture
def app(settings, factory):
    from flask.testing import FlaskCliRunner

    from attest.app import create_app

    class CliRunner(FlaskCliRunner):
        """Runs the command inside this test's app context: Flask's `with_appcontext` reuses whatever app
        context is already pushed on the thread, so an app context left behind by an earlier test would
        hand the command that test's app (and its closed connection: ResourceClosedError, seen on xdist)."""

        def invoke(self, cli=None, args=None, **kwargs):
            with self.app.app_context():
                return super().invoke(cli, args, **kwargs)

    application = create_app(settings)
    application.test_cli_runner_class = CliRunner
    state = application.extensions["attest"]
    state.engine.dispose()
    state.factory = factory  # the app's requests run inside the test's rolled-back transaction
    yield application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def nocsrf(app):
    """The app with CSRF off, so a test's form posts reach the handlers (the forged-post tests keep it on)."""
    app.config["WTF_CSRF_ENABLED"] = False
    return app


@pytest.fixture(name="nocsrf_app")
def _nocsrf_app(nocsrf):
    return nocsrf
