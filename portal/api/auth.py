"""Bearer tokens: a user token (technician console) or a device token (agent)."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import wraps

from flask import g, request

from portal.services import accounts
from portal.services.errors import ServiceError


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Send Authorization: Bearer <token>.")
    return token.strip()


def _token(kind: str):
    row = accounts.find_token(_bearer())
    if row is None or (kind == "user" and row.user is None) or (
            kind == "device" and row.device is None):
        raise UnauthorizedError(f"The {kind} token is missing, unknown or revoked.")
    now = datetime.now(timezone.utc)
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now  # at most once a minute: polling stays read-only
    return row


def user_token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.api_user = _token("user").user
        return view(*args, **kwargs)
    return wrapper


def device_token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.api_device = _token("device").device
        return view(*args, **kwargs)
    return wrapper
