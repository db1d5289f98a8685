"""Read-only snapshots (portal.services.snapshots) and the approval page's read of its link
through them (decisions.read_link): the same values as the ORM's entities, the model's
properties, nothing to write and no hidden loads, and the request's Session untouched."""
from __future__ import annotations

import re

import pytest
from factories import NOW
from sqlalchemy import select

from portal.domain.errors import NotFoundError
from portal.extensions import db
from portal.models import (ApprovalLink, Department, DepartmentSettings, Device,
                           OutboxMessage, SessionRequest, User)
from portal.services import decisions, departments, devices, snapshots
from portal.services import requests as service
from portal.services.actors import CLI, Actor

RECIPIENTS = ["approver@example.com", "second@example.com"]
TOKEN_IN_LINK = re.compile(r"/approvals/([A-Za-z0-9_\-]+)")


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    department.tech = make.user("tech@example.com", "technician", department)
    for email in RECIPIENTS:
        make.user(email, "approver", department)
    department.device = make.device(department, "WIN-0859G9I39J0")
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True,
              "email_recipients": "\n".join(RECIPIENTS)}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


def mailed_token(qa) -> str:
    req = service.create_session_request(
        technician=qa.tech, device_name=qa.device.name, reason="Printer queue",
        actor=Actor.for_user(qa.tech, "192.0.2.10"), now=NOW, base_url="http://portal.test")
    db.session.commit()
    body = db.session.scalars(select(OutboxMessage.body_text)
                              .where(OutboxMessage.request_id == req.id)
                              .order_by(OutboxMessage.id)).first()
    return TOKEN_IN_LINK.search(body).group(1)


def columns(obj, model) -> dict:
    return {attr.key: getattr(obj, attr.key)
            for attr in db.inspect(model).column_attrs}


def test_a_link_reads_as_find_link_s_entities_with_every_column_and_relation(qa):
    token = mailed_token(qa)
    entity = decisions.find_link(token)
    expected = [(entity, ApprovalLink), (entity.request, SessionRequest),
                (entity.request.device, Device), (entity.request.technician, User),
                (entity.request.department, Department),
                (entity.request.department.settings, DepartmentSettings)]
    expected = [(model, columns(obj, model)) for obj, model in expected]
    db.session.rollback()

    link = decisions.read_link(token)
    assert isinstance(link, snapshots.Snapshot) and not isinstance(link, ApprovalLink)
    read = [link, link.request, link.request.device, link.request.technician,
            link.request.department, link.request.department.settings]
    assert [(model, columns(obj, model)) for obj, (model, _) in zip(read, expected)] \
        == expected
    settings = link.request.department.settings
    assert settings.recipients == RECIPIENTS  # the model's property, on the snapshot
    assert link.request.expires_at.tzinfo is not None  # the column types' own processing


def test_a_snapshot_refuses_writes_and_has_no_lazy_loads(qa):
    link = decisions.read_link(mailed_token(qa))
    with pytest.raises(AttributeError, match="read-only"):
        link.first_opened_at = NOW
    with pytest.raises(AttributeError, match="read-only"):
        link.request.status = "approved"
    assert "otp_request" in {r.key for r in db.inspect(ApprovalLink).relationships}
    with pytest.raises(AttributeError):
        link.otp_request  # noqa: B018 - not read with it: never a hidden query
    assert link.first_opened_at is None


def test_reading_a_link_leaves_the_request_s_session_alone(qa):
    token = mailed_token(qa)
    db.session.close()
    decisions.read_link(token)
    assert not db.session().in_transaction()  # its own pooled connection, handed back


def test_an_unknown_token_is_not_found(qa):
    mailed_token(qa)
    with pytest.raises(NotFoundError):
        decisions.read_link("no-such-token-at-all-000000")


def test_an_otp_request_s_link_comes_as_an_entity(app, client, make):
    department = make.department("QA Team")
    make.user("approver@example.com", "approver", department)
    device, device_token = devices.create_device(department=department, name="PC-1",
                                                 actor=CLI, now=NOW)
    make.allow_otp(department)
    assert client.post("/api/v1/agent/otp/request",
                       json={"username": "jsmith", "email": "j.smith@example.com"},
                       headers={"Authorization": f"Bearer {device_token}"}
                       ).status_code == 202
    body = db.session.scalars(select(OutboxMessage.body_text)
                              .where(OutboxMessage.otp_request_id.is_not(None))).first()
    link = decisions.read_link(TOKEN_IN_LINK.search(body).group(1))
    assert isinstance(link, ApprovalLink) and link.otp_request.username == "jsmith"
