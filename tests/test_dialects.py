"""attest.dialects: raw SQL binds dates as the models do (no date converted by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from attest import dialects
from attest.entitlements.models import Identity
from tests.factories import make_identity


def test_a_raw_sql_date_compares_with_dates_the_models_stored(session):
    stored = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    ada = make_identity(session, "ada@acme.example", ended_at=stored)
    sql = "SELECT id FROM identity WHERE ended_at = :at"
    # the same moment written in another zone: bound as UTCDateTime, it is the stored one
    at = stored.astimezone(timezone(timedelta(hours=-5)))
    assert session.scalars(dialects.text_with_dates(sql, {"at": at}), {"at": at}).all() == [ada.id]
    later = stored + timedelta(microseconds=1)
    assert session.scalars(dialects.text_with_dates(sql, {"at": later}), {"at": later}).all() == []


def test_a_raw_sql_date_is_stored_as_the_models_store_it(session):
    ada = make_identity(session, "ada@acme.example")
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    params = {"at": at, "id": ada.id}
    session.execute(dialects.text_with_dates("UPDATE identity SET ended_at = :at WHERE id = :id", params), params)
    session.expire_all()
    assert session.scalar(select(Identity.ended_at).where(Identity.id == ada.id)) == at
    assert session.scalar(select(Identity.id).where(Identity.ended_at == at)) == ada.id


def test_only_datetimes_named_in_the_statement_are_typed(session):
    clause = dialects.text_with_dates("SELECT :n AS n", {"n": 1, "unused": datetime(2026, 1, 1, tzinfo=UTC)})
    assert session.execute(clause, {"n": 1}).scalar() == 1


def test_among_finds_the_rows_whose_value_is_in_a_list_in_one_statement_text(session):
    people = [make_identity(session, f"p{n}@acme.example") for n in range(4)]
    session.flush()

    def found(ids):
        return sorted(session.scalars(select(Identity.id).where(dialects.among(session, Identity.id, ids))))

    assert found({people[0].id, people[2].id, 987_654_321}) == [people[0].id, people[2].id]
    assert found({people[3].id}) == [people[3].id]
    emails = session.scalars(select(Identity.email).where(
        dialects.among(session, Identity.email, {"p1@acme.example", "nobody@acme.example"}))).all()
    assert emails == ["p1@acme.example"]
    # on PostgreSQL the statement's text does not grow with the list (one array parameter)
    if dialects.is_postgresql(session):
        def sql(ids):
            return str(select(Identity.id).where(dialects.among(session, Identity.id, ids))
                       .compile(bind=session.get_bind()))
        assert sql(set(range(3))) == sql(set(range(300)))


def test_among_parameter_takes_its_list_at_execution_one_statement_for_every_list(session):
    people = [make_identity(session, f"q{n}@acme.example") for n in range(3)]
    session.flush()
    stmt = select(Identity.id).where(dialects.among_parameter(dialects.name(session), Identity.id, "ids"))

    def found(ids):
        return sorted(session.scalars(stmt, {"ids": sorted(ids)}))

    assert found({people[0].id, people[2].id, 987_654_321}) == [people[0].id, people[2].id]
    assert found({people[1].id}) == [people[1].id]
    assert found(set()) == []
