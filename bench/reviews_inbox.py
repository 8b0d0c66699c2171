"""Reviewer inbox benchmark: a campaign of 1,000,000 items in which one reviewer has 10,000 items.

Items are built directly with set-based INSERT ... SELECT (100,000 people with one account and 10 grants
each, 1,000 managers; the first 1,000 people report to the benchmark reviewer, so that reviewer has
10,000 items, 10% of them flagged). Per engine (SQLite and PostgreSQL, each in its own process) we time,
as server time (the Flask app handling the request in-process, HTML rendered, no network):
- the first page of the inbox, a deep page (a cursor 5,000 items in), and a filtered page
  (risk = flagged, whose 50 matches are spread over the whole inbox), 200 requests each: p50 / p95;
- the same three page queries alone (`queries.inbox`), for reference;
- OFFSET 5,000 for the same deep page, to show what keyset pagination avoids;
- the bulk approval of 5,000 items (`decisions.bulk_decide`: update, Decision rows, 5,000 audit events,
  commit), twice on disjoint sets.
Targets: page p95 <= 50 ms; bulk approval of 5,000 items < 2 s.

    python -m bench.reviews_inbox                            # both engines, 1,000,000 items
    python -m bench.reviews_inbox --items 200000 --engine sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REVIEWER_ITEMS = 10_000
GRANTS_PER_PERSON = 10
MANAGERS = 1_000
REQUESTS = 200


def _numbers(engine_name: str, n: int) -> str:
    """A SELECT of x = 1..n (one row each), set-based on both engines."""
    if engine_name == "postgresql":
        return f"SELECT generate_series(1, {n}) AS x"
    return f"WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < {n}) SELECT x FROM cnt"


def build(session, engine_name: str, items: int) -> dict:
    """Source, identities, accounts, resources, entitlements, grants, a campaign and its items: all set-based."""
    from sqlalchemy import text

    from attest.db import utcnow
    from attest.reviews.definitions import parse_definition

    people = items // GRANTS_PER_PERSON
    now = utcnow()
    nowv = now.replace(tzinfo=None).isoformat(sep=" ") if engine_name == "sqlite" else now
    true = "1" if engine_name == "sqlite" else "TRUE"
    false = "0" if engine_name == "sqlite" else "FALSE"
    pad = "printf('%06d', {x})" if engine_name == "sqlite" else "lpad(CAST({x} AS TEXT), 6, '0')"
    p = {"now": nowv}
    risks_cast = ("CAST(", " AS JSONB)") if engine_name == "postgresql" else ("", "")
    due_at = now + timedelta(days=14)
    due = due_at.replace(tzinfo=None).isoformat(sep=" ") if engine_name == "sqlite" else due_at
    session.execute(text("INSERT INTO source (id, kind, name, settings, authoritative, enabled, created_at) "
                         f"VALUES (1, 'demo', 'bench-okta', '{{}}', {true}, {true}, :now)"), p)
    # managers 1..1000, then people 1001..; person k (1-based) reports to manager 1 when k <= 1000
    name = pad.format(x="((n.x * 7919) % 1000003)")
    session.execute(text(
        "INSERT INTO identity (id, source_id, external_id, email, email_normalized, login, display_name, department, "
        "title, manager_id, status, kind, attributes, first_seen_at) "
        f"SELECT n.x, 1, 'm' || n.x, 'manager' || n.x || '@bench.example', 'manager' || n.x || '@bench.example', "
        f"'manager' || n.x, 'Manager ' || n.x, 'Dept ' || (n.x % 40), 'Manager', NULL, 'active', 'human', '{{}}', :now "
        f"FROM ({_numbers(engine_name, MANAGERS)}) n"), p)
    session.execute(text(
        "INSERT INTO identity (id, source_id, external_id, email, email_normalized, login, display_name, department, "
        "title, manager_id, status, kind, attributes, first_seen_at) "
        f"SELECT {MANAGERS} + n.x, 1, 'p' || n.x, 'person' || n.x || '@bench.example', 'person' || n.x || '@bench.example', "
        f"'person' || n.x, 'Person ' || {name}, 'Dept ' || (n.x % 40), 'Engineer', "
        f"CASE WHEN n.x <= {REVIEWER_ITEMS // GRANTS_PER_PERSON} THEN 1 ELSE 2 + (n.x % {MANAGERS - 1}) END, "
        f"'active', 'human', '{{}}', :now FROM ({_numbers(engine_name, people)}) n"), p)
    session.execute(text(
        "INSERT INTO account (id, source_id, external_id, login, email, display_name, status, kind, attributes, "
        "identity_id, link_method, first_seen_at) "
        f"SELECT n.x, 1, 'a' || n.x, 'person' || n.x || '@bench.example', 'person' || n.x || '@bench.example', "
        f"'Person ' || n.x, 'active', 'human', '{{}}', {MANAGERS} + n.x, 'email', :now "
        f"FROM ({_numbers(engine_name, people)}) n"), p)
    session.execute(text(
        "INSERT INTO resource (id, source_id, external_id, type, name, is_group, owner_refs, attributes, first_seen_at) "
        f"SELECT n.x, 1, 'r' || n.x, 'okta_app', 'App ' || n.x, {false}, '[]', '{{}}', :now "
        f"FROM ({_numbers(engine_name, 1000)}) n"), p)
    session.execute(text(
        "INSERT INTO entitlement (id, source_id, external_id, resource_ref, resource_id, name, purpose, privileged, "
        "is_membership, attributes, first_seen_at) "
        f"SELECT n.x, 1, 'e' || n.x, 'r' || n.x, n.x, CASE WHEN n.x % 10 = 0 THEN 'admin' ELSE 'user' END, 'assignment', "
        f"CASE WHEN n.x % 10 = 0 THEN {true} ELSE {false} END, {false}, '{{}}', :now "
        f"FROM ({_numbers(engine_name, 1000)}) n"), p)
    # grant g (1..items): person (g-1)/10+1, entitlement ((g-1) % 10) * 100 + ((g-1)/10 % 100) + 1
    div = "/"  # integer division on both engines
    person = f"((n.x - 1) {div} {GRANTS_PER_PERSON} + 1)"
    ent = f"(((n.x - 1) % {GRANTS_PER_PERSON}) * 100 + (((n.x - 1) {div} {GRANTS_PER_PERSON}) % 100) + 1)"
    session.execute(text(
        "INSERT INTO access_grant (id, source_id, key, entitlement_id, principal_type, principal_account_id, "
        "attributes, first_seen_at) "
        f"SELECT n.x, 1, 'e' || {ent} || '|a|a' || {person}, {ent}, 'account', {person}, '{{}}', :now "
        f"FROM ({_numbers(engine_name, items)}) n"), p)
    spec = parse_definition({"name": "Bench quarterly review"})
    session.execute(text(
        "INSERT INTO campaign (id, name, status, spec, created_by, created_at, launched_at, due_at, population, "
        "sync_runs, summary) VALUES (1, 'Bench quarterly review', 'active', :spec, 'bench', :now, :now, :due, "
        "'{}', '[]', '{}')"), {**p, "spec": json.dumps(spec), "due": due})
    session.execute(text(
        "INSERT INTO review_item (id, campaign_id, grant_id, account_id, identity_id, source_id, resource_id, "
        "entitlement_id, person_name, person_email, person_department, person_title, person_status, account_login, "
        "account_kind, source_name, source_kind, resource_name, resource_type, entitlement_name, privileged, via, "
        "risks, risk_score, stage, reviewer_id, routed_by, decided_in_bulk, completed, version) "
        "SELECT g.id, 1, g.id, a.id, i.id, 1, e.resource_id, e.id, i.display_name, i.email, i.department, i.title, "
        "i.status, a.login, 'human', 'bench-okta', 'demo', r.name, r.type, e.name, e.privileged, NULL, "
        f"{risks_cast[0]}CASE WHEN e.privileged = {true} THEN '[\"privileged\"]' ELSE '[]' END{risks_cast[1]}, "
        f"CASE WHEN e.privileged = {true} THEN 25 ELSE 0 END, 0, i.manager_id, 'manager', {false}, {false}, 1 "
        "FROM access_grant g JOIN account a ON a.id = g.principal_account_id JOIN identity i ON i.id = a.identity_id "
        "JOIN entitlement e ON e.id = g.entitlement_id JOIN resource r ON r.id = e.resource_id"))
    if engine_name == "postgresql":
        for table in ("identity", "account", "resource", "entitlement", "access_grant", "campaign", "review_item"):
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"))
    return {"people": people, "items": items}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _cpu() -> float:
    """CPU seconds of this process (the app, and SQLite, which runs in-process)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stats(samples: list[float]) -> dict:
    return {"p50_ms": round(_pct(samples, 0.5) * 1000, 2), "p95_ms": round(_pct(samples, 0.95) * 1000, 2),
            "mean_ms": round(statistics.mean(samples) * 1000, 2)}


def timed_gets(client, path: str, requests: int = REQUESTS, warmups: int = 5):
    """GET `path` `warmups` times, then `requests` times timed: (wall seconds, CPU seconds, the last response)."""
    for _ in range(warmups):
        response = client.get(path)
        assert response.status_code == 200, (response.status_code, response.headers.get("Location"))
    samples, cpu = [], []
    for _ in range(requests):
        c0, t0 = _cpu(), time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
        assert response.status_code == 200
    return samples, cpu, response


def signed_in_client(app, factory, user_id: int):
    """A test client of `app` signed in as user `user_id`: a completed sign-in (the server-side session
    record and the cookie naming it)."""
    from flask_login.utils import _create_identifier

    from attest.auth import sessions

    client = app.test_client()
    with app.test_request_context(environ_base=client.environ_base):
        identifier = _create_identifier()
    with factory() as s:
        token = sessions.start(s, user_id, "bench", sessions.clock(), ip="127.0.0.1")
        s.commit()
    with client.session_transaction() as sess:
        sess.update({"_user_id": f"{user_id}:0", "_fresh": True, "_id": identifier,
                     sessions.COOKIE_KEY: token, "login_method": "bench"})
    return client


def run_engine(engine_name: str, items: int) -> dict:
    from alembic import command
    from sqlalchemy import func, select, text
    from sqlalchemy.orm import sessionmaker

    from attest import models  # noqa: F401 (every table on the metadata before the first query)
    from attest.app import create_app
    from attest.auth.models import User
    from attest.cli import alembic_config
    from attest.config import load_settings
    from attest.db import make_engine, transaction
    from attest.reviews import decisions, queries
    from attest.reviews.models import Decision, ReviewItem
    from bench.machine import peak_rss_mb

    tmp = tempfile.mkdtemp(prefix="attest-bench-inbox-")
    pg_name = admin = None
    if engine_name == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
    else:
        from sqlalchemy import create_engine

        pg_name = f"attest_bench_inbox_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    try:
        settings = load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": url,
                                          "ATTEST_INSTANCE_PATH": tmp, "ATTEST_LOG_LEVEL": "WARNING"})
        command.upgrade(alembic_config(settings.database_url), "head")
        engine = make_engine(settings.database_url)
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        out: dict = {"engine": engine_name, "items": items}
        t0 = time.perf_counter()
        with transaction(factory) as s:
            build(s, engine_name, items)
        out["build_s"] = round(time.perf_counter() - t0, 1)
        # what autovacuum does within a minute of a bulk insert (PostgreSQL vacuums insert-only tables too):
        # statistics, and on PostgreSQL the visibility map that lets the inbox's counts be index-only
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE" if engine_name == "postgresql" else "ANALYZE"))
        with transaction(factory) as s:
            user = User(email="manager1@bench.example", display_name="Manager 1", identity_id=1, local_roles=[],
                        idp_roles=[])
            s.add(user)
            s.flush()
            user_id = user.id
            out["reviewer_items"] = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.reviewer_id == 1))
            out["campaign_items"] = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.campaign_id == 1))
            deep = s.execute(select(ReviewItem.person_name, ReviewItem.id).where(
                ReviewItem.reviewer_id == 1, ReviewItem.campaign_id == 1).order_by(ReviewItem.person_name, ReviewItem.id)
                .offset(REVIEWER_ITEMS // 2 - 1).limit(1)).one()
        deep_cursor = queries.encode_cursor(deep[0], deep[1])

        # --- pages through the app (server time) and the query alone -----------------------------------------
        app = create_app(settings)
        client = signed_in_client(app, factory, user_id)
        pages = {
            "first page": "/reviews?campaign=1",
            "deep page (5,000 in)": f"/reviews?campaign=1&after={deep_cursor}",
            "filtered (flagged)": "/reviews?campaign=1&risk=flagged",
        }
        filters = {"first page": (queries.InboxFilters(), None),
                   "deep page (5,000 in)": (queries.InboxFilters(), deep_cursor),
                   "filtered (flagged)": (queries.InboxFilters(risk="flagged"), None)}
        out["pages"] = {}
        for label, path in pages.items():
            samples, cpu, response = timed_gets(client, path)
            assert response.get_data(as_text=True).count('class="item-row') == 50, label
            q_samples = []
            f, after = filters[label]
            with factory() as s:
                for _ in range(REQUESTS):
                    t0 = time.perf_counter()
                    page = queries.inbox(s, 1, 1, f, after=after, limit=50)
                    q_samples.append(time.perf_counter() - t0)
                    s.rollback()
                assert len(page.rows) == 50
            out["pages"][label] = {"request": _stats(samples), "cpu": _stats(cpu), "query": _stats(q_samples)}
            print(label, out["pages"][label], file=sys.stderr, flush=True)
        # what OFFSET would cost for the deep page (the thing keyset pagination avoids)
        with factory() as s:
            o_samples = []
            for _ in range(50):
                t0 = time.perf_counter()
                s.scalars(select(ReviewItem).where(ReviewItem.reviewer_id == 1, ReviewItem.campaign_id == 1)
                          .order_by(ReviewItem.person_name, ReviewItem.id).offset(REVIEWER_ITEMS // 2).limit(50)).all()
                o_samples.append(time.perf_counter() - t0)
                s.rollback()
            out["offset_5000"] = _stats(o_samples)

        # --- bulk approval of 5,000 items, twice on disjoint sets ----------------------------------------
        out["bulk"] = []
        with factory() as s:
            # what "Approve all not flagged" takes: flagged items are never approved in bulk (issue 14)
            ids = list(s.scalars(select(ReviewItem.id).where(ReviewItem.reviewer_id == 1, ReviewItem.campaign_id == 1,
                                                             ~queries.flagged_condition())
                                 .order_by(ReviewItem.id).limit(10_000)))
        for chunk in (ids[:5000], ids[5000:10000]):
            s = factory()
            try:
                c0, t0 = _cpu(), time.perf_counter()
                with s.begin():
                    user = s.get(User, user_id)
                    n = decisions.bulk_decide(s, user, 1, chunk, "approve").changed
                out["bulk"].append({"items": n, "seconds": round(time.perf_counter() - t0, 3),
                                    "cpu_s": round(_cpu() - c0, 3)})
            finally:
                s.close()
        with factory() as s:
            out["decision_rows"] = s.scalar(select(func.count()).select_from(Decision))
        out["peak_rss_mb"] = round(peak_rss_mb())
        out["load_avg"] = [round(x, 1) for x in os.getloadavg()]
        engine.dispose()
        app.extensions["attest"].engine.dispose()
        return out
    finally:
        if pg_name and admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()


def table(results: list[dict]) -> str:
    lines = ["| engine | items (reviewer's) | page | server p50 | server p95 | app CPU p50 / p95 | query p50 / p95 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        for label, v in r["pages"].items():
            lines.append(f"| {r['engine']} | {r['campaign_items']:,} ({r['reviewer_items']:,}) | {label} | "
                         f"{v['request']['p50_ms']} ms | {v['request']['p95_ms']} ms | "
                         f"{v['cpu']['p50_ms']} / {v['cpu']['p95_ms']} ms | {v['query']['p50_ms']} / {v['query']['p95_ms']} ms |")
    lines += ["", "| engine | OFFSET 5,000 (same deep page) p50 / p95 | bulk approve 5,000 (two runs) | build items | "
              "peak RSS | load average (1/5/15 min) |", "|---|---:|---:|---:|---:|---|"]
    for r in results:
        bulk = " / ".join(f"{b['seconds']:.2f} s (CPU {b['cpu_s']:.2f} s)" for b in r["bulk"])
        lines.append(f"| {r['engine']} | {r['offset_5000']['p50_ms']} / {r['offset_5000']['p95_ms']} ms | {bulk} | "
                     f"{r['build_s']} s | {r['peak_rss_mb']} MB | {' / '.join(str(x) for x in r['load_avg'])} |")
    return "\n".join(lines)


def run(out: Path, items: int = 1_000_000, engines: tuple[str, ...] = ("sqlite", "postgresql")) -> str:
    from bench.machine import describe

    results = []
    for eng in engines:
        proc = subprocess.run([sys.executable, "-m", "bench.reviews_inbox", "--engine", eng, "--items", str(items),
                               "--json"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode != 0:
            raise RuntimeError(f"bench.reviews_inbox {eng} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    text_ = (
        "## Reviewer inbox and bulk approval (issue 6)\n\n"
        f"A campaign of {items:,} items (built set-based: {items // GRANTS_PER_PERSON:,} people x "
        f"{GRANTS_PER_PERSON} grants, {MANAGERS:,} managers) in which one reviewer has {REVIEWER_ITEMS:,} items "
        "(10% flagged privileged). Server time = the Flask app handling GET /reviews in-process (session, "
        "my campaigns, progress counts, the keyset page of 50 items grouped by person, HTML), "
        f"{REQUESTS} requests per page after 5 warm-ups; query = `queries.inbox` alone. Deep page = a keyset "
        "cursor 5,000 items in; filtered = risk flagged. Bulk = `decisions.bulk_decide` of 5,000 items "
        "(UPDATE, 5,000 Decision rows, 5,000 hash-chained audit events, commit). Targets: p95 <= 50 ms, "
        "bulk < 2 s. App CPU = CPU time of the app process per request (SQLite runs in it; PostgreSQL's own work "
        "is not counted there): on a busy machine wall-clock time includes waiting for a CPU, so the load "
        "average during the run is given. After the build the database is analyzed (and on PostgreSQL "
        "vacuumed, as autovacuum does within a minute of a bulk insert, which sets the visibility map that "
        "lets the progress counts be index-only scans).\n\n"
        f"Machine: {describe()}\n\n" + table(results) + "\n"
    )
    out.write_text(text_)
    return text_


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["sqlite", "postgresql"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.engine:
        result = run_engine(args.engine, args.items)
        print(json.dumps(result, default=str) if args.json else json.dumps(result, indent=2, default=str))
    else:
        print(run(Path(__file__).parent / "results" / "reviews_inbox.md", args.items))
