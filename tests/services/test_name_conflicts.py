"""Two people creating the same name at once (design.md "Never a 500 for bad input"):
the unique constraint settles it and the loser gets a ConflictError (409) naming the
name, with its transaction still usable — not an IntegrityError (a 500).

`interleave` (conftest) makes the race deterministic on SQLite and PostgreSQL alike: the
other person's creation commits just before our INSERT, after our "does it exist?" check.
The tests at the end race real threads on PostgreSQL."""
from __future__ import annotations

import os
import threading

import pytest
from factories import NOW, PASSWORD, sealed_trail_check
from sqlalchemy import func, select

from portal.domain.errors import ConflictError, InvalidInputError
from portal.extensions import db
from portal.models import AuditEvent, Department, Device, DeviceGroup, Membership, User
from portal.services import accounts, departments, devices
from portal.services.actors import CLI
from portal.web.errors import status_of

on_postgres = pytest.mark.skipif(
    not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
    reason="races of real threads need PostgreSQL (set PORTAL_TEST_DATABASE_URI)")


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def events(action):
    return count(AuditEvent, AuditEvent.action == action)


def qa():
    return departments.find_department("QA Team")


@pytest.fixture
def world(make):
    department = make.department("QA Team")
    make.group(department, "Testers")
    make.device(department, "PC-OLD")
    return department


def assert_conflict(caught, message, field="name"):
    assert status_of(caught.value) == 409
    assert caught.value.message == message
    assert caught.value.field_errors == {field: [message]}


def test_a_department_created_meanwhile(world, interleave):
    interleave("INSERT INTO departments",
               lambda: departments.create_department(name="Sales", actor=CLI, now=NOW))
    with pytest.raises(ConflictError) as caught:
        departments.create_department(name="Sales", actor=CLI, now=NOW)
    assert_conflict(caught, "A department named “Sales” already exists.")
    db.session.commit()  # the transaction is still usable
    assert count(Department, Department.name == "Sales") == 1
    assert events("department.created") == 2  # QA Team's and the winner's


def test_a_device_created_meanwhile(world, interleave):
    interleave("INSERT INTO devices", lambda: devices.create_device(
        department=qa(), name="PC-NEW", actor=CLI, now=NOW))
    with pytest.raises(ConflictError) as caught:
        devices.create_device(department=world, name="PC-NEW", actor=CLI, now=NOW)
    assert_conflict(caught, "A device named “PC-NEW” already exists.")
    db.session.commit()
    assert count(Device, Device.name == "PC-NEW") == 1
    assert events("device.created") == 2
    assert events("token.created") == 2  # no token for the device that lost


def test_a_group_created_meanwhile(world, interleave):
    interleave("INSERT INTO device_groups", lambda: devices.create_group(
        department=qa(), name="Night shift", actor=CLI, now=NOW))
    with pytest.raises(ConflictError) as caught:
        devices.create_group(department=world, name="Night shift", actor=CLI, now=NOW)
    assert_conflict(caught, "A group named “Night shift” already exists here.")
    db.session.commit()
    assert count(DeviceGroup, DeviceGroup.name == "Night shift") == 1


def test_a_user_created_meanwhile(world, interleave):
    def other():
        accounts.create_or_update_user(email="new@example.com", password=PASSWORD,
                                       role="auditor", department=qa(), actor=CLI, now=NOW)

    interleave("INSERT INTO users", other)
    with pytest.raises(ConflictError) as caught:
        accounts.create_or_update_user(email="New@Example.com", password=PASSWORD,
                                       role="approver", department=world, actor=CLI, now=NOW)
    assert_conflict(caught, "An account for new@example.com was created at the same "
                            "moment. Try again to give it the role.", "email")
    db.session.commit()
    [user] = db.session.scalars(select(User).where(User.email == "new@example.com"))
    assert [m.role for m in user.memberships] == ["auditor"]  # the winner's only


def test_the_same_role_given_meanwhile_is_simply_held(world, make, interleave):
    user = make.user("bob@example.com", "technician", world)
    interleave("INSERT INTO memberships", lambda: accounts.add_role(
        user=accounts.find_user("bob@example.com"), role="approver", department=qa(),
        actor=CLI, now=NOW))
    assert accounts.add_role(user=user, role="approver", department=world, actor=CLI,
                             now=NOW) is False  # as when it was already held
    db.session.commit()
    assert count(Membership, Membership.user_id == user.id) == 2
    assert events("member.added") == 2  # technician, and the winner's approver


def create_taken(kind):
    if kind == "department":
        departments.create_department(name="Taken", actor=CLI, now=NOW)
    elif kind == "device":
        devices.create_device(department=qa(), name="Taken", actor=CLI, now=NOW)
    else:
        devices.create_group(department=qa(), name="Taken", actor=CLI, now=NOW)


def rename_to_taken(kind, thing):
    if kind == "department":
        departments.rename_department(department=thing, name="Taken", actor=CLI, now=NOW)
    elif kind == "device":
        devices.update_device(department=qa(), device=thing, name="Taken", os="",
                              ip_address="", group_id=None, actor=CLI, now=NOW)
    else:
        devices.rename_group(department=qa(), group=thing, name="Taken", actor=CLI, now=NOW)


RENAMED = {  # kind -> (table, message)
    "department": ("departments", "A department named “Taken” already exists."),
    "device": ("devices", "A device named “Taken” already exists."),
    "group": ("device_groups", "A group named “Taken” already exists here."),
}


@pytest.mark.parametrize("kind", RENAMED)
def test_a_rename_to_a_name_created_meanwhile(world, interleave, kind):
    table, message = RENAMED[kind]
    thing = {"department": world, "device": devices.find_device("PC-OLD"),
             "group": devices.find_group(world, "Testers")}[kind]
    thing_id = thing.id
    interleave(f"UPDATE {table} SET", lambda: create_taken(kind))
    with pytest.raises(ConflictError) as caught:
        rename_to_taken(kind, thing)
    assert_conflict(caught, message)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(type(thing), thing_id).name != "Taken"
    assert sealed_trail_check()[1] is None


def test_an_exclusion_added_meanwhile(world, interleave):
    device = devices.find_device("PC-OLD")
    interleave("INSERT INTO exclusions", lambda: departments.add_exclusion(
        department=qa(), target=f"device:{device.id}", actor=CLI, now=NOW))
    with pytest.raises(ConflictError) as caught:
        departments.add_exclusion(department=world, target=f"device:{device.id}",
                                  actor=CLI, now=NOW)
    assert_conflict(caught, "“PC-OLD” is already excluded.", "target")
    db.session.commit()
    assert len(departments.list_exclusions(world)) == 1


def test_a_savepoint_that_opens_the_transaction_rolls_back_with_it(app):
    """SQLite's driver starts no transaction before a SAVEPOINT, so releasing the first
    savepoint used to commit: a later rollback left its rows behind."""
    with db.session.begin_nested():
        db.session.add(Department(name="Rolled back", created_at=NOW))
    db.session.rollback()
    assert departments.find_department("Rolled back") is None


# --- real threads (PostgreSQL) --------------------------------------------------------


def race(app, attempt, contenders=6) -> list:
    """`attempt(n)` in `contenders` threads at once, each in its own app context;
    returns "won", a ServiceError's status, "taken" (the name was found by the check) or
    the unexpected exception, per thread."""
    barrier = threading.Barrier(contenders)
    results: list = [None] * contenders

    def worker(n):
        with app.app_context():
            try:
                prepared = attempt(n)
                barrier.wait(timeout=10)
                prepared()
                db.session.commit()
                results[n] = "won"
            except ConflictError as exc:
                db.session.rollback()
                results[n] = status_of(exc)
            except InvalidInputError as exc:
                # A contender the machine held back past the barrier checks after the
                # winner committed: the form's "already exists" answer, also a refusal.
                db.session.rollback()
                results[n] = "taken" if "already exists" in str(exc.field_errors) else exc
            except Exception as exc:  # noqa: BLE001 - shown by the assertion
                db.session.rollback()
                results[n] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a contender hung"
    return results


def prepare(kind, name):
    """What one contender loads before the barrier, and the creation it then attempts."""
    if kind == "department":
        return lambda: departments.create_department(name=name, actor=CLI, now=NOW)
    department = qa()
    if kind == "device":
        return lambda: devices.create_device(department=department, name=name, actor=CLI,
                                             now=NOW)
    if kind == "group":
        return lambda: devices.create_group(department=department, name=name, actor=CLI,
                                            now=NOW)
    return lambda: accounts.create_or_update_user(
        email=f"{name}@example.com".replace(" ", "-"), password=PASSWORD, role="approver",
        department=department, actor=CLI, now=NOW)


FOUND = {
    "department": lambda name: count(Department, Department.name == name),
    "device": lambda name: count(Device, Device.name == name),
    "group": lambda name: count(DeviceGroup, DeviceGroup.name == name),
    "user": lambda name: count(User, User.email == f"{name}@example.com".replace(" ", "-")),
}


@pytest.mark.postgres
@on_postgres
@pytest.mark.parametrize("kind", list(FOUND))
def test_simultaneous_creations_of_one_name(app, world, kind):
    conflicts = 0
    for round_ in range(5):
        name = f"raced {round_}"
        results = race(app, lambda n: prepare(kind, name))
        db.session.expire_all()
        assert FOUND[kind](name) == 1
        if kind == "user":
            # Who checks after the winner committed finds the account and adds the role
            # (already held: nothing more); who checked before gets the 409.
            assert "won" in results and set(results) <= {"won", 409}, results
        else:
            assert results.count("won") == 1 and set(results) <= {"won", 409, "taken"}, results
        conflicts += results.count(409)
    assert conflicts, "no contender ever reached the unique constraint"
    assert sealed_trail_check()[1] is None
