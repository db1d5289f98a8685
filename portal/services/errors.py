"""Exceptions raised by services; the web and API layers map them to statuses."""
from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "bad_request"
    # True when what the service did before raising is still right and must be committed
    # (e.g. a late decision refused with 410 after marking its request timed out).
    keeps_changes = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"


class ForbiddenError(ServiceError):
    status = 403
    code = "forbidden"


class ConflictError(ServiceError):
    """The state changed under the request (e.g. someone created the same name at the
    same moment); `field`, when given, is the form field the message belongs to."""

    status = 409
    code = "conflict"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field_errors = {field: [message]} if field else {}


class InvalidInputError(ServiceError):
    """Fails validation: messages per field."""

    status = 422
    code = "invalid"

    def __init__(self, field_errors: dict[str, list[str]]) -> None:
        first = next(iter(field_errors.values()))[0] if field_errors else "Invalid input."
        super().__init__(first)
        self.field_errors = field_errors


class ThrottledError(ServiceError):
    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
