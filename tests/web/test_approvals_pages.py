"""Approvals that resist fatigue and fraud on the pages: the Approvals settings, the
approval page (Comment, number choice, "k of N approvals", "I didn't expect this" behind
a confirmation page), the pending list, and the technician's waiting page. Bad input
(a missing or foreign number, a comment too long or with control characters, a reason
of punctuation) gets a 4xx naming the field and changes nothing."""
from __future__ import annotations

import pytest
from factories import DESIGN_LABELS
from .helpers import HTMX, audit_events, control, field_error, page, settings_form, snapshot
from sqlalchemy import select

from portal.extensions import db
from portal.models import OutboxMessage, SessionRequest
from portal.services import accounts, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI
from portal.web.common import utcnow

DEVICE = "WIN-0859G9I39J0"
R1, R2 = "first-approver@example.com", "second-approver@example.com"
TECH = "tech@example.com"
APPROVALS = ["is_reason_required", "approvals_required", "is_number_matching_required",
             "is_fallback_to_email", "escalation_recipients", "escalate_after_seconds",
             "report_cooldown_minutes", "preapproval_max_hours"]


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user(TECH, "technician", department)
    make.user(R1, "approver", department)
    make.user(R2, "approver", department)
    make.user("head@example.com", "department_admin", department)
    return department


def configure(department, **changes):
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": f"{R1}\n{R2}",
              **changes}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()


def new_request():
    req = service.create_session_request(
        technician=accounts.find_user(TECH), device_name=DEVICE, reason="Printer driver",
        actor=CLI, now=utcnow(), base_url="http://portal.test")
    db.session.commit()
    links = {m.recipient: mail.approval_links_in(m)[0].removeprefix("http://portal.test")
             for m in db.session.scalars(select(OutboxMessage).where(
                 OutboxMessage.request_id == req.id))}
    return req.id, links


def reload(request_id):
    db.session.expire_all()
    return db.session.get(SessionRequest, request_id)


def client_as(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": "correct horse battery"}
                       ).status_code == 303
    return client


def text(response):
    return response.get_data(as_text=True)


# --- settings ------------------------------------------------------------------------


def test_the_approvals_section_has_its_labels_defaults_and_ranges(app, client, qa, auth):
    auth.login("head@example.com")
    url = f"/departments/{qa.id}/settings"
    doc = page(client.get(url))
    section = [fs for fs in doc.find_all("fieldset") if fs.one("h2").text() == "Approvals"]
    assert len(section) == 1
    labels = [lab.text() for lab in section[0].find_all("label")]
    assert labels == [DESIGN_LABELS[f] for f in APPROVALS]
    assert control(doc, "approvals_required").get("value") == "1"
    assert control(doc, "report_cooldown_minutes").get("value") == "30"
    assert control(doc, "preapproval_max_hours").get("value") == "0"
    assert control(doc, "escalate_after_seconds").get("value") == "120"
    assert control(doc, "escalation_recipients").text() == ""
    assert not control(doc, "is_fallback_to_email").has("checked")
    assert not control(doc, "is_reason_required").has("checked")
    assert not control(doc, "is_number_matching_required").has("checked")

    before = snapshot()
    for field, value, message in [
            ("approvals_required", "2", "can't be more than the number of recipients (0)"),
            ("approvals_required", "6", "from 1 to 5"),
            ("approvals_required", "0", "from 1 to 5"),
            ("report_cooldown_minutes", "1441", "from 1 to 1440"),
            ("escalate_after_seconds", "29", "from 30 to 3600"),
            ("escalate_after_seconds", "3601", "from 30 to 3600"),
            ("escalation_recipients", "on-call@example.com, not-an-address",
             "“not-an-address” is not a valid email address."),
            ("escalation_recipients", ",".join(f"e{n}@example.com" for n in range(21)),
             "at most 20 recipients")]:
        response = client.post(url, data=settings_form(**{field: value}))
        assert response.status_code == 422, field
        assert message in field_error(page(response), field)
    assert snapshot() == before

    response = client.post(url, data=settings_form(
        is_email_authorization_required=True, email_recipients=f"{R1}, {R2}",
        approvals_required=2, is_number_matching_required=True, is_reason_required=True,
        report_cooldown_minutes=45, is_fallback_to_email=True,
        escalation_recipients="On-Call@Example.com; lead@example.com",
        escalate_after_seconds=90))
    assert response.status_code in (200, 303)
    changed = {e["details"]["field"]: (e["details"]["old"], e["details"]["new"])
               for e in audit_events("settings.changed")}
    assert changed["approvals_required"] == (1, 2)
    assert changed["report_cooldown_minutes"] == (30, 45)
    assert changed["is_number_matching_required"] == (False, True)
    assert changed["is_reason_required"] == (False, True)
    assert changed["is_fallback_to_email"] == (False, True)
    assert changed["escalation_recipients"] == ("", "On-Call@example.com\nlead@example.com")
    assert changed["escalate_after_seconds"] == (120, 90)


# --- the approval page ---------------------------------------------------------------


def test_two_of_two_with_number_matching_and_a_comment(app, qa):
    configure(qa, approvals_required=2, is_number_matching_required=True)
    request_id, links = new_request()
    req = reload(request_id)
    match = req.match_number
    choices = [int(c) for c in req.match_choices.split(",")]
    first = client_as(app, R1)
    doc = page(first.get(links[R1]))
    radios = doc.find_all("input", name="number")
    assert [int(r.get("value")) for r in radios] == choices
    assert not any(r.has("checked") for r in radios) and all(r.has("required") for r in radios)
    assert doc.one("button", id="decide-deny").has("formnovalidate")
    assert "Which number does the technician see?" in doc.text()
    assert "0 of 2 approvals" in doc.text()

    # Bad input: named, 422, nothing changed.
    before = snapshot()
    for data, words in [({"decision": "allow"}, "Which number does the technician see?"),
                        ({"decision": "allow", "number": "100"}, "Pick one of the numbers"),
                        ({"decision": "allow", "number": str(match), "comment": "x" * 501},
                         "500 characters"),
                        ({"decision": "allow", "number": str(match), "comment": "a\x07b"},
                         "control characters")]:
        response = first.post(links[R1], data=data)
        assert response.status_code == 422, data
        assert words in text(response)
    assert snapshot() == before

    response = first.post(links[R1], data={"decision": "allow", "number": str(match),
                                           "comment": "Asked the user"})
    assert response.status_code == 200
    assert "1 of 2 approvals" in page(response).text()
    assert "Thank you — your Allow counted" in text(response)
    assert page(response).find("button", id="decide-allow") is None  # once per person
    assert first.post(links[R1], data={"decision": "deny"}).status_code == 409

    tech = client_as(app, TECH)
    waiting = page(tech.get(f"/requests/{request_id}")).text()
    assert "1 of 2 approvals" in waiting and str(match) in waiting

    second = client_as(app, R2)
    response = second.post(links[R2], data={"decision": "allow", "number": str(match),
                                            "comment": "Confirmed by phone"})
    assert response.status_code == 200
    outcome = page(tech.get(f"/requests/{request_id}")).text()
    assert "The session will begin shortly." in outcome
    assert "Confirmed by phone" in outcome and "2 of 2 approvals" in outcome


def test_a_wrong_number_denies_on_the_page(app, qa):
    configure(qa, is_number_matching_required=True)
    request_id, links = new_request()
    req = reload(request_id)
    wrong = next(int(c) for c in req.match_choices.split(",") if int(c) != req.match_number)
    response = client_as(app, R1).post(links[R1], data={"decision": "allow",
                                                        "number": str(wrong)})
    assert response.status_code == 200
    req = reload(request_id)
    assert req.status == "denied" and "number did not match" in req.decision_reason


def test_i_didnt_expect_this_is_behind_a_confirmation(app, qa):
    configure(qa)
    request_id, links = new_request()
    approver = client_as(app, R1)
    before = snapshot()
    confirm = approver.get(links[R1] + "/report")
    assert confirm.status_code == 200
    assert approver.head(links[R1] + "/report").status_code == 200
    assert snapshot() == before  # GET never decides
    form = page(confirm).one("button", id="report-confirm").ancestor("form")
    assert (form.get("method"), form.get("action")) == ("post", links[R1])
    assert approver.post(links[R1], data={"decision": "report"}).status_code == 200
    outcome = page(client_as(app, TECH).get(f"/requests/{request_id}")).text()
    assert f"The request was reported as unexpected by {R1}." in outcome
    assert db.session.scalar(select(OutboxMessage.subject).where(
        OutboxMessage.recipient == "head@example.com")).count(DEVICE) == 1
    # Its cool-down: the connect form says until when.
    response = client_as(app, TECH).post("/connect", data={"device": DEVICE})
    assert response.status_code == 429 and response.headers["Retry-After"]
    assert "reported as unexpected" in field_error(page(response), "device")


def test_a_reason_of_punctuation_is_refused_on_the_connect_form(app, qa):
    configure(qa, is_reason_required=True)
    tech = client_as(app, TECH)
    before = snapshot()
    response = tech.post("/connect", data={"device": DEVICE, "reason": "!!!!!!!!!!!!"})
    assert response.status_code == 422
    assert "letters or digits" in field_error(page(response), "reason")
    assert {k: v for k, v in snapshot().items() if k != "audit_events"} == \
        {k: v for k, v in before.items() if k != "audit_events"}


# --- the pending list ----------------------------------------------------------------


def test_the_pending_list_decides_with_number_comment_and_report(app, qa):
    configure(qa, approvals_required=2, is_number_matching_required=True)
    request_id, _ = new_request()
    req = reload(request_id)
    approver = client_as(app, R1)
    rows = page(approver.get("/requests/pending/rows", headers=HTMX))
    assert "0 of 2 approvals" in rows.text()
    assert len(rows.find_all("input", name="number")) == 3
    assert rows.find("input", name="comment") is not None
    response = approver.post(f"/requests/{request_id}/decide", headers=HTMX,
                             data={"decision": "allow", "comment": "fine"})
    assert response.status_code == 422 and reload(request_id).approvals_received == 0
    response = approver.post(f"/requests/{request_id}/decide", headers=HTMX,
                             data={"decision": "allow", "number": str(req.match_number)})
    assert response.status_code == 200 and "1 of 2 approvals" in text(response)
    assert "You allowed it" in text(response)

    # Without htmx: the list again with the message, 422, nothing changed.
    response = approver.post(f"/requests/{request_id}/decide",
                             data={"decision": "deny", "comment": "two\nlines"})
    assert response.status_code == 422 and "one line" in text(response)
    assert reload(request_id).status == "pending"

    other = client_as(app, R2)
    confirm = other.get(f"/requests/{request_id}/report")
    assert confirm.status_code == 200 and reload(request_id).status == "pending"
    response = other.post(f"/requests/{request_id}/decide",
                          data={"decision": "report", "comment": "Nobody asked"})
    assert response.status_code == 303
    req = reload(request_id)
    assert (req.status, req.decided_by, req.is_reported) == ("denied", R2, True)
