"""History that tells the truth (issue 14, part 6): a day means its end in the organisation's time zone,
an exact moment can be asked for, before a source's first read the answer is "unknown", links from
remediation use the launch moment, and "held since" says what it rests on."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html import unescape
from itertools import count
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from attest.config.settings import SettingsError, load_settings
from attest.entitlements import history
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, Source, SyncRun
from attest.entitlements.sync import run_sync
from attest.reviews.models import Remediation
from tests.conftest import make_settings
from tests.entitlements.test_sync import org
from tests.factories import ListConnector, login_as, make_identity, make_source, make_user

NY = ZoneInfo("America/New_York")
_n = count(1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def settings(databases, tmp_path):
    """The organisation works in New York: days end at midnight there, not at midnight UTC."""
    return make_settings(databases.url, tmp_path, timezone="America/New_York")


def read_source(session, name: str, first_read: datetime | None, *, failed_before: bool = False) -> tuple[Source, SyncRun | None]:
    """A source whose first successful sync finished at `first_read` (None: never read successfully)."""
    source = make_source(session, name)
    if failed_before or first_read is None:
        session.add(SyncRun(source_id=source.id, status="failed", started_at=utc(2026, 1, 1), finished_at=utc(2026, 1, 1),
                            error="HTTP 401"))
    run = None
    if first_read is not None:
        run = SyncRun(source_id=source.id, status="succeeded", started_at=first_read - timedelta(minutes=2),
                      finished_at=first_read)
        session.add(run)
        session.flush()
        source.last_success_run_id = run.id
    session.flush()
    return source, run


def account_of(session, source: Source, person: Identity, seen: datetime) -> Account:
    account = Account(source_id=source.id, external_id=f"acc{next(_n)}", login=person.email, email=person.email,
                      identity_id=person.id, first_seen_at=seen)
    session.add(account)
    session.flush()
    return account


def grant(session, source: Source, account: Account, resource_name: str, first_seen: datetime,
          run: SyncRun | None = None, ended: datetime | None = None, attributes: dict | None = None) -> Grant:
    n = next(_n)
    resource = Resource(source_id=source.id, external_id=f"res{n}", type="app", name=resource_name, first_seen_at=first_seen)
    session.add(resource)
    session.flush()
    ent = Entitlement(source_id=source.id, external_id=f"ent{n}", resource_ref=resource.external_id,
                      resource_id=resource.id, name="user", first_seen_at=first_seen)
    session.add(ent)
    session.flush()
    row = Grant(source_id=source.id, key=f"{ent.external_id}|a|{account.external_id}", entitlement_id=ent.id,
                principal_type="account", principal_account_id=account.id, first_seen_at=first_seen,
                first_seen_run_id=run.id if run else None, ended_at=ended, ended_reason="not_seen" if ended else None,
                attributes=attributes or {})
    session.add(row)
    session.flush()
    return row


def names(access: history.AccessAt) -> set[str]:
    return {h.grant.entitlement.resource.name for h in access.held}


def as_of(**args: str) -> history.AsOf:
    value = history.resolve_as_of(args, NY)
    assert value is not None
    return value


# --- when: the end of the day in the organisation's zone, or an exact moment -------------------------------


def test_a_day_means_its_end_in_the_organisations_time_zone(session):
    source, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    person = make_identity(session, "late@acme.example")
    account = account_of(session, source, person, utc(2026, 3, 1, 12))
    # granted at 23:30 New York time on March 31 (03:30 UTC on April 1)
    grant(session, source, account, "Payroll", datetime(2026, 3, 31, 23, 30, tzinfo=NY))
    # revoked at 22:00 New York time on March 31 (02:00 UTC on April 1): held during March 31, not at its end
    grant(session, source, account, "Ledger", utc(2026, 3, 2), ended=datetime(2026, 3, 31, 22, 0, tzinfo=NY))

    day = as_of(on="2026-03-31")
    assert day.instant == utc(2026, 4, 1, 4) - timedelta(microseconds=1)  # midnight EDT, less a microsecond
    assert day.day == date(2026, 3, 31) and "America/New_York" in day.label
    assert names(history.access_at(session, [account], day)) == {"Payroll"}
    assert names(history.access_at(session, [account], as_of(on="2026-03-30"))) == {"Ledger"}
    # the older spelling at=DAY means the same day's end
    assert as_of(at="2026-03-31").instant == day.instant
    # a day that lost an hour to daylight saving (March 8 in New York) still ends at midnight local time
    assert as_of(on="2026-03-08").instant == utc(2026, 3, 9, 4) - timedelta(microseconds=1)
    assert as_of(on="2026-01-15").instant == utc(2026, 1, 16, 5) - timedelta(microseconds=1)  # EST


def test_an_exact_moment_can_be_asked_for(session):
    source, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    person = make_identity(session, "exact@acme.example")
    account = account_of(session, source, person, utc(2026, 3, 1, 12))
    grant(session, source, account, "Payroll", utc(2026, 3, 31, 17, 5))

    at = as_of(at="2026-03-31T17:05:00Z")
    assert at.instant == utc(2026, 3, 31, 17, 5) and at.day is None
    assert names(history.access_at(session, [account], at)) == {"Payroll"}
    assert names(history.access_at(session, [account], as_of(at="2026-03-31T17:04:59.999999Z"))) == set()
    assert as_of(at="2026-03-31T19:05:00+02:00").instant == utc(2026, 3, 31, 17, 5)
    assert as_of(at="2026-03-31T13:05").instant == utc(2026, 3, 31, 17, 5)  # no offset: New York wall clock
    launched = utc(2026, 3, 31, 17, 5, 0, 123456)
    assert as_of(at=history.instant_param(launched)).instant == launched  # what links carry comes back exactly


@pytest.mark.parametrize("args", [
    {"on": "2026-02-30"}, {"on": "2026-13-01"}, {"on": "yesterday"}, {"on": "2026-3-1"}, {"on": "2026-W13-2"},
    {"on": "20260331"}, {"on": "2026-03-31T17:05:00Z"}, {"at": "2026-03-31T25:00:00Z"}, {"at": "31/03/2026"},
    {"at": "2026-03-31T17:05:00Z", "on": "2026-03-31"}, {"at": "2" * 500},
    {"on": "9999-12-31"},  # its end is past the last date there is
    {"at": "9999-12-31T23:59:59-05:00"}, {"at": "0001-01-01T00:00:00+05:00"},  # outside UTC's calendar
])
def test_unreadable_or_impossible_moments_are_refused(args):
    with pytest.raises(history.AsOfError):
        history.resolve_as_of(args, NY)


def test_the_time_zone_setting_is_validated_at_start_up(tmp_path):
    env = {"ATTEST_ENV": "test", "ATTEST_INSTANCE_PATH": str(tmp_path)}
    assert load_settings(environ=env).timezone == "UTC"
    assert load_settings(environ={**env, "ATTEST_TIMEZONE": "Europe/Berlin"}).zone == ZoneInfo("Europe/Berlin")
    assert load_settings(environ={**env, "ATTEST_TIMEZONE": ""}).timezone == "UTC"  # set but empty: the default
    for bad in ("Mars/Olympus_Mons", "America", "../../etc/passwd", "/etc/localtime", "utc"):
        with pytest.raises(SettingsError, match="ATTEST_TIMEZONE must be an IANA time zone name"):
            load_settings(environ={**env, "ATTEST_TIMEZONE": bad})


# --- unknown before a source's first read ---------------------------------------------------------------------


def test_before_a_sources_first_sync_the_answer_is_unknown_not_no_access(session):
    okta, okta_run = read_source(session, "okta", utc(2026, 3, 1, 12))
    github, github_run = read_source(session, "github", utc(2026, 3, 20, 9), failed_before=True)
    aws, _ = read_source(session, "aws", None)  # only a failed run
    person = make_identity(session, "mixed@acme.example")
    a_okta = account_of(session, okta, person, utc(2026, 3, 1, 12))
    a_github = account_of(session, github, person, utc(2026, 3, 20, 9))
    a_aws = account_of(session, aws, person, utc(2026, 3, 21))
    grant(session, okta, a_okta, "Payroll", utc(2026, 3, 1, 12), run=okta_run)
    grant(session, github, a_github, "acme/infra", utc(2026, 3, 20, 9), run=github_run)
    accounts = [a_okta, a_github, a_aws]

    access = history.access_at(session, accounts, as_of(on="2026-03-10"))
    assert names(access) == {"Payroll"}  # what Attest knows, from the source it had read
    notes = {f.source_name: f.unknown_text for f in access.unknown}
    assert notes == {"github": "unknown: Attest first read github on 2026-03-20 09:00 UTC",
                     "aws": "unknown: Attest has not read aws yet"}

    before_all = history.access_at(session, accounts, as_of(on="2026-02-01"))
    assert names(before_all) == set() and {f.source_name for f in before_all.unknown} == {"okta", "github", "aws"}

    later = history.access_at(session, accounts, as_of(on="2026-03-25"))
    assert names(later) == {"Payroll", "acme/infra"} and [f.source_name for f in later.unknown] == ["aws"]


def test_first_read_is_the_first_successful_sync(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    before = datetime.now(UTC)
    assert run_sync(factory, settings, "idp", connector=ListConnector(org(2))).status == "succeeded"
    account = session.scalar(select(Account).where(Account.external_id == "u1"))
    first = history.first_reads(session, [account.source_id])[account.source_id]
    assert first.at is not None and first.at >= before
    asked = history.AsOf(before, "UTC")
    unknown = history.access_at(session, [account], asked)
    assert unknown.held == [] and [f.source_name for f in unknown.unknown] == ["idp"]
    known = history.access_at(session, [account], history.AsOf(first.at, "UTC"))
    assert known.unknown == [] and {h.grant.entitlement.external_id for h in known.held} >= {"app:admin", "eng:member"}


# --- held since --------------------------------------------------------------------------------------------


def test_held_since_is_the_sources_date_else_first_seen_and_says_which(session):
    okta, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    later_run = SyncRun(source_id=okta.id, status="succeeded", started_at=utc(2026, 3, 5, 11), finished_at=utc(2026, 3, 5, 12))
    session.add(later_run)
    session.flush()
    person = make_identity(session, "since@acme.example")
    account = account_of(session, okta, person, utc(2026, 3, 1, 12))
    assigned = grant(session, okta, account, "Payroll", utc(2026, 3, 1, 11, 58), run=run,
                     attributes={"scope": "USER", "assigned_at": "2024-01-31T18:25:01.000Z"})
    baseline = grant(session, okta, account, "Ledger", utc(2026, 3, 1, 11, 58), run=run)
    newer = grant(session, okta, account, "Wiki", utc(2026, 3, 5, 11, 59), run=later_run)

    since = history.access_at(session, [account], None).since
    assert (since[assigned.id].basis, since[assigned.id].at) == ("source", utc(2024, 1, 31, 18, 25, 1))
    assert since[assigned.id].text == "2024-01-31 18:25 UTC (as okta reports)"
    assert since[baseline.id].basis == "first_read"
    assert since[baseline.id].text.startswith("already held when Attest first read okta on 2026-03-01 12:00 UTC")
    assert (since[newer.id].basis, since[newer.id].at) == ("first_seen", utc(2026, 3, 5, 11, 59))
    assert since[newer.id].text == "first seen 2026-03-05 11:59 UTC (when Attest first saw it in okta)"


# --- the pages ---------------------------------------------------------------------------------------------


def sign_in(app, client, session, role: str = "auditor") -> None:
    user = make_user(session, f"{role}{next(_n)}@acme.example", roles=[role])
    session.commit()
    login_as(app, client, user)


def text_of(response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def test_person_page_answers_per_source_and_says_since_when(app, client, session):
    okta, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    github, github_run = read_source(session, "github", utc(2026, 3, 20, 9))
    person = make_identity(session, "page@acme.example", name="Paula Page")
    a_okta = account_of(session, okta, person, utc(2026, 3, 1, 12))
    a_github = account_of(session, github, person, utc(2026, 3, 20, 9))
    grant(session, okta, a_okta, "Payroll", datetime(2026, 3, 9, 23, 30, tzinfo=NY))
    grant(session, okta, a_okta, "Ledger", utc(2026, 3, 1, 11, 58), run=run)
    grant(session, github, a_github, "acme/infra", utc(2026, 3, 20, 9), run=github_run)
    sign_in(app, client, session)

    page = text_of(client.get(f"/identities/{person.id}?on=2026-03-09"))
    assert "Access at the end of 2026-03-09 (America/New_York)" in page
    assert "Payroll" in page and "Ledger" in page and "acme/infra" not in page  # 23:30 local is in the day
    assert "unknown: Attest first read github on 2026-03-20 09:00 UTC" in page
    assert "first seen 2026-03-10 03:30 UTC" in page  # Payroll
    assert "already held when Attest first read okta on 2026-03-01 12:00 UTC" in page  # Ledger

    before = text_of(client.get(f"/identities/{person.id}?on=2026-02-01"))
    assert "No access." not in before and "Payroll" not in before
    assert "unknown: Attest first read okta on 2026-03-01 12:00 UTC" in before

    resource = session.scalar(select(Resource).where(Resource.name == "Ledger"))
    assert "already held when Attest first read okta" in text_of(client.get(f"/resources/{resource.id}"))
    early = text_of(client.get(f"/resources/{resource.id}?on=2026-02-01"))
    assert "unknown: Attest first read okta on 2026-03-01 12:00 UTC" in early and "Nobody." not in early


@pytest.mark.parametrize("query", [
    "on=2026-02-30", "on=next+week", "at=2026-03-31T25:00Z", "on=9999-12-31", "at=9999-12-31T23:59:59-05:00",
    "at=0001-01-01T00:00:00%2B05:00", "on=2026-03-31&at=2026-03-31T10:00Z", "at=" + "9" * 300,
])
def test_bad_dates_are_a_400_with_a_message_on_every_page(app, client, session, query):
    source, _ = read_source(session, "okta", utc(2026, 3, 1, 12))
    person = make_identity(session, "bad@acme.example")
    account = account_of(session, source, person, utc(2026, 3, 1, 12))
    g = grant(session, source, account, "Payroll", utc(2026, 3, 1, 12))
    sign_in(app, client, session)
    for path in (f"/identities/{person.id}", f"/resources/{g.entitlement.resource_id}", "/history?q=bad%40acme.example"):
        response = client.get(f"{path}{'&' if '?' in path else '?'}{query}")
        assert response.status_code == 400, (path, query)
        message = text_of(response).split("Bad request", 1)[1]
        assert re.search(r"^ (on|at)(=\S+ is (not a|outside)| must be a date| is too long)|^ give either on=", message), message


def test_far_but_real_dates_are_answered(app, client, session):
    source, _ = read_source(session, "okta", utc(2026, 3, 1, 12))
    person = make_identity(session, "far@acme.example")
    account_of(session, source, person, utc(2026, 3, 1, 12))
    sign_in(app, client, session)
    for query in ("on=9999-12-30", "at=9999-12-31T23:59:59Z", "on=0001-01-01", "at=0001-01-01T00:00:00Z"):
        assert client.get(f"/identities/{person.id}?{query}").status_code == 200, query


def test_remediation_link_shows_a_revoked_persons_access_at_the_launch_moment(app, client, session):
    from tests.reviews.factories import make_campaign, make_item

    okta, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    person = make_identity(session, "revoked@acme.example", name="Rita Revoked")
    account = account_of(session, okta, person, utc(2026, 3, 1, 12))
    campaign = make_campaign(session, "Q1 review")
    campaign.launched_at = launched = utc(2026, 3, 10, 15, 4, 5, 123456)
    # first seen by the sync just before the launch, revoked (and seen gone) an hour after it, the same day
    g = grant(session, okta, account, "Payroll", launched - timedelta(minutes=5),
              ended=launched + timedelta(hours=1))
    ent = session.get(Entitlement, g.entitlement_id)
    item = make_item(session, campaign, None, person, account, g, ent.resource, ent, okta)
    item.decision = item.outcome = "revoke"
    session.add(Remediation(campaign_id=campaign.id, item_id=item.id, grant_id=g.id, source_id=okta.id,
                            mode="automatic", status="verified", attempts=1, executed_at=launched + timedelta(minutes=30)))
    session.commit()
    sign_in(app, client, session)

    page = client.get(f"/remediations?campaign={campaign.id}").get_data(as_text=True)
    link = re.search(rf'href="(/identities/{person.id}\?[^"]*)"', page)
    assert link, page
    href = unescape(link.group(1))
    assert parse_qs(urlsplit(href).query) == {"at": ["2026-03-10T15:04:05.123456Z"]}
    person_page = text_of(client.get(href))
    assert "Payroll" in person_page and "No access." not in person_page


def test_review_item_says_since_when_and_links_to_the_launch_moment(app, client, session):
    from tests.reviews.factories import make_campaign, make_item

    okta, run = read_source(session, "okta", utc(2026, 3, 1, 12))
    manager = make_identity(session, "boss@acme.example", name="Bea Boss")
    boss = make_user(session, "boss@acme.example", identity=manager)
    person = make_identity(session, "held@acme.example", name="Hal Held", manager=manager)
    account = account_of(session, okta, person, utc(2026, 3, 1, 12))
    campaign = make_campaign(session, "Q1 review")
    campaign.launched_at = utc(2026, 3, 10, 15, 4, 5, 123456)
    g = grant(session, okta, account, "Ledger", utc(2026, 3, 1, 11, 58), run=run)
    ent = session.get(Entitlement, g.entitlement_id)
    item = make_item(session, campaign, manager, person, account, g, ent.resource, ent, okta, granted_at=g.first_seen_at)
    session.commit()

    login_as(app, client, boss)
    page = text_of(client.get(f"/reviews/items/{item.id}"))
    assert "already held when Attest first read okta on 2026-03-01 12:00 UTC" in page
    assert "their access when the campaign launched" not in page  # a reviewer cannot open people's pages

    sign_in(app, client, session)
    html = client.get(f"/reviews/items/{item.id}").get_data(as_text=True)
    link = re.search(rf'href="(/identities/{person.id}\?[^"]*)"[^>]*>their access when the campaign launched', html)
    assert link, html
    assert parse_qs(urlsplit(unescape(link.group(1))).query) == {"at": ["2026-03-10T15:04:05.123456Z"]}
    assert "Ledger" in text_of(client.get(unescape(link.group(1))))


def test_audit_log_day_filters_are_days_in_the_organisations_zone(app, client, session, monkeypatch):
    from attest.trail.chain import record

    monkeypatch.setattr("attest.trail.chain.utcnow", lambda: datetime(2026, 3, 31, 23, 30, tzinfo=NY).astimezone(UTC))
    record(session, actor="late@acme.example", action="source.add", object_type="source", object_id="77")
    session.commit()
    monkeypatch.undo()
    sign_in(app, client, session)
    assert "late@acme.example" in text_of(client.get("/audit?since=2026-03-31&until=2026-03-31"))
    assert "late@acme.example" not in text_of(client.get("/audit?since=2026-04-01"))
    for bad in ("until=9999-12-31", "since=2026-02-30", "until=2026-03-31T10:00Z"):
        response = client.get(f"/audit?{bad}")
        message = text_of(response).split("Bad request", 1)[1]
        assert response.status_code == 400 and re.search(r"^ (since|until)(=\S+ is (not a|outside)| must be a date)", message), message
