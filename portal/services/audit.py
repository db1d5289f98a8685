"""Appending to and verifying the hash-chained audit trail."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from portal.domain.audit import GENESIS_HASH, ChainBreak, EventFields, chain_hash, scrub, verify_chain
from portal.extensions import db
from portal.models import AuditChainHead, AuditEvent
from portal.services.actors import Actor
from portal.services.pages import Page, fetch_page


def _one_line(value: str, limit: int = 300) -> str:
    """Control characters (newlines included) can't forge a second line in any view."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
    return cleaned[:limit]


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
    session = db.session
    # Lock the chain head first: one appender at a time, on PostgreSQL and SQLite alike.
    locked = session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .values(last_seq=AuditChainHead.last_seq + 1)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount == 0:
        session.add(AuditChainHead(id=1, last_seq=1, last_hash=GENESIS_HASH))
        session.flush()
    head = session.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash).where(AuditChainHead.id == 1)
    ).one()
    fields = EventFields(
        seq=head.last_seq,
        occurred_at=now,
        actor=_one_line(actor.label),
        action=action,
        target_type=target_type,
        target_id=_one_line(str(target_id), 64),
        department_id=department_id,
        client_ip=_one_line(actor.client_ip, 45),
        outcome=outcome,
        details=scrub(details or {}),
    )
    digest = chain_hash(head.last_hash, fields)
    event = AuditEvent(
        seq=fields.seq,
        occurred_at=fields.occurred_at,
        actor=fields.actor,
        actor_user_id=actor.user_id,
        action=fields.action,
        target_type=fields.target_type,
        target_id=fields.target_id,
        department_id=fields.department_id,
        client_ip=fields.client_ip,
        outcome=fields.outcome,
        details=fields.details,
        prev_hash=head.last_hash,
        hash=digest,
    )
    session.add(event)
    session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .values(last_hash=digest)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return event


def _fields(event: AuditEvent) -> EventFields:
    return EventFields(
        seq=event.seq,
        occurred_at=event.occurred_at,
        actor=event.actor,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        department_id=event.department_id,
        client_ip=event.client_ip,
        outcome=event.outcome,
        details=event.details,
    )


def verify_audit_chain(batch_size: int = 1000) -> tuple[int, ChainBreak | None]:
    """(events checked, first break or None), reading the trail in key-ordered batches."""
    checked = 0

    def rows():
        nonlocal checked
        after = 0
        while True:
            batch = db.session.scalars(
                select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq)
                .limit(batch_size)
            ).all()
            if not batch:
                return
            for event in batch:
                checked += 1
                yield _fields(event), event.prev_hash, event.hash
            after = batch[-1].seq
            for event in batch:  # only what we loaded: the caller's objects stay attached
                db.session.expunge(event)

    found = verify_chain(rows())
    if found is None:
        head = db.session.get(AuditChainHead, 1)
        if head is not None and head.last_seq != checked:
            found = ChainBreak(checked + 1, f"chain head says {head.last_seq} events, found {checked}")
    return checked, found


def list_events(*, department_id: int, before: int | None, limit: int,
                request_id: int | None = None) -> Page:
    """A department's events, newest first, keyed on seq; or one request's whole story.
    The page's next_after is the seq to continue before."""
    query = (select(AuditEvent).where(AuditEvent.department_id == department_id)
             .order_by(AuditEvent.seq.desc()))
    if request_id is not None:
        query = query.where(AuditEvent.target_type == "session_request",
                            AuditEvent.target_id == str(request_id))
    if before:
        query = query.where(AuditEvent.seq < before)
    return fetch_page(query, limit, key=lambda event: event.seq)
