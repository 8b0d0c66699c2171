"""GitHub team synchronization: a team whose members an IdP group sets carries the managed-elsewhere
contract (read over the fake's real HTTP, `GET /orgs/{org}/teams/{slug}/team-sync/group-mappings`), its
membership is never removed through the API, and an org without team sync is synced all the same."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.connectors.base import RevokeRefused
from attest.connectors.managed import MANAGED_BY, ManagedKind, managed_elsewhere
from attest.entitlements.models import Resource, SyncRun
from tests.connectors.test_github import connector, fake_github, grant_ref, sync
from tests.factories import make_source

MAPPINGS = "/team-sync/group-mappings"


def test_a_team_synchronised_with_an_idp_group_carries_the_contract(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=20, teams=6, repos=6, team_sync=True) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        o = state.orgs["acme"]
        synced = [t for t in o.teams.values() if t["idp_groups"]]
        plain = [t for t in o.teams.values() if not t["idp_groups"]]
        assert synced and plain
        assert sum(MAPPINGS in line for line in state.log) == len(o.teams)  # one read per team
    teams = {r.external_id: r for r in session.scalars(select(Resource).where(Resource.type == "github_team"))}
    for t in synced:
        found = managed_elsewhere(None, None, teams[f"team:{t['id']}"].attributes)
        assert found is not None and found.kind == ManagedKind.IDP_TEAM_SYNC
        assert found.by == t["idp_groups"][0]["group_name"]
    for t in plain:
        assert MANAGED_BY not in teams[f"team:{t['id']}"].attributes


def test_an_org_without_team_sync_is_asked_once_and_synced_with_a_note(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=20, teams=6, repos=6, team_sync=False) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        assert sum(MAPPINGS in line for line in state.log) == 1  # 403 on the first team: the others are not asked
    run = session.scalar(select(SyncRun).order_by(SyncRun.id.desc()))
    assert any("team synchronization is not available" in n and "not externally managed" in n for n in run.notes)
    teams = session.scalars(select(Resource).where(Resource.type == "github_team")).all()
    assert teams and not any(MANAGED_BY in (t.attributes or {}) for t in teams)


def test_an_org_without_saml_is_not_asked_for_team_sync(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=10, teams=3, repos=3, saml=False) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        assert not any(MAPPINGS in line for line in state.log)


def test_revoking_a_synced_teams_member_is_refused_naming_the_idp_group(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=20, teams=6, repos=6, team_sync=True) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        team = next(t for t in state.orgs["acme"].teams.values() if t["idp_groups"] and len(t["members"]) > 1)
        uid = next(u for u, r in team["members"].items() if r == "member")
        with pytest.raises(RevokeRefused, match=team["idp_groups"][0]["group_name"]) as refused:
            connector(url).revoke(grant_ref(session, f"team:{team['id']}:member|a|{uid}"), dry_run=False)
        assert refused.value.target == str(refused.value)  # remediation routes it to the manual work list
        assert uid in team["members"] and not state.mutations
        assert not [line for line in state.log if line.startswith(("DELETE", "PUT"))]
