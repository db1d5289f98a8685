"""The audit trail's proof: keyed leaf hashes, a chain over them, its head and checkpoints.

Writers only insert events (each gets its `seq` from the database); a sealing step later
gives each committed event, in `seq` order, the next `chain_index` (1, 2, 3, ...) and two
hashes, both HMAC-SHA256 under PORTAL_AUDIT_KEY, which is never in the database:

    leaf  = HMAC(key, 0x00 || canonical(event))              RFC 6962 leaf hashing
    chain = HMAC(key, 0x01 || previous chain || leaf)        the chain's running hash

The leaf is what a Merkle tree (RFC 6962) would be built from, with node hashes
HMAC(key, 0x01 || left || right); so moving from the chain to a tree adds nodes, not a
rewrite of any event. Without the key nobody can recompute a hash: an edit, a deletion or
a reordering anywhere shows as the first event that does not fit, and the head (last
index, its event's seq and its chain hash) must match the last event. A truncation that
also rewinds the head is found against a checkpoint line kept outside the database.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime
from typing import Any, Iterable

GENESIS_HASH = "0" * 64
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

# Keys whose values must never be written to an event, whatever the caller passes:
# these names, and any key containing one of the SECRET_WORDS ("new_password",
# "session_token", "api_secret", ...).
SECRET_KEYS = frozenset({"password", "token", "otp", "code", "secret", "password_hash"})
SECRET_WORDS = ("password", "token", "secret", "otp")


@lru_cache(maxsize=4096)  # a handful of distinct keys, checked for every event
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


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def leaf_hash(key: bytes, fields: EventFields) -> str:
    return _mac(key, LEAF_PREFIX + canonical(fields).encode())


def chain_hash(key: bytes, previous: str, leaf: str) -> str:
    return _mac(key, NODE_PREFIX + bytes.fromhex(previous) + bytes.fromhex(leaf))


@dataclass(frozen=True)
class Seal:
    """What the sealing step writes onto one event."""
    seq: int
    chain_index: int
    leaf_hash: str
    chain_hash: str


def seal(key: bytes, previous_index: int, previous_hash: str,
         events: Iterable[EventFields]) -> list[Seal]:
    """Chain `events` (already in seq order) after the head (previous_index, previous_hash)."""
    seals = []
    index, running = previous_index, previous_hash
    for fields in events:
        index += 1
        leaf = leaf_hash(key, fields)
        running = chain_hash(key, running, leaf)
        seals.append(Seal(fields.seq, index, leaf, running))
    return seals


@dataclass(frozen=True)
class Head:
    chain_index: int
    seq: int
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    seq: int | None
    reason: str
    chain_index: int | None = None

    def describe(self) -> str:
        where = f"event #{self.seq}" if self.seq is not None else "the chain head"
        if self.chain_index is not None:
            where += f" (chain position {self.chain_index})"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class SealedEvent:
    fields: EventFields
    chain_index: int
    leaf_hash: str
    chain_hash: str


class ChainChecker:
    """Feed sealed events in chain_index order; the first one that does not fit is the
    break. Then `finish(head)` checks the head against the last event."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.checked = 0
        self.last: SealedEvent | None = None
        self.break_: ChainBreak | None = None
        self.seen_at: dict[int, str] = {}

    def _expected(self) -> tuple[int, str]:
        if self.last is None:
            return 1, GENESIS_HASH
        return self.last.chain_index + 1, self.last.chain_hash

    def add(self, event: SealedEvent) -> ChainBreak | None:
        if self.break_ is not None:
            return self.break_
        index, previous = self._expected()
        seq = event.fields.seq
        if event.chain_index != index:
            missing = f"position {index}" if event.chain_index > index else "a repeated position"
            return self._broken(seq, event.chain_index, f"the chain skips {missing}: an event "
                                "was deleted or moved")
        if not hmac.compare_digest(leaf_hash(self.key, event.fields), event.leaf_hash):
            return self._broken(seq, index, "its contents do not match its hash (edited)")
        if not hmac.compare_digest(chain_hash(self.key, previous, event.leaf_hash),
                                   event.chain_hash):
            return self._broken(seq, index, "it does not follow the event before it "
                                "(reordered, or one before it was removed)")
        self.checked += 1
        self.last = event
        return None

    def _broken(self, seq: int | None, index: int | None, reason: str) -> ChainBreak:
        self.break_ = ChainBreak(seq, reason, index)
        return self.break_

    def finish(self, head: Head | None) -> ChainBreak | None:
        if self.break_ is not None:
            return self.break_
        if self.last is None:
            if head is not None and head.chain_index != 0:
                return self._broken(None, head.chain_index,
                                    f"the head says {head.chain_index} sealed events, none found")
            return None
        if head is None:
            return self._broken(None, None, "the chain head is missing")
        last = self.last
        if (head.chain_index, head.seq) != (last.chain_index, last.fields.seq):
            return self._broken(
                None, head.chain_index,
                f"the head names event #{head.seq} at position {head.chain_index}, but the "
                f"chain ends with event #{last.fields.seq} at position {last.chain_index}")
        if not hmac.compare_digest(head.hash, last.chain_hash):
            return self._broken(None, head.chain_index,
                                "the head's hash does not match the last event's")
        return None


# --- checkpoints: one line to keep outside the database --------------------------------

CHECKPOINT_PATTERN = re.compile(
    r"^session-gate-audit-checkpoint seq=(?P<seq>\d+) position=(?P<index>\d+) "
    r"hash=(?P<hash>[0-9a-f]{64}) at=(?P<at>\S+)$")


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    chain_index: int
    hash: str
    at: str

    def line(self) -> str:
        return (f"session-gate-audit-checkpoint seq={self.seq} position={self.chain_index} "
                f"hash={self.hash} at={self.at}")


def parse_checkpoint(line: str) -> Checkpoint | None:
    found = CHECKPOINT_PATTERN.match(line.strip())
    if found is None:
        return None
    return Checkpoint(int(found["seq"]), int(found["index"]), found["hash"], found["at"])


def check_against_checkpoint(checkpoint: Checkpoint, at_position: SealedEvent | None,
                             head: Head | None) -> ChainBreak | None:
    """The event now at the checkpoint's position must be the same one with the same hash,
    and the chain must not have become shorter."""
    length = head.chain_index if head else 0
    if at_position is None or length < checkpoint.chain_index:
        return ChainBreak(checkpoint.seq, f"truncated: the checkpoint names position "
                          f"{checkpoint.chain_index}, the chain now ends at position {length}",
                          checkpoint.chain_index)
    if (at_position.fields.seq != checkpoint.seq
            or not hmac.compare_digest(at_position.chain_hash, checkpoint.hash)):
        return ChainBreak(at_position.fields.seq, "rewritten since the checkpoint: position "
                          f"{checkpoint.chain_index} no longer holds event #{checkpoint.seq} "
                          "with the checkpoint's hash", checkpoint.chain_index)
    return None
