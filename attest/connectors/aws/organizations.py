"""Organizations: the organization, its OUs and accounts, and its service control policies.

Read with the base credentials from the management account. The SCP helpers say which SCPs are in force
on an account and which of them keep IAM administration from it (named on privileged entitlements).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from attest.connectors.aws.errors import describe, error_code
from attest.connectors.aws.policies import allows_iam, denies_iam_admin
from attest.connectors.aws.transforms import OrgAccount, _parse_dt
from attest.connectors.base import Note, PartFailed, Record, ResourceRecord

SCP_PART = "aws:scps"  # the part of the service control policies (read from the management account)


@dataclass
class Org:
    base_account: str
    partition: str
    management_id: str
    org: dict[str, Any] | None
    ous: list[dict[str, Any]]
    accounts: list[OrgAccount]


class OrganizationsMixin:
    """Reads the organization once per connector (`_org`) and the SCPs once per sync (`_scps`).
    Uses SessionsMixin's `_client` and `_pages`."""

    allow: list[str]
    _org: Org | None
    _org_note: str | None
    _caller_arn: str
    _root_ids: list[str]
    _scps: dict[str, dict[str, Any]]
    _scps_failed: bool
    _client: Callable[..., Any]
    _pages: Callable[..., Iterator[dict[str, Any]]]

    def _load_org(self) -> Org:
        if self._org is not None:
            return self._org
        ident = self._client("sts").get_caller_identity()
        base_account = ident["Account"]
        self._caller_arn = str(ident.get("Arn") or "")
        partition = ident["Arn"].split(":")[1] if ident.get("Arn", "").startswith("arn:") else "aws"
        orgs = self._client("organizations")
        try:
            org = orgs.describe_organization()["Organization"]
        except ClientError as exc:
            code = error_code(exc)
            if code not in ("AWSOrganizationsNotInUseException", "AccessDeniedException"):
                raise
            self._org = Org(base_account, partition, base_account, None, [],
                             [OrgAccount(base_account, base_account)])
            self._org_note = (
                f"account {base_account} is not in an AWS Organization; syncing it alone"
                if code == "AWSOrganizationsNotInUseException" else
                f"Organizations is not readable with these credentials ({code}); syncing account {base_account} alone"
            )
            return self._org
        self._org_note = None
        roots = list(self._pages(orgs, "list_roots", "Roots"))
        self._root_ids = [r["Id"] for r in roots]
        ous: list[dict[str, Any]] = []
        accounts: list[OrgAccount] = []
        org_ref = f"org:{org['Id']}"
        # breadth-first from each root; the root itself is represented by the organization resource
        queue: list[tuple[str, str, str]] = [(r["Id"], org_ref, "") for r in roots]
        while queue:
            node_id, node_ref, path = queue.pop(0)
            for a in self._pages(orgs, "list_accounts_for_parent", "Accounts", ParentId=node_id):
                accounts.append(OrgAccount(
                    id=a["Id"], name=a.get("Name") or a["Id"], email=a.get("Email"), status=a.get("Status", "ACTIVE"),
                    parent_ref=node_ref, ou_path=path or "/", joined_method=a.get("JoinedMethod"),
                    joined_at=_parse_dt(a.get("JoinedTimestamp")),
                ))
            for ou in self._pages(orgs, "list_organizational_units_for_parent", "OrganizationalUnits", ParentId=node_id):
                ou_path = f"{path}/{ou.get('Name') or ou['Id']}"
                ous.append({"Id": ou["Id"], "Name": ou.get("Name"), "ParentRef": node_ref, "Path": ou_path})
                queue.append((ou["Id"], f"ou:{ou['Id']}", ou_path))
        self._org = Org(base_account, partition, org.get("MasterAccountId") or base_account, org, ous, accounts)
        return self._org

    def _selected_accounts(self, org: Org) -> tuple[list[OrgAccount], list[str]]:
        active = [a for a in org.accounts if a.status not in ("SUSPENDED", "CLOSED", "PENDING_CLOSURE")]
        if not self.allow:
            return active, []
        known = {a.id for a in org.accounts}
        return [a for a in active if a.id in self.allow], [a for a in self.allow if a not in known]

    # --- service control policies -------------------------------------------------------------------
    def _read_scps(self) -> Iterator[Record]:
        """Service control policies (Organizations ListPolicies, DescribePolicy, ListTargetsForPolicy,
        filter SERVICE_CONTROL_POLICY), kept for the account tasks (which name the SCPs that deny IAM
        administration) and yielded as `aws_scp` resources of part "aws:scps"."""
        self._scps, self._scps_failed = {}, False
        org = self._load_org()
        if org.org is None:
            return
        orgs = self._client("organizations")
        try:
            summaries = list(self._pages(orgs, "list_policies", "Policies", Filter="SERVICE_CONTROL_POLICY"))
            for p in summaries:
                pid = p["Id"]
                doc = orgs.describe_policy(PolicyId=pid)["Policy"].get("Content")
                targets = list(self._pages(orgs, "list_targets_for_policy", "Targets", PolicyId=pid))
                self._scps[pid] = {"name": p.get("Name") or pid, "arn": p.get("Arn"), "aws_managed": p.get("AwsManaged"),
                                   "description": p.get("Description"), "denies_iam_admin": denies_iam_admin(doc),
                                   "allows_iam": allows_iam(doc), "targets": sorted(t["TargetId"] for t in targets)}
        except ClientError as exc:
            self._scps = {}
            if error_code(exc) in ("PolicyTypeNotEnabledException", "AWSOrganizationsNotInUseException"):
                yield Note("service control policies are not enabled in this organization")
                return
            self._scps_failed = True
            yield PartFailed(SCP_PART, f"service control policies could not be read ({describe(exc)}); "
                                       "the stored ones are kept. "
                                       "Attest needs organizations:ListPolicies, DescribePolicy and ListTargetsForPolicy")
            return
        org_ref = f"org:{org.org['Id']}"
        for pid, scp in sorted(self._scps.items()):
            yield ResourceRecord(
                external_id=f"scp:{pid}", type="aws_scp", name=scp["name"], description=scp["description"],
                parent_ref=org_ref, part=SCP_PART,
                attributes={"policy_id": pid, "arn": scp["arn"], "aws_managed": scp["aws_managed"],
                            "targets": scp["targets"], "denies_iam_admin": scp["denies_iam_admin"]},
            )

    def _scp_levels(self, acct: OrgAccount) -> list[set[str]]:
        """The target ids of each level whose SCPs apply to an account: the root, each OU down, the account."""
        org = self._load_org()
        parent_of = {f"ou:{o['Id']}": o.get("ParentRef") for o in org.ous}
        chain: list[str] = []
        ref = acct.parent_ref
        while ref and ref.startswith("ou:") and ref not in chain:
            chain.append(ref)
            ref = parent_of.get(ref)
        return [set(self._root_ids), *({r.removeprefix("ou:")} for r in reversed(chain)), {acct.id}]

    def _scps_in_force(self, acct: OrgAccount) -> list[str]:
        """Names of the SCPs in force on an account; none on the management account (SCPs do not apply to
        it: https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html)."""
        if acct.id == self._load_org().management_id or not self._scps:
            return []
        targets = set().union(*self._scp_levels(acct))
        return sorted({p["name"] for p in self._scps.values() if targets & set(p["targets"])})

    def _scp_limits(self, acct: OrgAccount) -> list[str]:
        """Names of the SCPs that keep IAM administration from an account: one that denies it, or a level
        (root, OU, the account) none of whose SCPs allows IAM (an allow list without iam)."""
        if acct.id == self._load_org().management_id or not self._scps:
            return []
        out: set[str] = set()
        for level in self._scp_levels(acct):
            attached = [p for p in self._scps.values() if level & set(p["targets"])]
            out |= {p["name"] for p in attached if p["denies_iam_admin"]}
            if attached and not any(p["allows_iam"] for p in attached):
                out |= {p["name"] for p in attached}
        return sorted(out)
