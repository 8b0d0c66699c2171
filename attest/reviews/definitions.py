"""Campaign definitions: parse (YAML or a dict), validate every field, fill defaults, store (audited).

What a definition may hold is described once, as pydantic models, in `attest.reviews.definition_schema`;
this module adds what YAML brings and what needs the database. A mistake names the field as a dotted path
and, for YAML, the line the user wrote (a missing key: its parent's line):
    scope.resource_typs (line 4): unknown key; did you mean resource_types?
Named reviewers and the fallback reviewer are e-mails of identities that must exist, and scope sources
must exist, when a definition is created or updated (checked against the database then).

The normalized spec (stored in CampaignDefinition.spec, frozen on each Campaign at launch) always has
every key of DEFAULTS, in this shape.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.db import utcnow
from attest.entitlements.models import Identity, PersonStatus, Source
from attest.entitlements.queries import person_by_email
from attest.reviews.definition_schema import (  # noqa: F401 (the choices, importable from here as before)
    COMMENT_RULES,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    NO_RESPONSE,
    REMEDIATION,
    CampaignDefinitionSpec,
    problems,
)
from attest.reviews.models import CampaignDefinition
from attest.trail.chain import record as audit

DEFAULTS: dict[str, Any] = {**CampaignDefinitionSpec(name="-").model_dump(), "name": None}
"""The normalized spec of a definition that sets nothing but its name."""


class DefinitionError(ValueError):
    """A definition is invalid; `field` is the dotted path of the offending field, `line` its YAML line."""

    def __init__(self, message: str, field: str | None = None, line: int | None = None,
                 problems: list[tuple[str | None, int | None, str]] | None = None) -> None:
        self.field = field
        self.line = line
        self.reason = message
        # every mistake found, (field, line, message), first the one this error is about
        self.problems = problems or [(field, line, message)]
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
    try:
        loader = _DefinitionLoader(text)  # PyYAML's reader refuses control characters here
    except yaml.reader.ReaderError as exc:
        raise DefinitionError(f"not valid YAML: character #x{exc.character:04x} is not allowed", None,
                              text.count("\n", 0, exc.position) + 1) from None
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


def _line(lines: Mapping[str, int], path: str) -> int | None:
    """The YAML line of the field at `path`; for a value the user did not write (a key left out, a bare
    value read as a list of one), the line of the nearest enclosing field the user wrote."""
    if not path:
        return 1 if lines else None
    while path:
        if path in lines:
            return lines[path]
        index = re.search(r"\[\d+\]$", path)
        if index:  # drop the last index, else the last key
            path = path[:index.start()]
        elif "." in path:
            path = path.rsplit(".", 1)[0]
        else:
            return None
    return None


def _validate(data: Any, lines: Mapping[str, int]) -> dict[str, Any]:
    """The normalized spec, or a DefinitionError about the mistake on the first line (a missing `name`,
    which has no line, comes first; on one line an unknown key before a wrong value)."""
    if isinstance(data, Mapping) and not isinstance(data, dict):
        data = dict(data)
    try:
        return CampaignDefinitionSpec.model_validate(data).model_dump()
    except ValidationError as exc:
        found = sorted(((path or None, _line(lines, path), message) for path, message in problems(exc)),
                       key=lambda p: (-1 if p[1] is None else p[1], not p[2].startswith("unknown key")))
    field, line, message = found[0]
    raise DefinitionError(message, field, line, found) from None


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
    """The person with this e-mail (attest.entitlements.queries.person_by_email: one rule everywhere)."""
    return person_by_email(session, email)


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
            if ident.status == PersonStatus.TERMINATED:
                raise fail(f"stages[{i}].identity", f"{stage['identity']} is terminated and cannot review")
    if spec.get("fallback_reviewer"):
        ident = find_identity(session, spec["fallback_reviewer"])
        if ident is None:
            raise fail("fallback_reviewer", f"no identity with e-mail {spec['fallback_reviewer']} (sync the identity "
                       "provider first, or check the address)")
        if ident.status == PersonStatus.TERMINATED:
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
