"""Fixtures for the route-matrix and fuzz tests: the seeded world and an app whose forms skip CSRF."""

from __future__ import annotations

import pytest

from tests.web.world import World, build_world


@pytest.fixture
def world(session) -> World:
    w = build_world(session)
    session.commit()
    return w


@pytest.fixture
def nocsrf_app(app):
    """The app with CSRF off, so hostile forms reach the handlers (one test keeps it on: forged posts 400)."""
    app.config["WTF_CSRF_ENABLED"] = False
    return app
