"""The audit trail's hash chain: each event's hash covers its fields and the previous hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64

# Keys whose values must never be written to an event, whatever the caller passes:
# these names, and any key containing one of the SECRET_WORDS ("new_password",
# "session_token", "api_secret", ...).
SECRET_KEYS = frozenset({"password", "token", "otp", "code", "secret", "password_hash"})
SECRET_WORDS = ("password", "token", "secret", "otp")


def is_secret_key(key: str) -> bool:
    key = key.lower()
    return key in SECRET_KEYS or any(word in key for word in SECRET_WORDS)


@dataclass(frozen=True)
class EventFields:
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    department_id: int | None
    client_ip: str
    outcome: str
    details: dict[str, Any]


def scrub(details: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking keys (recursively, lists included) so no secret lands in the
    trail."""
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if is_secret_key(key):
            continue
        clean[key] = _scrub_value(value)
    return clean


def _scrub_value(value: Any) -> Any:
    if isinstance(value, dict):
        return scrub(value)
    if isinstance(value, (list, tuple)):
        return [_scrub_value(item) for item in value]
    return value


def canonical(fields: EventFields) -> str:
    return json.dumps(
        {
            "seq": fields.seq,
            "occurred_at": fields.occurred_at.isoformat(timespec="microseconds"),
            "actor": fields.actor,
            "action": fields.action,
            "target_type": fields.target_type,
            "target_id": fields.target_id,
            "department_id": fields.department_id,
            "client_ip": fields.client_ip,
            "outcome": fields.outcome,
            "details": fields.details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    )


def chain_hash(prev_hash: str, fields: EventFields) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(fields)).encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify_chain(events) -> ChainBreak | None:
    """events: iterable of (EventFields, prev_hash, hash) in seq order from 1.

    Returns the first event that does not fit, or None for an intact chain.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for fields, prev_hash, stored_hash in events:
        if fields.seq != expected_seq:
            return ChainBreak(fields.seq, f"expected event #{expected_seq}, found #{fields.seq}")
        if prev_hash != expected_prev:
            return ChainBreak(fields.seq, "previous-hash link does not match the event before")
        if chain_hash(prev_hash, fields) != stored_hash:
            return ChainBreak(fields.seq, "contents do not match the stored hash")
        expected_prev = stored_hash
        expected_seq += 1
    return None
