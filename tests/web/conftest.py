"""Fixtures for the route-matrix and fuzz tests: the seeded world and an app whose forms skip CSRF."""

from __future__ import annotations

import pytest

from tests.web.world import World, build_world


@pytest.fixture
def world(session) -> World:
    w = build_world(session)
    session.commit()
    return w

