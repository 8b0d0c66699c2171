"""GitHub's pure transform, on payloads shaped like the ones GitHub's REST and GraphQL references document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attest.connectors.base import AccountRecord, EntitlementRecord, GrantRecord, ResourceRecord
from attest.connectors.github.provisioning import _kind_from_ref
from attest.connectors.github.transforms import OrgSnapshot, org_records

ORG = {"login": "octo-org", "id": 9919, "plan": {"name": "enterprise"}, "two_factor_requirement_enabled": False,
       "default_repository_permission": "read"}


def member(uid: int, login: str, role: str = "MEMBER", name: str | None = None, email: str = "") -> dict:
    # GraphQL OrganizationMemberEdge; User.email is "" when the user shows no public e-mail
    return {"role": role, "node": {"databaseId": uid, "login": login, "name": name, "email": email}}


def snapshot(**kw) -> OrgSnapshot:
    snap = OrgSnapshot(
        login="octo-org", org=ORG,
        members=[member(1, "mona", "ADMIN", "Mona Lisa"), member(2, "hubot", email="hubot@public.example"),
                 member(3, "octocat"), member(4, "release-bot")],
        two_factor_disabled={3},
        saml=[{"guid": "g1", "samlIdentity": {"nameId": "mona@corp.example", "username": "mona",
                                              "emails": [{"value": "mona.lisa@corp.example", "primary": True}]},
               "user": {"databaseId": 1, "login": "mona"}},
              {"guid": "g2", "samlIdentity": {"nameId": "nobody@corp.example", "emails": []}, "user": None}],
        outside_collaborators=[{"login": "contractor", "id": 77, "type": "User"}],
        invitations=[{"id": 5, "login": None, "email": "new@corp.example", "role": "direct_member",
                      "created_at": "2026-11-20T10:00:00Z", "inviter": {"login": "mona"},
                      "invitation_source": "member"}],
        org_roles=[{"id": 8132, "name": "security-auditor", "permissions": ["read_audit_logs"], "base_role": None,
                    "source": "Organization", "users": [{"login": "octocat", "id": 3, "assignment": "direct"}],
                    "teams": []},
                   {"id": 8, "name": "all_repo_admin", "permissions": [], "base_role": "admin",
                    "source": "Predefined", "users": [],
                    "teams": [{"id": 11, "slug": "justice-league", "assignment": "direct"}]}],
        repo_roles=[{"id": 201, "name": "security-triager", "base_role": "triage", "description": "Triage+"}],
        teams=[
            {"databaseId": 11, "slug": "justice-league", "name": "Justice League", "privacy": "VISIBLE",
             "parentTeam": None,
             "members": {"edges": [{"role": "MAINTAINER", "node": {"databaseId": 1, "login": "mona"}}]}},
            {"databaseId": 12, "slug": "super-friends", "name": "Super Friends", "privacy": "SECRET",
             "parentTeam": {"databaseId": 11, "slug": "justice-league"},
             "members": {"edges": [{"role": "MEMBER", "node": {"databaseId": 3, "login": "octocat"}}]}},
        ],
        team_repos={
            11: [{"id": 501, "name": "hello-world", "permissions": {"pull": True, "push": True, "admin": False},
                  "role_name": "write"}],
            12: [{"id": 502, "name": "old-thing", "permissions": {"pull": True}, "role_name": "security-triager"}],
        },
        repos=[
            {"databaseId": 501, "name": "hello-world", "nameWithOwner": "octo-org/hello-world", "isArchived": False,
             "isPrivate": True, "isFork": False, "visibility": "PRIVATE",
             "collaborators": {"edges": [
                 {"permission": "ADMIN", "node": {"databaseId": 2, "login": "hubot"},
                  "permissionSources": [{"roleName": "admin",
                                         "source": {"__typename": "Repository", "databaseId": 501}}]},
                 {"permission": "WRITE", "node": {"databaseId": 77, "login": "contractor"},
                  "permissionSources": [{"roleName": "security-triager",
                                         "source": {"__typename": "Repository", "databaseId": 501}},
                                        {"roleName": "read", "source": {"__typename": "Organization"}}]}]}},
            {"databaseId": 502, "name": "old-thing", "nameWithOwner": "octo-org/old-thing", "isArchived": True,
             "isPrivate": False, "isFork": False, "visibility": "PUBLIC", "collaborators": {"edges": []}},
        ],
    )
    for k, v in kw.items():
        setattr(snap, k, v)
    return snap


def by_type(records, cls):
    return [r for r in records if isinstance(r, cls)]


def test_members_roles_saml_and_two_factor():
    recs = list(org_records(snapshot()))
    accounts = {a.login: a for a in by_type(recs, AccountRecord)}
    mona = accounts["mona"]
    assert mona.saml_nameid == "mona@corp.example" and mona.email == "mona.lisa@corp.example"
    assert mona.display_name == "Mona Lisa" and mona.mfa_enabled is True and mona.part == "github:octo-org"
    assert accounts["hubot"].email == "hubot@public.example" and accounts["hubot"].saml_nameid is None
    assert accounts["octocat"].email is None and accounts["octocat"].mfa_enabled is False
    assert accounts["release-bot"].kind == "service"
    keys = {g.key for g in by_type(recs, GrantRecord)}
    assert "org:9919:admin|a|1" in keys and "org:9919:member|a|2" in keys
    assert "org:9919:outside_collaborator|a|77" in keys
    ents = {e.external_id: e for e in by_type(recs, EntitlementRecord)}
    assert ents["org:9919:admin"].privileged and not ents["org:9919:member"].privileged
    org = by_type(recs, ResourceRecord)[0]
    assert org.type == "github_org" and org.attributes["saml_sso"] is True


def test_two_factor_unknown_when_not_owner():
    recs = list(org_records(snapshot(two_factor_disabled=None, saml=None)))
    assert all(a.mfa_enabled is None for a in by_type(recs, AccountRecord))
    assert by_type(recs, ResourceRecord)[0].attributes["saml_sso"] is False


def test_pending_invitation_is_an_invited_account_holding_the_role():
    recs = list(org_records(snapshot()))
    inv = next(a for a in by_type(recs, AccountRecord) if a.external_id == "invitation:5")
    assert inv.status == "invited" and inv.email == "new@corp.example" and inv.login is None
    grant = next(g for g in by_type(recs, GrantRecord) if g.principal_ref == "invitation:5")
    assert grant.entitlement_ref == "org:9919:member" and grant.attributes["pending_invitation"] is True
    assert inv.created_at == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_an_invitation_time_without_an_offset_is_utc_like_every_other_timestamp():
    # attest/connectors/timestamps.parse_timestamp: naive means UTC, so it compares with aware times
    snap = snapshot()
    snap.invitations[0]["created_at"] = "2026-11-20T10:00:00"
    inv = next(a for a in by_type(list(org_records(snap)), AccountRecord) if a.external_id == "invitation:5")
    assert inv.created_at == datetime(2026, 11, 20, 10, tzinfo=UTC) and inv.created_at.utcoffset() == timedelta(0)


def test_nested_teams_maintainers_and_team_repo_roles():
    recs = list(org_records(snapshot()))
    teams = {r.external_id: r for r in by_type(recs, ResourceRecord) if r.type == "github_team"}
    assert teams["team:11"].is_group and teams["team:11"].parent_ref == "org:9919"
    assert teams["team:12"].parent_ref == "team:11" and teams["team:11"].owner_refs == ("1",)
    keys = {g.key for g in by_type(recs, GrantRecord)}
    assert "team:11:member|r|team:12" in keys  # the child team is a member of its parent
    assert "team:11:maintainer|a|1" in keys and "team:11:member|a|1" in keys
    assert "repo:501:push|r|team:11" in keys  # role_name "write" is the push permission
    assert "repo:502:security-triager|r|team:12" in keys
    assert "org:9919:role:8|r|team:11" in keys and "org:9919:role:8132|a|3" in keys
    ents = {e.external_id: e for e in by_type(recs, EntitlementRecord)}
    assert ents["team:11:member"].is_membership and not ents["team:11:maintainer"].is_membership
    assert ents["org:9919:role:8"].privileged and not ents["org:9919:role:8132"].privileged


def test_repositories_direct_collaborators_custom_roles_and_archived():
    recs = list(org_records(snapshot()))
    repos = {r.external_id: r for r in by_type(recs, ResourceRecord) if r.type == "github_repo"}
    assert repos["repo:502"].attributes["archived"] is True and repos["repo:501"].attributes["private"] is True
    assert repos["repo:501"].owner_refs == ("2",)  # direct admins own the repository
    keys = {g.key for g in by_type(recs, GrantRecord)}
    assert "repo:501:admin|a|2" in keys
    assert "repo:501:security-triager|a|77" in keys  # the repository's own permission source names the role
    ents = {e.external_id: e for e in by_type(recs, EntitlementRecord)}
    assert ents["repo:501:admin"].privileged and not ents["repo:501:push"].privileged
    assert ents["repo:501:security-triager"].attributes["base_role"] == "triage"

    skipped = list(org_records(snapshot(), skip_archived=True))
    assert not any(getattr(r, "external_id", "") == "repo:502" for r in skipped)
    assert not any(isinstance(r, GrantRecord) and r.entitlement_ref.startswith("repo:502:") for r in skipped)


def test_an_account_in_two_orgs_is_emitted_once():
    seen: set[str] = set()
    first = list(org_records(snapshot(), seen_accounts=seen))
    second_snap = snapshot(login="other-org", org={**ORG, "login": "other-org", "id": 42})
    second = list(org_records(second_snap, seen_accounts=seen))
    assert len(by_type(first, AccountRecord)) == 6  # 4 members, 1 outside collaborator, 1 invitation
    assert [a.external_id for a in by_type(second, AccountRecord)] == ["invitation:5"]
    assert any(g.key == "org:42:admin|a|1" for g in by_type(second, GrantRecord))


def test_kind_from_entitlement_ref():
    assert _kind_from_ref("org:1:admin") == "org_admin"
    assert _kind_from_ref("org:1:role:8") == "org_role"
    assert _kind_from_ref("team:5:maintainer") == "team_maintainer"
    assert _kind_from_ref("repo:9:push") == "repo"
