"""Planning a remediation: the grant reference a connector is handed, where access really comes from
(a group it is held through; or managed elsewhere, as `connectors.managed` reads it: then the manual work
list, naming the `target`), the planned call and its one-line description, and the errors a user can cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from attest.connectors.base import GrantRef
from attest.connectors.managed import managed_elsewhere
from attest.entitlements.models import Account, Grant, Resource, Source
from attest.entitlements.queries import effective_access
from attest.reviews.models import RemediationStatus, ReviewItem

OPEN = (RemediationStatus.PENDING, RemediationStatus.IN_PROGRESS)
STUCK = (RemediationStatus.REFUSED, RemediationStatus.FAILED)  # a person must carry these out (or give up)


# carried out upstream, waiting for a sync to confirm the access gone
CARRIED_OUT = (RemediationStatus.DONE, RemediationStatus.UNCONFIRMED)


class RemediationError(ValueError):
    """A user-caused problem (wrong state, missing note, closed undo window); nothing was changed."""


class UndoError(RemediationError):
    pass


@dataclass
class Planned:
    """One remediation in a run: what was (or would be) called and what came of it."""

    id: int
    campaign_id: int
    source: str
    principal: str
    resource: str
    entitlement: str
    action: str  # revoke | manual | refused | skip
    outcome: str = ""  # done | unconfirmed | refused | retry | failed | manual | would_revoke | would_refuse | error
    calls: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grant_ref(session: Session, grant: Grant, source: Source) -> GrantRef:
    """The connector's view of one grant, built from the database (works for ended grants too)."""
    ent = grant.entitlement
    res = ent.resource if ent.resource_id is not None else None
    if grant.principal_type == "account":
        acc = grant.account
        principal_ref, login = acc.external_id, acc.login or acc.email
    else:
        grp = grant.group
        principal_ref, login = grp.external_id, grp.name
    return GrantRef(
        source_kind=source.kind,
        key=grant.key,
        entitlement_ref=ent.external_id,
        entitlement_name=ent.name,
        resource_ref=ent.resource_ref,
        resource_type=res.type if res is not None else "",
        principal_type=grant.principal_type,
        principal_ref=principal_ref,
        principal_login=login,
        resource_attributes=dict(res.attributes or {}) if res is not None else {},
        entitlement_attributes=dict(ent.attributes or {}),
        grant_attributes=dict(grant.attributes or {}),
        part=grant.part,
    )


def managed_target(ref: GrantRef, principal: str, resource: str) -> str | None:
    """The manual task for access the source re-creates (`connectors.managed`: the one reader and its
    sentence), or None when revoking the grant itself is right."""
    found = managed_elsewhere(ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
    return found.sentence(principal, resource) if found else None


def _via_target(session: Session, item: ReviewItem, grant: Grant) -> str:
    """The manual task for access held through a group: name the account's own group and the path."""
    account = session.get(Account, item.account_id)
    who = account.label if account else f"account {item.account_id}"
    what = f"{item.entitlement_name} on {item.resource_name or 'the resource'}"
    path = None
    for held in effective_access(session, [item.account_id]):
        if held.grant.id == grant.id and held.via:
            path = held.via
            break
    if path:
        own, holder = path[-1], path[0]
        chain = " → ".join(g.name for g in reversed(path))
        text_ = (f"{who} holds {what} through group membership ({who} → {chain}). Remove {who} from group "
                 f"{own.name!r}")
        if holder.id != own.id:
            text_ += f", or stop {holder.name!r} holding {what} (that affects every member)"
        return text_ + "."
    holder = session.get(Resource, item.via_resource_id) if item.via_resource_id else grant.group
    name = holder.name if holder else (item.via or "the group")
    return (f"{who} holds {what} through group {name!r}. Remove {who} from {name!r} (revoking the group's own "
            f"grant would remove it from every member).")


def describe(rows: Iterable[Planned]) -> Iterator[str]:
    """Human lines for a run report (the CLI prints them)."""
    for p in rows:
        head = f"#{p.id} {p.source}: {p.principal} — {p.entitlement} on {p.resource}"
        yield f"{head} [{p.outcome or p.action}]"
        for call in p.calls:
            yield f"    {call}"
        if p.detail:
            yield f"    {p.detail}"
