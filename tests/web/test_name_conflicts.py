"""Two admins creating the same name at the same moment (design.md "Never a 500 for bad
input"): the one who loses sees the form again with 409 and "… already exists." next to
the field, and the operator's command ends with a clean error. `interleave` (conftest)
commits the other admin's creation between our check and our INSERT."""
from __future__ import annotations

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Department, Device, DeviceGroup, User
from portal.services import accounts, departments, devices
from portal.services.actors import CLI

from .helpers import HTMX, field_error, page

ROOT = "root@example.com"


@pytest.fixture
def qa(make, auth):
    qa = make.department("QA Team")
    make.user(ROOT, "admin")
    make.group(qa, "Testers")
    make.device(qa, "PC-OLD")
    assert auth.login(ROOT).status_code == 303
    return qa


def same_department():
    return departments.find_department("QA Team")


def count(model, *where):
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


CASES = {  # url, form, statement it races, the other admin's creation, field, message
    "department": (
        "/departments", {"name": "Sales"}, "INSERT INTO departments",
        lambda: departments.create_department(name="Sales", actor=CLI, now=NOW),
        "name", "A department named “Sales” already exists."),
    "department rename": (
        "/departments/{id}/edit", {"name": "Sales"}, "UPDATE departments SET",
        lambda: departments.create_department(name="Sales", actor=CLI, now=NOW),
        "name", "A department named “Sales” already exists."),
    "device": (
        "/departments/{id}/devices",
        {"name": "PC-NEW", "os": "", "ip_address": "", "group_id": ""},
        "INSERT INTO devices",
        lambda: devices.create_device(department=same_department(), name="PC-NEW",
                                      actor=CLI, now=NOW),
        "name", "A device named “PC-NEW” already exists."),
    "device edit": (
        "/departments/{id}/devices/{dev}/edit",
        {"name": "PC-NEW", "os": "", "ip_address": "", "group_id": ""},
        "UPDATE devices SET",
        lambda: devices.create_device(department=same_department(), name="PC-NEW",
                                      actor=CLI, now=NOW),
        "name", "A device named “PC-NEW” already exists."),
    "group": (
        "/departments/{id}/groups", {"name": "Night shift"}, "INSERT INTO device_groups",
        lambda: devices.create_group(department=same_department(), name="Night shift",
                                     actor=CLI, now=NOW),
        "name", "A group named “Night shift” already exists here."),
    "group rename": (
        "/departments/{id}/groups/{gid}/edit", {"name": "Night shift"},
        "UPDATE device_groups SET",
        lambda: devices.create_group(department=same_department(), name="Night shift",
                                     actor=CLI, now=NOW),
        "name", "A group named “Night shift” already exists here."),
    "member": (
        "/departments/{id}/members",
        {"email": "new@example.com", "role": "approver", "password": "long enough pw"},
        "INSERT INTO users",
        lambda: accounts.create_or_update_user(
            email="new@example.com", password=PASSWORD, role="auditor",
            department=same_department(), actor=CLI, now=NOW),
        "email", "An account for new@example.com was created at the same moment. "
                 "Try again to give it the role."),
    "exclusion": (
        "/departments/{id}/exclusions", {"target": "device:{dev}"}, "INSERT INTO exclusions",
        lambda: departments.add_exclusion(
            department=same_department(),
            target=f"device:{devices.find_device('PC-OLD').id}", actor=CLI, now=NOW),
        "target", "“PC-OLD” is already excluded."),
}


def ids(qa) -> dict:
    return {"id": qa.id, "dev": devices.find_device("PC-OLD").id,
            "gid": devices.find_group(qa, "Testers").id}


@pytest.mark.parametrize("case", CASES)
def test_the_admin_who_loses_sees_409_next_to_the_field(client, qa, interleave, case):
    url, form, statement, other, field, message = CASES[case]
    where = ids(qa)
    interleave(statement, other)
    response = client.post(url.format(**where),
                           data={k: v.format(**where) for k, v in form.items()})
    assert response.status_code == 409, response.get_data(as_text=True)[:500]
    assert message in field_error(page(response), field)
    # The winner's row, once; nothing of the loser's.
    assert count(Department, Department.name == "Sales") <= 1
    assert count(Device, Device.name == "PC-NEW") <= 1
    assert count(DeviceGroup, DeviceGroup.name == "Night shift") <= 1
    assert count(User, User.email == "new@example.com") <= 1
    assert devices.find_device("PC-OLD").name == "PC-OLD"


def test_an_exclusion_lost_over_htmx_is_a_409_fragment(client, qa, interleave):
    _, _, statement, other, _, message = CASES["exclusion"]
    interleave(statement, other)
    response = client.post(f"/departments/{qa.id}/exclusions",
                           data={"target": f"device:{ids(qa)['dev']}"}, headers=HTMX)
    assert response.status_code == 409
    body = response.get_data(as_text=True)
    assert "<html" not in body and message in body


# --- the operator's commands ----------------------------------------------------------

COMMANDS = {
    "departments": (["departments", "create", "Sales"], "INSERT INTO departments",
                    lambda: departments.create_department(name="Sales", actor=CLI, now=NOW),
                    "A department named “Sales” already exists."),
    "devices": (["devices", "create", "PC-NEW", "--department", "QA Team"],
                "INSERT INTO devices",
                lambda: devices.create_device(department=same_department(), name="PC-NEW",
                                              actor=CLI, now=NOW),
                "A device named “PC-NEW” already exists."),
    "users": (["users", "create", "new@example.com", "--password", PASSWORD, "--role",
               "approver", "--department", "QA Team"], "INSERT INTO users",
              lambda: accounts.create_or_update_user(
                  email="new@example.com", password=PASSWORD, role="auditor",
                  department=same_department(), actor=CLI, now=NOW),
              "An account for new@example.com was created at the same moment."),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_that_loses_ends_with_a_clean_error(runner, qa, interleave, command):
    args, statement, other, message = COMMANDS[command]
    interleave(statement, other)
    result = runner.invoke(args=args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception,
                                                               AssertionError)
    assert isinstance(result.exception, SystemExit)
