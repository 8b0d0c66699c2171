"""Declarative base, engine and session factory, and the per-request session.

Service functions take a Session as their first argument and never commit; callers own the transaction
(`with session.begin():`). SQLite gets WAL, foreign keys and a large page cache; PostgreSQL uses psycopg 3.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
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
    cur.execute("PRAGMA cache_size=-131072")  # 128 MiB page cache
    # temporary tables (a sync's stage: a million rows) go to a file, not RAM: memory stays flat
    cur.execute("PRAGMA temp_store=FILE")
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


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, poolclass=NullPool, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
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


def dialect_name(session_or_engine: Session | Engine) -> str:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name


def bulk_update(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple], key: str = "id") -> int:
    """Set-based update of many rows: load (key, *columns) into a temporary table with the driver's bulk
    path (COPY on PostgreSQL, executemany on SQLite), then one UPDATE ... FROM. Returns rows updated.

    Column types are taken from `table`, so values are written as they are. Runs in the caller's transaction.
    """
    if not rows:
        return 0
    conn = session.connection()
    tmp = f"_bulk_{table}"
    cols = (key, *columns)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {tmp}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {tmp} AS SELECT {', '.join(cols)} FROM {table} WHERE 1 = 0")
    copy_rows(conn, tmp, cols, rows, datetime_columns=None)
    conn.exec_driver_sql(f"CREATE UNIQUE INDEX ix{tmp} ON {tmp} ({key})")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {tmp}")
    sets = ", ".join(f"{c} = t.{c}" for c in columns)
    n = conn.exec_driver_sql(f"UPDATE {table} SET {sets} FROM {tmp} t WHERE {table}.{key} = t.{key}").rowcount
    conn.exec_driver_sql(f"DROP TABLE {tmp}")
    return n


def copy_rows(conn: Any, table: str, cols: Sequence[str], rows: Sequence[tuple],
              datetime_columns: Collection[int] | None = ()) -> None:
    """Bulk-load rows into a table with the driver's fastest path: COPY on PostgreSQL, executemany on SQLite.

    SQLite stores UTC datetimes as naive text: `datetime_columns` names the positions to convert (the hot
    path passes only those), None checks every value.
    """
    if not rows:
        return
    dbapi = conn.connection.driver_connection
    names = ", ".join(cols)
    if conn.dialect.name == "postgresql":
        with dbapi.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    if datetime_columns is None:
        rows = [tuple(sqlite_datetime(v) for v in row) for row in rows]
    elif datetime_columns:
        positions = sorted(datetime_columns)
        converted = []
        for row in rows:
            values = list(row)
            for i in positions:
                values[i] = sqlite_datetime(values[i])
            converted.append(values)
        rows = converted
    cur = dbapi.cursor()
    try:
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in cols)})", rows)
    finally:
        cur.close()


def sqlite_datetime(value: Any) -> Any:
    """A value as SQLite stores it: UTC datetimes become naive text in SQLAlchemy's format."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")  # "%Y-%m-%d %H:%M:%S.%f", in C
    return value


def skip_fk_triggers(session: Session) -> bool:
    """PostgreSQL: let the bulk INSERT ... SELECT statements that follow skip the per-row foreign-key
    triggers, when the database role may already set `session_replication_role` (a superuser). Attest
    does not need it: do not grant that setting to the application role; without it the foreign keys are
    simply checked row by row. Returns whether they are skipped; `restore_fk_triggers` turns them back
    on, and a rollback does too (the setting is local to the transaction).

    The replica role skips every ordinary trigger of the session, so it is only taken when the audit
    trail's own triggers are `ENABLE ALWAYS` (migration 0008) and keep firing whatever the role: the bypass
    then reaches the foreign-key triggers it is for and never the append-only audit trail.

    Only for statements whose every foreign key is read from the referenced rows by the same statement,
    in the same transaction, where those rows are never deleted (they end): then the checks cannot
    fail, and without them each foreign key of each inserted row locks its referenced row (FOR KEY
    SHARE), which on a million rows dirties every referenced page and dominates the statement.
    """
    if session.get_bind().dialect.name != "postgresql":
        return False
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    weak = session.execute(text(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('audit_event') AND NOT tgisinternal"
        " AND tgenabled <> 'A'")).scalar()
    if weak:
        return False  # an audit trigger the replica role would skip: never weaken the audit trail
    try:
        with session.begin_nested():
            session.execute(text("SET LOCAL session_replication_role = replica"))
    except DBAPIError:
        return False  # not allowed: the foreign keys are checked row by row
    return True


def restore_fk_triggers(session: Session) -> None:
    from sqlalchemy import text

    session.execute(text("SET LOCAL session_replication_role = origin"))


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
