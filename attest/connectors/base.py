"""The connector protocol: small, typed, shaped like ConductorOne's baton.

A connector is built from a source's settings and decrypted secrets. `validate()` checks that it can talk
to the upstream (and raises ConnectorError with a clear message when not). `sync()` yields immutable
records (typed named tuples: a million of them are built per large sync, and a named tuple costs a third
of a frozen dataclass) page by page; the sync engine stages them and applies the run only once the generator finished. A
connector that could not read one *part* of a source (an AWS account, a GitHub org) yields
`PartFailed(part, reason)` and carries on: nothing in that part is ended by the run.

Provisioning is a separate, optional interface (`Revoker`): `revoke(grant, dry_run)` returns a
RevokeResult describing the calls it made (or would make), and raises RevokeRefused when a guard says no
(the last org owner, a rule-managed group membership...). Revoking what is already gone succeeds.

`calls` counts every API request the connector made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable


class ConnectorError(Exception):
    """The upstream refused or failed in a way the run cannot recover from (bad token, missing scope)."""


class RevokeRefused(Exception):
    """A guard refused a revoke; the message says why and where the access really comes from."""


NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})  # the shared, read-only default


class IdentityRecord(NamedTuple):
    """A person (or non-human owner) from the authoritative source."""

    external_id: str
    display_name: str = ""
    email: str | None = None
    login: str | None = None
    employee_id: str | None = None
    department: str | None = None
    title: str | None = None
    manager_ref: str | None = None  # the manager's external id, login or e-mail
    status: str = "active"  # active | suspended | terminated
    kind: str = "human"  # human | service
    attributes: Mapping[str, Any] = NO_ATTRIBUTES


class AccountRecord(NamedTuple):
    """An account in the source: a login a person (or a service) signs in with, linked to its owner by
    `identity_ref`, its e-mail or its login."""

    external_id: str
    login: str | None = None
    email: str | None = None
    display_name: str | None = None
    status: str = "active"
    kind: str = "human"
    last_login_at: datetime | None = None
    created_at: datetime | None = None
    mfa_enabled: bool | None = None
    identity_ref: str | None = None  # the external id of this account's IdentityRecord in the same source
    saml_nameid: str | None = None
    tag_email: str | None = None  # an e-mail from a tag (AWS IAM users)
    attributes: Mapping[str, Any] = NO_ATTRIBUTES
    part: str | None = None


class ResourceRecord(NamedTuple):
    """Something access is granted to: an app, a group, an AWS account or role, a repository. A group
    (`is_group`) passes what it holds on to the members of its membership entitlement."""

    external_id: str
    type: str
    name: str
    description: str | None = None
    is_group: bool = False  # principals holding its membership entitlement hold what it holds
    parent_ref: str | None = None
    owner_refs: tuple[str, ...] = ()  # account external ids of owners
    attributes: Mapping[str, Any] = NO_ATTRIBUTES
    part: str | None = None


class EntitlementRecord(NamedTuple):
    """One kind of access to a resource (a role, a permission set, a team's repository permission);
    `privileged` marks the ones a review must look at first."""

    external_id: str
    resource_ref: str
    name: str
    display_name: str | None = None
    description: str | None = None
    purpose: str = "assignment"  # assignment | permission | ownership
    privileged: bool = False
    is_membership: bool = False
    attributes: Mapping[str, Any] = NO_ATTRIBUTES
    part: str | None = None


class GrantRecord(NamedTuple):
    """An entitlement held by a principal: an account, or a group (`principal_type="resource"`)."""

    entitlement_ref: str
    principal_ref: str
    principal_type: str = "account"  # account | resource (a group)
    attributes: Mapping[str, Any] = NO_ATTRIBUTES
    part: str | None = None

    @property
    def key(self) -> str:
        return grant_key(self.entitlement_ref, self.principal_type, self.principal_ref)


class PartFailed(NamedTuple):
    """One part of the source could not be read completely; its existing rows are left untouched."""

    part: str
    reason: str


class Note(NamedTuple):
    """Something the run should report without failing (an optional feature the plan lacks...)."""

    message: str


Record = IdentityRecord | AccountRecord | ResourceRecord | EntitlementRecord | GrantRecord | PartFailed | Note


def grant_key(entitlement_ref: str, principal_type: str, principal_ref: str) -> str:
    return f"{entitlement_ref}|{'r' if principal_type == 'resource' else 'a'}|{principal_ref}"


@dataclass(frozen=True, slots=True)
class Setting:
    """One connector setting or secret, declared by the connector class and validated by the registry."""

    name: str
    help: str
    required: bool = False
    default: Any = None
    type: type = str  # str | int | bool | float | list (comma-separated)
    choices: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None  # (lowest, highest) a number may be, both allowed

    def check_bounds(self, value: Any, what: str = "setting") -> None:
        """Raise ValueError when a number is out of `bounds`: the one check of a range, run by the registry on
        what an admin enters and by BaseConnector on what a connector is built with."""
        if self.bounds is not None and value is not None and not self.bounds[0] <= value <= self.bounds[1]:
            raise ValueError(f"{what} {self.name!r} must be between {self.bounds[0]} and {self.bounds[1]}, "
                             f"not {value!r} ({self.help})")


@dataclass(frozen=True, slots=True)
class GrantRef:
    """What a revoke needs to know about one grant (built by the engine from the database)."""

    source_kind: str
    key: str
    entitlement_ref: str
    entitlement_name: str
    resource_ref: str
    resource_type: str
    principal_type: str
    principal_ref: str
    principal_login: str | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    entitlement_attributes: Mapping[str, Any] = field(default_factory=dict)
    grant_attributes: Mapping[str, Any] = field(default_factory=dict)
    part: str | None = None


@dataclass(frozen=True, slots=True)
class RevokeResult:
    calls: tuple[str, ...]  # "DELETE /api/v1/groups/g1/users/u1" or "iam:RemoveUserFromGroup ..."
    dry_run: bool
    already_gone: bool = False
    detail: str = ""
    # done: the upstream shows the change made (a follow-up read where the API allows it); unconfirmed: the
    # call was accepted but the upstream still shows the access; invited: a re-grant that is an invitation
    # the person still has to accept
    outcome: str = "done"


@runtime_checkable
class Connector(Protocol):
    kind: ClassVar[str]
    SETTINGS: ClassVar[tuple[Setting, ...]]
    SECRETS: ClassVar[tuple[Setting, ...]]
    calls: int

    def validate(self) -> None: ...

    def sync(self) -> Iterator[Record]: ...

    def close(self) -> None: ...


@runtime_checkable
class Revoker(Protocol):
    def revoke(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult: ...

    def grant(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        """Re-grant exactly what a revoke removed (undo)."""
        ...


class ChangeRevoker:
    """A Revoker whose revoke and undo (`grant`) are one change in either direction: the connector's
    `_change(grant, dry_run, undo)`."""

    def revoke(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=False)

    def grant(self, grant: GrantRef, dry_run: bool = True) -> RevokeResult:
        return self._change(grant, dry_run, undo=True)

    def _change(self, grant: GrantRef, dry_run: bool, undo: bool) -> RevokeResult:  # pragma: no cover - overridden
        raise NotImplementedError


class BaseConnector:
    """Convenience base: keeps settings/secrets and the call counter."""

    kind: ClassVar[str] = ""
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()
    SECRETS: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> None:
        self.settings = dict(settings)
        self.secrets = dict(secrets or {})
        self.calls = 0
        for spec in self.SETTINGS:
            if spec.bounds is not None and self.settings.get(spec.name) is not None:
                spec.check_bounds(int(self.settings[spec.name]))

    def validate(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def sync(self) -> Iterator[Record]:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
