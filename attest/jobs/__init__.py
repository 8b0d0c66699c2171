"""The scheduler (`attest scheduler`) and its job lease.

Jobs (`job_table`): each enabled Source with a `schedule` is synced on its cron; recurring campaign
launches (`schedule.due_to_launch`), closes at the due date (`schedule.due_to_close`), review e-mail
(`notify.send_pending`) and remediation runs (`remediation.run_pending`) run every few minutes; the audit
chain's head is checkpointed outside the database every minute with new events (`audit:checkpoint`); the
evidence bundles asked for on the web are built one at a time (`evidence:export`, attest.audit.export_jobs:
each minute's run keeps looking for new ones every 2 s, so web workers never build a bundle); a
`reconcile` job keeps APScheduler's job list in step with the sources and definitions; the syncs asked
for on the web ("Sync now") run each minute (`sources:sync-requests`) under their source's `sync:<name>` lease.

APScheduler 3 keeps the jobs in the app database (`apscheduler_jobs`, created by migration 0003; the
job store never creates tables here). Several scheduler processes may share it: every run first takes
the job's **lease** (`acquire`: one conditional UPDATE, or an INSERT for a new job), committed at once,
and releases it with the run's status and error. A lease is granted only when it is free and this
occurrence of the job has not started yet, or when its holder crashed (the lease expired), so two
processes never run the same job twice. A running job renews its lease (a heartbeat thread), so a short
TTL is enough (60 s, renewed every 15 s) and a crashed holder's lease lapses within a minute; every 5 s, and
once more at the moment a lease it saw lapses, each scheduler's own takeover watch (`watch_takeovers`, no lease
of its own, so never stuck behind a dead process's reconcile) runs at once the jobs whose holder died
(`take_over`), so a standby takes over within LEASE_TTL (60 s, and a fraction of a second) of the holder's last
heartbeat, and so within the lease time of its death, whatever the job's own interval.

Every job function takes `now`, so tests drive time. Web workers never run jobs.

The package, one module per idea (what the rest of Attest, the tests and bench/ import is re-exported here;
`attest.jobs:scheduled_run`, the textual reference job stores written before the split hold, still resolves):

- `lease`: the job lease (acquire, renew, release, stale leases) and APScheduler's table
- `table`: the job specs, the fixed jobs, the job table, a run's context and result
- `tasks`: the job functions, one per kind
- `scheduler`: run_job under the lease, the registry, APScheduler kept in step, takeover, start and stop
"""

from __future__ import annotations

from attest.jobs.lease import JobLease, acquire, apscheduler_jobs, release, stale_leases
from attest.jobs.scheduler import (
    JOBS,
    LAPSE_MARGIN,
    SCHEDULER_SEEN_WITHIN,
    TAKEOVER_AT_LAPSE,
    TAKEOVER_EVERY,
    TAKEOVER_WATCH,
    job_reconcile,
    make_scheduler,
    reconcile,
    run_job,
    run_now,
    run_scheduler,
    scheduled_run,
    scheduler_last_seen,
    status,
    watch_takeovers,
)
from attest.jobs.table import (
    ACTOR,
    FIXED_JOBS,
    HEARTBEAT,
    LEASE_TTL,
    RECONCILE,
    REMEDIATION,
    JobContext,
    JobSpec,
    SchedulerError,
    job_table,
)
from attest.jobs.tasks import job_checkpoint, job_remediation

__all__ = [
    "ACTOR", "FIXED_JOBS", "HEARTBEAT", "JOBS", "LAPSE_MARGIN", "LEASE_TTL", "RECONCILE", "REMEDIATION",
    "SCHEDULER_SEEN_WITHIN", "TAKEOVER_AT_LAPSE", "TAKEOVER_EVERY", "TAKEOVER_WATCH", "JobContext", "JobLease", "JobSpec",
    "SchedulerError", "acquire", "apscheduler_jobs", "job_checkpoint", "job_reconcile",
    "job_remediation", "job_table", "make_scheduler", "reconcile", "release", "run_job", "run_now",
    "run_scheduler", "scheduled_run", "scheduler_last_seen", "stale_leases", "status", "watch_takeovers",
]
