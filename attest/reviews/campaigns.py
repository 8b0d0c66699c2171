"""Campaign lifecycle: create (draft), preview, launch (set-based snapshot), route to a stage, close, cancel.

Launch freezes the in-scope access into ReviewItems with one INSERT ... SELECT: the active grants of
accounts, plus (include_inherited) the grants groups hold expanded to every member through nested groups
(a recursive CTE, cycle-safe and depth-limited, keeping the path "Group A → Group B"), joined with
account, identity, entitlement, resource and source for the frozen copy, with the risk signals computed
in SQL (`attest.entitlements.risk`). Stage-0 reviewers come from `attest.reviews.routing` (the single
source of the rules): it is run in Python once per identity, per resource and per (owner, resource)
pair, into temporary tables the INSERT joins, so no item is visited in Python.

Population reconciliation: every in-scope held grant becomes an item or a CampaignExclusion with its
reason, and `Campaign.population` records in_scope = items + excluded.

Every state change is an AuditEvent with campaign_id set. Service functions never commit.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from attest.audit.log import record as audit
from attest.db import (
    copy_rows,
    drop_indexes_for_bulk_load,
    rebuild_indexes,
    restore_fk_triggers,
    skip_fk_triggers,
    utcnow,
)
from attest.entitlements import risk as risk_mod
from attest.entitlements.models import Account, Identity, Resource, ResourceOwner, Source, SyncRun
from attest.entitlements.queries import MAX_DEPTH
from attest.reviews import eligibility, routing
from attest.reviews.definitions import DefinitionError, check_references, find_identity
from attest.reviews.models import (
    Campaign,
    CampaignDefinition,
    CampaignExclusion,
    Decision,
    Remediation,
    ReviewerSignoff,
    ReviewItem,
)

EXCLUSION_REASONS = ("orphan_excluded", "service_account_excluded", "identity_filter", "not_delta")


class CampaignError(ValueError):
    """A lifecycle step was refused; the message is for the user and nothing was changed."""


# --- context ------------------------------------------------------------------------------------------


@dataclass
class _Context:
    spec: dict[str, Any]
    definition_id: int | None
    now: datetime
    dialect: str
    fallback_id: int | None
    stages: list[routing.Stage]
    last_review_at: datetime | None
    cutoffs: risk_mod.Cutoffs
    params: dict[str, Any] = field(default_factory=dict)


def _resolve_stages(session: Session, spec: Mapping[str, Any]) -> tuple[int | None, list[routing.Stage]]:
    try:
        check_references(session, spec)
    except DefinitionError as exc:
        raise CampaignError(f"a reviewer or source the definition names does not exist: {exc}") from None
    fallback = find_identity(session, spec["fallback_reviewer"]) if spec.get("fallback_reviewer") else None
    stages = []
    for st in spec["stages"]:
        ident = find_identity(session, st["identity"]) if st.get("identity") else None
        stages.append(routing.Stage(st["reviewer"], ident.id if ident else None))
    return (fallback.id if fallback else None), stages


def last_review_at(session: Session, definition_id: int | None) -> datetime | None:
    """When this definition's last closed campaign was launched (the line for delta and 'new' access)."""
    if definition_id is None:
        return None
    return session.scalar(
        select(func.max(Campaign.launched_at)).where(Campaign.definition_id == definition_id,
                                                     Campaign.status == "closed")
    )


SNAPSHOT_TABLES = ("access_grant", "account", "identity", "entitlement", "resource", "resource_owner", "source")


def _refresh_planner_stats(session: Session) -> None:
    """PostgreSQL: ANALYZE the tables the snapshot joins when a sync changed them a lot since their last
    analyze, or they have no statistics (right after a big first sync autovacuum may not have run, and a
    plan made on default estimates nests loops over a million rows)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    rows = session.execute(text(
        "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = ANY(:names)"
        " AND (s.n_mod_since_analyze > 0.1 * GREATEST(s.n_live_tup, 1000)"
        " OR (s.n_live_tup > 1000 AND (c.reltuples < 0.5 * s.n_live_tup"
        # an ANALYZE whose transaction rolled back (a preview) reset the counters but left no statistics
        "   OR NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = s.relname))))"),
        {"names": list(SNAPSHOT_TABLES)}).all()
    for (name,) in rows:
        session.execute(text(f"ANALYZE {name}"))


def _context(session: Session, spec: dict[str, Any], definition_id: int | None, now: datetime | None) -> _Context:
    now = now or utcnow()
    _refresh_planner_stats(session)
    fallback_id, stages = _resolve_stages(session, spec)
    last = last_review_at(session, definition_id)
    cutoffs = risk_mod.Cutoffs.for_spec(now, spec.get("risk") or {}, last)
    dialect = session.get_bind().dialect.name
    ctx = _Context(spec, definition_id, now, dialect, fallback_id, stages, last, cutoffs)
    ctx.params = {"true": True, **risk_mod.sql_params(dialect, cutoffs)}
    return ctx


# --- routing tables -------------------------------------------------------------------------------


@dataclass
class _Directory:
    manager: dict[int, int | None]
    eligible_ids: set[int]
    owners: dict[int, set[int]]

    def eligible(self, identity_id: int) -> bool:
        return identity_id in self.eligible_ids

    def manager_of(self, identity_id: int) -> int | None:
        return self.manager.get(identity_id)


def _directory(session: Session) -> _Directory:
    manager: dict[int, int | None] = {}
    eligible: set[int] = set()
    for iid, mid, status, kind, ended in session.execute(
        select(Identity.id, Identity.manager_id, Identity.status, Identity.kind, Identity.ended_at)
    ):
        manager[iid] = mid
        if eligibility.can_review_at_all(status, kind, ended):
            eligible.add(iid)
    owners: dict[int, set[int]] = defaultdict(set)
    rows = session.execute(
        select(ResourceOwner.resource_id, func.coalesce(ResourceOwner.identity_id, Account.identity_id))
        .outerjoin(Account, Account.id == ResourceOwner.account_id)
        .where((Account.id.is_(None)) | (Account.ended_at.is_(None)))
    )
    for rid, iid in rows:
        if iid is not None:
            owners[rid].add(iid)
    return _Directory(manager, eligible, dict(owners))


def _owners_of(session: Session, resource_id: int | None) -> set[int]:
    if resource_id is None:
        return set()
    rows = session.execute(
        select(func.coalesce(ResourceOwner.identity_id, Account.identity_id))
        .outerjoin(Account, Account.id == ResourceOwner.account_id)
        .where(ResourceOwner.resource_id == resource_id, (Account.id.is_(None)) | (Account.ended_at.is_(None)))
    )
    return {iid for (iid,) in rows if iid is not None}


class _RouteTables:
    """Temporary tables with the stage's routing results: per identity, per resource, per (identity, resource)."""

    def __init__(self, session: Session, ctx: _Context, stage_index: int = 0) -> None:
        self.session = session
        self.ctx = ctx
        self.stage = ctx.stages[stage_index]
        suffix = uuid.uuid4().hex[:10]
        self.ri, self.rr, self.rp = f"tmp_route_i_{suffix}", f"tmp_route_r_{suffix}", f"tmp_route_p_{suffix}"
        self.rm, self.ra = f"tmp_risk_{suffix}", f"tmp_route_a_{suffix}"
        self.created: list[str] = []

    def __enter__(self) -> _RouteTables:
        ctx, stage, session = self.ctx, self.stage, self.session
        d = _directory(session)
        policy = ctx.spec.get("self_review", "reassign")

        def run(person: int | None, owners: set[int]) -> tuple[int | None, str | None]:
            return routing.route(person_id=person, manager_id=d.manager.get(person) if person else None,
                                 owner_ids=owners, stage=stage, fallback_id=ctx.fallback_id, self_review=policy,
                                 manager_of=d.manager_of, eligible=d.eligible)

        resource_ids = [rid for (rid,) in session.execute(select(Resource.id))]
        per_identity: list[tuple] = []
        if stage.kind in ("manager", "identity"):
            per_identity = [(iid, *run(iid, set())) for iid in d.manager]
        per_resource = [(0, *run(None, set()))] + [(rid, *run(None, d.owners.get(rid, set()))) for rid in resource_ids]
        pairs: list[tuple] = []
        if stage.kind == "resource_owner":
            keys = {(iid, rid) for rid, owners in d.owners.items() for iid in owners}
            if ctx.fallback_id is not None:
                keys |= {(ctx.fallback_id, rid) for rid in [0, *resource_ids]}
            pairs = [(iid, rid, *run(iid, d.owners.get(rid, set()))) for iid, rid in keys]
        self._create(self.ri, "identity_id INTEGER PRIMARY KEY, reviewer_id INTEGER, routed_by VARCHAR(40)",
                     ("identity_id", "reviewer_id", "routed_by"), per_identity)
        self._create(self.rr, "resource_id INTEGER PRIMARY KEY, reviewer_id INTEGER, routed_by VARCHAR(40)",
                     ("resource_id", "reviewer_id", "routed_by"), per_resource)
        self._create(self.rp, "identity_id INTEGER, resource_id INTEGER, reviewer_id INTEGER, routed_by VARCHAR(40),"
                     " PRIMARY KEY (identity_id, resource_id)",
                     ("identity_id", "resource_id", "reviewer_id", "routed_by"), pairs)
        json_type = "JSONB" if ctx.dialect == "postgresql" else "TEXT"
        self._create(self.rm, f"mask INTEGER PRIMARY KEY, risks {json_type}, score INTEGER", ("mask", "risks", "score"),
                     risk_mod.mask_table())
        self._create_accounts()
        return self

    def _create_accounts(self) -> None:
        """Per active account, once, what a million items would otherwise each join and compute again: the
        snapshot of the account and its person, the account's own risk bits, the reason (if any) the
        account's access is excluded, and its stage reviewer when routed by person."""
        ctx = self.ctx
        params = dict(ctx.params)
        bits = risk_mod.sql_account_bits(risk_mod.sql_conditions(ctx.dialect, ctx.cutoffs))
        reason = _exclusion_sql(ctx, params, account_level=True) or "CAST(NULL AS VARCHAR(40))"
        by_person = self.stage.kind in ("manager", "identity")
        reviewer, routed_by = ("ri.reviewer_id", "ri.routed_by") if by_person else (
            "CAST(NULL AS INTEGER)", "CAST(NULL AS VARCHAR(40))")
        join = f" LEFT JOIN {self.ri} ri ON ri.identity_id = acc.identity_id" if by_person else ""
        on_commit = " ON COMMIT DROP" if ctx.dialect == "postgresql" else ""
        self.session.execute(text(
            f"CREATE TEMPORARY TABLE {self.ra}{on_commit} AS SELECT acc.id AS account_id, acc.identity_id,"
            " idn.display_name AS person_name, idn.email AS person_email, idn.department AS person_department,"
            " idn.title AS person_title, idn.status AS person_status,"
            " COALESCE(acc.login, acc.email, acc.display_name, acc.external_id) AS account_login,"
            f" acc.kind AS account_kind, acc.last_login_at AS account_last_login_at, {bits} AS bits,"
            f" {reason} AS reason, {reviewer} AS reviewer_id, {routed_by} AS routed_by"
            f" FROM account acc LEFT JOIN identity idn ON idn.id = acc.identity_id{join} WHERE acc.ended_at IS NULL"),
            params)
        self.created.append(self.ra)
        self.session.execute(text(f"CREATE UNIQUE INDEX ix_{self.ra} ON {self.ra} (account_id)"))
        if ctx.dialect == "postgresql":
            self.session.execute(text(f"ANALYZE {self.ra}"))

    def _create(self, name: str, columns: str, cols: tuple[str, ...], rows: list[tuple]) -> None:
        on_commit = " ON COMMIT DROP" if self.ctx.dialect == "postgresql" else ""
        self.session.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns}){on_commit}"))
        self.created.append(name)
        if not rows:
            return
        copy_rows(self.session.connection(), name, cols, rows)
        if self.ctx.dialect == "postgresql":
            self.session.execute(text(f"ANALYZE {name}"))

    def excluded_accounts(self, ids: list[int]) -> str:
        """A temporary table of account ids (the accounts whose every in-scope grant is excluded)."""
        name = self.rm.replace("tmp_risk_", "tmp_excl_")
        self._create(name, "account_id INTEGER PRIMARY KEY", ("account_id",), [(i,) for i in ids])
        return name

    def drop(self) -> None:
        for name in self.created:
            self.session.execute(text(f"DROP TABLE IF EXISTS {name}"))
        self.created = []

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.drop()

    def reviewer_sql(self) -> tuple[str, str, str]:
        """(joins, reviewer expression, routed_by expression) for the scope query over the per-account
        table `a` (see _scope_from); the joins also bring the item's risk signals as `rm.risks`, `rm.score`
        and `rm.mask`."""
        conds = risk_mod.sql_conditions(self.ctx.dialect, self.ctx.cutoffs)
        joins = (f" LEFT JOIN {self.rm} rm ON rm.mask = {risk_mod.sql_item_mask(conds, 'a.bits')}"
                 f" LEFT JOIN {self.rr} rr ON rr.resource_id = COALESCE(e.resource_id, 0)")
        if self.stage.kind == "resource_owner":
            joins += (f" LEFT JOIN {self.rp} rp ON rp.identity_id = a.identity_id"
                      f" AND rp.resource_id = COALESCE(e.resource_id, 0)")
            pick = "CASE WHEN rp.identity_id IS NOT NULL THEN rp.{c} ELSE rr.{c} END"
        else:
            pick = "CASE WHEN a.identity_id IS NULL THEN rr.{c} ELSE a.{c} END"
        return joins, pick.format(c="reviewer_id"), pick.format(c="routed_by")


# --- the scope query ----------------------------------------------------------------------------------


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


def _held_cte(ctx: _Context, accounts: str | None = None) -> str:
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
    return f"""WITH RECURSIVE membership(account_id, group_id, depth, path, names, since) AS (
    SELECT g.principal_account_id, e.resource_id, 1, '/' || CAST(e.resource_id AS TEXT) || '/', CAST(r.name AS TEXT), g.first_seen_at
    FROM access_grant g JOIN entitlement e ON e.id = g.entitlement_id JOIN resource r ON r.id = e.resource_id
    WHERE g.principal_type = 'account' AND g.ended_at IS NULL AND e.is_membership = :true{only}
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


def _scope_from(ctx: _Context, params: dict[str, Any], route: _RouteTables | None = None) -> str:
    """FROM/WHERE over `held` selecting the in-scope held grants (the population). With `route`, the
    account and its person come from the route's per-account table `a` (active accounts only), and the
    route's joins follow; without, from `account acc` and `identity idn`, and `{route_joins}` is left to fill."""
    scope = ctx.spec["scope"]
    where = ["s.enabled = :true", "e.ended_at IS NULL"]
    if route is None:
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
    if route is None:
        accounts = " JOIN account acc ON acc.id = h.account_id LEFT JOIN identity idn ON idn.id = acc.identity_id {route_joins}"
    else:
        accounts = f" JOIN {route.ra} a ON a.account_id = h.account_id {route.reviewer_sql()[0]}"
    return (" FROM held h"
            " JOIN access_grant g ON g.id = h.grant_id"
            " JOIN entitlement e ON e.id = g.entitlement_id"
            " LEFT JOIN resource res ON res.id = e.resource_id"
            " JOIN source s ON s.id = g.source_id"
            + accounts + " WHERE " + " AND ".join(where))


def _exclusion_sql(ctx: _Context, params: dict[str, Any], account_level: bool = False) -> str | None:
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


def _grant_exclusion_branches(ctx: _Context) -> list[str]:
    """The exclusion reasons that depend on the grant, not on the account (they come last)."""
    if ctx.spec["scope"]["delta"] and ctx.last_review_at is not None:
        return ["WHEN h.granted_at <= :risk_last_review_at THEN 'not_delta'"]
    return []


def _case(branches: list[str]) -> str | None:
    return "CASE " + " ".join(branches) + " ELSE NULL END" if branches else None


def _routed_exclusion_sql(ctx: _Context) -> str:
    """Why an in-scope row gets no item (NULL: it gets one) over the per-account table `a`: the same
    answer as _exclusion_sql, whose account reasons come first."""
    by_grant = _case(_grant_exclusion_branches(ctx))
    return f"COALESCE(a.reason, {by_grant})" if by_grant else "a.reason"


ITEM_COLUMNS = (
    "campaign_id", "grant_id", "account_id", "identity_id", "source_id", "resource_id", "entitlement_id",
    "person_name", "person_email", "person_department", "person_title", "person_status", "account_login",
    "account_kind", "account_last_login_at", "source_name", "source_kind", "resource_name", "resource_type",
    "entitlement_name", "privileged", "via", "via_resource_id", "granted_at", "risks", "risk_score", "stage",
    "reviewer_id", "routed_by", "decided_in_bulk", "completed", "version",
)


def _item_values(ctx: _Context, route: _RouteTables | None) -> str:
    """The item's columns over the scope query: from the route's tables, or (route None: the benchmark's
    raw baseline) straight from account and identity with no reviewer or risks."""
    if route is not None:
        _, reviewer, routed_by = route.reviewer_sql()
        account = ("a.account_id", "a.identity_id", "a.person_name", "a.person_email", "a.person_department",
                   "a.person_title", "a.person_status", "a.account_login", "a.account_kind", "a.account_last_login_at")
        risks, score = "rm.risks", "rm.score"
    else:
        reviewer, routed_by = "CAST(NULL AS INTEGER)", "CAST(NULL AS VARCHAR(40))"
        account = ("acc.id", "acc.identity_id", "idn.display_name", "idn.email", "idn.department", "idn.title",
                   "idn.status", "COALESCE(acc.login, acc.email, acc.display_name, acc.external_id)", "acc.kind",
                   "acc.last_login_at")
        risks = "CAST('[]' AS JSONB)" if ctx.dialect == "postgresql" else "'[]'"
        score = "0"
    a = dict(zip(("id", "identity", "name", "email", "dept", "title", "status", "login", "kind", "login_at"),
                 account, strict=True))
    return ", ".join((
        ":campaign_id", "h.grant_id", a["id"], a["identity"], "g.source_id", "e.resource_id", "e.id",
        a["name"], a["email"], a["dept"], a["title"], a["status"], a["login"], a["kind"], a["login_at"],
        "s.name", "s.kind", "res.name", "res.type", "e.name", "e.privileged", "h.via", "h.via_resource_id",
        "h.granted_at", risks, score, "0", reviewer, routed_by, ":false", ":false", "1",
    ))


@contextmanager
def _whole_population_plan(session: Session) -> Iterator[None]:
    """PostgreSQL: plan the scope query for what it is, a read of every in-scope grant.
    - No nested loops: the planner cannot estimate the recursive group-membership CTE (thousands of rows
      estimated, a million read) and so looks routing and grants up row by row; hash joins read each
      table once (the launch's query at a million items: 23 s -> 14 s).
    - No JIT: the same misestimate makes the query look costly enough to compile with inlining and
      optimization, which takes longer than it saves here (about a second at a million items).
    Back to the defaults right after; a rollback undoes them too."""
    pg = session.get_bind().dialect.name == "postgresql"
    if pg:
        session.execute(text("SET LOCAL enable_nestloop = off"))
        session.execute(text("SET LOCAL jit = off"))
    yield
    if pg:
        session.execute(text("SET LOCAL enable_nestloop TO DEFAULT"))
        session.execute(text("SET LOCAL jit TO DEFAULT"))


def snapshot_sql(ctx: _Context, params: dict[str, Any], table: str = "review_item", route: _RouteTables | None = None,
                 raw: bool = False) -> str:
    """The INSERT ... SELECT that writes the items (raw=True: the same rows without routing, risks or
    exclusions, for the benchmark's baseline)."""
    params.setdefault("false", False)
    route = None if raw else route
    frm = _scope_from(ctx, params, route)
    if route is None:
        frm = frm.format(route_joins="")
    else:
        frm += f" AND {_routed_exclusion_sql(ctx)} IS NULL"
    return f"{_held_cte(ctx)} INSERT INTO {table} ({', '.join(ITEM_COLUMNS)}) SELECT {_item_values(ctx, route)}{frm}"


# --- public API -----------------------------------------------------------------------------------


def _definition(session: Session, definition_id: int) -> CampaignDefinition:
    definition = session.get(CampaignDefinition, definition_id)
    if definition is None:
        raise CampaignError(f"no campaign definition {definition_id}")
    return definition


def _campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=Campaign)
    campaign = session.scalars(stmt).first()
    if campaign is None:
        raise CampaignError(f"no campaign {campaign_id}")
    return campaign


def create_campaign(session: Session, definition_id: int, actor: str, name: str | None = None) -> Campaign:
    """A draft campaign from a definition (audited `campaign.create`)."""
    definition = _definition(session, definition_id)
    now = utcnow()
    campaign = Campaign(
        definition_id=definition.id, name=(name or "").strip() or f"{definition.name} — {now:%Y-%m-%d}",
        status="draft", spec=dict(definition.spec), owner_user_id=definition.owner_user_id, created_by=actor,
        created_at=now, population={}, sync_runs=[], summary={},
    )
    session.add(campaign)
    session.flush()
    audit(session, actor=actor, action="campaign.create", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, after={"name": campaign.name, "definition_id": definition.id})
    return campaign


def preview(session: Session, definition_or_campaign: CampaignDefinition | Campaign | Mapping[str, Any] | int,
            now: datetime | None = None) -> dict[str, Any]:
    """What a launch would produce now: items, items per reviewer, unroutable items, self-review
    reassignments, risk counts and exclusions by reason. Accepts a definition, a campaign, a definition
    id, or a spec dict (a form being edited). Writes nothing that outlives the call."""
    obj = definition_or_campaign
    if isinstance(obj, int):
        obj = _definition(session, obj)
    if isinstance(obj, Campaign):
        if obj.status != "draft":
            raise CampaignError(f"campaign {obj.id} is {obj.status}; preview is for drafts (its items are launched)")
        spec, definition_id = (obj.definition.spec if obj.definition else obj.spec), obj.definition_id
    elif isinstance(obj, CampaignDefinition):
        spec, definition_id = obj.spec, obj.id
    elif isinstance(obj, Mapping):
        spec, definition_id = dict(obj), None
    else:
        raise CampaignError("preview needs a definition, a campaign or a spec")
    ctx = _context(session, spec, definition_id, now)
    params = dict(ctx.params)
    with _RouteTables(session, ctx) as route:
        _, reviewer, routed_by = route.reviewer_sql()
        sql = (f"{_held_cte(ctx)} SELECT x_reason, x_reviewer, x_routed_by, x_mask, COUNT(*) AS n"
               f" FROM (SELECT {_routed_exclusion_sql(ctx)} AS x_reason, {reviewer} AS x_reviewer,"
               f" {routed_by} AS x_routed_by, rm.mask AS x_mask"
               + _scope_from(ctx, params, route) + ") q GROUP BY x_reason, x_reviewer, x_routed_by, x_mask")
        with _whole_population_plan(session):
            rows = session.execute(text(sql), params).all()
    per_reviewer: dict[int, int] = defaultdict(int)
    excluded: dict[str, int] = defaultdict(int)
    risk_counts = dict.fromkeys(risk_mod.RISKS, 0)
    items = unroutable = self_review = 0
    routed_by_counts: dict[str, int] = defaultdict(int)
    for row in rows:
        m = row._mapping
        if m["x_reason"] is not None:
            excluded[m["x_reason"]] += int(m["n"])
            continue
        n = int(m["n"])
        items += n
        if m["x_reviewer"] is None:
            unroutable += n
        else:
            per_reviewer[int(m["x_reviewer"])] += n
            routed_by_counts[m["x_routed_by"]] += n
        if m["x_routed_by"] == "self_review":
            self_review += n
        for r in risk_mod.from_mask(int(m["x_mask"])):
            risk_counts[r] += n
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(list(per_reviewer))))} if per_reviewer else {}
    reviewers = sorted(
        ({"reviewer_id": rid, "name": people[rid].display_name if rid in people else None,
          "email": people[rid].email if rid in people else None, "items": n} for rid, n in per_reviewer.items()),
        key=lambda r: (-r["items"], r["name"] or ""),
    )
    n_excluded = sum(excluded.values())
    return {
        "items": items, "in_scope": items + n_excluded, "excluded": n_excluded,
        "excluded_by_reason": dict(sorted(excluded.items())), "per_reviewer": reviewers,
        "reviewers": len(reviewers), "unroutable": unroutable, "self_review_reassigned": self_review,
        "routed_by": dict(sorted(routed_by_counts.items())), "risk_counts": risk_counts,
        "fallback_reviewer": spec.get("fallback_reviewer"), "last_review_at": ctx.last_review_at,
        "stages": [s["reviewer"] for s in spec["stages"]],
    }


def _sync_runs_used(session: Session, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    stmt = select(Source).where(Source.enabled.is_(True)).order_by(Source.name)
    if spec["scope"]["sources"]:
        stmt = stmt.where(Source.name.in_(spec["scope"]["sources"]))
    out = []
    for source in session.scalars(stmt):
        run = session.get(SyncRun, source.last_success_run_id) if source.last_success_run_id else None
        out.append({
            "source": source.name, "source_id": source.id, "kind": source.kind,
            "run_id": run.id if run else None,
            "finished_at": run.finished_at.isoformat() if run and run.finished_at else None,
            "status": run.status if run else "never_synced",
            "stats": run.stats if run else {},
        })
    return out


def launch(session: Session, campaign_id: int, actor: str, now: datetime | None = None) -> Campaign:
    """Snapshot the in-scope access into items, route them to stage-0 reviewers, and start the clock.

    Refused (nothing written) when the campaign is not a draft, when a named reviewer no longer exists,
    or when items could not be routed and there is no fallback reviewer.
    """
    now = now or utcnow()
    campaign = _campaign(session, campaign_id, lock=True)
    if campaign.status != "draft":
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only a draft can be launched")
    definition = session.get(CampaignDefinition, campaign.definition_id) if campaign.definition_id else None
    spec = dict(definition.spec) if definition is not None else dict(campaign.spec)
    ctx = _context(session, spec, campaign.definition_id, now)
    params = dict(ctx.params)
    params["campaign_id"] = campaign.id
    with session.begin_nested(), _RouteTables(session, ctx) as route:  # an error leaves nothing behind
        skipping = skip_fk_triggers(session)
        # about one item per active grant: the first large campaign builds review_item's indexes after
        rebuild = drop_indexes_for_bulk_load(
            session, ReviewItem.__table__, session.scalar(text("SELECT COUNT(*) FROM access_grant WHERE ended_at IS NULL")),
            keep=("ix_review_item_co_reviewer",))  # only escalated items enter it; none is at launch
        with _whole_population_plan(session):
            inserted = session.execute(text(snapshot_sql(ctx, params, route=route)), params).rowcount
        rebuild_indexes(session, rebuild)
        # items the eligibility rule left to nobody wait in the admin queue (routed_by admin_queue); items
        # with no reviewer at all mean the definition lacks a usable fallback reviewer: refused
        unroutable = session.scalar(
            select(func.count()).select_from(ReviewItem)
            .where(ReviewItem.reviewer_id.is_(None), ReviewItem.routed_by.is_(None),
                   ReviewItem.campaign_id == campaign.id))
        if unroutable:
            count = f"{unroutable:,} item is" if unroutable == 1 else f"{unroutable:,} items are"
            if ctx.fallback_id is None:
                raise CampaignError(
                    f"{count} unroutable (no manager, no resource owner) and the definition has no "
                    "fallback_reviewer; set fallback_reviewer to an identity's e-mail and launch again")
            raise CampaignError(
                f"{count} unroutable and the fallback reviewer ({spec['fallback_reviewer']}) cannot review "
                "(left, terminated or not a person); choose another fallback_reviewer")
        excl = _exclusion_sql(ctx, params)
        if excl:
            # when every reason is about the account or its person, only those accounts' access is read again
            by_account = _exclusion_sql(ctx, params, account_level=True)
            accounts = None
            if by_account == excl:
                ids = session.scalars(text(
                    "SELECT acc.id FROM account acc LEFT JOIN identity idn ON idn.id = acc.identity_id"
                    f" WHERE acc.ended_at IS NULL AND ({excl}) IS NOT NULL"), params).all()
                total = session.scalar(text("SELECT COUNT(*) FROM account WHERE ended_at IS NULL")) or 0
                if ids and len(ids) <= 0.2 * total:  # few: read only their access (a temp table the planner sizes)
                    accounts = f"SELECT account_id FROM {route.excluded_accounts(ids)}"
                elif not ids:
                    excl = None
        if excl:
            sql = (f"{_held_cte(ctx, accounts)} INSERT INTO campaign_exclusion (campaign_id, grant_id, account_id, reason)"
                   f" SELECT :campaign_id, h.grant_id, acc.id, {excl}"
                   + _scope_from(ctx, params).format(route_joins="") + f" AND ({excl}) IS NOT NULL")
            session.execute(text(sql), params)
        if skipping:
            restore_fk_triggers(session)
        route.drop()
    excluded = {
        reason: int(n) for reason, n in session.execute(
            select(CampaignExclusion.reason, func.count()).where(CampaignExclusion.campaign_id == campaign.id)
            .group_by(CampaignExclusion.reason))
    }
    items = int(inserted) if inserted is not None and inserted >= 0 else session.scalar(
        select(func.count()).select_from(ReviewItem).where(ReviewItem.campaign_id == campaign.id))
    campaign.spec = spec
    campaign.population = {
        "in_scope": items + sum(excluded.values()), "items": items, "excluded": sum(excluded.values()),
        "excluded_by_reason": dict(sorted(excluded.items())),
        "last_review_at": ctx.last_review_at.isoformat() if ctx.last_review_at else None,
        "delta": bool(spec["scope"]["delta"]),
    }
    campaign.sync_runs = _sync_runs_used(session, spec)
    campaign.status = "active"
    campaign.launched_at = now
    campaign.due_at = now + timedelta(days=int(spec["timing"]["duration_days"]))
    if definition is not None:
        definition.last_launched_at = now
    session.flush()
    audit(session, actor=actor, action="campaign.launch", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": "draft"},
          after={"status": "active", "due_at": campaign.due_at.isoformat(), "population": campaign.population,
                 "sync_runs": [{k: r[k] for k in ("source", "run_id", "finished_at", "status")} for r in campaign.sync_runs]})
    return campaign


def launch_definition(session: Session, definition_id: int, actor: str, now: datetime | None = None,
                      name: str | None = None) -> Campaign:
    """Create a campaign from a definition and launch it (the CLI's `launch DEF_ID`, scheduled launches)."""
    campaign = create_campaign(session, definition_id, actor, name=name)
    return launch(session, campaign.id, actor, now=now)


def route_item_to_stage(session: Session, item: ReviewItem, stage: int) -> None:
    """Move an item to `stage` and set its reviewer for that stage with the same rules as launch (self-review,
    fallback). The decision fields are the caller's (decisions.decide); an item nobody can take at that
    stage keeps reviewer None with routed_by 'admin_queue' for an admin to assign."""
    campaign = session.get(Campaign, item.campaign_id)
    if campaign is None:
        raise CampaignError(f"no campaign {item.campaign_id}")
    spec = campaign.spec
    if not 0 <= stage < len(spec["stages"]):
        raise CampaignError(f"campaign {campaign.id} has {len(spec['stages'])} stages; there is no stage {stage + 1}")
    # resolved once per campaign and session: a bulk approval moves thousands of items to the next stage
    cache = session.info.setdefault("attest.route_stages", {})
    if campaign.id not in cache:
        cache[campaign.id] = _resolve_stages(session, spec)
    fallback_id, stages = cache[campaign.id]
    d = eligibility.Directory(session)
    manager_of, eligible = d.manager_of, d.eligible

    reviewer, routed_by = routing.route(
        person_id=item.identity_id, manager_id=manager_of(item.identity_id) if item.identity_id else None,
        owner_ids=_owners_of(session, item.resource_id), stage=stages[stage], fallback_id=fallback_id,
        self_review=spec.get("self_review", "reassign"), manager_of=manager_of, eligible=eligible,
    )
    subjects = eligibility.item_subjects(session, item)
    if reviewer is not None and not eligibility.may_review(reviewer, subjects):
        # the account was linked to the chosen reviewer after launch: still their own access
        reviewer, how = eligibility.replacement(reviewer, subjects, fallback_id=fallback_id,
                                                manager_of=manager_of, eligible=eligible)
        routed_by = "self_review" if reviewer is not None else how
    before = {"stage": item.stage, "reviewer_id": item.reviewer_id}
    item.stage = stage
    item.reviewer_id = reviewer
    item.co_reviewer_id = None
    item.routed_by = routed_by or eligibility.ADMIN_QUEUE
    session.flush()
    audit(session, actor="system", action="item.route", object_type="review_item", object_id=str(item.id),
          campaign_id=item.campaign_id, before=before,
          after={"stage": stage, "reviewer_id": reviewer, "routed_by": item.routed_by})


def _target(item: Mapping[str, Any], groups: Mapping[int, Resource]) -> str | None:
    """Where the access really comes from, when revoking the grant itself would be wrong or undone."""

    def rules(res: Resource) -> str | None:
        attrs = res.attributes or {}
        names = attrs.get("rules") or attrs.get("group_rules")
        if names:
            if isinstance(names, list | tuple):
                names = ", ".join(str(n.get("name", n) if isinstance(n, Mapping) else n) for n in names)
            return f'group rule {names} assigns membership of group "{res.name}": change the rule or the person\'s attributes'
        if attrs.get("rule_managed"):
            return f'group "{res.name}" is managed by a group rule: change the rule or the person\'s attributes'
        return None

    via = groups.get(item["via_resource_id"]) if item["via_resource_id"] else None
    if via is not None:
        why = rules(via)
        return why or (f'group "{via.name}": the access is held through this group ({item["via"]}); remove '
                       f'{item["account_login"]} from it rather than the group\'s own access')
    own = groups.get(item["resource_id"]) if item["resource_id"] else None
    if own is not None and own.is_group:
        return rules(own)
    return None


def close(session: Session, campaign_id: int, actor: str, now: datetime | None = None) -> Campaign:
    """Close an active campaign: every item gets an outcome (its decision, else the no-response outcome),
    revoked items become pending Remediations, the summary is filled, the campaign is locked."""
    now = now or utcnow()
    campaign = _campaign(session, campaign_id, lock=True)
    if campaign.status != "active":
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only an active campaign can be closed")
    spec = campaign.spec
    last_stage = len(spec["stages"]) - 1
    no_response = spec["timing"]["no_response"]
    campaign.status = "closed"
    campaign.closed_at = now
    campaign.closed_by = actor
    session.flush()
    done = "(completed = :true OR stage = :last_stage)"  # the final stage decided
    session.execute(text(f"""
        UPDATE review_item SET
          outcome = CASE WHEN decision = 'revoke' THEN 'revoke'
                         WHEN decision = 'approve' AND {done} THEN 'keep'
                         WHEN decision = 'abstain' AND {done} THEN 'flag'
                         ELSE :no_response END,
          outcome_reason = CASE WHEN decision = 'revoke' OR (decision IS NOT NULL AND {done})
                                THEN 'decision' ELSE 'no_response' END,
          version = version + 1
        WHERE campaign_id = :campaign_id"""),
        {"true": True, "last_stage": last_stage, "no_response": no_response, "campaign_id": campaign.id})
    session.expire_all()

    revoked = session.execute(
        select(ReviewItem.id, ReviewItem.grant_id, ReviewItem.source_id, ReviewItem.resource_id,
               ReviewItem.via_resource_id, ReviewItem.via, ReviewItem.account_login)
        .where(ReviewItem.campaign_id == campaign.id, ReviewItem.outcome == "revoke").order_by(ReviewItem.id)
    ).mappings().all()
    group_ids = {r["via_resource_id"] for r in revoked if r["via_resource_id"]} | {r["resource_id"] for r in revoked if r["resource_id"]}
    groups = {g.id: g for g in session.scalars(select(Resource).where(Resource.id.in_(group_ids)))} if group_ids else {}
    mode = spec["rules"]["remediation"]
    rows = [{"campaign_id": campaign.id, "item_id": r["id"], "grant_id": r["grant_id"], "source_id": r["source_id"],
             "mode": mode, "status": "pending", "target": _target(r, groups), "attempts": 0, "calls": [],
             "created_at": now} for r in revoked]
    for i in range(0, len(rows), 5000):
        session.execute(Remediation.__table__.insert(), rows[i:i + 5000])

    campaign.summary = _summary(session, campaign, now, len(rows))
    session.flush()
    totals = {k: v for k, v in campaign.summary.items() if k != "reviewers"}
    audit(session, actor=actor, action="campaign.close", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": "active"}, after={"status": "closed", "summary": totals})
    return campaign


def _summary(session: Session, campaign: Campaign, now: datetime, remediations: int) -> dict[str, Any]:
    cid = campaign.id
    decisions = {d or "none": int(n) for d, n in session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == cid).group_by(ReviewItem.decision))}
    outcomes = {o: int(n) for o, n in session.execute(
        select(ReviewItem.outcome, func.count()).where(ReviewItem.campaign_id == cid).group_by(ReviewItem.outcome))}
    no_response = session.scalar(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.campaign_id == cid, ReviewItem.outcome_reason == "no_response")) or 0
    total = sum(decisions.values())
    decided = total - no_response
    per: dict[int | None, dict[str, Any]] = {}
    rows = session.execute(
        select(ReviewItem.reviewer_id, ReviewItem.decision, ReviewItem.decided_in_bulk, func.count())
        .where(ReviewItem.campaign_id == cid).group_by(ReviewItem.reviewer_id, ReviewItem.decision, ReviewItem.decided_in_bulk))
    for rid, decision, bulk, n in rows:
        p = per.setdefault(rid, {"reviewer_id": rid, "items": 0, "decided": 0, "approved": 0, "revoked": 0,
                                 "abstained": 0, "approved_in_bulk": 0})
        p["items"] += n
        if decision:
            p["decided"] += n
            p[{"approve": "approved", "revoke": "revoked", "abstain": "abstained"}[decision]] += n
            if decision == "approve" and bulk:
                p["approved_in_bulk"] += n
    # median seconds between a reviewer's consecutive decisions (how long each decision took them)
    gaps: dict[int, list[float]] = defaultdict(list)
    last: dict[int, datetime] = {}
    for iid, at in session.execute(
        select(Decision.identity_id, Decision.at).where(Decision.campaign_id == cid, Decision.identity_id.is_not(None))
        .order_by(Decision.identity_id, Decision.at)
    ):
        if iid in last:
            gaps[iid].append((at - last[iid]).total_seconds())
        last[iid] = at
    signed = set(session.scalars(select(ReviewerSignoff.reviewer_id).where(ReviewerSignoff.campaign_id == cid)))
    ids = [rid for rid in per if rid is not None]
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}
    reviewers = []
    for rid, p in per.items():
        person = people.get(rid)
        p["name"] = person.display_name if person else None
        p["email"] = person.email if person else None
        p["completion"] = round(100.0 * p["decided"] / p["items"], 1) if p["items"] else 100.0
        p["approved_in_bulk_share"] = round(p["approved_in_bulk"] / p["approved"], 3) if p["approved"] else 0.0
        p["median_seconds_between_decisions"] = round(statistics.median(gaps[rid]), 1) if gaps.get(rid) else None
        p["signed_off"] = rid in signed
        reviewers.append(p)
    reviewers.sort(key=lambda p: (-p["items"], p["name"] or ""))
    return {
        "items": total, "decided": decided, "completion": round(100.0 * decided / total, 1) if total else 100.0,
        "decisions": {k: decisions.get(k, 0) for k in ("approve", "revoke", "abstain", "none")},
        "outcomes": {k: outcomes.get(k, 0) for k in ("keep", "revoke", "flag")},
        "no_response": int(no_response), "no_response_outcome": campaign.spec["timing"]["no_response"],
        "revocations": outcomes.get("revoke", 0), "remediations": remediations,
        "remediation_mode": campaign.spec["rules"]["remediation"],
        "reviewers": reviewers, "closed_at": now.isoformat(),
        "launched_at": campaign.launched_at.isoformat() if campaign.launched_at else None,
        "due_at": campaign.due_at.isoformat() if campaign.due_at else None,
    }


def cancel(session: Session, campaign_id: int, actor: str, reason: str) -> Campaign:
    """Cancel a draft or active campaign (no outcomes, no remediation); the reason is required and audited."""
    reason = (reason or "").strip()
    if not reason:
        raise CampaignError("say why the campaign is cancelled (--reason)")
    campaign = _campaign(session, campaign_id, lock=True)
    if campaign.status not in ("draft", "active"):
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only a draft or active campaign can be cancelled")
    before = campaign.status
    campaign.status = "cancelled"
    campaign.closed_at = utcnow()
    campaign.closed_by = actor
    session.execute(update(ReviewItem).where(ReviewItem.campaign_id == campaign.id)
                    .values(version=ReviewItem.version + 1).execution_options(synchronize_session=False))
    session.flush()
    audit(session, actor=actor, action="campaign.cancel", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": before}, after={"status": "cancelled", "reason": reason})
    return campaign
