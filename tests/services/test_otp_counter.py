"""The wrong code's failure count, applied by the database in one upsert
(otp._count_in_one_statement), gives what the domain's rule (rules.after_failure, with
rules.verify's lock) gives, from every state a counter can be in — on SQLite and on
PostgreSQL — and the whole check counts and audits a wrong code as before."""
from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select

from portal.domain import otp as rules
from portal.extensions import db
from portal.models import AuditEvent, OtpFailureCounter
from portal.services import otp
from portal.services.actors import Actor

DEVICE = "WIN-COUNTER-01"
ACTOR = Actor(label=f"device:{DEVICE}")
KEY = "alice"

# Every state: no row yet; 0 … MAX_FAILURES-1 failures, unlocked; a lock still on (and
# one ending this very instant, which no longer counts as on); a lock that ended.
STATES = ([None]
          + [rules.FailureCount(n, None) for n in range(rules.MAX_FAILURES)]
          + [rules.FailureCount(0, NOW + timedelta(minutes=3)),
             rules.FailureCount(0, NOW + timedelta(microseconds=1)),
             rules.FailureCount(0, NOW),
             rules.FailureCount(2, NOW - timedelta(minutes=1))])


@pytest.fixture
def device(make):
    department = make.department("QA Team")
    make.allow_otp(department, ACTOR)
    return make.device(department, name=DEVICE)


def _stored() -> rules.FailureCount | None:
    row = db.session.execute(
        select(OtpFailureCounter.failures, OtpFailureCounter.locked_until)
        .where(OtpFailureCounter.username_key == KEY)).first()
    return None if row is None else rules.FailureCount(row.failures, row.locked_until)


def _set(device, state: rules.FailureCount | None) -> None:
    db.session.query(OtpFailureCounter).delete()
    if state is not None:
        db.session.add(OtpFailureCounter(device_id=device.id, username_key=KEY,
                                         failures=state.failures,
                                         locked_until=state.locked_until))
    db.session.commit()


@pytest.mark.parametrize("state", STATES, ids=repr)
def test_one_statement_counts_as_the_rule_says(app, device, state):
    _set(device, state)
    before = state or rules.FailureCount()
    answer = otp._count_in_one_statement(db.session.connection(), device, KEY, NOW)
    db.session.commit()
    expected = rules.after_failure(before, NOW)
    assert _stored() == expected
    if before.is_locked(NOW):
        assert answer is None  # a lock was on: not counted, nothing changed
    else:
        assert answer == expected


def test_wrong_codes_lock_out_at_the_fifth_and_say_so_once(app, device):
    """Through verify_otp: four wrong codes count, the fifth locks (one otp.locked
    event), and a sixth during the lock is refused as "locked" without counting."""
    for _ in range(rules.MAX_FAILURES + 1):
        with pytest.raises(otp.VerificationFailedError):
            otp.verify_otp(device=device, username="Alice", email="alice@example.com",
                           password="12345678", actor=ACTOR, now=NOW)
        db.session.commit()
    assert _stored() == rules.FailureCount(0, NOW + rules.LOCK_DURATION)
    events = db.session.execute(
        select(AuditEvent.action, AuditEvent.details).where(
            AuditEvent.action.in_(["otp.failed", "otp.locked"])).order_by(AuditEvent.seq)
    ).all()
    reasons = [e.details["reason"] for e in events if e.action == "otp.failed"]
    assert reasons == ["no_match"] * rules.MAX_FAILURES + ["locked"]
    locked = [e for e in events if e.action == "otp.locked"]
    assert len(locked) == 1
    assert locked[0].details["locked_until"] == (NOW + rules.LOCK_DURATION).isoformat()
    assert [e.action for e in events].index("otp.locked") == rules.MAX_FAILURES  # after the 5th
