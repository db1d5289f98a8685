"""The one error map: error classes → HTTP statuses, and how an error reads — JSON for the
API, an out-of-band flash for htmx, an error page otherwise. CSRF failures on htmx
requests refresh the page. The unit of work (portal.unit_of_work) rolls back whatever an
error response leaves, so nothing here touches the database."""
from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_htmx import make_response
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.domain import errors
from portal.extensions import htmx
from portal.web.security import sign_in_redirect

# Most specific first is not needed: the class's own MRO is walked (status_of).
STATUS: dict[type[errors.PortalError], int] = {
    errors.BadRequestError: 400,
    errors.UnauthorizedError: 401,
    errors.SignInRequiredError: 401,
    errors.ForbiddenError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.ExpiredError: 410,
    errors.InvalidInputError: 422,
    errors.NotInDirectoryError: 422,
    errors.ThrottledError: 429,
    errors.UnavailableError: 503,
}

TITLES = {
    400: "Bad request",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Already decided",
    410: "Expired",
    413: "Too large",
    422: "Check the form",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Try again later",
}

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 410: "expired", 413: "too_large",
    415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
    500: "server_error", 503: "unavailable",
}


def status_of(exc: errors.PortalError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, message: str, code: str | None = None,
                   fields: dict | None = None, **extra):
    """`fields`: for a validation error, the messages per field (the API names them)."""
    if _wants_json():
        error = {"code": code or CODES.get(status, "error"), "message": message}
        if fields:
            error["fields"] = fields
        response = jsonify(error=error, **extra)
        response.status_code = status
        return response
    if htmx:
        html = render_template("_macros/_oob_flash.html", message=message, category="error")
        return make_response(html, status, reswap="none")
    return make_response(
        render_template("error.html", status=status, title=TITLES.get(status, "Error"),
                        message=message),
        status,
    )


def init_errors(app: Flask) -> None:
    # (Ids too large for any id column never match a route: see portal.app.IdConverter.)
    @app.errorhandler(errors.PortalError)
    def portal_error(exc: errors.PortalError):
        if isinstance(exc, errors.SignInRequiredError) and not _wants_json():
            return sign_in_redirect()
        extra = {}
        if isinstance(exc, errors.ThrottledError):
            extra["retry_after"] = exc.retry_after
        response = error_response(status_of(exc), exc.message, exc.code,
                                  fields=getattr(exc, "field_errors", None), **extra)
        if isinstance(exc, errors.ThrottledError):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        if htmx and not _wants_json():
            return make_response("", 400, refresh=True)
        return error_response(
            400, "Your form expired or came from another site. Reload the page and try again.",
            "csrf_failed",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        messages = {
            404: "There is nothing here. Check the address.",
            405: "That action is not available here.",
            413: "The request body is larger than 64 KiB.",
        }
        return error_response(status, messages.get(status, exc.description or "Error."))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # a bug: log it, answer without details
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Something went wrong on our side. Please try again.")

