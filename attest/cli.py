"""The `attest` command group (also reachable as `flask --app attest.app ...`).

Commands parse input, call one service inside a transaction, and print. A user's mistake exits non-zero
with a clear message and changes nothing.

This module holds the group itself (error handling, app creation) and the commands of no one area: `db`,
`users`, `demo`, `serve`, `scheduler`. Each area's commands live with it: attest/entitlements/cli.py
(`sources`, `sync`, `stats`), attest/reviews/cli.py (`campaigns`, `remediation`), attest/audit/cli.py
(`audit`, `evidence`); attest/connectors/sandbox/cli.py (`sandbox`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Any

import click
from alembic import command as migrations
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from attest.app import create_app
from attest.audit.cli import COMMANDS as audit_commands
from attest.auth.login import UserError, create_admin
from attest.cli_support import alembic_config, app_state, cli_actor, echo_json, fail, needs_keys
from attest.config import SettingsError
from attest.connectors.sandbox.cli import sandbox_group
from attest.db import describe_url, transaction, unavailable, unmigrated
from attest.demo import load_demo
from attest.entitlements.cli import COMMANDS as entitlement_commands
from attest.entitlements.keys import KeyCheckError
from attest.jobs import SchedulerError, run_now, run_scheduler, status
from attest.reviews.cli import COMMANDS as review_commands

# --- db -------------------------------------------------------------------------------------------


@click.group("db", cls=AppGroup)
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations (the app never creates tables any other way)."""
    migrations.upgrade(alembic_config(app_state().settings.database_url), revision)
    click.echo(f"database at {revision}")


@db_group.command("current")
def db_current() -> None:
    migrations.current(alembic_config(app_state().settings.database_url))


# --- users ----------------------------------------------------------------------------------------


@click.group("users", cls=AppGroup)
def users_group() -> None:
    """People who sign in to Attest."""


@users_group.command("create-admin")
@click.argument("email")
@click.option("--password-env", default="ATTEST_ADMIN_PASSWORD", show_default=True,
              help="Environment variable holding the password; prompted for when unset on a terminal.")
def users_create_admin(email: str, password_env: str) -> None:
    """Create (or reset) a break-glass local administrator."""
    password = os.environ.get(password_env)
    if not password:
        if not sys.stdin.isatty():
            fail(f"set {password_env} to the password (it is never taken from the command line)")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with transaction(app_state().factory) as session:
            user = create_admin(session, email, password, actor=cli_actor())
            click.echo(f"admin {user.email} ready (user id {user.id})")
    except UserError as exc:
        fail(str(exc))


# --- demo -----------------------------------------------------------------------------------------


@click.command("demo")
@with_appcontext
@click.option("--reset", is_flag=True, help="Drop everything and load the demo again (refused if real sources exist).")
@click.option("--people", default=300, show_default=True, help="Size of the synthetic organisation.")
@needs_keys
def demo_command(reset: bool, people: int) -> None:
    """Load the demo organisation and a demo admin, and print how to sign in."""
    try:
        info = load_demo(app_state(), reset=reset, people=people, echo=click.echo)
    except ValueError as exc:
        fail(str(exc))
    click.echo("")
    click.secho("Attest demo is ready.", fg="green", bold=True)
    for line in info:
        click.echo(f"  {line}")


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--workers", default=2, show_default=True)
def serve_command(host: str, port: int, workers: int) -> None:
    """Serve the web UI with gunicorn (web workers never run jobs: see `attest scheduler`).

    The workers count request latency into one fresh directory of prometheus-client's multiprocess files
    (PROMETHEUS_MULTIPROC_DIR, unless set already), so GET /metrics covers every worker (attest/metrics.py).
    """
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="attest-metrics-")
    os.execvpe(  # noqa: S606 - replaces this process with gunicorn, fixed arguments
        sys.executable,
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{host}:{port}",
         "--config", "python:attest.gunicorn_conf",
         "attest.app:create_app()"],  # the app logs each request itself (attest.request, JSON)
        env,
    )


@click.command("scheduler")
@with_appcontext
@click.option("--status", "show_status", is_flag=True, help="Show each job's schedule, next and last run, then exit.")
@click.option("--run", "run_id", metavar="JOB", help="Run one job now under its lease and exit (e.g. notify:send).")
@click.option("--json", "as_json", is_flag=True)
@needs_keys
def scheduler_command(show_status: bool, run_id: str | None, as_json: bool) -> None:
    """Run the job scheduler (syncs, campaign launches and closes, review e-mail, remediation).

    Run one per machine you want jobs on; two or more share the work through database leases.
    """
    state = app_state()
    if show_status:
        with state.factory() as session:
            rows = status(session)
        if as_json:
            echo_json(rows)
            return
        for r in rows:
            when = r["next_run_at"].strftime("%Y-%m-%d %H:%M") if r["next_run_at"] else "-"
            last = (f"{r['last_status']} {r['last_started_at']:%Y-%m-%d %H:%M}" if r["last_status"] and r["last_started_at"]
                    else "never run")
            running = f" running on {r['running_on']}" if r["running_on"] else ""
            click.echo(f"{r['job']:32} {r['schedule'] or '-':16} next {when:16}  last {last}{running}")
            if r["last_status"] == "failed" and r["last_error"]:
                click.secho(f"  {r['last_error']}", fg="red")
        return
    try:
        if run_id:
            run = run_now(state.factory, state.settings, run_id)
            if as_json:
                echo_json({"job": run.job, "status": run.status, "error": run.error, "detail": run.detail})
            elif run.status == "skipped":
                click.echo(f"{run.job}: running in another process right now; not started")
            else:
                click.secho(f"{run.job}: {run.status}" + (f": {run.error}" if run.error else f" ({run.detail})"),
                            fg="green" if run.status == "succeeded" else "red")
            if run.status != "succeeded":
                sys.exit(1)
            return
        run_scheduler(state.settings, state.engine, state.factory)
    except SchedulerError as exc:
        fail(str(exc))


COMMANDS: list[click.Command] = [db_group, *entitlement_commands, users_group, demo_command, serve_command,
                                 scheduler_command]


def register(app: Flask) -> None:
    """Called by create_app(): every command is reachable through `flask --app attest.app` too."""
    for cli_command in [*COMMANDS, sandbox_group, *audit_commands, *review_commands]:
        app.cli.add_command(cli_command)


def _create_app() -> Flask:
    try:
        # the key check runs in the commands that touch secrets (needs_keys), so `db upgrade` and the
        # audit commands work while ATTEST_ENCRYPTION_KEYS is being put right
        return create_app({"defer_key_check": True})
    except (SettingsError, KeyCheckError) as exc:
        click.secho(f"configuration error: {exc}", fg="red", err=True)
        sys.exit(2)


class AttestGroup(FlaskGroup):
    """The `attest` command: an unexpected error is one log record with the traceback inside it (JSON in
    production), and exit 1, instead of a raw traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if unavailable(exc) or unmigrated(exc):  # one line, not a page of chained tracebacks
                try:
                    url = describe_url(current_app.extensions["attest"].settings.database_url)
                except Exception:
                    url = describe_url(os.environ.get("ATTEST_DATABASE_URL", "")) or "the database"
                why = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
                if unavailable(exc):
                    click.secho(f"error: the database ({url}) cannot be reached: {why}. Nothing was changed; "
                                "run the command again once the database answers.", fg="red", err=True)
                else:
                    click.secho(f"error: the database ({url}) is not set up for this version of Attest ({why}): "
                                "run `attest db upgrade` first. Nothing was changed.", fg="red", err=True)
                sys.exit(3)

            logging.getLogger("attest.cli").exception("attest %s failed unexpectedly",
                                                      ctx.invoked_subcommand or "")
            sys.exit(1)


main = AttestGroup(create_app=_create_app, add_default_commands=True, load_dotenv=False,
                   help="Attest: access reviews and entitlement management.")
