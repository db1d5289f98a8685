"""`portal-agent` as a real process: a session an approver ended ("End session") is
closed by the agent on its next poll, which says so with the reason and reports the end;
the Sessions list then reads "Ended by" the approver."""
from __future__ import annotations

import subprocess

import pytest
from agent_process import portal_url  # noqa: F401 (a fixture)
from test_portal_agent import Site, run_agent, utcnow

from portal.extensions import db
from portal.models import RemoteSession
from portal.services import agents, session_control
from portal.services.actors import CLI, Actor


@pytest.fixture
def site(make):
    site = Site(make)
    site.approver = make.user("approver@example.com", "approver", site.department)
    return site


def running_session(site) -> RemoteSession:
    request_id = site.request()
    from portal.services import decisions
    decisions.decide_in_portal(user=site.approver, request_id=request_id, decision="allow",
                               actor=Actor.for_user(site.approver, "192.0.2.7"),
                               now=utcnow())
    session = agents.start_remote_session(device=site.device, request_id=request_id,
                                          actor=CLI, now=utcnow())
    db.session.commit()
    return session


def ended(session_id: int) -> RemoteSession:
    db.session.expire_all()
    row = db.session.get(RemoteSession, session_id)
    db.session.commit()
    return row


def test_the_agent_closes_a_session_an_approver_ended_and_reports_it(portal_url, site):
    session, untouched = running_session(site), running_session(site)
    session_control.request_end(user=site.approver, department_id=site.department.id,
                                session_id=session.id, reason="Not on any ticket",
                                actor=CLI, now=utcnow())
    db.session.commit()

    result = run_agent(portal_url, site.device_token, "--once", stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert (f"Ending remote session #{session.id}: the portal asks for it (reason: Not on "
            "any ticket).") in result.stdout
    assert f"Remote session #{session.id} closed; its end was reported." in result.stdout
    row = ended(session.id)
    assert row.ended_at is not None and row.ended_by == "approver@example.com"
    assert ended(untouched.id).ended_at is None  # only the one asked for

    # Nothing left to end: the next run says nothing about sessions.
    again = run_agent(portal_url, site.device_token, "--once", stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and "Ending remote session" not in again.stdout


def test_without_a_reason_the_agent_says_none_was_given(portal_url, site):
    session = running_session(site)
    session_control.request_end(user=site.approver, department_id=site.department.id,
                                session_id=session.id, reason="  ", actor=CLI, now=utcnow())
    db.session.commit()
    result = run_agent(portal_url, site.device_token, "--once", stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert f"Ending remote session #{session.id}: the portal asks for it (no reason " \
        "given)." in result.stdout
    assert ended(session.id).ended_by == "approver@example.com"
