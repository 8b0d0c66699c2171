"""Evidence export benchmark (issue 7): a 1,000,000-item campaign exported as a signed bundle.

Per engine (SQLite and PostgreSQL), in a process of its own so its peak memory (max RSS) is its own:
items are inserted set-based (recursive CTE / generate_series), then
- the floor: a raw-driver dump of the very same rows (the bundle's own items query, compiled) to a CSV
  file, through the DBAPI cursor (a named server-side cursor on PostgreSQL), in the same run;
- the bundle: `export_bundle` (items.csv, items.xlsx, exclusions.csv, audit.jsonl, report.pdf, manifest),
  then `verify_bundle` on it.
A second, smaller run (100,000 items) shows whether memory stays flat with size.

    python -m bench.evidence_export                          # both engines, 1,000,000 and 100,000 items
    python -m bench.evidence_export --engine sqlite --items 200000 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REVIEWERS = 500
GRANTS = 10_000


def _settings(url: str, tmp: str):
    from attest.config import load_settings

    return load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": url,
                                  "ATTEST_INSTANCE_PATH": tmp, "ATTEST_LOG_LEVEL": "WARNING"})


def seed(factory, n_items: int, dialect: str) -> int:
    """A closed campaign of n_items decided items (5% revoked, with remediations), set-based."""
    from sqlalchemy import insert, select, text

    from attest.db import transaction, utcnow
    from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, Source, SyncRun
    from attest.reviews.models import Campaign, CampaignExclusion
    from attest.trail.chain import record_many

    with transaction(factory) as s:
        src = Source(kind="demo", name="okta-prod", settings={}, authoritative=True, enabled=True)
        s.add(src)
        s.flush()
        run = SyncRun(source_id=src.id, status="succeeded", started_at=utcnow(), finished_at=utcnow(),
                      stats={"read": {"grants": GRANTS}}, api_calls=1234)
        s.add(run)
        s.execute(insert(Identity), [{"external_id": f"rv{i}", "email": f"reviewer{i}@acme.example",
                                      "display_name": f"Reviewer {i:03d}", "status": "active", "kind": "human",
                                      "attributes": {}, "first_seen_at": utcnow()} for i in range(REVIEWERS)])
        s.execute(insert(Account), [{"source_id": src.id, "external_id": f"u{i}", "login": f"user{i}@acme.example",
                                     "status": "active", "kind": "human", "attributes": {}, "first_seen_at": utcnow()}
                                    for i in range(1000)])
        s.execute(insert(Resource), [{"source_id": src.id, "external_id": f"app{i}", "type": "okta_app",
                                      "name": f"App {i}", "is_group": False, "owner_refs": [], "attributes": {},
                                      "first_seen_at": utcnow()} for i in range(10)])
        res = {r.external_id: r.id for r in s.scalars(select(Resource))}
        s.execute(insert(Entitlement), [{"source_id": src.id, "external_id": f"app{i}:user", "resource_ref": f"app{i}",
                                         "resource_id": res[f"app{i}"], "name": "user", "purpose": "assignment",
                                         "privileged": i == 0, "is_membership": False, "attributes": {},
                                         "first_seen_at": utcnow()} for i in range(10)])
        ents = list(s.scalars(select(Entitlement.id).order_by(Entitlement.id)))
        accts = list(s.scalars(select(Account.id).order_by(Account.id)))
        s.execute(insert(Grant), [{"source_id": src.id, "key": f"app{e}:user|a|u{a}", "entitlement_id": ents[e],
                                   "principal_type": "account", "principal_account_id": accts[a], "attributes": {},
                                   "first_seen_at": utcnow()} for e in range(10) for a in range(1000)])
        campaign = Campaign(name=f"Quarterly review ({n_items:,} items)", status="closed", created_by="bench",
                            spec={"name": "Quarterly review", "controls": ["SOC 2 CC6.2", "SOX ITGC"]},
                            launched_at=utcnow(), closed_at=utcnow(), closed_by="bench",
                            population={"in_scope": n_items + 100, "items": n_items, "excluded": 100},
                            sync_runs=[{"source": "okta-prod", "run_id": run.id}])
        s.add(campaign)
        s.flush()
        cid, sid = campaign.id, src.id
        g0 = s.scalar(select(Grant.id).order_by(Grant.id).limit(1))
        a0, rv0 = accts[0], s.scalar(select(Identity.id).order_by(Identity.id).limit(1))
        e0 = ents[0]
        s.execute(insert(CampaignExclusion), [{"campaign_id": cid, "grant_id": g0 + i, "account_id": a0,
                                               "reason": "service_account_excluded"} for i in range(100)])
    p = {"c": cid, "s": sid, "g0": g0, "a0": a0, "e0": e0, "rv0": rv0, "n": n_items, "ng": GRANTS, "nr": REVIEWERS}
    if dialect == "sqlite":
        series = "WITH RECURSIVE cnt(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM cnt WHERE x < :n - 1) "
        src_rows = "FROM cnt"
        at = "datetime('2026-11-01 09:00:00', '+' || (x * 2) || ' seconds')"
        risks = "CASE WHEN x % 10 = 0 THEN '[\"privileged\", \"dormant\"]' ELSE '[]' END"
        yes, no = "1", "0"
        now = "datetime('now')"
    else:
        series = ""
        src_rows = "FROM generate_series(0, :n - 1) AS t(x)"
        at = "TIMESTAMPTZ '2026-11-01 09:00:00+00' + (x * 2) * INTERVAL '1 second'"
        risks = "CASE WHEN x % 10 = 0 THEN '[\"privileged\", \"dormant\"]'::jsonb ELSE '[]'::jsonb END"
        yes, no = "true", "false"
        now = "now()"
    with transaction(factory) as s:
        s.execute(text(
            series +
            "INSERT INTO review_item (campaign_id, grant_id, account_id, identity_id, source_id, resource_id, "
            "entitlement_id, person_name, person_email, person_department, person_status, account_login, "
            "account_kind, source_name, source_kind, resource_name, resource_type, entitlement_name, privileged, "
            "via, risks, risk_score, stage, reviewer_id, routed_by, decision, comment, decided_by_identity_id, "
            "decided_at, decided_in_bulk, completed, outcome, outcome_reason, version) "
            "SELECT :c, :g0 + (x % :ng), :a0 + (x % 1000), NULL, :s, NULL, :e0 + (x % 10), "
            "'Person ' || (x % 100000), 'person' || (x % 100000) || '@acme.example', 'Engineering', 'active', "
            "'person' || (x % 100000) || '@acme.example', 'human', 'okta-prod', 'okta', 'App ' || (x % 10), "
            f"'okta_app', 'user', CASE WHEN x % 10 = 0 THEN {yes} ELSE {no} END, "
            f"CASE WHEN x % 7 = 0 THEN 'Engineering → Everyone' ELSE NULL END, {risks}, x % 3, 0, :rv0 + (x % :nr), "
            "'manager', CASE WHEN x % 20 = 0 THEN 'revoke' ELSE 'approve' END, "
            "CASE WHEN x % 20 = 0 THEN 'no longer needed for the role' ELSE NULL END, :rv0 + (x % :nr), "
            f"{at}, CASE WHEN x % 3 = 0 THEN {yes} ELSE {no} END, {yes}, "
            "CASE WHEN x % 20 = 0 THEN 'revoke' ELSE 'keep' END, 'decision', 1 " + src_rows
        ), p)
        s.execute(text(
            "INSERT INTO remediation (campaign_id, item_id, grant_id, source_id, mode, status, attempts, calls, "
            "created_at, executed_at) SELECT campaign_id, id, grant_id, source_id, 'automatic', "
            "CASE WHEN id % 50 = 0 THEN 'reappeared' ELSE 'verified' END, 1, '[]', " + now + ", " + now +
            " FROM review_item WHERE campaign_id = :c AND decision = 'revoke'"), p)
        record_many(s, ({"actor": f"reviewer{i % REVIEWERS}@acme.example", "action": "item.decide",
                         "object_type": "review_item", "object_id": str(i), "campaign_id": cid,
                         "after": {"decision": "approve"}} for i in range(10_000)))
    return cid


def floor_dump(engine, campaign_id: int, path: str) -> tuple[int, float]:
    """The same rows, raw driver to CSV: the floor."""
    from attest.audit.evidence import ITEM_COLUMNS, items_query

    sql = str(items_query(campaign_id, engine.dialect.name).compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":  # the same small page cache the export streams with
            raw.driver_connection.execute("PRAGMA cache_size=-16384")
        t0 = time.perf_counter()
        cur = raw.driver_connection.cursor(name="floor") if engine.dialect.name == "postgresql" else raw.cursor()
        if engine.dialect.name == "postgresql":
            cur.itersize = 10_000
        cur.execute(sql)
        n = 0
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(ITEM_COLUMNS)
            while rows := cur.fetchmany(10_000):
                w.writerows(rows)
                n += len(rows)
        seconds = time.perf_counter() - t0
        cur.close()
        raw.rollback()
    finally:
        raw.close()
    return n, seconds


def _hwm_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss would also count the parent's RSS at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    from bench.machine import peak_rss_mb

    return peak_rss_mb()


def export_in_this_process(url: str, tmp: str, campaign_id: int, items: int) -> dict:
    """Floor, bundle and verify, in a fresh process: its max RSS is the export's own peak memory."""
    from sqlalchemy.orm import sessionmaker

    from attest.audit.evidence import export_bundle, load_signing_key, verify_bundle
    from attest.db import make_engine

    settings = _settings(url, tmp)
    engine = make_engine(settings.database_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    out: dict = {"rss_at_start_mb": _hwm_mb()}
    n, floor_s = floor_dump(engine, campaign_id, f"{tmp}/floor.csv")
    assert n == items, n
    os.unlink(f"{tmp}/floor.csv")
    out["floor_s"] = floor_s
    bundle = f"{tmp}/evidence.zip"
    t0 = time.process_time()
    result = export_bundle(factory, settings, campaign_id, bundle, actor="bench")
    out["cpu_s"] = time.process_time() - t0
    out["seconds"] = result.seconds
    out["bundle_bytes"] = result.bytes
    t0 = time.perf_counter()
    problems = verify_bundle(bundle, load_signing_key(settings).public_key())  # the pinned key: the instance's own
    out["verify_s"] = time.perf_counter() - t0
    assert problems == [], problems
    out["peak_rss_mb"] = _hwm_mb()
    engine.dispose()
    return out


def run_engine(engine_name: str, items: int) -> dict:
    from alembic import command
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import sessionmaker

    from attest.cli import alembic_config
    from attest.db import make_engine

    tmp = tempfile.mkdtemp(prefix="attest-bench-evidence-")
    pg_name, admin = None, None
    if engine_name == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
    else:
        pg_name = f"attest_bench_evidence_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    try:
        settings = _settings(url, tmp)
        command.upgrade(alembic_config(settings.database_url), "head")
        engine = make_engine(settings.database_url)
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        t0 = time.perf_counter()
        cid = seed(factory, items, engine.dialect.name)
        if engine.dialect.name == "postgresql":
            with engine.connect() as c:
                c.execute(text("ANALYZE"))
                c.commit()
        else:
            with engine.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        out: dict = {"engine": engine_name, "items": items, "seed_s": time.perf_counter() - t0}
        proc = subprocess.run([sys.executable, "-m", "bench.evidence_export", "--export", url, "--tmp", tmp,
                               "--campaign", str(cid), "--items", str(items)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode != 0:
            raise RuntimeError(f"export failed:\n{proc.stderr[-3000:]}")
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        return out
    finally:
        if pg_name:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        for p in Path(tmp).glob("*"):
            if p.is_file():
                p.unlink()


def table(results: list[dict]) -> str:
    lines = [
        "| engine | items | floor: raw driver to CSV | items.csv | items.xlsx | whole bundle (csv, xlsx, pdf, audit, "
        "chain check, manifest) | verify | bundle size | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        n, s = r["items"], r["seconds"]
        floor = n / r["floor_s"]
        csv_rate = n / s["items.csv"]
        lines.append(
            f"| {r['engine']} | {n:,} | {floor:,.0f} rows/s ({r['floor_s']:.1f} s) "
            f"| {csv_rate:,.0f} rows/s ({s['items.csv']:.1f} s, {csv_rate / floor:.2f}x floor) "
            f"| {n / s['items.xlsx']:,.0f} rows/s ({s['items.xlsx']:.1f} s) | {s['total']:.1f} s "
            f"| {r['verify_s']:.1f} s | {r['bundle_bytes'] / 1e6:,.0f} MB | {r['peak_rss_mb']:.0f} MB |"
        )
    return "\n".join(lines)


def report(results: list[dict], items: int) -> str:
    from bench.machine import describe

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    return (
        "## Evidence export (issue 7)\n\n"
        f"A closed campaign of {items:,} decided items (5% revoked with remediations, 500 reviewers, 10,000 audit "
        "events) exported as a signed evidence bundle by `attest.audit.evidence.export_bundle`, then checked by "
        "`verify_bundle`. Floor: a raw-driver dump of the same rows (the bundle's own items query) to a CSV file "
        "in the same process (sqlite3 cursor; psycopg named server-side cursor). items.csv is written into the zip "
        "(deflate level 1) and hashed as it streams; items.xlsx is XlsxWriter in constant-memory mode. Seeding runs "
        "in one process; the export (floor, bundle, verify) in a fresh one, whose max RSS is the peak memory shown. "
        "Targets: items.csv >= 0.6x floor; memory flat, <= 300 MB.\n\n"
        f"Machine: {describe()}; load average when written: {load} (other work was running on the machine: compare "
        "each row with its own floor, measured in the same process).\n\n" + table(results) + "\n\n"
        "Phases of the whole bundle (seconds): "
        + "; ".join(f"{r['engine']} {r['items']:,}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()
                                                                  if k != "total") for r in results) + "\n"
    )


def run(out: Path, items: int = 1_000_000, engines: tuple[str, ...] = ("sqlite", "postgresql"),
        small: int | None = 100_000) -> str:
    results = []
    sizes = [items] + ([small] if small and small < items else [])
    for eng in engines:
        for size in sizes:
            proc = subprocess.run([sys.executable, "-m", "bench.evidence_export", "--engine", eng, "--items", str(size),
                                   "--json"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            if proc.returncode != 0:
                raise RuntimeError(f"bench.evidence_export {eng} {size} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    text_ = report(results, items)
    out.write_text(text_)
    return text_


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["sqlite", "postgresql"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--export", help=argparse.SUPPRESS)  # internal: the export process
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--campaign", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        print(json.dumps(export_in_this_process(args.export, args.tmp, args.campaign, args.items)))
    elif args.engine:
        result = run_engine(args.engine, args.items)
        print(json.dumps(result) if args.json else result)
    else:
        print(run(Path(__file__).parent / "results" / "evidence_export.md", args.items, small=args.small))
