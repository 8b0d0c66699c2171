"""Review campaigns: CampaignDefinition, Campaign, ReviewItem, Decision, ReviewerSignoff,
CampaignExclusion, Remediation.

- A **CampaignDefinition** holds a validated spec (see `reviews/definitions.py`): scope, reviewer stages,
  fallback reviewer, self-review policy, timing, rules, controls, schedule. It can be written in YAML.
- A **Campaign** is draft -> active -> closed (or cancelled). Launch freezes the definition's spec on the
  campaign (`spec`), snapshots in-scope grants into ReviewItems set-based, and records the population
  reconciliation (`population`: in scope = items + exclusions, exclusions with reasons in
  CampaignExclusion) and the SyncRuns whose data was used (`sync_runs`).
- A **ReviewItem** is a frozen copy of one grant (held directly or through a group, per account) as it was
  at launch, with its risk signals, the current stage and reviewer, the decision and a `version` for
  optimistic locking (two reviewers deciding at once: one wins, the other gets StaleDataError -> 409).
- **Decision** rows are the history of every decision on an item (all stages, every change).
- A **Remediation** is created at close for each item whose outcome is revoke.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from attest.db import Base, JSONType, UTCDateTime, utcnow
from attest.entitlements.risk import RISKS as _RISKS

# Status and decision names, each defined once (StrEnum members equal their strings: the database
# stores the strings, and code compares either).


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class DecisionValue(StrEnum):
    """A reviewer's answer (ReviewItem.decision, Decision.decision)."""

    APPROVE = "approve"
    REVOKE = "revoke"
    ABSTAIN = "abstain"


class Outcome(StrEnum):
    """What closing a campaign made of an item (ReviewItem.outcome)."""

    KEEP = "keep"
    REVOKE = "revoke"
    FLAG = "flag"


class RemediationMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class RemediationStatus(StrEnum):
    PENDING = "pending"  # created at close, nothing called yet
    IN_PROGRESS = "in_progress"  # being carried out (automatic) or open on the work list (manual)
    DONE = "done"  # the revoke call succeeded / marked done by hand; waiting for a sync to verify
    VERIFIED = "verified"  # a later sync no longer sees the grant (verified_run_id is the proof)
    REAPPEARED = "reappeared"  # the grant is still there after the revoke, or came back later
    FAILED = "failed"  # retries exhausted; last_error says why
    REFUSED = "refused"  # a guard refused it (last owner, rule-managed group...); last_error says why
    UNDONE = "undone"  # re-granted within the undo window
    UNCONFIRMED = "unconfirmed"  # the upstream accepted the revoke but a follow-up read still shows the access
    INVITED = "invited"  # undone as an invitation the person still has to accept (GitHub's 201); not re-granted yet


CAMPAIGN_STATUSES = tuple(s.value for s in CampaignStatus)
DECISIONS = tuple(d.value for d in DecisionValue)
OUTCOMES = tuple(o.value for o in Outcome)
REMEDIATION_MODES = tuple(m.value for m in RemediationMode)
REMEDIATION_STATUSES = tuple(s.value for s in RemediationStatus)
# the risk signals have one home: attest.entitlements.risk (re-exported here for the review code)
RISKS = _RISKS


class CampaignDefinition(Base):
    __tablename__ = "campaign_definition"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # validated, normalized
    source_yaml: Mapped[str | None] = mapped_column(Text)  # as written, when created from YAML
    schedule: Mapped[str | None] = mapped_column(String(100))  # cron, for recurring campaigns
    enabled: Mapped[bool] = mapped_column(default=True)
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # hidden and not launchable (0020)


class Campaign(Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    definition_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_definition.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # the definition as launched
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(320))
    # {"in_scope": n, "items": n, "excluded": n, "excluded_by_reason": {...}}
    population: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # [{"source": name, "run_id": id, "finished_at": iso, "status": ..., "stats": {...}}]
    sync_runs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # filled at close

    definition: Mapped[CampaignDefinition | None] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint(f"status IN {CAMPAIGN_STATUSES!r}", name="status"),
        Index("ix_campaign_status_due", "status", "due_at"),
    )


class ReviewItem(Base):
    """One certification item: a snapshot, taken at launch, of one access a person holds.

    The snapshot columns (grant, account, identity, source, resource, entitlement, via_resource) carry
    no foreign key: the rows they name are never deleted (grants, accounts, identities, resources and
    entitlements end; sources are disabled), the values are copied from those rows by the launch's
    own INSERT ... SELECT, and checking seven keys per row for a million items cost more than writing
    the items (migration 0005). The keys that items are *changed* through (campaign, reviewers,
    decided by) keep theirs.
    """

    __tablename__ = "review_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    # no index: nothing looks items up by these (a campaign, a reviewer or an id does); migration 0006
    grant_id: Mapped[int]
    account_id: Mapped[int]
    identity_id: Mapped[int | None]  # None: orphaned
    source_id: Mapped[int]
    resource_id: Mapped[int | None]
    entitlement_id: Mapped[int]
    # frozen copy at launch, so the item reads the same whatever happens upstream later
    person_name: Mapped[str | None] = mapped_column(String(255))
    person_email: Mapped[str | None] = mapped_column(String(320))
    person_department: Mapped[str | None] = mapped_column(String(200))
    person_title: Mapped[str | None] = mapped_column(String(200))
    person_status: Mapped[str | None] = mapped_column(String(30))
    account_login: Mapped[str | None] = mapped_column(String(320))
    account_kind: Mapped[str] = mapped_column(String(20), default="human")
    account_last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_name: Mapped[str] = mapped_column(String(100))
    source_kind: Mapped[str] = mapped_column(String(20))
    resource_name: Mapped[str | None] = mapped_column(String(400))
    resource_type: Mapped[str | None] = mapped_column(String(50))
    entitlement_name: Mapped[str] = mapped_column(String(400))
    privileged: Mapped[bool] = mapped_column(default=False)
    via: Mapped[str | None] = mapped_column(String(1000))  # None = direct; else "Group A → Group B"
    via_resource_id: Mapped[int | None]  # the group holding it
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # grant first_seen_at
    risks: Mapped[list[str]] = mapped_column(JSONType, default=list)  # subset of RISKS
    risk_score: Mapped[int] = mapped_column(default=0)
    # routing
    stage: Mapped[int] = mapped_column(default=0)  # index into spec["stages"]
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))  # None: unroutable
    co_reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))  # added by escalation
    routed_by: Mapped[str | None] = mapped_column(String(40))  # manager|resource_owner|named|fallback|self_review|orphan_owner|reassigned
    reassigned_reason: Mapped[str | None] = mapped_column(Text)
    # the current decision (Decision rows keep every one)
    decision: Mapped[str | None] = mapped_column(String(10))
    comment: Mapped[str | None] = mapped_column(Text)
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_by_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a delegate decided: the reviewer they decided for (migration 0019)
    decided_for_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))
    decided_in_bulk: Mapped[bool] = mapped_column(default=False)
    completed: Mapped[bool] = mapped_column(default=False)  # final stage decided, or a revoke
    outcome: Mapped[str | None] = mapped_column(String(10))  # set at close: keep | revoke | flag
    outcome_reason: Mapped[str | None] = mapped_column(String(40))  # decision | no_response
    version: Mapped[int] = mapped_column(default=1)

    campaign: Mapped[Campaign] = relationship(lazy="raise_on_sql")

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint("decision IS NULL OR decision IN ('approve', 'revoke', 'abstain')", name="decision"),
        # the reviewer inbox: keyset pages over (campaign, reviewer) ordered by person, then id; decision and
        # risk_score after the unique id change no order and let the progress counts read the index alone
        # (migration 0007)
        Index("ix_review_item_inbox", "reviewer_id", "campaign_id", "person_name", "id", "decision", "risk_score"),
        # partial: only escalated items have a co-reviewer
        Index("ix_review_item_co_reviewer", "co_reviewer_id", "campaign_id", sqlite_where=text("co_reviewer_id IS NOT NULL"),
              postgresql_where=text("co_reviewer_id IS NOT NULL")),
        Index("ix_review_item_campaign_decision", "campaign_id", "decision"),
        # a campaign's items page and CSV export: keyset pages over the whole campaign by person, then id
        # (migration 0016)
        Index("ix_review_item_campaign_person", "campaign_id", "person_name", "id"),
    )


class Decision(Base):
    """Every decision ever taken on an item, at every stage (an item's current one is on ReviewItem)."""

    __tablename__ = "review_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_item.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"), index=True)
    stage: Mapped[int] = mapped_column(default=0)
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))
    bulk: Mapped[bool] = mapped_column(default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    on_behalf_of_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))  # decided by a delegate for them
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # undone by the person who took it


class Delegation(Base):
    """A reviewer (delegator) away: their delegate sees and decides their items from `starts_at` until
    `ends_at` (or until ended early). Items about the delegate stay with the delegator (reviews/eligibility).
    Migration 0019."""

    __tablename__ = "review_delegation"

    id: Mapped[int] = mapped_column(primary_key=True)
    delegator_id: Mapped[int] = mapped_column(ForeignKey("identity.id"))
    delegate_id: Mapped[int] = mapped_column(ForeignKey("identity.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(320))

    __table_args__ = (
        CheckConstraint("delegator_id <> delegate_id", name="not_self"),
        CheckConstraint("ends_at > starts_at", name="period"),
        Index("ix_review_delegation_delegate", "delegate_id", "ends_at"),
        Index("ix_review_delegation_delegator", "delegator_id", "ends_at"),
    )


class ReviewerSignoff(Base):
    __tablename__ = "reviewer_signoff"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("identity.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signed_off_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("campaign_id", "reviewer_id"),)


class ReviewerNotice(Base):
    """Notifications sent for a campaign (launch, reminders, escalation, closing summary): never twice.

    Reviewers are identities; the closing summary goes to the campaign owner, a user who may have no
    identity (a break-glass admin), hence `user_id` (migration 0003).
    """

    __tablename__ = "reviewer_notice"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    # launch | reminder:<days> | reminder:manual:<minute> | escalation | escalation:<reviewer id> | summary
    kind: Mapped[str] = mapped_column(String(40))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "identity_id", "kind"),
        UniqueConstraint("campaign_id", "user_id", "kind"),
    )


class CampaignExclusion(Base):
    """A grant that was in scope at launch but got no item, and why (population reconciliation)."""

    __tablename__ = "campaign_exclusion"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"), index=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_grant.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    reason: Mapped[str] = mapped_column(String(60))  # e.g. service_account_excluded, not_delta, orphan_excluded


class Remediation(Base):
    __tablename__ = "remediation"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_item.id"), unique=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_grant.id"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"), index=True)
    mode: Mapped[str] = mapped_column(String(20))  # automatic | manual
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # where the access really comes from when revoking the grant itself would be undone upstream
    # (an Okta group rule, the group an app is assigned through): named in the manual task
    target: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    calls: Mapped[list[str]] = mapped_column(JSONType, default=list)  # what was (or would be) called
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    executed_by: Mapped[str | None] = mapped_column(String(320))
    note: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"))
    reappeared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reappeared_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"))
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(320))

    __table_args__ = (
        CheckConstraint(f"mode IN {REMEDIATION_MODES!r}", name="mode"),
        CheckConstraint(f"status IN {REMEDIATION_STATUSES!r}", name="status"),
        Index("ix_remediation_status", "status", "next_attempt_at"),
    )
