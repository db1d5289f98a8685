"""JSON shapes of the contract (design.md): times as ISO 8601 UTC with milliseconds."""
from __future__ import annotations

from datetime import datetime, timezone

from portal.domain import requests as rules
from portal.models import SessionRequest


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def request_object(req: SessionRequest, now: datetime) -> dict:
    status = rules.effective_status(req.status, req.expires_at, now)
    end_user, email = rules.check_states(
        status=status, end_user=req.end_user_check, email=req.email_check,
        end_user_deadline=req.end_user_deadline, email_deadline=req.email_deadline, now=now)
    # A request past its deadline that no job has moved yet left pending at its deadline.
    decided_at = req.decided_at or (req.expires_at if status is not rules.Status.PENDING
                                    else None)
    return {
        "id": req.id,
        "status": status.value,
        "device": req.device.name,
        "technician": req.technician.email,
        "run_as": req.run_as,
        "reason": req.reason,
        "created_at": iso(req.created_at),
        "expires_at": iso(req.expires_at),
        "decided_at": iso(decided_at),
        "seconds_left": (rules.seconds_left(req.expires_at, now)
                         if status is rules.Status.PENDING else 0),
        "checks": {"end_user": end_user.value, "email": email.value},
        "decided_by": req.decided_by,
        "decision_reason": req.decision_reason,
        "outcome_message": rules.outcome_message(status, req.decided_by),
    }


def prompt_object(req: SessionRequest, now: datetime) -> dict:
    return {
        "id": req.id,
        "message": req.prompt_message,
        "technician": req.technician.email,
        "run_as": req.run_as,
        "expires_at": iso(req.end_user_deadline),
        "seconds_left": rules.seconds_left(req.end_user_deadline, now),
    }
