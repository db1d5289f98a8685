"""Who may do what: the one table of roles and the actions they allow.

`admin` is global (every department, every action). The other roles are held per
department (a Membership). Services enforce this table; navigation and templates ask it.
A new role or action is one line here.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Action(StrEnum):
    VIEW = "view"            # read a department's settings, lists and audit log
    MANAGE = "manage"        # change its settings, devices, groups, exclusions, members
    DECIDE = "decide"        # allow / deny its session requests in the portal
    REQUEST = "request"      # ask for a session to one of its devices
    ISSUE_OTP = "issue_otp"  # "Generate one-time password" on one of its devices
    ADMINISTER = "administer"  # create and rename departments, read the outbox
    END_SESSION = "end_session"  # "End session" on one of its running remote sessions


ADMIN = "admin"

# Department roles with the labels people read, in the order pages list them.
ROLE_NAMES = {
    "department_admin": "Department admin",
    "approver": "Approver",
    "auditor": "Auditor",
    "technician": "Technician",
}
DEPARTMENT_ROLES = tuple(ROLE_NAMES)
ALL_ROLES = (ADMIN, *DEPARTMENT_ROLES)

PERMISSIONS: dict[str, frozenset[Action]] = {
    ADMIN: frozenset(Action),
    "department_admin": frozenset({Action.VIEW, Action.MANAGE, Action.DECIDE,
                                   Action.ISSUE_OTP, Action.END_SESSION}),
    "approver": frozenset({Action.DECIDE, Action.ISSUE_OTP, Action.END_SESSION}),
    "auditor": frozenset({Action.VIEW}),
    "technician": frozenset({Action.REQUEST}),
}


def may(roles: Iterable[str], action: Action | str) -> bool:
    """Whether any of `roles` allows `action`."""
    action = Action(action)
    return any(action in PERMISSIONS.get(role, ()) for role in roles)


def roles_allowed(action: Action | str) -> tuple[str, ...]:
    """The department roles that allow `action` (for queries over memberships)."""
    action = Action(action)
    return tuple(role for role in DEPARTMENT_ROLES if action in PERMISSIONS[role])


def role_label(role: str) -> str:
    return "Administrator" if role == ADMIN else ROLE_NAMES.get(role, role)
