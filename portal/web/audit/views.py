"""A department's audit log: filtered ("From", "To", "Action", "Person", "Device"), newest
first, a page at a time by seq, the filter in the URL; and its exports ("Export CSV",
"Export JSON Lines") of exactly what the filter shows, streamed. Read-only (GET only),
never cached, out of htmx's history. Readers: auditors, department admins, admins."""
from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, render_template, stream_with_context
from flask_login import login_required

from portal.domain.audit_export import ACTIONS, CsvWriter, JsonLines, head_line
from portal.domain.permissions import Action
from portal.services import audit_log
from portal.web.common import current_actor, department_or_403, page_before, query_id, utcnow
from portal.web.sessions.views import log_filter, uncached

bp = Blueprint("audit", __name__, url_prefix="/departments")

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8",
               "jsonl": "application/x-ndjson; charset=utf-8"}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl"}
CHUNK = 500  # rows written out at a time


def _filter():
    return log_filter(choices=ACTIONS, choice_key="action", choice_label="Action")


def _page(department, found, request_id, status=200):
    before = page_before()
    page = audit_log.list_audit_events(
        department_id=department.id, log_filter=found, before=before,
        request_id=request_id, limit=current_app.config["PAGE_SIZE"] * 2)
    export_args = audit_log.filter_record(found, request_id)
    return uncached(render_template(
        "audit/index.html", department=department, log_filter=found, actions=ACTIONS,
        filter_args=found.query_args(), export_args=export_args, events=page.items,
        next_before=page.next_after, before=before, request_id=request_id), status)


@bp.get("/<int:department_id>/audit")
@login_required
def index(department_id: int):
    """`?request=<id>` reads back one session request's whole story."""
    department = department_or_403(department_id, Action.VIEW)
    found = _filter()
    return _page(department, found, query_id("request"), 422 if found.errors else 200)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "department"


@bp.get("/<int:department_id>/audit/export.<any(csv, jsonl):export_format>")
@login_required
def export(department_id: int, export_format: str):
    """The events the filter shows, every page, newest first. The `audit.exported` event
    (naming the filter) is committed before the first byte goes out."""
    department = department_or_403(department_id, Action.VIEW)
    found, request_id = _filter(), query_id("request")
    if found.errors:  # the page, with the messages next to their fields; no export
        return _page(department, found, request_id, 422)
    now = utcnow()
    start = audit_log.begin_export(department=department, log_filter=found,
                                   request_id=request_id, export_format=export_format,
                                   actor=current_actor(), now=now)
    batches = audit_log.export_batches(department_id=department.id, log_filter=found,
                                       request_id=request_id, through_seq=start.through_seq)

    def chunks():
        """The export's rows, CHUNK at a time."""
        for rows in batches:
            for at in range(0, len(rows), CHUNK):
                yield rows[at:at + CHUNK]

    def csv_body():
        writer = CsvWriter()
        yield writer.rows(header=True)
        for rows in chunks():
            yield writer.rows(rows)

    def jsonl_body():
        writer = JsonLines()
        for rows in chunks():
            yield writer.lines(rows)
        yield head_line(start.head.seq, start.head.hash)

    body = csv_body() if export_format == "csv" else jsonl_body()
    filename = (f"audit-{_slug(department.name)}-{now:%Y%m%dT%H%M%SZ}"
                f".{EXTENSIONS[export_format]}")
    response = Response(stream_with_context(body), content_type=MEDIA_TYPES[export_format])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
