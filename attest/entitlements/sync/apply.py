"""Applying a staged run to the live tables: set-based, in the caller's one transaction.

In order: the removal guard (`_check_removals`, before anything is written), people (authoritative
source only), resources, entitlements and accounts (`_apply_table` each: insert new, update changed,
end unseen), grants (end unseen, insert new), the access history, resource owners, managers and account
links. Unchanged rows are not touched. A part the connector could not read is left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from attest import dialects
from attest.config import Settings
from attest.db import drop_indexes_for_bulk_load, rebuild_indexes, utcnow
from attest.entitlements import correlation
from attest.entitlements.models import Grant, Source
from attest.entitlements.sync.state import RemovalGuardTripped, RunState


class Counts(NamedTuple):
    """What `_apply_table` did to one live table."""

    added: int
    updated: int
    ended: int


@dataclass
class _Apply:
    """The state of one apply: the bind parameters every statement shares, and what it did so far."""

    session: Session
    settings: Settings
    source: Source
    run_id: int
    failed_parts: Sequence[str]
    params: dict[str, Any]
    pg: bool
    added: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    mark: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        """The seconds since the last lap, as timings[name]."""
        now = time.perf_counter()
        self.timings[name] = round(now - self.mark, 3)
        self.mark = now

    def count(self, kind: str, counts: Counts) -> None:
        self.added[kind], self.updated[kind], self.ended[kind] = counts

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        params = self.params if params is None else params
        return self.session.execute(dialects.text_with_dates(sql, params), params).rowcount


def _part_filter(alias: str, parts: Sequence[str], params: dict[str, Any]) -> str:
    if not parts:
        return ""
    names = []
    for i, part in enumerate(parts):
        params[f"part{i}"] = part
        names.append(f":part{i}")
    return f" AND ({alias}.part IS NULL OR {alias}.part NOT IN ({', '.join(names)}))"


def _new_rows(session: Session, live: str, stage: str) -> str:
    """FROM and WHERE of the stage rows to insert, as `s`: of each external id staged, the last row staged,
    when the live table has no row of that id yet."""
    absent = f"NOT EXISTS (SELECT 1 FROM {live} l WHERE l.source_id = :sid AND l.external_id = s.external_id)"
    return dialects.latest_per_key(session, stage, "external_id", absent)


def _apply_table(
    session: Session,
    live: str,
    stage: str,
    columns: Sequence[str],
    params: dict[str, Any],
    failed_parts: Sequence[str],
    *,
    end_unseen: bool = True,
    has_part: bool = True,
    insert_also: Sequence[tuple[str, str]] = (),
) -> Counts:
    """Insert new rows, update changed or reopened rows, end unseen rows.

    `insert_also`: (column, SQL expression over the stage row `s`) pairs set on inserted rows only."""
    cols = ", ".join([*columns, *(c for c, _ in insert_also)])
    scols = ", ".join([*(f"s.{c}" for c in columns), *(expr for _, expr in insert_also)])
    added = session.execute(
        dialects.text_with_dates(
            f"INSERT INTO {live} (source_id, external_id, {cols}, first_seen_at) "
            f"SELECT :sid, s.external_id, {scols}, :now FROM {_new_rows(session, live, stage)}",
            params,
        ),
        params,
    ).rowcount
    _analyze(session, live, grown_by=added)  # before the UPDATE and the joins that follow
    sets = ", ".join(f"{c} = s.{c}" for c in columns)
    # a record staged in a part the run could not read (rule 4) does not overwrite what is there: a
    # connector yields in a failed part what it derived partly from that part, to keep its previous value
    p = dict(params)
    keep_failed = _part_filter("s", failed_parts, p) if has_part else ""
    updated = session.execute(
        text(
            f"UPDATE {live} SET {sets}, ended_at = NULL, ended_reason = NULL FROM {stage} s "
            f"WHERE {live}.source_id = :sid AND {live}.external_id = s.external_id "
            f"AND ({live}.record_hash IS NULL OR {live}.record_hash <> s.record_hash OR {live}.ended_at IS NOT NULL)"
            f"{keep_failed}"
        ),
        p,
    ).rowcount
    ended = 0
    if end_unseen:
        p = dict(params)
        part_sql = _part_filter(live, failed_parts, p) if has_part else ""
        ended = session.execute(
            dialects.text_with_dates(
                f"UPDATE {live} SET ended_at = :now, ended_reason = 'not_seen' "
                f"WHERE source_id = :sid AND ended_at IS NULL{part_sql} "
                f"AND external_id IN (SELECT g.key FROM stage_gone g WHERE g.kind = '{stage}')",
                p,
            ),
            p,
        ).rowcount
    return Counts(added, updated, ended)


def _analyze(session: Session, table: str, *, grown_by: int | None = None) -> None:
    """Keep the planner's statistics true while a sync changes a table wholesale (dialects.analyze_if_stale)."""
    dialects.analyze_if_stale(session, table, grown_by=grown_by)


# The manager of a person the apply inserts, by the manager's external id: another new person (by the
# id pre-assigned to them) or one already there. Set as the person is inserted, it spares
# correlation.resolve_managers an UPDATE of every new row (a first sync: every person), which it would
# otherwise do by the same rule; references by login or e-mail are still resolved there.
_MANAGER_OF_NEW = (
    "COALESCE((SELECT m.new_id FROM stage_identity m WHERE m.external_id = s.manager_ref AND m.new_id IS NOT NULL "
    "AND m.new_id <> s.new_id), (SELECT l.id FROM identity l WHERE l.source_id = :sid AND l.external_id = s.manager_ref))"
)


def _preassign_identity_ids(session: Session, params: dict[str, Any]) -> None:
    """Give each person the apply will insert (`_new_rows` of stage_identity) the id it will have, so
    that managers can be set as they are inserted."""
    new = f"SELECT s.id FROM {_new_rows(session, 'identity', 'stage_identity')}"
    dialects.preassign_ids(session, "identity", "stage_identity", new, params)


class GuardedKind(NamedTuple):
    kind: str  # as counted in a run's stats
    live: str  # the live table
    stage: str  # its stage table (stage_gone.kind)
    key: str  # the natural key column
    has_part: bool  # whether rows belong to parts


GUARDED_KINDS = (
    GuardedKind("identities", "identity", "stage_identity", "external_id", False),
    GuardedKind("accounts", "account", "stage_account", "external_id", True),
    GuardedKind("resources", "resource", "stage_resource", "external_id", True),
    GuardedKind("entitlements", "entitlement", "stage_entitlement", "external_id", True),
    GuardedKind("grants", "access_grant", "stage_grant", "key", True),
)


def _check_removals(session: Session, settings: Settings, params: dict[str, Any], failed_parts: Sequence[str], *,
                    authoritative: bool, force: bool) -> int:
    """The removal guard (DESIGN: "guard every kind"): a run that would end more than
    ATTEST_SYNC_MAX_REMOVAL_RATIO of the active rows of any kind (identities, accounts, resources,
    entitlements, grants), of the whole source or of one of its parts, and at least
    ATTEST_SYNC_REMOVAL_GUARD_MIN of them, is refused before anything is written unless forced: an
    upstream that suddenly returns less (an empty list, a list cut short) is far likelier than a mass
    exodus. Returns the source's active grants before the run (0: a first sync)."""
    ratio, floor = settings.sync_max_removal_ratio, settings.sync_removal_guard_min
    trips: list[str] = []
    active_grants = 0
    for g in GUARDED_KINDS:
        if g.kind == "identities" and not authoritative:
            continue
        p = dict(params)
        part_sql = _part_filter("l", failed_parts, p) if g.has_part else ""
        part_col, group = ("l.part", " GROUP BY l.part") if g.has_part else ("NULL", "")
        active = {part: n for part, n in session.execute(text(
            f"SELECT {part_col}, COUNT(*) FROM {g.live} l WHERE l.source_id = :sid AND l.ended_at IS NULL{part_sql}"
            f"{group}"), p) if n}
        if g.kind == "grants":
            active_grants = sum(active.values())
        if not active or force:
            continue
        gone = {part: n for part, n in session.execute(text(
            f"SELECT {part_col}, COUNT(*) FROM stage_gone g JOIN {g.live} l ON l.source_id = :sid"
            f" AND l.{g.key} = g.key AND l.ended_at IS NULL WHERE g.kind = '{g.stage}'{part_sql}{group}"), p) if n}

        def over(n_gone: int, n_active: int) -> bool:
            return n_gone >= floor and n_gone > ratio * n_active

        total_active, total_gone = sum(active.values()), sum(gone.values())
        if over(total_gone, total_active):
            trips.append(f"{total_gone:,} of {total_active:,} active {g.kind} ({total_gone / total_active:.0%})")
            continue
        for part, n in sorted(gone.items(), key=lambda kv: str(kv[0])):
            if part is not None and over(n, active.get(part, 0)):
                trips.append(f"{n:,} of {active[part]:,} active {g.kind} of part {part} ({n / active[part]:.0%})")
    if trips:
        raise RemovalGuardTripped(
            f"this run would end {'; '.join(trips)}, more than ATTEST_SYNC_MAX_REMOVAL_RATIO={ratio:g}. An "
            "upstream that suddenly returns less is far likelier than a mass exodus: check the source, then run "
            "again with --force if the removals are real. Nothing was changed."
        )
    return active_grants


# --- the steps of an apply -------------------------------------------------------------------------


def _apply_identities(a: _Apply) -> None:
    """People (authoritative source only); a new person's manager is set as they are inserted."""
    if not a.source.authoritative:
        return
    _preassign_identity_ids(a.session, a.params)
    a.count("identities", _apply_table(
        a.session, "identity", "stage_identity",
        ("email", "email_normalized", "login", "display_name", "employee_id", "department", "title",
         "manager_ref", "status", "kind", "attributes", "record_hash"),
        a.params, a.failed_parts, has_part=False,
        insert_also=(("id", "s.new_id"), ("manager_id", _MANAGER_OF_NEW)),
    ))


def _resolve_refs(a: _Apply, table: str, id_column: str, target: str, ref_column: str, also: str = "") -> int:
    """Set `table.id_column` of the source's live rows to the id of the `target` row whose external id
    is `table.ref_column` (NULL when there is none)."""
    return a.execute(
        f"UPDATE {table} SET {id_column} = (SELECT t.id FROM {target} t WHERE t.source_id = {table}.source_id "
        f"AND t.external_id = {table}.{ref_column}) WHERE source_id = :sid AND ended_at IS NULL{also}"
    )


def _apply_resources_entitlements_accounts(a: _Apply) -> None:
    counts = _apply_table(
        a.session, "resource", "stage_resource",
        ("part", "type", "name", "description", "is_group", "parent_ref", "owner_refs", "attributes", "record_hash"),
        a.params, a.failed_parts,
    )
    a.count("resources", counts)
    if counts.added or counts.updated:
        _resolve_refs(a, "resource", "parent_id", "resource", "parent_ref",
                      " AND (parent_ref IS NOT NULL OR parent_id IS NOT NULL)")
    counts = _apply_table(
        a.session, "entitlement", "stage_entitlement",
        ("part", "resource_ref", "name", "display_name", "description", "purpose", "privileged", "is_membership",
         "attributes", "record_hash"),
        a.params, a.failed_parts,
    )
    a.count("entitlements", counts)
    if counts.added or counts.updated:
        _resolve_refs(a, "entitlement", "resource_id", "resource", "resource_ref")
        dangling = a.session.execute(
            text("SELECT COUNT(*) FROM entitlement WHERE source_id = :sid AND ended_at IS NULL AND resource_id IS NULL"),
            a.params,
        ).scalar_one()
        if dangling:
            a.notes.append(f"{dangling} entitlements name a resource the source did not return")
    link_now: list[tuple[str, str]] = []
    if a.source.authoritative and correlation.authoritative_source_id(a.session) == a.source.id:
        # the IdP's own accounts are linked to their person as they are inserted (correlation would
        # link them the same way, by a second write of every row)
        person = correlation.own_person_sql("s", "sid")
        link_now = [("identity_id", person),
                    ("link_method", f"CASE WHEN {person} IS NOT NULL THEN 'authoritative' END"),
                    ("linked_at", f"CASE WHEN {person} IS NOT NULL THEN :now END")]
    a.count("accounts", _apply_table(
        a.session, "account", "stage_account",
        ("part", "login", "email", "display_name", "status", "kind", "last_login_at", "created_upstream_at",
         "mfa_enabled", "identity_ref", "saml_nameid", "tag_email", "attributes", "record_hash"),
        a.params, a.failed_parts, insert_also=link_now,
    ))


def _apply_grants(a: _Apply, active: int, grants_read: int | None, staged_new_grants: int) -> None:
    """End what was not seen (stage_gone), insert what is new (stage_grant holds only the records whose
    key was not active before the run); the key is the natural key in the source. `active`: the source's
    active grants before the run."""
    p = dict(a.params)
    part_sql = _part_filter("access_grant", a.failed_parts, p)
    a.ended["grants"] = a.execute(
        "UPDATE access_grant SET ended_at = :now, ended_reason = 'not_seen', ended_run_id = :run "
        f"WHERE source_id = :sid AND ended_at IS NULL{part_sql} "
        "AND key IN (SELECT g.key FROM stage_gone g WHERE g.kind = 'stage_grant')",
        p,
    )
    a.lap("grants_end")
    # PostgreSQL: a source's first large sync (no active grant of the source yet) drops the active-key
    # unique index too: nothing staged can conflict with a row already there, and the stage is
    # deduplicated here, so the index is built once after the insert (which checks it again) instead of
    # grown row by row. (SQLite grows it in key order at its end for less than the deduplication costs.)
    first_on_pg = a.pg and active == 0
    rebuild = drop_indexes_for_bulk_load(a.session, Grant.__table__, staged_new_grants, unique=first_on_pg)
    dedupe = bool(rebuild) and first_on_pg
    if dedupe:
        # (by bytes: the database's collation would compare a million keys by the locale's rules, for the
        # same equality)
        new_keys = ('SELECT DISTINCT ON (s.key COLLATE "C") s.key, s.part, s.entitlement_ref, s.principal_type, '
                    's.principal_ref, s.attributes FROM stage_grant s ORDER BY s.key COLLATE "C"')
        order = on_conflict = ""
    else:
        # new keys first (MATERIALIZED: a resync with nothing new never joins); in key order, so the
        # active-key index grows at its end instead of at random pages
        new_keys = ("SELECT s.key, s.part, s.entitlement_ref, s.principal_type, s.principal_ref, s.attributes "
                    "FROM stage_grant s WHERE NOT EXISTS (SELECT 1 FROM access_grant g "
                    "WHERE g.source_id = :sid AND g.key = s.key AND g.ended_at IS NULL)")
        order, on_conflict = " ORDER BY n.key", " ON CONFLICT DO NOTHING"
    # the deduplication sorts a million keys: in memory, not in files (dialects.large_work_mem)
    with dialects.large_work_mem(a.session) if dedupe else nullcontext():
        a.added["grants"] = a.execute(
            "INSERT INTO access_grant (source_id, key, part, entitlement_id, principal_type, principal_account_id, "
            "principal_resource_id, attributes, first_seen_at, first_seen_run_id) "
            f"WITH n AS MATERIALIZED ({new_keys}) "
            "SELECT :sid, n.key, n.part, e.id, n.principal_type, a.id, r.id, n.attributes, :now, :run "
            "FROM n JOIN entitlement e ON e.source_id = :sid AND e.external_id = n.entitlement_ref "
            "LEFT JOIN account a ON n.principal_type = 'account' AND a.source_id = :sid AND a.external_id = n.principal_ref "
            "LEFT JOIN resource r ON n.principal_type = 'resource' AND r.source_id = :sid AND r.external_id = n.principal_ref "
            f"WHERE (a.id IS NOT NULL OR r.id IS NOT NULL){order}{on_conflict}"
        )
    if grants_read is not None:
        skipped = grants_read - (active - a.ended["grants"] + a.added["grants"])
        if skipped > 0:
            a.notes.append(f"{skipped} grant records were duplicates or named an entitlement or principal "
                           "the source did not return; skipped")
    a.lap("grants_insert")
    rebuild_indexes(a.session, rebuild)
    a.lap("grants_index")
    _analyze(a.session, "access_grant", grown_by=a.added["grants"])  # for what follows in this transaction
    a.lap("grants_analyze")


def _record_history(a: _Apply) -> None:
    """The access history; a source's first successful run is its baseline (first_seen_run_id marks it)."""
    if a.source.last_success_run_id is not None:
        a.execute(
            "INSERT INTO access_change (source_id, sync_run_id, grant_id, change, reason, at) "
            "SELECT source_id, :run, id, 'added', NULL, :now FROM access_grant WHERE first_seen_run_id = :run"
        )
    a.execute(
        "INSERT INTO access_change (source_id, sync_run_id, grant_id, change, reason, at) "
        "SELECT source_id, :run, id, 'ended', ended_reason, :now FROM access_grant WHERE ended_run_id = :run"
    )


def _correlate(a: _Apply) -> int:
    """Resource owners named by the source, for resources that changed; then people: managers, then
    account links; each skipped when nothing it depends on changed. Returns the accounts linked."""
    if a.added["resources"] or a.updated["resources"] or a.added["accounts"] or a.ended["accounts"]:
        correlation.sync_resource_owners(a.session, a.source.id)
    a.lap("owners")
    identities_changed = a.source.authoritative and any(
        (a.added["identities"], a.updated["identities"], a.ended["identities"]))
    if identities_changed:
        correlation.resolve_managers(a.session, a.source.id)
    a.lap("managers")
    if identities_changed:
        linked = correlation.correlate(a.session, a.settings, None)  # new or changed people may match any account
    elif a.added["accounts"] or a.updated["accounts"]:
        linked = correlation.correlate(a.session, a.settings, [a.source.id])
    else:
        linked = 0
    a.lap("links")
    return linked


def apply_run(session: Session, settings: Settings, run: RunState, *, force: bool = False) -> dict[str, Any]:
    """Apply a finished run's staged records to the live tables. Runs inside the caller's transaction.

    Returns the run's stats: rows added, updated and ended per kind, accounts linked, notes, and the
    seconds of each step (`timings`)."""
    source = session.get(Source, run.source_id)
    now = utcnow()
    pg = dialects.is_postgresql(session)
    params: dict[str, Any] = {"sid": run.source_id, "run": run.run_id, "now": now}
    a = _Apply(session, settings, source, run.run_id, run.failed_part_names, params, pg)

    for table in ("access_grant", "account", "resource", "entitlement", "identity"):
        _analyze(session, table)
    # every id the apply writes is read from the referenced rows in this transaction, and rows are never
    # deleted: the per-row foreign-key triggers cannot fail, and would dominate a large first sync
    skipping = dialects.skip_fk_triggers(session)
    # each statement here runs once over up to a million rows: JIT compiles for longer than it saves
    dialects.jit_off(session)

    # the removal guard, for every kind, before anything is written
    active = _check_removals(session, settings, params, a.failed_parts, authoritative=source.authoritative,
                             force=force)
    _apply_identities(a)
    a.lap("identities")
    _apply_resources_entitlements_accounts(a)
    a.lap("accounts_resources_entitlements")
    _apply_grants(a, active, run.grants_read, run.staged_new_grants)
    _record_history(a)
    a.lap("access_changes")
    linked = _correlate(a)
    if skipping:
        dialects.restore_fk_triggers(session)
    return {"added": a.added, "updated": a.updated, "ended": a.ended, "linked": linked, "notes": a.notes,
            "timings": a.timings}
