"""Okta: people and managers, groups (rule-managed marked), apps, admin roles and SSO usage; revoke and undo.

Reads the Okta Management API with an API token (`SSWS`) or an OAuth 2.0 service app (client credentials
with a `private_key_jwt` client assertion signed through Authlib; the token is cached and refreshed).

- `/api/v1/users` (and `filter=status eq "DEPROVISIONED"`, which Okta leaves out by default): one
  IdentityRecord and one AccountRecord per user; the manager from the profile attribute named by the
  `manager_attribute` setting (an Okta user id, login, e-mail or employee number), else `manager`.
- `/api/v1/groups?expand=stats`: groups with a `member` entitlement; members read only for groups whose
  stats count any; groups filled by an ACTIVE rule (`/api/v1/groups/rules`) are marked rule-managed.
  The stats flag is read as Okta spells it, `hasAdminPrivlege` (Management OpenAPI and okta-sdk-python's
  GroupEmbeddedStats alias), and as `hasAdminPrivilege` should Okta ever correct it.
- `/api/v1/groups/{id}/owners` (Group Owners API, Okta Identity Governance): USER owners become the group
  resource's owners (owner_refs), GROUP owners its `owner_groups` attribute. An org without the feature
  (401 E0000015) or a token that may not read them (403) skips owners for the rest of the run with a Note.
  A group is emitted once its members and owners are read: a group deleted while the sync ran (404) is
  left out with a Note, as is an app deleted meanwhile, instead of failing the run.
- `/api/v1/apps` (active only unless `include_inactive_apps`), `/apps/{id}/users` (direct USER-scope
  assignments become grants; GROUP-scope ones are the group's grant) and `/apps/{id}/groups`.
- Admin roles: `/api/v1/iam/assignees/users` then `/users/{id}/roles` (USER assignments), and
  `/groups/{id}/roles` for groups whose stats say they hold an admin role; all `privileged`.
- `/api/v1/logs` (`user.authentication.sso`, last `log_days` days): the last SSO per user and app, in the
  account's `app_last_sso` attribute ({app id: ISO time}) so reviews can show dormant app access. The
  signal is optional: a System Log that answers 403 (no okta.logs.read) or 404 leaves it out with a Note
  saying what to do (grant the scope, or log_days=0); the run succeeds.

Paging follows only `Link: rel="next"` with each endpoint's largest page size (groups use 200, Okta's
recommended ceiling for accurate results); a `next` link back at a page already read, or more pages than
the page cap (http.MAX_PAGES), stops the run with a PagingError instead of paging forever. Requests run on a bounded thread pool over one HttpClient
(retries of 5xx and timeouts). Rate limits are kept per Okta endpoint family (`rate_family`: Okta limits
`/api/v1/users`, `/api/v1/users/{id}`, `/api/v1/users*`, the same for groups and apps, and `/api/v1/logs`
separately, https://developer.okta.com/docs/reference/rl-global-mgmt/); a 429 waits
`X-Rate-Limit-Reset - Date + 1` on Okta's own clock, as okta-sdk-python does (okta/request_executor.py,
`calculate_backoff`), so a local clock ahead of Okta's does not burn the retries. A 429 for too many
requests in flight (limit and remaining 0, https://developer.okta.com/docs/reference/rl-best-practices/)
halves the requests kept in flight for the rest of the run. 401/403 stop the run with a ConnectorError
naming the missing scope or admin role; an unreachable org names the host. Odd payloads become Notes,
never crashes. A revoke is "done" only once a follow-up read shows the access gone ("unconfirmed" when
Okta accepted the call but still shows the access).

The package, one module per idea (the connector class, which the registry and bench/ name, is re-exported here;
the rest is imported from its module):

- `connector`: OktaConnector, its settings, validate, and the sync that describes what to fetch
- `client`: the HTTP layer, dumb (raises on failure): tokens, paging, rate-limit families, scope errors
- `readers`: a group's members and owners, an app's assignments, the last SSO from the System Log
- `transforms`: pure transforms from Okta payloads into records (unit-tested on recorded payloads)
- `guard`: the last super administrator, which a revoke never removes
- `provisioning`: revoke and its undo, each read back
"""

from __future__ import annotations

from attest.connectors.okta.connector import OktaConnector

__all__ = ["OktaConnector"]
