"""Connector kinds by name, imported lazily (boto3 is slow to import and only AWS needs it)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from attest.connectors.base import BaseConnector, Setting

KINDS: dict[str, str] = {
    "demo": "attest.connectors.demo:DemoConnector",
    "okta": "attest.connectors.okta:OktaConnector",
    "aws": "attest.connectors.aws:AwsConnector",
    "github": "attest.connectors.github:GitHubConnector",
}


class UnknownKind(ValueError):
    pass


def connector_class(kind: str) -> type[BaseConnector]:
    try:
        target = KINDS[kind]
    except KeyError:
        raise UnknownKind(f"unknown source kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _coerce(spec: Setting, raw: Any, what: str) -> Any:
    if raw is None:
        return None
    if spec.type is bool:
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what} {spec.name} must be true or false, not {raw!r}")
    if spec.type is int:
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{what} {spec.name} must be a whole number, not {raw!r}") from None
        spec.check_bounds(number, what)
        return number
    if spec.type is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{what} {spec.name} must be a number, not {raw!r}") from None
    if spec.type is list:
        if isinstance(raw, list | tuple):
            return [str(v).strip() for v in raw if str(v).strip()]
        return [v.strip() for v in str(raw).split(",") if v.strip()]
    value = str(raw)
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{what} {spec.name} must be one of {', '.join(spec.choices)}, not {value!r}")
    return value


def validate_settings(
    kind: str, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check names and types against the connector's declaration; returns the coerced values.

    Raises ValueError naming the unknown, missing or malformed setting or secret.
    """
    cls = connector_class(kind)
    specs = {s.name: s for s in cls.SETTINGS}
    secret_specs = {s.name: s for s in cls.SECRETS}
    out: dict[str, Any] = {}
    for name, raw in settings.items():
        if name not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise ValueError(f"unknown setting {name!r} for a {kind} source; known settings: {known}")
        out[name] = _coerce(specs[name], raw, "setting")
    for spec in cls.SETTINGS:
        if spec.name not in out:
            if spec.required:
                raise ValueError(f"setting {spec.name!r} is required for a {kind} source: {spec.help}")
            if spec.default is not None:
                out[spec.name] = spec.default
    secret_out: dict[str, str] = {}
    for name, value in (secrets or {}).items():
        if name not in secret_specs:
            known = ", ".join(sorted(secret_specs)) or "none"
            raise ValueError(f"unknown secret {name!r} for a {kind} source; known secrets: {known}")
        if not value:
            raise ValueError(f"secret {name!r} is empty")
        secret_out[name] = value
    for spec in cls.SECRETS:
        if spec.required and spec.name not in secret_out:
            raise ValueError(f"secret {spec.name!r} is required for a {kind} source: {spec.help}")
    check = getattr(cls, "check_config", None)
    if check is not None:
        check(out, secret_out)  # raises ValueError for combinations (e.g. token or app key)
    return out, secret_out


def build(kind: str, settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> BaseConnector:
    cls = connector_class(kind)
    return cls(settings, secrets or {})
