"""What an item row says beyond its frozen snapshot, read for a page of items at once:

- `revoke_notes`: before a revoke, what will happen when the access is held through a group or a rule:
  the manual task that closing the campaign will create (the same words as the Remediation's `target`,
  from `remediation_targets.targets`).
- `last_used`: the app's last use where the source records it (Okta: the last SSO into the app, from the
  System Log, `last_sso_at` on the grant; present but empty = none within the look-back).
- `labels`: the entitlement's readable name where the source gives one beside its raw name (an Okta custom
  admin role: "Help desk admin (resource set ...)" instead of "CUSTOM on iamEDNIaDbgHJQ0Db2d1").
- `other_paths`: the other ways the same person's account holds the same access in the same list (the same
  app through two groups): every path is named on each row.
- `merged` / `folded` (`same_access`): one row per distinct access: items of one reviewer that are the same
  access of the same account and stand alike show as one row listing every path; deciding it decides each.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, bindparam, literal_column, null, or_, select, union_all
from sqlalchemy.orm import Session

from attest.connectors.timestamps import parse_timestamp
from attest.db import column_reader
from attest.dialects import among_parameter
from attest.dialects import name as dialect_name
from attest.entitlements.models import Entitlement, Grant, Resource
from attest.reviews.models import ReviewItem
from attest.reviews.remediation_targets import ITEM_COLUMNS, Named, resource_ids, targets

Attributes = tuple[dict[int, Any], dict[int, Any]]  # ({grant id: attributes}, {entitlement id: attributes})


# What the notes read of an item: these columns, each read once per item (`_columns`), the ITEM_COLUMNS that
# remediation_targets.targets reads among them. Read as ORM attributes, the notes of a page of 50 items made 1,150
# reads at some 3,000 instructions each (db.column_reader).
_KEYS = tuple(dict.fromkeys(("id", "campaign_id", "reviewer_id", "account_id", "entitlement_id", "person_name",
                             "entitlement_name", "outcome", *(c.key for c in ITEM_COLUMNS))))
_read = column_reader(_KEYS)

Columns = dict[str, Any]  # an item's _KEYS


def _columns(items: Sequence[ReviewItem]) -> list[Columns]:
    return [dict(zip(_KEYS, _read(i), strict=True)) for i in items]


def revoke_notes(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """{item id: the manual task a revoke becomes} for items held through a group or managed elsewhere: the
    target closing the campaign will give the Remediation (`remediation_targets.targets`), word for word
    (`row_notes` gives the same for a page, with the other notes)."""
    return targets(session, _columns(items))


class Facts(NamedTuple):
    """What the notes read beside the items, in one statement (`_facts`)."""

    names: dict[int, str]  # {entitlement id: readable name}
    attributes: Attributes  # ({grant id: attributes}, {entitlement id: attributes})
    resources: dict[int, Named]  # {resource id: name, attributes} of remediation_targets.resource_ids


@functools.cache
def _facts_statement(dialect: str, with_resources: bool) -> Any:
    """The statement of `_facts`, built once per dialect and shape: its lists are the parameters `entitlements`,
    `grants` and `resources`."""
    kind = lambda n: literal_column(str(n), Integer).label("kind")  # noqa: E731 - 1 entitlement, 2 grant, 3 resource
    reads = [select(kind(1), Entitlement.id, Entitlement.display_name, Entitlement.attributes)
             .where(among_parameter(dialect, Entitlement.id, "entitlements")),
             select(kind(2), Grant.id, null(), Grant.attributes)
             .where(among_parameter(dialect, Grant.id, "grants"))]
    if with_resources:
        reads.append(select(kind(3), Resource.id, Resource.name, Resource.attributes)
                     .where(among_parameter(dialect, Resource.id, "resources")))
    return union_all(*reads)


def _facts(session: Session, items: Sequence[Columns], columns: Sequence[Mapping[str, Any]] = ()) -> Facts:
    """The items' entitlements and grants (and, given the items' ITEM_COLUMNS, the resources their revoke notes
    read), in one statement: a UNION ALL of reads by primary key (a join from the entitlements would walk every
    grant of a popular entitlement), only the columns the notes use."""
    out = Facts({}, ({}, {}), {})
    if not items:
        return out
    resources = resource_ids(columns)
    params = {"entitlements": sorted({i["entitlement_id"] for i in items}),
              "grants": sorted({i["grant_id"] for i in items})}
    if resources:
        params["resources"] = sorted(resources)
    grant_attrs, ent_attrs = out.attributes
    for which, row_id, name, attrs in session.execute(_facts_statement(dialect_name(session), bool(resources)),
                                                      params).all():
        if which == 1:
            ent_attrs[row_id] = attrs
            if name:
                out.names[row_id] = name
        elif which == 2:
            grant_attrs[row_id] = attrs
        else:
            out.resources[row_id] = Named(name, attrs)
    return out


def _use_and_labels(items: Sequence[Columns], names: Mapping[int, str], grant_attrs: Mapping[int, Any]
                    ) -> tuple[dict[int, tuple[datetime | None]], dict[int, str]]:
    used: dict[int, tuple[datetime | None]] = {}
    for item in items:
        a = grant_attrs.get(item["grant_id"]) or {}
        if isinstance(a, dict) and "last_sso_at" in a:
            used[item["id"]] = (parse_timestamp(a.get("last_sso_at")),)
    readable = {i["id"]: names[i["entitlement_id"]] for i in items
                if names.get(i["entitlement_id"]) and names[i["entitlement_id"]] != i["entitlement_name"]}
    return used, readable


@functools.cache
def _same_access_statement(dialect: str, nameless: bool) -> Select[Any]:
    """The lookup of `same_access`, built once per dialect and shape: a reviewer's items in a campaign among the
    person names `names` (and, when `nameless`, those with none), accounts `accounts`, entitlements `entitlements`."""
    person = among_parameter(dialect, ReviewItem.person_name, "names")
    if nameless:
        person = or_(person, ReviewItem.person_name.is_(None))
    return (select(ReviewItem.id, ReviewItem.account_id, ReviewItem.entitlement_id, ReviewItem.decision)
            .where(ReviewItem.reviewer_id == bindparam("reviewer_id", type_=Integer),
                   ReviewItem.campaign_id == bindparam("campaign_id", type_=Integer), person,
                   among_parameter(dialect, ReviewItem.account_id, "accounts"),
                   among_parameter(dialect, ReviewItem.entitlement_id, "entitlements"))
            .order_by(ReviewItem.id))


def same_access(session: Session, items: Sequence[ReviewItem]) -> tuple[dict[int, list[ReviewItem]], set[int]]:
    """One row per distinct access: the items of one reviewer that are the same access of the same account
    (the same entitlement reached through two groups, or directly and through a group) and stand alike
    (the same decision, or all undecided). Returns ({first item's id: the other items}, the ids folded
    into a first item, which the inbox does not show on their own). A decision on the row decides them all.

    The other paths may lie outside the items given (the next page, another filter, the one row a decision
    answers with), so they are looked up, but only by the columns that decide it; whole items are loaded
    only for a row that merges with items not given (the page usually holds them)."""
    rows = _columns(items)
    return _same_access(session, rows, {r["id"]: i for r, i in zip(rows, items, strict=True)})


def _same_access(session: Session, items: Sequence[Columns], given: dict[int, ReviewItem]
                 ) -> tuple[dict[int, list[ReviewItem]], set[int]]:
    """`same_access` of the items' columns; `given`: {id: the item} of those items."""
    keys = {(i["campaign_id"], i["reviewer_id"], i["account_id"], i["entitlement_id"]) for i in items
            if i["reviewer_id"] is not None}
    if not keys:
        return {}, set()
    # an account's items carry one person name (launch freezes it per account), so the reviewer's index range of
    # those names holds every other path: the lookup reads those entries, not the reviewer's whole list
    names = {i["person_name"] for i in items if i["reviewer_id"] is not None}
    stmt = _same_access_statement(dialect_name(session), None in names)
    groups: dict[tuple[int, int, int, int], list[tuple[int, str | None]]] = {}
    for campaign_id, reviewer_id in {(k[0], k[1]) for k in keys}:
        pairs = {(k[2], k[3]) for k in keys if k[:2] == (campaign_id, reviewer_id)}
        # the page's accounts and entitlements, each a list (not the pairs: twice the parameters); the rows of an
        # account with another of those entitlements are then left out here
        for item_id, account_id, entitlement_id, decision in session.execute(stmt, {
                "reviewer_id": reviewer_id, "campaign_id": campaign_id,
                "names": sorted(n for n in names if n is not None),
                "accounts": sorted({p[0] for p in pairs}), "entitlements": sorted({p[1] for p in pairs})}).all():
            if (account_id, entitlement_id) in pairs:
                groups.setdefault((campaign_id, reviewer_id, account_id, entitlement_id), []).append((item_id, decision))
    alike_ids = [[item_id for item_id, _d in same] for same in groups.values()
                 if len(same) > 1 and len({d for _i, d in same}) == 1]
    if not alike_ids:
        return {}, set()
    given = dict(given)
    missing = [i for ids in alike_ids for i in ids if i not in given]
    if missing:
        given.update((i.id, i) for i in session.scalars(select(ReviewItem).where(ReviewItem.id.in_(missing))))
    merged: dict[int, list[ReviewItem]] = {}
    folded: set[int] = set()
    for ids in alike_ids:
        merged[ids[0]] = [given[i] for i in ids[1:]]
        folded |= set(ids[1:])
    return merged, folded


def alike(session: Session, item: ReviewItem) -> list[ReviewItem]:
    """The other items of `item`'s row (same_access): what a decision on the row decides with it."""
    merged, _folded = same_access(session, [item])
    for first_id, rest in merged.items():
        ids = {first_id} | {r.id for r in rest}
        if item.id in ids:
            return [row for row in (session.get(ReviewItem, i) for i in sorted(ids - {item.id})) if row is not None]
    return []


def _other_paths(items: Sequence[Columns]) -> dict[int, list[str]]:
    """{item id: the other paths (via ... or "direct") by which the same account holds the same access}, among
    the items given."""
    by_access: dict[tuple[int, int], list[Columns]] = {}
    for item in items:
        by_access.setdefault((item["account_id"], item["entitlement_id"]), []).append(item)
    out: dict[int, list[str]] = {}
    for same in by_access.values():
        if len(same) < 2:
            continue
        for item in same:
            out[item["id"]] = [o["via"] or "direct" for o in same if o["id"] != item["id"]]
    return out


class RowNotes(NamedTuple):
    """One item's notes, as its row reads them: unpacked in one step (reviews/_item_row.html), where a lookup per
    kind of note cost the template a call (a Jinja `.get(...)`: some 10,000 instructions, callgrind) five times a
    row."""

    label: str | None
    used: tuple[datetime | None] | None
    paths: list[str] | None
    merged: list[ReviewItem] | None
    revoke_note: str | None


def row_notes(session: Session, items: Sequence[ReviewItem]) -> dict[str, Any]:
    """Everything above for one page (or one row) of items: template context, in two statements (the other
    paths; the entitlements, grants and resources, read once for the app's last use, the readable names and the
    revoke notes alike). Revoke notes only for items that can still be decided (an item with an outcome belongs
    to a closed campaign, where the row offers no revoke). `row_notes`: {item id: RowNotes} of the items that
    have any, what the rows read; the notes by kind beside it."""
    items = list(items)
    rows = _columns(items)  # each column the notes read, read once per item
    merged, folded = _same_access(session, rows, {r["id"]: i for r, i in zip(rows, items, strict=True)})
    paths = _other_paths(rows)
    for first, rest in merged.items():
        paths[first] = [o.via or "direct" for o in rest]
    columns = [r for r in rows if r["outcome"] is None]
    facts = _facts(session, rows, columns)
    used, readable = _use_and_labels(rows, facts.names, facts.attributes[0])
    revoke = targets(session, columns, facts.attributes, facts.resources) if columns else {}
    by_item = {i: RowNotes(readable.get(i), used.get(i), paths.get(i), merged.get(i), revoke.get(i))
               for i in {*readable, *used, *paths, *merged, *revoke}}
    return {"revoke_notes": revoke, "last_used": used, "labels": readable, "other_paths": paths, "merged": merged,
            "folded": folded, "row_notes": by_item}
