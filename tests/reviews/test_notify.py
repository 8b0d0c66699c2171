"""Review e-mail against a real SMTP server (aiosmtpd on a loopback port) with a controllable clock."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import func, select

from attest.reviews import notify
from attest.reviews.models import ReviewerNotice, ReviewerSignoff, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import make_identity, make_user
from tests.reviews.factories import review_setup

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # launch time in these tests
BASE = "https://attest.example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Inbox:
    """What the SMTP server accepted: parsed messages, envelope recipients and the logins it saw."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    rcpts: list[list[str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.rcpts.append(list(envelope.rcpt_tos))
        return "250 OK"

    def to(self) -> list[str]:
        return sorted(r for rcpts in self.rcpts for r in rcpts)

    def by_recipient(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m, r in zip(self.messages, self.rcpts, strict=True) if address in r]

    def clear(self) -> None:
        self.messages.clear()
        self.rcpts.clear()


class SmtpServer:
    def __init__(self, port: int, inbox: Inbox | None = None, **kwargs) -> None:
        self.port = port
        self.inbox = inbox or Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=port, **kwargs)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp():
    server = SmtpServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def mail_settings(settings, smtp):
    return settings.replace(smtp_host="127.0.0.1", smtp_port=smtp.port, base_url=BASE,
                            mail_from="Attest <attest@acme.example>")


def timed_setup(session, *, timing=None, **kw):
    """review_setup with the campaign launched at T0 and due 14 days later."""
    spec = {"timing": {"duration_days": 14, "reminders_days_before_due": [7, 2],
                       "escalate_after_days_overdue": 2, "no_response": "keep", **(timing or {})}}
    setup = review_setup(session, spec={**spec, **kw.pop("spec", {})}, **kw)
    setup.campaign.launched_at = T0
    setup.campaign.due_at = T0 + timedelta(days=14)
    session.flush()
    return setup


def notices(session, campaign_id):
    return sorted((n.identity_id, n.user_id, n.kind) for n in session.scalars(
        select(ReviewerNotice).where(ReviewerNotice.campaign_id == campaign_id)))


def audit_count(session, action, campaign_id):
    return session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == action, AuditEvent.campaign_id == campaign_id))


def parts(message):
    text = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = message.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n")
    return text, html


def test_launch_notice_goes_to_every_reviewer_once_with_text_html_and_the_inbox_link(session, smtp, mail_settings):
    setup = timed_setup(session, people=3, per_person=2)
    other, _ = make_identity(session, "olga.owner@acme.example", name="Olga Owner"), None
    setup.items[0].reviewer_id = other.id
    session.flush()

    sent = notify.send_pending(session, mail_settings, T0 + timedelta(minutes=2))

    assert sent == 2
    assert smtp.inbox.to() == ["maria.manager@acme.example", "olga.owner@acme.example"]
    msg = smtp.inbox.by_recipient("maria.manager@acme.example")[0]
    assert msg["From"] == "Attest <attest@acme.example>"
    assert msg["To"] == "Maria Manager <maria.manager@acme.example>"
    assert msg["Subject"] == "Access review: Q3 access review — 5 items to review"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = parts(msg)
    link = f"{BASE}/reviews?campaign={setup.campaign.id}"
    assert link in text and f'href="{link}"' in html
    assert "5 items to review" in text and "2026-03-16 09:00 UTC" in text
    assert "<strong>5</strong> items to review" in html
    assert notices(session, setup.campaign.id) == sorted(
        [(setup.manager.id, None, "launch"), (other.id, None, "launch")])
    assert audit_count(session, "notice.sent", setup.campaign.id) == 2

    # nothing is sent twice, however often the scheduler runs
    smtp.inbox.clear()
    assert notify.send_pending(session, mail_settings, T0 + timedelta(minutes=4)) == 0
    assert notify.send_pending(session, mail_settings, T0 + timedelta(hours=3)) == 0
    assert smtp.inbox.messages == []
    assert audit_count(session, "notice.sent", setup.campaign.id) == 2


def test_reminders_go_out_on_the_right_days_only_to_reviewers_with_open_items(session, smtp, mail_settings):
    setup = timed_setup(session, people=2, per_person=2)
    done_reviewer = make_identity(session, "dora.done@acme.example", name="Dora Done")
    signed_reviewer = make_identity(session, "sam.signed@acme.example", name="Sam Signed")
    setup.items[0].reviewer_id = done_reviewer.id
    setup.items[1].reviewer_id = signed_reviewer.id
    session.flush()
    cid = setup.campaign.id

    def run(at):
        smtp.inbox.clear()
        notify.send_pending(session, mail_settings, at)
        return smtp.inbox.to()

    assert run(T0) == ["dora.done@acme.example", "maria.manager@acme.example", "sam.signed@acme.example"]
    # Dora decides her item; Sam decides and signs off
    setup.items[0].decision, setup.items[0].completed = "approve", True
    setup.items[1].decision, setup.items[1].completed = "approve", True
    session.add(ReviewerSignoff(campaign_id=cid, reviewer_id=signed_reviewer.id, signed_off_at=T0 + timedelta(days=1)))
    session.flush()

    assert run(T0 + timedelta(days=6, hours=23)) == []  # 7 days before due is T0 + 7d
    assert run(T0 + timedelta(days=7, minutes=1)) == ["maria.manager@acme.example"]
    reminder = smtp.inbox.messages[0]
    assert reminder["Subject"] == "Reminder: 2 items to review in Q3 access review, due 2026-03-16"
    text, html = parts(reminder)
    assert "(7 days from now)" in text and f"{BASE}/reviews?campaign={cid}" in html
    assert run(T0 + timedelta(days=8)) == []
    assert run(T0 + timedelta(days=11, hours=23)) == []
    assert run(T0 + timedelta(days=12, minutes=5)) == ["maria.manager@acme.example"]
    assert "(2 days from now)" in parts(smtp.inbox.messages[0])[0]
    assert run(T0 + timedelta(days=13)) == []
    assert [k for i, _, k in notices(session, cid) if i == setup.manager.id] == ["launch", "reminder:2", "reminder:7"]
    assert audit_count(session, "notice.sent", cid) == 5


def test_a_scheduler_that_was_down_sends_only_the_latest_due_reminder(session, smtp, mail_settings):
    setup = timed_setup(session, people=1, per_person=1)
    notify.send_pending(session, mail_settings, T0)
    smtp.inbox.clear()
    notify.send_pending(session, mail_settings, T0 + timedelta(days=13))  # both 7 and 2 days have passed
    assert [m["Subject"].split(":")[0] for m in smtp.inbox.messages] == ["Reminder"]
    assert [k for _, _, k in notices(session, setup.campaign.id)] == ["launch", "reminder:2"]


def test_escalation_adds_the_manager_as_co_reviewer_and_mails_both(session, smtp, mail_settings):
    setup = timed_setup(session, people=2, per_person=2)
    director = make_identity(session, "dirk.director@acme.example", name="Dirk Director")
    setup.manager.manager_id = director.id
    setup.items[0].decision, setup.items[0].completed = "approve", True  # decided: not escalated
    session.flush()
    cid = setup.campaign.id
    notify.send_pending(session, mail_settings, T0)
    smtp.inbox.clear()

    # due + 1 day: overdue, but the escalation comes after 2 days
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=15)) == 0
    assert smtp.inbox.messages == []
    assert session.scalar(select(func.count()).where(ReviewItem.campaign_id == cid,
                                                     ReviewItem.co_reviewer_id.is_not(None))) == 0

    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=16, minutes=1)) == 2
    assert smtp.inbox.to() == ["dirk.director@acme.example", "maria.manager@acme.example"]
    to_reviewer = smtp.inbox.by_recipient("maria.manager@acme.example")[0]
    to_director = smtp.inbox.by_recipient("dirk.director@acme.example")[0]
    assert to_reviewer["Subject"] == "Overdue: Q3 access review — 3 items still need your decision"
    assert "Dirk Director has been added as co-reviewer" in parts(to_reviewer)[0]
    assert to_director["Subject"] == "Escalation: Maria Manager's review in Q3 access review is overdue"
    text, html = parts(to_director)
    assert "You have been added as co-reviewer" in text and "(2 days overdue)" in text
    assert f'href="{BASE}/reviews?campaign={cid}"' in html

    session.expire_all()
    items = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == cid).order_by(ReviewItem.id)).all()
    assert [i.co_reviewer_id for i in items] == [None] + [director.id] * 3
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.escalated",
                                                      AuditEvent.campaign_id == cid)).all()
    assert [(e.after["reviewer_id"], e.after["co_reviewer_id"], e.after["items"]) for e in events] == [
        (setup.manager.id, director.id, 3)]
    assert (director.id, None, f"escalation:{setup.manager.id}") in notices(session, cid)

    smtp.inbox.clear()
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=17)) == 0
    assert smtp.inbox.messages == []
    assert audit_count(session, "campaign.escalated", cid) == 1


def test_escalation_without_a_manager_goes_to_the_fallback_reviewer(session, smtp, mail_settings):
    fallback = make_identity(session, "iam-team@acme.example", name="IAM team")
    setup = timed_setup(session, people=1, per_person=1, spec={"fallback_reviewer": "IAM-team@acme.example"})
    notify.send_pending(session, mail_settings, T0)
    smtp.inbox.clear()
    notify.send_pending(session, mail_settings, T0 + timedelta(days=17))
    assert smtp.inbox.to() == ["iam-team@acme.example", "maria.manager@acme.example"]
    session.expire_all()
    assert session.get(ReviewItem, setup.items[0].id).co_reviewer_id == fallback.id


def test_smtp_down_records_nothing_and_the_next_run_delivers(session, settings):
    setup = timed_setup(session, people=2, per_person=1)
    port = free_port()  # nothing listens here yet
    down = settings.replace(smtp_host="127.0.0.1", smtp_port=port, base_url=BASE)

    assert notify.send_pending(session, down, T0) == 0
    assert notices(session, setup.campaign.id) == []
    assert audit_count(session, "notice.sent", setup.campaign.id) == 0

    server = SmtpServer(port).start()
    try:
        assert notify.send_pending(session, down, T0 + timedelta(minutes=2)) == 1
        assert server.inbox.to() == ["maria.manager@acme.example"]
        assert notices(session, setup.campaign.id) == [(setup.manager.id, None, "launch")]
    finally:
        server.stop()


def test_a_refused_recipient_is_retried_and_does_not_block_the_others(session, settings):
    setup = timed_setup(session, people=2, per_person=1)
    bad = make_identity(session, "no-such-user@acme.example", name="Nobody")
    setup.items[0].reviewer_id = bad.id
    session.flush()

    class Refusing(Inbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
            if address.startswith("no-such-user"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    server = SmtpServer(free_port(), Refusing()).start()
    try:
        mail_settings = settings.replace(smtp_host="127.0.0.1", smtp_port=server.port)
        assert notify.send_pending(session, mail_settings, T0) == 1
        assert server.inbox.to() == ["maria.manager@acme.example"]
        assert [k for i, _, k in notices(session, setup.campaign.id) if i == bad.id] == []
        # the refused one is tried again on the next run (and refused again), the sent one is not
        server.inbox.clear()
        assert notify.send_pending(session, mail_settings, T0 + timedelta(minutes=2)) == 0
        assert server.inbox.messages == []
    finally:
        server.stop()


def test_closing_summary_goes_to_the_campaign_owner_once(session, smtp, mail_settings):
    setup = timed_setup(session, people=2, per_person=2)
    owner = make_user(session, "iam.admin@acme.example", roles=("admin",))  # no identity: a local admin
    c = setup.campaign
    c.owner_user_id = owner.id
    for item, decision in zip(setup.items, ["approve", "revoke", "approve"], strict=False):
        item.decision, item.completed = decision, True
    for item in setup.items:
        item.outcome = "revoke" if item.decision == "revoke" else "keep"
    c.status, c.closed_at = "closed", T0 + timedelta(days=14)
    session.flush()

    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=14, minutes=1)) == 1
    msg = smtp.inbox.by_recipient("iam.admin@acme.example")[0]
    assert msg["Subject"] == "Closed: Q3 access review — 75% reviewed, 1 to revoke"
    text, html = parts(msg)
    assert "Reviewed:  3 of 4 items (75%)" in text
    assert "2 approved, 1 revoked, 0 abstained, 1 no response" in text
    assert "Maria Manager: 3 / 4 (75%)" in text
    assert f"{BASE}/campaigns/{c.id}" in html
    assert notices(session, c.id) == [(None, owner.id, "summary")]
    smtp.inbox.clear()
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=15)) == 0
    assert smtp.inbox.messages == []


def test_remind_now_sends_at_once_regardless_of_the_schedule_and_is_audited(session, smtp, mail_settings):
    setup = timed_setup(session, people=2, per_person=1)
    cid = setup.campaign.id
    notify.send_pending(session, mail_settings, T0)
    smtp.inbox.clear()

    assert notify.remind_now(session, mail_settings, cid, actor="admin@acme.example",
                             now=T0 + timedelta(days=1)) == 1
    assert smtp.inbox.to() == ["maria.manager@acme.example"]
    assert smtp.inbox.messages[0]["Subject"].startswith("Reminder: 2 items to review")
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.reminded")).one()
    assert event.actor == "admin@acme.example" and event.after["sent"] == 1
    assert audit_count(session, "notice.sent", cid) == 2

    # the scheduled reminders still follow their own schedule
    smtp.inbox.clear()
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=2)) == 0

    setup.campaign.status = "closed"
    session.flush()
    with pytest.raises(notify.NotifyError, match="closed"):
        notify.remind_now(session, mail_settings, cid, actor="admin@acme.example")
    with pytest.raises(notify.NotifyError, match="does not exist"):
        notify.remind_now(session, mail_settings, 999999, actor="admin@acme.example")


def test_remind_now_says_so_when_the_mail_server_is_down(session, settings):
    setup = timed_setup(session, people=1, per_person=1)
    down = settings.replace(smtp_host="127.0.0.1", smtp_port=free_port())
    with pytest.raises(notify.NotifyError, match="could not be reached"):
        notify.remind_now(session, down, setup.campaign.id, actor="admin@acme.example", now=T0)
    assert notices(session, setup.campaign.id) == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_is_used_and_a_refused_login_never_shows_the_password(session, settings):
    setup = timed_setup(session, people=1, per_person=1)

    def authenticator(server, sess, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"right-pass"
        if ok:
            inbox.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    port = free_port()
    server = SmtpServer(port, authenticator=authenticator, auth_require_tls=False, auth_required=True)
    inbox = server.inbox
    server.start()
    try:
        wrong = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_username="attest",
                                 smtp_password="wrong-pass-123")
        with notify.Mailer(wrong) as mailer, pytest.raises(notify.MailError) as err:
            mailer.send(notify.render_mail("launch", "x@acme.example", "X", "s", campaign={"name": "c", "due_at": T0},
                                           items=1, inbox_url="u", settings_base_url="b"))
        assert "refused the login of 'attest'" in str(err.value) and "wrong-pass" not in str(err.value)
        assert mailer.down

        right = wrong.replace(smtp_password="right-pass")
        assert notify.send_pending(session, right, T0) == 1
        assert inbox.logins == ["attest"] and inbox.to() == ["maria.manager@acme.example"]
    finally:
        server.stop()
    assert setup.campaign.id


def test_without_an_smtp_host_mail_is_written_to_the_log(session, settings, caplog):
    setup = timed_setup(session, people=1, per_person=1)
    dev = settings.replace(smtp_host="", smtp_password="never-log-me", base_url=BASE)
    with caplog.at_level(logging.INFO, logger="attest.notify"):
        assert notify.send_pending(session, dev, T0) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "To: maria.manager@acme.example" in logged
    assert f"{BASE}/reviews?campaign={setup.campaign.id}" in logged
    assert "never-log-me" not in logged
    assert notices(session, setup.campaign.id) == [(setup.manager.id, None, "launch")]

    # in production a missing SMTP host is a delivery failure: notices wait until mail is configured
    setup2 = timed_setup(session, people=1, per_person=1, manager_email="pat.prod@acme.example",
                         campaign_name="Prod review")
    prod = dev.replace(env="production")
    assert notify.send_pending(session, prod, T0) == 0
    assert notices(session, setup2.campaign.id) == []


def test_names_in_the_html_are_escaped(session, smtp, mail_settings):
    setup = timed_setup(session, people=1, per_person=1, campaign_name="<script>alert(1)</script> review")
    notify.send_pending(session, mail_settings, T0)
    _, html = parts(smtp.inbox.messages[0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert setup.campaign.id


def test_a_delegate_gets_the_reviewers_notices_with_the_delegated_inbox_link(session, smtp, mail_settings):
    """A reviewer away (issue 20's delegation): the launch notice and the reminders go to the reviewer and,
    once each, to the delegate in force, pointing at the delegated inbox; a delegation over or not yet
    started sends the delegate nothing."""
    from attest.reviews.models import Delegation

    setup = timed_setup(session, people=2, per_person=2)
    colleague = make_identity(session, "carla.colleague@acme.example", name="Carla Colleague")
    later = make_identity(session, "lars.later@acme.example", name="Lars Later")
    session.add_all([
        Delegation(delegator_id=setup.manager.id, delegate_id=colleague.id, starts_at=T0 - timedelta(days=1),
                   ends_at=T0 + timedelta(days=30), created_by="maria.manager@acme.example"),
        Delegation(delegator_id=setup.manager.id, delegate_id=later.id, starts_at=T0 + timedelta(days=20),
                   ends_at=T0 + timedelta(days=30), created_by="maria.manager@acme.example"),
    ])
    session.flush()

    assert notify.send_pending(session, mail_settings, T0 + timedelta(minutes=2)) == 2
    assert smtp.inbox.to() == ["carla.colleague@acme.example", "maria.manager@acme.example"]
    msg = smtp.inbox.by_recipient("carla.colleague@acme.example")[0]
    assert "you review for Maria Manager while they are away" in msg["Subject"]
    text, html = parts(msg)
    link = f"{BASE}/reviews/for/{setup.manager.id}?campaign={setup.campaign.id}"
    assert link in text and f'href="{link}"' in html
    assert "You review for Maria Manager while they are away" in text
    assert (colleague.id, None, f"launch:for:{setup.manager.id}") in notices(session, setup.campaign.id)

    # the reminder 7 days before due: both again, once
    smtp.inbox.clear()
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=7, hours=1)) == 2
    assert smtp.inbox.to() == ["carla.colleague@acme.example", "maria.manager@acme.example"]
    assert notify.send_pending(session, mail_settings, T0 + timedelta(days=7, hours=2)) == 0
