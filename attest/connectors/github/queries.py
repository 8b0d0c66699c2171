"""The GraphQL documents the sync sends (members with SAML identities, teams and their members,
repositories and their direct collaborators with the source of each permission).
"""

from __future__ import annotations


def _organization_page(operation: str, connection: str, selection: str) -> str:
    """A document reading one page of one of an organization's connections: 100 after the cursor `$after`,
    with the page info the pager follows (`HttpMixin._graphql_pages` in client.py), and `selection` of each."""
    return f"""
query {operation}($login: String!, $after: String) {{
  organization(login: $login) {{
    {connection}(first: 100, after: $after) {{
      pageInfo {{ hasNextPage endCursor }}
      {selection}
    }}
  }}
}}"""


MEMBERS_QUERY = _organization_page(
    "AttestMembers", "membersWithRole",
    "edges { role node { databaseId login name email organizationVerifiedDomainEmails(login: $login) } }")


# the same without verified-domain e-mails, for servers or credentials that refuse that field
MEMBERS_QUERY_PLAIN = MEMBERS_QUERY.replace(" organizationVerifiedDomainEmails(login: $login)", "")
SAML_QUERY = """
query AttestSamlIdentities($login: String!, $after: String) {
  organization(login: $login) {
    samlIdentityProvider {
      externalIdentities(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        edges { node { guid samlIdentity { nameId username emails { value primary } } user { databaseId login } } }
      }
    }
  }
}"""


TEAMS_QUERY = _organization_page("AttestTeams", "teams", """nodes {
        databaseId slug name description privacy
        parentTeam { databaseId slug }
        members(first: 100, membership: IMMEDIATE) {
          pageInfo { hasNextPage endCursor }
          edges { role node { databaseId login } }
        }
      }""")


TEAM_MEMBERS_QUERY = """
query AttestTeamMembers($login: String!, $slug: String!, $after: String) {
  organization(login: $login) {
    team(slug: $slug) {
      members(first: 100, after: $after, membership: IMMEDIATE) {
        pageInfo { hasNextPage endCursor }
        edges { role node { databaseId login } }
      }
    }
  }
}"""


# one page of a repository's direct collaborators: the fields both documents below read
COLLABORATOR_PAGE_FRAGMENT = """
fragment AttestCollaboratorPage on RepositoryCollaboratorConnection {
  totalCount
  pageInfo { hasNextPage endCursor }
  edges {
    permission
    permissionSources { roleName source { __typename ... on Repository { databaseId } } }
    node { databaseId login }
  }
}"""


REPOS_QUERY = _organization_page("AttestRepositories", "repositories", """nodes {
        databaseId name nameWithOwner isArchived isPrivate isFork visibility
        collaborators(first: 100, affiliation: DIRECT) {
          ...AttestCollaboratorPage
        }
      }""") + COLLABORATOR_PAGE_FRAGMENT


REPO_COLLABORATORS_QUERY = """
query AttestRepositoryCollaborators($owner: String!, $name: String!, $after: String) {
  repository(owner: $owner, name: $name) {
    collaborators(first: 100, after: $after, affiliation: DIRECT) {
      ...AttestCollaboratorPage
    }
  }
}""" + COLLABORATOR_PAGE_FRAGMENT
