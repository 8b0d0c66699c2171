"""Fuzz every route of the app (from `app.url_map`) with hostile parameters, as every role: path ids
(0, -1, 2^63, 2^64, other scripts' digits, ids of real objects), query strings and form posts carrying NUL
bytes, huge strings, unicode, malformed cursors and dates, YAML bombs. No answer may be a 5xx.

Runs on the test engine (SQLite, or PostgreSQL with ATTEST_TEST_DATABASE_URL), bounded to a few hundred
requests per role. CSRF is off so the fuzz reaches the handlers (test_route_matrix checks forged posts).
Each request runs in a SAVEPOINT rolled back after it, so every example starts from the same world.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import login_as
from tests.web.world import World

ROLES = ("anonymous", "manager_a", "auditor", "admin")
EXAMPLES = 150  # per role: a few seconds a role on SQLite, a little more on PostgreSQL


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BIG_IDS = ["0", "-1", str(2**31 - 1), str(2**31), str(2**63 - 1), str(2**63), str(2**64), "9" * 40, "1e3", "٣", "²", "0x10",
           " 1", "1 ", "007", "1.5", "NaN"]
HOSTILE = [
    "", " ", "\x00", "a\x00b", "%00", "x" * 5000, "y" * 70000, "'; DROP TABLE review_item; --", "%", "_", "\\",
    "<script>alert(1)</script>", "{{7*7}}", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ 漢字", "\u202e\u200b", "\r\n", "null", "true", "[]", "{}",
    "9999-12-31", "0000-00-00", "2026-02-30", "2026-01-01T25:00:00Z", "2026-01-01T00:00:00+99:00",
    "99999-01-01", "-2026-01-01", "2026-01-01T00:00:00.1234567Z",
    _b64("[null, 1]"), _b64('["a", 99999999999999999999]'), _b64("[" * 3000), _b64('"x"'), _b64("[1,2,3]"),
    _b64('["a\\u0000", 1]'), _b64('[true, true]'), "abc", "a\x1fb", "\x1f" + str(2**64), "name\x1f-1",
    "a: &a [1,2]\nb: [*a,*a]\n", "[" * 2000, "name: x\n" + "  " * 500 + "y: 1", "!!python/object:os.system ls",
    *BIG_IDS,
]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
# NUL stays a rare draw: one NUL anywhere makes the whole request a 400 before any handler runs
hostile_value = st.one_of(st.sampled_from(HOSTILE), text, st.integers(-(2**70), 2**70).map(str))

QUERY_KEYS = ["campaign", "after", "q", "status", "mode", "risk", "source", "resource", "decision", "role", "on",
              "at", "since", "until", "actor", "action", "object_type", "object_id", "id", "all", "needs", "type",
              "department", "next", "code", "state", "error"]
FORM_KEYS = ["decision", "comment", "version", "to", "reason", "scope", "bulk_decision", "risk", "q", "role",
             "mode", "yaml", "name", "description", "from_reviewer", "note", "roles", "person", "account_id",
             "identity_email", "email", "password", "stage1", "stage1_identity", "duration_days",
             "reminders_days_before_due", "escalate_after_days_overdue", "schedule", "sources", "status", "kind",
             "department", "controls", "comment_required", "remediation", "no_response", "dormant_days"]


def _routes(app) -> list:
    rules = [r for r in app.url_map.iter_rules()]
    assert len(rules) >= 40
    return sorted(rules, key=lambda r: (r.rule, sorted(r.methods)))


def _path(rule, ids: dict[str, str]) -> str:
    path = rule.rule
    for arg in rule.arguments:
        path = path.replace(f"<int:{arg}>", ids.get(arg, "1")).replace(f"<path:{arg}>", ids.get(arg, "x"))
    return path


@st.composite
def requests(draw, rules: list, world_ids: list[int]):
    rule = draw(st.sampled_from(rules))
    ids = {arg: draw(st.one_of(st.sampled_from([str(i) for i in world_ids]), st.sampled_from(BIG_IDS),
                               st.integers(1, 40).map(str)))
           for arg in rule.arguments}
    if rule.endpoint == "static":
        ids["filename"] = draw(st.sampled_from(["js/inbox.js", "../../etc/passwd", "x\x00y", "%00", "." * 300]))
    method = draw(st.sampled_from(sorted(rule.methods - {"HEAD", "OPTIONS"})))
    query = draw(st.dictionaries(st.one_of(st.sampled_from(QUERY_KEYS), text), hostile_value, max_size=4))
    form = None
    if method == "POST":
        form = draw(st.dictionaries(st.one_of(st.sampled_from(FORM_KEYS), text), hostile_value, max_size=6))
    headers = {"HX-Request": "true"} if draw(st.booleans()) else {}
    if headers and draw(st.booleans()):
        headers["HX-Target"] = "inbox-items"
    return method, _path(rule, ids), query, form, headers


def _fuzz(app, client, connection, world: World, role: str) -> None:
    user = world.user(role)
    rules = _routes(app)
    seen: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])
    @given(requests(rules, sorted(world.ids())))
    def run(req):
        method, path, query, form, headers = req
        if user is not None:
            login_as(app, client, user)
        else:
            client.delete_cookie("attest_session")
        savepoint = connection.begin_nested()
        try:
            response = client.open(path, method=method, query_string=query, data=form, headers=headers)
        finally:
            if savepoint.is_active:
                savepoint.rollback()
        seen.append(path)
        assert response.status_code < 500, (role, method, path, query, form, response.status_code)

    run()
    assert len(seen) >= EXAMPLES // 2


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_fuzz_every_route_never_answers_5xx(role, nocsrf_app, client, connection, world):
    _fuzz(nocsrf_app, client, connection, world, role)


def test_fuzz_covers_every_route(nocsrf_app):
    """The fuzz draws from app.url_map itself: a new route is fuzzed without being listed anywhere."""
    endpoints = {r.endpoint for r in _routes(nocsrf_app)}
    assert {"reviews.decide", "reviews.reassign", "audit.log", "entitlements.identities", "static"} <= endpoints


@pytest.mark.slow
@pytest.mark.parametrize("role", ["manager_a", "admin"])
def test_every_route_with_hostile_values(role, nocsrf_app, client, connection, world):
    """Not left to chance: every route and method, with every hostile value in turn (round robin over the
    routes, each value in every known query and form slot at once), with a real id and one beyond 64 bits."""
    app = nocsrf_app
    user = world.user(role)
    real_id = str(world.managers["A"].items[0].id)
    values = [v for v in HOSTILE if "\x00" not in v]  # NUL is a 400 before anything else (test_hostile_input)
    failures, n = [], 0
    for rule in _routes(app):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for path_id in ((real_id, str(2**64)) if rule.arguments else (real_id,)):
                for _ in range(2):
                    value = values[n % len(values)]
                    n += 1
                    path = _path(rule, {a: path_id for a in rule.arguments})
                    query = {k: value for k in QUERY_KEYS}
                    form = {k: value for k in FORM_KEYS} if method == "POST" else None
                    login_as(app, client, user)
                    savepoint = connection.begin_nested()
                    try:
                        response = client.open(path, method=method, query_string=query, data=form)
                    finally:
                        if savepoint.is_active:
                            savepoint.rollback()
                    if response.status_code >= 500:
                        failures.append((method, path, json.dumps(value)[:60], response.status_code))
    assert n >= len(values)
    assert not failures, failures
