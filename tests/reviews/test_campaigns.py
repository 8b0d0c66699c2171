"""Campaign lifecycle on a synced org: preview numbers, launch (frozen snapshot, routing, risks,
population reconciliation, sync runs), delta mode, multi-stage routing, close (no-response outcomes,
remediations with targets, summary), cancel, schedules, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from attest import dialects
from attest.connectors.base import (
    AccountRecord,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    ResourceRecord,
)
from attest.db import utcnow
from attest.entitlements import risk
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Source
from attest.entitlements.queries import effective_access
from attest.entitlements.sync import run_sync
from attest.reviews import campaigns, schedule
from attest.reviews.campaigns import CampaignError
from attest.reviews.definitions import create_definition
from attest.reviews.models import Campaign, CampaignExclusion, Remediation, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import ListConnector, make_source

OLD = datetime(2026, 1, 1, tzinfo=UTC)


def org(extra: list | None = None, drop: set[str] = frozenset(), alice_name: str = "Alice Adams") -> list:
    """ceo <- iam, mgr, owner; mgr <- alice (Finance), bob (terminated). Groups: eng nested in all (rule-
    managed eng); Payroll app assigned to 'all'; admin grants; a service account and an orphaned account."""
    people = [
        ("p0", "Cora CEO", None, "Executive", "active"),
        ("p1", "Ian IAM", "p0", "Security", "active"),
        ("p2", "Mia Manager", "p0", "Finance", "active"),
        ("p3", alice_name, "p2", "Finance", "active"),
        ("p4", "Bob Brown", "p2", "Engineering", "terminated"),
        ("p5", "Olga Owner", "p0", "Finance", "active"),
    ]
    emails = {"p0": "ceo", "p1": "iam", "p2": "mgr", "p3": "alice", "p4": "bob", "p5": "owner"}
    recs: list = []
    for ext, name, mgr, dept, status in people:
        email = f"{emails[ext]}@acme.example"
        recs.append(IdentityRecord(ext, name, email=email, login=email, manager_ref=mgr, department=dept, status=status))
        recs.append(AccountRecord(f"u{ext[1:]}", login=email, email=email, identity_ref=ext, mfa_enabled=ext != "p3",
                                  last_login_at=OLD if ext == "p4" else utcnow() - timedelta(days=1)))
    recs += [
        AccountRecord("svc0", login="svc-payroll-sync", kind="service"),
        AccountRecord("x0", login="contractor@partner.example", email="contractor@partner.example"),
        ResourceRecord("all", "group", "Everyone", is_group=True),
        EntitlementRecord("all:member", "all", "member", is_membership=True),
        ResourceRecord("eng", "group", "Engineering", is_group=True, owner_refs=("u2",),
                       attributes={"rule_managed": True, "rules": ["Engineering by department"]}),
        EntitlementRecord("eng:member", "eng", "member", is_membership=True),
        ResourceRecord("payroll", "app", "Payroll", owner_refs=("u5",)),
        EntitlementRecord("payroll:user", "payroll", "user"),
        EntitlementRecord("payroll:admin", "payroll", "admin", privileged=True),
        GrantRecord("all:member", "eng", "resource"),
        GrantRecord("payroll:user", "all", "resource"),
        GrantRecord("eng:member", "u3"),
        GrantRecord("eng:member", "u4"),
        GrantRecord("payroll:admin", "u3", attributes={"last_sso_at": "2026-01-02T10:00:00Z"}),
        GrantRecord("payroll:admin", "u5"),
        GrantRecord("payroll:admin", "svc0"),
        GrantRecord("payroll:user", "x0"),
        GrantRecord("payroll:user", "u2"),
    ]
    recs = [r for r in recs if not (isinstance(r, GrantRecord) and r.key in drop)]
    return recs + (extra or [])


def sync(factory, settings, records) -> None:
    result = run_sync(factory, settings, "idp", connector=ListConnector(records), force=True)
    assert result.status == "succeeded", result.error


@pytest.fixture
def synced(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    sync(factory, settings, org())
    return session


def ident(session, local: str) -> Identity:
    return session.scalar(select(Identity).where(Identity.email_normalized == f"{local}@acme.example"))


def define(session, **overrides):
    spec = {"name": overrides.pop("name", "Quarterly manager review"), "fallback_reviewer": "iam@acme.example"}
    spec.update(overrides)
    return create_definition(session, spec, "admin@acme.example")


def launch(session, definition, now=None) -> Campaign:
    campaign = campaigns.create_campaign(session, definition.id, "admin@acme.example")
    return campaigns.launch(session, campaign.id, "admin@acme.example", now=now)


def items_of(session, campaign) -> list[ReviewItem]:
    return session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == campaign.id).order_by(ReviewItem.id)).all()


def key(item: ReviewItem) -> tuple:
    return (item.account_login, item.resource_name, item.entitlement_name, item.via)


def test_preview_counts_items_reviewers_exclusions_and_risks(synced):
    session = synced
    definition = define(session)
    p = campaigns.preview(session, definition)
    # 7 direct grants + 4 inherited (alice and bob: Everyone via Engineering, Payroll user via Everyone)
    assert (p["in_scope"], p["items"], p["excluded"]) == (11, 10, 1)
    assert p["excluded_by_reason"] == {"service_account_excluded": 1}
    per = {r["email"]: r["items"] for r in p["per_reviewer"]}
    assert per == {"mgr@acme.example": 7, "ceo@acme.example": 2, "owner@acme.example": 1}
    assert p["unroutable"] == 0 and p["self_review_reassigned"] == 0
    assert p["routed_by"] == {"manager": 9, "orphan_owner": 1}
    assert p["risk_counts"]["privileged"] == 2 and p["risk_counts"]["orphaned"] == 1
    assert p["risk_counts"]["terminated"] == 3 and p["risk_counts"]["via_group"] == 4
    assert p["risk_counts"]["no_mfa"] == 4  # alice has no MFA: her 4 items
    # a preview writes nothing
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 0
    # owner stage: the owner's own admin grant goes to the owner's manager
    owner_review = define(session, name="Owners", stages=[{"reviewer": "resource_owner"}])
    p2 = campaigns.preview(session, owner_review)
    assert p2["self_review_reassigned"] == 1 and p2["unroutable"] == 0


def test_launch_snapshots_routes_and_reconciles_the_population(synced):
    session = synced
    campaign = launch(session, define(session))
    assert campaign.status == "active" and campaign.launched_at and campaign.due_at - campaign.launched_at == timedelta(days=14)
    items = items_of(session, campaign)
    assert len(items) == 10
    by_key = {key(i): i for i in items}
    mgr, ceo, owner = ident(session, "mgr"), ident(session, "ceo"), ident(session, "owner")

    admin = by_key[("alice@acme.example", "Payroll", "admin", None)]
    assert (admin.reviewer_id, admin.routed_by) == (mgr.id, "manager")
    assert admin.person_name == "Alice Adams" and admin.person_department == "Finance" and admin.privileged
    assert admin.risks == ["privileged", "dormant", "no_mfa"] and admin.risk_score == 55  # last SSO in January
    via = by_key[("bob@acme.example", "Payroll", "user", "Everyone → Engineering")]
    assert via.via_resource_id is not None and via.risks == ["dormant", "terminated", "via_group"]
    assert via.reviewer_id == mgr.id and via.person_status == "terminated"
    orphan = by_key[("contractor@partner.example", "Payroll", "user", None)]
    assert orphan.identity_id is None and (orphan.reviewer_id, orphan.routed_by) == (owner.id, "orphan_owner")
    assert orphan.risks == ["orphaned"]
    assert by_key[("owner@acme.example", "Payroll", "admin", None)].reviewer_id == ceo.id

    # population: in scope = items + exclusions, each exclusion with its reason
    exclusions = session.scalars(select(CampaignExclusion).where(CampaignExclusion.campaign_id == campaign.id)).all()
    assert [(e.reason, session.get(Account, e.account_id).login) for e in exclusions] == [
        ("service_account_excluded", "svc-payroll-sync")]
    assert campaign.population["in_scope"] == campaign.population["items"] + campaign.population["excluded"] == 11
    # ...and in scope is exactly every account's effective access (direct and through groups)
    accounts = session.scalars(select(Account.id)).all()
    assert len(effective_access(session, accounts)) == 11
    # the sync run whose data was used
    source = session.scalar(select(Source).where(Source.name == "idp"))
    [used] = campaign.sync_runs
    assert used["source"] == "idp" and used["run_id"] == source.last_success_run_id and used["status"] == "succeeded"
    assert used["finished_at"] and used["stats"]["added"]["grants"] == 9
    [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.launch")).all()
    assert event.campaign_id == campaign.id and event.after["population"]["items"] == 10


def test_groups_pass_on_their_access_through_any_depth_and_a_group_holding_nothing_is_one_direct_item(
        synced, factory, settings):
    """The membership recursion starts only from groups that hold something; the items are the same:
    every account's effective access, each path named, and a membership of a group that holds nothing
    (Lone) or of a group nested under others (Deep in Engineering in Everyone) a direct item."""
    session = synced
    sync(factory, settings, org(extra=[
        ResourceRecord("lone", "group", "Lone", is_group=True),
        EntitlementRecord("lone:member", "lone", "member", is_membership=True),
        GrantRecord("lone:member", "u1"),
        ResourceRecord("deep", "group", "Deep", is_group=True),
        EntitlementRecord("deep:member", "deep", "member", is_membership=True),
        GrantRecord("eng:member", "deep", "resource"),
        GrantRecord("deep:member", "u0"),
    ]))
    session.expire_all()
    items = items_of(session, launch(session, define(session)))
    by_login: dict[str, set] = {}
    for i in items:
        by_login.setdefault(i.account_login, set()).add(key(i)[1:])
    assert by_login["iam@acme.example"] == {("Lone", "member", None)}
    assert by_login["ceo@acme.example"] == {
        ("Deep", "member", None), ("Engineering", "member", "Deep"), ("Everyone", "member", "Engineering → Deep"),
        ("Payroll", "user", "Everyone → Engineering → Deep")}
    accounts = session.scalars(select(Account.id)).all()
    assert len(items) + 1 == len(effective_access(session, accounts)) == 16  # the service account excluded


def test_a_launch_inserts_its_items_in_the_inbox_index_order_where_the_engine_gains_from_it(synced):
    """SQLite: a launch into a table whose indexes stay in place (any campaign but the first big one)
    inserts the items by reviewer, then person (dialects.in_index_order), so the inbox index grows at the
    end of each reviewer's range; PostgreSQL: in the scope query's order. The same items either way."""
    session = synced
    items = items_of(session, launch(session, define(session)))
    assert len(items) == 10
    order = [(i.reviewer_id, i.person_name) for i in items]
    if dialects.name(session) == "sqlite":  # NULLs first, as SQLite sorts them
        assert order == sorted(order, key=lambda k: (k[0] is not None, k[0] or 0, k[1] is not None, k[1] or ""))


def test_risk_signals_in_sql_match_the_python_rules(synced):
    session = synced
    now = utcnow()
    campaign = launch(session, define(session), now=now)
    cutoffs = risk.Cutoffs.for_spec(now, campaign.spec["risk"], None)
    for item in items_of(session, campaign):
        account = session.get(Account, item.account_id)
        grant = session.get(Grant, item.grant_id)
        person = session.get(Identity, item.identity_id) if item.identity_id else None
        expected = risk.signals(
            cutoffs=cutoffs, privileged=item.privileged, identity_id=item.identity_id,
            person_status=person.status if person else None, person_kind=person.kind if person else None,
            account_kind=account.kind, account_last_login_at=account.last_login_at,
            account_created_at=account.created_upstream_at, account_mfa_enabled=account.mfa_enabled,
            account_attributes=account.attributes, grant_attributes=grant.attributes, granted_at=item.granted_at,
            via_group=item.via_resource_id is not None)
        assert item.risks == expected, key(item)
        assert item.risk_score == risk.score(expected)


def test_launch_is_a_frozen_snapshot(synced, factory, settings):
    session = synced
    campaign = launch(session, define(session))
    before = {key(i): (i.person_name, i.grant_id, i.risks) for i in items_of(session, campaign)}
    # upstream: alice is renamed and loses Payroll admin; a new grant appears
    sync(factory, settings, org(alice_name="Alice Smith", drop={"payroll:admin|a|u3"},
                                extra=[GrantRecord("payroll:admin", "u2")]))
    session.expire_all()
    assert ident(session, "alice").display_name == "Alice Smith"
    after = {key(i): (i.person_name, i.grant_id, i.risks) for i in items_of(session, campaign)}
    assert after == before
    assert session.get(Campaign, campaign.id).population["items"] == 10


def test_delta_mode_only_reviews_access_new_since_the_last_closed_campaign(synced, factory, settings):
    session = synced
    definition = define(session, scope={"delta": True})
    first = launch(session, definition)
    assert first.population["items"] == 10  # no earlier review: everything is new
    campaigns.close(session, first.id, "admin@acme.example")
    sync(factory, settings, org(extra=[GrantRecord("payroll:admin", "u2")]))
    p = campaigns.preview(session, definition)
    assert p["items"] == 1 and p["excluded_by_reason"] == {"not_delta": 10, "service_account_excluded": 1}
    second = launch(session, definition)
    [item] = items_of(session, second)
    assert key(item) == ("mgr@acme.example", "Payroll", "admin", None)
    assert "new_since_last_review" in item.risks
    assert second.population == {**second.population, "in_scope": 12, "items": 1, "excluded": 11}
    assert session.scalar(select(func.count()).select_from(CampaignExclusion)
                          .where(CampaignExclusion.campaign_id == second.id, CampaignExclusion.reason == "not_delta")) == 10


def test_scope_filters_and_identity_exclusions(synced):
    session = synced
    p = campaigns.preview(session, {**define(session).spec, "scope": {
        **define(session, name="f").spec["scope"], "resource_names": ["pay*"], "privileged_only": True,
        "include_orphaned": False, "identity": {"department": ["Finance"], "status": [], "kind": []}}})
    # privileged Payroll grants: alice, owner (Finance) and the service account (excluded)
    assert (p["in_scope"], p["items"], p["excluded_by_reason"]) == (3, 2, {"service_account_excluded": 1})
    q = campaigns.preview(session, {**define(session, name="g").spec, "scope": {
        **define(session, name="h").spec["scope"], "include_inherited": False, "include_orphaned": False,
        "identity": {"department": [], "status": ["terminated"], "kind": []}}})
    assert q["in_scope"] == 7 and q["items"] == 1  # bob's direct membership
    assert q["excluded_by_reason"] == {"identity_filter": 4, "orphan_excluded": 1, "service_account_excluded": 1}


def test_launch_refuses_unroutable_items_without_a_fallback_and_changes_nothing(synced):
    session = synced
    definition = create_definition(session, {"name": "No fallback"}, "admin@acme.example")
    # the CEO has no manager: once she holds something, her item has no reviewer
    ceo = ident(session, "ceo")
    ceo_account = session.scalar(select(Account).where(Account.identity_id == ceo.id))
    other = session.scalar(select(Grant).join(Entitlement).where(Entitlement.name == "admin"))
    session.add(Grant(source_id=other.source_id, key="payroll-extra|a|u0", entitlement_id=other.entitlement_id,
                      principal_type="account", principal_account_id=ceo_account.id))
    session.flush()
    assert campaigns.preview(session, definition)["unroutable"] == 1
    campaign = campaigns.create_campaign(session, definition.id, "admin@acme.example")
    with pytest.raises(CampaignError, match="1 item is unroutable .*no fallback_reviewer"):
        campaigns.launch(session, campaign.id, "admin@acme.example")
    session.refresh(campaign)
    assert campaign.status == "draft"
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 0
    assert session.scalar(select(func.count()).select_from(CampaignExclusion)) == 0
    if session.get_bind().dialect.name == "postgresql":  # the foreign-key trigger bypass did not outlive it
        assert session.execute(text("SHOW session_replication_role")).scalar() == "origin"
    with pytest.raises(CampaignError, match="only a draft"):
        campaigns.launch(session, launch(session, define(session)).id, "admin@acme.example")


def test_route_item_to_next_stage(synced):
    session = synced
    definition = define(session, stages=[{"reviewer": "manager"}, {"reviewer": "resource_owner"}])
    campaign = launch(session, definition)
    by_key = {key(i): i for i in items_of(session, campaign)}
    alice_admin = by_key[("alice@acme.example", "Payroll", "admin", None)]
    campaigns.route_item_to_stage(session, alice_admin, 1)
    assert (alice_admin.stage, alice_admin.reviewer_id, alice_admin.routed_by) == (1, ident(session, "owner").id,
                                                                                   "resource_owner")
    own = by_key[("owner@acme.example", "Payroll", "admin", None)]
    campaigns.route_item_to_stage(session, own, 1)  # the owner's own admin grant: their manager
    assert (own.reviewer_id, own.routed_by) == (ident(session, "ceo").id, "self_review")
    group = by_key[("alice@acme.example", "Engineering", "member", None)]
    campaigns.route_item_to_stage(session, group, 1)  # Engineering is owned by her manager
    assert (group.reviewer_id, group.routed_by) == (ident(session, "mgr").id, "resource_owner")
    with pytest.raises(CampaignError, match="no stage 3"):
        campaigns.route_item_to_stage(session, group, 2)
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.route")).all()
    assert len(events) == 3 and all(e.campaign_id == campaign.id for e in events)


def test_close_applies_outcomes_creates_remediations_with_targets_and_summarizes(synced):
    session = synced
    definition = define(session, timing={"no_response": "revoke", "duration_days": 14},
                        rules={"remediation": "automatic"})
    campaign = launch(session, definition)
    by_key = {key(i): i for i in items_of(session, campaign)}
    mgr = ident(session, "mgr")
    decided = {
        ("alice@acme.example", "Payroll", "admin", None): ("approve", True),
        ("bob@acme.example", "Engineering", "member", None): ("revoke", False),
        ("alice@acme.example", "Payroll", "user", "Everyone → Engineering"): ("abstain", False),
        ("bob@acme.example", "Payroll", "user", "Everyone → Engineering"): ("revoke", False),
    }
    at = utcnow()
    for k, (decision, bulk) in decided.items():
        item = by_key[k]
        item.decision, item.completed, item.decided_in_bulk = decision, True, bulk
        item.decided_by_identity_id, item.decided_at = mgr.id, at
        at += timedelta(seconds=30)
    session.flush()
    closed = campaigns.close(session, campaign.id, "admin@acme.example")
    assert closed.status == "closed" and closed.closed_by == "admin@acme.example"
    outcome = {key(i): (i.outcome, i.outcome_reason) for i in items_of(session, campaign)}
    assert outcome[("alice@acme.example", "Payroll", "admin", None)] == ("keep", "decision")
    assert outcome[("alice@acme.example", "Payroll", "user", "Everyone → Engineering")] == ("flag", "decision")
    assert outcome[("bob@acme.example", "Engineering", "member", None)] == ("revoke", "decision")
    assert outcome[("mgr@acme.example", "Payroll", "user", None)] == ("revoke", "no_response")
    assert sum(1 for o in outcome.values() if o == ("revoke", "no_response")) == 6

    remediations = session.scalars(select(Remediation).where(Remediation.campaign_id == campaign.id)).all()
    assert len(remediations) == 8 and all(r.status == "pending" and r.mode == "automatic" for r in remediations)
    by_item = {key(session.get(ReviewItem, r.item_id)): r for r in remediations}
    assert "Engineering by department" in by_item[("bob@acme.example", "Engineering", "member", None)].target
    via = by_item[("bob@acme.example", "Payroll", "user", "Everyone → Engineering")]
    assert via.target.startswith('group "Everyone"') and "bob@acme.example" in via.target
    assert by_item[("mgr@acme.example", "Payroll", "user", None)].target is None

    s = closed.summary
    assert (s["items"], s["decided"], s["completion"]) == (10, 4, 40.0)
    assert s["decisions"] == {"approve": 1, "revoke": 2, "abstain": 1, "none": 6}
    assert s["outcomes"] == {"keep": 1, "revoke": 8, "flag": 1} and s["remediations"] == 8
    [m] = [r for r in s["reviewers"] if r["email"] == "mgr@acme.example"]
    assert (m["items"], m["decided"], m["approved"], m["revoked"], m["approved_in_bulk_share"]) == (7, 4, 1, 2, 1.0)
    actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.campaign_id == campaign.id)
                                                 .order_by(AuditEvent.seq))]
    assert actions == ["campaign.create", "campaign.launch", "campaign.close"]
    with pytest.raises(CampaignError, match="only an active campaign"):
        campaigns.close(session, campaign.id, "admin@acme.example")


def test_cancel_needs_a_reason_and_is_audited(synced):
    session = synced
    campaign = campaigns.create_campaign(session, define(session).id, "admin@acme.example")
    with pytest.raises(CampaignError, match="say why"):
        campaigns.cancel(session, campaign.id, "admin@acme.example", "  ")
    campaigns.cancel(session, campaign.id, "admin@acme.example", "wrong scope")
    assert campaign.status == "cancelled"
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.cancel"))
    assert event.after["reason"] == "wrong scope" and event.campaign_id == campaign.id
    with pytest.raises(CampaignError, match="is cancelled"):
        campaigns.launch(session, campaign.id, "admin@acme.example")


def test_due_to_close_and_due_to_launch(synced):
    session = synced
    definition = define(session, schedule="0 9 1 * *")  # the first of each month, 09:00 UTC
    definition.created_at = datetime(2026, 3, 15, tzinfo=UTC)
    assert schedule.due_to_launch(session, datetime(2026, 3, 31, 23, 0, tzinfo=UTC)) == []
    assert schedule.due_to_launch(session, datetime(2026, 4, 1, 9, 0, tzinfo=UTC)) == [definition.id]
    campaign = launch(session, definition, now=datetime(2026, 4, 1, 9, 0, 5, tzinfo=UTC))
    assert schedule.due_to_launch(session, datetime(2026, 4, 20, tzinfo=UTC)) == []
    assert schedule.due_to_launch(session, datetime(2026, 5, 1, 9, 1, tzinfo=UTC)) == [definition.id]
    assert schedule.due_to_close(session, datetime(2026, 4, 14, tzinfo=UTC)) == []
    assert schedule.due_to_close(session, datetime(2026, 4, 15, 9, 1, tzinfo=UTC)) == [campaign.id]
    definition.enabled = False
    assert schedule.due_to_launch(session, datetime(2026, 5, 1, 9, 1, tzinfo=UTC)) == []


def test_cli_create_preview_launch_close(synced, app, tmp_path):
    runner = app.test_cli_runner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Quarterly\nscope:\n  resource_typs: [app]\n")
    result = runner.invoke(args=["campaigns", "create", "--file", str(bad)])
    assert result.exit_code == 1
    assert "scope.resource_typs (line 3): unknown key; did you mean resource_types?" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("name: Quarterly\nfallback_reviewer: iam@acme.example\ntiming:\n  no_response: flag\n")
    result = runner.invoke(args=["campaigns", "create", "--file", str(good), "--json"])
    assert result.exit_code == 0, result.output
    def_id = json.loads(result.output)["id"]
    preview = json.loads(runner.invoke(args=["campaigns", "preview", str(def_id), "--json"]).output)
    assert preview["items"] == 10
    text_preview = runner.invoke(args=["campaigns", "preview", str(def_id)]).output
    assert "items" in text_preview and "Mia Manager" in text_preview
    assert runner.invoke(args=["campaigns", "preview", "999"]).exit_code == 1
    launched = runner.invoke(args=["campaigns", "launch", str(def_id), "--json"])
    assert launched.exit_code == 0, launched.output
    cid = json.loads(launched.output)["id"]
    assert json.loads(launched.output)["population"]["items"] == 10
    listing = json.loads(runner.invoke(args=["campaigns", "list", "--json"]).output)
    assert listing["campaigns"][0]["status"] == "active" and listing["campaigns"][0]["items"] == 10
    closed = runner.invoke(args=["campaigns", "close", str(cid), "--json"])
    assert closed.exit_code == 0, closed.output
    assert json.loads(closed.output)["summary"]["outcomes"]["flag"] == 10
    again = runner.invoke(args=["campaigns", "close", str(cid)])
    assert again.exit_code == 1 and "only an active campaign can be closed" in again.output
    assert runner.invoke(args=["campaigns", "cancel", str(cid), "--reason", "x"]).exit_code == 1
    second = json.loads(runner.invoke(args=["campaigns", "launch", str(def_id), "--json"]).output)["id"]
    cancelled = runner.invoke(args=["campaigns", "cancel", str(second), "--reason", "launched twice"])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.startswith(f"cancelled campaign {second} 'Quarterly — ")
    assert cancelled.output.endswith(" (2)': its decisions have no outcome and nothing is revoked\n")
    listing = json.loads(runner.invoke(args=["campaigns", "list", "--json"]).output)
    assert {c["id"]: c["status"] for c in listing["campaigns"]}[second] == "cancelled"


def test_the_demo_stores_the_example_definitions_and_launches_the_quarterly_review_once(synced, factory):
    from attest.demo import demo_campaigns
    from attest.reviews.models import CampaignDefinition
    from tests.factories import make_identity

    session = synced
    make_identity(session, "grace.hopper1@acme.example", "Grace Hopper", manager=ident(session, "ceo"))
    session.commit()
    said: list[str] = []
    demo_campaigns(factory, echo=said.append)
    assert session.scalar(select(func.count()).select_from(CampaignDefinition)) == 3
    launched = session.scalars(select(Campaign)).all()
    assert [(c.definition.name, c.status) for c in launched] == [("Quarterly manager review", "active")], said
    # a manager who signs in has items: alice's access is mgr's to review
    mgr_items = session.scalar(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.campaign_id == launched[0].id, ReviewItem.reviewer_id == ident(session, "mgr").id))
    assert mgr_items > 0
    demo_campaigns(factory, echo=said.append)  # the next `make run`: nothing twice
    assert session.scalar(select(func.count()).select_from(CampaignDefinition)) == 3
    assert session.scalar(select(func.count()).select_from(Campaign)) == 1
