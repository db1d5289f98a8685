"""Departments, their settings and their exclusions."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from portal.domain import settings as rules
from portal.extensions import db
from portal.models import Department, DepartmentSettings, Device, DeviceGroup, Exclusion
from portal.services import chain
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError
from portal.services.unique import claim, held_by_another

MAX_NAME_LENGTH = 100


def clean_name(raw: str, field: str = "name") -> str:
    name = " ".join((raw or "").split())
    if not name:
        raise InvalidInputError({field: ["Enter a name."]})
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError({field: [f"Keep the name to {MAX_NAME_LENGTH} characters."]})
    if not name.isprintable():
        raise InvalidInputError({field: ["The name contains characters that can't be shown."]})
    return name


def find_department(name: str) -> Department | None:
    return db.session.scalar(select(Department).where(Department.name == name))


def get_department(department_id: int) -> Department:
    department = db.session.get(Department, department_id)
    if department is None:
        raise NotFoundError("No such department.")
    return department


def create_department(*, name: str, actor: Actor, now: datetime) -> Department:
    name = clean_name(name)
    taken = f"A department named “{name}” already exists."
    if find_department(name) is not None:
        raise ConflictError(taken, "name")
    department = Department(name=name, created_at=now)
    department.settings = DepartmentSettings(**rules.DEFAULTS, updated_at=now)
    with claim(lambda: find_department(name) is not None, taken):
        db.session.add(department)
    record_event(actor=actor, action="department.created", target_type="department",
                 target_id=department.id, department_id=department.id, now=now,
                 details={"name": name})
    return department


def rename_department(*, department: Department, name: str, actor: Actor,
                      now: datetime) -> None:
    name = clean_name(name)
    if name == department.name:
        return
    taken = f"A department named “{name}” already exists."
    if find_department(name) is not None:
        raise InvalidInputError({"name": [taken]})
    old, department_id = department.name, department.id
    with claim(lambda: held_by_another(find_department(name), department_id), taken):
        department.name = name
    record_event(actor=actor, action="department.renamed", target_type="department",
                 target_id=department.id, department_id=department.id, now=now,
                 details={"old": old, "new": name})


# --- settings ------------------------------------------------------------------------


def settings_values(settings: DepartmentSettings) -> dict[str, Any]:
    return {field: getattr(settings, field) for field in rules.LABELS}


def update_settings(*, department: Department, values: dict[str, Any], actor: Actor,
                    now: datetime) -> list[tuple[str, Any, Any]]:
    """Validate and save a complete set of values; one audit event per changed field.

    Returns the changes as (field, old, new)."""
    errors = rules.validate_settings(values)
    if errors:
        raise InvalidInputError(errors)
    new = rules.normalize_settings({f: values[f] for f in rules.LABELS})
    settings = department.settings
    old = settings_values(settings)
    changes = rules.diff_settings(old, new)
    for field, _old, value in changes:
        setattr(settings, field, value)
    if changes:
        settings.updated_at = now
        db.session.flush()
        if {"escalation_recipients", "escalate_after_seconds"} & {f for f, _, _ in changes}:
            chain.reschedule_escalations(department.id, settings, now)
        for field, before, after in changes:
            record_event(actor=actor, action="settings.changed", target_type="department",
                         target_id=department.id, department_id=department.id, now=now,
                         details={"field": field, "label": rules.LABELS[field],
                                  "old": before, "new": after})
    return changes


# --- exclusions ----------------------------------------------------------------------


def list_exclusions(department: Department) -> list[Exclusion]:
    """Every exclusion of the department, with its device or group, in one query."""
    return list(
        db.session.scalars(
            select(Exclusion)
            .where(Exclusion.department_id == department.id)
            .options(joinedload(Exclusion.device), joinedload(Exclusion.group))
            .order_by(Exclusion.created_at, Exclusion.id)
        )
    )


def add_exclusion(*, department: Department, target: str, actor: Actor,
                  now: datetime) -> Exclusion:
    """target is "device:<id>" or "group:<id>" of this department."""
    kind, _, raw_id = (target or "").partition(":")
    # isdigit() alone lets "²" through to int(); ids past 2**31 fit no id column.
    thing_id = int(raw_id) if raw_id.isascii() and raw_id.isdigit() else 0
    if kind not in ("device", "group") or not 0 < thing_id < 2**31:
        raise InvalidInputError({"target": ["Choose a device or a group."]})
    model = Device if kind == "device" else DeviceGroup
    thing = db.session.get(model, thing_id)
    if thing is None or thing.department_id != department.id:
        raise InvalidInputError({"target": ["Choose a device or a group of this department."]})
    column = Exclusion.device_id if kind == "device" else Exclusion.group_id
    excluded = f"“{thing.name}” is already excluded."
    if db.session.scalar(select(Exclusion.id).where(column == thing.id)):
        raise InvalidInputError({"target": [excluded]})
    exclusion = Exclusion(
        department_id=department.id,
        device_id=thing.id if kind == "device" else None,
        group_id=thing.id if kind == "group" else None,
        excluded_by_id=actor.user_id,
        excluded_by_email=actor.label,
        created_at=now,
    )
    with claim(lambda: db.session.scalar(select(Exclusion.id).where(column == thing.id))
               is not None, excluded, "target"):
        db.session.add(exclusion)
    record_event(actor=actor, action="exclusion.added", target_type=kind, target_id=thing.id,
                 department_id=department.id, now=now,
                 details={"name": thing.name, "exclusion_id": exclusion.id})
    return exclusion


def remove_exclusion(*, department: Department, exclusion_id: int, actor: Actor,
                     now: datetime) -> str:
    exclusion = db.session.get(Exclusion, exclusion_id)
    if exclusion is None or exclusion.department_id != department.id:
        raise NotFoundError("That exclusion no longer exists.")
    kind = "device" if exclusion.device_id else "group"
    thing = exclusion.device or exclusion.group
    name = thing.name if thing else "?"
    target_id = exclusion.device_id or exclusion.group_id
    db.session.delete(exclusion)
    db.session.flush()
    record_event(actor=actor, action="exclusion.removed", target_type=kind,
                 target_id=target_id or 0, department_id=department.id, now=now,
                 details={"name": name, "exclusion_id": exclusion_id})
    return name


def exclusion_candidates(department: Department) -> tuple[list[Device], list[DeviceGroup]]:
    """Devices and groups of the department that are not excluded yet."""
    devices = db.session.scalars(
        select(Device)
        .where(Device.department_id == department.id,
               ~select(Exclusion.id).where(Exclusion.device_id == Device.id).exists())
        .order_by(Device.name)
    ).all()
    groups = db.session.scalars(
        select(DeviceGroup)
        .where(DeviceGroup.department_id == department.id,
               ~select(Exclusion.id).where(Exclusion.group_id == DeviceGroup.id).exists())
        .order_by(DeviceGroup.name)
    ).all()
    return list(devices), list(groups)
