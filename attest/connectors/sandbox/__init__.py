"""Sandbox services: faithful fakes of upstream APIs served over real HTTP on loopback.

Used by the tests, the benchmarks and the demo (`attest sandbox serve`, started by `make run`).
Unlike the connectors, the sandbox may use Flask. Each service registers itself in SERVICES:
name -> ("module:factory", default port). A factory takes keyword options and returns a WSGI app.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

SERVICES: dict[str, tuple[str, int]] = {
    "aws": ("attest.connectors.sandbox.aws_moto:create_app", 5103),
    "github": ("attest.connectors.sandbox.github_fake:create_app", 5102),
    "idp": ("attest.connectors.sandbox.idp:create_app", 5104),
    "okta": ("attest.connectors.sandbox.okta_fake:create_app", 5101),
}


class SandboxUnavailable(click.ClickException):
    """A sandbox service cannot start because a package of the `demo` extra is not installed."""


def service_app(name: str, **options: Any) -> Any:
    """The WSGI app of the registered service `name`, built with `options`. The services need the `demo`
    extra (moto, oidc-provider-mock, graphql-core), which a production install leaves out: say so."""
    module, _, factory = SERVICES[name][0].partition(":")
    try:
        return getattr(importlib.import_module(module), factory)(**options)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.partition(".")[0] == "attest":
            raise
        raise SandboxUnavailable(
            f"the sandbox {name} service needs {exc.name}, which the demo extra installs: "
            "pip install 'attest[demo]' (make run installs it)") from exc
