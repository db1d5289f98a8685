"""The audit log's "Device" filter reads the events' `device` column (lower case, indexed),
which recording fills from the event (the details' device, a device event's name, the
acting device) and migration 0011 backfills; it selects what the details did."""
from __future__ import annotations

from factories import NOW, TEST_CONFIG
from sqlalchemy import and_, func, or_, select, text

from portal import create_app
from portal.domain.log_filters import LogFilter
from portal.extensions import db
from portal.models import AuditEvent
from portal.services import audit, audit_log
from portal.services.actors import CLI, Actor

AGENT = Actor(label="device:Lab-PC-02", client_ip="192.0.2.7")


def _record_every_shape(department_id: int) -> None:
    shapes = [
        (CLI, "request.created", "session_request", 1, {"request_id": 1, "device": "Lab-PC-01"}),
        (CLI, "device.created", "device", 5, {"name": "LAB-pc-03", "os": "Windows"}),
        (AGENT, "device.state_changed", "device", 6, {"old": {"locked": False}}),
        (AGENT, "session.started", "session_request", 2, {"request_id": 2}),
        (CLI, "token.created", "device", 7, {"device": "lab-pc-01", "kind": "device"}),
        (CLI, "settings.changed", "department", department_id, {"name": "Lab-PC-01"}),
        (CLI, "user.created", "user", 3, {}),
    ]
    for actor, action, target_type, target_id, details in shapes:
        audit.record_event(actor=actor, action=action, target_type=target_type,
                           target_id=target_id, department_id=department_id, now=NOW,
                           details=details)
    db.session.flush()


def _page_actions(department_id: int, device: str) -> list[str]:
    page = audit_log.list_audit_events(department_id=department_id,
                                       log_filter=LogFilter(device=device), before=None,
                                       limit=50)
    return [event.action for event in page.items]


def _as_the_details_matched(department_id: int, device: str) -> list[str]:
    """The filter as it was before the column: the details (and actor) of every event."""
    name = device.lower()
    return list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.department_id == department_id,
        or_(func.lower(AuditEvent.details["device"].as_string()) == name,
            and_(AuditEvent.target_type == "device",
                 func.lower(AuditEvent.details["name"].as_string()) == name),
            func.lower(AuditEvent.actor) == f"device:{name}"))
        .order_by(AuditEvent.seq.desc())))


def test_recording_fills_the_device_column(app, make):
    department = make.department("QA")
    before = db.session.scalar(select(func.max(AuditEvent.seq))) or 0
    _record_every_shape(department.id)
    stored = db.session.execute(select(AuditEvent.action, AuditEvent.device)
                                .where(AuditEvent.seq > before).order_by(AuditEvent.seq)).all()
    assert [tuple(row) for row in stored] == [
        ("request.created", "lab-pc-01"), ("device.created", "lab-pc-03"),
        ("device.state_changed", "lab-pc-02"), ("session.started", "lab-pc-02"),
        ("token.created", "lab-pc-01"), ("settings.changed", None), ("user.created", None)]


def test_the_device_filter_selects_what_the_details_did(app, make):
    department = make.department("QA")
    _record_every_shape(department.id)
    for device in ("LAB-PC-01", "lab-pc-02", "Lab-Pc-03", "lab-pc-04"):
        assert _page_actions(department.id, device) == _as_the_details_matched(
            department.id, device)
    assert _page_actions(department.id, "LAB-PC-01") == ["token.created", "request.created"]


def test_the_column_is_not_hashed(app, make):
    """The chain covers the event's contents only: a derived column changed (as the
    migration's backfill writes it) leaves `audit verify` content."""
    department = make.department("QA")
    _record_every_shape(department.id)
    db.session.commit()
    while audit.seal_pending(NOW):
        db.session.commit()
    db.session.execute(text("UPDATE audit_events SET device = 'elsewhere'"))
    db.session.commit()
    checked, broken = audit.verify_audit_chain()
    assert broken is None and checked >= 7


def test_the_migration_backfills_the_device_of_older_events(tmp_path):
    from flask_migrate import upgrade

    uri = "sqlite:///" + str(tmp_path / "backfill.sqlite3")
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": uri})
    rows = [  # (actor, target_type, details) as events before 0011 hold them
        ("cli", "session_request", '{"request_id": 1, "device": "Lab-PC-01"}'),
        ("cli", "device", '{"name": "\u00c9COLE-PC", "os": ""}'),
        ("device:Lab-PC-02", "device", '{"old": {"locked": false}}'),
        ("cli", "department", '{"name": "Not a device"}'),
        ("cli", "device", '{"name": ""}'),
        ("cli", "session_request", '{"device": 5}'),
    ]
    with app.app_context():
        try:
            upgrade(revision="0010")
            for n, (actor, target_type, details) in enumerate(rows, start=1):
                db.session.execute(text(
                    "INSERT INTO audit_events (occurred_at, actor, action, target_type, "
                    "target_id, department_id, client_ip, outcome, details) VALUES "
                    "(:at, :actor, 'device.created', :type, :n, 1, '', 'success', :details)"),
                    {"at": NOW.replace(tzinfo=None), "actor": actor, "type": target_type,
                     "n": str(n), "details": details})
            db.session.commit()
            while audit.seal_pending(NOW):  # sealed before the column existed
                db.session.commit()
            db.session.commit()
            upgrade()
            devices = db.session.scalars(select(AuditEvent.device)
                                         .order_by(AuditEvent.seq)).all()
            assert devices == ["lab-pc-01", "\u00e9cole-pc", "lab-pc-02", None, None, None]
            assert audit.verify_audit_chain()[1] is None
        finally:
            db.session.remove()
            db.engine.dispose()
