"""The AWS sandbox (`attest sandbox serve` on 5103, and `attest demo`, which serves it in-process while
it syncs): moto with the demo organization, whose people are the sandbox Okta's."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from attest.entitlements.models import Account, Resource
from attest.entitlements.sync import run_sync
from tests.connectors.test_aws_server import add_aws_source, reset_moto

moto = pytest.importorskip("moto")


@pytest.fixture
def clean_moto():
    before = os.environ.get("MOTO_IAM_LOAD_MANAGED_POLICIES")
    reset_moto()
    try:
        yield
    finally:
        reset_moto()
        if before is None:
            os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
        else:
            os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = before


@pytest.mark.slow
def test_sandbox_serves_the_demo_organization(clean_moto, factory, session, settings):
    """`attest sandbox serve` builds the app with demo=True; the demo's AWS source syncs from it, and the
    same seed gives the same ids (the demo syncs once in-process, then `make run` serves it again)."""
    from attest.connectors.sandbox import SERVICES
    from attest.connectors.sandbox.aws_moto import create_app, demo_people
    from attest.connectors.sandbox.server import serve_in_thread

    assert SERVICES["aws"] == ("attest.connectors.sandbox.aws_moto:create_app", 5103)
    ids = []
    for attempt in range(2):
        reset_moto()
        try:
            with serve_in_thread(create_app(demo=True)) as running:
                if attempt == 0:
                    source = add_aws_source(session, settings, running.url, "aws-demo")
                    result = run_sync(factory, settings, "aws-demo")
                    assert result.status == "succeeded", result.error
                import boto3

                kw = {"region_name": "us-east-1", "endpoint_url": running.url, "aws_access_key_id": "demo",
                      "aws_secret_access_key": "demo"}
                orgs, sso, store = (boto3.client(s, **kw) for s in ("organizations", "sso-admin", "identitystore"))
                inst = sso.list_instances()["Instances"][0]
                ids.append((sorted(a["Id"] for a in orgs.list_accounts()["Accounts"]), inst["InstanceArn"],
                            sorted(sso.list_permission_sets(InstanceArn=inst["InstanceArn"])["PermissionSets"]),
                            sorted(u["UserId"] for u in store.list_users(IdentityStoreId=inst["IdentityStoreId"])["Users"]),
                            sorted(g["GroupId"] for g in store.list_groups(IdentityStoreId=inst["IdentityStoreId"])["Groups"])))
        finally:
            reset_moto()
    assert ids[0] == ids[1] and len(ids[0][0]) == 4 and len(ids[0][3]) == 40
    accounts = session.scalars(select(Resource).where(Resource.source_id == source.id, Resource.type == "aws_account")).all()
    assert len(accounts) == 4
    people = {p.email for p in demo_people(60)}
    ic = session.scalars(select(Account).where(Account.source_id == source.id, Account.external_id.like("idc-user:%"))).all()
    assert len(ic) == 40 and all(a.email in people for a in ic)
    tagged = session.scalars(select(Account).where(Account.source_id == source.id, Account.tag_email.is_not(None))).all()
    assert tagged and all(a.tag_email in people for a in tagged)
