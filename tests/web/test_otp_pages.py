"""One-time passwords on the pages: the approval page of an OTP access request, the
pending list next to session requests, and "Generate one-time password" on a device's
page (design.md "One-time passwords")."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import func, select

from portal.extensions import db
from portal.jobs import expire_overdue
from portal.models import AuditEvent, OneTimePassword, OtpAccessRequest, OutboxMessage
from portal.services import devices
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
APPROVER = "approver@example.com"
LINK = re.compile(r"Check Request: http://portal\.test(/approvals/\S+)")
HTMX = {"HX-Request": "true"}


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(APPROVER, "approver", department)
    make.user("second@example.com", "approver", department)
    make.user("tech@example.com", "technician", department)
    make.user("auditor@example.com", "auditor", department)
    make.user("elsewhere@example.com", "approver", make.department("Sales"))
    device, department.device_token = devices.create_device(
        department=department, name=DEVICE, actor=CLI, now=NOW)
    department.device_id = device.id
    make.allow_otp(department)
    return department


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def ask(client, qa, **body):
    response = client.post("/api/v1/agent/otp/request",
                           json={"username": "jsmith", "email": "j.smith@example.com",
                                 **body}, headers=bearer(qa.device_token))
    assert response.status_code == 202, response.get_data()
    return response.get_json()["request_id"]


def links():
    return [LINK.search(m.body_text).group(1) for m in db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.otp_request_id.is_not(None))
        .order_by(OutboxMessage.id))]


def signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": PASSWORD}
                       ).status_code == 303
    return client


def text(response):
    return response.get_data(as_text=True)


def test_the_approval_page_reads_as_an_otp_request_and_get_decides_nothing(app, client, qa):
    ask(client, qa, emergency=True)
    [path, _second] = links()  # no Recipient(s) set: mailed to the department's approvers
    page = client.get(path)
    html = text(page)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    for fact in ("One-time password request", DEVICE, "QA Team", "jsmith",
                 "j.smith@example.com", "Emergency access", "Approve", "Deny", "Comment"):
        assert fact in html, fact
    assert "Allow Session" not in html
    assert client.head(path).status_code == 200
    assert db.session.scalar(select(OtpAccessRequest.status)) == "pending"
    anonymous = client.post(path, data={"decision": "approve"})
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["Location"]
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 0

    approver = signed_in(app, APPROVER)
    decided = approver.post(path, data={"decision": "approve", "comment": "Known user"})
    assert decided.status_code == 200 and "Approved by approver@example.com" in text(decided)
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 1
    assert approver.post(path, data={"decision": "deny"}).status_code == 409


def test_the_pending_list_shows_otp_requests_and_decides_them(app, client, qa):
    request_id = ask(client, qa)
    approver = signed_in(app, APPROVER)
    page = text(approver.get("/requests/pending"))
    assert "One-time password requests" in page and "jsmith" in page
    assert f'id="decide-otp-{request_id}-approve"' in page
    rows = approver.post(f"/otp-requests/{request_id}/decide",
                         data={"decision": "deny", "comment": "Not today"}, headers=HTMX)
    assert rows.status_code == 200 and "denied" in text(rows)
    assert f"otp-request-{request_id}" not in text(rows)
    ask_row = db.session.get(OtpAccessRequest, request_id)
    assert (ask_row.status, ask_row.decided_by, ask_row.comment) == (
        "denied", APPROVER, "Not today")
    late = approver.post(f"/otp-requests/{request_id}/decide", data={"decision": "approve"},
                         headers=HTMX)
    assert late.status_code == 409
    outsider = signed_in(app, "elsewhere@example.com")
    assert outsider.post(f"/otp-requests/{request_id}/decide",
                         data={"decision": "approve"}).status_code == 403


def test_generate_on_the_device_page(app, qa):
    url = f"/departments/{qa.id}/devices/{qa.device_id}"
    approver = signed_in(app, APPROVER)
    page = approver.get(url)
    assert page.status_code == 200 and "Generate one-time password" in text(page)
    assert "Nobody has logged in" in text(page)
    for username in ("jsmith", "alice"):  # not held to the minimum interval
        made = approver.post(f"{url}/otp", data={"username": username,
                                                 "email": f"{username}@example.com",
                                                 "comment": "Printer"})
        assert made.status_code == 303, text(made)
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 2
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "otp.generated")) == 2
    bad = approver.post(f"{url}/otp", data={"username": "", "email": "nope"})
    assert bad.status_code == 422

    auditor = signed_in(app, "auditor@example.com")
    view = auditor.get(url)
    assert view.status_code == 200 and "Generate one-time password" not in text(view)
    assert auditor.post(f"{url}/otp", data={"username": "x", "email": "x@example.com"}
                        ).status_code == 403
    for email in ("tech@example.com", "elsewhere@example.com"):
        assert signed_in(app, email).get(url).status_code == 403
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 2


def test_without_a_mail_server_the_outbox_shows_a_waiting_code_that_works(app, client, qa,
                                                                         make):
    """The demo's way: no SMTP, so the Outbox page stands in for the user's inbox."""
    ask(client, qa)
    approver = signed_in(app, APPROVER)
    assert approver.post(links()[0], data={"decision": "approve"}).status_code == 200
    make.user("admin@example.com", "admin")
    outbox = text(signed_in(app, "admin@example.com").get("/outbox"))
    code = re.search(r"^\s+(\d{8})\s*$", outbox, re.M).group(1)
    verified = client.post("/api/v1/agent/otp/verify",
                           json={"username": "jsmith", "email": "j.smith@example.com",
                                 "password": code}, headers=bearer(qa.device_token))
    assert verified.status_code == 200
    assert code not in text(signed_in(app, "admin@example.com").get("/outbox"))  # used
    page = text(approver.get(f"/departments/{qa.id}/devices/{qa.device_id}"))
    assert "jsmith (j.smith@example.com)" in page and "running" in page


@pytest.fixture
def csrf_app(app):
    app.config["WTF_CSRF_ENABLED"] = True
    return app


def test_deciding_an_otp_request_needs_the_page_s_csrf_token(csrf_app, client, qa):
    ask(client, qa)
    path = links()[0]
    approver = csrf_app.test_client()
    login_page = text(approver.get("/login"))
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                      r'name="csrf_token" value="([^"]+)"', login_page)
    token = token.group(1) or token.group(2)
    assert approver.post("/login", data={"email": APPROVER, "password": PASSWORD,
                                         "csrf_token": token}).status_code == 303
    refused = approver.post(path, data={"decision": "approve"})
    assert refused.status_code == 400
    assert db.session.scalar(select(OtpAccessRequest.status)) == "pending"
    page = text(approver.get(path))
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert approver.post(path, data={"decision": "approve", "csrf_token": form_token}
                         ).status_code == 200
    assert db.session.scalar(select(OtpAccessRequest.status)) == "approved"


def test_the_expiry_job_times_out_otp_requests_once(app, client, qa):
    request_id = ask(client, qa)  # on the real clock: due in 30 minutes
    created = db.session.get(OtpAccessRequest, request_id).created_at
    with app.app_context():
        expire_overdue(created + timedelta(minutes=10))  # not due yet
        db.session.commit()
    assert db.session.get(OtpAccessRequest, request_id).status == "pending"
    for _ in range(2):  # a second sweep finds nothing more to do
        with app.app_context():
            expire_overdue(created + timedelta(minutes=30))
            db.session.commit()
    db.session.expire_all()
    assert db.session.get(OtpAccessRequest, request_id).status == "timed_out"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "otp.timed_out")) == 1
    assert {m.status for m in db.session.scalars(select(OutboxMessage))} == {"cancelled"}
    status = client.get(f"/api/v1/agent/otp/requests/{request_id}",
                        headers=bearer(qa.device_token)).get_json()
    assert status["status"] == "timed_out"
