"""The audit log's exports (design.md, "Session logs"): one record per event with the
columns `seq,occurred_at,actor,action,target,department,client_ip,outcome,details,hash`,
as a CSV row or a JSON Lines line, and the JSON Lines file's closing chain head line.

A row is made from the event's hashed contents only and its chain hash, so the same event
always exports to the same bytes: `audit verify --export` renders each event again from
the database and compares the lines byte for byte.

- `occurred_at`: UTC, ISO 8601 with microseconds and a `Z` (`2026-12-01T09:30:00.000000Z`).
- `target`: `<type>:<id>` (`session_request:12`, `device:3`).
- `department`: the department's id (its name may change; the id is what is hashed).
- `details`: the event's details, a JSON object (its text as stored); in CSV that text.
- `hash`: the event's chain hash — HMAC-SHA256 under PORTAL_AUDIT_KEY over the previous
  chain hash and the event's leaf hash (portal.domain.audit) — which `audit verify` checks.
  It is null (an empty cell in CSV) for an event not yet sealed when the export read it:
  sealing runs within a second of the commit, so only the newest few events can be so.
- The last line of a JSON Lines export, `{"chain_head": {"seq": …, "hash": …}}`, is the
  whole chain's head (the last sealed event's seq and chain hash) when the export began;
  seq 0 with 64 zeros is the empty chain.
"""
from __future__ import annotations

import re
import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

COLUMNS = ("seq", "occurred_at", "actor", "action", "target", "department", "client_ip",
           "outcome", "details", "hash")

# Every action the portal records, for the audit log's "Action" field (a test checks the
# services record no other).
ACTIONS = (
    "approval.counted",
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
    "preapproval.granted", "preapproval.revoked",
    "prompt.shown",
    "request.cancelled", "request.cooldown_refused", "request.created", "request.decided",
    "request.escalated", "request.fallback_mailed",
    "request.number_mismatch", "request.reason_refused", "request.reported",
    "request.timed_out",
    "session.end_requested", "session.ended", "session.started",
    "settings.changed",
    "token.created", "token.revoked", "token.rotated",
    "user.created", "user.disabled", "user.enabled",
)

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"); a leading apostrophe makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportRow(NamedTuple):
    """One event as an export shows it (COLUMNS, in order). `details` is the details'
    JSON text as the database holds it; `hash` the chain hash, or None."""
    seq: int
    occurred_at: str
    actor: str
    action: str
    target: str
    department: int | None
    client_ip: str
    outcome: str
    details: str
    hash: str | None


def details_text(raw: str | None) -> str:
    """The details' JSON text on one line (the database's text, unless a line break
    crept into it)."""
    if raw is None:
        return "{}"
    if "\n" in raw or "\r" in raw:
        return json.dumps(json.loads(raw), ensure_ascii=True, separators=(",", ":"))
    return raw


_text = encode_basestring_ascii  # a JSON string literal, ASCII only (the C encoder)


def _one_line(details: str | None) -> str:
    """details_text, cheap for the usual text that needs nothing done."""
    if details and "\n" not in details and "\r" not in details:
        return details
    return details_text(details)


def _formula_safe(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def json_line(row: ExportRow) -> str:
    """The row as one JSON Lines line (with its newline): always the same bytes for the
    same event, so `audit verify --export` can compare lines."""
    department = "null" if row.department is None else int(row.department)
    digest = "null" if row.hash is None else _text(row.hash)
    return (f'{{"seq":{int(row.seq)},"occurred_at":{_text(row.occurred_at)},'
            f'"actor":{_text(row.actor)},"action":{_text(row.action)},'
            f'"target":{_text(row.target)},"department":{department},'
            f'"client_ip":{_text(row.client_ip)},"outcome":{_text(row.outcome)},'
            f'"details":{row.details},"hash":{digest}}}\n')


class _Encoded(dict):
    """Text -> its JSON string literal, encoded on first use (a hit costs a dict look-up)."""

    def __missing__(self, value: str) -> str:
        encoded = self[value] = _text(value)
        return encoded


class JsonLines:
    """json_line for a whole export, a batch of rows (ExportRow's fields) at a time: the
    same bytes, with the texts that repeat from row to row (actor, action, client IP,
    outcome) encoded once each."""

    MEMO = 10_000  # distinct texts kept; then it starts again (memory stays bounded)

    def __init__(self) -> None:
        self._memo = _Encoded()

    def lines(self, rows: Iterable[tuple]) -> str:
        memo = self._memo
        if len(memo) > self.MEMO:
            memo.clear()
        return "".join([
            f'{{"seq":{int(seq)},"occurred_at":{_text(at)},'
            f'"actor":{memo[actor]},"action":{memo[action]},'
            f'"target":{_text(target)},"department":'
            f'{"null" if department is None else int(department)},'
            f'"client_ip":{memo[client_ip]},"outcome":{memo[outcome]},'
            f'"details":{_one_line(details)},'
            f'"hash":{"null" if digest is None else _text(digest)}}}\n'
            for seq, at, actor, action, target, department, client_ip, outcome, details,
            digest in rows])


def head_line(seq: int, chain_hash: str) -> str:
    """The closing line of a JSON Lines export."""
    return json.dumps({"chain_head": {"seq": seq, "hash": chain_hash}},
                      separators=(",", ":")) + "\n"


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula, made text."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def csv_cells(row: ExportRow) -> tuple:
    """The row's CSV cells; every text one that could start like a formula made text
    (seq, occurred_at, department and hash are digits and hex by construction)."""
    seq, at, actor, action, target, department, client_ip, outcome, details, digest = row
    return (seq, at, neutralise(actor), neutralise(action), neutralise(target),
            "" if department is None else department, neutralise(client_ip),
            neutralise(outcome), neutralise(details), digest or "")


def csv_cell(cell: str) -> str:
    """One text cell as Python's csv module writes it (QUOTE_MINIMAL, the default
    dialect): quoted, with its quotes doubled, when it holds a comma, a quote or a line
    break; as it is otherwise."""
    if _CSV_SPECIAL.search(cell):
        return '"' + cell.replace('"', '""') + '"'
    return cell


_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def _details_cell(details: str | None) -> str:
    """The details cell. JSON text holding a quote starts with "{", "[" or a quote, never
    like a formula, and needs quoting: done at once; anything else the long way."""
    text = _one_line(details)
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return csv_cell(_formula_safe(text))


class _CsvCells(dict):
    """Cell -> its CSV text, made formula-safe, worked out on first use."""

    def __missing__(self, cell: str) -> str:
        safe = self[cell] = csv_cell(neutralise(cell))
        return safe


class CsvWriter:
    """CSV text a batch of records at a time: the bytes Python's csv module writes for
    csv_cells (RFC 4180 quoting, CRLF line ends), built as one string per row; the cells
    that repeat from row to row (actor, action, client IP, outcome) are encoded once."""

    MEMO = 10_000

    def __init__(self) -> None:
        self._memo = _CsvCells()

    def rows(self, rows: Iterable[tuple] = (), *, header: bool = False) -> str:
        memo = self._memo
        if len(memo) > self.MEMO:
            memo.clear()
        text = "".join([
            # occurred_at is the database's "YYYY-MM-DDTHH:MM:SS.ffffffZ": nothing to quote.
            f"{int(seq)},{at},{memo[actor]},{memo[action]},"
            f"{csv_cell(_formula_safe(target))},"
            f"{'' if department is None else int(department)},{memo[client_ip]},"
            f"{memo[outcome]},{_details_cell(details)},{digest or ''}\r\n"
            for seq, at, actor, action, target, department, client_ip, outcome, details,
            digest in rows])
        return (",".join(COLUMNS) + "\r\n" + text) if header else text
