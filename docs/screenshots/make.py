"""Regenerate the README's screenshots (docs/screenshots/*.png) from the real demo.

    .venv/bin/python docs/screenshots/make.py [--chromium /usr/bin/chromium] [--port 5077]

In a fresh temporary instance (its own SQLite database, keys and `.env`; nothing in the checkout or in
`instance/` is touched) it runs `attest db upgrade` and `attest demo` (the sandbox Okta, GitHub and AWS
are started in-process), gives the busiest demo reviewer a local password so the inbox can be shown,
serves the UI with `attest run`, and photographs each page with Playwright in a headless Chromium at
1440 px: the reviewer's inbox, a person's page, the launched campaign's dashboard and the Sources page.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ATTEST = str(Path(sys.executable).with_name("attest"))

REVIEWER_SQL = """
from sqlalchemy import func, select
from attest.app import create_app
from attest.auth.login import hash_password
from attest.auth.models import User
from attest.reviews.models import Campaign, ReviewItem
from attest.entitlements.models import Identity
app = create_app()
factory = app.extensions["attest"].factory
with factory() as s:
    campaign = s.scalar(select(Campaign).where(Campaign.status == "active").order_by(Campaign.id))
    reviewer_id = s.scalar(select(ReviewItem.reviewer_id).where(ReviewItem.campaign_id == campaign.id,
        ReviewItem.reviewer_id.is_not(None)).group_by(ReviewItem.reviewer_id).order_by(func.count().desc()).limit(1))
    person = s.get(Identity, reviewer_id)
    user = s.scalar(select(User).where(User.email == person.email.lower()))
    if user is None:
        user = User(email=person.email.lower(), display_name=person.display_name, local_roles=[], idp_roles=[])
        s.add(user)
    user.identity_id, user.password_hash = person.id, hash_password(os.environ["SHOT_PASSWORD"])
    other = s.scalar(select(Identity.id).where(Identity.manager_id == person.id).order_by(Identity.id).limit(1))
    s.commit()
    print(campaign.id, person.email, other or person.id)
"""


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own http://127.0.0.1 demo)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--out", type=Path, default=HERE)
    opts = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="attest-shots-") as tmp:
        work = Path(tmp)
        base = f"http://127.0.0.1:{opts.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
        env.update(ATTEST_ENV="development", ATTEST_INSTANCE_PATH=str(work / "instance"),
                   ATTEST_DATABASE_URL=f"sqlite:///{work / 'attest.db'}", ATTEST_BASE_URL=base,
                   SHOT_PASSWORD=secrets.token_urlsafe(18), PYTHONPATH=str(ROOT))
        run([ATTEST, "db", "upgrade"], env, work)
        run([ATTEST, "demo"], env, work)
        print("demo loaded")
        admin_password = (work / "instance" / "demo_admin_password").read_text().strip()
        campaign_id, reviewer, person_id = run([sys.executable, "-c", "import os\n" + REVIEWER_SQL], env, work).split()
        server = subprocess.Popen([ATTEST, "run", "--port", str(opts.port), "--no-reload"], env=env, cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(base + "/healthz")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=opts.chromium, headless=True)

                def session(email: str, password: str):
                    context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                    page = context.new_page()
                    page.goto(base + "/login")
                    page.fill("input[name=email]", email)
                    page.fill("input[name=password]", password)
                    with page.expect_navigation():
                        page.click("form button[type=submit]")
                    return context, page

                def shot(page, path: str, name: str) -> None:
                    page.goto(base + path)
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(opts.out / name))
                    print(f"{name}: {path}")

                context, page = session(reviewer, env["SHOT_PASSWORD"])
                shot(page, "/reviews", "inbox.png")
                context.close()
                context, page = session("breakglass@demo.example", admin_password)
                shot(page, f"/identities/{person_id}", "person.png")
                shot(page, f"/campaigns/{campaign_id}", "campaign.png")
                shot(page, "/sources", "sources.png")
                context.close()
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
