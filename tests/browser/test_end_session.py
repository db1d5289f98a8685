"""An approver on a phone ends a running session: "End session" on the Sessions page, a
confirmation page with an optional reason, and the list then says it is ending."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from factories import PASSWORD
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import RemoteSession
from portal.services import accounts, agents
from portal.services import requests as request_service
from portal.services.actors import Actor
from portal.services.devices import find_device

APPROVER = "approver@example.com"
TECH = "tech@example.com"


def test_an_approver_on_a_phone_ends_a_session_after_confirming(
        new_context, live_server, sign_in, qa, make, fresh):
    make.user(APPROVER, "approver", qa.department)
    make.user(TECH, "technician", qa.department)
    now = datetime.now(timezone.utc)
    req = request_service.create_session_request(
        technician=accounts.find_user(TECH), device_name=qa.device, actor=Actor(label=TECH),
        now=now - timedelta(minutes=6), base_url=live_server.url)
    session = agents.start_remote_session(device=find_device(qa.device), request_id=req.id,
                                          actor=Actor(label=f"device:{qa.device}"),
                                          now=now - timedelta(minutes=5))
    fresh()

    page = new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    sign_in(page, APPROVER, PASSWORD)
    page.goto(live_server(f"/departments/{qa.department.id}/sessions"))
    row = page.locator(f"#remote-session-{session.id}")
    row.get_by_role("link", name="End session").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("End this session?")
    assert page.evaluate(
        "() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    # Nothing happened yet: the confirmation is a page of its own.
    fresh()
    assert db.session.get(RemoteSession, session.id).end_requested_at is None
    page.get_by_label("Reason (optional)").fill("Nobody asked for this")
    page.get_by_role("button", name="Yes, end the session").click()

    expect(page.locator(".flash, [role=status]").first).to_contain_text(
        f"Ending the session on {qa.device}")
    row = page.locator(f"#remote-session-{session.id}")
    expect(row).to_contain_text(f"ending: asked by {APPROVER}")
    expect(row.get_by_role("link", name="End session")).to_have_count(0)
    fresh()
    stored = db.session.scalar(select(RemoteSession).where(RemoteSession.id == session.id))
    assert (stored.end_requested_by, stored.end_reason) == (APPROVER, "Nobody asked for this")
