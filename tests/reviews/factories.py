"""Factories for review tests that need items without going through a launch: a campaign with items
routed to a reviewer, built directly (source, accounts, resources, entitlements, grants, items)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from attest.auth.models import User
from attest.db import utcnow
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, Source
from attest.entitlements.risk import score as risk_score
from attest.reviews.models import Campaign, ReviewItem
from tests.factories import make_identity, make_source, make_user

DEFAULT_SPEC: dict[str, Any] = {
    "name": "Quarterly manager review",
    "stages": [{"reviewer": "manager", "identity": None}],
    "rules": {"comment_required": "on_revoke", "remediation": "manual"},
    "timing": {"duration_days": 14, "no_response": "keep"},
}


@dataclass
class ReviewSetup:
    campaign: Campaign
    manager: Identity
    manager_user: User
    people: list[Identity]
    items: list[ReviewItem]
    source: Source
    extra: dict[str, Any] = field(default_factory=dict)


_seq = iter(range(1, 10**9))


def make_campaign(session: Session, name: str = "Q3 access review", status: str = "active",
                  spec: dict[str, Any] | None = None, due_in_days: float = 14) -> Campaign:
    from attest.reviews.definitions import parse_definition

    now = utcnow()
    full = parse_definition({**DEFAULT_SPEC, "name": name, **(spec or {})})
    campaign = Campaign(name=name, status=status, spec=full, created_by="admin@acme.example",
                        launched_at=now if status != "draft" else None, due_at=now + timedelta(days=due_in_days))
    session.add(campaign)
    session.flush()
    return campaign


def make_grant(session: Session, source: Source, account: Account, resource_name: str, entitlement: str = "member",
               privileged: bool = False, rtype: str = "group") -> tuple[Grant, Resource, Entitlement]:
    n = next(_seq)
    resource = Resource(source_id=source.id, external_id=f"r{n}", type=rtype, name=resource_name, is_group=rtype == "group")
    session.add(resource)
    session.flush()
    ent = Entitlement(source_id=source.id, external_id=f"e{n}", resource_ref=resource.external_id, resource_id=resource.id,
                      name=entitlement, privileged=privileged, is_membership=rtype == "group")
    session.add(ent)
    session.flush()
    grant = Grant(source_id=source.id, key=f"{ent.external_id}|a|{account.external_id}", entitlement_id=ent.id,
                  principal_type="account", principal_account_id=account.id)
    session.add(grant)
    session.flush()
    return grant, resource, ent


def make_item(session: Session, campaign: Campaign, reviewer: Identity | None, person: Identity | None,
              account: Account, grant: Grant, resource: Resource, ent: Entitlement, source: Source,
              risks: list[str] | None = None, stage: int = 0, **kw: Any) -> ReviewItem:
    item = ReviewItem(
        campaign_id=campaign.id, grant_id=grant.id, account_id=account.id, identity_id=person.id if person else None,
        source_id=source.id, resource_id=resource.id, entitlement_id=ent.id,
        person_name=person.display_name if person else None, person_email=person.email if person else None,
        person_department=person.department if person else None, person_status=person.status if person else None,
        account_login=account.login, account_kind=account.kind, source_name=source.name, source_kind=source.kind,
        resource_name=resource.name, resource_type=resource.type, entitlement_name=ent.name,
        privileged=ent.privileged, risks=list(risks or []), risk_score=risk_score(risks or []), stage=stage,
        reviewer_id=reviewer.id if reviewer else None, routed_by="manager", **kw,
    )
    session.add(item)
    session.flush()
    return item


def review_setup(session: Session, *, people: int = 3, per_person: int = 2, spec: dict[str, Any] | None = None,
                 manager_email: str = "maria.manager@acme.example", password: str | None = None,
                 risky: dict[int, list[str]] | None = None, campaign_name: str = "Q3 access review",
                 source_name: str | None = None) -> ReviewSetup:
    """A manager with `people` reports, each holding `per_person` grants, all routed to the manager.

    `risky` maps an item index (in creation order) to its risk signals; by default item 0 is privileged.
    """
    source = make_source(session, source_name or f"okta{next(_seq)}")
    manager = make_identity(session, manager_email, name="Maria Manager", department="Finance")
    manager_user = make_user(session, manager_email, identity=manager, password=password)
    campaign = make_campaign(session, campaign_name, spec=spec)
    risky = {0: ["privileged"]} if risky is None else risky
    persons, items = [], []
    names = ["Alice Archer", "Bob Baker", "Carol Chen", "Dan Diaz", "Erin Evans", "Frank Fox", "Gina Gray", "Hugo Hill"]
    idx = 0
    for p in range(people):
        label = names[p] if p < len(names) else f"Person {p:04d}"
        email = f"{label.split()[0].lower()}{next(_seq)}@acme.example"
        person = make_identity(session, email, name=label, manager=manager, department="Finance")
        persons.append(person)
        account = Account(source_id=source.id, external_id=f"a{next(_seq)}", login=email, email=email,
                          identity_id=person.id, kind="human")
        session.add(account)
        session.flush()
        for g in range(per_person):
            risks = risky.get(idx, [])
            grant, resource, ent = make_grant(session, source, account, f"Finance-App-{g}",
                                              entitlement="admin" if "privileged" in risks else "member",
                                              privileged="privileged" in risks)
            items.append(make_item(session, campaign, manager, person, account, grant, resource, ent, source, risks=risks))
            idx += 1
    return ReviewSetup(campaign, manager, manager_user, persons, items, source)


def add_reviewer(session: Session, email: str, name: str = "", roles: tuple[str, ...] = (),
                 password: str | None = None) -> tuple[Identity, User]:
    identity = make_identity(session, email, name=name or email.split("@")[0])
    user = make_user(session, email, roles=roles, identity=identity, password=password)
    return identity, user
