"""`attest demo` syncs the sandbox Okta, starting it in-process when `attest sandbox serve` is not running."""

from __future__ import annotations

import logging
import socket

import pytest
from sqlalchemy import func, select

from attest.entitlements.models import Grant, Identity, Source

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.mark.slow
def test_demo_syncs_the_sandbox_okta(app, session):
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert "synced okta: succeeded" in result.output
    source = session.scalar(select(Source).where(Source.name == "okta"))
    assert source.kind == "okta" and source.authoritative
    assert session.scalar(select(func.count()).select_from(Identity).where(Identity.ended_at.is_(None))) == 300
    assert session.scalar(select(func.count()).select_from(Identity).where(Identity.manager_id.is_not(None))) > 250
    assert session.scalar(select(func.count()).select_from(Grant).where(Grant.ended_at.is_(None))) > 2000
    # the in-process sandbox was stopped again (unless `attest sandbox serve` was already serving it)
    if "started sandbox okta" in result.output:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", 5101)) != 0
