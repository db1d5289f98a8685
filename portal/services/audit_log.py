"""A department's audit log as auditors browse and export it: filtered (the session logs'
filter, portal.domain.log_filters, with "Action"), newest first, a page at a time by seq;
and exports of exactly what a filter shows, read in seq-ordered batches so memory stays
constant however long the log (portal.domain.audit_export gives the format).

Who reads it: auditors, department admins and admins (Action.VIEW)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import String, Text, cast, func, literal_column, or_, select, type_coerce

from portal.domain.audit import Head
from portal.domain.audit_export import ACTIONS, ExportRow, details_text
from portal.domain.log_filters import LogFilter, parse_log_filter
from portal.extensions import db
from portal.models import AuditEvent, Department
from portal.services import audit
from portal.services.actors import Actor
from portal.services.pages import Page, fetch_page
from portal.services.session_logs import date_conditions

EXPORT_BATCH = 5000
FORMATS = {"csv": "CSV", "jsonl": "JSON Lines"}
REQUEST_KEY = "request"  # ?request=<id>: one session request's whole story


def audit_filter(args: Mapping[str, str]) -> LogFilter:
    """The audit log's filter in a request's query arguments (or an export's record)."""
    return parse_log_filter(args, choices=ACTIONS, choice_key="action",
                            choice_label="Action")


def conditions(department_id: int, log_filter: LogFilter,
               request_id: int | None = None) -> list:
    """What the filter lets through, as WHERE conditions on audit_events. Only the
    event's own columns: the same filter selects the same events whenever it runs (so
    `audit verify --export` can run an export's filter again)."""
    where = [AuditEvent.department_id == department_id,
             *date_conditions(AuditEvent.occurred_at, log_filter)]
    if log_filter.choice:
        where.append(AuditEvent.action == log_filter.choice)
    if log_filter.person:  # the actor: an email (stored lower case) or "device:…", "cli"
        where.append(AuditEvent.actor.in_({log_filter.person, log_filter.person.lower()}))
    if log_filter.device:  # the device the event is about (services/audit.device_of)
        where.append(AuditEvent.device == log_filter.device.lower())
    if request_id is not None:
        where += [AuditEvent.target_type == "session_request",
                  AuditEvent.target_id == str(request_id)]
    return where


def _newest_seqs(where: list, below: int | None, limit: int, *, by_date: bool = False):
    """The seqs of the page: newest first, below `below`. Only seqs are sorted (the
    indexes hold them), then the page's rows are read by key.

    `by_date`: sort the seqs the date index finds (`seq + 0` is no column the primary key
    could order) instead of walking the primary key down from the newest event, which
    for a date range in the past passes every event after it first. A planner that
    assumes matches spread evenly (PostgreSQL's) would take that walk for a LIMIT."""
    query = select(AuditEvent.seq).where(*where)
    if below:
        query = query.where(AuditEvent.seq < below)
    order = (AuditEvent.seq + literal_column("0")) if by_date else AuditEvent.seq
    return query.order_by(order.desc()).limit(limit)


def list_audit_events(*, department_id: int, log_filter: LogFilter, before: int | None,
                      limit: int, request_id: int | None = None) -> Page:
    """Newest first; next_after is the seq the next page continues before."""
    where = conditions(department_id, log_filter, request_id)
    if log_filter.date_from is not None or log_filter.date_to is not None:
        return _newest_in_range(where, before, limit)
    seqs = _newest_seqs(where, before, limit + 1)
    query = (select(AuditEvent).where(AuditEvent.seq.in_(seqs))
             .order_by(AuditEvent.seq.desc()))
    return fetch_page(query, limit, key=lambda event: event.seq)


def _newest_in_range(where: list, before: int | None, limit: int) -> Page:
    """A date range, newest first by time (then seq): the department's date index read
    in its own order, one page of it — ordering by seq would sort every seq of the range
    first. The page key is still the seq: the next page continues below that event's
    (time, seq), looked up by its primary key."""
    where = list(where)
    if before:
        at = db.session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.seq == before))
        if at is None:  # not an event (a hand-made URL): continue below the seq
            where.append(AuditEvent.seq < before)
        else:
            where += [AuditEvent.occurred_at <= at,
                      or_(AuditEvent.occurred_at < at, AuditEvent.seq < before)]
    query = (select(AuditEvent).where(*where)
             .order_by(AuditEvent.occurred_at.desc(), AuditEvent.seq.desc()))
    return fetch_page(query, limit, key=lambda event: event.seq)


# --- exports -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportStart:
    head: Head               # the whole chain's head when the export began
    through_seq: int         # the newest event the export may hold (its own is after)
    filter_args: dict[str, str]


def filter_record(log_filter: LogFilter, request_id: int | None) -> dict[str, str]:
    """The filter as the export's audit event names it (query arguments)."""
    args = log_filter.query_args()
    if request_id is not None:
        args[REQUEST_KEY] = str(request_id)
    return args


def begin_export(*, department: Department, log_filter: LogFilter, request_id: int | None,
                 export_format: str, actor: Actor, now: datetime) -> ExportStart:
    """Read the chain's head and the newest seq, then record `audit.exported` (naming the
    filter, the format and that head) in the department's log. The export holds the
    events the filter selects up to that seq, so it is the same whenever it is read."""
    head = audit.read_head() or Head(0, 0, audit.chain.GENESIS_HASH)
    through_seq = db.session.scalar(select(func.max(AuditEvent.seq))) or 0
    args = filter_record(log_filter, request_id)
    audit.record_event(
        actor=actor, action="audit.exported", target_type="department",
        target_id=department.id, department_id=department.id, now=now,
        details={"format": export_format, "filter": args, "through_seq": through_seq,
                 "chain_head": {"seq": head.seq, "hash": head.hash}})
    return ExportStart(head, through_seq, args)


class ExportedEvent(NamedTuple):
    chain_index: int | None  # None while not sealed
    row: ExportRow


def _exported_columns(*, chain_index: bool):
    """An ExportRow's columns (occurred_at and target as the export writes them, built by
    the database), then (given `chain_index`) the chain index."""
    columns = (AuditEvent.seq, _occurred_at_text(), AuditEvent.actor, AuditEvent.action,
               (AuditEvent.target_type + ":" + AuditEvent.target_id).label("target"),
               AuditEvent.department_id, AuditEvent.client_ip, AuditEvent.outcome,
               cast(AuditEvent.details, Text).label("details"),  # as stored: not parsed
               AuditEvent.chain_hash)
    return (*columns, AuditEvent.chain_index) if chain_index else columns


def _occurred_at_text():
    """occurred_at as the export writes it, formatted by the database: parsing a
    datetime per row would cost more than all the rest of the export."""
    if db.engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", AuditEvent.occurred_at),
                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLite holds naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff".
    return func.replace(type_coerce(AuditEvent.occurred_at, String), " ", "T") + "Z"


def _export_batch(where: list, columns, below: int, batch_size: int):
    """The next `batch_size` events the filter selects below seq `below`, newest first,
    in one statement: the batch's lowest seq from the index (a scalar subquery), then
    the rows of the seq range [lowest, below) that the filter selects, read in key order.
    (`seq IN (the batch's seqs)` makes PostgreSQL hash-join the whole table per batch.)"""
    newest = _newest_seqs(where, below, batch_size).subquery()
    lowest = select(func.min(newest.c.seq)).scalar_subquery()
    return (select(*columns).where(*where, AuditEvent.seq < below, AuditEvent.seq >= lowest)
            .order_by(AuditEvent.seq.desc()))


def _export_rows(department_id: int, log_filter: LogFilter, request_id: int | None,
                 through_seq: int, batch_size: int, *, chain_index: bool = False
                 ) -> Iterator[list[tuple]]:
    """Every event the filter selects with seq <= through_seq, newest first, as lists of
    `batch_size` database rows (_exported_columns) read by seq (no offset, nothing kept
    between batches)."""
    where = conditions(department_id, log_filter, request_id)
    columns = _exported_columns(chain_index=chain_index)
    connection = db.session.connection()  # Core rows: no ORM layer per row
    below = through_seq + 1
    while True:
        result = connection.execute(_export_batch(where, columns, below, batch_size))
        try:  # the driver's plain tuples: no column needs converting, and a Row per event
            rows = result.cursor.fetchall()  # costs about as much as writing its line
        finally:
            result.close()
        if rows:
            yield rows
        if len(rows) < batch_size:
            return
        below = rows[-1][0]


def export_batches(*, department_id: int, log_filter: LogFilter, request_id: int | None,
                   through_seq: int, batch_size: int = EXPORT_BATCH) -> Iterator[list[tuple]]:
    """The export's rows, newest first, a batch at a time: ExportRow's fields as plain
    tuples, `details` as stored (JsonLines and CsvWriter put it on one line). The per-row
    cost is what bounds an export, so nothing is built per row here."""
    return _export_rows(department_id, log_filter, request_id, through_seq, batch_size)


def exported_events(*, department_id: int, log_filter: LogFilter, request_id: int | None,
                    through_seq: int, batch_size: int = EXPORT_BATCH
                    ) -> Iterator[ExportedEvent]:
    """The export's events one by one, each with its chain index (`audit verify`)."""
    for rows in _export_rows(department_id, log_filter, request_id, through_seq, batch_size,
                             chain_index=True):
        for (seq, at, actor, action, target, department, client_ip, outcome, details,
             digest, index) in rows:
            yield ExportedEvent(index, ExportRow(
                seq, at, actor, action, target, department, client_ip, outcome,
                details_text(details), digest))
