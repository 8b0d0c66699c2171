"""The GitHub connector against GitHub's documented behaviour (issue 17), one test per defect.

Each fake behaviour is GitHub's own, cited where the test uses it (the fake's module docstring quotes the
same references):

- redirects: https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects
  (301 permanent, 302/307 temporary, "repeated verbatim" to `Location`); renamed repositories answer 301
  for GET and 307 for other methods ("Repository redirects are coming", GitHub developer blog, 2015).
- invitations on re-grant: https://docs.github.com/en/rest/collaborators/collaborators#add-a-repository-collaborator
  ("201 Response when a new invitation is created"; 204 when added directly).
- invitation roles: https://docs.github.com/en/rest/orgs/members#list-pending-organization-invitations
  (`role`: direct_member, admin, billing_manager, hiring_manager, reinstate).
- `role_name` is effective: https://docs.github.com/en/rest/collaborators/collaborators#list-repository-collaborators
  ("the highest role assigned to the collaborator after considering all sources of grants").
- rate-limit budgets: https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
  (`x-ratelimit-resource`: core, graphql, search ...; GraphQL has its own limit).
"""

from __future__ import annotations

import csv
import io
import time

import pytest
from sqlalchemy import select

from attest.connectors.github import GitHubConnector
from attest.connectors.github.queries import MEMBERS_QUERY
from attest.connectors.http import HttpError
from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, create_app
from attest.entitlements.models import Grant, SyncRun
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from attest.reviews import remediation
from attest.reviews.models import Remediation
from attest.trail.models import AuditEvent
from tests.connectors.test_github import active, fake_github, grant_ref, sync
from tests.reviews.test_remediation_connectors import revoke_in_campaign, served


def connector(url: str, **kw) -> GitHubConnector:
    return GitHubConnector({"orgs": ["acme"], "api_url": url}, {"token": SANDBOX_TOKEN}, **kw)


def csv_status(session, rem_id: int) -> str:
    """The status the remediations CSV (the web export and the evidence bundle's remediations.csv) shows."""
    out = io.StringIO()
    remediation.write_remediations_csv(session, out)
    rows = {r["remediation_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    return rows[str(rem_id)]["status"]


def direct_collaborator(o, members_only: bool = True):
    """A repository with a direct collaborator who is an organization member (not an owner)."""
    for repo in o.repos.values():
        for uid, role in repo["collaborators"].items():
            if (uid in o.members and o.members[uid] == "member") or (not members_only and uid in o.outside):
                return repo, uid, role
    raise AssertionError("no direct collaborator")


# --- redirects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [None, 308])  # None: GitHub's own 301 (GET) / 307 (DELETE) for a rename
def test_revoke_on_a_renamed_repository_follows_the_redirects_and_confirms(factory, session, settings, status):
    make = {"members": 20, "teams": 3, "repos": 10}
    add_source(session, settings, "github", "gh", {"orgs": "acme"}, {"token": SANDBOX_TOKEN})
    session.commit()
    with fake_github(**make) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        o = state.orgs["acme"]
        repo, uid, role = direct_collaborator(o)
        ref = grant_ref(session, f"repo:{repo['id']}:{role}|a|{uid}")
        old = repo["name"]
        state.rename_repo("acme", old, f"{old}-renamed", redirect_status=status)
        result = connector(url).revoke(ref, dry_run=False)
        # the DELETE went to Location with the same method, and the follow-up read (a GET, redirected too)
        # shows the collaborator gone
        assert uid not in repo["collaborators"]
        assert result.outcome == "done" and not result.already_gone, result
        assert f"/repositories/{repo['id']}/collaborators/" in result.detail
        delete_status = status or 307
        get_status = status or 301
        assert f"DELETE /repos/acme/{old}/collaborators/{state.users[uid]['login']} -> {delete_status}" in state.redirects
        assert f"GET /repos/acme/{old}/collaborators -> {get_status}" in state.redirects
        assert any(line.startswith(f"DELETE /repositories/{repo['id']}/collaborators/") for line in state.log)


def test_a_301_on_a_listing_is_followed():
    with fake_github(members=20, teams=3, repos=10) as (state, url):
        o = state.orgs["acme"]
        repo, uid, _ = direct_collaborator(o)
        old = repo["name"]
        state.rename_repo("acme", old, "moved-away")
        users = connector(url)._rest_list(f"/repos/acme/{old}/collaborators", {"affiliation": "direct"})
        assert uid in {u["id"] for u in users}
        assert state.redirects == [f"GET /repos/acme/{old}/collaborators -> 301"]


def test_a_redirect_to_another_host_is_not_followed():
    import httpx

    from attest.connectors.http import HttpClient

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "https://evil.example/repositories/1/collaborators/x"})

    client = HttpClient("https://api.github.com", follow_redirects=True, transport=httpx.MockTransport(handler),
                        headers={"Authorization": "Bearer ghp_secret_value_123456789012345678901234"})
    with pytest.raises(HttpError, match="another host"):
        client.request("DELETE", "/repos/acme/old/collaborators/x")
    assert client.calls == 1


# --- honest revokes and undo --------------------------------------------------------------------------


def test_revoke_is_done_only_after_a_follow_up_read_shows_the_access_gone(factory, session, settings):
    app = create_app(members=20, teams=3, repos=10)
    state = app.github
    with served(app) as url:
        add_source(session, settings, "github", "gh", {"orgs": "acme", "api_url": url}, {"token": SANDBOX_TOKEN})
        session.commit()
        assert run_sync(factory, settings, "gh").ok
        repo, uid, role = direct_collaborator(state.orgs["acme"])
        rem_id = revoke_in_campaign(session, "gh", f"repo:{repo['id']}:{role}|a|{uid}")
        state.deferred_deletes = True  # GitHub answers 204 but still shows the collaborator
        report = remediation.run_pending(factory, settings)
        assert report.count("unconfirmed") == 1 and report.count("done") == 0, report.as_dict()
        session.expire_all()
        rem = session.get(Remediation, rem_id)
        assert rem.status == "unconfirmed" and "still shows the access" in rem.note
        event = session.scalar(select(AuditEvent).where(AuditEvent.object_id == str(rem_id),
                                                        AuditEvent.action.like("remediation.%"))
                               .order_by(AuditEvent.id.desc()))
        assert event.action == "remediation.unconfirmed"
        assert csv_status(session, rem_id) == "unconfirmed"
        # GitHub applies it later: the next sync verifies the remediation
        state.apply_deferred()
        assert run_sync(factory, settings, "gh", force=True).ok
        session.expire_all()
        assert session.get(Remediation, rem_id).status == "verified"


def test_undo_that_github_answers_with_an_invitation_is_invited_not_undone(factory, session, settings):
    app = create_app(members=20, teams=3, repos=10)
    state = app.github
    with served(app) as url:
        add_source(session, settings, "github", "gh", {"orgs": "acme", "api_url": url}, {"token": SANDBOX_TOKEN})
        session.commit()
        assert run_sync(factory, settings, "gh").ok
        o = state.orgs["acme"]
        repo, uid, role = next((r, u, ro) for r in o.repos.values() for u, ro in r["collaborators"].items()
                               if u in o.outside)
        rem_id = revoke_in_campaign(session, "gh", f"repo:{repo['id']}:{role}|a|{uid}")
        assert remediation.run_pending(factory, settings).count("done") == 1
        assert uid not in repo["collaborators"]
        rem = remediation.undo(factory, settings, rem_id, actor="admin@acme.example")
        # an outside collaborator is re-added by invitation (201): no access until they accept
        assert uid not in repo["collaborators"]
        assert any(i["uid"] == uid and i["repo_id"] == repo["id"] for i in state.repo_invitations.values())
        session.expire_all()
        rem = session.get(Remediation, rem_id)
        assert rem.status == "invited" and "invitation" in rem.note
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "remediation.undone",
                                                        AuditEvent.object_id == str(rem_id)))
        assert event.after["status"] == "invited" and event.after["outcome"] == "invited"
        assert csv_status(session, rem_id) == "invited"
        # a member is added at once (204): undone
        repo2, uid2, role2 = direct_collaborator(o)
        rem2 = revoke_in_campaign(session, "gh", f"repo:{repo2['id']}:{role2}|a|{uid2}")
        assert remediation.run_pending(factory, settings).count("done") == 1
        assert remediation.undo(factory, settings, rem2, actor="admin@acme.example").status == "undone"
        assert repo2["collaborators"][uid2] == role2


# --- invitations --------------------------------------------------------------------------------------


def test_billing_and_hiring_manager_invitations_are_not_org_membership(factory, session, settings):
    add_source(session, settings, "github", "gh", {"orgs": "acme"}, {"token": SANDBOX_TOKEN})
    session.commit()
    with fake_github(members=20, teams=3, repos=5) as (state, url):
        o = state.orgs["acme"]
        base = {"login": None, "created_at": "2026-11-20T10:00:00Z", "team_count": 0, "invitation_source": "member"}
        o.invitations[71001] = {**base, "id": 71001, "email": "books@acme.example", "role": "billing_manager"}
        o.invitations[71002] = {**base, "id": 71002, "email": "recruiter@acme.example", "role": "hiring_manager"}
        o.invitations[71003] = {**base, "id": 71003, "email": "back@acme.example", "role": "reinstate"}
        result = sync(factory, settings, "gh", url)
        assert result.status == "succeeded", result.error
        assert active(session, "org:1:billing_manager|a|invitation:71001") is not None
        assert active(session, "org:1:member|a|invitation:71001") is None
        assert not session.scalars(select(Grant).where(Grant.key.like("%invitation:71002"))).all()
        assert active(session, "org:1:member|a|invitation:71003") is not None
        run = session.get(SyncRun, result.run_id)
        assert any("71002" in n and "hiring_manager" in n for n in run.notes or []), run.notes
        # cancelling the billing manager's invitation, and its undo, keep the role
        conn = connector(url)
        ref = grant_ref(session, "org:1:billing_manager|a|invitation:71001")
        assert conn.revoke(ref, dry_run=False).outcome == "done" and 71001 not in o.invitations
        again = conn.grant(ref, dry_run=False)
        assert again.outcome == "invited"
        assert any(i["role"] == "billing_manager" and i["email"] == "books@acme.example"
                   for i in o.invitations.values())


# --- direct role of repositories with more than 100 direct collaborators ------------------------------


def test_big_repository_keeps_each_collaborators_direct_role(factory, session, settings):
    add_source(session, settings, "github", "gh", {"orgs": "acme"}, {"token": SANDBOX_TOKEN})
    session.commit()
    with fake_github(members=130, teams=4, repos=3, owners=2) as (state, url):
        o = state.orgs["acme"]
        repo = next(iter(o.repos.values()))
        repo["archived"] = False
        people = [u for u in sorted(o.members) if u < 500000][:120]
        for u in people:
            repo["collaborators"][u] = "pull"
        # one person also gets admin through a team; an owner is an owner (admin everywhere)
        team = next(iter(o.teams.values()))
        teamed = next(u for u in people if o.members[u] == "member")
        team["members"][teamed] = "member"
        team["repos"][repo["id"]] = "admin"
        owner = next(u for u in people if o.members[u] == "admin")
        result = sync(factory, settings, "gh", url)
        assert result.status == "succeeded", result.error
        for uid in (teamed, owner, people[-1]):
            assert active(session, f"repo:{repo['id']}:pull|a|{uid}") is not None, uid
            assert active(session, f"repo:{repo['id']}:admin|a|{uid}") is None, uid
        # the team's own grant is still there, as the team's
        assert active(session, f"repo:{repo['id']}:admin|r|team:{team['id']}") is not None
        direct = session.scalars(select(Grant).where(Grant.key.like(f"repo:{repo['id']}:%|a|%"),
                                                     Grant.ended_at.is_(None))).all()
        assert len(direct) == len(repo["collaborators"])


# --- rate-limit budgets -------------------------------------------------------------------------------


def test_rest_does_not_wait_for_the_graphql_budget():
    sleeps: list[float] = []
    with fake_github(members=10, teams=2, repos=2) as (state, url):
        # the token's GraphQL budget is nearly spent (100 of 5,000 left); its REST budget is untouched
        state.windows[(SANDBOX_TOKEN, "graphql")] = [4900, time.time() + 3600]
        conn = connector(url, sleep=sleeps.append)
        conn._graphql(MEMBERS_QUERY, {"login": "acme", "after": None}, "members")
        for _ in range(3):
            conn._request("GET", "/orgs/acme")
        assert sleeps == []  # REST: 4,997 of 5,000 left, no pacing
        assert conn.client.rates["graphql"].remaining == 99 and conn.client.rates["core"].remaining == 4997
        conn._graphql(MEMBERS_QUERY, {"login": "acme", "after": None}, "members")
        assert len(sleeps) == 1 and sleeps[0] > 10  # GraphQL itself is paced over the hour left
