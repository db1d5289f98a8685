"""Who may do what in which department.

admin: everything, every department. department_admin: their departments' settings,
devices, groups, exclusions and members. auditor: read-only views of their departments.
approver / technician: no settings pages.
"""
from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db
from portal.models import Department, Membership, User
from portal.services.errors import ForbiddenError, NotFoundError

MANAGE = "manage"  # change settings, devices, groups, exclusions, members
VIEW = "view"      # read settings and lists (auditors, read-only)


def roles_in(user: User, department_id: int) -> set[str]:
    return set(
        db.session.scalars(
            select(Membership.role).where(
                Membership.user_id == user.id, Membership.department_id == department_id
            )
        )
    )


def can(user: User, action: str, department_id: int) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_admin:
        return True
    roles = roles_in(user, department_id)
    if action == MANAGE:
        return "department_admin" in roles
    if action == VIEW:
        return bool(roles & {"department_admin", "auditor"})
    return False


def department_for(user: User, department_id: int, action: str) -> Department:
    """The department, if the user may do `action` there; 403 before 404 for non-admins so
    ids of other departments are not probed."""
    if not can(user, action, department_id):
        raise ForbiddenError("You do not have access to this department.")
    department = db.session.get(Department, department_id)
    if department is None:
        raise NotFoundError("No such department.")
    return department


def departments_of(user: User) -> list[tuple[Department, set[str]]]:
    """Departments the user belongs to (all for an admin) with their roles there."""
    if user.is_admin:
        departments = db.session.scalars(select(Department).order_by(Department.name)).all()
    else:
        departments = db.session.scalars(
            select(Department)
            .join(Membership, Membership.department_id == Department.id)
            .where(Membership.user_id == user.id)
            .distinct()
            .order_by(Department.name)
        ).all()
    rows = db.session.execute(
        select(Membership.department_id, Membership.role).where(Membership.user_id == user.id)
    ).all()
    roles: dict[int, set[str]] = {}
    for department_id, role in rows:
        roles.setdefault(department_id, set()).add(role)
    return [(d, roles.get(d.id, set())) for d in departments]


def has_any_settings_access(user: User) -> bool:
    if user.is_admin:
        return True
    return bool(
        db.session.scalar(
            select(Membership.id).where(
                Membership.user_id == user.id,
                Membership.role.in_(("department_admin", "auditor")),
            ).limit(1)
        )
    )
