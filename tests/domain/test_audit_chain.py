"""The audit trail's hash chain (portal/domain/audit.py): an intact chain verifies; any
edit, broken link, gap or reordering is reported at the event where it shows."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from portal.domain.audit import (
    GENESIS_HASH,
    EventFields,
    chain_hash,
    scrub,
    verify_chain,
)

T0 = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)


def fields(seq: int) -> EventFields:
    return EventFields(
        seq=seq,
        occurred_at=T0 + timedelta(seconds=seq),
        actor=f"admin{seq}@example.com",
        action="settings.changed",
        target_type="department",
        target_id=str(seq),
        department_id=7,
        client_ip="192.0.2.10",
        outcome="success",
        details={"field": "confirmation_timeout_seconds", "old": 60, "new": 60 + seq},
    )


def build_chain(n: int = 5) -> list[tuple[EventFields, str, str]]:
    chain, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        f = fields(seq)
        digest = chain_hash(prev, f)
        chain.append((f, prev, digest))
        prev = digest
    return chain


def test_intact_chain_verifies():
    assert verify_chain(build_chain()) is None


def test_empty_chain_verifies():
    assert verify_chain([]) is None


def test_chain_starts_from_the_genesis_hash():
    chain = build_chain(1)
    assert chain[0][1] == GENESIS_HASH == "0" * 64


def test_hash_is_a_sha256_hex_digest_and_deterministic():
    digest = chain_hash(GENESIS_HASH, fields(1))
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == chain_hash(GENESIS_HASH, fields(1))


def test_hash_depends_on_the_previous_hash():
    assert chain_hash(GENESIS_HASH, fields(1)) != chain_hash("1" * 64, fields(1))


# A changed value for every field of an event.
TAMPERED = {
    "seq": None,  # handled by its own test (it breaks the sequence check first)
    "occurred_at": T0 + timedelta(days=1),
    "actor": "mallory@example.com",
    "action": "settings.viewed",
    "target_type": "device",
    "target_id": "999",
    "department_id": 8,
    "client_ip": "198.51.100.1",
    "outcome": "failure",
    "details": {"field": "confirmation_timeout_seconds", "old": 60, "new": 600},
}


def test_every_event_field_is_covered():
    assert set(TAMPERED) == {f.name for f in dataclasses.fields(EventFields)}


@pytest.mark.parametrize("name", [n for n in TAMPERED if n != "seq"])
@pytest.mark.parametrize("position", [0, 2, 4])
def test_changing_any_field_reports_that_event(name, position):
    chain = build_chain()
    f, prev, digest = chain[position]
    chain[position] = (dataclasses.replace(f, **{name: TAMPERED[name]}), prev, digest)
    broken = verify_chain(chain)
    assert broken is not None
    assert broken.seq == position + 1
    assert broken.reason == "contents do not match the stored hash"


def test_changing_the_stored_hash_breaks_that_event():
    chain = build_chain()
    f, prev, _digest = chain[2]
    chain[2] = (f, prev, "f" * 64)
    broken = verify_chain(chain)
    assert broken.seq == 3


def test_recomputing_one_hash_after_an_edit_breaks_the_next_link():
    chain = build_chain()
    f, prev, _ = chain[1]
    edited = dataclasses.replace(f, actor="mallory@example.com")
    chain[1] = (edited, prev, chain_hash(prev, edited))
    broken = verify_chain(chain)
    assert broken.seq == 3
    assert broken.reason == "previous-hash link does not match the event before"


def test_changing_the_prev_link_reports_that_event():
    chain = build_chain()
    f, _prev, digest = chain[3]
    chain[3] = (f, "a" * 64, digest)
    broken = verify_chain(chain)
    assert broken.seq == 4
    assert broken.reason == "previous-hash link does not match the event before"


def test_first_event_must_link_to_genesis():
    chain = build_chain()
    f, _prev, _ = chain[0]
    chain[0] = (f, "a" * 64, chain_hash("a" * 64, f))
    assert verify_chain(chain).seq == 1


def test_a_missing_event_is_reported_where_the_gap_shows():
    chain = build_chain()
    del chain[2]  # event #3
    broken = verify_chain(chain)
    assert broken.seq == 4
    assert broken.reason == "expected event #3, found #4"


def test_a_missing_first_event_is_reported():
    broken = verify_chain(build_chain()[1:])
    assert broken.seq == 2
    assert broken.reason == "expected event #1, found #2"


def test_reordered_events_are_reported():
    chain = build_chain()
    chain[1], chain[2] = chain[2], chain[1]
    broken = verify_chain(chain)
    assert broken.seq == 3
    assert broken.reason == "expected event #2, found #3"


def test_renumbered_event_is_reported():
    chain = build_chain()
    f, prev, digest = chain[1]
    chain[1] = (dataclasses.replace(f, seq=9), prev, digest)
    assert verify_chain(chain).seq == 9


def test_only_the_first_break_is_reported():
    chain = build_chain()
    for position in (1, 3):
        f, prev, digest = chain[position]
        chain[position] = (dataclasses.replace(f, outcome="failure"), prev, digest)
    assert verify_chain(chain).seq == 2


def test_verify_accepts_a_generator():
    assert verify_chain(iter(build_chain(50))) is None


# --- scrub -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["password", "token", "otp", "code", "secret",
                                 "password_hash", "Password", "TOKEN", "Otp"])
def test_scrub_drops_secret_keys(key):
    assert scrub({key: "s3cr3t-value", "email": "a@example.com"}) == {
        "email": "a@example.com"}


def test_scrub_drops_secret_keys_recursively():
    details = {
        "device": "WIN-0859G9I39J0",
        "request": {"otp": "123456", "user": {"password": "hunter22", "name": "bob"}},
        "changes": {"name": {"old": "a", "new": "b"}},
    }
    assert scrub(details) == {
        "device": "WIN-0859G9I39J0",
        "request": {"user": {"name": "bob"}},
        "changes": {"name": {"old": "a", "new": "b"}},
    }


def test_scrub_drops_secret_keys_inside_lists():
    details = {"attempts": [{"code": "123456", "at": "10:00"}, {"secret": "x"}, "plain"]}
    assert scrub(details) == {"attempts": [{"at": "10:00"}, {}, "plain"]}


def test_scrub_keeps_harmless_keys_and_values_and_does_not_mutate_its_input():
    details = {"field": "otp_expiration_minutes", "old": 30, "new": 45,
               "nested": {"token": "t"}}
    assert scrub(details) == {"field": "otp_expiration_minutes", "old": 30, "new": 45,
                              "nested": {}}
    assert details["nested"] == {"token": "t"}
