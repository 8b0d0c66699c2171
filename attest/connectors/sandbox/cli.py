"""`attest sandbox serve`: every registered sandbox service on its loopback port, until interrupted."""

from __future__ import annotations

import time

import click
from flask.cli import AppGroup

from attest.connectors.sandbox import SERVICES, service_app
from attest.connectors.sandbox.server import serve_in_thread


@click.group("sandbox", cls=AppGroup)
def sandbox_group() -> None:
    """Fake upstream services (Okta, GitHub, AWS via moto) for the demo and tests."""


@sandbox_group.command("serve")
@click.option("--only", multiple=True, help="Serve only these services.")
@click.option("--latency", default=0.0, help="Seconds of added latency per request.")
def sandbox_serve(only: tuple[str, ...], latency: float) -> None:
    running = []
    for name, (_, port) in sorted(SERVICES.items()):
        if only and name not in only:
            continue
        app = service_app(name, demo=True)
        running.append((name, serve_in_thread(app, port=port, latency=latency)))
        click.echo(f"sandbox {name}: {running[-1][1].url}")
    if not running:
        click.echo("no sandbox services registered")
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for _, server in running:
            server.stop()
