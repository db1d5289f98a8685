"""The technician's page of one of their requests links to its timeline once the request
is over, when they may read it (portal.services.timeline.may_read_request_timeline)."""
from __future__ import annotations

import pytest
from factories import NOW
from sqlalchemy import delete

from portal.clock import FixedClock

from portal.extensions import db
from portal.models import Membership
from portal.services import accounts
from portal.services import requests as request_service
from portal.services.actors import Actor

from .session_logs_setup import DEVICE, build_world, turn_on


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(NOW)}


def _request(world):
    tech = accounts.find_user("tech@example.com")
    req = request_service.create_session_request(
        technician=tech, device_name=DEVICE, actor=Actor.for_user(tech), now=NOW,
        base_url="http://portal.test")
    db.session.commit()
    return req


def _link(world, req):
    return f'href="/departments/{world.qa.id}/requests/{req.id}/timeline"'


def test_a_finished_request_links_to_its_timeline(client, auth, make):
    world = build_world(make)
    req = _request(world)  # no checks: approved by policy at once
    auth.login("tech@example.com")
    for url in (f"/requests/{req.id}", f"/requests/{req.id}/status"):
        page = client.get(url).get_data(as_text=True)
        assert _link(world, req) in page and "Timeline of this request" in page
    timeline = client.get(f"/departments/{world.qa.id}/requests/{req.id}/timeline")
    assert timeline.status_code == 200
    assert f"Session request #{req.id}" in timeline.get_data(as_text=True)


def test_no_link_while_pending_or_for_a_technician_no_longer_in_the_department(
        client, auth, make):
    world = build_world(make)
    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com")
    pending = _request(world)
    auth.login("tech@example.com")
    assert "Timeline of this request" not in client.get(
        f"/requests/{pending.id}").get_data(as_text=True)
    turn_on(world.qa, is_email_authorization_required=False)
    done = _request(world)
    tech = accounts.find_user("tech@example.com")
    db.session.execute(delete(Membership).where(Membership.user_id == tech.id))
    db.session.commit()
    response = client.get(f"/requests/{done.id}")
    if response.status_code == 200:  # their own request still reads back to them
        assert "Timeline of this request" not in response.get_data(as_text=True)
    assert client.get(f"/departments/{world.qa.id}/requests/{done.id}/timeline"
                      ).status_code == 403
