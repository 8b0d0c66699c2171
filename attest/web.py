"""Per-request database session and small helpers shared by the blueprints."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import abort, current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from attest.config import Settings
from attest.db import begin_write
from attest.entitlements.models import PersonStatus, RunStatus
from attest.reviews.decisions import Forbidden, NotFound
from attest.reviews.models import CampaignStatus, DecisionValue, RemediationMode, RemediationStatus

# the status names the pages compare with, as Jinja globals (`campaign.status == CampaignStatus.ACTIVE`):
# their one home is next to their models
TEMPLATE_ENUMS = {e.__name__: e for e in (CampaignStatus, DecisionValue, PersonStatus, RemediationMode,
                                            RemediationStatus, RunStatus)}


@dataclass
class AttestState:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]


def state() -> AttestState:
    return current_app.extensions["attest"]


def settings() -> Settings:
    return state().settings


def db() -> Session:
    """The request's session: opened on first use, closed (rolled back if uncommitted) at teardown."""
    if "db" not in g:
        g.db = state().factory()
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        try:
            session.close()
        except Exception as exc:  # the database went away under the request: the answer was sent already
            logging.getLogger("attest").warning("closing the request's database session failed: %s", exc)


@contextmanager
def write() -> Iterator[Session]:
    """The request's session inside one write transaction (committed on success, rolled back on error).

    Reading the signed-in user has usually begun a read transaction already; it is ended first so the
    view's changes and their audit events commit together.
    """
    session = db()
    if session.in_transaction():
        session.commit()
    with begin_write(session):
        yield session


@contextmanager
def refusals() -> Iterator[None]:
    """A write view's refusals as answers: `NotFound` is 404 (never 403: what is not the user's does not
    exist for them), `Forbidden` is 403 with its reason. Other errors pass through for the view to answer.

        with refusals(), write() as session:
            service.change(session, ...)
    """
    try:
        yield
    except NotFound:
        abort(404)
    except Forbidden as exc:
        abort(403, str(exc))
