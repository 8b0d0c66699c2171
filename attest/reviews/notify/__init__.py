"""Review e-mail: launch notices, reminders, escalations and closing summaries, each sent exactly once.

`send_pending(session, settings, now)` works out what is due at `now` (the scheduler calls it every
few minutes; tests drive the clock), sends it over SMTP and records a ReviewerNotice plus an AuditEvent
(`notice.sent`) for each mail that the server accepted. A mail that fails is logged and simply not
recorded, so the next run sends it again: a notice is never lost and never sent twice.

- **launch**: every reviewer with undecided items in an active campaign (also reviewers who get items
  later, e.g. a second stage or a reassignment).
- **reminder:<days>**: `timing.reminders_days_before_due` days before the due date, to reviewers with
  undecided items who have not signed off. Only the latest reminder that is due is sent (a scheduler
  that was down for a week does not send three reminders at once), never one whose time came before the
  reviewer's launch notice.
- **escalation**: `timing.escalate_after_days_overdue` days after the due date the reviewer's manager
  (else the campaign's fallback reviewer) becomes `co_reviewer_id` on the reviewer's undecided items
  (AuditEvent `campaign.escalated`) and both get a mail (`escalation` to the reviewer,
  `escalation:<reviewer id>` to the co-reviewer).
- **summary**: the closing summary to the campaign owner (the campaign's owner user, else the
  definition's), for campaigns closed in the last SUMMARY_WINDOW.

Without ATTEST_SMTP_HOST (development, tests) a mail is written to the log instead of being sent; in
production that is a delivery failure, so notices wait until SMTP is configured.

SMTP talks happen before any write: the writes of a batch (notices, escalations, audit events) come
last, so the audit chain's head row is locked only for that short burst. On SQLite the transaction
first claims the write lock (an empty UPDATE), so a concurrent writer can never invalidate the read
snapshot after mails went out.

The package, one module per idea (what the rest of Attest, the tests and bench/ import is re-exported here):

- `due`: what is due at `now` (plan), escalation targets and forecast, a campaign's summary figures
- `rendering`: the mail templates into a Mail and its MIME message
- `sending`: the Mailer, then the writes of a batch; send_pending, send_due, remind_now
"""

from __future__ import annotations

from attest.reviews.notify.due import escalation_forecast, plan
from attest.reviews.notify.rendering import render_mail
from attest.reviews.notify.sending import Mailer, MailError, NotifyError, remind_now, send_due, send_pending

__all__ = [
    "MailError", "Mailer", "NotifyError", "escalation_forecast", "plan", "remind_now", "render_mail",
    "send_due", "send_pending",
]
