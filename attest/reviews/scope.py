"""The scope query: which held access a campaign covers, as SQL text built from a definition's spec.

`held_cte` reads every active grant an account holds, directly or (include_inherited) through nested
groups (a recursive CTE, cycle-safe and depth-limited, keeping the path "Group A → Group B");
`scope_from` keeps the held grants the spec's scope selects (sources, resource types and names,
entitlements, privileged only) joined with the grant, entitlement, resource and source; `exclusion_sql`
names why an in-scope row gets no item (service account, orphan, identity filter, not new in a delta
campaign). `snapshot_sql` assembles them into the launch's INSERT ... SELECT into review_item.

Every function only builds text: values travel as bind parameters added to the caller's `params`.
A routed launch or preview reads each held grant's account, person and reviewer from the per-account
table of `attest.reviews.route_tables` (the `Routed` joins); without one (the exclusions, the benchmark's
raw baseline) from `account acc` and `identity idn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attest import dialects
from attest.entitlements import risk as risk_mod
from attest.entitlements.queries import MAX_DEPTH
from attest.reviews import routing

EXCLUSION_REASONS = ("orphan_excluded", "service_account_excluded", "identity_filter", "not_delta")

ITEM_COLUMNS = (
    "campaign_id", "grant_id", "account_id", "identity_id", "source_id", "resource_id", "entitlement_id",
    "person_name", "person_email", "person_department", "person_title", "person_status", "account_login",
    "account_kind", "account_last_login_at", "source_name", "source_kind", "resource_name", "resource_type",
    "entitlement_name", "privileged", "via", "via_resource_id", "granted_at", "risks", "risk_score", "stage",
    "reviewer_id", "routed_by", "decided_in_bulk", "completed", "version",
)


@dataclass
class ScopeContext:
    """What the scope query of one preview or launch is built from (`campaigns.scope_context` makes it)."""

    spec: dict[str, Any]
    definition_id: int | None
    now: datetime
    dialect: str
    fallback_id: int | None
    stages: list[routing.Stage]
    last_review_at: datetime | None
    cutoffs: risk_mod.Cutoffs
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Routed:
    """How a routed scope query reads each held grant's account: `accounts` is the per-account table
    (read as `snap`: the account and its person's snapshot, risk bits, exclusion reason, reviewer by
    person), `joins` bring the item's risk signals (`risk.risks`, `risk.score`, `risk.mask`) and the
    per-resource and per-(owner, resource) reviewers; `reviewer` and `routed_by` pick the stage's
    reviewer from them (see route_tables.RouteTables.routed)."""

    accounts: str
    joins: str
    reviewer: str
    routed_by: str


def _like_pattern(glob: str) -> str:
    out = []
    for ch in glob.lower():
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _in_list(params: dict[str, Any], prefix: str, values: list[Any]) -> str:
    names = []
    for i, v in enumerate(values):
        params[f"{prefix}{i}"] = v
        names.append(f":{prefix}{i}")
    return ", ".join(names)


def held_cte(ctx: ScopeContext, accounts: str | None = None) -> str:
    """`held(grant_id, account_id, via_resource_id, via, granted_at)`: direct and (optionally) inherited,
    for every account or only those `accounts` (a subquery) selects."""
    only = f" AND g.principal_account_id IN ({accounts})" if accounts else ""
    # a direct grant's via is the path the source names in it (an AWS role assumption), else NULL
    direct = ("SELECT g.id AS grant_id, g.principal_account_id AS account_id, CAST(NULL AS INTEGER) AS via_resource_id,"
              f" CAST(substr({risk_mod.sql_grant_via_path(ctx.dialect)}, 1, 1000) AS TEXT) AS via, g.first_seen_at AS granted_at"
              f" FROM access_grant g WHERE g.principal_type = 'account' AND g.ended_at IS NULL{only}")
    if not ctx.spec["scope"]["include_inherited"]:
        return f"WITH held AS ({direct})"
    later = "CASE WHEN g.first_seen_at > m.since THEN g.first_seen_at ELSE m.since END"
    # an account's membership of a group that holds no active grant of its own (most groups) is an item
    # of the direct part, and leads to no inherited access nor to any further group: the recursion only
    # starts from the groups that hold something (same rows, a fraction of the memberships walked)
    return f"""WITH RECURSIVE membership(account_id, group_id, depth, path, names, since) AS (
    SELECT g.principal_account_id, e.resource_id, 1, '/' || CAST(e.resource_id AS TEXT) || '/', CAST(r.name AS TEXT), g.first_seen_at
    FROM access_grant g JOIN entitlement e ON e.id = g.entitlement_id JOIN resource r ON r.id = e.resource_id
    WHERE g.principal_type = 'account' AND g.ended_at IS NULL AND e.is_membership = :true{only}
      AND e.resource_id IN (SELECT holds.principal_resource_id FROM access_grant holds
                            WHERE holds.principal_type = 'resource' AND holds.ended_at IS NULL)
  UNION ALL
    SELECT m.account_id, e.resource_id, m.depth + 1, m.path || CAST(e.resource_id AS TEXT) || '/',
           CAST(r.name || ' → ' || m.names AS TEXT), {later}
    FROM membership m
    JOIN access_grant g ON g.principal_type = 'resource' AND g.principal_resource_id = m.group_id AND g.ended_at IS NULL
    JOIN entitlement e ON e.id = g.entitlement_id AND e.is_membership = :true
    JOIN resource r ON r.id = e.resource_id
    WHERE m.depth < {MAX_DEPTH} AND m.path NOT LIKE '%/' || CAST(e.resource_id AS TEXT) || '/%'
),
member_of AS (
    SELECT account_id, group_id, MIN(names) AS names, MIN(since) AS since FROM membership GROUP BY account_id, group_id
),
held AS (
    {direct}
  UNION ALL
    SELECT g.id, m.account_id, m.group_id, m.names, {later}
    FROM member_of m
    JOIN access_grant g ON g.principal_type = 'resource' AND g.principal_resource_id = m.group_id AND g.ended_at IS NULL
)"""


def scope_from(ctx: ScopeContext, params: dict[str, Any], routed: Routed | None = None) -> str:
    """FROM/WHERE over `held` selecting the in-scope held grants (the population). With `routed`, the
    account and its person come from the per-account table `snap` (active accounts only) and the routing
    joins follow; without, from `account acc` and `identity idn`."""
    scope = ctx.spec["scope"]
    where = ["s.enabled = :true", "e.ended_at IS NULL"]
    if routed is None:
        where.append("acc.ended_at IS NULL")
    if scope["sources"]:
        where.append(f"s.name IN ({_in_list(params, 'src', scope['sources'])})")
    if scope["resource_types"]:
        where.append(f"res.type IN ({_in_list(params, 'rtype', scope['resource_types'])})")
    if scope["resource_names"]:
        likes = []
        for i, pattern in enumerate(scope["resource_names"]):
            params[f"rname{i}"] = _like_pattern(pattern)
            likes.append(f"lower(res.name) LIKE :rname{i} ESCAPE '\\'")
        where.append("(" + " OR ".join(likes) + ")")
    if scope["entitlements"]:
        where.append(f"e.name IN ({_in_list(params, 'ent', scope['entitlements'])})")
    if scope["privileged_only"]:
        where.append("e.privileged = :true")
    if routed is None:
        accounts = " JOIN account acc ON acc.id = h.account_id LEFT JOIN identity idn ON idn.id = acc.identity_id"
    else:
        accounts = f" JOIN {routed.accounts} snap ON snap.account_id = h.account_id {routed.joins}"
    return (" FROM held h"
            " JOIN access_grant g ON g.id = h.grant_id"
            " JOIN entitlement e ON e.id = g.entitlement_id"
            " LEFT JOIN resource res ON res.id = e.resource_id"
            " JOIN source s ON s.id = g.source_id"
            + accounts + " WHERE " + " AND ".join(where))


def exclusion_sql(ctx: ScopeContext, params: dict[str, Any], account_level: bool = False) -> str | None:
    """A CASE naming why an in-scope row gets no item (NULL: it gets one), or None when nothing is excluded.
    account_level: only the reasons that depend on the account and its person (not on the grant)."""
    scope = ctx.spec["scope"]
    branches = []
    if not scope["include_service_accounts"]:  # first: a service account with no person is not an orphan
        branches.append("WHEN acc.kind = 'service' OR idn.kind = 'service' THEN 'service_account_excluded'")
    if not scope["include_orphaned"]:
        branches.append("WHEN acc.identity_id IS NULL THEN 'orphan_excluded'")
    ident = scope["identity"]
    conds = []
    if ident["department"]:
        conds.append(f"idn.department IN ({_in_list(params, 'dept', ident['department'])})")
    if ident["status"]:
        conds.append(f"idn.status IN ({_in_list(params, 'istatus', ident['status'])})")
    if ident["kind"]:
        conds.append(f"idn.kind IN ({_in_list(params, 'ikind', ident['kind'])})")
    if conds:
        branches.append(f"WHEN acc.identity_id IS NOT NULL AND NOT ({' AND '.join(conds)}) THEN 'identity_filter'")
    if not account_level:
        branches += _grant_exclusion_branches(ctx)
    return _case(branches)


def _grant_exclusion_branches(ctx: ScopeContext) -> list[str]:
    """The exclusion reasons that depend on the grant, not on the account (they come last)."""
    if ctx.spec["scope"]["delta"] and ctx.last_review_at is not None:
        return ["WHEN h.granted_at <= :risk_last_review_at THEN 'not_delta'"]
    return []


def _case(branches: list[str]) -> str | None:
    return "CASE " + " ".join(branches) + " ELSE NULL END" if branches else None


def routed_exclusion_sql(ctx: ScopeContext) -> str:
    """Why an in-scope row gets no item (NULL: it gets one) over the per-account table `snap`: the same
    answer as exclusion_sql, whose account reasons come first."""
    by_grant = _case(_grant_exclusion_branches(ctx))
    return f"COALESCE(snap.reason, {by_grant})" if by_grant else "snap.reason"


def _item_values(ctx: ScopeContext, routed: Routed | None) -> str:
    """The item's columns over the scope query: from the route tables, or (routed None: the benchmark's
    raw baseline) straight from account and identity with no reviewer or risks."""
    if routed is not None:
        reviewer, routed_by = routed.reviewer, routed.routed_by
        account = ("snap.account_id", "snap.identity_id", "snap.person_name", "snap.person_email",
                   "snap.person_department", "snap.person_title", "snap.person_status", "snap.account_login",
                   "snap.account_kind", "snap.account_last_login_at")
        risks, score = "risk.risks", "risk.score"
    else:
        reviewer, routed_by = "CAST(NULL AS INTEGER)", "CAST(NULL AS VARCHAR(40))"
        account = ("acc.id", "acc.identity_id", "idn.display_name", "idn.email", "idn.department", "idn.title",
                   "idn.status", "COALESCE(acc.login, acc.email, acc.display_name, acc.external_id)", "acc.kind",
                   "acc.last_login_at")
        risks = dialects.empty_json_array(ctx.dialect)
        score = "0"
    a = dict(zip(("id", "identity", "name", "email", "dept", "title", "status", "login", "kind", "login_at"),
                 account, strict=True))
    return ", ".join((
        ":campaign_id", "h.grant_id", a["id"], a["identity"], "g.source_id", "e.resource_id", "e.id",
        a["name"], a["email"], a["dept"], a["title"], a["status"], a["login"], a["kind"], a["login_at"],
        "s.name", "s.kind", "res.name", "res.type", "e.name", "e.privileged", "h.via", "h.via_resource_id",
        "h.granted_at", risks, score, "0", reviewer, routed_by, ":false", ":false", "1",
    ))


def snapshot_sql(ctx: ScopeContext, params: dict[str, Any], table: str = "review_item", routed: Routed | None = None,
                 raw: bool = False, inbox_order: bool = False) -> str:
    """The INSERT ... SELECT that writes the items (raw=True: the same rows without routing, risks or
    exclusions, for the benchmark's baseline).

    inbox_order (routed only): insert the items by reviewer, then person, the order of review_item's inbox
    index (reviewer, campaign, person, id), where the engine gains from it (dialects.in_index_order:
    SQLite). A launch into a table whose indexes stay in place then grows that index, spread over every
    campaign's items, a reviewer's run at a time at the end of the reviewer's range instead of at a
    random place per item, which costs less than the sort (SQLite, 235k items into a table holding as
    many: 3.0 -> 2.4 s CPU for the statement, the campaign/person index of migration 0016 included). A
    launch that builds the indexes after the insert (db.drop_indexes_for_bulk_load) gains nothing from it."""
    params.setdefault("false", False)
    routed = None if raw else routed
    frm = scope_from(ctx, params, routed)
    if routed is not None:
        frm += f" AND {routed_exclusion_sql(ctx)} IS NULL"
        if inbox_order:
            frm += dialects.in_index_order(ctx.dialect, f"{routed.reviewer}, snap.person_name")
    return f"{held_cte(ctx)} INSERT INTO {table} ({', '.join(ITEM_COLUMNS)}) SELECT {_item_values(ctx, routed)}{frm}"
