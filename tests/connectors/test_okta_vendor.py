"""Okta as Okta documents it (issue 17): each test serves what Okta's reference, its OpenAPI description or
its SDK says Okta does, through the fake over loopback HTTP, and asserts on what Attest stores or reports.

References (cited again where used):
- Management OpenAPI, github.com/okta/okta-management-openapi-spec dist/current/management-minimal.yaml:
  `Group._embedded.stats.hasAdminPrivlege`; `GET /api/v1/groups/{groupId}/owners` (listGroupOwners).
- okta-sdk-python okta/models/group_embedded_stats.py: `alias="hasAdminPrivlege"`;
  okta/request_executor.py: `calculate_backoff` returns `retry_limit_reset - date_time + 1` (Reset minus
  the response's Date header, plus one second); "both X-Rate-Limit-Limit and X-Rate-Limit-Remaining being
  0 indicates concurrent rate limit error".
- https://developer.okta.com/docs/reference/rl-global-mgmt/ (a limit per endpoint family) and
  https://developer.okta.com/docs/reference/rl-best-practices/ (concurrent rate limits in the headers).
- https://developer.okta.com/docs/reference/error-codes/ (E0000006 403, E0000007 404, E0000015 401).
No test waits for real: sleeps and clocks are injected.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.request

import pytest
from sqlalchemy import select

from attest.connectors.base import ConnectorError
from attest.connectors.okta import OktaConnector
from attest.connectors.okta.transforms import group_records
from attest.connectors.sandbox.okta_fake import create_app
from attest.connectors.sandbox.server import serve_in_thread
from attest.entitlements.models import Grant, Resource, ResourceOwner
from attest.entitlements.sync import run_sync
from tests.connectors.test_okta import active, connector, no_sleep, ref
from tests.factories import UpstreamTime, make_source

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture
def source(session):
    src = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    return src


@pytest.fixture
def served():
    """Serve fake Okta orgs built with any options; each gets its `url`."""
    running = []

    def start(**options):
        app = create_app(demo=True, **options)
        server = serve_in_thread(app)
        running.append(server)
        app.url = server.url
        return app

    yield start
    for server in running:
        server.stop()


def sync(factory, settings, conn):
    return run_sync(factory, settings, "okta", connector=conn, force=True)


def paths(okta, suffix: str) -> list[str]:
    return [p for _, p, _ in okta.log if p.endswith(suffix)]


# --- the group stats field, spelled as Okta spells it -----------------------------------------------------


def test_group_stats_spelling_hasAdminPrivlege_skips_groups_without_admin_roles(factory, session, settings, source,
                                                                                 served):
    okta = served(users=60, groups=50, apps=3, memberships=300)
    # the fake answers with Okta's spelling (OpenAPI Group._embedded.stats; the SDK's alias), nothing else
    with urllib.request.urlopen(urllib.request.Request(
            f"{okta.url}/api/v1/groups?limit=5&expand=stats", headers={"Authorization": "SSWS sandbox-token"})) as r:
        stats = json.loads(r.read())[1]["_embedded"]["stats"]
    assert "hasAdminPrivlege" in stats and "hasAdminPrivilege" not in stats

    result = sync(factory, settings, connector(okta))
    assert result.status == "succeeded", result.error
    admin = {g for g in okta.group_ids if okta.has_admin_privilege(g)}
    assert 1 <= len(admin) <= 2
    # the shortcut applies: only groups whose stats say they hold a role have their roles read (not all 50)
    role_reads = {p.split("/")[4] for p in paths(okta, "/roles") if p.startswith("/api/v1/groups/")}
    assert role_reads == admin
    groups = {r.external_id: r for r in session.scalars(select(Resource).where(Resource.type == "okta_group"))}
    assert len(groups) == 50
    assert all(r.attributes["has_admin_privilege"] is (r.external_id in admin) for r in groups.values())


def test_group_records_read_both_spellings():
    for key in ("hasAdminPrivlege", "hasAdminPrivilege"):
        recs = group_records({"id": "00g1", "type": "OKTA_GROUP", "profile": {"name": "x"},
                              "_embedded": {"stats": {"usersCount": 1, key: True}}}, {})
        assert recs[0].attributes["has_admin_privilege"] is True


# --- 429s read against Okta's own clock -----------------------------------------------------------------


def test_429_waits_reset_minus_the_date_header_plus_one_when_the_local_clock_runs_ahead(factory, session, settings,
                                                                                       source, served):
    ours = UpstreamTime()  # time passes only while the connector waits: the same answers however slow the machine
    okta = served(clock=lambda: ours() - 5)  # Okta's clock 5 s behind ours
    okta.faults.storm_at = 6  # from the 6th request every answer is 429 for 2 s of Okta's time
    okta.faults.storm_seconds = 2.0
    conn = connector(okta, sleep=ours.sleep, clock=ours)
    result = sync(factory, settings, conn)
    assert result.status == "succeeded", result.error
    assert sum(1 for _, _, s in okta.log if s == 429) >= 1
    # X-Rate-Limit-Reset (Okta's clock) - Date (Okta's clock) + 1, as okta-sdk-python's calculate_backoff:
    # between 2 and 4 s; reset - local clock would have been negative
    assert conn.http.waits and all(2.0 <= w <= 4.0 for w in conn.http.waits), conn.http.waits


# --- the System Log is optional ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404])
def test_an_unreadable_system_log_leaves_the_last_sso_out_with_a_note(factory, session, settings, source, served,
                                                                      status):
    okta = served()
    okta.faults.logs_status = status  # 403 E0000006 (no okta.logs.read) or 404 E0000007
    conn = connector(okta)
    result = sync(factory, settings, conn)
    assert result.status == "succeeded", result.error
    note = next(n for n in result.notes if "System Log" in n)
    assert "log_days=0" in note and okta.url.split("//")[1] in note
    if status == 403:
        assert "okta.logs.read" in note
    assert any(p == "/api/v1/logs" and s == status for _, p, s in okta.log)
    # `attest sources test` (validate): a clear message saying what to do, not a raw HttpError
    with pytest.raises(ConnectorError, match="log_days=0"):
        connector(okta).validate()


# --- rate-limit state per endpoint family ----------------------------------------------------------------


def test_a_spent_system_log_budget_does_not_slow_the_users_endpoint(factory, session, settings, source, served):
    okta = served(rate_limits={"/api/v1/logs": 1})  # Okta's /api/v1/logs bucket is its own (rl-global-mgmt)
    slept: list[float] = []
    conn = connector(okta, sleep=slept.append)
    conn.http.get("/api/v1/logs", params={"limit": 1, "since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"})
    assert conn.http.rates["/api/v1/logs"].remaining == 0
    conn.http.get("/api/v1/users", params={"limit": 1})  # another family: no pacing for the logs budget
    conn.http.get("/api/v1/groups", params={"limit": 1})
    assert slept == []
    # a whole sync whose one System Log read spends that bucket: nothing else is paced for it
    fresh = served(rate_limits={"/api/v1/logs": 1})
    result = sync(factory, settings, connector(fresh, sleep=slept.append))
    assert result.status == "succeeded", result.error
    assert any(p == "/api/v1/logs" for _, p, _ in fresh.log)
    assert not any(s >= 1 for s in slept), slept


# --- group owners ----------------------------------------------------------------------------------------


def test_group_owners_are_read_and_become_the_group_resources_owners(factory, session, settings, source, served):
    okta = served()
    result = sync(factory, settings, connector(okta))
    assert result.status == "succeeded", result.error
    owner_reads = paths(okta, "/owners")
    assert len(owner_reads) == len(okta.group_ids)  # one page each (limit 1000, Okta's default)
    want = {(g, u) for g, owners in okta.owners.items() for kind, u in owners if kind == "USER"}
    assert len(want) > 5
    got = set(session.execute(
        select(Resource.external_id, ResourceOwner.account_id).join(ResourceOwner, ResourceOwner.resource_id == Resource.id)
        .where(ResourceOwner.origin == "sync")).all())
    from attest.entitlements.models import Account

    logins = dict(session.execute(select(Account.id, Account.external_id)).all())
    assert {(g, logins[a]) for g, a in got} == want
    owned_by_group = next(g for g, owners in okta.owners.items() if any(k == "GROUP" for k, _ in owners))
    res = session.scalar(select(Resource).where(Resource.external_id == owned_by_group))
    assert res.attributes["owner_groups"] == [o for k, o in okta.owners[owned_by_group] if k == "GROUP"]


def test_an_org_without_group_owners_syncs_with_one_note(factory, session, settings, source, served):
    okta = served(group_owners=False)  # no Okta Identity Governance: 401 E0000015
    result = sync(factory, settings, connector(okta, concurrency=2))
    assert result.status == "succeeded", result.error
    assert sum(1 for n in result.notes if "group owners were not read" in n) == 1
    assert len(paths(okta, "/owners")) <= 4  # it stops asking
    assert active(session, Resource, type="okta_group") == len(okta.group_ids)


# --- the concurrent-request limit ------------------------------------------------------------------------


def test_a_concurrency_limit_lowers_the_requests_in_flight_for_the_rest_of_the_run(factory, session, settings,
                                                                                    source, served):
    okta = served(concurrency_limit=1, hold_seconds=0.005)  # one request in flight at a time
    conn = connector(okta, concurrency=4)
    result = sync(factory, settings, conn)
    assert result.status == "succeeded", result.error
    refused = sum(1 for _, _, s in okta.log if s == 429)
    assert conn.http.concurrency == 1
    assert 1 <= conn.http.concurrency_events <= 6 and refused <= 6, (refused, conn.http.concurrency_events)


# --- an object deleted while the sync ran -----------------------------------------------------------------


def test_a_group_deleted_while_the_sync_ran_is_treated_as_deleted(factory, session, settings, source, served):
    okta = served()
    assert sync(factory, settings, connector(okta)).status == "succeeded"
    gid = next(g for g in okta.group_ids[1:] if len(okta.members[g]) > 3 and not okta.has_admin_privilege(g))
    members = len(okta.members[gid])
    okta.faults.delete_groups = {gid}  # deleted right after the groups list was served
    result = sync(factory, settings, connector(okta))
    assert result.status == "succeeded", result.error
    assert any(gid in n and "deleted while the sync ran" in n for n in result.notes)
    assert any(p == f"/api/v1/groups/{gid}/users" and s == 404 for _, p, s in okta.log)
    session.expire_all()
    group = session.scalar(select(Resource).where(Resource.external_id == gid))
    assert group.ended_at is not None
    ended = session.scalars(select(Grant).where(Grant.key.like(f"{gid}:member|%"))).all()
    assert len(ended) == members and all(g.ended_at is not None for g in ended)


# --- errors that name the host and say what to do ---------------------------------------------------------


def test_an_unreachable_org_is_named_by_host(factory, session, settings, source):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    conn = OktaConnector({"domain": f"http://127.0.0.1:{port}"}, {"token": "t"}, sleep=no_sleep)
    with pytest.raises(ConnectorError, match=rf"Could not reach Okta at http://127.0.0.1:{port}.*domain setting"):
        conn.validate()
    result = sync(factory, settings, OktaConnector({"domain": f"http://127.0.0.1:{port}"}, {"token": "t"},
                                                   sleep=no_sleep))
    assert result.status == "failed"
    assert f"127.0.0.1:{port}" in result.error and ":///" not in result.error and "domain setting" in result.error


# --- revoke is done only once Okta shows it done ----------------------------------------------------------


def test_a_revoke_is_done_only_when_a_follow_up_read_confirms_it(served):
    okta = served()
    conn = connector(okta)
    rule_groups = {g for r in okta.rules for g in r["actions"]["assignUserToGroups"]["groupIds"]}
    gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "OKTA_GROUP" and len(okta.members[g]) > 1
               and not okta.has_admin_privilege(g) and g not in rule_groups)
    uid, other = sorted(okta.members[gid])[:2]
    attrs = {"type": "OKTA_GROUP", "rule_managed": False, "has_admin_privilege": False}
    okta.faults.ignore_deletes = True  # Okta (or a proxy) answers 204 but the membership stays
    kept = conn.revoke(ref(f"{gid}:member", uid, resource_attributes=attrs), dry_run=False)
    assert kept.outcome == "unconfirmed" and "still shows the access" in kept.detail
    assert uid in okta.members[gid]
    assert ("GET", f"/api/v1/users/{uid}/groups", 200) in okta.log
    aid = okta.app_ids[1]
    app_user = sorted(okta.app_users[aid])[0]
    app_kept = conn.revoke(ref(f"{aid}:assignment", app_user, name="assigned", rtype="okta_app",
                               grant_attributes={"scope": "USER"}), dry_run=False)
    assert app_kept.outcome == "unconfirmed" and f"GET /api/v1/apps/{aid}/users/{app_user}" in app_kept.detail
    okta.faults.ignore_deletes = False
    done = conn.revoke(ref(f"{gid}:member", other, resource_attributes=attrs), dry_run=False)
    assert done.outcome == "done" and f"GET /api/v1/users/{other}/groups" in done.detail
    assert other not in okta.members[gid]


def test_a_remediation_whose_revoke_okta_did_not_apply_is_unconfirmed_not_done(factory, session, settings, served):
    from attest.entitlements.sources import add_source
    from attest.reviews import remediation
    from attest.reviews.models import Remediation
    from tests.reviews.test_remediation_connectors import revoke_in_campaign

    okta = served()
    add_source(session, settings, "okta", "okta", {"domain": okta.url}, {"token": "sandbox-token"},
               authoritative=True)
    session.commit()
    assert run_sync(factory, settings, "okta").ok
    rule_groups = {g for r in okta.rules for g in r["actions"]["assignUserToGroups"]["groupIds"]}
    gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "OKTA_GROUP" and okta.members[g]
               and not okta.has_admin_privilege(g) and g not in rule_groups)
    uid = sorted(okta.members[gid])[0]
    rem_id = revoke_in_campaign(session, "okta", f"{gid}:member|a|{uid}")
    okta.faults.ignore_deletes = True
    report = remediation.run_pending(factory, settings)
    assert report.count("done") == 0 and report.count("unconfirmed") == 1, report.as_dict()
    session.expire_all()
    rem = session.get(Remediation, rem_id)
    assert rem.status == "unconfirmed" and "still shows the access" in (rem.note or "")
