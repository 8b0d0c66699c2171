"""attest.dialects: raw SQL binds dates as the models do (no date converted by hand); and attest.db's readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, update

from attest import dialects
from attest.db import column_reader
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


def test_among_parameter_matches_text_as_it_is_and_sends_one_sql_text_whatever_the_lists_length(session):
    names = ["O'Brien, Siobhán", "Zoë \"Z\" Ng", "100", "plain"]
    people = [make_identity(session, f"t{n}@acme.example", name) for n, name in enumerate(names)]
    session.flush()
    stmt = select(Identity.id).where(dialects.among_parameter(dialects.name(session), Identity.display_name, "names"))
    sent: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        def found(values):
            return sorted(session.scalars(stmt, {"names": values}))

        assert found(names[:2]) == [people[0].id, people[1].id]
        assert found(["100", "nobody", "O'Brien"]) == [people[2].id]  # text compared as text, whole
        assert found([*names, *(f"x{n}" for n in range(200))]) == sorted(p.id for p in people)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    # the same SQL text for 2 values and for 204: the database prepares it once (SQLite re-prepares every
    # new text; an expanding IN renders a placeholder per value)
    assert len(sent) == 3 and len(set(sent)) == 1, sent


def test_a_reviewers_undecided_items_are_counted_with_the_decision_kept_out_of_sqlites_index_choice(session):
    """SQLite, never ANALYZEd, took `decision IS NULL` for a selective equality and read a reviewer's undecided
    items through the (campaign_id, decision) index, that is the whole campaign: the filtered inbox's selection
    counts at 200,000 items took 54.7 ms instead of 2.5 ms through the reviewer's index (EXPLAIN QUERY PLAN on
    bench/reviews_inbox.py's database; a small test table does not reproduce the planner's choice). The bulk
    selection's reads keep the term out of the index choice on SQLite (the unary +), unchanged on PostgreSQL;
    the same rows either way."""
    from sqlalchemy import event

    from attest.reviews import queries
    from attest.reviews.models import ReviewItem

    undecided = dialects.not_an_index_term(session, ReviewItem.decision).is_(None)
    plain = select(ReviewItem.account_id).where(ReviewItem.reviewer_id == 1, ReviewItem.campaign_id == 1,
                                                ReviewItem.decision.is_(None))
    kept_out = select(ReviewItem.account_id).where(ReviewItem.reviewer_id == 1, ReviewItem.campaign_id == 1, undecided)
    assert session.scalars(kept_out).all() == session.scalars(plain).all()
    sent: list[str] = []
    conn = session.connection()
    event.listen(conn, "before_cursor_execute", lambda *a: sent.append(a[2]))
    filters = queries.InboxFilters(risk="flagged")
    assert queries.selection_counts(session, 1, 1, filters, [ReviewItem.id.is_not(None)]) == (0, 0)
    assert queries.selection_ids(session, 1, 1, filters) == []
    kept = "(+ review_item.decision) IS NULL"
    if dialects.is_postgresql(session):
        assert all(kept not in sql and "review_item.decision IS NULL" in sql for sql in sent), sent
    else:
        assert len(sent) == 2 and all(kept in sql for sql in sent), sent


def test_json_columns_read_back_as_written_and_each_read_is_its_own_object(session):
    """SQLite's JSON reader answers the empty object and list without the decoder (attest.db._json_loads):
    what comes back must still equal what was written, and two rows' empty values must not be one shared,
    mutable object."""
    values = [{}, {}, [], {"a": [1, {"b": None}], "é": "x"}, [{}], "{}", 0, None]
    people = [make_identity(session, f"j{n}@acme.example", attributes=v) for n, v in enumerate(values)]
    session.flush()
    session.expire_all()
    read = session.execute(select(Identity.id, Identity.attributes).where(
        Identity.id.in_([p.id for p in people])).order_by(Identity.id)).all()
    assert [attrs for _id, attrs in read] == values
    first, second = read[0][1], read[1][1]
    first["changed"] = True
    assert second == {} and first is not second


def test_a_column_reader_reads_what_the_attributes_read_and_loads_what_is_not_loaded(session):
    """attest.db.column_reader reads a loaded object's columns from its state, not through the ORM attributes: a
    column that is expired (a change made in SQL, a server default after a flush) must still be loaded, never read
    stale or found missing, and a change not yet flushed reads as the attribute reads it."""
    person = make_identity(session, "reader@acme.example", "Ada Reader")
    read = column_reader(("id", "email", "display_name"))
    assert read(person) == (person.id, "reader@acme.example", "Ada Reader")
    session.execute(update(Identity).where(Identity.id == person.id).values(display_name="Changed in SQL"))
    session.expire(person, ["display_name"])
    assert read(person) == (person.id, "reader@acme.example", "Changed in SQL")
    person.email = "not-flushed@acme.example"
    assert read(person) == (person.id, "not-flushed@acme.example", "Changed in SQL")
    with pytest.raises(ValueError):
        column_reader(("id",))


def test_a_pooled_sqlite_connection_comes_back_as_a_new_one_would(fresh_db):
    """SQLite connections are pooled (attest.db: the schema and the prepared statements kept from one request to
    the next); what a connection was left with must not reach its next user: a temporary table a failed launch
    or sync left behind, the small page cache of a streaming read."""
    if not fresh_db.url.startswith("sqlite"):
        pytest.skip("SQLite's pool; PostgreSQL's connections were always pooled, their temporary tables drop on commit")
    from sqlalchemy.orm import Session

    from attest.db import SQLITE_CACHE_KIB

    with fresh_db.engine.connect() as conn:
        first = conn.connection.dbapi_connection
        conn.exec_driver_sql("CREATE TEMPORARY TABLE route_left_behind (item INTEGER)")
        conn.commit()
        with Session(bind=conn) as session:
            dialects.small_page_cache(session)
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -16384
    with fresh_db.engine.connect() as conn:
        assert conn.connection.dbapi_connection is first  # reused, not opened again
        assert conn.exec_driver_sql("SELECT name FROM sqlite_temp_master WHERE type = 'table'").all() == []
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
        conn.exec_driver_sql("CREATE TEMPORARY TABLE route_left_behind (item INTEGER)")  # the name is free again
        conn.rollback()
