"""The directory path of a device's OTP request, against a real slapd
(tests/directory_server.py): found → the code goes to the entry's mail address; not found,
without mail or ambiguous → 422 not_in_directory; the directory down or silent → 503
directory_unavailable, and nothing is stored half-way."""
from __future__ import annotations

import pytest
from api_setup import assert_error, bearer
from factories import NOW
from sqlalchemy import func, select

from portal.clock import FixedClock
from portal.extensions import db
from portal.models import AuditEvent, OneTimePassword, OutboxMessage
from portal.services import departments, devices
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"


@pytest.fixture
def app_config(directory):
    return {"CLOCK": FixedClock(NOW), **directory.config, "LDAP_TIMEOUT_SECONDS": 2}


@pytest.fixture
def token(make):
    department = make.department("QA Team")
    _device, token = devices.create_device(department=department, name=DEVICE, actor=CLI,
                                           now=NOW)
    values = {**departments.settings_values(department.settings), "is_otp_allowed": True,
              "is_otp_auto_sent_to_directory_users": True}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return token


def ask(client, token, username):
    return client.post("/api/v1/agent/otp/request", json={"username": username},
                       headers=bearer(token))


def rows() -> tuple[int, int, int]:
    db.session.expire_all()
    return tuple(db.session.scalar(select(func.count()).select_from(model))
                 for model in (OneTimePassword, OutboxMessage, AuditEvent))


def test_a_directory_user_gets_the_code_at_their_directory_address(client, token):
    sent = ask(client, token, "JSmith")
    assert sent.status_code == 202
    assert sent.get_json() == {"status": "sent", "sent_to": "j***@example.com",
                               "expires_at": "2026-11-22T10:45:30.123Z"}
    otp = db.session.scalar(select(OneTimePassword))
    assert (otp.email, otp.issued_via) == ("j.smith@example.com", "directory")
    assert db.session.scalar(select(OutboxMessage.recipient)) == "j.smith@example.com"


@pytest.mark.parametrize("username", ["nobody", "nomail", "twin", "*)(uid=*", "j*"])
def test_not_in_the_directory_is_422_and_suggests_emergency_access(client, token, username):
    before = rows()
    refused = ask(client, token, username)
    error = assert_error(refused, 422)
    assert error["code"] == "not_in_directory" and "emergency" in error["message"].lower()
    assert rows() == before


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_the_directory_down_is_503_and_nothing_half_written(client, token, directory, fault):
    before = rows()
    (directory.stop if fault == "stopped" else directory.pause)()
    refused = ask(client, token, "jsmith")
    assert assert_error(refused, 503)["code"] == "directory_unavailable"
    assert rows() == before
    (directory.start if fault == "stopped" else directory.resume)()
    assert ask(client, token, "jsmith").status_code == 202
