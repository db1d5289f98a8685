"""JSON shapes of the contract (design.md): times as ISO 8601 UTC with milliseconds."""
from __future__ import annotations

from datetime import datetime, timezone

from portal.domain import approvals
from portal.domain import requests as rules
from portal.models import SessionRequest
from portal.services import requests


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def request_object(req: SessionRequest, now: datetime) -> dict:
    reading = requests.reading(req, now)
    return {
        "id": req.id,
        "status": reading.status.value,
        "device": req.device.name,
        "technician": req.technician.email,
        "run_as": req.run_as,
        "reason": req.reason,
        "created_at": iso(req.created_at),
        "expires_at": iso(req.expires_at),
        "decided_at": iso(reading.decided_at),
        "seconds_left": reading.seconds_left,
        "checks": {"end_user": reading.end_user.value, "email": reading.email.value},
        "decided_by": req.decided_by,
        "decision_reason": req.decision_reason,
        "outcome_message": reading.outcome,
        "approvals": {"required": reading.approvals.required,
                      "received": reading.approvals.received,
                      "by": list(reading.approvals.by)},
        "match_number": reading.match_number,
    }


def prompt_object(req, now: datetime) -> dict:
    """An open prompt (a prompt row of services.agents.poll) as the agent reads it."""
    return {
        "id": req.id,
        "message": req.prompt_message,
        "technician": req.technician,
        "run_as": req.run_as,
        "reason": req.reason,
        "expires_at": iso(req.end_user_deadline),
        "seconds_left": rules.seconds_left(req.end_user_deadline, now),
        # Number matching: the end user picks the number the technician sees (never
        # sent here) among these; null when matching is off.
        "choices": list(approvals.parse_choices(req.match_choices)) or None,
    }
