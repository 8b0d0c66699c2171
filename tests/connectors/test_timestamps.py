"""The one ISO 8601 parser (attest/connectors/timestamps.py) and its three readers: Okta's transforms, AWS's
transforms and the risk signals. Each reads every input it met before as it did when each had its own copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from attest.connectors.aws.transforms import _parse_dt as aws_time
from attest.connectors.okta.transforms import parse_time as okta_time
from attest.connectors.timestamps import parse_timestamp
from attest.entitlements import risk

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))

# input -> what Okta's transforms and the risk signals read (JSON: strings) and what AWS's transforms read
CASES = [
    ("2026-11-20T12:00:00.000Z", NOON, NOON),  # Okta's spelling
    ("2026-11-20T12:00:00Z", NOON, NOON),
    ("2026-11-20T12:00:00+00:00", NOON, NOON),  # the AWS credential report's
    ("2026-11-20T12:00:00.123456Z", NOON.replace(microsecond=123456), NOON.replace(microsecond=123456)),
    ("2026-11-20T14:00:00+02:00", datetime(2026, 11, 20, 14, tzinfo=PLUS_TWO),  # the offset is kept
     datetime(2026, 11, 20, 14, tzinfo=PLUS_TWO)),
    ("2026-11-20T12:00:00", NOON, NOON),  # naive: UTC
    ("2026-11-20 12:00:00", NOON, NOON),
    ("2026-11-20", NOON.replace(hour=0), NOON.replace(hour=0)),
    (" 2026-11-20T12:00:00Z ", None, NOON),  # only AWS trims a report's cell
    ("", None, None),
    ("   ", None, None),
    ("N/A", None, None),  # the credential report's "none"s
    ("no_information", None, None),
    ("not_supported", None, None),
    ("yesterday", None, None),
    ("2026-13-40T99:00:00Z", None, None),
    (None, None, None),
    (False, None, None),
    (0, None, None),
    (1795000000, None, None),  # epoch seconds are not an ISO timestamp
    (datetime(2026, 11, 20, 12, 0), None, NOON),  # boto3 gives AWS datetimes: naive ones are UTC...
    (datetime(2026, 11, 20, 14, tzinfo=PLUS_TWO), None, datetime(2026, 11, 20, 14, tzinfo=PLUS_TWO)),  # ...or as they are
]


@pytest.mark.parametrize(("value", "json_reader", "aws_reader"), CASES, ids=[repr(c[0]) for c in CASES])
def test_every_reader_reads_what_it_read_before(value, json_reader, aws_reader):
    for read in (parse_timestamp, okta_time, risk._parse_iso):
        got = read(value)
        assert got == json_reader and (got is None or got.utcoffset() == json_reader.utcoffset()), read
    got = aws_time(value)
    assert got == aws_reader and (got is None or got.utcoffset() == aws_reader.utcoffset())


def test_what_it_reads_is_always_timezone_aware():
    for value, *_ in CASES:
        for read in (parse_timestamp, aws_time):
            got = read(value)
            assert got is None or got.tzinfo is not None


def test_the_risk_signals_read_last_sso_and_access_keys_through_it():
    cutoffs = risk.Cutoffs(dormant_before=NOON, stale_key_before=NOON, last_review_at=None)

    def read(grant=None, account=None) -> list[str]:
        return risk.signals(cutoffs=cutoffs, privileged=False, identity_id=1, person_status="active",
                            person_kind="human", account_kind="human", account_last_login_at=NOON + timedelta(days=1),
                            account_created_at=None, account_mfa_enabled=True, account_attributes=account,
                            grant_attributes=grant, granted_at=None, via_group=False)

    assert read(grant={"last_sso_at": "2026-11-19T08:00:00.000Z"}) == ["dormant"]
    assert read(grant={"last_sso_at": "2026-11-21T08:00:00"}) == []  # naive: UTC, after the cut-off
    assert read(grant={"last_sso_at": "not a time"}) == ["dormant"]  # unreadable: as no SSO in the look-back
    key = {"id": "AKIA1", "status": "Active", "created_at": "2026-01-01T00:00:00+00:00"}
    assert read(account={"access_keys": [{**key, "last_used_at": "2026-11-19T23:59:59Z"}]}) == ["stale_access_key"]
    assert read(account={"access_keys": [{**key, "last_used_at": "2026-11-20T13:00:00+00:00"}]}) == []
    assert read(account={"access_keys": [{**key, "last_used_at": "N/A"}]}) == ["stale_access_key"]  # created long ago
