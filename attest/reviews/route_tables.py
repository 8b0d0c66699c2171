"""Temporary tables that carry one stage's routing into the scope query, so no item is visited in Python.

`attest.reviews.routing` (the single source of the rules) is run in Python once per person, once per
resource and once per (owner, resource) pair; its answers, the risk signals of every risk-bit mask, and a
per-account snapshot are written to temporary tables the launch's INSERT ... SELECT (and a preview's
count) join:

| attribute            | table                          | one row per                      | read in SQL as   |
|----------------------|--------------------------------|----------------------------------|------------------|
| `by_person`          | tmp_reviewer_by_person_*       | person: reviewer, routed_by      | `person_route`   |
| `by_resource`        | tmp_reviewer_by_resource_*     | resource (0: none): reviewer     | `resource_route` |
| `by_owner_resource`  | tmp_reviewer_by_owner_res_*    | (owner, resource): reviewer      | `owner_route`    |
| `risk_by_mask`       | tmp_risk_by_mask_*             | risk-bit mask: risks, score      | `risk`           |
| `account_snapshot`   | tmp_account_snapshot_*         | active account: snapshot columns, own risk bits, exclusion reason, reviewer by person | `snap` |

On PostgreSQL the tables drop at commit; `drop()` drops them earlier (and on SQLite at all).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from attest import dialects
from attest.entitlements import risk as risk_mod
from attest.entitlements.models import Resource
from attest.reviews import eligibility, routing
from attest.reviews.owners import resource_owners
from attest.reviews.scope import Routed, ScopeContext, exclusion_sql


class RouteTables:
    """The temporary tables of one stage's routing results (see the module docstring); a context manager
    that creates them on entry and drops them on a clean exit."""

    def __init__(self, session: Session, ctx: ScopeContext, stage_index: int = 0) -> None:
        self.session = session
        self.ctx = ctx
        self.stage = ctx.stages[stage_index]
        self.suffix = uuid.uuid4().hex[:10]
        self.by_person = f"tmp_reviewer_by_person_{self.suffix}"
        self.by_resource = f"tmp_reviewer_by_resource_{self.suffix}"
        self.by_owner_resource = f"tmp_reviewer_by_owner_res_{self.suffix}"
        self.risk_by_mask = f"tmp_risk_by_mask_{self.suffix}"
        self.account_snapshot = f"tmp_account_snapshot_{self.suffix}"
        self.created: list[str] = []

    def __enter__(self) -> RouteTables:
        ctx, stage, session = self.ctx, self.stage, self.session
        directory = eligibility.Directory.whole(session)
        owners = resource_owners(session)
        policy = ctx.spec.get("self_review", "reassign")

        def run(person: int | None, owner_ids: set[int]) -> tuple[int | None, str | None]:
            return routing.route(person_id=person, manager_id=directory.manager_of(person) if person else None,
                                 owner_ids=owner_ids, stage=stage, fallback_id=ctx.fallback_id, self_review=policy,
                                 manager_of=directory.manager_of, eligible=directory.eligible)

        resource_ids = [rid for (rid,) in session.execute(select(Resource.id))]
        per_person: list[tuple] = []
        if stage.kind in ("manager", "identity"):
            per_person = [(iid, *run(iid, set())) for iid in directory.people()]
        per_resource = [(0, *run(None, set()))] + [(rid, *run(None, owners.get(rid, set()))) for rid in resource_ids]
        per_owner_resource: list[tuple] = []
        if stage.kind == "resource_owner":
            keys = {(iid, rid) for rid, owner_ids in owners.items() for iid in owner_ids}
            if ctx.fallback_id is not None:
                keys |= {(ctx.fallback_id, rid) for rid in [0, *resource_ids]}
            per_owner_resource = [(iid, rid, *run(iid, owners.get(rid, set()))) for iid, rid in keys]
        self._create(self.by_person, "identity_id INTEGER PRIMARY KEY, reviewer_id INTEGER, routed_by VARCHAR(40)",
                     ("identity_id", "reviewer_id", "routed_by"), per_person)
        self._create(self.by_resource, "resource_id INTEGER PRIMARY KEY, reviewer_id INTEGER, routed_by VARCHAR(40)",
                     ("resource_id", "reviewer_id", "routed_by"), per_resource)
        self._create(self.by_owner_resource, "identity_id INTEGER, resource_id INTEGER, reviewer_id INTEGER,"
                     " routed_by VARCHAR(40), PRIMARY KEY (identity_id, resource_id)",
                     ("identity_id", "resource_id", "reviewer_id", "routed_by"), per_owner_resource)
        json_type = dialects.json_column_type(ctx.dialect)
        self._create(self.risk_by_mask, f"mask INTEGER PRIMARY KEY, risks {json_type}, score INTEGER",
                     ("mask", "risks", "score"), risk_mod.mask_table())
        self._create_account_snapshot()
        return self

    def _create_account_snapshot(self) -> None:
        """Per active account, once, what a million items would otherwise each join and compute again: the
        snapshot of the account and its person, the account's own risk bits, the reason (if any) the
        account's access is excluded, and its stage reviewer when routed by person."""
        ctx = self.ctx
        params = dict(ctx.params)
        bits = risk_mod.sql_account_bits(risk_mod.sql_conditions(ctx.dialect, ctx.cutoffs))
        reason = exclusion_sql(ctx, params, account_level=True) or "CAST(NULL AS VARCHAR(40))"
        by_person = self.stage.kind in ("manager", "identity")
        reviewer, routed_by = ("person_route.reviewer_id", "person_route.routed_by") if by_person else (
            "CAST(NULL AS INTEGER)", "CAST(NULL AS VARCHAR(40))")
        join = (f" LEFT JOIN {self.by_person} person_route ON person_route.identity_id = acc.identity_id"
                if by_person else "")
        on_commit = dialects.on_commit_drop(ctx.dialect)
        self.session.execute(dialects.text_with_dates(
            f"CREATE TEMPORARY TABLE {self.account_snapshot}{on_commit} AS SELECT acc.id AS account_id, acc.identity_id,"
            " idn.display_name AS person_name, idn.email AS person_email, idn.department AS person_department,"
            " idn.title AS person_title, idn.status AS person_status,"
            " COALESCE(acc.login, acc.email, acc.display_name, acc.external_id) AS account_login,"
            f" acc.kind AS account_kind, acc.last_login_at AS account_last_login_at, {bits} AS bits,"
            f" {reason} AS reason, {reviewer} AS reviewer_id, {routed_by} AS routed_by"
            f" FROM account acc LEFT JOIN identity idn ON idn.id = acc.identity_id{join} WHERE acc.ended_at IS NULL",
            params), params)
        self.created.append(self.account_snapshot)
        self.session.execute(text(f"CREATE UNIQUE INDEX ix_{self.account_snapshot} ON {self.account_snapshot} (account_id)"))
        dialects.analyze(self.session, self.account_snapshot)

    def _create(self, name: str, columns: str, cols: tuple[str, ...], rows: list[tuple]) -> None:
        on_commit = dialects.on_commit_drop(self.ctx.dialect)
        self.session.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns}){on_commit}"))
        self.created.append(name)
        if not rows:
            return
        dialects.copy_rows(self.session.connection(), name, cols, rows)
        dialects.analyze(self.session, name)

    def excluded_accounts(self, ids: list[int]) -> str:
        """A temporary table of account ids (the accounts whose every in-scope grant is excluded)."""
        name = f"tmp_excluded_accounts_{self.suffix}"
        self._create(name, "account_id INTEGER PRIMARY KEY", ("account_id",), [(i,) for i in ids])
        return name

    def drop(self) -> None:
        for name in self.created:
            self.session.execute(text(f"DROP TABLE IF EXISTS {name}"))
        self.created = []

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.drop()

    def routed(self) -> Routed:
        """How the scope query reads these tables: the per-account table `snap`, the joins that bring the
        item's risk signals (`risk`) and the per-resource (`resource_route`) and, for an owner stage,
        per-(owner, resource) (`owner_route`) reviewers, and the expressions that pick the reviewer."""
        conds = risk_mod.sql_conditions(self.ctx.dialect, self.ctx.cutoffs)
        joins = (f" LEFT JOIN {self.risk_by_mask} risk ON risk.mask = {risk_mod.sql_item_mask(conds, 'snap.bits')}"
                 f" LEFT JOIN {self.by_resource} resource_route ON resource_route.resource_id = COALESCE(e.resource_id, 0)")
        if self.stage.kind == "resource_owner":
            joins += (f" LEFT JOIN {self.by_owner_resource} owner_route ON owner_route.identity_id = snap.identity_id"
                      f" AND owner_route.resource_id = COALESCE(e.resource_id, 0)")
            pick = "CASE WHEN owner_route.identity_id IS NOT NULL THEN owner_route.{c} ELSE resource_route.{c} END"
        else:
            pick = "CASE WHEN snap.identity_id IS NULL THEN resource_route.{c} ELSE snap.{c} END"
        return Routed(self.account_snapshot, joins, pick.format(c="reviewer_id"), pick.format(c="routed_by"))
