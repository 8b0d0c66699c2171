"""The route matrix: every route of the app, as every role, with valid and refused input, with and
without htmx. Three things must hold everywhere:

- no answer to a manager (or to nobody signed in) carries another manager's data: every string of each
  manager's items carries a marker (tests/web/world.py) that must never show up in the other's answers;
- for a manager, an object that is someone else's and one that does not exist answer the same: 404;
- admin-only routes answer exactly 403 to managers and auditors, read-all routes 403 to managers, and
  every route but the public ones sends an anonymous visitor to the login page.

`ROUTES` names every endpoint of `app.url_map`; a new route fails `test_matrix_covers_every_route` until
it is added here, so the matrix stays complete. Each request runs inside a SAVEPOINT that is rolled back
after it, so every request sees the same seeded world whatever ran before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from attest.charts import CHARTS
from attest.reviews.decisions import MAX_COMMENT
from tests.factories import login_as
from tests.web.world import DEFINITION_YAML, MARK, World

MISSING = 987_654_321  # an id nothing has
HX = {"HX-Request": "true"}
ROLES = ("anonymous", "manager_a", "manager_b", "auditor", "admin")

PUBLIC, USER, READ_ALL, ADMIN = "public", "user", "read_all", "admin"
OWN, FOREIGN, GONE, NONE = "own", "foreign", "missing", "-"  # what a request is about, seen by its viewer


@dataclass
class Req:
    method: str
    path: str
    data: dict[str, str] | None = None
    target: str = NONE  # OWN / FOREIGN / GONE: whose object the path names
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""


@dataclass
class View:
    """What a request builder knows: the world, and whose objects are 'mine' for this viewer."""

    w: World
    me: str  # "A" or "B" (admins, auditors and anonymous visitors are given A's objects as 'own')

    @property
    def other(self) -> str:
        return "B" if self.me == "A" else "A"

    def item(self, who: str, n: int = 0) -> int:
        return self.w.managers[who].items[n].id

    def campaign(self, who: str) -> int:
        return self.w.managers[who].own_campaign.id


def _targets(v: View, item: bool = True) -> Iterator[tuple[str, int]]:
    """(target, id): the viewer's own object, the other manager's in the SAME campaign (or their own
    campaign), and an id that does not exist."""
    if item:
        yield OWN, v.item(v.me)
        yield FOREIGN, v.item(v.other)  # same (shared) campaign as the viewer's
        yield FOREIGN, v.item(v.other, 4)  # the other's own campaign
    else:
        yield OWN, v.campaign(v.me)
        yield FOREIGN, v.campaign(v.other)
    yield GONE, MISSING


def _decide(v: View) -> Iterator[Req]:
    for target, iid in _targets(v):
        for label, data in (("over-long comment", {"decision": "revoke", "comment": "x" * (MAX_COMMENT + 1)}),
                            ("unknown decision", {"decision": "frobnicate"}),
                            ("bad version", {"decision": "approve", "version": "999"}),
                            ("revoke without comment", {"decision": "revoke"}),
                            ("valid", {"decision": "approve", "comment": "ok"})):
            yield Req("POST", f"/reviews/items/{iid}/decide", data, target, label=label)


def _reassign(v: View) -> Iterator[Req]:
    stranger = v.w.stranger.email
    for target, iid in _targets(v):
        for label, data in (("unknown reassignee", {"to": "nobody@nowhere.example", "reason": "leave"}),
                            ("over-long reason", {"to": stranger, "reason": "x" * (MAX_COMMENT + 1)}),
                            ("no reason", {"to": stranger, "reason": ""}),
                            ("bad version", {"to": stranger, "reason": "leave", "version": "999"}),
                            ("valid", {"to": stranger, "reason": "leave"})):
            yield Req("POST", f"/reviews/items/{iid}/reassign", data, target, label=label)


def _reassign_form(v: View) -> Iterator[Req]:
    for target, iid in _targets(v):
        yield Req("GET", f"/reviews/items/{iid}/reassign?version=1", target=target)


def _bulk(v: View) -> Iterator[Req]:
    targets = [*_targets(v, item=False), (OWN, v.w.shared.id)]
    for target, cid in targets:
        for label, data in (("over-long comment", {"scope": "filtered", "bulk_decision": "revoke",
                                                   "comment": "x" * (MAX_COMMENT + 1)}),
                            ("unknown scope", {"scope": "everything"}),
                            ("unknown decision", {"scope": "filtered", "bulk_decision": "frobnicate"}),
                            ("valid", {"scope": "unflagged", "bulk_decision": "approve"})):
            yield Req("POST", f"/reviews/campaigns/{cid}/bulk", data, target, label=label)


def _inbox(v: View) -> Iterator[Req]:
    yield Req("GET", "/reviews")
    for target, cid in [*_targets(v, item=False), (OWN, v.w.shared.id)]:
        for query in ("", "&after=abc", "&q=Person", "&risk=flagged&decision=undecided"):
            yield Req("GET", f"/reviews?campaign={cid}{query}", target=target)
            yield Req("GET", f"/reviews?campaign={cid}{query}", target=target, headers={"HX-Target": "inbox-items"})


def _item_get(v: View) -> Iterator[Req]:
    for target, iid in _targets(v):
        yield Req("GET", f"/reviews/items/{iid}", target=target)


def _signoff(v: View) -> Iterator[Req]:
    for target, cid in [*_targets(v, item=False), (OWN, v.w.shared.id)]:
        yield Req("POST", f"/reviews/campaigns/{cid}/signoff", {}, target)


def _team_person(v: View) -> Iterator[Req]:
    """A report of the viewer's (the persons of their items report to them), the other manager's, nobody."""
    yield Req("GET", f"/team/{v.w.managers[v.me].items[0].identity_id}?on=2026-01-31", target=OWN)
    yield Req("GET", f"/team/{v.w.managers[v.other].items[0].identity_id}", target=FOREIGN)
    yield Req("GET", f"/team/{v.w.managers[v.other].identity.id}", target=FOREIGN)
    yield Req("GET", f"/team/{MISSING}", target=GONE)


def _delegate(v: View) -> Iterator[Req]:
    for label, data in (("valid", {"to": v.w.stranger.email, "starts": "2026-01-01", "ends": "2099-01-01",
                                   "reason": "leave"}),
                        ("to myself", {"to": v.w.managers[v.me].identity.email, "starts": "2026-01-01",
                                       "ends": "2099-01-01"}),
                        ("bad dates", {"to": v.w.stranger.email, "starts": "soon", "ends": "later"}),
                        ("unknown delegate", {"to": "nobody@nowhere.example", "starts": "2026-01-01",
                                              "ends": "2099-01-01"})):
        yield Req("POST", "/reviews/delegation", data, label=label)


def _end_delegation(v: View) -> Iterator[Req]:
    yield Req("POST", f"/reviews/delegation/{v.w.delegations[v.me].id}/end", {}, OWN)
    yield Req("POST", f"/reviews/delegation/{v.w.delegations[v.other].id}/end", {}, FOREIGN)
    yield Req("POST", f"/reviews/delegation/{MISSING}/end", {}, GONE)


def _delegated_inbox(v: View) -> Iterator[Req]:
    """The viewer stands in for nobody: every delegated inbox is someone else's (404 to managers)."""
    for who in ("A", "B"):
        for query in ("", f"?campaign={v.w.shared.id}&q=Person", "?after=abc"):
            yield Req("GET", f"/reviews/for/{v.w.managers[who].identity.id}{query}", target=FOREIGN)
    yield Req("GET", f"/reviews/for/{MISSING}", target=GONE)


def _undo(v: View) -> Iterator[Req]:
    for target, iid in _targets(v):
        yield Req("POST", f"/reviews/items/{iid}/undo", {"version": "1"}, target)
    yield Req("POST", f"/reviews/items/{v.w.managers[v.me].items[2].id}/undo", {}, OWN, label="decided")


def _delegated_bulk(v: View) -> Iterator[Req]:
    """The viewer stands in for nobody: every delegated bulk is someone else's (404 to managers)."""
    for who in ("A", "B"):
        for cid in (v.w.shared.id, v.w.managers[who].own_campaign.id):
            yield Req("POST", f"/reviews/for/{v.w.managers[who].identity.id}/campaigns/{cid}/bulk",
                      {"scope": "unflagged", "bulk_decision": "approve"}, FOREIGN)
    yield Req("POST", f"/reviews/for/{MISSING}/campaigns/{v.w.shared.id}/bulk", {"scope": "unflagged"}, GONE)


def _decide_access(v: View) -> Iterator[Req]:
    for target, iid in _targets(v):
        for label, data in (("unknown decision", {"decision": "frobnicate"}), ("valid", {"decision": "approve"})):
            yield Req("POST", f"/reviews/items/{iid}/decide-access", data, target, label=label)


def _reassign_mine(v: View) -> Iterator[Req]:
    stranger = v.w.stranger.email
    for target, cid in [*_targets(v, item=False), (OWN, v.w.shared.id)]:
        for label, data in (("valid", {"to": stranger, "reason": "leave", "q": "Person"}),
                            ("no reason", {"to": stranger, "reason": ""}),
                            ("unknown reassignee", {"to": "nobody@nowhere.example", "reason": "leave"})):
            yield Req("POST", f"/reviews/campaigns/{cid}/reassign-mine", data, target, label=label)


def _get(path: str) -> Callable[[View], Iterator[Req]]:
    return lambda v: iter([Req("GET", path)])


def _by_id(path: str, ids: Callable[[View], list[int]], method: str = "GET",
           data: dict[str, str] | None = None) -> Callable[[View], Iterator[Req]]:
    def build(v: View) -> Iterator[Req]:
        for i in ids(v):
            yield Req(method, path.format(i), data, NONE)
        yield Req(method, path.format(MISSING), data, GONE)
    return build


def _campaign_ids(v: View) -> list[int]:
    return [v.w.shared.id, v.campaign("A"), v.campaign("B")]


def _source_ids(v: View) -> list[int]:
    return [v.w.managers["A"].items[0].source_id]


def _post(path: str, *datas: dict[str, str]) -> Callable[[View], Iterator[Req]]:
    return lambda v: iter([Req("POST", path.format(w=v.w), d) for d in datas])


# endpoint -> (access, request builder). Every endpoint of the app must be here.
ROUTES: dict[str, tuple[str, Callable[[View], Iterator[Req]]]] = {
    "static": (PUBLIC, _get("/static/js/inbox.js")),
    "home.favicon": (PUBLIC, _get("/favicon.ico")),
    "home.healthz": (PUBLIC, _get("/healthz")),
    "home.readyz": (PUBLIC, _get("/readyz")),
    # a bearer token, not a session (no token configured here: 404 for everyone)
    "ops.metrics": (PUBLIC, lambda v: iter([Req("GET", "/metrics"),
                                            Req("GET", "/metrics", headers={"Authorization": "Bearer x"})])),
    "auth.login": (PUBLIC, lambda v: iter([Req("GET", "/login"), Req("POST", "/login", {"email": "x@acme.example",
                                                                                         "password": "wrong"})])),
    "auth.oidc_login": (PUBLIC, _get("/login/oidc")),
    "auth.oidc_callback": (PUBLIC, _get("/login/oidc/callback?code=x&state=y")),
    "auth.logout": (USER, lambda v: iter([Req("POST", "/logout", {})])),
    "home.index": (USER, _get("/")),
    "reviews.inbox": (USER, _inbox),
    "reviews.item": (USER, _item_get),
    "reviews.decide": (USER, _decide),
    "reviews.reassign": (USER, _reassign),
    "reviews.reassign_form": (USER, _reassign_form),
    "reviews.bulk": (USER, _bulk),
    "reviews.sign_off": (USER, _signoff),
    "team.index": (USER, _get("/team")),
    "team.person": (USER, _team_person),
    "team.delegation_page": (USER, _get("/reviews/delegation")),
    "team.delegate": (USER, _delegate),
    "team.end_delegation": (USER, _end_delegation),
    "team.delegated_inbox": (USER, _delegated_inbox),
    "team.undo": (USER, _undo),
    "team.decide_access": (USER, _decide_access),
    "team.delegated_bulk": (USER, _delegated_bulk),
    "team.reassign_mine": (USER, _reassign_mine),
    # API tokens: everyone manages their own (a missing or someone else's token: 404)
    "tokens.index": (USER, _get("/tokens")),
    "tokens.create": (USER, _post("/tokens", {"name": "ci", "scopes": "reviews:read", "days": "30"},
                                  {"name": "", "scopes": "sources:write"}, {"name": "x", "days": "9999"})),
    "tokens.revoke": (USER, lambda v: iter([Req("POST", f"/tokens/{MISSING}/revoke", {}, GONE)])),
    # admins and auditors read
    "reviews.campaigns": (READ_ALL, _get("/campaigns?status=active")),
    "reviews.campaign": (READ_ALL, _by_id("/campaigns/{}", _campaign_ids)),
    "reviews.campaign_items": (READ_ALL, _by_id("/campaigns/{}/items?risk=flagged&decision=undecided&reviewer=none"
                                                "&q=Person&outcome=exception", _campaign_ids)),
    "reviews.campaign_items_csv": (READ_ALL, _by_id("/campaigns/{}/items.csv?decision=undecided&q=Person",
                                                    _campaign_ids)),
    "audit.evidence": (READ_ALL, _get("/evidence")),
    "audit.evidence_download": (READ_ALL, _by_id("/campaigns/{}/evidence.zip", lambda v: [v.w.shared.id])),
    "audit.evidence_public_key": (READ_ALL, _get("/evidence/public-key")),
    "audit.evidence_export_start": (READ_ALL, _by_id("/campaigns/{}/evidence", lambda v: [v.w.shared.id], "POST", {})),
    "audit.evidence_export": (READ_ALL, _by_id("/evidence/exports/{}", lambda v: [])),
    "audit.evidence_export_status": (READ_ALL, _by_id("/evidence/exports/{}/status", lambda v: [])),
    "audit.evidence_export_download": (READ_ALL, _by_id("/evidence/exports/{}/download", lambda v: [])),
    "audit.flagged": (READ_ALL, lambda v: iter([Req("GET", "/flagged"), Req("GET", f"/flagged?campaign={MISSING}",
                                                                               target=GONE)])),
    "audit.flagged_csv": (READ_ALL, lambda v: iter([Req("GET", "/flagged.csv"),
                                                    Req("GET", f"/flagged.csv?campaign={MISSING}", target=GONE)])),
    "audit.history": (READ_ALL, _get("/history?q=person&on=2026-01-31")),
    "audit.log": (READ_ALL, _get("/audit?since=2020-01-01&until=9999-12-31")),
    "audit.remediations": (READ_ALL, _get("/remediations?needs=human")),
    "audit.remediations_csv": (READ_ALL, _get("/remediations.csv?all=1")),
    "auth_admin.users": (READ_ALL, _get("/admin/users?q=manager")),
    "entitlements.sources": (READ_ALL, _get("/sources")),
    "entitlements.source_detail": (READ_ALL, _by_id("/sources/{}", lambda v: [v.w.managers["A"].items[0].source_id])),
    "entitlements.source_status": (READ_ALL, _by_id("/sources/{}/status", _source_ids)),
    "entitlements.source_runs": (READ_ALL, lambda v: iter([
        Req("GET", f"/sources/{_source_ids(v)[0]}/runs"), Req("GET", f"/sources/{_source_ids(v)[0]}/runs?runs_before=abc"),
        Req("GET", f"/sources/{MISSING}/runs", target=GONE)])),
    "entitlements.identities": (READ_ALL, _get("/identities?q=person&after=abc")),
    "entitlements.identity_detail": (READ_ALL, _by_id("/identities/{}", lambda v: [v.w.stranger.id])),
    "entitlements.resources": (READ_ALL, _get("/resources?after=abc")),
    "entitlements.resource_detail": (READ_ALL, _by_id("/resources/{}", lambda v: [v.w.managers["B"].items[0].resource_id])),
    "entitlements.orphaned": (READ_ALL, _get("/findings/orphaned")),
    "entitlements.terminated": (READ_ALL, _get("/findings/terminated")),
    # every chart of a campaign (the campaign's own charts take ?campaign=, the others ignore it), or of none
    "charts.data": (READ_ALL, lambda v: iter([
        *(Req("GET", f"/charts/{name}.json?campaign={v.w.shared.id}") for name in sorted(CHARTS)),
        Req("GET", "/charts/remediation-status.json"), Req("GET", "/charts/campaign-reviewers.json", label="no campaign"),
        Req("GET", f"/charts/campaign-risks.json?campaign={MISSING}", target=GONE)])),
    # admins only
    "ops.jobs": (ADMIN, _get("/admin/jobs")),
    "auth_admin.set_roles": (ADMIN, _by_id("/admin/users/{}/roles", lambda v: [v.w.auditor.id], "POST",
                                           {"roles": "auditor"})),
    "auth_admin.link": (ADMIN, _by_id("/admin/users/{}/identity", lambda v: [v.w.auditor.id], "POST",
                                      {"person": "nobody@nowhere.example"})),
    "entitlements.source_update": (ADMIN, lambda v: iter([
        Req("POST", f"/sources/{_source_ids(v)[0]}/settings", {"setting-people": "5", "schedule": "0 3 * * *"}),
        Req("POST", f"/sources/{_source_ids(v)[0]}/settings", {"setting-people": "many", "schedule": "never"},
            label="invalid"),
        Req("POST", f"/sources/{MISSING}/settings", {"setting-people": "5"}, GONE)])),
    "entitlements.source_secret": (ADMIN, lambda v: iter([
        Req("POST", f"/sources/{_source_ids(v)[0]}/secret", {"secret_name": "token", "secret_value": "x" * 20},
            label="a secret the kind does not have"),
        Req("POST", f"/sources/{_source_ids(v)[0]}/secret", {"secret_name": "token", "secret_value": ""}, label="empty"),
        Req("POST", f"/sources/{MISSING}/secret", {"secret_name": "token", "secret_value": "x"}, GONE)])),
    "entitlements.source_sync": (ADMIN, _by_id("/sources/{}/sync", _source_ids, "POST", {})),
    "entitlements.source_new": (ADMIN, lambda v: iter([Req("GET", "/sources/new"), Req("GET", "/sources/new?kind=github"),
                                                       Req("GET", "/sources/new?kind=nonsense")])),
    "entitlements.source_create": (ADMIN, _post("/sources/new", {"kind": "demo", "name": "matrix-demo", "setting-people": "3"},
                                                {"kind": "demo", "name": "bad name!", "setting-people": "many"},
                                                {"kind": "github", "name": "gh", "secret-token": "x" * 20},
                                                {"kind": "nonsense", "name": "x"})),
    "entitlements.source_test": (ADMIN, _by_id("/sources/{}/test", _source_ids, "POST", {})),
    "entitlements.source_schedule": (ADMIN, lambda v: iter([
        Req("POST", f"/sources/{_source_ids(v)[0]}/schedule", {"schedule": "0 3 * * *"}),
        Req("POST", f"/sources/{_source_ids(v)[0]}/schedule", {"schedule": "never"}, label="invalid"),
        Req("POST", f"/sources/{_source_ids(v)[0]}/schedule", {"clear": "1"}, label="clear"),
        Req("POST", f"/sources/{MISSING}/schedule", {"schedule": "0 3 * * *"}, GONE)])),
    "entitlements.source_enabled": (ADMIN, lambda v: iter([
        Req("POST", f"/sources/{_source_ids(v)[0]}/enabled", {"enabled": "no"}),
        Req("POST", f"/sources/{_source_ids(v)[0]}/enabled", {"enabled": "yes"}),
        Req("POST", f"/sources/{_source_ids(v)[0]}/enabled", {"enabled": "maybe"}, label="invalid"),
        Req("POST", f"/sources/{MISSING}/enabled", {"enabled": "no"}, GONE)])),
    "entitlements.link_account": (ADMIN, lambda v: iter([
        Req("POST", "/accounts/link", {"account_id": str(v.w.account.id), "identity_email": v.w.stranger.email}),
        Req("POST", "/accounts/link", {"account_id": str(MISSING)}),
        Req("POST", "/accounts/link", {"account_id": str(2**63)})])),
    "audit.mark_done": (ADMIN, _by_id("/remediations/{}/done", lambda v: [v.w.remediation.id], "POST", {"note": "done"})),
    "audit.undo": (ADMIN, _by_id("/remediations/{}/undo", lambda v: [v.w.remediation.id], "POST", {})),
    "reviews.close": (ADMIN, _by_id("/campaigns/{}/close", _campaign_ids, "POST", {})),
    "reviews.remind": (ADMIN, _by_id("/campaigns/{}/remind", lambda v: [v.w.shared.id], "POST", {})),
    "reviews.reassign_reviewer": (ADMIN, lambda v: iter([
        Req("POST", f"/campaigns/{v.w.shared.id}/reassign",
            {"from_reviewer": str(v.w.managers["B"].identity.id), "to": v.w.stranger.email, "reason": "leave"}),
        Req("POST", f"/campaigns/{v.w.shared.id}/reassign", {"from_reviewer": "x", "to": "nobody@x.example"}),
        Req("POST", f"/campaigns/{MISSING}/reassign", {"from_reviewer": "unroutable", "to": v.w.stranger.email,
                                                       "reason": "r"}, GONE)])),
    "reviews.definition_new": (ADMIN, _get("/campaigns/definitions/new?mode=yaml")),
    "reviews.definition_create": (ADMIN, _post("/campaigns/definitions/new", {"mode": "yaml", "yaml": "name: New one\n"},
                                               {"mode": "yaml", "yaml": "a: &a [1]\nb: [*a]\n"},
                                               {"mode": "form", "name": "Form one", "duration_days": "9" * 40})),
    "reviews.definition_edit": (ADMIN, _by_id("/campaigns/definitions/{}", lambda v: [v.w.definition.id])),
    "reviews.definition_update": (ADMIN, _by_id("/campaigns/definitions/{}", lambda v: [v.w.definition.id], "POST",
                                                {"mode": "yaml", "yaml": DEFINITION_YAML + "description: x\n"})),
    "reviews.definition_preview": (ADMIN, _post("/campaigns/definitions/preview", {"mode": "yaml", "yaml": DEFINITION_YAML},
                                                {"mode": "yaml", "yaml": "[" * 100})),
    "reviews.launch": (ADMIN, _by_id("/campaigns/definitions/{}/launch", lambda v: [v.w.definition.id], "POST", {})),
    "reviews.definition_archive": (ADMIN, _by_id("/campaigns/definitions/{}/archive", lambda v: [v.w.definition.id], "POST", {})),
    "reviews.definition_unarchive": (ADMIN, _by_id("/campaigns/definitions/{}/unarchive", lambda v: [v.w.definition.id], "POST", {})),
}


def _expected(role: str, access: str, req: Req) -> int | None:
    """The exact status a request must get, or None where any non-5xx answer is right."""
    if access == PUBLIC:
        return None
    if role == "anonymous":
        return 302  # to the login page
    manager = role.startswith("manager")
    if access == ADMIN:
        return 403 if role != "admin" else (404 if req.target == GONE and req.method == "GET" else None)
    if access == READ_ALL:
        return 403 if manager else (404 if req.target == GONE else None)
    if req.target == GONE or (manager and req.target == FOREIGN):
        return 404
    return None


def _requests(w: World, role: str) -> Iterator[tuple[str, str, Req]]:
    v = View(w, "B" if role == "manager_b" else "A")
    for endpoint, (access, build) in ROUTES.items():
        for req in build(v):
            yield endpoint, access, req


def test_matrix_covers_every_route(app):
    # /api/v1 authenticates by token, not by session: its own per-scope matrix is tests/api/test_scope_matrix.py
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if not rule.endpoint.startswith("api.")}
    assert endpoints - set(ROUTES) == set(), "new routes: add them to ROUTES (with their access and requests)"
    assert set(ROUTES) - endpoints == set(), "routes that no longer exist: remove them from ROUTES"
    methods = {(rule.endpoint, m) for rule in app.url_map.iter_rules() for m in rule.methods - {"HEAD", "OPTIONS"}
               if rule.endpoint in endpoints}
    covered = {(endpoint, req.method) for endpoint, (_a, build) in ROUTES.items()
               for req in build(View(_FakeWorld(), "A"))}
    assert methods - covered == set(), "methods no request of the matrix uses"


class _FakeWorld:
    """Stands in for a World when only the shape of the requests matters."""

    def __getattr__(self, name):
        return self

    def __getitem__(self, key):
        return self

    id = 1
    email = "x@acme.example"
    source_id = resource_id = account_id = 1

    @property
    def items(self):
        return [self] * 5


def _foreign_markers(role: str) -> list[str]:
    return {"anonymous": list(MARK.values()), "manager_a": [MARK["B"]], "manager_b": [MARK["A"]]}.get(role, [])


@pytest.mark.parametrize("role", ROLES)
def test_route_matrix(role, nocsrf_app, client, connection, world):
    app = nocsrf_app
    user = world.user(role)
    markers = _foreign_markers(role)
    failures: list[str] = []
    count = 0
    for endpoint, access, req in _requests(world, role):
        for hx in (False, True):
            if user is not None:
                login_as(app, client, user)
            else:
                client.delete_cookie("attest_session")
            headers = {**req.headers, **(HX if hx else {})}
            savepoint = connection.begin_nested()
            try:
                response = client.open(req.path, method=req.method, data=req.data, headers=headers)
            finally:
                savepoint.rollback()
            count += 1
            status = response.status_code
            where = f"{role} {req.method} {req.path} [{endpoint}{' ' + req.label if req.label else ''}" \
                    f"{' htmx' if hx else ''}] -> {status}"
            body = response.get_data().decode("utf-8", "replace") + response.headers.get("Location", "")
            leaked = [m for m in markers if m.lower() in body.lower()]
            if leaked:
                failures.append(f"{where}: foreign data in the answer ({', '.join(leaked)})")
            if status >= 500:
                failures.append(f"{where}: server error")
            want = _expected(role, access, req)
            if want == 302 and hx:
                want = 401  # htmx follows HX-Redirect to the login page instead
            if want is not None and status != want:
                failures.append(f"{where}: expected {want}")
            if want in (302, 401) and "/login" not in (response.headers.get("Location", "")
                                                       + response.headers.get("HX-Redirect", "")):
                failures.append(f"{where}: not sent to the login page")
            if role.startswith("manager") and req.target == OWN and status in (403, 404):
                failures.append(f"{where}: refused the manager's own object")
    assert count > 100
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", ("manager_a", "admin"))
def test_forged_posts_are_refused_on_every_route(role, app, client, connection, world):
    """With CSRF on (as in production), a post without the form's token is 400 on every POST route."""
    assert app.config.get("WTF_CSRF_ENABLED", True)
    user = world.user(role)
    posts = [(endpoint, req) for endpoint, _access, req in _requests(world, role) if req.method == "POST"]
    assert {e for e, _ in posts} >= {"reviews.decide", "reviews.close", "auth.logout", "entitlements.link_account"}
    for endpoint, req in posts:
        login_as(app, client, user)
        savepoint = connection.begin_nested()
        try:
            response = client.post(req.path, data=req.data)
        finally:
            savepoint.rollback()
        assert response.status_code == 400, (endpoint, req.path, response.status_code)
