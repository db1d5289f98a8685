"""The one error hierarchy. Domain rules and services raise these; each carries a `code`
(the API's error slug) and a message a person can act on, never an HTTP status: the
web/API boundary maps classes to statuses in one table (portal.web.errors.STATUS)."""
from __future__ import annotations


class PortalError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(PortalError):
    """Malformed input: not JSON, wrong types, a missing field."""

    code = "bad_request"


class UnauthorizedError(PortalError):
    """No credentials, or credentials nobody issued (or that were revoked)."""

    code = "unauthorized"


class SignInRequiredError(PortalError):
    """A person must be signed in first (the web sends them to the sign-in page)."""

    code = "sign_in_required"

    def __init__(self, message: str = "Sign in to continue.") -> None:
        super().__init__(message)


class ForbiddenError(PortalError):
    code = "forbidden"


class OtpDisabledError(ForbiddenError):
    code = "otp_disabled"


class InvalidCredentialsError(ForbiddenError):
    """One answer for an unknown login, a wrong password and a throttled one."""

    code = "invalid_credentials"


class NotFoundError(PortalError):
    code = "not_found"


class ConflictError(PortalError):
    """The change collides with the current state (a name taken — perhaps by someone at
    the same moment —, a session ended); `field`, when given, is the form field the
    message belongs to."""

    code = "conflict"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field_errors = {field: [message]} if field else {}


class AlreadyDecidedError(ConflictError):
    code = "already_decided"


class AuditHeadMissingError(ConflictError):
    """Sealed audit events exist but the chain's head does not: sealing stops rather than
    start a new head over a deleted one."""

    code = "audit_head_missing"


class ExpiredError(PortalError):
    code = "expired"


class InvalidInputError(PortalError):
    """Fails validation: messages per field."""

    code = "invalid"

    def __init__(self, field_errors: dict[str, list[str]]) -> None:
        first = next(iter(field_errors.values()))[0] if field_errors else "Invalid input."
        super().__init__(first)
        self.field_errors = field_errors


class ReasonRequiredError(InvalidInputError):
    """"Require a reason for each session" is on and the reason given is not one."""

    code = "reason_required"


class NumberRequiredError(InvalidInputError):
    """Number matching is on and an Allow / accept came without a number."""

    code = "number_required"


class NotInDirectoryError(PortalError):
    """The directory has no single entry with a mail address for that user name."""

    code = "not_in_directory"


class ThrottledError(PortalError):
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooSoonError(ThrottledError):
    """A new one-time password sooner than the device's minimum interval allows."""

    code = "too_soon"


class ReportedError(ThrottledError):
    """The technician's last request to this device was reported as unexpected: new ones
    wait for the cool-down ("Cool-down after a report")."""

    code = "reported"


class UnavailableError(PortalError):
    """Something the answer depends on is down or too slow; try again later."""

    code = "unavailable"


class DirectoryUnavailableError(UnavailableError):
    code = "directory_unavailable"
