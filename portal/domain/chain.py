"""The approval chain: end user → email approvers → escalation (design.md, "Fallback" and
"Escalation"). When the next step falls due and whom it mails.

Plain Python: the caller passes the settings' values and the times.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

FALLBACK = "fallback"
ESCALATION = "escalation"


def escalation_due(*, mailed_at: datetime, escalate_after_seconds: int,
                   escalation_addresses: Iterable[str], expires_at: datetime
                   ) -> datetime | None:
    """When a request whose approval emails were queued at `mailed_at` escalates: "Escalate
    after" seconds later, if "Escalate to" names anyone and that is before the request
    expires (`expires_at` never moves, so a later escalation could reach nobody in
    time); else None."""
    if not any(address.strip() for address in escalation_addresses):
        return None
    due = mailed_at + timedelta(seconds=escalate_after_seconds)
    return due if due < expires_at else None


def addresses_to_mail(addresses: Iterable[str], already_asked: Iterable[str]) -> list[str]:
    """The addresses to mail (the "Escalate to" ones, or the fallback's Recipient(s)):
    those not asked already and whose Allow did not count already (addresses among the
    request's recipients are not mailed twice), case-blind, first spelling kept, in
    order."""
    seen = {address.lower() for address in already_asked}
    targets = []
    for address in addresses:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            targets.append(address)
    return targets


def step_kind(email_check: str) -> str:
    """Which step a due request takes: the fallback mail while its email check waits,
    else the escalation."""
    return FALLBACK if email_check == "waiting" else ESCALATION


def is_current_recipient(email: str, recipients: Iterable[str],
                         escalation_addresses: Iterable[str]) -> bool:
    """A link works only while its address is still one of the department's Recipient(s)
    or "Escalate to" addresses (removing one ends its links)."""
    wanted = email.lower()
    return any(wanted == address.lower()
               for address in (*recipients, *escalation_addresses))
