"""An IAM admin's papercuts on the campaign pages (issue 20, part 6): definitions archived and unarchived
from the UI (hidden, not launchable, campaigns kept, audited); a second launch on one day warned about and
named apart; a close below the completion threshold needs a reason that is audited (server-side); the new
definition form shows no error before anything is typed, suggests resource types and people, and leaves the
reminders to the default fitted to the duration."""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy import select

from attest.reviews.models import Campaign, CampaignDefinition
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_user
from tests.reviews.factories import review_setup

HX = {"HX-Request": "true"}

YAML = """name: Finance quarterly
scope:
  resource_names: ["Finance-*"]
stages:
  - reviewer: manager
"""



@pytest.fixture
def setup(session):
    s = review_setup(session, people=3, per_person=2)
    s.extra["admin"] = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    return s


def _text(response) -> str:
    return response.get_data(as_text=True)


def _definition(app, client, session, setup) -> CampaignDefinition:
    login_as(app, client, setup.extra["admin"])
    assert client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": YAML}).status_code == 302
    return session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Finance quarterly"))


def _events(session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_archive_hides_refuses_launch_keeps_campaigns_and_unarchive_restores(app, client, session, setup, nocsrf):
    d = _definition(app, client, session, setup)
    launched = client.post(f"/campaigns/definitions/{d.id}/launch")
    assert launched.status_code == 302
    campaign = session.scalar(select(Campaign).where(Campaign.definition_id == d.id))
    page = _text(client.get("/campaigns"))
    assert f"/campaigns/definitions/{d.id}/launch" in page

    response = client.post(f"/campaigns/definitions/{d.id}/archive")
    page = _text(client.get(response.headers["Location"]))
    assert "Archived Finance quarterly" in page
    # hidden from the definitions list (its campaign stays listed), shown on request, not launchable
    assert f'href="/campaigns/definitions/{d.id}"' not in page and f"/campaigns/{campaign.id}" in page
    assert "Show 1 archived" in page
    shown = _text(client.get("/campaigns?archived=1"))
    assert f'href="/campaigns/definitions/{d.id}"' in shown and "archived</span>" in shown
    assert f"/campaigns/definitions/{d.id}/launch" not in shown
    edit = _text(client.get(f"/campaigns/definitions/{d.id}"))
    assert "Unarchive" in edit and "Launch a campaign" not in edit
    response = client.post(f"/campaigns/definitions/{d.id}/launch", data={"again": "1"})
    assert "is archived" in _text(client.get(response.headers["Location"]))
    assert session.scalars(select(Campaign).where(Campaign.definition_id == d.id)).all() == [campaign]
    session.expire_all()
    assert session.get(Campaign, campaign.id).status == "active"
    (event,) = _events(session, "definition.archive")
    assert event.actor == "root@acme.example" and event.object_id == str(d.id)

    response = client.post(f"/campaigns/definitions/{d.id}/unarchive")
    assert "Unarchived Finance quarterly" in _text(client.get(response.headers["Location"]))
    assert f'href="/campaigns/definitions/{d.id}"' in _text(client.get("/campaigns"))
    assert len(_events(session, "definition.unarchive")) == 1
    session.expire_all()
    assert session.get(CampaignDefinition, d.id).archived_at is None


def test_archived_definition_is_not_launched_by_its_schedule(app, client, session, setup, nocsrf):
    from datetime import timedelta

    from attest.db import utcnow
    from attest.reviews import schedule

    d = _definition(app, client, session, setup)
    d.schedule, d.created_at = "0 * * * *", utcnow() - timedelta(days=2)
    session.commit()
    assert d.id in schedule.due_to_launch(session, utcnow())
    client.post(f"/campaigns/definitions/{d.id}/archive")
    session.expire_all()
    assert d.id not in schedule.due_to_launch(session, utcnow())


def test_second_launch_on_one_day_is_warned_about_and_named_apart(app, client, session, setup, nocsrf):
    d = _definition(app, client, session, setup)
    client.post(f"/campaigns/definitions/{d.id}/launch")
    (first,) = session.scalars(select(Campaign).where(Campaign.definition_id == d.id)).all()
    # both pages say so before the click, and the button says what it does
    edit = _text(client.get(f"/campaigns/definitions/{d.id}"))
    assert "Already launched today" in edit and first.name in edit and "Launch again today" in edit
    listing = _text(client.get("/campaigns"))
    assert "was already launched today" in listing and "Launch again today" in listing
    # a stale page posting a plain launch is refused, server-side
    response = client.post(f"/campaigns/definitions/{d.id}/launch")
    assert "Already launched today" in _text(client.get(response.headers["Location"]))
    assert len(session.scalars(select(Campaign).where(Campaign.definition_id == d.id)).all()) == 1
    response = client.post(f"/campaigns/definitions/{d.id}/launch", data={"again": "1"})
    assert response.status_code == 302
    names = [c.name for c in session.scalars(select(Campaign).where(Campaign.definition_id == d.id).order_by(Campaign.id))]
    assert names == [first.name, f"{first.name} (2)"]


def test_close_below_the_threshold_needs_a_reason_that_is_audited(app, client, session, setup, nocsrf):
    login_as(app, client, setup.extra["admin"])
    setup.campaign.status = "active"
    session.commit()
    page = _text(client.get(f"/campaigns/{setup.campaign.id}"))
    # not the generic confirm: a reason box, required
    assert 'id="close-reason"' in page and "Why close now?" in page
    for data in ({}, {"reason": "   "}):
        response = client.post(f"/campaigns/{setup.campaign.id}/close", data=data)
        assert "say why the campaign is closed now" in _text(client.get(response.headers["Location"]))
    session.expire_all()
    assert session.get(Campaign, setup.campaign.id).status == "active" and not _events(session, "campaign.close")
    response = client.post(f"/campaigns/{setup.campaign.id}/close", data={"reason": "Quarter ends; auditor waiting"})
    assert "Closed" in _text(client.get(response.headers["Location"]))
    (event,) = _events(session, "campaign.close")
    assert event.after["reason"] == "Quarter ends; auditor waiting"


def test_close_at_or_above_the_threshold_needs_no_reason(app, client, session, setup, nocsrf):
    state = app.extensions["attest"]
    state.settings = dataclasses.replace(state.settings, close_reason_below_percent=0)
    login_as(app, client, setup.extra["admin"])
    setup.campaign.status = "active"
    session.commit()
    page = _text(client.get(f"/campaigns/{setup.campaign.id}"))
    assert 'id="close-reason"' not in page and "Close campaign" in page
    response = client.post(f"/campaigns/{setup.campaign.id}/close")
    assert "Closed" in _text(client.get(response.headers["Location"]))
    session.expire_all()
    assert session.get(Campaign, setup.campaign.id).status == "closed"


def test_new_definition_form_shows_no_error_before_input_and_suggests(app, client, session, setup, nocsrf):
    login_as(app, client, setup.extra["admin"])
    page = _text(client.get("/campaigns/definitions/new"))
    assert "definition-error" not in page and "is required" not in page
    # what the form's load trigger posts: the empty new form
    fields = dict(re.findall(r'<input class="form-control[^"]*" id="[^"]+" name="([^"]+)" value="([^"]*)"', page))
    preview = _text(client.post("/campaigns/definitions/preview", data={"mode": "form", "stage1": "manager", **fields},
                                headers=HX))
    assert "preview-error" not in preview and "is required" not in preview
    # suggestions: the resource types synced and the people who can be named
    types = re.search(r'<datalist id="resource-types">(.*?)</datalist>', page, re.S).group(1)
    people = re.search(r'<datalist id="people">(.*?)</datalist>', page, re.S).group(1)
    assert types.count("<option") >= 1
    assert f'value="{setup.manager.email}"' in people and "Maria Manager" in people
    assert 'list="people"' in page
    # saving without a name still refuses
    response = client.post("/campaigns/definitions/new", data={"mode": "form", "stage1": "manager", **fields, "name": ""})
    assert response.status_code == 400 and "name" in _text(response)


def test_a_short_campaign_from_the_form_gets_reminders_fitted_to_it(app, client, session, setup, nocsrf):
    login_as(app, client, setup.extra["admin"])
    page = _text(client.get("/campaigns/definitions/new"))
    rem = re.search(r'name="reminders_days_before_due" value="([^"]*)"', page).group(1)
    assert rem == ""  # the default is not typed in for the user
    form = {"mode": "form", "name": "Five days", "stage1": "manager", "duration_days": "5",
            "reminders_days_before_due": rem}
    response = client.post("/campaigns/definitions/new", data=form)
    assert response.status_code == 302, _text(response)
    d = session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Five days"))
    assert d.spec["timing"]["reminders_days_before_due"] == [2]
    # reminders typed by the user are kept, and checked; "none" means none
    bad = client.post("/campaigns/definitions/new", data={**form, "name": "Bad", "reminders_days_before_due": "7"})
    assert bad.status_code == 400 and "reminders_days_before_due" in _text(bad)
    client.post("/campaigns/definitions/new", data={**form, "name": "Quiet", "reminders_days_before_due": "none"})
    quiet = session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Quiet"))
    assert quiet.spec["timing"]["reminders_days_before_due"] == []
    # editing shows the fitted default empty, so a longer duration keeps fitting it
    edit = _text(client.get(f"/campaigns/definitions/{d.id}"))
    assert re.search(r'name="reminders_days_before_due" value="([^"]*)"', edit).group(1) == ""
