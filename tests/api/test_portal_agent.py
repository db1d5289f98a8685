"""The reference agent `portal-agent`, run as a real process against the app served on
127.0.0.1: a person at the device answers on stdin; the portal's database records it."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from agent_process import AGENT_TIMEOUT, portal_url  # noqa: F401 (a fixture)
from agent_process import agent_path as _agent_path
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.models import Device, RemoteSession, SessionRequest
from portal.services import accounts, agents, departments, devices
from portal.services import requests as request_service
from portal.services.actors import CLI, Actor

MESSAGE = "Support would like to fix your printer. Allow the session?"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Site:
    """A department with session confirmation on, one device (with its agent token) whose
    user is logged in, and a technician with a console token."""

    def __init__(self, make):
        now = utcnow()
        self.department = make.department("QA Team")
        values = departments.settings_values(self.department.settings) | {
            "is_confirmation_shown": True, "confirmation_message": MESSAGE,
            "confirmation_timeout_seconds": 60}
        departments.update_settings(department=self.department, values=values, actor=CLI,
                                    now=now)
        self.device, self.device_token = devices.create_device(
            department=self.department, name="WIN-0859G9I39J0", os="Windows 11",
            ip_address="10.0.0.5", actor=CLI, now=now)
        agents.update_state(device=self.device, locked=False, logged_in_user="alice",
                            actor=CLI, now=now)
        db.session.commit()
        self.technician = make.user("tech@example.com", "technician", self.department)
        self.user_token = accounts.create_user_token(user=self.technician, actor=CLI, now=now)
        db.session.commit()

    def request(self, run_as="Administrator") -> int:
        req = request_service.create_session_request(
            technician=self.technician, device_name=self.device.name, run_as=run_as,
            reason="printer queue stuck", now=utcnow(), base_url="http://portal.test",
            actor=Actor(label=self.technician.email, user_id=self.technician.id))
        db.session.commit()
        assert req.status == "pending" and req.end_user_check == "pending"
        return req.id

    def technician_view(self, client, request_id: int) -> dict:
        response = client.get(f"/api/v1/session-requests/{request_id}",
                              headers={"Authorization": f"Bearer {self.user_token}"})
        assert response.status_code == 200
        return response.get_json()


@pytest.fixture
def site(make):
    return Site(make)


def run_agent(url, token, *args, stdin=None, input=None):
    """Run the installed console script to completion: `input` is what the person at
    the device types; `stdin=subprocess.DEVNULL` when nobody is there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_AGENT_")}
    return subprocess.run(
        [_agent_path(), "--url", url, "--token", token, *args], input=input, stdin=stdin,
        capture_output=True, text=True, timeout=AGENT_TIMEOUT, env=env, check=False)


def reload(request_id: int) -> SessionRequest:
    db.session.expire_all()
    req = db.session.get(SessionRequest, request_id)
    db.session.commit()  # release any read lock before the next agent run
    return req


def test_typed_yes_accepts_the_prompt(portal_url, site, client):
    request_id = site.request()

    result = run_agent(portal_url, site.device_token, "--once", "--user", "alice",
                       input="y\n")

    assert result.returncode == 0, result.stderr
    assert MESSAGE in result.stdout
    assert "tech@example.com" in result.stdout and "Administrator" in result.stdout
    assert "accepted" in result.stdout
    assert "The session will begin shortly." in result.stdout
    req = reload(request_id)
    assert (req.status, req.decided_by, req.end_user_check) == \
        ("approved", "end_user", "accepted")
    assert site.technician_view(client, request_id)["status"] == "approved"


def test_typed_no_declines_and_the_technician_is_told(portal_url, site, client):
    request_id = site.request()

    result = run_agent(portal_url, site.device_token, "--once", input="no\n")

    assert result.returncode == 0, result.stderr
    assert "declined" in result.stdout
    req = reload(request_id)
    assert (req.status, req.end_user_check) == ("denied", "declined")
    view = site.technician_view(client, request_id)
    assert view["outcome_message"] == \
        "The end user has rejected the Session Confirmation Request"
    assert view["checks"]["end_user"] == "declined"


def test_an_unclear_answer_is_asked_again(portal_url, site):
    request_id = site.request()

    result = run_agent(portal_url, site.device_token, "--once", input="maybe\n\nYES\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Please answer y (accept) or n (decline).") == 2
    assert reload(request_id).status == "approved"


def test_auto_accept_answers_every_open_prompt_without_asking(portal_url, site):
    first, second = site.request(), site.request(run_as=None)

    result = run_agent(portal_url, site.device_token, "--once", "--auto", "accept",
                       stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("accepted") == 2
    assert [reload(i).status for i in (first, second)] == ["approved", "approved"]


def test_auto_decline(portal_url, site):
    request_id = site.request()
    result = run_agent(portal_url, site.device_token, "--once", "--auto", "decline",
                       stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert reload(request_id).status == "denied"


def test_reports_the_device_state(portal_url, site):
    result = run_agent(portal_url, site.device_token, "--once", "--locked", "--no-user",
                       stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "No open prompts." in result.stdout
    db.session.expire_all()
    device = db.session.get(Device, site.device.id)
    assert (device.is_locked, device.logged_in_user) == (True, None)
    assert device.last_seen_at is not None
    db.session.commit()

    result = run_agent(portal_url, site.device_token, "--once", "--user", "CORP\\bob",
                       stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    db.session.expire_all()
    device = db.session.get(Device, site.device.id)
    assert (device.is_locked, device.logged_in_user) == (False, "CORP\\bob")
    db.session.commit()


def test_locked_device_without_confirmation_on_locked_gets_no_prompt(portal_url, site):
    """The agent's report feeds the policy: a locked device cannot answer a prompt."""
    result = run_agent(portal_url, site.device_token, "--once", "--locked",
                       stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    db.session.expire_all()
    req = request_service.create_session_request(
        technician=site.technician, device_name=site.device.name, now=utcnow(),
        base_url="http://portal.test", actor=CLI)
    db.session.commit()
    assert req.status == "approved"
    assert req.decision_reason == "device locked; confirmation not shown"


@pytest.mark.parametrize("token", ["not-a-real-token", "-starts-with-a-dash"])
def test_a_bad_token_exits_with_a_clear_message(portal_url, site, token):
    result = run_agent(portal_url, token, "--once", stdin=subprocess.DEVNULL)
    assert result.returncode == 3
    assert "refused the device token" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_user_token_is_not_a_device_token(portal_url, site):
    result = run_agent(portal_url, site.user_token, "--once", stdin=subprocess.DEVNULL)
    assert result.returncode == 3
    assert "refused the device token" in result.stderr


def test_an_unreachable_portal_exits_with_a_clear_message():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_agent(f"http://127.0.0.1:{port}", "token", "--once",
                       stdin=subprocess.DEVNULL)
    assert result.returncode == 4
    assert "cannot reach the portal" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, complaint", [
    (["--url", "http://127.0.0.1:1"], "a device token is required"),
    (["--url", "ftp://portal", "--token", "t"], "--url must be"),
    (["--token", "t", "--interval", "0"], "--interval must be"),
    (["--token", "t", "--auto", "maybe"], "invalid choice"),
    (["--token", "t", "--user", "bob", "--no-user"], "not allowed with"),
])
def test_bad_arguments_exit_2(args, complaint):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_AGENT_")}
    result = subprocess.run([_agent_path(), "--once", *args], capture_output=True, text=True,
                            timeout=AGENT_TIMEOUT, env=env, stdin=subprocess.DEVNULL,
                            check=False)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_token_from_the_environment(portal_url, site):
    request_id = site.request()
    env = {**os.environ, "PORTAL_AGENT_TOKEN": site.device_token}
    result = subprocess.run([_agent_path(), "--url", portal_url, "--once", "--auto",
                             "accept"], capture_output=True, text=True, env=env,
                            timeout=AGENT_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert reload(request_id).status == "approved"


class Keyboard:
    """The agent as a running process whose stdin the test types into, line by line."""

    def __init__(self, url, token, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_AGENT_")}
        self.process = subprocess.Popen(
            [_agent_path(), "--url", url, "--token", token, "--once", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)

    def wait_until_shown(self, request_id: int) -> None:
        give_up = time.monotonic() + 10
        while reload(request_id).prompt_shown_at is None:
            assert time.monotonic() < give_up, "the agent never fetched the prompt"
            time.sleep(0.05)

    def type(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> tuple[int, str, str]:
        """Let the agent end on its own (stdin left open), then collect its output."""
        try:
            self.process.wait(timeout=AGENT_TIMEOUT)
        finally:
            out, err = self.stop()
        return self.process.returncode, out, err

    def stop(self) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.kill()
        return self.process.communicate(timeout=AGENT_TIMEOUT)


@pytest.fixture
def keyboard(portal_url, site):
    """Start agents for this device; none outlives the test, whatever happens in it."""
    started = []

    def start(*args):
        started.append(Keyboard(portal_url, site.device_token, *args))
        return started[-1]

    yield start
    for agent in started:
        if agent.process.returncode is None:
            agent.stop()


def test_a_prompt_cancelled_while_shown_closes(site, client, keyboard):
    request_id = site.request()
    agent = keyboard("--interval", "0.2")
    agent.wait_until_shown(request_id)

    cancelled = client.post(f"/api/v1/session-requests/{request_id}/cancel",
                            headers={"Authorization": f"Bearer {site.user_token}"})
    assert cancelled.status_code == 200
    code, out, err = agent.finish()

    assert code == 0, err
    assert "The prompt was closed (decided elsewhere or cancelled)." in out
    assert reload(request_id).status == "cancelled"


def test_an_answer_after_another_decision_is_already_decided(site, client, keyboard):
    request_id = site.request()
    # A long interval: the agent does not re-check the list while the prompt is shown.
    agent = keyboard("--interval", "60")
    agent.wait_until_shown(request_id)
    cancelled = client.post(f"/api/v1/session-requests/{request_id}/cancel",
                            headers={"Authorization": f"Bearer {site.user_token}"})
    assert cancelled.status_code == 200

    agent.type("y")
    code, out, err = agent.finish()

    assert code == 0, err
    assert "already decided" in out
    assert reload(request_id).status == "cancelled"


def test_an_answer_after_the_portal_deadline_is_refused_as_expired(site, keyboard):
    """The portal's clock decides: a prompt the device still shows may already be over."""
    request_id = site.request()
    agent = keyboard("--interval", "60")
    agent.wait_until_shown(request_id)
    past = utcnow() - timedelta(seconds=1)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                       .values(end_user_deadline=past, expires_at=past))
    db.session.commit()

    agent.type("y")
    code, out, err = agent.finish()

    assert code == 0, err
    assert "the prompt expired" in out
    req = reload(request_id)
    assert req.status == "timed_out" and req.end_user_check != "accepted"


def test_an_unanswered_prompt_times_out_and_never_gets_a_session(site, client, keyboard):
    request_id = site.request()
    agent = keyboard()  # shown, and nobody types
    agent.wait_until_shown(request_id)
    started = time.monotonic()
    soon = utcnow() + timedelta(seconds=2)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                       .values(end_user_deadline=soon, expires_at=soon))
    db.session.commit()

    code, out, err = agent.finish()

    assert code == 0, err
    assert "No answer: the prompt timed out." in out
    assert "accepted" not in out and "declined" not in out
    assert 1.5 <= time.monotonic() - started < 10
    view = site.technician_view(client, request_id)
    assert view["status"] == "timed_out"
    assert view["outcome_message"] == "The Session Confirmation request has timed out."
    headers = {"Authorization": f"Bearer {site.device_token}"}
    late = client.post(f"/api/v1/agent/prompts/{request_id}", json={"decision": "accept"},
                       headers=headers)
    assert late.status_code == 410
    start = client.post("/api/v1/agent/sessions", json={"request_id": request_id},
                        headers=headers)
    assert start.status_code == 409
    assert db.session.scalar(select(func.count(RemoteSession.id))) == 0
    assert reload(request_id).status == "timed_out"  # marked by the refused late answer


def test_a_prompt_already_past_its_deadline_times_out_at_once(site, keyboard):
    """Listed with seconds left, then reached only after another prompt took them all."""
    first, second = site.request(), site.request()
    soon = utcnow() + timedelta(seconds=5)  # room for the agent to start and list it
    db.session.execute(update(SessionRequest).where(SessionRequest.id == second)
                       .values(end_user_deadline=soon, expires_at=soon))
    db.session.commit()
    agent = keyboard("--interval", "60")
    agent.wait_until_shown(first)
    time.sleep(max(0.0, (soon - utcnow()).total_seconds()) + 0.2)
    agent.type("y")

    code, out, err = agent.finish()

    assert code == 0, err
    assert f"#{second}" in out and "No answer: the prompt timed out." in out
    assert reload(first).status == "approved"
    assert reload(second).status in ("pending", "timed_out")
