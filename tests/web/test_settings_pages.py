"""The department settings page (design.md, "Department settings")."""
from __future__ import annotations

import pytest
from factories import DESIGN_LABELS

from portal.extensions import db
from portal.models import DepartmentSettings

from .helpers import (
    HTMX,
    audit_events,
    control,
    field_container,
    field_error,
    location,
    page,
    settings_form,
    snapshot,
)

ADMIN = "qa-admin@example.com"

# design.md, verbatim
SECTIONS = ["Session Confirmation", "Email Authorization", "One-Time Passwords", "Approvals"]
LABELS = DESIGN_LABELS


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(ADMIN, "department_admin", department)
    make.user("auditor@example.com", "auditor", department)
    return department


@pytest.fixture
def url(qa):
    return f"/departments/{qa.id}/settings"


@pytest.fixture
def admin(auth, qa):
    assert auth.login(ADMIN).status_code == 303


def stored(department_id) -> DepartmentSettings:
    db.session.expire_all()
    return db.session.get(DepartmentSettings, department_id)


def test_page_shows_sections_labels_defaults_and_save(client, admin, url):
    doc = page(client.get(url))
    form = doc.one("form", id="settings-form")
    assert [h.text() for h in form.find_all("h2")] == SECTIONS
    labels = {label.get("for"): label.text() for label in form.find_all("label")}
    for name, text in LABELS.items():
        assert labels[control(form, name).get("id")] == text, name
    assert control(form, "confirmation_timeout_seconds").get("value") == "60"
    assert control(form, "email_authorization_timeout_seconds").get("value") == "180"
    assert control(form, "otp_expiration_minutes").get("value") == "30"
    assert control(form, "otp_min_interval_minutes").get("value") == "60"
    checked = {name for name in LABELS if control(form, name).has("checked")}
    assert checked == {"is_sign_in_required_to_decide"}
    assert "A technician is requesting" in control(form, "confirmation_message").text()
    assert [b.text() for b in form.find_all("button", type="submit")] == ["Save"]
    assert not any(fs.has("disabled") for fs in form.find_all("fieldset"))


def test_plain_post_saves_redirects_and_audits_old_and_new(client, admin, url, qa):
    data = settings_form(confirmation_timeout_seconds=120, is_email_authorization_required=True,
                         email_recipients="Boss@Example.com, second@example.com",
                         is_sign_in_required_to_decide=False)
    response = client.post(url, data=data)
    assert response.status_code == 303
    assert location(response) == (url, {})
    follow = client.get(url)
    assert "Settings saved (4 changes)." in follow.get_data(as_text=True)
    saved = stored(qa.id)
    assert saved.confirmation_timeout_seconds == 120
    assert saved.is_email_authorization_required is True
    assert saved.recipients == ["Boss@example.com", "second@example.com"]
    assert saved.is_sign_in_required_to_decide is False
    events = {e["details"]["field"]: e for e in audit_events("settings.changed")}
    assert set(events) == {"confirmation_timeout_seconds", "is_email_authorization_required",
                           "email_recipients", "is_sign_in_required_to_decide"}
    assert (events["confirmation_timeout_seconds"]["details"]["old"],
            events["confirmation_timeout_seconds"]["details"]["new"]) == (60, 120)
    assert events["is_sign_in_required_to_decide"]["details"]["old"] is True
    assert events["is_sign_in_required_to_decide"]["details"]["new"] is False
    assert all(e["actor"] == ADMIN and e["department_id"] == qa.id for e in events.values())
    # The page shows what was saved.
    doc = page(follow)
    assert control(doc, "confirmation_timeout_seconds").get("value") == "120"
    assert not control(doc, "is_sign_in_required_to_decide").has("checked")


def test_saving_the_same_values_changes_nothing(client, admin, url):
    before = snapshot()
    response = client.post(url, data=settings_form())
    assert response.status_code == 303
    assert "No changes to save." in client.get(url).get_data(as_text=True)
    assert snapshot() == before


def test_htmx_post_returns_the_form_fragment_with_an_oob_flash(client, admin, url, qa):
    response = client.post(url, data=settings_form(otp_expiration_minutes=45), headers=HTMX)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body and "<body" not in body
    doc = page(response)
    assert doc.one("form", id="settings-form")
    assert control(doc, "otp_expiration_minutes").get("value") == "45"
    flash = doc.one(hx_swap_oob="innerHTML:#flashes")
    assert flash.text() == "Settings saved (1 change)."
    assert "Location" not in response.headers
    assert "HX-Request" in response.headers.get("Vary", "")
    assert stored(qa.id).otp_expiration_minutes == 45


INVALID = [
    ("confirmation_timeout_seconds", "5", "Enter a whole number from 10 to 600."),
    ("confirmation_timeout_seconds", "601", "Enter a whole number from 10 to 600."),
    ("email_authorization_timeout_seconds", "29", "Enter a whole number from 30 to 3600."),
    ("otp_expiration_minutes", "0", "Enter a whole number from 1 to 1440."),
    ("otp_min_interval_minutes", "1441", "Enter a whole number from 1 to 1440."),
    ("confirmation_message", "x" * 501, "Keep the message to 500 characters or fewer"),
    ("email_recipients", "not-an-email", "“not-an-email” is not a valid email address."),
    ("email_recipients", "\n".join(f"r{i}@example.com" for i in range(21)),
     "Enter at most 20 recipients (you entered 21)."),
    ("confirmation_timeout_seconds", "sixty", "Enter a whole number from 10 to 600."),
    ("email_authorization_timeout_seconds", "60.5", "Enter a whole number from 30 to 3600."),
    ("otp_expiration_minutes", "", "Enter a whole number."),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
@pytest.mark.parametrize("name,value,message", INVALID, ids=lambda v: str(v)[:20])
def test_invalid_value_is_refused_next_to_its_field(client, admin, url, name, value, message,
                                                    htmx):
    before = snapshot()
    response = client.post(url, data=settings_form(**{name: value}),
                           headers=HTMX if htmx else {})
    assert response.status_code == 422
    doc = page(response)
    assert message in field_error(doc, name)
    assert control(doc, name).get("aria-invalid") == "true"
    box = field_container(doc, name)
    assert box.find(class_="error").get("id") in control(doc, name).get("aria-describedby")
    others = [n for n in LABELS if n != name]
    assert not any(field_error(doc, other) for other in others)
    assert snapshot() == before
    if htmx:
        assert "<html" not in response.get_data(as_text=True)
        assert doc.one(hx_swap_oob="innerHTML:#flashes").text() == (
            "Please correct the highlighted fields.")
    # What was typed stays in the form.
    if name != "email_recipients" and value:
        shown = control(doc, name)
        assert (shown.text() if shown.tag == "textarea" else shown.get("value")) == value


def test_email_authorization_needs_a_recipient(client, admin, url):
    before = snapshot()
    response = client.post(url, data=settings_form(is_email_authorization_required=True))
    assert response.status_code == 422
    doc = page(response)
    assert field_error(doc, "email_recipients") == (
        "Enter at least one recipient to require email authorization.")
    assert control(doc, "email_recipients").get("aria-invalid") == "true"
    assert snapshot() == before


def test_confirmation_shown_needs_a_message(client, admin, url):
    response = client.post(url, data=settings_form(is_confirmation_shown=True,
                                                   confirmation_message="   "))
    assert response.status_code == 422
    assert field_error(page(response), "confirmation_message") == (
        "Enter the message the end user will see.")


def test_twenty_recipients_one_per_line_or_commas_are_accepted(client, admin, url, qa):
    addresses = [f"r{i}@example.com" for i in range(20)]
    text = "\n".join(addresses[:10]) + "\n" + ", ".join(addresses[10:])
    response = client.post(url, data=settings_form(email_recipients=text))
    assert response.status_code == 303
    assert stored(qa.id).recipients == addresses


def test_boundaries_are_accepted(client, admin, url, qa):
    response = client.post(url, data=settings_form(
        confirmation_timeout_seconds=10, email_authorization_timeout_seconds=3600,
        otp_expiration_minutes=1440, otp_min_interval_minutes=1,
        confirmation_message="m" * 500))
    assert response.status_code == 303
    saved = stored(qa.id)
    assert (saved.confirmation_timeout_seconds, saved.email_authorization_timeout_seconds,
            saved.otp_expiration_minutes, saved.otp_min_interval_minutes) == (10, 3600, 1440, 1)
    assert saved.confirmation_message == "m" * 500


def test_auditor_sees_the_form_disabled_and_no_save_button(client, auth, url):
    auth.login("auditor@example.com")
    response = client.get(url)
    assert response.status_code == 200
    doc = page(response)
    form = doc.one("form", id="settings-form")
    fieldsets = form.find_all("fieldset")
    assert len(fieldsets) == len(SECTIONS) and all(fs.has("disabled") for fs in fieldsets)
    assert all(control(form, name).ancestor("fieldset").has("disabled") for name in LABELS)
    assert form.find_all("button") == []
    assert "only department admins can change them" in doc.text()
    # The exclusions table is read-only too.
    exclusions = doc.one("section", id="exclusions")
    assert exclusions.find("button") is None and exclusions.find("form") is None


# --- the directory -------------------------------------------------------------------

NO_DIRECTORY = ("No directory is configured (PORTAL_LDAP_URL is not set): directory users "
                "can't get one-time passwords until it is.")
DIRECTORY_BOX = "is_otp_auto_sent_to_directory_users"


@pytest.fixture
def app_config(request):
    """{} unless a test passes `app_config` through indirect parametrization."""
    return getattr(request, "param", {})


def directory_hint(doc) -> str | None:
    box = field_container(doc, DIRECTORY_BOX)
    hint = box.find("p", class_="hint")
    if hint is None:
        return None
    assert hint.get("id") in control(doc, DIRECTORY_BOX).get("aria-describedby", "").split()
    return hint.text()


def test_without_a_directory_the_page_says_so_by_the_directory_box(client, admin, url):
    assert directory_hint(page(client.get(url))) == NO_DIRECTORY
    # The box can still be ticked ahead of the directory; the hint stays after a save.
    response = client.post(url, data=settings_form(is_otp_allowed=True,
                                                   is_otp_auto_sent_to_directory_users=True),
                           headers=HTMX)
    assert response.status_code == 200
    assert directory_hint(page(response)) == NO_DIRECTORY


@pytest.mark.parametrize("app_config", [{"LDAP_URL": "ldap://dc1.example.test"}],
                         indirect=True)
def test_with_a_directory_the_page_says_nothing_about_it(client, admin, url):
    assert directory_hint(page(client.get(url))) is None
    response = client.post(url, data=settings_form(is_otp_allowed=True), headers=HTMX)
    assert directory_hint(page(response)) is None
    assert NO_DIRECTORY not in response.get_data(as_text=True)
