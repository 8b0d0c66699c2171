"""The one reader of ISO 8601 timestamps that upstreams send and records store (issue 18: one home per rule).

`parse_timestamp` reads what Okta's payloads say (`created`, `lastLogin`), what the AWS credential report
and a record's attributes hold (an access key's `last_used_at`, Okta's `last_sso_at`), and what the
entitlements layer reads back out of those stored attributes for its risk signals. A string only: a "Z"
or an offset is kept as it is, a naive time is taken as UTC (Attest's convention), and anything that is
not an ISO timestamp (empty, None, a number, "N/A", garbage) is None, never an exception, because a payload
that says something odd about one account must not stop a sync or a campaign launch.

Why here and not elsewhere: every string it reads is written by an upstream or by a connector's record,
so it belongs with the connectors; `connectors` is also the lowest domain layer, so the entitlements and
reviews layers above may import it, and connectors need not import anything new. Not `connectors/base.py`
(the protocol and the records, not the parsing of payloads), and not a kernel module (`dialects.py` is
what differs between SQLite and PostgreSQL; nothing database-side needs this).

Callers keep their own rule for what is not a string: AWS's readers get datetimes from boto3
(`connectors/aws/transforms._parse_dt` takes those as they are, naive ones as UTC, and trims the report's
cells); Okta's transforms and the risk signals read JSON, where a timestamp is always a string.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string as a timezone-aware datetime (naive: UTC), or None for anything else."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
