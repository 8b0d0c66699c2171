"""One small installation for the route-matrix and fuzz tests: two managers (A and B) with items in a
shared campaign and each in a campaign of their own, an auditor, an admin, a definition, a remediation.

Every string of a manager's items (person name and e-mail, account login, resource, entitlement,
comment) carries that manager's marker (`MARK["A"]`, `MARK["B"]`), so a test can assert that one
manager's answers never contain the other's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from attest.auth.models import User
from attest.db import utcnow
from attest.entitlements.models import Account, Identity
from attest.reviews.definitions import create_definition
from attest.reviews.models import Campaign, CampaignDefinition, Delegation, Remediation, ReviewItem
from tests.factories import make_identity, make_source, make_user
from tests.reviews.factories import make_campaign, make_grant, make_item

MARK = {"A": "Qx7A-marker", "B": "Zk9B-marker"}

DEFINITION_YAML = "name: Matrix review\nstages:\n  - reviewer: manager\n"


@dataclass
class Manager:
    key: str
    identity: Identity
    user: User
    items: list[ReviewItem] = field(default_factory=list)  # shared campaign first, then their own
    own_campaign: Campaign | None = None

    @property
    def marker(self) -> str:
        return MARK[self.key]


@dataclass
class World:
    admin: User
    auditor: User
    managers: dict[str, Manager]
    shared: Campaign
    definition: CampaignDefinition
    remediation: Remediation
    stranger: Identity  # a person anyone may reassign to (not the subject of any item)
    account: Account
    delegations: dict[str, Delegation] = field(default_factory=dict)  # each manager's, to the stranger, planned

    def user(self, role: str) -> User | None:
        return {"admin": self.admin, "auditor": self.auditor, "manager_a": self.managers["A"].user,
                "manager_b": self.managers["B"].user}.get(role)

    def ids(self) -> set[int]:
        """Every id a route might be asked about (for the fuzz's choice of ids)."""
        out = {self.admin.id, self.auditor.id, self.shared.id, self.definition.id, self.remediation.id,
               self.stranger.id, self.account.id}
        for m in self.managers.values():
            out |= {m.identity.id, m.user.id, *(i.id for i in m.items)}
            if m.own_campaign is not None:
                out.add(m.own_campaign.id)
        return out


def _items_for(session: Session, manager: Manager, campaign: Campaign, source, n: int, tag: str) -> None:
    mark = manager.marker
    for i in range(n):
        email = f"{mark.lower()}-{tag}{i}@acme.example"
        person = make_identity(session, email, name=f"{mark} Person {tag}{i}", manager=manager.identity,
                               department=f"{mark} Dept")
        account = Account(source_id=source.id, external_id=f"{mark}-{tag}{i}", login=f"{mark}-login-{tag}{i}",
                          email=email, identity_id=person.id, kind="human")
        session.add(account)
        session.flush()
        grant, resource, ent = make_grant(session, source, account, f"{mark} Resource {tag}{i}",
                                          entitlement=f"{mark}-entitlement")
        item = make_item(session, campaign, manager.identity, person, account, grant, resource, ent, source,
                         risks=["privileged"] if i == 0 else [])
        if i == n - 1:  # one decided item with a comment
            item.decision, item.comment = "approve", f"{mark} comment: still needed"
            item.decided_at, item.decided_by_identity_id = utcnow(), manager.identity.id
            item.decided_by_user_id = manager.user.id
        manager.items.append(item)
    session.flush()


def build_world(session: Session) -> World:
    source = make_source(session, "okta-matrix")
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    auditor = make_user(session, "auditor@acme.example", roles=["auditor"])
    stranger = make_identity(session, "sam.stranger@acme.example", name="Sam Stranger")
    managers: dict[str, Manager] = {}
    for key, name in (("A", "Alma Manager"), ("B", "Boris Manager")):
        email = f"{name.split()[0].lower()}.manager@acme.example"
        identity = make_identity(session, email, name=name)
        managers[key] = Manager(key, identity, make_user(session, email, identity=identity))
    shared = make_campaign(session, "Shared review")
    for m in managers.values():
        _items_for(session, m, shared, source, 3, "s")
    for m in managers.values():
        m.own_campaign = make_campaign(session, f"Own review {m.key}")
        _items_for(session, m, m.own_campaign, source, 2, "o")
    definition = create_definition(session, DEFINITION_YAML, "admin@acme.example", owner_user_id=admin.id)
    item = managers["B"].items[0]
    remediation = Remediation(item_id=item.id, campaign_id=item.campaign_id, source_id=item.source_id,
                              grant_id=item.grant_id, mode="manual", status="pending")
    session.add(remediation)
    session.flush()
    account = session.get(Account, managers["B"].items[0].account_id)
    assert account is not None
    # each manager's delegation to the stranger, planned for later (nobody stands in for anyone now)
    later = utcnow() + timedelta(days=30)
    delegations = {}
    for key, m in managers.items():
        delegations[key] = Delegation(delegator_id=m.identity.id, delegate_id=stranger.id, starts_at=later,
                                      ends_at=later + timedelta(days=7), created_by=m.user.email)
        session.add(delegations[key])
    session.flush()
    return World(admin, auditor, managers, shared, definition, remediation, stranger, account, delegations)
