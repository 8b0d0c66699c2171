"""`attest audit verify|checkpoint|public-key`, `attest evidence export|verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from attest.audit import evidence
from attest.audit.checkpoints import CheckpointError, open_store, verify_checkpoints, write_checkpoint
from attest.audit.log import verify_chain
from attest.cli_support import app_state, cli_actor, echo_json, fail
from attest.db import transaction
from attest.trail.models import AuditEvent, AuditHead

# --- audit ------------------------------------------------------------------------------------------


@click.group("audit", cls=AppGroup)
def audit_group() -> None:
    """The tamper-evident audit trail."""


def _pinned_public_key(key_file: str | None, required: bool = False):
    """The key to trust: --key FILE, else this instance's evidence key (ATTEST_SIGNING_KEY), else None."""

    if key_file:
        try:
            return evidence.load_public_key(Path(key_file).read_bytes())
        except ValueError as exc:
            fail(f"{key_file} is not an Ed25519 public key ({exc})")
    try:
        return evidence.load_signing_key(app_state().settings).public_key()
    except evidence.EvidenceError as exc:
        if required:
            fail(f"no key to check checkpoints against: {exc}; or pass --key FILE")
        return None


@audit_group.command("verify")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False),
              help="The public key the checkpoints must be signed with (default: this instance's evidence key).")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(key_file: str | None, as_json: bool) -> None:
    """Walk the whole chain and compare it with the signed checkpoints outside the database; name the first
    event changed, removed or inserted, and any checkpoint whose signature does not verify. Exits 1 on failure."""


    state = app_state()
    pinned = _pinned_public_key(key_file, required=True)
    store = open_store(state.settings)
    with state.factory() as session:
        problem = verify_chain(session)
        report = verify_checkpoints(session, store, pinned)
        count = session.scalar(select(func.count()).select_from(AuditEvent))
        head = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).first()
    # a rewrite that was re-hashed passes the chain walk; the checkpoints name it
    first = problem
    if report.problem is not None and (first is None or (report.problem.seq or 0) < (first.seq or 0)):
        first = report.problem
    ok = first is None and not report.bad
    uncovered = (head[0] - (report.latest_seq or 0)) if head else 0
    if as_json:
        echo_json({"ok": ok, "events": count, "head": {"seq": head[0], "hash": head[1]} if head else None,
                    "problem": None if first is None else {"seq": first.seq, "event_id": first.event_id,
                                                           "problem": first.problem},
                    "checkpoints": {"store": report.store, "verified": report.checkpoints, "bad": report.bad,
                                    "latest_seq": report.latest_seq, "events_after_latest": uncovered}})
    else:
        for bad in report.bad:
            click.secho(f"checkpoint NOT trusted: {bad}", fg="red", err=True)
        if first is not None:
            ident = f" (row id {first.event_id})" if first.event_id is not None else ""
            click.secho(f"audit chain BROKEN at {first}{ident}", fg="red", err=True)
        elif ok:
            click.secho(f"audit chain intact: {count:,} events"
                        + (f", head seq {head[0]} {head[1]}" if head else ""), fg="green")
        if first is None:
            click.echo(f"{report.checkpoints:,} signed checkpoints in {report.store} match the chain"
                       + (f" (up to seq {report.latest_seq}; {uncovered:,} newer events not yet checkpointed)"
                          if uncovered else ""))
    if not ok:
        sys.exit(1)


@audit_group.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the audit chain's head now and write it to the checkpoint store (ATTEST_AUDIT_CHECKPOINT_STORE)."""

    state = app_state()
    try:
        key = evidence.load_signing_key(state.settings)
        with transaction(state.factory) as session:
            written = write_checkpoint(session, key, open_store(state.settings), once_per_minute=False)
    except (evidence.EvidenceError, CheckpointError) as exc:
        fail(str(exc))
    if written is None:
        click.echo("nothing to checkpoint: no audit events since the last checkpoint")
    else:
        click.echo(f"wrote checkpoint {written.name} to {written.store}: seq {written.seq}, hash {written.hash}")


# --- evidence -------------------------------------------------------------------------------------


@click.group("evidence", cls=AppGroup)
def evidence_group() -> None:
    """Signed evidence bundles for auditors."""


@evidence_group.command("export")
@click.argument("campaign_id", type=int)
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), required=True, help="F.zip")
def evidence_export(campaign_id: int, out: str) -> None:
    """Write a campaign's signed evidence bundle (zip)."""

    state = app_state()
    try:
        result = evidence.export_bundle(state.factory, state.settings, campaign_id, out, actor=cli_actor())
    except evidence.EvidenceError as exc:
        fail(str(exc))
    click.echo(f"wrote {out}: {result.items:,} items, {result.bytes:,} bytes in {result.seconds['total']:.1f}s; "
               f"manifest SHA-256 {result.manifest_sha256}")
    for problem in result.problems_at_export:
        click.secho(f"warning: the audit chain was broken at export: {problem}", fg="yellow", err=True)


@evidence_group.command("verify")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False),
              help="The trusted public key (PEM or base64, from `attest evidence public-key`).")
@click.option("--fingerprint", help="The trusted key's fingerprint: its key id (16 hex digits) or SHA-256 (64).")
@click.option("--json", "as_json", is_flag=True)
def evidence_verify(path: str, key_file: str | None, fingerprint: str | None, as_json: bool) -> None:
    """Check a bundle offline against a pinned key (--key, --fingerprint, or else this instance's evidence key):
    the signature, file hashes, zip entries, audit events and checkpoints, self-decisions. Exits 1 on failure;
    a bundle is never trusted on the strength of the key it carries."""

    if key_file and fingerprint:
        fail("give --key or --fingerprint, not both")
    trusted = None if fingerprint else _pinned_public_key(key_file)
    result = evidence.check_bundle(path, trusted, fingerprint=fingerprint)
    if as_json:
        click.echo(json.dumps({"ok": not result.problems, "problems": result.problems, "key_id": result.key_id,
                               "campaign": result.campaign, "files": result.files, "events": result.events,
                               "checkpoints": result.checkpoints, "notes": result.notes}, indent=2))
    elif result.problems:
        for problem in result.problems:
            click.secho(f"FAIL {problem}", fg="red")
        click.secho(f"{path}: NOT verified ({len(result.problems)} problems)", fg="red")
    else:
        click.secho(f"{path}: verified — {result.files} files match the signed manifest, {result.events} audit "
                    f"events hash correctly ({result.checkpoints} signed checkpoints), signed by the trusted key "
                    f"{result.key_id}", fg="green")
        for note in result.notes:
            click.echo(f"note: {note}")
    if result.problems:
        sys.exit(1)


@evidence_group.command("public-key")
@click.option("--raw", is_flag=True, help="Print the base64 of the raw 32 bytes instead of PEM.")
def evidence_public_key(raw: bool) -> None:
    """Print the public key that verifies this installation's evidence bundles."""
    import base64


    try:
        pub = evidence.load_signing_key(app_state().settings).public_key()
    except evidence.EvidenceError as exc:
        fail(str(exc))
    if raw:
        click.echo(base64.b64encode(evidence.public_key_raw(pub)).decode())
    else:
        click.echo(evidence.public_key_pem(pub), nl=False)
        click.echo(f"# key id {evidence.key_id(pub)}", err=True)


COMMANDS = [audit_group, evidence_group]
