"""What one reviewer request costs the web tier, measured so a busy machine does not change the figures
(issue 19, part 6: the load benchmark's wall times depend on what else the 2 cores run; these do not).

On a fresh PostgreSQL database the demo organisation (attest/demo.py's sources, served by the sandbox in
this process on free ports) is synced and the quarterly manager review launched, as `bench.load` does.
Its busiest reviewers are signed in on Flask test clients (a server-side session, as after SSO), and the app
handles, in this process, with no network and no other request at the same time:
- `GET /reviews` (the inbox's first page, full HTML), and the next page as htmx asks for it;
- `POST /reviews/items/<id>/decide` (htmx, one by one: approve with a comment; every 10th a revoke),
  each on a fresh undecided item with its current version, CSRF token included.

Per route: SQL statements a request (a SQLAlchemy `before_cursor_execute` listener), the app's CPU time
a request (`time.process_time()` around the request: Python, Jinja, SQLAlchemy and psycopg's own work, not
PostgreSQL's), wall time (PostgreSQL's work and waiting included, so it moves with the load), and bytes of
HTML. Warm-up requests first (templates compiled, statement caches filled).

    python -m bench.request_cost                       # 200 decides, 100 inbox pages: bench/results/request_cost.md
    python -m bench.request_cost --decides 50 --pages 20 --no-write
    python -m bench.request_cost --save-json before.json     # keep the figures, to compare later
    python -m bench.request_cost --baseline before.json      # the table shows that run beside this one
    python -m bench request_cost                       # through bench/__main__.py
"""

from __future__ import annotations

import argparse
import html as html_
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.load import PG_ADMIN, free_port, load_avg, log, pct
from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 10
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT = re.compile(r'class="[^"]*js-next-page[^"]*" href="([^"]+)"')


def _commit() -> str:
    if os.environ.get("ATTEST_BENCH_COMMIT"):  # a `git archive` copy has no .git: the caller names the commit
        return os.environ["ATTEST_BENCH_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "attest"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + (" + uncommitted changes under attest/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Meter:
    """SQL statements (every engine of the process) and CPU/wall time of one request at a time."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.statements = 0
        event.listen(Engine, "before_cursor_execute", self._count)
        self.samples: dict[str, list[dict]] = {}

    def _count(self, *_args) -> None:
        self.statements += 1

    def measure(self, route: str, call, record: bool = True):
        n0, c0, w0 = self.statements, time.process_time(), time.perf_counter()
        response = call()
        sample = {"cpu_ms": (time.process_time() - c0) * 1000, "wall_ms": (time.perf_counter() - w0) * 1000,
                  "sql": self.statements - n0, "bytes": len(response.get_data()), "status": response.status_code}
        if record:
            self.samples.setdefault(route, []).append(sample)
        return response


def seed(tmp: Path, url: str):
    """The demo org synced from an in-process sandbox on free ports, the example definitions stored and the
    quarterly manager review launched (as bench.load's seed). Returns (settings, factory)."""
    from alembic import command
    from sqlalchemy.orm import sessionmaker

    from attest import models  # noqa: F401 - every table on the metadata before the first query
    from attest.cli import alembic_config
    from attest.config import load_settings
    from attest.connectors.sandbox import service_app
    from attest.connectors.sandbox.server import serve_in_thread
    from attest.db import make_engine, transaction
    from attest.demo import demo_campaigns, demo_sources
    from attest.entitlements.sources import add_source
    from attest.entitlements.sync import run_sync

    settings = load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": url, "ATTEST_INSTANCE_PATH": str(tmp),
                                      "ATTEST_LOG_LEVEL": "WARNING"})
    command.upgrade(alembic_config(settings.database_url), "head")
    factory = sessionmaker(bind=make_engine(settings.database_url), expire_on_commit=False)
    specs = demo_sources(300)
    ports = {name: free_port() for name in {s.sandbox for s in specs if s.sandbox}}
    servers = [serve_in_thread(service_app(name, demo=True), port=port) for name, port in ports.items()]
    try:
        for spec in specs:
            values = {k: re.sub(r"127\.0\.0\.1:51\d\d", f"127.0.0.1:{ports[spec.sandbox]}", v) if isinstance(v, str) else v
                      for k, v in spec.settings.items()}
            with transaction(factory) as s:
                add_source(s, settings, spec.kind, spec.name, values, spec.secrets, schedule=spec.schedule,
                           authoritative=spec.authoritative, actor="bench")
        for spec in sorted(specs, key=lambda s: not s.authoritative):
            result = run_sync(factory, settings, spec.name, force=True, triggered_by="bench", actor="bench")
            if not result.ok:
                raise RuntimeError(f"seed sync of {spec.name}: {result.status} {result.error}")
    finally:
        for server in servers:
            server.stop()
    demo_campaigns(factory, echo=log)
    return settings, factory


def reviewers(factory, want_items: int) -> list[tuple[int, list[int]]]:
    """The busiest reviewers of the launched campaign until their undecided items reach `want_items`:
    [(identity id, item ids in inbox order)]."""
    from sqlalchemy import func, select

    from attest.reviews.models import ReviewItem

    out, total = [], 0
    with factory() as s:
        busiest = s.execute(select(ReviewItem.reviewer_id, func.count()).where(
            ReviewItem.decision.is_(None), ReviewItem.reviewer_id.is_not(None))
            .group_by(ReviewItem.reviewer_id).order_by(func.count().desc(), ReviewItem.reviewer_id)).all()
        for reviewer_id, _n in busiest:
            ids = s.scalars(select(ReviewItem.id).where(ReviewItem.reviewer_id == reviewer_id, ReviewItem.decision.is_(None))
                            .order_by(ReviewItem.person_name, ReviewItem.id)).all()
            out.append((reviewer_id, list(ids)))
            total += len(ids)
            if total >= want_items:
                break
    return out


def sign_in(app, factory, identity_id: int):
    """A test client signed in as the person `identity_id` (a user row for them, a server-side session)."""
    from flask_login.utils import _create_identifier
    from sqlalchemy import select

    from attest.auth import sessions
    from attest.auth.models import User
    from attest.db import transaction
    from attest.entitlements.models import Identity

    client = app.test_client()
    with transaction(factory) as s:
        person = s.get(Identity, identity_id)
        user = s.scalar(select(User).where(User.identity_id == identity_id))
        if user is None:
            user = User(email=(person.email or f"reviewer{identity_id}@bench.example").lower(),
                        display_name=person.display_name, identity_id=identity_id, local_roles=[], idp_roles=[])
            s.add(user)
            s.flush()
        token = sessions.start(s, user.id, "bench", sessions.clock(), ip="127.0.0.1")
        user_id = user.get_id()
    with app.test_request_context(environ_base=client.environ_base):
        identifier = _create_identifier()
    with client.session_transaction() as sess:
        sess.update({"_user_id": user_id, "_fresh": True, "_id": identifier, sessions.COOKIE_KEY: token,
                     "login_method": "bench"})
    return client


def measure(decides: int, pages: int) -> dict:
    from sqlalchemy import create_engine, text

    from attest.app import create_app
    from attest.reviews.models import ReviewItem

    tmp = Path(tempfile.mkdtemp(prefix="attest-bench-cost-"))
    db_name = f"attest_bench_cost_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db_name}"'))
    try:
        t0 = time.perf_counter()
        settings, factory = seed(tmp, PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name)
        seeded = time.perf_counter() - t0
        with factory.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))  # what autovacuum does within a minute of the launch
        app = create_app(settings)
        meter = Meter()
        people = reviewers(factory, decides + WARMUP)
        clients = {reviewer: sign_in(app, factory, reviewer) for reviewer, _ids in people}
        # inbox pages: the first page in full, then the next page as htmx fetches it, round the reviewers
        tokens: dict[int, str] = {}
        for n in range(pages + WARMUP):
            reviewer, _ids = people[n % len(people)]
            client = clients[reviewer]
            page = meter.measure("GET /reviews (first page)", lambda c=client: c.get("/reviews"), record=n >= WARMUP)
            html = page.get_data(as_text=True)
            tokens[reviewer] = CSRF.search(html).group(1)
            after = NEXT.search(html)
            if after:
                meter.measure("GET /reviews (next page, htmx)", lambda c=client, u=html_.unescape(after.group(1)): c.get(
                    u, headers={"HX-Request": "true", "HX-Target": "inbox-items"}),
                    record=n >= WARMUP)
        # decisions one by one, round the reviewers, each item at its current version
        queue = [(reviewer, item_id) for reviewer, ids in people for item_id in ids]
        done = 0
        for reviewer, item_id in queue:
            if done >= decides + WARMUP:
                break
            with factory() as s:
                row = s.get(ReviewItem, item_id)
                if row is None or row.decision is not None:
                    continue  # decided with another row of the same access
                version = row.version
            revoke = done % 10 == 9
            form = {"csrf_token": tokens[reviewer], "version": str(version), "decision": "revoke" if revoke else "approve",
                    "comment": "no longer needed (bench)" if revoke else "still needed (bench)"}
            response = meter.measure("POST /reviews/items/<id>/decide", lambda c=clients[reviewer], f=form, i=item_id: c.post(
                f"/reviews/items/{i}/decide", data=f, headers={"HX-Request": "true", "HX-Target": f"item-{i}"}),
                record=done >= WARMUP)
            if response.status_code != 200:
                raise RuntimeError(f"decide {item_id}: {response.status_code} {response.get_data(as_text=True)[:300]}")
            done += 1
        routes = {}
        for route, samples in meter.samples.items():
            cpu = [x["cpu_ms"] for x in samples]
            wall = [x["wall_ms"] for x in samples]
            routes[route] = {
                "requests": len(samples), "statuses": sorted({x["status"] for x in samples}),
                "sql_per_request": round(statistics.mean(x["sql"] for x in samples), 1),
                "cpu_ms_mean": round(statistics.mean(cpu), 1), "cpu_ms_p50": round(pct(cpu, 0.5), 1),
                "cpu_ms_p95": round(pct(cpu, 0.95), 1),
                "wall_ms_p50": round(pct(wall, 0.5), 1), "wall_ms_p95": round(pct(wall, 0.95), 1),
                "kb_mean": round(statistics.mean(x["bytes"] for x in samples) / 1024, 1),
            }
        return {"commit": _commit(), "seeded_s": round(seeded, 1), "reviewers": len(people), "routes": routes,
                "load_avg": load_avg(), "machine": describe()}
    finally:
        factory_engine = locals().get("factory")
        if factory_engine is not None:
            factory_engine.kw["bind"].dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def table(now: dict, before: dict | None) -> str:
    head = ("| route | requests | SQL statements / request | app CPU ms / request (mean, p50, p95) | wall ms p50 / p95 "
            "| KB of HTML |\n|---|---:|---:|---|---|---:|")
    lines = [head]
    runs = ([(f"before ({before['commit']})", before)] if before else []) + [(f"now ({now['commit']})", now)]
    for label, result in runs:
        for route, r in result["routes"].items():
            lines.append(f"| {route} — {label} | {r['requests']} | {r['sql_per_request']} | {r['cpu_ms_mean']}, "
                         f"{r['cpu_ms_p50']}, {r['cpu_ms_p95']} | {r['wall_ms_p50']} / {r['wall_ms_p95']} | {r['kb_mean']} |")
    return "\n".join(lines)


def render(now: dict, before: dict | None) -> str:
    return "\n".join([
        "## Request cost: one reviewer request, in process, on PostgreSQL (issue 19)\n",
        "`python -m bench.request_cost` (`python -m bench request_cost`). The demo org synced, the quarterly "
        "manager review launched; its busiest reviewers signed in on Flask test clients; one request at a time, no "
        "network. CPU is this process's (`time.process_time()`: Python, Jinja, SQLAlchemy, psycopg), not "
        "PostgreSQL's; wall time includes PostgreSQL and moves with the machine's load; SQL statements and bytes "
        "do not.\n",
        f"Machine: {now['machine']}. Load average at the end: {now['load_avg']}"
        + (f" (before-run: {before['load_avg']})" if before else "") + ".\n",
        table(now, before), "",
    ])


def run(out: Path, argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cost")
    parser.add_argument("--decides", type=int, default=200)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--baseline", type=Path, help="a JSON saved by --save-json, shown as 'before'")
    parser.add_argument("--save-json", type=Path)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv or [])
    os.environ.setdefault("ATTEST_LOG_LEVEL", "WARNING")
    result = measure(args.decides, args.pages)
    if args.save_json:
        args.save_json.write_text(json.dumps(result, indent=1))
    baseline = args.baseline or out.with_suffix(".before.json")
    before = json.loads(baseline.read_text()) if baseline.exists() else None
    text_ = render(result, before)
    print(text_)
    if not args.no_write:
        out.write_text(text_)
    return text_


if __name__ == "__main__":
    run(ROOT / "bench" / "results" / "request_cost.md", sys.argv[1:])
