"""portal/services/inserted.py: a row written by one INSERT, without a flush, and then
the same as a freshly loaded object — its defaults known, its relationships filled,
nothing pending, and later changes saved as UPDATEs."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Device, SessionRequest
from portal.services import devices, inserted
from portal.services.actors import CLI
from statement_counter import StatementLog

NOW = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)


@pytest.fixture
def parts(make):
    department = make.department("QA Team")
    technician = make.user("tech@example.com", "technician", department)
    device, _token = devices.create_device(department=department, name="WIN-1", actor=CLI,
                                           now=NOW)
    db.session.commit()
    return department, technician, device


def _values(department, technician, device) -> dict:
    return dict(device_id=device.id, department_id=department.id,
                technician_id=technician.id, status="pending", created_at=NOW,
                expires_at=NOW, end_user_check="skipped", email_check="pending")


def test_one_insert_and_the_object_reads_as_loaded(parts):
    department, technician, device = parts
    req = inserted.unsaved(SessionRequest, _values(*parts), device=device,
                           department=department, technician=technician)
    with StatementLog(db.engine) as log:
        inserted.insert(req)
        # defaults, relationships: all there without a query
        assert (req.approvals_required, req.approvals_received, req.approved_by,
                req.is_reported, req.prompt_message) == (1, 0, "", False, "")
        assert req.device.name == "WIN-1" and req.technician.email == "tech@example.com"
        assert req.id is not None
        db.session.flush()  # nothing pending: no statement
    assert len(log.statements) == 1 and log.statements[0].startswith("INSERT"), log.statements
    assert req in db.session and not db.session.is_modified(req)
    assert db.session.get(SessionRequest, req.id) is req  # in the identity map


def test_a_later_change_is_an_update_and_everything_commits(parts):
    req = inserted.unsaved(SessionRequest, _values(*parts))
    inserted.insert(req)
    req.status = "approved"
    with StatementLog(db.engine) as log:
        db.session.flush()
    assert [s.split()[0] for s in log.statements] == ["UPDATE"], log.statements
    db.session.commit()
    db.session.expire_all()
    assert db.session.scalar(select(SessionRequest.status)
                             .where(SessionRequest.id == req.id)) == "approved"


def test_nothing_is_written_until_insert_and_a_rollback_keeps_nothing(parts):
    req = inserted.unsaved(SessionRequest, _values(*parts))
    assert req not in db.session
    db.session.flush()
    assert db.session.scalars(select(SessionRequest)).all() == []
    inserted.insert(req)
    db.session.rollback()
    assert db.session.scalars(select(SessionRequest)).all() == []


def test_an_unknown_attribute_is_refused(parts):
    with pytest.raises(TypeError, match="no column attribute"):
        inserted.unsaved(SessionRequest, {**_values(*parts), "colour": "red"})
    with pytest.raises(TypeError, match="no column attribute"):
        inserted.unsaved(Device, {"name": "x", "id": 5})  # the key is the INSERT's
