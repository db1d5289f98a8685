"""Bearer tokens: a user token (technician console) or a device token (agent)."""
from __future__ import annotations

from functools import wraps

from flask import g, request

from portal.clock import request_now
from portal.domain.errors import UnauthorizedError
from portal.services import accounts


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Send Authorization: Bearer <token>.")
    return token.strip()


def refused(kind: str) -> UnauthorizedError:
    """The one answer for a missing, unknown, revoked or other kind's token."""
    return UnauthorizedError(f"The {kind} token is missing, unknown or revoked.")


def _authenticated(kind: str, view, *, with_settings: bool = False):
    @wraps(view)
    def wrapper(*args, **kwargs):
        found = accounts.find_token_owner(bearer_token(), kind, with_settings=with_settings)
        if found is None:
            raise refused(kind)
        owner, token = found
        setattr(g, f"api_{kind}", owner)
        response = view(*args, **kwargs)
        # After the view: a long-poll holds no write lock while it waits.
        accounts.note_token_used(token, request_now())
        return response
    return wrapper


def user_token_required(view):
    return _authenticated("user", view)


def device_token_required(view):
    return _authenticated("device", view)


def device_token_with_settings_required(view):
    """device_token_required for a view that only reads the device and its department's
    settings: `g.api_device` is a read-only snapshot of both, read by the token's
    statement (accounts.find_token_owner; otp.settings_of then sends none)."""
    return _authenticated("device", view, with_settings=True)
