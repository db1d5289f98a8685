"""What a device's agent reports and asks: its state, its open prompts, remote sessions."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (Integer, Row, bindparam, cast, func, insert, literal_column, null,
                        select, update)
from sqlalchemy.exc import IntegrityError

from portal.domain.requests import EndUserCheck, Status
from portal.extensions import db
from portal.domain.log_filters import session_people
from portal.models import (ApiToken, Device, RemoteSession, RemoteSessionPerson, SessionRequest,
                           User)
from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError
from portal.services import crypto, transitions
from portal.services.accounts import LIVE_TOKEN, TokenUse
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.unit_of_work import read_apart

MAX_USERNAME = 256


def update_state(*, device: Device, locked, logged_in_user, actor: Actor,
                 now: datetime) -> None:
    if not isinstance(locked, bool):
        raise InvalidInputError({"locked": ["Must be true or false."]})
    if logged_in_user is not None:
        if not isinstance(logged_in_user, str):
            raise InvalidInputError({"logged_in_user": ["Must be text or null."]})
        logged_in_user = logged_in_user.strip() or None
        if logged_in_user and (len(logged_in_user) > MAX_USERNAME
                               or not logged_in_user.isprintable()):
            raise InvalidInputError({"logged_in_user": [
                f"Use at most {MAX_USERNAME} printable characters."]})
    changed = device.is_locked != locked or device.logged_in_user != logged_in_user
    if changed:
        record_event(actor=actor, action="device.state_changed", target_type="device",
                     target_id=device.id, department_id=device.department_id, now=now,
                     details={"device": device.name,
                              "old": {"locked": device.is_locked,
                                      "logged_in_user": device.logged_in_user},
                              "new": {"locked": locked, "logged_in_user": logged_in_user}})
    device.is_locked = locked
    device.logged_in_user = logged_in_user
    device.last_seen_at = now
    db.session.flush()


# Built once, as plain rows: every agent polls this every second or two. The whole poll
# is one statement, its token's check included (UNION ALL; a row's "kind" says which
# part it is, and columns a part does not have are NULL, typed by the first part):
# - the token's row: its device (id, department, name in the prompt_message column) and
#   the token's id and last use, only for a live device token;
# - the device's open prompts;
# - its sessions an approver asked to end.
PROMPT_ROW, END_SESSION_ROW, TOKEN_ROW = 0, 1, 2
_NOTHING = null()
_TOKENS_DEVICE = select(ApiToken.device_id).where(*LIVE_TOKEN).scalar_subquery()
_POLL = (
    select(literal_column(str(PROMPT_ROW)).label("kind"), SessionRequest.id, SessionRequest.department_id,
           SessionRequest.prompt_shown_at, SessionRequest.prompt_message,
           SessionRequest.run_as, SessionRequest.reason, SessionRequest.end_user_deadline,
           SessionRequest.match_choices, User.email.label("technician"),
           _NOTHING.label("end_reason"), SessionRequest.created_at.label("sort_at"),
           cast(_NOTHING, Integer).label("token_id"))  # typed: PostgreSQL's UNION
    .join(User, User.id == SessionRequest.technician_id)
    .where(SessionRequest.device_id == _TOKENS_DEVICE,
           SessionRequest.status == Status.PENDING.value,
           SessionRequest.end_user_check == EndUserCheck.PENDING.value,
           SessionRequest.end_user_deadline > bindparam("now"),
           SessionRequest.expires_at > bindparam("now"))
    .union_all(
        select(literal_column(str(END_SESSION_ROW)), RemoteSession.id, _NOTHING, _NOTHING, _NOTHING, _NOTHING,
               _NOTHING, _NOTHING, _NOTHING, _NOTHING, RemoteSession.end_reason, _NOTHING, _NOTHING)
        .where(RemoteSession.device_id == _TOKENS_DEVICE,
               RemoteSession.end_requested_at.is_not(None),
               RemoteSession.ended_at.is_(None)),
        select(literal_column(str(TOKEN_ROW)), Device.id, Device.department_id, ApiToken.last_used_at,
               Device.name, _NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING,
               ApiToken.id)
        .join(ApiToken, ApiToken.device_id == Device.id)
        .where(*LIVE_TOKEN))
    .order_by(literal_column("kind"), literal_column("sort_at"), literal_column("id")))


@dataclass(frozen=True)
class PolledDevice:
    """The device whose token polled, as the poll read it."""
    id: int
    department_id: int
    name: str


@dataclass(frozen=True)
class Poll:
    device: PolledDevice
    token: TokenUse
    prompts: list[Row]  # the open prompts, created first, first
    end_sessions: list[tuple[int, str | None]]  # (session id, reason)


def read_poll(token: str, now: datetime) -> Poll | None:
    """What the agent's poll returns, in one query: the device of a live device token
    (None for a token unknown, revoked or a user's), its end-user prompts still open now
    and its sessions whose end was asked for and that have not ended. Read apart from the
    request's session (unit_of_work.read_apart): what the poll then writes is
    conditional, and goes through the session."""
    rows = read_apart(_POLL, {"token_hash": crypto.keyed_hash(token), "now": now})
    owner = next((row for row in rows if row.kind == TOKEN_ROW), None)
    if owner is None:
        return None
    return Poll(device=PolledDevice(id=owner.id, department_id=owner.department_id,
                                    name=owner.prompt_message),
                token=TokenUse(owner.token_id, owner.prompt_shown_at),
                prompts=[row for row in rows if row.kind == PROMPT_ROW],
                end_sessions=[(row.id, row.end_reason) for row in rows
                              if row.kind == END_SESSION_ROW])


def note_prompts_shown(poll: Poll, actor: Actor, now: datetime) -> None:
    """The first fetch of each prompt is recorded as "prompt shown".

    The "first fetch" marks are one conditional UPDATE … RETURNING over all of them, before
    any audit event is written: a poll never holds one request's row while waiting for
    the audit trail and then reaches for another's (which a decision on that other
    request, holding its row and wanting the trail, would make a deadlock)."""
    unseen = [req.id for req in poll.prompts if req.prompt_shown_at is None]
    if not unseen:
        return
    first = set(db.session.scalars(
        update(SessionRequest)
        .where(SessionRequest.id.in_(unseen), SessionRequest.prompt_shown_at.is_(None))
        .values(prompt_shown_at=now)
        .returning(SessionRequest.id)
        .execution_options(synchronize_session=False)))
    for req in poll.prompts:
        if req.id in first:
            record_event(actor=actor, action="prompt.shown",
                         target_type="session_request", target_id=req.id,
                         department_id=req.department_id, now=now,
                         details={"request_id": req.id, "device": poll.device.name})


MAX_ID = 2**31 - 1  # the id columns are 32-bit integers


def _request_id(raw) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise InvalidInputError({"request_id": ["Must be a request id (a positive integer)."]})
    if raw > MAX_ID:  # no such row; the database would fail on the number itself
        raise NotFoundError("No such request for this device.")
    return raw


def start_remote_session(*, device: Device, request_id, actor: Actor,
                         now: datetime) -> RemoteSession:
    """Only an approved request of this device starts a session, and only once."""
    req = db.session.get(SessionRequest, _request_id(request_id))
    if req is None or req.device_id != device.id:
        raise NotFoundError("No such request for this device.")
    if req.status != Status.APPROVED.value:
        raise ConflictError("The request is not approved; no session may start.")
    session = RemoteSession(request_id=req.id, device_id=device.id, started_at=now)
    try:
        with db.session.begin_nested():  # the unique request_id settles a race
            db.session.add(session)
    except IntegrityError:
        raise ConflictError("A session was already started for this request.") from None
    db.session.execute(insert(RemoteSessionPerson), [
        {"remote_session_id": session.id, "person": person,
         "department_id": req.department_id, "started_at": now}
        for person in session_people(req.technician.email, req.run_as, req.decided_by)])
    record_event(actor=actor, action="session.started", target_type="session_request",
                 target_id=req.id, department_id=req.department_id, now=now,
                 details={"request_id": req.id, "device": device.name,
                          "remote_session_id": session.id})
    return session


ENDED_BY_DEVICE = "device"


def end_remote_session(*, device: Device, session_id: int, actor: Actor,
                       now: datetime) -> RemoteSession:
    """The agent reports the end. "Ended by" is whoever pressed End session, if someone
    did, else the device (read in the same conditional UPDATE that ends it)."""
    session = transitions.end_once(
        RemoteSession, device=device, session_id=session_id, now=now, what="session",
        ended_by=func.coalesce(RemoteSession.end_requested_by, ENDED_BY_DEVICE))
    req = db.session.get(SessionRequest, session.request_id)
    record_event(actor=actor, action="session.ended", target_type="session_request",
                 target_id=req.id, department_id=req.department_id, now=now,
                 details={"request_id": req.id, "device": device.name,
                          "remote_session_id": session.id, "ended_by": session.ended_by})
    return session
