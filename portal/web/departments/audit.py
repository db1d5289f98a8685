"""A department's audit log for auditors and admins: read-only, newest first, a page at a
time by key; `?request=<id>` reads back one request's whole story."""
from __future__ import annotations

from flask import current_app, make_response, render_template

from portal.services import audit, authz
from portal.web.common import department_or_403, page_before, query_id
from portal.web.departments.views import bp


@bp.get("/<int:department_id>/audit")
def audit_log(department_id: int):
    department = department_or_403(department_id, authz.VIEW)
    before = page_before()
    request_id = query_id("request")
    page = audit.list_events(department_id=department.id, before=before,
                             request_id=request_id, limit=current_app.config["PAGE_SIZE"] * 2)
    response = make_response(render_template(
        "departments/audit.html", department=department, events=page.items,
        next_before=page.next_after, before=before, request_id=request_id))
    response.headers["Cache-Control"] = "no-store"
    return response
