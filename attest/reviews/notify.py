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
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import smtplib
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from attest import dialects
from attest.auth.models import User
from attest.config import Settings
from attest.db import begin_write, transaction, utcnow
from attest.entitlements.models import Identity
from attest.entitlements.queries import person_by_email
from attest.reviews import eligibility
from attest.reviews.models import Campaign, CampaignDefinition, ReviewerNotice, ReviewerSignoff, ReviewItem
from attest.templating import fmt_date, fmt_dt
from attest.trail.chain import record

log = logging.getLogger("attest.notify")

SUMMARY_WINDOW = timedelta(days=7)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class MailError(Exception):
    """A mail could not be delivered (the message says why; never a credential)."""


class NotifyError(ValueError):
    """A notification request a user can get wrong (unknown or inactive campaign)."""


# --- messages and the mailer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    to: str
    to_name: str
    subject: str
    text: str
    html: str
    message_id: str | None = None  # stable per notice: a mail resent after a crash is the same message


_env: Environment | None = None


def _jinja() -> Environment:
    global _env
    if _env is None:

        env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(dt=fmt_dt, date=fmt_date)
        _env = env
    return _env


def render_mail(template: str, to: str, to_name: str, subject: str, **context: Any) -> Mail:
    """Render `mail/<template>.html` and `mail/<template>.txt` into one message."""
    env = _jinja()
    context = {"subject": subject, "to_name": to_name, **context}
    return Mail(
        to=to, to_name=to_name, subject=subject,
        text=env.get_template(f"mail/{template}.txt").render(**context).strip() + "\n",
        html=env.get_template(f"mail/{template}.html").render(**context),
    )


def build_message(mail: Mail, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = mail.subject
    msg["From"] = settings.mail_from
    msg["To"] = formataddr((mail.to_name, mail.to)) if mail.to_name else mail.to
    msg["Date"] = format_datetime(utcnow())
    domain = settings.mail_from.rsplit("@", 1)[-1].strip("> ") or "attest.local"
    msg["Message-ID"] = f"<{mail.message_id}@{domain}>" if mail.message_id else make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


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


# --- what is due ----------------------------------------------------------------------------------


@dataclass
class Notice:
    campaign_id: int
    kind: str
    to: str
    to_name: str
    template: str
    subject: str
    context: dict[str, Any]
    identity_id: int | None = None
    user_id: int | None = None


@dataclass
class Escalation:
    campaign_id: int
    reviewer_id: int
    co_reviewer_id: int | None
    items: int
    overdue_days: int
    applied: bool = False  # an earlier run already made the co-reviewer (only the mails are left)


@dataclass
class Plan:
    notices: list[Notice] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why someone could not be mailed (no address)


def inbox_url(settings: Settings, campaign_id: int) -> str:
    return f"{settings.base_url}/reviews?campaign={campaign_id}"


def campaign_url(settings: Settings, campaign_id: int) -> str:
    return f"{settings.base_url}/campaigns/{campaign_id}"


def _undecided():
    return and_(ReviewItem.decision.is_(None), ReviewItem.completed.is_(False))


def _open_counts(session: Session, campaign_ids: list[int]) -> dict[tuple[int, int], int]:
    """(campaign, reviewer) -> undecided items, for reviewers who have not signed off."""
    if not campaign_ids:
        return {}
    signed = exists().where(ReviewerSignoff.campaign_id == ReviewItem.campaign_id,
                            ReviewerSignoff.reviewer_id == ReviewItem.reviewer_id)
    rows = session.execute(
        select(ReviewItem.campaign_id, ReviewItem.reviewer_id, func.count())
        .where(ReviewItem.campaign_id.in_(campaign_ids), ReviewItem.reviewer_id.is_not(None), _undecided(), ~signed)
        .group_by(ReviewItem.campaign_id, ReviewItem.reviewer_id)
    )
    return {(c, r): n for c, r, n in rows}


def _sent(session: Session, campaign_ids: list[int]) -> dict[tuple[int, int | None, str], datetime]:
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(ReviewerNotice.campaign_id, ReviewerNotice.identity_id, ReviewerNotice.kind, ReviewerNotice.sent_at)
        .where(ReviewerNotice.campaign_id.in_(campaign_ids), ReviewerNotice.identity_id.is_not(None))
    )
    return {(c, i, k): at for c, i, k, at in rows}


def _identities(session: Session, ids: set[int]) -> dict[int, Identity]:
    if not ids:
        return {}
    return {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))}


def _timing(campaign: Campaign) -> dict[str, Any]:
    return (campaign.spec or {}).get("timing") or {}


def _fallback_identity(session: Session, campaign: Campaign) -> int | None:
    email = (campaign.spec or {}).get("fallback_reviewer")
    if not email:
        return None
    person = person_by_email(session, str(email))
    return person.id if person is not None else None


def _name(identity: Identity) -> str:
    return identity.display_name or identity.email or identity.external_id


def plan(session: Session, settings: Settings, now: datetime) -> Plan:
    """Everything due at `now` and not yet sent (reads only)."""
    out = Plan()
    active = list(session.scalars(select(Campaign).where(Campaign.status == "active").order_by(Campaign.id)))
    ids = [c.id for c in active]
    open_counts = _open_counts(session, ids)
    sent = _sent(session, ids)
    per_campaign: dict[int, dict[int, int]] = defaultdict(dict)
    for (cid, rid), n in open_counts.items():
        per_campaign[cid][rid] = n

    wanted: list[tuple[Campaign, int, str, dict[str, Any]]] = []  # (campaign, identity, kind, extra)
    escalations: list[tuple[Campaign, int, int, int]] = []  # campaign, reviewer, items, overdue days
    for c in active:
        reviewers = per_campaign.get(c.id, {})
        timing = _timing(c)
        for rid, n in sorted(reviewers.items()):
            if (c.id, rid, "launch") not in sent:
                wanted.append((c, rid, "launch", {"items": n}))
                continue  # the launch notice comes first; reminders only after it
            if c.due_at is None:
                continue
            launched = sent[(c.id, rid, "launch")]
            due_days = [d for d in timing.get("reminders_days_before_due") or []
                        if c.due_at - timedelta(days=d) <= now < c.due_at
                        and launched < c.due_at - timedelta(days=d)
                        and (c.launched_at is None or c.launched_at <= c.due_at - timedelta(days=d))]
            if due_days:
                d = min(due_days)
                if (c.id, rid, f"reminder:{d}") not in sent:
                    wanted.append((c, rid, f"reminder:{d}", {"items": n, "days": d}))
            esc = timing.get("escalate_after_days_overdue")
            if esc is not None and now >= c.due_at + timedelta(days=int(esc)) \
                    and (c.id, rid, "escalation") not in sent:
                escalations.append((c, rid, n, max(0, (now - c.due_at).days)))

    # escalations: the co-reviewer is the one already set on the items, else the manager, else the fallback
    people = _identities(session, {rid for _, rid, _, _ in wanted} | {rid for _, rid, _, _ in escalations})
    for c, rid, n, overdue in escalations:
        existing = session.scalar(
            select(ReviewItem.co_reviewer_id).where(ReviewItem.campaign_id == c.id, ReviewItem.reviewer_id == rid,
                                                    ReviewItem.co_reviewer_id.is_not(None)).limit(1))
        co = existing or escalation_target(session, c, rid)
        out.escalations.append(Escalation(c.id, rid, co, n, overdue, applied=existing is not None))
    co_people = _identities(session, {e.co_reviewer_id for e in out.escalations if e.co_reviewer_id} - set(people))
    people.update(co_people)

    def add(c: Campaign, identity_id: int, kind: str, template: str, subject: str, **ctx: Any) -> None:
        person = people.get(identity_id)
        if person is None:
            return
        if not person.email:
            out.skipped.append(f"campaign {c.id}: {_name(person)} has no e-mail address ({kind} not sent)")
            return
        out.notices.append(Notice(
            campaign_id=c.id, kind=kind, to=person.email, to_name=_name(person), template=template,
            subject=subject, identity_id=identity_id,
            context={"campaign": _campaign_ctx(c), "inbox_url": inbox_url(settings, c.id),
                     "settings_base_url": settings.base_url, **ctx},
        ))

    for c, rid, kind, extra in wanted:
        if kind == "launch":
            add(c, rid, kind, "launch", f"Access review: {c.name} — {extra['items']} items to review", **extra)
        else:
            add(c, rid, kind, "reminder",
                f"Reminder: {extra['items']} items to review in {c.name}, due {_date(c.due_at)}", **extra)
    by_id = {c.id: c for c in active}
    for e in out.escalations:
        c = by_id[e.campaign_id]
        reviewer = people.get(e.reviewer_id)
        co = people.get(e.co_reviewer_id) if e.co_reviewer_id else None
        add(c, e.reviewer_id, "escalation", "escalation",
            f"Overdue: {c.name} — {e.items} items still need your decision",
            items=e.items, overdue_days=e.overdue_days, role="reviewer",
            reviewer_name=_name(reviewer) if reviewer else "", co_name=_name(co) if co else None)
        if co is not None and (c.id, co.id, f"escalation:{e.reviewer_id}") not in sent:
            add(c, co.id, f"escalation:{e.reviewer_id}", "escalation",
                f"Escalation: {_name(reviewer) if reviewer else 'a reviewer'}'s review in {c.name} is overdue",
                items=e.items, overdue_days=e.overdue_days, role="co_reviewer",
                reviewer_name=_name(reviewer) if reviewer else "", co_name=_name(co))

    out.notices.extend(_summary_notices(session, settings, now, out))
    return out


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "—"


def _campaign_ctx(c: Campaign) -> dict[str, Any]:
    spec = c.spec or {}
    return {"id": c.id, "name": c.name, "description": spec.get("description"), "due_at": c.due_at,
            "launched_at": c.launched_at, "closed_at": c.closed_at, "controls": spec.get("controls") or []}


def _owner(session: Session, c: Campaign) -> User | None:
    user_id = c.owner_user_id
    if user_id is None and c.definition_id is not None:
        user_id = session.scalar(select(CampaignDefinition.owner_user_id)
                                 .where(CampaignDefinition.id == c.definition_id))
    return session.get(User, user_id) if user_id is not None else None


def campaign_stats(session: Session, campaign_id: int) -> dict[str, Any]:
    """Completion, decisions, outcomes and per-reviewer figures for the closing summary."""
    total = session.scalar(select(func.count()).where(ReviewItem.campaign_id == campaign_id)) or 0
    decisions = {d or "none": n for d, n in session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == campaign_id)
        .group_by(ReviewItem.decision))}
    outcomes = {o or "none": n for o, n in session.execute(
        select(ReviewItem.outcome, func.count()).where(ReviewItem.campaign_id == campaign_id)
        .group_by(ReviewItem.outcome))}
    decided = total - decisions.get("none", 0)
    rows = session.execute(
        select(Identity.display_name, Identity.email, func.count(),
               func.count(ReviewItem.decision))
        .join(Identity, Identity.id == ReviewItem.reviewer_id)
        .where(ReviewItem.campaign_id == campaign_id)
        .group_by(Identity.id, Identity.display_name, Identity.email)
        .order_by((func.count() - func.count(ReviewItem.decision)).desc(), Identity.display_name)
    ).all()
    reviewers = [{"name": name or email, "total": n, "decided": d,
                  "percent": round(100 * d / n) if n else 100} for name, email, n, d in rows]
    return {
        "total": total, "decided": decided, "percent": round(100 * decided / total) if total else 100,
        "approved": decisions.get("approve", 0), "revoked": decisions.get("revoke", 0),
        "abstained": decisions.get("abstain", 0), "no_response": decisions.get("none", 0),
        "outcome_keep": outcomes.get("keep", 0), "outcome_revoke": outcomes.get("revoke", 0),
        "outcome_flag": outcomes.get("flag", 0), "reviewers": reviewers,
    }


def _summary_notices(session: Session, settings: Settings, now: datetime, out: Plan) -> list[Notice]:
    closed = list(session.scalars(
        select(Campaign).where(Campaign.status == "closed", Campaign.closed_at >= now - SUMMARY_WINDOW)
        .order_by(Campaign.id)))
    notices = []
    for c in closed:
        owner = _owner(session, c)
        if owner is None:
            continue
        if session.scalar(select(ReviewerNotice.id).where(
                ReviewerNotice.campaign_id == c.id, ReviewerNotice.user_id == owner.id,
                ReviewerNotice.kind == "summary")) is not None:
            continue
        if not owner.email:
            out.skipped.append(f"campaign {c.id}: owner user {owner.id} has no e-mail address")
            continue
        stats = campaign_stats(session, c.id)
        notices.append(Notice(
            campaign_id=c.id, kind="summary", to=owner.email, to_name=owner.display_name or "",
            template="summary", subject=f"Closed: {c.name} — {stats['percent']}% reviewed, "
                                        f"{stats['outcome_revoke']} to revoke",
            user_id=owner.id, identity_id=None,
            context={"campaign": _campaign_ctx(c), "stats": stats, "campaign_url": campaign_url(settings, c.id),
                     "settings_base_url": settings.base_url},
        ))
    return notices


# --- sending and recording ------------------------------------------------------------------------


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


def escalation_target(session: Session, campaign: Campaign, reviewer_id: int,
                      directory: eligibility.Directory | None = None) -> int | None:
    """Who a late reviewer's items are escalated to: the first eligible person up the reviewer's manager
    chain, else the campaign's fallback reviewer (never the reviewer themself)."""
    d = directory or eligibility.Directory(session)
    fallback = _fallback_identity(session, campaign)
    return eligibility.first_eligible([*eligibility.manager_chain(reviewer_id, d.manager_of), fallback],
                                      [reviewer_id], d.eligible)


@dataclass
class EscalationLoad:
    """What the escalation of a campaign would hand one person: items of the late reviewers below them."""

    identity_id: int
    name: str
    items: int
    reviewers: int
    at: datetime | None  # when the escalation is due (the due date plus the escalation delay)


def escalation_forecast(session: Session, campaign: Campaign, threshold: int) -> list[EscalationLoad]:
    """The people an escalation of `campaign` would hand more than `threshold` undecided items (each late
    reviewer's open items go to their escalation target, as `send_pending` would route them), largest
    first. Read only; the campaign page warns with it before the escalation happens."""
    esc = _timing(campaign).get("escalate_after_days_overdue")
    if campaign.status != "active" or esc is None:
        return []
    at = campaign.due_at + timedelta(days=int(esc)) if campaign.due_at else None
    d = eligibility.Directory(session)
    load: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (_cid, reviewer), n in _open_counts(session, [campaign.id]).items():
        target = escalation_target(session, campaign, reviewer, d)
        if target is not None:
            load[target][0] += n
            load[target][1] += 1
    heavy = {k: v for k, v in load.items() if v[0] > threshold}
    people = _identities(session, set(heavy))
    return sorted((EscalationLoad(k, _name(people[k]) if k in people else str(k), n, r, at)
                   for k, (n, r) in heavy.items()), key=lambda e: (-e.items, e.name))


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
        # one connection for the run (NullPool on SQLite would open and close one per mail), a short
        # transaction per mail
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
    if c.status != "active":
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
