"""Campaign lifecycle: create (draft), preview, launch (set-based snapshot), route to a stage, close, cancel.

Launch freezes the in-scope access into ReviewItems with one INSERT ... SELECT (`attest.reviews.scope`
builds it: the active grants of accounts, plus, with include_inherited, the grants groups hold expanded to
every member through nested groups), joined with the stage-0 routing the rules of
`attest.reviews.routing` put in temporary tables (`attest.reviews.route_tables`), with the risk signals
computed in SQL (`attest.entitlements.risk`), so no item is visited in Python. PostgreSQL plans it with the
hints of `attest.reviews.planner`.

Population reconciliation: every in-scope held grant becomes an item or a CampaignExclusion with its
reason, and `Campaign.population` records in_scope = items + excluded.

Close gives every item its outcome, turns revocations into pending remediations
(`attest.reviews.remediation_targets`) and stores the summary (`attest.reviews.close_summary`). When the
scheduler launches and closes campaigns is `attest.reviews.schedule`'s.

Every state change is an AuditEvent with campaign_id set. Service functions never commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from attest import dialects
from attest.db import drop_indexes_for_bulk_load, rebuild_indexes, utcnow
from attest.entitlements import risk as risk_mod
from attest.entitlements.models import Identity, Source, SyncRun
from attest.reviews import eligibility, remediation_targets, routing
from attest.reviews.close_summary import close_summary
from attest.reviews.definitions import DefinitionError, check_references, find_identity
from attest.reviews.models import Campaign, CampaignDefinition, CampaignExclusion, CampaignStatus, ReviewItem
from attest.reviews.owners import owners_of
from attest.reviews.planner import refresh_planner_stats, whole_population_plan
from attest.reviews.route_tables import RouteTables
from attest.reviews.scope import (
    ScopeContext,
    exclusion_sql,
    held_cte,
    routed_exclusion_sql,
    scope_from,
    snapshot_sql,
)
from attest.trail.chain import record as audit


class CampaignError(ValueError):
    """A lifecycle step was refused; the message is for the user and nothing was changed."""


# --- context ------------------------------------------------------------------------------------------


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
                                                     Campaign.status == CampaignStatus.CLOSED)
    )


def scope_context(session: Session, spec: dict[str, Any], definition_id: int | None,
                  now: datetime | None) -> ScopeContext:
    """What the scope query of a preview or launch of `spec` at `now` is built from (stages and fallback
    resolved, risk cutoffs, the last review); refreshes PostgreSQL's planner statistics first."""
    now = now or utcnow()
    refresh_planner_stats(session)
    fallback_id, stages = _resolve_stages(session, spec)
    last = last_review_at(session, definition_id)
    cutoffs = risk_mod.Cutoffs.for_spec(now, spec.get("risk") or {}, last)
    ctx = ScopeContext(spec, definition_id, now, dialects.name(session), fallback_id, stages, last, cutoffs)
    ctx.params = {"true": True, **risk_mod.sql_params(cutoffs)}
    return ctx


# --- lifecycle ------------------------------------------------------------------------------------


def _definition(session: Session, definition_id: int) -> CampaignDefinition:
    definition = session.get(CampaignDefinition, definition_id)
    if definition is None:
        raise CampaignError(f"no campaign definition {definition_id}")
    return definition


def _campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = dialects.for_update(session, stmt, Campaign)
    campaign = session.scalars(stmt).first()
    if campaign is None:
        raise CampaignError(f"no campaign {campaign_id}")
    return campaign


def launched_on(session: Session, definition_id: int, now: datetime) -> list[Campaign]:
    """The campaigns of a definition created on `now`'s (UTC) day, cancelled ones aside: launching it
    again that day deserves a warning."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return list(session.scalars(
        select(Campaign).where(Campaign.definition_id == definition_id, Campaign.created_at >= start,
                               Campaign.created_at < start + timedelta(days=1), Campaign.status != CampaignStatus.CANCELLED)
        .order_by(Campaign.id)))


def default_name(session: Session, definition: CampaignDefinition, now: datetime) -> str:
    """"<definition> — <date>", with " (2)", " (3)"... when a campaign of that name exists already, so two
    launches on one day are told apart."""
    base = f"{definition.name} — {now:%Y-%m-%d}"
    taken = set(session.scalars(select(Campaign.name).where(Campaign.name.like(base.replace("%", "_") + "%"))))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} ({n})"
    return name


def set_archived(session: Session, definition_id: int, archived: bool, actor: str,
                 now: datetime | None = None) -> CampaignDefinition:
    """Archive (hide from the list, refuse launches, scheduled ones included) or unarchive a definition;
    its campaigns are kept. Audited `definition.archive` / `definition.unarchive`."""
    definition = _definition(session, definition_id)
    before = definition.archived_at
    definition.archived_at = (now or utcnow()) if archived else None
    session.flush()
    audit(session, actor=actor, action="definition.archive" if archived else "definition.unarchive",
          object_type="campaign_definition", object_id=str(definition.id),
          before={"archived_at": before.isoformat() if before else None},
          after={"archived_at": definition.archived_at.isoformat() if definition.archived_at else None,
                 "name": definition.name})
    return definition


def create_campaign(session: Session, definition_id: int, actor: str, name: str | None = None) -> Campaign:
    """A draft campaign from a definition (audited `campaign.create`)."""
    definition = _definition(session, definition_id)
    if definition.archived_at is not None:
        raise CampaignError(f"the definition {definition.name} is archived; unarchive it to launch it")
    now = utcnow()
    campaign = Campaign(
        definition_id=definition.id, name=(name or "").strip() or default_name(session, definition, now),
        status=CampaignStatus.DRAFT, spec=dict(definition.spec), owner_user_id=definition.owner_user_id, created_by=actor,
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
        if obj.status != CampaignStatus.DRAFT:
            raise CampaignError(f"campaign {obj.id} is {obj.status}; preview is for drafts (its items are launched)")
        spec, definition_id = (obj.definition.spec if obj.definition else obj.spec), obj.definition_id
    elif isinstance(obj, CampaignDefinition):
        spec, definition_id = obj.spec, obj.id
    elif isinstance(obj, Mapping):
        spec, definition_id = dict(obj), None
    else:
        raise CampaignError("preview needs a definition, a campaign or a spec")
    ctx = scope_context(session, spec, definition_id, now)
    params = dict(ctx.params)
    with RouteTables(session, ctx) as route:
        routed = route.routed()
        sql = (f"{held_cte(ctx)} SELECT x_reason, x_reviewer, x_routed_by, x_mask, COUNT(*) AS n"
               f" FROM (SELECT {routed_exclusion_sql(ctx)} AS x_reason, {routed.reviewer} AS x_reviewer,"
               f" {routed.routed_by} AS x_routed_by, risk.mask AS x_mask"
               + scope_from(ctx, params, routed) + ") q GROUP BY x_reason, x_reviewer, x_routed_by, x_mask")
        with whole_population_plan(session):
            rows = session.execute(dialects.text_with_dates(sql, params), params).all()
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
    if campaign.status != CampaignStatus.DRAFT:
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only a draft can be launched")
    definition = session.get(CampaignDefinition, campaign.definition_id) if campaign.definition_id else None
    spec = dict(definition.spec) if definition is not None else dict(campaign.spec)
    ctx = scope_context(session, spec, campaign.definition_id, now)
    params = dict(ctx.params)
    params["campaign_id"] = campaign.id
    with session.begin_nested(), RouteTables(session, ctx) as route:  # an error leaves nothing behind
        skipping = dialects.skip_fk_triggers(session)
        # about one item per active grant: the first large campaign builds review_item's indexes after
        rebuild = drop_indexes_for_bulk_load(
            session, ReviewItem.__table__, session.scalar(text("SELECT COUNT(*) FROM access_grant WHERE ended_at IS NULL")),
            keep=("ix_review_item_co_reviewer",))  # only escalated items enter it; none is at launch
        with whole_population_plan(session):
            sql = snapshot_sql(ctx, params, routed=route.routed(), inbox_order=not rebuild)
            inserted = session.execute(dialects.text_with_dates(sql, params), params).rowcount
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
        excl = exclusion_sql(ctx, params)
        if excl:
            # when every reason is about the account or its person, only those accounts' access is read again
            by_account = exclusion_sql(ctx, params, account_level=True)
            accounts = None
            if by_account == excl:
                ids = session.scalars(dialects.text_with_dates(
                    "SELECT acc.id FROM account acc LEFT JOIN identity idn ON idn.id = acc.identity_id"
                    f" WHERE acc.ended_at IS NULL AND ({excl}) IS NOT NULL", params), params).all()
                total = session.scalar(text("SELECT COUNT(*) FROM account WHERE ended_at IS NULL")) or 0
                if ids and len(ids) <= 0.2 * total:  # few: read only their access (a temp table the planner sizes)
                    accounts = f"SELECT account_id FROM {route.excluded_accounts(ids)}"
                elif not ids:
                    excl = None
        if excl:
            sql = (f"{held_cte(ctx, accounts)} INSERT INTO campaign_exclusion (campaign_id, grant_id, account_id, reason)"
                   f" SELECT :campaign_id, h.grant_id, acc.id, {excl}"
                   + scope_from(ctx, params) + f" AND ({excl}) IS NOT NULL")
            session.execute(dialects.text_with_dates(sql, params), params)
        if skipping:
            dialects.restore_fk_triggers(session)
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
    campaign.status = CampaignStatus.ACTIVE
    campaign.launched_at = now
    campaign.due_at = now + timedelta(days=int(spec["timing"]["duration_days"]))
    if definition is not None:
        definition.last_launched_at = now
    session.flush()
    audit(session, actor=actor, action="campaign.launch", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": "draft"},
          after={"status": CampaignStatus.ACTIVE, "due_at": campaign.due_at.isoformat(), "population": campaign.population,
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
        owner_ids=owners_of(session, item.resource_id), stage=stages[stage], fallback_id=fallback_id,
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


def close(session: Session, campaign_id: int, actor: str, now: datetime | None = None,
          reason: str | None = None) -> Campaign:
    """Close an active campaign: every item gets an outcome (its decision, else the no-response outcome),
    revoked items become pending Remediations, the summary is filled, the campaign is locked."""
    now = now or utcnow()
    campaign = _campaign(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.ACTIVE:
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

    remediations = remediation_targets.add_pending(session, campaign, now)
    campaign.summary = close_summary(session, campaign, now, remediations)
    session.flush()
    totals = {k: v for k, v in campaign.summary.items() if k != "reviewers"}
    audit(session, actor=actor, action="campaign.close", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": CampaignStatus.ACTIVE},
          after={"status": "closed", "summary": totals, **({"reason": reason.strip()} if (reason or "").strip() else {})})
    return campaign


def cancel(session: Session, campaign_id: int, actor: str, reason: str) -> Campaign:
    """Cancel a draft or active campaign (no outcomes, no remediation); the reason is required and audited."""
    reason = (reason or "").strip()
    if not reason:
        raise CampaignError("say why the campaign is cancelled (--reason)")
    campaign = _campaign(session, campaign_id, lock=True)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.ACTIVE):
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only a draft or active campaign can be cancelled")
    before = campaign.status
    campaign.status = CampaignStatus.CANCELLED
    campaign.closed_at = utcnow()
    campaign.closed_by = actor
    session.execute(update(ReviewItem).where(ReviewItem.campaign_id == campaign.id)
                    .values(version=ReviewItem.version + 1).execution_options(synchronize_session=False))
    session.flush()
    audit(session, actor=actor, action="campaign.cancel", object_type="campaign", object_id=str(campaign.id),
          campaign_id=campaign.id, before={"status": before}, after={"status": CampaignStatus.CANCELLED, "reason": reason})
    return campaign

