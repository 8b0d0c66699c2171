"""Planning a remediation: the grant reference a connector is handed, where access really comes from
(a group, a rule-managed group, a group-assigned app: then the manual work list, naming the `target`), the
planned call and its one-line description, and the errors a user can cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from attest.connectors.base import GrantRef
from attest.entitlements.models import Account, Grant, Resource, Source
from attest.entitlements.queries import effective_access
from attest.reviews.models import RemediationStatus, ReviewItem

OPEN = (RemediationStatus.PENDING, RemediationStatus.IN_PROGRESS)
STUCK = (RemediationStatus.REFUSED, RemediationStatus.FAILED)  # a person must carry these out (or give up)


# carried out upstream, waiting for a sync to confirm the access gone
CARRIED_OUT = (RemediationStatus.DONE, RemediationStatus.UNCONFIRMED)


# Attribute names connectors use to say who really grants a membership or assignment (see
# `_managed_elsewhere`). Okta marks groups filled by an ACTIVE rule (`rule_managed`, `rules` on the group
# and its member entitlement), imported/built-in groups (`mastered_by`) and app assignments (`scope`).
RULE_KEYS = ("managed_by_rule", "group_rule", "rule", "rule_name", "rules")
GROUP_ASSIGNMENT_KEYS = ("assigned_via_groups", "via_groups", "assigned_via_group")


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


def _names(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(_names(v)) for v in value)
    if isinstance(value, dict):
        return str(value.get("name") or value.get("id") or value)
    return str(value)


def _managed_elsewhere(ref: GrantRef, principal: str, resource: str) -> str | None:
    """Where the access really comes from, when the connector's records say the source re-creates it."""
    rule_sources = (ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
    for key in RULE_KEYS:
        value = next((attrs.get(key) for attrs in rule_sources if attrs.get(key)), None)
        if value is None and key == "rules" and ref.resource_attributes.get("rule_managed"):
            value = "(unnamed)"
        if value:
            return (f"{resource}: {principal} is added by group rule {_names(value)}; removing the membership "
                    f"would be undone by the rule. Change the rule (or the profile attribute it matches).")
    for key in GROUP_ASSIGNMENT_KEYS:
        value = ref.grant_attributes.get(key)
        if value:
            return (f"{resource}: {principal} is assigned through group {_names(value)}; remove {principal} "
                    f"from that group (or unassign the group) instead.")
    if str(ref.grant_attributes.get("scope", "")).upper() == "GROUP":
        return (f"{resource}: {principal} is assigned through a group (assignment scope GROUP); remove "
                f"{principal} from the assigning group, or unassign that group from {resource}.")
    master = ref.resource_attributes.get("mastered_by") or (
        ref.resource_attributes.get("type") if ref.resource_attributes.get("type") == "APP_GROUP" else None)
    if master:
        return (f"{resource}: membership is mastered by {_names(master)} (the group is imported); remove "
                f"{principal} from the group in {_names(master)}.")
    return None


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
