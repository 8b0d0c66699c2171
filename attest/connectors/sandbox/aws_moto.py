"""A moto-backed AWS organization for the tests, the benchmark and the demo.

Why one module of some 670 lines: it is one seeding of one organization (OrgSpec -> the calls that build
it, in order), plus the two ways it is served; its steps share the spec and the same-seed-same-ids rule.

`seed_org(spec)` builds, through the ordinary AWS APIs (boto3 against moto, in-process under `mock_aws` or
over HTTP to a moto server), an organization with OUs and member accounts; IAM Identity Center users,
groups, memberships, permission sets (managed, customer-managed and inline policies) and account
assignments; and in every account IAM users (e-mail tags, console passwords, access keys, MFA), groups,
roles with trust policies, and attached and inline policies. The same spec and seed give the same ids.

`create_app(demo=True)` returns moto's server WSGI app with the demo organization seeded, for
`attest sandbox serve` (port 5103) and for `attest demo`, which serves it in-process while it syncs when
nothing listens on 5103 yet (`make run` starts the sandbox after the demo). The seed is fixed, so both
build the same organization with the same ids.

moto gaps worth knowing (the connector handles the real behaviour; tests cover the rest):
- sso-admin `CreateInstance` is not implemented: moto gives every account one instance up front.
- `CreateAccountAssignment` does not provision the permission set, so the seed calls
  `ProvisionPermissionSet`; moto's `ListPermissionSetsProvisionedToAccount` ignores AccountId (every
  provisioned set is listed for every account; ListAccountAssignments still filters by account) and
  `ListAccountsForProvisionedPermissionSet` only ever names the caller's account.
- STS `AssumeRole` never checks that the role exists or trusts the caller.
- The credential report has no `<root_account>` row.
- moto builds the credential report afresh on every GetCredentialReport (with a fixed GeneratedTime of
  2015); AWS reuses a report for up to four hours. `credential_reports_as_aws()` makes moto answer as AWS
  does (a snapshot taken by GenerateCredentialReport, its real GeneratedTime, reused for four hours).
- moto records a role's RoleLastUsed on every request signed with its assumed-role credentials, as AWS
  does (the reader's own AssumeRole session marks its role used).

`fault_hooks(faults)` injects what an upstream incident does to a list, as botocore event hooks for a
connector's clients (`AwsConnector.hooks`), keyed "service:Operation" ("identitystore:ListUsers",
"organizations:ListAccountsForParent", "iam:GetAccountAuthorizationDetails"...): {"empty": True} answers
every page with empty lists and no next token; {"cut_at_page": k} answers page k with half of each list
and without its NextToken/Marker (IsTruncated false); {"drop_next_at": k} answers page k whole without
its token; {"repeat_next": True} answers the second page with the token that asked for it (the same
page again). AWS documents the tokens these break: a response's NextToken (or Marker with IsTruncated
true) asks for the next page; a response without one is the last page
(https://docs.aws.amazon.com/sdkref/latest/guide/feature-pagination.html,
https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetAccountAuthorizationDetails.html).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ADMIN_DOC = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
DEPLOY_DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::deploy-artifacts/*"},
    {"Effect": "Allow", "Action": ["ecs:UpdateService", "ecs:DescribeServices"], "Resource": "*"},
]}
READ_LOGS_DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["logs:Get*", "logs:Describe*", "logs:FilterLogEvents"], "Resource": "*"}]}
EXTERNAL_AUDITOR_ACCOUNT = "999988887777"
MANAGEMENT_ACCOUNT = "123456789012"  # moto's default account: whoever calls with unknown keys is here


@dataclass
class Person:
    first: str
    last: str
    email: str

    @property
    def username(self) -> str:
        return self.email

    @property
    def iam_name(self) -> str:
        return f"{_ascii(self.first)}.{_ascii(self.last)}"


@dataclass
class OrgSpec:
    """What to build. Counts are per member account unless they say otherwise."""

    accounts: int = 3  # including the management account
    ous: tuple[str, ...] = ("Production", "Development")
    iam_users: int = 4  # people with an e-mail tag; plus one service user per account
    iam_groups: int = 2  # besides Admins
    roles: int = 2  # besides the audit role
    ic_users: int = 8  # Identity Center users (taken from `people` when given)
    ic_groups: int = 3
    permission_sets: int = 4  # at least 3: Admin, ReadOnly, Deploy come first
    direct_assignments: int = 2  # users assigned directly per account
    group_assignments: int = 2  # groups assigned per account
    people: list[Person] = field(default_factory=list)
    seed: int = 5103
    role_name: str = "AttestAudit"
    region: str = "us-east-1"
    mfa_every: int = 2  # every n-th IAM person has a virtual MFA device
    cross_account_trust: bool = True  # a role in one member account assumable by a developer of another
    # Identity Center groups provisioned over SCIM by an external IdP (they carry ExternalIds): see _mark_scim
    scim_groups: tuple[str, ...] = ()


@dataclass
class SeededOrg:
    management_id: str
    account_ids: list[str]
    account_names: dict[str, str]
    instance_arn: str
    store_id: str
    ic_users: dict[str, str]  # username -> user id
    ic_groups: dict[str, str]  # display name -> group id
    ic_members: dict[str, list[str]]  # group id -> user ids
    permission_sets: dict[str, str]  # name -> ARN
    assignments: list[tuple[str, str, str, str]]  # (account id, permission set ARN, USER|GROUP, principal id)
    iam_users: dict[str, list[str]]  # account id -> user names
    calls: int = 0
    # the trust paths _seed_cross_account_trust built: "developer", "role", "wildcard_role" (ARNs)
    cross_account: dict[str, str] = field(default_factory=dict)


def default_people(n: int, domain: str = "demo.example") -> list[Person]:
    """The demo organization's people (the same names and e-mails the demo's HR source uses)."""
    from attest.connectors.demo import FIRST, LAST

    out = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        out.append(Person(first, last, f"{first.lower()}.{last.lower().replace(' ', '')}{i}@{domain}"))
    return out


class _Clients:
    """boto3 clients for one account (base credentials, or a role assumed into a member account)."""

    def __init__(self, endpoint_url: str | None, region: str, creds: dict[str, str] | None = None) -> None:
        import boto3

        self.kwargs: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            self.kwargs["endpoint_url"] = endpoint_url
        if creds:
            self.kwargs.update(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                               aws_session_token=creds["SessionToken"])
        elif endpoint_url:
            self.kwargs.update(aws_access_key_id="testing", aws_secret_access_key="testing")
        self.session = boto3.Session()
        self.cache: dict[str, Any] = {}
        self.calls = 0

    def __call__(self, service: str):
        if service not in self.cache:
            client = self.session.client(service, **self.kwargs)
            client.meta.events.register("before-call", self._count)
            self.cache[service] = client
        return self.cache[service]

    def _count(self, **_: Any) -> None:
        self.calls += 1


def seed_org(spec: OrgSpec | None = None, endpoint_url: str | None = None) -> SeededOrg:
    """Build the organization described by `spec` in moto (in-process under mock_aws, or at endpoint_url)."""
    spec = spec or OrgSpec()
    fast_managed_policies()
    _seed_random(spec.seed, endpoint_url)
    base = _Clients(endpoint_url, spec.region)
    clients_made = [base]
    orgs = base("organizations")
    try:
        orgs.create_organization(FeatureSet="ALL")
    except orgs.exceptions.AlreadyInOrganizationException:
        raise RuntimeError("this moto already holds an organization; seed a fresh one") from None
    org = orgs.describe_organization()["Organization"]
    mgmt = org["MasterAccountId"]
    root = orgs.list_roots()["Roots"][0]["Id"]
    ou_ids = [orgs.create_organizational_unit(ParentId=root, Name=name)["OrganizationalUnit"]["Id"]
              for name in spec.ous]
    account_ids = [mgmt]
    names = {mgmt: orgs.describe_account(AccountId=mgmt)["Account"]["Name"]}
    for k in range(1, spec.accounts):
        env = spec.ous[(k - 1) % len(spec.ous)].lower() if spec.ous else "member"
        name = f"{env}-{k:02d}"
        status = orgs.create_account(Email=f"aws+{name}@demo.example", AccountName=name)["CreateAccountStatus"]
        acct = status["AccountId"]
        if ou_ids:
            orgs.move_account(AccountId=acct, SourceParentId=root, DestinationParentId=ou_ids[(k - 1) % len(ou_ids)])
        account_ids.append(acct)
        names[acct] = name

    people = spec.people or default_people(max(spec.ic_users, spec.iam_users))
    iam_users: dict[str, list[str]] = {}
    sts = base("sts")
    iam_of: dict[str, Any] = {}
    for k, acct in enumerate(account_ids):
        if acct == mgmt:
            c = base
        else:
            creds = sts.assume_role(RoleArn=f"arn:aws:iam::{acct}:role/OrganizationAccountAccessRole",
                                    RoleSessionName="attest-seed")["Credentials"]
            c = _Clients(endpoint_url, spec.region, creds)
            clients_made.append(c)
        iam_of[acct] = c("iam")
        iam_users[acct] = _seed_iam(iam_of[acct], acct, mgmt, k, spec, people)

    ic = _seed_identity_center(base, spec, people, account_ids)
    cross = _seed_cross_account_trust(iam_of, account_ids, iam_users) if spec.cross_account_trust else {}
    return SeededOrg(
        management_id=mgmt, account_ids=account_ids, account_names=names, iam_users=iam_users,
        calls=sum(c.calls for c in clients_made), cross_account=cross, **ic,
    )


_FAST = threading.Lock()
_fast_applied = False


def fast_managed_policies() -> None:
    """Make moto's AWS-managed-policy loading cheap: parse its data once per process, and load it only
    for the commercial partition (moto otherwise parses ~1,600 policies for each of six partitions of
    every account it meets: 3 s per account). Only affects the process's moto; harmless if moto changes."""
    global _fast_applied
    with _FAST:
        if _fast_applied:
            return
        try:
            from moto.iam import models as iam_models
            from moto.iam.aws_managed_policies import aws_managed_policies_data
        except ImportError:  # pragma: no cover - moto is a dependency
            return
        original = getattr(iam_models.IAMBackend, "_init_aws_policies", None)
        if original is None:  # pragma: no cover - a moto without the hook
            return
        parsed = json.loads(aws_managed_policies_data)

        def _init_aws_policies(self):  # type: ignore[no-untyped-def]
            from moto.settings import load_iam_aws_managed_policies

            if not load_iam_aws_managed_policies() or getattr(self, "partition", "aws") != "aws":
                return []
            return [iam_models.AWSManagedPolicy.from_data(name, self.account_id, self.region_name, d)
                    for name, d in parsed.items()]

        iam_models.IAMBackend._init_aws_policies = _init_aws_policies
        _fast_applied = True


def _seed_random(seed: int, endpoint_url: str | None) -> None:
    """Same seed, same ids: moto draws every id from one random source."""
    if endpoint_url:
        import urllib.request

        req = urllib.request.Request(f"{endpoint_url.rstrip('/')}/moto-api/seed?a={int(seed)}", method="POST")  # noqa: S310 - loopback moto
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass
    else:
        from moto.moto_api._internal import mock_random

        mock_random.seed(seed)


def _seed_iam(iam, acct: str, mgmt: str, k: int, spec: OrgSpec, people: list[Person]) -> list[str]:
    """One account's IAM: Admins + team groups, people with e-mail tags, a service user, roles."""
    iam.create_policy(PolicyName="BreakGlassAdmin", PolicyDocument=json.dumps(ADMIN_DOC),
                      Description="full access for emergencies")
    deploy = iam.create_policy(PolicyName="DeployApp", PolicyDocument=json.dumps(DEPLOY_DOC))["Policy"]["Arn"]
    iam.create_group(GroupName="Admins")
    iam.attach_group_policy(GroupName="Admins", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    teams = []
    for g in range(spec.iam_groups):
        name = ("Developers", "ReadOnly", "Billing", "DataTeam", "Support")[g % 5] + ("" if g < 5 else f"{g}")
        iam.create_group(GroupName=name)
        iam.attach_group_policy(GroupName=name, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
        if g == 0:
            iam.attach_group_policy(GroupName=name, PolicyArn=deploy)
        teams.append(name)
    users = []
    for i in range(spec.iam_users):
        p = people[(i + k * 3) % len(people)]
        name = p.iam_name if spec.iam_users <= len(people) else f"{p.iam_name}{i}"
        iam.create_user(UserName=name, Tags=[{"Key": "email", "Value": p.email}, {"Key": "team", "Value": "eng"}])
        if i % 3 != 2:  # most people sign in to the console; the rest only use keys
            iam.create_login_profile(UserName=name, Password="Demo-password-1!")
        if i % 2 == 0:
            iam.create_access_key(UserName=name)
        if spec.mfa_every and i % spec.mfa_every == 0:
            serial = iam.create_virtual_mfa_device(VirtualMFADeviceName=f"{name}-mfa")["VirtualMFADevice"]["SerialNumber"]
            iam.enable_mfa_device(UserName=name, SerialNumber=serial, AuthenticationCode1="123456",
                                  AuthenticationCode2="654321")
        if i == 0:
            iam.add_user_to_group(GroupName="Admins", UserName=name)
        elif teams:
            iam.add_user_to_group(GroupName=teams[i % len(teams)], UserName=name)
        if i == 1:
            iam.put_user_policy(UserName=name, PolicyName="read-logs", PolicyDocument=json.dumps(READ_LOGS_DOC))
        users.append(name)
    svc = f"svc-deploy-{k:02d}"
    iam.create_user(UserName=svc, Tags=[{"Key": "owner", "Value": "platform"}])
    iam.create_access_key(UserName=svc)
    iam.attach_user_policy(UserName=svc, PolicyArn=deploy)
    users.append(svc)

    trust_mgmt = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                          "Principal": {"AWS": f"arn:aws:iam::{mgmt}:root"}}]}
    if acct != mgmt:
        iam.create_role(RoleName=spec.role_name, AssumeRolePolicyDocument=json.dumps(trust_mgmt),
                        Description="read-only audit role assumed by Attest")
        iam.attach_role_policy(RoleName=spec.role_name, PolicyArn="arn:aws:iam::aws:policy/SecurityAudit")
    role_specs = [
        ("app-runtime", {"Service": "ecs-tasks.amazonaws.com"}, deploy),
        ("vendor-auditor", {"AWS": f"arn:aws:iam::{EXTERNAL_AUDITOR_ACCOUNT}:root"},
         "arn:aws:iam::aws:policy/ReadOnlyAccess"),
        ("ci-admin", {"Federated": f"arn:aws:iam::{acct}:oidc-provider/token.actions.githubusercontent.com"},
         "arn:aws:iam::aws:policy/AdministratorAccess"),
    ]
    for r in range(spec.roles):
        name, principal, policy = role_specs[r % len(role_specs)]
        name = name if r < len(role_specs) else f"{name}-{r}"
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal,
                                                       "Action": "sts:AssumeRole"}]}
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(doc))
        iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    return users


def _seed_cross_account_trust(iam_of: dict[str, Any], account_ids: list[str],
                              iam_users: dict[str, list[str]]) -> dict[str, str]:
    """Who can assume which role, across accounts (issue 17): in the second member account (B) a role
    `cross-account-deploy` whose trust policy names a developer (an IAM user of the Developers group) of
    the first member account (A), who may call sts:AssumeRole on it (AWS needs both sides for a
    cross-account assumption: https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_aws-accounts.html),
    and a role `shared-reader` trusting any AWS principal ("AWS": "*") with only an sts:ExternalId
    condition (the confused-deputy pattern: https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html).
    The vendor-auditor roles already trust an account outside the organization."""
    members = account_ids[1:]
    if len(members) < 2:
        return {}
    a, b = members[0], members[1]
    developer = next((u for i, u in enumerate(iam_users[a]) if i % 2 == 0 and i > 0 and not u.startswith("svc-")),
                     iam_users[a][0])
    dev_arn = f"arn:aws:iam::{a}:user/{developer}"
    role_arn = f"arn:aws:iam::{b}:role/cross-account-deploy"
    iam_a, iam_b = iam_of[a], iam_of[b]
    iam_b.create_role(RoleName="cross-account-deploy", Description="deploys from the development account",
                      AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                          {"Sid": "DeveloperFromDev", "Effect": "Allow", "Principal": {"AWS": dev_arn},
                           "Action": "sts:AssumeRole"}]}))
    iam_b.attach_role_policy(RoleName="cross-account-deploy", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    iam_a.put_user_policy(UserName=developer, PolicyName="assume-deploy", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}]}))
    iam_b.create_role(RoleName="shared-reader", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "shared-reader-2026"}}}]}))
    iam_b.attach_role_policy(RoleName="shared-reader", PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    return {"developer": dev_arn, "role": role_arn, "wildcard_role": f"arn:aws:iam::{b}:role/shared-reader"}


SCIM_ISSUER = "https://sts.windows.net/8f1c2e0a-0000-4000-8000-00000000a77e/"  # an Entra ID tenant (example)


def _mark_scim(store_id: str, group_id: str, issuer: str, external_id: str) -> bool:
    """Give an Identity Center group the ExternalIds an external IdP's SCIM provisioning gives it.

    Neither AWS's IdentityStore API nor moto's has a call that sets ExternalIds: AWS sets them when an
    external identity provider provisions the group over SCIM ("ExternalIds: A list of ExternalId objects
    that contains the identifiers issued to this resource by an external identity provider", IdentityStore
    API reference, Group; https://docs.aws.amazon.com/singlesignon/latest/developerguide/provision-automatically.html),
    and moto has no SCIM endpoint. moto does keep `Group.ExternalIds` and serves them in ListGroups and
    DescribeGroup, so the sandbox writes them into moto's store, which it can reach only in this process
    (mock_aws, or a ThreadedMotoServer started here); False when it cannot. moto's User has no ExternalIds
    at all (DescribeUser answers null), so users cannot be marked."""
    from moto.identitystore.models import (
        identitystore_backends,  # the sandbox alone reaches into moto's state
    )

    for per_account in list(identitystore_backends.values()):
        for backend in list(per_account.values()):
            data = backend.identity_stores.get(store_id)
            if data is not None and group_id in data.groups:
                data.groups[group_id] = data.groups[group_id]._replace(
                    ExternalIds=[{"Issuer": issuer, "Id": external_id}])
                return True
    return False


def _seed_identity_center(base: _Clients, spec: OrgSpec, people: list[Person], account_ids: list[str]) -> dict[str, Any]:
    sso = base("sso-admin")
    store = base("identitystore")
    inst = sso.list_instances()["Instances"][0]  # moto: CreateInstance is not implemented; one exists up front
    instance, store_id = inst["InstanceArn"], inst["IdentityStoreId"]
    users: dict[str, str] = {}
    for i in range(spec.ic_users):
        p = people[i % len(people)]
        username = p.username if spec.ic_users <= len(people) else f"{i}.{p.username}"
        uid = store.create_user(
            IdentityStoreId=store_id, UserName=username, DisplayName=f"{p.first} {p.last}",
            Name={"GivenName": p.first, "FamilyName": p.last},
            Emails=[{"Value": p.email if spec.ic_users <= len(people) else username, "Type": "work", "Primary": True}],
        )["UserId"]
        users[username] = uid
    user_ids = list(users.values())
    groups: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    group_names = ["aws-admins", "aws-developers", "aws-readonly", "aws-data", "aws-support"]
    for g in range(spec.ic_groups):
        name = group_names[g % len(group_names)] + ("" if g < len(group_names) else f"-{g}")
        gid = store.create_group(IdentityStoreId=store_id, DisplayName=name, Description=f"{name} (synced from the IdP)")["GroupId"]
        groups[name] = gid
        # admins: a few people; the others: a slice of everyone
        chosen = user_ids[:2] if g == 0 else user_ids[g::max(spec.ic_groups, 2)]
        members[gid] = []
        for uid in chosen:
            store.create_group_membership(IdentityStoreId=store_id, GroupId=gid, MemberId={"UserId": uid})
            members[gid].append(uid)
        if name in spec.scim_groups:
            _mark_scim(store_id, gid, SCIM_ISSUER, f"{name}-0000-scim")

    sets: dict[str, str] = {}
    templates = [
        ("AdministratorAccess", "arn:aws:iam::aws:policy/AdministratorAccess", None, None),
        ("ReadOnly", "arn:aws:iam::aws:policy/ReadOnlyAccess", None, None),
        ("Deploy", None, {"Name": "DeployApp", "Path": "/"}, READ_LOGS_DOC),
        ("BreakGlass", None, {"Name": "BreakGlassAdmin", "Path": "/"}, None),
        ("Billing", "arn:aws:iam::aws:policy/AWSBillingReadOnlyAccess", None, None),
        ("PowerUser", "arn:aws:iam::aws:policy/PowerUserAccess", None, None),
    ]
    for n in range(spec.permission_sets):
        name, managed, customer, inline = templates[n % len(templates)]
        name = name if n < len(templates) else f"{name}-{n}"
        arn = sso.create_permission_set(InstanceArn=instance, Name=name, Description=f"{name} permission set",
                                        SessionDuration="PT8H")["PermissionSet"]["PermissionSetArn"]
        if managed:
            sso.attach_managed_policy_to_permission_set(InstanceArn=instance, PermissionSetArn=arn,
                                                        ManagedPolicyArn=managed)
        if customer:
            sso.attach_customer_managed_policy_reference_to_permission_set(
                InstanceArn=instance, PermissionSetArn=arn, CustomerManagedPolicyReference=customer)
        if inline:
            sso.put_inline_policy_to_permission_set(InstanceArn=instance, PermissionSetArn=arn,
                                                    InlinePolicy=json.dumps(inline))
        # moto's CreateAccountAssignment does not provision the set (AWS does): provision it explicitly
        sso.provision_permission_set(InstanceArn=instance, PermissionSetArn=arn, TargetType="ALL_PROVISIONED_ACCOUNTS")
        sets[name] = arn
    set_arns = list(sets.values())
    group_ids = list(groups.values())
    assignments: list[tuple[str, str, str, str]] = []

    def assign(acct: str, ps: str, ptype: str, pid: str) -> None:
        key = (acct, ps, ptype, pid)
        if key in assignments:
            return
        sso.create_account_assignment(InstanceArn=instance, TargetId=acct, TargetType="AWS_ACCOUNT",
                                      PermissionSetArn=ps, PrincipalType=ptype, PrincipalId=pid)
        assignments.append(key)

    for k, acct in enumerate(account_ids):
        if group_ids and set_arns:
            assign(acct, set_arns[0], "GROUP", group_ids[0])  # aws-admins: AdministratorAccess everywhere
        for j in range(1, spec.group_assignments):
            if len(group_ids) > j:
                assign(acct, set_arns[j % len(set_arns)], "GROUP", group_ids[j])
        for j in range(spec.direct_assignments):
            if user_ids:
                uid = user_ids[(k * spec.direct_assignments + j + 2) % len(user_ids)]
                assign(acct, set_arns[(j + 1 + k) % len(set_arns)], "USER", uid)
    return {"instance_arn": instance, "store_id": store_id, "ic_users": users, "ic_groups": groups,
            "ic_members": members, "permission_sets": sets, "assignments": assignments}


# --- the demo ------------------------------------------------------------------------------------------


def _ascii(name: str) -> str:
    import re
    import unicodedata

    name = name.replace("ø", "o").replace("Ø", "O").replace("ł", "l").replace("Ł", "L")
    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", name).lower())


def demo_people(n: int) -> list[Person]:
    """The sandbox Okta's people (first n), with the e-mails it gives them, so the demo links AWS access
    to the same people; the HR demo's people when the sandbox Okta is not installed."""
    try:
        from attest.connectors.sandbox.okta_fake import person_name
    except ImportError:  # pragma: no cover - the sandbox Okta ships with Attest
        return default_people(n)
    out = []
    for i in range(n):
        first, last = person_name(i)
        out.append(Person(first, last, f"{_ascii(first)}.{_ascii(last)}{i}@acme.example".lower()))
    return out

DEMO_SPEC = OrgSpec(accounts=4, ous=("Production", "Development", "Sandbox"), iam_users=5, iam_groups=2, roles=3,
                    ic_users=40, ic_groups=4, permission_sets=5, direct_assignments=3, group_assignments=3)


def demo_spec() -> OrgSpec:
    spec = OrgSpec(**{k: getattr(DEMO_SPEC, k) for k in DEMO_SPEC.__dataclass_fields__})
    spec.people = demo_people(max(spec.ic_users, spec.iam_users) + 10)
    return spec


def _enable_managed_policies() -> None:
    # AdministratorAccess & co. must exist in IAM for attachments; moto reads this when an account's IAM starts
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"


def create_app(demo: bool = False, **_: Any):
    """moto's server WSGI app (every AWS service on one endpoint); with demo=True, the demo org seeded."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    _enable_managed_policies()
    fast_managed_policies()
    app = DomainDispatcherApplication(create_backend_app)
    if demo:
        # moto's state is process-wide: seed through a short-lived quiet server, then serve the same state
        with _quiet_server(app) as url:
            seed_org(demo_spec(), endpoint_url=url)
    return app


class _quiet_server:
    """Serve a WSGI app on a free loopback port without logging every request (seeding makes hundreds)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __enter__(self) -> str:
        from moto.server import MotoRequestHandler
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, name="moto-seed", daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@contextmanager
def credential_reports_as_aws(clock: Callable[[], datetime] | None = None) -> Iterator[None]:
    """Make moto's IAM credential report behave as AWS documents it, while the block runs (in-process moto).

    AWS: GenerateCredentialReport generates a report only when there is none or the last one is more than
    four hours old; otherwise the existing report is kept and returned by GetCredentialReport, unchanged,
    with the GeneratedTime of its generation. A user created (or a key added) since is not in it
    (https://docs.aws.amazon.com/IAM/latest/APIReference/API_GenerateCredentialReport.html,
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetCredentialReport.html,
    https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html: "If the existing
    report is less than four hours old, IAM does not generate a new one"). `clock` (default: now) is the
    service's time, so a test can age a report.
    """
    from moto.iam import models, responses
    from moto.iam.exceptions import ReportNotPresentException

    now = clock or (lambda: datetime.now(UTC))
    backend_cls, response_cls = models.IAMBackend, responses.IamResponse
    saved = (backend_cls.generate_report, backend_cls.get_credential_report, backend_cls.report_generated,
             response_cls.get_credential_report)
    build = saved[1]

    def generate_report(self: Any) -> None:
        snap = getattr(self, "_aws_report", None)
        if snap is not None and now() - snap[1] < timedelta(hours=4):
            return  # AWS keeps a report less than four hours old
        self.credential_report = True
        self._aws_report = (build(self), now())

    def report_generated(self: Any) -> bool:
        return getattr(self, "_aws_report", None) is not None

    def get_credential_report(self: Any) -> str:
        snap = getattr(self, "_aws_report", None)
        if snap is None:
            raise ReportNotPresentException("Credential report not present")
        return snap[0]

    def get_credential_report_response(self: Any) -> Any:
        result = saved[3](self)
        snap = getattr(self.backend, "_aws_report", None)
        if snap is not None:
            result.result["GeneratedTime"] = snap[1].strftime("%Y-%m-%dT%H:%M:%SZ")
        return result

    backend_cls.generate_report = generate_report
    backend_cls.get_credential_report = get_credential_report
    backend_cls.report_generated = report_generated
    response_cls.get_credential_report = get_credential_report_response
    try:
        yield
    finally:
        (backend_cls.generate_report, backend_cls.get_credential_report, backend_cls.report_generated,
         response_cls.get_credential_report) = saved
        from moto.iam.models import iam_backends

        for account in list(iam_backends.values()):
            for backend in list(account.values()):
                backend.__dict__.pop("_aws_report", None)


_TOKENS = ("NextToken", "Marker", "nextToken")


def fault_hooks(faults: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """(event, handler) pairs for AwsConnector.hooks that fault the named operations' answers (see the
    module doc). Pages are numbered per listing: a request without a token is page 1."""
    hooks: list[tuple[str, Any]] = []
    for name, fault in faults.items():
        service, _, operation = name.partition(":")
        page_of: dict[str, int] = {}  # a next token -> the page it asks for
        lock = threading.Lock()

        def before(params: dict[str, Any], context: dict[str, Any], _page_of=page_of, _lock=lock, **_: Any) -> None:
            body = params.get("body") or {}
            if isinstance(body, bytes):
                body = body.decode()
            if isinstance(body, str) and body.lstrip().startswith("{"):  # JSON protocols
                body = json.loads(body)
            if isinstance(body, str):  # the query protocol (IAM): the token is a form field
                from urllib.parse import parse_qs

                form = parse_qs(body)
                token = next((form[k][0] for k in _TOKENS if k in form), None)
            else:
                token = next((body[k] for k in _TOKENS if body.get(k)), None)
            with _lock:
                context["fault_page"] = _page_of.get(token, 1) if token else 1
                context["fault_token"] = token

        def after(parsed: dict[str, Any], context: dict[str, Any], _fault=fault, _page_of=page_of, _lock=lock,
                  **_: Any) -> None:
            page = context.get("fault_page", 1)
            lists = [k for k, v in parsed.items() if isinstance(v, list)]
            token_key = next((k for k in _TOKENS if parsed.get(k)), None)
            if _fault.get("empty"):
                for k in lists:
                    parsed[k] = []
                _end(parsed)
            elif _fault.get("cut_at_page") == page:
                for k in lists:
                    parsed[k] = parsed[k][: len(parsed[k]) // 2]
                _end(parsed)
            elif _fault.get("drop_next_at") == page:
                _end(parsed)
            elif _fault.get("repeat_next") and page >= 2 and context.get("fault_token"):
                parsed[token_key or "NextToken"] = context["fault_token"]
                if "IsTruncated" in parsed:
                    parsed["IsTruncated"] = True
            token = next((parsed[k] for k in _TOKENS if parsed.get(k)), None)
            if token:
                with _lock:
                    _page_of.setdefault(token, page + 1)

        hooks.append((f"before-call.{service}.{operation}", before))
        hooks.append((f"after-call.{service}.{operation}", after))
    return hooks


def _end(parsed: dict[str, Any]) -> None:
    for k in _TOKENS:
        parsed.pop(k, None)
    if "IsTruncated" in parsed:
        parsed["IsTruncated"] = False
