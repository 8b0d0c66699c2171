"""Password sign-in limits (attest/auth/throttle.py) and the password policy (attest/auth/passwords.py).

- unknown e-mails, wrong passwords and throttled accounts answer alike (nothing tells which accounts exist);
- one client address is limited whatever e-mails it tries, and answers 429 with Retry-After;
- failures back off exponentially and never lock a break-glass admin out for good: their own address
  keeps working through an account-wide block, and every block ends;
- blank-ish and common passwords are refused.
The clock is injected through `app.config["ATTEST_CLOCK"]`: no sleeps.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from attest.auth.login import UserError, create_admin, hash_password
from attest.trail.models import AuditEvent
from tests.factories import Clock, make_user

PASSWORD = "correct horse battery staple"
ADMIN = "admin@acme.example"
ACCOUNT_LIMIT = 12


@pytest.fixture
def settings(databases, tmp_path):
    """The defaults, but the account-wide limit at 12 instead of 50 (each failure costs a password hash)."""
    from tests.conftest import make_settings

    return make_settings(databases.url, tmp_path, login_account_max_failures=ACCOUNT_LIMIT)


@pytest.fixture
def clock(app) -> Clock:
    c = Clock()
    app.config["ATTEST_CLOCK"] = c
    return c


@pytest.fixture
def admin(session):
    user = make_user(session, ADMIN, roles=["admin"], password=PASSWORD)
    session.commit()
    return user


def browser(app, ip: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def attempt(client, email, password, **headers):
    page = client.get("/login", headers=headers).get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token}, headers=headers)


def message(response) -> str:
    """The flashed answer, without the form (which repeats the e-mail typed)."""
    found = re.search(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', response.get_data(as_text=True), re.S)
    return re.sub(r"<[^>]+>|\s+", " ", found.group(1)).strip() if found else ""


def test_unknown_wrong_password_and_throttled_accounts_answer_alike(app, admin, clock):
    known, unknown = browser(app, "198.51.100.1"), browser(app, "198.51.100.2")
    answers = {"known": [], "unknown": []}
    for _ in range(6):
        for name, client, email in (("known", known, ADMIN), ("unknown", unknown, "nobody@acme.example")):
            response = attempt(client, email, "not the password!")
            answers[name].append((response.status_code, message(response), response.headers.get("Retry-After")))
    assert answers["known"] == answers["unknown"]
    assert [a[0] for a in answers["known"]] == [401] * 5 + [429]
    assert answers["known"][0][1] == "Wrong e-mail or password."
    assert "locked" not in answers["known"][5][1] and answers["known"][5][2] == "30"
    # the right password is refused alike while the pair is blocked: it is not even looked at
    right = attempt(known, ADMIN, PASSWORD)
    assert (right.status_code, message(right)) == (429, answers["unknown"][5][1])


def test_one_address_is_limited_whatever_e_mails_it_tries(app, admin, clock):
    """40 failures in a row from one address: the first 20 are answered, the rest get 429 at once."""
    attacker = browser(app, "203.0.113.9")
    statuses = [attempt(attacker, f"user{n}@acme.example", "guess-guess-guess").status_code for n in range(40)]
    assert statuses == [401] * 20 + [429] * 20
    refused = attempt(attacker, ADMIN, PASSWORD)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    # another address is not affected: the admin signs in
    assert attempt(browser(app, "192.0.2.10"), ADMIN, PASSWORD).status_code == 302


def test_back_off_doubles_and_always_ends(app, admin, clock):
    client = browser(app, "198.51.100.7")
    for _ in range(5):
        assert attempt(client, ADMIN, "wrong wrong wrong").status_code == 401
    assert attempt(client, ADMIN, "wrong wrong wrong").headers["Retry-After"] == "30"
    waits = []
    for _ in range(7):
        blocked = attempt(client, ADMIN, "wrong wrong wrong")
        clock.advance(seconds=int(blocked.headers["Retry-After"]))
        assert attempt(client, ADMIN, "wrong wrong wrong").status_code == 401  # a try again after the wait
        waits.append(int(attempt(client, ADMIN, "x").headers["Retry-After"]))
    assert waits == [60, 120, 240, 480, 900, 900, 900]  # doubling, capped at ATTEST_LOGIN_LOCKOUT_MINUTES
    clock.advance(minutes=15)
    assert attempt(client, ADMIN, PASSWORD).status_code == 302  # never a permanent lock


def test_a_distributed_attack_cannot_lock_the_break_glass_admin_out(app, session, admin, clock):
    home = browser(app, "192.0.2.10")
    assert attempt(home, ADMIN, PASSWORD).status_code == 302  # the admin's usual address
    # guesses from 5 addresses, 3 each at most (under the per-address and per-pair limits)
    statuses = []
    for n in range(ACCOUNT_LIMIT + 3):
        statuses.append(attempt(browser(app, f"203.0.113.{n % 5}"), ADMIN, f"guess number {n}").status_code)
    assert statuses == [401] * ACCOUNT_LIMIT + [429] * 3  # the account is throttled ...
    assert attempt(browser(app, "203.0.113.200"), ADMIN, PASSWORD).status_code == 429  # ... for new addresses,
    assert attempt(browser(app, "192.0.2.10"), ADMIN, PASSWORD).status_code == 302  # not from the admin's own
    clock.advance(minutes=15)  # and not for long anywhere
    assert attempt(browser(app, "198.51.100.99"), ADMIN, PASSWORD).status_code == 302
    throttles = session.scalars(select(AuditEvent).where(AuditEvent.action == "login.throttle")).all()
    assert any("account" in e.after["blocked"] for e in throttles)


def test_an_operator_reset_lifts_an_account_block(app, session, admin, clock):
    for n in range(ACCOUNT_LIMIT):
        attempt(browser(app, f"203.0.113.{n % 5}"), ADMIN, f"guess number {n}")
    assert attempt(browser(app, "198.51.100.3"), ADMIN, PASSWORD).status_code == 429
    create_admin(session, ADMIN, "a new long passphrase 7")
    session.commit()
    assert attempt(browser(app, "198.51.100.3"), ADMIN, "a new long passphrase 7").status_code == 302


def test_client_address_honours_proxy_count(databases, tmp_path, factory, session, admin):
    from attest.app import create_app
    from tests.conftest import make_settings

    def app_with(proxies: int):
        application = create_app(make_settings(databases.url, tmp_path, proxy_count=proxies,
                                               login_address_max_failures=5))
        application.extensions["attest"].engine.dispose()
        application.extensions["attest"].factory = factory
        return application

    behind = app_with(1)
    client = behind.test_client()
    for n in range(5):
        attempt(client, f"u{n}@acme.example", "guess-guess-guess", **{"X-Forwarded-For": "203.0.113.50"})
    assert attempt(client, ADMIN, PASSWORD, **{"X-Forwarded-For": "203.0.113.50"}).status_code == 429
    assert attempt(client, ADMIN, PASSWORD, **{"X-Forwarded-For": "203.0.113.51"}).status_code == 302
    # without a trusted proxy the header is the client's say-so: changing it does not dodge the limit
    direct = app_with(0).test_client()
    for n in range(5):
        attempt(direct, f"v{n}@acme.example", "guess-guess-guess", **{"X-Forwarded-For": f"10.0.0.{n}"})
    assert attempt(direct, ADMIN, PASSWORD, **{"X-Forwarded-For": "10.9.9.9"}).status_code == 429


@pytest.mark.parametrize("password", [
    " " * 12, " " * 40, "a" + " " * 11, "ab cd ef gh ij", "aaaaaaaaaaaa", "abababababab",
    "password1234", "Password2024!", "qwerty123456", "iloveyou1234", "123456789012", "  letmein  2024  ",
])
def test_blank_ish_and_common_passwords_are_refused(session, password):
    with pytest.raises(UserError):
        hash_password(password)
    with pytest.raises(UserError):
        create_admin(session, "breakglass@acme.example", password)


def test_a_good_passphrase_is_accepted(session):
    user = create_admin(session, "breakglass@acme.example", "Tr0ub4dor and a horse")
    assert user.password_hash and "horse" not in user.password_hash
