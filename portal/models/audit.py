"""Append-only, hash-chained audit events."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Identity, Index, Integer, String, event, text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.types import UTCDateTime

DEVICE_LENGTH = 254


class AuditEvent(db.Model):
    """Writers insert, with `seq` from the database and no shared lock; the sealing step
    (services/audit.seal_pending) later writes the three chain columns once. Nothing
    else ever changes a row."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # A department's log, newest first, a page at a time; one request's story.
        Index("ix_audit_events_department_id_seq", "department_id", "seq"),
        Index("ix_audit_events_target", "target_type", "target_id"),
        # The audit log's "Action", "Person" and "From"/"To" filters (newest first by seq,
        # a page at a time; the seq in the date index spares a read of each row).
        Index("ix_audit_events_department_id_action_seq", "department_id", "action", "seq"),
        Index("ix_audit_events_department_id_actor_seq", "department_id", "actor", "seq"),
        Index("ix_audit_events_department_id_occurred_at_seq", "department_id",
              "occurred_at", "seq"),
        # The "Device" filter: a department's events about one device, newest first.
        Index("ix_audit_events_department_id_device_seq", "department_id", "device", "seq"),
        # What the sealer has left to do: a handful of rows, however long the trail.
        Index("ix_audit_events_unsealed", "seq", sqlite_where=text("chain_index IS NULL"),
              postgresql_where=text("chain_index IS NULL")),
    )

    seq: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(300))
    # Plain ids, no foreign keys: deleting a user or department must never rewrite a row
    # of the trail (the department id is part of the hashed contents).
    actor_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    department_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_ip: Mapped[str] = mapped_column(String(45), default="")
    outcome: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The device the event is about, lower case (services/audit.device_of), for the
    # "Device" filter. Derived from the contents above, so not hashed: the chain covers
    # only what portal.domain.audit.EventFields names.
    device: Mapped[str | None] = mapped_column(String(DEVICE_LENGTH), nullable=True)
    # Set once by the sealer: the event's place in the chain and its two HMACs.
    chain_index: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    leaf_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chain_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    @property
    def is_sealed(self) -> bool:
        return self.chain_index is not None


class AuditHead(db.Model):
    """One row, written by the sealer only (writers never touch it): the chain's last
    position, that event's seq and its chain hash. The sealer's first statement updates it,
    which makes two sealers take turns (row lock on PostgreSQL, write lock on SQLite)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    chain_index: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    chain_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_change(mapper, connection, target) -> None:  # pragma: no cover - guard
    raise PermissionError("audit events are append-only")
