"""The AWS connector over real HTTP against a moto server on loopback (MOTO_IAM_LOAD_MANAGED_POLICIES=true),
configured as a user would (`add_source` with encrypted secrets and an endpoint_url)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from attest.connectors.base import PartFailed
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from tests.connectors.test_aws import active, assert_org_in_database, deny_assume_role, grant_ref

moto = pytest.importorskip("moto")


def reset_moto() -> None:
    from moto.moto_api._internal import moto_api_backend

    moto_api_backend.reset()


@contextmanager
def moto_server_with(spec) -> Iterator[tuple[str, Any]]:
    """A moto server on a free loopback port holding the organization `spec` seeds (AWS managed policies
    loaded, as AWS has them): (its URL, the seeded org); moto's state and the environment are restored after."""
    from moto.server import ThreadedMotoServer

    from attest.connectors.sandbox.aws_moto import seed_org

    before = os.environ.get("MOTO_IAM_LOAD_MANAGED_POLICIES")
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    reset_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url, seed_org(spec, endpoint_url=url)
    finally:
        server.stop()
        reset_moto()
        if before is None:
            os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
        else:
            os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = before


@pytest.fixture(scope="module")
def moto_server():
    from attest.connectors.sandbox.aws_moto import OrgSpec

    with moto_server_with(OrgSpec(accounts=3)) as served:
        yield served


def add_aws_source(session, settings, url: str, name: str = "aws"):
    source = add_source(session, settings, "aws", name,
                        {"endpoint_url": url, "region": "us-east-1", "assume_role_name": "AttestAudit",
                         "concurrency": "3"},
                        {"access_key_id": "testing", "secret_access_key": "testing"})
    session.commit()
    return source


def test_sync_over_http_from_a_configured_source(moto_server, factory, session, settings):
    url, org = moto_server
    source = add_aws_source(session, settings, url)
    result = run_sync(factory, settings, "aws")  # built from the stored, encrypted settings
    assert result.status == "succeeded", result.error
    assert_org_in_database(session, source.id, org)
    assert result.api_calls >= 40


def test_partial_run_and_revoke_over_http(moto_server, factory, session, settings):
    from attest.connectors.aws import AwsConnector

    url, org = moto_server
    source = add_aws_source(session, settings, url)
    assert run_sync(factory, settings, "aws").status == "succeeded"
    broken = org.account_ids[2]
    conn = AwsConnector(source.settings, {"access_key_id": "testing", "secret_access_key": "testing"})
    conn.hooks.append(deny_assume_role(broken))
    records = list(conn.sync())
    failed = [r for r in records if isinstance(r, PartFailed)]
    assert [f.part for f in failed] == [f"aws:{broken}", "aws:trust"]  # trust paths span accounts: kept too
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
