"""Okta access managed elsewhere (issue 18), synced from the fake Okta over real HTTP: groups filled by an
ACTIVE group rule, imported groups (APP_GROUP, mastered by Active Directory), the BUILT_IN Everyone group.
A revoke of such a membership goes to the manual work list naming where to change it; no write reaches Okta."""

from __future__ import annotations

from sqlalchemy import select

from attest.connectors.managed import MANAGED_BY, ManagedKind, managed_elsewhere
from attest.connectors.sandbox.okta_fake import create_app
from attest.entitlements.models import Entitlement, Grant, Resource
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from attest.reviews import remediation
from attest.reviews.models import Remediation
from tests.reviews.test_remediation_connectors import revoke_in_campaign, served


def _groups(session) -> dict[str, Resource]:
    return {r.external_id: r for r in session.scalars(select(Resource).where(Resource.type == "okta_group"))}


def test_rule_imported_and_built_in_groups_carry_the_contract(factory, session, settings):
    okta = create_app(demo=True)
    with served(okta) as url:
        add_source(session, settings, "okta", "okta", {"domain": url}, {"token": "sandbox-token"}, authoritative=True)
        session.commit()
        assert run_sync(factory, settings, "okta").ok
    groups = _groups(session)
    rule = next(r for r in okta.rules if r["status"] == "ACTIVE")
    ruled = groups[rule["actions"]["assignUserToGroups"]["groupIds"][0]]
    found = managed_elsewhere(None, None, ruled.attributes)
    assert found.kind == ManagedKind.GROUP_RULE and found.by == rule["name"]
    imported = next(g for gid, g in groups.items() if okta.groups[gid]["type"] == "APP_GROUP")
    found = managed_elsewhere(None, None, imported.attributes)
    assert found.kind == ManagedKind.IMPORTED_GROUP
    assert found.by == f"Active Directory (ACME\\{imported.name})"
    everyone = groups[okta.group_ids[0]]
    assert managed_elsewhere(None, None, everyone.attributes).kind == ManagedKind.BUILT_IN
    inactive = {g for r in okta.rules if r["status"] != "ACTIVE" for g in r["actions"]["assignUserToGroups"]["groupIds"]}
    active = {g for r in okta.rules if r["status"] == "ACTIVE" for g in r["actions"]["assignUserToGroups"]["groupIds"]}
    for gid in inactive - active:  # an INACTIVE rule fills nothing
        assert MANAGED_BY not in groups[gid].attributes


def test_an_imported_groups_membership_becomes_a_manual_task_naming_active_directory(factory, session, settings):
    okta = create_app(demo=True)
    with served(okta) as url:
        add_source(session, settings, "okta", "okta", {"domain": url}, {"token": "sandbox-token"}, authoritative=True)
        session.commit()
        assert run_sync(factory, settings, "okta").ok
        gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "APP_GROUP" and okta.members[g])
        key = session.scalar(select(Grant.key).join(Entitlement, Entitlement.id == Grant.entitlement_id)
                             .join(Resource, Resource.id == Entitlement.resource_id)
                             .where(Resource.external_id == gid, Grant.ended_at.is_(None)).limit(1))
        rem_id = revoke_in_campaign(session, "okta", key)
        writes = [e for e in okta.log if e[0] != "GET"]
        remediation.run_pending(factory, settings)
        session.expire_all()
        rem = session.get(Remediation, rem_id)
        name = okta.groups[gid]["profile"]["name"]
        assert rem.mode == "manual" and rem.status == "in_progress"
        assert rem.target.startswith(f'group "{name}" is imported from Active Directory (ACME\\{name})')
        assert "Remove " in rem.target and "in Active Directory" in rem.target
        assert [e for e in okta.log if e[0] != "GET"] == writes  # nothing was called
