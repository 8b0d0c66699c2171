"""`attest campaigns ...`: define, preview, launch, close and cancel review campaigns from the shell;
`attest remediation ...`: run, list, export, mark done and undo the revocations campaigns decided.

    attest campaigns create --file examples/campaigns/quarterly-manager-review.yaml
    attest campaigns list
    attest campaigns preview DEF_ID            # or: preview --campaign CAMPAIGN_ID (a draft)
    attest campaigns launch DEF_ID             # creates the campaign from the definition and launches it
    attest campaigns launch --campaign ID      # launches a draft
    attest campaigns close CAMPAIGN_ID
    attest campaigns cancel CAMPAIGN_ID --reason "duplicate"

A mistake exits non-zero with the message (for YAML: the field and its line) and changes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from attest.cli_support import answered_rows, app_state, cli_actor, echo_json, fail, in_transaction
from attest.db import transaction
from attest.reviews.campaigns import CampaignError, cancel, close, create_campaign, launch, preview
from attest.reviews.definitions import DefinitionError, create_definition, update_definition
from attest.reviews.models import (
    REMEDIATION_STATUSES,
    Campaign,
    CampaignDefinition,
    CampaignStatus,
    RemediationStatus,
    ReviewItem,
)
from attest.reviews.remediation import (
    RemediationError,
    UndoError,
    describe,
    list_remediations,
    mark_done,
    run_pending,
    undo,
    write_manual_csv,
)


@click.group("campaigns", cls=AppGroup)
def campaigns_group() -> None:
    """Access review campaigns: definitions, preview, launch, close."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")
    raise AssertionError  # unreachable: fail exits


@campaigns_group.command("create")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False), help="A campaign definition in YAML.")
@click.option("--json", "as_json", is_flag=True)
def create_command(path: str, as_json: bool) -> None:
    """Create a campaign definition from a YAML file."""

    text = _read(path)
    try:
        with transaction(app_state().factory) as session:
            definition = create_definition(session, text, cli_actor())
            result = {"id": definition.id, "name": definition.name, "schedule": definition.schedule}
    except DefinitionError as exc:
        fail(f"{path}: {exc}")
    if as_json:
        echo_json(result)
        return
    click.echo(f"created definition {result['id']} {result['name']!r}"
               + (f" (recurring: {result['schedule']})" if result["schedule"] else ""))
    click.echo(f"  next: `attest campaigns preview {result['id']}` then `attest campaigns launch {result['id']}`")


@campaigns_group.command("update")
@click.argument("definition_id", type=int)
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False))
def update_command(definition_id: int, path: str) -> None:
    """Replace a definition with the YAML in a file (running campaigns keep the spec they launched with)."""

    text = _read(path)
    try:
        with transaction(app_state().factory) as session:
            definition = update_definition(session, definition_id, text, cli_actor())
            name = definition.name
    except DefinitionError as exc:
        fail(f"{path}: {exc}")
    click.echo(f"updated definition {definition_id} {name!r}")


@campaigns_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_command(as_json: bool) -> None:
    """Definitions and campaigns with their status and progress."""

    with app_state().factory() as session:
        definitions = session.scalars(select(CampaignDefinition).order_by(CampaignDefinition.id)).all()
        progress = {cid: (int(total), int(decided or 0)) for cid, total, decided in session.execute(
            select(ReviewItem.campaign_id, func.count(), func.count(ReviewItem.decision)).group_by(ReviewItem.campaign_id))}
        campaigns = session.scalars(select(Campaign).order_by(Campaign.id)).all()
        defs = [{"id": d.id, "name": d.name, "enabled": d.enabled, "schedule": d.schedule,
                 "stages": [s["reviewer"] for s in d.spec.get("stages", [])],
                 "last_launched_at": d.last_launched_at.isoformat() if d.last_launched_at else None} for d in definitions]
        camps = [{"id": c.id, "name": c.name, "definition_id": c.definition_id, "status": c.status,
                  "items": progress.get(c.id, (0, 0))[0], "decided": progress.get(c.id, (0, 0))[1],
                  "launched_at": c.launched_at.isoformat() if c.launched_at else None,
                  "due_at": c.due_at.isoformat() if c.due_at else None} for c in campaigns]
    if as_json:
        echo_json({"definitions": defs, "campaigns": camps})
        return
    if not defs and not camps:
        click.echo("no campaign definitions; create one with `attest campaigns create --file F`")
        return
    click.echo("definitions")
    for d in defs:
        click.echo(f"  {d['id']:>4}  {d['name'][:48]:48} {'/'.join(d['stages']):24} "
                   f"{d['schedule'] or 'ad hoc':18} last launch {(d['last_launched_at'] or 'never')[:16]}"
                   + ("" if d["enabled"] else "  (disabled)"))
    click.echo("campaigns")
    if not camps:
        click.echo("  none yet; `attest campaigns launch DEF_ID`")
    for c in camps:
        pct = f"{100 * c['decided'] / c['items']:.0f}%" if c["items"] else "-"
        click.echo(f"  {c['id']:>4}  {c['name'][:48]:48} {c['status']:10} {c['items']:>9,} items  {pct:>4} decided"
                   + (f"  due {c['due_at'][:10]}" if c["due_at"] and c["status"] == CampaignStatus.ACTIVE else ""))


def _print_preview(result: dict[str, Any], title: str) -> None:
    click.echo(title)
    click.echo(f"  in scope   {result['in_scope']:>10,}")
    click.echo(f"  items      {result['items']:>10,}  for {result['reviewers']:,} reviewers")
    for reason, n in result["excluded_by_reason"].items():
        click.echo(f"  excluded   {n:>10,}  {reason}")
    why = ("  (the fallback reviewer's own access, with nobody above them: choose another fallback_reviewer)"
           if result["fallback_reviewer"] else "  (launch needs a fallback_reviewer for these)")
    click.echo(f"  unroutable {result['unroutable']:>10,}" + (why if result["unroutable"] else ""))
    click.echo(f"  self-review reassigned {result['self_review_reassigned']:,}")
    routed = ", ".join(f"{k} {v:,}" for k, v in result["routed_by"].items())
    if routed:
        click.echo(f"  routed by  {routed}")
    risks = ", ".join(f"{k} {v:,}" for k, v in result["risk_counts"].items() if v)
    click.echo(f"  risks      {risks or 'none'}")
    top = result["per_reviewer"][:10]
    if top:
        click.echo("  busiest reviewers")
        for r in top:
            click.echo(f"    {r['items']:>8,}  {r['name'] or '?'} <{r['email'] or '-'}>")


@campaigns_group.command("preview")
@click.argument("definition_id", type=int, required=False)
@click.option("--campaign", "campaign_id", type=int, help="Preview a draft campaign instead of a definition.")
@click.option("--json", "as_json", is_flag=True)
def preview_command(definition_id: int | None, campaign_id: int | None, as_json: bool) -> None:
    """What launching definition DEFINITION_ID would produce now (nothing is written)."""

    if (definition_id is None) == (campaign_id is None):
        fail("give a definition id (`preview DEF_ID`) or a draft campaign (`preview --campaign ID`)")
    with app_state().factory() as session, session.begin():
        try:
            if campaign_id is not None:
                obj = session.get(Campaign, campaign_id)
                if obj is None:
                    fail(f"no campaign {campaign_id}")
                title = f"campaign {obj.id} {obj.name!r} (draft)"
            else:
                obj = session.get(CampaignDefinition, definition_id)
                if obj is None:
                    fail(f"no campaign definition {definition_id} (see `attest campaigns list`)")
                title = f"definition {obj.id} {obj.name!r}"
            result = preview(session, obj)
        except CampaignError as exc:
            fail(str(exc))
        session.rollback()
    if as_json:
        echo_json(result)
    else:
        _print_preview(result, title)


@campaigns_group.command("launch")
@click.argument("definition_id", type=int, required=False)
@click.option("--campaign", "campaign_id", type=int, help="Launch this draft campaign instead.")
@click.option("--name", help="Campaign name (default: the definition's name and today's date).")
@click.option("--json", "as_json", is_flag=True)
def launch_command(definition_id: int | None, campaign_id: int | None, name: str | None, as_json: bool) -> None:
    """Create a campaign from definition DEFINITION_ID and launch it (or launch a draft with --campaign)."""

    if (definition_id is None) == (campaign_id is None):
        fail("give a definition id (`launch DEF_ID`) or a draft campaign (`launch --campaign ID`)")
    try:
        with transaction(app_state().factory) as session:
            if campaign_id is None:
                campaign_id = create_campaign(session, definition_id, cli_actor(), name=name).id
            campaign = launch(session, campaign_id, cli_actor())
            result = {"id": campaign.id, "name": campaign.name, "status": campaign.status,
                      "due_at": campaign.due_at.isoformat(), "population": campaign.population,
                      "sync_runs": campaign.sync_runs}
    except CampaignError as exc:
        fail(str(exc))
    if as_json:
        echo_json(result)
        return
    pop = result["population"]
    click.secho(f"launched campaign {result['id']} {result['name']!r}: {pop['items']:,} items, due {result['due_at'][:10]}",
                fg="green")
    click.echo(f"  in scope {pop['in_scope']:,} = items {pop['items']:,} + excluded {pop['excluded']:,}"
               + "".join(f"; {k} {v:,}" for k, v in pop["excluded_by_reason"].items()))
    for r in result["sync_runs"]:
        click.echo(f"  data from {r['source']}: run {r['run_id'] or '-'} {r['status']} {(r['finished_at'] or '')[:16]}")


@campaigns_group.command("close")
@click.argument("campaign_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def close_command(campaign_id: int, as_json: bool) -> None:
    """Close an active campaign: apply the no-response outcome, create remediations, lock it."""

    try:
        with transaction(app_state().factory) as session:
            campaign = close(session, campaign_id, cli_actor())
            summary = campaign.summary
            name = campaign.name
    except CampaignError as exc:
        fail(str(exc))
    if as_json:
        echo_json({"id": campaign_id, "status": "closed", "summary": summary})
        return
    click.secho(f"closed campaign {campaign_id} {name!r}", fg="green")
    click.echo(f"  completion {summary['completion']}% ({summary['decided']:,} of {summary['items']:,} decided)")
    click.echo("  decisions  " + ", ".join(f"{k} {v:,}" for k, v in summary["decisions"].items()))
    click.echo("  outcomes   " + ", ".join(f"{k} {v:,}" for k, v in summary["outcomes"].items())
               + f" (no response: {summary['no_response']:,} -> {summary['no_response_outcome']})")
    click.echo(f"  remediations {summary['remediations']:,} pending ({summary['remediation_mode']})")


@campaigns_group.command("cancel")
@click.argument("campaign_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
def cancel_command(campaign_id: int, reason: str) -> None:
    """Cancel a draft or active campaign (no outcomes, no remediation)."""

    campaign = in_transaction(lambda session: cancel(session, campaign_id, cli_actor(), reason), CampaignError)
    click.echo(f"cancelled campaign {campaign_id} {campaign.name!r}: its decisions have no outcome and nothing is "
               "revoked")


# --- remediation ----------------------------------------------------------------------------------


@click.group("remediation", cls=AppGroup)
def remediation_group() -> None:
    """Carry out revocations of closed campaigns; the manual work list."""


@remediation_group.command("run")
@click.option("--campaign", "campaign_id", type=int, help="Only this campaign's remediations.")
@click.option("--dry-run", is_flag=True, help="List the calls that would be made; change nothing.")
@click.option("--yes", is_flag=True, help="Confirm a run with more revocations than ATTEST_REMEDIATION_MAX_PER_RUN.")
@click.option("--json", "as_json", is_flag=True)
def remediation_run(campaign_id: int | None, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Revoke through the connectors what reviewers revoked (automatic mode). Exits 1 if stopped or any failed."""

    state = app_state()
    try:
        report = run_pending(state.factory, state.settings, campaign_id=campaign_id, dry_run=dry_run,
                             confirm_over_cap=yes, actor=cli_actor())
    except RemediationError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report.as_dict())
    else:
        for line in describe(report.planned):
            click.echo(line)
        if not report.planned:
            click.echo("nothing is due")
        colour = "yellow" if report.stopped_for_cap or dry_run else "green"
        if report.count("failed") or report.count("refused"):
            colour = "red"
        click.secho(report.message or "done", fg=colour)
    if report.stopped_for_cap or report.count("failed"):
        sys.exit(1)


@remediation_group.command("list")
@click.option("--campaign", "campaign_id", type=int)
@click.option("--status", help="pending, in_progress, done, verified, reappeared, failed, refused, undone")
@click.option("--json", "as_json", is_flag=True)
def remediation_list(campaign_id: int | None, status: str | None, as_json: bool) -> None:
    """Every remediation with its status (reappeared ones are flagged)."""

    if status and status not in REMEDIATION_STATUSES:
        fail(f"--status must be one of {', '.join(REMEDIATION_STATUSES)}")
    with app_state().factory() as session:
        rows, after, out = [], None, []
        while True:
            rows, after = list_remediations(session, campaign_id, status=status, after=after, limit=1000)
            out.extend(rows)
            if after is None:
                break
    if answered_rows(out, as_json, "no remediations"):
        return
    for r in out:
        colour = {RemediationStatus.REAPPEARED: "red", RemediationStatus.FAILED: "red", RemediationStatus.REFUSED: "yellow", RemediationStatus.VERIFIED: "green"}.get(r.status)
        proof = f" (sync run {r.verified_run_id})" if r.verified_run_id else ""
        if r.status == RemediationStatus.REAPPEARED:
            proof = f" REAPPEARED in sync run {r.reappeared_run_id}"
        click.secho(f"#{r.id:<6} campaign {r.campaign_id:<4} {r.mode:9} {r.status:11}{proof}  {r.source}: "
                    f"{r.account or r.person or '?'} — {r.entitlement} on {r.resource or '?'}", fg=colour)
        if r.target and r.status not in (RemediationStatus.VERIFIED, RemediationStatus.UNDONE):
            click.echo(f"         where: {r.target}")
        if r.last_error and r.status in (RemediationStatus.FAILED, RemediationStatus.REFUSED, RemediationStatus.IN_PROGRESS):
            click.echo(f"         why: {r.last_error}")


@remediation_group.command("export-manual")
@click.option("--campaign", "campaign_id", type=int, required=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), required=True)
def remediation_export_manual(campaign_id: int, out: str) -> None:
    """The manual work list of a campaign (open manual tasks, refused and failed revokes) as CSV."""

    with app_state().factory() as session:
        if session.get(Campaign, campaign_id) is None:
            fail(f"no campaign with id {campaign_id}")
        with open(out, "w", newline="", encoding="utf-8") as fh:
            n = write_manual_csv(session, fh, campaign_id)
    click.echo(f"wrote {n} open tasks to {out}")


@remediation_group.command("mark-done")
@click.argument("remediation_id", type=int)
@click.option("--note", required=True, help="What was done, e.g. the ticket number.")
def remediation_mark_done(remediation_id: int, note: str) -> None:
    """Record that a manual task was carried out; the next sync verifies it."""

    in_transaction(lambda session: mark_done(session, remediation_id, cli_actor(), note), RemediationError)
    click.echo(f"remediation {remediation_id}: done; the next sync of its source verifies it")


@remediation_group.command("undo")
@click.argument("remediation_id", type=int)
def remediation_undo(remediation_id: int) -> None:
    """Re-grant what an automatic revoke removed (within ATTEST_REMEDIATION_UNDO_DAYS)."""

    state = app_state()
    try:
        undo(state.factory, state.settings, remediation_id, cli_actor())
    except UndoError as exc:
        fail(str(exc))
    click.echo(f"remediation {remediation_id}: undone, the access was granted again")


COMMANDS = [campaigns_group, remediation_group]
