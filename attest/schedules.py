"""Cron schedules read one way everywhere: a standard 5-field crontab in UTC (croniter), as an APScheduler
trigger.

A kernel module: sources, campaign definitions and the scheduler (attest/jobs/, an entry point) all read
their schedules through it, so a schedule accepted on a form is the one the scheduler fires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from croniter import CroniterBadDateError, croniter


class CrontabTrigger(BaseTrigger):
    """An APScheduler trigger for a standard 5-field crontab expression in UTC, read by croniter.

    Standard crontab: 0 and 7 are Sunday, names (mon, jan) allowed. A restricted day of the month and a
    restricted day of the week must both match (APScheduler's reading, kept from its CronTrigger, which
    Attest used before; classic cron fires when either matches).
    """

    __slots__ = ("expr",)

    def __init__(self, expr: str) -> None:
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"{expr!r} must have 5 fields (minute hour day month day-of-week), not {len(fields)}")
        self.expr = " ".join(fields)
        self._iter(datetime(2000, 1, 1, tzinfo=UTC))  # croniter raises CroniterBadCronError (a ValueError)

    def _iter(self, start: datetime) -> croniter:
        return croniter(self.expr, start.astimezone(UTC), day_or=False)

    def next_at_or_after(self, start: datetime) -> datetime | None:
        try:
            return self._iter(start - timedelta(microseconds=1)).get_next(datetime).replace(fold=0)
        except CroniterBadDateError:  # never fires (say, 30 February)
            return None

    def previous_at_or_before(self, now: datetime) -> datetime | None:
        try:
            return self._iter(now + timedelta(microseconds=1)).get_prev(datetime).replace(fold=0)
        except CroniterBadDateError:
            return None

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # as APScheduler's CronTrigger: the first occurrence after the previous one (missed ones included)
        if previous_fire_time is None:
            return self.next_at_or_after(now)
        start = min(now, previous_fire_time + timedelta(microseconds=1))
        return self.next_at_or_after(start + timedelta(microseconds=1) if start == previous_fire_time else start)

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "expr": self.expr}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.expr = state["expr"]

    def __str__(self) -> str:
        return f"crontab[{self.expr}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.expr!r}, timezone='UTC')>"


def cron_trigger(expr: str) -> CrontabTrigger:
    """The scheduler's trigger for a standard 5-field crontab expression (UTC). Raises ValueError."""
    return CrontabTrigger(expr)


def previous_fire_time(cron: str, now: datetime) -> datetime | None:
    """The latest time at or before `now` at which `cron` fires (UTC)."""
    return cron_trigger(cron).previous_at_or_before(now)
