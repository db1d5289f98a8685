"""The audit trail as stored: appended without a shared lock, sealed later in seq order,
append-only, hand edits detected, no forged lines and no secrets."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select, text

from portal.domain.audit import GENESIS_HASH
from portal.domain.errors import AuditHeadMissingError
from portal.extensions import db
from portal.models import AuditEvent, AuditHead
from portal.services.actors import Actor
from portal.services.audit import (
    current_checkpoint,
    record_event,
    seal_pending,
    verify_audit_chain,
    verify_trail,
)

ALICE = Actor(label="alice@example.com", client_ip="192.0.2.1")


def record(n: int, actor: Actor = ALICE, seal: bool = True) -> None:
    for i in range(n):
        record_event(actor=actor, action="settings.changed", target_type="department",
                     target_id=1, now=NOW + timedelta(seconds=i),
                     details={"field": "confirmation_timeout_seconds", "old": 60 + i,
                              "new": 61 + i})
    db.session.commit()
    if seal:
        seal_all()


def seal_all() -> int:
    sealed = seal_pending(NOW)
    db.session.commit()
    return sealed


def stored() -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def tamper(sql: str, **params) -> None:
    """An operator editing the database by hand, outside the ORM."""
    db.session.execute(text(sql), params)
    db.session.commit()
    db.session.expire_all()


def is_postgresql() -> bool:
    return db.engine.dialect.name == "postgresql"


def test_events_get_seq_from_the_database_and_are_sealed_in_order(app):
    record(5, seal=False)
    events = stored()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.is_sealed for e in events] == [False] * 5
    assert db.session.get(AuditHead, 1) is None  # writers never touch the head
    assert seal_all() == 5
    events = stored()
    assert [e.chain_index for e in events] == [1, 2, 3, 4, 5]
    assert len({e.chain_hash for e in events} | {e.leaf_hash for e in events}) == 10
    head = db.session.get(AuditHead, 1)
    assert (head.chain_index, head.seq, head.chain_hash) == (5, 5, events[-1].chain_hash)
    assert head.sealed_at == NOW
    assert verify_audit_chain() == (5, None)


def test_sealing_again_changes_nothing(app):
    record(3)
    before = [(e.chain_index, e.chain_hash) for e in stored()]
    assert seal_all() == 0
    assert [(e.chain_index, e.chain_hash) for e in stored()] == before


def test_sealing_continues_the_chain(app):
    record(2)
    record(2)
    assert [e.chain_index for e in stored()] == [1, 2, 3, 4]
    assert verify_audit_chain() == (4, None)


def test_sealing_goes_in_batches(app):
    record(7, seal=False)
    assert seal_pending(NOW, limit=3) == 3
    assert seal_pending(NOW, limit=3) == 3
    assert seal_pending(NOW, limit=3) == 1
    db.session.commit()
    assert verify_audit_chain(batch_size=2) == (7, None)


def test_the_hashes_are_keyed_by_the_audit_key(app):
    record(3)
    app.config["AUDIT_KEY"] = "another key, as a database writer would guess it"
    checked, broken = verify_audit_chain()
    assert (checked, broken.seq) == (0, 1)


def test_unsealed_events_are_counted_and_not_a_break(app):
    record(2)
    record(3, seal=False)
    result = verify_trail()
    assert (result.checked, result.broken, result.unsealed) == (2, None, 3)
    assert result.oldest_unsealed_at == NOW


def insert_uncommitted_event(connection) -> None:
    """Another writer's event, inserted in a transaction it keeps open."""
    connection.execute(text(
        "INSERT INTO audit_events (occurred_at, actor, action, target_type, target_id, "
        "client_ip, outcome, details) VALUES (:t, 'other', 'x', 'device', '1', '', "
        "'success', '{}')"), {"t": NOW})


def test_an_event_committed_late_with_a_lower_seq_is_sealed_after_the_others(app):
    """seq comes from the database when the row is inserted; commit order may differ."""
    if not is_postgresql():
        pytest.skip("PostgreSQL: SQLite writers never overlap")
    slow = db.engine.connect()
    insert_uncommitted_event(slow)
    record(2)  # seq 2 and 3 committed and sealed while seq 1 is still open
    slow.commit()
    slow.close()
    seal_all()
    events = stored()
    assert [(e.seq, e.chain_index) for e in events] == [(1, 3), (2, 1), (3, 2)]
    assert verify_audit_chain() == (3, None)


def test_appending_waits_for_no_other_writer(app):
    """No shared row lock: a transaction holding an uncommitted event doesn't hold up the
    next writer (the old chain head made every write wait for every other)."""
    if not is_postgresql():
        pytest.skip("PostgreSQL: SQLite has one writer at a time by design")
    holder = db.engine.connect()
    insert_uncommitted_event(holder)
    try:
        done = threading.Event()

        def writer():
            with app.app_context():
                db.session.execute(text("SET lock_timeout = '2s'"))
                record(1, seal=False)
                done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(10)
        assert done.is_set()
    finally:
        holder.rollback()
        holder.close()


def test_two_sealers_at_once_seal_each_event_once(app):
    """Real threads, each with its own app context and session: on PostgreSQL they take
    turns on the head row; on SQLite (a file, as in production: two schedulers do run
    at once there) on the write lock, which they must take before reading the head."""
    if not is_postgresql():
        assert db.engine.url.database not in (None, "", ":memory:")  # a file, many connections
    record(200, seal=False)
    barrier = threading.Barrier(4)
    counts = []

    def sealer():
        with app.app_context():
            barrier.wait()
            total = 0
            while True:
                sealed = seal_pending(NOW, limit=25)
                db.session.commit()
                total += sealed
                if not sealed:
                    break
            counts.append(total)

    threads = [threading.Thread(target=sealer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(counts) == 4 and sum(counts) == 200
    events = stored()
    assert [e.chain_index for e in events] == list(range(1, 201))  # each once, in seq order
    head = db.session.get(AuditHead, 1)
    assert (head.chain_index, head.seq, head.chain_hash) == (200, 200, events[-1].chain_hash)
    result = verify_trail()
    assert (result.checked, result.broken, result.unsealed) == (200, None, 0)


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
    assert seal_all() == 0
    assert verify_audit_chain() == (0, None)
    assert db.session.get(AuditHead, 1).chain_hash == GENESIS_HASH


# --- hand edits ------------------------------------------------------------------------


def test_hand_edit_of_actor_is_reported_at_that_event(app):
    record(4)
    tamper("UPDATE audit_events SET actor = 'mallory@example.com' WHERE seq = 2")
    checked, broken = verify_audit_chain()
    assert (checked, broken.seq) == (1, 2)
    assert "edited" in broken.reason


@pytest.mark.parametrize("seq", [1, 3, 5])  # first, middle, last
@pytest.mark.parametrize("assignment", [
    "outcome = 'failure'",
    "action = 'settings.viewed'",
    "target_id = '99'",
    "client_ip = '203.0.113.9'",
    "details = '{\"field\": \"x\", \"old\": 1, \"new\": 2}'",
    "leaf_hash = 'ff'",
    "chain_hash = 'ff'",
])
def test_any_hand_edit_of_any_event_is_reported_at_that_event(app, assignment, seq):
    record(5)
    tamper(f"UPDATE audit_events SET {assignment} WHERE seq = {seq}")
    assert verify_audit_chain(batch_size=2)[1].seq == seq


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
    assert checked == 3 and broken.seq is None
    assert "the head names event #4 at position 4" in broken.reason


def test_deleting_the_last_events_and_rewinding_the_head_is_found_by_a_checkpoint(app):
    record(5)
    point = current_checkpoint(NOW)
    three = stored()[2]
    tamper("DELETE FROM audit_events WHERE seq > 3")
    tamper("UPDATE audit_head SET chain_index = 3, seq = 3, chain_hash = :h",
           h=three.chain_hash)
    assert verify_audit_chain() == (3, None)  # consistent by itself: what checkpoints are for
    broken = verify_trail(checkpoint=point).broken
    assert broken.reason.startswith("truncated: the checkpoint names position 5")


def test_deleting_a_middle_event_by_hand_is_detected(app):
    record(4)
    tamper("DELETE FROM audit_events WHERE seq = 2")
    broken = verify_audit_chain()[1]
    assert broken.seq == 3 and "skips position 2" in broken.reason


def test_reordering_two_events_by_hand_is_detected(app):
    record(4)
    tamper("UPDATE audit_events SET chain_index = -1 WHERE seq = 2")
    tamper("UPDATE audit_events SET chain_index = 2 WHERE seq = 3")
    tamper("UPDATE audit_events SET chain_index = 3 WHERE seq = 2")
    assert verify_audit_chain()[1].chain_index == 2


def test_moving_the_last_event_before_the_one_before_it_is_detected(app):
    record(5)
    tamper("UPDATE audit_events SET chain_index = -1 WHERE seq = 5")
    tamper("UPDATE audit_events SET chain_index = 5 WHERE seq = 4")
    tamper("UPDATE audit_events SET chain_index = 4 WHERE seq = 5")
    checked, broken = verify_audit_chain()
    assert (checked, broken.seq, broken.chain_index) == (3, 5, 4)
    assert "does not follow the event before it (reordered" in broken.reason


def test_swapping_the_last_two_events_contents_is_detected(app):
    record(5)
    four, five = stored()[3:5]
    swap = ("UPDATE audit_events SET details = :details, occurred_at = :at WHERE seq = :seq")
    naive = db.engine.dialect.name == "sqlite"  # stored as naive UTC there

    def at(event):
        return event.occurred_at.replace(tzinfo=None) if naive else event.occurred_at

    tamper(swap, details=json.dumps(five.details), at=at(five), seq=4)
    tamper(swap, details=json.dumps(four.details), at=at(four), seq=5)
    checked, broken = verify_audit_chain()
    assert (checked, broken.seq, broken.chain_index) == (3, 4, 4)
    assert "edited" in broken.reason


def test_a_head_at_the_right_position_naming_another_event_is_detected(app):
    record(5)
    tamper("UPDATE audit_head SET seq = 4")  # position and hash still the last event's
    checked, broken = verify_audit_chain()
    assert (checked, broken.seq, broken.chain_index) == (5, None, 5)
    assert broken.reason == ("the head names event #4 at position 5, but the chain ends "
                             "with event #5 at position 5")


def test_deleting_the_head_is_detected_and_sealing_stops(app):
    record(3)
    tamper("DELETE FROM audit_head")
    assert verify_audit_chain()[1].reason == "the chain head is missing"
    record(1, seal=False)
    with pytest.raises(AuditHeadMissingError):
        seal_pending(NOW)
    db.session.rollback()
    assert db.session.get(AuditHead, 1) is None  # not papered over with a new head
    assert verify_audit_chain()[1].reason == "the chain head is missing"


def test_a_forged_event_without_the_key_is_detected(app):
    record(3)
    tamper("UPDATE audit_events SET actor = 'mallory', leaf_hash = :leaf, chain_hash = :chain "
           "WHERE seq = 3", leaf="a" * 64, chain="b" * 64)
    tamper("UPDATE audit_head SET chain_hash = :chain", chain="b" * 64)
    assert verify_audit_chain()[1].seq == 3


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
    seal_all()
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
    seal_all()
    (event,) = stored()
    assert (len(event.actor), len(event.target_id), len(event.client_ip)) == (300, 64, 45)
    assert verify_audit_chain() == (1, None)


def test_secrets_in_details_never_reach_the_trail(app):
    record_event(actor=ALICE, action="otp.issued", target_type="device", target_id=1, now=NOW,
                 details={"username": "bob", "otp": "482913", "password": "hunter22",
                          "nested": {"token": "tok-123", "Secret": "s-456"},
                          "attempts": [{"code": "000111"}]})
    db.session.commit()
    seal_all()
    (event,) = stored()
    assert event.details == {"username": "bob", "nested": {}, "attempts": [{}]}
    dumped = json.dumps(event.details)
    for secret in ("482913", "hunter22", "tok-123", "s-456", "000111"):
        assert secret not in dumped
    assert verify_audit_chain() == (1, None)


def test_an_idle_sealing_run_reads_two_rows_and_writes_nothing(app):
    """Twice a second: with nothing waiting it must not take SQLite's write lock (nor wake
    whoever watches the database for commits)."""
    from statement_counter import StatementLog

    record(2)
    with StatementLog(db.engine) as log:
        assert seal_all() == 0
    assert log.writes == [], log.listing()
    assert len(log.statements) == 2, log.listing()
