"""When the scheduler launches and closes campaigns: definitions whose cron schedule fired since their
last launch, and active campaigns past their due date (`attest.jobs` asks these on every tick)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.reviews.models import Campaign, CampaignDefinition, CampaignStatus
from attest.schedules import cron_trigger


def due_to_close(session: Session, now: datetime) -> list[int]:
    """Active campaigns whose due date has passed."""
    return list(session.scalars(
        select(Campaign.id).where(Campaign.status == CampaignStatus.ACTIVE, Campaign.due_at <= now).order_by(Campaign.due_at)))


def next_launch_at(definition: CampaignDefinition) -> datetime | None:
    """The first time the definition's cron schedule fires after its last launch (or its creation)."""
    if not definition.schedule:
        return None
    base = definition.last_launched_at or definition.created_at
    trigger = cron_trigger(definition.schedule)
    return trigger.get_next_fire_time(None, base + timedelta(seconds=1))


def due_to_launch(session: Session, now: datetime) -> list[int]:
    """Enabled definitions whose cron schedule fired since their last launch (or since they were created)."""
    out = []
    for definition in session.scalars(
        select(CampaignDefinition).where(CampaignDefinition.enabled.is_(True), CampaignDefinition.schedule.is_not(None),
                                        CampaignDefinition.archived_at.is_(None))
        .order_by(CampaignDefinition.id)
    ):
        nxt = next_launch_at(definition)
        if nxt is not None and nxt <= now:
            out.append(definition.id)
    return out
