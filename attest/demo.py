"""`attest demo`: load a demo organisation so a new user has something real to look at.

Each entry of DEMO_SOURCES adds one source and syncs it. Sources whose upstream is a sandbox service
(the fake Okta and GitHub, moto for AWS) name it in `sandbox`; `attest sandbox serve` (started by
`make run`) serves those on loopback ports.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from alembic import command
from sqlalchemy import select

from attest.auth.login import create_admin
from attest.cli_support import alembic_config
from attest.connectors.sandbox import SERVICES, idp, service_app
from attest.connectors.sandbox.server import serve_in_thread
from attest.db import transaction
from attest.entitlements.models import Source
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from attest.reviews import campaigns
from attest.reviews.definitions import DefinitionError, create_definition
from attest.reviews.models import Campaign, CampaignDefinition, CampaignStatus
from attest.web import AttestState

# the break-glass local admin: not admin@demo.example, whom the demo IdP signs in (SSO never signs in a
# local password account: attest/auth/oidc.py)
DEMO_ADMIN = "breakglass@demo.example"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "campaigns"  # in a checkout (make run)
DEMO_LAUNCH = "quarterly-manager-review.yaml"  # launched, so that a manager who signs in has items


@dataclass
class DemoSource:
    kind: str
    name: str
    settings: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    authoritative: bool | None = None
    schedule: str | None = None
    sandbox: str | None = None  # the sandbox service (attest.connectors.sandbox.SERVICES) it syncs from


# sources earlier demos added; `--reset` may delete them like the current ones
LEGACY_DEMO_SOURCES = ("demo-hr",)


def demo_sources(people: int) -> list[DemoSource]:
    # the sandbox Okta serves a fixed demo org (about 300 people) so `attest sandbox serve` and the demo agree
    return [
        DemoSource("okta", "okta", {"domain": "http://127.0.0.1:5101"}, {"token": "sandbox-token"},
                   authoritative=True, schedule="0 */6 * * *", sandbox="okta"),
        # the sandbox GitHub org acme-corp: 120 of those people with their SAML identities, nested teams, repos
        DemoSource("github", "github", {"orgs": "acme-corp", "api_url": "http://127.0.0.1:5102"},
                   {"token": "ghp_sandbox_token_for_attest"}, schedule="30 */6 * * *", sandbox="github"),
        # moto's AWS org: 4 accounts in OUs, Identity Center (40 of those people, groups, permission sets,
        # assignments) and IAM users tagged with their e-mails, service users, roles, keys
        DemoSource("aws", "aws", {"endpoint_url": "http://127.0.0.1:5103", "region": "us-east-1",
                                  "assume_role_name": "AttestAudit"},
                   {"access_key_id": "sandbox", "secret_access_key": "sandbox"}, schedule="15 */6 * * *",
                   sandbox="aws"),
    ]


@contextmanager
def sandboxes(specs: list[DemoSource], echo: Callable[[str], None] = print) -> Iterator[None]:
    """Serve, in this process and for the duration of the block, the sandbox services the specs need that
    nothing is listening for yet (`make run` starts `attest sandbox serve` only after `attest demo`)."""
    running = []
    try:
        for name in sorted({s.sandbox for s in specs if s.sandbox}):
            port = SERVICES[name][1]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    continue  # already served (attest sandbox serve is running)
            except OSError:
                pass
            running.append(serve_in_thread(service_app(name, demo=True), port=port))
            echo(f"started sandbox {name} on http://127.0.0.1:{port} for the demo sync")
        yield
    finally:
        for server in running:
            server.stop()


def _admin_password(instance: Path) -> str:
    path = instance / "demo_admin_password"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    path.write_text(password)
    path.chmod(0o600)
    return password


def reset_database(state: AttestState) -> None:
    cfg = alembic_config(state.settings.database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")


def load_demo(state: AttestState, *, reset: bool = False, people: int = 300,
              echo: Callable[[str], None] = print) -> list[str]:
    wanted = demo_sources(people)
    names = {d.name for d in wanted} | set(LEGACY_DEMO_SOURCES)
    with state.factory() as session:
        existing = {s.name: s.kind for s in session.scalars(select(Source))}
    if reset:
        real = sorted(n for n in existing if n not in names)
        if real:
            raise ValueError(f"--reset would delete real sources ({', '.join(real)}); refusing")
        reset_database(state)
        existing = {}
    for spec in wanted:
        if spec.name not in existing:
            with transaction(state.factory) as session:
                add_source(session, state.settings, spec.kind, spec.name, spec.settings, spec.secrets,
                           schedule=spec.schedule, authoritative=spec.authoritative, actor="demo")
    with sandboxes(wanted, echo):
        for spec in sorted(wanted, key=lambda s: not s.authoritative):
            result = run_sync(state.factory, state.settings, spec.name, force=True, triggered_by="demo", actor="demo")
            echo(f"synced {spec.name}: {result.status}"
                 + (f" ({result.error})" if result.error else f", {sum((result.stats.get('read') or {}).values()):,} records"))
    demo_campaigns(state.factory, echo=echo)
    password = _admin_password(Path(state.settings.instance_path))
    with transaction(state.factory) as session:
        create_admin(session, DEMO_ADMIN, password, display_name="Break-glass Admin", actor="demo")
    lines = [
        f"Open {state.settings.base_url} and sign in as {DEMO_ADMIN} with password {password}",
        "(the password is kept in instance/demo_admin_password)",
    ]
    return lines + _demo_sso(state)


def demo_campaigns(factory: Any, examples: Path = EXAMPLES, echo: Callable[[str], None] = print) -> None:
    """Store the shipped example campaign definitions and launch the quarterly manager review, once: a
    later `attest demo` adds only what is missing and launches again only when no campaign of it is open.
    Skipped where the examples are not (an installed package); a definition that does not fit the data
    (a sync failed) is reported and skipped: the demo still serves."""
    if not examples.is_dir():
        return
    with transaction(factory) as session:
        have = {d.name: d.id for d in session.scalars(select(CampaignDefinition))}
    launch_id = None
    for path in sorted(examples.glob("*.yaml")):
        text_ = path.read_text()
        name = (yaml.safe_load(text_) or {}).get("name")
        if name not in have:
            try:
                with transaction(factory) as session:
                    have[name] = create_definition(session, text_, "demo").id
            except DefinitionError as exc:
                echo(f"demo campaign {path.name} not loaded: {exc}")
                continue
            echo(f"campaign definition {have[name]}: {name}")
        if path.name == DEMO_LAUNCH:
            launch_id = have[name]
    if launch_id is None:
        return
    with transaction(factory) as session:
        running = session.scalar(select(Campaign.id).where(
            Campaign.definition_id == launch_id, Campaign.status.in_((CampaignStatus.DRAFT, CampaignStatus.ACTIVE))))
    if running is not None:
        return
    try:
        with transaction(factory) as session:
            campaign = campaigns.launch_definition(session, launch_id, "demo")
            echo(f"launched campaign {campaign.id}: {campaign.name} ({campaign.population['items']:,} items)")
    except campaigns.CampaignError as exc:
        echo(f"demo campaign not launched: {exc}")


def _demo_sso(state: AttestState) -> list[str]:
    """Single sign-on through the sandbox's mock IdP: its settings go to `.env` unless SSO is configured."""
    if state.settings.env != "development":  # tests and production never get a .env written for them
        return []
    if idp.write_demo_env():
        return [f"Single sign-on through the demo IdP ({idp.PROVIDER_NAME}, http://127.0.0.1:{idp.PORT}) was written to "
                f"{Path.cwd() / '.env'}: click 'Sign in with Demo IdP' and type a person's e-mail, e.g. "
                "ada.lovelace0@acme.example (a manager) or auditor@demo.example (an auditor). That .env is read "
                f"only when `attest run`, `attest serve` or `attest scheduler` start in {Path.cwd()}: started "
                "anywhere else, the UI has no single sign-on button"]
    if state.settings.oidc_client_id == idp.CLIENT_ID:
        return [f"Or click 'Sign in with {state.settings.oidc_provider_name}' and type a person's e-mail, e.g. "
                "ada.lovelace0@acme.example (a manager)"]
    return []
