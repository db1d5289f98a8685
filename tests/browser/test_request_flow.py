"""A technician waits in one browser; an approver decides in another (issue 3, point 11).

The technician's page must turn to the outcome by itself, without a reload, and the
countdown must tick while waiting."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import select, update

from portal.models import OutboxMessage, SessionRequest

TECH = "tech@example.com"
APPROVER = "approver@example.com"
PASSWORD = "browser tests only"
LINK = re.compile(r"/approvals/[A-Za-z0-9_\-]{20,}")


def _setup(make, fresh, qa, *, email=True, confirmation=False):
    settings = qa.department.settings
    settings.is_email_authorization_required = email
    settings.email_recipients = APPROVER if email else ""
    settings.is_confirmation_shown = confirmation
    make.user(TECH, "technician", qa.department, password=PASSWORD)
    make.user(APPROVER, "approver", qa.department, password=PASSWORD)
    fresh()


def _connect(page, live_server, qa):
    page.goto(live_server("/connect"))
    page.get_by_label("Device").select_option(qa.device)
    page.get_by_label("Reason (optional)").fill("Ticket 4411: printer driver")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("heading", name="Waiting for authorization")).to_be_visible()
    return int(page.url.rsplit("/", 1)[1])


def test_waiting_page_turns_to_approved_when_an_approver_allows(
        new_context, live_server, sign_in, qa, make, fresh, no_reload):
    _setup(make, fresh, qa)
    technician = new_context(viewport={"width": 1200, "height": 800}).new_page()
    sign_in(technician, TECH, PASSWORD)
    request_id = _connect(technician, live_server, qa)
    no_reload.mark(technician)

    # The countdown ticks in the browser between polls.
    seconds = technician.locator(".countdown .seconds")
    first = int(seconds.inner_text())
    assert 170 <= first <= 180
    technician.wait_for_timeout(2200)
    assert int(seconds.inner_text()) < first

    body = fresh().scalar(select(OutboxMessage.body_text)
                          .where(OutboxMessage.request_id == request_id))
    link = live_server(LINK.search(body).group(0))

    approver = new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    approver.goto(link)
    expect(approver.get_by_text(qa.device).first).to_be_visible()
    expect(approver.get_by_text("Ticket 4411: printer driver")).to_be_visible()
    approver.get_by_role("button", name="Allow Session").click()
    # Sign-in is required to decide: sign in, come back, decide.
    expect(approver).to_have_url(re.compile(r"/login\?next=/approvals/"))
    approver.get_by_label("Email").fill(APPROVER)
    approver.get_by_label("Password").fill(PASSWORD)
    approver.get_by_role("button", name="Sign in").click()
    expect(approver).to_have_url(link)
    assert fresh().get(SessionRequest, request_id).status == "pending"
    approver.get_by_role("button", name="Allow Session").click()
    expect(approver.get_by_role("heading", name="Approved")).to_be_visible()
    expect(approver.get_by_text(f"Allowed by {APPROVER}.")).to_be_visible()

    expect(technician.get_by_text("The session will begin shortly.", exact=True)
           ).to_be_visible(timeout=5000)
    expect(technician.get_by_role("heading", name="Approved")).to_be_visible()
    no_reload.check(technician)
    req = fresh().get(SessionRequest, request_id)
    assert (req.status, req.decided_by) == ("approved", APPROVER)


def test_waiting_page_shows_the_exact_timed_out_message(
        new_context, live_server, sign_in, qa, make, fresh, no_reload):
    _setup(make, fresh, qa)
    technician = new_context().new_page()
    sign_in(technician, TECH, PASSWORD)
    request_id = _connect(technician, live_server, qa)
    no_reload.mark(technician)
    # A short deadline; no scheduler runs here: the deadline alone decides.
    soon = datetime.now(timezone.utc) + timedelta(seconds=2)
    session = fresh()
    session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                    .values(expires_at=soon, email_deadline=soon))
    session.commit()
    expect(technician.get_by_text("The Session Confirmation request has timed out.",
                                   exact=True)
           ).to_be_visible(timeout=6000)
    expect(technician.get_by_role("link", name="Try again")).to_be_visible()
    no_reload.check(technician)


def test_technician_cancels_and_approver_sees_the_list_update(
        new_context, live_server, sign_in, qa, make, fresh):
    _setup(make, fresh, qa)
    approver = new_context().new_page()
    sign_in(approver, APPROVER, PASSWORD)
    approver.goto(live_server("/requests/pending"))
    expect(approver.get_by_text("No request is waiting for a decision.")).to_be_visible()

    technician = new_context().new_page()
    sign_in(technician, TECH, PASSWORD)
    request_id = _connect(technician, live_server, qa)
    row = approver.locator(f"#request-{request_id}")
    expect(row).to_contain_text(qa.device, timeout=5000)  # appears without a reload
    expect(row).to_contain_text(TECH)

    technician.get_by_role("button", name="Cancel request").click()
    expect(technician.get_by_text("The request was cancelled.").first).to_be_visible()
    expect(row).to_have_count(0, timeout=5000)  # and leaves without a reload
    assert fresh().get(SessionRequest, request_id).status == "cancelled"


def test_approver_allows_from_the_live_pending_list(
        new_context, live_server, sign_in, qa, make, fresh):
    _setup(make, fresh, qa)
    technician = new_context().new_page()
    sign_in(technician, TECH, PASSWORD)
    approver = new_context().new_page()
    sign_in(approver, APPROVER, PASSWORD)
    approver.goto(live_server("/requests/pending"))
    request_id = _connect(technician, live_server, qa)
    row = approver.locator(f"#request-{request_id}")
    # The row arrives by polling: its forms rely on htmx's X-CSRFToken header (CSRF is on).
    expect(row).to_contain_text(qa.device, timeout=5000)
    assert row.locator("input[name=csrf_token]").count() == 0
    row.get_by_role("button", name=re.compile("^Allow Session")).click()
    expect(approver.locator("#flashes")).to_contain_text(f"Request for {qa.device} allowed.")
    expect(row).to_have_count(0)
    expect(technician.get_by_text("The session will begin shortly.", exact=True)
           ).to_be_visible(timeout=5000)
    req = fresh().get(SessionRequest, request_id)
    assert (req.status, req.decided_by) == ("approved", APPROVER)
