"""An auditor on a phone opens Sessions: a running session's duration ticks in the
browser, times show the viewer's local time on hover, and a row leads to its timeline."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from factories import PASSWORD
from playwright.sync_api import expect

from portal.services import accounts, agents
from portal.services import requests as request_service
from portal.services.actors import Actor
from portal.services.devices import find_device

AUDITOR = "auditor@example.com"
TECH = "tech@example.com"


def test_an_auditor_sees_a_running_session_tick_and_follows_it_to_its_timeline(
        new_context, live_server, sign_in, qa, make, fresh):
    make.user(AUDITOR, "auditor", qa.department)
    make.user(TECH, "technician", qa.department)
    now = datetime.now(timezone.utc)
    req = request_service.create_session_request(
        technician=accounts.find_user(TECH), device_name=qa.device, run_as="Administrator",
        actor=Actor(label=TECH), now=now - timedelta(minutes=6), base_url=live_server.url)
    agents.start_remote_session(device=find_device(qa.device), request_id=req.id,
                                actor=Actor(label=f"device:{qa.device}"),
                                now=now - timedelta(minutes=5))
    fresh()

    page = new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    sign_in(page, AUDITOR, PASSWORD)
    page.goto(live_server(f"/departments/{qa.department.id}/settings"))
    page.get_by_role("link", name="Sessions").click()
    expect(page.get_by_role("heading", name="Remote sessions")).to_be_visible()
    row = page.locator("#remote-sessions tbody tr").first
    expect(row.locator(".state-running")).to_have_text("running")
    ticking = row.locator("[data-elapsed-seconds]")
    first = ticking.inner_text()
    assert first.startswith("5 min")
    expect(ticking).not_to_have_text(first, timeout=5000)  # it ticked, no reload
    # The UTC time carries the viewer's local time as its title.
    page.wait_for_function(
        "() => document.querySelector('#remote-sessions time').title.includes('local')")
    # On a phone the table stacks instead of running off the side of the page.
    assert page.evaluate(
        "() => document.documentElement.scrollWidth <= window.innerWidth + 1")

    row.get_by_role("link", name=qa.device).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Session request #{req.id}")
    events = page.locator("table.timeline tbody tr")
    expect(events.first).to_contain_text("Requested")
    expect(events.last).to_contain_text("Session started")
    expect(page.locator(".facts .state-running")).to_have_text("running")
