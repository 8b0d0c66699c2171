"""Risk signals on held access, as SQL (for the set-based campaign launch and preview) and in Python.

Signals (ReviewItem.risks) and what they mean:
- privileged: the entitlement is flagged privileged (admin roles, admin permissions, owner).
- dormant: the account has not logged in for `dormant_days` (never logged in and created before that),
  or the app's last SSO for this grant (`last_sso_at` in the grant's attributes, from Okta's System Log;
  present but null = no SSO within the look-back) is older than that.
- orphaned: the account belongs to no person.
- terminated: the person is terminated in the identity provider and still holds the access.
- service_account: a non-human account (or a service identity).
- new_since_last_review: the access appeared after this definition's last closed campaign was launched.
- via_group: held through a group, not directly.
- stale_access_key: an active access key (AWS: `access_keys` in the account's attributes, each
  {"id", "status": "Active"|"Inactive", "created_at", "last_used_at"}) unused for `stale_key_days`
  (never used: created before that).
- no_mfa: the source says the account has no MFA.
- trust_outside_org: an AWS role assumption path whose trust policy names a principal outside the
  organization (`trust_outside_org` true in the grant's attributes; see attest.connectors.aws.trust).
- wildcard_trust: an AWS role assumption path through a wildcard principal ("*", `"AWS": "*"`, with or
  without conditions: `wildcard_trust` true in the grant's attributes).

`risk_score` is the sum of the weights of an item's signals, capped at 100.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from attest import dialects
from attest.connectors.timestamps import parse_timestamp
from attest.entitlements.models import PersonStatus

RISKS = (
    "privileged", "dormant", "orphaned", "terminated", "service_account", "new_since_last_review",
    "via_group", "stale_access_key", "no_mfa", "trust_outside_org", "wildcard_trust",
)
WEIGHTS = {
    "terminated": 40,
    "wildcard_trust": 35,
    "trust_outside_org": 30,
    "orphaned": 30,
    "privileged": 25,
    "stale_access_key": 20,
    "dormant": 15,
    "no_mfa": 15,
    "service_account": 10,
    "new_since_last_review": 10,
    "via_group": 5,
}


def score(risks: Iterable[str]) -> int:
    return min(100, sum(WEIGHTS.get(r, 0) for r in set(risks)))


@dataclass(frozen=True)
class Cutoffs:
    dormant_before: datetime
    stale_key_before: datetime
    last_review_at: datetime | None  # None: no earlier closed campaign, nothing counts as new

    @classmethod
    def for_spec(cls, now: datetime, risk_spec: Mapping[str, Any], last_review_at: datetime | None) -> Cutoffs:
        return cls(now - timedelta(days=int(risk_spec.get("dormant_days", 90))),
                   now - timedelta(days=int(risk_spec.get("stale_key_days", 90))), last_review_at)


def _iso_prefix(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


# reviews/item_notes.py and entitlements/team.py still read the one parser under this older name
_parse_iso = parse_timestamp


# grant signals read from the grant's attributes (a JSON true under the signal's own name)
TRUST_SIGNALS = ("trust_outside_org", "wildcard_trust")


# --- Python ---------------------------------------------------------------------------------------


def signals(
    *,
    cutoffs: Cutoffs,
    privileged: bool,
    identity_id: int | None,
    person_status: str | None,
    person_kind: str | None,
    account_kind: str,
    account_last_login_at: datetime | None,
    account_created_at: datetime | None,
    account_mfa_enabled: bool | None,
    account_attributes: Mapping[str, Any] | None,
    grant_attributes: Mapping[str, Any] | None,
    granted_at: datetime | None,
    via_group: bool,
) -> list[str]:
    """The signals of one held grant, in RISKS order (the same rules as the SQL below)."""
    out: set[str] = set()
    if privileged:
        out.add("privileged")
    if account_last_login_at is not None:
        if account_last_login_at < cutoffs.dormant_before:
            out.add("dormant")
    elif account_created_at is not None and account_created_at < cutoffs.dormant_before:
        out.add("dormant")
    grant_attributes = grant_attributes or {}
    if "last_sso_at" in grant_attributes:
        sso = parse_timestamp(grant_attributes.get("last_sso_at"))
        if sso is None or sso < cutoffs.dormant_before:
            out.add("dormant")
    if identity_id is None:
        out.add("orphaned")
    if person_status == PersonStatus.TERMINATED:
        out.add("terminated")
    if account_kind == "service" or person_kind == "service":
        out.add("service_account")
    if cutoffs.last_review_at is not None and granted_at is not None and granted_at > cutoffs.last_review_at:
        out.add("new_since_last_review")
    if via_group:
        out.add("via_group")
    for key in (account_attributes or {}).get("access_keys") or []:
        if not isinstance(key, Mapping) or (key.get("status") or "Active") != "Active":
            continue
        used = parse_timestamp(key.get("last_used_at")) or parse_timestamp(key.get("created_at"))
        if used is not None and used < cutoffs.stale_key_before:
            out.add("stale_access_key")
    if account_mfa_enabled is False:
        out.add("no_mfa")
    for flag in TRUST_SIGNALS:
        if grant_attributes.get(flag) is True:
            out.add(flag)
    return [r for r in RISKS if r in out]


# --- SQL ------------------------------------------------------------------------------------------


def sql_params(cutoffs: Cutoffs) -> dict[str, Any]:
    """The bind parameters of `sql_conditions`; the datetimes are bound as UTCDateTime by the statement
    (attest.dialects.text_with_dates)."""
    return {
        "risk_dormant_before": cutoffs.dormant_before,
        "risk_dormant_before_iso": _iso_prefix(cutoffs.dormant_before),
        "risk_stale_before_iso": _iso_prefix(cutoffs.stale_key_before),
        "risk_last_review_at": cutoffs.last_review_at,
        "risk_false": False,
    }


def sql_conditions(dialect: str, cutoffs: Cutoffs, *, entitlement: str = "e", account: str = "acc",
                   identity: str = "idn", grant: str = "g", granted_at: str = "h.granted_at",
                   via_resource: str = "h.via_resource_id") -> dict[str, str]:
    """One SQL boolean expression per signal over the given table aliases (params from `sql_params`);
    "dormant" in its two parts, the account's and the grant's (see sql_account_bits, sql_item_mask)."""
    collate = dialects.c_collation(dialect)
    sso_type = dialects.json_type(dialect, f"{grant}.attributes", "last_sso_at")
    sso_text = dialects.json_text(dialect, f"{grant}.attributes", "last_sso_at")
    stale = dialects.active_access_key_older(dialect, f"{account}.attributes", "risk_stale_before_iso")
    flags = {r: dialects.json_flag(dialect, f"{grant}.attributes", r) for r in TRUST_SIGNALS}
    new = (f"({granted_at} IS NOT NULL AND {granted_at} > :risk_last_review_at)"
           if cutoffs.last_review_at is not None else "(1 = 0)")
    dormant_login = (
        f"(({account}.last_login_at IS NOT NULL AND {account}.last_login_at < :risk_dormant_before)"
        f" OR ({account}.last_login_at IS NULL AND {account}.created_upstream_at IS NOT NULL"
        f" AND {account}.created_upstream_at < :risk_dormant_before))"
    )
    dormant_sso = f"({sso_type} = 'null' OR substr({sso_text}, 1, 19){collate} < :risk_dormant_before_iso)"
    return {
        "privileged": f"({entitlement}.privileged = :true)",
        "dormant_login": dormant_login,  # dormant, the account's part
        "dormant_sso": dormant_sso,  # dormant, the grant's part (the app's last SSO)
        "orphaned": f"({account}.identity_id IS NULL)",
        "terminated": f"({identity}.status = '{PersonStatus.TERMINATED}')",
        "service_account": f"({account}.kind = 'service' OR {identity}.kind = 'service')",
        "new_since_last_review": new,
        "via_group": f"({via_resource} IS NOT NULL)",
        "stale_access_key": stale,
        "no_mfa": f"({account}.mfa_enabled = :risk_false)",
        **flags,
    }


def sql_grant_via_path(dialect: str, grant: str = "g") -> str:
    """The grant's own path (`via_path` in its attributes, e.g. an AWS role assumption), as SQL text."""
    return dialects.json_text_if_present(dialect, f"{grant}.attributes", "via_path")


def _bit(risk: str) -> int:
    return 1 << RISKS.index(risk)


# the signals that depend only on the account and its person (the account's share of "dormant" aside)
ACCOUNT_SIGNALS = ("orphaned", "terminated", "service_account", "stale_access_key", "no_mfa")
GRANT_SIGNALS = ("privileged", "new_since_last_review", "via_group", *TRUST_SIGNALS)


def sql_account_bits(conditions: Mapping[str, str]) -> str:
    """The bits of an account's own signals (bit i: RISKS[i]), computed once per account; sql_item_mask adds
    the grant's. The signals' JSON and score come from `mask_table()` (computed in Python) by a join."""
    parts = [f"CASE WHEN {conditions[r]} THEN {_bit(r)} ELSE 0 END" for r in ACCOUNT_SIGNALS]
    parts.append(f"CASE WHEN {conditions['dormant_login']} THEN {_bit('dormant')} ELSE 0 END")
    return "(" + " + ".join(parts) + ")"


def sql_item_mask(conditions: Mapping[str, str], account_bits: str) -> str:
    """An item's signals as a mask (bit i: RISKS[i]): its account's bits (sql_account_bits, precomputed)
    plus the grant's own signals; dormant holds when either the account or the app's last SSO says so."""
    dormant = _bit("dormant")
    parts = [account_bits, f"CASE WHEN ({account_bits} & {dormant}) = 0 AND {conditions['dormant_sso']} THEN {dormant} ELSE 0 END"]
    parts += [f"CASE WHEN {conditions[r]} THEN {_bit(r)} ELSE 0 END" for r in GRANT_SIGNALS]
    return "(" + " + ".join(parts) + ")"


def from_mask(mask: int) -> list[str]:
    return [r for i, r in enumerate(RISKS) if mask & (1 << i)]


def mask_table() -> list[tuple[int, str, int]]:
    """(mask, risks as JSON text, risk score) for every combination of signals."""
    import json

    return [(m, json.dumps(from_mask(m)), score(from_mask(m))) for m in range(1 << len(RISKS))]
