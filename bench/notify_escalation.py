"""Review e-mail benchmark: launch notices and the escalation of 1,000 late reviewers (issue 16, part 5).

A campaign of 5,000 items: 1,000 reviewers (5 items each) reporting to 100 directors. Per engine we run the
scheduler's sender (`notify.send_due`, each mail recorded in its own transaction right after the SMTP
server accepted it) against a real SMTP server on loopback (aiosmtpd, accepting every mail):
- at launch: 1,000 launch notices;
- three days after the due date: the escalation of all 1,000 reviewers (plan once, co-reviewer UPDATEs and
  audit events once, in one transaction), then 2,000 mails (one to each reviewer, one per reviewer to
  their director).
Target: the escalation of 1,000 reviewers, mails included, well under a minute.

    python -m bench.notify_escalation
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

PG_ADMIN = os.environ.get("ATTEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REVIEWERS = 1_000
DIRECTORS = 100
ITEMS_EACH = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Sink:
    def __init__(self) -> None:
        self.mails = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
        self.mails += 1
        return "250 OK"


def _seed(factory) -> int:
    from attest.db import transaction, utcnow
    from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, Source
    from attest.reviews.definitions import parse_definition
    from attest.reviews.models import Campaign, ReviewItem

    with transaction(factory) as s:
        src = Source(kind="demo", name="bench", settings={}, authoritative=True, enabled=True)
        s.add(src)
        s.flush()
        res = Resource(source_id=src.id, external_id="app", type="okta_app", name="Payroll")
        s.add(res)
        s.flush()
        ent = Entitlement(source_id=src.id, external_id="app:user", resource_ref="app", resource_id=res.id, name="user")
        s.add(ent)
        s.flush()

        def person(n: str, manager: Identity | None = None) -> Identity:
            i = Identity(source_id=src.id, external_id=n, email=f"{n}@bench.example", email_normalized=f"{n}@bench.example",
                         login=n, display_name=n.title(), manager_id=manager.id if manager else None, status="active")
            s.add(i)
            return i

        directors = [person(f"director{d:03d}") for d in range(DIRECTORS)]
        s.flush()
        reviewers = [person(f"reviewer{r:04d}", directors[r % DIRECTORS]) for r in range(REVIEWERS)]
        s.flush()
        spec = parse_definition({"name": "Bench escalation", "timing": {
            "duration_days": 14, "reminders_days_before_due": [], "escalate_after_days_overdue": 2}})
        now = utcnow()
        campaign = Campaign(name="Bench escalation", status="active", spec=spec, created_by="bench",
                            launched_at=now, due_at=now + timedelta(days=14))
        s.add(campaign)
        s.flush()
        n = 0
        for r in reviewers:
            for _ in range(ITEMS_EACH):
                n += 1
                p = person(f"p{n:05d}", r)
                s.flush()
                acc = Account(source_id=src.id, external_id=f"a{n}", login=p.login, identity_id=p.id, kind="human")
                s.add(acc)
                s.flush()
                g = Grant(source_id=src.id, key=f"app:user|a|a{n}", entitlement_id=ent.id, principal_type="account",
                          principal_account_id=acc.id)
                s.add(g)
                s.flush()
                s.add(ReviewItem(campaign_id=campaign.id, grant_id=g.id, account_id=acc.id, identity_id=p.id,
                                 source_id=src.id, resource_id=res.id, entitlement_id=ent.id, person_name=p.display_name,
                                 account_login=p.login, source_name="bench", source_kind="demo", resource_name="Payroll",
                                 entitlement_name="user", reviewer_id=r.id, routed_by="manager"))
        return campaign.id


def run_engine(engine_name: str) -> dict:
    from aiosmtpd.controller import Controller
    from alembic import command
    from sqlalchemy import create_engine, func, select, text
    from sqlalchemy.engine import make_url

    from attest.cli import alembic_config
    from attest.config import load_settings
    from attest.db import make_engine, make_session_factory
    from attest.reviews import notify
    from attest.reviews.models import Campaign, ReviewerNotice, ReviewItem

    tmp = Path(tempfile.mkdtemp(prefix="attest-bench-notify-"))
    admin = None
    if engine_name == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        name = f"attest_bench_notify_{uuid.uuid4().hex[:8]}"
        admin = create_engine(make_url(PG_ADMIN).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_ADMIN).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    sink, port = _Sink(), _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        command.upgrade(alembic_config(url), "head")
        settings = load_settings(environ={"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": url,
                                          "ATTEST_INSTANCE_PATH": str(tmp / "instance"), "ATTEST_LOG_LEVEL": "ERROR",
                                          "ATTEST_SMTP_HOST": "127.0.0.1", "ATTEST_SMTP_PORT": str(port)})
        engine = make_engine(url)
        factory = make_session_factory(engine)
        t0 = time.perf_counter()
        cid = _seed(factory)
        seed_s = time.perf_counter() - t0
        with factory() as s:
            campaign = s.get(Campaign, cid)
            launched, due = campaign.launched_at, campaign.due_at

        t0 = time.perf_counter()
        launch_mails = notify.send_due(factory, settings, launched + timedelta(minutes=1))
        launch_s = time.perf_counter() - t0

        at = due + timedelta(days=3)
        t0 = time.perf_counter()
        with factory() as s:
            due_plan = notify.plan(s, settings, at)
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        escalation_mails = notify.send_due(factory, settings, at)
        escalation_s = time.perf_counter() - t0
        with factory() as s:
            escalated = s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.co_reviewer_id.is_not(None)))
            notices = s.scalar(select(func.count()).select_from(ReviewerNotice))
        engine.dispose()
        return {"engine": engine_name, "seed_s": round(seed_s, 1), "launch_mails": launch_mails,
                "launch_s": round(launch_s, 2), "escalations": len(due_plan.escalations), "plan_s": round(plan_s, 2),
                "escalation_mails": escalation_mails, "escalation_s": round(escalation_s, 2),
                "escalated_items": escalated, "notices": notices, "smtp_accepted": sink.mails}
    finally:
        controller.stop()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            admin.dispose()


def run(out: Path) -> str:
    from bench.machine import describe

    rows = [run_engine(e) for e in ("sqlite", "postgresql")]
    lines = [
        "## Review e-mail and escalation (issue 16)",
        "",
        "A campaign of 5,000 items: 1,000 reviewers (5 items each) reporting to 100 directors. Per engine the "
        "scheduler's sender (`notify.send_due`: each mail recorded in its own transaction right after the SMTP "
        "server accepted it) runs against a real SMTP server on loopback (aiosmtpd, in the same process): first "
        "the 1,000 launch notices, then, three days after the due date, the escalation of all 1,000 reviewers "
        "(planned once; co-reviewer UPDATEs and audit events once, in one transaction) and its 2,000 mails (one "
        "to each reviewer, one per reviewer to their director). Target: the escalation, mails included, well "
        "under a minute.",
        "",
        f"Machine: {describe()}; load average when written: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| engine | launch notices | time (mails/s) | escalations planned | plan | escalation run: mails | time (mails/s) | items escalated | SMTP accepted = notices recorded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['launch_mails']:,} | {r['launch_s']} s ({r['launch_mails'] / r['launch_s']:.0f}/s) | "
            f"{r['escalations']:,} | {r['plan_s']} s | {r['escalation_mails']:,} | {r['escalation_s']} s "
            f"({r['escalation_mails'] / r['escalation_s']:.0f}/s) | {r['escalated_items']:,} | "
            f"{r['smtp_accepted']:,} = {r['notices']:,} |")
    text_out = "\n".join(lines) + "\n"
    out.write_text(text_out)
    return text_out


if __name__ == "__main__":
    print(run(Path(__file__).parent / "results" / "notify_escalation.md"))
