"""The GitHub connector against the fake GitHub over real HTTP, asserting on the database through run_sync."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from attest.connectors.base import ConnectorError, GrantRef, IdentityRecord, RevokeRefused
from attest.connectors.github import GitHubConnector
from attest.connectors.github.client import graphql_url
from attest.connectors.registry import validate_settings
from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, Stamp, create_app, demo_email
from attest.connectors.sandbox.server import serve_in_thread
from attest.entitlements.models import Account, Grant, SyncRun
from attest.entitlements.queries import effective_access
from attest.entitlements.sync import run_sync
from tests.factories import ListConnector, UpstreamTime, make_source


@contextmanager
def fake_github(**kw):
    app = create_app(**kw)
    with serve_in_thread(app) as server:
        yield app.github, server.url


def connector(url: str, orgs=("acme",), **kw) -> GitHubConnector:
    settings = {"orgs": list(orgs), "api_url": url, **kw.pop("settings", {})}
    return GitHubConnector(settings, kw.pop("secrets", {"token": SANDBOX_TOKEN}), **kw)


def sync(factory, settings, name, url, **kw):
    return run_sync(factory, settings, name, connector=connector(url, **kw))


def active(session, key: str) -> Grant | None:
    return session.scalar(select(Grant).where(Grant.key == key, Grant.ended_at.is_(None)))


def account(session, login: str) -> Account:
    return session.scalar(select(Account).where(Account.login == login))


def grant_ref(session, key: str) -> GrantRef:
    g = session.scalar(select(Grant).where(Grant.key == key))
    ent = g.entitlement
    res = ent.resource
    if g.principal_type == "account":
        principal_ref, login = g.account.external_id, g.account.login or g.account.email
    else:
        principal_ref, login = g.group.external_id, g.group.name
    return GrantRef("github", g.key, ent.external_id, ent.name, ent.resource_ref, res.type, g.principal_type,
                    principal_ref, login, dict(res.attributes or {}), dict(ent.attributes or {}),
                    dict(g.attributes or {}), g.part)


def nest(state, org="acme"):
    """A child team nested in a parent; a user only in the child; a repo shared with the parent only."""
    o = state.orgs[org]
    child = next(t for t in o.teams.values() if t["parent"])
    parent = o.teams[child["parent"]]
    user_id = next(u for u, r in o.members.items() if r == "member" and u not in parent["members"])
    for t in o.teams.values():
        t["members"].pop(user_id, None)
    child["members"][user_id] = "member"
    repo = next(iter(o.repos.values()))
    repo["archived"] = False
    parent["repos"][repo["id"]] = "push"
    for t in o.teams.values():
        if t is not parent:
            t["repos"].pop(repo["id"], None)
    repo["collaborators"].pop(user_id, None)
    return child, parent, state.users[user_id], repo


def test_nested_team_access_is_effective_access_via_the_teams(factory, session, settings):
    with fake_github(members=40, teams=8, repos=20) as (state, url):
        child, parent, user, repo = nest(state)
        make_source(session, "gh", kind="github")
        session.commit()
        result = sync(factory, settings, "gh", url)
    assert result.status == "succeeded", result.error
    acc = account(session, user["login"])
    # the child team is a member of its parent
    assert active(session, f"team:{parent['id']}:member|r|team:{child['id']}") is not None
    held = [h for h in effective_access(session, [acc.id])
            if h.grant.entitlement.external_id == f"repo:{repo['id']}:push"]
    assert len(held) == 1
    assert [g.name for g in held[0].via] == [f"acme/{parent['slug']}", f"acme/{child['slug']}"]
    assert held[0].how == f"via acme/{parent['slug']} → acme/{child['slug']}"
    # org owners hold the privileged admin entitlement; repo admin is privileged too
    owner = active(session, f"org:1:admin|a|{next(u for u, r in state.orgs['acme'].members.items() if r == 'admin')}")
    assert owner is not None and owner.entitlement.privileged
    admin_ent = session.scalar(select(Grant).where(Grant.key.like("repo:%:admin|%"))).entitlement
    assert admin_ent.privileged
    # pending invitations are accounts with status invited that would hold the org role
    invited = session.scalars(select(Account).where(Account.status == "invited")).all()
    assert invited and all(a.external_id.startswith("invitation:") for a in invited)
    run = session.get(SyncRun, result.run_id)
    assert run.api_calls == state.requests


def test_saml_identities_link_accounts_to_people(factory, session, settings):
    people = [IdentityRecord(f"p{i}", f"Person {i}", email=demo_email(i), login=demo_email(i)) for i in range(60)]
    make_source(session, "hr", authoritative=True)
    make_source(session, "gh", kind="github")
    session.commit()
    assert run_sync(factory, settings, "hr", connector=ListConnector(people)).status == "succeeded"
    with fake_github(members=40, teams=4, repos=6) as (state, url):
        result = sync(factory, settings, "gh", url)
    assert result.status == "succeeded", result.error
    o = state.orgs["acme"]
    saml_user = state.users[1001]  # person 1: SAML identity, no public e-mail
    acc = account(session, saml_user["login"])
    assert acc.saml_nameid == demo_email(1)
    assert acc.link_method == "saml_nameid" and acc.identity.email == demo_email(1)
    # person 36 never linked a SAML identity and shows no public e-mail: orphaned until linked by hand
    assert 1036 not in o.saml_identities
    assert account(session, state.users[1036]["login"]).identity_id is None
    # the deploy bot is a service account with no person behind it
    bot = account(session, "acme-deploy-bot")
    assert bot.kind == "service" and bot.identity_id is None
    linked = session.scalars(select(Account).where(Account.link_method == "saml_nameid")).all()
    assert len(linked) == len(o.saml_identities)


def test_without_saml_accounts_link_by_public_email_and_missing_features_are_notes(factory, session, settings):
    people = [IdentityRecord(f"p{i}", f"Person {i}", email=demo_email(i), login=demo_email(i)) for i in range(30)]
    make_source(session, "hr", authoritative=True)
    make_source(session, "gh", kind="github")
    session.commit()
    run_sync(factory, settings, "hr", connector=ListConnector(people))
    with fake_github(members=20, teams=4, repos=6, plan="free") as (state, url):
        result = sync(factory, settings, "gh", url)
    assert result.status == "succeeded", result.error
    notes = " | ".join(session.get(SyncRun, result.run_id).notes)
    assert "organization roles are not available (HTTP 404" in notes
    assert "custom repository roles are not available (HTTP 404" in notes
    assert "SAML single sign-on is not enabled" in notes
    assert account(session, state.users[1005]["login"]).link_method == "email"  # every fifth shows an e-mail
    assert account(session, state.users[1001]["login"]).identity_id is None


GitHubTime = UpstreamTime  # GitHub's clock and the connector's sleep in one


def timed_connector(url: str, clock: GitHubTime, **kw) -> GitHubConnector:
    return connector(url, sleep=clock.sleep, clock=clock, **kw)  # the clients' holds and pacing: the same clock


def refusals(state, limit: str) -> list[Stamp]:
    """The requests the fake refused for its "primary" or "secondary" rate limit, on GitHub's clock."""
    return [s for s in state.timeline if s.limited == limit]


def early_requests(state) -> list[Stamp]:
    """Requests that came back too soon, on GitHub's clock: after a secondary refusal answered at t with
    retry-after r, any later request that arrived before t + r; after a primary refusal announcing
    x-ratelimit-reset R, a later request on the same resource (core, graphql) that arrived before R."""
    refused = refusals(state, "secondary") + refusals(state, "primary")

    def early(stamp: Stamp, r: Stamp) -> bool:
        until = r.answered + r.retry_after if r.retry_after is not None else r.reset
        same = r.limited == "secondary" or r.request.endswith("/graphql") == stamp.request.endswith("/graphql")
        return same and stamp.number > r.number and stamp.arrived < until

    return [stamp for stamp in state.timeline if any(early(stamp, r) for r in refused)]


def test_secondary_rate_limit_mid_sync_is_honoured(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    clock = GitHubTime()
    with fake_github(members=40, teams=8, repos=20, clock=clock) as (state, url):
        baseline = list(timed_connector(url, clock).sync())
        state.inject_secondary(at=6, retry_after=1)
        conn = timed_connector(url, clock, settings={"concurrency": 1})
        began = clock()
        result = run_sync(factory, settings, "gh", connector=conn)
        assert result.status == "succeeded", result.error
        refused = refusals(state, "secondary")
        assert [s.retry_after for s in refused] == [1]
        # it waited the second GitHub announced, on GitHub's clock, and the next request came exactly then
        assert conn.client.waits == [1.0] and clock.slept == [1.0] and clock() - began == 1.0
        after = state.timeline[state.timeline.index(refused[0]) + 1]
        assert after.arrived == refused[0].answered + 1
        assert state.secondary_violations == 0 and not early_requests(state)  # nothing came back before it
        assert result.stats["read"]["grants"] == sum(1 for r in baseline if type(r).__name__ == "GrantRecord")
        # with requests in flight on several threads, every thread holds back once one is told to wait
        state.timeline.clear()
        state.inject_secondary(at=8, retry_after=1)
        parallel = timed_connector(url, clock, settings={"concurrency": 4})
        began = clock()
        records = list(parallel.sync())
        assert len(records) == len(baseline)
        assert parallel.client.waits and all(w == 1.0 for w in parallel.client.waits)
        assert clock() - began >= 1.0
        # at most the requests already in flight when it hit came back early (each refused again)
        assert state.secondary_violations <= 3
        early = early_requests(state)
        assert len(early) <= 3 and all(s.limited == "secondary" for s in early)


def test_secondary_limit_without_retry_after_waits_a_minute(factory, session, settings):
    waits: list[float] = []
    with fake_github(members=10, teams=2, repos=3) as (state, url):
        state.inject_secondary(at=3, retry_after=None)
        conn = connector(url, sleep=waits.append)
        records = list(conn.sync())
    assert 60.0 in waits
    assert records


def test_primary_rate_limit_waits_for_the_reset(factory, session, settings):
    with fake_github(members=10, teams=3, repos=4) as (state, url):
        baseline = list(connector(url).sync())
    clock = GitHubTime()
    with fake_github(members=10, teams=3, repos=4, rate_limit=6, rate_window=1.0, clock=clock) as (state, url):
        # the token's core budget is already spent (another job used it) for half a second more
        state.windows[(SANDBOX_TOKEN, "core")] = [6, GitHubTime.START + 0.5]
        conn = timed_connector(url, clock, settings={"concurrency": 1})
        records = list(conn.sync())
    assert len(records) == len(baseline)
    # the refusal was waited out until the x-ratelimit-reset it announced, on GitHub's clock, and nothing came
    # back before it; none failed
    refused = refusals(state, "primary")
    assert [(s.arrived, s.reset) for s in refused] == [(GitHubTime.START, GitHubTime.START + 1)]
    assert conn.client.waits == [refused[0].reset - refused[0].answered + conn.client.reset_margin]
    assert state.primary_limited == 1 and not early_requests(state)
    # then it spread the requests over as many 1 s windows as they need, per resource, pacing as
    # x-ratelimit-remaining ran out: at most until the reset (a window away), never into a spent window
    rest = sum(1 for s in state.timeline if not s.request.endswith("/graphql"))
    graphql = len(state.timeline) - rest
    assert state.rest_requests > 6 and clock() - GitHubTime.START >= (max(rest, graphql) - 1) // 6
    assert max(clock.slept) <= 2.0  # a window, and x-ratelimit-reset rounded up to its whole second


def test_failure_mid_sync_loses_nothing(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(orgs=("acme", "beta"), members=20, teams=4, repos=8) as (state, url):
        first = run_sync(factory, settings, "gh", connector=connector(url, orgs=("acme", "beta")))
        assert first.status == "succeeded", first.error
        # upstream changes in both orgs
        acme_team = next(iter(state.orgs["acme"].teams.values()))
        beta_team = next(iter(state.orgs["beta"].teams.values()))
        acme_uid, _ = acme_team["members"].popitem()
        beta_uid, _ = beta_team["members"].popitem()
        acme_key = f"team:{acme_team['id']}:member|a|{acme_uid}"
        beta_key = f"team:{beta_team['id']}:member|a|{beta_uid}"
        before = session.query(Grant).filter(Grant.ended_at.is_(None), Grant.part == "github:beta").count()
        # beta keeps failing with 502 once its repositories are being read
        state.inject_failure(at=1, status=502, count=10_000, path="/orgs/beta/teams/")
        second = run_sync(factory, settings, "gh",
                          connector=connector(url, orgs=("acme", "beta"), sleep=lambda s: None))
        assert second.status == "partial"
        assert second.failed_parts[0]["part"] == "github:beta" and "502" in second.failed_parts[0]["reason"]
        session.expire_all()
        assert active(session, acme_key) is None  # the org that was read is up to date
        assert active(session, beta_key) is not None  # the failed org is left as it was
        assert session.query(Grant).filter(Grant.ended_at.is_(None), Grant.part == "github:beta").count() == before
        state.failures.clear()
        third = run_sync(factory, settings, "gh", connector=connector(url, orgs=("acme", "beta")))
        assert third.status == "succeeded"
        session.expire_all()
        assert active(session, beta_key) is None


def test_transient_server_errors_are_retried(factory, session, settings):
    with fake_github(members=10, teams=2, repos=3) as (state, url):
        clean = list(connector(url).sync())
    with fake_github(members=10, teams=2, repos=3, fail_at=4, fail_status=500, fail_count=2) as (state, url):
        conn = connector(url, sleep=lambda s: None)
        records = list(conn.sync())
        assert state.failures[0].served == 2
    assert len(records) == len(clean)
    assert conn.calls == state.requests  # retries are counted too


def test_bad_token_fails_the_run_with_a_clear_message(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=5, teams=1, repos=1) as (state, url):
        conn = connector(url, secrets={"token": "ghp_wrong"})
        with pytest.raises(ConnectorError, match="rejected the credentials"):
            conn.validate()
        result = run_sync(factory, settings, "gh", connector=connector(url, secrets={"token": "ghp_wrong"}))
    assert result.status == "failed" and "rejected the credentials" in result.error
    assert session.query(Grant).count() == 0


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_github_app_installation_token_flow_and_refresh(factory, session, settings):
    private, public = _rsa_pair()
    other, _ = _rsa_pair()
    app_settings = {"app_id": "12345", "installation_id": 777}
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=10, teams=2, repos=3, app_id="12345", app_public_key=public, installation_id=777,
                     token_ttl=1000.0) as (state, url):
        # the connector's clock, moved by the test instead of waiting; the refresh margin is 5 minutes, at
        # most a fifth of the token's lifetime: 200 s of this 1000 s token
        clock = [time.time()]
        conn = connector(url, settings=app_settings, secrets={"private_key": private}, clock=lambda: clock[0])
        conn.validate()
        assert state.token_exchanges == 1
        clock[0] += 750  # 250 s before the token expires: outside the margin, the token is reused
        conn.validate()
        assert state.token_exchanges == 1 and conn.token_refreshes == 1
        clock[0] += 100  # 150 s before it expires: inside the margin, refreshed before it expires
        conn.validate()
        assert state.token_exchanges == 2 and conn.token_refreshes == 2
        assert state.unauthorized == 0
        result = run_sync(factory, settings, "gh",
                          connector=connector(url, settings=app_settings, secrets={"private_key": private}))
        assert result.status == "succeeded", result.error
        assert state.unauthorized == 0
        # a key the App does not have is refused with a message that says what to check
        wrong = connector(url, settings=app_settings, secrets={"private_key": other})
        with pytest.raises(ConnectorError, match="refused the App installation token"):
            wrong.validate()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="private_key"):
        validate_settings("github", {"orgs": "acme"}, {})
    with pytest.raises(ValueError, match="app_id"):
        validate_settings("github", {"orgs": "acme"}, {"private_key": "-----BEGIN PRIVATE KEY-----"})
    with pytest.raises(ValueError, match="https"):
        validate_settings("github", {"orgs": "acme", "api_url": "http://ghe.example.com/api/v3"}, {"token": "x"})
    # the App's key is read when the source is saved, not at the first sync: GitHub signs App JWTs with RS256 only
    app = {"orgs": "acme", "app_id": "12345", "installation_id": "777"}
    with pytest.raises(ValueError, match=r"private_key must be an unencrypted PEM private key"):
        validate_settings("github", app, {"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"})
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="private_key must be an RSA key; this is an EC key on secp256r1"):
        validate_settings("github", app, {"private_key": ec_key})
    _, secrets = validate_settings("github", app, {"private_key": _rsa_pair()[0]})
    assert "BEGIN PRIVATE KEY" in secrets["private_key"]
    clean, _ = validate_settings("github", {"orgs": "acme, beta", "skip_archived": "yes"}, {"token": "x"})
    assert clean["orgs"] == ["acme", "beta"] and clean["skip_archived"] is True
    assert clean["api_url"] == "https://api.github.com"
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3") == "https://ghe.example.com/api/graphql"


def test_enterprise_server_paths_and_skip_archived(factory, session, settings):
    with fake_github(members=10, teams=3, repos=20) as (state, url):
        conn = connector(f"{url}/api/v3", settings={"skip_archived": True})
        records = list(conn.sync())
        assert any(line.startswith("POST /api/graphql") for line in state.log)
        assert all(line.split()[1].startswith("/api/") for line in state.log)
    archived = {f"repo:{r['id']}" for r in state.orgs["acme"].repos.values() if r["archived"]}
    assert archived
    seen = {r.external_id for r in records if type(r).__name__ == "ResourceRecord"}
    assert not archived & seen
    assert not any(getattr(r, "entitlement_ref", "").rsplit(":", 1)[0] in archived for r in records)


def test_revoke_dry_run_idempotence_undo_and_last_owner(factory, session, settings):
    make_source(session, "gh", kind="github")
    session.commit()
    with fake_github(members=20, teams=4, repos=10, owners=1) as (state, url):
        assert sync(factory, settings, "gh", url).status == "succeeded"
        o = state.orgs["acme"]
        conn = connector(url)
        # remove a member from a team: dry-run first changes nothing
        team = next(t for t in o.teams.values() if len(t["members"]) > 1)
        uid = next(u for u, r in team["members"].items() if r == "member")
        ref = grant_ref(session, f"team:{team['id']}:member|a|{uid}")
        dry = conn.revoke(ref, dry_run=True)
        login = state.users[uid]["login"]
        assert dry.dry_run and dry.calls == (f"DELETE /orgs/acme/teams/{team['slug']}/memberships/{login}",)
        assert uid in team["members"] and not state.mutations
        done = conn.revoke(ref, dry_run=False)
        assert not done.already_gone and uid not in team["members"]
        again = conn.revoke(ref, dry_run=False)
        assert again.already_gone  # 404 on delete: already gone, success
        conn.grant(ref, dry_run=False)  # undo
        assert team["members"][uid] == "member"

        # remove a team's access to a repository, then a direct collaborator
        tid, rid = next((t["id"], r) for t in o.teams.values() for r in t["repos"]
                        if not o.repos[r]["archived"])
        role = o.teams[tid]["repos"][rid]
        conn.revoke(grant_ref(session, f"repo:{rid}:{role}|r|team:{tid}"), dry_run=False)
        assert rid not in o.teams[tid]["repos"]
        repo = next(r for r in o.repos.values() if any(u in o.members for u in r["collaborators"]))
        cuid, crole = next((u, r) for u, r in repo["collaborators"].items() if u in o.members)
        cref = grant_ref(session, f"repo:{repo['id']}:{crole}|a|{cuid}")
        assert conn.revoke(cref, dry_run=False).calls[0].startswith(f"DELETE /repos/acme/{repo['name']}/collaborators/")
        assert cuid not in repo["collaborators"]
        conn.grant(cref, dry_run=False)
        assert repo["collaborators"][cuid] == crole

        # an outside collaborator leaves the organization (every repository)
        ouid = next(iter(o.outside))
        oref = grant_ref(session, f"org:1:outside_collaborator|a|{ouid}")
        conn.revoke(oref, dry_run=False)
        assert ouid not in o.outside and all(ouid not in r["collaborators"] for r in o.repos.values())
        assert conn.revoke(oref, dry_run=False).already_gone
        with pytest.raises(RevokeRefused, match="no single call"):
            conn.grant(oref, dry_run=False)

        # the last owner is never removed nor demoted, not even in a dry-run
        owner = next(u for u, r in o.members.items() if r == "admin")
        with pytest.raises(RevokeRefused, match="last owner"):
            conn.revoke(grant_ref(session, f"org:1:admin|a|{owner}"), dry_run=True)
        with pytest.raises(RevokeRefused, match="last owner"):
            conn.revoke(grant_ref(session, f"org:1:admin|a|{owner}"), dry_run=False)
        assert o.members[owner] == "admin"

        # a member is removed from the organization; undo invites them back
        member = next(u for u, r in o.members.items() if r == "member" and u < 500000)
        mref = grant_ref(session, f"org:1:member|a|{member}")
        conn.revoke(mref, dry_run=False)
        assert member not in o.members
        assert conn.revoke(mref, dry_run=False).already_gone
        conn.grant(mref, dry_run=False)
        assert any(i["login"] == state.users[member]["login"] for i in o.invitations.values())

        # a pending invitation is cancelled
        inv_id = next(i for i, inv in o.invitations.items() if inv["email"])
        iref = grant_ref(session, f"org:1:{'admin' if o.invitations[inv_id]['role'] == 'admin' else 'member'}"
                                  f"|a|invitation:{inv_id}")
        conn.revoke(iref, dry_run=False)
        assert inv_id not in o.invitations

        # a nested team's inherited access is refused with where it comes from
        child = next(t for t in o.teams.values() if t["parent"])
        with pytest.raises(RevokeRefused, match="nested"):
            conn.revoke(grant_ref(session, f"team:{child['parent']}:member|r|team:{child['id']}"), dry_run=True)


def test_verified_domain_emails_link_when_there_is_no_saml(factory, session, settings):
    people = [IdentityRecord(f"p{i}", f"Person {i}", email=demo_email(i), login=demo_email(i)) for i in range(80)]
    make_source(session, "hr", authoritative=True)
    make_source(session, "gh", kind="github")
    session.commit()
    run_sync(factory, settings, "hr", connector=ListConnector(people))
    with fake_github(members=80, teams=3, repos=4, saml=False) as (state, url):
        result = sync(factory, settings, "gh", url)
    assert result.status == "succeeded", result.error
    acc = account(session, state.users[1001]["login"])  # no public e-mail, but one on the verified domain
    assert acc.email == demo_email(1) and acc.link_method == "email"
    assert acc.attributes["verified_domain_emails"] == [demo_email(1)]
    assert account(session, state.users[1072]["login"]).identity_id is None  # no work e-mail, no public one


def test_demo_org_links_to_the_sandbox_okta_people(factory, session, settings):
    from attest.connectors.okta import OktaConnector
    from attest.connectors.sandbox.okta_fake import create_app as okta_app

    make_source(session, "okta", kind="okta", authoritative=True)
    make_source(session, "gh", kind="github")
    session.commit()
    with serve_in_thread(okta_app(demo=True)) as okta, serve_in_thread(create_app(demo=True)) as gh:
        assert run_sync(factory, settings, "okta", connector=OktaConnector(
            {"domain": okta.url}, {"token": "sandbox-token"})).status == "succeeded"
        result = run_sync(factory, settings, "gh", connector=connector(gh.url, orgs=("acme-corp",)))
    assert result.status == "succeeded", result.error
    accounts = session.scalars(select(Account).where(Account.source_id == session.scalar(
        select(Account.source_id).where(Account.login == "ada-lovelace-0")))).all()
    linked = [a for a in accounts if a.link_method == "saml_nameid"]
    assert len(linked) >= 110 and all(a.identity.email == a.saml_nameid for a in linked)


def test_repeated_secondary_limits_without_retry_after_wait_longer_each_time():
    waits: list[float] = []
    with fake_github(members=5, teams=1, repos=1) as (state, url):
        conn = connector(url, sleep=waits.append, settings={"concurrency": 1})
        state.inject_secondary(at=1, retry_after=None, count=3)
        conn.validate()
    assert conn.client.waits == [60.0, 120.0, 240.0]
