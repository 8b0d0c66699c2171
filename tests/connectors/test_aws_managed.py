"""AWS access managed elsewhere (issue 18): Identity Center groups provisioned over SCIM (ExternalIds),
role paths through an Identity Center role (a permission set), AWS Organizations' own role. Synced from a
moto server over HTTP where moto serves the field; the permission-set path is pure (moto creates no
AWSReservedSSO_* roles)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.connectors.base import RevokeRefused
from attest.connectors.managed import ManagedKind, managed_elsewhere
from attest.entitlements.models import Entitlement, Grant, Resource, Source
from attest.entitlements.sources import build_connector
from attest.entitlements.sync import run_sync
from attest.reviews import remediation
from attest.reviews.models import Remediation
from attest.reviews.remediation.planning import grant_ref
from tests.connectors.test_aws_server import add_aws_source, moto_server_with
from tests.connectors.test_aws_trust import A, B, _org, grants_of
from tests.reviews.test_remediation_connectors import revoke_in_campaign, run_and_verify

moto = pytest.importorskip("moto")


@pytest.fixture(scope="module")
def scim_org():
    from attest.connectors.sandbox.aws_moto import OrgSpec

    with moto_server_with(OrgSpec(accounts=2, ic_groups=4, scim_groups=("aws-data",))) as served:
        yield served


def _memberships(url: str, org, gid: str) -> list[str]:
    import boto3

    store = boto3.client("identitystore", region_name="us-east-1", endpoint_url=url,
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    return [m["MemberId"]["UserId"] for m in store.list_group_memberships(
        IdentityStoreId=org.store_id, GroupId=gid)["GroupMemberships"]]


def test_scim_groups_and_the_organizations_role_carry_the_contract(scim_org, factory, session, settings):
    from attest.connectors.sandbox.aws_moto import SCIM_ISSUER

    url, org = scim_org
    add_aws_source(session, settings, url)
    assert run_sync(factory, settings, "aws").ok
    groups = {r.name: r for r in session.scalars(select(Resource).where(Resource.type == "aws_sso_group"))}
    found = managed_elsewhere(None, None, groups["aws-data"].attributes)
    assert found is not None and found.kind == ManagedKind.SCIM and SCIM_ISSUER in found.by
    assert managed_elsewhere(None, None, groups["aws-readonly"].attributes) is None
    member = org.account_ids[1]
    ent = session.scalar(select(Entitlement).where(
        Entitlement.external_id == f"iam-role:arn:aws:iam::{member}:role/OrganizationAccountAccessRole:assume"))
    assert ent is not None, "moto creates OrganizationAccountAccessRole in each account it creates"
    found = managed_elsewhere(None, ent.attributes, None)
    assert found is not None and found.kind == ManagedKind.ORGANIZATIONS


def test_a_scim_groups_membership_goes_to_the_manual_list_naming_the_idp(scim_org, factory, session, settings):
    from attest.connectors.sandbox.aws_moto import SCIM_ISSUER

    url, org = scim_org
    add_aws_source(session, settings, url)
    assert run_sync(factory, settings, "aws").ok
    gid = org.ic_groups["aws-data"]
    uid = org.ic_members[gid][0]
    rem_id = revoke_in_campaign(session, "aws", f"idc-group:{gid}:member|a|idc-user:{uid}")
    remediation.run_pending(factory, settings)
    session.expire_all()
    rem = session.get(Remediation, rem_id)
    assert rem.mode == "manual" and rem.status == "in_progress" and not rem.calls
    assert "provisioned over SCIM" in rem.target and SCIM_ISSUER in rem.target
    assert uid in _memberships(url, org, gid)  # nothing was removed in Identity Center
    # the connector's own guard says the same when called directly
    source = session.scalar(select(Source).where(Source.name == "aws"))
    conn = build_connector(source, settings)
    try:
        with pytest.raises(RevokeRefused, match="provisioned over SCIM") as refused:
            conn.revoke(grant_ref(session, session.get(Grant, rem.grant_id), source), dry_run=False)
    finally:
        conn.close()
    assert refused.value.target == rem.target
    assert uid in _memberships(url, org, gid)
    # a group Identity Center itself holds is still changed through the API
    other = org.ic_groups["aws-readonly"]
    rem_id = revoke_in_campaign(session, "aws", f"idc-group:{other}:member|a|idc-user:{org.ic_members[other][0]}")
    rem = run_and_verify(session, factory, settings, "aws", rem_id)
    assert any("DeleteGroupMembership" in c for c in rem.calls), rem.calls


def test_a_path_through_an_identity_center_role_names_the_permission_set():
    records = _org()
    via_sso = grants_of(records, f"arn:aws:iam::{B}:role/via-sso")
    found = managed_elsewhere(via_sso["idc-user:u-1"].attributes, None, None)
    assert found is not None and found.kind == ManagedKind.PERMISSION_SET
    assert found.by == f"permission set DevOps in account dev ({A})"
    assert "Remove the account assignment" in found.sentence("ada@acme.example", "role via-sso")
    named = grants_of(records, f"arn:aws:iam::{B}:role/admin-by-ada")
    assert managed_elsewhere(named[f"arn:aws:iam::{A}:user/ada"].attributes, None, None) is None
