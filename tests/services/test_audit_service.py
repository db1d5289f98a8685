"""The audit trail as stored: hash-chained, append-only, hand edits detected, no forged
lines and no secrets."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select, text

from portal.domain.audit import GENESIS_HASH
from portal.extensions import db
from portal.models import AuditChainHead, AuditEvent
from portal.services.actors import Actor
from portal.services.audit import record_event, verify_audit_chain

ALICE = Actor(label="alice@example.com", client_ip="192.0.2.1")


def record(n: int, actor: Actor = ALICE) -> None:
    for i in range(n):
        record_event(actor=actor, action="settings.changed", target_type="department",
                     target_id=1, now=NOW + timedelta(seconds=i),
                     details={"field": "confirmation_timeout_seconds", "old": 60 + i,
                              "new": 61 + i})
    db.session.commit()


def stored() -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def tamper(sql: str, **params) -> None:
    """An operator editing the database by hand, outside the ORM."""
    db.session.execute(text(sql), params)
    db.session.commit()
    db.session.expire_all()


def test_events_are_chained_in_order(app):
    record(5)
    events = stored()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.hash
    assert len({e.hash for e in events}) == 5
    head = db.session.get(AuditChainHead, 1)
    assert (head.last_seq, head.last_hash) == (5, events[-1].hash)
    assert verify_audit_chain() == (5, None)


def test_recorded_event_keeps_what_happened(app):
    record_event(actor=Actor(label="bob@example.com", user_id=None, client_ip="2001:db8::1"),
                 action="exclusion.added", target_type="device", target_id=42, now=NOW,
                 department_id=None, outcome="success", details={"name": "WIN-1"})
    db.session.commit()
    (event,) = stored()
    assert (event.actor, event.action, event.target_type, event.target_id, event.client_ip,
            event.outcome, event.details) == (
        "bob@example.com", "exclusion.added", "device", "42", "2001:db8::1", "success",
        {"name": "WIN-1"})
    assert event.occurred_at == NOW  # aware UTC, milliseconds kept


def test_empty_trail_verifies(app):
    assert verify_audit_chain() == (0, None)


def test_verify_reads_in_batches(app):
    record(7)
    assert verify_audit_chain(batch_size=3) == (7, None)


def test_hand_edit_of_actor_is_reported_at_that_event(app):
    record(4)
    tamper("UPDATE audit_events SET actor = 'mallory@example.com' WHERE seq = 2")
    checked, broken = verify_audit_chain()
    assert broken.seq == 2
    assert broken.reason == "contents do not match the stored hash"


@pytest.mark.parametrize("sql", [
    "UPDATE audit_events SET outcome = 'failure' WHERE seq = 3",
    "UPDATE audit_events SET action = 'settings.viewed' WHERE seq = 3",
    "UPDATE audit_events SET target_id = '99' WHERE seq = 3",
    "UPDATE audit_events SET client_ip = '203.0.113.9' WHERE seq = 3",
    "UPDATE audit_events SET details = '{\"field\": \"x\", \"old\": 1, \"new\": 2}' "
    "WHERE seq = 3",
    "UPDATE audit_events SET hash = 'ff' WHERE seq = 3",
    "UPDATE audit_events SET prev_hash = 'ff' WHERE seq = 3",
])
def test_any_hand_edit_is_reported_at_that_event(app, sql):
    record(5)
    tamper(sql)
    assert verify_audit_chain(batch_size=2)[1].seq == 3


def test_hand_edit_of_the_time_is_reported(app):
    record(3)
    tamper("UPDATE audit_events SET occurred_at = :t WHERE seq = 2",
           t=(NOW - timedelta(days=1)).replace(tzinfo=None)
           if db.engine.dialect.name == "sqlite" else NOW - timedelta(days=1))
    assert verify_audit_chain()[1].seq == 2


def test_deleting_the_last_event_by_hand_is_detected(app):
    record(4)
    tamper("DELETE FROM audit_events WHERE seq = 4")
    checked, broken = verify_audit_chain()
    assert checked == 3
    assert broken.seq == 4
    assert "chain head says 4 events, found 3" in broken.reason


def test_deleting_a_middle_event_by_hand_is_detected(app):
    record(4)
    tamper("DELETE FROM audit_events WHERE seq = 2")
    assert verify_audit_chain()[1].seq == 3


def test_recording_continues_the_chain_after_a_verify(app):
    record(2)
    assert verify_audit_chain() == (2, None)
    record(1)
    assert verify_audit_chain() == (3, None)


def test_orm_refuses_to_update_an_event(app):
    record(2)
    event = db.session.get(AuditEvent, 2)
    event.actor = "mallory@example.com"
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()
    assert [e.actor for e in stored()] == ["alice@example.com"] * 2
    assert verify_audit_chain() == (2, None)


def test_orm_refuses_to_delete_an_event(app):
    record(2)
    db.session.delete(db.session.get(AuditEvent, 2))
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()
    assert [e.seq for e in stored()] == [1, 2]


@pytest.mark.parametrize("evil", [
    "alice@example.com\n2026-11-22 10:00:00 admin@example.com approved",
    "alice@example.com\r\nforged",
    "alice@example.com\u2028forged",
    "alice@example.com\x1b[2Kforged",
    "alice@example.com\x00forged",
    "alice@example.com\x85forged",
])
def test_control_characters_cannot_forge_a_second_line(app, evil):
    record_event(actor=Actor(label=evil, client_ip="192.0.2.1\nx"), action="auth.sign_in",
                 target_type="user", target_id=evil, now=NOW, outcome="failure")
    db.session.commit()
    (event,) = stored()
    for value in (event.actor, event.target_id, event.client_ip):
        assert len(value.splitlines()) == 1
        assert value.isprintable()
    # Neutralised, not dropped: what was typed stays visible on the one line.
    assert event.actor.startswith("alice@example.com")
    assert "forged" in event.actor or "approved" in event.actor
    assert verify_audit_chain() == (1, None)


def test_long_values_are_cut_to_fit(app):
    record_event(actor=Actor(label="a" * 1000, client_ip="1" * 100), action="auth.sign_in",
                 target_type="user", target_id="t" * 1000, now=NOW, outcome="failure")
    db.session.commit()
    (event,) = stored()
    assert (len(event.actor), len(event.target_id), len(event.client_ip)) == (300, 64, 45)
    assert verify_audit_chain() == (1, None)


def test_secrets_in_details_never_reach_the_trail(app):
    record_event(actor=ALICE, action="otp.issued", target_type="device", target_id=1, now=NOW,
                 details={"username": "bob", "otp": "482913", "password": "hunter22",
                          "nested": {"token": "tok-123", "Secret": "s-456"},
                          "attempts": [{"code": "000111"}]})
    db.session.commit()
    (event,) = stored()
    assert event.details == {"username": "bob", "nested": {}, "attempts": [{}]}
    dumped = json.dumps(event.details)
    for secret in ("482913", "hunter22", "tok-123", "s-456", "000111"):
        assert secret not in dumped
    assert verify_audit_chain() == (1, None)
