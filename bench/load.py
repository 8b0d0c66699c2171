"""Load benchmark on PostgreSQL (issue 19, part 6): simulated reviewers against the production process layout.

What runs, each its own process, all on loopback:
- PostgreSQL (a fresh database, dropped afterwards);
- the sandbox services (fake Okta and GitHub, moto for AWS, the demo IdP: oidc-provider-mock) on free ports;
- `attest serve` (gunicorn with attest/gunicorn_conf.py, 2 workers of 4 threads each: gthread);
- 2 `attest scheduler` processes sharing the job leases (attest/jobs/).

The demo organisation is synced from the sandbox and the quarterly manager review is launched. Then, per mode
(no pause between actions; 1 s pause after each action), CAMPAIGNS fresh campaigns of that definition (and
copies of it) are launched and N simulated reviewers (asyncio + httpx, one client and cookie jar each) sign in through SSO at the demo IdP
(GET /login -> /login/oidc -> the IdP's form -> POST -> callback -> /reviews, every hop a real request), page
their inbox and decide items one by one (htmx, as the browser does) and in bulk (the "Approve N matching"
form with a person filter) for `--duration` seconds. During the first mode an admin signed in the same way
asks for a sync of the demo Okta ("Sync now", run by a scheduler) and launches a second campaign definition
from the web; half way through it the scheduler holding a lease is killed with SIGKILL and the benchmark
watches the job leases until the other scheduler takes its jobs over. Afterwards: every decision answered
2xx is stored exactly once (review_decision), no job ran twice (each scheduler's run log, DEBUG), no two
syncs of a source overlapped (sync_run), and `attest audit verify` passes. A third short phase profiles one
gunicorn worker with cProfile (a gunicorn config written for the bench only; the app is not changed).

    python -m bench.load                          # 50 reviewers, 180 s per mode: writes bench/results/load.md
    python -m bench.load --duration 20 --reviewers 5 --takeover-wait 0 --no-write
    python -m bench load --duration 20            # through bench/__main__.py
    python -m bench.load --signin-storm 3         # only 50 SSO sign-ins at once (landing on the inbox), 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile  # noqa: F401 - used by the generated gunicorn config (documented here)
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent
ATTEST = str(BIN / "attest")
LAUNCH_DEFINITION = "quarterly-manager-review.yaml"
HTTP_TIMEOUT = 120.0
DECIDES_PER_PAGE = 10  # one-by-one decisions before the reviewer pages on
BULK_EVERY = 4  # every 4th page (the 2nd, 6th, ...): "Approve N matching" with a person filter instead
PROFILE_REVIEWERS = 10
# Campaigns of the quarterly manager review open at once in a mode (the definition and copies of it under
# other names): the demo org's one campaign (~7,100 items, ~40 reviewers) was decided by 50 reviewers with no
# pause in under 3 minutes (6,075 of 7,122 items in the run at 937ef2c), so decisions/s measured the campaign's
# size, not the server. A reviewer works through their inbox of the first campaign, then of the next, as a
# manager with several open reviews does; the org and so each page, person and bulk approval stay the demo's.
CAMPAIGNS = 3
# the reviewers arrive over this many seconds (5 sign-ins a second for 50): the spawn rate of a load test. The
# storm of all of them at once is measured on its own (STORM_ROUNDS rounds, after the modes)
RAMP = 10.0
STORM_ROUNDS = 2

# the gunicorn config of the profile phase: attest's own hooks, plus cProfile in the first worker forked
PROFILE_CONF = '''
import os
from attest.gunicorn_conf import *  # noqa: F401,F403 - child_exit (prometheus multiprocess)

# one request at a time per worker here: a cProfile.Profile follows one thread, and the figures are per request
worker_class = "sync"
threads = 1

_profile = None


def post_fork(server, worker):
    global _profile
    target = os.environ.get("ATTEST_BENCH_PROFILE")
    marker = target + ".taken" if target else None
    if target and not os.path.exists(marker):
        open(marker, "w").close()
        import cProfile
        _profile = cProfile.Profile()


def pre_request(worker, req):  # only request handling is profiled, not the worker's start
    if _profile is not None:
        _profile.enable()


def post_request(worker, req, environ, resp):
    if _profile is not None:
        _profile.disable()


def worker_exit(server, worker):
    if _profile is not None:
        _profile.dump_stats(os.environ["ATTEST_BENCH_PROFILE"])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def load_avg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def server_times(stack: Stack, since: datetime, until: datetime) -> dict[str, dict]:
    """The app's own time per route (the `attest.request` log line's duration_ms: from the request reaching Flask
    to its answer, in the web workers' log) for requests logged between `since` and `until`: beside the client's
    figures it tells the app's time from the queueing before it (gunicorn, the GIL) and the load generator's own."""
    durations: dict[str, list[float]] = defaultdict(list)
    try:
        lines = (stack.tmp / "web.log").read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if not line.startswith("{") or '"attest.request"' not in line:
            continue
        try:
            r = json.loads(line)
            at = datetime.fromisoformat(r["time"])
        except (ValueError, KeyError):
            continue
        if since <= at <= until and r.get("duration_ms") is not None:
            durations[r.get("route") or "?"].append(float(r["duration_ms"]))
    return {route: {"n": len(v), "p50": round(pct(v, .5)), "p95": round(pct(v, .95))}
            for route, v in sorted(durations.items(), key=lambda kv: -len(kv[1]))}


def cpu_ticks() -> dict[int, tuple[int, str, int]]:
    """Every process's (parent pid, name, CPU ticks used: user + system) from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return out


def cpu_by_part(stack: Stack, before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Cores used on average between two `cpu_ticks` snapshots, by part of the benchmark: the web workers (and
    gunicorn's master), the schedulers, the sandbox and the IdP, PostgreSQL (every `postgres` process: the
    backends of all connections, autovacuum, the WAL writer...), the load generator (this process), the rest."""
    roots = {proc.pid: ("web" if name == "web" else "schedulers" if name.startswith("scheduler") else
                        "sandbox and IdP" if name == "sandbox" else "other") for name, proc in stack.procs.items()}
    roots[os.getpid()] = "load generator"

    def part(pid: int) -> str:
        seen = 0
        p = pid
        while p in after and seen < 50:
            if p in roots:
                return roots[p]
            p, seen = after[p][0], seen + 1
        return "PostgreSQL" if after[pid][1] == "postgres" else "other"

    used: Counter = Counter()
    for pid, (_, _, ticks) in after.items():
        used[part(pid)] += ticks - (before[pid][2] if pid in before else 0)
    hz = os.sysconf("SC_CLK_TCK")
    return {k: round(v / hz / seconds, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}


def log(msg: str) -> None:
    print(f"[load {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --- the sandbox process ------------------------------------------------------------------------------


def serve_sandbox(ports: dict[str, int]) -> None:
    """`python -m bench.load --serve-sandbox JSON`: every sandbox service on the given ports until killed."""
    from attest.connectors.sandbox import service_app
    from attest.connectors.sandbox.server import serve_in_thread

    for name, port in ports.items():
        serve_in_thread(service_app(name, demo=True), port=port)
        print(f"sandbox {name} on {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


# --- the stack ----------------------------------------------------------------------------------------


class Stack:
    """The database, the sandbox, the web workers and the schedulers of one benchmark run."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="attest-bench-load-"))
        self.db_name = f"attest_bench_load_{uuid.uuid4().hex[:8]}"
        self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name
        self.ports = {"okta": free_port(), "github": free_port(), "aws": free_port(), "idp": free_port()}
        self.web_port = free_port()
        self.web = f"http://127.0.0.1:{self.web_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTEST_", "PROMETHEUS_"))}
        from attest.connectors.sandbox import idp

        self.env.update({
            "ATTEST_ENV": "development", "ATTEST_DATABASE_URL": self.url, "ATTEST_INSTANCE_PATH": str(self.tmp / "instance"),
            "ATTEST_BASE_URL": self.web, "ATTEST_LOG_FORMAT": "json", "ATTEST_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT), **idp.demo_env(self.ports["idp"]),
        })
        self.engine = self.factory = self.settings = None

    # processes
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=self.tmp, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 30.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def wait_listening(self, port: int, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{what} not listening on {port} after {timeout:.0f} s")

    def up(self) -> None:
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        (self.tmp / "instance").mkdir()
        subprocess.run([ATTEST, "db", "upgrade"], cwd=self.tmp, env=self.env, check=True, capture_output=True)
        self.start("sandbox", [sys.executable, "-m", "bench.load", "--serve-sandbox", json.dumps(self.ports)])
        for name, port in self.ports.items():
            self.wait_listening(port, f"sandbox {name}")

    def seed(self) -> dict:
        """The demo org (attest/demo.py's sources, pointed at this run's sandbox ports), synced; the example
        campaign definitions stored and the quarterly manager review launched."""
        from sqlalchemy.orm import sessionmaker

        import attest.db
        from attest.config import load_settings
        from attest.db import make_engine, transaction
        from attest.demo import demo_campaigns, demo_sources
        from attest.entitlements.sources import add_source
        from attest.entitlements.sync import run_sync

        # every table on the metadata before the first query (attest.db.all_models, or attest.models once the
        # refactor of issue 18 moved it there)
        if hasattr(attest.db, "all_models"):
            attest.db.all_models()
        else:
            import attest.models  # noqa: F401
        self.settings = load_settings(environ=self.env)
        self.engine = make_engine(self.settings.database_url)
        self.factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        out = {}
        for spec in demo_sources(300):
            settings = {k: re.sub(r"127\.0\.0\.1:51\d\d", f"127.0.0.1:{self.ports[spec.sandbox]}", v)
                        if isinstance(v, str) else v for k, v in spec.settings.items()}
            with transaction(self.factory) as s:
                add_source(s, self.settings, spec.kind, spec.name, settings, spec.secrets, schedule=spec.schedule,
                           authoritative=spec.authoritative, actor="bench")
        for spec in sorted(demo_sources(300), key=lambda s: not s.authoritative):
            t0 = time.perf_counter()
            result = run_sync(self.factory, self.settings, spec.name, force=True, triggered_by="bench", actor="bench")
            out[spec.name] = {"status": result.status, "seconds": round(time.perf_counter() - t0, 1)}
            if not result.ok:
                raise RuntimeError(f"seed sync of {spec.name}: {result.status} {result.error}")
        demo_campaigns(self.factory, echo=log)
        return out

    def definitions(self, copies: int) -> list[int]:
        """The quarterly manager review's definition and `copies - 1` copies of it under other names (made
        once, through definitions.create_definition as `attest campaigns create` does): their ids."""
        import yaml
        from sqlalchemy import select

        from attest.db import transaction
        from attest.reviews.definitions import create_definition
        from attest.reviews.models import CampaignDefinition

        spec = yaml.safe_load((ROOT / "examples" / "campaigns" / LAUNCH_DEFINITION).read_text())
        names = [spec["name"]] + [f"{spec['name']} (load copy {k})" for k in range(2, copies + 1)]
        ids = []
        for name in names:
            with transaction(self.factory) as s:
                found = s.scalar(select(CampaignDefinition.id).where(CampaignDefinition.name == name))
                ids.append(found if found is not None else
                           create_definition(s, yaml.safe_dump({**spec, "name": name}, sort_keys=False), "bench").id)
        return ids

    def launch_fresh(self, want_reviewers: int = 0, copies: int = CAMPAIGNS) -> tuple[list[int], dict[str, int]]:
        """Cancel open campaigns of the quarterly manager review (and its copies) and launch `copies` new
        ones: their ids and reviewer e-mail -> undecided items in them."""
        from sqlalchemy import func, select

        from attest.db import transaction
        from attest.entitlements.models import Identity
        from attest.reviews import campaigns
        from attest.reviews.models import Campaign, ReviewItem

        definition_ids = self.definitions(CAMPAIGNS)
        with transaction(self.factory) as s:
            for cid in s.scalars(select(Campaign.id).where(Campaign.definition_id.in_(definition_ids),
                                                           Campaign.status.in_(("draft", "active")))):
                campaigns.cancel(s, cid, "bench", "load benchmark: next mode")
        campaign_ids = []
        for definition_id in definition_ids[:copies]:
            with transaction(self.factory) as s:
                campaign_ids.append(campaigns.launch_definition(s, definition_id, "bench").id)

        def reviewers(ids: list[int]) -> dict[str, int]:
            with self.factory() as s:
                rows = s.execute(select(Identity.email, func.count()).join(ReviewItem, ReviewItem.reviewer_id == Identity.id)
                                 .where(ReviewItem.campaign_id.in_(ids)).group_by(Identity.email)
                                 .order_by(func.count().desc(), Identity.email)).all()
            return {email: n for email, n in rows if email}

        for campaign_id in campaign_ids:
            have = reviewers([campaign_id])
            if len(have) < want_reviewers:
                self.top_up(campaign_id, have, want_reviewers)
        return campaign_ids, reviewers(campaign_ids)

    def top_up(self, campaign_id: int, have: dict[str, int], want: int) -> None:
        """The demo org has fewer managers with reports than `want`: an admin reassigns (decisions.reassign,
        audited, as on the item page) a share of the busiest reviewers' items to people who review nothing,
        as a manager on leave hands work to a colleague, until `want` people have items."""
        from sqlalchemy import select

        from attest.auth.login import create_admin
        from attest.auth.models import User
        from attest.db import transaction
        from attest.entitlements.models import Identity
        from attest.reviews import decisions
        from attest.reviews.models import ReviewItem

        with transaction(self.factory) as s:
            admin = s.scalar(select(User).where(User.email == "bench-admin@demo.example"))
            if admin is None:
                create_admin(s, "bench-admin@demo.example", uuid.uuid4().hex, "Bench Admin", actor="bench")
        with self.factory() as s:
            busy = list(have)[: want - len(have)]
            targets = s.scalars(select(Identity.id).where(
                Identity.status == "active", Identity.kind == "human", Identity.email.is_not(None),
                Identity.email.not_in(list(have)), Identity.email.like("%@acme.example"))
                .order_by(Identity.id).limit(want - len(have))).all()
        for source_email, target in zip(busy, targets, strict=False):
            with transaction(self.factory) as s:
                user = s.scalar(select(User).where(User.email == "bench-admin@demo.example"))
                source_id = s.scalar(select(Identity.id).where(Identity.email == source_email))
                ids = s.scalars(select(ReviewItem.id).where(
                    ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == source_id,
                    ReviewItem.decision.is_(None), ReviewItem.identity_id != target)
                    .order_by(ReviewItem.id)).all()
                for item_id in ids[: len(ids) // 2]:
                    decisions.reassign(s, user, item_id, target, "load benchmark: more reviewers than the demo has managers")

    @staticmethod
    def _definition_name(filename: str) -> str:
        import yaml

        return yaml.safe_load((ROOT / "examples" / "campaigns" / filename).read_text())["name"]

    def start_web(self, profile: Path | None = None) -> None:
        env = dict(self.env)
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-", dir=self.tmp)
        if profile is None:  # exactly what production runs
            self.start("web", [ATTEST, "serve", "--host", "127.0.0.1", "--port", str(self.web_port), "--workers", "2"],
                       env)
        else:
            conf = self.tmp / "gunicorn_profile.py"
            conf.write_text(PROFILE_CONF)
            env["ATTEST_BENCH_PROFILE"] = str(profile)
            self.start("web", [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind",
                               f"127.0.0.1:{self.web_port}", "--config", str(conf), "attest.app:create_app()"], env)
        self.wait_listening(self.web_port, "web")

    def start_schedulers(self, timeout: float = 240.0) -> float:
        """Both schedulers, started together; returns the seconds until both run and the jobs are registered
        in the shared job store (one of them reconciles first; the other sees the jobs through the store)."""
        from sqlalchemy import func, select

        from attest.jobs import apscheduler_jobs

        env = {**self.env, "ATTEST_LOG_LEVEL": "DEBUG"}  # DEBUG: each finished job run is logged (jobs.run_job)
        t0 = time.monotonic()
        for i in (1, 2):
            self.start(f"scheduler{i}", [ATTEST, "scheduler"], env)
        while time.monotonic() - t0 < timeout:
            started = all("started:" in (self.tmp / f"scheduler{i}.log").read_text(errors="replace") for i in (1, 2))
            with self.factory() as s:
                jobs = s.scalar(select(func.count()).select_from(apscheduler_jobs))
            if started and jobs >= 8:
                return round(time.monotonic() - t0, 1)
            time.sleep(1)
        raise RuntimeError(f"the schedulers did not start within {timeout:.0f} s")

    def down(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        if self.engine is not None:
            self.engine.dispose()
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()


# --- the simulated users ------------------------------------------------------------------------------

ROW = re.compile(r'<tr id="item-(\d+)" class="item-row([^"]*)"[^>]*data-version="(\d+)"')
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
NEXT = re.compile(r'class="btn btn-outline-secondary btn-sm js-next-page" href="([^"]+)"')
FLASH_BULK = re.compile(r"Approved ([\d,]+) item")
PERSON = re.compile(r'<span class="text-muted small ms-1">([^<@\s]+@[^<\s]+)</span>')  # a person group's e-mail


def route_of(method: str, url: str, web: str) -> str:
    parts = urlsplit(url)
    path = re.sub(r"/\d+", "/<id>", parts.path)
    if not url.startswith(web):
        return f"IdP {method} {path}"
    if path == "/reviews" and "after=" in (parts.query or ""):
        return "GET /reviews (next page)"
    return f"{method} {path}"


class Recorder:
    def __init__(self, web: str) -> None:
        self.web = web
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.errors: list[str] = []
        self.decided: list[tuple[str, int, str]] = []  # (reviewer, item id, decision) answered 2xx
        self.bulk_items = 0
        self.bulk_requests = 0
        self.signed_in = 0
        self.resent = 0  # requests sent again after the server closed their kept-alive connection
        self.lags: list[float] = []  # the event loop's lateness (loop_lag)
        self.start = self.end = 0.0
        # the steady state: the requests that started once every reviewer had signed in and seen a first page
        # (the 50 sign-ins all start in the same second, and the first pages queue behind them)
        self.reviewers = self.ready = 0
        self.steady_from = math.inf
        self.steady: dict[str, list[float]] = defaultdict(list)

    def add(self, route: str, status: int, seconds: float, started: float) -> None:
        self.samples[route].append(seconds)
        self.statuses[route][status] += 1
        if started >= self.steady_from:
            self.steady[route].append(seconds)

    def first_page_seen(self) -> None:
        self.ready += 1
        if self.ready == self.reviewers:
            self.steady_from = time.monotonic()


_SSL_CONTEXT = None
# below gunicorn's keepalive (2 s): a connection the server is about to close is not reused (httpx would send
# on it and fail with "Server disconnected without sending a response"; a browser retries such a request)
KEEPALIVE_EXPIRY = 1.0


def browser():
    """One simulated browser: its own cookie jar and connections. The TLS context is built once for all of
    them: httpx builds one per client otherwise (loading the CA bundle: 80 ms of CPU each on this machine at
    load ~9), which blocked the event loop for seconds when 50 reviewers started together and was counted in
    their first request (GET /login)."""
    import ssl

    import httpx

    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False, verify=_SSL_CONTEXT,
                             limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY))


async def request(client, rec: Recorder, method: str, url: str, *, follow: bool = True, **kw):
    """One request, each redirect hop timed as its own request (a browser makes them one by one)."""
    import httpx

    while True:
        started, t0 = time.monotonic(), time.perf_counter()
        try:
            try:
                response = await client.request(method, url, **kw)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # the server closed (or reset) a kept-alive connection as the request went out on it (gunicorn
                # closes one idle for its keepalive, 2 s: during sign-in the app's connection idles while the IdP
                # answers): a browser sends the request again on a new connection, once, and so does this client
                rec.resent += 1
                response = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            rec.add(route_of(method, url, rec.web), 0, time.perf_counter() - t0, started)
            rec.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
            raise
        rec.add(route_of(method, url, rec.web), response.status_code, time.perf_counter() - t0, started)
        if not (follow and response.is_redirect):
            return response
        url, method, kw = urljoin(str(response.url), response.headers["location"]), "GET", {}


async def sign_in(client, rec: Recorder, email: str):
    response = await request(client, rec, "GET", f"{rec.web}/login")
    href = re.search(r'href="([^"]*/login/oidc[^"]*)"', response.text)
    if not href:
        raise RuntimeError("no SSO link on /login")
    form = await request(client, rec, "GET", urljoin(f"{rec.web}/login", href.group(1).replace("&amp;", "&")))
    action = re.search(r'<form method="post" id="signin"', form.text)
    if form.status_code != 200 or not action:
        raise RuntimeError(f"IdP form not reached ({form.status_code} {form.url})")
    response = await request(client, rec, "POST", str(form.url), data={"sub": email})
    if response.status_code != 200 or not str(response.url).startswith(rec.web) or "/logout" not in response.text:
        raise RuntimeError(f"SSO of {email} ended at {response.url} ({response.status_code}), not signed in")
    rec.signed_in += 1
    return response


async def reviewer(rec: Recorder, email: str, campaign_ids: list[int], stop_at: float, pause: float,
                   seed: int, start_at: float = 0.0) -> None:
    """One reviewer: arrives at `start_at` (the ramp), signs in, then works through the inbox of each campaign in
    turn (page after page, then from the first page again); moves on when a whole pass through the current one
    showed nothing undecided."""

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    rnd = random.Random(seed)
    todo = list(campaign_ids)
    campaign_id = todo.pop(0)
    inbox = f"{rec.web}/reviews?campaign={campaign_id}"
    async with browser() as client:
        try:
            await sign_in(client, rec, email)
            page = await request(client, rec, "GET", inbox)
            rec.first_page_seen()
            csrf = CSRF.search(page.text).group(1)
            html, pages, undecided_seen = page.text, 0, False
            while time.monotonic() < stop_at:
                rows = [(int(i), int(v)) for i, cls, v in ROW.findall(html) if "decided-" not in cls]
                nxt = NEXT.search(html)
                undecided_seen = undecided_seen or bool(rows)
                if not nxt and not undecided_seen and todo:  # a pass found nothing to decide: the next campaign
                    campaign_id = todo.pop(0)
                    inbox = f"{rec.web}/reviews?campaign={campaign_id}"
                    html = (await request(client, rec, "GET", inbox)).text
                    await asyncio.sleep(pause)
                    continue
                pages += 1
                names = PERSON.findall(html)
                if pages % BULK_EVERY == 2 and names:
                    # "Approve N matching" with the person filter: a full page load follows (HX-Redirect)
                    response = await request(client, rec, "POST", f"{rec.web}/reviews/campaigns/{campaign_id}/bulk",
                                             data={"csrf_token": csrf, "scope": "filtered", "bulk_decision": "approve",
                                                   "q": rnd.choice(names)})
                    rec.bulk_requests += 1
                    if response.status_code == 200:
                        m = FLASH_BULK.search(response.text)
                        rec.bulk_items += int(m.group(1).replace(",", "")) if m else 0
                    html, undecided_seen = response.text, False  # the first page again: a new pass
                    await asyncio.sleep(pause)
                    continue
                for item_id, version in rows[:DECIDES_PER_PAGE]:
                    if time.monotonic() >= stop_at:
                        return
                    decision = "revoke" if rnd.random() < 0.1 else "approve"
                    response = await request(
                        client, rec, "POST", f"{rec.web}/reviews/items/{item_id}/decide",
                        data={"csrf_token": csrf, "version": str(version), "decision": decision,
                              "comment": f"load benchmark: {decision}"},
                        headers={"HX-Request": "true", "HX-Target": f"item-{item_id}"})
                    if 200 <= response.status_code < 300:
                        rec.decided.append((email, item_id, decision))
                    await asyncio.sleep(pause)
                if time.monotonic() >= stop_at:
                    return
                if nxt:  # the next page, as the browser fetches it (htmx swaps the list)
                    url = urljoin(inbox, nxt.group(1).replace("&amp;", "&"))
                    response = await request(client, rec, "GET", url,
                                             headers={"HX-Request": "true", "HX-Target": "inbox-items"})
                else:
                    response = await request(client, rec, "GET", inbox)
                html = response.text
                if not nxt:
                    undecided_seen = False  # the first page again: a new pass
                await asyncio.sleep(pause)
        except Exception as exc:  # recorded; the other reviewers go on
            rec.errors.append(f"{email}: {type(exc).__name__}: {exc}")


async def admin(rec: Recorder, stack: Stack, duration: float, events: dict) -> None:
    """The admin: asks for a sync of the demo Okta ("Sync now", a scheduler runs it) a quarter in, and
    launches the monthly privileged owner review from the web 40% in."""
    from sqlalchemy import select

    from attest.entitlements.models import Source
    from attest.reviews.models import CampaignDefinition

    with stack.factory() as s:
        okta_id = s.scalar(select(Source.id).where(Source.name == "okta"))
        definition_id = s.scalar(select(CampaignDefinition.id).where(
            CampaignDefinition.name == stack._definition_name("monthly-privileged-owner-review.yaml")))
    async with browser() as client:
        try:
            page = await sign_in(client, rec, "admin@demo.example")
            csrf = CSRF.search(page.text).group(1)
            await asyncio.sleep(duration * 0.25)
            response = await request(client, rec, "POST", f"{rec.web}/sources/{okta_id}/sync",
                                     data={"csrf_token": csrf})
            events["sync_requested"] = {"at": datetime.now(UTC).isoformat(), "status": response.status_code}
            await asyncio.sleep(duration * 0.15)
            t0 = time.perf_counter()
            response = await request(client, rec, "POST", f"{rec.web}/campaigns/definitions/{definition_id}/launch",
                                     data={"csrf_token": csrf})
            flash = re.search(r"Launched [^<]*", response.text)
            events["launch"] = {"status": response.status_code, "seconds": round(time.perf_counter() - t0, 2),
                                "message": flash.group(0) if flash else None}
        except Exception as exc:
            rec.errors.append(f"admin: {type(exc).__name__}: {exc}")


async def drive(stack: Stack, emails: list[str], campaign_ids: list[int], duration: float, pause: float,
                with_admin: bool, events: dict, ramp: float = 0.0) -> Recorder:
    """The reviewers arrive evenly over the first `ramp` seconds (a load test's spawn rate: `ramp` 10 s with 50
    reviewers is 5 sign-ins a second; 0: all at once, the sign-in storm), then work until `duration` is up."""
    rec = Recorder(stack.web)
    rec.reviewers = len(emails)
    rec.start = time.monotonic()
    stop_at = rec.start + duration
    every = ramp / len(emails) if emails else 0.0
    tasks = [reviewer(rec, email, campaign_ids, stop_at, pause, i, rec.start + i * every)
             for i, email in enumerate(emails)]
    if with_admin:
        tasks.append(admin(rec, stack, duration, events))
    lag = asyncio.create_task(loop_lag(rec, stop_at))
    await asyncio.gather(*tasks)
    await lag
    rec.end = time.monotonic()
    return rec


async def loop_lag(rec: Recorder, stop_at: float, every: float = 0.05) -> None:
    """How late the load generator's own event loop wakes (a 50 ms sleep's overshoot): every client-side
    latency includes it, so it bounds what the generator adds to them (its CPU, and the machine's run queue)."""
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        await asyncio.sleep(every)
        rec.lags.append(time.perf_counter() - t0 - every)


# --- what PostgreSQL's backends wait on -------------------------------------------------------------------


class PgWaits(threading.Thread):
    """Samples pg_stat_activity every 0.2 s while a mode runs: how many of the run's backends are active, and
    what the active ones wait on (a row lock and the statement waiting for it, the WAL flush of a commit, the
    client, or nothing: running on a CPU or queued for one). Averages are backends per sample."""

    EVERY = 0.2

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop_event = threading.Event()
        self.samples = 0
        self.waits: Counter = Counter()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            while not self.stop_event.wait(self.EVERY):
                rows = conn.execute(
                    "SELECT wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'active'").fetchall()
                self.samples += 1
                for kind, event, query in rows:
                    if kind is None:
                        key = "running (or queued for a CPU)"
                    elif kind == "Lock":
                        key = f"waiting for a lock ({event}): {' '.join(query.split()[:4])}"
                    else:
                        key = f"{kind}: {event}"
                    self.waits[key] += 1

    def summary(self) -> dict:
        self.stop_event.set()
        self.join(5)
        n = max(self.samples, 1)
        return {"samples": self.samples, "active": round(sum(self.waits.values()) / n, 2),
                "waits": {k: round(v / n, 2) for k, v in self.waits.most_common(8)}}


# --- the sign-in storm ---------------------------------------------------------------------------------

SIGNIN_HOPS = ("GET /login", "GET /login/oidc", "IdP GET /oauth2/authorize", "IdP POST /oauth2/authorize",
               "GET /login/oidc/callback", "GET /reviews", "sign-in + inbox")


async def signin_storm(stack: Stack, emails: list[str]) -> Recorder:
    """Every reviewer signs in through SSO at the same moment, and nothing else: the start of a mode on its own.
    The sign-in lands on the reviewer's inbox (GET /reviews, its first page). Each hop is timed as `request`
    times it; "sign-in + inbox" is the whole of it per reviewer."""
    rec = Recorder(stack.web)

    async def one(email: str) -> None:
        async with browser() as client:
            try:
                t0 = time.perf_counter()
                await sign_in(client, rec, email)
                rec.samples["sign-in + inbox"].append(time.perf_counter() - t0)
            except Exception as exc:  # recorded; the others go on
                rec.errors.append(f"{email}: {type(exc).__name__}: {exc}")

    rec.start = time.monotonic()
    await asyncio.gather(*(one(email) for email in emails))
    rec.end = time.monotonic()
    return rec


def storm_rounds(stack: Stack, emails: list[str], rounds: int) -> list[dict]:
    """ROUNDS storms of the reviewers' SSO sign-ins at once, on a running stack: per round, how many signed in,
    how long it took, the load average before it, and per hop (SIGNIN_HOPS) n, p50 and p95 (client side, ms)."""
    out = []
    for _ in range(rounds):
        load, ticks = load_avg(), cpu_ticks()
        rec = asyncio.run(signin_storm(stack, emails))
        cores = cpu_by_part(stack, ticks, cpu_ticks(), rec.end - rec.start)
        out.append({"signed_in": rec.signed_in, "reviewers": len(emails), "seconds": round(rec.end - rec.start, 1),
                    "load_before": load, "errors": rec.errors[:3], "error_count": len(rec.errors),
                    # CPU seconds per sign-in, by process: where a sign-in's cost lies
                    "cpu_per_signin_ms": {k: round(v * (rec.end - rec.start) / max(rec.signed_in, 1) * 1000)
                                          for k, v in cores.items()},
                    "hops": {route: {"n": len(v), "p50": round(pct(v, .5) * 1000), "p95": round(pct(v, .95) * 1000)}
                             for route in SIGNIN_HOPS if (v := rec.samples.get(route, []))}})
    return out


def run_signin_storm(reviewers: int, rounds: int) -> str:
    """`python -m bench.load --signin-storm ROUNDS`: the database, the sandbox and the web workers (no
    schedulers), the demo org synced, then ROUNDS storms of `--reviewers` SSO sign-ins at once (in the first
    their users are made; later ones sign in again from new browsers). Per hop p50/p95 (client side, ms) per
    round, with the load average before it: the machine is shared, compare medians of several rounds."""
    stack = Stack()
    lines = []
    try:
        stack.up()
        stack.seed()
        _, items = stack.launch_fresh(reviewers, copies=1)
        emails = list(items)[:reviewers]
        stack.start_web()
        asyncio.run(signin_storm(stack, ["admin@demo.example", "auditor@demo.example"]))  # warm-up, not counted
        for n, r in enumerate(storm_rounds(stack, emails, rounds), 1):
            lines.append(f"round {n}: {r['signed_in']}/{r['reviewers']} signed in, {r['seconds']} s, "
                         f"load before {r['load_before']}")
            lines += [f"  {route:28s} p50 {h['p50']:6d}  p95 {h['p95']:6d}  n {h['n']}" for route, h in r["hops"].items()]
            lines.append("  CPU per sign-in (ms): " + ", ".join(f"{k} {v}" for k, v in r["cpu_per_signin_ms"].items()))
            if r["error_count"]:
                lines.append(f"  {r['error_count']} errors, first: " + "; ".join(r["errors"]))
    finally:
        stack.down()
    return "\n".join(lines)


# --- the scheduler kill and the job records -------------------------------------------------------------


class LeaseWatch(threading.Thread):
    """Polls job_lease every second; after `kill()` records when each lease the killed holder had is held by
    someone else (or started again), i.e. when the standby took over."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop_event = threading.Event()
        self.killed: dict | None = None
        self.taken: dict[str, dict] = {}

    def holders(self) -> list[tuple]:
        from sqlalchemy import select

        from attest.jobs import JobLease

        with self.stack.factory() as s:
            return s.execute(select(JobLease.name, JobLease.holder, JobLease.expires_at, JobLease.last_started_at,
                                    JobLease.last_status)).all()

    def kill(self, wait: float = 75.0) -> dict:
        """SIGKILL the scheduler process that holds a lease (preferring a running sync; the evidence job holds
        its lease most of each minute), waiting up to `wait` seconds for one to hold any."""
        pids = {p.pid: name for name, p in self.stack.procs.items() if name.startswith("scheduler")}
        deadline = time.monotonic() + wait
        while True:
            rows = self.holders()
            held = [r for r in rows if r.holder and int(r.holder.split(":")[1]) in pids]
            # the reconcile is held for a moment each minute; a sync or the evidence job for longer
            if any(r.name != "scheduler:reconcile" for r in held) or (held and time.monotonic() > deadline):
                break
            time.sleep(0.5)
        held.sort(key=lambda r: (not r.name.startswith("sync:"), r.name != "evidence:export", r.name))
        if not held:
            raise RuntimeError(f"no scheduler held a lease within {wait:.0f} s ({len(rows)} leases seen)")
        victim = held[0].holder
        pid = int(victim.split(":")[1])
        names = sorted(r.name for r in rows if r.holder == victim)
        os.kill(pid, signal.SIGKILL)
        at = datetime.now(UTC)
        self.stack.procs.pop(pids[pid]).wait(10)
        # what it still held once dead (a job may have finished between the look and the kill)
        after = [r for r in self.holders() if r.holder == victim]
        names = sorted(r.name for r in after) or names
        self.killed = {"process": pids[pid], "holder": victim, "at": at, "leases": names,
                       "started": {r.name: r.last_started_at for r in (after or [r for r in rows if r.holder == victim])},
                       "expires": {r.name: r.expires_at for r in after}}
        log(f"SIGKILL {pids[pid]} (pid {pid}) holding {', '.join(names)}")
        return self.killed

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            if self.killed is None:
                continue
            try:
                rows = self.holders()
            except Exception:
                continue
            for r in rows:
                before = self.killed["started"].get(r.name)
                if r.name in self.killed["leases"] and r.name not in self.taken and r.holder != self.killed["holder"] \
                        and r.last_started_at and (before is None or r.last_started_at > before) \
                        and r.last_started_at > self.killed["at"] - timedelta(seconds=1):
                    self.taken[r.name] = {"by": r.holder or "the standby (already finished)", "at": r.last_started_at,
                                          "after_s": round((r.last_started_at - self.killed["at"]).total_seconds(), 1)}
                    log(f"lease {r.name} taken over by {r.holder} {self.taken[r.name]['after_s']} s after the kill")

    def done(self) -> bool:
        return self.killed is not None and set(self.taken) >= set(self.killed["leases"])


def job_runs(stack: Stack) -> dict:
    """Each scheduler's finished job runs from its DEBUG log (attest/jobs/scheduler.run_job: 'job X finished
    (occurrence S): detail' or 'job X failed (occurrence S): error'), grouped by job and the occurrence the run
    took the lease for: an occurrence finished by two runs ran twice. (Only those two lines: a scheduler also
    logs 'job X: ...' when it queues a takeover or loses a lease, which are not runs.)"""
    from sqlalchemy import select

    runs: dict[tuple[str, str], list[str]] = defaultdict(list)
    per_job: Counter = Counter()
    pattern = re.compile(r"^job (\S+) (?:finished|failed) \(occurrence ([^)]+)\): ")
    for i in (1, 2):
        path = stack.tmp / f"scheduler{i}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("message") or record.get("msg") or "")
            m = pattern.match(message)
            if not m:
                continue
            if m.group(2) == "unscheduled":  # each process's first reconcile runs at start, outside the schedule
                continue
            runs[(m.group(1), m.group(2))].append(f"scheduler{i}")
            per_job[m.group(1)] += 1
    twice = {f"{job} @ {slot}": who for (job, slot), who in runs.items() if len(who) > 1}
    # the evidence job lingers ~50 s of each minute; the one-off takeover run is a second run of an occurrence
    # only if the killed run had finished it (it had not: it was killed), so it is listed, not hidden
    with stack.factory() as s:
        from attest.entitlements.models import Source, SyncRun

        syncs = s.execute(select(Source.name, SyncRun.id, SyncRun.status, SyncRun.started_at, SyncRun.finished_at)
                          .join(Source, Source.id == SyncRun.source_id).order_by(SyncRun.started_at)).all()
    overlaps = []
    by_source = defaultdict(list)
    for name, run_id, status, started, finished in syncs:
        by_source[name].append((run_id, status, started, finished))
    for name, rs in by_source.items():
        for a, b in zip(rs, rs[1:], strict=False):
            if a[1] == "succeeded" and b[1] == "succeeded" and a[3] and b[2] < a[3]:
                overlaps.append(f"{name}: runs {a[0]} and {b[0]}")
    return {"finished_runs": sum(per_job.values()), "per_job": dict(per_job), "ran_twice": twice,
            "sync_runs": Counter(f"{n}:{r[1]}" for n, rs in by_source.items() for r in rs),
            "sync_overlaps": overlaps}


def check_decisions(stack: Stack, recs: list[Recorder], since: datetime) -> dict:
    """Every one-by-one decision answered 2xx is one review_decision row (item, decision, not bulk); the bulk
    decisions the flash messages announced are the bulk rows; no item has two live decisions."""
    from sqlalchemy import func, select

    from attest.reviews.models import Decision

    with stack.factory() as s:
        singles = Counter(s.execute(select(Decision.item_id, Decision.decision).where(
            Decision.bulk.is_(False), Decision.at >= since, Decision.user_id.is_not(None))).all())
        bulk = s.scalar(select(func.count()).select_from(Decision).where(Decision.bulk.is_(True), Decision.at >= since))
        doubled = s.scalar(select(func.count()).select_from(
            select(Decision.item_id).where(Decision.at >= since, Decision.undone_at.is_(None))
            .group_by(Decision.item_id, Decision.stage).having(func.count() > 1).subquery()))
    answered = Counter((item, decision) for rec in recs for _, item, decision in rec.decided)
    missing = [k for k, n in answered.items() if singles.get(k, 0) < n]
    extra = [k for k, n in singles.items() if n > answered.get(k, 0)]
    announced = sum(r.bulk_items for r in recs)
    return {"answered_2xx": sum(answered.values()), "stored": sum(singles.values()), "missing": len(missing),
            "extra": len(extra), "bulk_announced": announced, "bulk_stored": bulk, "items_decided_twice": doubled,
            "ok": not missing and not extra and announced == bulk and not doubled}


def audit_verify(stack: Stack) -> tuple[bool, str]:
    proc = subprocess.run([ATTEST, "audit", "verify"], cwd=stack.tmp, env=stack.env, capture_output=True, text=True,
                          timeout=600)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, (out[-1] if out else "")[:300]


# --- the profile ---------------------------------------------------------------------------------------


def profile_summary(path: Path, top: int = 18) -> dict:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        short = re.sub(r".*/(site-packages|attest)/", r"\1/", filename).replace("site-packages/", "")
        rows.append({"func": f"{short}:{line}({func})", "tottime": tt, "cumtime": ct, "ncalls": nc})
    by_tt = sorted(rows, key=lambda r: -r["tottime"])[:top]

    def cum(pattern: str) -> float:
        return max((r["cumtime"] for r in rows if re.search(pattern, r["func"])), default=0.0)

    def calls(pattern: str) -> int:
        return max((r["ncalls"] for r in rows if re.search(pattern, r["func"])), default=0)

    groups = {
        "WSGI request (flask full_dispatch_request)": r"flask/app\.py:\d+\(full_dispatch_request\)",
        "Jinja2 rendering (render_template)": r"flask/templating\.py:\d+\(render_template\)",
        "SQLAlchemy ORM Session.execute": r"sqlalchemy/orm/session\.py:\d+\(execute\)",
        "psycopg cursor.execute (waiting for PostgreSQL included)": r"psycopg/cursor\.py:\d+\(execute\)",
        "SQLAlchemy commit": r"sqlalchemy/orm/session\.py:\d+\(commit\)",
        "reviews inbox query (queries.inbox)": r"attest/reviews/queries/inbox\.py:\d+\(inbox\)",
        "inbox context (_inbox_context)": r"attest/reviews/views\.py:\d+\(_inbox_context\)",
        "SSO callback view (oidc_callback)": r"attest/auth/views\.py:\d+\(oidc_callback\)",
        "inbox view (GET /reviews)": r"attest/reviews/views\.py:\d+\(inbox\)",
        "decide view (POST .../decide)": r"attest/reviews/views\.py:\d+\(decide\)",
        "decide (decisions.decide)": r"attest/reviews/decisions\.py:\d+\(decide\)",
        "bulk decide (decisions.bulk_decide)": r"attest/reviews/decisions\.py:\d+\(bulk_decide\)",
        "audit events (attest/audit record)": r"attest/audit/[a-z_]+\.py:\d+\((record|append|emit)\)",
        "session check (auth.sessions)": r"attest/auth/sessions\.py:\d+\((check|touch|load|validate)\w*\)",
        "request log (attest.logs)": r"attest/logs\.py:\d+\(format\)",
    }
    requests = calls(r"flask/app\.py:\d+\(full_dispatch_request\)")
    statements = calls(r"psycopg/cursor\.py:\d+\(execute\)")
    return {"total_s": round(total, 1), "requests": requests, "statements": statements,
            "views": {v: calls(rf"attest/(reviews|auth)/views\.py:\d+\({v}\)") for v in ("inbox", "decide", "bulk", "oidc_callback")},
            "top": [{**r, "tottime": round(r["tottime"], 2),
                                                 "cumtime": round(r["cumtime"], 2)} for r in by_tt],
            "groups": {label: round(cum(p), 2) for label, p in groups.items()}}


# --- one run --------------------------------------------------------------------------------------------


def summarize(rec: Recorder) -> dict:
    seconds = rec.end - rec.start
    app_routes = {r: v for r, v in rec.samples.items() if not r.startswith("IdP ")}
    requests = sum(len(v) for v in app_routes.values())
    statuses = Counter()
    for route, c in rec.statuses.items():
        if not route.startswith("IdP "):
            statuses.update({f"{s // 100}xx" if s else "transport": n for s, n in c.items()})
    singles = len(rec.decided)
    return {
        "seconds": round(seconds, 1), "signed_in": rec.signed_in, "requests": requests,
        "requests_per_s": round(requests / seconds, 1), "single_decisions": singles, "bulk_items": rec.bulk_items,
        "bulk_requests": rec.bulk_requests, "decisions_per_s": round((singles + rec.bulk_items) / seconds, 1),
        "single_decisions_per_s": round(singles / seconds, 1), "statuses": dict(statuses),
        "errors": rec.errors[:10], "error_count": len(rec.errors), "resent": rec.resent,
        "loop_lag_ms": {"p50": round(pct(rec.lags, .5) * 1000, 1), "p95": round(pct(rec.lags, .95) * 1000, 1),
                        "max": round(max(rec.lags) * 1000, 1)} if rec.lags else None,
        "routes": {route: {"n": len(v), "p50": round(pct(v, .5) * 1000), "p95": round(pct(v, .95) * 1000),
                           "p99": round(pct(v, .99) * 1000), "max": round(max(v) * 1000),
                           "statuses": dict(sorted(Counter(rec.statuses[route]).items())),
                           **({"steady_n": len(rec.steady[route]), "steady_p50": round(pct(rec.steady[route], .5) * 1000),
                               "steady_p95": round(pct(rec.steady[route], .95) * 1000)} if rec.steady.get(route) else {})}
                   for route, v in sorted(rec.samples.items(), key=lambda kv: -len(kv[1]))},
        "steady_after_s": round(rec.steady_from - rec.start, 1) if rec.steady_from != math.inf else None,
    }


def run_all(reviewers: int, duration: float, takeover_wait: float, profile_seconds: float, ramp: float = RAMP,
            storm: int = STORM_ROUNDS) -> dict:
    from attest.gunicorn_conf import THREADS
    from attest.jobs import HEARTBEAT, LAPSE_MARGIN, LEASE_TTL, TAKEOVER_EVERY

    stack = Stack()
    out: dict = {"reviewers": reviewers, "duration": duration, "lease_ttl_s": LEASE_TTL.total_seconds(),
                 "heartbeat_s": HEARTBEAT, "takeover_every_s": TAKEOVER_EVERY, "threads": THREADS, "load_before": load_avg(),
                 "ramp_s": ramp, "modes": {}}
    watch = None
    try:
        t0 = time.perf_counter()
        stack.up()
        out["seed"] = stack.seed()
        out["seed_s"] = round(time.perf_counter() - t0, 1)
        stack.start_web()
        out["schedulers_ready_s"] = stack.start_schedulers()
        watch = LeaseWatch(stack)
        watch.start()
        # warm-up (not measured): fresh workers import and compile templates on their first requests
        campaign_ids, items = stack.launch_fresh(0, copies=1)
        asyncio.run(drive(stack, list(items)[:4], campaign_ids, 15.0, 0.0, False, {}))
        since = datetime.now(UTC)
        recs = []
        for mode, pause in (("no pause", 0.0), ("1 s pause", 1.0)):
            campaign_ids, items = stack.launch_fresh(reviewers)
            emails = list(items)[:reviewers]
            log(f"mode {mode}: campaigns {campaign_ids}, {len(items)} reviewers with items, using {len(emails)} "
                f"({sum(items[e] for e in emails)} items); load {load_avg()}")
            events: dict = {}
            first = mode == "no pause"
            killer = None
            if first:
                def kill_later(ev: dict = events) -> None:
                    time.sleep(duration / 2)
                    try:
                        watch.kill()
                    except Exception as exc:
                        ev["kill_error"] = str(exc)
                killer = threading.Thread(target=kill_later, daemon=True)
                killer.start()
            load_start, ticks, mode_from = load_avg(), cpu_ticks(), datetime.now(UTC)
            waits = PgWaits(stack.url)
            waits.start()
            rec = asyncio.run(drive(stack, emails, campaign_ids, duration, pause, first, events, ramp))
            cores = cpu_by_part(stack, ticks, cpu_ticks(), rec.end - rec.start)
            pg_waits = waits.summary()
            if killer is not None:
                killer.join()
            recs.append(rec)
            out["modes"][mode] = {**summarize(rec), "campaign_items": sum(items[e] for e in emails),
                                  "reviewers_with_items": len(items), "reviewers": len(emails), "events": events,
                                  "load_at_start": load_start, "load_at_end": load_avg(), "cores": cores,
                                  "server": server_times(stack, mode_from, datetime.now(UTC)),
                                  "pg_waits": pg_waits}
            log(f"mode {mode}: {json.dumps({k: v for k, v in out['modes'][mode].items() if k != 'routes'})}")
        if storm:  # the same reviewers, all signing in at the same second (new browsers), nothing else running
            out["storm"] = storm_rounds(stack, emails, storm)
            log(f"storm: {json.dumps(out['storm'])}")
        # the takeover: wait (bounded) until the standby holds every lease the killed scheduler had
        deadline = time.monotonic() + takeover_wait
        while watch.killed and not watch.done() and time.monotonic() < deadline:
            time.sleep(2)
        if watch.killed:
            # the lapse (the standby looks at the moment the lease lapses), its margin, and 1 s for APScheduler to
            # start the run
            limit = LEASE_TTL + LAPSE_MARGIN + timedelta(seconds=1)
            taken = {k: {"after_s": v["after_s"], "by": v["by"],
                         # from the dead holder's last heartbeat (its lease's expiry minus the TTL)
                         "after_heartbeat_s": round((v["at"] - (watch.killed["expires"][k] - LEASE_TTL))
                                                    .total_seconds(), 1) if watch.killed["expires"].get(k) else None}
                     for k, v in watch.taken.items()}
            out["takeover"] = {
                "killed": watch.killed["process"], "leases": watch.killed["leases"],
                "killed_at": watch.killed["at"].isoformat(),
                "taken": taken,
                "not_taken": [n for n in watch.killed["leases"] if n not in watch.taken],
                "limit_s": limit.total_seconds(),
                "within_limit": bool(watch.taken) and all(
                    (v["after_s"] if v.get("after_heartbeat_s") is None else v["after_heartbeat_s"]) <= limit.total_seconds()
                    for v in taken.values()),
            }
        # the audit chain, verified while the scheduler still writes, then with everything stopped
        out["audit_verify_live"] = audit_verify(stack)
        for name in [n for n in stack.procs if n.startswith("scheduler")] + ["web"]:
            stack.stop(name)
        out["jobs"] = job_runs(stack)
        out["decisions_check"] = check_decisions(stack, recs, since)
        out["audit_verify"] = audit_verify(stack)
        # the profile: one worker under cProfile, a short no-pause run
        if profile_seconds > 0:
            prof = stack.tmp / "worker.prof"
            stack.start_web(profile=prof)
            campaign_ids, items = stack.launch_fresh(reviewers)
            # fewer reviewers, so that the profile is of paging and deciding more than of 50 sign-ins
            rec = asyncio.run(drive(stack, list(items)[:PROFILE_REVIEWERS], campaign_ids, profile_seconds, 0.0, False, {}))
            out["profile_run"] = summarize(rec)
            stack.stop("web")
            if prof.exists():
                out["profile"] = profile_summary(prof)
        out["load_after"] = load_avg()
        return out
    finally:
        if watch is not None:
            watch.stop_event.set()
        keep = os.environ.get("ATTEST_BENCH_KEEP")
        if keep:
            log(f"logs kept in {stack.tmp}")
        stack.down()


# --- the report ---------------------------------------------------------------------------------------


def report(r: dict) -> str:
    from bench.machine import describe

    lines = [
        "## Load: reviewers on PostgreSQL, 2 web workers, 2 schedulers (issue 19)\n",
        f"`python -m bench.load` (`make bench`). PostgreSQL; `attest serve` (gunicorn, attest/gunicorn_conf.py, 2 "
        f"workers of {r.get('threads', 1)} threads each); 2 `attest scheduler` processes; the sandbox (fake Okta, GitHub, moto, the demo IdP "
        f"oidc-provider-mock) in one more process; the load generator (asyncio + httpx, one client and cookie jar per "
        f"reviewer) in the benchmark's own process: all on this one machine, over loopback. The demo org is synced "
        f"(seeding took {r['seed_s']} s) and, for each mode, {CAMPAIGNS} fresh campaigns of the quarterly manager review (the definition and "
        f"copies of it under other names) are launched, so that the reviewers do not run out of items (they did with "
        f"one campaign); "
        f"up to {r['reviewers']} of its reviewers "
        + (f"arrive evenly over the first {r['ramp_s']:g} s (a load test's spawn rate: "
           f"{r['reviewers'] / r['ramp_s']:g} a second; all of them at once is the sign-in storm below) and "
           if r.get("ramp_s") else "all start at the same second and ")
        + f"sign in through SSO (every hop: /login, /login/oidc, the IdP's form, "
        f"its POST, the callback, /reviews), page their inbox (50 items a page, the next page as htmx fetches it; a campaign's pages "
        f"in turn, then the next campaign's once a pass found nothing undecided) and "
        f"decide one by one ({DECIDES_PER_PAGE} per page, 10% revoke, htmx) and in bulk (every {BULK_EVERY}th page: "
        f"'Approve N matching' filtered to one person, then the full inbox page it redirects to) for "
        f"{r['duration']:.0f} s per mode. In the no-pause mode an admin (signed in the same way) asks for a sync of the "
        f"demo Okta a quarter in (run by a scheduler) and launches the monthly privileged owner review from the web "
        f"40% in; half way the scheduler holding a lease is killed with SIGKILL. Latencies are client-side (queueing "
        f"at gunicorn's workers included). Decisions/s counts one-by-one decisions answered 2xx plus the items the "
        f"bulk approvals announced.\n",
        (f"Code: commit {r['commit']} (a `git archive` copy, so edits in progress elsewhere in the checkout do not "
         "affect it). " if r.get("commit", "working tree") != "working tree" else "Code: the working tree. ")
        + f"Machine: {describe()}. Load average (1/5/15 min) before: {r['load_before']}, after: {r['load_after']} "
        f"(the machine was shared with other work while this ran).\n",
        "| mode | reviewers (with items) | items | decisions/s (one by one + bulk) | requests/s | requests | 2xx / 3xx / 4xx / 5xx / transport | load avg at start / end |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for mode, m in r["modes"].items():
        st = m["statuses"]
        lines.append(
            f"| {mode} | {m['reviewers']} ({m['reviewers_with_items']}) | {m['campaign_items']:,} | "
            f"{m['decisions_per_s']} ({m['single_decisions']:,} + {m['bulk_items']:,} in {m['bulk_requests']} bulk) | "
            f"{m['requests_per_s']} | {m['requests']:,} | {st.get('2xx', 0)} / {st.get('3xx', 0)} / {st.get('4xx', 0)} / "
            f"{st.get('5xx', 0)} / {st.get('transport', 0)} | {m['load_at_start']} ; {m['load_at_end']} |")
    for mode, m in r["modes"].items():
        steady = m.get("steady_after_s")
        lines += ["", f"Per route, {mode} (ms, client side; the last columns: only the requests started once every "
                  f"reviewer had signed in and seen a first page"
                  + (f", {steady} s in" if steady is not None else ": not reached") + "):", "",
                  "| route | requests | p50 | p95 | p99 | max | statuses | once all signed in: requests | p50 | p95 |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for route, v in m["routes"].items():
            sts = ", ".join(f"{k}: {n}" for k, n in v["statuses"].items())
            after = (f"{v['steady_n']:,} | {v['steady_p50']} | {v['steady_p95']}" if "steady_n" in v else "0 | | ")
            lines.append(f"| {route} | {v['n']:,} | {v['p50']} | {v['p95']} | {v['p99']} | {v['max']} | {sts} | {after} |")
        if m.get("server"):
            lines.append("\nThe app's own time per route (the web workers' request log: from the request reaching Flask to "
                         "its answer; the client's time above adds gunicorn's queue, the GIL and the load generator): "
                         + "; ".join(f"{k} {v['n']:,} requests, p50 {v['p50']} ms, p95 {v['p95']} ms"
                                     for k, v in list(m["server"].items())[:6]) + ".")
        if m.get("loop_lag_ms"):
            g = m["loop_lag_ms"]
            lines.append(f"\nThe load generator's event loop woke late by p50 {g['p50']} ms, p95 {g['p95']} ms, max "
                         f"{g['max']} ms (a 50 ms sleep's overshoot): that much of each client-side figure is the "
                         "generator's own wait, not the server's.")
        if m.get("cores"):
            lines.append(f"\nCPU used during this mode, in cores on average (of {os.cpu_count()}; from /proc): "
                         + ", ".join(f"{k} {v}" for k, v in m["cores"].items()) + f"; total {sum(m['cores'].values()):.2f}.")
        if m.get("pg_waits"):
            w = m["pg_waits"]
            lines.append(f"\nPostgreSQL backends of the run, sampled every {PgWaits.EVERY} s ({w['samples']} samples): "
                         f"{w['active']} active on average; of those: "
                         + "; ".join(f"{k} {v}" for k, v in w["waits"].items()) + ".")
        if m["events"]:
            lines.append(f"\nDuring this mode: {json.dumps(m['events'], default=str)}")
        if m.get("resent"):
            lines.append(f"\nRequests sent again (once, as a browser does) after the server closed the kept-alive "
                         f"connection they went out on: {m['resent']}.")
        if m["error_count"]:
            lines.append(f"\nErrors ({m['error_count']}): " + "; ".join(m["errors"][:5]))
    if r.get("storm"):
        lines += ["", f"**The sign-in storm.** After the modes, the same {r['storm'][0]['reviewers']} reviewers sign in "
                  "through SSO at the same second from new browsers, with no other traffic, landing on their inbox "
                  "(GET /reviews, the first page): the worst start a Monday morning can bring, and the case the ramp "
                  "above leaves out. Per hop, client side (ms):", "",
                  "| round | signed in | seconds | load before | " + " | ".join(f"{h} p50 / p95" for h in SIGNIN_HOPS) + " |",
                  "|---|---:|---:|---|" + "---:|" * len(SIGNIN_HOPS)]
        for n, rd in enumerate(r["storm"], 1):
            hops = rd["hops"]
            lines.append(f"| {n} | {rd['signed_in']}/{rd['reviewers']} | {rd['seconds']} | {rd['load_before']} | "
                         + " | ".join(f"{hops[h]['p50']} / {hops[h]['p95']}" if h in hops else "" for h in SIGNIN_HOPS)
                         + " |")
        lines.append("\nCPU per sign-in (with its first inbox page), by process, ms: " + "; ".join(
            f"round {n}: " + ", ".join(f"{k} {v}" for k, v in rd.get("cpu_per_signin_ms", {}).items())
            for n, rd in enumerate(r["storm"], 1)) + ".")
        errors = [e for rd in r["storm"] for e in rd["errors"]]
        if errors:
            lines.append("\nErrors: " + "; ".join(errors[:5]))
    dc = r["decisions_check"]
    lines += ["", "**Afterwards.** "
              f"Decisions: {dc['answered_2xx']:,} one-by-one decisions answered 2xx, {dc['stored']:,} stored "
              f"({dc['missing']} missing, {dc['extra']} extra); {dc['bulk_announced']:,} items announced by the bulk "
              f"approvals, {dc['bulk_stored']:,} bulk decision rows; items with two live decisions at one stage: "
              f"{dc['items_decided_twice']} -> **{'OK' if dc['ok'] else 'NOT OK'}**. "
              f"`attest audit verify` with the web workers and schedulers stopped: "
              f"**{'passed' if r['audit_verify'][0] else 'FAILED'}** ({r['audit_verify'][1]})"
              + ("." if "audit_verify_live" not in r else
                 f"; run while the standby scheduler was still writing events: "
                 f"{'passed' if r['audit_verify_live'][0] else 'FAILED'} ({r['audit_verify_live'][1]}).")]
    t = r.get("takeover")
    if t:
        taken = "; ".join(f"{k} {v['after_s']} s after the kill"
                          + (f" ({v['after_heartbeat_s']} s after its last heartbeat)" if v.get("after_heartbeat_s") else "")
                          for k, v in t["taken"].items()) or "none"
        lines.append(
            f"\n**Scheduler kill.** SIGKILL of {t['killed']} while it held {', '.join(t['leases'])} (lease "
            f"{r['lease_ttl_s']:.0f} s, heartbeat {r['heartbeat_s']:.0f} s, each scheduler's takeover watch every "
            f"{r.get('takeover_every_s', 60):.0f} s and once more when a lease it saw lapses; attest/jobs/ promises a "
            f"takeover when the lease lapses: within LEASE_TTL of the last heartbeat, plus a 0.2 s margin and up to 1 s "
            f"for the scheduler to start the run = {t['limit_s']:.1f} s). Taken over by the standby: {taken}"
            + (f"; not taken over while watched: {', '.join(t['not_taken'])}" if t["not_taken"] else "")
            + f" -> **{'within' if t['within_limit'] and not t['not_taken'] else 'NOT within'} the lease time**"
            + (f" (at most {max(v['after_s'] for v in t['taken'].values())} s counted from the kill: a lease lapses "
               f"{r['lease_ttl_s']:.0f} s after the holder's last heartbeat, which may come just before its death, and "
               "no standby may run the job before that)." if t["taken"] else "."))
    j = r["jobs"]
    lines.append(
        f"\n**Jobs.** {j['finished_runs']} finished job runs logged by the two schedulers "
        f"({', '.join(f'{k} {v}' for k, v in sorted(j['per_job'].items()))}); occurrences finished twice: "
        f"{len(j['ran_twice'])}{' (' + '; '.join(f'{k}: {v}' for k, v in j['ran_twice'].items()) + ')' if j['ran_twice'] else ''}; "
        f"sync runs {dict(j['sync_runs'])}, overlapping successful syncs of a source: {len(j['sync_overlaps'])}.")
    p = r.get("profile")
    if p:
        pr = r["profile_run"]
        views = ", ".join(f"{k} {v}" for k, v in p.get("views", {}).items())
        per = f"{p['statements'] / p['requests']:.1f}" if p.get("requests") else "?"
        lines += ["", f"**Profile.** One of the two gunicorn workers under cProfile (request handling only, through "
                  f"gunicorn's pre/post_request hooks in a config the benchmark writes; the app unchanged) during a "
                  f"{pr['seconds']:.0f} s no-pause run of {PROFILE_REVIEWERS} reviewers ({pr['requests']:,} requests to "
                  f"both workers). cProfile's clock is wall time, so waiting for PostgreSQL (itself short of CPU here) "
                  f"counts. That worker handled {p['requests']} requests ({views}) with {p['statements']} SQL statements "
                  f"({per} a request); {p['total_s']} s profiled. Cumulative time of the main parts (s):", "",
                  "| part | cumulative s | share |", "|---|---:|---:|"]
        whole = p["groups"].get("WSGI request (flask full_dispatch_request)") or p["total_s"]
        for label, v in p["groups"].items():
            lines.append(f"| {label} | {v} | {v / whole * 100:.0f}% |" if whole else f"| {label} | {v} | |")
        lines += ["", "Top functions by own time:", "", "| function | own s | cumulative s |", "|---|---:|---:|"]
        for row in p["top"]:
            lines.append(f"| `{row['func']}` | {row['tottime']} | {row['cumtime']} |")
    lines += ["", NOTES.strip()]
    return "\n".join(lines) + "\n"


# what the figures and the profile say, written from the run of 2026-12-06 (re-read it against new figures)
NOTES = """
**Reading these figures.** Everything above shares 2 cores: PostgreSQL, the two web workers, the two schedulers,
the sandbox and the demo IdP, the load generator, and the other work on the machine (see the load averages: a
load of 10-20 on 2 cores means a process gets a fraction of a core). The latencies are mostly queueing: each
gunicorn worker runs 4 threads (gthread) but one at a time on the CPU (the GIL), so with 50 reviewers and no pause
a request waits behind many others. What one request costs, independent of the load, is in
bench/results/request_cost.md (SQL statements, the app's CPU, bytes). Compare the modes with each other and with
the load average, not with a production machine.

**Where the time goes** (the per-mode CPU and PostgreSQL lines above, the profile, and `python -m bench
request_cost`). Until 2026-12-07 the queue was the audit chain's head: every audited write locks that one row until
its commit, and the sampling of PostgreSQL's backends found, of 1.8 active with no pause, 1.4 waiting for it (the
web workers used 0.6 of the 2 cores: they were waiting, not working). The holder made two round trips to its web
worker while holding it, and each waited up to 5 ms for the GIL beside threads rendering pages. Now one
statement locks the head, inserts the event (its hash computed by PostgreSQL from bytes the writer prepared, and
checked by the writer) and moves the head, and the workers hand the GIL over every 1 ms: in 60 s runs on the same
busy machine, 0.16 backends waited for the head instead of 1.2 and decisions/s went from 49.7 to 63.4. What is
left is CPU (the web workers used 1.2 of the 2 cores with no pause, PostgreSQL 0.5, the load generator 0.25): a
decision is 8 SQL statements and ~5-6 ms of the app's CPU, an inbox page 8 statements (7 for the htmx list),
~150 KB and ~10 ms (bench/results/request_cost.md, the demo org on PostgreSQL, least of 3 interleaved runs). The reviewers
arrive over the first 10 s (until 2026-12-07 all 50 started in the same second, and the first pages queued behind
50 simultaneous sign-ins: the full inbox page's p95 with a 1 s pause was 634 ms counting them, 179 ms without);
that storm is now measured on its own, after the modes (the sign-in storm table above), so that neither figure
hides the other. A sign-in is the IdP's two pages, the callback (the token exchange with the IdP over the back
channel, the ID token's checks, the session row) and the first inbox page: with 50 at once on 2 cores shared
with the IdP and the load generator, each waits for the others' CPU.

**Done for issue 19 part 6.** gunicorn's gthread worker, 4 threads a worker (attest/gunicorn_conf.py: a worker
serves other requests while one waits on PostgreSQL) handing the GIL over every 1 ms; the audit chain's head held
for one statement and the commit; the scheduler takeover at the lapse of the lease (a 60 s lease renewed every
15 s; each scheduler looks every 5 s and once more at the moment a lease it saw lapses: within the lease of the
holder's last heartbeat; was up to 180 s); `attest audit verify` on a live system; the decision request from 15 to
10 statements and about half the CPU; rows a third lighter; the benchmark's 3 open campaigns, so that 50
reviewers with no pause do not run out of items (with one, they did, and decisions/s measured the campaign).

**What would scale it further:**
1. Cores for the web tier. The workers share nothing but the database (sessions are server-side rows), so
   decisions/s grows with a worker per core and more web hosts behind the proxy (compose.yaml), until PostgreSQL's
   CPU is the limit; then PostgreSQL on its own host (and a connection pooler such as PgBouncer once workers x
   threads x hosts nears max_connections). Here the load generator, the IdP, the sandbox, PostgreSQL and both
   schedulers take the same 2 cores as the web workers.
2. The audit chain's head bounds audited writes at one commit at a time: about 1 / (the commit's WAL flush + one
   statement), some 150-300 a second with this machine's 3-6 ms flushes, far more on a server's NVMe. Beyond
   that, events would be chained after their commit by one sealer (inserted unchained, chained in order within
   a second), a change to the trail's format.
3. The inbox page's render, still about a quarter of its CPU (mostly HTML escaping, ~31 values a row) after the
   rows became a macro imported once per response (an `{% include %}` per row copied the template context 50
   times) and the htmx list stopped counting the reviewer's other campaigns: a first page of 25 rows with the
   rest loaded by htmx as the reviewer scrolls (hx-trigger="revealed") would halve what is left.
4. One database connection a request: today a request checks a connection out up to 3 times (the user's read,
   the write transaction, the answer's reads), each with the pool's pre-ping round trip.
5. Bulk decisions are far cheaper per item than single ones (one statement set for up to thousands of items):
   "Approve N matching" with filters is what a reviewer with hundreds of items should be steered to.
"""


def from_head(argv: list[str]) -> dict:
    """Run the benchmark on the committed code: `git archive HEAD` into a temporary directory and run this
    module from there (PYTHONPATH before the editable install), so edits in progress in the working tree
    (others' or one's own) neither break nor colour the figures. Returns the child's result."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    src = Path(tempfile.mkdtemp(prefix="attest-bench-load-src-"))
    archive = subprocess.run(["git", "archive", "HEAD", "attest", "bench", "examples"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    result_file = src / "result.json"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-m", "bench.load", *argv, "--source", "worktree", "--json-out", str(result_file)],
                   cwd=src, env=env, check=True)
    result = json.loads(result_file.read_text())
    result["commit"] = commit
    return result


def run(out: Path, argv: list[str] | None = None) -> str:
    argv = list(argv or [])
    args = parse(argv)
    if args.report_only:
        text_ = report(json.loads(Path(args.report_only).read_text()))
        out.write_text(text_)
        return text_
    if args.source == "head":
        result = from_head([a for a in argv if a != "--no-write"])
    else:
        result = run_all(args.reviewers, args.duration, args.takeover_wait, args.profile_seconds, args.ramp,
                         args.storm_rounds)
        result["commit"] = "working tree"
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, default=str))
            return ""
    (Path(tempfile.gettempdir()) / "attest-bench-load.json").write_text(json.dumps(result, default=str, indent=1))
    text_ = report(result)
    if not args.no_write:
        out.write_text(text_)
    return text_


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds per mode (default 180)")
    parser.add_argument("--reviewers", type=int, default=50)
    parser.add_argument("--takeover-wait", type=float, default=240.0,
                        help="seconds to wait after the runs for the standby to take over (default 240)")
    parser.add_argument("--profile-seconds", type=float, default=30.0)
    parser.add_argument("--ramp", type=float, default=RAMP,
                        help=f"seconds over which the reviewers arrive, evenly (default {RAMP:g}; 0: all at once)")
    parser.add_argument("--storm-rounds", type=int, default=STORM_ROUNDS,
                        help=f"after the modes, rounds of all reviewers signing in at once (default {STORM_ROUNDS})")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write results/load.md")
    parser.add_argument("--source", choices=["head", "worktree"], default="head",
                        help="run the committed code (default: a `git archive HEAD` copy) or the working tree as it is")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    parser.add_argument("--report-only", metavar="JSON",
                        help="write results/load.md again from a run's saved figures (/tmp/attest-bench-load.json)")
    parser.add_argument("--signin-storm", type=int, metavar="ROUNDS",
                        help="only the sign-ins: --reviewers SSO sign-ins at once (each lands on its inbox), "
                             "ROUNDS times, on the working tree; prints per-hop p50/p95")
    parser.add_argument("--serve-sandbox", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    ns = parse(sys.argv[1:])
    if ns.serve_sandbox:
        serve_sandbox(json.loads(ns.serve_sandbox))
    elif ns.signin_storm:
        print(run_signin_storm(ns.reviewers, ns.signin_storm))
    else:
        text = run(Path(__file__).parent / "results" / "load.md", sys.argv[1:])
        if text:
            print(text)
