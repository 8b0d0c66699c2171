"""The "managed elsewhere" contract: access that something outside the source re-creates, so revoking the
grant itself would be wrong or undone (DESIGN.md invariant "one home per rule").

Connectors emit it (`emit(...)`) on a resource's, an entitlement's or a grant's attributes under the one key
`MANAGED_BY`; remediation planning, the remediation targets made at close, the review page's item notes and
a connector's own revoke guard read it through the one reader `managed_elsewhere(...)`, and say it to a
person with `ManagedElsewhere.sentence(...)`, so a reviewer (on the item) and an admin (on the remediation
work list) read the same words, naming where the change must be made.

It lives in the connectors layer, the lowest one, so connectors can emit it and entitlements and reviews
can read it without importing upwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from string import Formatter
from typing import Any

from attest.connectors.base import RevokeRefused

MANAGED_BY = "managed_by"  # the attribute key, on resource, entitlement or grant attributes


class ManagedKind(StrEnum):
    """What really holds the access, as the vendors do it."""

    GROUP_RULE = "group_rule"  # Okta: an ACTIVE group rule adds people to the group by profile attributes
    IMPORTED_GROUP = "imported_group"  # Okta APP_GROUP: members mastered by an app or directory (AD, LDAP, Workday)
    BUILT_IN = "built_in"  # Okta BUILT_IN (Everyone): every user is in it; membership cannot be changed
    GROUP_ASSIGNMENT = "group_assignment"  # an app assigned to a group: the person holds it through membership
    IDP_TEAM_SYNC = "idp_team_sync"  # GitHub team synchronised with identity-provider groups (Team Sync)
    SCIM = "scim"  # provisioned over SCIM by an external IdP (AWS Identity Center users/groups with ExternalIds)
    PERMISSION_SET = "permission_set"  # AWS: reached through an Identity Center permission set assignment
    ORGANIZATIONS = "organizations"  # AWS: OrganizationAccountAccessRole, created by AWS Organizations


# the badge beside a resource that something outside the source masters (the resources pages)
LABELS = {
    ManagedKind.GROUP_RULE: "rule-managed", ManagedKind.IMPORTED_GROUP: "imported",
    ManagedKind.BUILT_IN: "built-in", ManagedKind.GROUP_ASSIGNMENT: "assigned to a group",
    ManagedKind.IDP_TEAM_SYNC: "IdP-synced", ManagedKind.SCIM: "SCIM-provisioned",
    ManagedKind.PERMISSION_SET: "permission set", ManagedKind.ORGANIZATIONS: "AWS Organizations",
}


class _Words(Formatter):
    """Fills a sentence: `{by:words}` says `words` where nobody is named."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return str(value) or format_spec


# what a person reads, by kind: {p} the principal, {r} the resource, {by} who really holds the access
# (`{by:words}`: these words when nobody is named; {group}: "group <by>"), {extra} the detail in parentheses
SENTENCES = {
    ManagedKind.GROUP_RULE:
        'group rule {by:(unnamed)} assigns membership of group "{r}" to {p}{extra}; removing the membership '
        "would be undone by the rule. Change the rule (or the profile attribute of {p} it matches) instead.",
    ManagedKind.IMPORTED_GROUP:
        'group "{r}" is imported from {by:its source directory or app}{extra}, which masters its members; a '
        "change in the source would be undone by the next import. Remove {p} from the group in "
        "{by:that directory or app} instead.",
    ManagedKind.BUILT_IN:
        'group "{r}" is built in to {by:the source}{extra}: every user is a member and the membership cannot '
        "be removed. Change what the group grants, or deactivate {p}, instead.",
    ManagedKind.GROUP_ASSIGNMENT:
        '{p} is assigned to "{r}" through {group:a group}{extra}; remove {p} from that group, or unassign the '
        'group from "{r}", instead.',
    ManagedKind.IDP_TEAM_SYNC:
        'team "{r}" is synchronised with identity provider group {by:(unnamed)}{extra}; GitHub refuses '
        "membership changes to it and the IdP would add {p} back. Remove {p} from {by:that group} in the "
        "identity provider instead.",
    ManagedKind.SCIM:
        '"{r}" is provisioned over SCIM by {by:an external identity provider}{extra}; a change made here would '
        "be overwritten by the next provisioning. Remove {p} from the group (or unassign the app) in "
        "{by:the identity provider} instead.",
    ManagedKind.PERMISSION_SET:
        '{p} reaches "{r}" through {by:an IAM Identity Center permission set}{extra}, which IAM Identity Center '
        "creates and owns; an edit in IAM would be undone. Remove the account assignment of {p} (or change the "
        "permission set) in IAM Identity Center instead.",
    ManagedKind.ORGANIZATIONS:
        '"{r}" was created by {by:AWS Organizations}{extra} so the management account can administer this '
        "account; removing it from {p} here cuts that path. Change who may assume it in the management account "
        "(or its trust policy), deliberately, instead.",
}


@dataclass(frozen=True, slots=True)
class ManagedElsewhere:
    """Who really holds the access (`by`: the rule, the directory, the IdP group, the permission set), with
    an optional `detail` (the vendor's own words: "Okta group type APP_GROUP") and `how_to` (the change to
    make instead, when the kind's standard advice does not fit)."""

    kind: ManagedKind
    by: str = ""
    detail: str = ""
    how_to: str = ""

    def as_attribute(self) -> dict[str, str]:
        return {k: str(v) for k, v in (("kind", self.kind), ("by", self.by), ("detail", self.detail),
                                       ("how_to", self.how_to)) if v}

    @classmethod
    def from_attribute(cls, value: Any) -> ManagedElsewhere | None:
        """The contract as stored (JSON), or None when the value is not one."""
        if isinstance(value, ManagedElsewhere):
            return value
        if not isinstance(value, Mapping):
            return None
        try:
            kind = ManagedKind(str(value.get("kind")))
        except ValueError:
            return None
        return cls(kind, str(value.get("by") or ""), str(value.get("detail") or ""), str(value.get("how_to") or ""))

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def sentence(self, principal: str, resource: str) -> str:
        """What a reviewer (before a revoke) and an admin (on the manual work list) read: why revoking here
        would be wrong or undone, and where to make the change instead (the kind's sentence in SENTENCES)."""
        text = _Words().format(SENTENCES[self.kind], p=principal or "the account", r=resource or "the resource",
                               by=self.by, group=f"group {self.by}" if self.by else "",
                               extra=f" ({self.detail})" if self.detail else "")
        return f"{text} {self.how_to}" if self.how_to else text


def emit(kind: ManagedKind, by: str = "", detail: str = "", how_to: str = "") -> dict[str, Any]:
    """For a connector: `attributes={**other, **emit(...)}` on a resource, entitlement or grant."""
    return {MANAGED_BY: ManagedElsewhere(kind, by, detail, how_to).as_attribute()}


def _names(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_names(v) for v in value)
    if isinstance(value, Mapping):
        return str(value.get("name") or value.get("id") or value)
    return str(value)


def _legacy(grant: Mapping[str, Any], entitlement: Mapping[str, Any],
            resource: Mapping[str, Any]) -> ManagedElsewhere | None:
    """The keys connectors emitted before the contract (Okta, the demo), read until the next sync rewrites
    the rows: `rules` (group and member entitlement), `rule_managed`, `mastered_by` / `type: APP_GROUP` /
    `type: BUILT_IN` (group), `scope: GROUP` (grant)."""
    rules = grant.get("rules") or entitlement.get("rules") or resource.get("rules")
    if rules or resource.get("rule_managed"):
        return ManagedElsewhere(ManagedKind.GROUP_RULE, _names(rules) if rules else "")
    if str(grant.get("scope", "")).upper() == "GROUP":
        return ManagedElsewhere(ManagedKind.GROUP_ASSIGNMENT, "", "assignment scope GROUP")
    gtype = resource.get("type")
    if gtype == "BUILT_IN":
        return ManagedElsewhere(ManagedKind.BUILT_IN, "Okta", "Okta group type BUILT_IN")
    if resource.get("mastered_by") or gtype == "APP_GROUP":
        return ManagedElsewhere(ManagedKind.IMPORTED_GROUP, _names(resource.get("mastered_by") or ""),
                                "Okta group type APP_GROUP" if gtype == "APP_GROUP" else "")
    return None


def managed_elsewhere(grant_attributes: Mapping[str, Any] | None, entitlement_attributes: Mapping[str, Any] | None,
                      resource_attributes: Mapping[str, Any] | None) -> ManagedElsewhere | None:
    """Who really holds this access, when something outside the source re-creates it; None otherwise.

    Precedence (the one place it is written): the contract on the most specific record wins (grant, then
    entitlement, then resource). Rows synced before the contract existed carry older keys instead; they are
    read only when no record carries the contract, and disappear as the next sync of the source rewrites
    the rows (a data migration would have had to repeat each connector's rules in SQL, a second home)."""
    if not (grant_attributes or entitlement_attributes or resource_attributes):
        return None  # what most rows hold (no attributes, or empty ones): nothing to read
    levels = [a if isinstance(a, Mapping) else {} for a in (grant_attributes, entitlement_attributes,
                                                            resource_attributes)]
    for attrs in levels:
        found = ManagedElsewhere.from_attribute(attrs.get(MANAGED_BY))
        if found is not None:
            return found
    return _legacy(*levels)


def refusal(found: ManagedElsewhere, principal: str, resource: str) -> RevokeRefused:
    """A connector's revoke guard for access managed elsewhere: the refusal names the target (the same
    sentence), so remediation routes it to the manual work list instead of failing it."""
    exc = RevokeRefused(found.sentence(principal, resource))
    exc.target = str(exc)  # type: ignore[attr-defined]  # read by remediation as getattr(exc, "target")
    return exc
