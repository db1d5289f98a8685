"""The audit trail's proof (portal/domain/audit.py): keyed leaf and chain hashes, the head
and checkpoints. An intact chain verifies; any edit, deletion, reordering or rewound head
is reported where it shows; without the key nobody can make a hash that fits."""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from portal.domain.audit import (
    GENESIS_HASH,
    ChainChecker,
    Checkpoint,
    EventFields,
    Head,
    SealedEvent,
    canonical,
    chain_hash,
    check_against_checkpoint,
    leaf_hash,
    parse_checkpoint,
    scrub,
    seal,
)

T0 = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)
KEY = b"k" * 32
OTHER_KEY = b"x" * 32


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


def build_chain(n: int = 5, seqs=None, key: bytes = KEY) -> list[SealedEvent]:
    events = [fields(seq) for seq in (seqs or range(1, n + 1))]
    seals = seal(key, 0, GENESIS_HASH, events)
    return [SealedEvent(f, s.chain_index, s.leaf_hash, s.chain_hash)
            for f, s in zip(events, seals)]


def head_of(chain: list[SealedEvent]) -> Head:
    last = chain[-1]
    return Head(last.chain_index, last.fields.seq, last.chain_hash)


def check(chain, head="auto", key: bytes = KEY):
    checker = ChainChecker(key)
    for event in chain:
        if checker.add(event) is not None:
            break
    return checker.finish(head_of(chain) if head == "auto" and chain else
                          (None if head == "auto" else head))


def test_intact_chain_verifies():
    assert check(build_chain()) is None


def test_empty_chain_verifies_with_or_without_a_head():
    assert check([], head=None) is None
    assert check([], head=Head(0, 0, GENESIS_HASH)) is None


def test_positions_follow_seq_order_and_may_skip_seqs():
    # seq comes from the database: a rolled-back transaction leaves a gap, which the chain
    # (positions 1, 2, 3...) doesn't mind.
    chain = build_chain(seqs=[1, 2, 5, 9])
    assert [e.chain_index for e in chain] == [1, 2, 3, 4]
    assert check(chain) is None


def test_sealing_continues_after_the_head():
    first = build_chain(3)
    more = [fields(seq) for seq in (4, 5)]
    seals = seal(KEY, first[-1].chain_index, first[-1].chain_hash, more)
    chain = first + [SealedEvent(f, s.chain_index, s.leaf_hash, s.chain_hash)
                     for f, s in zip(more, seals)]
    assert chain == build_chain(5)


def test_hashes_are_rfc6962_style_hmacs_under_the_key():
    f = fields(1)
    leaf = leaf_hash(KEY, f)
    assert leaf == hmac.new(KEY, b"\x00" + canonical(f).encode(), hashlib.sha256).hexdigest()
    assert chain_hash(KEY, GENESIS_HASH, leaf) == hmac.new(
        KEY, b"\x01" + bytes(32) + bytes.fromhex(leaf), hashlib.sha256).hexdigest()
    # a plain SHA-256 (what anyone with database access could compute) is not it
    assert leaf != hashlib.sha256(b"\x00" + canonical(f).encode()).hexdigest()


def test_without_the_key_a_recomputed_chain_does_not_verify():
    forged = build_chain(key=OTHER_KEY)
    broken = check(forged)
    assert (broken.seq, broken.chain_index) == (1, 1)
    assert "contents do not match" in broken.reason


# A changed value for every field of an event.
TAMPERED = {
    "seq": 42,
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


@pytest.mark.parametrize("name", list(TAMPERED))
@pytest.mark.parametrize("position", [0, 2, 4])  # first, middle, last
def test_changing_any_field_of_any_event_reports_that_event(name, position):
    chain = build_chain()
    event = chain[position]
    chain[position] = dataclasses.replace(
        event, fields=dataclasses.replace(event.fields, **{name: TAMPERED[name]}))
    broken = check(chain, head=head_of(build_chain()))
    assert broken.chain_index == position + 1
    assert "edited" in broken.reason


@pytest.mark.parametrize("column", ["leaf_hash", "chain_hash"])
@pytest.mark.parametrize("position", [0, 4])
def test_changing_a_stored_hash_breaks_that_event(column, position):
    chain = build_chain()
    chain[position] = dataclasses.replace(chain[position], **{column: "f" * 64})
    broken = check(chain, head=head_of(build_chain()))
    assert broken.chain_index == position + 1


def test_a_missing_event_is_reported_where_the_gap_shows():
    chain = build_chain()
    del chain[2]  # position 3
    broken = check(chain)
    assert (broken.seq, broken.chain_index) == (4, 4)
    assert "skips position 3" in broken.reason


def test_a_missing_first_event_is_reported():
    broken = check(build_chain()[1:])
    assert broken.chain_index == 2 and "skips position 1" in broken.reason


@pytest.mark.parametrize("first", [1, 3], ids=["two in the middle", "the last two"])
def test_swapping_two_events_positions_is_reported(first):
    """Events `first` and `first + 1` (0-based) trade places: the one moved earlier is
    named, at the position it took."""
    chain = build_chain()
    a, b = chain[first], chain[first + 1]
    chain[first] = dataclasses.replace(b, chain_index=a.chain_index)
    chain[first + 1] = dataclasses.replace(a, chain_index=b.chain_index)
    broken = check(chain, head=head_of(build_chain()))
    assert (broken.seq, broken.chain_index) == (b.fields.seq, a.chain_index)
    assert "does not follow the event before it (reordered" in broken.reason


def test_reordering_contents_between_two_events_is_reported():
    chain = build_chain()
    a, b = chain[1], chain[2]
    chain[1] = dataclasses.replace(a, fields=b.fields)
    chain[2] = dataclasses.replace(b, fields=a.fields)
    assert check(chain, head=head_of(build_chain())).chain_index == 2


def test_swapping_the_last_two_events_contents_is_reported():
    chain = build_chain()
    fourth, last = chain[3], chain[4]
    chain[3] = dataclasses.replace(fourth, fields=dataclasses.replace(last.fields, seq=4))
    chain[4] = dataclasses.replace(last, fields=dataclasses.replace(fourth.fields, seq=5))
    broken = check(chain, head=head_of(build_chain()))
    assert (broken.seq, broken.chain_index) == (4, 4)
    assert "edited" in broken.reason


def test_only_the_first_break_is_reported():
    chain = build_chain()
    for position in (1, 3):
        event = chain[position]
        chain[position] = dataclasses.replace(
            event, fields=dataclasses.replace(event.fields, outcome="failure"))
    assert check(chain).chain_index == 2


# --- the head --------------------------------------------------------------------------


def test_deleting_the_last_event_is_found_by_the_head():
    chain = build_chain()
    head = head_of(chain)
    broken = check(chain[:-1], head=head)
    assert broken.seq is None and broken.chain_index == 5
    assert "the chain ends with event #4 at position 4" in broken.reason


def test_a_missing_head_is_a_break():
    broken = check(build_chain(), head=None)
    assert broken.reason == "the chain head is missing"
    assert broken.describe() == "the chain head: the chain head is missing"


def test_a_head_with_the_right_position_but_another_hash_is_a_break():
    chain = build_chain()
    head = dataclasses.replace(head_of(chain), hash="0" * 64)
    assert "hash does not match" in check(chain, head=head).reason


def test_a_head_with_the_right_position_and_hash_but_another_seq_is_a_break():
    chain = build_chain()
    head = dataclasses.replace(head_of(chain), seq=4)
    broken = check(chain, head=head)
    assert (broken.seq, broken.chain_index) == (None, 5)
    assert broken.reason == ("the head names event #4 at position 5, but the chain ends "
                             "with event #5 at position 5")


def test_a_head_naming_sealed_events_over_an_empty_chain_is_a_break():
    assert "none found" in check([], head=Head(3, 3, "a" * 64)).reason


def test_a_truncation_that_rewinds_the_head_passes_without_a_checkpoint():
    # What the checkpoint is for: a consistent shorter chain proves nothing by itself.
    chain = build_chain()[:3]
    assert check(chain) is None


# --- checkpoints -----------------------------------------------------------------------


def test_checkpoint_line_round_trips():
    point = Checkpoint(seq=9, chain_index=5, hash="ab" * 32, at="2026-12-01T11:00:00.000Z")
    line = point.line()
    assert "\n" not in line and line.startswith("session-gate-audit-checkpoint ")
    assert parse_checkpoint(line) == point
    assert parse_checkpoint("  " + line + "\n") == point


@pytest.mark.parametrize("line", ["", "hello", "session-gate-audit-checkpoint seq=1",
                                  "session-gate-audit-checkpoint seq=1 position=1 hash=zz "
                                  "at=2026-12-01T11:00:00.000Z"])
def test_a_line_that_is_not_a_checkpoint_is_refused(line):
    assert parse_checkpoint(line) is None


def checkpoint_at(chain, position: int) -> Checkpoint:
    event = chain[position - 1]
    return Checkpoint(event.fields.seq, position, event.chain_hash, "2026-12-01T11:00:00.000Z")


def test_a_chain_that_grew_since_the_checkpoint_holds_it():
    chain = build_chain(8)
    point = checkpoint_at(build_chain(8), 5)
    assert check_against_checkpoint(point, chain[4], head_of(chain)) is None


def test_truncation_below_the_checkpoint_is_found():
    chain = build_chain(8)
    point = checkpoint_at(chain, 8)
    shorter = chain[:6]
    broken = check_against_checkpoint(point, None, head_of(shorter))
    assert broken.reason.startswith("truncated: the checkpoint names position 8, the chain "
                                    "now ends at position 6")


def test_a_rewrite_since_the_checkpoint_is_found():
    point = checkpoint_at(build_chain(6), 6)
    rewritten = build_chain(seqs=[1, 2, 3, 4, 5, 7])  # event 6 replaced by another
    broken = check_against_checkpoint(point, rewritten[5], head_of(rewritten))
    assert "rewritten since the checkpoint" in broken.reason


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
