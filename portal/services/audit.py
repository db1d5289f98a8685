"""Appending to, sealing and verifying the audit trail.

Writers only insert (record_event: no lock, no flush of its own; the unit of work's flush
sends a request's events in one batch). The sealing step (seal_pending, a scheduler job)
chains committed events in seq order under PORTAL_AUDIT_KEY; two sealers take turns on
the head row, which nobody else touches. See portal/domain/audit.py for the hashing."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, func, select, update

from portal.domain import audit as chain
from portal.domain.audit import ChainBreak, Checkpoint, EventFields, Head, SealedEvent, scrub
from portal.domain.errors import AuditHeadMissingError
from portal.extensions import db
from portal.models import AuditEvent, AuditHead
from portal.models.audit import DEVICE_LENGTH
from portal.services import upserts
from portal.services.actors import Actor

SEAL_BATCH = 1000
_events = AuditEvent.__table__


def _one_line(value: str, limit: int = 300) -> str:
    """Control characters (newlines included) can't forge a second line in any view."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
    return cleaned[:limit]


def audit_key() -> bytes:
    key = current_app.config["AUDIT_KEY"]
    return key if isinstance(key, bytes) else str(key).encode()


DEVICE_ACTOR = "device:"


def device_of(*, actor_label: str, target_type: str, details: dict[str, Any]) -> str | None:
    """The device an event is about, lower case, for the audit log's "Device" filter: the
    details' "device", else a device event's "name", else the device that acted
    ("device:<name>"); None for an event about no device. Migration 0011 fills older
    events the same way."""
    name = details.get("device")
    if not isinstance(name, str) and target_type == "device":
        name = details.get("name")
    if not isinstance(name, str) and actor_label.lower().startswith(DEVICE_ACTOR):
        name = actor_label[len(DEVICE_ACTOR):]
    return name.lower()[:DEVICE_LENGTH] if isinstance(name, str) and name else None


def _values(*, actor: Actor, action: str, target_type: str, target_id: str | int,
            now: datetime, department_id: int | None = None, outcome: str = "success",
            details: dict[str, Any] | None = None) -> dict[str, Any]:
    label = _one_line(actor.label)
    details = scrub(details or {})
    return {
        "occurred_at": now,
        "actor": label,
        "actor_user_id": actor.user_id,
        "action": action,
        "target_type": target_type,
        "target_id": _one_line(str(target_id), 64),
        "department_id": department_id,
        "client_ip": _one_line(actor.client_ip, 45),
        "outcome": outcome,
        "details": details,
        "device": device_of(actor_label=label, target_type=target_type, details=details),
    }


def record_event(
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | int,
    now: datetime,
    department_id: int | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the session; it is inserted (seq from the database) with the
    transaction's next flush, and sealed after commit."""
    event = AuditEvent(**_values(actor=actor, action=action, target_type=target_type,
                                 target_id=target_id, now=now, department_id=department_id,
                                 outcome=outcome, details=details))
    db.session.add(event)
    return event


# Core, not the ORM's bulk INSERT: no objects are involved, and its set-up cost more
# than the statement.
_INSERT_EVENTS = _events.insert()


def record_events(events: list[dict[str, Any]]) -> None:
    """Insert many events at once, each given as record_event's keyword arguments: one
    bulk INSERT now, without an ORM object per event (a sweep over hundreds of requests)."""
    rows = [_values(**event) for event in events]
    if rows:  # one row as one row's INSERT, not the driver's executemany
        db.session.connection().execute(_INSERT_EVENTS, rows[0] if len(rows) == 1 else rows)


def _fields(row) -> EventFields:
    return EventFields(
        seq=row.seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        department_id=row.department_id,
        client_ip=row.client_ip,
        outcome=row.outcome,
        details=row.details,
    )


_CONTENT = (AuditEvent.seq, AuditEvent.occurred_at, AuditEvent.actor, AuditEvent.action,
            AuditEvent.target_type, AuditEvent.target_id, AuditEvent.department_id,
            AuditEvent.client_ip, AuditEvent.outcome, AuditEvent.details)


def _take_the_sealers_turn() -> AuditHead:
    """Lock the head row with the transaction's first statement (a row lock on
    PostgreSQL, the write lock on SQLite) and return it. A trail without a head starts
    one (two sealers starting at once: the second's insert waits for the first's and
    does nothing). A head at the start of the chain while events are sealed means the head
    was deleted, which sealing must not paper over (`audit verify` reports it); that is
    checked holding the head, so a sealer that started one a moment ago is no alarm."""
    session = db.session
    touch = (update(AuditHead).where(AuditHead.id == 1)
             .values(chain_index=AuditHead.chain_index)
             .execution_options(synchronize_session=False))
    if session.execute(touch).rowcount == 0:
        session.execute(_insert_head_if_missing())
        session.execute(touch)
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)
                           .execution_options(populate_existing=True)).scalar_one()
    if head.chain_index == 0 and session.scalar(
            select(AuditEvent.seq).where(AuditEvent.chain_index.is_not(None)).limit(1)
    ) is not None:
        raise AuditHeadMissingError("The audit chain's head is missing; sealing stopped. "
                                    "Run `flask --app portal audit verify`.")
    return head


def _insert_head_if_missing():
    values = {"id": 1, "chain_index": 0, "seq": 0, "chain_hash": chain.GENESIS_HASH}
    return upserts.insert(AuditHead).values(**values).on_conflict_do_nothing()


def _nothing_to_seal() -> bool:
    """An idle run reads and writes nothing more: no event waits (the partial index) and
    the head exists. So the job, twice a second, takes no write lock on SQLite and wakes
    nobody watching the database for commits."""
    if db.session.scalar(select(AuditEvent.seq).where(AuditEvent.chain_index.is_(None))
                         .limit(1)) is not None:
        return False
    return db.session.scalar(select(AuditHead.id).where(AuditHead.id == 1)) is not None


def seal_pending(now: datetime, limit: int = SEAL_BATCH) -> int:
    """Chain up to `limit` committed, unsealed events in seq order after the head; the
    number sealed. Idempotent, and safe with two sealers: they take turns on the head row,
    and an event is only ever sealed from NULL."""
    if _nothing_to_seal():
        return 0
    head = _take_the_sealers_turn()
    rows = db.session.execute(
        select(*_CONTENT).where(AuditEvent.chain_index.is_(None))
        .order_by(AuditEvent.seq).limit(limit)).all()
    if not rows:
        return 0
    seals = chain.seal(audit_key(), head.chain_index, head.chain_hash, map(_fields, rows))
    db.session.execute(
        _events.update()
        .where(_events.c.seq == bindparam("s_seq"), _events.c.chain_index.is_(None))
        .values(chain_index=bindparam("s_index"), leaf_hash=bindparam("s_leaf"),
                chain_hash=bindparam("s_chain")),
        [{"s_seq": s.seq, "s_index": s.chain_index, "s_leaf": s.leaf_hash,
          "s_chain": s.chain_hash} for s in seals])
    last = seals[-1]
    head.chain_index, head.seq, head.chain_hash, head.sealed_at = (
        last.chain_index, last.seq, last.chain_hash, now)
    db.session.flush()
    return len(seals)


def read_head() -> Head | None:
    row = db.session.execute(select(AuditHead.chain_index, AuditHead.seq, AuditHead.chain_hash)
                             .where(AuditHead.id == 1)).first()
    return Head(row.chain_index, row.seq, row.chain_hash) if row else None


def _sealed(row) -> SealedEvent:
    return SealedEvent(_fields(row), row.chain_index, row.leaf_hash, row.chain_hash)


@dataclass(frozen=True)
class Verification:
    checked: int
    broken: ChainBreak | None
    unsealed: int
    oldest_unsealed_at: datetime | None


def verify_trail(batch_size: int = 1000, checkpoint: Checkpoint | None = None
                 ) -> Verification:
    """Every sealed event in chain order, then the head against the last one, then (given
    one) the checkpoint against the event now at its position. Reads key-ordered batches."""
    checker = chain.ChainChecker(audit_key())
    columns = (*_CONTENT, AuditEvent.chain_index, AuditEvent.leaf_hash, AuditEvent.chain_hash)
    after = 0
    while checker.break_ is None:
        batch = db.session.execute(
            select(*columns).where(AuditEvent.chain_index > after)
            .order_by(AuditEvent.chain_index).limit(batch_size)).all()
        if not batch:
            break
        for row in batch:
            if checker.add(_sealed(row)) is not None:
                break
        after = batch[-1].chain_index
    head = read_head()
    broken = checker.finish(head)
    if broken is None and checkpoint is not None:
        row = db.session.execute(select(*columns).where(
            AuditEvent.chain_index == checkpoint.chain_index)).first()
        broken = chain.check_against_checkpoint(checkpoint, _sealed(row) if row else None, head)
    unsealed, oldest = db.session.execute(
        select(func.count(), func.min(AuditEvent.occurred_at))
        .where(AuditEvent.chain_index.is_(None))).one()
    return Verification(checker.checked, broken, unsealed, oldest)


def verify_audit_chain(batch_size: int = 1000) -> tuple[int, ChainBreak | None]:
    """(sealed events checked, first break or None)."""
    result = verify_trail(batch_size)
    return result.checked, result.broken


def current_checkpoint(now: datetime) -> Checkpoint:
    row = db.session.execute(select(AuditHead.chain_index, AuditHead.seq, AuditHead.chain_hash,
                                    AuditHead.sealed_at).where(AuditHead.id == 1)).first()
    index, seq, digest, at = row if row else (0, 0, chain.GENESIS_HASH, None)
    return Checkpoint(seq, index, digest,
                      (at or now).isoformat(timespec="milliseconds").replace("+00:00", "Z"))

