"""`end_sessions` on the agent's prompts poll (design.md, "Ending a running session"):
always present, only this device's sessions whose end was asked for and that have not
ended, `reason` null when none was given; the agent's report ends it once."""
from __future__ import annotations

from api_setup import bearer, build_world, utcnow

from portal.extensions import db
from portal.models import RemoteSession
from portal.services import agents, session_control
from portal.services import requests as request_service
from portal.services.actors import CLI, Actor

import pytest

PROMPTS = "/api/v1/agent/prompts"


@pytest.fixture
def w(make):
    w = build_world(make)
    w.approver_actor = Actor.for_user(w.approver, "192.0.2.7")
    return w


def running(w, device) -> RemoteSession:
    req = request_service.create_session_request(
        technician=w.tech, device_name=device.name, actor=CLI, now=utcnow(),
        base_url="http://portal.test")
    session = agents.start_remote_session(device=device, request_id=req.id, actor=CLI,
                                          now=utcnow())
    db.session.commit()
    return session


def end(w, session, reason=None):
    session_control.request_end(user=w.approver, department_id=w.qa.id,
                                session_id=session.id, reason=reason,
                                actor=w.approver_actor, now=utcnow())
    db.session.commit()


def poll(client, token):
    response = client.get(PROMPTS, headers=bearer(token))
    assert response.status_code == 200
    return response.get_json()


def test_end_sessions_is_always_there_and_lists_only_this_devices(client, w):
    assert poll(client, w.device_token) == {"prompts": [], "end_sessions": []}
    mine, quiet, other = running(w, w.device), running(w, w.device), running(w, w.device_b)
    end(w, mine, "Suspicious activity")
    end(w, other)
    assert poll(client, w.device_token)["end_sessions"] == [
        {"id": mine.id, "reason": "Suspicious activity"}]
    assert poll(client, w.device_b_token)["end_sessions"] == [{"id": other.id,
                                                               "reason": None}]
    assert poll(client, w.foreign_token)["end_sessions"] == []
    # Another device's token can't end it; its own can, once; then it is gone.
    assert client.post(f"/api/v1/agent/sessions/{mine.id}/end",
                       headers=bearer(w.device_b_token)).status_code == 404
    assert client.post(f"/api/v1/agent/sessions/{mine.id}/end",
                       headers=bearer(w.device_token)).status_code == 200
    assert client.post(f"/api/v1/agent/sessions/{mine.id}/end",
                       headers=bearer(w.device_token)).status_code == 409
    assert poll(client, w.device_token)["end_sessions"] == []
    db.session.expire_all()
    assert db.session.get(RemoteSession, mine.id).ended_by == "approver@example.com"
    assert db.session.get(RemoteSession, quiet.id).ended_at is None


def test_a_session_the_agent_ends_by_itself_was_ended_by_the_device(client, w):
    session = running(w, w.device)
    assert client.post(f"/api/v1/agent/sessions/{session.id}/end",
                       headers=bearer(w.device_token)).status_code == 200
    db.session.expire_all()
    assert db.session.get(RemoteSession, session.id).ended_by == "device"
    # Too late to ask for the end now.
    from portal.domain.errors import ConflictError
    with pytest.raises(ConflictError, match="already ended"):
        end(w, session)
    db.session.rollback()
