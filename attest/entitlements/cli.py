"""The `attest` commands of the entitlement model: `sources` (add, update, list, test, disable, enable,
rotate-keys, forget-secrets), `sync` and `stats`. Registered by attest/cli.py with the other areas' commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from attest.cli_support import (
    answered_rows,
    app_state,
    cli_actor,
    echo_json,
    fail,
    in_transaction,
    needs_keys,
)
from attest.connectors.registry import UnknownKind
from attest.db import transaction
from attest.entitlements.keys import fingerprint
from attest.entitlements.models import RunStatus, Source
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


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} must look like key=value", param_hint=what)
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


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
    if answered_rows(rows, as_json, "no sources; add one with `attest sources add KIND NAME --set key=value`"):
        return
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
    in_transaction(lambda session: disable_source(session, name, actor=cli_actor()), SourceError)
    click.echo(f"{name}: disabled (history kept)")


@sources_group.command("enable")
@click.argument("name")
def sources_enable(name: str) -> None:
    """Sync a disabled source again (on its schedule and when asked)."""
    in_transaction(lambda session: enable_source(session, name, actor=cli_actor()), SourceError)
    click.echo(f"{name}: enabled")


@sources_group.command("rotate-keys")
@needs_keys
def sources_rotate() -> None:
    """Re-encrypt every stored secret with the first key of ATTEST_ENCRYPTION_KEYS."""
    n = in_transaction(lambda session: rotate_secrets(session, app_state().settings), SourceError)
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
            colour = {RunStatus.SUCCEEDED: "green", RunStatus.PARTIAL: "yellow"}.get(r.status, "red")
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


COMMANDS: list[click.Command] = [sources_group, sync_command, stats_command]
