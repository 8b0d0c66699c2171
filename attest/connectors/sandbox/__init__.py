"""Sandbox services: faithful fakes of upstream APIs served over real HTTP on loopback.

Used by the tests, the benchmarks and the demo (`attest sandbox serve`, started by `make run`).
Unlike the connectors, the sandbox may use Flask. Each service registers itself in SERVICES:
name -> ("module:factory", default port). A factory takes keyword options and returns a WSGI app.
"""

from __future__ import annotations

SERVICES: dict[str, tuple[str, int]] = {
    "aws": ("attest.connectors.sandbox.aws_moto:create_app", 5103),
    "github": ("attest.connectors.sandbox.github_fake:create_app", 5102),
    "idp": ("attest.connectors.sandbox.idp:create_app", 5104),
    "okta": ("attest.connectors.sandbox.okta_fake:create_app", 5101),
}
