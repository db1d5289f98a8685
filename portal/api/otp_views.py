"""The device agent's one-time password endpoints (design.md, "One-time passwords")."""
from __future__ import annotations

from flask import current_app, g, jsonify

from portal.api.auth import device_token_required, device_token_with_settings_required
from portal.api.serializers import iso
from portal.api.views import ID, body, bp, device_actor
from portal.clock import request_now
from portal.domain.errors import BadRequestError
from portal.domain.otp import mask_email
from portal.services import otp, otp_requests


def _string(data: dict, key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"“{key}” is required and must be a string." if required
                              else f"“{key}” must be a string or null.")
    return value


@bp.post("/agent/otp/request")
@device_token_required
def agent_otp_request():
    data = body()
    emergency = data.get("emergency", False)
    if not isinstance(emergency, bool):
        raise BadRequestError("“emergency” must be true or false.")
    answer = otp_requests.request_otp(
        device=g.api_device, username=_string(data, "username", required=True),
        email=_string(data, "email"), emergency=emergency, login=_string(data, "login"),
        password=_string(data, "password"), actor=device_actor(), now=request_now(),
        base_url=current_app.config["BASE_URL"])
    payload = {"status": answer.status, "expires_at": iso(answer.expires_at)}
    if answer.sent_to is not None:
        payload["sent_to"] = answer.sent_to
    if answer.request_id is not None:
        payload["request_id"] = answer.request_id
    return jsonify(payload), 202


@bp.get(f"/agent/otp/requests/<{ID}:request_id>")
@device_token_required
def agent_otp_request_status(request_id: int):
    ask = otp_requests.get_for_device(g.api_device, request_id)
    status = otp.access_status(ask, request_now())
    payload = {"id": ask.id, "status": status.value, "expires_at": iso(ask.expires_at)}
    if status.value == "approved":
        payload["sent_to"] = mask_email(ask.email)
    if ask.comment:
        payload["comment"] = ask.comment
    return jsonify(payload)


@bp.post("/agent/otp/verify")
@device_token_with_settings_required
def agent_otp_verify():
    data = body()
    fields = {key: _string(data, key, required=True)
              for key in ("username", "email", "password")}
    try:
        session = otp.verify_otp(device=g.api_device, actor=device_actor(),
                                 now=request_now(), **fields)
    except otp.VerificationFailedError:
        # One answer, byte for byte, for a wrong, used, expired, locked-out or foreign code.
        return jsonify(allowed=False), 403
    return jsonify(allowed=True, client_session_id=session.id)


@bp.post(f"/agent/client-sessions/<{ID}:session_id>/end")
@device_token_required
def agent_end_client_session(session_id: int):
    session = otp.end_client_session(device=g.api_device, session_id=session_id,
                                     actor=device_actor(), now=request_now())
    return jsonify(id=session.id, user_name=session.user_name,
                   started_at=iso(session.started_at), ended_at=iso(session.ended_at))
