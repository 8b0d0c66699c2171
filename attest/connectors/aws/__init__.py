"""AWS: Organizations, IAM Identity Center and IAM across every account of an organization.

One source covers an AWS Organization (or a single account). What it reads:

- **Organizations** (management account, base credentials): the organization, its OUs (walked from the
  root with ListOrganizationalUnitsForParent) and its accounts (ListAccountsForParent per node, so an
  account arrives already placed under its OU: one call per node instead of one ListParents per account).
- **IAM Identity Center** (the instance of the management or delegated-administrator account):
  identity-store users, groups and memberships; permission sets with their managed, customer-managed and
  inline policies; account assignments per account (ListPermissionSetsProvisionedToAccount, then
  ListAccountAssignments per provisioned permission set).
- **IAM in every account**: the management account (or the account of the base credentials) directly,
  the others through STS AssumeRole into `assume_role_name`. One paginated GetAccountAuthorizationDetails
  gives users, groups, memberships, roles with their trust policies, and every attached, customer-managed
  and inline policy; the credential report gives console passwords, MFA, access keys (age, status, last
  use) and last activity for every user in one call. When the credential report cannot be had, and for
  the users it does not hold yet (AWS reuses a report for up to four hours), the connector reads
  ListAccessKeys/GetAccessKeyLastUsed/ListMFADevices/GetLoginProfile user by user. Each access key is an
  entitlement of its user, held while Active, so key changes are in the access history. Permissions
  boundaries of users and roles are stored; the roles Attest itself assumes keep no last use.
- **Service control policies** (ListPolicies, DescribePolicy, ListTargetsForPolicy): stored as `aws_scp`
  resources (part "aws:scps"); privileged entitlements of an account whose SCPs keep IAM administration
  from it, and users/roles whose boundary does, name the limitation (`limited_by`, `privileged_note`).

Accounts are read concurrently (at most `concurrency` at a time). Every record of an account carries
`part="aws:<account id>"`; an account whose role cannot be assumed (or whose reads fail) yields
`PartFailed` and its previous rows are left as they were, while the other accounts still sync. What is
derived from every account (an Identity Center group's privileged flag, from its assignments) is yielded
in a failed account's part in such a run, so the engine keeps its stored value.

`calls` counts every HTTP request sent to AWS (retries included), through botocore's `request-created`
event; `operations` counts API operations (one per call, however many attempts it took).

Revoke (and its undo, `grant`): remove a user from an IAM group, detach a managed policy from a
user/group/role, delete an Identity Center account assignment (waiting for the deletion status),
delete an identity-store group membership, deactivate an access key. Each first reads the live state
(already gone -> success, nothing changed), then the guards refuse to remove Attest's own access (the
principal of sts:GetCallerIdentity and the roles it assumes) and the last administrator path to the
management account (a path that can manage IAM), then the change is made (or, in a dry run, only
listed) and read back: `outcome` "done" only when the follow-up read shows it, else "unconfirmed".

The package, one module per idea (the connector class, which the registry and bench/ name, is re-exported here;
the rest is imported from its module):

- `connector`: AwsConnector, its settings, validate and the sync that puts the readers together
- `sessions`: boto3 sessions, counted clients, guarded paging, AssumeRole
- `organizations`: the organization, OUs, accounts and service control policies
- `identity_center`: IAM Identity Center instance, users, groups, permission sets, assignments
- `iam`: GetAccountAuthorizationDetails, the credential report and its per-user fallback
- `policies`: what a policy document allows (pure)
- `transforms`: records built from what was read (pure)
- `trust`: who can assume which role, resolved across accounts (pure)
- `guard`: Attest's own access and the last administrator path, which revoke never removes
- `provisioning`: revoke and its undo, each read back
- `errors`: the one wording of an AWS failure
"""

from __future__ import annotations

from attest.connectors.aws.connector import AwsConnector

__all__ = ["AwsConnector"]
