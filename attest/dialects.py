"""What differs between SQLite and PostgreSQL, in one place (DESIGN.md: "Dialects in one place").

Every other module asks this one instead of testing the dialect's name itself:

- **which engine**: `name`, `is_postgresql` (a Session, Connection or Engine);
- **bulk load and upserts**: `copy_rows` (COPY on PostgreSQL, executemany on SQLite), `bulk_update`,
  `insert_ignoring_conflict`;
- **dates in raw SQL**: `text_with_dates` binds every datetime parameter of a `text()` statement as
  `UTCDateTime`, the type the models use, so no date is converted by hand;
- **lists of values**: `among` (`= ANY(array)` on PostgreSQL, `IN` on SQLite), `among_parameter` (the same for a
  statement built once, its list given at execution as one value: an array, or a JSON array read by
  `json_each` on SQLite, so the SQL text never changes with the list);
- **aggregates and JSON**: `aggregate_text` (string_agg / group_concat), `json_text`, `json_type`,
  `json_flag`, `active_access_key_older`, `c_collation`, `json_column_type`, `empty_json_array`,
  `iso_utc_text`, `epoch_seconds`, `utc_day`;
- **planner settings**: `analyze`, `analyze_if_stale`, `refresh_stats`, `whole_population_plan`, `in_index_order`,
  `not_an_index_term`, `jit_off`, `small_page_cache`, `latest_per_key`, `on_commit_drop`;
- **ids, locks and triggers**: `preassign_ids`, `for_update`, `claim_write_lock`, `skip_fk_triggers`,
  `restore_fk_triggers`, `raw_cursor`.

Why one module of some 500 lines: the design keeps every engine difference in one file, so that a port to
a third engine, or a reviewer checking that PostgreSQL and SQLite say the same, reads one place; each helper is
short and stands alone.

The engines themselves are set up in `attest.db` (SQLite's pragmas and BEGIN IMMEDIATE for a
transaction that writes; PostgreSQL's temp_buffers) and `attest.db.UTCDateTime` stores UTC datetimes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, JSON, any_, bindparam, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from attest.db import UTCDateTime

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

Bind = Session | Connection | Engine


def name(bind: Bind) -> str:
    """The dialect's name ("postgresql" or "sqlite") of a Session, Connection or Engine."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name


def is_postgresql(bind: Bind | str) -> bool:
    return (bind if isinstance(bind, str) else name(bind)) == POSTGRESQL


# --- dates in raw SQL ---------------------------------------------------------------------------------

# the bind parameter names of a text() statement, as SQLAlchemy's TextClause finds them
_BIND_NAME = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def text_with_dates(sql: str, params: Mapping[str, Any]) -> TextClause:
    """`text(sql)` whose parameters holding a datetime in `params` are bound as `UTCDateTime` (SQLite
    stores naive UTC text, PostgreSQL timestamptz): raw SQL binds dates as the models do."""
    clause = text(sql)
    names = set(_BIND_NAME.findall(sql))
    dated = [bindparam(k, type_=UTCDateTime()) for k, v in params.items() if k in names and isinstance(v, datetime)]
    return clause.bindparams(*dated) if dated else clause


def sqlite_datetime(value: Any) -> Any:
    """A value as SQLite stores it: UTC datetimes become naive text in SQLAlchemy's format (what
    UTCDateTime binds), for the driver's own executemany."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")  # "%Y-%m-%d %H:%M:%S.%f", in C
    return value


# --- bulk load ----------------------------------------------------------------------------------------


def copy_rows(conn: Connection, table: str, cols: Sequence[str], rows: Sequence[tuple],
              datetime_columns: Collection[int] | None = ()) -> None:
    """Bulk-load rows into a table with the driver's fastest path: COPY on PostgreSQL, executemany on SQLite.

    SQLite stores UTC datetimes as naive text: `datetime_columns` names the positions to convert (the hot
    path passes only those), None checks every value.
    """
    if not rows:
        return
    dbapi = conn.connection.driver_connection
    names = ", ".join(cols)
    if is_postgresql(conn):
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


def bulk_update(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple], key: str = "id") -> int:
    """Set-based update of many rows: load (key, *columns) into a temporary table with the driver's bulk
    path (`copy_rows`), then one UPDATE ... FROM. Returns rows updated.

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
    analyze(conn, tmp)
    sets = ", ".join(f"{c} = t.{c}" for c in columns)
    n = conn.exec_driver_sql(f"UPDATE {table} SET {sets} FROM {tmp} t WHERE {table}.{key} = t.{key}").rowcount
    conn.exec_driver_sql(f"DROP TABLE {tmp}")
    return n


def insert_ignoring_conflict(bind: Bind, table: Any, values: Mapping[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, in each engine's own spelling (both have it; SQLAlchemy builds it
    per dialect)."""
    if is_postgresql(bind):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(**values).on_conflict_do_nothing()


# --- lists of values ---------------------------------------------------------------------------------


def among(bind: Bind, column: Any, values: Collection[Any]) -> Any:
    """`column IN values` (no None among them). On PostgreSQL one array parameter, `column = ANY(:values)`: the
    statement's text is the same whatever the number of values, so psycopg's statement caches (50 parameters and
    4 KB at most) and its prepared statements serve it; an `IN` of a page's 50 ids is 50 parameters whose
    statement psycopg parses again on every request. On SQLite an `IN` list."""
    if is_postgresql(bind):
        return column == any_(bindparam(None, sorted(values), type_=ARRAY(column.type)))
    return column.in_(values)


def among_parameter(dialect: str, column: Any, key: str) -> Any:
    """`among` for a statement built once (per dialect name) and run many times: `column` is among the list given
    at execution as the parameter `key`, one bound value on both engines (`= ANY(:key)`, an array, on
    PostgreSQL; `IN (SELECT value FROM json_each(:key))`, a JSON array, on SQLite), so a page's reads skip
    building their expressions and cache keys again on every request, and the SQL text does not change with the
    list's length (an expanding IN renders a placeholder per value at every execution, and SQLite prepares each
    new text again)."""
    if is_postgresql(dialect):
        return column == any_(bindparam(key, type_=ARRAY(column.type)))
    return column.in_(select(func.json_each(bindparam(key, type_=JSON)).table_valued("value").c.value))


# --- aggregates, JSON, text ---------------------------------------------------------------------------


def raw_aggregate(conn: Connection) -> tuple[str, str, str, Any]:
    """For the driver's own cursor: (parameter mark, SQL record separator \\x1e, SQL field separator
    \\x1f, agg(expr, sep) -> SQL), string_agg on PostgreSQL, group_concat on SQLite."""
    if is_postgresql(conn):
        return "%s", "E'\\x1e'", "E'\\x1f'", lambda expr, sep: f"string_agg({expr}, {sep})"
    return "?", "char(30)", "char(31)", lambda expr, sep: f"group_concat({expr}, {sep})"


def _either(dialect: str, postgresql: str, sqlite: str) -> str:
    return postgresql if is_postgresql(dialect) else sqlite


def c_collation(dialect: str) -> str:
    """A byte-order comparison of text (SQLite compares bytes already)."""
    return _either(dialect, ' COLLATE "C"', "")


def json_text(dialect: str, column: str, key: str) -> str:
    """SQL text of a top-level key of a JSON column."""
    return _either(dialect, f"({column}->>'{key}')", f"json_extract({column}, '$.{key}')")


def json_type(dialect: str, column: str, key: str) -> str:
    """SQL: the JSON type name of a top-level key ('null' for a JSON null; NULL when absent)."""
    return _either(dialect, f"jsonb_typeof({column}->'{key}')", f"json_type({column}, '$.{key}')")


def json_flag(dialect: str, column: str, key: str) -> str:
    """SQL: a top-level key of a JSON column is JSON true (SQLite: the LIKE first; almost no row has these
    flags, and it spares the JSON parse)."""
    return _either(dialect, f"(({column}->>'{key}') = 'true')",
                   f"({column} LIKE '%\"{key}\"%' AND json_extract({column}, '$.{key}') = 1)")


def json_text_if_present(dialect: str, column: str, key: str) -> str:
    """SQL text of a top-level key that few rows have (SQLite: a LIKE spares the JSON parse)."""
    return _either(dialect, f"({column}->>'{key}')",
                   f"(CASE WHEN {column} LIKE '%\"{key}\"%' THEN json_extract({column}, '$.{key}') END)")


def active_access_key_older(dialect: str, column: str, param: str) -> str:
    """SQL: the JSON column's `access_keys` array holds an active key last used (or, never used, created)
    before the ISO text parameter `param`."""
    if is_postgresql(dialect):
        # the cheap test first (evaluated left to right): most accounts have no access keys, and the
        # EXISTS is a subplan run per item
        return (
            f"(jsonb_typeof({column}->'access_keys') = 'array'"
            f" AND EXISTS (SELECT 1 FROM jsonb_array_elements({column}->'access_keys') k"
            f" WHERE COALESCE(k->>'status', 'Active') = 'Active'"
            f" AND substr(COALESCE(k->>'last_used_at', k->>'created_at'), 1, 19){c_collation(dialect)} < :{param}))"
        )
    return (
        f"({column} LIKE '%access_keys%' AND EXISTS (SELECT 1 FROM json_each({column}, '$.access_keys') k"
        f" WHERE COALESCE(json_extract(k.value, '$.status'), 'Active') = 'Active'"
        f" AND substr(COALESCE(json_extract(k.value, '$.last_used_at'), json_extract(k.value, '$.created_at')), 1, 19)"
        f" < :{param}))"
    )


def json_column_type(dialect: str) -> str:
    return _either(dialect, "JSONB", "TEXT")


def empty_json_array(dialect: str) -> str:
    return _either(dialect, "CAST('[]' AS JSONB)", "'[]'")


def iso_utc_text(col: Any, dialect: str) -> Any:
    """An ISO-8601 UTC text of a timestamp column, formatted in SQL (no per-row Python work)."""
    if is_postgresql(dialect):
        return func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    return func.strftime("%Y-%m-%dT%H:%M:%SZ", col)


def epoch_seconds(col: Any, dialect: str) -> Any:
    if is_postgresql(dialect):
        return func.extract("epoch", col)
    return (func.julianday(col) - 2440587.5) * 86400.0


def utc_day(col: Any, dialect: str) -> Any:
    """YYYY-MM-DD of a timestamp column, in UTC."""
    if is_postgresql(dialect):
        return func.to_char(func.timezone("UTC", col), "YYYY-MM-DD")
    return func.date(col)


# --- temporary tables and the planner -----------------------------------------------------------------


def on_commit_drop(dialect: str) -> str:
    """The clause that drops a temporary table with its transaction (PostgreSQL; SQLite has none)."""
    return _either(dialect, " ON COMMIT DROP", "")


def analyze(bind: Session | Connection, *tables: str) -> None:
    """PostgreSQL: ANALYZE tables now (autovacuum never analyzes temporary tables, nor a table inside
    the transaction that filled it). SQLite: nothing."""
    if not is_postgresql(bind):
        return
    for table in tables:
        if isinstance(bind, Session):
            bind.execute(text(f"ANALYZE {table}"))
        else:
            bind.exec_driver_sql(f"ANALYZE {table}")


def analyze_if_stale(session: Session, table: str, *, grown_by: int | None = None) -> None:
    """PostgreSQL: keep the planner's statistics true while a sync changes a table wholesale.

    A sync changes hundreds of thousands of rows inside one transaction, before autovacuum can look; on
    statistics that say "empty" or "never analyzed" the planner picks nested loops over a million rows.
    ANALYZE inside the transaction sees its own changes. With `grown_by`, the table is analyzed when it
    was never analyzed or grew by more than 10% in this run; without, when it holds rows but was never
    analyzed. (Not on "changed since the last analyze": the rows a run inserts count as changes after it
    commits although it analyzed them itself, and a resync stages only what changed, so its joins are
    driven by small stage tables.)
    """
    if not is_postgresql(session):
        return
    row = session.execute(
        text("SELECT c.reltuples, coalesce(s.n_live_tup, 0) FROM pg_class c "
             "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = :t AND c.relkind = 'r' "
             "AND c.relpersistence = 'p'"),
        {"t": table},
    ).first()
    if row is None:
        return
    tuples, live = row
    if grown_by is not None:
        stale = grown_by > 0 and (tuples < 0 or grown_by > 0.1 * tuples + 100)
    else:  # never analyzed (the apply's own ANALYZE keeps statistics true after what it changes)
        stale = tuples < 0 and live > 1000
    if stale:
        session.execute(text(f"ANALYZE {table}"))


def refresh_stats(session: Session, tables: Sequence[str]) -> None:
    """PostgreSQL: ANALYZE the tables when a sync changed them a lot since their last analyze, or they
    have no statistics (right after a big first sync autovacuum may not have run, and a plan made on
    default estimates nests loops over a million rows)."""
    if not is_postgresql(session):
        return
    rows = session.execute(text(
        "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = ANY(:names)"
        " AND (s.n_mod_since_analyze > 0.1 * GREATEST(s.n_live_tup, 1000)"
        " OR (s.n_live_tup > 1000 AND (c.reltuples < 0.5 * s.n_live_tup"
        # an ANALYZE whose transaction rolled back (a preview) reset the counters but left no statistics
        "   OR NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = s.relname))))"),
        {"names": list(tables)}).all()
    for (table,) in rows:
        session.execute(text(f"ANALYZE {table}"))


def not_an_index_term(bind: Bind, column: Any) -> Any:
    """`column` as SQLite's planner must not choose an index by: with the unary + its documentation gives for this
    (sqlite.org/optoverview.html, "Disqualifying WHERE clause terms using unary-+"); PostgreSQL's as is.

    Attest never ANALYZEs SQLite, and without statistics its planner takes `decision IS NULL` for a selective
    equality: on a reviewer's undecided items it chose the (campaign_id, decision) index over the reviewer's
    (reviewer_id, campaign_id, ...) one and read the whole campaign (the filtered inbox's selection count at
    200,000 items: 54.7 ms, 2.5 ms with the term kept out). PostgreSQL plans on statistics."""
    if is_postgresql(bind):
        return column
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import UnaryExpression

    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def in_index_order(dialect: str, keys: str) -> str:
    """The ORDER BY of a big INSERT ... SELECT into a table whose index on `keys` stays in place: SQLite
    grows a B-tree far cheaper at the end of a range than at a random place per row, more than the sort
    costs; PostgreSQL: nothing (not measured to gain; a sort of a million wide rows spills past work_mem)."""
    return "" if is_postgresql(dialect) else f" ORDER BY {keys}"


@contextmanager
def whole_population_plan(session: Session) -> Iterator[None]:
    """PostgreSQL: no nested loops and no JIT for the statements inside (see attest.reviews.planner);
    back to the defaults right after; a rollback undoes them too. SQLite: nothing."""
    pg = is_postgresql(session)
    if pg:
        session.execute(text("SET LOCAL enable_nestloop = off"))
        session.execute(text("SET LOCAL jit = off"))
    yield
    if pg:
        session.execute(text("SET LOCAL enable_nestloop TO DEFAULT"))
        session.execute(text("SET LOCAL jit TO DEFAULT"))


def absent_from(bind: Bind, column: str, table: str, table_column: str) -> str:
    """SQL: `column` is not among `table.table_column` (never NULL), as each engine runs best over millions
    of rows: a hashed anti-join on PostgreSQL (NOT IN cannot become one), an ephemeral index SQLite builds
    once (it would scan an unindexed table for every row under NOT EXISTS)."""
    if is_postgresql(bind):
        return f"NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{table_column} = {column})"
    return f"{column} NOT IN (SELECT {table_column} FROM {table})"


@contextmanager
def large_work_mem(bind: Session | Connection, size: str = "256MB") -> Iterator[None]:
    """PostgreSQL: for the statements inside, hash and sort up to `size` in memory before spilling to
    files, and no JIT (a statement that runs once over millions of rows compiles for longer than it
    saves); back to the defaults right after; a rollback undoes them too. SQLite: nothing."""
    pg = is_postgresql(bind)

    def run(sql: str) -> None:
        if isinstance(bind, Session):
            bind.execute(text(sql))
        else:
            bind.exec_driver_sql(sql)

    if pg:
        run(f"SET LOCAL work_mem = '{size}'")
        run("SET LOCAL jit = off")
    yield
    if pg:
        run("SET LOCAL work_mem TO DEFAULT")
        run("SET LOCAL jit TO DEFAULT")


def jit_off(session: Session) -> None:
    """PostgreSQL: no JIT for the rest of the transaction (statements run once over a million rows
    compile for longer than they save)."""
    if is_postgresql(session):
        session.execute(text("SET LOCAL jit = off"))


def small_page_cache(session: Session) -> None:
    """SQLite: a streaming scan gains nothing from a big page cache; keep memory flat."""
    if not is_postgresql(session):
        session.connection().exec_driver_sql("PRAGMA cache_size=-16384")


def latest_per_key(bind: Bind, table: str, key: str, where: str) -> str:
    """FROM and WHERE (as `s`) of the last row (highest id) of `table` per `key`, filtered by `where`."""
    if is_postgresql(bind):  # one sort, not an index probe per row
        return f"(SELECT DISTINCT ON ({key}) * FROM {table} ORDER BY {key}, id DESC) s WHERE {where}"
    return f"{table} s WHERE s.id IN (SELECT MAX(id) FROM {table} GROUP BY {key}) AND {where}"


def raw_cursor(conn: Connection, batch: int) -> Any:
    """A driver cursor for a long read: a named, server-side cursor on PostgreSQL (fetching `batch` rows
    at a time), SQLite's incremental cursor."""
    dbapi = conn.connection.driver_connection
    if is_postgresql(conn):
        cur = dbapi.cursor(name=f"attest_stream_{uuid.uuid4().hex[:12]}")
        cur.itersize = batch
        return cur
    return dbapi.cursor()


# --- ids, locks and triggers --------------------------------------------------------------------------


def preassign_ids(session: Session, table: str, stage: str, new_rows: str, params: dict[str, Any]) -> None:
    """Set `stage.new_id` of the stage rows selected by `new_rows` (SQL selecting their ids) to the ids
    their rows will get when inserted into `table`, in stage id order."""
    if is_postgresql(session):
        sequence = session.execute(text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar_one()
        session.execute(text(
            f"UPDATE {stage} SET new_id = nextval(CAST(:sequence AS regclass)) "
            f"WHERE id IN ({new_rows})"), {**params, "sequence": sequence})
    else:  # SQLite gives a new row the highest id plus one: the same ids, counted up front. (Another
        # writer inserting rows meanwhile could not make them collide: this transaction read the table,
        # so in WAL mode its first write would fail, rolling the caller back.)
        session.execute(text(
            f"UPDATE {stage} SET new_id = (SELECT COALESCE(MAX(id), 0) FROM {table}) + n.rn "
            f"FROM (SELECT id AS row_id, row_number() OVER (ORDER BY id) AS rn FROM {stage} WHERE id IN ({new_rows})) n "
            f"WHERE {stage}.id = n.row_id"), params)


def for_update(session: Session, stmt: Any, *of: Any) -> Any:
    """`stmt` locking the rows it reads until the transaction ends: FOR UPDATE on PostgreSQL; SQLite
    locks the whole database for a transaction that writes (BEGIN IMMEDIATE, attest.db.begin_write)."""
    if is_postgresql(session):
        return stmt.with_for_update(of=of or None)
    return stmt


def claim_write_lock(session: Session, touch: Any) -> None:
    """SQLite: take the write lock before reading, so the writes that follow cannot hit a stale snapshot
    (`touch`: an UPDATE that changes nothing). PostgreSQL: nothing (rows are locked as they are written)."""
    if not is_postgresql(session):
        session.execute(touch)


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
    if not is_postgresql(session):
        return False
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
    session.execute(text("SET LOCAL session_replication_role = origin"))
