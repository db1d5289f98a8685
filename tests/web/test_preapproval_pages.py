"""Pre-approval on the pages: Allow offers "Also allow this technician on this device for"
(approval page and pending list) when the setting allows it, the device page lists live
pre-approvals for department admins with "Revoke" behind a confirmation page, and the
Sessions page reads "pre-approval" under "Approved by". Bad input is a 4xx naming the
field, and nothing changes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import OutboxMessage, PreApproval, SessionRequest
from portal.services import accounts, agents, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI
from portal.services.devices import find_device
from portal.web.common import utcnow

from .helpers import HTMX, audit_events, page, snapshot

DEVICE = "WIN-0859G9I39J0"
R1 = "first-approver@example.com"
TECH = "tech@example.com"
OFFER = "Also allow this technician on this device for"


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user(TECH, "technician", department)
    make.user(R1, "approver", department)
    make.user("head@example.com", "department_admin", department)
    make.user("auditor@example.com", "auditor", department)
    configure(department, preapproval_max_hours=4)
    return department


def configure(department, **changes):
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": R1, **changes}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()


def new_request():
    req = service.create_session_request(
        technician=accounts.find_user(TECH), device_name=DEVICE, reason="Printer driver",
        actor=CLI, now=utcnow(), base_url="http://portal.test")
    db.session.commit()
    links = [mail.approval_links_in(m)[0].removeprefix("http://portal.test")
             for m in db.session.scalars(select(OutboxMessage).where(
                 OutboxMessage.request_id == req.id))]
    return req, (links[0] if links else None)


def windows():
    db.session.expire_all()
    return list(db.session.scalars(select(PreApproval).order_by(PreApproval.id)))


def offered(doc):
    select_ = doc.find("select", name="preapproval_hours")
    if select_ is None:
        return None
    [label] = [lab for lab in doc.find_all("label") if lab.get("for") == select_.get("id")]
    assert label.text() == OFFER
    return [option.text() for option in select_.find_all("option")]


def test_the_approval_page_offers_the_window_and_an_allow_grants_it(client, auth, qa):
    req, link = new_request()
    auth.login(R1)
    assert offered(page(client.get(link))) == ["No pre-approval", "1 hour", "2 hours",
                                                "3 hours", "4 hours"]
    response = client.post(link, data={"decision": "allow", "preapproval_hours": "2"})
    assert response.status_code == 200
    assert f"{TECH} is also pre-approved on {DEVICE} for 2 hours" in \
        response.get_data(as_text=True)
    [window] = windows()
    assert (window.granted_by, window.technician.email) == (R1, TECH)
    [granted] = audit_events("preapproval.granted")
    assert (granted["actor"], granted["target_id"]) == (R1, str(req.id))
    # The technician's next request is approved at once, naming who granted it.
    later, link = new_request()
    assert (later.status, later.decided_by, link) == ("approved", "pre_approval", None)
    assert later.decision_reason.startswith(f"pre-approved by {R1} until ")


@pytest.mark.parametrize("hours", ["5", "zero", "-1"])
def test_a_window_not_offered_is_422_and_nothing_changes(client, auth, qa, hours):
    req, link = new_request()
    auth.login(R1)
    before = snapshot()
    response = client.post(link, data={"decision": "allow", "preapproval_hours": hours})
    assert response.status_code == 422
    assert "Pick a whole number of hours from 1 to 4, or none." in \
        response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("changes", [{"preapproval_max_hours": 0},
                                     {"approvals_required": 2,
                                      "email_recipients": f"{R1}\nsecond@example.com"}])
def test_nothing_is_offered_when_off_or_with_two_approvals_required(client, auth, qa,
                                                                    changes):
    configure(qa, **changes)
    _req, link = new_request()
    auth.login(R1)
    assert offered(page(client.get(link))) is None
    auth.logout()
    auth.login("head@example.com")
    assert offered(page(client.get("/requests/pending"))) is None


def test_the_pending_list_offers_it_too_and_survives_htmx(client, auth, qa):
    req, _link = new_request()
    auth.login("head@example.com")
    listing = page(client.get("/requests/pending"))
    assert offered(listing) == ["No pre-approval", "1 hour", "2 hours", "3 hours",
                                "4 hours"]
    response = client.post(f"/requests/{req.id}/decide", headers=HTMX,
                           data={"decision": "allow", "preapproval_hours": "4"})
    assert response.status_code == 200
    assert f"{TECH} is pre-approved on {DEVICE} for 4 hours." in \
        response.get_data(as_text=True)
    [window] = windows()
    assert (window.granted_by, window.request_id) == ("head@example.com", req.id)


def grant():
    req, link = new_request()
    db.session.add(PreApproval(
        department_id=req.department_id, device_id=req.device_id,
        technician_id=req.technician_id, request_id=req.id, granted_by=R1,
        granted_at=utcnow(), expires_at=utcnow() + timedelta(hours=2)))
    db.session.commit()
    return windows()[-1]


def test_department_admins_list_and_revoke_after_a_confirmation(client, auth, qa):
    window = grant()
    device_url = f"/departments/{qa.id}/devices/{find_device(DEVICE).id}"
    revoke_url = f"{device_url}/pre-approvals/{window.id}/revoke"
    auth.login("head@example.com")
    row = page(client.get(device_url)).one("tr", id=f"pre-approval-{window.id}")
    assert TECH in row.text() and R1 in row.text()
    assert row.one("a", id=f"revoke-pre-approval-{window.id}").get("href") == revoke_url

    before = snapshot()
    confirm = client.get(revoke_url)
    assert confirm.status_code == 200 and snapshot() == before
    assert "Revoke this pre-approval?" in confirm.get_data(as_text=True)
    response = client.post(revoke_url)
    assert response.status_code == 303 and response.headers["Location"].endswith(device_url)
    [window] = windows()
    assert window.revoked_by == "head@example.com"
    assert "No pre-approval is live" in page(client.get(device_url)).text()
    again = client.post(revoke_url)
    assert again.status_code == 409
    assert "already revoked" in again.get_data(as_text=True)
    # Revoked: the technician's next request asks again.
    later, _link = new_request()
    assert later.status == "pending"


@pytest.mark.parametrize("email", [R1, "auditor@example.com", TECH])
def test_others_neither_see_nor_revoke_pre_approvals(client, auth, qa, email):
    window = grant()
    device_url = f"/departments/{qa.id}/devices/{find_device(DEVICE).id}"
    auth.login(email)
    shown = client.get(device_url)
    if shown.status_code == 200:
        assert not page(shown).find("section", id="pre-approvals")
    before = snapshot()
    assert client.get(f"{device_url}/pre-approvals/{window.id}/revoke").status_code == 403
    assert client.post(f"{device_url}/pre-approvals/{window.id}/revoke").status_code == 403
    assert snapshot() == before


def test_an_unknown_pre_approval_is_404(client, auth, qa):
    auth.login("head@example.com")
    url = f"/departments/{qa.id}/devices/{find_device(DEVICE).id}/pre-approvals/999/revoke"
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404


def test_the_sessions_page_reads_pre_approval_under_approved_by(client, auth, qa):
    grant()
    req, _link = new_request()
    assert req.decided_by == "pre_approval"
    agents.start_remote_session(device=find_device(DEVICE), request_id=req.id, actor=CLI,
                                now=utcnow())
    db.session.commit()
    auth.login("auditor@example.com")
    listing = page(client.get(f"/departments/{qa.id}/sessions"))
    [row] = [tr for tr in listing.find_all("tr") if tr.get("id", "").startswith("remote")]
    assert row.one("td", data_label="Approved by").text() == "pre-approval"
    # The technician reads who decided, with the window's words.
    auth.logout()
    auth.login(TECH)
    shown = page(client.get(f"/requests/{req.id}")).text()
    assert "Decided by a pre-approval: pre-approved by first-approver@example.com" in shown
    assert db.session.get(SessionRequest, req.id).status == "approved"
