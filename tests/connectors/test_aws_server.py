"""The AWS connector over real HTTP against a moto server on loopback (MOTO_IAM_LOAD_MANAGED_POLICIES=true),
configured as a user would (`add_source` with encrypted secrets and an endpoint_url), and the sandbox
served by `attest sandbox serve` / `attest demo` (moto with the demo organization)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from attest.connectors.base import PartFailed
from attest.entitlements.models import Account, Resource
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from tests.connectors.test_aws import active, assert_org_in_database, deny_assume_role, grant_ref

moto = pytest.importorskip("moto")


def _reset_moto() -> None:
    from moto.moto_api._internal import moto_api_backend

    moto_api_backend.reset()


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    from attest.connectors.sandbox.aws_moto import OrgSpec, seed_org

    before = os.environ.get("MOTO_IAM_LOAD_MANAGED_POLICIES")
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    _reset_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url, seed_org(OrgSpec(accounts=3), endpoint_url=url)
    finally:
        server.stop()
        _reset_moto()
        if before is None:
            os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
        else:
            os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = before


def _add(session, settings, url: str, name: str = "aws"):
    source = add_source(session, settings, "aws", name,
                        {"endpoint_url": url, "region": "us-east-1", "assume_role_name": "AttestAudit",
                         "concurrency": "3"},
                        {"access_key_id": "testing", "secret_access_key": "testing"})
    session.commit()
    return source


def test_sync_over_http_from_a_configured_source(moto_server, factory, session, settings):
    url, org = moto_server
    source = _add(session, settings, url)
    result = run_sync(factory, settings, "aws")  # built from the stored, encrypted settings
    assert result.status == "succeeded", result.error
    assert_org_in_database(session, source.id, org)
    assert result.api_calls >= 40


def test_partial_run_and_revoke_over_http(moto_server, factory, session, settings):
    from attest.connectors.aws import AwsConnector

    url, org = moto_server
    source = _add(session, settings, url)
    assert run_sync(factory, settings, "aws").status == "succeeded"
    broken = org.account_ids[2]
    conn = AwsConnector(source.settings, {"access_key_id": "testing", "secret_access_key": "testing"})
    conn.hooks.append(deny_assume_role(broken))
    records = list(conn.sync())
    failed = [r for r in records if isinstance(r, PartFailed)]
    assert [f.part for f in failed] == [f"aws:{broken}"]
    conn2 = AwsConnector(source.settings, {"access_key_id": "testing", "secret_access_key": "testing"})
    conn2.hooks.append(deny_assume_role(broken))
    result = run_sync(factory, settings, "aws", connector=conn2)
    assert result.status == "partial" and result.failed_parts[0]["part"] == f"aws:{broken}"

    # revoke an Identity Center group membership over HTTP, verified by the next sync, then undo
    gid = org.ic_groups["aws-readonly"]
    uid = org.ic_members[gid][0]
    key = f"idc-group:{gid}:member|a|idc-user:{uid}"
    ref = grant_ref(session, active(session, source.id, key))
    revoker = AwsConnector(source.settings, {"access_key_id": "testing", "secret_access_key": "testing"})
    assert not revoker.revoke(ref, dry_run=False).already_gone
    assert run_sync(factory, settings, "aws").status == "succeeded"
    session.expire_all()
    assert active(session, source.id, key) is None
    revoker.grant(ref, dry_run=False)
    assert run_sync(factory, settings, "aws").status == "succeeded"
    assert active(session, source.id, key) is not None


def test_sandbox_serves_the_demo_organization(factory, session, settings):
    """`attest sandbox serve` builds the app with demo=True; the demo's AWS source syncs from it, and the
    same seed gives the same ids (the demo syncs once in-process, then `make run` serves it again)."""
    from attest.connectors.sandbox import SERVICES
    from attest.connectors.sandbox.aws_moto import create_app, demo_people
    from attest.connectors.sandbox.server import serve_in_thread

    assert SERVICES["aws"] == ("attest.connectors.sandbox.aws_moto:create_app", 5103)
    ids = []
    for attempt in range(2):
        _reset_moto()
        try:
            with serve_in_thread(create_app(demo=True)) as running:
                if attempt == 0:
                    source = _add(session, settings, running.url, "aws-demo")
                    result = run_sync(factory, settings, "aws-demo")
                    assert result.status == "succeeded", result.error
                import boto3

                orgs = boto3.client("organizations", region_name="us-east-1", endpoint_url=running.url,
                                    aws_access_key_id="demo", aws_secret_access_key="demo")
                ids.append(sorted(a["Id"] for a in orgs.list_accounts()["Accounts"]))
        finally:
            _reset_moto()
    assert ids[0] == ids[1] and len(ids[0]) == 4
    accounts = session.scalars(select(Resource).where(Resource.source_id == source.id, Resource.type == "aws_account")).all()
    assert len(accounts) == 4
    people = {p.email for p in demo_people(60)}
    ic = session.scalars(select(Account).where(Account.source_id == source.id, Account.external_id.like("idc-user:%"))).all()
    assert len(ic) == 40 and all(a.email in people for a in ic)
    tagged = session.scalars(select(Account).where(Account.source_id == source.id, Account.tag_email.is_not(None))).all()
    assert tagged and all(a.tag_email in people for a in tagged)
