"""The normalized entitlement model: Source, SyncRun, Identity, Account, Resource, Entitlement, Grant,
AccessChange.

Rows are never deleted. Accounts, resources and entitlements that stop being seen get `ended_at` and
`ended_reason`; when they come back the same row is reopened. Grants are history: a grant that ends and
later reappears is a new row, so "who had what on date X" is a query over first_seen_at/ended_at.

An active row (ended_at IS NULL) was last seen at its source's last successful run
(`Source.last_success_run_id`); unchanged rows are never rewritten just to bump a timestamp.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from attest.db import Base, JSONType, UTCDateTime, utcnow


class RunStatus(StrEnum):
    """A sync run's status (SyncRun.status). Members equal their strings: stored as the strings."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # applied, but some parts could not be read (left as they were)
    FAILED = "failed"
    ABORTED = "aborted"  # the removal guard stopped it: nothing changed


class PersonStatus(StrEnum):
    """An identity's or account's status as the source says it (Identity.status, Account.status)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


SOURCE_KINDS = ("demo", "okta", "aws", "github")
RUN_STATUSES = tuple(s.value for s in RunStatus)
# a run that was applied: the source was read (a partial run read all but its failed parts)
SUCCESSFUL_RUN_STATUSES = (RunStatus.SUCCEEDED.value, RunStatus.PARTIAL.value)
ACCOUNT_KINDS = ("human", "service")
LINK_METHODS = ("manual", "authoritative", "saml_nameid", "email", "username", "tag")
PURPOSES = ("assignment", "permission", "ownership")
PRINCIPAL_TYPES = ("account", "resource")

ACTIVE = text("ended_at IS NULL")


class Source(Base):
    __tablename__ = "source"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    schedule: Mapped[str | None] = mapped_column(String(100))  # cron expression
    authoritative: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "Sync now": a queued request the scheduler's `sources:sync-requests` job runs under the source's lease
    sync_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_requested_by: Mapped[str | None] = mapped_column(String(200))
    last_success_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("sync_run.id", use_alter=True, name="fk_source_last_success_run_id_sync_run")
    )

    last_success_run: Mapped[SyncRun | None] = relationship(
        foreign_keys=[last_success_run_id], post_update=True
    )

    __table_args__ = (CheckConstraint(f"kind IN {SOURCE_KINDS!r}", name="kind"),)

    def __repr__(self) -> str:
        return f"<Source {self.kind}:{self.name}>"


class SyncRun(Base):
    __tablename__ = "sync_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {"read": {"account": n, ...}, "added": {...}, "ended": {...}, "updated": {...}}
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    api_calls: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # [{"part": "aws:123456789012", "reason": "AccessDenied ..."}]
    failed_parts: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    notes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    forced: Mapped[bool] = mapped_column(default=False)
    triggered_by: Mapped[str | None] = mapped_column(String(200))
    # a running sync's last sign of life, and the process running it (host:pid); see sync.sweep_interrupted
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    holder: Mapped[str | None] = mapped_column(String(200))

    source: Mapped[Source] = relationship(foreign_keys=[source_id])

    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        Index("ix_sync_run_source_started", "source_id", "started_at"),
    )

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class SyncedRecord:
    """The columns a sync keeps on every record it reads (identities, accounts, resources, entitlements):
    the source's other attributes, the hash that tells whether the record changed, and the row's life
    (first seen; ended when and why, and reopened when the record comes back: rows are never deleted)."""

    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    record_hash: Mapped[str | None] = mapped_column(String(40))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(50))


class SourceRecord(SyncedRecord):
    """A synced record one source owns (accounts, resources, entitlements), known by its id in that source
    (`external_id`, unique per source) and by the part of the source it was read from (`part`: a failed part's
    records are left as they were, see attest.entitlements.sync). Identities are not: one can be made by hand
    (no source)."""

    # sort_order: first in the table, as the migrations made them (mixin columns otherwise come last)
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=-4)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"), sort_order=-3)
    external_id: Mapped[str] = mapped_column(String(255), sort_order=-2)
    part: Mapped[str | None] = mapped_column(String(200), sort_order=-1)

    @declared_attr
    def source(cls) -> Mapped[Source]:
        return relationship(lazy="joined")


class Identity(SyncedRecord, Base):
    """A person or a non-human owner, from the authoritative source (or created by hand)."""

    __tablename__ = "identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("source.id"))
    external_id: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_normalized: Mapped[str | None] = mapped_column(String(320), index=True)
    login: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    employee_id: Mapped[str | None] = mapped_column(String(100))
    department: Mapped[str | None] = mapped_column(String(200), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"), index=True)
    manager_ref: Mapped[str | None] = mapped_column(String(320))  # as the source gave it
    status: Mapped[str] = mapped_column(String(30), default="active")  # active | suspended | terminated
    kind: Mapped[str] = mapped_column(String(20), default="human")

    manager: Mapped[Identity | None] = relationship(remote_side=[id], lazy="joined", join_depth=1)

    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        CheckConstraint(f"kind IN {ACCOUNT_KINDS!r}", name="kind"),
        Index("ix_identity_display_name", "display_name"),
        Index("ix_identity_login", "login"),
    )

    @property
    def terminated(self) -> bool:
        return self.status == PersonStatus.TERMINATED

    def __repr__(self) -> str:
        return f"<Identity {self.email or self.external_id}>"


class Account(SourceRecord, Base):
    """An account in one source, linked to at most one Identity; unlinked accounts are orphaned."""

    __tablename__ = "account"

    login: Mapped[str | None] = mapped_column(String(320))
    email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(30), default="active")
    kind: Mapped[str] = mapped_column(String(20), default="human")
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_upstream_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mfa_enabled: Mapped[bool | None]
    identity_ref: Mapped[str | None] = mapped_column(String(255))  # same-source identity external id
    saml_nameid: Mapped[str | None] = mapped_column(String(320))
    tag_email: Mapped[str | None] = mapped_column(String(320))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"), index=True)
    link_method: Mapped[str | None] = mapped_column(String(20))
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    linked_by: Mapped[str | None] = mapped_column(String(320))

    identity: Mapped[Identity | None] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        CheckConstraint(f"kind IN {ACCOUNT_KINDS!r}", name="kind"),
        Index("ix_account_orphaned", "source_id", "identity_id", sqlite_where=ACTIVE, postgresql_where=ACTIVE),
        Index("ix_account_login", "login"),
    )

    @property
    def orphaned(self) -> bool:
        return self.identity_id is None

    @property
    def label(self) -> str:
        return self.login or self.email or self.display_name or self.external_id


class Resource(SourceRecord, Base):
    """Something access is granted on: a group, app, role, AWS account, permission set, org, team, repo."""

    __tablename__ = "resource"

    type: Mapped[str] = mapped_column(String(50))  # e.g. okta_group, aws_account, github_repo
    name: Mapped[str] = mapped_column(String(400))
    description: Mapped[str | None] = mapped_column(Text)
    is_group: Mapped[bool] = mapped_column(default=False)  # its members hold what it holds
    parent_ref: Mapped[str | None] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("resource.id"), index=True)
    owner_refs: Mapped[list[str]] = mapped_column(JSONType, default=list)  # account external ids

    parent: Mapped[Resource | None] = relationship(remote_side="Resource.id", lazy="select")

    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        Index("ix_resource_type_name", "type", "name"),
    )


class ResourceOwner(Base):
    """Who owns a resource: from the source (an account) or named by an admin (an identity)."""

    __tablename__ = "resource_owner"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"), index=True)
    origin: Mapped[str] = mapped_column(String(20), default="sync")  # sync | manual
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("account_id IS NOT NULL OR identity_id IS NOT NULL", name="who"),
        UniqueConstraint("resource_id", "account_id", "identity_id"),
    )


class Entitlement(SourceRecord, Base):
    """One grantable permission on a resource: member, admin, push, PermissionSet:Admin..."""

    __tablename__ = "entitlement"

    external_id: Mapped[str] = mapped_column(String(400), sort_order=-2)  # longer: it names its resource too (an ARN, an account)
    resource_ref: Mapped[str] = mapped_column(String(255))
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resource.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(400))
    description: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(20), default="assignment")
    privileged: Mapped[bool] = mapped_column(default=False)
    # holding it makes the principal a member of the (group) resource, so it holds what the group holds
    is_membership: Mapped[bool] = mapped_column(default=False)

    resource: Mapped[Resource | None] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        CheckConstraint(f"purpose IN {PURPOSES!r}", name="purpose"),
        Index("ix_entitlement_privileged", "privileged"),
    )

    @property
    def label(self) -> str:
        return self.display_name or self.name


class Grant(Base):
    """A principal (an account, or a group resource) holds an entitlement, from first_seen_at to ended_at."""

    __tablename__ = "access_grant"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"))
    # natural key inside the source: "<entitlement ext id>|<a|r>|<principal ext id>"
    key: Mapped[str] = mapped_column(String(700))
    part: Mapped[str | None] = mapped_column(String(200))
    entitlement_id: Mapped[int] = mapped_column(ForeignKey("entitlement.id"), index=True)
    principal_type: Mapped[str] = mapped_column(String(10))
    principal_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    principal_resource_id: Mapped[int | None] = mapped_column(ForeignKey("resource.id"), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_seen_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(50))
    ended_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"))
    ended_by: Mapped[str | None] = mapped_column(String(320))

    entitlement: Mapped[Entitlement] = relationship(lazy="joined")
    account: Mapped[Account | None] = relationship(foreign_keys=[principal_account_id], lazy="joined")
    group: Mapped[Resource | None] = relationship(foreign_keys=[principal_resource_id], lazy="joined")

    __table_args__ = (
        CheckConstraint(
            "(principal_type = 'account' AND principal_account_id IS NOT NULL AND principal_resource_id IS NULL)"
            " OR (principal_type = 'resource' AND principal_resource_id IS NOT NULL AND principal_account_id IS NULL)",
            name="principal",
        ),
        # one active grant per key and source; ended rows are history
        Index("uq_access_grant_active_key", "source_id", "key", unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE),
        Index("ix_access_grant_first_seen_run", "first_seen_run_id"),
        Index("ix_access_grant_ended_run", "ended_run_id"),
    )

    @property
    def active(self) -> bool:
        return self.ended_at is None


class AccessChange(Base):
    """One row per grant added or ended, with the run that saw it."""

    __tablename__ = "access_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id"))
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"), index=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_grant.id"), index=True)
    change: Mapped[str] = mapped_column(String(10))  # added | ended
    reason: Mapped[str | None] = mapped_column(String(50))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("change IN ('added', 'ended')", name="change"),
        Index("ix_access_change_source_at", "source_id", "at"),
    )
