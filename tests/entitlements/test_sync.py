"""The sync engine: staging, set-based apply, history, guards, partial runs, correlation."""

from __future__ import annotations

import dataclasses
import tracemalloc

import pytest
from sqlalchemy import func, insert, inspect, select

from attest.connectors.base import (
    AccountRecord,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    PartFailed,
    ResourceRecord,
)
from attest.db import utcnow
from attest.entitlements import correlation
from attest.entitlements.correlation import link_manually
from attest.entitlements.models import AccessChange, Account, Grant, Identity, Resource, SyncRun
from attest.entitlements.queries import effective_access
from attest.entitlements.sync import run_sync
from tests.factories import ListConnector, make_source


def org(n_people: int = 10, drop: set[str] = frozenset(), extra: list | None = None) -> list:
    """People p0..pN with accounts u0..uN, two groups (eng nested in all), an app assigned to 'eng'."""
    recs: list = []
    for i in range(n_people):
        recs.append(IdentityRecord(f"p{i}", f"Person {i}", email=f"person{i}@acme.example",
                                   login=f"person{i}@acme.example", manager_ref=None if i == 0 else "p0",
                                   department="Engineering"))
        recs.append(AccountRecord(f"u{i}", login=f"person{i}@acme.example", email=f"person{i}@acme.example",
                                  identity_ref=f"p{i}"))
    recs += [
        ResourceRecord("all", "group", "Everyone", is_group=True),
        EntitlementRecord("all:member", "all", "member", is_membership=True),
        ResourceRecord("eng", "group", "Engineering", is_group=True),
        EntitlementRecord("eng:member", "eng", "member", is_membership=True),
        ResourceRecord("app", "app", "Payroll"),
        EntitlementRecord("app:user", "app", "user"),
        EntitlementRecord("app:admin", "app", "admin", privileged=True),
        GrantRecord("all:member", "eng", "resource"),  # eng is nested in all
        GrantRecord("app:user", "all", "resource"),
    ]
    for i in range(n_people):
        recs.append(GrantRecord("eng:member", f"u{i}"))
        recs.append(GrantRecord("app:admin", f"u{i}"))
    recs = [r for r in recs if not (isinstance(r, GrantRecord) and r.key in drop)]
    return recs + (extra or [])


def active_grants(session) -> int:
    return session.scalar(select(func.count()).select_from(Grant).where(Grant.ended_at.is_(None)))


def test_first_sync_then_unchanged_resync_writes_nothing(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    r1 = run_sync(factory, settings, "idp", connector=ListConnector(org()))
    assert r1.status == "succeeded", r1.error
    assert r1.stats["added"]["grants"] == 22
    assert active_grants(session) == 22
    assert session.scalar(select(func.count()).select_from(Identity)) == 10
    # every account is linked to its person; managers resolved
    assert session.scalar(select(func.count()).select_from(Account).where(Account.identity_id.is_(None))) == 0
    p3 = session.scalar(select(Identity).where(Identity.external_id == "p3"))
    assert p3.manager.external_id == "p0"

    r2 = run_sync(factory, settings, "idp", connector=ListConnector(org()))
    assert r2.status == "succeeded"
    assert all(v == 0 for v in r2.stats["added"].values())
    assert all(v == 0 for v in r2.stats["updated"].values())
    assert all(v == 0 for v in r2.stats["ended"].values())
    assert session.scalar(select(func.count()).select_from(AccessChange)) == 0  # first run is the baseline


def test_a_large_first_sync_loads_in_bulk_and_keeps_every_rule(factory, session, settings, monkeypatch):
    """A first sync large enough to load in bulk (here: any) drops access_grant's indexes (on PostgreSQL
    the active-key unique index too) and builds them after the insert. Duplicated grant records still
    count once; managers are set as people are inserted (by external id, and by e-mail after; never
    oneself); ids handed out up front do not collide with later ones; the next sync changes nothing."""
    monkeypatch.setattr("attest.db.BULK_LOAD_ROWS", 1)
    make_source(session, "idp", authoritative=True)
    session.commit()
    extra = [
        IdentityRecord("p10", "Person 10", email="person10@acme.example", manager_ref="PERSON3@acme.example"),
        IdentityRecord("p11", "Person 11", email="person11@acme.example", manager_ref="p11"),
        GrantRecord("eng:member", "u1"), GrantRecord("app:admin", "u2"),  # duplicates of the org's
    ]
    r = run_sync(factory, settings, "idp", connector=ListConnector(org(extra=extra)))
    assert r.status == "succeeded", r.error
    assert r.stats["added"]["grants"] == 22 and active_grants(session) == 22
    session.expire_all()

    def managers() -> dict:
        return {i.external_id: i.manager.external_id if i.manager else None for i in session.scalars(select(Identity))}

    assert managers() == {"p0": None, **{f"p{i}": "p0" for i in range(1, 10)}, "p10": "p3", "p11": None}
    indexes = {ix["name"] for ix in inspect(session.connection()).get_indexes("access_grant")}
    assert {ix.name for ix in Grant.__table__.indexes} <= indexes

    again = run_sync(factory, settings, "idp", connector=ListConnector(org(extra=extra)))
    assert not any(again.stats["added"].values()) and not any(again.stats["updated"].values())
    newcomer = IdentityRecord("p12", "Person 12", email="person12@acme.example", manager_ref="p10")
    r3 = run_sync(factory, settings, "idp", connector=ListConnector(org(extra=[*extra, newcomer])))
    assert r3.stats["added"]["identities"] == 1
    session.expire_all()
    assert managers()["p12"] == "p10"
    assert session.scalar(select(func.count(func.distinct(Identity.id)))) == 13


def test_resync_ends_and_adds_with_history(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org()))
    gone = GrantRecord("app:admin", "u1").key
    new = GrantRecord("app:user", "u1")
    r = run_sync(factory, settings, "idp", connector=ListConnector(org(drop={gone}, extra=[new])))
    assert r.stats["ended"]["grants"] == 1 and r.stats["added"]["grants"] == 1
    ended = session.scalar(select(Grant).where(Grant.key == gone))
    assert ended.ended_at is not None and ended.ended_reason == "not_seen" and ended.ended_run_id == r.run_id
    changes = session.execute(select(AccessChange.change, AccessChange.grant_id)).all()
    assert sorted(c for c, _ in changes) == ["added", "ended"]
    # the grant comes back: a new row, the old one stays as history
    r3 = run_sync(factory, settings, "idp", connector=ListConnector(org(extra=[new])))
    assert r3.stats["added"]["grants"] == 1
    rows = session.scalars(select(Grant).where(Grant.key == gone).order_by(Grant.id)).all()
    assert len(rows) == 2 and rows[0].ended_at is not None and rows[1].ended_at is None


def test_upstream_failing_on_last_page_changes_nothing(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org()))
    before = session.execute(select(Grant.id, Grant.ended_at)).all()
    records = org(drop={GrantRecord("app:admin", f"u{i}").key for i in range(5)})
    failing = ListConnector(records, fail_after=len(records) - 1)
    r = run_sync(factory, settings, "idp", connector=failing)
    assert r.status == "failed"
    assert "HTTP 500" in r.error
    session.expire_all()
    assert session.execute(select(Grant.id, Grant.ended_at)).all() == before
    run = session.get(SyncRun, r.run_id)
    assert run.status == "failed" and run.finished_at is not None


def test_removal_guard_trips_and_force_passes(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org()))
    half = {GrantRecord("app:admin", f"u{i}").key for i in range(10)}
    r = run_sync(factory, settings, "idp", connector=ListConnector(org(drop=half)))
    assert r.status == "aborted"
    assert "would end 10 of 22 active grants" in r.error and "--force" in r.error
    assert active_grants(session) == 22
    r2 = run_sync(factory, settings, "idp", connector=ListConnector(org(drop=half)), force=True)
    assert r2.status == "succeeded"
    assert active_grants(session) == 12


def test_partial_run_leaves_unread_part_untouched(factory, session, settings):
    make_source(session, "cloud")
    session.commit()
    recs = [
        ResourceRecord("acct-a", "aws_account", "A", part="a"),
        EntitlementRecord("acct-a:admin", "acct-a", "admin", part="a"),
        AccountRecord("ua", login="alice", part="a"),
        GrantRecord("acct-a:admin", "ua", part="a"),
        ResourceRecord("acct-b", "aws_account", "B", part="b"),
        EntitlementRecord("acct-b:admin", "acct-b", "admin", part="b"),
        AccountRecord("ub", login="bob", part="b"),
        GrantRecord("acct-b:admin", "ub", part="b"),
    ]
    run_sync(factory, settings, "cloud", connector=ListConnector(recs))
    only_a = [r for r in recs if r.part == "a"] + [PartFailed("b", "AccessDenied: cannot assume role")]
    r = run_sync(factory, settings, "cloud", connector=ListConnector(only_a))
    assert r.status == "partial"
    assert r.failed_parts == [{"part": "b", "reason": "AccessDenied: cannot assume role"}]
    assert active_grants(session) == 2
    assert session.scalar(select(Account).where(Account.external_id == "ub")).ended_at is None


def test_manual_link_survives_resync(factory, session, settings):
    idp = make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(2)))
    make_source(session, "gh")
    session.commit()
    gh = [AccountRecord("octo", login="octocat"), ResourceRecord("repo", "repo", "repo"),
          EntitlementRecord("repo:push", "repo", "push"), GrantRecord("repo:push", "octo")]
    run_sync(factory, settings, "gh", connector=ListConnector(gh))
    account = session.scalar(select(Account).where(Account.external_id == "octo"))
    assert account.identity_id is None  # orphaned: no e-mail, unknown login
    person = session.scalar(select(Identity).where(Identity.external_id == "p1", Identity.source_id == idp.id))
    with session.begin_nested():
        link_manually(session, account.id, person.id, "admin@acme.example")
    session.commit()
    run_sync(factory, settings, "gh", connector=ListConnector(gh))
    run_sync(factory, settings, "idp", connector=ListConnector(org(2)))
    session.expire_all()
    account = session.get(Account, account.id)
    assert account.identity_id == person.id and account.link_method == "manual"


def test_correlation_order_and_alias_domains(factory, session, databases, tmp_path):
    from tests.conftest import make_settings

    settings = make_settings(databases.url, tmp_path, alias_domains=(("acme.io", "acme.example"),))
    make_source(session, "idp", authoritative=True)
    make_source(session, "other")
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(5)))
    recs = [
        AccountRecord("a-saml", login="x1", saml_nameid="PERSON1@acme.example"),
        AccountRecord("a-mail", login="x2", email="Person2@ACME.io"),
        AccountRecord("a-tag", login="x3", tag_email="person3@acme.example"),
        AccountRecord("a-user", login="person4"),
        AccountRecord("a-none", login="stranger", email="stranger@else.example"),
    ]
    run_sync(factory, settings, "other", connector=ListConnector(recs))
    got = {a.external_id: (a.identity.external_id if a.identity else None, a.link_method)
           for a in session.scalars(select(Account).where(Account.external_id.like("a-%")))}
    assert got == {
        "a-saml": ("p1", "saml_nameid"), "a-mail": ("p2", "email"), "a-tag": ("p3", "tag"),
        "a-user": ("p4", "username"), "a-none": (None, None),
    }


def test_effective_access_through_nested_groups_keeps_path(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    cyclic = GrantRecord("eng:member", "all", "resource")  # all <-> eng: a cycle must not loop
    run_sync(factory, settings, "idp", connector=ListConnector(org(3, extra=[cyclic])))
    account = session.scalar(select(Account).where(Account.external_id == "u1"))
    held = effective_access(session, [account.id])
    how = sorted((h.grant.entitlement.external_id, h.how) for h in held)
    assert ("app:admin", "direct") in how
    assert ("eng:member", "direct") in how
    assert ("all:member", "via Engineering") in how
    assert ("app:user", "via Everyone → Engineering") in how
    assert len(held) < 20  # the cycle did not explode


def test_history_answers_who_had_what_on_a_date(factory, session, settings):
    from datetime import timedelta

    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(2)))
    account = session.scalar(select(Account).where(Account.external_id == "u1"))
    first = session.scalar(select(Grant.first_seen_at).where(Grant.key == GrantRecord("app:admin", "u1").key))
    run_sync(factory, settings, "idp", connector=ListConnector(org(2, drop={GrantRecord("app:admin", "u1").key})),
             force=True)
    now_keys = {h.grant.entitlement.external_id for h in effective_access(session, [account.id])}
    then_keys = {h.grant.entitlement.external_id
                 for h in effective_access(session, [account.id], at=first + timedelta(microseconds=1))}
    assert "app:admin" not in now_keys and "app:admin" in then_keys


def test_demo_connector_syncs_and_churns(factory, session, settings):
    from attest.connectors.demo import DemoConnector

    make_source(session, "demo", authoritative=True)
    session.commit()
    base = {"people": 200, "groups": 20, "apps": 5, "churn": 0.05}
    r1 = run_sync(factory, settings, "demo", connector=DemoConnector(base))
    assert r1.status == "succeeded", r1.error
    total = r1.stats["added"]["grants"]
    assert total > 1000
    assert session.scalar(select(func.count()).select_from(Resource).where(Resource.is_group.is_(True))) == 20
    r2 = run_sync(factory, settings, "demo", connector=DemoConnector({**base, "generation": 1}))
    assert 0 < r2.stats["ended"]["grants"] < total * 0.2
    assert 0 < r2.stats["added"]["grants"] < total * 0.2
    terminated = session.scalar(select(func.count()).select_from(Identity).where(Identity.status == "terminated"))
    assert terminated > 0


def test_resync_updates_changed_ends_unseen_and_reopens_returning_rows(factory, session, settings):
    """A resync stages only what changed: a changed person and account are updated, an unseen account
    ends, a returning one reopens, and a duplicated grant record is counted once."""
    make_source(session, "idp", authoritative=True)
    session.commit()
    assert run_sync(factory, settings, "idp", connector=ListConnector(org())).status == "succeeded"

    def edited(recs: list, *, drop_account: str | None = None) -> list:
        out = []
        for r in recs:
            if isinstance(r, IdentityRecord) and r.external_id == "p2":
                r = r._replace(title="Staff Engineer", manager_ref="p1")
            if isinstance(r, AccountRecord) and r.external_id == "u3":
                r = r._replace(mfa_enabled=True, attributes={"tier": "gold"})
            if isinstance(r, AccountRecord) and r.external_id == drop_account:
                continue
            out.append(r)
        return out + [GrantRecord("eng:member", "u4")]  # a duplicate of a known grant

    r = run_sync(factory, settings, "idp", connector=ListConnector(edited(org(), drop_account="u9")))
    assert r.status == "succeeded", r.error
    assert r.stats["updated"]["identities"] == 1 and r.stats["updated"]["accounts"] == 1
    assert r.stats["ended"]["accounts"] == 1 and r.stats["added"]["accounts"] == 0
    assert r.stats["read"]["accounts"] == 9 and r.stats["read"]["identities"] == 10
    assert r.stats["added"]["grants"] == 0
    session.expire_all()
    p2 = session.scalar(select(Identity).where(Identity.external_id == "p2"))
    assert p2.title == "Staff Engineer" and p2.manager.external_id == "p1"
    u3 = session.scalar(select(Account).where(Account.external_id == "u3"))
    assert u3.mfa_enabled is True and u3.attributes == {"tier": "gold"}
    u9 = session.scalar(select(Account).where(Account.external_id == "u9"))
    assert u9.ended_at is not None and u9.ended_reason == "not_seen"

    # unchanged again: nothing written; then u9 comes back and is reopened, still linked to its person
    r2 = run_sync(factory, settings, "idp", connector=ListConnector(edited(org(), drop_account="u9")))
    assert not any(r2.stats["updated"].values()) and not any(r2.stats["ended"].values())
    r3 = run_sync(factory, settings, "idp", connector=ListConnector(edited(org())))
    assert r3.stats["updated"]["accounts"] == 1 and r3.stats["added"]["accounts"] == 0
    session.expire_all()
    u9 = session.scalar(select(Account).where(Account.external_id == "u9"))
    assert u9.ended_at is None and u9.identity.external_id == "p9"


def test_resync_recognizes_known_grants_whatever_their_keys_hold(factory, session, settings):
    """What a source holds is read as one aggregate split on separators; ids holding them (upstream ids
    are opaque) are still recognized, row by row when need be."""
    make_source(session, "idp", authoritative=True)
    session.commit()
    odd = [AccountRecord("odd\x1eid\x1f|x", login="odd"), GrantRecord("app:user", "odd\x1eid\x1f|x"),
           AccountRecord("tame\x1fid", login="tame")]
    assert run_sync(factory, settings, "idp", connector=ListConnector(org(extra=odd))).status == "succeeded"
    r = run_sync(factory, settings, "idp", connector=ListConnector(org(extra=odd)))
    assert r.status == "succeeded"
    assert not any(r.stats["added"].values()) and not any(r.stats["ended"].values())
    assert not any(r.stats["updated"].values())  # every account recognized as unchanged
    assert active_grants(session) == 23


# --- the removal guard covers every kind, per source and per part (issue 16) ------------------------


def _counts(session) -> dict[str, int]:
    from attest.entitlements.models import Entitlement

    active = {}
    for name, model in (("identities", Identity), ("accounts", Account), ("resources", Resource),
                        ("entitlements", Entitlement), ("grants", Grant)):
        active[name] = session.scalar(select(func.count()).select_from(model).where(model.ended_at.is_(None)))
    return active


def test_an_empty_user_list_ends_nothing(factory, session, settings):
    """The upstream's user list comes back empty (people and accounts gone, groups and apps still there):
    the run is aborted, naming each kind and its counts, and nothing changes."""
    make_source(session, "idp", authoritative=True)
    session.commit()
    run_sync(factory, settings, "idp", connector=ListConnector(org(30)))
    before = _counts(session)
    no_users = [r for r in org(30) if not isinstance(r, IdentityRecord | AccountRecord)
                and not (isinstance(r, GrantRecord) and r.principal_ref.startswith("u"))]
    r = run_sync(factory, settings, "idp", connector=ListConnector(no_users))
    assert r.status == "aborted"
    assert "would end 30 of 30 active identities (100%)" in r.error
    assert "30 of 30 active accounts (100%)" in r.error and "60 of 62 active grants" in r.error
    assert "Nothing was changed" in r.error
    session.expire_all()
    assert _counts(session) == before
    assert session.get(SyncRun, r.run_id).status == "aborted"


def test_a_user_list_cut_short_ends_nothing_even_when_grants_stay_under_the_ratio(factory, session, settings):
    """A list cut at page k (its next link missing): a third of the people vanish, but their grants are
    a small share of a source rich in group grants. The guard trips on the identities and accounts."""
    make_source(session, "idp", authoritative=True)
    session.commit()
    many_groups = [rec for i in range(200) for rec in (
        ResourceRecord(f"g{i}", "group", f"Group {i}", is_group=True),
        EntitlementRecord(f"g{i}:member", f"g{i}", "member", is_membership=True),
        GrantRecord(f"g{i}:member", "eng", "resource"))]
    run_sync(factory, settings, "idp", connector=ListConnector(org(30, extra=many_groups)))
    before = _counts(session)
    cut = {f"p{i}" for i in range(20, 30)} | {f"u{i}" for i in range(20, 30)}
    short = [r for r in org(30, extra=many_groups)
             if not (isinstance(r, IdentityRecord | AccountRecord) and r.external_id in cut)
             and not (isinstance(r, GrantRecord) and r.principal_ref in cut)]
    r = run_sync(factory, settings, "idp", connector=ListConnector(short))
    assert r.status == "aborted"
    assert "10 of 30 active identities (33%)" in r.error and "10 of 30 active accounts (33%)" in r.error
    assert "grants" not in r.error.split("more than")[0]  # 20 of 262 grants: under the ratio
    session.expire_all()
    assert _counts(session) == before
    r2 = run_sync(factory, settings, "idp", connector=ListConnector(short), force=True)
    assert r2.status == "succeeded" and _counts(session)["identities"] == 20


def test_the_guard_holds_per_part(factory, session, settings):
    """One part (an AWS account, a GitHub org) loses most of its rows while the source as a whole stays
    under the ratio: aborted, naming the part."""
    make_source(session, "cloud")
    session.commit()

    def part(name: str, users: int) -> list:
        recs = [ResourceRecord(f"acct-{name}", "aws_account", name, part=name),
                EntitlementRecord(f"acct-{name}:admin", f"acct-{name}", "admin", part=name)]
        for i in range(users):
            recs += [AccountRecord(f"{name}-u{i}", login=f"{name}-u{i}", part=name),
                     GrantRecord(f"acct-{name}:admin", f"{name}-u{i}", part=name)]
        return recs

    run_sync(factory, settings, "cloud", connector=ListConnector(part("a", 100) + part("b", 20)))
    before = _counts(session)
    r = run_sync(factory, settings, "cloud", connector=ListConnector(part("a", 100) + part("b", 4)))
    assert r.status == "aborted"
    assert "16 of 20 active accounts of part b (80%)" in r.error and "16 of 20 active grants of part b" in r.error
    session.expire_all()
    assert _counts(session) == before
    # a handful of removals (fewer than ATTEST_SYNC_REMOVAL_GUARD_MIN) is ordinary churn
    r = run_sync(factory, settings, "cloud", connector=ListConnector(part("a", 100) + part("b", 12)))
    assert r.status == "succeeded" and r.stats["ended"]["accounts"] == 8


class _Grid(ListConnector):
    """`side` accounts each holding every one of `side` entitlements: side² grants, generated as read
    (a list of records would itself grow with the source)."""

    def __init__(self, side: int) -> None:
        super().__init__([])
        self.side = side

    def sync(self):
        self.calls += 1
        yield ResourceRecord("app", "app", "Grid")
        for i in range(self.side):
            yield AccountRecord(f"u{i}", login=f"user{i}@acme.example")
            yield EntitlementRecord(f"app:e{i}", "app", f"e{i}")
        for e in range(self.side):
            for i in range(self.side):
                yield GrantRecord(f"app:e{e}", f"u{i}")


def _resync_peak(factory, settings, name: str, side: int) -> int:
    """Python memory (bytes, tracemalloc) a no-change resync of a side² grid holds at its peak."""
    assert run_sync(factory, settings, name, connector=_Grid(side)).status == "succeeded"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        r = run_sync(factory, settings, name, connector=_Grid(side))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status == "succeeded", r.error
    assert r.stats["read"]["grants"] == side * side and not any(r.stats["added"].values())
    assert not any(r.stats["ended"].values())
    return peak - before


def test_a_resyncs_memory_does_not_grow_with_the_grants_the_source_holds(factory, session, settings):
    """Above ATTEST_SYNC_KEYS_IN_MEMORY active grants a resync compares the grants it reads with the active
    ones in the database (stage_seen), not through a set of every active key in memory: at ten million
    grants that set alone took ~2 GB. Its peak Python memory is the same for 6,400 and 25,600 grants (the
    set grows by ~3.4 MB)."""
    settings = dataclasses.replace(settings, sync_keys_in_memory=1000)
    make_source(session, "small")
    make_source(session, "large")
    session.commit()
    small = _resync_peak(factory, settings, "small", 80)
    large = _resync_peak(factory, settings, "large", 160)
    assert large - small < 600_000, (small, large)


class _Churn(ListConnector):
    """A grid of `side` accounts by `side` entitlements in which, from `generation` 1, account u0 loses
    every entitlement and a new account holds them instead: side grants gone, side grants new."""

    def __init__(self, side: int, generation: int) -> None:
        super().__init__([])
        self.side, self.generation = side, generation

    def sync(self):
        self.calls += 1
        yield ResourceRecord("app", "app", "Grid")
        first = 1 if self.generation else 0
        holders = [f"u{i}" for i in range(first, self.side)] + (["newcomer"] if self.generation else [])
        for h in holders:
            yield AccountRecord(h, login=f"{h}@acme.example")
        for e in range(self.side):
            yield EntitlementRecord(f"app:e{e}", "app", f"e{e}")
            for h in holders:
                yield GrantRecord(f"app:e{e}", h, attributes={"role": "member"})


@pytest.mark.parametrize("keys_in_memory", [0, 1_000_000])
def test_a_resync_in_memory_and_in_the_database_make_the_same_changes(factory, session, settings, keys_in_memory):
    """The two ways a resync compares grants (a set of the active keys up to ATTEST_SYNC_KEYS_IN_MEMORY,
    the database above it) end the same grants and add the same ones, and a no-change resync changes
    nothing either way."""
    settings = dataclasses.replace(settings, sync_keys_in_memory=keys_in_memory)
    make_source(session, "grid")
    session.commit()
    assert run_sync(factory, settings, "grid", connector=_Churn(30, 0)).stats["added"]["grants"] == 900
    same = run_sync(factory, settings, "grid", connector=_Churn(30, 0))
    assert same.status == "succeeded" and not any(same.stats["added"].values()) and not any(same.stats["ended"].values())
    churn = run_sync(factory, settings, "grid", connector=_Churn(30, 1))
    assert churn.status == "succeeded", churn.error
    assert churn.stats["added"]["grants"] == 30 and churn.stats["ended"]["grants"] == 30
    held = set(session.execute(select(Account.external_id).join(Grant, Grant.principal_account_id == Account.id)
                               .where(Grant.ended_at.is_(None))).scalars())
    assert "u0" not in held and "newcomer" in held and len(held) == 30


def _correlate_peak(session, settings, people: int) -> int:
    """Python memory (bytes, tracemalloc) correlating 3 accounts of a second source against `people` people."""
    idp = make_source(session, f"idp{people}", authoritative=True)
    session.execute(insert(Identity), [
        {"source_id": idp.id, "external_id": f"p{i}", "email": f"person{i}.{people}@acme.example",
         "login": f"person{i}.{people}", "display_name": f"Person {i}", "status": "active", "kind": "human",
         "attributes": {}, "first_seen_at": utcnow()} for i in range(people)])
    other = make_source(session, f"aws{people}")
    session.execute(insert(Account), [
        {"source_id": other.id, "external_id": "a1", "email": f"PERSON1.{people}@acme.example", "status": "active",
         "kind": "human", "attributes": {}, "first_seen_at": utcnow()},
        {"source_id": other.id, "external_id": "a2", "login": f"person2.{people}", "status": "active",
         "kind": "human", "attributes": {}, "first_seen_at": utcnow()},
        {"source_id": other.id, "external_id": "a3", "login": "nobody", "status": "active", "kind": "human",
         "attributes": {}, "first_seen_at": utcnow()}])
    session.flush()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert correlation.correlate(session, settings, [other.id]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    linked = {r[0]: r[1] for r in session.execute(select(Account.external_id, Account.link_method).where(Account.source_id == other.id))}
    assert linked == {"a1": "email", "a2": "username", "a3": None}
    return peak - before


def test_correlating_a_few_accounts_does_not_hold_the_whole_directory(session, settings, monkeypatch):
    """The lookup tables of `correlate` keep only the keys the accounts being matched can ask for, and the
    people are streamed (here 200 a round trip): matching 3 accounts costs the same memory among 500 or
    5,000 people (every key of every person took ~900 MB at a million)."""
    monkeypatch.setattr(correlation, "STREAM_ROWS", 200)
    small = _correlate_peak(session, settings, 500)
    large = _correlate_peak(session, settings, 5000)
    assert large - small < 300_000, (small, large)
