"""Review controls an auditor relies on (issue 14): nobody reviews their own access, whatever path the
item took (launch, stage, escalation, reassignment, a later account link); bulk decisions never overwrite
or rubber-stamp; SQLite writes hold while the scheduler writes."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from attest.audit.log import verify_chain
from attest.db import begin_write, transaction
from attest.entitlements.models import Account
from attest.reviews import decisions, notify
from attest.reviews.decisions import DecisionError, NotFound
from attest.reviews.models import Decision, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_identity, make_user
from tests.reviews.factories import make_grant, make_item, review_setup
from tests.reviews.test_notify import T0, mail_settings, smtp, timed_setup  # noqa: F401 - fixtures

# --- eligibility ----------------------------------------------------------------------------------


def _ceo_item(session, setup, ceo):
    """An item about the CEO's own access routed to `setup.manager` (the CEO has no manager: the
    fallback reviewer, a report of the CEO, reviews it)."""
    account = Account(source_id=setup.source.id, external_id=f"ceo-{ceo.id}", login=ceo.email, email=ceo.email,
                      identity_id=ceo.id, kind="human")
    session.add(account)
    session.flush()
    grant, resource, ent = make_grant(session, setup.source, account, "Board-Portal")
    return make_item(session, setup.campaign, setup.manager, ceo, account, grant, resource, ent, setup.source)


def test_escalation_never_makes_a_person_co_reviewer_of_their_own_access(session, smtp, mail_settings):  # noqa: F811
    setup = timed_setup(session, people=2, per_person=1,
                        spec={"fallback_reviewer": "maria.manager@acme.example"})
    ceo = make_identity(session, "carla.ceo@acme.example", name="Carla CEO")
    ceo_user = make_user(session, "carla.ceo@acme.example", identity=ceo)
    setup.manager.manager_id = ceo.id
    own = _ceo_item(session, setup, ceo)
    session.flush()
    cid = setup.campaign.id
    notify.send_pending(session, mail_settings, T0)  # the launch notices come first

    notify.send_pending(session, mail_settings, T0 + timedelta(days=17))

    session.expire_all()
    rows = {i.id: i.co_reviewer_id for i in session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == cid))}
    assert rows.pop(own.id) is None  # not the CEO: it is her own access, and nobody above her can take it
    assert set(rows.values()) == {ceo.id}  # her reports' items are escalated to her
    [queued] = session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.escalation_admin_queue")).all()
    assert queued.after["items"] == [own.id] and queued.after["count"] == 1
    # she can neither see nor decide nor be handed it
    with pytest.raises(NotFound):
        decisions.decide(session, ceo_user, own.id, "approve")
    with pytest.raises(DecisionError, match="own access"):
        decisions.reassign(session, setup.manager_user, own.id, ceo.id, "she knows best")
    assert verify_chain(session) is None


def test_escalation_of_the_co_reviewers_own_items_goes_up_the_chain(session, smtp, mail_settings):  # noqa: F811
    setup = timed_setup(session, people=1, per_person=1)
    chair = make_identity(session, "bo.chair@acme.example", name="Bo Chair")
    ceo = make_identity(session, "carla.ceo@acme.example", name="Carla CEO", manager=chair)
    setup.manager.manager_id = ceo.id
    own = _ceo_item(session, setup, ceo)
    session.flush()
    notify.send_pending(session, mail_settings, T0)

    notify.send_pending(session, mail_settings, T0 + timedelta(days=17))

    session.expire_all()
    assert session.get(ReviewItem, own.id).co_reviewer_id == chair.id
    assert session.get(ReviewItem, setup.items[0].id).co_reviewer_id == ceo.id


def test_nobody_decides_their_own_item_even_if_routed_there_or_linked_later(session):
    setup = review_setup(session, people=2, per_person=1, risky={})
    # a row routed to its own person (as older data or a direct database edit could hold)
    item = setup.items[0]
    person_user = make_user(session, "self@acme.example", identity=setup.people[0])
    item.reviewer_id = setup.people[0].id
    session.flush()
    with pytest.raises(DecisionError, match="own access"):
        decisions.decide(session, person_user, item.id, "approve")
    assert decisions.bulk_decide(session, person_user, setup.campaign.id, [item.id], "approve").skipped == {
        "own_access": 1}
    # an orphaned account linked to the reviewer after launch is still the reviewer's own access
    other = setup.items[1]
    session.get(Account, other.account_id).identity_id = setup.manager.id
    session.flush()
    with pytest.raises(DecisionError, match="own access"):
        decisions.decide(session, setup.manager_user, other.id, "approve")
    result = decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [other.id], "approve")
    assert result.changed == 0 and result.skipped == {"own_access": 1}
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Decision)) == 0
    assert {i.decision for i in session.scalars(select(ReviewItem))} == {None}


def test_admin_reassignment_never_hands_a_person_their_own_access(session):
    setup = review_setup(session, people=2, per_person=1, risky={})
    admin = make_user(session, "root@acme.example", roles=["admin"])
    target = setup.people[0]
    moved = decisions.reassign_reviewer(session, admin, setup.campaign.id, setup.manager.id, target.id, "leave")
    assert moved == 1  # the other person's item; target's own stays with the manager
    session.expire_all()
    assert session.get(ReviewItem, setup.items[0].id).reviewer_id == setup.manager.id
    assert session.get(ReviewItem, setup.items[1].id).reviewer_id == target.id


def test_a_launch_whose_rule_leaves_nobody_puts_the_item_in_the_admin_queue(session):
    from attest.entitlements.models import Identity
    from attest.reviews import campaigns
    from attest.reviews.definitions import create_definition

    setup = review_setup(session, people=1, per_person=1, risky={})
    ceo = session.get(Identity, setup.manager.id)  # the manager has no manager: the top of the org
    own = _ceo_item(session, setup, ceo)
    own_grant = own.grant_id
    definition = create_definition(session, {"name": "Top", "fallback_reviewer": ceo.email,
                                             "scope": {"sources": [setup.source.name]}}, actor="admin")
    campaign = campaigns.launch_definition(session, definition.id, "admin")
    items = {i.grant_id: i for i in session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == campaign.id))}
    queued = items[own_grant]
    assert (queued.reviewer_id, queued.routed_by) == (None, "admin_queue")
    assert all(i.reviewer_id == ceo.id for g, i in items.items() if g != own_grant)


# --- no rubber stamp ------------------------------------------------------------------------------


@pytest.fixture
def risky(session):
    return review_setup(session, people=4, per_person=1, risky={0: ["privileged"], 1: ["terminated"],
                                                                 2: ["orphaned"], 3: []})


def test_bulk_approval_leaves_flagged_terminated_and_orphaned_access(session, risky):
    ids = [i.id for i in risky.items]
    result = decisions.bulk_decide(session, risky.manager_user, risky.campaign.id, ids, "approve")
    assert result.changed == 1
    assert result.skipped == {"flagged": 1, "needs_item_comment": 2}
    session.expire_all()
    assert [session.get(ReviewItem, i).decision for i in ids] == [None, None, None, "approve"]


def test_bulk_approving_flagged_access_needs_the_definition_and_a_comment(session):
    s = review_setup(session, people=3, per_person=1, risky={0: ["privileged"], 1: ["terminated"], 2: []},
                     spec={"rules": {"bulk_approve_flagged": True}})
    ids = [i.id for i in s.items]
    no_comment = decisions.bulk_decide(session, s.manager_user, s.campaign.id, ids, "approve")
    assert no_comment.changed == 1 and no_comment.skipped == {"flagged_needs_comment": 1, "needs_item_comment": 1}
    with_comment = decisions.bulk_decide(session, s.manager_user, s.campaign.id, ids, "approve",
                                         comment="break-glass admins, reviewed with the CISO")
    # the privileged item goes with the comment; the terminated person's access still needs its own
    assert with_comment.changed == 1 and with_comment.skipped == {"decided": 1, "needs_item_comment": 1}
    session.expire_all()
    assert session.get(ReviewItem, ids[0]).comment == "break-glass admins, reviewed with the CISO"
    assert session.get(ReviewItem, ids[1]).decision is None


def test_approving_a_leavers_or_an_orphaned_accounts_access_needs_a_comment(session, risky):
    for item in risky.items[1:3]:
        with pytest.raises(DecisionError, match="needs a comment"):
            decisions.decide(session, risky.manager_user, item.id, "approve")
        assert decisions.decide(session, risky.manager_user, item.id, "approve",
                                comment="contractor extended to June").decision == "approve"
    # a revoke of the same needs no special comment beyond the campaign's rule
    assert decisions.decide(session, risky.manager_user, risky.items[0].id, "approve").decision == "approve"


def test_the_escalated_to_reviewer_has_the_bulk_bar(app, client, session):
    s = review_setup(session, people=2, per_person=1, risky={})
    boss = make_identity(session, "bea.boss@acme.example", name="Bea Boss")
    boss_user = make_user(session, "bea.boss@acme.example", identity=boss)
    for item in s.items:
        item.co_reviewer_id = boss.id
    session.commit()
    app.config["WTF_CSRF_ENABLED"] = False
    login_as(app, client, boss_user)
    page = client.get(f"/reviews?campaign={s.campaign.id}&role=co_reviewer").get_data(as_text=True)
    assert "Approve all 2 not flagged" in page and 'name="role" value="co_reviewer"' in page
    response = client.post(f"/reviews/campaigns/{s.campaign.id}/bulk",
                           data={"scope": "unflagged", "bulk_decision": "approve", "role": "co_reviewer"})
    assert response.status_code == 302 and "role=co_reviewer" in response.headers["Location"]
    session.expire_all()
    assert {(i.decision, i.decided_by_identity_id) for i in session.scalars(select(ReviewItem))} == {("approve", boss.id)}


# --- no decision lost: single and bulk racing (real commits, threads) -----------------------------


def test_a_saved_single_decision_is_never_overwritten_by_a_bulk_approval_racing_it(fresh_db):
    from attest.app import create_app

    with fresh_db.factory() as s, s.begin():
        setup = review_setup(s, people=40, per_person=1, risky={})
        cid = setup.campaign.id
        ids = [i.id for i in setup.items]
        user = setup.manager_user
    app = create_app(fresh_db.settings)
    app.config["WTF_CSRF_ENABLED"] = False
    saved: dict[int, int] = {}  # item -> HTTP status of the single revoke
    bulk_statuses: list[int] = []
    barrier = threading.Barrier(2, timeout=30)

    def single() -> None:
        client = app.test_client()
        login_as(app, client, user)
        barrier.wait()
        for item_id in reversed(ids):  # meets the bulk approval (which goes in id order) half way
            r = client.post(f"/reviews/items/{item_id}/decide", data={"decision": "revoke", "comment": "left"},
                            headers={"HX-Request": "true"})
            saved[item_id] = r.status_code

    def bulk() -> None:
        client = app.test_client()
        login_as(app, client, user)
        barrier.wait()
        for _ in range(3):
            r = client.post(f"/reviews/campaigns/{cid}/bulk", data={"scope": "unflagged", "bulk_decision": "approve"})
            bulk_statuses.append(r.status_code)

    threads = [threading.Thread(target=single), threading.Thread(target=bulk)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(code == 302 for code in bulk_statuses), bulk_statuses
    assert set(saved.values()) <= {200}, saved  # every single decision was answered as saved
    with fresh_db.factory() as s:
        stored = dict(s.execute(select(ReviewItem.id, ReviewItem.decision).where(ReviewItem.campaign_id == cid)).all())
        # every revoke answered as saved is what is stored: a bulk approval never replaced one
        assert {i: stored[i] for i in saved} == {i: "revoke" for i in saved}
        # and every item's last Decision row is its stored decision
        last = {}
        for item_id, decision in s.execute(select(Decision.item_id, Decision.decision).order_by(Decision.id)):
            last[item_id] = decision
        assert last == stored
        assert verify_chain(s) is None


# --- SQLite under the scheduler --------------------------------------------------------------------


def test_decisions_and_definition_saves_hold_while_the_scheduler_writes(fresh_db):
    """The scheduler's minute-top burst (lease acquire and release, its jobs' writes) runs back to back
    in another thread while a reviewer decides and an admin saves a definition: no 500, no false 409."""
    from attest import jobs
    from attest.app import create_app

    with fresh_db.factory() as s, s.begin():
        setup = review_setup(s, people=30, per_person=1, risky={})
        admin = make_user(s, "root@acme.example", roles=["admin"])
        ids = [i.id for i in setup.items]
        reviewer, admin_user = setup.manager_user, admin
    app = create_app(fresh_db.settings)
    app.config["WTF_CSRF_ENABLED"] = False
    ctx = jobs.JobContext(factory=fresh_db.factory, settings=fresh_db.settings, holder="scheduler-test",
                          ttl=timedelta(minutes=5), heartbeat=60)
    stop = threading.Event()
    bursts = [0]

    def scheduler() -> None:
        while not stop.is_set():
            with fresh_db.factory() as s:
                specs = jobs.job_table(s)
            for spec in specs:
                jobs.run_job(ctx, spec, use_slot=False)
            with transaction(fresh_db.factory) as s:  # the job store and leases, as at each minute
                jobs.acquire(s, "probe:lease", timedelta(minutes=5), "scheduler-test")
            with transaction(fresh_db.factory) as s:
                jobs.release(s, "probe:lease", "succeeded", None, "scheduler-test")
            bursts[0] += 1

    thread = threading.Thread(target=scheduler, daemon=True)
    thread.start()
    try:
        client = app.test_client()
        login_as(app, client, reviewer)
        statuses = []
        for n, item_id in enumerate(ids):
            with fresh_db.factory() as s:
                version = s.get(ReviewItem, item_id).version
            r = client.post(f"/reviews/items/{item_id}/decide",
                            data={"decision": "approve" if n % 2 else "revoke", "comment": "checked",
                                  "version": str(version)}, headers={"HX-Request": "true"})
            statuses.append(r.status_code)
        admin_client = app.test_client()
        login_as(app, admin_client, admin_user)
        saves = []
        for n in range(15):
            r = admin_client.post("/campaigns/definitions/new", data={
                "mode": "yaml", "yaml": f"name: Probe {n}\nfallback_reviewer: {reviewer.email}\n"})
            saves.append(r.status_code)
    finally:
        stop.set()
        thread.join(60)
    assert bursts[0] > 0
    assert statuses == [200] * len(ids), statuses
    assert all(code in (302, 303) for code in saves), saves
    with fresh_db.factory() as s:
        assert s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.decision.is_not(None))) == len(ids)


def test_begin_write_takes_the_write_lock_first_on_sqlite(fresh_db):
    if not fresh_db.url.startswith("sqlite"):
        pytest.skip("SQLite's locking; PostgreSQL locks rows")
    with fresh_db.factory() as s, begin_write(s):
        # another connection cannot start writing while this transaction holds the write lock
        other = fresh_db.engine.raw_connection()
        try:
            cur = other.cursor()
            cur.execute("PRAGMA busy_timeout=0")
            with pytest.raises(Exception, match="locked"):
                cur.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_the_campaign_page_warns_before_an_escalation_hands_one_person_too_much(app, client, session):
    s = review_setup(session, people=3, per_person=2, risky={})
    ceo = make_identity(session, "carla.ceo@acme.example", name="Carla CEO")
    s.manager.manager_id = ceo.id
    admin = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    state = app.extensions["attest"]
    login_as(app, client, admin)
    state.settings = state.settings.replace(escalation_warn_items=5)
    page = client.get(f"/campaigns/{s.campaign.id}").get_data(as_text=True)
    assert "js-escalation-load" in page and "Carla CEO" in page and "6 undecided items of 1 late reviewer" in page
    state.settings = state.settings.replace(escalation_warn_items=6)  # not more than the limit: no warning
    assert "js-escalation-load" not in client.get(f"/campaigns/{s.campaign.id}").get_data(as_text=True)
