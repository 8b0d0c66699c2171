"""A deterministic synthetic organisation, sized by parameters.

People with a manager tree (fan-out 7), departments and titles, terminated people who still hold access,
service accounts, orphaned accounts, groups (some nested), apps assigned to people and to groups, and
privileged admin roles. The same settings always give the same org; `generation` moves a `churn`
share of people to new access (about `churn` of grants ended and as many added), for resync benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from attest.connectors import managed
from attest.connectors.base import (
    AccountRecord,
    BaseConnector,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    Record,
    ResourceRecord,
    Setting,
)

DEPARTMENTS = ("Engineering", "Finance", "Sales", "Marketing", "Operations", "Legal", "People", "Support", "Security")
TITLES = {
    "Engineering": ("Software Engineer", "Senior Engineer", "Staff Engineer", "SRE"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "Sales": ("Account Executive", "Sales Engineer", "SDR"),
    "Marketing": ("Marketing Manager", "Content Lead", "Designer"),
    "Operations": ("Operations Analyst", "Program Manager"),
    "Legal": ("Counsel", "Paralegal"),
    "People": ("HR Partner", "Recruiter"),
    "Support": ("Support Engineer", "Support Lead"),
    "Security": ("Security Engineer", "GRC Analyst"),
}
FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger", "Radia",
         "Tim", "Hedy", "John", "Katherine", "Donald", "Sophie", "Guido", "Joan", "Niklaus", "Anita", "Bjarne",
         "Lynn", "Vint", "Shafi", "Whitfield", "Leslie", "Mary", "Yukihiro", "Jean")
LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen",
        "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "McCarthy", "Johnson", "Knuth", "Wilson", "van Rossum",
        "Clarke", "Wirth", "Borg", "Stroustrup", "Conway", "Cerf", "Goldwasser", "Diffie", "Lamport", "Shaw",
        "Matsumoto", "Sammet")
APPS = ("Salesforce", "Workday", "NetSuite", "Slack", "Zoom", "Jira", "Confluence", "Figma", "Datadog",
        "PagerDuty", "Snowflake", "Tableau", "Zendesk", "DocuSign", "Greenhouse", "Expensify", "1Password",
        "Looker", "Gong", "HubSpot")
ADMIN_ROLES = ("SUPER_ADMIN", "ORG_ADMIN", "APP_ADMIN", "USER_ADMIN", "READ_ONLY_ADMIN")
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


class DemoConnector(BaseConnector):
    kind: ClassVar[str] = "demo"
    AUTHORITATIVE_DEFAULT: ClassVar[bool] = True
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("people", "number of people", default=300, type=int),
        Setting("groups", "number of groups", default=40, type=int),
        Setting("apps", "number of apps", default=12, type=int),
        Setting("grants_per_person", "average direct grants per person", default=6, type=int),
        Setting("seed", "random seed", default=7, type=int),
        Setting("generation", "bump to move `churn` of people to new access", default=0, type=int),
        Setting("churn", "share of people whose access changes per generation", default=0.01, type=float),
        Setting("domain", "e-mail domain", default="demo.example"),
        Setting("fail_after", "testing: raise after this many records", default=0, type=int),
    )
    SECRETS: ClassVar[tuple[Setting, ...]] = ()

    def validate(self) -> None:
        self.calls += 1
        if int(self.settings.get("people", 0)) < 1:
            raise ValueError("people must be at least 1")

    # deterministic helpers -----------------------------------------------------------------------
    def _n(self, name: str) -> int:
        return int(self.settings.get(name) or dict((s.name, s.default) for s in self.SETTINGS)[name])

    def person_name(self, i: int) -> tuple[str, str]:
        return FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]

    def email(self, i: int) -> str:
        first, last = self.person_name(i)
        domain = self.settings.get("domain") or "demo.example"
        return f"{first.lower()}.{last.lower().replace(' ', '')}{i}@{domain}"

    def sync(self) -> Iterator[Record]:
        people = self._n("people")
        n_groups = max(self._n("groups"), 1)
        n_apps = max(min(self._n("apps"), len(APPS) * 50), 1)
        per_person = max(self._n("grants_per_person"), 1)
        seed = self._n("seed")
        generation = int(self.settings.get("generation") or 0)
        churn = float(self.settings.get("churn") or 0.0)
        fail_after = int(self.settings.get("fail_after") or 0)
        emitted = 0

        def counted(rec: Record) -> Record:
            nonlocal emitted
            emitted += 1
            if emitted > fail_after:
                raise ConnectionError(f"demo upstream failed after {fail_after} records")
            return rec

        emit = counted if fail_after else _same  # only tests pay for the counting

        self.calls += 1
        # people and their accounts; one random stream, a fixed number of draws per person
        base = random.Random(seed * 1_000_003)
        draw = base.random
        lags = (0, 1, 2, 3, 5, 8, 13, 21, 40, 120, 200)
        for i in range(people):
            u_term, u_susp, u_title, u_login, u_mfa = draw(), draw(), draw(), draw(), draw()
            first, last = self.person_name(i)
            dept = DEPARTMENTS[(i // 7) % 9] if i else "Operations"
            terminated = i > 10 and u_term < 0.02
            status = "terminated" if terminated else ("suspended" if u_susp < 0.005 else "active")
            titles = TITLES[dept]
            mail = self.email(i)
            name = f"{first} {last}"
            pid = f"p{i}"
            yield emit(IdentityRecord(
                pid, name, mail, mail, f"E{100000 + i}", dept,
                "Chief Executive" if i == 0 else titles[int(u_title * len(titles))],
                None if i == 0 else f"p{(i - 1) // 7}", status, "human",
            ))
            yield emit(AccountRecord(
                f"u{i}", mail, mail, name,
                "active",  # terminated in HR, still active here: the finding reviews exist for
                "human", EPOCH - timedelta(days=lags[int(u_login * 11)]), EPOCH - timedelta(days=30 + i % 900),
                u_mfa > 0.05, pid,
            ))
            if i % 100 == 99:
                self.calls += 1  # one "page" of 100 people
        n_service = max(people // 50, 1)
        for j in range(n_service):
            yield emit(AccountRecord(external_id=f"svc{j}", login=f"svc-integration-{j}", display_name=f"Integration {j}",
                                     kind="service", last_login_at=EPOCH - timedelta(days=j % 30)))
        n_orphans = max(people // 100, 1)
        for j in range(n_orphans):
            yield emit(AccountRecord(external_id=f"x{j}", login=f"contractor{j}@partner.example",
                                     email=f"contractor{j}@partner.example", display_name=f"Former contractor {j}",
                                     last_login_at=EPOCH - timedelta(days=60 + j)))

        # groups (every 10th nested under the one before), apps, admin roles
        for g in range(n_groups):
            dept = DEPARTMENTS[g % len(DEPARTMENTS)]
            owner = f"u{(g * 7) % people}"
            yield emit(ResourceRecord(external_id=f"g{g}", type="group", name=f"{dept}-team-{g}", is_group=True,
                                      description=f"{dept} team {g}", owner_refs=(owner,),
                                      attributes={"rule_managed": g % 13 == 5,
                                                  **(managed.emit(managed.ManagedKind.GROUP_RULE, f"{dept} by department")
                                                     if g % 13 == 5 else {})}))
            yield emit(EntitlementRecord(external_id=f"g{g}:member", resource_ref=f"g{g}", name="member",
                                         display_name=f"Member of {dept}-team-{g}", is_membership=True))
        for g in range(9, n_groups, 10):
            yield emit(GrantRecord(entitlement_ref=f"g{g - 1}:member", principal_ref=f"g{g}", principal_type="resource"))
        for a in range(n_apps):
            name = APPS[a % len(APPS)] + ("" if a < len(APPS) else f" {a // len(APPS) + 1}")
            owner = f"u{(a * 11 + 3) % people}"
            yield emit(ResourceRecord(external_id=f"app{a}", type="app", name=name, owner_refs=(owner,),
                                      description=f"{name} (SAML)"))
            yield emit(EntitlementRecord(external_id=f"app{a}:user", resource_ref=f"app{a}", name="user",
                                         display_name=f"{name} user"))
            yield emit(EntitlementRecord(external_id=f"app{a}:admin", resource_ref=f"app{a}", name="admin",
                                         display_name=f"{name} admin", privileged=True, purpose="permission"))
            # each app is assigned to a few groups
            for k in range(2):
                yield emit(GrantRecord(entitlement_ref=f"app{a}:user", principal_ref=f"g{(a * 3 + k) % n_groups}",
                                       principal_type="resource", attributes={"scope": "GROUP"}))
        yield emit(ResourceRecord(external_id="admin-console", type="admin_console", name="Admin console"))
        for role in ADMIN_ROLES:
            yield emit(EntitlementRecord(external_id=f"role:{role}", resource_ref="admin-console", name=role,
                                         display_name=role.replace("_", " ").title(), privileged=True,
                                         purpose="permission"))

        # grants per person: group memberships and direct app assignments. One random stream with a fixed
        # number of draws per person; a person moved by `generation` draws from their own stream instead,
        # so the others keep exactly the access they had.
        group_refs = [f"g{k}:member" for k in range(n_groups)]
        app_refs = [f"app{a}:user" for a in range(n_apps)]
        admin_refs = [f"app{a}:admin" for a in range(n_apps)]
        spread = 5 if per_person > 2 else 1
        width = 3 * (per_person + 2) + 1
        base = random.Random(seed * 1_000_003 * 31)
        draw = base.random
        for i in range(people):
            us = [draw() for _ in range(width)]
            if churn > 0 and generation > 0 and _hash01(seed, i, generation) < churn:
                own = random.Random((seed * 1_000_003 + i) * 31 + generation * 7919).random
                us = [own() for _ in range(width)]
            n = per_person + int(us[0] * spread) - (spread // 2)
            account = f"u{i}"
            seen: set[str] = set()
            for k in range(1, 3 * n + 1, 3):
                if us[k] < 0.6:
                    ref = group_refs[int(us[k + 1] * n_groups)]
                else:
                    ref = (admin_refs if us[k + 2] < 0.03 else app_refs)[int(us[k + 1] * n_apps)]
                if ref in seen:
                    continue
                seen.add(ref)
                yield emit(GrantRecord(ref, account))
        for j in range(n_service):
            yield emit(GrantRecord(entitlement_ref=f"app{j % n_apps}:admin", principal_ref=f"svc{j}"))
        for j in range(n_orphans):
            yield emit(GrantRecord(entitlement_ref=f"app{(j * 5) % n_apps}:user", principal_ref=f"x{j}"))
            yield emit(GrantRecord(entitlement_ref=f"g{j % n_groups}:member", principal_ref=f"x{j}"))
        # admin roles: a handful of people, one group
        for k, role in enumerate(ADMIN_ROLES):
            yield emit(GrantRecord(entitlement_ref=f"role:{role}", principal_ref=f"u{(k * 17 + 1) % people}"))
        yield emit(GrantRecord(entitlement_ref="role:READ_ONLY_ADMIN", principal_ref=f"g{min(3, n_groups - 1)}",
                               principal_type="resource"))


def _same(rec: Record) -> Record:
    return rec


def _hash01(seed: int, i: int, generation: int) -> float:
    return random.Random(seed * 7_777_777 + i * 131 + generation).random()
