"""The Sessions page of a department: its remote sessions and its client sessions,
newest first, filtered (portal.domain.log_filters), a page at a time by (started, id).
Each list is one query whatever the page size (devices, people and requests joined in).

Who reads it: auditors, department admins and admins (Action.VIEW), and approvers
(Action.DECIDE: they will end running sessions from here). Technicians read only their
own requests' timelines (portal.services.timeline)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select

from portal.domain.errors import ForbiddenError, NotFoundError
from portal.domain.log_filters import (
    LogFilter,
    approved_by_label,
    parse_time_key,
    time_key,
)
from portal.domain.permissions import Action, may
from portal.extensions import db
from portal.models import (
    ClientSession,
    Department,
    Device,
    OneTimePassword,
    RemoteSession,
    RemoteSessionPerson,
    SessionRequest,
    User,
)
from portal.services import authz
from portal.services.pages import Page

STATES = ("running", "ended")
READERS = (Action.VIEW, Action.DECIDE)


def reads_logs(roles: set[str]) -> bool:
    """Whether these roles (in one department) open its Sessions and timelines."""
    return any(may(roles, action) for action in READERS)


def roles_of(user, department_id: int) -> set[str]:
    if not getattr(user, "is_authenticated", False):
        return set()
    return authz.roles_in(user, department_id)


def department_for_logs(user, department_id: int) -> Department:
    """The department, if the user reads its session logs (403 before 404)."""
    if not reads_logs(roles_of(user, department_id)):
        raise ForbiddenError("You do not have access to this department's sessions.")
    department = db.session.get(Department, department_id)
    if department is None:
        raise NotFoundError("No such department.")
    return department


# --- rows as the page shows them -----------------------------------------------------


@dataclass(frozen=True)
class RemoteSessionRow:
    id: int
    request_id: int
    device: str
    technician: str
    run_as: str | None
    approved_by: str
    started_at: datetime
    ended_at: datetime | None
    seconds: int  # the duration, or for a running session how long it has run so far
    ended_by: str | None = None  # who pressed End session, or "device"; None if running
    end_requested_by: str | None = None  # End session pressed, the device not done yet
    end_requested_at: datetime | None = None

    @property
    def is_ending(self) -> bool:
        """End session was pressed; the device has not reported the end yet."""
        return self.ended_at is None and self.end_requested_at is not None

    @property
    def is_running(self) -> bool:
        return self.ended_at is None

    @property
    def state(self) -> str:
        return "running" if self.is_running else "ended"


@dataclass(frozen=True)
class ClientSessionRow:
    id: int
    user_name: str
    device: str
    started_at: datetime
    ended_at: datetime | None
    access_request_id: int | None  # the OTP access request whose code opened it, if any

    @property
    def state(self) -> str:
        return "running" if self.ended_at is None else "ended"


def _seconds(started_at: datetime, ended_at: datetime | None, now: datetime) -> int:
    return max(0, int(((ended_at or now) - started_at).total_seconds()))


def _page_of_rows(query: Select, limit: int, key: Callable[[Any], str]) -> Page:
    """portal.services.pages.fetch_page for multi-column rows."""
    rows = db.session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)


def before_key(started, row_id, before: str | None):
    """The condition for rows after the page key `before` in (time, id) newest-first
    order, or None for no (or no valid) key. The audit log's filters can use these
    three helpers on (occurred_at, seq)."""
    key = parse_time_key(before)
    if key is None:
        return None
    at, after_id = key
    # `started <= at` alone is what an index on (time, id) can seek to; the OR is exact.
    return and_(started <= at, or_(started < at, and_(started == at, row_id < after_id)))


def date_conditions(started, log_filter: LogFilter) -> list:
    where = []
    if log_filter.starts_at is not None:
        where.append(started >= log_filter.starts_at)
    if log_filter.ends_before is not None:
        where.append(started < log_filter.ends_before)
    return where


def state_conditions(ended, log_filter: LogFilter) -> list:
    if log_filter.choice == "running":
        return [ended.is_(None)]
    if log_filter.choice == "ended":
        return [ended.is_not(None)]
    return []


def _devices_named(name: str):
    """The device ids with this name (any case): the sessions' (device_id, started_at)
    indexes then find a device's sessions without reading every other one."""
    return select(Device.id).where(func.lower(Device.name) == name.lower())


def list_remote_sessions(*, department_id: int, log_filter: LogFilter, before: str | None,
                         limit: int, now: datetime) -> Page:
    """Newest first; `before` is a page key (next_after of the page before). Filtered by
    a person, the list is read from that person's rows of remote_session_people, in the
    order of their (department, person, started) index."""
    started, row_id = RemoteSession.started_at, RemoteSession.id
    query = (
        select(RemoteSession.id, RemoteSession.request_id, RemoteSession.started_at,
               RemoteSession.ended_at, RemoteSession.ended_by,
               RemoteSession.end_requested_by, RemoteSession.end_requested_at,
               Device.name.label("device"),
               User.email.label("technician"), SessionRequest.run_as,
               SessionRequest.decided_by)
        .join(SessionRequest, SessionRequest.id == RemoteSession.request_id)
        .join(Device, Device.id == RemoteSession.device_id)
        .join(User, User.id == SessionRequest.technician_id))
    if log_filter.person:
        people = RemoteSessionPerson
        query = query.join(people, and_(people.remote_session_id == RemoteSession.id,
                                        people.department_id == department_id,
                                        people.person == log_filter.person.lower()))
        started, row_id = people.started_at, people.remote_session_id
    query = (
        query.where(SessionRequest.department_id == department_id,
                    *date_conditions(started, log_filter),
                    *state_conditions(RemoteSession.ended_at, log_filter))
        .order_by(started.desc(), row_id.desc()))
    query = _narrowed(query, RemoteSession, log_filter, before, key=(started, row_id))
    page = _page_of_rows(query, limit, key=lambda row: time_key(row.started_at, row.id))
    return Page([RemoteSessionRow(
        id=row.id, request_id=row.request_id, device=row.device, technician=row.technician,
        run_as=row.run_as, approved_by=approved_by_label(row.decided_by),
        started_at=row.started_at, ended_at=row.ended_at,
        seconds=_seconds(row.started_at, row.ended_at, now), ended_by=row.ended_by,
        end_requested_by=row.end_requested_by, end_requested_at=row.end_requested_at)
        for row in page.items],
        page.next_after)


def _narrowed(query, model, log_filter: LogFilter, before: str | None, *, key):
    """A session list's query with the Device filter and the page key on `key` (its
    (started, id) columns) applied; `model` has device_id."""
    if log_filter.device:
        query = query.where(model.device_id.in_(_devices_named(log_filter.device)))
    after = before_key(*key, before)
    return query if after is None else query.where(after)


def list_client_sessions(*, department_id: int, log_filter: LogFilter, before: str | None,
                         limit: int) -> Page:
    """Newest first; `before` is a page key (next_after of the page before)."""
    query = (
        select(ClientSession, Device.name.label("device"),
               OneTimePassword.access_request_id)
        .join(Device, Device.id == ClientSession.device_id)
        .outerjoin(OneTimePassword, OneTimePassword.id == ClientSession.otp_id)
        .where(ClientSession.department_id == department_id,
               *date_conditions(ClientSession.started_at, log_filter),
               *state_conditions(ClientSession.ended_at, log_filter))
        .order_by(ClientSession.started_at.desc(), ClientSession.id.desc()))
    if log_filter.person:  # through the (department_id, lower(…), started_at) indexes
        person = log_filter.person.lower()
        query = query.where(or_(func.lower(ClientSession.username) == person,
                                func.lower(ClientSession.email) == person))
    query = _narrowed(query, ClientSession, log_filter, before,
                      key=(ClientSession.started_at, ClientSession.id))
    page = _page_of_rows(query, limit, key=lambda row: time_key(row.ClientSession.started_at,
                                                                row.ClientSession.id))
    return Page([ClientSessionRow(
        id=row.ClientSession.id, user_name=row.ClientSession.user_name, device=row.device,
        started_at=row.ClientSession.started_at, ended_at=row.ClientSession.ended_at,
        access_request_id=row.access_request_id) for row in page.items], page.next_after)
