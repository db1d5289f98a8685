"""A department admin edits "QA Team" in a real browser (issue 2, point 12).

Each test checks what the admin sees and what the database holds afterwards."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from playwright.sync_api import expect
from sqlalchemy import func, select

from portal.domain import settings as rules
from portal.models import AuditEvent, Exclusion, LoginSession
from portal.services import departments
from portal.services.actors import Actor

NEW_MESSAGE = "Dana from IT support would like to connect. Allow the session?"


def wait_until(page, condition, timeout_ms=5000):
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out waiting for the browser")


def settings_changes(session):
    return session.scalars(
        select(AuditEvent).where(AuditEvent.action == "settings.changed")
        .order_by(AuditEvent.seq)
    ).all()


def test_save_settings_through_htmx_without_a_reload(page, live_server, sign_in, qa, fresh,
                                                     no_reload):
    sign_in(page, qa.admin_email, qa.password)
    response = page.goto(live_server(qa.settings_path))
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    timeout = page.get_by_label("Timeout (in seconds)", exact=True)
    message = page.get_by_label("Confirmation Message", exact=True)
    expect(timeout).to_have_value("60")

    timeout.fill("90")
    message.fill(NEW_MESSAGE)
    no_reload.mark(page)
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith(qa.settings_path)) as posted:
        page.get_by_role("button", name="Save").click()

    assert posted.value.request.headers.get("hx-request") == "true"
    assert posted.value.status == 200
    expect(page.locator("#flashes .flash-success")).to_have_text("Settings saved (2 changes).")
    expect(page.get_by_label("Timeout (in seconds)", exact=True)).to_have_value("90")
    expect(page.get_by_label("Confirmation Message", exact=True)).to_have_value(NEW_MESSAGE)
    no_reload.check(page)

    session = fresh()
    stored = qa.department.settings
    assert stored.confirmation_timeout_seconds == 90
    assert stored.confirmation_message == NEW_MESSAGE
    changes = {e.details["field"]: (e.details["old"], e.details["new"])
               for e in settings_changes(session)}
    assert changes == {
        "confirmation_timeout_seconds": (60, 90),
        "confirmation_message": (rules.DEFAULT_CONFIRMATION_MESSAGE, NEW_MESSAGE),
    }
    assert {e.actor for e in settings_changes(session)} == {qa.admin_email}


def test_add_and_remove_an_exclusion_without_a_reload(page, live_server, sign_in, qa, fresh,
                                                      no_reload):
    sign_in(page, qa.admin_email, qa.password)
    page.goto(live_server(qa.settings_path))
    exclusions = page.locator("#exclusions")
    expect(exclusions).to_contain_text("No device or group is excluded.")
    rows = exclusions.locator("tbody tr", has_text=qa.device)

    no_reload.mark(page)
    exclusions.get_by_label("Device or group").select_option(label=qa.device)
    exclusions.get_by_role("button", name="Add an exclusion").click()

    expect(rows).to_have_count(1)
    expect(rows.locator("td")).to_have_text(
        [qa.device, "Windows 11 Pro", "10.20.0.21",
         re.compile(rf"^{re.escape(qa.admin_email)}\s*\d{{4}}-\d\d-\d\d \d\d:\d\d UTC$"),
         "Remove"])
    expect(page.locator("#flashes .flash-success")).to_have_text(
        f"“{qa.device}” excluded from session confirmation.")
    # An excluded device is no longer offered in the picker.
    expect(exclusions.get_by_label("Device or group").locator("option", has_text=qa.device)
           ).to_have_count(0)
    no_reload.check(page)
    session = fresh()
    stored = session.scalars(select(Exclusion)).all()
    assert [(e.device.name, e.excluded_by_email) for e in stored] == [
        (qa.device, qa.admin_email)]

    # The remove button asks first (hx-confirm): dismissing keeps the exclusion...
    dialogs = []

    removals = []

    def answer(dialog):
        dialogs.append(dialog.message)
        if len(dialogs) == 1:
            dialog.dismiss()
        else:
            dialog.accept()

    page.on("dialog", answer)
    page.on("request", lambda r: r.url.endswith("/delete") and removals.append(r.url))
    remove = exclusions.get_by_role("button", name=f"Remove the exclusion of {qa.device}")
    remove.click()
    wait_until(page, lambda: len(dialogs) == 1)
    page.wait_for_timeout(300)  # a request, if one were sent, would have left by now
    assert removals == []
    expect(rows).to_have_count(1)
    assert fresh().scalar(select(func.count(Exclusion.id))) == 1

    # ...accepting removes it, still without a reload.
    remove.click()
    expect(rows).to_have_count(0)
    expect(exclusions).to_contain_text("No device or group is excluded.")
    expect(page.locator("#flashes .flash-success")).to_have_text(
        f"“{qa.device}” is no longer excluded.")
    no_reload.check(page)
    assert len(dialogs) == 2 and qa.device in dialogs[0]
    assert len(removals) == 1
    session = fresh()
    assert session.scalar(select(func.count(Exclusion.id))) == 0
    actions = session.scalars(select(AuditEvent.action).where(
        AuditEvent.action.like("exclusion.%")).order_by(AuditEvent.seq)).all()
    assert actions == ["exclusion.added", "exclusion.removed"]


def test_bad_recipient_is_reported_next_to_the_field(page, live_server, sign_in, qa, fresh,
                                                      no_reload):
    sign_in(page, qa.admin_email, qa.password)
    page.goto(live_server(qa.settings_path))
    page.get_by_label("Require email authorization for incoming connections").check()
    recipients = page.get_by_label("Recipient(s)", exact=True)
    recipients.fill("not-an-email")
    no_reload.mark(page)
    page.get_by_role("button", name="Save").click()

    error = page.locator("#email_recipients-error")
    expect(error).to_have_text("“not-an-email” is not a valid email address.")
    recipients = page.get_by_label("Recipient(s)", exact=True)
    # Next to the field: in the same field block, and announced with it.
    expect(page.locator(".field.has-error")).to_have_count(1)
    expect(page.locator(".field.has-error").locator("#email_recipients")).to_have_count(1)
    expect(recipients).to_have_attribute("aria-invalid", "true")
    expect(recipients).to_have_attribute("aria-describedby", "email_recipients-hint "
                                         "email_recipients-error")
    expect(recipients).to_be_focused()
    expect(recipients).to_have_value("not-an-email")  # what was typed is kept
    expect(page.get_by_label("Require email authorization for incoming connections")
           ).to_be_checked()
    expect(page.locator("#flashes .flash-error")).to_have_text(
        "Please correct the highlighted fields.")
    no_reload.check(page)

    session = fresh()
    stored = qa.department.settings
    assert stored.is_email_authorization_required is False
    assert stored.email_recipients == ""
    assert settings_changes(session) == []


def test_settings_page_fits_a_phone(new_context, sign_in, live_server, qa, make, fresh):
    # Long names and an IPv6 address in the exclusions table: the worst case for width.
    group = make.group(qa.department, "Build Agents of the Release Engineering Team")
    device = make.device(qa.department, "BUILD-AGENT-RELEASE-ENGINEERING-0001", group=group,
                         os="Windows Server 2022 Datacenter",
                         ip="2001:db8:85a3:1234:5678:8a2e:370:7334")
    admin = Actor(label=qa.admin_email)
    for target in (f"device:{device.id}", f"group:{group.id}"):
        departments.add_exclusion(department=qa.department, target=target, actor=admin,
                                  now=datetime.now(timezone.utc))
    fresh()

    context = new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3,
                          is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, qa.admin_email, qa.password)
    page.goto(live_server(qa.settings_path))
    expect(page.locator("#exclusions tbody tr")).to_have_count(2)

    widths = page.evaluate("""() => ({
        scroll: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        inner: window.innerWidth})""")
    assert widths["inner"] == 390
    assert widths["scroll"] <= widths["inner"], widths
    assert widths["body"] <= widths["inner"], widths

    save = page.get_by_role("button", name="Save")
    save.scroll_into_view_if_needed()
    expect(save).to_be_in_viewport()
    box = save.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert box["height"] >= 40, "a touch target should be at least about 40 px tall"
    page.get_by_label("Timeout (in seconds)", exact=True).fill("45")
    save.tap()
    expect(page.locator("#flashes .flash-success")).to_have_text("Settings saved (1 change).")
    fresh()
    assert qa.department.settings.confirmation_timeout_seconds == 45


def test_save_settings_with_javascript_off(new_context, sign_in, live_server, qa, fresh):
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, qa.admin_email, qa.password)
    page.goto(live_server(qa.settings_path))
    page.get_by_label("Timeout (in seconds)", exact=True).fill("120")
    page.get_by_label("Confirmation Message", exact=True).fill(NEW_MESSAGE)

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save").click()
    assert posted.value.status == 303
    assert "hx-request" not in posted.value.request.headers
    page.wait_for_load_state()
    assert page.url == live_server(qa.settings_path)
    expect(page.locator("#flashes .flash-success")).to_have_text("Settings saved (2 changes).")
    expect(page.get_by_label("Timeout (in seconds)", exact=True)).to_have_value("120")

    fresh()
    stored = qa.department.settings
    assert stored.confirmation_timeout_seconds == 120
    assert stored.confirmation_message == NEW_MESSAGE

    # Exclusions work as plain forms too (no confirmation dialog without scripts).
    page.get_by_label("Device or group").select_option(label=qa.device)
    page.get_by_role("button", name="Add an exclusion").click()
    rows = page.locator("#exclusions tbody tr", has_text=qa.device)
    expect(rows).to_have_count(1)
    assert page.url == live_server(qa.settings_path + "#exclusions")
    assert fresh().scalar(select(func.count(Exclusion.id))) == 1
    page.get_by_role("button", name=f"Remove the exclusion of {qa.device}").click()
    expect(rows).to_have_count(0)
    assert fresh().scalar(select(func.count(Exclusion.id))) == 0

    # An invalid value comes back as the page with the message next to the field.
    page.get_by_label("Require email authorization for incoming connections").check()
    page.get_by_label("Recipient(s)", exact=True).fill("not-an-email")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save").click()
    assert posted.value.status == 422
    expect(page.locator("#email_recipients-error")).to_have_text(
        "“not-an-email” is not a valid email address.")
    fresh()
    assert qa.department.settings.is_email_authorization_required is False


def test_sign_in_with_the_keyboard_only(page, live_server, qa, fresh):
    page.goto(live_server("/login"))
    email = page.get_by_label("Email")
    expect(email).to_be_focused()  # autofocus: typing can start at once
    page.keyboard.type(qa.admin_email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(qa.password)
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Your departments")).to_be_visible()
    expect(page.locator(".topbar .who")).to_have_text(qa.admin_email)
    assert page.url == live_server("/")
    session = fresh()
    signed_in = session.scalars(select(LoginSession).where(LoginSession.ended_at.is_(None))
                                ).all()
    assert [s.user.email for s in signed_in] == [qa.admin_email]
    outcomes = session.scalars(select(AuditEvent.outcome).where(
        AuditEvent.action == "auth.sign_in")).all()
    assert outcomes == ["success"]

    # From there, the keyboard alone reaches the settings and saves them.
    page.get_by_role("link", name="Settings").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(live_server(qa.settings_path))
    page.get_by_label("Timeout (in seconds)", exact=True).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("75")
    save = page.get_by_role("button", name="Save")
    for _ in range(40):
        if save.evaluate("button => button === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(save).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#flashes .flash-success")).to_have_text("Settings saved (1 change).")
    fresh()
    assert qa.department.settings.confirmation_timeout_seconds == 75
