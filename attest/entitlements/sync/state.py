"""What a sync run carries from start to finish: its errors, its result, its progress and its state.

`RunState` is the one object a run passes from stage to apply: what the connector read (counts, failed
parts, notes), what the stage holds, the API calls made, and the duration of each phase. Nothing else
is mutated along the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from attest.entitlements.models import SUCCESSFUL_RUN_STATUSES


class SyncError(Exception):
    """A sync could not start or was refused; the message is for the user."""


class RemovalGuardTripped(SyncError):
    pass


@dataclass
class SyncResult:
    run_id: int
    source: str
    status: str
    stats: dict[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    seconds: float = 0.0
    error: str | None = None
    failed_parts: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in SUCCESSFUL_RUN_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    records: int = 0
    requests: int = 0
    elapsed: float = 0.0
    phase: str = "reading"


@dataclass
class RunState:
    """One run of one source, from its SyncRun row to its result."""

    source_id: int
    source_name: str
    run_id: int
    started: float = field(default_factory=time.monotonic)  # time.monotonic() at the start
    # what the connector yielded
    read: dict[str, int] = field(default_factory=dict)  # records read per kind (identities, ..., grants)
    failed_parts: list[dict[str, str]] = field(default_factory=list)  # {"part", "reason"}, as stored
    notes: list[str] = field(default_factory=list)
    api_calls: int = 0
    # what the stage holds: grant records staged (those whose key was not active before the run)
    staged_new_grants: int = 0
    # seconds per phase, in the order they ran (SyncRun.stats["phases"])
    phases: dict[str, float] = field(default_factory=dict)
    # the live progress shown on a terminal and on the source page
    progress: Progress = field(default_factory=Progress)
    report: Callable[[Progress], None] | None = None

    @property
    def grants_read(self) -> int:
        return self.read.get("grants", 0)

    @property
    def failed_part_names(self) -> list[str]:
        return [p["part"] for p in self.failed_parts]

    def count_read(self, kind: str, n: int) -> None:
        self.read[kind] = self.read.get(kind, 0) + n
        self.progress.records += n

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add_phase(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + seconds, 3)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase of the run; a phase that fails is recorded too, up to its failure."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_phase(name, time.perf_counter() - t0)
