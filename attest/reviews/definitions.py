"""Campaign definitions: parse (YAML or a dict), validate every field, fill defaults, store (audited).

A mistake names the field as a dotted path and, for YAML, its line:
    scope.resource_typs (line 4): unknown key; did you mean resource_types?
Named reviewers and the fallback reviewer are e-mails of identities that must exist, and scope sources
must exist, when a definition is created or updated (checked against the database then).

The normalized spec (stored in CampaignDefinition.spec, frozen on each Campaign at launch) always has
every key of DEFAULTS, in this shape.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

import yaml
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from attest.audit.log import record as audit
from attest.db import utcnow
from attest.entitlements.models import Identity, Source
from attest.reviews.models import CampaignDefinition
from attest.reviews.routing import SELF_REVIEW_POLICIES, STAGE_KINDS

NO_RESPONSE = ("keep", "revoke", "flag")
COMMENT_RULES = ("on_revoke", "always", "never")
REMEDIATION = ("automatic", "manual")
IDENTITY_STATUSES = ("active", "suspended", "terminated")
IDENTITY_KINDS = ("human", "service")

DEFAULTS: dict[str, Any] = {
    "name": None,
    "description": None,
    "scope": {
        "sources": [],
        "resource_types": [],
        "resource_names": [],
        "entitlements": [],
        "privileged_only": False,
        "identity": {"department": [], "status": [], "kind": []},
        "include_orphaned": True,
        "include_service_accounts": False,
        "include_inherited": True,
        "delta": False,
    },
    "stages": [{"reviewer": "manager", "identity": None}],
    "fallback_reviewer": None,
    "self_review": "reassign",
    "timing": {
        "duration_days": 14,
        "reminders_days_before_due": [7, 2],
        "escalate_after_days_overdue": 2,
        "no_response": "keep",
    },
    "rules": {"comment_required": "on_revoke", "remediation": "manual", "bulk_approve_flagged": False},
    "risk": {"dormant_days": 90, "stale_key_days": 90},
    "controls": [],
    "schedule": None,
}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class DefinitionError(ValueError):
    """A definition is invalid; `field` is the dotted path of the offending field, `line` its YAML line."""

    def __init__(self, message: str, field: str | None = None, line: int | None = None) -> None:
        self.field = field
        self.line = line
        self.reason = message
        where = field or "definition"
        if line is not None:
            where += f" (line {line})"
        super().__init__(f"{where}: {message}")


# --- YAML with line numbers -------------------------------------------------------------------------


MAX_YAML_CHARS = 64 * 1024  # a real definition is a few hundred bytes
MAX_YAML_DEPTH = 12  # definitions nest four levels (scope.identity.department[0]); room to spare
MAX_YAML_NODES = 5000  # scalars, lists and mappings in one document


class _DefinitionLoader(yaml.SafeLoader):
    """SafeLoader that refuses what no definition needs and an attacker would use to make a small text
    cost a worker minutes (or its stack): aliases (`*a`, the "billion laughs" bomb), nesting deeper than
    MAX_YAML_DEPTH and more than MAX_YAML_NODES nodes. Each refusal is a DefinitionError with its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise DefinitionError("YAML aliases (*name) are not allowed in a definition: write the value out",
                                  None, event.start_mark.line + 1)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise DefinitionError(f"too many values (a definition has at most {MAX_YAML_NODES:,})", None,
                                  self.peek_event().start_mark.line + 1)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise DefinitionError(f"nested too deeply (at most {MAX_YAML_DEPTH} levels)", None,
                                      self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_lines(text: str) -> tuple[Any, dict[str, int]]:
    """Load YAML safely and record the line of every mapping key and list item by dotted path.

    One composition (with `_DefinitionLoader`'s limits) gives both the line numbers and the data."""
    if len(text) > MAX_YAML_CHARS:
        raise DefinitionError(f"too long ({len(text):,} characters; a definition has at most {MAX_YAML_CHARS:,})")
    loader = _DefinitionLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except DefinitionError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"not valid YAML: {problem}", None, line) from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML reads as a type it cannot build (2026-13-45)
        raise DefinitionError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}

    def walk(n: yaml.Node, path: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in seen:
                    raise DefinitionError("duplicate key", child, key_node.start_mark.line + 1)
                seen.add(key)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                child = f"{path}[{i}]"
                lines[child] = item.start_mark.line + 1
                walk(item, child)

    if node is not None:
        walk(node, "")
    return data, lines


# --- validation ---------------------------------------------------------------------------------------


class _Validator:
    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines

    def fail(self, path: str, message: str) -> DefinitionError:
        line = self.lines.get(path)
        if line is None and "." in path:  # a missing key: point at its parent
            parent = path.rsplit(".", 1)[0]
            line = self.lines.get(parent)
        return DefinitionError(message, path, line)

    def mapping(self, value: Any, path: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping of {', '.join(allowed)}")
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                child = f"{path}.{key}" if path else str(key)
                hint = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                message = "unknown key" + (f"; did you mean {hint[0]}?" if hint else f"; expected one of {', '.join(allowed)}")
                raise self.fail(child, message)
        return dict(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {value!r}")
        return value

    def integer(self, value: Any, path: str, low: int, high: int, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be a whole number{' or null' if nullable else ''}, not {value!r}")
        if not low <= value <= high:
            raise self.fail(path, f"must be between {low} and {high}, not {value}")
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6) if isinstance(value, str) else []
            message = f"must be one of {', '.join(choices)}, not {value!r}"
            if hint:
                message += f"; did you mean {hint[0]}?"
            raise self.fail(path, message)
        return value

    def text(self, value: Any, path: str, max_len: int, nullable: bool = True) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if nullable:
                return None
            raise self.fail(path, "is required")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(path, f"must be text, not {value!r}")
        value = str(value).strip()
        if len(value) > max_len:
            raise self.fail(path, f"is longer than {max_len} characters")
        return value

    def strings(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(path, "must be a list")
        out: list[str] = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
                raise self.fail(item_path, f"must be non-empty text, not {item!r}")
            item = str(item).strip()
            if choices is not None:
                self.choice(item, item_path, choices)
            if item not in out:
                out.append(item)
        return out

    def email(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _EMAIL.match(value.strip()):
            raise self.fail(path, f"must be the e-mail address of an identity, not {value!r}")
        return value.strip().lower()


def _validate(data: Any, lines: Mapping[str, int]) -> dict[str, Any]:
    v = _Validator(lines)
    if not isinstance(data, Mapping):
        raise DefinitionError("a definition must be a mapping with at least `name`", None, 1 if lines else None)
    top = v.mapping(data, "", DEFAULTS)
    spec = copy.deepcopy(DEFAULTS)

    spec["name"] = v.text(top.get("name"), "name", 200, nullable=False)
    spec["description"] = v.text(top.get("description"), "description", 4000)

    scope_in = v.mapping(top.get("scope"), "scope", DEFAULTS["scope"])
    scope = spec["scope"]
    for key in ("sources", "resource_types", "entitlements"):
        if key in scope_in:
            scope[key] = v.strings(scope_in[key], f"scope.{key}")
    if "resource_names" in scope_in:
        names = v.strings(scope_in["resource_names"], "scope.resource_names")
        for i, pattern in enumerate(names):
            if "[" in pattern or "]" in pattern:
                raise v.fail(f"scope.resource_names[{i}]", "use * and ? in patterns; [ ] ranges are not supported")
        scope["resource_names"] = names
    for key in ("privileged_only", "include_orphaned", "include_service_accounts", "include_inherited", "delta"):
        if key in scope_in:
            scope[key] = v.boolean(scope_in[key], f"scope.{key}")
    ident_in = v.mapping(scope_in.get("identity"), "scope.identity", DEFAULTS["scope"]["identity"])
    scope["identity"] = {
        "department": v.strings(ident_in.get("department"), "scope.identity.department"),
        "status": v.strings(ident_in.get("status"), "scope.identity.status", IDENTITY_STATUSES),
        "kind": v.strings(ident_in.get("kind"), "scope.identity.kind", IDENTITY_KINDS),
    }

    if "stages" in top:
        raw = top["stages"]
        if not isinstance(raw, list) or not raw:
            raise v.fail("stages", "must be a list of one or more stages, e.g. [{reviewer: manager}]")
        if len(raw) > 5:
            raise v.fail("stages", "at most 5 stages")
        stages = []
        for i, item in enumerate(raw):
            path = f"stages[{i}]"
            if isinstance(item, str):
                item = {"reviewer": item}
            st = v.mapping(item, path, {"reviewer": None, "identity": None})
            kind = v.choice(st.get("reviewer"), f"{path}.reviewer", STAGE_KINDS)
            who = v.email(st.get("identity"), f"{path}.identity")
            if kind == "identity" and who is None:
                raise v.fail(f"{path}.identity", "reviewer: identity needs the e-mail of the reviewer in `identity`")
            if kind != "identity" and who is not None:
                raise v.fail(f"{path}.identity", f"only used with reviewer: identity (this stage is {kind})")
            stages.append({"reviewer": kind, "identity": who})
        spec["stages"] = stages

    spec["fallback_reviewer"] = v.email(top.get("fallback_reviewer"), "fallback_reviewer")
    if "self_review" in top:
        spec["self_review"] = v.choice(top["self_review"], "self_review", SELF_REVIEW_POLICIES)

    timing_in = v.mapping(top.get("timing"), "timing", DEFAULTS["timing"])
    timing = spec["timing"]
    if "duration_days" in timing_in:
        timing["duration_days"] = v.integer(timing_in["duration_days"], "timing.duration_days", 1, 365)
    if "reminders_days_before_due" in timing_in:
        raw = timing_in["reminders_days_before_due"]
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise v.fail("timing.reminders_days_before_due", "must be a list of days, e.g. [7, 2]")
        days = [v.integer(d, f"timing.reminders_days_before_due[{i}]", 0, 365) for i, d in enumerate(raw)]
        timing["reminders_days_before_due"] = sorted(set(days), reverse=True)
    if "escalate_after_days_overdue" in timing_in:
        timing["escalate_after_days_overdue"] = v.integer(
            timing_in["escalate_after_days_overdue"], "timing.escalate_after_days_overdue", 0, 365, nullable=True)
    if "no_response" in timing_in:
        timing["no_response"] = v.choice(timing_in["no_response"], "timing.no_response", NO_RESPONSE)
    for i, d in enumerate(timing["reminders_days_before_due"]):
        if d >= timing["duration_days"]:
            raise v.fail(f"timing.reminders_days_before_due[{i}]",
                         f"a reminder {d} days before due is not inside a {timing['duration_days']}-day campaign")

    rules_in = v.mapping(top.get("rules"), "rules", DEFAULTS["rules"])
    if "comment_required" in rules_in:
        spec["rules"]["comment_required"] = v.choice(rules_in["comment_required"], "rules.comment_required", COMMENT_RULES)
    if "remediation" in rules_in:
        spec["rules"]["remediation"] = v.choice(rules_in["remediation"], "rules.remediation", REMEDIATION)
    if "bulk_approve_flagged" in rules_in:
        spec["rules"]["bulk_approve_flagged"] = v.boolean(rules_in["bulk_approve_flagged"], "rules.bulk_approve_flagged")

    risk_in = v.mapping(top.get("risk"), "risk", DEFAULTS["risk"])
    for key in ("dormant_days", "stale_key_days"):
        if key in risk_in:
            spec["risk"][key] = v.integer(risk_in[key], f"risk.{key}", 1, 3650)

    spec["controls"] = v.strings(top.get("controls"), "controls")
    schedule = v.text(top.get("schedule"), "schedule", 100)
    if schedule is not None:
        try:
            from attest.jobs import cron_trigger  # standard crontab, as the scheduler reads it

            cron_trigger(schedule)
        except ValueError as exc:
            raise v.fail("schedule", f"not a valid cron expression ({exc}); e.g. \"0 9 1 1,4,7,10 *\"") from None
    spec["schedule"] = schedule
    return spec


def parse_definition(text_or_dict: str | Mapping[str, Any]) -> dict[str, Any]:
    """Validate a definition (YAML text or a mapping) and return the normalized spec with every default."""
    spec, _ = _parse(text_or_dict)
    return spec


def _parse(text_or_dict: str | Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    if isinstance(text_or_dict, str):
        data, lines = _yaml_lines(text_or_dict)
    elif isinstance(text_or_dict, Mapping):
        data, lines = text_or_dict, {}
    else:
        raise DefinitionError("a definition is YAML text or a mapping")
    return _validate(data, lines), lines


def dump_yaml(spec: Mapping[str, Any]) -> str:
    """The normalized spec as YAML (for editing in the UI)."""
    return yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True, default_flow_style=None)


# --- storage ------------------------------------------------------------------------------------------


def find_identity(session: Session, email: str) -> Identity | None:
    """The live identity with this e-mail (the authoritative source's first, then the oldest)."""
    return session.scalars(
        select(Identity)
        .outerjoin(Source, Source.id == Identity.source_id)
        .where(Identity.email_normalized == email.lower(), Identity.ended_at.is_(None))
        .order_by(case((Source.authoritative.is_(True), 0), else_=1), Identity.id)
        .limit(1)
    ).first()


def check_references(session: Session, spec: Mapping[str, Any], lines: Mapping[str, int] | None = None) -> None:
    """Named reviewers, the fallback reviewer and scope sources must exist."""
    lines = lines or {}

    def fail(path: str, message: str) -> DefinitionError:
        return DefinitionError(message, path, lines.get(path))

    for i, stage in enumerate(spec["stages"]):
        if stage.get("identity"):
            ident = find_identity(session, stage["identity"])
            if ident is None:
                raise fail(f"stages[{i}].identity", f"no identity with e-mail {stage['identity']} (sync the identity "
                           "provider first, or check the address)")
            if ident.status == "terminated":
                raise fail(f"stages[{i}].identity", f"{stage['identity']} is terminated and cannot review")
    if spec.get("fallback_reviewer"):
        ident = find_identity(session, spec["fallback_reviewer"])
        if ident is None:
            raise fail("fallback_reviewer", f"no identity with e-mail {spec['fallback_reviewer']} (sync the identity "
                       "provider first, or check the address)")
        if ident.status == "terminated":
            raise fail("fallback_reviewer", f"{spec['fallback_reviewer']} is terminated and cannot review")
    if spec["scope"]["sources"]:
        known = set(session.scalars(select(Source.name)))
        for i, name in enumerate(spec["scope"]["sources"]):
            if name not in known:
                hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                raise fail(f"scope.sources[{i}]", f"no source named {name!r}"
                           + (f"; did you mean {hint[0]}?" if hint else f" (sources: {', '.join(sorted(known)) or 'none yet'})"))


def _check_name(session: Session, spec: Mapping[str, Any], lines: Mapping[str, int], own_id: int | None) -> None:
    stmt = select(CampaignDefinition.id).where(func.lower(CampaignDefinition.name) == spec["name"].lower())
    if own_id is not None:
        stmt = stmt.where(CampaignDefinition.id != own_id)
    if session.scalar(stmt) is not None:
        raise DefinitionError(f"a definition named {spec['name']!r} already exists", "name", lines.get("name"))


def create_definition(session: Session, spec_or_yaml: str | Mapping[str, Any], actor: str,
                      owner_user_id: int | None = None) -> CampaignDefinition:
    """Validate and store a new definition (audited `definition.create`)."""
    spec, lines = _parse(spec_or_yaml)
    check_references(session, spec, lines)
    _check_name(session, spec, lines, None)
    now = utcnow()
    definition = CampaignDefinition(
        name=spec["name"], description=spec["description"], spec=spec,
        source_yaml=spec_or_yaml if isinstance(spec_or_yaml, str) else None,
        schedule=spec["schedule"], enabled=True, owner_user_id=owner_user_id, created_by=actor,
        created_at=now, updated_at=now,
    )
    session.add(definition)
    session.flush()
    audit(session, actor=actor, action="definition.create", object_type="campaign_definition",
          object_id=str(definition.id), after={"spec": spec})
    return definition


def update_definition(session: Session, definition_id: int, spec_or_yaml: str | Mapping[str, Any],
                      actor: str) -> CampaignDefinition:
    """Replace a definition's spec (audited `definition.update` with before and after)."""
    definition = session.get(CampaignDefinition, definition_id)
    if definition is None:
        raise DefinitionError(f"no campaign definition {definition_id}")
    spec, lines = _parse(spec_or_yaml)
    check_references(session, spec, lines)
    _check_name(session, spec, lines, definition.id)
    before = {"spec": definition.spec}
    definition.name = spec["name"]
    definition.description = spec["description"]
    definition.spec = spec
    definition.source_yaml = spec_or_yaml if isinstance(spec_or_yaml, str) else None
    definition.schedule = spec["schedule"]
    definition.updated_at = utcnow()
    session.flush()
    audit(session, actor=actor, action="definition.update", object_type="campaign_definition",
          object_id=str(definition.id), before=before, after={"spec": spec})
    return definition


def set_enabled(session: Session, definition_id: int, enabled: bool, actor: str) -> CampaignDefinition:
    """Pause or resume a definition's recurring launches (audited)."""
    definition = session.get(CampaignDefinition, definition_id)
    if definition is None:
        raise DefinitionError(f"no campaign definition {definition_id}")
    if definition.enabled != enabled:
        definition.enabled = enabled
        definition.updated_at = utcnow()
        audit(session, actor=actor, action="definition.enable" if enabled else "definition.disable",
              object_type="campaign_definition", object_id=str(definition.id),
              before={"enabled": not enabled}, after={"enabled": enabled})
    return definition
