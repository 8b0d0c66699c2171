"""Ten million grants on PostgreSQL (issue 19, part 7): each operation's cost per grant at 10M against 1M.

Two synthetic orgs (the demo connector of bench.sync: ~10 grants per person), a baseline (100,000 people,
~1M grants) and the large one (1,000,000 people, ~10M grants), each in a PostgreSQL database of its own
(created here, dropped at the end), go through the same operations:

- first sync, no-change resync, 1% churn resync (`run_sync`, as bench.sync),
- the launch of a manager review of all access (`campaigns.launch`, as bench.reviews_launch): ~12M items,
- the inbox of one manager in that campaign (GET /reviews through the app, as bench.reviews_inbox, and
  `queries.inbox` alone): p50 / p95,
- the evidence export of a closed 1M-item campaign seeded into the same database (bench.evidence_export's
  seeding and export: the whole bundle, items.xlsx included).

Every operation runs in a fresh Python process, so its peak RSS is its own. Per operation: wall seconds,
CPU seconds of the Python process (`time.process_time`) and of the PostgreSQL backends serving it (utime +
stime from /proc/<pid>/stat of every backend of the database, sampled every 0.2 s by a thread), rows, the
cost per row, the database size after it, and the load average (the machine is shared: CPU time is the
honest per-row cost). The report compares each per-row cost at 10M with the baseline's (target <= 1.25x).

    python -m bench ten_million                                 # 1,000,000 people vs 100,000
    python -m bench.ten_million --people 20000 --baseline 2000  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
EXPORT_ITEMS = 1_000_000
REQUESTS = 200
TABLES = ("access_grant", "access_change", "review_item", "campaign_exclusion", "identity", "account",
          "audit_event", "remediation")
SEQUENCES = ("access_grant", "access_change", "review_item", "audit_event", "identity", "account")


def org(people: int, generation: int = 0) -> dict:
    """The demo connector's settings of bench.sync and bench.reviews_launch, for `people` people."""
    return {"people": people, "groups": max(people // 50, 10), "apps": max(people // 500, 5),
            "grants_per_person": 10, "churn": 0.01, **({"generation": generation} if generation else {})}


# --- measuring one operation -------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a process, seconds (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


class BackendCpu:
    """CPU seconds spent by the PostgreSQL backends of one database (parallel workers included) while the
    context is open: every 0.2 s a thread lists them (pg_stat_activity) and reads /proc/<pid>/stat; a
    backend's CPU is its last reading less its first (0 for one that started meanwhile). A backend that
    exits loses at most its last 0.2 s."""

    def __init__(self, url: str, interval: float = 0.2) -> None:
        self.url, self.interval = url, interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()

    def _poll(self, cur, own: int, initial: bool = False) -> None:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s", (own,))
        for (pid,) in cur.fetchall():
            cpu = _proc_cpu(pid)
            if cpu is None:
                continue
            self.first.setdefault(pid, cpu if initial else 0.0)
            self.last[pid] = cpu

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._poll(self.cur, self.own)

    def __enter__(self) -> BackendCpu:
        import psycopg  # the driver itself: the sampler's connection must not be one of SQLAlchemy's pools

        self.conn = psycopg.connect(self.url, autocommit=True)
        self.cur = self.conn.cursor()
        self.own = self.conn.info.backend_pid
        self._poll(self.cur, self.own, initial=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._poll(self.cur, self.own)
        self.conn.close()

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measured(url: str, op: Callable[[], dict]) -> dict:
    """Run `op` (returns its own figures, with `rows`), timing wall clock, this process's CPU and the
    database's backends' CPU; peak RSS is this (fresh) process's."""
    load0 = os.getloadavg()[0]
    with BackendCpu(url) as pg:
        t0, c0 = time.perf_counter(), time.process_time()
        out = op()
        out["wall_s"] = time.perf_counter() - t0
        out["python_cpu_s"] = time.process_time() - c0
    out["pg_cpu_s"] = pg.seconds
    out["cpu_s"] = out["python_cpu_s"] + out["pg_cpu_s"]
    out["peak_rss_mb"] = _hwm_mb()
    out["load"] = [load0, os.getloadavg()[0]]
    return out


# --- the operations (each in a process of its own: python -m bench.ten_million --op NAME) ---------------


def _settings(url: str, tmp: str):
    """bench.sync's settings, with every resync comparing grants in the database (ATTEST_SYNC_KEYS_IN_MEMORY
    0): the 10M org is past the default threshold (2,000,000 active grants) and takes that path anyway, so
    the 1M baseline must take it too for the per-grant ratio to compare one way of working with itself
    (below the threshold a resync keeps the keys in a set: bench.sync and bench.ab measure that path)."""
    import dataclasses

    from bench.sync import _settings as sync_settings  # the benchmark settings every bench module uses

    return dataclasses.replace(sync_settings(url, tmp), sync_keys_in_memory=0)


def op_sync(url: str, tmp: str, people: int, generation: int) -> dict:
    from sqlalchemy.orm import sessionmaker

    from attest.connectors.demo import DemoConnector
    from attest.db import make_engine
    from attest.entitlements.sync import run_sync

    settings = _settings(url, tmp)
    engine = make_engine(settings.database_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)

    def op() -> dict:
        r = run_sync(factory, settings, "bench", connector=DemoConnector(org(people, generation)))
        assert r.status == "succeeded", r.error
        return {"rows": r.stats["read"]["grants"], "added": r.stats["added"]["grants"],
                "ended": r.stats["ended"]["grants"], "timings": r.stats["timings"], "phases": r.stats["phases"]}

    out = measured(url, op)
    engine.dispose()
    return out


def op_launch(url: str, tmp: str, people: int) -> dict:
    from sqlalchemy import func, select
    from sqlalchemy.orm import sessionmaker

    from attest import models  # noqa: F401 (every table on the metadata before the first query)
    from attest.connectors.demo import DemoConnector
    from attest.db import make_engine, transaction
    from attest.reviews import campaigns
    from attest.reviews.definitions import create_definition
    from attest.reviews.models import ReviewItem

    settings = _settings(url, tmp)
    engine = make_engine(settings.database_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    # the definition of bench.reviews_launch: all access, service accounts excluded
    spec = {"name": "Quarterly manager review", "fallback_reviewer": DemoConnector(org(people)).email(1),
            "scope": {"include_inherited": True, "include_service_accounts": False}}
    with transaction(factory) as s:
        draft_id = campaigns.create_campaign(s, create_definition(s, spec, "bench").id, "bench").id

    def op() -> dict:
        with transaction(factory) as s:
            campaigns.launch(s, draft_id, "bench")
        return {}

    out = measured(url, op)
    with transaction(factory) as s:
        out["rows"] = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.campaign_id == draft_id))
    out["campaign_id"] = draft_id
    engine.dispose()
    return out


def op_inbox(url: str, tmp: str, campaign_id: int) -> dict:
    """GET /reviews?campaign=<id> for one manager (the demo's p2: seven direct reports; p1 is the fallback
    reviewer), through the app, and `queries.inbox` alone; REQUESTS each after 5 warm-ups."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import sessionmaker

    from attest import models  # noqa: F401 (every table on the metadata before the first query)
    from attest.app import create_app
    from attest.auth.models import User
    from attest.db import make_engine, transaction
    from attest.entitlements.models import Identity
    from attest.reviews import queries
    from attest.reviews.models import ReviewItem
    from bench.reviews_inbox import _stats, signed_in_client, timed_gets

    settings = _settings(url, tmp)
    engine = make_engine(settings.database_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with transaction(factory) as s:
        manager = s.scalar(select(Identity).where(Identity.external_id == "p2"))
        user = User(email=manager.email, display_name=manager.display_name, identity_id=manager.id, local_roles=[],
                    idp_roles=[])
        s.add(user)
        s.flush()
        user_id, identity_id = user.id, manager.id
        reviewer_items = s.scalar(select(func.count()).select_from(ReviewItem).where(
            ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == identity_id))
    app = create_app(settings)
    client = signed_in_client(app, factory, user_id)
    path = f"/reviews?campaign={campaign_id}"

    def op() -> dict:
        samples, cpu, response = timed_gets(client, path, REQUESTS)
        rows = response.get_data(as_text=True).count('class="item-row')
        q = []
        with factory() as s:
            for _ in range(REQUESTS):
                t0 = time.perf_counter()
                page = queries.inbox(s, identity_id, campaign_id, queries.InboxFilters(), limit=50)
                q.append(time.perf_counter() - t0)
                s.rollback()
        return {"rows": REQUESTS, "page_rows": rows, "query_rows": len(page.rows), "request": _stats(samples),
                "app_cpu": _stats(cpu), "query": _stats(q)}

    out = measured(url, op)
    out["reviewer_items"] = reviewer_items
    app.extensions["attest"].engine.dispose()
    engine.dispose()
    return out


def op_export(url: str, tmp: str, items: int) -> dict:
    """bench.evidence_export's seeding of a closed 1M-item campaign (untimed), then its export (the raw
    floor, the whole bundle with items.xlsx, verify) measured here."""
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from attest import models  # noqa: F401 (every table on the metadata before the first query)
    from attest.db import make_engine
    from bench import evidence_export

    settings = _settings(url, tmp)
    engine = make_engine(settings.database_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    t0 = time.perf_counter()
    cid = evidence_export.seed(factory, items, "postgresql")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE review_item"))
        c.execute(text("VACUUM ANALYZE remediation"))
    seed_s = time.perf_counter() - t0
    engine.dispose()

    def op() -> dict:
        got = evidence_export.export_in_this_process(url, tmp, cid, items)
        return {"rows": items, "floor_s": got["floor_s"], "bundle_s": got["seconds"],
                "bundle_bytes": got["bundle_bytes"], "verify_s": got["verify_s"]}

    out = measured(url, op)
    out["seed_s"] = seed_s
    return out


# --- one org, operation by operation -------------------------------------------------------------------


def _admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")


def _sizes(url: str) -> dict:
    """The database's size, its largest tables (heap + TOAST, indexes) and its sequences' last values."""
    import psycopg  # the driver itself: a short look from outside the operation

    with psycopg.connect(url, autocommit=True) as conn:
        out: dict = {"database": conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]}
        for table in TABLES:
            out[table] = conn.execute(
                "SELECT pg_table_size(%s), pg_indexes_size(%s), (SELECT reltuples FROM pg_class WHERE oid = %s::regclass)",
                (table, table, table)).fetchone()
        out["sequences"] = dict(conn.execute(
            "SELECT sequencename, COALESCE(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'").fetchall())
    return out


def _vacuum(url: str) -> float:
    """VACUUM ANALYZE (what autovacuum does before the next scheduled run; untimed in the operations)."""
    import psycopg  # the driver itself

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


def _op(url: str, tmp: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.ten_million", "--url", url, "--tmp", tmp, *args],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.ten_million {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_org(people: int, export: int, on_step: Callable[[dict], None]) -> dict:
    """Every operation on an org of `people` people in a database of its own, dropped at the end."""
    from alembic import command
    from sqlalchemy import text

    from attest.cli import alembic_config
    from attest.db import make_engine, transaction
    from attest.entitlements.sources import add_source

    name = f"attest_bench_10m_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
        # one backend per statement: every CPU second the database spends is a backend's, sampled above
        c.execute(text(f'ALTER DATABASE "{name}" SET max_parallel_workers_per_gather = 0'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    tmp = tempfile.mkdtemp(prefix="attest-bench-10m-")
    res: dict = {"people": people, "ops": {}, "vacuum_s": {}}
    try:
        settings = _settings(url, tmp)
        command.upgrade(alembic_config(settings.database_url), "head")
        engine = make_engine(settings.database_url)
        from sqlalchemy.orm import sessionmaker

        with transaction(sessionmaker(bind=engine)) as s:
            add_source(s, settings, "demo", "bench", org(people), {}, authoritative=True)
        engine.dispose()

        def step(label: str, *args: str) -> dict:
            print(f"   {people:,} people: {label} ...", flush=True)
            got = _op(url, tmp, *args)
            got["size"] = _sizes(url)
            res["ops"][label] = got
            print(f"   {people:,} people: {label}: {got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} s CPU, "
                  f"{got['rows']:,} rows, {got['peak_rss_mb']:.0f} MB", flush=True)
            on_step(res)
            return got

        step("first sync", "--op", "sync", "--people", str(people))
        res["vacuum_s"]["after first sync"] = _vacuum(url)
        step("no-change resync", "--op", "sync", "--people", str(people))
        step("1% churn resync", "--op", "sync", "--people", str(people), "--generation", "1")
        launched = step("launch", "--op", "launch", "--people", str(people))
        res["vacuum_s"]["after launch"] = _vacuum(url)
        step("inbox", "--op", "inbox", "--campaign", str(launched["campaign_id"]))
        if export:
            step("evidence export", "--op", "export", "--items", str(export))
        return res
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)  # the bundles the exports wrote


# --- the report ----------------------------------------------------------------------------------------

OPS = ("first sync", "no-change resync", "1% churn resync", "launch", "inbox", "evidence export")
UNIT = {"first sync": "grant", "no-change resync": "grant read", "1% churn resync": "grant read",
        "launch": "item", "inbox": "request", "evidence export": "item"}


def _us(seconds: float, rows: int) -> str:
    return f"{seconds / rows * 1e6:,.1f} µs" if rows else "-"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def report(base: dict | None, big: dict | None, argv_note: str) -> str:
    from bench.machine import describe

    orgs = [o for o in (base, big) if o]
    lines = [
        "## Ten million grants on PostgreSQL (issue 19, part 7)\n",
        "Two demo orgs (bench.sync's synthetic org: ~10 direct grants per person, group-held app access "
        "expanded to members at launch), each in a PostgreSQL database of its own, go through the same "
        "operations: first sync, no-change resync, 1% churn resync (`run_sync`), the launch of a manager "
        "review of all access (`campaigns.launch`, service accounts excluded), the inbox of one manager in "
        "that campaign (GET /reviews through the app, 200 requests after 5 warm-ups; the demo's p2, seven "
        "direct reports), and the evidence export of a closed campaign (1,000,000 items unless said below) seeded into the same "
        "database by bench.evidence_export (the whole bundle: items.csv, items.xlsx, report.pdf, audit, "
        "manifest; then verify). Each operation runs in a fresh Python process (its peak RSS is its own). "
        "CPU = the Python process's `process_time` + the CPU of the database's backends (utime + stime from "
        "/proc, sampled every 0.2 s; parallel query is off in the benchmark database so a statement's CPU "
        "is its backend's). The machine is shared: CPU per row is the honest cost, wall clock is shown "
        "with the load average. VACUUM ANALYZE runs (untimed) after the first sync and after the launch, "
        "as autovacuum would before the next scheduled run. Target: per-row cost at 10M within 1.25x of 1M; "
        "peak memory under 1 GB; inbox p95 unchanged.\n",
        "What did not scale, and was changed to get these figures: a resync read every active grant key into "
        "a Python set (about 2 GB at ten million; now, above ATTEST_SYNC_KEYS_IN_MEMORY active grants (2,000,000), "
        "every grant read is staged and compared in the database, `sync.stage.settle_grants`; both orgs here "
        "take that path, so the ratio compares it with itself: below the threshold a resync keeps the set, "
        "bench.sync and bench.ab measure that), and correlation built lookup tables of every key of every person "
        "(about 900 MB at a million people; now only the keys the accounts being matched can ask for, the "
        "people streamed). review_item stays one plain table (the first launch into it builds its indexes "
        "after the insert): the launch's cost per item and the inbox below do not move from 1M to 10M, so "
        "partitioning it by campaign is not needed yet (docs/operations.md, *Sizing PostgreSQL*, says when "
        "it would be).\n",
        f"Machine: {describe()}. {argv_note} Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n",
    ]
    head = "| operation | " + " | ".join(
        f"{o['people']:,} people: rows | wall | CPU (Python + PostgreSQL) | CPU per row | peak RSS | load" for o in orgs)
    lines.append(head + (" | CPU per row, large / baseline | wall per row, large / baseline |" if len(orgs) == 2 else " |"))
    lines.append("|---|" + "---:|---:|---:|---:|---:|---|" * len(orgs) + ("---:|---:|" if len(orgs) == 2 else ""))
    for op in OPS:
        if not any(op in o["ops"] for o in orgs):
            continue
        cells = []
        for o in orgs:
            r = o["ops"].get(op)
            if r is None:
                cells.append("not run | | | | |")
                continue
            cells.append(
                f"{r['rows']:,} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s ({r['python_cpu_s']:.1f} + {r['pg_cpu_s']:.1f}) "
                f"| {_us(r['cpu_s'], r['rows'])} per {UNIT[op]} | {r['peak_rss_mb']:.0f} MB "
                f"| {r['load'][0]:.1f} → {r['load'][1]:.1f}")
        row = f"| {op} | " + " | ".join(cells)
        if len(orgs) == 2 and all(op in o["ops"] for o in orgs):
            a, b = base["ops"][op], big["ops"][op]
            row += (f" | {(b['cpu_s'] / b['rows']) / (a['cpu_s'] / a['rows']):.2f}x"
                    f" | {(b['wall_s'] / b['rows']) / (a['wall_s'] / a['rows']):.2f}x |")
        elif len(orgs) == 2:
            row += " | | |"
        else:
            row += " |"
        lines.append(row)
    for o in orgs:
        extra = []
        for label in ("first sync", "no-change resync", "1% churn resync"):
            r = o["ops"].get(label)
            if r:
                extra.append(f"{label}: +{r['added']:,} / -{r['ended']:,} grants; steps (s) "
                             + ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items() if v >= 0.05))
        r = o["ops"].get("inbox")
        if r:
            extra.append(f"inbox ({r['reviewer_items']:,} items of the manager, {r['page_rows']} rows on the page): "
                         f"server p50 {r['request']['p50_ms']} ms, p95 {r['request']['p95_ms']} ms (app CPU p95 "
                         f"{r['app_cpu']['p95_ms']} ms); queries.inbox alone p50 {r['query']['p50_ms']} ms, "
                         f"p95 {r['query']['p95_ms']} ms")
        r = o["ops"].get("evidence export")
        if r:
            extra.append(f"evidence export of {r['rows']:,} items: raw-driver floor {r['floor_s']:.1f} s, bundle "
                         + ", ".join(f"{k} {v:.1f} s" for k, v in r["bundle_s"].items())
                         + f", verify {r['verify_s']:.1f} s, {r['bundle_bytes'] / 1e6:,.0f} MB (seeding, untimed: "
                         f"{r['seed_s']:.0f} s)")
        if o["vacuum_s"]:
            extra.append("VACUUM ANALYZE (untimed above): " + ", ".join(f"{k} {v:.0f} s" for k, v in o["vacuum_s"].items()))
        lines.append(f"\n{o['people']:,} people:\n\n" + "\n".join(f"- {e}" for e in extra))
    lines.append("\nDatabase size after each operation (table = heap + TOAST; indexes apart):\n")
    lines.append("| people | after | database | " + " | ".join(f"{t} (table / indexes)" for t in TABLES) + " |")
    lines.append("|---:|---|---:|" + "---:|" * len(TABLES))
    for o in orgs:
        for op in OPS:
            r = o["ops"].get(op)
            if r:
                sz = r["size"]
                lines.append(f"| {o['people']:,} | {op} | {_gb(sz['database'])} | " + " | ".join(
                    f"{_gb(sz[t][0])} / {_gb(sz[t][1])}" for t in TABLES) + " |")
    lines.append("\nIds (INTEGER, at most 2,147,483,647): the last value of each sequence after each operation:\n")
    lines.append("| people | after | " + " | ".join(SEQUENCES) + " |")
    lines.append("|---:|---|" + "---:|" * len(SEQUENCES))
    for o in orgs:
        for op in OPS:
            r = o["ops"].get(op)
            if r:
                seqs = r["size"]["sequences"]
                lines.append(f"| {o['people']:,} | {op} | " + " | ".join(
                    f"{seqs.get(f'{t}_id_seq', 0):,}" for t in SEQUENCES) + " |")
    return "\n".join(lines) + "\n"


def run(out: Path, argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench ten_million")
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--export-items", type=int, default=EXPORT_ITEMS, help="0: no evidence export")
    args = parser.parse_args(argv or [])
    note = f"Orgs of {args.baseline:,} and {args.people:,} people."
    state: dict = {"base": None, "big": None, "note": note}
    raw = out.with_suffix(".json")

    def save(which: str) -> Callable[[dict], None]:
        def on_step(res: dict) -> None:
            state[which] = res
            raw.write_text(json.dumps(state, indent=1, default=str))
            out.write_text(report(state["base"], state["big"], note))
        return on_step

    measure_org(args.baseline, args.export_items, save("base"))
    measure_org(args.people, args.export_items, save("big"))
    text_ = report(state["base"], state["big"], note)
    out.write_text(text_)
    return text_


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--op", choices=["sync", "launch", "inbox", "export"])
    parser.add_argument("--url")
    parser.add_argument("--tmp")
    parser.add_argument("--people", type=int, default=0)
    parser.add_argument("--generation", type=int, default=0)
    parser.add_argument("--campaign", type=int, default=0)
    parser.add_argument("--items", type=int, default=EXPORT_ITEMS)
    parser.add_argument("--render", action="store_true", help="rewrite the report from results/ten_million.json")
    args, _ = parser.parse_known_args()
    if args.op == "sync":
        result = op_sync(args.url, args.tmp, args.people, args.generation)
    elif args.op == "launch":
        result = op_launch(args.url, args.tmp, args.people)
    elif args.op == "inbox":
        result = op_inbox(args.url, args.tmp, args.campaign)
    elif args.op == "export":
        result = op_export(args.url, args.tmp, args.items)
    elif args.render:
        md = Path(__file__).parent / "results" / "ten_million.md"
        saved = json.loads(md.with_suffix(".json").read_text())
        sizes = " and ".join(f"{o['people']:,}" for o in (saved["base"], saved["big"]) if o)
        md.write_text(report(saved["base"], saved["big"], saved.get("note", f"Orgs of {sizes} people.")))
        raise SystemExit(0)
    else:
        print(run(Path(__file__).parent / "results" / "ten_million.md", sys.argv[1:]))
        raise SystemExit(0)
    print(json.dumps(result, default=str))
