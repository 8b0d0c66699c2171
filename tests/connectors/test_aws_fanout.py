"""The AWS sync's reads run through the shared fan-out (attest/connectors/fanout.py): accounts side by side,
Identity Center reads source-wide (one refused read fails the whole run and ends nothing), and no reader
thread outlives the sync."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from attest.entitlements.models import Grant
from attest.entitlements.sync import run_sync
from tests.connectors.test_aws import aws_error, connector

moto = pytest.importorskip("moto")


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("attest-aws")]


def test_a_refused_identity_center_read_fails_the_run_and_ends_nothing(org, factory, session, settings, source):
    first = run_sync(factory, settings, "aws", connector=connector())
    assert first.status == "succeeded", first.error
    active = select(func.count()).select_from(Grant).where(Grant.source_id == source.id, Grant.ended_at.is_(None))
    before = session.scalar(active)

    def refuse(**_):
        return aws_error(400, "AccessDeniedException", "not authorized to list group memberships", "json")

    conn = connector()
    conn.hooks.append(("before-send.identitystore.ListGroupMemberships", refuse))
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "failed"
    assert result.error == ("IAM Identity Center: ListGroupMemberships failed: AccessDeniedException: "
                            "not authorized to list group memberships")
    session.expire_all()
    assert session.scalar(active) == before  # partial Identity Center data ends nothing
    assert _reader_threads() == []  # the fan-out's workers are gone with the failed run


def test_accounts_are_read_side_by_side_and_no_reader_outlives_the_sync(org, factory, session, settings, source):
    conn = connector(concurrency=2)
    result = run_sync(factory, settings, "aws", connector=conn)
    assert result.status == "succeeded", result.error
    assert conn.stats["max_concurrent_accounts"] == 2  # 3 accounts, 2 at a time
    assert _reader_threads() == []
