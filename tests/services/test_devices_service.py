"""Devices and device groups: unique names, clean addresses, groups of the same department,
key pagination, and deleting a group."""
from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.models import ApiToken, AuditEvent, Device, DeviceGroup, Exclusion
from portal.services import accounts, departments, devices
from portal.services.actors import CLI, Actor
from portal.domain.errors import InvalidInputError, NotFoundError

LATER = NOW + timedelta(minutes=5)
ADMIN = Actor(label="qa-admin@example.com", client_ip="192.0.2.20")


@pytest.fixture
def qa(make):
    return make.department("QA Team")


@pytest.fixture
def testers(make, qa):
    return make.group(qa, "Testers")


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def events(action):
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def create(department, name, **kwargs):
    device, token = devices.create_device(department=department, name=name, actor=ADMIN,
                                          now=LATER, **kwargs)
    db.session.commit()
    return device, token


# --- devices ---------------------------------------------------------------------------


def test_created_device_is_stored_audited_and_gets_a_working_token(qa, testers):
    device, token = create(qa, "  WIN-0859G9I39J0 ", os="Windows  11 Pro",
                           ip_address=" 10.0.0.5 ", group_id=testers.id)
    db.session.expire_all()
    device = db.session.get(Device, device.id)
    assert (device.name, device.os, device.ip_address, device.group.name,
            device.department_id, device.is_locked, device.created_at) == (
        "WIN-0859G9I39J0", "Windows 11 Pro", "10.0.0.5", "Testers", qa.id, False, LATER)
    found = accounts.find_token(token)
    assert found.device.id == device.id and found.user is None
    assert token not in " ".join(db.session.scalars(select(ApiToken.token_hash)))
    (event,) = events("device.created")
    assert event.details == {"name": "WIN-0859G9I39J0", "os": "Windows 11 Pro",
                             "ip_address": "10.0.0.5", "group": "Testers"}
    assert token not in repr(event.details)


def test_device_names_are_unique_across_departments(make, qa):
    create(qa, "WIN-0859G9I39J0")
    sales = make.department("Sales Team")
    with pytest.raises(InvalidInputError) as caught:
        create(sales, "WIN-0859G9I39J0")
    assert caught.value.field_errors == {
        "name": ["A device named “WIN-0859G9I39J0” already exists."]}
    db.session.rollback()
    assert count(Device) == 1


@pytest.mark.parametrize("typed, stored", [
    ("", ""),
    ("192.168.1.20", "192.168.1.20"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
])
def test_ip_addresses_are_stored_normalised(qa, typed, stored):
    device, _ = create(qa, "PC-1", ip_address=typed)
    assert device.ip_address == stored


@pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.0", "host.example.com",
                                 "10.0.0.1/24", "1.2.3.4 5", "<script>"])
def test_bad_ip_address_is_rejected_and_nothing_is_created(qa, bad):
    with pytest.raises(InvalidInputError) as caught:
        create(qa, "PC-1", ip_address=bad)
    assert caught.value.field_errors == {"ip_address": ["Enter an IPv4 or IPv6 address."]}
    db.session.rollback()
    assert count(Device) == 0 and count(ApiToken) == 0


def test_group_must_belong_to_the_department(make, qa):
    laptops = make.group(make.department("Sales Team"), "Laptops")
    with pytest.raises(InvalidInputError) as caught:
        create(qa, "PC-1", group_id=laptops.id)
    assert caught.value.field_errors == {"group_id": ["Choose a group of this department."]}
    db.session.rollback()
    with pytest.raises(InvalidInputError):
        create(qa, "PC-1", group_id=999999)
    db.session.rollback()
    assert count(Device) == 0


def test_update_device_audits_each_change_and_rejects_a_taken_name(qa, testers):
    device, _ = create(qa, "PC-1", os="Windows 10", ip_address="10.0.0.1")
    create(qa, "PC-2")
    devices.update_device(department=qa, device=device, name="PC-1", os="Windows 11",
                          ip_address="10.0.0.1", group_id=testers.id, actor=ADMIN, now=LATER)
    db.session.commit()
    (event,) = events("device.updated")
    assert event.details["changes"] == {"os": {"old": "Windows 10", "new": "Windows 11"},
                                        "group": {"old": None, "new": "Testers"}}
    with pytest.raises(InvalidInputError):
        devices.update_device(department=qa, device=device, name="PC-2", os="", ip_address="",
                              group_id=None, actor=ADMIN, now=LATER)
    db.session.rollback()
    assert db.session.get(Device, device.id).name == "PC-1"


def test_get_device_of_another_department_is_not_found(make, qa):
    device, _ = create(qa, "PC-1")
    sales = make.department("Sales Team")
    assert devices.get_device(qa, device.id).id == device.id
    with pytest.raises(NotFoundError):
        devices.get_device(sales, device.id)


def test_deleting_a_device_kills_its_token_and_exclusion(qa):
    device, token = create(qa, "PC-1")
    departments.add_exclusion(department=qa, target=f"device:{device.id}", actor=ADMIN,
                              now=LATER)
    db.session.commit()
    devices.delete_device(department=qa, device=device, actor=ADMIN, now=LATER)
    db.session.commit()
    db.session.expire_all()
    assert accounts.find_token(token) is None
    assert count(Exclusion) == 0
    assert [e.details["name"] for e in events("device.deleted")] == ["PC-1"]


# --- listing ---------------------------------------------------------------------------

NAMES = ["WIN-07", "WIN-03", "MAC-01", "WIN-01", "UBUNTU-02", "WIN-05", "BUILD-01"]


def walk(department, limit):
    pages, after = [], None
    while True:
        page = devices.list_devices(department, after=after, limit=limit)
        pages.append([d.name for d in page.items])
        if page.next_after is None:
            return pages
        assert page.next_after == page.items[-1].name
        after = page.next_after
        assert len(pages) < 20, "pagination does not end"


def test_pages_list_every_device_once_in_name_order(make, qa):
    for name in NAMES:
        create(qa, name)
    sales = make.department("Sales Team")
    create(sales, "AAA-SALES")  # another department's device is never listed
    pages = walk(qa, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [name for page in pages for name in page] == sorted(NAMES)


def test_an_exactly_full_last_page_has_no_next_page(qa):
    for name in NAMES[:6]:
        create(qa, name)
    assert [len(p) for p in walk(qa, limit=3)] == [3, 3]


def test_a_department_without_devices_has_one_empty_page(qa):
    page = devices.list_devices(qa, after=None, limit=3)
    assert (page.items, page.next_after) == ([], None)


def test_groups_are_listed_with_device_counts(make, qa, testers):
    empty = make.group(qa, "Build Agents")
    create(qa, "PC-1", group_id=testers.id)
    create(qa, "PC-2", group_id=testers.id)
    create(qa, "PC-3")
    assert [(g.name, n) for g, n in devices.list_groups(qa)] == [
        (empty.name, 0), ("Testers", 2)]


# --- groups ----------------------------------------------------------------------------


def test_group_names_are_unique_per_department(make, qa, testers):
    with pytest.raises(InvalidInputError):
        devices.create_group(department=qa, name=" Testers ", actor=CLI, now=NOW)
    db.session.rollback()
    sales = make.department("Sales Team")
    assert make.group(sales, "Testers").department_id == sales.id


def test_renaming_a_group_is_audited(make, qa, testers):
    devices.rename_group(department=qa, group=testers, name="QA Testers", actor=ADMIN,
                         now=LATER)
    db.session.commit()
    assert [e.details for e in events("group.renamed")] == [
        {"old": "Testers", "new": "QA Testers"}]


def test_get_group_of_another_department_is_not_found(make, qa, testers):
    with pytest.raises(NotFoundError):
        devices.get_group(make.department("Sales Team"), testers.id)


def test_deleting_a_group_keeps_its_devices_and_drops_its_exclusion(qa, testers):
    pc1, _ = create(qa, "PC-1", group_id=testers.id)
    pc2, _ = create(qa, "PC-2", group_id=testers.id)
    departments.add_exclusion(department=qa, target=f"group:{testers.id}", actor=ADMIN,
                              now=LATER)
    departments.add_exclusion(department=qa, target=f"device:{pc2.id}", actor=ADMIN,
                              now=LATER)
    db.session.commit()
    group_id = testers.id

    devices.delete_group(department=qa, group=testers, actor=ADMIN, now=LATER)
    db.session.commit()
    db.session.expire_all()

    assert db.session.get(DeviceGroup, group_id) is None
    assert sorted(d.name for d in db.session.scalars(select(Device))) == ["PC-1", "PC-2"]
    assert {d.group_id for d in db.session.scalars(select(Device))} == {None}
    # The group's exclusion went with it (a database cascade); the device's stays.
    remaining = departments.list_exclusions(qa)
    assert [(e.device_id, e.group_id) for e in remaining] == [(pc2.id, None)]
    assert [e.details["name"] for e in events("group.deleted")] == ["Testers"]


def test_foreign_keys_are_enforced(qa):
    """The group-exclusion cascade above relies on it (SQLite has it off by default)."""
    if db.engine.dialect.name == "sqlite":
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    with pytest.raises(IntegrityError) as caught:
        db.session.execute(text(
            "INSERT INTO devices (name, os, ip_address, department_id, is_locked, created_at)"
            " VALUES ('ORPHAN', '', '', 999999, false, :now)"), {"now": NOW})
        db.session.flush()
    assert "foreign key" in str(caught.value).lower()
    db.session.rollback()
