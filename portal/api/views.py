"""API routes (design.md, "HTTP contract"): read the body, call a service, answer. The
unit of work (portal.unit_of_work) commits; errors are mapped by portal.web.errors."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from portal import clock, unit_of_work
from portal.api.auth import bearer_token, device_token_required, refused, user_token_required
from portal.api.serializers import iso, prompt_object, request_object
from portal.clock import request_now as utcnow
from portal.domain import requests as rules
from portal.domain.errors import BadRequestError, InvalidInputError
from portal.json_input import UnusableJSONError
from portal.services import accounts, agents, decisions, requests as service
from portal.services.actors import Actor

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_WAIT_SECONDS = 30
# Ids in URLs: the id columns are 32-bit integers; a bigger number matches no route (404)
# instead of reaching the database, where it fails (a 500 on SQLite and PostgreSQL).
ID = "int(max=2147483647)"


SEND_AN_OBJECT = "Send a JSON object (Content-Type: application/json)."


def body() -> dict:
    """The JSON object of the request, or 400. Read through the app's JSON provider
    (portal.json_input), which refuses nesting too deep to decode and lone surrogates."""
    if not request.is_json:
        raise BadRequestError(SEND_AN_OBJECT)
    try:
        data = current_app.json.loads(request.get_data(cache=True))
    except UnusableJSONError as exc:
        raise BadRequestError(str(exc)) from None
    except ValueError:  # not JSON, or not UTF-8
        data = None
    if not isinstance(data, dict):
        raise BadRequestError(SEND_AN_OBJECT)
    return data


def optional_string(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequestError(f"“{key}” must be a string or null.")
    return value


def user_actor() -> Actor:
    return Actor(label=g.api_user.email, user_id=g.api_user.id,
                 client_ip=request.remote_addr or "")


def device_actor() -> Actor:
    return Actor(label=f"device:{g.api_device.name}", client_ip=request.remote_addr or "")


# --- technician console --------------------------------------------------------------


@bp.post("/session-requests")
def create_session_request():
    """The token's check is part of the device's query (requests.find_requester), so it is
    made here rather than by user_token_required, with its answer: a bad token is told
    first, before anything about the body."""
    token = bearer_token()
    try:
        data = body()
        device = data.get("device")
        if not isinstance(device, str):
            raise BadRequestError("“device” (the device's name) is required and must be a "
                                  "string.")
        device, run_as, reason = service.checked_input(
            device, optional_string(data, "run_as"), optional_string(data, "reason"))
    except (BadRequestError, InvalidInputError, HTTPException):  # e.g. 413, too large
        if accounts.find_token_owner(token, "user") is None:
            raise refused("user") from None
        raise
    now = utcnow()
    requester = service.find_requester(token, device, now)
    if requester is None:
        raise refused("user")
    g.api_user = requester.technician
    req = service.create_for_requester(
        requester, run_as=run_as, reason=reason, actor=user_actor(), now=now,
        base_url=current_app.config["BASE_URL"],
        user_agent=request.headers.get("User-Agent", ""))
    accounts.note_token_used(requester.token, now)
    response = jsonify(request_object(req, now))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_session_request", request_id=req.id)
    return response


def _wait_seconds() -> int:
    raw = request.args.get("wait")
    if raw is None:
        return 0
    # ASCII digits only: str.isdigit() also accepts "²", which int() rejects (a 500).
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= MAX_WAIT_SECONDS:
        raise BadRequestError(f"“wait” must be a whole number of seconds from 0 to "
                              f"{MAX_WAIT_SECONDS}.")
    return int(raw)


@bp.get(f"/session-requests/<{ID}:request_id>")
@user_token_required
def get_session_request(request_id: int):
    wait = _wait_seconds()
    req = service.get_own_request(g.api_user, request_id)
    seen = rules.effective_status(req.status, req.expires_at, utcnow())
    if wait and seen is rules.Status.PENDING:
        unit_of_work.release()  # nothing changed yet: no connection held while waiting
        service.wait_for_change(request_id, seen, wait, current_app.extensions["clock"])
        req = service.get_own_request(g.api_user, request_id)
    return jsonify(request_object(req, clock.now()))


@bp.post(f"/session-requests/<{ID}:request_id>/cancel")
@user_token_required
def cancel_session_request(request_id: int):
    now = utcnow()
    req = decisions.cancel_request(user=g.api_user, request_id=request_id,
                                   actor=user_actor(), now=now)
    return jsonify(request_object(req, now))


# --- device agent --------------------------------------------------------------------


@bp.put("/agent/state")
@device_token_required
def agent_state():
    data = body()
    if "locked" not in data:
        raise BadRequestError("“locked” (true or false) is required.")
    if not isinstance(data["locked"], bool):
        raise BadRequestError("“locked” must be true or false.")
    logged_in_user = data.get("logged_in_user")
    if logged_in_user is not None and not isinstance(logged_in_user, str):
        raise BadRequestError("“logged_in_user” must be a string or null.")
    agents.update_state(device=g.api_device, locked=data["locked"],
                        logged_in_user=logged_in_user, actor=device_actor(), now=utcnow())
    return "", 204


@bp.get("/agent/prompts")
def agent_prompts():
    """The agent's poll: its token's check and everything it returns are one statement
    (agents.read_poll), so the device token is checked there, not by
    device_token_required — with the same answer for a missing, unknown or revoked one."""
    now = utcnow()
    poll = agents.read_poll(bearer_token(), now)
    if poll is None:
        raise refused("device")
    g.api_device = poll.device
    agents.note_prompts_shown(poll, device_actor(), now)
    accounts.note_token_used(poll.token, now)
    return jsonify({"prompts": [prompt_object(req, now) for req in poll.prompts],
                    "end_sessions": [{"id": session_id, "reason": reason}
                                     for session_id, reason in poll.end_sessions]})


@bp.post(f"/agent/prompts/<{ID}:request_id>")
@device_token_required
def agent_decide(request_id: int):
    data = body()
    decision = data.get("decision")
    if decision not in decisions.END_USER_DECISIONS:
        raise BadRequestError("“decision” must be “accept”, “decline” or “report”.")
    now = utcnow()
    req = decisions.decide_by_end_user(device=g.api_device, request_id=request_id,
                                       decision=decision, number=data.get("number"),
                                       actor=device_actor(), now=now)
    return jsonify(request_object(req, now))


@bp.post("/agent/sessions")
@device_token_required
def agent_start_session():
    data = body()
    request_id = data.get("request_id")
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise BadRequestError("“request_id” (the session request's id) is required and "
                              "must be an integer.")
    session = agents.start_remote_session(device=g.api_device, request_id=request_id,
                                          actor=device_actor(), now=utcnow())
    return jsonify(id=session.id, request_id=session.request_id,
                   started_at=iso(session.started_at)), 201


@bp.post(f"/agent/sessions/<{ID}:session_id>/end")
@device_token_required
def agent_end_session(session_id: int):
    session = agents.end_remote_session(device=g.api_device, session_id=session_id,
                                        actor=device_actor(), now=utcnow())
    return jsonify(id=session.id, request_id=session.request_id,
                   started_at=iso(session.started_at), ended_at=iso(session.ended_at))


@bp.route("/<path:_unknown>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unknown(_unknown: str):
    return jsonify(error={"code": "not_found", "message": "No such API endpoint."}), 404
