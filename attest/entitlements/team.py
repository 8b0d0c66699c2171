"""A manager's team: their direct and indirect reports and each one's current access across sources,
riskiest first (the "My team" page).

Reports are read down the directory's manager links level by level (cycle-safe, depth-limited like the
eligibility rule's chain); access is the effective access of each report's accounts (direct and through
groups, attest.entitlements.queries) with the same risk signals a campaign would give it
(attest.entitlements.risk, default look-backs). A manager sees only people below them: `is_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.db import utcnow
from attest.entitlements import risk
from attest.entitlements.models import Account, Identity, PersonStatus
from attest.entitlements.queries import HeldGrant, effective_access

MAX_DEPTH = 64  # a chain longer than this is a loop in the directory (as attest.reviews.eligibility)


@dataclass
class Report:
    identity: Identity
    depth: int  # 1: a direct report
    manager_name: str | None  # who they report to (for indirect reports)
    accounts: list[Account] = field(default_factory=list)
    access: list[TeamAccess] = field(default_factory=list)

    @property
    def risks(self) -> list[str]:
        seen = {r for a in self.access for r in a.risks}
        if self.identity.status == PersonStatus.TERMINATED:
            seen.add("terminated")
        return [r for r in risk.RISKS if r in seen]

    @property
    def risk_score(self) -> int:
        return max([risk.score(self.risks)] + [a.risk_score for a in self.access]) if self.access else risk.score(self.risks)

    @property
    def privileged(self) -> int:
        return sum(1 for a in self.access if a.held.grant.entitlement.privileged)

    @property
    def sources(self) -> list[str]:
        return sorted({a.source.name for a in self.accounts if a.ended_at is None})


@dataclass
class TeamAccess:
    held: HeldGrant
    risks: list[str]
    last_used_at: datetime | None  # the app's last use where the source knows it (Okta: last SSO)
    last_used_known: bool

    @property
    def risk_score(self) -> int:
        return risk.score(self.risks)


def report_ids(session: Session, manager_id: int) -> dict[int, int]:
    """{identity id: depth} of everyone below `manager_id` (still in the directory), nearest first."""
    found: dict[int, int] = {}
    level = [manager_id]
    for depth in range(1, MAX_DEPTH + 1):
        rows = list(session.scalars(select(Identity.id).where(
            Identity.manager_id.in_(level), Identity.ended_at.is_(None))))
        level = [i for i in rows if i not in found and i != manager_id]
        if not level:
            break
        for i in level:
            found[i] = depth
    return found


def is_report(session: Session, manager_id: int | None, identity_id: int) -> bool:
    return manager_id is not None and identity_id in report_ids(session, manager_id)


def _last_used(held: HeldGrant) -> tuple[datetime | None, bool]:
    attrs = held.grant.attributes or {}
    if "last_sso_at" in attrs:
        return risk._parse_iso(attrs.get("last_sso_at")), True
    return None, False


def access_of(accounts: Sequence[Account], held: Sequence[HeldGrant], people: dict[int, Identity],
              now: datetime | None = None) -> list[TeamAccess]:
    """Each held grant with its risk signals (as a campaign launched now would give them), riskiest first."""
    cutoffs = risk.Cutoffs.for_spec(now or utcnow(), {}, None)
    out = []
    for h in held:
        person = people.get(h.account.identity_id) if h.account.identity_id else None
        signals = risk.signals(
            cutoffs=cutoffs, privileged=h.grant.entitlement.privileged, identity_id=h.account.identity_id,
            person_status=person.status if person else None, person_kind=person.kind if person else None,
            account_kind=h.account.kind, account_last_login_at=h.account.last_login_at,
            account_created_at=h.account.created_upstream_at,
            account_mfa_enabled=h.account.mfa_enabled, account_attributes=h.account.attributes,
            grant_attributes=h.grant.attributes, granted_at=h.grant.first_seen_at, via_group=bool(h.via))
        used, known = _last_used(h)
        out.append(TeamAccess(h, signals, used, known))
    out.sort(key=lambda a: (-a.risk_score, a.held.account.source.name,
                            a.held.grant.entitlement.resource.name if a.held.grant.entitlement.resource else "",
                            a.held.grant.entitlement.name))
    return out


def team(session: Session, manager_id: int, now: datetime | None = None) -> list[Report]:
    """The manager's reports (direct and indirect), each with their current access, riskiest first."""
    depths = report_ids(session, manager_id)
    if not depths:
        return []
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(list(depths))))}
    managers = {m.id: m.display_name for m in session.scalars(select(Identity).where(
        Identity.id.in_({p.manager_id for p in people.values() if p.manager_id})))}
    accounts = list(session.scalars(select(Account).where(Account.identity_id.in_(list(depths)),
                                                          Account.ended_at.is_(None))))
    by_person: dict[int, list[Account]] = {}
    for a in accounts:
        by_person.setdefault(a.identity_id, []).append(a)
    held_by_person: dict[int, list[HeldGrant]] = {}
    for h in effective_access(session, [a.id for a in accounts]):
        held_by_person.setdefault(h.account.identity_id, []).append(h)
    reports = []
    for pid, person in people.items():
        reports.append(Report(person, depths[pid], managers.get(person.manager_id) if person.manager_id else None,
                              by_person.get(pid, []), access_of(by_person.get(pid, []), held_by_person.get(pid, []),
                                                                people, now)))
    reports.sort(key=lambda r: (-r.risk_score, r.depth, r.identity.display_name.lower(), r.identity.id))
    return reports


def summary(reports: Sequence[Report]) -> dict[str, Any]:
    return {"people": len(reports), "direct": sum(1 for r in reports if r.depth == 1),
            "access": sum(len(r.access) for r in reports), "privileged": sum(r.privileged for r in reports),
            "at_risk": sum(1 for r in reports if set(r.risks) - {"via_group"})}
