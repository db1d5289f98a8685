"""Enforcing the permission table (portal.domain.permissions) for a user: which roles they
hold where, and whether those allow an action. 403 before 404, so ids of other
departments can't be probed."""
from __future__ import annotations

from sqlalchemy import or_, select

from portal.domain.errors import ForbiddenError, NotFoundError
from portal.domain.permissions import ADMIN, Action, may, roles_allowed
from portal.extensions import db
from portal.models import Department, Membership, User


def roles_in(user: User, department_id: int) -> set[str]:
    """The user's roles in one department; `admin` counts everywhere."""
    roles = set(db.session.scalars(
        select(Membership.role).where(Membership.user_id == user.id,
                                      Membership.department_id == department_id)))
    if user.is_admin:
        roles.add(ADMIN)
    return roles


def roles_anywhere(user: User) -> set[str]:
    """Every role the user holds in any department (one query)."""
    roles = set(db.session.scalars(
        select(Membership.role).where(Membership.user_id == user.id).distinct()))
    if user.is_admin:
        roles.add(ADMIN)
    return roles


def can(user: User, action: Action | str, department_id: int) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_admin and may({ADMIN}, action):  # allowed everywhere: nothing to look up
        return True
    return may(roles_in(user, department_id), action)


def can_anywhere(user: User, action: Action | str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return may(roles_anywhere(user), action)


def require(user: User, action: Action | str, department_id: int | None = None,
            message: str = "You do not have access to this.") -> None:
    """ForbiddenError unless the user may do `action` (in the department, when given)."""
    allowed = (can(user, action, department_id) if department_id is not None
               else can_anywhere(user, action))
    if not allowed:
        raise ForbiddenError(message)


def may_column(user_id, action: Action | str, department_id):
    """A SQL truth value: whether the user `user_id` (a column or a bound parameter) holds
    a role in department `department_id` that allows `action` — `can` for a non-admin,
    as a column of the caller's own query instead of a query of its own."""
    return select(Membership.id).where(
        Membership.user_id == user_id, Membership.department_id == department_id,
        or_(*(Membership.role == role for role in roles_allowed(action)))).exists()


def can_with(user: User, action: Action | str, has_role: bool) -> bool:
    """`can`, given what may_column read for the user in the department."""
    if not getattr(user, "is_authenticated", False):
        return False
    return (user.is_admin and may({ADMIN}, action)) or bool(has_role)


def department_ids_where(user: User, action: Action | str):
    """A subquery of the department ids where the user may do `action`, or None for an
    admin (every department)."""
    if user.is_admin:
        return None
    return select(Membership.department_id).where(
        Membership.user_id == user.id, Membership.role.in_(roles_allowed(action)))


def department_for(user: User, department_id: int, action: Action | str, *,
                   roles: set[str] | None = None) -> Department:
    """The department, if the user may do `action` there (`roles`: the user's roles there,
    when the caller has read them already)."""
    if roles is None:
        require(user, action, department_id, "You do not have access to this department.")
    elif not may(roles, action):
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
    extra = {ADMIN} if user.is_admin else set()
    return [(d, roles.get(d.id, set()) | extra) for d in departments]


def navigation(user: User) -> dict[str, bool]:
    """Which main-menu entries the user's roles open (one query)."""
    if not getattr(user, "is_authenticated", False):
        return {}
    roles = roles_anywhere(user)
    return {
        "connect": may(roles, Action.REQUEST),
        "pending": may(roles, Action.DECIDE),
        "departments": may(roles, Action.VIEW),
        "outbox": may(roles, Action.ADMINISTER),
    }
