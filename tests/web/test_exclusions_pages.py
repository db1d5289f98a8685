"""The "Exclude Devices" table on the settings page, with and without htmx."""
from __future__ import annotations

import pytest
from factories import NOW

from portal.extensions import db
from portal.models import Exclusion
from portal.services import departments
from portal.services.actors import CLI

from .helpers import HTMX, audit_events, location, page, snapshot

ADMIN = "qa-admin@example.com"
COLUMNS = ["Device/Group Name", "OS", "IP Address", "Excluded by"]


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(ADMIN, "department_admin", department)
    return department


@pytest.fixture
def things(make, qa):
    group = make.group(qa, "Testers")
    device = make.device(qa, "WIN-0859G9I39J0", os="Windows 11 Pro", ip="10.0.0.12")
    other = make.device(make.department("Other"), "OTHER-PC")
    return {"device": device.id, "group": group.id, "other": other.id}


@pytest.fixture
def admin(auth, qa):
    assert auth.login(ADMIN).status_code == 303


def rows(doc) -> list[list[str]]:
    """The table's rows as the cells' text (without the Remove button column)."""
    section = doc.one("section", id="exclusions")
    table = section.find("table")
    if table is None:
        return []
    header = [th.text() for th in table.find("thead").find_all("th")]
    assert header[:4] == COLUMNS
    return [[td.text() for td in tr.find_all("td")][:4]
            for tr in table.find("tbody").find_all("tr")]


def stored() -> list[tuple]:
    db.session.expire_all()
    return [(e.device_id, e.group_id, e.excluded_by_email)
            for e in db.session.query(Exclusion).order_by(Exclusion.id)]


def test_empty_table_says_so_and_offers_the_picker(client, admin, qa, things):
    doc = page(client.get(f"/departments/{qa.id}/settings"))
    section = doc.one("section", id="exclusions")
    assert section.one("h2").text() == "Exclude Devices"
    assert "No device or group is excluded." in section.text()
    assert rows(doc) == []
    options = {o.get("value"): o.text() for o in section.find_all("option")}
    assert options[f"device:{things['device']}"] == "WIN-0859G9I39J0"
    assert options[f"group:{things['group']}"] == "Testers"
    assert f"device:{things['other']}" not in options
    assert [b.text() for b in section.find_all("button")] == ["Add an exclusion"]


def test_adding_a_device_and_a_group_via_htmx(client, admin, qa, things):
    url = f"/departments/{qa.id}/exclusions"
    response = client.post(url, data={"target": f"device:{things['device']}"}, headers=HTMX)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body
    doc = page(response)
    assert doc.children and doc.find("section", id="exclusions") is doc.children[0]
    [row] = rows(doc)
    assert row[:3] == ["WIN-0859G9I39J0", "Windows 11 Pro", "10.0.0.12"]
    assert row[3].startswith(ADMIN + " ") and row[3].endswith(" UTC")  # who, and when
    assert doc.one(hx_swap_oob="innerHTML:#flashes").text() == (
        "“WIN-0859G9I39J0” excluded from session confirmation.")

    response = client.post(url, data={"target": f"group:{things['group']}"}, headers=HTMX)
    assert response.status_code == 200
    table = rows(page(response))
    assert [r[:3] for r in table] == [["WIN-0859G9I39J0", "Windows 11 Pro", "10.0.0.12"],
                                      ["Testers group", "—", "—"]]
    assert all(r[3].startswith(ADMIN) for r in table)
    assert stored() == [(things["device"], None, ADMIN), (None, things["group"], ADMIN)]
    assert [e["details"]["name"] for e in audit_events("exclusion.added")] == [
        "WIN-0859G9I39J0", "Testers"]
    # What is excluded is no longer offered.
    offered = {o.get("value") for o in page(response).find_all("option")}
    assert f"device:{things['device']}" not in offered
    assert f"group:{things['group']}" not in offered
    # And the full page shows the same table.
    assert [r[:3] for r in rows(page(client.get(f"/departments/{qa.id}/settings")))] == [
        r[:3] for r in table]


def test_fragment_get_returns_just_the_table(client, admin, qa, things):
    response = client.get(f"/departments/{qa.id}/exclusions", headers=HTMX)
    assert response.status_code == 200
    assert "<html" not in response.get_data(as_text=True)
    assert page(response).one("section", id="exclusions")


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_a_device_of_another_department_is_refused(client, admin, qa, things, htmx):
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/exclusions",
                           data={"target": f"device:{things['other']}"},
                           headers=HTMX if htmx else {})
    assert response.status_code == 422
    doc = page(response)
    error = doc.one("section", id="exclusions").one(class_="error")
    assert error.text() == "Choose a device or a group of this department."
    assert doc.one("select", name="target").get("aria-invalid") == "true"
    assert "OTHER-PC" not in response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_a_duplicate_is_refused(client, admin, qa, things, htmx):
    url = f"/departments/{qa.id}/exclusions"
    assert client.post(url, data={"target": f"device:{things['device']}"}).status_code == 303
    before = snapshot()
    response = client.post(url, data={"target": f"device:{things['device']}"},
                           headers=HTMX if htmx else {})
    assert response.status_code == 422
    assert page(response).one("section", id="exclusions").one(class_="error").text() == (
        "“WIN-0859G9I39J0” is already excluded.")
    assert snapshot() == before


@pytest.mark.parametrize("target", ["", "device:", "printer:1", "device:abc", "group:99999"])
def test_nothing_or_nonsense_chosen_is_refused(client, admin, qa, things, target):
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/exclusions", data={"target": target},
                           headers=HTMX)
    assert response.status_code == 422
    assert page(response).one("section", id="exclusions").find(class_="error").text()
    assert snapshot() == before


def test_removing_via_htmx_removes_the_row_and_audits(client, admin, qa, things):
    url = f"/departments/{qa.id}/exclusions"
    client.post(url, data={"target": f"device:{things['device']}"}, headers=HTMX)
    response = client.post(url, data={"target": f"group:{things['group']}"}, headers=HTMX)
    doc = page(response)
    forms = doc.find_all("form", hx_target="#exclusions")
    removes = [f for f in forms if f.get("action").endswith("/delete")]
    assert len(removes) == 2
    first = removes[0]
    assert first.get("hx-post") == first.get("action")
    assert first.one("button").get("aria-label") == "Remove the exclusion of WIN-0859G9I39J0"

    response = client.post(first.get("action"), headers=HTMX)
    assert response.status_code == 200
    doc = page(response)
    assert [r[0] for r in rows(doc)] == ["Testers group"]
    assert doc.one(hx_swap_oob="innerHTML:#flashes").text() == (
        "“WIN-0859G9I39J0” is no longer excluded.")
    assert stored() == [(None, things["group"], ADMIN)]
    removed = audit_events("exclusion.removed")
    assert [(e["actor"], e["details"]["name"]) for e in removed] == [(ADMIN, "WIN-0859G9I39J0")]

    # Removing it again: the table says so, nothing else changes.
    before = snapshot()
    again = client.post(first.get("action"), headers=HTMX)
    assert again.status_code == 200
    assert page(again).one(hx_swap_oob="innerHTML:#flashes").text() == (
        "That exclusion no longer exists.")
    assert snapshot() == before


def test_without_htmx_add_and_remove_redirect_to_the_settings_page(client, admin, qa, things):
    settings = f"/departments/{qa.id}/settings"
    response = client.post(f"/departments/{qa.id}/exclusions",
                           data={"target": f"device:{things['device']}"})
    assert response.status_code == 303
    assert location(response) == (settings, {})
    assert response.headers["Location"].endswith("#exclusions")
    doc = page(client.get(settings))
    assert [r[0] for r in rows(doc)] == ["WIN-0859G9I39J0"]
    assert "“WIN-0859G9I39J0” excluded from session confirmation." in doc.text()

    exclusion_id = db.session.query(Exclusion.id).scalar()
    response = client.post(f"/departments/{qa.id}/exclusions/{exclusion_id}/delete")
    assert response.status_code == 303
    assert location(response) == (settings, {})
    doc = page(client.get(settings))
    assert rows(doc) == []
    assert "“WIN-0859G9I39J0” is no longer excluded." in doc.text()
    assert stored() == []


def test_removing_an_exclusion_of_another_department_is_404(client, admin, qa, things, make):
    other = make.department("Other")
    exclusion = departments.add_exclusion(department=other, target=f"device:{things['other']}",
                                          actor=CLI, now=NOW)
    db.session.commit()
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/exclusions/{exclusion.id}/delete")
    assert response.status_code == 404
    assert snapshot() == before
