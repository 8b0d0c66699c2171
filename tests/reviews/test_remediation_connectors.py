"""A revoke carried out through each connector's sandbox by the remediation runner, then verified by a sync.

Each source is configured as a user would (`add_source`, encrypted secrets) against its sandbox on
loopback: the Okta fake, the GitHub fake, a moto server for AWS. The runner builds the connector from the
stored source, calls `revoke`, and the next real sync of that source proves the access is gone.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import select

from attest.connectors.sandbox.server import serve_in_thread
from attest.db import utcnow
from attest.entitlements.models import Entitlement, Grant, Resource, Source
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from attest.reviews import remediation
from attest.reviews.models import Campaign, Remediation, ReviewItem
from tests.connectors.test_aws_server import add_aws_source, moto_server  # noqa: F401 - fixture


def revoke_in_campaign(session, source_name: str, key: str) -> int:
    """A closed campaign in which a reviewer revoked this grant (what campaigns.close leaves behind)."""
    source = session.scalar(select(Source).where(Source.name == source_name))
    grant = session.scalar(select(Grant).where(Grant.source_id == source.id, Grant.key == key,
                                               Grant.ended_at.is_(None)))
    assert grant is not None, key
    ent = grant.entitlement
    campaign = Campaign(name=f"{source_name} review", status="closed", spec={"rules": {"remediation": "automatic"}},
                        created_by="admin@acme.example", launched_at=utcnow(), closed_at=utcnow())
    session.add(campaign)
    session.flush()
    account = grant.account
    item = ReviewItem(campaign_id=campaign.id, grant_id=grant.id, account_id=account.id,
                      identity_id=account.identity_id, source_id=source.id, resource_id=ent.resource_id,
                      entitlement_id=ent.id, account_login=account.login, source_name=source.name,
                      source_kind=source.kind, resource_name=ent.resource.name if ent.resource else None,
                      entitlement_name=ent.name, decision="revoke", comment="no longer needed", completed=True,
                      outcome="revoke", outcome_reason="decision")
    session.add(item)
    session.flush()
    rem = Remediation(campaign_id=campaign.id, item_id=item.id, grant_id=grant.id, source_id=source.id,
                      mode="automatic", status="pending")
    session.add(rem)
    session.commit()
    return rem.id


def run_and_verify(session, factory, settings, source_name: str, rem_id: int) -> Remediation:
    report = remediation.run_pending(factory, settings)
    assert report.count("done") == 1, report.as_dict()
    session.expire_all()
    rem = session.get(Remediation, rem_id)
    assert rem.status == "done" and rem.calls, rem.last_error
    result = run_sync(factory, settings, source_name, force=True)
    assert result.ok, result.error
    session.expire_all()
    rem = session.get(Remediation, rem_id)
    assert rem.status == "verified" and rem.verified_run_id == result.run_id
    grant = session.get(Grant, rem.grant_id)
    assert grant.ended_at is not None and grant.ended_run_id == result.run_id
    return rem


@contextmanager
def served(app):
    with serve_in_thread(app) as server:
        yield server.url


def test_okta_group_membership_revoked_through_the_fake_then_verified(factory, session, settings):
    from attest.connectors.sandbox.okta_fake import create_app

    app = create_app(demo=True)
    with served(app) as url:
        add_source(session, settings, "okta", "okta", {"domain": url}, {"token": "sandbox-token"},
                   authoritative=True)
        session.commit()
        assert run_sync(factory, settings, "okta").ok
        okta = app
        rule_groups = {g for r in okta.rules for g in r["actions"]["assignUserToGroups"]["groupIds"]}
        gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "OKTA_GROUP" and okta.members[g]
                   and not okta.has_admin_privilege(g) and g not in rule_groups)
        uid = sorted(okta.members[gid])[0]
        rem_id = revoke_in_campaign(session, "okta", f"{gid}:member|a|{uid}")
        rem = run_and_verify(session, factory, settings, "okta", rem_id)
        assert rem.calls == [f"DELETE /api/v1/groups/{gid}/users/{uid}"]
        assert uid not in okta.members[gid]


def test_okta_rule_managed_membership_becomes_a_manual_task_naming_the_rule(factory, session, settings):
    from attest.connectors.sandbox.okta_fake import create_app

    app = create_app(demo=True)
    with served(app) as url:
        add_source(session, settings, "okta", "okta", {"domain": url}, {"token": "sandbox-token"},
                   authoritative=True)
        session.commit()
        assert run_sync(factory, settings, "okta").ok
        rule = app.rules[0]
        gid = rule["actions"]["assignUserToGroups"]["groupIds"][0]
        key = session.scalar(select(Grant.key).join(Entitlement, Entitlement.id == Grant.entitlement_id)
                             .join(Resource, Resource.id == Entitlement.resource_id)
                             .where(Resource.external_id == gid, Grant.ended_at.is_(None),
                                    Grant.principal_type == "account").limit(1))
        if key is None:
            pytest.skip("the demo org's rule-managed group has no members")
        rem_id = revoke_in_campaign(session, "okta", key)
        before = [e for e in app.log if e[0] != "GET"]
        remediation.run_pending(factory, settings)
        session.expire_all()
        rem = session.get(Remediation, rem_id)
        assert rem.mode == "manual" and rem.status == "in_progress" and rule["name"] in rem.target
        assert [e for e in app.log if e[0] != "GET"] == before  # nothing was called


def test_github_team_membership_revoked_through_the_fake_then_verified(factory, session, settings):
    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, create_app

    app = create_app(members=20, teams=4, repos=10, owners=1)
    with served(app) as url:
        add_source(session, settings, "github", "gh", {"orgs": "acme", "api_url": url}, {"token": SANDBOX_TOKEN})
        session.commit()
        assert run_sync(factory, settings, "gh").ok
        state = app.github
        team = next(t for t in state.orgs["acme"].teams.values() if len(t["members"]) > 1)
        uid = next(u for u, r in team["members"].items() if r == "member")
        rem_id = revoke_in_campaign(session, "gh", f"team:{team['id']}:member|a|{uid}")
        rem = run_and_verify(session, factory, settings, "gh", rem_id)
        assert rem.calls == [f"DELETE /orgs/acme/teams/{team['slug']}/memberships/{state.users[uid]['login']}"]
        assert uid not in team["members"]


def test_aws_identity_center_membership_revoked_through_moto_then_verified(moto_server, factory, session,  # noqa: F811
                                                                            settings):
    url, org = moto_server
    add_aws_source(session, settings, url)
    assert run_sync(factory, settings, "aws").ok
    gid = org.ic_groups["aws-readonly"]
    uid = org.ic_members[gid][0]
    rem_id = revoke_in_campaign(session, "aws", f"idc-group:{gid}:member|a|idc-user:{uid}")
    rem = run_and_verify(session, factory, settings, "aws", rem_id)
    assert any("DeleteGroupMembership" in c or "identitystore" in c.lower() for c in rem.calls), rem.calls
    # undo within the window puts it back, and the next sync sees it again without flagging a reappearance
    remediation.undo(factory, settings, rem_id, "admin@acme.example")
    assert run_sync(factory, settings, "aws").ok
    session.expire_all()
    assert session.get(Remediation, rem_id).status == "undone"


def test_github_synced_team_membership_becomes_a_manual_task_naming_the_idp_group(factory, session, settings):
    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, create_app

    app = create_app(members=20, teams=6, repos=6, owners=1, team_sync=True)
    with served(app) as url:
        add_source(session, settings, "github", "gh", {"orgs": "acme", "api_url": url}, {"token": SANDBOX_TOKEN})
        session.commit()
        assert run_sync(factory, settings, "gh").ok
        state = app.github
        teams = state.orgs["acme"].teams.values()
        synced = next(t for t in teams if t["idp_groups"] and len(t["members"]) > 1)
        plain = next(t for t in teams if not t["idp_groups"] and len(t["members"]) > 1)
        uid = next(u for u, r in synced["members"].items() if r == "member")
        rem_id = revoke_in_campaign(session, "gh", f"team:{synced['id']}:member|a|{uid}")
        before = [line for line in state.log if not line.startswith(("GET", "POST /graphql"))]
        remediation.run_pending(factory, settings)
        session.expire_all()
        rem = session.get(Remediation, rem_id)
        group = synced["idp_groups"][0]["group_name"]
        assert rem.mode == "manual" and rem.status == "in_progress"
        assert f"synchronised with identity provider group {group}" in rem.target
        assert f"Remove {state.users[uid]['login']} from {group} in the identity provider" in rem.target
        assert [line for line in state.log if not line.startswith(("GET", "POST /graphql"))] == before
        assert uid in synced["members"] and not state.mutations  # nothing was called
        # a member of a team that is not synchronised is still revoked through the API
        other = next(u for u, r in plain["members"].items() if r == "member")
        rem_id = revoke_in_campaign(session, "gh", f"team:{plain['id']}:member|a|{other}")
        rem = run_and_verify(session, factory, settings, "gh", rem_id)
        assert rem.calls == [f"DELETE /orgs/acme/teams/{plain['slug']}/memberships/{state.users[other]['login']}"]
