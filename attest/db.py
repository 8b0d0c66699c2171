"""Declarative base, engine and session factory, and the per-request session.

Service functions take a Session as their first argument and never commit; callers own the transaction
(`with session.begin():`). SQLite gets WAL, foreign keys and a large page cache; PostgreSQL uses psycopg 3.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every engine (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC datetime is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSON documents: JSONB on PostgreSQL, JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # temporary tables (a sync's stage: a million rows) go to a file, not RAM: memory stays flat
    cur.execute("PRAGMA temp_store=FILE")
    cur.close()


# SQLite connections are pooled (at most SQLITE_POOL_SIZE kept idle, any number in use): a new connection reads
# the schema again and prepares every statement of a request again, 8.5% of a reviewer's inbox page
# (callgrind at 200,000 items: first page 76.7 -> 70.2 M instructions). A connection goes back to the pool as a new one would come:
# the transaction rolled back (the pool's reset), and then `_sqlite_checkin` drops any temporary table left
# behind (a sync's stage or a launch's route tables after a failure: their code drops them on success and
# before creating them, as on PostgreSQL, whose connections were always pooled), sets the page cache size
# back (`dialects.small_page_cache` lowers it for a streaming read) and frees the page cache's memory, so
# that an idle connection holds no database pages (WAL: another connection's write would make them stale
# for the next reader anyway) and a process's memory stays what it was with a connection per request.
SQLITE_POOL_SIZE = 8
SQLITE_CACHE_KIB = 131072  # 128 MiB page cache while a connection is in use


def _sqlite_checkin(dbapi_conn: Any, _record: Any) -> None:
    if dbapi_conn is None:  # invalidated: closed, not pooled
        return
    cur = dbapi_conn.cursor()
    try:
        for (name,) in cur.execute("SELECT name FROM sqlite_temp_master WHERE type = 'table'").fetchall():
            cur.execute(f'DROP TABLE temp."{name}"')
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.execute("PRAGMA shrink_memory")
    finally:
        cur.close()


# A transaction that will write says so (`begin_write`, `transaction`): on SQLite it starts with BEGIN
# IMMEDIATE, taking the write lock first. A deferred transaction that reads and then writes fails at
# once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out) when another
# process (the scheduler writing its leases) committed in between; an immediate one waits its turn
# (busy_timeout) and then reads what is current. PostgreSQL ignores the option.
WRITE = {"attest_write": True}


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("attest_write") else "BEGIN")


@contextmanager
def begin_write(session: Session) -> Iterator[Session]:
    """`session.begin()` for a transaction that writes (committed on success, rolled back on error)."""
    with session.begin():
        session.connection(execution_options=WRITE)
        yield session


def _json_loads(text: str) -> Any:
    """SQLite's JSON columns as Python values: json.loads, but for the empty object and list most `attributes`
    hold, answered without the decoder (a page of review rows reads some 150 of them)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return json.loads(text)


def column_reader(keys: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """`operator.attrgetter(*keys)` for two or more mapped columns of ORM objects, reading a loaded object's values
    where SQLAlchemy keeps them, its `__dict__` (a column attribute returns its value from there once loaded), and
    through the attributes, which load what is expired or deferred, only when one of them is missing there.

    Why: an ORM attribute read is a call of a Python-level descriptor, some 3,000 instructions in CPython 3.11
    (callgrind: 450 reads, 1.3 M); a page of 50 review items whose notes read 15 columns each would spend 2 M
    instructions on it."""
    if len(keys) < 2:
        raise ValueError("column_reader reads two columns or more (one would not come back as a tuple)")
    loaded, through = operator.itemgetter(*keys), operator.attrgetter(*keys)

    def read(obj: Any) -> tuple[Any, ...]:
        try:
            return loaded(obj.__dict__)
        except KeyError:
            return through(obj)

    return read


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("json_deserializer", _json_loads)
        if ":memory:" in url or "poolclass" in kwargs:
            kwargs.setdefault("poolclass", NullPool)
        else:  # pooled: see _sqlite_checkin
            kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
            kwargs.setdefault("max_overflow", -1)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _sqlite_checkin)
        # Let SQLAlchemy, not pysqlite, issue BEGIN so SAVEPOINTs and transactional DDL behave.
        event.listen(engine, "connect", lambda conn, rec: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _postgresql_session)
    return engine


# A sync stages its records, and a launch routes its items, in temporary tables. PostgreSQL keeps those
# in the session's own buffers, 8 MB by default: a large source's stage (100k people, a million grants:
# ~200 MB) would be read back from files at every index lookup. The memory is taken only by the session
# that fills temporary tables, as it fills them; the setting must be made before its first use of one.
PG_TEMP_BUFFERS = "256MB"


def _postgresql_session(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cur:
        cur.execute(f"SET temp_buffers = '{PG_TEMP_BUFFERS}'")
    dbapi_connection.commit()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    session = factory()
    try:
        with begin_write(session):
            yield session
    finally:
        session.close()


# What each driver says when the database itself cannot be reached (rather than a query being wrong):
# psycopg 3 and SQLite's own words. `unavailable()` is the one place that decides it.
_UNAVAILABLE = (
    "could not connect", "connection refused", "connection failed", "server closed the connection",
    "terminating connection", "connection timeout", "timeout expired", "no route to host", "name or service not known",
    "the database system is starting up", "the database system is shutting down", "connection is closed",
    "consuming input failed", "unable to open database file", "database is locked", "disk i/o error",
)


def unavailable(exc: BaseException) -> bool:
    """True when `exc` (from SQLAlchemy or a driver) means the database cannot be reached or used right
    now (down, unreachable, restarting, locked past the busy timeout) rather than a wrong query."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError | InterfaceError) or type(exc).__name__ in ("OperationalError",
                                                                                         "InterfaceError"):
            text = str(getattr(exc, "orig", None) or exc).lower()
            if any(words in text for words in _UNAVAILABLE):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def unmigrated(exc: BaseException) -> bool:
    """True when `exc` says a table Attest needs is missing: a database that was never set up with
    `attest db upgrade` (SQLite: "no such table"; PostgreSQL: UndefinedTable)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    text = str(exc.orig or exc).lower()
    return "no such table" in text or type(exc.orig).__name__ == "UndefinedTable"


def describe_url(url: str) -> str:
    """A database URL as it may be shown: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unreadable ATTEST_DATABASE_URL)"


BULK_LOAD_ROWS = 100_000


def drop_indexes_for_bulk_load(session: Session, table: Any, rows: int, keep: Collection[str] = (),
                               unique: bool = False) -> list[Any]:
    """Before an insert of `rows` that more than doubles a big table (a large source's first sync, the
    first large campaign), drop the table's secondary indexes; the caller recreates them afterwards with
    `rebuild_indexes`. Building an index with one sort is several times faster than growing it row by
    row at random places. Unique indexes stay: they enforce the data. The DDL is part of the caller's
    transaction: a failure restores the indexes with everything else. On PostgreSQL the table stays
    locked against readers until the transaction commits: for the few seconds such an insert takes,
    pages that read it wait. `keep`: indexes the insert leaves alone (a partial index no inserted row
    enters costs nothing to keep and a full scan to rebuild). `unique`: drop the unique indexes too, for
    an insert that cannot conflict with the rows already there and is free of duplicates itself; the
    rebuild checks that again, and a violation rolls the whole transaction back.
    """
    if rows < BULK_LOAD_ROWS:
        return []
    from sqlalchemy import text

    existing = session.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table.name}")).scalar_one()
    if rows <= existing:
        return []
    indexes = sorted((ix for ix in table.indexes if (unique or not ix.unique) and ix.name not in keep),
                     key=lambda ix: ix.name)
    for index in indexes:
        index.drop(session.connection())
    return indexes


def rebuild_indexes(session: Session, indexes: Sequence[Any]) -> None:
    """Create the indexes `drop_indexes_for_bulk_load` dropped, in the caller's transaction."""
    for index in indexes:
        index.create(session.connection())
