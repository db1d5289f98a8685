"""Approvals that resist fatigue and fraud (design.md): what a required reason must be,
what a comment may be, when N distinct Allows approve, the match number and its choices,
and the cool-down after a report.

Plain Python: the caller passes `now` and, for the match number, a source of randomness
(`secrets` by default)."""
from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from portal.domain.errors import InvalidInputError, ReasonRequiredError, NumberRequiredError

MIN_REASON_LENGTH = 10
MIN_REASON_ALNUM = 3
MAX_COMMENT = 500
MATCH_LOW, MATCH_HIGH = 10, 99
CHOICES = 3

MSG_REPORTED_BY = "The request was reported as unexpected by {who}."
END_USER_REPORTER = "the end user"
NUMBER_MISMATCH = "number did not match"
QUESTION = "Which number does the technician see?"

# Control characters (tab and line breaks included: a comment is one line), and the
# bidirectional overrides and isolates.
_COMMENT_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


# --- reason --------------------------------------------------------------------------


def reason_problem(reason: str | None) -> str | None:
    """Why `reason` is not a reason, or None when it is one: trimmed, at least 10
    characters, at least 3 of them letters or digits ("." or "-------------" is not)."""
    text = (reason or "").strip()
    if len(text) < MIN_REASON_LENGTH:
        return f"Give a reason of at least {MIN_REASON_LENGTH} characters."
    if sum(ch.isalnum() for ch in text) < MIN_REASON_ALNUM:
        return f"Give a reason with at least {MIN_REASON_ALNUM} letters or digits."
    return None


def require_reason(reason: str | None, *, is_required: bool) -> None:
    """Raise ReasonRequiredError (field "reason") when a reason is required and this is
    not one."""
    if not is_required:
        return
    problem = reason_problem(reason)
    if problem:
        raise ReasonRequiredError({"reason": [problem]})


# --- comment -------------------------------------------------------------------------


def clean_comment(value) -> str | None:
    """An approver's optional comment: one line of at most 500 characters without control
    characters; blank is none. Raises InvalidInputError (field "comment")."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError({"comment": ["The comment must be text."]})
    if _COMMENT_CONTROL.search(value.strip(" ")):
        raise InvalidInputError({"comment": [
            "Keep the comment to one line, without control characters."]})
    value = value.strip()
    if len(value) > MAX_COMMENT:
        raise InvalidInputError({"comment": [
            f"Keep the comment to {MAX_COMMENT} characters (it has {len(value)})."]})
    return value or None


# --- N of M --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    required: int
    received: int
    by: tuple[str, ...]

    @property
    def is_reached(self) -> bool:
        return self.received >= self.required

    def label(self) -> str:
        return f"{self.received} of {self.required} approvals"


def count_allow(tally: Tally, who: str) -> Tally:
    """The tally after `who` pressed Allow. The same person twice counts once (the caller
    refuses the second with 409: see has_allowed)."""
    if has_allowed(tally, who):
        return tally
    return Tally(tally.required, tally.received + 1, (*tally.by, who.lower()))


def has_allowed(tally: Tally, who: str) -> bool:
    return who.lower() in tally.by


def decide_by_allows(tally: Tally) -> str:
    """"approved" once N distinct people allowed, else "pending" (one Deny denies: the
    caller's deny is a transition of its own)."""
    return "approved" if tally.is_reached else "pending"


def parse_approvers(text: str | None) -> tuple[str, ...]:
    """The stored list of people whose Allow counted (one lower-cased email a line)."""
    return tuple(line for line in (text or "").splitlines() if line)


# --- number matching -----------------------------------------------------------------


def new_match(randbelow=secrets.randbelow) -> tuple[int, tuple[int, int, int]]:
    """A match number 10…99 and three distinct choices (one of them the match), in
    ascending order so the position says nothing."""
    span = MATCH_HIGH - MATCH_LOW + 1
    match = MATCH_LOW + randbelow(span)
    picked = {match}
    while len(picked) < CHOICES:
        picked.add(MATCH_LOW + randbelow(span))
    return match, tuple(sorted(picked))  # type: ignore[return-value]


def format_choices(choices: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in choices)


def parse_choices(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in (text or "").split(",") if part)


def parse_number(value) -> int | None:
    """The number as sent (an int in JSON, a string from a form); None when missing.
    Raises InvalidInputError (field "number") for something that is not a whole number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInputError({"number": ["Pick one of the numbers shown."]})
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() \
            and len(value.strip()) <= 3:
        return int(value.strip())
    raise InvalidInputError({"number": ["Pick one of the numbers shown."]})


def check_number(match: int | None, choices: tuple[int, ...], number) -> bool | None:
    """For an Allow / accept: None when the request has no match number; True when the
    number matches, False when it is another of the choices (the request is denied).
    Missing → NumberRequiredError; not one of the choices → InvalidInputError (both on
    field "number"), and nothing changes."""
    if match is None:
        return None
    picked = parse_number(number)
    if picked is None:
        raise NumberRequiredError({"number": [QUESTION + " Pick it to allow."]})
    if picked not in choices:
        raise InvalidInputError({"number": ["Pick one of the numbers shown."]})
    return picked == match


def mismatch_reason(picked: int) -> str:
    return f"The {NUMBER_MISMATCH}: {picked} was picked."


# --- report and cool-down ------------------------------------------------------------


def reported_outcome(who: str) -> str:
    return MSG_REPORTED_BY.format(who=who)


def cooldown_until(reported_at: datetime, minutes: int) -> datetime:
    return reported_at + timedelta(minutes=minutes)


def retry_after(until: datetime, now: datetime) -> int:
    """Whole seconds until the cool-down ends (at least 1 while it lasts, 0 after)."""
    if now >= until:
        return 0
    return max(1, math.ceil((until - now).total_seconds()))
