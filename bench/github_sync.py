"""GitHub connector benchmark (issue 5): a sandbox org of 2,000 members, 300 nested teams (plus an
"everyone" team of all members) and 3,000 repositories, behind 50 ms of added latency per request.

The fake GitHub runs in its own process on loopback, so the figures are the connector's and the sync
engine's own. The measured run is a full `run_sync` into a fresh SQLite database, in a fresh process:
wall time, REST and GraphQL requests (counted by the fake), peak memory. Targets: at most 600 requests in
all, under 120 s.

    python -m bench.github_sync                                   # the issue's sizes
    python -m bench.github_sync --members 200 --teams 30 --repos 300   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"members": 2_000, "teams": 300, "repos": 3_000}
LATENCY = 0.05
TOKEN = "ghp_sandbox_token_for_attest"


def serve(info_file: str, sizes: dict[str, int], latency: float) -> None:
    """Child process: build the fake org, serve it, write its URL, wait."""
    import logging

    from attest.connectors.sandbox.github_fake import create_app
    from attest.connectors.sandbox.server import serve_in_thread

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    app = create_app(org="bench-org", big_team=True, rate_limit=10**9, **sizes)
    built = time.perf_counter() - t0
    o = app.github.orgs["bench-org"]
    server = serve_in_thread(app, latency=latency)
    info = {"url": server.url, "build_s": built, "members": len(o.members), "teams": len(o.teams),
            "repos": len(o.repos), "outside": len(o.outside), "invitations": len(o.invitations),
            "team_memberships": sum(len(t["members"]) for t in o.teams.values()),
            "team_repos": sum(len(t["repos"]) for t in o.teams.values()),
            "collaborators": sum(len(r["collaborators"]) for r in o.repos.values()),
            "depth": _depth(o)}
    Path(info_file).write_text(json.dumps(info))
    while True:
        time.sleep(3600)


def _depth(o) -> int:
    def depth(tid: int) -> int:
        n = 1
        while o.teams[tid]["parent"]:
            tid, n = o.teams[tid]["parent"], n + 1
        return n
    return max((depth(t) for t in o.teams), default=0)


def _stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/_sandbox/stats", timeout=10).json()


def measure(url: str, concurrency: int) -> dict:
    """Child process: one full sync into a fresh SQLite database; prints its figures as JSON."""
    import resource

    from alembic import command
    from sqlalchemy.orm import sessionmaker

    from attest.cli import alembic_config
    from attest.config import load_settings
    from attest.connectors.github import GitHubConnector
    from attest.db import make_engine
    from attest.entitlements.models import Source
    from attest.entitlements.sync import run_sync

    tmp = tempfile.mkdtemp(prefix="attest-github-bench-")
    db = f"sqlite:///{tmp}/bench.db"
    command.upgrade(alembic_config(db), "head")
    settings = load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": db,
                                      "ATTEST_INSTANCE_PATH": tmp, "ATTEST_LOG_LEVEL": "WARNING"})
    engine = make_engine(db)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    gh_settings = {"orgs": ["bench-org"], "api_url": url, "concurrency": concurrency}
    with factory() as s, s.begin():
        s.add(Source(kind="github", name="github", settings=gh_settings, authoritative=False, enabled=True))
    before = _stats(url)
    conn = GitHubConnector(gh_settings, {"token": TOKEN})
    t0 = time.perf_counter()
    result = run_sync(factory, settings, "github", connector=conn)
    seconds = time.perf_counter() - t0
    after = _stats(url)
    return {"seconds": seconds, "status": result.status, "error": result.error, "read": result.stats.get("read"),
            "added": result.stats.get("added"), "connector_calls": result.api_calls,
            "rest": after["rest"] - before["rest"], "graphql": after["graphql"] - before["graphql"],
            "concurrency": concurrency, "notes": result.notes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(out: Path | None = None, sizes: dict[str, int] | None = None, latency: float = LATENCY,
        concurrency: int = 8) -> str:
    from bench.machine import describe

    sizes = dict(sizes or SIZES)
    out = out or Path(__file__).parent / "results" / "github.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        info_file = str(Path(tmp) / "server.json")
        server = subprocess.Popen([sys.executable, "-m", "bench.github_sync", "--serve", info_file,
                                   "--sizes", json.dumps(sizes), "--latency", str(latency)], cwd=ROOT, env=env)
        try:
            deadline = time.time() + 300
            while not Path(info_file).exists() or not Path(info_file).read_text():
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the fake GitHub did not start")
                time.sleep(0.2)
            time.sleep(0.2)
            info = json.loads(Path(info_file).read_text())
            proc = subprocess.run([sys.executable, "-m", "bench.github_sync", "--measure", "--url", info["url"],
                                   "--concurrency", str(concurrency)], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"github bench failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = report(sizes, latency, info, result, describe())
    canonical = Path(__file__).parent / "results" / "github.md"  # the figures the docs and README quote
    for path in {out, canonical}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def report(sizes: dict[str, int], latency: float, info: dict, r: dict, machine: str) -> str:
    total = r["rest"] + r["graphql"]
    ok = total <= 600 and r["seconds"] < 120 and r["status"] == "succeeded"
    lines = [
        "## GitHub connector (issue 5)",
        "",
        f"Sandbox org: {info['members']:,} members (with SAML identities), {info['teams']:,} teams nested up to "
        f"{info['depth']} deep (including an \"everyone\" team of all members), {info['repos']:,} repositories, "
        f"{info['outside']:,} outside collaborators, {info['invitations']:,} pending invitations, "
        f"{info['team_memberships']:,} team memberships, {info['team_repos']:,} team-repository permissions, "
        f"{info['collaborators']:,} direct collaborators; {latency * 1000:.0f} ms of added latency per request; the "
        f"fake GitHub runs in its own process on loopback. Connector concurrency {r['concurrency']}. Targets: at "
        "most 600 requests in all, under 120 s.",
        "",
        f"Machine: {machine}",
        "",
        "| run | wall time | REST requests | GraphQL requests | total | peak RSS | status |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| full sync into SQLite | {r['seconds']:.1f} s | {r['rest']:,} | {r['graphql']:,} | {total:,} | "
        f"{r['peak_rss_mb']:.0f} MB | {r['status']} |",
        "",
        f"Targets {'met' if ok else 'NOT met'}. The connector counted {r['connector_calls']:,} requests "
        "(the fake's count above is authoritative).",
        "",
        "Records read: " + ", ".join(f"{k} {v:,}" for k, v in sorted((r.get("read") or {}).items())),
        "",
        "Where the requests go: GraphQL pages members (100 a query), SAML identities (100), teams with their "
        "immediate members (100 teams a query; a team of more than 100 members is paged on its own) and "
        "repositories with their direct collaborators (100 repositories a query); REST reads one "
        "`/teams/{slug}/repos` listing per team (with `role_name`, custom roles included) instead of a call per "
        "repository, plus the org, members without 2FA, outside collaborators, invitations, organization roles "
        "and custom repository roles.",
    ]
    if r.get("error"):
        lines += ["", f"Error: {r['error']}"]
    if r.get("notes"):
        lines += ["", "Notes: " + "; ".join(r["notes"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve")
    parser.add_argument("--sizes")
    parser.add_argument("--latency", type=float, default=LATENCY)
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--members", type=int)
    parser.add_argument("--teams", type=int)
    parser.add_argument("--repos", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, json.loads(args.sizes), args.latency)
    elif args.measure:
        print(json.dumps(measure(args.url, args.concurrency)))
    else:
        chosen = dict(SIZES)
        for key in SIZES:
            if getattr(args, key):
                chosen[key] = getattr(args, key)
        print(run(sizes=chosen, latency=args.latency, concurrency=args.concurrency))
