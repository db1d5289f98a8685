"""`flask --app portal audit verify --export FILE`: an exported JSON Lines file checked
against the chain in the database.

1. Every line is JSON: event objects, then the closing `{"chain_head": {"seq", "hash"}}`.
2. The chain head is a point of the current chain: the event with that seq is sealed with
   that chain hash (a head the database does not hold is a truncation), and the whole
   chain verifies up to its head and through that point (services.audit.verify_trail,
   given the head as a checkpoint).
3. The export was made here: an `audit.exported` event with that chain head names its
   department, filter and newest seq. Running that filter again gives, in order, exactly
   the file's events, and each line is byte for byte what its event exports to (its
   fields and its sealed hash; portal.domain.audit_export). So one changed byte anywhere,
   a deleted, added or moved line, is found and named by line and seq.

An event exported before it was sealed has a null hash; it is accepted only if it is still
unsealed or was sealed after the export's chain head, and its fields are checked against
the database (which the chain covers once it is sealed). The export is bound by its chain
head: an event the filter now finds that the file lacks is a deleted line if it was sealed
at or before that head, and otherwise one that committed after the export read past its
seq (PostgreSQL hands out seqs before commit), which the summary counts."""
from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select

from portal.domain.audit import GENESIS_HASH, Checkpoint
from portal.domain.audit_export import COLUMNS, json_line
from portal.extensions import db
from portal.models import AuditEvent
from portal.services import audit
from portal.services.audit_log import REQUEST_KEY, audit_filter, exported_events

Lines = Callable[[], Iterable[bytes]]  # opens the file again for each pass


class ExportRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ExportCheck:
    events: int
    unsealed: int
    head_seq: int
    committed_later: int = 0

    def summary(self) -> str:
        unsealed = (f"; {self.unsealed} of them exported before sealing, checked against "
                    "the database" if self.unsealed else "")
        later = (f" {self.committed_later} event(s) the filter now finds were sealed after "
                 "the export's chain head (committed after the export read past them)."
                 if self.committed_later else "")
        return (f"Export intact: {self.events} event(s) match the audit trail{unsealed}, "
                f"and its chain head (event #{self.head_seq}) is part of the chain.{later}")


def _text_lines(lines: Lines) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines(), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ExportRejected(f"line {number} is not UTF-8 text: not a JSON Lines "
                                 "export") from None
        yield number, text[:-1] if text.endswith("\n") else text


def _scan(lines: Lines) -> tuple[int, int, str, int]:
    """Pass 1: (the chain head's line, its seq, its hash, the number of events)."""
    head: tuple[int, int, str] | None = None
    events = 0
    for number, text in _text_lines(lines):
        if head is not None:
            raise ExportRejected(f"line {number}: nothing may follow the chain head "
                                 f"(line {head[0]})")
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise ExportRejected(f"line {number} is not JSON ({exc.args[0].split(':')[0]}): "
                                 "not a JSON Lines export") from None
        if isinstance(item, dict) and set(item) == {"chain_head"}:
            point = item["chain_head"]
            if not (isinstance(point, dict) and set(point) == {"seq", "hash"}
                    and type(point["seq"]) is int and isinstance(point["hash"], str)):
                raise ExportRejected(f"line {number} (chain head): must be "
                                     '{"chain_head": {"seq": <number>, "hash": "<hex>"}}')
            head = (number, point["seq"], point["hash"])
        elif isinstance(item, dict) and set(item) == set(COLUMNS) and type(item["seq"]) is int:
            events += 1
        else:
            raise ExportRejected(f"line {number} is not an exported event (the keys "
                                 f"{','.join(COLUMNS)}) nor the chain head")
    if head is None:
        raise ExportRejected("the file ends without its chain head line: it is cut short, "
                             "or not a JSON Lines export" if events else
                             "the file is empty: not a JSON Lines export")
    return head[0], head[1], head[2], events


def _head_position(number: int, seq: int, digest: str) -> int:
    """The chain position of the export's head, after checking the chain reaches it."""
    if seq == 0:
        if digest != GENESIS_HASH:
            raise ExportRejected(f"line {number} (chain head): the empty chain's hash is "
                                 "64 zeros")
        return 0
    row = db.session.execute(select(AuditEvent.chain_index, AuditEvent.chain_hash)
                             .where(AuditEvent.seq == seq)).first()
    if row is None or row.chain_index is None:
        raise ExportRejected(f"line {number} (chain head): the chain in the database holds "
                             f"no sealed event #{seq}: it was truncated, or the line changed")
    if not hmac.compare_digest(row.chain_hash, digest):
        raise ExportRejected(f"line {number} (chain head): its hash is not the chain hash "
                             f"of event #{seq}")
    return row.chain_index


def _recorded_exports(seq: int, digest: str) -> list[AuditEvent]:
    found = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.exported")
                               .order_by(AuditEvent.seq.desc()))
    return [event for event in found if event.details.get("format") == "jsonl"
            and event.details.get("chain_head") == {"seq": seq, "hash": digest}]


def _compare(lines: Lines, export: AuditEvent, head_index: int, head_line: int
             ) -> tuple[int, int]:
    """Pass 2: the file's events against the recorded export's filter run again; the
    number exported unsealed, and the number the filter now finds that the file lacks but
    that were sealed after its chain head (or not yet): on PostgreSQL a transaction can
    commit an event with a lower seq after the export read past that seq, so the export
    is bound by its chain head, and only an event sealed at or before the head must be
    in it."""
    args = export.details.get("filter") or {}
    request_id = args.get(REQUEST_KEY)
    expected = exported_events(
        department_id=export.department_id, log_filter=audit_filter(args),
        request_id=int(request_id) if request_id else None,
        through_seq=int(export.details.get("through_seq", 0)))
    unsealed = late = 0

    def after_the_head(want) -> bool:
        return want.chain_index is None or want.chain_index > head_index

    for number, text in _text_lines(lines):
        if number == head_line:
            break
        item = json.loads(text)
        seq = item["seq"]
        want = next(expected, None)
        while want is not None and seq < want.row.seq and after_the_head(want):
            late += 1  # committed after the export read past its seq
            want = next(expected, None)
        if want is None or seq > want.row.seq:
            raise ExportRejected(f"line {number} (event #{seq}): the export's filter does "
                                 "not put it here (an added or moved line)")
        if seq < want.row.seq:
            raise ExportRejected(f"line {number} (event #{seq}): event #{want.row.seq} is "
                                 "missing before it (a deleted or moved line)")
        row = want.row
        if item["hash"] is None and (want.chain_index is None
                                     or want.chain_index > head_index):
            row = row._replace(hash=None)  # not sealed yet when it was exported
        if row.hash is None:
            unsealed += 1
        if text != json_line(row)[:-1]:
            if item["hash"] != row.hash:
                raise ExportRejected(f"line {number} (event #{seq}): its hash is not "
                                     f"event #{seq}'s sealed hash")
            raise ExportRejected(f"line {number} (event #{seq}): it differs from event "
                                 f"#{seq} in the audit trail (edited)")
    for left in expected:
        if not after_the_head(left):
            raise ExportRejected(f"event #{left.row.seq} is missing before the chain head "
                                 f"(line {head_line}): a deleted line")
        late += 1
    return unsealed, late


def check_export(lines: Lines) -> ExportCheck:
    """ExportRejected (its message names the first bad line) unless the file holds."""
    head_line, seq, digest, events = _scan(lines)
    head_index = _head_position(head_line, seq, digest)
    checkpoint = Checkpoint(seq, head_index, digest, "export") if seq else None
    verification = audit.verify_trail(checkpoint=checkpoint)
    if verification.broken is not None:
        raise ExportRejected("the audit trail in the database is itself broken at "
                             f"{verification.broken.describe()}")
    exports = _recorded_exports(seq, digest)
    if not exports:
        raise ExportRejected(f"line {head_line} (chain head): no JSON Lines export with "
                             "this chain head is recorded in the audit log (audit.exported)")
    first_problem = None
    for export in exports:
        try:
            unsealed, late = _compare(lines, export, head_index, head_line)
        except ExportRejected as exc:
            first_problem = first_problem or exc
            continue
        return ExportCheck(events, unsealed, seq, late)
    raise first_problem
