"""Managed elsewhere, end to end in the reviews: the reviewer (the item's revoke note on the review page)
and the admin (the Remediation's target on the work list, set at close and when the runner routes it) read
the same sentence, from the one reader (attest/connectors/managed.py)."""

from __future__ import annotations

from sqlalchemy import select

from attest.connectors.managed import ManagedKind, emit
from attest.db import utcnow
from attest.entitlements.models import Grant, Resource
from attest.reviews import item_notes, remediation_targets
from attest.reviews.models import Remediation
from attest.reviews.remediation.planning import grant_ref, managed_target
from tests.reviews.factories import review_setup


def test_the_reviewer_and_the_admin_read_the_same_sentence(session):
    s = review_setup(session, people=3, per_person=1, risky={})
    team, assigned, plain = s.items
    session.get(Resource, team.resource_id).attributes = emit(
        ManagedKind.IDP_TEAM_SYNC, "GH-Engineering", "GitHub team synchronization")
    session.get(Grant, assigned.grant_id).attributes = emit(ManagedKind.PERMISSION_SET, "permission set Admin")
    for item in s.items:
        item.decision, item.outcome, item.completed = "revoke", "revoke", True
    session.flush()
    notes = item_notes.revoke_notes(session, s.items)
    assert set(notes) == {team.id, assigned.id}
    assert notes[team.id].startswith(f'team "{team.resource_name}" is synchronised with identity provider group '
                                     "GH-Engineering")
    assert remediation_targets.add_pending(session, s.campaign, utcnow()) == 3
    targets = {r.item_id: r.target for r in session.scalars(select(Remediation).where(Remediation.campaign_id == s.campaign.id))}
    assert targets == {team.id: notes[team.id], assigned.id: notes[assigned.id], plain.id: None}
    # what the runner says when it routes one (a remediation made before the target was stored)
    for item in (team, assigned):
        ref = grant_ref(session, session.get(Grant, item.grant_id), s.source)
        assert managed_target(ref, item.account_login, item.resource_name) == notes[item.id]
