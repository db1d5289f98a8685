"""One-time passwords under real concurrency on PostgreSQL: one new code per minimum
interval however many ask at once, every failed verification counted, a code used once."""
from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import func, select

from portal import unit_of_work
from portal.domain.errors import TooSoonError
from portal.extensions import db
from portal.models import AuditEvent, ClientSession, Device, OneTimePassword
from portal.services import otp
from portal.services.actors import Actor

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
        reason="races need PostgreSQL (set PORTAL_TEST_DATABASE_URI)"),
]

DEVICE = "WIN-0859G9I39J0"
ACTOR = Actor(label=f"device:{DEVICE}")


@pytest.fixture
def device_id(make):
    department = make.department("QA Team")
    make.allow_otp(department, ACTOR)
    return make.device(department, name=DEVICE).id


def together(app, count: int, act) -> list:
    """Run act(i) in `count` threads at once, each its own app context and unit of work;
    what each returned or raised."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def worker(i):
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                results[i] = act(i)
                unit_of_work.finish(succeeded=True)
            except Exception as exc:  # noqa: BLE001 - reported by the assertions
                unit_of_work.finish(succeeded=False)
                results[i] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def device():
    return db.session.get(Device, db.session.scalar(select(Device.id)))


def test_one_new_code_per_interval_however_many_ask_at_once(app, device_id):
    results = together(app, 6, lambda i: otp.send_code(
        device=device(), username=f"user{i}", email=f"user{i}@example.com",
        issuer=otp.Issuer.INTERNAL, actor=ACTOR, now=NOW + timedelta(seconds=1)))
    sent = [r for r in results if isinstance(r, otp.Sent)]
    assert len(sent) == 1, results
    assert all(isinstance(r, TooSoonError) for r in results if r not in sent), results
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 1


def test_parallel_wrong_codes_all_count_and_lock_out(app, device_id):
    sent = otp.send_code(device=device(), username="jsmith", email="j@example.com",
                         issuer=otp.Issuer.INTERNAL, actor=ACTOR, now=NOW)
    db.session.commit()
    code = otp.crypto.open_code(otp.rules.binding(device_id, "jsmith", "j@example.com"),
                                sent.otp.code_ciphertext)
    wrong = f"{(int(code) + 1) % 10 ** 8:08d}"
    results = together(app, 5, lambda i: otp.verify_otp(
        device=device(), username="jsmith", email="j@example.com", password=wrong,
        actor=ACTOR, now=NOW + timedelta(seconds=1)))
    assert all(isinstance(r, otp.VerificationFailedError) for r in results), results
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "otp.locked")) == 1
    with pytest.raises(otp.VerificationFailedError):  # locked: even the right code
        otp.verify_otp(device=device(), username="jsmith", email="j@example.com",
                       password=code, actor=ACTOR, now=NOW + timedelta(seconds=2))


def test_a_code_used_by_several_at_once_starts_one_session(app, device_id):
    sent = otp.send_code(device=device(), username="jsmith", email="j@example.com",
                         issuer=otp.Issuer.INTERNAL, actor=ACTOR, now=NOW)
    db.session.commit()
    code = otp.crypto.open_code(otp.rules.binding(device_id, "jsmith", "j@example.com"),
                                sent.otp.code_ciphertext)
    results = together(app, 4, lambda i: otp.verify_otp(
        device=device(), username="jsmith", email="j@example.com", password=code,
        actor=ACTOR, now=NOW + timedelta(seconds=1)).id)
    assert sum(isinstance(r, int) for r in results) == 1, results
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(ClientSession)) == 1
