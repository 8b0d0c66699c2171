"""Fixtures the AWS connector tests share: the moto sandbox organization (one per test module) and a
source configured for it."""

from __future__ import annotations

import pytest

from tests.factories import make_source

AWS_SETTINGS = {"assume_role_name": "AttestAudit", "concurrency": 4}


@pytest.fixture(scope="module")
def org():
    pytest.importorskip("moto")
    from moto import mock_aws

    from attest.connectors.sandbox.aws_moto import OrgSpec, seed_org

    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield seed_org(OrgSpec(accounts=3))


@pytest.fixture
def source(session):
    src = make_source(session, "aws", kind="aws", settings=AWS_SETTINGS)
    session.commit()
    return src
