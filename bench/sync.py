"""Foundation benchmark: sync a demo org of ~1,000,000 grants (~100k accounts) on SQLite and PostgreSQL.

Reports, per engine: full first sync, a no-change resync, a resync with 1% of people's access changed
(about 1% of grants ended and 1% added), and the floor: the raw driver bulk insert of the same grant
rows (sqlite3 executemany; psycopg COPY) into a plain table. Each engine runs in its own process so its
peak memory (max RSS) is its own.

    python -m bench.sync                      # both engines, 100,000 people (~1M grants)
    python -m bench.sync --people 20000 --engine sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _settings(url: str, tmp: str):
    from attest.config import load_settings

    return load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": url,
                                  "ATTEST_INSTANCE_PATH": tmp, "ATTEST_LOG_LEVEL": "WARNING"})


_GRANT_COLS = ("source_id, key, part, entitlement_id, principal_type, principal_account_id, "
               "principal_resource_id, attributes, first_seen_at, first_seen_run_id")
_GRANT_INDEXES = (
    "CREATE UNIQUE INDEX uq_bench_bound_key ON bench_bound (source_id, key) WHERE ended_at IS NULL",
    "CREATE INDEX ix_bench_bound_ent ON bench_bound (entitlement_id)",
    "CREATE INDEX ix_bench_bound_acct ON bench_bound (principal_account_id)",
    "CREATE INDEX ix_bench_bound_res ON bench_bound (principal_resource_id)",
    "CREATE INDEX ix_bench_bound_first ON bench_bound (first_seen_run_id)",
    "CREATE INDEX ix_bench_bound_ended ON bench_bound (ended_run_id)",
)


def _bulk_write(cur, pg: bool, table: str, cols: str, rows) -> None:
    """The driver's bulk path: psycopg COPY, sqlite3 executemany."""
    if pg:
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in cols.split(","))
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)


def _timed_load(engine, table: str, create_as: str, load) -> float:
    """Create `table` (CREATE TABLE ... AS `create_as`), time `load(cursor, pg)` in one transaction on a
    raw connection, then drop the table. Returns the seconds."""
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(f"CREATE TABLE {table} AS {create_as}")
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        t0 = time.perf_counter()
        if not pg:
            cur.execute("BEGIN")  # the engine's connections are in autocommit mode; one transaction
        load(cur, pg)
        raw.commit()
        seconds = time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}")
    return seconds


def _floor(engine, rows: list[tuple]) -> float:
    """Raw driver bulk insert of the grant rows into a plain table: the floor."""
    return _timed_load(engine, "bench_floor", f"SELECT {_GRANT_COLS} FROM access_grant WHERE 1 = 0",
                       lambda cur, pg: _bulk_write(cur, pg, "bench_floor", _GRANT_COLS, rows))


def _grants_only_bound(engine, cfg: dict, source_id: int, run_id: int) -> float:
    """The least a first sync's grants can cost: the connector paged once, each grant's ids resolved from
    in-memory maps and written straight into an empty table shaped like access_grant (the driver's bulk
    path), then its indexes built; no stage, no identities, accounts or correlation, no history."""
    from attest.connectors.base import GrantRecord
    from attest.connectors.demo import DemoConnector
    from attest.db import utcnow
    from attest.dialects import sqlite_datetime

    def load(cur, pg: bool) -> None:
        mark = "%s" if pg else "?"
        maps = {}
        for table in ("account", "resource", "entitlement"):
            cur.execute(f"SELECT external_id, id FROM {table} WHERE source_id = {mark}", (source_id,))
            maps[table] = dict(cur.fetchall())
        accounts, resources, entitlements = maps["account"], maps["resource"], maps["entitlement"]
        now = utcnow() if pg else sqlite_datetime(utcnow())

        def rows():
            for rec in DemoConnector(cfg).sync():
                if type(rec) is GrantRecord:
                    ent, ref, kind = rec[0], rec[1], rec[2]
                    group = kind == "resource"
                    yield (source_id, f"{ent}|{'r' if group else 'a'}|{ref}", rec[4], entitlements[ent], kind,
                           None if group else accounts[ref], resources[ref] if group else None, "{}", now, run_id)

        _bulk_write(cur, pg, "bench_bound", _GRANT_COLS, rows())
        for ddl in _GRANT_INDEXES:
            cur.execute(ddl)

    return _timed_load(engine, "bench_bound", "SELECT * FROM access_grant WHERE 1 = 0", load)


def run_engine(engine_name: str, people: int) -> dict:
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from attest.cli import alembic_config
    from attest.connectors.demo import DemoConnector
    from attest.db import make_engine, transaction
    from attest.entitlements.sources import add_source
    from attest.entitlements.sync import run_sync
    from bench.machine import peak_rss_mb

    tmp = tempfile.mkdtemp(prefix="attest-bench-")
    pg_name = None
    if engine_name == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
    else:
        from sqlalchemy import create_engine

        pg_name = f"attest_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    try:
        settings = _settings(url, tmp)
        command.upgrade(alembic_config(settings.database_url), "head")
        engine = make_engine(settings.database_url)
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        cfg = {"people": people, "groups": max(people // 50, 10), "apps": max(people // 500, 5),
               "grants_per_person": 10, "churn": 0.01}
        with transaction(factory) as s:
            r1_source_id = add_source(s, settings, "demo", "bench", cfg, {}, authoritative=True).id
        out: dict = {"engine": engine_name, "people": people}

        t0 = time.perf_counter()
        r1 = run_sync(factory, settings, "bench", connector=DemoConnector(cfg))
        out["first_sync_s"] = time.perf_counter() - t0
        assert r1.status == "succeeded", r1.error
        out["grants"] = r1.stats["added"]["grants"]
        out["accounts"] = r1.stats["added"]["accounts"]
        if engine_name == "postgresql":
            # a resync runs hours after the first sync, when autovacuum has long processed its million new
            # rows; here it would run right after, with autovacuum working the same cores: settle first
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))

        t0 = time.perf_counter()
        r2 = run_sync(factory, settings, "bench", connector=DemoConnector(cfg))
        out["nochange_resync_s"] = time.perf_counter() - t0
        assert r2.status == "succeeded" and not any(r2.stats["added"].values()), r2.stats

        t0 = time.perf_counter()
        r3 = run_sync(factory, settings, "bench", connector=DemoConnector({**cfg, "generation": 1}))
        out["churn_resync_s"] = time.perf_counter() - t0
        assert r3.status == "succeeded", r3.error
        out["churn_added"] = r3.stats["added"]["grants"]
        out["timings"] = {"first": r1.stats["timings"], "nochange": r2.stats["timings"], "churn": r3.stats["timings"]}
        out["churn_ended"] = r3.stats["ended"]["grants"]

        out["peak_rss_mb"] = peak_rss_mb()  # the syncs' own high-water mark, before the floor loads its rows

        # the connector alone (generating records, no database), to separate its cost
        t0 = time.perf_counter()
        n = sum(1 for _ in DemoConnector(cfg).sync())
        out["connector_only_s"] = time.perf_counter() - t0
        out["records"] = n

        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT source_id, key, part, entitlement_id, principal_type, principal_account_id, "
                "principal_resource_id, attributes, first_seen_at, first_seen_run_id FROM access_grant"))]
        if engine_name == "postgresql":
            import json as _json

            rows = [r[:7] + (_json.dumps(r[7]),) + r[8:] for r in rows]
        out["floor_rows"] = len(rows)
        out["floor_s"] = _floor(engine, rows)
        # the same grants as a first sync stages them (key, part and the upstream refs; bench_stage is shaped
        # like stage_grant): what writing them a second time costs
        with engine.connect() as conn:
            stage = [tuple(r) for r in conn.execute(text(
                "SELECT g.key, g.part, e.external_id, g.principal_type, COALESCE(a.external_id, r.external_id), '{}' "
                "FROM access_grant g JOIN entitlement e ON e.id = g.entitlement_id "
                "LEFT JOIN account a ON a.id = g.principal_account_id "
                "LEFT JOIN resource r ON r.id = g.principal_resource_id"))]
        stage_cols = "key, part, entitlement_ref, principal_type, principal_ref, attributes"
        out["stage_write_s"] = _timed_load(
            engine, "bench_stage", "SELECT key, part, key AS entitlement_ref, principal_type, key AS principal_ref, "
            "key AS attributes FROM access_grant WHERE 1 = 0",
            lambda cur, pg, stage=stage: _bulk_write(cur, pg, "bench_stage", stage_cols, stage))
        del rows, stage
        out["bound_s"] = _grants_only_bound(engine, cfg, r1_source_id, r1.run_id)
        engine.dispose()
        return out
    finally:
        if pg_name:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


def table(results: list[dict]) -> str:
    lines = [
        "| engine | grants | floor (raw bulk insert) | first sync | no-change resync | 1% churn resync | connector alone "
        "| grants-only bound | stage write | peak RSS of the syncs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f = r["floor_s"]
        lines.append(
            f"| {r['engine']} | {r['grants']:,} | {f:.1f} s | {r['first_sync_s']:.1f} s ({r['first_sync_s'] / f:.1f}x floor) "
            f"| {r['nochange_resync_s']:.1f} s ({r['nochange_resync_s'] / f:.1f}x floor) "
            f"| {r['churn_resync_s']:.1f} s ({r['churn_resync_s'] / r['first_sync_s']:.2f}x first; "
            f"+{r['churn_added']:,}/-{r['churn_ended']:,}) | {r['connector_only_s']:.1f} s "
            f"| {r['bound_s']:.1f} s ({r['bound_s'] / f:.1f}x floor) | {r['stage_write_s']:.1f} s ({r['stage_write_s'] / f:.1f}x floor) "
            f"| {r['peak_rss_mb']:.0f} MB |"
        )
    return "\n".join(lines)


def bound_text(results: list[dict]) -> str:
    parts = [f"{r['engine']}: bound {r['bound_s'] / r['floor_s']:.1f}x the floor, stage write "
             f"{r['stage_write_s'] / r['floor_s']:.1f}x" for r in results]
    return (
        "In this run: " + "; ".join(parts) + ". The sync rules stage a whole run before applying any of it, so "
        "a first sync costs at least the bound plus the stage write, before it writes one identity or account "
        "or links one account to its person. A 3x target leaves the difference for all of that (100,000 "
        "people and 100,000 accounts here, a fifth of the rows the floor counts). Holding every grant of a "
        "run in memory instead of a stage table would remove the stage write, but memory would then grow "
        "with the size of the source, and the DESIGN's bulk path is staging tables. Writing the grants "
        "straight into access_grant inside the apply transaction would hold SQLite's write lock, and "
        "PostgreSQL's lock on the table whose indexes a bulk load drops, for as long as the connector pages: "
        "minutes for a real source, with every page that reads access waiting."
    )


def phases(results: list[dict]) -> str:
    """Seconds per phase of each run (SyncRun.stats['timings'])."""
    names: list[str] = []
    for r in results:
        for run_ in r["timings"].values():
            names += [n for n in run_ if n not in names]
    lines = ["| engine | run | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for r in results:
        for label, run_ in r["timings"].items():
            lines.append(f"| {r['engine']} | {label} | " + " | ".join(
                f"{run_[n]:.2f}" if n in run_ else "" for n in names) + " |")
    return "Seconds per phase (read_and_stage includes the connector):\n\n" + "\n".join(lines)


def run(out: Path, people: int = 100_000, engines: tuple[str, ...] = ("sqlite", "postgresql")) -> str:
    from bench.machine import describe

    results = []
    for eng in engines:
        proc = subprocess.run([sys.executable, "-m", "bench.sync", "--engine", eng, "--people", str(people), "--json"],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode != 0:
            raise RuntimeError(f"bench.sync {eng} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    text_ = (
        "## Sync engine (issue 2)\n\n"
        f"Demo org of {people:,} people, synced in full, resynced unchanged, resynced with 1% of people's access "
        "changed. Floor: the raw driver bulk insert of the same grant rows into a plain table "
        "(SQLite executemany, PostgreSQL COPY). Targets: first sync <= 3x floor, no-change resync <= 2x floor, "
        "1% resync <= 0.5x first sync, peak memory <= 600 MB.\n\n"
        "The connector (the synthetic org generated in Python) is part of each sync; its cost alone is shown "
        "so the engine's share can be read off. A resync reads the source's active grant keys and record "
        "hashes first and stages only new or changed records (and the keys not seen); a first sync stages "
        "everything and, when it more than doubles access_grant, builds its secondary indexes after the "
        "insert. On PostgreSQL the database is vacuumed (untimed) between the first sync and the resyncs, as "
        "autovacuum would have done long before the next scheduled sync. The per-phase split of each run is "
        "kept in SyncRun.stats['timings'] and shown below.\n\n"
        "Why the first sync stays above 3x the floor. Two more figures are measured in the same run:\n\n"
        "- *grants-only bound*: the least a first sync's grants can cost. The connector is paged once, each "
        "grant's ids are resolved from in-memory maps and the row is written straight into an empty table shaped "
        "like access_grant with the driver's bulk path, then that table's six indexes are built. No stage, no "
        "identities, accounts, resources or correlation, no history.\n"
        "- *stage write*: the same grants written once as the stage holds them (key, part, upstream refs), the "
        "same way as the floor.\n\n"
        + bound_text(results) + "\n\n"
        f"Machine: {describe()}; load average at the end {os.getloadavg()[0]:.1f}\n\n" + table(results) + "\n\n"
        + phases(results) + "\n"
    )
    out.write_text(text_)
    return text_


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["sqlite", "postgresql"])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.engine:
        result = run_engine(args.engine, args.people)
        print(json.dumps(result) if args.json else result)
    else:
        print(run(Path(__file__).parent / "results" / "sync.md", args.people))
