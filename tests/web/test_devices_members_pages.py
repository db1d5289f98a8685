"""Devices, device groups and members of a department."""
from __future__ import annotations

import pytest
from factories import PASSWORD
from statement_counter import StatementLog

from portal.extensions import db
from portal.models import ApiToken, Device, DeviceGroup, Membership, User
from portal.services import crypto

from .helpers import audit_events, control, field_error, location, page, snapshot

ADMIN = "qa-admin@example.com"


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(ADMIN, "department_admin", department)
    return department


@pytest.fixture
def admin(auth, qa):
    assert auth.login(ADMIN).status_code == 303


def fresh(model, **where):
    db.session.expire_all()
    return db.session.query(model).filter_by(**where).all()


def device_rows(doc) -> list[list[str]]:
    table = doc.find("table")
    if table is None:
        return []
    return [[td.text() for td in tr.find_all("td")][:4]
            for tr in table.find("tbody").find_all("tr")]


# --- devices -------------------------------------------------------------------------


def test_devices_empty_state(client, admin, qa):
    doc = page(client.get(f"/departments/{qa.id}/devices"))
    assert doc.find("table") is None
    assert "No devices." in doc.one(class_="empty").text()
    assert doc.find("form", action=f"/departments/{qa.id}/devices") is not None


def test_creating_a_device_shows_its_token_once_and_stores_only_a_hash(client, admin, qa,
                                                                       make):
    group = make.group(qa, "Testers")
    response = client.post(f"/departments/{qa.id}/devices", data={
        "name": "WIN-0859G9I39J0", "os": "Windows 11 Pro", "ip_address": "10.0.0.12",
        "group_id": str(group.id)})
    assert response.status_code == 201
    doc = page(response)
    token = doc.one("input", id="device-token").get("value")
    assert len(token) >= 32
    assert "It is shown only once" in doc.text()

    [device] = fresh(Device, name="WIN-0859G9I39J0")
    assert (device.os, device.ip_address, device.group_id) == (
        "Windows 11 Pro", "10.0.0.12", group.id)
    [row] = fresh(ApiToken, device_id=device.id)
    assert row.token_hash == crypto.keyed_hash(token)
    assert token not in repr(snapshot())
    assert all(token not in repr(e["details"]) for e in audit_events("token.created"))

    listing = client.get(f"/departments/{qa.id}/devices")
    assert token not in listing.get_data(as_text=True)
    assert device_rows(page(listing)) == [
        ["WIN-0859G9I39J0", "Windows 11 Pro", "10.0.0.12", "Testers"]]
    edit = client.get(f"/departments/{qa.id}/devices/{device.id}/edit")
    assert token not in edit.get_data(as_text=True)


@pytest.mark.parametrize("data,field,message", [
    ({"name": "WIN-1"}, "name", "A device named “WIN-1” already exists."),
    ({"name": "WIN-2", "ip_address": "10.0.0.999"}, "ip_address",
     "Enter an IPv4 or IPv6 address."),
    ({"name": "WIN-2", "ip_address": "example.com"}, "ip_address",
     "Enter an IPv4 or IPv6 address."),
    ({"name": "   "}, "name", "Enter a name."),
    ({"name": "WIN-2", "group_id": "99999"}, "group_id", "Choose a group of this department."),
], ids=["duplicate", "bad-ip", "hostname-ip", "blank-name", "unknown-group"])
def test_device_validation_errors_rerender_with_422(client, admin, qa, make, data, field,
                                                    message):
    make.device(qa, "WIN-1")
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/devices",
                           data={"os": "", "ip_address": "", "group_id": "", **data})
    assert response.status_code == 422
    doc = page(response)
    assert message in field_error(doc, field)
    assert control(doc, field).get("aria-invalid") == "true"
    assert device_rows(doc)[0][0] == "WIN-1"  # the list is still there
    assert snapshot() == before


def test_editing_a_device(client, admin, qa, make):
    device = make.device(qa, "WIN-1", ip="10.0.0.1")
    group = make.group(qa, "Testers")
    url = f"/departments/{qa.id}/devices/{device.id}/edit"
    doc = page(client.get(url))
    assert control(doc, "name").get("value") == "WIN-1"
    response = client.post(url, data={"name": "WIN-1B", "os": "Ubuntu 24.04",
                                      "ip_address": "fe80::1", "group_id": str(group.id)})
    assert response.status_code == 303
    assert location(response) == (f"/departments/{qa.id}/devices", {})
    [saved] = fresh(Device, id=device.id)
    assert (saved.name, saved.os, saved.ip_address, saved.group_id) == (
        "WIN-1B", "Ubuntu 24.04", "fe80::1", group.id)
    [event] = audit_events("device.updated")
    assert event["details"]["changes"]["name"] == {"old": "WIN-1", "new": "WIN-1B"}
    assert "Device “WIN-1B” saved." in client.get(f"/departments/{qa.id}/devices").get_data(
        as_text=True)


def test_renaming_a_device_to_a_taken_name_is_refused(client, admin, qa, make):
    device = make.device(qa, "WIN-1")
    make.device(qa, "WIN-2")
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/devices/{device.id}/edit",
                           data={"name": "WIN-2", "os": "", "ip_address": "", "group_id": ""})
    assert response.status_code == 422
    doc = page(response)
    assert field_error(doc, "name") == "A device named “WIN-2” already exists."
    assert doc.one("h1").text() == "Edit device"
    assert snapshot() == before


def test_deleting_a_device_needs_the_confirm_box(client, admin, qa, make):
    device_id = make.device(qa, "WIN-1").id
    url = f"/departments/{qa.id}/devices/{device_id}/delete"
    before = snapshot()
    response = client.post(url, data={})
    assert response.status_code == 422
    assert field_error(page(response), "confirm") == "Tick the box to confirm."
    assert snapshot() == before

    response = client.post(url, data={"confirm": "y"})
    assert response.status_code == 303
    assert fresh(Device, id=device_id) == []
    assert fresh(ApiToken, device_id=device_id) == []
    assert [e["details"]["name"] for e in audit_events("device.deleted")] == ["WIN-1"]
    assert "Device “WIN-1” deleted." in client.get(location(response)[0]).get_data(
        as_text=True)


def test_a_device_of_another_department_is_404_by_id(client, admin, qa, make):
    other = make.device(make.department("Other"), "OTHER-PC")
    before = snapshot()
    assert client.get(f"/departments/{qa.id}/devices/{other.id}/edit").status_code == 404
    assert client.post(f"/departments/{qa.id}/devices/{other.id}/delete",
                       data={"confirm": "y"}).status_code == 404
    assert snapshot() == before


# --- groups --------------------------------------------------------------------------


def test_groups_empty_state(client, admin, qa):
    doc = page(client.get(f"/departments/{qa.id}/groups"))
    assert doc.find("table") is None
    assert "No device groups yet." in doc.one(class_="empty").text()


def test_group_create_rename_delete(client, admin, qa, make):
    base = f"/departments/{qa.id}/groups"
    response = client.post(base, data={"name": "QA  Team   testers "})
    assert response.status_code == 303
    assert location(response) == (base, {})
    [group] = fresh(DeviceGroup, department_id=qa.id)
    assert group.name == "QA Team testers"
    group_id, device_id = group.id, make.device(qa, "WIN-1", group=group).id
    doc = page(client.get(base))
    assert [[td.text() for td in tr.find_all("td")][:2]
            for tr in doc.one("tbody").find_all("tr")] == [["QA Team testers", "1"]]

    duplicate = client.post(base, data={"name": "QA Team testers"})
    assert duplicate.status_code == 422
    assert field_error(page(duplicate), "name") == (
        "A group named “QA Team testers” already exists here.")

    response = client.post(f"{base}/{group_id}/edit", data={"name": "Night shift"})
    assert response.status_code == 303
    assert fresh(DeviceGroup, id=group_id)[0].name == "Night shift"
    assert [(e["details"]["old"], e["details"]["new"]) for e in audit_events("group.renamed")
            ] == [("QA Team testers", "Night shift")]

    before = snapshot()
    refused = client.post(f"{base}/{group_id}/delete", data={})
    assert refused.status_code == 422
    assert field_error(page(refused), "confirm") == "Tick the box to confirm."
    assert snapshot() == before

    response = client.post(f"{base}/{group_id}/delete", data={"confirm": "y"})
    assert response.status_code == 303
    assert fresh(DeviceGroup, id=group_id) == []
    [kept] = fresh(Device, id=device_id)
    assert kept.group_id is None  # the device stays, without a group
    assert "No device groups yet." in client.get(base).get_data(as_text=True)


def test_renaming_a_group_to_a_taken_name_is_refused(client, admin, qa, make):
    group = make.group(qa, "Testers")
    make.group(qa, "Night shift")
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/groups/{group.id}/edit",
                           data={"name": "Night shift"})
    assert response.status_code == 422
    assert field_error(page(response), "name") == (
        "A group named “Night shift” already exists here.")
    assert snapshot() == before


# --- members -------------------------------------------------------------------------


def roles_of(email: str, department) -> set[str]:
    db.session.expire_all()
    return {m.role for m in db.session.query(Membership).join(User)
            .filter(User.email == email, Membership.department_id == department.id)}


def test_members_empty_state(client, auth, qa, make):
    make.user("root@example.com", "admin")
    auth.login("root@example.com")
    empty = make.department("Empty")
    doc = page(client.get(f"/departments/{empty.id}/members"))
    assert "Nobody belongs to this department yet." in doc.one(class_="empty").text()


def test_adding_an_existing_user_by_email_with_a_role(client, admin, qa, make):
    make.user("bob@example.com", "technician", make.department("Other"))
    response = client.post(f"/departments/{qa.id}/members",
                           data={"email": " Bob@Example.COM ", "role": "approver"})
    assert response.status_code == 303
    assert roles_of("bob@example.com", qa) == {"approver"}
    doc = page(client.get(location(response)[0]))
    assert "bob@example.com is now approver of QA Team." in doc.text()
    row = [tr for tr in doc.one("tbody").find_all("tr")
           if tr.find("td").text() == "bob@example.com"]
    assert len(row) == 1 and "Approver" in row[0].text()


def test_adding_a_new_user_with_a_password_lets_them_sign_in(client, auth, admin, qa):
    response = client.post(f"/departments/{qa.id}/members", data={
        "email": "new@example.com", "role": "auditor", "password": "a brand new pw"})
    assert response.status_code == 303
    assert roles_of("new@example.com", qa) == {"auditor"}
    assert [e["details"]["email"] for e in audit_events("user.created")][-1] == (
        "new@example.com")
    assert "a brand new pw" not in repr(snapshot())
    auth.logout()
    assert auth.login("new@example.com", password="a brand new pw").status_code == 303
    assert client.get(f"/departments/{qa.id}/settings").status_code == 200


@pytest.mark.parametrize("data,field,message", [
    ({"email": "new@example.com"}, "password", "A new user needs a password."),
    ({"email": "new@example.com", "password": "short"}, "password",
     "Use at least 10 characters."),
    ({"email": "not an email", "password": "long enough pw"}, "email",
     "Enter a valid email address"),
    ({"email": "new@example.com", "role": "admin", "password": "long enough pw"}, "role",
     "Not a valid choice"),
])
def test_member_validation_errors(client, admin, qa, data, field, message):
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/members", data={"role": "approver", **data})
    assert response.status_code == 422
    doc = page(response)
    assert message in field_error(doc, field)
    assert control(doc, field).get("aria-invalid") == "true"
    assert snapshot() == before


def test_adding_an_existing_user_with_a_password_is_refused(client, auth, admin, qa, make):
    make.user("bob@example.com", "technician", qa)
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/members", data={
        "email": "bob@example.com", "role": "department_admin",
        "password": "attacker chosen pw"})
    assert response.status_code == 422
    assert field_error(page(response), "password") == (
        "This person already has an account: leave the password empty to add the role.")
    assert snapshot() == before
    assert roles_of("bob@example.com", qa) == {"technician"}
    auth.logout()
    assert auth.login("bob@example.com", password="attacker chosen pw").status_code == 422
    assert auth.login("bob@example.com", password=PASSWORD).status_code == 303


def test_removing_a_role(client, admin, qa, make):
    bob = make.user("bob@example.com", "technician", qa)
    make.user("bob@example.com", "approver", qa)
    membership_id = next(m.id for m in bob.memberships if m.role == "technician")
    response = client.post(f"/departments/{qa.id}/members/{membership_id}/delete")
    assert response.status_code == 303
    assert roles_of("bob@example.com", qa) == {"approver"}
    [event] = audit_events("member.removed")
    assert (event["actor"], event["details"]["role"]) == (ADMIN, "technician")
    assert "bob@example.com is no longer technician of QA Team." in client.get(
        location(response)[0]).get_data(as_text=True)
    before = snapshot()
    assert client.post(f"/departments/{qa.id}/members/{membership_id}/delete"
                       ).status_code == 404
    assert snapshot() == before


# --- key pagination ------------------------------------------------------------------


SMALL_PAGES = pytest.mark.parametrize("app_config", [{"PAGE_SIZE": 2}], ids=["page-size-2"])


def walk(client, url) -> tuple[list[list[str]], list[str]]:
    """Follow "Next page »" from `url`; the first column of every page, and the URLs."""
    pages, urls = [], []
    while url:
        urls.append(url)
        doc = page(client.get(url))
        pages.append([tr.find("td").text() for tr in doc.one("tbody").find_all("tr")])
        links = {a.text(): a.get("href") for a in doc.find_all("a")
                 if a.ancestor("nav", "pager")}
        if len(urls) > 1:
            assert "« First page" in links
        url = links.get("Next page »")
        assert len(urls) < 10, "the pager never ends"
    return pages, urls


@SMALL_PAGES
def test_devices_are_listed_a_page_at_a_time(client, admin, qa, make):
    names = [f"dev-{c}" for c in "ebdac"]
    for name in names:
        make.device(qa, name)
    make.device(make.department("Other"), "dev-other")
    pages, urls = walk(client, f"/departments/{qa.id}/devices")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [n for p in pages for n in p] == sorted(names)
    assert "after=" in urls[1]


@SMALL_PAGES
def test_members_are_listed_a_page_at_a_time(client, admin, qa, make):
    emails = [f"m{i}@example.com" for i in (3, 1, 4, 2)]
    for email in emails:
        make.user(email, "approver", qa)
    make.user("m2@example.com", "auditor", qa)  # two roles, still one row
    make.user("outsider@example.com", "approver", make.department("Other"))
    pages, _urls = walk(client, f"/departments/{qa.id}/members")
    listed = [e for p in pages for e in p]
    assert listed == sorted(emails + [ADMIN])
    assert len(pages) == 3


@SMALL_PAGES
def test_an_exact_page_has_no_next_link(client, admin, qa, make):
    make.device(qa, "dev-a")
    make.device(qa, "dev-b")
    pages, urls = walk(client, f"/departments/{qa.id}/devices")
    assert pages == [["dev-a", "dev-b"]] and len(urls) == 1


@pytest.mark.parametrize("role, edit, generate", [
    ("department_admin", True, True), ("approver", False, True), ("auditor", False, False)])
def test_the_device_page_offers_what_the_role_allows_reading_the_roles_once(
        client, auth, qa, make, role, edit, generate):
    device = make.device(qa, "WIN-ROLES-1")
    make.user("viewer@example.com", role, qa)
    assert auth.login("viewer@example.com").status_code == 303
    with StatementLog(db.engine) as log:
        response = client.get(f"/departments/{qa.id}/devices/{device.id}")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert ("Edit this device" in body) is edit
    assert ("Generate one-time password" in body) is generate
    reads = [s for s in log.statements if "FROM memberships" in s]
    # One for the page (its check and what it offers), one for the menu (every department).
    assert len(reads) == 2 and sum("DISTINCT" in s for s in reads) == 1
