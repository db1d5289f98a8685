"""Live pages as a screen reader and a keyboard meet them (issue 6, A.8 and A.9): one word
per state on every page, the ticking seconds outside any live region, the final state
announced once by the poll that finds it, and decision buttons whose ids survive a poll.
The browser side (focus kept, the announcement read) is in tests/browser/test_live_pages.py."""
from __future__ import annotations

import pytest
from factories import PASSWORD
from sqlalchemy import select

from portal.domain.requests import STATUS_LABELS, Status
from portal.extensions import db
from portal.models import OutboxMessage
from portal.services import accounts, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI
from portal.web.common import utcnow
from .helpers import HTMX, Node, parse

DEVICE = "WIN-0859G9I39J0"
TECH, APPROVER = "tech@example.com", "approver@example.com"
# What makes an element a live region, explicitly or by its role.
LIVE_ROLES = {"status", "alert", "log", "timer", "marquee"}
OLD_WORDS = ["Rejected", "Session denied", "Session allowed", "Request expired",
             "Request cancelled"]


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user(TECH, "technician", department)
    make.user(APPROVER, "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": APPROVER,
              "is_sign_in_required_to_decide": False}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()
    return department


def signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": PASSWORD}
                       ).status_code == 303
    return client


def new_request():
    req = service.create_session_request(
        technician=accounts.find_user(TECH), device_name=DEVICE, reason="Printer driver",
        actor=CLI, now=utcnow(), base_url="http://portal.test")
    db.session.commit()
    message = db.session.scalars(select(OutboxMessage)
                                 .where(OutboxMessage.request_id == req.id)).one()
    return req.id, mail.approval_links_in(message)[0].removeprefix("http://portal.test")


def is_live(node: Node) -> bool:
    return node.has("aria-live") or node.get("role") in LIVE_ROLES


def live_ancestors(doc: Node, node: Node | None) -> list[Node]:
    found = []
    while node is not None:
        if is_live(node):
            found.append(node)
        node = node.parent
    return found


def countdowns(doc: Node) -> list[Node]:
    return [n for n in doc.iter() if n.has("data-seconds-left")]


def announcements(doc: Node) -> list[str]:
    return [n.text() for n in doc.iter() if n.get("hx-swap-oob") == "innerHTML:#live-status"]


def get(client, path, **kwargs) -> Node:
    response = client.get(path, **kwargs)
    assert response.status_code == 200, response.status_code
    return parse(response.get_data(as_text=True))


def test_no_ticking_number_is_inside_a_live_region(app, qa):
    request_id, link = new_request()
    technician, approver = signed_in(app, TECH), signed_in(app, APPROVER)
    pages = {
        "technician's page": get(technician, f"/requests/{request_id}"),
        "technician's poll": get(technician, f"/requests/{request_id}/status", headers=HTMX),
        "approval page": get(app.test_client(), link),
        "approval poll": get(app.test_client(), link + "/status", headers=HTMX),
        "pending list": get(approver, "/requests/pending"),
        "pending poll": get(approver, "/requests/pending/rows", headers=HTMX),
    }
    for name, doc in pages.items():
        ticking = countdowns(doc)
        assert ticking, f"{name}: no countdown"
        for number in ticking:
            assert live_ancestors(doc, number) == [], f"{name}: seconds inside a live region"
        assert announcements(doc) == [], f"{name}: announced while nothing changed"


def test_the_page_keeps_one_polite_live_region_for_state_changes(app, qa):
    request_id, _ = new_request()
    doc = get(signed_in(app, TECH), f"/requests/{request_id}")
    region = doc.one(id="live-status")
    assert region.get("aria-live") == "polite" and region.text() == ""
    assert "visually-hidden" in region.classes
    assert live_ancestors(doc, doc.one(id="request-status")) == []


@pytest.mark.parametrize("decision, status, technician_says, approval_page_says", [
    ("deny", Status.DENIED, f"Denied. The request was denied by {APPROVER}.",
     f"Denied. Denied by {APPROVER}."),
    ("allow", Status.APPROVED, "Approved. The session will begin shortly.",
     f"Approved. Allowed by {APPROVER}."),
])
def test_the_poll_that_finds_the_final_state_announces_it_once(
        app, qa, decision, status, technician_says, approval_page_says):
    request_id, link = new_request()
    technician = signed_in(app, TECH)
    assert app.test_client().post(link, data={"decision": decision}).status_code == 200

    poll = get(technician, f"/requests/{request_id}/status", headers=HTMX)
    assert announcements(poll) == [technician_says]
    assert poll.one("h1").text() == STATUS_LABELS[status]
    approval_poll = get(app.test_client(), link + "/status", headers=HTMX)
    assert announcements(approval_poll) == [approval_page_says]
    assert approval_poll.one("h2").text() == STATUS_LABELS[status]

    # A full page load is read as a page: nothing out of band in it.
    for doc in (get(technician, f"/requests/{request_id}"), get(app.test_client(), link),
                get(app.test_client(), link + "/status")):
        assert announcements(doc) == []
        assert doc.find(id="live-status") is None or doc.one(id="live-status").text() == ""


def test_a_cancel_is_announced_by_its_flash_not_twice(app, qa):
    request_id, link = new_request()
    technician = signed_in(app, TECH)
    response = technician.post(f"/requests/{request_id}/cancel", headers=HTMX)
    doc = parse(response.get_data(as_text=True))
    assert response.status_code == 200 and announcements(doc) == []
    assert "Request cancelled." in doc.text()
    # The approver watching the link learns it from their next poll.
    poll = get(app.test_client(), link + "/status", headers=HTMX)
    assert announcements(poll) == ["Cancelled. The technician cancelled the request."]


@pytest.mark.parametrize("decision, status", [("deny", Status.DENIED),
                                              ("allow", Status.APPROVED)])
def test_one_word_per_state_on_every_page(app, qa, decision, status):
    request_id, link = new_request()
    technician = signed_in(app, TECH)
    assert app.test_client().post(link, data={"decision": decision}).status_code == 200
    label = STATUS_LABELS[status]
    pages = {
        "approval page": get(app.test_client(), link),
        "technician's page": get(technician, f"/requests/{request_id}"),
        "connect page": get(technician, "/connect"),
    }
    assert pages["approval page"].one("h2").text() == label
    assert pages["technician's page"].one("h1").text() == label
    badge = pages["connect page"].one("span", class_="badge")
    assert badge.text() == label
    for name, doc in pages.items():
        for word in OLD_WORDS:
            assert word not in doc.text(), f"{name} says {word!r}"


def decision_buttons(doc: Node) -> dict[str, Node]:
    return {n.get("id"): n for n in doc.iter() if n.tag == "button" and n.get("id")
            and n.get("id").startswith("decide-")}


def test_decision_buttons_keep_their_ids_across_polls(app, qa):
    request_id, link = new_request()
    approver = signed_in(app, APPROVER)
    page = get(approver, "/requests/pending")
    first, second = (get(approver, "/requests/pending/rows", headers=HTMX) for _ in range(2))
    ids = {f"decide-{request_id}-allow", f"decide-{request_id}-deny"}
    assert set(decision_buttons(page)) == set(decision_buttons(first)) \
        == set(decision_buttons(second)) == ids
    for doc, polled in ((page, False), (first, True)):
        for value in ("allow", "deny"):
            button = decision_buttons(doc)[f"decide-{request_id}-{value}"]
            form = button.ancestor("form")
            assert form.get("hx-post") == f"/requests/{request_id}/decide"
            assert form.get("hx-target") == "#pending-rows"
            assert form.get("hx-swap") == "outerHTML"
            inputs = {n.get("name"): n.get("value") for n in form.find_all("input")}
            assert (button.get("name"), button.get("value")) == ("decision", value)
            assert ("csrf_token" in inputs) is not polled
            assert button.get("aria-label").endswith(f": {DEVICE} for {TECH}")

    approval, poll = get(app.test_client(), link), get(app.test_client(), link + "/status",
                                                       headers=HTMX)
    assert set(decision_buttons(approval)) == set(decision_buttons(poll)) \
        == {"decide-allow", "decide-deny"}
    for value in ("allow", "deny"):
        form = decision_buttons(poll)[f"decide-{value}"].ancestor("form")
        assert form.get("method") == "post" and form.get("action") == link
        assert not form.has("hx-post")
        inputs = {n.get("name"): n.get("value") for n in form.find_all("input")}
        button = decision_buttons(poll)[f"decide-{value}"]
        assert (button.get("name"), button.get("value")) == ("decision", value)
        assert inputs["csrf_token"]
