"""Remediation: carry out revocations, verify them on the next sync, undo them within a window.

Each item whose outcome is revoke gets a Remediation at close (`campaigns.close`):

- **automatic**: `run_pending` (the scheduler, or `attest remediation run`) calls the source connector's
  `revoke(grant_ref, dry_run)`. Guards come before anything is called: access that the source would
  re-create (held through a group, or managed elsewhere: `attest.connectors.managed`) is routed to the manual
  work list naming where it really comes from (`target`); the connector's own refusals (last org owner,
  last super admin...) end as `refused` with the reason; more revocations than
  ATTEST_REMEDIATION_MAX_PER_RUN stop the run until it is confirmed (`--yes`); a dry run lists the calls
  and changes nothing. A failed call is retried with back-off (`attempts`, `next_attempt_at`) and ends
  as `failed` with the error once the attempts are used up.
- **manual**: a work list for the system's administrators (CSV export) with "mark done" and a note.

Verification: `verify_after_sync` runs inside every successful sync's apply transaction (an after-apply
hook of the sync engine, registered when this module is imported). A done
remediation whose access the run no longer sees becomes `verified` with that SyncRun as proof; one whose
access is still there (or comes back in a later run: a new active grant with the same key) becomes
`reappeared`. Only runs that started after the revoke count, so a sync that read the source before the
call cannot flag it. A connector says `done` only when a follow-up read showed the access gone; a call the
upstream accepted while it still shows the access is `unconfirmed` (verified or flagged like a done one).

Undo: within ATTEST_REMEDIATION_UNDO_DAYS an automatic revoke can be reversed through the connector's
`grant(...)`, re-granting exactly the grant that was revoked. An undo the upstream answers with an
invitation the person still has to accept (GitHub's 201) ends as `invited`, not `undone`.

Every change is an audit event carrying the campaign id. Like `sync.run_sync`, `run_pending` and `undo`
take the session factory: connector calls happen outside any database transaction (a slow upstream must
not hold the database's write lock), and each remediation's outcome commits on its own.

The package, one module per idea (what the rest of Attest imports is re-exported here, tests import the rest
from its module; importing it registers the verification hook):

- `planning`: the grant reference, where access really comes from, the planned call, the errors
- `execution`: run_pending and undo, through the connectors
- `verification`: the sync's after-apply hook that verifies (or flags) done remediations
- `worklist`: the rows, counts and CSV exports of the work list; marking a manual one done
"""

from __future__ import annotations

from attest.reviews.remediation.execution import _due, run_pending, undo
from attest.reviews.remediation.planning import RemediationError, UndoError, describe
from attest.reviews.remediation.verification import _verify_after_apply  # importing it registers the hook
from attest.reviews.remediation.worklist import (
    list_remediations,
    mark_done,
    status_counts,
    write_manual_csv,
    write_remediations_csv,
)

__all__ = [
    "RemediationError", "UndoError", "_due", "_verify_after_apply", "describe", "list_remediations", "mark_done",
    "run_pending", "status_counts", "undo", "write_manual_csv", "write_remediations_csv",
]
