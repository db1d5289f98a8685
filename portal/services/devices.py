"""Devices and device groups of a department."""
from __future__ import annotations

import ipaddress
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from portal.extensions import db
from portal.models import Department, Device, DeviceGroup
from portal.services import accounts
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.services.departments import clean_name
from portal.domain.errors import InvalidInputError, NotFoundError
from portal.services.pages import Page, fetch_page
from portal.services.unique import claim, held_by_another


def _clean_ip(raw: str | None) -> str:
    raw = (raw or "").strip()
    if not raw:
        return ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise InvalidInputError({"ip_address": ["Enter an IPv4 or IPv6 address."]}) from None


def _clean_os(raw: str | None) -> str:
    value = " ".join((raw or "").split())
    if len(value) > 100 or not value.isprintable():
        raise InvalidInputError({"os": ["Keep the OS to 100 printable characters."]})
    return value


def _group_of(department: Department, group_id: int | None) -> DeviceGroup | None:
    if group_id is None:
        return None
    group = db.session.get(DeviceGroup, group_id) if 0 < group_id < 2**31 else None
    if group is None or group.department_id != department.id:
        raise InvalidInputError({"group_id": ["Choose a group of this department."]})
    return group


def find_device(name: str) -> Device | None:
    return db.session.scalar(select(Device).where(Device.name == name))


def get_device(department: Department, device_id: int) -> Device:
    device = db.session.get(Device, device_id)
    if device is None or device.department_id != department.id:
        raise NotFoundError("No such device in this department.")
    return device


def create_device(*, department: Department, name: str, os: str = "", ip_address: str = "",
                  group_id: int | None = None, actor: Actor, now: datetime
                  ) -> tuple[Device, str]:
    """Create a device and its agent token; the token is returned once, never stored."""
    name = clean_name(name)
    taken = f"A device named “{name}” already exists."
    if find_device(name) is not None:
        raise InvalidInputError({"name": [taken]})
    device = Device(name=name, os=_clean_os(os), ip_address=_clean_ip(ip_address),
                    department_id=department.id, group=_group_of(department, group_id),
                    is_locked=False, created_at=now)
    with claim(lambda: find_device(name) is not None, taken):
        db.session.add(device)
    record_event(actor=actor, action="device.created", target_type="device",
                 target_id=device.id, department_id=department.id, now=now,
                 details={"name": name, "os": device.os, "ip_address": device.ip_address,
                          "group": device.group.name if device.group else None})
    token = accounts.create_device_token(device=device, actor=actor, now=now)
    return device, token


def update_device(*, department: Department, device: Device, name: str, os: str,
                  ip_address: str, group_id: int | None, actor: Actor, now: datetime) -> None:
    name = clean_name(name)
    taken = f"A device named “{name}” already exists."
    device_id = device.id
    if held_by_another(find_device(name), device_id):
        raise InvalidInputError({"name": [taken]})
    new = {"name": name, "os": _clean_os(os), "ip_address": _clean_ip(ip_address),
           "group": _group_of(department, group_id)}
    changes = {}
    with claim(lambda: held_by_another(find_device(name), device_id), taken):
        for field, value in new.items():
            old = getattr(device, field)
            if old != value:
                changes[field] = {
                    "old": old.name if isinstance(old, DeviceGroup) else old,
                    "new": value.name if isinstance(value, DeviceGroup) else value,
                }
                setattr(device, field, value)
    if changes:
        record_event(actor=actor, action="device.updated", target_type="device",
                     target_id=device.id, department_id=department.id, now=now,
                     details={"name": device.name, "changes": changes})


def delete_device(*, department: Department, device: Device, actor: Actor,
                  now: datetime) -> None:
    name = device.name
    device_id = device.id
    db.session.delete(device)
    db.session.flush()
    record_event(actor=actor, action="device.deleted", target_type="device",
                 target_id=device_id, department_id=department.id, now=now,
                 details={"name": name})


def list_devices(department: Department, *, after: str | None, limit: int) -> Page:
    """One page of devices ordered by name, keyed on the last name shown."""
    query = (
        select(Device)
        .where(Device.department_id == department.id)
        .options(joinedload(Device.group))
        .order_by(Device.name)
    )
    if after:
        query = query.where(Device.name > after)
    return fetch_page(query, limit, key=lambda device: device.name)


# --- groups --------------------------------------------------------------------------


def get_group(department: Department, group_id: int) -> DeviceGroup:
    group = db.session.get(DeviceGroup, group_id)
    if group is None or group.department_id != department.id:
        raise NotFoundError("No such group in this department.")
    return group


def list_groups(department: Department) -> list[tuple[DeviceGroup, int]]:
    """Groups with their device counts, in one query."""
    counts = (
        select(Device.group_id, func.count(Device.id).label("n"))
        .where(Device.department_id == department.id)
        .group_by(Device.group_id)
        .subquery()
    )
    rows = db.session.execute(
        select(DeviceGroup, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.group_id == DeviceGroup.id)
        .where(DeviceGroup.department_id == department.id)
        .order_by(DeviceGroup.name)
    ).all()
    return [(group, count) for group, count in rows]


def find_group(department: Department, name: str) -> DeviceGroup | None:
    return db.session.scalar(select(DeviceGroup).where(
        DeviceGroup.department_id == department.id, DeviceGroup.name == clean_name(name)))


def group_names(department: Department) -> list[tuple[int, str]]:
    """(id, name) of the department's groups, for a picker: no counting."""
    return [tuple(row) for row in db.session.execute(
        select(DeviceGroup.id, DeviceGroup.name)
        .where(DeviceGroup.department_id == department.id).order_by(DeviceGroup.name))]


def create_group(*, department: Department, name: str, actor: Actor, now: datetime
                 ) -> DeviceGroup:
    name = clean_name(name)
    taken = f"A group named “{name}” already exists here."
    if find_group(department, name) is not None:
        raise InvalidInputError({"name": [taken]})
    group = DeviceGroup(department_id=department.id, name=name, created_at=now)
    with claim(lambda: find_group(department, name) is not None, taken):
        db.session.add(group)
    record_event(actor=actor, action="group.created", target_type="group", target_id=group.id,
                 department_id=department.id, now=now, details={"name": name})
    return group


def rename_group(*, department: Department, group: DeviceGroup, name: str, actor: Actor,
                 now: datetime) -> None:
    name = clean_name(name)
    if name == group.name:
        return
    taken = f"A group named “{name}” already exists here."
    if find_group(department, name) is not None:
        raise InvalidInputError({"name": [taken]})
    old, group_id = group.name, group.id
    with claim(lambda: held_by_another(find_group(department, name), group_id), taken):
        group.name = name
    record_event(actor=actor, action="group.renamed", target_type="group", target_id=group.id,
                 department_id=department.id, now=now, details={"old": old, "new": name})


def delete_group(*, department: Department, group: DeviceGroup, actor: Actor,
                 now: datetime) -> None:
    """Devices of the group stay, without a group; the group's exclusion goes with it."""
    name, group_id = group.name, group.id
    db.session.execute(update(Device).where(Device.group_id == group_id).values(group_id=None)
                       .execution_options(synchronize_session="fetch"))
    db.session.delete(group)
    db.session.flush()
    record_event(actor=actor, action="group.deleted", target_type="group", target_id=group_id,
                 department_id=department.id, now=now, details={"name": name})
