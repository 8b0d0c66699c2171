"""Campaign definitions as pydantic models: the one description of what a definition may hold.

`CampaignDefinitionSpec` validates a definition (a mapping, as YAML or JSON gives it) and fills every
default; `model_dump()` of it is the normalized spec Attest stores (CampaignDefinition.spec) and freezes on
each Campaign at launch. `attest.reviews.definitions` adds what YAML brings (line numbers, limits) and what
needs the database (named people and sources exist). The REST API's schema is generated from these models:
`CampaignDefinitionSpec.model_json_schema()`.

`problems(exc)` turns pydantic's ValidationError into Attest's messages, one per mistake, each with the
dotted path of the field ("stages[0].reviewer", "scope.identity.status[1]"):
    unknown key; did you mean resource_types?
    must be between 1 and 365, not 0
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    model_validator,
)

from attest.entitlements.models import PersonStatus
from attest.reviews.models import RemediationMode
from attest.reviews.routing import SELF_REVIEW_POLICIES, STAGE_KINDS
from attest.schedules import cron_trigger

__all__ = [
    "COMMENT_RULES", "IDENTITY_KINDS", "IDENTITY_STATUSES", "NO_RESPONSE", "REMEDIATION",
    "CampaignDefinitionSpec", "IdentityScope", "Mistake", "Risk", "Rules", "Scope", "Stage", "Timing", "problems",
]

NO_RESPONSE = ("keep", "revoke", "flag")
COMMENT_RULES = ("on_revoke", "always", "never")
REMEDIATION = tuple(mode.value for mode in RemediationMode)
IDENTITY_STATUSES = tuple(status.value for status in PersonStatus)
IDENTITY_KINDS = ("human", "service")
DEFAULT_REMINDERS = (7, 2)
MAX_STAGES = 5


class Mistake(ValueError):
    """A mistake with Attest's own message, raised inside the models' validators; `at` names the sub-field
    it is about when a check across fields runs on the enclosing model ("reminders_days_before_due[1]")."""

    def __init__(self, message: str, at: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def _fail(message: str, at: str | None = None) -> Mistake:
    return Mistake(message, at)


# --- value types ------------------------------------------------------------------------------------------


def _number_as_text(value: Any) -> Any:
    """YAML reads `name: 2026` or `controls: [27001]` as numbers; they are meant as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _required_text(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail("is required")
    return value


def _as_list(value: Any) -> Any:
    """Null is an empty list and one bare value a list of one."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _no_ranges(pattern: str) -> str:
    if "[" in pattern or "]" in pattern:
        raise _fail("use * and ? in patterns; [ ] ranges are not supported")
    return pattern


def _cron(expr: str | None) -> str | None:
    if expr is None:
        return None
    try:
        cron_trigger(expr)
    except ValueError as exc:
        raise _fail(f'not a valid cron expression ({exc}); e.g. "0 9 1 1,4,7,10 *"') from None
    return expr


Text = Annotated[str, BeforeValidator(_number_as_text), Field(min_length=1)]
"""Non-empty text (surrounding spaces dropped); a number is read as its text."""
Texts = Annotated[list[Text], BeforeValidator(_as_list), AfterValidator(_unique)]
ResourcePattern = Annotated[Text, AfterValidator(_no_ranges)]
ReviewerEmail = Annotated[EmailStr, AfterValidator(str.lower)]
"""The e-mail of an identity (checked by email-validator, stored lower-case)."""
Flag = Annotated[bool, Field(strict=True)]


def _days(default: int, low: int, high: int, description: str) -> Any:
    return Field(default, ge=low, le=high, strict=True, description=description)


def _choices(values: tuple[str, ...]) -> Any:
    return Literal[values]


class _Section(BaseModel):
    """A mapping of known keys; an unknown key is a mistake; a null section is all defaults."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


# --- the definition ---------------------------------------------------------------------------------------


class IdentityScope(_Section):
    """Which people's access is in scope (each list empty = everyone)."""

    department: Texts = Field(default_factory=list, description="Departments of the people in scope.")
    status: Annotated[list[_choices(IDENTITY_STATUSES)], BeforeValidator(_as_list), AfterValidator(_unique)] = Field(
        default_factory=list, description="Identity statuses in scope (active, suspended, terminated).")
    kind: Annotated[list[_choices(IDENTITY_KINDS)], BeforeValidator(_as_list), AfterValidator(_unique)] = Field(
        default_factory=list, description="Identity kinds in scope (human, service).")


class Scope(_Section):
    """Which grants a campaign reviews. Empty lists mean no restriction."""

    sources: Texts = Field(default_factory=list, description="Names of the sources whose grants are reviewed; "
                           "each must exist when the definition is saved.")
    resource_types: Texts = Field(default_factory=list, description="Resource types in scope (app, group, role, ...).")
    resource_names: Annotated[list[ResourcePattern], BeforeValidator(_as_list), AfterValidator(_unique)] = Field(
        default_factory=list, description="Resource name patterns with * and ? (no [ ] ranges).")
    entitlements: Texts = Field(default_factory=list, description="Entitlement names in scope.")
    privileged_only: Flag = Field(False, description="Only grants flagged as privileged.")
    identity: IdentityScope = Field(default_factory=IdentityScope, description="Which people are in scope.")
    include_orphaned: Flag = Field(True, description="Include accounts linked to no person.")
    include_service_accounts: Flag = Field(False, description="Include service accounts.")
    include_inherited: Flag = Field(True, description="Include access held through a group.")
    delta: Flag = Field(False, description="Only grants new since the definition's previous campaign.")


class Stage(_Section):
    """One review stage: who reviews each item. A bare string (`- manager`) is a stage of that reviewer."""

    reviewer: _choices(STAGE_KINDS) = Field(description="manager: the person's manager; resource_owner: the "
                                            "resource's owner; identity: the person named in `identity`.")
    identity: ReviewerEmail | None = Field(None, description="E-mail of the reviewer, only with reviewer: identity.")

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, data: Any) -> Any:
        return {"reviewer": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _identity_only_with_identity(self) -> Stage:
        if self.reviewer == "identity" and self.identity is None:
            raise _fail("reviewer: identity needs the e-mail of the reviewer in `identity`", "identity")
        if self.reviewer != "identity" and self.identity is not None:
            raise _fail(f"only used with reviewer: identity (this stage is {self.reviewer})", "identity")
        return self


class Timing(_Section):
    """How long reviewers have, when they are reminded, and what happens without an answer."""

    duration_days: int = _days(14, 1, 365, "Days from launch to the due date.")
    reminders_days_before_due: Annotated[
        list[Annotated[int, Field(ge=0, le=365, strict=True)]], BeforeValidator(lambda v: [] if v is None else v),
    ] = Field(default_factory=lambda: list(DEFAULT_REMINDERS), description=(
        "Days before the due date on which undecided reviewers are reminded; each inside the campaign. "
        "Left out: 7 and 2 days, those inside the campaign's duration."))
    escalate_after_days_overdue: int | None = Field(2, ge=0, le=365, strict=True, description=(
        "Days after the due date before a reviewer's manager is added as co-reviewer; null: never."))
    no_response: _choices(NO_RESPONSE) = Field("keep", description="What an item left undecided at close becomes.")

    @model_validator(mode="after")
    def _reminders_inside_the_campaign(self) -> Timing:
        days = self.reminders_days_before_due
        if "reminders_days_before_due" not in self.model_fields_set:
            # the defaults are fitted to the campaign: never a mistake about a line nobody wrote
            self.reminders_days_before_due = [d for d in DEFAULT_REMINDERS if d < self.duration_days]
            return self
        for i, d in enumerate(days):
            if d >= self.duration_days:
                raise _fail(f"a reminder {d} days before due is not inside a {self.duration_days}-day campaign",
                            f"reminders_days_before_due[{i}]")
        self.reminders_days_before_due = sorted(set(days), reverse=True)
        return self


class Rules(_Section):
    """Decision rules: comments, remediation, bulk approval."""

    comment_required: _choices(COMMENT_RULES) = Field("on_revoke", description="When a decision needs a comment.")
    remediation: _choices(REMEDIATION) = Field("manual", description=(
        "automatic: revocations are carried out through the connectors; manual: as a work list."))
    bulk_approve_flagged: Flag = Field(False, description="Whether bulk approval may take items with risk flags.")


class Risk(_Section):
    """Thresholds of the risk signals shown to reviewers."""

    dormant_days: int = _days(90, 1, 3650, "An account unused for this many days is flagged dormant.")
    stale_key_days: int = _days(90, 1, 3650, "A key or credential older than this many days is flagged stale.")


class CampaignDefinitionSpec(_Section):
    """A campaign definition: what is reviewed, by whom, how long, with which rules, and how often."""

    name: Annotated[str, BeforeValidator(_number_as_text), BeforeValidator(_required_text)] = Field(
        max_length=200, description="The definition's name (unique, case-insensitively); campaigns are named after it.")
    description: Annotated[str | None, BeforeValidator(_number_as_text), BeforeValidator(_blank_is_none)] = Field(
        None, max_length=4000, description="What the campaign is for, shown to reviewers.")
    scope: Scope = Field(default_factory=Scope, description="Which grants are reviewed.")
    stages: list[Stage] = Field(default_factory=lambda: [Stage(reviewer="manager")], min_length=1,
                                max_length=MAX_STAGES, description="Review stages, in order (1 to 5).")
    fallback_reviewer: ReviewerEmail | None = Field(None, description=(
        "E-mail of the person who reviews items nobody else can (no manager, no owner, self-review)."))
    self_review: _choices(SELF_REVIEW_POLICIES) = Field("reassign", description=(
        "An item about the reviewer's own access goes up the manager chain (reassign) or to the fallback reviewer."))
    timing: Timing = Field(default_factory=Timing, description="Duration, reminders, escalation, no response.")
    rules: Rules = Field(default_factory=Rules, description=(
        "When a decision needs a comment, how revocations are carried out, what bulk approval may take."))
    risk: Risk = Field(default_factory=Risk, description="Risk signal thresholds.")
    controls: Texts = Field(default_factory=list, description="Controls the campaign evidences, e.g. SOC 2 CC6.2.")
    schedule: Annotated[str | None, BeforeValidator(_number_as_text), BeforeValidator(_blank_is_none),
                        AfterValidator(_cron)] = Field(None, max_length=100, description=(
                            "Standard 5-field crontab in UTC (0 and 7 are Sunday) for recurring launches; "
                            "null: launched by hand."))

    @model_validator(mode="before")
    @classmethod
    def _null_is_defaults(cls, data: Any) -> Any:
        return data  # unlike a section, a null definition is no definition (it has no name)


# --- pydantic's errors as Attest's messages ---------------------------------------------------------------

_FIELD_MESSAGES = {  # (path, pydantic error type) -> message, where the generic one would say too little
    ("stages", "list_type"): "must be a list of one or more stages, e.g. [{reviewer: manager}]",
    ("stages", "too_short"): "must be a list of one or more stages, e.g. [{reviewer: manager}]",
    ("stages", "too_long"): f"at most {MAX_STAGES} stages",
    ("timing.reminders_days_before_due", "list_type"): "must be a list of days, e.g. [7, 2]",
}


def dotted(loc: tuple[Any, ...]) -> str:
    """("stages", 0, "reviewer") -> "stages[0].reviewer"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(the type, whether null is allowed, the constraints) of an annotation."""
    nullable, metadata = False, []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(getattr(item, "metadata", None) or [item])
        elif origin in (Union, types.UnionType) and type(None) in get_args(annotation):
            nullable = True
            rest = [a for a in get_args(annotation) if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return annotation, nullable, metadata


def _resolve(loc: tuple[Any, ...]) -> tuple[Any, bool, list[Any]]:
    """What the definition's schema says of the value at `loc`: (its type, whether null is allowed, its
    constraints such as Ge/Le); (None, False, []) for a path outside the schema (an unknown key)."""
    annotation: Any = CampaignDefinitionSpec
    metadata: list[Any] = []
    for part in loc:
        kind = _unwrap(annotation)[0]
        if isinstance(part, str):
            if not (isinstance(kind, type) and issubclass(kind, BaseModel)) or part not in kind.model_fields:
                return None, False, []
            info = kind.model_fields[part]
            annotation, metadata = info.annotation, list(info.metadata)
        else:
            if get_origin(kind) is not list or not get_args(kind):
                return None, False, []
            annotation, metadata = get_args(kind)[0], []
    kind, nullable, more = _unwrap(annotation)
    return kind, nullable, metadata + more


def _bound(metadata: list[Any], name: str) -> Any:
    return next((getattr(m, name) for m in metadata if getattr(m, name, None) is not None), None)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    kind = _resolve(loc)[0] if loc else CampaignDefinitionSpec
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _message(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    path = dotted(loc)
    if (path, kind) in _FIELD_MESSAGES:
        return _FIELD_MESSAGES[(path, kind)]
    in_list = bool(loc) and isinstance(loc[-1], int)
    if kind in ("string_type", "value_error") and _resolve(loc)[0] is EmailStr:
        return f"must be the e-mail address of an identity, not {value!r}"
    if kind in ("extra_forbidden", "invalid_key"):
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        return "unknown key" + (f"; did you mean {hint[0]}?" if hint else f"; expected one of {', '.join(allowed)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        return f"must be a mapping of {', '.join(model.model_fields) if model else 'keys'}"
    if kind == "missing":
        choices = get_args(_resolve(loc)[0]) if get_origin(_resolve(loc)[0]) is Literal else ()
        return f"is required (one of {', '.join(choices)})" if choices else "is required"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        nullable = _resolve(loc)[1]
        return f"must be a whole number{' or null' if nullable else ''}, not {value!r}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        metadata = _resolve(loc)[2]
        low, high = _bound(metadata, "ge"), _bound(metadata, "le")
        if low is not None and high is not None:
            return f"must be between {low} and {high}, not {value}"
    if kind == "literal_error":
        choices = [str(c) for c in get_args(_resolve(loc)[0])]
        message = f"must be one of {', '.join(choices)}, not {value!r}"
        hint = difflib.get_close_matches(value, choices, n=1, cutoff=0.6) if isinstance(value, str) else []
        return message + (f"; did you mean {hint[0]}?" if hint else "")
    if kind in ("string_type", "string_too_short", "too_short"):
        if in_list:
            return f"must be non-empty text, not {value!r}"
        return "is required" if kind == "string_too_short" else f"must be text, not {value!r}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "list_type":
        return "must be a list"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} values"
    return str(error.get("msg", kind))


def problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Each mistake of a definition as (dotted path of the field, message); path "" is the definition."""
    out = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        mistake = (error.get("ctx") or {}).get("error")
        if isinstance(mistake, Mistake):
            if mistake.at:
                field, _, index = mistake.at.partition("[")
                loc = (*loc, field, int(index.rstrip("]"))) if index else (*loc, field)
            out.append((dotted(loc), mistake.message))
            continue
        if not loc and error["type"] in ("model_type", "model_attributes_type", "dict_type"):
            out.append(("", "a definition must be a mapping with at least `name`"))
            continue
        out.append((dotted(loc), _message(error, loc)))
    return out
