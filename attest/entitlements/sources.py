"""Sources: add, update, list, test, disable/enable, sync requests, runs; secrets encrypted at rest with MultiFernet.

Secrets are decrypted only to build a connector; they are never returned to a page, a log or an export.

The CLI (`attest sources ...`), the source pages and the REST API all call these functions, so each rule
lives here once. Public functions:

- `add_source` (refuses with SourceError; its `errors` maps each refused field to why: `new_source_errors`),
  `update_source`, `disable_source`, `enable_source`, `request_sync`: the changes, each audited;
- `test_connection`: the connector's own check (`validate()`), its words redacted, as a ConnectionTest;
- `list_sources`, `runs_page`, `run_phases`, `run_summary`, `secret_names`, `source_kinds`: what pages and exports read.

Why one module of some 530 lines: it is the one home of every rule about a Source row (its name, its
settings and secrets, its schedule, its runs as pages show them), and every part raises the one SourceError
and reads through `get_source`. The secret helpers (encrypt, decrypt, rotate, forget: 70 lines) and the
listings (120 lines) are the pieces that could stand alone, but the changes above them use both, and the
source pages, the REST API and the CLI import all of it from here: a split would only add re-exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.config import Settings
from attest.connectors import registry
from attest.connectors.base import BaseConnector, ConnectorError
from attest.db import utcnow
from attest.entitlements import keys
from attest.entitlements.models import Account, Entitlement, Grant, Identity, Resource, Source, SyncRun
from attest.redact import redact
from attest.schedules import cron_trigger
from attest.trail.chain import record as audit

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SourceError(ValueError):
    """A user-caused problem with a source; the message says what.

    `field` names the setting, secret or form field the (first) problem is about when it is about one
    (`name`, `kind`, `schedule`, `authoritative`, a setting's or secret's name), else None; `errors` maps
    every field found wrong to its message ("" for a problem of the whole form), first problem first."""

    def __init__(self, message: str, field: str | None = None, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.errors: dict[str, str] = dict(errors) if errors else ({field or "": message})


def fernet(settings: Settings) -> MultiFernet:
    return keys.fernet(settings)


def encrypt_secrets(settings: Settings, secrets: Mapping[str, str]) -> str | None:
    if not secrets:
        return None
    return fernet(settings).encrypt(json.dumps(dict(secrets)).encode()).decode()


def decrypt_secrets(settings: Settings, blob: str | None) -> dict[str, str]:
    if not blob:
        return {}
    try:
        return json.loads(fernet(settings).decrypt(blob.encode()))
    except (InvalidToken, ValueError, TypeError):
        raise SourceError(
            "the source's secrets cannot be decrypted with ATTEST_ENCRYPTION_KEYS "
            f"({keys.tried(settings)}; was the key that encrypted them removed?)"
        ) from None


def secret_names(settings: Settings, blob: str | None) -> tuple[list[str], str | None]:
    """The names of a source's secrets (never the values), or no names and why they cannot be read."""
    try:
        return sorted(decrypt_secrets(settings, blob)), None
    except SourceError as exc:
        return [], str(exc)


def rotate_secrets(session: Session, settings: Settings) -> int:
    """Re-encrypt every source's secrets, and the key check value, with the first (newest) key.

    A secret no configured key decrypts stops the rotation (SourceError) with nothing changed."""
    f = fernet(settings)
    keys.verify(session, settings, write=False)
    n = 0
    for source in session.scalars(select(Source).where(Source.secrets_encrypted.is_not(None))):
        try:
            source.secrets_encrypted = f.rotate(source.secrets_encrypted.encode()).decode()
        except InvalidToken:
            raise SourceError(
                f"the secrets of source {source.name!r} cannot be decrypted with ATTEST_ENCRYPTION_KEYS "
                f"({keys.tried(settings)}); nothing was re-encrypted"
            ) from None
        n += 1
    if n:
        keys.write_check(session, settings)
    return n


def forget_secrets(session: Session, actor: str = "system") -> list[str]:
    """The encryption key is lost for good: drop every stored secret and the key check value, so Attest starts
    with a new key. The sources keep their settings and history; their credentials must be entered again
    (disable each and add it again). Audited; returns the names of the sources whose secrets were dropped."""
    names = []
    for source in session.scalars(select(Source).where(Source.secrets_encrypted.is_not(None)).order_by(Source.name)):
        source.secrets_encrypted = None
        names.append(source.name)
        audit(session, actor=actor, action="source.secrets_forgotten", object_type="source",
              object_id=str(source.id), after={"reason": "encryption key lost"})
    keys.forget_check(session)
    return names


def get_source(session: Session, name: str) -> Source:
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        raise SourceError(f"no source named {name!r}")
    return source


_FIELD_RE = re.compile(r"^(?:unknown )?(?:setting|secret) '?([A-Za-z0-9_]+)'?")


def _field_of(kind: str, message: str) -> str | None:
    """The setting or secret a connector's validation message is about ("setting 'orgs' is required...",
    "setting concurrency must be a whole number...", "api_url must use https..."), or None."""
    m = _FIELD_RE.match(message)
    if m:
        return m.group(1)
    try:
        cls = registry.connector_class(kind)
    except ValueError:
        return None
    first = message.split(" ", 1)[0]
    return first if first in {s.name for s in (*cls.SETTINGS, *cls.SECRETS)} else None


def source_kinds() -> list[str]:
    """The kinds a source can be added as (every connector the registry knows)."""
    return sorted(registry.KINDS)


def _authoritative_count(session: Session) -> int:
    """How many enabled sources are authoritative for identities (at most one may be)."""
    return session.scalar(
        select(func.count()).select_from(Source).where(Source.authoritative.is_(True), Source.enabled.is_(True))
    ) or 0


@dataclass(frozen=True)
class NewSource:
    """A source to add as `add_source` was given it: its kind and name, the connector's settings (`values`,
    not yet coerced) and secrets, the cron schedule, and whether it is authoritative for identities (None:
    the connector's default)."""

    kind: str
    name: str
    values: Mapping[str, Any]
    secrets: Mapping[str, str]
    schedule: str | None = None
    authoritative: bool | None = None


def new_source_errors(session: Session, new: NewSource) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """Everything wrong with a new source, by field ("" for the whole form), in the order `add_source`
    reports them, plus the connector's coerced settings and secrets when they are valid.

    The connector's schema is asked again without each setting or secret it refused, so one submission
    names every malformed field (a missing required one stops the search: its message comes last)."""
    kind, name, schedule = new.kind, new.name, new.schedule
    errors: dict[str, str] = {}
    if not NAME_RE.match(name or ""):
        errors["name"] = "a source name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif session.scalar(select(Source.id).where(Source.name == name)) is not None:
        errors["name"] = f"a source named {name!r} already exists"
    clean: dict[str, Any] = {}
    clean_secrets: dict[str, str] = {}
    if kind not in registry.KINDS:
        errors["kind"] = f"unknown source kind {kind!r}; known kinds: {', '.join(sorted(registry.KINDS))}"
    else:
        vals, secs = dict(new.values), dict(new.secrets)
        for _ in range(len(vals) + len(secs) + 1):
            try:
                clean, clean_secrets = registry.validate_settings(kind, vals, secs)
                break
            except ValueError as exc:
                message = str(exc)
                field = _field_of(kind, message)
                if field in errors or (field is None and "" in errors):
                    break
                errors[field or ""] = message
                if field in vals:
                    vals.pop(field)
                elif field in secs:
                    secs.pop(field)
                else:
                    break
        if errors.keys() - {"name"}:
            clean, clean_secrets = {}, {}
    if schedule:
        try:
            validate_cron(schedule)
        except SourceError as exc:
            errors["schedule"] = str(exc)
    if new.authoritative and _authoritative_count(session):
        errors["authoritative"] = "another enabled source is already authoritative for identities"
    return errors, clean, clean_secrets


def add_source(
    session: Session,
    settings: Settings,
    kind: str,
    name: str,
    values: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    schedule: str | None = None,
    authoritative: bool | None = None,
    actor: str = "system",
) -> Source:
    """Add a source: the name, the connector's settings schema and secrets, the schedule and the
    authoritative flag checked (`new_source_errors`) before anything is written; SourceError names the
    first problem (and `errors` all of them). Secrets are stored encrypted; audited as `source.add` with
    the settings and only the names of the secrets."""
    new = NewSource(kind, name, values, secrets, schedule, authoritative)
    errors, clean, clean_secrets = new_source_errors(session, new)
    if errors:
        field, message = next(iter(errors.items()))
        raise SourceError(message, field or None, errors)
    cls = registry.connector_class(kind)
    if authoritative is None:
        # the IdP is authoritative for people unless another source already is
        authoritative = bool(getattr(cls, "AUTHORITATIVE_DEFAULT", False)) and not _authoritative_count(session)
    if clean_secrets:
        keys.ensure_check(session, settings)
    source = Source(
        kind=kind,
        name=name,
        settings=clean,
        secrets_encrypted=encrypt_secrets(settings, clean_secrets),
        schedule=schedule,
        authoritative=bool(authoritative),
        enabled=True,
    )
    session.add(source)
    session.flush()
    audit(
        session,
        actor=actor,
        action="source.add",
        object_type="source",
        object_id=str(source.id),
        after={"kind": kind, "name": name, "settings": clean, "secrets": sorted(clean_secrets),
               "schedule": schedule, "authoritative": source.authoritative},
    )
    return source


def validate_cron(expr: str) -> None:
    """Standard crontab in UTC (0 and 7 are Sunday), as the scheduler reads it."""
    try:
        cron_trigger(expr)
    except ValueError as exc:
        raise SourceError(f"schedule {expr!r} is not a valid cron expression: {exc}") from None


def disable_source(session: Session, name: str, actor: str = "system") -> Source:
    """Stop syncing a source (scheduled or requested); its data and history are kept. Audited; disabling a
    disabled source changes nothing."""
    source = get_source(session, name)
    if source.enabled:
        source.enabled = False
        source.disabled_at = utcnow()
        audit(session, actor=actor, action="source.disable", object_type="source", object_id=str(source.id),
              before={"enabled": True}, after={"enabled": False})
    return source


def enable_source(session: Session, name: str, actor: str = "system") -> Source:
    """Sync a disabled source again (its schedule and requests apply again). Refused while another enabled
    source is authoritative for identities and this one is too. Audited; enabling an enabled source
    changes nothing."""
    source = get_source(session, name)
    if source.enabled:
        return source
    if source.authoritative and _authoritative_count(session):
        raise SourceError(f"source {name!r} is authoritative for identities and another enabled source already is; "
                          "disable that one first")
    disabled_at = source.disabled_at
    source.enabled = True
    source.disabled_at = None
    audit(session, actor=actor, action="source.enable", object_type="source", object_id=str(source.id),
          before={"enabled": False, "disabled_at": disabled_at.isoformat() if disabled_at else None},
          after={"enabled": True})
    return source


UNCHANGED: Any = object()  # `update_source(schedule=UNCHANGED)`: leave the schedule as it is


def update_source(
    session: Session,
    settings: Settings,
    name: str,
    values: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    *,
    unset: Iterable[str] = (),
    schedule: str | None = UNCHANGED,
    actor: str = "system",
) -> tuple[Source, bool]:
    """Change a source's settings (`values` merged over the current ones, `unset` names dropped back to their
    default), replace some of its secrets, and/or set (or with None, clear) its schedule.

    Validated as `add_source` is (the connector's settings schema; an unknown or malformed setting or secret
    raises SourceError naming it) before anything is written, so an error changes nothing. Audited with the
    settings and schedule before and after; secrets appear only as the names that were replaced.
    Returns the source and whether anything changed (an identical update writes and audits nothing)."""
    source = get_source(session, name)
    values, secrets, unset = dict(values or {}), dict(secrets or {}), set(unset)
    before_settings = dict(source.settings or {})
    known = {s.name for s in registry.connector_class(source.kind).SETTINGS}
    for key in sorted(unset | set(values)):
        if key not in known:
            raise SourceError(f"unknown setting {key!r} for a {source.kind} source; "
                              f"known settings: {', '.join(sorted(known)) or 'none'}")
    merged = {k: v for k, v in before_settings.items() if k not in unset and k in known}
    merged.update(values)
    try:
        current_secrets = decrypt_secrets(settings, source.secrets_encrypted)
    except SourceError:
        if not secrets:
            raise
        current_secrets = {}  # unreadable (key lost): the replacement must then be complete on its own
    try:
        clean, clean_secrets = registry.validate_settings(source.kind, merged, {**current_secrets, **secrets})
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    new_schedule = source.schedule if schedule is UNCHANGED else ((schedule or "").strip() or None)
    if new_schedule and new_schedule != source.schedule:
        validate_cron(new_schedule)
    replaced = sorted(k for k in secrets if current_secrets.get(k) != clean_secrets[k])
    if clean == before_settings and not replaced and new_schedule == source.schedule:
        return source, False
    before = {"settings": before_settings, "schedule": source.schedule}
    source.settings = clean
    source.schedule = new_schedule
    if replaced:
        keys.ensure_check(session, settings)
        source.secrets_encrypted = encrypt_secrets(settings, clean_secrets)
    session.flush()
    audit(session, actor=actor, action="source.update", object_type="source", object_id=str(source.id),
          before=before, after={"settings": clean, "schedule": new_schedule,
                                "secrets_replaced": replaced})  # names only, never values
    return source, True


def request_sync(session: Session, name: str, actor: str = "system", now: datetime | None = None) -> tuple[Source, bool]:
    """Queue a sync of an enabled source for the scheduler (`sources:sync-requests`); web workers never sync.
    A request already queued is kept as it is (returns False). Audited."""
    source = get_source(session, name)
    if not source.enabled:
        raise SourceError(f"source {name!r} is disabled; it cannot be synced")
    if source.sync_requested_at is not None:
        return source, False
    source.sync_requested_at = now or utcnow()
    source.sync_requested_by = actor[:200]
    session.flush()
    audit(session, actor=actor, action="source.sync_requested", object_type="source", object_id=str(source.id),
          after={"requested_at": source.sync_requested_at.isoformat()})
    return source, True


def build_connector(source: Source, settings: Settings) -> BaseConnector:
    return registry.build(source.kind, source.settings or {}, decrypt_secrets(settings, source.secrets_encrypted))


@dataclass(frozen=True)
class ConnectionTest:
    """The outcome of `test_connection`: ok, the connector's words (secrets redacted), its API requests."""

    ok: bool
    message: str
    calls: int = 0


def test_connection(session: Session, settings: Settings, name: str) -> ConnectionTest:
    """Check that Attest can reach and read a source with its stored credentials: the connector's own
    `validate()` (one cheap read per permission the sync needs; a missing scope, role or permission is named
    in the connector's message). Changes nothing. SourceError when there is no such source or its secrets
    cannot be decrypted; a refused or unreachable upstream is a ConnectionTest with ok=False."""
    source = get_source(session, name)
    secrets = decrypt_secrets(settings, source.secrets_encrypted)  # SourceError when the key cannot
    try:
        connector = registry.build(source.kind, source.settings or {}, secrets)
    except ValueError as exc:  # stored settings the connector now refuses
        return ConnectionTest(False, redact(str(exc), secrets))
    try:
        connector.validate()
    except (ConnectorError, ValueError) as exc:  # the upstream's words, without a secret it may echo
        return ConnectionTest(False, redact(str(exc), connector.secrets), connector.calls)
    except Exception as exc:  # network errors and the like: say what, not a traceback
        return ConnectionTest(False, f"{type(exc).__name__}: {redact(str(exc), connector.secrets)}",
                              connector.calls)
    finally:
        connector.close()
    return ConnectionTest(True, f"ok ({connector.calls} API calls)", connector.calls)


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into one


PHASE_ORDER = ("read", "stage", "apply", "verify")  # the sync's phases in the order they run


def run_phases(run: Any) -> list[tuple[str, float]]:
    """A run's per-phase seconds (`stats["phases"]`) in the order the phases run: the known phases first in
    PHASE_ORDER (PostgreSQL's JSONB does not keep a mapping's key order), any other after them as stored.
    [] for a run without phases (older runs, a run still going)."""
    phases = (getattr(run, "stats", None) or {}).get("phases")
    if isinstance(phases, Mapping):
        pairs = list(phases.items())
    elif isinstance(phases, list):
        pairs = [tuple(p) for p in phases if isinstance(p, list | tuple) and len(p) == 2]
    else:
        return []
    rank = {name: i for i, name in enumerate(PHASE_ORDER)}
    ordered = sorted(enumerate(pairs), key=lambda ip: (rank.get(ip[1][0], len(PHASE_ORDER)), ip[0]))
    return [(str(name), seconds) for _, (name, seconds) in ordered]


@dataclass
class RunsPage:
    """One page of a source's runs, newest first; `older` is the `before=` value of the next page."""

    runs: list[Any]
    older: int | None


def runs_page(session: Session, source_id: int, before: int | None = None, limit: int = 20) -> RunsPage:
    """A source's sync runs newest first, `limit` per page, keyset-paged by run id (`before`: runs older
    than that id)."""
    stmt = select(SyncRun).where(SyncRun.source_id == source_id)
    if before is not None:
        stmt = stmt.where(SyncRun.id < before)
    rows = list(session.scalars(stmt.order_by(SyncRun.id.desc()).limit(limit + 1)))
    return RunsPage(rows[:limit], rows[limit - 1].id if len(rows) > limit else None)


@dataclass
class SourceSummary:
    id: int
    name: str
    kind: str
    enabled: bool
    authoritative: bool
    schedule: str | None
    settings: dict[str, Any]
    secret_names: list[str]
    counts: dict[str, int]
    last_run: dict[str, Any] | None
    secrets_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def active_counts(session: Session, source_id: int | None = None) -> dict[int, dict[str, int]]:
    """Active rows per source and kind, one grouped query per table."""
    out: dict[int, dict[str, int]] = {}
    for label, model in (("identities", Identity), ("accounts", Account), ("resources", Resource),
                         ("entitlements", Entitlement), ("grants", Grant)):
        stmt = select(model.source_id, func.count()).where(model.ended_at.is_(None)).group_by(model.source_id)
        if source_id is not None:
            stmt = stmt.where(model.source_id == source_id)
        for sid, n in session.execute(stmt):
            if sid is not None:
                out.setdefault(sid, {})[label] = n
    orphan_stmt = (
        select(Account.source_id, func.count())
        .where(Account.ended_at.is_(None), Account.identity_id.is_(None))
        .group_by(Account.source_id)
    )
    for sid, n in session.execute(orphan_stmt):
        out.setdefault(sid, {})["orphaned_accounts"] = n
    return out


def list_sources(session: Session, settings: Settings) -> list[SourceSummary]:

    counts = active_counts(session)
    summaries = []
    for source in session.scalars(select(Source).order_by(Source.name)):
        last = session.scalar(
            select(SyncRun).where(SyncRun.source_id == source.id).order_by(SyncRun.id.desc()).limit(1)
        )
        names, secrets_error = secret_names(settings, source.secrets_encrypted)
        summaries.append(
            SourceSummary(
                id=source.id,
                name=source.name,
                kind=source.kind,
                enabled=source.enabled,
                authoritative=source.authoritative,
                schedule=source.schedule,
                settings=dict(source.settings or {}),
                secret_names=names,
                counts=counts.get(source.id, {}),
                last_run=run_summary(last) if last else None,
                secrets_error=secrets_error,
            )
        )
    return summaries


def run_summary(run) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "seconds": run.seconds,
        "api_calls": run.api_calls,
        "stats": run.stats or {},
        "failed_parts": run.failed_parts or [],
        "notes": run.notes or [],
        "error": run.error,
    }
