"""What every `attest` command module shares: the app's state, JSON output, a failure, the acting user, and
Alembic's configuration.

Public so the CLI modules of each area (attest/cli.py, attest/reviews/cli.py, attest/audit/cli.py) import
one helper instead of each other's private functions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from alembic.config import Config
from flask import current_app


def app_state() -> Any:
    """The running app's state (settings, session factory...): `current_app.extensions["attest"]`."""
    return current_app.extensions["attest"]


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at `url` and Attest's migrations (attest/migrations/): for
    `attest db`, `attest demo --reset`, the tests and the benchmarks."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print the error in red on stderr and exit with `code` (1 by default)."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def cli_actor() -> str:
    """Who acts in the audit trail when a command changes something: cli:<login name>."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"
