"""The filters of the session logs (Sessions, and the audit log): "From", "To" (dates, UTC
days), "Device", "Person" and one choice ("State" on Sessions, "Action" on the audit log).
A filter lives in the URL, so a view can be bookmarked and shared: `parse_log_filter`
reads the query arguments, `LogFilter.query_args` writes them back. Bad input never
raises: it is left out, with a message for its field."""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

MAX_TEXT = 254  # an email address, a device name, a username
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class LogFilter:
    date_from: date | None = None
    date_to: date | None = None
    device: str | None = None
    person: str | None = None
    choice: str | None = None  # the State (or Action) picked
    choice_key: str = "state"
    errors: dict[str, list[str]] = field(default_factory=dict, compare=False)

    @property
    def starts_at(self) -> datetime | None:
        """The first instant "From" lets in (its day's 00:00 UTC)."""
        if self.date_from is None:
            return None
        return datetime.combine(self.date_from, time(), tzinfo=timezone.utc)

    @property
    def ends_before(self) -> datetime | None:
        """The first instant "To" leaves out (the next day's 00:00 UTC): "To" is inclusive."""
        if self.date_to is None:
            return None
        return datetime.combine(self.date_to + timedelta(days=1), time(), tzinfo=timezone.utc)

    @property
    def is_set(self) -> bool:
        return bool(self.query_args())

    def query_args(self) -> dict[str, str]:
        """The filter as query arguments (only those set), for links that keep it."""
        args = {"from": self.date_from.isoformat() if self.date_from else None,
                "to": self.date_to.isoformat() if self.date_to else None,
                "device": self.device, "person": self.person, self.choice_key: self.choice}
        return {key: value for key, value in args.items() if value}


def _date(raw: str, label: str, errors: dict[str, list[str]], key: str) -> date | None:
    if not raw:
        return None
    if _DATE.fullmatch(raw):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    errors.setdefault(key, []).append(f"“{label}” must be a date (YYYY-MM-DD).")
    return None


def _text(raw: str, label: str, errors: dict[str, list[str]], key: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if len(raw) > MAX_TEXT or not raw.isprintable():
        errors.setdefault(key, []).append(
            f"“{label}” takes at most {MAX_TEXT} printable characters.")
        return None
    return raw


def parse_log_filter(args: Mapping[str, str], *, choices: Collection[str] | None,
                     choice_key: str = "state", choice_label: str = "State") -> LogFilter:
    """The filter in `args` (a request's query arguments). `choices` are the values the
    State/Action field takes (None: any short printable text)."""
    errors: dict[str, list[str]] = {}
    date_from = _date(args.get("from", "").strip(), "From", errors, "from")
    date_to = _date(args.get("to", "").strip(), "To", errors, "to")
    if date_from and date_to and date_to < date_from:
        errors.setdefault("to", []).append("“To” can't be before “From”.")
        date_to = None
    choice = _text(args.get(choice_key, ""), choice_label, errors, choice_key)
    if choice is not None and choices is not None and choice not in choices:
        errors.setdefault(choice_key, []).append(
            f"“{choice_label}” is one of: {', '.join(choices)}.")
        choice = None
    return LogFilter(
        date_from=date_from, date_to=date_to,
        device=_text(args.get("device", ""), "Device", errors, "device"),
        person=_text(args.get("person", ""), "Person", errors, "person"),
        choice=choice, choice_key=choice_key, errors=errors)


# --- keys of newest-first pages over (time, id) --------------------------------------

_KEY = re.compile(r"(\d{1,18})-(\d{1,10})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def time_key(at: datetime, row_id: int) -> str:
    """A page key for rows ordered by (time, id): "<microseconds since 1970>-<id>"."""
    delta = at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}-{row_id}"


def parse_time_key(raw: str | None) -> tuple[datetime, int] | None:
    """The (time, id) of a page key, or None for anything else (which starts at the top)."""
    match = _KEY.fullmatch(raw or "")
    if not match:
        return None
    micros, row_id = int(match.group(1)), int(match.group(2))
    if not 0 < row_id <= 2**31 - 1:
        return None
    try:
        return _EPOCH + timedelta(microseconds=micros), row_id
    except OverflowError:
        return None


# --- how a session reads -------------------------------------------------------------

APPROVED_BY_LABELS = {
    "end_user": "end user",
    "policy": "policy",
    "exclusion": "exclusion",
    "pre_approval": "pre-approval",
}


def session_people(technician: str, run_as: str | None, decided_by: str | None
                   ) -> list[str]:
    """Whom the "Person" filter finds a remote session by: its technician, its "Run as"
    and who approved it, lower-cased as the filter's value is, each once."""
    people = (value.lower() for value in (technician, run_as, decided_by) if value)
    return list(dict.fromkeys(people))


def approved_by_label(decided_by: str | None) -> str:
    """"Approved by" on Sessions: the approver's email, "end user", "policy",
    "exclusion" or "pre-approval"."""
    if not decided_by:
        return "—"
    return APPROVED_BY_LABELS.get(decided_by, decided_by)


def duration_text(seconds: int | float) -> str:
    """"42 s", "5 min 07 s", "2 h 05 min 07 s" (static/js/portal.js writes the same)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
