"""The audit log's exports (design.md, "Session logs"): one record per event with the
columns `seq,occurred_at,actor,action,target,department,client_ip,outcome,details,hash`,
as a CSV row or a JSON Lines line, and the JSON Lines file's closing chain head line.

A record is made from the event's hashed contents only (portal.domain.audit.EventFields)
and its chain hash, so the same event always exports to the same bytes: `audit verify
--export` renders each event again from the database and compares the lines byte for byte.

- `occurred_at`: UTC, ISO 8601 with microseconds and a `Z` (`2026-12-01T09:30:00.000000Z`).
- `target`: `<type>:<id>` (`session_request:12`, `device:3`).
- `department`: the department's id (its name may change; the id is what is hashed).
- `details`: the event's details as a JSON object (keys sorted); in CSV its JSON text.
- `hash`: the event's chain hash — HMAC-SHA256 under PORTAL_AUDIT_KEY over the previous
  chain hash and the event's leaf hash (portal.domain.audit) — which `audit verify` checks.
  It is null (an empty cell in CSV) for an event not yet sealed when the export read it:
  sealing runs within a second of the commit, so only the newest few events can be so.
- The last line of a JSON Lines export, `{"chain_head": {"seq": …, "hash": …}}`, is the
  whole chain's head (the last sealed event's seq and chain hash) when the export began;
  seq 0 with 64 zeros is the empty chain.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import timezone
from typing import Any

from portal.domain.audit import EventFields

COLUMNS = ("seq", "occurred_at", "actor", "action", "target", "department", "client_ip",
           "outcome", "details", "hash")

# Every action the portal records, for the audit log's "Action" field (a test checks the
# services record no other).
ACTIONS = (
    "audit.exported",
    "auth.login", "auth.sign_in", "auth.sign_out",
    "client_session.ended", "client_session.started",
    "department.created", "department.renamed",
    "device.created", "device.deleted", "device.state_changed", "device.updated",
    "email.failed", "email.queued", "email.sent",
    "exclusion.added", "exclusion.removed",
    "group.created", "group.deleted", "group.renamed",
    "link.opened",
    "member.added", "member.removed",
    "otp.access_requested", "otp.approved", "otp.denied", "otp.failed", "otp.generated",
    "otp.internal_login", "otp.locked", "otp.requested", "otp.sent", "otp.timed_out",
    "otp.verified",
    "prompt.shown",
    "request.cancelled", "request.created", "request.decided", "request.timed_out",
    "session.ended", "session.started",
    "settings.changed",
    "token.created", "token.revoked", "token.rotated",
    "user.created", "user.disabled", "user.enabled",
)

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"); a leading apostrophe makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def timestamp(at) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_record(fields: EventFields, chain_hash: str | None) -> dict[str, Any]:
    """One event as an export shows it, keys in COLUMNS order."""
    return {
        "seq": fields.seq,
        "occurred_at": timestamp(fields.occurred_at),
        "actor": fields.actor,
        "action": fields.action,
        "target": f"{fields.target_type}:{fields.target_id}",
        "department": fields.department_id,
        "client_ip": fields.client_ip,
        "outcome": fields.outcome,
        "details": _sorted(fields.details or {}),
        "hash": chain_hash,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)


def json_line(record: dict[str, Any]) -> str:
    """The record as one JSON Lines line (with its newline); always the same bytes."""
    return _dumps(record) + "\n"


def head_record(seq: int, chain_hash: str) -> dict[str, Any]:
    return {"chain_head": {"seq": seq, "hash": chain_hash}}


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula, made text."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def csv_cells(record: dict[str, Any]) -> list[str]:
    cells = []
    for column in COLUMNS:
        value = record[column]
        if value is None:
            text = ""
        elif column == "details":
            text = _dumps(value)
        else:
            text = str(value)
        cells.append(neutralise(text))
    return cells


class CsvWriter:
    """CSV text a batch of records at a time (RFC 4180 quoting, CRLF line ends)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def rows(self, records: Iterable[dict[str, Any]] | None = None, *,
             header: bool = False) -> str:
        if header:
            self._writer.writerow(COLUMNS)
        for record in records or ():
            self._writer.writerow(csv_cells(record))
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text
