#!/usr/bin/env python3
"""CI: `make run` on this clone as a new user runs it, before anything else is installed.

Starts `make run` in its own process group and waits (bounded) until the web UI and every registered
sandbox service answer; checks that each service serves the demo's data and that single sign-on through
the demo IdP signs a manager in (GET /login -> "Sign in with Demo IdP" -> the IdP's sign-in form ->
callback -> the manager's reviews); then stops the whole group and checks that nothing is left running.

Standard library only, run with the system python3: it must not depend on what it is checking.
Exit 0 and "make run check: passed", or non-zero with the reason and the tail of make run's output.
"""

from __future__ import annotations

import ast
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = "http://127.0.0.1:5000"  # what `make run` binds
LOG = ROOT / "test-artifacts" / "make-run.log"
# a fresh clone installs the venv (1-2 minutes here), migrates, syncs the demo org and launches a campaign
START_TIMEOUT = float(os.environ.get("MAKE_RUN_CHECK_TIMEOUT", "900"))
SERVICES_GRACE = 120.0
STOP_TIMEOUT = 30.0
HTTP_TIMEOUT = 30.0
MANAGER = "ada.lovelace0@acme.example"  # a manager of the demo org (README, attest/connectors/sandbox/idp.py)
# the demo sources' credentials for the sandbox services (attest/demo.py, demo_sources)
OKTA_TOKEN = "sandbox-token"
GITHUB_TOKEN = "ghp_sandbox_token_for_attest"
GITHUB_ORG = "acme-corp"


class CheckFailed(Exception):
    pass


def sandbox_ports() -> dict[str, int]:
    """name -> port of every registered sandbox service, read from the registry's source (no import:
    this script runs outside the venv)."""
    tree = ast.parse((ROOT / "attest/connectors/sandbox/__init__.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "SERVICES":
            return {name: port for name, (_, port) in ast.literal_eval(node.value).items()}
    raise CheckFailed("attest/connectors/sandbox/__init__.py has no SERVICES registry")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Browser:
    """Cookies and redirects like a browser; loopback only (no proxy from the environment)."""

    def __init__(self) -> None:
        self.hops: list[str] = []
        browser = self

        class Recorder(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                browser.hops.append(f"{code} -> {newurl}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            Recorder())

    def request(self, url: str, data: dict[str, str] | bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, final URL, body). HTTP errors are answers too."""
        if isinstance(data, dict):
            data = urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 - http on loopback
        try:
            with self.opener.open(req, timeout=HTTP_TIMEOUT) as resp:
                return resp.status, resp.geturl(), resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode("utf-8", "replace")


class Page(HTMLParser):
    """The links (href, text), forms (action, method, fields) and navbar text of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.forms: list[dict] = []
        self.navbar = ""
        self._link: list | None = None
        self._navbar_depth = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self._link = [a.get("href") or "", ""]
        elif tag == "form":
            self.forms.append({"action": a.get("action") or "", "method": (a.get("method") or "get").lower(),
                               "fields": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["fields"].setdefault(a["name"], a.get("value") or "")
        if tag == "span" and "navbar-text" in (a.get("class") or ""):
            self._navbar_depth = 1
        elif tag == "span" and self._navbar_depth:
            self._navbar_depth += 1

    def handle_endtag(self, tag):
        if tag == "a" and self._link is not None:
            self.links.append((self._link[0], " ".join(self._link[1].split())))
            self._link = None
        elif tag == "span" and self._navbar_depth:
            self._navbar_depth -= 1

    def handle_data(self, data):
        if self._link is not None:
            self._link[1] += data
        if self._navbar_depth:
            self.navbar += data


def wait_until_up(proc: subprocess.Popen, ports: dict[str, int]) -> float:
    """Seconds until every port listens. make run starts the sandbox and the scheduler just before the web
    UI, so once the web UI listens the sandbox services get SERVICES_GRACE more, not the whole timeout."""
    start = time.monotonic()
    deadline = start + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"make run exited with status {proc.returncode} before everything answered")
        waiting = [name for name, port in ports.items() if not listening(port)]
        if not waiting:
            return time.monotonic() - start
        if "web" not in waiting:
            deadline = min(deadline, time.monotonic() + SERVICES_GRACE)
        time.sleep(1)
    raise CheckFailed("not listening " + ("after the web UI started" if "web" not in waiting else
                                          f"after {START_TIMEOUT:.0f} s") + ": "
                      + ", ".join(f"{n} (port {ports[n]})" for n in waiting))


def check_services(browser: Browser, ports: dict[str, int]) -> list[str]:
    """One real request to each sandbox service, as the demo's sources make them."""

    def get(name: str, path: str, **kw) -> tuple[int, str]:
        status, _, body = browser.request(f"http://127.0.0.1:{ports[name]}{path}", **kw)
        return status, body

    def probe_okta() -> str:
        status, body = get("okta", "/api/v1/users?limit=2", headers={"Authorization": f"SSWS {OKTA_TOKEN}",
                                                                       "Accept": "application/json"})
        users = json.loads(body) if status == 200 else None
        if not isinstance(users, list) or not users:
            raise CheckFailed(f"fake Okta: GET /api/v1/users answered {status}: {body[:200]}")
        return f"fake Okta: users ({users[0]['profile']['email']}, ...)"

    def probe_github() -> str:
        status, body = get("github", f"/orgs/{GITHUB_ORG}/members?per_page=2",
                           headers={"Authorization": f"Bearer {GITHUB_TOKEN}", "Accept": "application/vnd.github+json"})
        members = json.loads(body) if status == 200 else None
        if not isinstance(members, list) or not members:
            raise CheckFailed(f"fake GitHub: GET /orgs/{GITHUB_ORG}/members answered {status}: {body[:200]}")
        return f"fake GitHub: {GITHUB_ORG} members ({members[0]['login']}, ...)"

    def probe_aws() -> str:
        # IAM's query API; moto routes by the credential scope and does not check signatures
        auth = ("AWS4-HMAC-SHA256 Credential=sandbox/20240101/us-east-1/iam/aws4_request, "
                "SignedHeaders=host, Signature=0")
        status, body = get("aws", "/", data={"Action": "ListUsers", "Version": "2010-05-08"},
                           headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
        users = re.findall(r"<UserName>([^<]+)</UserName>", body)
        if status != 200 or not users:
            raise CheckFailed(f"moto (AWS): IAM ListUsers answered {status}: {body[:200]}")
        return f"moto (AWS): {len(users)} IAM users in the management account"

    def probe_idp() -> str:
        status, body = get("idp", "/.well-known/openid-configuration")
        meta = json.loads(body) if status == 200 else {}
        if not meta.get("authorization_endpoint"):
            raise CheckFailed(f"demo IdP: discovery answered {status}: {body[:200]}")
        return f"demo IdP: discovery, issuer {meta.get('issuer')}"

    probes = {"okta": probe_okta, "github": probe_github, "aws": probe_aws, "idp": probe_idp}
    lines = []
    for name, port in sorted(ports.items()):
        if name == "web":
            continue
        if name in probes:
            lines.append(f"{probes[name]()} (port {port})")
        else:  # a service registered after this check was written: at least it must speak HTTP
            status, _ = get(name, "/")
            lines.append(f"sandbox {name}: HTTP {status} (port {port})")
    return lines


def check_sso(browser: Browser) -> list[str]:
    status, url, body = browser.request(f"{WEB}/login")
    if status != 200:
        raise CheckFailed(f"web UI: GET /login answered {status}: {body[:300]}")
    sso = [href for href, text in Page(body).links if text.startswith("Sign in with")]
    if not sso:
        raise CheckFailed("web UI: the sign-in page offers no single sign-on (no 'Sign in with ...' link): "
                          "did `attest demo` write the demo IdP's settings to .env?")
    status, idp_url, body = browser.request(urllib.parse.urljoin(url, sso[0]))
    forms = [f for f in Page(body).forms if "sub" in f["fields"] and f["method"] == "post"]
    if status != 200 or not idp_url.startswith("http://127.0.0.1:") or not forms:
        raise CheckFailed(f"SSO: {sso[0]} led to {idp_url} ({status}), not the demo IdP's sign-in form")
    # the IdP signs in whoever the form names (oidc-provider-mock's /oauth2/authorize POST, field `sub`)
    browser.hops.clear()
    status, final, body = browser.request(urllib.parse.urljoin(idp_url, forms[0]["action"]), data={"sub": MANAGER})
    path = urllib.parse.urlsplit(final).path
    if not any("/login/oidc/callback" in hop for hop in browser.hops):
        raise CheckFailed(f"SSO: the IdP did not send the browser back to the callback (hops: {browser.hops})")
    page = Page(body)
    if status != 200 or path != "/reviews":
        raise CheckFailed(f"SSO: signing in as {MANAGER} ended at {final} ({status}), not /reviews: {body[:300]}")
    if not any(f["action"].endswith("/logout") for f in page.forms):
        raise CheckFailed(f"SSO: /reviews answered but {MANAGER} is not signed in (no sign-out button)")
    who = " ".join(page.navbar.split())
    if re.search(r"\b(admin|auditor)\b", who):
        raise CheckFailed(f"SSO: {MANAGER} signed in with roles beyond a manager's: {who}")
    if "campaign-card" not in body:
        raise CheckFailed(f"SSO: {MANAGER} signed in ({who}) but /reviews lists no campaign to review")
    return [f"web UI: GET /login 200 (port {urllib.parse.urlsplit(WEB).port})",
            f"SSO: GET /login -> {sso[0]} -> demo IdP form -> callback -> {path}: signed in as {who}, "
            "a campaign to review"]


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, as "pid command"."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm, _, rest = text[text.index("(") + 1:].rpartition(")")
        state, _ppid, pgrp = rest.split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(f"{stat.parent.name} {comm}")
    return members


def stop(proc: subprocess.Popen) -> None:
    """TERM the whole process group (make, the sandbox, the scheduler, gunicorn), KILL what stays."""
    pgid = proc.pid  # start_new_session: the group's id is make's pid
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap make
            if not group_members(pgid):
                return
            time.sleep(0.2)
        if sig == signal.SIGTERM:
            print(f"make run check: {group_members(pgid)} still running {STOP_TIMEOUT:.0f} s after SIGTERM; "
                  "killing", flush=True)
    raise CheckFailed(f"processes of make run's group survived SIGKILL: {group_members(pgid)}")


def main() -> int:
    ports = {"web": 5000, **sandbox_ports()}
    busy = [f"{n} (port {p})" for n, p in ports.items() if listening(p)]
    if busy:
        print(f"make run check: FAILED: something already listens on {', '.join(busy)}; stop it first", flush=True)
        return 1
    LOG.parent.mkdir(parents=True, exist_ok=True)
    print(f"make run check: starting `make run` (output in {LOG.relative_to(ROOT)})", flush=True)
    with LOG.open("w") as log:
        proc = subprocess.Popen(["make", "run"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    lines, error = [], None
    try:
        took = wait_until_up(proc, ports)
        lines.append(f"make run: the web UI and {len(ports) - 1} sandbox services listen after {took:.0f} s")
        lines += check_sso(Browser())
        lines += check_services(Browser(), ports)
    except CheckFailed as exc:
        error = str(exc)
    finally:
        try:
            stop(proc)
        except CheckFailed as exc:
            error = error or str(exc)
    left = [f"{n} (port {p})" for n, p in ports.items() if listening(p)]
    if left and not error:
        error = f"still listening after make run stopped: {', '.join(left)}"
    for line in lines:
        print(f"  {line}")
    text = re.sub(r"(password )\S+", r"\1[not shown]", LOG.read_text(errors="replace"))
    for line in text.splitlines():
        if line.startswith(("synced ", "launched campaign", "demo campaign")):
            print(f"  [make run] {line}")
    if error:
        print("--- last lines of make run's output ---")
        print("\n".join(text.splitlines()[-40:]))
        tracebacks = text.split("Traceback (most recent call last):")
        if len(tracebacks) > 1:  # e.g. a sandbox service that died at start, long before the tail
            body = tracebacks[-1].splitlines()
            end = next((i for i, line in enumerate(body[1:], 1) if line and not line[0].isspace()), len(body) - 1)
            print("--- the last traceback in make run's output ---")
            print("\n".join(["Traceback (most recent call last):", *body[1:end + 1]]))
        errors = [line for line in text.splitlines() if line.startswith(("Error: ", "make: ***"))]
        if errors:  # a command's own error message (click) and make's verdict
            print("--- errors in make run's output ---")
            print("\n".join(errors[-10:]))
        print(f"make run check: FAILED: {error}", flush=True)
        return 1
    print("  stopped: make run's process group is gone and its ports are free")
    print("make run check: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
