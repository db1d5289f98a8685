"""The one unit of work per request (portal.unit_of_work): a response under 400 commits,
anything else rolls back — including what a view caught and rendered as an error — and a
service that calls keep_changes() keeps what it did although it fails."""
from __future__ import annotations

import pytest
from flask import abort, has_request_context
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.domain.errors import ConflictError, InvalidInputError
from portal.extensions import db
from portal.models import Department
from portal.services import departments
from portal.services.actors import CLI
from portal.unit_of_work import keep_changes


def stored_names() -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(Department.name).order_by(Department.name)).scalars())


@pytest.fixture
def routes(app):
    """Views that write a department and then end in various ways."""
    def write(name):
        departments.create_department(name=name, actor=CLI, now=app.extensions["clock"]())

    def ok():
        write("Committed")
        return "ok"

    def raises_service_error():
        write("Rolled back by the error map")
        raise ConflictError("taken")

    def renders_its_own_error():
        try:
            write("Rolled back after a caught error")
            raise InvalidInputError({"name": ["bad"]})
        except InvalidInputError:
            return "the form again", 422

    def keeps_then_fails():
        write("Kept although it failed")
        keep_changes()
        raise ConflictError("refused, but the mark stays")

    def crashes():
        write("Rolled back by a crash")
        raise RuntimeError("a bug")

    def aborts():
        write("Rolled back by abort")
        abort(404)

    for view in (ok, raises_service_error, renders_its_own_error, keeps_then_fails,
                 crashes, aborts):
        app.add_url_rule(f"/_uow/{view.__name__}", view.__name__, view)
    return app


@pytest.mark.parametrize("path, status, kept", [
    ("ok", 200, ["Committed"]),
    ("raises_service_error", 409, []),
    ("renders_its_own_error", 422, []),
    ("keeps_then_fails", 409, ["Kept although it failed"]),
    ("crashes", 500, []),
    ("aborts", 404, []),
])
def test_the_response_decides_commit_or_rollback(routes, client, path, status, kept):
    assert client.get(f"/_uow/{path}").status_code == status
    assert stored_names() == kept


def test_keep_changes_lasts_for_one_request_only(routes, client):
    client.get("/_uow/keeps_then_fails")
    assert client.get("/_uow/raises_service_error").status_code == 409
    assert stored_names() == ["Kept although it failed"]


def test_an_unflushed_object_is_committed_and_a_request_that_read_nothing_ends_none(
        app, client):
    """finish() skips the commit only for a unit with no transaction and nothing pending:
    an object added but not flushed is still committed; and a view that reads nothing
    costs no database transaction (no hook reads on every request)."""
    def adds_only():
        db.session.add(Department(name="Added, never flushed",
                                  created_at=app.extensions["clock"]()))
        return "ok"

    app.add_url_rule("/_uow/adds_only", "adds_only", adds_only)
    app.add_url_rule("/_uow/reads_nothing", "reads_nothing", lambda: "ok")
    began = []
    listen = [(db.engine, "begin", lambda conn: began.append(conn))]
    for target, name, fn in listen:
        event.listen(target, name, fn)
    try:
        assert client.get("/_uow/reads_nothing").status_code == 200
        assert began == []
        assert client.get("/_uow/adds_only").status_code == 200
        assert len(began) == 1
    finally:
        for target, name, fn in listen:
            event.remove(target, name, fn)
    assert stored_names() == ["Added, never flushed"]


def test_a_request_that_only_read_is_not_committed_and_one_statement_that_wrote_is(
        app, client, make):
    """A read-only unit ends without the ORM's commit (the database, SQLite or
    PostgreSQL here, opened no transaction for its reads); a single Core UPDATE, which
    leaves nothing pending in the session, still makes it commit."""
    department = make.department("QA Team")

    def reads():
        return db.session.scalar(select(Department.name))

    def updates_only():
        db.session.execute(update(Department).where(Department.id == department.id)
                           .values(name="Renamed by one UPDATE"))
        return "ok"

    app.add_url_rule("/_uow/reads", "reads", reads)
    app.add_url_rule("/_uow/updates_only", "updates_only", updates_only)
    commits = []
    # The requests' commits, not the test client's own before each request.
    record = lambda session: has_request_context() and commits.append(session)  # noqa: E731
    event.listen(Session, "after_commit", record)
    try:
        assert client.get("/_uow/reads").get_data(as_text=True) == "QA Team"
        assert commits == []
        assert client.get("/_uow/updates_only").status_code == 200
        assert len(commits) == 1
    finally:
        event.remove(Session, "after_commit", record)
    assert stored_names() == ["Renamed by one UPDATE"]


def test_a_failed_flush_the_view_caught_still_ends_in_a_rollback(app, client, make):
    """A flush that failed leaves nothing pending in the session (SQLAlchemy expired what
    it tried) and its transaction inactive: the unit rolls back and answers as the view
    said, rather than failing again at the end."""
    department = make.department("QA Team")

    def fails_to_flush():
        db.session.get(Department, department.id).name = None  # NOT NULL
        try:
            db.session.flush()
        except IntegrityError:
            return "refused", 409
        return "flushed?", 200

    app.add_url_rule("/_uow/fails_to_flush", "fails_to_flush", fails_to_flush)
    response = client.get("/_uow/fails_to_flush")
    assert (response.status_code, response.get_data(as_text=True)) == (409, "refused")
    assert stored_names() == ["QA Team"]
