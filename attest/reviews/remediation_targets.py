"""At close, every item whose outcome is revoke becomes a pending Remediation, with its target: where
the access really comes from when revoking the grant itself would be wrong or undone (the group it is held
through, or a source that re-creates it: `attest.connectors.managed`, read through its one reader).
`targets` is also what the review page shows before a revoke (`item_notes.revoke_notes`), so the reviewer
and the admin read the same sentence. It reads only the columns a target needs (a resource's name and
attributes, a grant's and an entitlement's attributes), and takes the grant and entitlement attributes from
the caller when the caller has read them already (the review page, with the app's last use)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.connectors.managed import managed_elsewhere
from attest.entitlements.models import Entitlement, Grant, Resource
from attest.reviews.chunks import chunks
from attest.reviews.models import Campaign, Remediation, ReviewItem

INSERT_BATCH = 5000
ITEM_COLUMNS = (ReviewItem.id, ReviewItem.grant_id, ReviewItem.source_id, ReviewItem.resource_id,
                ReviewItem.entitlement_id, ReviewItem.via_resource_id, ReviewItem.via, ReviewItem.account_login,
                ReviewItem.resource_name)


def remediation_target(item: Mapping[str, Any], groups: Mapping[int, Named],
                       grant_attributes: Mapping[str, Any] | None = None,
                       entitlement_attributes: Mapping[str, Any] | None = None) -> str | None:
    """Where the access really comes from, when revoking the grant itself would be wrong or undone. `item`
    holds the ReviewItem columns of ITEM_COLUMNS; `groups` the via group and the item's own resource (Named)."""
    login = item["account_login"] or "the account"
    via = groups.get(item["via_resource_id"]) if item["via_resource_id"] else None
    if via is not None:
        # the person's membership of the group they hold it through is what a person would remove
        found = managed_elsewhere(None, None, via.attributes)
        if found is not None:
            return found.sentence(login, via.name)
        return (f'group "{via.name}": the access is held through this group ({item["via"]}); remove '
                f"{login} from it rather than the group's own access")
    own = groups.get(item["resource_id"]) if item["resource_id"] else None
    found = managed_elsewhere(grant_attributes, entitlement_attributes, own.attributes if own is not None else None)
    if found is None:
        return None
    return found.sentence(login, item.get("resource_name") or (own.name if own is not None else ""))


def direct(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The items held directly (no via group): the only ones whose grant and entitlement attributes a target
    reads (a via item's target is about its group)."""
    return [r for r in items if not r["via_resource_id"]]


class Named(NamedTuple):
    """What a target reads of a resource: its name and attributes (never the whole row, nor its Source)."""

    name: str
    attributes: Any


def resource_ids(items: Sequence[Mapping[str, Any]]) -> set[int]:
    """The resources the items' targets read: a via item's group, a direct item's own resource."""
    return {r["via_resource_id"] if r["via_resource_id"] else r["resource_id"] for r in items} - {None}


def read_resources(session: Session, ids: set[int]) -> dict[int, Named]:
    """{resource id: its name and attributes}."""
    out: dict[int, Named] = {}
    for batch in chunks(sorted(ids)):
        out.update((row_id, Named(name, attrs)) for row_id, name, attrs in session.execute(
            select(Resource.id, Resource.name, Resource.attributes).where(Resource.id.in_(batch))))
    return out


def read_attributes(session: Session, items: Sequence[Mapping[str, Any]]) -> tuple[dict[int, Any], dict[int, Any]]:
    """({grant id: attributes}, {entitlement id: attributes}) of the direct items (the targets' other inputs)."""
    grant_attrs: dict[int, Any] = {}
    ent_attrs: dict[int, Any] = {}
    held = direct(items)
    for ids, column, into in (({r["grant_id"] for r in held}, Grant, grant_attrs),
                              ({r["entitlement_id"] for r in held}, Entitlement, ent_attrs)):
        for batch in chunks(sorted(i for i in ids if i is not None)):
            into.update(session.execute(select(column.id, column.attributes).where(column.id.in_(batch))).all())
    return grant_attrs, ent_attrs


def targets(session: Session, items: Sequence[Mapping[str, Any]],
            attributes: tuple[Mapping[int, Any], Mapping[int, Any]] | None = None,
            resources: Mapping[int, Named] | None = None) -> dict[int, str]:
    """{item id: its target} for the items (ITEM_COLUMNS mappings) that have one. `attributes`: the direct
    items' ({grant id: attributes}, {entitlement id: attributes}), and `resources`: those of `resource_ids`,
    when the caller has read them already (the review page reads them with the app's last use and the
    readable names, in one statement); else read here."""
    if not items:
        return {}
    groups = dict(resources) if resources is not None else read_resources(session, resource_ids(items))
    # a via item whose group is not found reads its own resource instead (resources are never deleted: rare)
    fallback = {r["resource_id"] for r in items if r["via_resource_id"] and r["via_resource_id"] not in groups
                and r["resource_id"] and r["resource_id"] not in groups}
    if fallback:
        groups.update(read_resources(session, fallback))
    grant_attrs, ent_attrs = attributes if attributes is not None else read_attributes(session, items)
    out: dict[int, str] = {}
    for r in items:
        held = not r["via_resource_id"]  # a via item reads its group only (even when given its grant's attributes)
        target = remediation_target(r, groups, grant_attrs.get(r["grant_id"]) if held else None,
                                    ent_attrs.get(r["entitlement_id"]) if held else None)
        if target:
            out[r["id"]] = target
    return out


def add_pending(session: Session, campaign: Campaign, now: datetime) -> int:
    """A pending Remediation (the definition's mode, its target) for each item of the campaign whose
    outcome is revoke; returns how many."""
    revoked = session.execute(
        select(*ITEM_COLUMNS)
        .where(ReviewItem.campaign_id == campaign.id, ReviewItem.outcome == "revoke").order_by(ReviewItem.id)
    ).mappings().all()
    found = targets(session, revoked)
    mode = campaign.spec["rules"]["remediation"]
    rows = [{"campaign_id": campaign.id, "item_id": r["id"], "grant_id": r["grant_id"], "source_id": r["source_id"],
             "mode": mode, "status": "pending", "target": found.get(r["id"]), "attempts": 0, "calls": [],
             "created_at": now} for r in revoked]
    for batch in chunks(rows, INSERT_BATCH):
        session.execute(Remediation.__table__.insert(), batch)
    return len(rows)
