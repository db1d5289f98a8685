"""The approval chain in the browser: the technician's waiting page reads Email approvers
"Not asked yet" while the end user is asked; when the prompt's deadline passes unanswered
and the job mails the approvers, the page — without a reload — says "Nobody answered at
the device — asking the approvers"; an approver's Allow from the email's link on a phone
then approves it."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import select, update

from portal.models import OutboxMessage, SessionRequest
from portal.services import chain

TECH = "tech@example.com"
APPROVER = "approver@example.com"
PASSWORD = "browser tests only"
LINK = re.compile(r"/approvals/[A-Za-z0-9_\-]{20,}")


def test_the_waiting_page_follows_the_chain_from_the_end_user_to_the_approvers(
        new_context, live_server, sign_in, qa, make, fresh, no_reload):
    settings = qa.department.settings
    settings.is_confirmation_shown = True
    settings.is_shown_when_locked = True  # nobody is logged in at the test device
    settings.is_email_authorization_required = True
    settings.email_recipients = APPROVER
    settings.is_fallback_to_email = True
    make.user(TECH, "technician", qa.department, password=PASSWORD)
    make.user(APPROVER, "approver", qa.department, password=PASSWORD)
    fresh()

    technician = new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(technician, TECH, PASSWORD)
    technician.goto(live_server("/connect"))
    technician.get_by_label("Device").select_option(qa.device)
    technician.get_by_role("button", name="Connect").click()
    expect(technician.get_by_role("heading", name="Waiting for authorization")).to_be_visible()
    request_id = int(technician.url.rsplit("/", 1)[1])
    checks = technician.locator("ul.checks")
    expect(checks.locator(".check-waiting")).to_contain_text("Not asked yet")
    expect(technician.locator("#request-progress")).to_have_count(0)
    assert fresh().scalar(select(OutboxMessage.id).where(
        OutboxMessage.request_id == request_id)) is None  # nobody mailed yet
    no_reload.mark(technician)

    # The prompt's deadline comes in a second; no scheduler runs here, so the test takes
    # the job's step itself once it is due.
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    session = fresh()
    session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                    .values(end_user_deadline=soon, chain_due_at=soon))
    session.commit()
    technician.wait_for_timeout(1200)
    taken, _ = chain.take_due_steps(datetime.now(timezone.utc), base_url=live_server.url)
    fresh()
    assert taken == [(request_id, "fallback")]

    expect(technician.locator("#request-progress")).to_have_text(
        "Nobody answered at the device — asking the approvers", timeout=5000)
    expect(checks.locator(".check-timed_out")).to_contain_text("Timed out")
    no_reload.check(technician)

    body = fresh().scalar(select(OutboxMessage.body_text)
                          .where(OutboxMessage.request_id == request_id))
    approver = new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(approver, APPROVER, PASSWORD)
    approver.goto(live_server(LINK.search(body).group(0)))
    approver.get_by_role("button", name="Allow Session").click()
    expect(approver.get_by_role("heading", name="Approved")).to_be_visible()
    expect(technician.get_by_text("The session will begin shortly.", exact=True)
           ).to_be_visible(timeout=5000)
    expect(technician.locator("#request-progress")).to_have_count(0)
    assert fresh().get(SessionRequest, request_id).decided_by == APPROVER
