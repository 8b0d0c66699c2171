"""Sending: the SMTP Mailer (or the log without ATTEST_SMTP_HOST outside production), then the writes of
a batch (ReviewerNotice rows, escalations, audit events) last, so a mail that fails is simply sent again at
the next run and none is sent twice; `send_pending`, `send_due` and `remind_now`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import smtplib
import ssl
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from attest import dialects
from attest.config import Settings
from attest.db import begin_write, transaction, utcnow
from attest.reviews import eligibility
from attest.reviews.models import Campaign, CampaignStatus, ReviewerNotice, ReviewItem
from attest.reviews.notify.due import (
    Escalation,
    Notice,
    _fallback_identity,
    _identities,
    _name,
    _open_counts,
    _undecided,
    plan,
)
from attest.reviews.notify.rendering import Mail, _campaign_ctx, _date, build_message, inbox_url, render_mail
from attest.trail.chain import record

log = logging.getLogger("attest.notify")


class MailError(Exception):
    """A mail could not be delivered (the message says why; never a credential)."""


class NotifyError(ValueError):
    """A notification request a user can get wrong (unknown or inactive campaign)."""


class Mailer:
    """Sends mail through the configured SMTP server, one connection reused for a batch.

    Use as a context manager (`with Mailer(settings) as m: m.send(mail)`). `send` raises MailError; after
    a connection-level failure `down` is True and the rest of the batch should wait for the next run.
    Without `smtp_host` outside production the mail is written to the log.
    """

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None
        self.down = False
        self.sent = 0
        self.failed = 0

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def logs_only(self) -> bool:
        return not self.settings.smtp_host and not self.settings.is_production

    def _server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if not s.smtp_host:
            raise MailError("ATTEST_SMTP_HOST is not set: mail cannot be delivered")
        try:
            if s.smtp_tls == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=self.timeout,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout)
                if s.smtp_tls == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"SMTP server {self._server()} refused the login of {s.smtp_username!r} "
                            f"({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"cannot reach SMTP server {self._server()}: {type(exc).__name__}: {exc}") from None
        return smtp

    def send(self, mail: Mail) -> None:
        if self.down:
            raise MailError("the SMTP server failed earlier in this run")
        if self.logs_only:
            log.info("mail (ATTEST_SMTP_HOST not set, logged instead of sent)\nTo: %s\nSubject: %s\n\n%s",
                     mail.to, mail.subject, mail.text)
            self.sent += 1
            return
        message = build_message(mail, self.settings)
        for attempt in (1, 2):
            reused = self._smtp is not None
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                self._smtp.send_message(message)
                self.sent += 1
                return
            except MailError:  # could not connect or log in
                self._fail_down()
                raise
            except smtplib.SMTPRecipientsRefused as exc:  # this mail only
                self.failed += 1
                codes = ", ".join(str(code) for code, _ in exc.recipients.values())
                raise MailError(f"SMTP server {self._server()} refused recipient {mail.to} ({codes})") from None
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if reused and attempt == 1:  # an idle connection the server dropped: reconnect once
                    continue
                self._fail_down()
                raise MailError(f"SMTP server {self._server()} closed the connection") from None
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:  # service not available: the server is going away
                    self._drop()
                    self._fail_down()
                    raise MailError(f"SMTP server {self._server()} is not available (421)") from None
                self.failed += 1  # sender or data refused: this mail only, the connection stays usable
                raise MailError(f"SMTP server {self._server()} rejected the mail to {mail.to} "
                                f"({exc.smtp_code})") from None
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                self._fail_down()
                raise MailError(f"SMTP server {self._server()} failed: {type(exc).__name__}: {exc}") from None

    def _fail_down(self) -> None:
        self.failed += 1
        self.down = True

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                smtp.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except Exception:
                smtp.close()


def _claim_writer(session: Session) -> None:
    """SQLite: take the write lock before reading, so the writes after the mails cannot hit a stale snapshot."""
    dialects.claim_write_lock(
        session, update(ReviewerNotice).where(ReviewerNotice.id == -1).values(kind=ReviewerNotice.kind))


def _deliver(session: Session, settings: Settings, notices: list[Notice], mailer: Mailer | None,
             now: datetime, actor: str) -> list[Notice]:
    own = mailer is None
    mailer = mailer or Mailer(settings)
    delivered: list[Notice] = []
    try:
        for n in notices:
            if mailer.down:
                break
            try:
                mailer.send(_mail(n))
            except MailError as exc:
                log.warning("campaign %s: %s notice to %s not sent, will retry: %s", n.campaign_id, n.kind, n.to, exc)
                continue
            delivered.append(n)
    finally:
        if own:
            mailer.close()
    for n in delivered:
        _record(session, n, now, actor)
    session.flush()
    return delivered


def _mail(n: Notice) -> Mail:
    who = f"i{n.identity_id}" if n.identity_id is not None else f"u{n.user_id}"
    mail = render_mail(n.template, n.to, n.to_name, n.subject, **n.context)
    return dataclasses.replace(mail, message_id=f"attest.notice.{n.campaign_id}.{who}.{n.kind.replace(':', '-')}")


def _record(session: Session, n: Notice, now: datetime, actor: str) -> None:
    session.add(ReviewerNotice(campaign_id=n.campaign_id, identity_id=n.identity_id, user_id=n.user_id,
                               kind=n.kind, sent_at=now))
    record(session, actor=actor, action="notice.sent", object_type="campaign", object_id=str(n.campaign_id),
           campaign_id=n.campaign_id,
           after={"kind": n.kind, "to": n.to, "identity_id": n.identity_id, "user_id": n.user_id})


def _apply_escalations(session: Session, escalations: list[Escalation], now: datetime, actor: str) -> None:
    """Make the co-reviewer a co-reviewer of the late reviewer's undecided items, except the items about
    the co-reviewer's own access (eligibility): those go to the next eligible person above the co-reviewer,
    else the fallback, else they stay with their reviewer and are listed for an admin (AuditEvent
    `campaign.escalation_admin_queue`)."""
    campaigns: dict[int, Campaign] = {}
    d = eligibility.Directory(session)
    for e in escalations:
        if e.co_reviewer_id is None:
            continue
        base = (ReviewItem.campaign_id == e.campaign_id, ReviewItem.reviewer_id == e.reviewer_id, _undecided(),
                ReviewItem.co_reviewer_id.is_(None))
        changed = session.execute(
            update(ReviewItem).where(*base, eligibility.sql_not_about(e.co_reviewer_id))
            .values(co_reviewer_id=e.co_reviewer_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            record(session, actor=actor, action="campaign.escalated", object_type="campaign",
                   object_id=str(e.campaign_id), campaign_id=e.campaign_id,
                   after={"reviewer_id": e.reviewer_id, "co_reviewer_id": e.co_reviewer_id, "items": changed,
                          "overdue_days": e.overdue_days, "at": now.isoformat()})
        own = [] if e.applied else list(session.scalars(select(ReviewItem.id).where(*base).order_by(ReviewItem.id)))
        if not own:
            continue
        c = campaigns.setdefault(e.campaign_id, session.get(Campaign, e.campaign_id))
        alt = eligibility.first_eligible(
            [*eligibility.manager_chain(e.co_reviewer_id, d.manager_of), _fallback_identity(session, c)],
            [e.co_reviewer_id, e.reviewer_id], d.eligible)
        if alt is not None:
            moved = session.execute(
                update(ReviewItem).where(ReviewItem.id.in_(own), *base, eligibility.sql_not_about(alt))
                .values(co_reviewer_id=alt)
                .execution_options(synchronize_session=False)).rowcount
            record(session, actor=actor, action="campaign.escalated", object_type="campaign",
                   object_id=str(e.campaign_id), campaign_id=e.campaign_id,
                   after={"reviewer_id": e.reviewer_id, "co_reviewer_id": alt, "items": moved,
                          "instead_of": e.co_reviewer_id, "why": "their own access",
                          "overdue_days": e.overdue_days, "at": now.isoformat()})
        else:
            record(session, actor=actor, action="campaign.escalation_admin_queue", object_type="campaign",
                   object_id=str(e.campaign_id), campaign_id=e.campaign_id,
                   after={"reviewer_id": e.reviewer_id, "items": own[:1000], "count": len(own),
                          "why": f"their access is the escalation target's ({e.co_reviewer_id}) own and "
                                 "nobody above them can take it", "at": now.isoformat()})


def send_pending(session: Session, settings: Settings, now: datetime | None = None, *, limit: int | None = None,
                 mailer: Mailer | None = None, actor: str = "scheduler") -> int:
    """Send every notice due at `now` (at most `limit`), record the delivered ones; returns how many."""
    now = now or utcnow()
    _claim_writer(session)
    due = plan(session, settings, now)
    for why in due.skipped:
        log.warning("%s", why)
    notices = due.notices[:limit] if limit is not None else due.notices
    delivered = _deliver(session, settings, notices, mailer, now, actor)
    _apply_escalations(session, due.escalations, now, actor)
    session.flush()
    return len(delivered)


def send_due(factory: sessionmaker[Session], settings: Settings, now: datetime | None = None, *,
             mailer: Mailer | None = None, actor: str = "scheduler") -> int:
    """The scheduler's sender: every notice due at `now`, each recorded the moment the server accepted it.

    What is due is planned once, and the escalations of the run are applied once, in one short
    transaction. Then each mail is sent and, right after the SMTP server accepted it, recorded in a
    transaction of its own (ReviewerNotice + audit event): a sender killed between two mails has recorded
    every mail it sent, and the next run (a standby scheduler's) sends only the rest. The window left is
    the milliseconds between the server's acceptance and that commit; a mail resent after a crash there
    carries the same Message-ID (stable per notice), so mail systems can recognise it. Returns how many
    were sent.
    """
    now = now or utcnow()
    with transaction(factory) as session:
        due = plan(session, settings, now)
        _apply_escalations(session, due.escalations, now, actor)
    for why in due.skipped:
        log.warning("%s", why)
    own = mailer is None
    mailer = mailer or Mailer(settings)
    sent = 0
    try:
        # one connection for the run (not a checkout and a check-in per mail), a short transaction per mail
        bind = factory.kw.get("bind")
        with (bind.connect() if isinstance(bind, Engine) else contextlib.nullcontext(bind)) as conn, \
                factory(bind=conn) as session:
            for n in due.notices:
                if mailer.down:
                    break
                try:
                    mailer.send(_mail(n))
                except MailError as exc:
                    log.warning("campaign %s: %s notice to %s not sent, will retry: %s", n.campaign_id, n.kind,
                                n.to, exc)
                    continue
                try:
                    with begin_write(session):
                        _record(session, n, now, actor)
                except IntegrityError:  # recorded meanwhile by another sender: it sent it too
                    log.warning("campaign %s: %s notice to %s was also sent by another process", n.campaign_id,
                                n.kind, n.to)
                sent += 1
    finally:
        if own:
            mailer.close()
    return sent


def remind_now(session: Session, settings: Settings, campaign_id: int, actor: str, now: datetime | None = None,
               mailer: Mailer | None = None) -> int:
    """The admin's "remind now": a reminder to every reviewer with undecided items who has not signed off.

    Returns how many were sent. Raises NotifyError for an unknown or inactive campaign, and when the mail
    server cannot be reached and nothing was sent.
    """
    now = now or utcnow()
    _claim_writer(session)
    c = session.get(Campaign, campaign_id)
    if c is None:
        raise NotifyError(f"campaign {campaign_id} does not exist")
    if c.status != CampaignStatus.ACTIVE:
        raise NotifyError(f"campaign {campaign_id} is {c.status}: reminders go out only for active campaigns")
    counts = {rid: n for (cid, rid), n in _open_counts(session, [c.id]).items()}
    people = _identities(session, set(counts))
    kind = f"reminder:manual:{now:%Y%m%dT%H%M}"
    done = set(session.scalars(select(ReviewerNotice.identity_id).where(
        ReviewerNotice.campaign_id == c.id, ReviewerNotice.kind == kind)))
    notices = []
    for rid, n in sorted(counts.items()):
        person = people.get(rid)
        if person is None or rid in done:
            continue
        if not person.email:
            log.warning("campaign %s: %s has no e-mail address (reminder not sent)", c.id, _name(person))
            continue
        notices.append(Notice(
            campaign_id=c.id, kind=kind, to=person.email, to_name=_name(person), template="reminder",
            subject=f"Reminder: {n} items to review in {c.name}, due {_date(c.due_at)}", identity_id=rid,
            context={"campaign": _campaign_ctx(c), "inbox_url": inbox_url(settings, c.id), "items": n,
                     "days": None, "settings_base_url": settings.base_url},
        ))
    own = mailer is None
    mailer = mailer or Mailer(settings)
    try:
        delivered = _deliver(session, settings, notices, mailer, now, actor)
    finally:
        if own:
            mailer.close()
    if notices and not delivered and mailer.down:
        raise NotifyError("the mail server could not be reached; no reminder was sent (see the log)")
    record(session, actor=actor, action="campaign.reminded", object_type="campaign", object_id=str(c.id),
           campaign_id=c.id, after={"sent": len(delivered), "failed": len(notices) - len(delivered),
                                    "reviewers": len(counts)})
    return len(delivered)
