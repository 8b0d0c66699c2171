"""Database outages answered clearly (issue 16, part 7): while the database is unreachable a signed-in
user gets Attest's own 503 page saying the last action may not have been saved (Retry-After), htmx and
JSON callers get the same in their form, /healthz stays up and /readyz says what is wrong, the CLI says
it in one line; when the database returns, everything answers again."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from attest.app import create_app
from attest.db import make_engine, unavailable
from tests.factories import login_as, make_user
from tests.reviews.factories import review_setup


def _unreachable(fresh_db, tmp_path):
    """An engine for the same kind of database, which cannot be reached."""
    if fresh_db.url.startswith("sqlite"):
        return create_engine(f"sqlite:///{tmp_path}/no-such-dir/attest.db")  # cannot be opened
    return create_engine("postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/attest", connect_args={"connect_timeout": 2})


@pytest.fixture
def outage(fresh_db, tmp_path):
    with fresh_db.factory() as s, s.begin():
        setup = review_setup(s, people=1, per_person=1, risky={})
        admin = make_user(s, "root@acme.example", roles=["admin"])
    app = create_app(fresh_db.settings)
    app.config["WTF_CSRF_ENABLED"] = False
    state = app.extensions["attest"]
    good = (state.engine, state.factory)
    client, admin_client = app.test_client(), app.test_client()
    login_as(app, client, setup.manager_user)
    login_as(app, admin_client, admin)
    down = _unreachable(fresh_db, tmp_path)

    class Outage:
        def start(self):
            state.engine, state.factory = down, sessionmaker(bind=down, expire_on_commit=False)

        def end(self):
            state.engine, state.factory = good

    yield app, client, admin_client, setup, Outage()
    down.dispose()


def test_pages_decisions_and_json_get_a_clear_503_and_recover(outage):
    app, client, _, setup, db = outage
    item = setup.items[0]
    assert client.get("/reviews").status_code == 200
    db.start()
    page = client.get("/reviews")
    assert page.status_code == 503 and page.headers["Retry-After"] == "30"
    text = page.get_data(as_text=True)
    assert "The database is unavailable" in text and "may not have been" in text
    assert "Internal Server Error" not in text and "s3cret-pw" not in text
    # a decision posted from the inbox (htmx): the same, as text the page shows at its top
    r = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers={"HX-Request": "true"})
    assert r.status_code == 503 and "may not have been saved" in r.get_data(as_text=True)
    r = client.get("/reviews", headers={"Accept": "application/json"})
    assert r.status_code == 503 and r.get_json()["error"] == "Database unavailable"
    db.end()  # the database is back: nothing to restart
    assert client.get("/reviews").status_code == 200
    r = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers={"HX-Request": "true"})
    assert r.status_code == 200


def test_healthz_stays_up_and_readyz_says_what_is_wrong(outage):
    app, client, _, _, db = outage
    anonymous = app.test_client()
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["ready"] is True
    assert ready.get_json()["schema"]["current"] == ready.get_json()["schema"]["expected"]
    assert ready.get_json()["scheduler"]["running"] is False  # reported, not required
    db.start()
    health = anonymous.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "30"
    body = ready.get_json()
    assert body["ready"] is False and body["database"] == "unavailable" and "s3cret-pw" not in json.dumps(body)
    db.end()
    assert anonymous.get("/readyz").status_code == 200


def test_readyz_refuses_an_unmigrated_database(tmp_path, fresh_db):
    if not fresh_db.url.startswith("sqlite"):
        pytest.skip("an empty SQLite file stands for any unmigrated database")
    app = create_app(fresh_db.settings)
    state = app.extensions["attest"]
    state.engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and "attest db upgrade" in r.get_json()["schema"]["message"]


def test_the_cli_says_an_unreachable_database_in_one_line(fresh_db, tmp_path, monkeypatch):
    from attest.cli import main

    url = ("postgresql://postgres:s3cret-pw@127.0.0.1:1/attest" if not fresh_db.url.startswith("sqlite")
           else f"sqlite:///{tmp_path}/a-file")
    if url.startswith("sqlite"):
        (tmp_path / "a-file").mkdir()  # a directory where the database file should be: cannot be opened
    monkeypatch.setenv("ATTEST_ENV", "test")
    monkeypatch.setenv("ATTEST_DATABASE_URL", url)
    monkeypatch.setenv("ATTEST_INSTANCE_PATH", str(tmp_path / "instance"))
    for args in (["db", "upgrade"], ["campaigns", "list"], ["scheduler", "--status"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "cannot be reached" in lines[0] and "Traceback" not in result.output
        assert "s3cret-pw" not in result.output


def test_unavailable_tells_an_outage_from_a_wrong_query(fresh_db):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as wrong, fresh_db.engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table_here"))
    assert not unavailable(wrong.value)
