"""Remediation: guards, retries, verification by a later sync, reappearance, undo, the manual work list.

The source is synced for real (run_sync + ListConnector); its connector kind is pointed at `FakeRevoker`,
a small upstream kept in memory: revoke removes a grant from it, grant puts it back, and the next sync
replays what is left, so verification goes through the real sync engine.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from attest.connectors import registry
from attest.connectors.base import BaseConnector, GrantRecord, ResourceRecord, RevokeRefused, RevokeResult
from attest.db import transaction, utcnow
from attest.entitlements.models import Grant, Source
from attest.entitlements.sync import run_sync
from attest.reviews import remediation
from attest.reviews.models import Campaign, Remediation, ReviewItem
from attest.reviews.remediation.execution import BACKOFF, MAX_ATTEMPTS
from attest.trail.models import AuditEvent
from tests.entitlements.test_sync import org
from tests.factories import ListConnector, make_source


class FakeRevoker(BaseConnector):
    """An upstream in memory. Class-level state, because the engine builds a new connector per run."""

    kind: ClassVar[str] = "demo"
    upstream: ClassVar[list] = []
    refuse: ClassVar[dict[str, str]] = {}
    reroute: ClassVar[dict[str, str]] = {}
    fail: ClassVar[dict[str, int]] = {}
    keep: ClassVar[set[str]] = set()  # revoke "succeeds" but the upstream keeps (re-creates) the grant
    log: ClassVar[list[tuple[str, str, bool]]] = []

    @classmethod
    def reset(cls, records: list) -> None:
        cls.upstream = list(records)
        cls.refuse, cls.reroute, cls.fail, cls.keep, cls.log = {}, {}, {}, set(), []

    def validate(self) -> None:
        pass

    def sync(self) -> Iterator:
        yield from list(type(self).upstream)

    def _call(self, ref) -> str:
        return f"DELETE /fake/{ref.entitlement_ref}/members/{ref.principal_ref}"

    def revoke(self, grant, dry_run: bool = True) -> RevokeResult:
        cls = type(self)
        cls.log.append(("revoke", grant.key, dry_run))
        if grant.key in cls.reroute:
            exc = RevokeRefused(f"{grant.key} is managed by a rule")
            exc.target = cls.reroute[grant.key]
            raise exc
        if grant.key in cls.refuse:
            raise RevokeRefused(cls.refuse[grant.key])
        if dry_run:
            return RevokeResult((self._call(grant),), dry_run=True)
        self.calls += 1
        if cls.fail.get(grant.key, 0) > 0:
            cls.fail[grant.key] -= 1
            raise ConnectionError("upstream answered HTTP 503")
        present = any(isinstance(r, GrantRecord) and r.key == grant.key for r in cls.upstream)
        if grant.key not in cls.keep:
            cls.upstream = [r for r in cls.upstream if not (isinstance(r, GrantRecord) and r.key == grant.key)]
        return RevokeResult((self._call(grant),), dry_run=False, already_gone=not present)

    def grant(self, grant, dry_run: bool = True) -> RevokeResult:
        cls = type(self)
        cls.log.append(("grant", grant.key, dry_run))
        call = f"PUT /fake/{grant.entitlement_ref}/members/{grant.principal_ref}"
        if not dry_run:
            cls.upstream.append(GrantRecord(grant.entitlement_ref, grant.principal_ref, grant.principal_type))
        return RevokeResult((call,), dry_run=dry_run)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(registry.KINDS, "demo", "tests.reviews.test_remediation:FakeRevoker")
    FakeRevoker.reset(org(4))
    return FakeRevoker


def sync(factory, settings):
    result = run_sync(factory, settings, "idp", connector=ListConnector(list(FakeRevoker.upstream)))
    assert result.ok, result.error
    return result


@pytest.fixture
def world(fake, factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    sync(factory, settings)
    return session


def close_with_revokes(session, keys: list[str], mode: str = "automatic") -> Campaign:
    """A closed campaign whose items for these grant keys were revoked (what campaigns.close leaves)."""
    campaign = Campaign(name="Q4 review", status="closed", spec={"rules": {"remediation": mode}},
                        created_by="admin@acme.example", launched_at=utcnow(), closed_at=utcnow())
    session.add(campaign)
    session.flush()
    source = session.scalar(select(Source).where(Source.name == "idp"))
    for key in keys:
        grant = session.scalar(select(Grant).where(Grant.key == key, Grant.ended_at.is_(None)))
        ent = grant.entitlement
        if grant.principal_type == "account":
            account, via, via_id = grant.account, None, None
        else:  # a member of the group holding it (the item launch expands group grants into)
            from attest.entitlements.models import Account
            account = session.scalar(select(Account).where(Account.external_id == "u1"))
            via, via_id = grant.group.name, grant.group.id
        item = ReviewItem(
            campaign_id=campaign.id, grant_id=grant.id, account_id=account.id, identity_id=account.identity_id,
            source_id=source.id, resource_id=ent.resource_id, entitlement_id=ent.id, person_name=account.display_name,
            person_email=account.email, account_login=account.login, source_name=source.name, source_kind=source.kind,
            resource_name=ent.resource.name, resource_type=ent.resource.type, entitlement_name=ent.name,
            via=via, via_resource_id=via_id, decision="revoke", comment="not needed", completed=True,
            outcome="revoke", outcome_reason="decision",
        )
        session.add(item)
        session.flush()
        session.add(Remediation(campaign_id=campaign.id, item_id=item.id, grant_id=grant.id, source_id=source.id,
                                mode=mode, status="pending"))
    session.commit()
    return campaign


def rem_for(session, key: str) -> Remediation:
    session.expire_all()
    return session.scalar(select(Remediation).join(Grant, Grant.id == Remediation.grant_id).where(Grant.key == key))


def events(session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


KEY = "app:admin|a|u1"
KEY2 = "app:admin|a|u2"


def test_revoke_then_next_sync_verifies_it(world, factory, settings):
    campaign = close_with_revokes(world, [KEY])
    report = remediation.run_pending(factory, settings, actor="cli:alice")
    assert report.count("done") == 1, report.as_dict()
    rem = rem_for(world, KEY)
    assert rem.status == "done" and rem.executed_by == "cli:alice" and rem.attempts == 1
    assert rem.calls == ["DELETE /fake/app:admin/members/u1"]
    [ev] = events(world, "remediation.revoked")
    assert ev.campaign_id == campaign.id and ev.after["calls"] == rem.calls
    # the grant is still active in Attest until a sync sees it gone
    assert world.scalar(select(Grant.ended_at).where(Grant.key == KEY)) is None

    result = sync(factory, settings)
    rem = rem_for(world, KEY)
    assert rem.status == "verified" and rem.verified_run_id == result.run_id
    [ev] = events(world, "remediation.verified")
    assert ev.campaign_id == campaign.id and ev.after == {"status": "verified", "sync_run_id": result.run_id}
    # nothing due any more: a second run calls nothing
    FakeRevoker.log.clear()
    assert remediation.run_pending(factory, settings).planned == [] and FakeRevoker.log == []


def test_revoke_still_there_after_the_revoke_is_flagged_reappeared(world, factory, settings):
    close_with_revokes(world, [KEY])
    FakeRevoker.keep.add(KEY)  # the upstream re-creates it (a rule Attest did not know about)
    remediation.run_pending(factory, settings)
    result = sync(factory, settings)
    rem = rem_for(world, KEY)
    assert rem.status == "reappeared" and rem.reappeared_run_id == result.run_id
    assert events(world, "remediation.reappeared")[0].after["sync_run_id"] == result.run_id


def test_verified_revoke_that_comes_back_later_is_flagged(world, factory, settings):
    close_with_revokes(world, [KEY])
    remediation.run_pending(factory, settings)
    sync(factory, settings)
    assert rem_for(world, KEY).status == "verified"
    FakeRevoker.upstream.append(GrantRecord("app:admin", "u1"))  # someone granted it again upstream
    result = sync(factory, settings)
    rem = rem_for(world, KEY)
    assert rem.status == "reappeared" and rem.reappeared_run_id == result.run_id
    # a new grant row with the same key, the revoked one stays ended (history)
    assert world.scalar(select(func.count()).select_from(Grant).where(Grant.key == KEY)) == 2


def test_connector_refusal_is_shown_and_nothing_is_revoked(world, factory, settings):
    close_with_revokes(world, [KEY])
    FakeRevoker.refuse[KEY] = "person1 is the last super admin of the org; revoking would lock everyone out"
    report = remediation.run_pending(factory, settings)
    assert report.count("refused") == 1
    rem = rem_for(world, KEY)
    assert rem.status == "refused" and "last super admin" in rem.last_error
    assert any(r.key == KEY for r in FakeRevoker.upstream if isinstance(r, GrantRecord))
    assert "last super admin" in events(world, "remediation.refused")[0].after["error"]
    # refused is final for the runner: not retried
    FakeRevoker.log.clear()
    remediation.run_pending(factory, settings)
    assert FakeRevoker.log == []


def test_cap_stops_before_any_call_until_confirmed(world, factory, settings):
    close_with_revokes(world, [KEY, KEY2])
    capped = settings.replace(remediation_max_per_run=1)
    before = world.scalar(select(func.count()).select_from(AuditEvent))
    report = remediation.run_pending(factory, capped)
    assert report.stopped_for_cap and "ATTEST_REMEDIATION_MAX_PER_RUN=1" in report.message and "--yes" in report.message
    assert FakeRevoker.log == []
    assert {rem_for(world, k).status for k in (KEY, KEY2)} == {"pending"}
    assert world.scalar(select(func.count()).select_from(AuditEvent)) == before

    report = remediation.run_pending(factory, capped, confirm_over_cap=True)
    assert report.count("done") == 2 and {rem_for(world, k).status for k in (KEY, KEY2)} == {"done"}


def test_dry_run_lists_calls_and_changes_nothing(world, factory, settings):
    close_with_revokes(world, [KEY, KEY2])
    FakeRevoker.refuse[KEY2] = "last org owner"
    upstream = list(FakeRevoker.upstream)
    before = world.scalar(select(func.count()).select_from(AuditEvent))
    report = remediation.run_pending(factory, settings.replace(remediation_max_per_run=1), dry_run=True)
    assert not report.stopped_for_cap and "--yes" not in report.message or "needs --yes" in report.message
    by_id = {p.id: p for p in report.planned}
    p1, p2 = by_id[rem_for(world, KEY).id], by_id[rem_for(world, KEY2).id]
    assert p1.outcome == "would_revoke" and p1.calls == ["DELETE /fake/app:admin/members/u1"]
    assert p2.outcome == "would_refuse" and p2.detail == "last org owner"
    assert all(dry for _, _, dry in FakeRevoker.log)
    assert FakeRevoker.upstream == upstream
    for key in (KEY, KEY2):
        rem = rem_for(world, key)
        assert (rem.status, rem.attempts, rem.calls, rem.last_error) == ("pending", 0, [], None)
    assert world.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_failures_retry_with_back_off_then_end_failed(world, factory, settings):
    close_with_revokes(world, [KEY])
    FakeRevoker.fail[KEY] = 99
    t0 = utcnow()
    remediation.run_pending(factory, settings, now=t0)
    rem = rem_for(world, KEY)
    assert rem.status == "in_progress" and rem.attempts == 1 and "HTTP 503" in rem.last_error
    assert rem.next_attempt_at == t0 + BACKOFF[0]
    # not due yet: nothing called
    n = len(FakeRevoker.log)
    assert remediation.run_pending(factory, settings, now=t0 + timedelta(minutes=1)).planned == []
    assert len(FakeRevoker.log) == n
    t = t0
    for attempt in range(2, MAX_ATTEMPTS + 1):
        t = rem_for(world, KEY).next_attempt_at + timedelta(seconds=1)
        remediation.run_pending(factory, settings, now=t)
        assert rem_for(world, KEY).attempts == attempt
    rem = rem_for(world, KEY)
    assert rem.status == "failed" and "HTTP 503" in rem.last_error and rem.next_attempt_at is None
    assert len(events(world, "remediation.attempt_failed")) == MAX_ATTEMPTS - 1
    assert len(events(world, "remediation.failed")) == 1
    assert remediation.run_pending(factory, settings, now=t + timedelta(days=1)).planned == []


def test_retry_succeeds_after_a_transient_failure(world, factory, settings):
    close_with_revokes(world, [KEY])
    FakeRevoker.fail[KEY] = 1
    t0 = utcnow()
    remediation.run_pending(factory, settings, now=t0)
    assert rem_for(world, KEY).status == "in_progress"
    remediation.run_pending(factory, settings, now=t0 + timedelta(minutes=6))
    rem = rem_for(world, KEY)
    assert rem.status == "done" and rem.attempts == 2 and rem.last_error is None


def test_access_through_a_group_goes_to_a_manual_task_naming_the_group(world, factory, settings):
    # u1 gets Payroll "user" through Engineering -> Everyone; revoking the group's grant would hit everyone
    close_with_revokes(world, ["app:user|r|all"])
    report = remediation.run_pending(factory, settings)
    assert report.count("manual") == 1 and FakeRevoker.log == []
    rem = rem_for(world, "app:user|r|all")
    assert rem.mode == "manual" and rem.status == "in_progress"
    assert "Remove person1@acme.example from group 'Engineering'" in rem.target
    assert "Everyone" in rem.target
    assert events(world, "remediation.routed_manual")[0].after["target"] == rem.target


def test_rule_managed_membership_is_routed_to_the_rule(fake, factory, session, settings):
    # the Okta connector's convention: the group (and its member entitlement) names the ACTIVE rules filling it
    FakeRevoker.reset([r if not (isinstance(r, ResourceRecord) and r.external_id == "eng")
                       else ResourceRecord("eng", "group", "Engineering", is_group=True,
                                           attributes={"rule_managed": True, "rules": ["Engineers by department"]})
                       for r in org(4)])
    make_source(session, "idp", authoritative=True)
    session.commit()
    sync(factory, settings)
    close_with_revokes(session, ["eng:member|a|u1"])
    remediation.run_pending(factory, settings)
    rem = rem_for(session, "eng:member|a|u1")
    assert rem.mode == "manual" and "group rule Engineers by department" in rem.target
    assert FakeRevoker.log == []


def test_connector_refusal_naming_a_target_becomes_a_manual_task(world, factory, settings):
    close_with_revokes(world, [KEY])
    FakeRevoker.reroute[KEY] = "Okta group rule 'Admins by title' assigns this"
    remediation.run_pending(factory, settings)
    rem = rem_for(world, KEY)
    assert rem.mode == "manual" and rem.status == "in_progress" and rem.target.startswith("Okta group rule")


def test_undo_within_the_window_regrants_exactly_what_was_revoked(world, factory, settings):
    campaign = close_with_revokes(world, [KEY])
    remediation.run_pending(factory, settings)
    sync(factory, settings)
    rem = remediation.undo(factory, settings, rem_for(world, KEY).id, "admin@acme.example")
    assert rem.status == "undone"
    assert ("grant", KEY, False) in FakeRevoker.log
    [ev] = events(world, "remediation.undone")
    assert ev.campaign_id == campaign.id and ev.actor == "admin@acme.example"
    assert ev.after["calls"] == ["PUT /fake/app:admin/members/u1"]
    sync(factory, settings)  # the access is back; an undone remediation is not flagged as reappeared
    assert rem_for(world, KEY).status == "undone"
    assert world.scalar(select(Grant.id).where(Grant.key == KEY, Grant.ended_at.is_(None))) is not None


def test_undo_beyond_the_window_is_refused_and_changes_nothing(world, factory, settings):
    close_with_revokes(world, [KEY])
    remediation.run_pending(factory, settings)
    rem = rem_for(world, KEY)
    late = rem.executed_at + timedelta(days=settings.remediation_undo_days, minutes=1)
    with pytest.raises(remediation.UndoError, match="undo window .*ATTEST_REMEDIATION_UNDO_DAYS=7.* closed"):
        remediation.undo(factory, settings, rem.id, "admin@acme.example", now=late)
    assert rem_for(world, KEY).status == "done"
    assert not any(op == "grant" for op, _, _ in FakeRevoker.log)
    assert events(world, "remediation.undone") == []


def test_manual_work_list_export_and_mark_done_then_verified(world, factory, settings):
    campaign = close_with_revokes(world, [KEY, KEY2], mode="manual")
    # the runner leaves manual remediations alone
    assert remediation.run_pending(factory, settings).planned == []
    rows, _ = remediation.list_remediations(world, campaign.id, needs_human=True)
    assert {r.account for r in rows} == {"person1@acme.example", "person2@acme.example"}
    out = io.StringIO()
    assert remediation.write_manual_csv(world, out, campaign.id) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("remediation_id,campaign,status,person")
    assert any("person1@acme.example" in line and "admin" in line for line in lines[1:])

    rem_id = rem_for(world, KEY).id
    with pytest.raises(remediation.RemediationError, match="note is required"):
        remediation.mark_done(world, rem_id, "admin@acme.example", "  ")
    with transaction(factory) as s:
        remediation.mark_done(s, rem_id, "admin@acme.example", "Removed in the Okta admin console, ticket IAM-42")
    rem = rem_for(world, KEY)
    assert rem.status == "done" and rem.note.startswith("Removed in the Okta") and rem.executed_by == "admin@acme.example"
    [ev] = events(world, "remediation.marked_done")
    assert ev.campaign_id == campaign.id and "IAM-42" in ev.after["note"]
    with pytest.raises(remediation.RemediationError, match="only open manual tasks"):
        remediation.mark_done(world, rem_id, "admin@acme.example", "again")

    FakeRevoker.upstream = [r for r in FakeRevoker.upstream if not (isinstance(r, GrantRecord) and r.key == KEY)]
    result = sync(factory, settings)
    assert rem_for(world, KEY).status == "verified" and rem_for(world, KEY).verified_run_id == result.run_id
    assert rem_for(world, KEY2).status == "pending"  # not marked done: nothing to verify yet
    out = io.StringIO()
    assert remediation.write_manual_csv(world, out, campaign.id) == 1


def test_a_sync_that_started_before_the_revoke_proves_nothing(world, factory, settings):
    close_with_revokes(world, [KEY])
    remediation.run_pending(factory, settings)
    rem = rem_for(world, KEY)
    # pretend the revoke happened after the next run started (a run that read the source before the call)
    with transaction(factory) as s:
        s.get(Remediation, rem.id).executed_at = utcnow() + timedelta(minutes=5)
    FakeRevoker.keep.add(KEY)
    sync(factory, settings)
    assert rem_for(world, KEY).status == "done"


def test_counts_and_unknown_campaign(world, factory, settings):
    close_with_revokes(world, [KEY])
    with pytest.raises(remediation.RemediationError, match="no campaign with id 999999"):
        remediation.run_pending(factory, settings, campaign_id=999999)
    assert remediation.status_counts(world) == {"pending": 1}




def test_end_to_end_launch_decide_close_then_revoke_and_verify(world, factory, settings):
    """The real lifecycle: a definition launched, a manager revoking, close creating the remediation."""
    from attest.entitlements.models import Identity
    from attest.reviews import campaigns, decisions, definitions
    from tests.factories import make_user

    spec = {"name": "Payroll admins", "scope": {"sources": ["idp"], "entitlements": ["admin"]},
            "stages": [{"reviewer": "manager"}], "fallback_reviewer": "person1@acme.example",
            "rules": {"remediation": "automatic", "comment_required": "on_revoke"}}
    with transaction(factory) as s:
        definition = definitions.create_definition(s, spec, "admin@acme.example")
        campaign = campaigns.create_campaign(s, definition.id, "admin@acme.example")
        campaigns.launch(s, campaign.id, "admin@acme.example")
        cid = campaign.id
        manager = s.scalar(select(Identity).where(Identity.external_id == "p0"))
        user = make_user(s, "person0@acme.example", identity=manager)
    item = world.scalar(select(ReviewItem).join(Grant, Grant.id == ReviewItem.grant_id)
                        .where(ReviewItem.campaign_id == cid, Grant.key == KEY))
    assert item is not None and item.reviewer_id is not None
    with transaction(factory) as s:
        decisions.decide(s, s.get(type(user), user.id), item.id, "revoke", comment="moved to sales")
    with transaction(factory) as s:
        campaigns.close(s, cid, "admin@acme.example")
    rem = rem_for(world, KEY)
    assert rem.mode == "automatic" and rem.status == "pending" and rem.campaign_id == cid

    remediation.run_pending(factory, settings, campaign_id=cid)
    assert rem_for(world, KEY).status == "done"
    result = sync(factory, settings)
    rem = rem_for(world, KEY)
    assert rem.status == "verified" and rem.verified_run_id == result.run_id
    actions = [e.action for e in world.scalars(select(AuditEvent).where(AuditEvent.campaign_id == cid)
                                               .order_by(AuditEvent.seq))]
    assert "campaign.launch" in actions and "review.decide" in actions and "campaign.close" in actions
    assert actions[-2:] == ["remediation.revoked", "remediation.verified"]
