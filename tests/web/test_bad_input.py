"""Junk into every form and URL: always a 4xx with a message, never a 500, and nothing
half-written (security.md 40; design.md "Never a 500 for bad input")."""
from __future__ import annotations

import pytest

from portal.extensions import db
from portal.models import Device, LoginSession

from .helpers import HTMX, page, settings_form, snapshot

ADMIN = "qa-admin@example.com"
ROOT = "root@example.com"
HUGE = "x" * 20_000  # under the 64 KiB body limit
ODD = ["\x00", "nul\x00inside", "\u202eevil", "\ufeff", "\ud7ff", "\U0001f4bb" * 200,
       "\r\n", "\t", " ", HUGE, "9" * 40, "-1", "1e3", "٣٠", "²"]


@pytest.fixture
def world(make):
    qa = make.department("QA Team")
    group = make.group(qa, "Testers")
    device = make.device(qa, "WIN-1", group=group)
    member = make.user("bob@example.com", "technician", qa)
    make.user(ADMIN, "department_admin", qa)
    make.user(ROOT, "admin")
    return {"id": qa.id, "dev": device.id, "gid": group.id,
            "mid": member.memberships[0].id}


@pytest.fixture
def admin(auth, world):
    assert auth.login(ROOT).status_code == 303


def post(client, url, world, data, htmx=False):
    return client.post(url.format(**world), data=data, headers=HTMX if htmx else {})


def assert_refused(response, before):
    assert 400 <= response.status_code < 500, (response.status_code,
                                               response.get_data(as_text=True)[:500])
    assert snapshot() == before, "a refused request left something behind"


# --- forms ---------------------------------------------------------------------------

NUMBERS = ["confirmation_timeout_seconds", "email_authorization_timeout_seconds",
           "otp_expiration_minutes", "otp_min_interval_minutes"]


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
@pytest.mark.parametrize("field", NUMBERS + ["email_recipients"])
def test_settings_refuse_junk(client, admin, world, subtests, field, htmx):
    for value in ODD:
        if field != "email_recipients" and value == "٣٠":
            continue  # Arabic-Indic digits are a valid number (30)
        if field == "email_recipients" and not value.strip():
            continue  # blank is no recipients, which is allowed
        with subtests.test(value=value[:20]):
            before = snapshot()
            response = post(client, "/departments/{id}/settings", world,
                            settings_form(**{field: value}), htmx)
            assert_refused(response, before)
            assert response.status_code == 422


@pytest.mark.parametrize("value", ["\x00", "nul\x00inside", HUGE, "\ud7ff" * 600])
def test_settings_refuse_a_junk_message(client, admin, world, value):
    before = snapshot()
    response = post(client, "/departments/{id}/settings", world,
                    settings_form(confirmation_message=value))
    assert_refused(response, before)


def test_settings_with_every_field_missing(client, admin, world):
    before = snapshot()
    response = post(client, "/departments/{id}/settings", world, {})
    assert_refused(response, before)
    assert response.status_code == 422


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_exclusions_refuse_junk(client, admin, world, subtests, htmx):
    for target in ["", "device:", "device:²", "device:٣", "group:-1", "device:" + "9" * 40,
                   "group:1e3", "\x00", "device:\x00", HUGE, "device:1:2", "DEVICE:1"]:
        with subtests.test(target=target[:20]):
            before = snapshot()
            response = post(client, "/departments/{id}/exclusions", world,
                            {"target": target}, htmx)
            assert_refused(response, before)
            assert response.status_code == 422


def test_exclusions_with_no_field_at_all(client, admin, world):
    before = snapshot()
    assert_refused(post(client, "/departments/{id}/exclusions", world, {}), before)


DEVICE = {"name": "NEW-PC", "os": "", "ip_address": "", "group_id": ""}
DEVICE_JUNK = ([("name", v) for v in ODD if v not in ("9" * 40, "-1", "1e3", "٣٠", "²")]
               + [("os", v) for v in ("\x00", "\u202e", HUGE, "a\x00b")]
               + [("ip_address", v) for v in ("\x00", "1.2.3.4.5", "::g", HUGE, "٣.٣.٣.٣")]
               + [("group_id", v) for v in ("abc", "9" * 40, "-1", "\x00", "1.5", "²")])


@pytest.mark.parametrize("url", ["/departments/{id}/devices",
                                 "/departments/{id}/devices/{dev}/edit"], ids=["create", "edit"])
def test_device_forms_refuse_junk(client, admin, world, subtests, url):
    for field, value in DEVICE_JUNK:
        with subtests.test(field=field, value=value[:20]):
            before = snapshot()
            response = post(client, url, world, {**DEVICE, field: value})
            assert_refused(response, before)
            assert response.status_code == 422


@pytest.mark.parametrize("url", ["/departments/{id}/devices",
                                 "/departments/{id}/devices/{dev}/edit",
                                 "/departments/{id}/groups",
                                 "/departments/{id}/groups/{gid}/edit",
                                 "/departments/{id}/members", "/departments",
                                 "/departments/{id}/edit"])
def test_forms_with_every_field_missing(client, admin, world, url):
    before = snapshot()
    response = post(client, url, world, {})
    assert_refused(response, before)
    assert response.status_code == 422


NAMES = ["\x00", "nul\x00inside", "\u202eevil", HUGE, "", "   ", "\r\n"]


@pytest.mark.parametrize("url", ["/departments/{id}/groups", "/departments/{id}/groups/{gid}/edit",
                                 "/departments", "/departments/{id}/edit"])
def test_name_forms_refuse_junk(client, admin, world, subtests, url):
    for name in NAMES:
        with subtests.test(name=name[:20]):
            before = snapshot()
            response = post(client, url, world, {"name": name})
            assert_refused(response, before)
            assert response.status_code == 422


MEMBER_JUNK = [
    {"email": "\x00@example.com", "role": "approver", "password": "long enough pw"},
    {"email": "nul\x00@example.com", "role": "approver", "password": "long enough pw"},
    {"email": HUGE + "@example.com", "role": "approver", "password": "long enough pw"},
    {"email": "\u202e@example.com", "role": "approver", "password": "long enough pw"},
    {"email": "new@example.com", "role": "\x00", "password": "long enough pw"},
    {"email": "new@example.com", "role": "admin", "password": "long enough pw"},
    {"email": "new@example.com", "role": "", "password": "long enough pw"},
    {"email": "new@example.com", "role": "approver", "password": "x" * 2000},
    {"email": "new@example.com", "role": "approver", "password": "\x00" * 5},
    {"email": "bob@example.com", "role": "approver", "password": "\x00" * 12},
]


def test_member_form_refuses_junk(client, admin, world, subtests):
    for data in MEMBER_JUNK:
        with subtests.test(data=repr(data)[:60]):
            before = snapshot()
            response = post(client, "/departments/{id}/members", world, data)
            assert_refused(response, before)
            assert response.status_code == 422


def test_sign_in_refuses_junk_without_a_500(client, world, subtests):
    for email in ["\x00", "a\x00@example.com", HUGE, "\u202e", "\U0001f4bb", "", "a@b",
                  "ROOT@EXAMPLE.COM\x00", "root@example.com\r\nX: y"]:
        with subtests.test(email=email[:20]):
            response = client.post("/login", data={"email": email,
                                                   "password": "\x00wrong\u202e"})
            assert 400 <= response.status_code < 500, response.status_code
            db.session.expire_all()
            assert db.session.query(LoginSession).count() == 0


def test_accepted_oddities_are_stored_and_shown_as_typed(client, admin, world):
    response = post(client, "/departments/{id}/devices", world,
                    {**DEVICE, "name": "PC-\U0001f4bb-Zoë", "os": "Windows 11 ✓",
                     "ip_address": " 10.0.0.7 "})
    assert response.status_code == 201
    db.session.expire_all()
    device = db.session.query(Device).filter_by(name="PC-\U0001f4bb-Zoë").one()
    assert (device.os, device.ip_address) == ("Windows 11 ✓", "10.0.0.7")
    listing = client.get(f"/departments/{world['id']}/devices").get_data(as_text=True)
    assert "PC-\U0001f4bb-Zoë" in listing and "Windows 11 ✓" in listing


# --- URLs and methods ----------------------------------------------------------------

UNKNOWN = [
    ("GET", "/departments/{id}/devices/999999/edit", 404),
    ("POST", "/departments/{id}/devices/999999/edit", 404),
    ("POST", "/departments/{id}/devices/999999/delete", 404),
    ("GET", "/departments/{id}/groups/999999/edit", 404),
    ("POST", "/departments/{id}/groups/999999/delete", 404),
    ("POST", "/departments/{id}/exclusions/999999/delete", 404),
    ("POST", "/departments/{id}/members/999999/delete", 404),
    ("GET", "/departments/999999/settings", 404),
    ("GET", "/departments/999999/edit", 404),
    ("POST", "/departments/999999/devices", 404),
    ("GET", "/departments/99999999999999999999/settings", 404),
    ("GET", "/departments/{id}/devices/99999999999999999999/edit", 404),
    ("POST", "/departments/{id}/members/99999999999999999999/delete", 404),
    ("GET", "/departments/-1/settings", 404),
    ("GET", "/departments/abc/settings", 404),
    ("GET", "/departments/{id}/devices/%00/edit", 404),
    ("GET", "/departments/{id}/devices?after=%00", 200),
    ("GET", "/departments/{id}/members?after=" + "z" * 5000, 200),
    ("PUT", "/departments/{id}/settings", 405),
    ("DELETE", "/departments/{id}/devices/{dev}/edit", 405),
    ("GET", "/departments/{id}/exclusions/1/delete", 405),
    ("GET", "/departments/{id}/devices/{dev}/delete", 405),
    ("PATCH", "/login", 405),
    ("GET", "/logout", 405),
]


def test_unknown_ids_and_wrong_methods(client, admin, world, subtests):
    for method, url, status in UNKNOWN:
        with subtests.test(f"{method} {url[:60]}"):
            before = snapshot()
            response = client.open(url.format(**world), method=method, data={"confirm": "y"})
            assert response.status_code == status, response.get_data(as_text=True)[:300]
            assert snapshot() == before


def test_a_department_admin_probing_unknown_ids_gets_403_not_404(client, auth, world):
    auth.login(ADMIN)
    assert client.get("/departments/999999/settings").status_code == 403
    assert client.get("/departments/999999/devices").status_code == 403
    # An id no department can have is simply not found.
    assert client.get("/departments/99999999999999999999/devices").status_code == 404


@pytest.mark.parametrize("url,extra", [
    ("/login", {}),
    ("/departments/{id}/settings", {}),
    ("/departments/{id}/devices", {"name": "BIG"}),
    ("/departments/{id}/exclusions", {}),
])
def test_a_body_over_64_kib_answers_413(client, admin, world, url, extra):
    before = snapshot()
    response = client.post(url.format(**world), data={**extra, "padding": "x" * (65 * 1024)})
    assert response.status_code == 413
    assert "larger than 64 KiB" in response.get_data(as_text=True)
    assert snapshot() == before


def test_a_body_over_64_kib_via_htmx_gets_a_flash_not_a_page(client, admin, world):
    response = client.post(f"/departments/{world['id']}/settings",
                           data={"padding": "x" * (65 * 1024)}, headers=HTMX)
    assert response.status_code == 413
    assert "<html" not in response.get_data(as_text=True)
    assert page(response).one(hx_swap_oob="innerHTML:#flashes")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/api/v1/anything", "/api/v1/session-requests/x/y/z",
                                  "/api/v1/", "/api/v1"])
def test_unknown_api_paths_answer_json_404(client, path, method):
    response = client.open(path, method=method, json={"x": 1})
    assert response.status_code == 404
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "not_found" and error["message"]


def test_api_body_over_64_kib_answers_json_413(client):
    response = client.post("/api/v1/anything", data="x" * (65 * 1024),
                           content_type="application/json")
    assert response.status_code in (404, 413)
    assert response.is_json
