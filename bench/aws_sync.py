"""AWS connector benchmark (issue 4): a moto organization of 20 accounts x 200 IAM users, 2,000 IAM
Identity Center users in 40 groups, 50 permission sets and their account assignments.

moto serves the organization from its own process on loopback (seeded in-process there, then served over
HTTP with 50 ms of added latency per request, like a real AWS round trip), so the figures are the
connector's and the sync engine's own. The measured run is a full `run_sync` into a fresh SQLite database,
in a fresh process: wall time, API requests (counted by the server, and by the connector per operation),
the minimum number of calls the paginators allow for this organization, peak memory, and how many
accounts were read at the same time. Target: API calls within 1.2x of the minimum.

    python -m bench.aws_sync                                  # the issue's sizes
    python -m bench.aws_sync --accounts 4 --iam-users 20 --ic-users 200 --permission-sets 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"accounts": 20, "iam_users": 200, "ic_users": 2_000, "permission_sets": 50, "ic_groups": 40}
LATENCY = 0.05
CONCURRENCY = 8
PAGE = {"organizations": 20, "identitystore": 100, "sso-admin": 100, "iam": 1000}


def _spec(sizes: dict[str, int]):
    from attest.connectors.sandbox.aws_moto import OrgSpec, default_people

    return OrgSpec(accounts=sizes["accounts"], ous=("Production", "Staging", "Development", "Sandbox"),
                   iam_users=sizes["iam_users"], iam_groups=8, roles=5, ic_users=sizes["ic_users"],
                   ic_groups=sizes["ic_groups"], permission_sets=sizes["permission_sets"], direct_assignments=20,
                   group_assignments=5, mfa_every=4,
                   people=default_people(max(sizes["ic_users"], sizes["iam_users"] + 3 * sizes["accounts"])))


def serve(info_file: str, sizes: dict[str, int], latency: float) -> None:
    """Child process: seed moto in-process, then serve it over HTTP (counting requests); write its URL."""
    import threading

    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    from moto import mock_aws
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from attest.connectors.sandbox.aws_moto import fast_managed_policies, seed_org
    from attest.connectors.sandbox.server import Latency

    fast_managed_policies()
    t0 = time.perf_counter()
    mock = mock_aws(config={"iam": {"load_aws_managed_policies": True}})
    mock.start()  # the seed goes straight to moto's backends; the server below serves the same state
    org = seed_org(_spec(sizes))
    built = time.perf_counter() - t0
    count = {"n": 0}
    lock = threading.Lock()
    moto_app = Latency(DomainDispatcherApplication(create_backend_app), latency)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/_bench/stats":
            body = json.dumps({"requests": count["n"]}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with lock:
            count["n"] += 1
        return moto_app(environ, start_response)

    class Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    info = {"url": f"http://{host}:{port}", "build_s": built, "seed_calls": org.calls,
            "accounts": len(org.account_ids), "iam_users": sum(len(u) for u in org.iam_users.values()),
            "ic_users": len(org.ic_users), "ic_groups": len(org.ic_groups),
            "ic_memberships": sum(len(m) for m in org.ic_members.values()),
            "permission_sets": len(org.permission_sets), "assignments": len(org.assignments),
            "minimum": minimum_calls(org)}
    Path(info_file).write_text(json.dumps(info))
    while True:
        time.sleep(3600)


def minimum_calls(org) -> dict[str, int]:
    """The fewest requests a full read of this organization takes with the largest page each list call
    allows (one request for a call that is not paged, one for an empty listing), read from moto itself."""
    import boto3

    def pages(n: int, service: str) -> int:
        return max(1, math.ceil(n / PAGE[service]))

    orgs = boto3.client("organizations", region_name="us-east-1")
    sso = boto3.client("sso-admin", region_name="us-east-1")
    m: dict[str, int] = {"sts:GetCallerIdentity": 1, "sts:AssumeRole": len(org.account_ids) - 1,
                         "organizations:DescribeOrganization": 1, "organizations:ListRoots": 1}
    nodes = [r["Id"] for r in orgs.list_roots()["Roots"]]
    m["organizations:ListAccountsForParent"] = m["organizations:ListOrganizationalUnitsForParent"] = 0
    while nodes:
        node = nodes.pop()
        accts = orgs.list_accounts_for_parent(ParentId=node, MaxResults=20)
        ous = orgs.list_organizational_units_for_parent(ParentId=node, MaxResults=20)
        m["organizations:ListAccountsForParent"] += pages(len(accts["Accounts"]), "organizations")
        m["organizations:ListOrganizationalUnitsForParent"] += pages(len(ous["OrganizationalUnits"]), "organizations")
        nodes += [o["Id"] for o in ous["OrganizationalUnits"]]
    # service control policies: one listing, then each policy's document and targets
    scps = orgs.list_policies(Filter="SERVICE_CONTROL_POLICY", MaxResults=20)["Policies"]
    m["organizations:ListPolicies"] = pages(len(scps), "organizations")
    m["organizations:DescribePolicy"] = len(scps)
    m["organizations:ListTargetsForPolicy"] = sum(pages(len(orgs.list_targets_for_policy(
        PolicyId=p["Id"], MaxResults=20)["Targets"]), "organizations") for p in scps)
    m["sso:ListInstances"] = 1
    m["sso:ListPermissionSets"] = pages(len(org.permission_sets), "sso-admin")
    n_sets = len(org.permission_sets)
    for op in ("DescribePermissionSet", "ListManagedPoliciesInPermissionSet",
               "ListCustomerManagedPolicyReferencesInPermissionSet", "GetInlinePolicyForPermissionSet"):
        m[f"sso:{op}"] = n_sets
    m["identitystore:ListUsers"] = pages(len(org.ic_users), "identitystore")
    m["identitystore:ListGroups"] = pages(len(org.ic_groups), "identitystore")
    m["identitystore:ListGroupMemberships"] = sum(pages(len(v), "identitystore") for v in org.ic_members.values())
    m["sso:ListPermissionSetsProvisionedToAccount"] = len(org.account_ids)
    inst = sso.list_instances()["Instances"][0]["InstanceArn"]
    m["sso:ListAccountAssignments"] = 0
    for acct in org.account_ids:
        provisioned = sso.list_permission_sets_provisioned_to_account(InstanceArn=inst, AccountId=acct)["PermissionSets"]
        for ps in provisioned:
            n = len(sso.list_account_assignments(InstanceArn=inst, AccountId=acct, PermissionSetArn=ps,
                                                 MaxResults=100)["AccountAssignments"])
            m["sso:ListAccountAssignments"] += pages(n, "sso-admin")
    # IAM per account: one authorization-details listing (users+groups+roles+local policies, 1,000 an item
    # page) and the credential report (generate, then get: a first sync cannot skip the generation)
    m["iam:GetAccountAuthorizationDetails"] = 0
    for acct in org.account_ids:
        iam = _iam(acct, org.management_id)
        d = iam.get_account_authorization_details(Filter=["User", "Group", "Role", "LocalManagedPolicy"])
        items = sum(len(d[k]) for k in ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"))
        m["iam:GetAccountAuthorizationDetails"] += pages(items, "iam")
    m["iam:GenerateCredentialReport"] = m["iam:GetCredentialReport"] = len(org.account_ids)
    return m


def _iam(account_id: str, management_id: str):
    import boto3

    if account_id == management_id:
        return boto3.client("iam", region_name="us-east-1")
    creds = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole", RoleSessionName="bench")["Credentials"]
    return boto3.client("iam", region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


def _stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/_bench/stats", timeout=10).json()


def measure(url: str, concurrency: int) -> dict:
    """Child process: one full sync into a fresh SQLite database; prints its figures as JSON."""
    import resource

    from alembic import command
    from sqlalchemy.orm import sessionmaker

    from attest.cli import alembic_config
    from attest.config import load_settings
    from attest.connectors.aws import AwsConnector
    from attest.db import make_engine
    from attest.entitlements.models import Source
    from attest.entitlements.sync import run_sync

    tmp = tempfile.mkdtemp(prefix="attest-aws-bench-")
    db = f"sqlite:///{tmp}/bench.db"
    command.upgrade(alembic_config(db), "head")
    settings = load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": db,
                                      "ATTEST_INSTANCE_PATH": tmp, "ATTEST_LOG_LEVEL": "WARNING"})
    engine = make_engine(db)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    aws_settings = {"endpoint_url": url, "region": "us-east-1", "assume_role_name": "AttestAudit",
                    "concurrency": concurrency}
    with factory() as s, s.begin():
        s.add(Source(kind="aws", name="aws", settings=aws_settings, authoritative=False, enabled=True))
    before = _stats(url)
    conn = AwsConnector(aws_settings, {"access_key_id": "bench", "secret_access_key": "bench"})
    t0 = time.perf_counter()
    result = run_sync(factory, settings, "aws", connector=conn)
    seconds = time.perf_counter() - t0
    after = _stats(url)
    return {"seconds": seconds, "status": result.status, "error": result.error, "read": result.stats.get("read"),
            "added": result.stats.get("added"), "connector_calls": result.api_calls,
            "operations": conn.operations, "by_operation": dict(conn.counter.by_operation),
            "server_requests": after["requests"] - before["requests"], "concurrency": concurrency,
            "max_concurrent_accounts": conn.stats["max_concurrent_accounts"], "notes": result.notes,
            "failed_parts": result.failed_parts,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0]}


def run(out: Path | None = None, sizes: dict[str, int] | None = None, latency: float = LATENCY,
        concurrency: int = CONCURRENCY) -> str:
    from bench.machine import describe

    sizes = dict(sizes or SIZES)
    out = out or Path(__file__).parent / "results" / "aws.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        info_file = str(Path(tmp) / "server.json")
        server = subprocess.Popen([sys.executable, "-m", "bench.aws_sync", "--serve", info_file,
                                   "--sizes", json.dumps(sizes), "--latency", str(latency)], cwd=ROOT, env=env)
        try:
            deadline = time.time() + 1800
            while not Path(info_file).exists() or not Path(info_file).read_text():
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the moto server did not start")
                time.sleep(0.5)
            time.sleep(0.2)
            info = json.loads(Path(info_file).read_text())
            proc = subprocess.run([sys.executable, "-m", "bench.aws_sync", "--measure", "--url", info["url"],
                                   "--concurrency", str(concurrency)], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"aws bench failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = report(sizes, latency, info, result, describe())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    named = Path(__file__).parent / "results" / "aws.md"  # the figures' home, also under `make bench`
    if out.parent.resolve() == named.parent.resolve() and out.resolve() != named.resolve():
        named.write_text(text)
    return text


def report(sizes: dict[str, int], latency: float, info: dict, r: dict, machine: str) -> str:
    minimum = info["minimum"]
    min_total = sum(minimum.values())
    total = r["server_requests"]
    ratio = total / min_total if min_total else float("nan")
    ok = ratio <= 1.2 and r["status"] == "succeeded" and r["max_concurrent_accounts"] > 1
    lines = [
        "## AWS connector (issue 4)",
        "",
        f"moto organization: {info['accounts']} accounts (the management account and members in 4 OUs), {info['iam_users']:,} IAM users "
        f"({sizes['iam_users']} people and a service user per account, with e-mail tags, console passwords, access "
        f"keys and MFA), 9 IAM groups and 6 roles per account; IAM Identity Center with {info['ic_users']:,} users, "
        f"{info['ic_groups']} groups ({info['ic_memberships']:,} memberships), {info['permission_sets']} permission "
        f"sets and {info['assignments']:,} account assignments. moto runs in its own process on loopback with "
        f"{latency * 1000:.0f} ms of added latency per request (seeded in {info['build_s']:.0f} s). Connector "
        f"concurrency {r['concurrency']}. Target: API calls within 1.2x of the minimum the paginators allow.",
        "",
        f"Machine: {machine}" + (f"; load average {r['load_average']:.1f} when the sync finished (other jobs "
                                  "shared the machine: the wall time on an idle one is lower)"
                                  if r.get("load_average", 0) > 1.5 else ""),
        "",
        "| run | wall time | API requests | minimum | ratio | accounts at once | peak RSS | status |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| full sync into SQLite | {r['seconds']:.1f} s | {total:,} | {min_total:,} | {ratio:.2f}x | "
        f"{r['max_concurrent_accounts']} of {info['accounts']} | {r['peak_rss_mb']:.0f} MB | {r['status']} |",
        "",
        f"Target {'met' if ok else 'NOT met'}. The connector counted {r['connector_calls']:,} requests "
        f"({r['operations']:,} operations; the server's count above is authoritative).",
        "",
        "Records read: " + ", ".join(f"{k} {v:,}" for k, v in sorted((r.get("read") or {}).items())),
        "",
        "| operation | requests | minimum |",
        "|---|---:|---:|",
    ]
    ops = sorted(set(minimum) | set(r["by_operation"]))
    for op in ops:
        lines.append(f"| {op} | {r['by_operation'].get(op, 0):,} | {minimum.get(op, 0):,} |")
    lines += [
        "",
        "Where the requests go: IAM is one GetAccountAuthorizationDetails listing per account (users, groups, "
        "memberships, roles with trust policies, attached and inline policies, customer-managed policy "
        "documents) plus the credential report (keys, passwords, MFA, last use for every user), instead of "
        "eight or more calls per user; the report is looked for first (one call when a report under four "
        "hours old exists, as on every later sync), so a first sync spends one extra call per account. "
        "Organizations is walked node by node (accounts arrive under their OU, no ListParents per account). "
        "Identity Center assignments are ListAccountAssignments per account and provisioned permission set "
        "(moto lists every provisioned set for every account, so this is the larger share here; AWS lists only "
        "the sets provisioned to that account).",
    ]
    if r.get("error"):
        lines += ["", f"Error: {r['error']}"]
    if r.get("failed_parts"):
        lines += ["", "Failed parts: " + "; ".join(p["part"] for p in r["failed_parts"])]
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
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--accounts", type=int)
    parser.add_argument("--iam-users", dest="iam_users", type=int)
    parser.add_argument("--ic-users", dest="ic_users", type=int)
    parser.add_argument("--permission-sets", dest="permission_sets", type=int)
    parser.add_argument("--ic-groups", dest="ic_groups", type=int)
    parser.add_argument("--out")
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
        print(run(Path(args.out) if args.out else None, sizes=chosen, latency=args.latency,
                  concurrency=args.concurrency))
