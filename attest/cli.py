"""The `attest` command group (also reachable as `flask --app attest.app ...`).

Commands parse input, call one service inside a transaction, and print. A user's mistake exits non-zero
with a clear message and changes nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import click
from alembic import command as migrations
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import select

from attest.app import create_app
from attest.audit.cli import COMMANDS as audit_commands
from attest.auth.login import UserError, create_admin
from attest.cli_support import alembic_config, app_state, cli_actor, echo_json, fail
from attest.config import SettingsError
from attest.connectors.registry import UnknownKind
from attest.connectors.sandbox.cli import sandbox_group
from attest.db import describe_url, transaction, unavailable, unmigrated
from attest.demo import load_demo
from attest.entitlements.keys import KeyCheckError, check, fingerprint
from attest.entitlements.models import Source
from attest.entitlements.queries import stats
from attest.entitlements.sources import (
    UNCHANGED,
    SourceError,
    add_source,
    disable_source,
    enable_source,
    forget_secrets,
    list_sources,
    rotate_secrets,
    test_connection,
    update_source,
)
from attest.entitlements.sync import SyncError, sync_many
from attest.jobs import SchedulerError, run_now, run_scheduler, status
from attest.reviews.cli import COMMANDS as review_commands


def needs_keys(command: Callable) -> Callable:
    """A command that touches stored secrets first checks ATTEST_ENCRYPTION_KEYS against the key check value:
    a wrong key is one clear message and exit 2, never a traceback halfway through."""
    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            check(app_state().factory, app_state().settings)
        except KeyCheckError as exc:
            fail(str(exc), 2)
        return command(*args, **kwargs)

    return checked


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} must look like key=value", param_hint=what)
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


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


# --- sources and sync -----------------------------------------------------------------------------


@click.group("sources", cls=AppGroup)
def sources_group() -> None:
    """Configure the systems Attest reads."""


@sources_group.command("add")
@click.argument("kind")
@click.argument("name")
@click.option("--set", "values", multiple=True, metavar="KEY=VALUE", help="A setting (repeatable).")
@click.option("--secret", "secret_refs", multiple=True, metavar="KEY=ENV_VAR",
              help="A secret, read from the named environment variable (repeatable); never typed on the command line.")
@click.option("--schedule", help="Cron expression for the scheduler, e.g. '0 */4 * * *'.")
@click.option("--authoritative/--not-authoritative", default=None,
              help="Identities come from this source (default: yes for an IdP when none is yet).")
@needs_keys
def sources_add(kind, name, values, secret_refs, schedule, authoritative) -> None:
    """Add a source: attest sources add okta acme --set domain=https://acme.okta.com --secret token=OKTA_TOKEN"""
    settings = app_state().settings
    secret_values = _secret_values(secret_refs)
    try:
        with transaction(app_state().factory) as session:
            source = add_source(session, settings, kind, name, _pairs(values, "--set"), secret_values,
                                schedule=schedule, authoritative=authoritative, actor=cli_actor())
            click.echo(f"added {kind} source {source.name!r} (id {source.id}"
                       f"{', authoritative for identities' if source.authoritative else ''}); "
                       f"run `attest sources test {name}` then `attest sync {name}`")
    except (SourceError, UnknownKind) as exc:
        fail(str(exc))


def _secret_values(secret_refs: tuple[str, ...]) -> dict[str, str]:
    """`--secret key=ENV_VAR` pairs as values read from the environment (never typed on the command line)."""
    out: dict[str, str] = {}
    for key, env_name in _pairs(secret_refs, "--secret").items():
        value = os.environ.get(env_name)
        if not value:
            fail(f"--secret {key}={env_name}: the environment variable {env_name} is not set or empty")
        out[key] = value
    return out


@sources_group.command("update")
@click.argument("name")
@click.option("--set", "values", multiple=True, metavar="KEY=VALUE", help="A setting to change (repeatable).")
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="A setting to drop back to its default (repeatable).")
@click.option("--secret", "secret_refs", multiple=True, metavar="KEY=ENV_VAR",
              help="A secret to replace, read from the named environment variable (repeatable).")
@click.option("--schedule", help="New cron expression for the scheduler, e.g. '0 */4 * * *'.")
@click.option("--no-schedule", is_flag=True, help="Stop syncing this source on a schedule.")
@needs_keys
def sources_update(name, values, unset, secret_refs, schedule, no_schedule) -> None:
    """Change a source: attest sources update acme --set domain=https://acme.okta.com --secret token=OKTA_TOKEN"""
    if schedule is not None and no_schedule:
        fail("--schedule and --no-schedule cannot be used together")
    new_schedule = None if no_schedule else (schedule if schedule is not None else UNCHANGED)
    secret_values = _secret_values(secret_refs)
    try:
        with transaction(app_state().factory) as session:
            source, changed = update_source(session, app_state().settings, name, _pairs(values, "--set"), secret_values,
                                            unset=unset, schedule=new_schedule, actor=cli_actor())
            summary = (f"settings {', '.join(f'{k}={v}' for k, v in sorted(source.settings.items())) or 'none'}; "
                       f"schedule {source.schedule or 'none'}")
    except SourceError as exc:
        fail(str(exc))
    if not changed:
        click.echo(f"{name}: nothing changed ({summary})")
    else:
        replaced = f"; secrets replaced: {', '.join(sorted(secret_values))}" if secret_values else ""
        click.echo(f"{name}: updated ({summary}{replaced}); run `attest sources test {name}`")


@sources_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@needs_keys
def sources_list(as_json: bool) -> None:
    with app_state().factory() as session:
        rows = list_sources(session, app_state().settings)
    if as_json:
        echo_json([r.as_dict() for r in rows])
        return
    if not rows:
        click.echo("no sources; add one with `attest sources add KIND NAME --set key=value`")
    for r in rows:
        flags = [f for f, on in (("authoritative", r.authoritative), ("disabled", not r.enabled)) if on]
        last = r.last_run
        last_text = f"last run {last['status']} {last['started_at'][:16]}" if last else "never synced"
        secrets_text = "(cannot be decrypted)" if r.secrets_error else ",".join(r.secret_names) or "-"
        click.echo(f"{r.name:24} {r.kind:8} {last_text:40} grants={r.counts.get('grants', 0):<9}"
                   f" secrets={secrets_text} {' '.join(flags)}")
    broken = [r for r in rows if r.secrets_error]
    if broken:
        fail(f"{', '.join(r.name for r in broken)}: {broken[0].secrets_error}")


@sources_group.command("test")
@click.argument("name")
@needs_keys
def sources_test(name: str) -> None:
    """Check that Attest can reach and read the source with its credentials."""
    with app_state().factory() as session:
        try:
            result = test_connection(session, app_state().settings, name)
        except SourceError as exc:
            fail(str(exc))
    if not result.ok:
        fail(f"{name}: {result.message}")
    click.echo(f"{name}: {result.message}")


@sources_group.command("disable")
@click.argument("name")
def sources_disable(name: str) -> None:
    """Stop syncing a source; its history is kept."""
    try:
        with transaction(app_state().factory) as session:
            disable_source(session, name, actor=cli_actor())
    except SourceError as exc:
        fail(str(exc))
    click.echo(f"{name}: disabled (history kept)")


@sources_group.command("enable")
@click.argument("name")
def sources_enable(name: str) -> None:
    """Sync a disabled source again (on its schedule and when asked)."""
    try:
        with transaction(app_state().factory) as session:
            enable_source(session, name, actor=cli_actor())
    except SourceError as exc:
        fail(str(exc))
    click.echo(f"{name}: enabled")


@sources_group.command("rotate-keys")
@needs_keys
def sources_rotate() -> None:
    """Re-encrypt every stored secret with the first key of ATTEST_ENCRYPTION_KEYS."""
    try:
        with transaction(app_state().factory) as session:
            n = rotate_secrets(session, app_state().settings)
    except SourceError as exc:
        fail(str(exc))
    click.echo(f"re-encrypted the secrets of {n} sources and the key check value with the key "
               f"{fingerprint(app_state().settings.encryption_keys[0])}; older keys may now be removed "
               "from ATTEST_ENCRYPTION_KEYS")


@sources_group.command("forget-secrets")
@click.option("--yes", is_flag=True, help="Confirm: every stored source credential is dropped.")
def sources_forget_secrets(yes: bool) -> None:
    """The encryption key is lost for good: drop every stored secret and the key check value (audited).

    Attest then starts with a new ATTEST_ENCRYPTION_KEYS; enter the credentials again (disable each source
    and add it again). Only when no backup of the old key exists: see docs/operations.md."""
    if not yes:
        fail("this drops every stored source credential; run again with --yes if the old key is lost for good")
    with transaction(app_state().factory) as session:
        names = forget_secrets(session, actor=cli_actor())
    click.echo(f"dropped the stored secrets of {len(names)} sources ({', '.join(names) or 'none'}) and the key "
               "check value; add each source again with its credentials")


def _progress_printer() -> Callable | None:
    if not sys.stderr.isatty():
        return None

    def show(p) -> None:
        click.echo(f"\r  {p.phase}: {p.records:,} records, {p.requests:,} requests, {p.elapsed:,.1f}s   ",
                   nl=False, err=True)

    return show


@click.command("sync")
@with_appcontext
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled source, the authoritative one first.")
@click.option("--force", is_flag=True, help="Apply even if the run would end more grants than the removal guard allows.")
@click.option("--json", "as_json", is_flag=True)
@needs_keys
def sync_command(names, all_, force, as_json) -> None:
    """Sync sources and print each run's summary; exits non-zero if any run fails."""
    state = app_state()
    if all_:
        with state.factory() as session:
            names = tuple(session.scalars(select(Source.name).where(Source.enabled.is_(True))))
    if not names:
        fail("name a source, or use --all")
    try:
        results = sync_many(state.factory, state.settings, names, force=force, progress=_progress_printer(),
                            triggered_by="cli", actor=cli_actor())
    except SyncError as exc:
        fail(str(exc))
    if sys.stderr.isatty():
        click.echo("", err=True)
    if as_json:
        echo_json([r.as_dict() for r in results])
    else:
        for r in results:
            colour = {"succeeded": "green", "partial": "yellow"}.get(r.status, "red")
            click.secho(f"{r.source}: {r.status} (run {r.run_id}, {r.seconds:.1f}s, {r.api_calls:,} API calls)", fg=colour)
            for label in ("read", "added", "updated", "ended"):
                counts = {k: v for k, v in (r.stats.get(label) or {}).items() if v}
                if counts:
                    click.echo(f"  {label:8} " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
            if r.stats.get("linked"):
                click.echo(f"  linked   {r.stats['linked']:,} accounts changed owner")
            for p in r.failed_parts:
                click.secho(f"  not read: {p['part']}: {p['reason']}", fg="yellow")
            for n in r.notes:
                click.echo(f"  note: {n}")
            if r.error:
                click.secho(f"  {r.error}", fg="red")
    if any(not r.ok for r in results):
        sys.exit(1)


@click.command("stats")
@with_appcontext
@click.option("--json", "as_json", is_flag=True)
def stats_command(as_json: bool) -> None:
    """Active counts per source and kind."""
    with app_state().factory() as session:
        rows = stats(session)
    if as_json:
        echo_json(rows)
        return
    cols = ("identities", "accounts", "orphaned_accounts", "resources", "entitlements", "grants")
    click.echo(f"{'source':24} {'kind':8} " + " ".join(f"{c.replace('_accounts', ''):>12}" for c in cols))
    for r in rows:
        click.echo(f"{r['source']:24} {r['kind']:8} " + " ".join(f"{r[c]:>12,}" for c in cols))


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


COMMANDS: list[click.Command] = [db_group, sources_group, sync_command, stats_command, users_group, demo_command,
                                 serve_command, scheduler_command]


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
