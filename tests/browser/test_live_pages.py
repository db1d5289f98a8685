"""Live pages for keyboard and screen-reader users (issue 6, A.9): a poll of the pending
list leaves the keyboard focus on the button it was on; the ticking seconds are outside
every live region, and one polite region announces the final state once."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import select, update

from portal.models import OutboxMessage, SessionRequest
from portal.services import accounts
from portal.services import decisions
from portal.services import requests as service
from portal.services.actors import CLI, Actor

TECH = "tech@example.com"
APPROVER = "approver@example.com"
PASSWORD = "browser tests only"
LINK = re.compile(r"/approvals/[A-Za-z0-9_\-]{20,}")
LIVE = "[aria-live], [role=status], [role=alert], [role=log], [role=timer], [role=marquee]"

# Counts the swaps of the element with this id, and records what #live-status says.
WATCH = """id => {
  window.__swaps = 0;
  window.__announced = [];
  document.body.addEventListener("htmx:afterSettle", event => {
    const elt = event.detail.elt || event.target;
    if (elt && elt.id === id) window.__swaps += 1;
  });
  const region = document.getElementById("live-status");
  if (region) new MutationObserver(() => window.__announced.push(region.textContent))
    .observe(region, {childList: true, characterData: true, subtree: true});
}"""
TICKING_IN_LIVE_REGIONS = f"""() => {{
  const ticking = [...document.querySelectorAll("[data-seconds-left]")];
  return {{count: ticking.length,
           inside: ticking.filter(el => el.closest({LIVE!r})).length}};
}}"""


def _setup(make, fresh, qa):
    settings = qa.department.settings
    settings.is_email_authorization_required = True
    settings.email_recipients = APPROVER
    make.user(TECH, "technician", qa.department, password=PASSWORD)
    make.user(APPROVER, "approver", qa.department, password=PASSWORD)
    fresh()


def _new_request(fresh, qa, live_server) -> tuple[int, str]:
    req = service.create_session_request(
        technician=accounts.find_user(TECH), device_name=qa.device, actor=CLI,
        now=datetime.now(timezone.utc), base_url=live_server.url)
    session = fresh()
    body = session.scalar(select(OutboxMessage.body_text)
                          .where(OutboxMessage.request_id == req.id))
    return req.id, live_server(LINK.search(body).group(0))


def _watch(page, element_id):
    page.evaluate(WATCH, element_id)


def _wait_for_swaps(page, count, timeout=15000):
    page.evaluate("() => { window.__swaps = 0; }")
    page.wait_for_function(f"() => window.__swaps >= {count}", timeout=timeout)


def test_a_poll_leaves_the_keyboard_focus_on_the_allow_button(
        new_context, live_server, sign_in, qa, make, fresh):
    _setup(make, fresh, qa)
    request_id, _ = _new_request(fresh, qa, live_server)
    approver = new_context().new_page()
    sign_in(approver, APPROVER, PASSWORD)
    approver.goto(live_server("/requests/pending"))
    row = approver.locator(f"#request-{request_id}")
    expect(row).to_contain_text(qa.device)
    _watch(approver, "pending-rows")
    _wait_for_swaps(approver, 1)  # from here on, every row comes from a poll

    # A keyboard user tabs to the request's "Allow Session" button.
    wanted = f"Allow Session: {qa.device} for {TECH}"
    active = "() => document.activeElement.getAttribute('aria-label')"
    for _ in range(60):
        approver.keyboard.press("Tab")
        if approver.evaluate(active) == wanted:
            break
    else:
        raise AssertionError("Tab never reached the Allow Session button")
    approver.evaluate("() => { document.activeElement.dataset.beforeThePolls = 'yes'; }")

    _wait_for_swaps(approver, 2)
    focused = approver.evaluate("""() => ({
        label: document.activeElement.getAttribute("aria-label"),
        connected: document.activeElement.isConnected,
        replaced: document.activeElement.dataset.beforeThePolls === undefined})""")
    assert focused == {"label": wanted, "connected": True, "replaced": True}

    # And the key still decides.
    approver.keyboard.press("Enter")
    expect(approver.locator("#flashes")).to_contain_text(f"Request for {qa.device} allowed.")
    expect(row).to_have_count(0)
    assert fresh().get(SessionRequest, request_id).status == "approved"


def test_the_seconds_tick_outside_live_regions_and_the_final_state_is_announced_once(
        new_context, live_server, sign_in, qa, make, fresh):
    _setup(make, fresh, qa)
    request_id, link = _new_request(fresh, qa, live_server)
    technician = new_context().new_page()
    sign_in(technician, TECH, PASSWORD)
    technician.goto(live_server(f"/requests/{request_id}"))
    approval = new_context().new_page()  # the emailed link, not signed in
    approval.goto(link)
    pending = new_context().new_page()
    sign_in(pending, APPROVER, PASSWORD)
    pending.goto(live_server("/requests/pending"))
    expect(pending.locator(f"#request-{request_id}")).to_contain_text(qa.device)
    pages = {"technician's page": (technician, "request-status"),
             "approval page": (approval, "approval-state"),
             "pending list": (pending, "pending-rows")}

    for name, (page, element_id) in pages.items():
        _watch(page, element_id)
    for name, (page, _) in pages.items():
        _wait_for_swaps(page, 2)  # the seconds ticked and the polls came back...
        ticking = page.evaluate(TICKING_IN_LIVE_REGIONS)
        assert ticking["count"] > 0 and ticking["inside"] == 0, name
        assert page.evaluate("() => window.__announced") == [], name  # ...all unsaid

    approver = accounts.find_user(APPROVER)
    decisions.decide_in_portal(user=approver, request_id=request_id, decision="deny",
                             actor=Actor.for_user(approver), now=datetime.now(timezone.utc))
    fresh()

    said = {
        "technician's page": f"Denied. The request was denied by {APPROVER}.",
        "approval page": f"Denied. Denied by {APPROVER}.",
        "pending list": f"{qa.device} for {TECH}: no longer waiting for a decision.",
    }
    for name, (page, _) in pages.items():
        expect(page.locator("#live-status")).to_have_text(said[name], timeout=10000)
    technician.wait_for_timeout(2500)  # a poll or two later: nothing said again
    for name, (page, _) in pages.items():
        assert page.evaluate("() => window.__announced") == [said[name]], name
        assert page.evaluate(TICKING_IN_LIVE_REGIONS)["inside"] == 0, name
    expect(technician.get_by_role("heading", name="Denied")).to_be_visible()
    expect(approval.get_by_role("heading", name="Denied")).to_be_visible()


def test_a_request_that_times_out_is_announced_as_timed_out(
        new_context, live_server, sign_in, qa, make, fresh):
    _setup(make, fresh, qa)
    request_id, _ = _new_request(fresh, qa, live_server)
    technician = new_context().new_page()
    sign_in(technician, TECH, PASSWORD)
    technician.goto(live_server(f"/requests/{request_id}"))
    pending = new_context().new_page()
    sign_in(pending, APPROVER, PASSWORD)
    pending.goto(live_server("/requests/pending"))
    expect(pending.locator(f"#request-{request_id}")).to_contain_text(qa.device)
    # Both pages are watching: now a short deadline (no scheduler runs here).
    soon = datetime.now(timezone.utc) + timedelta(seconds=3)
    session = fresh()
    session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                    .values(expires_at=soon, email_deadline=soon))
    session.commit()

    expect(technician.locator("#live-status")).to_have_text(
        "Timed out. The Session Confirmation request has timed out.", timeout=10000)
    expect(pending.locator("#live-status")).to_have_text(
        f"{qa.device} for {TECH}: Timed out.", timeout=10000)
