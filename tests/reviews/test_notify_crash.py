"""Review e-mail exactly once, even when the sending scheduler is killed mid-batch (issue 16, part 5).

A real scheduler job (`notify:send`) runs in a child process against a real SMTP sink (aiosmtpd); the sink
kills the child with SIGKILL in the middle of the run, right as it starts the next mail. A standby then
runs the same job once the dead holder's lease has lapsed. Every reviewer must have exactly one mail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta

from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from attest import jobs
from attest.db import utcnow
from attest.reviews.models import Campaign, ReviewerNotice
from tests.factories import make_identity
from tests.reviews.factories import review_setup
from tests.reviews.test_notify import free_port

REVIEWERS = 40
KILL_AT = 21  # the sender dies as it starts the 21st mail


class KillingSink:
    """Counts accepted mails per recipient; kills `victim` when the KILL_AT-th mail is being addressed."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.victim: subprocess.Popen | None = None
        self.killed = threading.Event()
        self.rcpts = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        self.rcpts += 1
        if self.victim is not None and self.rcpts == KILL_AT and not self.killed.is_set():
            os.kill(self.victim.pid, signal.SIGKILL)
            self.killed.set()
            return "421 going away"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        for rcpt in envelope.rcpt_tos:
            self.accepted[rcpt] += 1
        return "250 OK"


SENDER = """
import sys
from attest.config import load_settings
from attest.db import make_engine, make_session_factory
from attest import jobs
settings = load_settings()
factory = make_session_factory(make_engine(settings.database_url))
run = jobs.run_now(factory, settings, "notify:send", holder="scheduler-a")
print(run.status, run.detail, run.error)
"""


def test_a_scheduler_killed_mid_batch_sends_no_mail_twice(fresh_db, tmp_path):
    with fresh_db.factory() as s, s.begin():
        setup = review_setup(s, people=REVIEWERS, per_person=1, risky={})
        for n, item in enumerate(setup.items):  # one reviewer per item: 40 launch notices
            item.reviewer_id = make_identity(s, f"reviewer{n:02d}@acme.example", name=f"Reviewer {n:02d}").id
        campaign = s.get(Campaign, setup.campaign.id)
        campaign.launched_at = utcnow() - timedelta(minutes=5)
        cid = campaign.id

    sink = KillingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = {**os.environ, "ATTEST_ENV": "test", "ATTEST_DATABASE_URL": fresh_db.url,
               "ATTEST_INSTANCE_PATH": str(tmp_path / "instance"), "ATTEST_SMTP_HOST": "127.0.0.1",
               "ATTEST_SMTP_PORT": str(port), "ATTEST_LOG_LEVEL": "WARNING"}
        sink.victim = subprocess.Popen([sys.executable, "-c", SENDER], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
        out, err = sink.victim.communicate(timeout=120)
        assert sink.killed.is_set(), f"the sender finished before it could be killed: {out} {err}"
        assert sink.victim.returncode == -signal.SIGKILL
        sent_before = sum(sink.accepted.values())
        assert sent_before == KILL_AT - 1

        with fresh_db.factory() as s, s.begin():
            # what the dead sender recorded is what it sent: nothing is left in doubt
            assert s.scalar(select(func.count()).select_from(ReviewerNotice)
                            .where(ReviewerNotice.campaign_id == cid)) == sent_before
            # its lease lapses (the standby's clock passes the lease period)
            s.execute(update(jobs.JobLease).where(jobs.JobLease.name == "notify:send")
                      .values(expires_at=utcnow() - timedelta(seconds=1)))

        settings = fresh_db.settings.replace(smtp_host="127.0.0.1", smtp_port=port)
        standby = jobs.run_now(fresh_db.factory, settings, "notify:send", holder="scheduler-b")
        assert standby.status == "succeeded", standby.error
    finally:
        controller.stop()

    assert sum(sink.accepted.values()) == REVIEWERS
    assert set(sink.accepted.values()) == {1}, [r for r, n in sink.accepted.items() if n > 1]
    with fresh_db.factory() as s:
        assert s.scalar(select(func.count()).select_from(ReviewerNotice)
                        .where(ReviewerNotice.campaign_id == cid)) == REVIEWERS
