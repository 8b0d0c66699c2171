"""GitHub connector: organizations, members, teams (nested), repositories and their permissions; revoke.

Works against github.com (`api_url` https://api.github.com) and GitHub Enterprise Server (`api_url`
https://HOST/api/v3; GraphQL is then https://HOST/api/graphql).

How it reads an organization (each org is a *part*: one that fails yields PartFailed and is left untouched):
- GraphQL `membersWithRole` (login, name, public and verified-domain e-mails, role) and `samlIdentityProvider.externalIdentities`
  (SAML NameID and e-mail) - 100 per query instead of a REST call per member.
- GraphQL `teams` with their immediate members and roles (maintainer/member) and parent team; a team with
  more than 100 members is paged on its own.
- GraphQL `repositories` with their direct collaborators and role (the repository permission source gives
  custom repository role names); a repository with more than 100 direct collaborators is paged on its own,
  by GraphQL too: REST's `role_name` (and `permissions`) are "the highest role assigned to the collaborator
  after considering all sources of grants, including: repo, teams, organization, and enterprise"
  (https://docs.github.com/en/rest/collaborators/collaborators#list-repository-collaborators), so only
  GraphQL's `permissionSources` tells the repository's own grant apart.
- REST `/orgs/{org}/teams/{slug}/repos` once per team: the team's repositories with `role_name`.
- REST for the rest: the org, members without 2FA (`filter=2fa_disabled`, owners only), outside
  collaborators, pending invitations, organization roles with their users and teams, custom repository roles.
  Optional features (custom roles, SAML, 2FA status) that the plan or the credentials lack degrade to a Note.

Rate limits are kept per budget, as GitHub names it in `x-ratelimit-resource` (core, graphql, search...;
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api). Redirects (301 for a
renamed or transferred repository, 302/307/308) are followed with the same method, DELETE included
(https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects).

Revokes are honest: a change is `done` only when a follow-up read shows the access gone, `unconfirmed` when
GitHub accepted the call but still shows it; an undo that GitHub answers with an invitation (201 for a
repository collaborator, `state: pending` for a membership) is `invited`, not re-granted.

The package, one module per idea (the connector class, which the registry and bench/ name, is re-exported here;
the rest is imported from its module):

- `connector`: GitHubConnector, its settings, validate and the sync over each organization
- `client`: the HTTP layer, dumb (raises on failure): tokens, REST lists, GraphQL and its pages, budgets
- `queries`: the GraphQL documents
- `readers`: `fetch_org`, everything one organization's sync reads, into an OrgSnapshot (HTTP only)
- `transforms`: `org_records()`, a pure transform of the fetched payloads into records
- `provisioning`: revoke and its undo, each read back; the last owner is never removed
"""

from __future__ import annotations

from attest.connectors.github.connector import GitHubConnector

__all__ = ["GitHubConnector"]
