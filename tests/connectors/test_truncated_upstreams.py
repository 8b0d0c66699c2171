"""Issue 16, part 1 against the vendors' fakes: a list that comes back empty, cut short at page k, or
without its `next` link ends nothing. The run is `aborted`, its error names the kinds and the counts,
every kind's rows are as they were, and the next good sync changes nothing. A `next` link or cursor that
repeats, or more pages than the page cap, stops paging with a clear error (issue 16, part 2).

The faults are the fakes' own (`faults=` on the Okta and GitHub fakes, `aws_moto.fault_hooks` on the AWS
connector's botocore clients over moto): what an upstream incident or a buggy proxy does to a list, on
top of paging that follows the vendor's reference.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import func, select

from attest.connectors.okta import OktaConnector
from attest.connectors.sandbox.server import serve_in_thread
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, SyncRun
from attest.entitlements.sync import run_sync
from tests.factories import make_source

logging.getLogger("werkzeug").setLevel(logging.ERROR)

KINDS = {"identities": Identity, "accounts": Account, "resources": Resource, "entitlements": Entitlement,
         "grants": Grant}


def no_sleep(_seconds: float) -> None:
    pass


def snapshot(session, source_id: int) -> dict[str, tuple[int, int, int]]:
    """Per kind: (active rows, all rows, rows with an end) of the source."""
    session.expire_all()
    out = {}
    for kind, model in KINDS.items():
        where = model.source_id == source_id
        out[kind] = (
            session.scalar(select(func.count()).select_from(model).where(where, model.ended_at.is_(None))),
            session.scalar(select(func.count()).select_from(model).where(where)),
            session.scalar(select(func.count()).select_from(model).where(where, model.ended_at.is_not(None))),
        )
    return out


def assert_aborted_naming(result, *kinds: str) -> None:
    assert result.status == "aborted", (result.status, result.error)
    for kind in kinds:
        assert re.search(rf"[\d,]+ of [\d,]+ active {kind}\b", result.error), (kind, result.error)
    assert "Nothing was changed" in result.error


def assert_unchanged_and_recovers(factory, settings, session, source, before, conn_factory) -> None:
    assert snapshot(session, source.id) == before
    again = run_sync(factory, settings, source.name, connector=conn_factory())
    assert again.status == "succeeded", again.error
    assert sum(again.stats["added"].values()) == 0 and sum(again.stats["ended"].values()) == 0, again.stats
    assert snapshot(session, source.id) == before


# --- Okta -------------------------------------------------------------------------------------------------


@pytest.fixture
def okta():
    from attest.connectors.sandbox.okta_fake import create_app

    app = create_app(users=450, groups=12, apps=4, memberships=900, sso_events=0)
    with serve_in_thread(app) as server:
        app.url = server.url
        yield app


def okta_connector(okta) -> OktaConnector:
    return OktaConnector({"domain": okta.url, "log_days": 0}, {"token": "sandbox-token"}, sleep=no_sleep)


@pytest.mark.parametrize("fault", [{"empty": True}, {"cut_at_page": 2}, {"drop_next_at": 1}],
                         ids=["empty", "cut_at_page_2", "no_next_link_at_page_1"])
def test_okta_user_list_cut_short_ends_nothing(factory, session, settings, okta, fault):
    source = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    first = run_sync(factory, settings, "okta", connector=okta_connector(okta))
    assert first.status == "succeeded", first.error
    before = snapshot(session, source.id)
    assert before["identities"][0] > 400

    okta.faults.lists = {"users": fault}
    result = run_sync(factory, settings, "okta", connector=okta_connector(okta))
    assert_aborted_naming(result, "identities", "accounts")
    assert session.get(SyncRun, result.run_id).status == "aborted"

    okta.faults.lists = {}
    assert_unchanged_and_recovers(factory, settings, session, source, before, lambda: okta_connector(okta))


def test_okta_group_members_cut_short_end_nothing(factory, session, settings, okta):
    source = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    assert run_sync(factory, settings, "okta", connector=okta_connector(okta)).status == "succeeded"
    before = snapshot(session, source.id)
    okta.faults.lists = {"group_users": {"empty": True}}
    result = run_sync(factory, settings, "okta", connector=okta_connector(okta))
    assert_aborted_naming(result, "grants")
    okta.faults.lists = {}
    assert_unchanged_and_recovers(factory, settings, session, source, before, lambda: okta_connector(okta))


def test_okta_next_link_that_repeats_stops_paging(factory, session, settings, okta):
    source = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    assert run_sync(factory, settings, "okta", connector=okta_connector(okta)).status == "succeeded"
    before = snapshot(session, source.id)
    okta.faults.lists = {"users": {"repeat_next": True}}
    okta.log.clear()
    result = run_sync(factory, settings, "okta", connector=okta_connector(okta))
    assert result.status == "failed"
    assert "Okta GET /api/v1/users" in result.error and "already served" in result.error, result.error
    assert sum(1 for _, path, _ in okta.log if path == "/api/v1/users") <= 3  # not 803
    assert snapshot(session, source.id) == before


def test_okta_page_cap_stops_paging(factory, session, settings, okta):
    source = make_source(session, "okta", kind="okta", authoritative=True)
    session.commit()
    conn = okta_connector(okta)
    conn.http.max_pages = 2  # the users list has 3 pages
    result = run_sync(factory, settings, "okta", connector=conn)
    assert result.status == "failed"
    assert "more than 2 pages" in result.error and "page cap" in result.error, result.error
    assert snapshot(session, source.id)["identities"] == (0, 0, 0)


# --- GitHub -----------------------------------------------------------------------------------------------


@pytest.fixture
def github():
    from attest.connectors.sandbox.github_fake import create_app

    app = create_app(members=250, teams=4, repos=8, owners=1)
    with serve_in_thread(app) as server:
        app.url = server.url
        yield app


def github_connector(github):
    from attest.connectors.github import GitHubConnector
    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN

    return GitHubConnector({"orgs": ["acme"], "api_url": github.url}, {"token": SANDBOX_TOKEN}, sleep=no_sleep)


@pytest.mark.parametrize("fault", [{"empty": True}, {"cut_at_page": 2}, {"drop_next_at": 1}],
                         ids=["empty", "cut_at_page_2", "no_next_page_at_page_1"])
def test_github_member_list_cut_short_ends_nothing(factory, session, settings, github, fault):
    source = make_source(session, "gh", kind="github")
    session.commit()
    first = run_sync(factory, settings, "gh", connector=github_connector(github))
    assert first.status == "succeeded", first.error
    before = snapshot(session, source.id)
    assert before["accounts"][0] >= 250

    github.github.faults = {"membersWithRole": fault}
    result = run_sync(factory, settings, "gh", connector=github_connector(github))
    assert_aborted_naming(result, "accounts")
    assert "of part github:acme" in result.error or "active accounts (" in result.error

    github.github.faults = {}
    assert_unchanged_and_recovers(factory, settings, session, source, before, lambda: github_connector(github))


def test_github_empty_repository_list_ends_nothing(factory, session, settings, github):
    source = make_source(session, "gh", kind="github")
    session.commit()
    assert run_sync(factory, settings, "gh", connector=github_connector(github)).status == "succeeded"
    before = snapshot(session, source.id)
    github.github.faults = {"repositories": {"empty": True}}
    result = run_sync(factory, settings, "gh", connector=github_connector(github))
    assert_aborted_naming(result, "entitlements")
    github.github.faults = {}
    assert_unchanged_and_recovers(factory, settings, session, source, before, lambda: github_connector(github))


@pytest.mark.parametrize("listing", ["membersWithRole", "outside_collaborators"])
def test_github_cursor_or_next_link_that_repeats_fails_the_org_and_keeps_it(factory, session, settings, github,
                                                                             listing):
    source = make_source(session, "gh", kind="github")
    session.commit()
    assert run_sync(factory, settings, "gh", connector=github_connector(github)).status == "succeeded"
    before = snapshot(session, source.id)
    github.github.faults = {listing: {"repeat_next": True}}
    n = len(github.github.log)
    result = run_sync(factory, settings, "gh", connector=github_connector(github))
    assert result.status == "partial", result.error
    [failed] = result.failed_parts
    assert failed["part"] == "github:acme" and "already served" in failed["reason"], failed
    assert len(github.github.log) - n < 80  # paging stopped at the first repeat
    assert snapshot(session, source.id) == before


# --- AWS (moto) -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws_org():
    pytest.importorskip("moto")
    from moto import mock_aws

    from attest.connectors.sandbox.aws_moto import OrgSpec, seed_org

    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield seed_org(OrgSpec(accounts=3, ic_users=30))


@pytest.fixture
def small_pages(monkeypatch):
    from attest.connectors.aws.sessions import PAGE

    monkeypatch.setitem(PAGE, "identitystore", 10)  # 30 Identity Center users: three pages


def aws_connector(faults=None):
    from attest.connectors.aws import AwsConnector
    from attest.connectors.sandbox.aws_moto import fault_hooks

    conn = AwsConnector({"assume_role_name": "AttestAudit", "concurrency": 4}, {})
    conn.hooks += fault_hooks(faults or {})
    return conn


@pytest.mark.parametrize("fault,kinds", [
    ({"identitystore:ListUsers": {"empty": True}}, ("accounts",)),
    ({"identitystore:ListUsers": {"cut_at_page": 1}}, ("accounts",)),
    ({"identitystore:ListUsers": {"drop_next_at": 1}}, ("accounts",)),
    ({"organizations:ListAccountsForParent": {"empty": True}}, ("accounts", "resources", "grants")),
    ({"iam:GetAccountAuthorizationDetails": {"cut_at_page": 1}}, ("accounts",)),
], ids=["ic_users_empty", "ic_users_cut_at_page_1", "ic_users_no_token_at_page_1", "accounts_empty",
        "iam_truncated"])
def test_aws_list_cut_short_ends_nothing(aws_org, small_pages, factory, session, settings, fault, kinds):
    source = make_source(session, "aws", kind="aws", settings={"assume_role_name": "AttestAudit"})
    session.commit()
    first = run_sync(factory, settings, "aws", connector=aws_connector())
    assert first.status == "succeeded", first.error
    before = snapshot(session, source.id)

    result = run_sync(factory, settings, "aws", connector=aws_connector(fault))
    assert_aborted_naming(result, *kinds)
    assert_unchanged_and_recovers(factory, settings, session, source, before, aws_connector)


def test_aws_next_token_that_repeats_stops_paging(aws_org, small_pages, factory, session, settings):
    source = make_source(session, "aws", kind="aws", settings={"assume_role_name": "AttestAudit"})
    session.commit()
    assert run_sync(factory, settings, "aws", connector=aws_connector()).status == "succeeded"
    before = snapshot(session, source.id)
    conn = aws_connector({"identitystore:ListUsers": {"repeat_next": True}})
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "failed"
    assert "identitystore:ListUsers" in result.error and "already served" in result.error, result.error
    assert conn.counter.by_operation["identitystore:ListUsers"] <= 3
    assert snapshot(session, source.id) == before


def test_aws_page_cap_stops_paging(aws_org, small_pages, factory, session, settings):
    make_source(session, "aws", kind="aws", settings={"assume_role_name": "AttestAudit"})
    session.commit()
    conn = aws_connector()
    conn.max_pages = 2
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "failed"
    assert "identitystore:ListUsers" in result.error and "more than 2 pages" in result.error, result.error
