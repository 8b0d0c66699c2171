"""After-apply hooks: how the sync tells the layers above it that a run was applied.

The sync engine sits below the reviews (DESIGN, "Layers"): it never imports them. A higher layer that must
act on what a run saw (remediation verifies revocations against it) registers a function here at import
time; each is called with (session, source_id, run_id, result) inside the apply transaction, after the
run's own rows are written, so what it changes commits, or rolls back, with the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from attest.entitlements.sync.state import SyncResult

AfterApply = Callable[[Session, int, int, SyncResult], Any]

_AFTER_APPLY: list[AfterApply] = []


def after_apply(fn: AfterApply) -> AfterApply:
    """Register `fn(session, source_id, run_id, result)` to run inside every successful run's apply
    transaction (`result`: the run's SyncResult: status, stats, failed parts, notes). Registering the same function twice keeps one. Usable as a
    decorator."""
    if fn not in _AFTER_APPLY:
        _AFTER_APPLY.append(fn)
    return fn


def after_apply_hooks() -> tuple[AfterApply, ...]:
    return tuple(_AFTER_APPLY)


def run_after_apply(session: Session, source_id: int, run_id: int, result: SyncResult) -> None:
    for fn in _AFTER_APPLY:
        fn(session, source_id, run_id, result)
