"""Who can assume which AWS role (issue 17, What to build 4).

Pure: `attest.connectors.aws.trust` on policy documents shaped as GetAccountAuthorizationDetails returns
them (RoleDetailList[].AssumeRolePolicyDocument, UserDetailList[].GroupList, AttachedManagedPolicies,
UserPolicyList/RolePolicyList/GroupPolicyList, Policies[].PolicyVersionList; the shapes of
https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetAccountAuthorizationDetails.html).
End to end: the moto sandbox organization, synced -> a developer's person page shows the role
assumption path -> a campaign scoped to role assumption holds the item with its risk signals.
"""

from __future__ import annotations

import pytest

from attest.connectors.aws.trust import (
    AccountIam,
    parse_principal,
    policy_allows_assume,
    trust_records,
    trust_statements,
)
from attest.connectors.base import AccountRecord, EntitlementRecord, GrantRecord, ResourceRecord
from tests.connectors.conftest import AWS_SETTINGS

A, B, OUT = "111111111111", "222222222222", "999988887777"


def trust(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(principal, action="sts:AssumeRole", **extra):
    return {"Effect": "Allow", "Principal": principal, "Action": action, **extra}


def role(account, name, doc, path="/", managed=(), inline=()):
    return {"Path": path, "RoleName": name, "Arn": f"arn:aws:iam::{account}:role{path}{name}",
            "AssumeRolePolicyDocument": doc,
            "AttachedManagedPolicies": [{"PolicyName": m.rsplit("/", 1)[-1], "PolicyArn": m} for m in managed],
            "RolePolicyList": [{"PolicyName": n, "PolicyDocument": d} for n, d in inline]}


def user(account, name, groups=(), managed=(), inline=()):
    return {"Path": "/", "UserName": name, "Arn": f"arn:aws:iam::{account}:user/{name}", "GroupList": list(groups),
            "AttachedManagedPolicies": [{"PolicyName": m.rsplit("/", 1)[-1], "PolicyArn": m} for m in managed],
            "UserPolicyList": [{"PolicyName": n, "PolicyDocument": d} for n, d in inline]}


ASSUME_ANY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"


def by_kind(records):
    out = {"res": [], "ent": [], "grant": [], "acct": []}
    for r in records:
        out[{ResourceRecord: "res", EntitlementRecord: "ent", GrantRecord: "grant", AccountRecord: "acct"}[type(r)]].append(r)
    return out


def grants_of(records, role_arn):
    return {g.principal_ref: g for g in by_kind(records)["grant"] if g.entitlement_ref == f"iam-role:{role_arn}:assume"}


# --- pure ---------------------------------------------------------------------------------------------


def test_trust_statements_keep_only_assume_role_allows_with_conditions():
    doc = trust(
        allow({"AWS": f"arn:aws:iam::{A}:root"}, Sid="Dev", Condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}}),
        allow({"Federated": f"arn:aws:iam::{A}:saml-provider/Okta"}, action="sts:AssumeRoleWithSAML"),
        allow({"Service": "ec2.amazonaws.com"}, action=["sts:AssumeRole"]),
        {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole"},
        allow("*", action="sts:*"),
    )
    sts = trust_statements(doc)
    assert [s.index for s in sts] == [0, 2, 4]
    assert sts[0].aws == (f"arn:aws:iam::{A}:root",) and sts[0].sid == "Dev"
    assert sts[0].describe() == {"statement": 0, "sid": "Dev", "conditions": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}
    assert sts[1].services == ("ec2.amazonaws.com",) and not sts[1].aws
    assert sts[2].wildcard and not sts[0].wildcard
    # URL-encoded, as IAM returns documents
    assert trust_statements("%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22AWS%22%3A"
                            "%22*%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D")[0].wildcard


def test_parse_principal_forms():
    assert parse_principal("*").kind == "wildcard"
    assert parse_principal(A) == parse_principal(A).__class__("account", A, raw=A)
    assert parse_principal(f"arn:aws:iam::{A}:root").kind == "account"
    p = parse_principal(f"arn:aws:iam::{A}:user/eng/ada")
    assert (p.kind, p.account_id, p.name) == ("user", A, "ada")
    p = parse_principal(f"arn:aws:sts::{A}:assumed-role/deployer/session-1")
    assert (p.kind, p.name) == ("assumed_role", "deployer")
    assert parse_principal("AIDAJQABLZS4A3QDU576Q").kind == "unique_id"


def test_policy_allows_assume_matches_action_resource_and_deny():
    arn = f"arn:aws:iam::{B}:role/deploy"
    assert policy_allows_assume(ASSUME_ANY, arn) == (True, False)
    assert policy_allows_assume({"Statement": [{"Effect": "Allow", "Action": "sts:Assume*",
                                                "Resource": f"arn:aws:iam::{B}:role/dep*"}]}, arn) == (True, False)
    assert policy_allows_assume({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Resource": f"arn:aws:iam::{B}:role/other"}]}, arn) == (False, False)
    assert policy_allows_assume({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}, arn) == (False, False)
    assert policy_allows_assume({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}, arn)[0]
    assert policy_allows_assume({"Statement": [{"Effect": "Deny", "Action": "sts:*", "Resource": "*"}]}, arn) == (False, True)
    # a conditional Deny may not apply: not counted
    assert policy_allows_assume({"Statement": [{"Effect": "Deny", "Action": "sts:*", "Resource": "*",
                                                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "false"}}}]},
                                arn) == (False, False)


def _org():
    """Account A: developers (a user named by ARN in B's trust, a user allowed through a group, a user not
    allowed, an Identity Center role). Account B: roles trusting A's user, A's root, the wildcard, an
    outside account, a permission set's role, a deleted principal."""
    dev_group = {"GroupName": "Developers", "Arn": f"arn:aws:iam::{A}:group/Developers",
                 "AttachedManagedPolicies": [{"PolicyName": "AssumeDeploy", "PolicyArn": f"arn:aws:iam::{A}:policy/AssumeDeploy"}],
                 "GroupPolicyList": []}
    policies = [{"PolicyName": "AssumeDeploy", "Arn": f"arn:aws:iam::{A}:policy/AssumeDeploy", "Path": "/",
                 "PolicyVersionList": [{"IsDefaultVersion": True, "Document": {"Statement": [
                     {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:aws:iam::{B}:role/deploy"}]}}]}]
    a = AccountIam(A, "dev", {
        "UserDetailList": [user(A, "ada", inline=[("assume", ASSUME_ANY)]), user(A, "bob", groups=["Developers"]),
                           user(A, "cy"), user(A, "root-admin", managed=[ADMIN])],
        "GroupDetailList": [dev_group],
        "RoleDetailList": [role(A, "AWSReservedSSO_DevOps_0123456789abcdef", trust(), path="/aws-reserved/sso.amazonaws.com/",
                                managed=["arn:aws:iam::aws:policy/PowerUserAccess"]),
                           role(A, "ci", trust(allow({"Service": "codebuild.amazonaws.com"})))],
        "Policies": policies,
    }, sso_assignments={"DevOps": [("USER", "u-1"), ("GROUP", "g-1")]})
    b = AccountIam(B, "prod", {
        "UserDetailList": [], "GroupDetailList": [], "Policies": [],
        "RoleDetailList": [
            role(B, "admin-by-ada", trust(allow({"AWS": f"arn:aws:iam::{A}:user/ada"})), managed=[ADMIN]),
            role(B, "deploy", trust(allow({"AWS": f"arn:aws:iam::{A}:root"}))),
            role(B, "open", trust(allow({"AWS": "*"}, Condition={"StringEquals": {"sts:ExternalId": "x"}}))),
            role(B, "org-only", trust(allow("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}))),
            role(B, "vendor", trust(allow({"AWS": f"arn:aws:iam::{OUT}:root"}))),
            role(B, "via-sso", trust(allow({"AWS": f"arn:aws:iam::{A}:role/aws-reserved/sso.amazonaws.com/"
                                                  "AWSReservedSSO_DevOps_0123456789abcdef"}))),
            role(B, "stale", trust(allow({"AWS": "AIDAJQABLZS4A3QDU576Q"}))),
            role(B, "AWSServiceRoleForSupport", trust(allow({"Service": "support.amazonaws.com"})),
                 path="/aws-service-role/support.amazonaws.com/"),
        ],
    }, scp_limits=("DenyProdDelete",))
    return list(trust_records([a, b], [A, B]))


def test_a_named_user_in_another_account_is_granted_with_the_path():
    records = _org()
    g = grants_of(records, f"arn:aws:iam::{B}:role/admin-by-ada")
    assert list(g) == [f"arn:aws:iam::{A}:user/ada"]
    attrs = g[f"arn:aws:iam::{A}:user/ada"].attributes
    assert attrs["via_path"] == "role assumption: user ada in account dev (111111111111) -> role admin-by-ada in account prod (222222222222)"
    assert attrs["how"] == "named" and attrs["caller_policy_allows"] is True and attrs["trust"] == {"statement": 0}
    assert not attrs.get("trust_outside_org") and not attrs.get("wildcard_trust")
    ent = next(e for e in by_kind(records)["ent"] if e.external_id == f"iam-role:arn:aws:iam::{B}:role/admin-by-ada:assume")
    assert ent.name == "assume" and ent.purpose == "permission" and ent.privileged
    assert ent.attributes["privileged_note"] == "administrator, limited by SCP DenyProdDelete"
    res = next(r for r in by_kind(records)["res"] if r.external_id == f"iam-role:arn:aws:iam::{B}:role/admin-by-ada")
    assert res.type == "aws_iam_role" and res.parent_ref == f"account:{B}"
    assert all(r.part == "aws:trust" for r in records)


def test_a_whole_account_resolves_to_its_principals_whose_policies_allow_it():
    g = grants_of(_org(), f"arn:aws:iam::{B}:role/deploy")
    # ada (inline sts:AssumeRole on *), bob (his group's policy names the role), root-admin
    # (AdministratorAccess); not cy (no policy); the Identity Center role (PowerUserAccess) -> its assignees
    assert set(g) == {f"arn:aws:iam::{A}:user/ada", f"arn:aws:iam::{A}:user/bob", f"arn:aws:iam::{A}:user/root-admin",
                      "idc-user:u-1", "idc-group:g-1"}
    assert g["idc-group:g-1"].principal_type == "resource"
    assert "permission set DevOps" in g["idc-user:u-1"].attributes["via_path"]
    assert g[f"arn:aws:iam::{A}:user/bob"].attributes["how"] == "account_root"
    ent = next(e for e in by_kind(_org())["ent"] if e.external_id.endswith("role/deploy:assume"))
    assert not ent.privileged and "privileged_note" not in ent.attributes


def test_identity_center_role_by_arn_resolves_to_the_permission_set_assignees():
    g = grants_of(_org(), f"arn:aws:iam::{B}:role/via-sso")
    assert set(g) == {"idc-user:u-1", "idc-group:g-1"}
    assert g["idc-user:u-1"].attributes["how"] == "permission_set"


def test_outside_the_organization_and_wildcards_are_marked():
    records = _org()
    vendor = grants_of(records, f"arn:aws:iam::{B}:role/vendor")
    assert list(vendor) == [f"aws-trust:arn:aws:iam::{OUT}:root"]
    assert vendor[f"aws-trust:arn:aws:iam::{OUT}:root"].attributes["trust_outside_org"] is True
    open_ = grants_of(records, f"arn:aws:iam::{B}:role/open")
    star = open_["aws-trust:*"].attributes
    assert star["wildcard_trust"] is True and star["trust_outside_org"] is True
    assert star["conditions"] == {"StringEquals": {"sts:ExternalId": "x"}}
    # the wildcard also resolves to the organization's principals allowed to assume it
    assert f"arn:aws:iam::{A}:user/ada" in open_ and f"arn:aws:iam::{A}:user/cy" not in open_
    org_only = grants_of(records, f"arn:aws:iam::{B}:role/org-only")["aws-trust:*"].attributes
    assert org_only["wildcard_trust"] is True and org_only["trust_outside_org"] is False
    accts = {a.external_id: a for a in by_kind(records)["acct"]}
    assert accts["aws-trust:*"].display_name == "any AWS principal (*)"
    assert accts[f"aws-trust:arn:aws:iam::{OUT}:root"].display_name == f"outside the organization: account {OUT}"
    assert all(a.kind == "service" for a in accts.values())


def test_unresolvable_and_service_principals_are_listed_not_granted():
    records = _org()
    ents = {e.external_id: e for e in by_kind(records)["ent"]}
    assert ents[f"iam-role:arn:aws:iam::{B}:role/stale:assume"].attributes["unresolved"] == ["AIDAJQABLZS4A3QDU576Q"]
    assert not grants_of(records, f"arn:aws:iam::{B}:role/stale")
    assert ents[f"iam-role:arn:aws:iam::{A}:role/ci:assume"].attributes["services"] == ["codebuild.amazonaws.com"]
    # service-linked and Identity Center roles are no targets
    assert not any("AWSServiceRoleForSupport" in k or "AWSReservedSSO" in k for k in ents)


@pytest.mark.parametrize("caller_policy", [None, ASSUME_ANY])
def test_a_cross_account_named_user_says_whether_their_own_policies_allow_it(caller_policy):
    a = AccountIam(A, "dev", {"UserDetailList": [user(A, "dana", inline=[("p", caller_policy)] if caller_policy else [])],
                              "GroupDetailList": [], "RoleDetailList": [], "Policies": []})
    b = AccountIam(B, "prod", {"UserDetailList": [], "GroupDetailList": [], "Policies": [],
                               "RoleDetailList": [role(B, "r", trust(allow({"AWS": f"arn:aws:iam::{A}:user/dana"})))]})
    g = grants_of(list(trust_records([a, b], [A, B])), f"arn:aws:iam::{B}:role/r")
    assert g[f"arn:aws:iam::{A}:user/dana"].attributes["caller_policy_allows"] is bool(caller_policy)


# --- end to end: the moto sandbox organization ------------------------------------------------------------------

SETTINGS = AWS_SETTINGS


@pytest.fixture(scope="module")
def moto_org():
    pytest.importorskip("moto")
    from moto import mock_aws

    from attest.connectors.sandbox.aws_moto import OrgSpec, seed_org

    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield seed_org(OrgSpec(accounts=3))


def _tag_email(account_id: str, user_name: str) -> str:
    from tests.connectors.test_aws import boto

    tags = boto("iam", account_id).list_user_tags(UserName=user_name)["Tags"]
    return next(t["Value"] for t in tags if t["Key"] == "email")


def test_moto_sandbox_trust_path_on_the_person_page_and_in_a_campaign(moto_org, app, client, factory, session,
                                                                      settings):
    from sqlalchemy import select

    from attest.connectors.aws import AwsConnector
    from attest.entitlements.models import Account, Grant, Identity, Resource
    from attest.entitlements.sync import run_sync
    from attest.reviews import campaigns
    from attest.reviews.definitions import create_definition
    from attest.reviews.models import ReviewItem
    from tests.factories import login_as, make_identity, make_source, make_user

    cross = moto_org.cross_account
    dev_arn, role_arn = cross["developer"], cross["role"]
    dev_account, dev_name = dev_arn.split(":")[4], dev_arn.rsplit("/", 1)[-1]
    role_account = role_arn.split(":")[4]
    assert dev_account != role_account and {dev_account, role_account} <= set(moto_org.account_ids[1:])
    email = _tag_email(dev_account, dev_name)
    person = make_identity(session, email, "Dana Developer")
    make_identity(session, "iam@acme.example", "IAM Team")
    source = make_source(session, "aws", kind="aws", settings=SETTINGS)
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    session.commit()
    result = run_sync(factory, settings, "aws", connector=AwsConnector(SETTINGS, {}))
    assert result.status == "succeeded", result.error

    # the developer's IAM user (account A) holds `assume` on the role of account B, with the path
    dev = session.scalar(select(Account).where(Account.source_id == source.id, Account.external_id == dev_arn))
    assert dev.identity_id == person.id
    role_res = session.scalar(select(Resource).where(Resource.source_id == source.id,
                                                     Resource.external_id == f"iam-role:{role_arn}"))
    assert role_res.type == "aws_iam_role"
    [grant] = session.scalars(select(Grant).where(Grant.principal_account_id == dev.id, Grant.ended_at.is_(None),
                                                  Grant.key.like("iam-role:%:assume|%"))).all()
    assert grant.entitlement.resource_id == role_res.id and grant.entitlement.privileged
    names = moto_org.account_names
    path = (f"role assumption: user {dev_name} in account {names[dev_account]} ({dev_account}) -> "
            f"role cross-account-deploy in account {names[role_account]} ({role_account})")
    assert grant.attributes["via_path"] == path and grant.attributes["caller_policy_allows"] is True

    # the person page shows it
    login_as(app, client, admin)
    page = client.get(f"/identities/{person.id}").get_data(as_text=True)
    assert f"via {path}" in page.replace("&gt;", ">")

    # a campaign scoped to role assumption holds the item, with its risk signals
    spec = {"name": "AWS role assumption", "fallback_reviewer": "iam@acme.example",
            "scope": {"resource_types": ["aws_iam_role"], "include_service_accounts": True}}
    definition = create_definition(session, spec, "admin@acme.example")
    campaign = campaigns.launch(session, campaigns.create_campaign(session, definition.id, "admin@acme.example").id,
                                "admin@acme.example")
    items = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == campaign.id)).all()
    assert items and all(i.resource_type == "aws_iam_role" and i.entitlement_name == "assume" for i in items)
    [mine] = [i for i in items if i.account_id == dev.id]
    assert mine.via == path and mine.identity_id == person.id and mine.privileged
    assert "privileged" in mine.risks and "trust_outside_org" not in mine.risks and "wildcard_trust" not in mine.risks
    # the wildcard role and the vendor role (an account outside the organization) are flagged
    star = session.scalar(select(Account).where(Account.source_id == source.id, Account.external_id == "aws-trust:*"))
    [wild] = [i for i in items if i.account_id == star.id and i.resource_name.startswith("role shared-reader")]
    assert {"wildcard_trust", "trust_outside_org"} <= set(wild.risks)
    outside = [i for i in items if i.account_login == "arn:aws:iam::999988887777:root"]
    assert outside and all("trust_outside_org" in i.risks and "wildcard_trust" not in i.risks for i in outside)
    from attest.reviews.queries import FLAG_SCORE

    assert wild.risk_score >= FLAG_SCORE and outside[0].risk_score >= FLAG_SCORE
    assert session.scalar(select(Identity).where(Identity.id == mine.identity_id)).email == email
    # the signals in SQL (launch) are the Python rules' (risk.signals), item by item
    from attest.entitlements import risk

    cutoffs = risk.Cutoffs.for_spec(campaign.launched_at, campaign.spec["risk"], None)
    for item in items:
        account, g = session.get(Account, item.account_id), session.get(Grant, item.grant_id)
        who = session.get(Identity, item.identity_id) if item.identity_id else None
        assert item.risks == risk.signals(
            cutoffs=cutoffs, privileged=item.privileged, identity_id=item.identity_id,
            person_status=who.status if who else None, person_kind=who.kind if who else None,
            account_kind=account.kind, account_last_login_at=account.last_login_at,
            account_created_at=account.created_upstream_at, account_mfa_enabled=account.mfa_enabled,
            account_attributes=account.attributes, grant_attributes=g.attributes, granted_at=item.granted_at,
            via_group=item.via_resource_id is not None), (item.account_login, item.resource_name)
