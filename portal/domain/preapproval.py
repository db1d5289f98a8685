"""Pre-approval (design.md, "Approvals that resist fatigue and fraud"): with "Allow
pre-approval for up to (hours)" above 0 and one approval required, "Allow Session" can
also allow the technician on the device for whole hours, 1 … the maximum. While such a
window is live — not expired, not revoked — that technician's requests to that device are
approved at once (after a cool-down and a required reason are checked, and after
exclusions), decided by `pre_approval`.

Plain Python: the caller passes `now`."""
from __future__ import annotations

from datetime import datetime, timedelta

from portal.domain.errors import InvalidInputError

FIELD = "preapproval_hours"
OFFER = "Also allow this technician on this device for"
REASON = "pre-approved by {who} until {until}"


def hours_offered(max_hours: int, approvals_required: int) -> tuple[int, ...]:
    """The windows Allow offers: 1 … `max_hours` whole hours, none when pre-approval is
    off (0) or more than one approval is required."""
    if approvals_required != 1 or max_hours < 1:
        return ()
    return tuple(range(1, max_hours + 1))


def parse_hours(value, offered: tuple[int, ...]) -> int | None:
    """The window picked with Allow (a form value or a JSON number): None for none
    ("" or missing); an offered whole number of hours; anything else → InvalidInputError
    on the field, and nothing changes."""
    if value is None or value == "":
        return None
    hours = None
    if isinstance(value, int) and not isinstance(value, bool):
        hours = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() \
            and len(value.strip()) <= 2:
        hours = int(value.strip())
    if hours is None or hours not in offered:
        if not offered:
            message = "Pre-approval is not offered for this request."
        else:
            message = f"Pick a whole number of hours from 1 to {offered[-1]}, or none."
        raise InvalidInputError({FIELD: [message]})
    return hours


def window_end(granted_at: datetime, hours: int) -> datetime:
    return granted_at + timedelta(hours=hours)


def is_live(expires_at: datetime, revoked_at: datetime | None, now: datetime) -> bool:
    """A pre-approval approves requests while it is neither expired nor revoked."""
    return revoked_at is None and now < expires_at


def until_text(expires_at: datetime) -> str:
    return expires_at.strftime("%Y-%m-%d %H:%M UTC")


def decision_reason(granted_by: str, expires_at: datetime) -> str:
    """The approved request's decision_reason: who granted the window, and until when."""
    return REASON.format(who=granted_by, until=until_text(expires_at))


def hours_label(hours: int) -> str:
    return "1 hour" if hours == 1 else f"{hours} hours"
