"""Department settings: labels, defaults, ranges and validation (design.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    default: int

    def check(self, value: int) -> str | None:
        if not self.low <= value <= self.high:
            return f"Enter a whole number from {self.low} to {self.high}."
        return None


CONFIRMATION_TIMEOUT = IntRange(10, 600, 60)
EMAIL_TIMEOUT = IntRange(30, 3600, 180)
OTP_EXPIRATION = IntRange(1, 1440, 30)
OTP_MIN_INTERVAL = IntRange(1, 1440, 60)
APPROVALS_REQUIRED = IntRange(1, 5, 1)
REPORT_COOLDOWN = IntRange(1, 1440, 30)
PREAPPROVAL_MAX_HOURS = IntRange(0, 24, 0)
ESCALATE_AFTER = IntRange(30, 3600, 120)
MAX_MESSAGE_LENGTH = 500
MAX_RECIPIENTS = 20
DEFAULT_CONFIRMATION_MESSAGE = (
    "A technician is requesting to connect to this computer. "
    "Do you want to allow the remote session?"
)

# Field name -> label shown in the form, the audit trail and the docs.
LABELS: dict[str, str] = {
    "is_confirmation_shown": "Show confirmation at the remote end",
    "confirmation_message": "Confirmation Message",
    "confirmation_timeout_seconds": "Timeout (in seconds)",
    "is_shown_when_locked": (
        "Show confirmation in locked and logged off devices (Windows only)"
    ),
    "is_email_authorization_required": "Require email authorization for incoming connections",
    "email_authorization_timeout_seconds": "Email authorization timeout (in seconds)",
    "email_recipients": "Recipient(s)",
    "is_sign_in_required_to_decide": "Approvers must sign in to decide",
    "is_otp_allowed": "Allow the use of one-time passwords",
    "is_otp_auto_sent_to_directory_users": (
        "Automatically send one-time passwords to Active Directory users"
    ),
    "is_otp_auto_sent_to_internal_users": (
        "Automatically send one-time passwords to internal users"
    ),
    "otp_expiration_minutes": "Access Request Expiration Time (minutes)",
    "otp_min_interval_minutes": "Minimum interval between new one-time passwords (minutes)",
    "is_reason_required": "Require a reason for each session",
    "approvals_required": "Approvals required",
    "is_number_matching_required": "Require number matching",
    "is_fallback_to_email": "If the end user doesn't answer, ask the email approvers",
    "escalation_recipients": "Escalate to",
    "escalate_after_seconds": "Escalate after (seconds)",
    "report_cooldown_minutes": "Cool-down after a report (minutes)",
    "preapproval_max_hours": "Allow pre-approval for up to (hours)",
}

DEFAULTS: dict[str, Any] = {
    "is_confirmation_shown": False,
    "confirmation_message": DEFAULT_CONFIRMATION_MESSAGE,
    "confirmation_timeout_seconds": CONFIRMATION_TIMEOUT.default,
    "is_shown_when_locked": False,
    "is_email_authorization_required": False,
    "email_authorization_timeout_seconds": EMAIL_TIMEOUT.default,
    "email_recipients": "",
    "is_sign_in_required_to_decide": True,
    "is_otp_allowed": False,
    "is_otp_auto_sent_to_directory_users": False,
    "is_otp_auto_sent_to_internal_users": False,
    "otp_expiration_minutes": OTP_EXPIRATION.default,
    "otp_min_interval_minutes": OTP_MIN_INTERVAL.default,
    "is_reason_required": False,
    "approvals_required": APPROVALS_REQUIRED.default,
    "is_number_matching_required": False,
    "is_fallback_to_email": False,
    "escalation_recipients": "",
    "escalate_after_seconds": ESCALATE_AFTER.default,
    "report_cooldown_minutes": REPORT_COOLDOWN.default,
    "preapproval_max_hours": PREAPPROVAL_MAX_HOURS.default,
}

RANGES: dict[str, IntRange] = {
    "confirmation_timeout_seconds": CONFIRMATION_TIMEOUT,
    "email_authorization_timeout_seconds": EMAIL_TIMEOUT,
    "otp_expiration_minutes": OTP_EXPIRATION,
    "otp_min_interval_minutes": OTP_MIN_INTERVAL,
    "approvals_required": APPROVALS_REQUIRED,
    "escalate_after_seconds": ESCALATE_AFTER,
    "report_cooldown_minutes": REPORT_COOLDOWN,
    "preapproval_max_hours": PREAPPROVAL_MAX_HOURS,
}

_SEPARATORS = re.compile(r"[,;\s]+")
# Control characters other than tab and line breaks: invisible to the reader, and NUL can't
# even be stored in PostgreSQL text. Also the bidirectional overrides and isolates, which
# could make the prompt the end user reads say something other than what was typed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def parse_recipients(text: str) -> tuple[list[str], list[str]]:
    """Split "one per line or comma-separated" addresses; return (addresses, errors).

    Addresses are normalised (domain lower-cased) and de-duplicated case-insensitively,
    keeping the first spelling.
    """
    addresses: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    for raw in _SEPARATORS.split(text or ""):
        if not raw:
            continue
        try:
            normalized = validate_email(raw, check_deliverability=False).normalized
        except EmailNotValidError:
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            errors.append(f"“{shown}” is not a valid email address.")
            continue
        if normalized.lower() in seen:
            continue
        seen.add(normalized.lower())
        addresses.append(normalized)
    if len(addresses) > MAX_RECIPIENTS:
        errors.append(f"Enter at most {MAX_RECIPIENTS} recipients (you entered {len(addresses)}).")
    return addresses, errors


def validate_settings(values: dict[str, Any]) -> dict[str, list[str]]:
    """Check a complete set of values; return field -> messages (empty when valid).

    `email_recipients` is the raw text as typed.
    """
    errors: dict[str, list[str]] = {}
    for field, rng in RANGES.items():
        value = values.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            errors.setdefault(field, []).append("Enter a whole number.")
            continue
        message = rng.check(value)
        if message:
            errors.setdefault(field, []).append(message)
    message_text = values.get("confirmation_message") or ""
    if len(message_text) > MAX_MESSAGE_LENGTH:
        errors.setdefault("confirmation_message", []).append(
            f"Keep the message to {MAX_MESSAGE_LENGTH} characters or fewer "
            f"(it has {len(message_text)})."
        )
    if _CONTROL.search(message_text):
        errors.setdefault("confirmation_message", []).append(
            "Remove the control characters from the message."
        )
    if values.get("is_confirmation_shown") and not message_text.strip():
        errors.setdefault("confirmation_message", []).append(
            "Enter the message the end user will see."
        )
    addresses, recipient_errors = parse_recipients(values.get("email_recipients") or "")
    if recipient_errors:
        errors["email_recipients"] = recipient_errors
    elif values.get("is_email_authorization_required") and not addresses:
        errors["email_recipients"] = [
            "Enter at least one recipient to require email authorization."
        ]
    _, escalation_errors = parse_recipients(values.get("escalation_recipients") or "")
    if escalation_errors:
        errors["escalation_recipients"] = escalation_errors
    required = values.get("approvals_required")
    if "approvals_required" not in errors and isinstance(required, int) and required > 1 \
            and not recipient_errors and required > len(addresses):
        errors["approvals_required"] = [
            f"Approvals required can't be more than the number of recipients "
            f"({len(addresses)})."]
    return errors


def normalize_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Values as stored: recipients one per line, message stripped of outer whitespace."""
    out = dict(values)
    addresses, _ = parse_recipients(values.get("email_recipients") or "")
    out["email_recipients"] = "\n".join(addresses)
    escalation, _ = parse_recipients(values.get("escalation_recipients") or "")
    out["escalation_recipients"] = "\n".join(escalation)
    out["confirmation_message"] = (values.get("confirmation_message") or "").strip()
    return out


def diff_settings(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for every field whose value changes, in LABELS order."""
    return [(f, old.get(f), new.get(f)) for f in LABELS if f in new and old.get(f) != new[f]]
