"""Number matching and a comment on a phone-sized approval page: the technician sees the
number; the approver picks it among three buttons (reachable by keyboard, none picked),
adds a comment and allows; the technician's page shows the outcome with the comment."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import OutboxMessage, SessionRequest

TECH = "tech@example.com"
APPROVER = "approver@example.com"
PASSWORD = "browser tests only"
LINK = re.compile(r"/approvals/[A-Za-z0-9_\-]{20,}")


def test_the_approver_matches_the_number_and_comments_on_a_phone(
        new_context, live_server, sign_in, qa, make, fresh):
    settings = qa.department.settings
    settings.is_email_authorization_required = True
    settings.email_recipients = APPROVER
    settings.is_number_matching_required = True
    make.user(TECH, "technician", qa.department, password=PASSWORD)
    make.user(APPROVER, "approver", qa.department, password=PASSWORD)
    fresh()

    technician = new_context(viewport={"width": 1200, "height": 800}).new_page()
    sign_in(technician, TECH, PASSWORD)
    technician.goto(live_server("/connect"))
    technician.get_by_label("Device").select_option(qa.device)
    technician.get_by_role("button", name="Connect").click()
    expect(technician.get_by_role("heading", name="Waiting for authorization")).to_be_visible()
    request_id = int(technician.url.rsplit("/", 1)[1])
    match = fresh().get(SessionRequest, request_id).match_number
    expect(technician.locator("#match-number")).to_have_text(str(match))

    body = fresh().scalar(select(OutboxMessage.body_text)
                          .where(OutboxMessage.request_id == request_id))
    link = live_server(LINK.search(body).group(0))
    approver = new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    sign_in(approver, APPROVER, PASSWORD)
    approver.goto(link)
    group = approver.get_by_role("group", name="Which number does the technician see?")
    radios = group.get_by_role("radio")
    expect(radios).to_have_count(3)
    for i in range(3):
        expect(radios.nth(i)).not_to_be_checked()

    # Allow without a number: the browser asks for one, nothing is sent.
    approver.get_by_role("button", name="Allow Session").click()
    assert fresh().get(SessionRequest, request_id).status == "pending"

    # Keyboard: focus the first number, arrow to the match, then comment and allow.
    choices = [int(radios.nth(i).get_attribute("value")) for i in range(3)]
    radios.nth(0).focus()
    approver.keyboard.press("Space")
    for _ in range(choices.index(match)):
        approver.keyboard.press("ArrowRight")
    expect(group.get_by_role("radio", name=str(match))).to_be_checked()
    approver.get_by_label("Comment (optional)").fill("Called the user first")
    approver.wait_for_timeout(2500)  # a poll swaps the decision area: both survive it
    expect(group.get_by_role("radio", name=str(match))).to_be_checked()
    expect(approver.get_by_label("Comment (optional)")).to_have_value("Called the user first")
    approver.get_by_role("button", name="Allow Session").click()
    expect(approver.get_by_role("heading", name="Approved")).to_be_visible()
    expect(approver.get_by_text("Comment: Called the user first")).to_be_visible()
    # Phone-sized: nothing wider than the screen.
    assert approver.evaluate("document.documentElement.scrollWidth") <= 390

    expect(technician.get_by_text("The session will begin shortly.", exact=True)
           ).to_be_visible(timeout=5000)
    expect(technician.get_by_text("Called the user first")).to_be_visible()
    req = fresh().get(SessionRequest, request_id)
    assert (req.status, req.decided_by, req.decision_reason) == (
        "approved", APPROVER, "Called the user first")
