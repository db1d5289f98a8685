"""Error pages and JSON errors; CSRF failures on htmx requests refresh the page."""
from __future__ import annotations

from flask import Flask, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.extensions import db
from portal.services.errors import ServiceError

TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Already decided",
    410: "Expired",
    413: "Too large",
    422: "Check the form",
    429: "Too many attempts",
    500: "Something went wrong",
}

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 410: "expired", 413: "too_large",
    415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
    500: "server_error",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, message: str, code: str | None = None):
    if _wants_json():
        return jsonify(error={"code": code or CODES.get(status, "error"),
                              "message": message}), status
    if request.headers.get("HX-Request") == "true":
        html = render_template("_macros/_oob_flash.html", message=message, category="error")
        response = make_response(html, status)
        response.headers["HX-Reswap"] = "none"
        return response
    return make_response(
        render_template("error.html", status=status, title=TITLES.get(status, "Error"),
                        message=message),
        status,
    )


def init_errors(app: Flask) -> None:
    # (Ids too large for any id column never match a route: see portal.app.IdConverter.)
    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError):
        if exc.keeps_changes:
            db.session.commit()
        else:
            db.session.rollback()
        return error_response(exc.status, exc.message, exc.code)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        db.session.rollback()
        if request.headers.get("HX-Request") == "true" and not _wants_json():
            response = make_response("", 400)
            response.headers["HX-Refresh"] = "true"
            return response
        return error_response(
            400, "Your form expired or came from another site. Reload the page and try again.",
            "csrf_failed",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        db.session.rollback()
        status = exc.code or 500
        messages = {
            404: "There is nothing here. Check the address.",
            405: "That action is not available here.",
            413: "The request body is larger than 64 KiB.",
        }
        return error_response(status, messages.get(status, exc.description or "Error."))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # a bug: log it, answer without details
        db.session.rollback()
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Something went wrong on our side. Please try again.")
