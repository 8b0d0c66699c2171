"""The sync engine: run a connector, stage its records, apply the difference (DESIGN, "Sync rules").

1. The connector is paged through completely first (`stage.read_into_stage`). What the source held
   before the run is read first (`stage.load_known`); only new and changed records (by content hash) are
   written, in batches, to TEMPORARY stage tables on the run's own connection (COPY on PostgreSQL,
   executemany on SQLite), with the keys of the active rows the run did not see (stage_gone). Grants,
   ten per person, are compared in the database instead (`stage.settle_grants`), so a run's memory does
   not grow with the source's grants.
2. Only a run that finished is applied (`apply.apply_run`), set-based, in one transaction: new rows
   inserted, changed rows updated, unseen rows ended with `ended_reason='not_seen'`, and every grant
   added or ended written to AccessChange. Unchanged rows are not touched: an active row was last seen
   at its source's last successful run. Hooks registered with `after_apply` (remediation's verification)
   run last, inside the same transaction.
3. A failed or interrupted run changes nothing but its own SyncRun row (`run`).
4. A part the connector could not read (PartFailed) is left as it was: nothing in it is ended, nothing
   staged in it overwrites a row already there (a connector yields a record derived partly from an unread
   part in that part, so its previous value is kept), and the run is `partial`.
5. A run that would end more than ATTEST_SYNC_MAX_REMOVAL_RATIO of the active rows of any kind
   (identities, accounts, resources, entitlements, grants), of the source or of one of its parts, is
   refused before anything is written (`aborted`, a message naming the kind and the counts) unless forced.
6. Upstream text is normalised before it is staged: NUL bytes and invalid Unicode (lone surrogates) are
   removed from every string of a record, with a note naming the record, so one bad name never fails a
   run (PostgreSQL refuses both). Upstream error texts (a failed run, a failed part, a note) are redacted
   of the source's secrets and of anything that looks like one (attest/redact.py) before they are stored.

Every run records the seconds of its phases in `SyncRun.stats["phases"]` (read, stage, apply, verify,
in the order they ran), failed runs up to their failure; a successful run also keeps the steps of its
apply in `stats["timings"]`.

Modules: `state` (the run's state, result, progress and errors), `stage` (stage tables and reading into
them), `apply` (applying a staged run, the removal guard), `run` (starting, running and finishing runs,
the heartbeat), `hooks` (after-apply hooks for the layers above). The package re-exports what the rest of
Attest calls (and SYNC_HEARTBEAT, which is set here to change it); tests import the rest from its module.
"""

from attest.entitlements.sync.hooks import after_apply
from attest.entitlements.sync.run import SYNC_HEARTBEAT, run_sync, sweep_interrupted, sync_many
from attest.entitlements.sync.state import SyncError, SyncResult

__all__ = ["SYNC_HEARTBEAT", "SyncError", "SyncResult", "after_apply", "run_sync", "sweep_interrupted", "sync_many"]
