"""Routing rules (pure functions): manager, resource owner, named identity, orphaned accounts, fallback,
self-review, ineligible reviewers, multi-stage."""

from __future__ import annotations

import pytest

from attest.reviews.routing import Stage, route

# an org: 1 CEO; 2 reports to 1; 3 and 4 report to 2; 9 is the IAM team (fallback); 7 is terminated
MANAGERS = {1: None, 2: 1, 3: 2, 4: 2, 9: 1, 7: 2}
ELIGIBLE = {1, 2, 3, 4, 9}

MANAGER = Stage("manager")
OWNER = Stage("resource_owner")


def r(person, stage, owners=(), fallback=9, policy="reassign"):
    return route(person_id=person, manager_id=MANAGERS.get(person) if person else None, owner_ids=owners,
                 stage=stage, fallback_id=fallback, self_review=policy, manager_of=MANAGERS.get,
                 eligible=ELIGIBLE.__contains__)


def test_manager_reviews_their_reports():
    assert r(3, MANAGER) == (2, "manager")
    assert r(2, MANAGER) == (1, "manager")


def test_no_manager_goes_to_the_fallback_else_unroutable():
    assert r(1, MANAGER) == (9, "fallback")
    assert r(1, MANAGER, fallback=None) == (None, None)


def test_orphaned_account_goes_to_the_resource_owner_else_the_fallback():
    assert r(None, MANAGER, owners=[4, 3]) == (3, "orphan_owner")  # lowest id: stable
    assert r(None, MANAGER, owners=[]) == (9, "fallback")
    assert r(None, MANAGER, owners=[], fallback=None) == (None, None)


def test_resource_owner_stage_skips_the_person_among_several_owners():
    assert r(3, OWNER, owners=[4]) == (4, "resource_owner")
    assert r(3, OWNER, owners=[3, 4]) == (4, "resource_owner")
    assert r(3, OWNER, owners=[]) == (9, "fallback")


def test_nobody_reviews_their_own_access():
    # the only owner is the person: the person's manager takes it, else the fallback
    assert r(3, OWNER, owners=[3]) == (2, "self_review")
    assert r(1, OWNER, owners=[1]) == (9, "self_review")
    assert r(1, OWNER, owners=[1], fallback=None) == (None, "admin_queue")
    # straight to the fallback when the definition says so
    assert r(3, OWNER, owners=[3], policy="fallback") == (9, "self_review")
    # the fallback reviewer's own access is never routed to themselves: their manager takes it
    assert r(9, OWNER, owners=[]) == (1, "self_review")
    assert r(9, OWNER, owners=[9], policy="fallback") == (1, "self_review")
    assert r(9, MANAGER) == (1, "manager")
    # ... and with no manager above them (the CEO as fallback) nobody can: the admin queue
    assert r(1, OWNER, owners=[], fallback=1) == (None, "admin_queue")
    assert r(None, OWNER, owners=[], fallback=1) == (1, "fallback")


def test_named_identity_stage_and_its_own_access():
    named = Stage("identity", 4)
    assert r(3, named) == (4, "named")
    assert r(None, named) == (4, "named")  # orphaned accounts too: the stage names who reviews
    assert r(4, named) == (2, "self_review")


def test_terminated_or_gone_reviewers_are_skipped():
    # 7 is terminated: their reports' items go to the fallback; a terminated owner is passed over
    MANAGERS[8] = 7
    try:
        assert r(8, MANAGER) == (9, "fallback")
    finally:
        del MANAGERS[8]
    assert r(3, OWNER, owners=[7, 4]) == (4, "resource_owner")
    assert r(3, OWNER, owners=[7]) == (9, "fallback")
    assert r(3, Stage("identity", 7)) == (9, "fallback")


def test_multi_stage_routes_each_stage_by_its_own_rule():
    stages = [MANAGER, OWNER, Stage("identity", 9)]
    assert [r(3, st, owners=[4]) for st in stages] == [(2, "manager"), (4, "resource_owner"), (9, "named")]
    # the owner of the resource is the person at stage 2: their manager takes that stage
    assert [r(4, st, owners=[4]) for st in stages] == [(2, "manager"), (2, "self_review"), (9, "named")]


def test_bad_stage_and_policy_are_refused():
    with pytest.raises(ValueError, match="unknown stage reviewer"):
        Stage("boss")
    with pytest.raises(ValueError, match="needs the identity"):
        Stage("identity")
    with pytest.raises(ValueError, match="self_review"):
        r(3, MANAGER, policy="allow")


def test_self_review_goes_up_the_whole_manager_chain_then_the_fallback_then_the_admin_queue():
    # 3's manager 2 is terminated here: 2's manager (1) takes 3's own access, not the fallback
    eligible = {1, 3, 4, 9}
    chain = {3: 2, 2: 1, 1: None, 9: 1}
    go = dict(stage=OWNER, owner_ids=[3], manager_of=chain.get, eligible=eligible.__contains__)
    assert route(person_id=3, manager_id=2, fallback_id=9, **go) == (1, "self_review")
    # nobody eligible above the person: the fallback
    assert route(person_id=3, manager_id=2, fallback_id=9, stage=OWNER, owner_ids=[3], manager_of=chain.get,
                 eligible={3, 9}.__contains__) == (9, "self_review")
    # nobody at all: the admin queue, marked as such (never the person)
    assert route(person_id=3, manager_id=2, fallback_id=None, stage=OWNER, owner_ids=[3], manager_of=chain.get,
                 eligible={3}.__contains__) == (None, "admin_queue")
    # a loop in the directory does not hang routing
    loop = {3: 5, 5: 3}
    assert route(person_id=3, manager_id=5, fallback_id=None, stage=OWNER, owner_ids=[3], manager_of=loop.get,
                 eligible={3}.__contains__) == (None, "admin_queue")
