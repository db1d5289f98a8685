"""Session requests: the policy that plans one, the state machine that decides it.

Plain Python: the caller passes the settings, the device's state and `now`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum

from portal.domain import approvals
from portal.domain.errors import AlreadyDecidedError, ExpiredError


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class EndUserCheck(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


class EmailCheck(StrEnum):
    WAITING = "waiting"  # fallback: the approvers are asked if the end user doesn't answer
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


# One word per state, from the model to every page and fragment (templates read them
# through the `status_label` and `check_label` filters).
STATUS_LABELS = {
    Status.PENDING: "Pending",
    Status.APPROVED: "Approved",
    Status.DENIED: "Denied",
    Status.TIMED_OUT: "Timed out",
    Status.CANCELLED: "Cancelled",
}
CHECK_LABELS = {
    "end_user": {
        EndUserCheck.PENDING: "Waiting",
        EndUserCheck.ACCEPTED: "Accepted",
        EndUserCheck.DECLINED: "Declined",
        EndUserCheck.TIMED_OUT: "Timed out",
        EndUserCheck.SKIPPED: "Not needed",
    },
    "email": {
        EmailCheck.WAITING: "Not asked yet",
        EmailCheck.PENDING: "Waiting",
        EmailCheck.ALLOWED: "Allowed",
        EmailCheck.DENIED: "Denied",
        EmailCheck.TIMED_OUT: "Timed out",
        EmailCheck.SKIPPED: "Not needed",
    },
}


def status_label(status: Status | str) -> str:
    return STATUS_LABELS[Status(status)]


def check_label(state: str, check: str) -> str:
    """`check` is "end_user" or "email"."""
    return CHECK_LABELS[check][state]


# Exact texts shown to the technician (design.md).
MSG_APPROVED = "The session will begin shortly."
MSG_END_USER_DECLINED = "The end user has rejected the Session Confirmation Request"
MSG_TIMED_OUT = "The Session Confirmation request has timed out."
MSG_CANCELLED = "The request was cancelled."
MSG_DENIED_BY = "The request was denied by {who}."
MSG_FALLBACK = "Nobody answered at the device — asking the approvers"

DECIDED_BY_END_USER = "end_user"
DECIDED_BY_POLICY = "policy"
DECIDED_BY_EXCLUSION = "exclusion"
DECIDED_BY_PRE_APPROVAL = "pre_approval"


@dataclass(frozen=True)
class PolicyInput:
    """What the policy needs: the department's settings and the device's state."""

    is_confirmation_shown: bool
    confirmation_timeout_seconds: int
    is_shown_when_locked: bool
    is_email_authorization_required: bool
    email_authorization_timeout_seconds: int
    is_locked: bool
    logged_in_user: str | None
    exclusion: str | None = None  # e.g. "device excluded" / "group “QA” excluded"
    # A live pre-approval of this technician on this device: its decision reason
    # ("pre-approved by … until …"), looked at right after exclusions.
    pre_approval: str | None = None
    # "If the end user doesn't answer, ask the email approvers" (with both checks on).
    is_fallback_to_email: bool = False


@dataclass(frozen=True)
class Plan:
    status: Status
    end_user: EndUserCheck
    email: EmailCheck
    end_user_deadline: datetime | None
    email_deadline: datetime | None
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    # The fallback: when the approvers are to be mailed (the end user's deadline) while
    # the email check waits; and whether they are mailed at once because the prompt was
    # skipped (nobody could answer it).
    fallback_due_at: datetime | None = None
    is_fallback_now: bool = False
    end_user_skipped_because: str | None = None


def plan_request(policy: PolicyInput, now: datetime) -> Plan:
    """Evaluate the policy at creation (design.md, "How a session request is decided")."""
    if policy.exclusion:
        return Plan(Status.APPROVED, EndUserCheck.SKIPPED, EmailCheck.SKIPPED, None, None,
                    now, now, DECIDED_BY_EXCLUSION, policy.exclusion)
    if policy.pre_approval:
        return Plan(Status.APPROVED, EndUserCheck.SKIPPED, EmailCheck.SKIPPED, None, None,
                    now, now, DECIDED_BY_PRE_APPROVAL, policy.pre_approval)
    end_user = EndUserCheck.SKIPPED
    skipped_because = None
    if policy.is_confirmation_shown:
        nobody = not (policy.logged_in_user or "").strip()
        if (policy.is_locked or nobody) and not policy.is_shown_when_locked:
            skipped_because = ("device locked; confirmation not shown" if policy.is_locked
                               else "nobody logged in; confirmation not shown")
        else:
            end_user = EndUserCheck.PENDING
    email = (EmailCheck.PENDING if policy.is_email_authorization_required
             else EmailCheck.SKIPPED)
    if end_user is EndUserCheck.SKIPPED and email is EmailCheck.SKIPPED:
        reason = skipped_because or "confirmation not required"
        return Plan(Status.APPROVED, end_user, email, None, None, now, now,
                    DECIDED_BY_POLICY, reason)
    end_user_deadline = (now + timedelta(seconds=policy.confirmation_timeout_seconds)
                         if end_user is EndUserCheck.PENDING else None)
    email_timeout = timedelta(seconds=policy.email_authorization_timeout_seconds)
    fallback = (policy.is_fallback_to_email and policy.is_confirmation_shown
                and email is EmailCheck.PENDING)
    if fallback and end_user_deadline is not None:
        # The approvers are asked at the prompt's deadline and get the whole email timeout
        # from then: the deadline is fixed now, so a late job never stretches or cuts it.
        expires_at = end_user_deadline + email_timeout
        return Plan(Status.PENDING, end_user, EmailCheck.WAITING, end_user_deadline,
                    expires_at, expires_at, None, None, None,
                    fallback_due_at=end_user_deadline)
    email_deadline = now + email_timeout if email is EmailCheck.PENDING else None
    expires_at = max(d for d in (end_user_deadline, email_deadline) if d is not None)
    return Plan(Status.PENDING, end_user, email, end_user_deadline, email_deadline,
                expires_at, None, None, None, is_fallback_now=fallback,
                end_user_skipped_because=skipped_because)


# --- deciding ------------------------------------------------------------------------


def effective_status(status: Status | str, expires_at: datetime, now: datetime) -> Status:
    """A pending request whose deadline has passed reads as timed out, job or no job."""
    status = Status(status)
    if status is Status.PENDING and now >= expires_at:
        return Status.TIMED_OUT
    return status


def refusal(status: Status | str, expires_at: datetime, now: datetime,
            check_deadline: datetime | None = None
            ) -> AlreadyDecidedError | ExpiredError | None:
    """Why a decision would be refused now, or None when it may go ahead.

    At or after the deadline: 410, whatever the stored status says. Otherwise a request
    that is no longer pending: 409. `check_deadline` is the deciding check's own deadline
    (an end-user prompt closes before the email links do)."""
    deadline = min(expires_at, check_deadline) if check_deadline else expires_at
    if now >= deadline or Status(status) is Status.TIMED_OUT:
        return ExpiredError("This request has expired.")
    if Status(status) is not Status.PENDING:
        return AlreadyDecidedError("This request has already been decided.")
    return None


def check_states(*, status: Status | str, end_user: EndUserCheck | str,
                 email: EmailCheck | str, end_user_deadline: datetime | None,
                 email_deadline: datetime | None, now: datetime
                 ) -> tuple[EndUserCheck, EmailCheck]:
    """Each check as the technician should read it now.

    A pending check past its own deadline reads timed_out; a pending check of a request
    decided some other way reads skipped (nobody needs to answer it any more)."""
    status = Status(status)
    end_user, email = EndUserCheck(end_user), EmailCheck(email)
    if end_user is EndUserCheck.PENDING:
        if end_user_deadline is not None and now >= end_user_deadline or (
                status is Status.TIMED_OUT):
            end_user = EndUserCheck.TIMED_OUT
        elif status is not Status.PENDING:
            end_user = EndUserCheck.SKIPPED
    if email is EmailCheck.PENDING:
        if email_deadline is not None and now >= email_deadline or (
                status is Status.TIMED_OUT):
            email = EmailCheck.TIMED_OUT
        elif status is not Status.PENDING:
            email = EmailCheck.SKIPPED
    elif email is EmailCheck.WAITING and status is not Status.PENDING:
        # Never asked: nobody needs to answer it now (a timeout here means the job that
        # mails the approvers never ran before the deadline).
        email = EmailCheck.TIMED_OUT if status is Status.TIMED_OUT else EmailCheck.SKIPPED
    return end_user, email


def seconds_left(deadline: datetime | None, now: datetime) -> int:
    if deadline is None:
        return 0
    return max(0, math.ceil((deadline - now).total_seconds()))


DECIDER_LABELS = {
    DECIDED_BY_END_USER: "the end user at the device",
    DECIDED_BY_POLICY: "policy",
    DECIDED_BY_EXCLUSION: "an exclusion",
    DECIDED_BY_PRE_APPROVAL: "a pre-approval",
}


def decider_label(decided_by: str | None) -> str | None:
    """Who decided, as a person reads it ("the end user at the device", an email, …)."""
    return DECIDER_LABELS.get(decided_by, decided_by) if decided_by else None


@dataclass(frozen=True)
class Reading:
    """A request as everyone should read it at one moment: the API, the technician's page,
    the approval page and the pending list all show this."""

    status: Status
    end_user: EndUserCheck
    email: EmailCheck
    seconds_left: int  # 0 once the request is over
    end_user_seconds_left: int
    email_seconds_left: int
    decided_at: datetime | None
    outcome: str | None
    decider: str | None
    approvals: approvals.Tally = approvals.Tally(1, 0, ())
    match_number: int | None = None  # while pending only
    choices: tuple[int, ...] = ()  # while pending only
    # While pending, after the approvers were asked because nobody answered at the
    # device: MSG_FALLBACK.
    progress: str | None = None

    def as_context(self) -> dict:
        """Its fields by name, for a template: a shallow copy (dataclasses.asdict copies
        every value deeply, and turned the Tally into a plain dict)."""
        return {name: getattr(self, name) for name in _READING_FIELDS}


_READING_FIELDS = tuple(field.name for field in fields(Reading))


def read_request(*, status: Status | str, expires_at: datetime, end_user: EndUserCheck | str,
                 email: EmailCheck | str, end_user_deadline: datetime | None,
                 email_deadline: datetime | None, decided_at: datetime | None,
                 decided_by: str | None, now: datetime, is_reported: bool = False,
                 tally: approvals.Tally | None = None, match_number: int | None = None,
                 choices: tuple[int, ...] = (), is_fallback_mailed: bool = False
                 ) -> Reading:
    current = effective_status(status, expires_at, now)
    end_user_state, email_state = check_states(
        status=current, end_user=end_user, email=email, end_user_deadline=end_user_deadline,
        email_deadline=email_deadline, now=now)
    pending = current is Status.PENDING
    return Reading(
        status=current,
        end_user=end_user_state,
        email=email_state,
        seconds_left=seconds_left(expires_at, now) if pending else 0,
        end_user_seconds_left=seconds_left(end_user_deadline, now),
        email_seconds_left=seconds_left(email_deadline, now),
        # A request past its deadline that no job has moved yet left pending at its
        # deadline.
        decided_at=decided_at or (None if pending else expires_at),
        outcome=outcome_message(current, decided_by, is_reported),
        decider=decider_label(decided_by),
        approvals=tally or approvals.Tally(1, 0, ()),
        match_number=match_number if pending else None,
        choices=choices if pending and match_number is not None else (),
        progress=MSG_FALLBACK if pending and is_fallback_mailed else None,
    )


def outcome_message(status: Status | str, decided_by: str | None,
                    is_reported: bool = False) -> str | None:
    status = Status(status)
    if status is Status.APPROVED:
        return MSG_APPROVED
    if status is Status.DENIED:
        if is_reported:
            return approvals.reported_outcome(
                approvals.END_USER_REPORTER if decided_by == DECIDED_BY_END_USER
                else decided_by)
        if decided_by == DECIDED_BY_END_USER:
            return MSG_END_USER_DECLINED
        return MSG_DENIED_BY.format(who=decided_by)
    if status is Status.TIMED_OUT:
        return MSG_TIMED_OUT
    if status is Status.CANCELLED:
        return MSG_CANCELLED
    return None
