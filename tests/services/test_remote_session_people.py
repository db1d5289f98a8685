"""The Sessions page's "Person" filter on remote sessions reads remote_session_people: the
technician, "Run as" and approver of each session, lower-cased once when it starts (and
backfilled by migration 0013), so a person's sessions come newest first from one index,
a page at a time."""
from __future__ import annotations

from datetime import timedelta

from factories import NOW, TEST_CONFIG, Factory
from sqlalchemy import select
from web.session_logs_setup import DEVICE, OTHER_DEVICE, build_world, remote_session

from portal import create_app
from portal.domain.log_filters import LogFilter
from portal.extensions import db
from portal.models import RemoteSessionPerson
from portal.services import session_logs


def people() -> list[tuple[int, str, int]]:
    return [tuple(row) for row in db.session.execute(
        select(RemoteSessionPerson.remote_session_id, RemoteSessionPerson.person,
               RemoteSessionPerson.department_id, RemoteSessionPerson.started_at)
        .order_by(RemoteSessionPerson.remote_session_id, RemoteSessionPerson.person))]


def test_a_started_session_names_its_technician_run_as_and_approver_once(app, make):
    world = build_world(make)
    _, own = remote_session("tech@example.com", DEVICE, NOW, run_as="TECH@example.com")
    _, other = remote_session("tech2@example.com", OTHER_DEVICE, NOW + timedelta(minutes=1),
                              run_as="\u00c5sa.Admin")
    at = NOW + timedelta(minutes=1)
    assert people() == [
        (own.id, "policy", world.qa.id, NOW), (own.id, "tech@example.com", world.qa.id, NOW),
        (other.id, "policy", world.qa.id, at), (other.id, "tech2@example.com", world.qa.id, at),
        (other.id, "\u00e5sa.admin", world.qa.id, at)]


def _listed(department_id: int, person: str, limit: int, **filters) -> list[int]:
    """Every page of the remote sessions for this person, following the page keys."""
    seen, before = [], None
    while True:
        page = session_logs.list_remote_sessions(
            department_id=department_id, log_filter=LogFilter(person=person, **filters),
            before=before, limit=limit, now=NOW + timedelta(days=1))
        seen += [row.id for row in page.items]
        if page.next_after is None:
            return seen
        before = page.next_after


def test_the_person_filter_pages_a_persons_sessions_newest_first(app, make):
    world = build_world(make)
    made = []  # (started, id, technician, run as, running)
    for n in range(8):  # two start at the same time: the id breaks the tie
        at = NOW + timedelta(minutes=n - (n == 5))
        technician = "tech@example.com" if n % 3 else "tech2@example.com"
        run_as = "\u00c5sa.Admin" if n in (0, 4) else None
        _, session = remote_session(technician, DEVICE, at, run_as=run_as,
                                    ended=None if n % 2 else at + timedelta(minutes=1))
        made.append((at, session.id, technician, run_as, bool(n % 2)))

    def expected(person: str, running_only: bool = False) -> list[int]:
        return [session_id for at, session_id, technician, run_as, running
                in sorted(made, reverse=True)
                if person in (technician, (run_as or "").lower())
                and (running or not running_only)]

    assert len(expected("tech@example.com")) == 5
    for limit in (1, 3, 50):
        assert _listed(world.qa.id, "Tech@Example.com", limit) == expected("tech@example.com")
    # by "Run as", case-blind beyond ASCII, and with the State filter on top
    assert _listed(world.qa.id, "\u00c5SA.ADMIN", 1) == expected("\u00e5sa.admin")
    assert len(expected("\u00e5sa.admin")) == 2
    assert _listed(world.qa.id, "tech2@example.com", 1, choice="running") == \
        expected("tech2@example.com", running_only=True) != []
    assert _listed(world.sales.id, "tech@example.com", 3) == []  # never another department
    assert _listed(world.qa.id, "nobody@example.com", 3) == []


def test_migration_0013_backfills_the_people_of_earlier_sessions(tmp_path):
    from flask_migrate import downgrade, upgrade

    uri = "sqlite:///" + str(tmp_path / "people.sqlite3")
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": uri})
    with app.app_context():
        try:
            upgrade()
            build_world(Factory())
            remote_session("tech@example.com", DEVICE, NOW, run_as="\u00c5sa.Admin")
            remote_session("tech2@example.com", OTHER_DEVICE, NOW, run_as="tech2@example.com",
                           ended=NOW + timedelta(minutes=3))
            written = people()
            assert len(written) == 5
            db.session.remove()
            downgrade(revision="0012")  # the table goes; the sessions stay
            upgrade()
            assert people() == written
        finally:
            db.session.remove()
            db.engine.dispose()
