"""`portal-agent otp …`, the login screen's one-time passwords, run as a real process
against the app served on 127.0.0.1, with mail delivered to a real SMTP server on
loopback: what the person at the login screen reads, and the exit codes."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from agent_process import AGENT_TIMEOUT, ServedApp, Terminal, agent_env, agent_path
from agent_process import portal_url  # noqa: F401 (a fixture)
from factories import PASSWORD
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.jobs import deliver_outbox
from portal.models import ClientSession, Device, OneTimePassword, OtpAccessRequest, User
from portal.services import departments, devices, otp_requests
from portal.services.actors import CLI, Actor

DEVICE = "WIN-0859G9I39J0"
USER_EMAIL = "j.smith@example.com"
APPROVER = "approver@example.com"
CODE_IN_MAIL = re.compile(r"^\s+(\d{8})\s*$", re.M)
# The machine's local time for the agent: POSIX TZ for 5 h 30 min east of UTC (no tz
# database needed), so local and UTC times differ visibly.
TZ_EAST = "XYZ-05:30"
EAST = timezone(timedelta(hours=5, minutes=30))
DEAD_URL = "http://127.0.0.1:9"  # for runs that must not get as far as the portal


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def app_config(smtp_config):
    return smtp_config


class LoginScreen:
    """One device of a department (with its agent token), an approver, and the user's
    portal account; `run` and `start` are `portal-agent --url … --token … otp …`."""

    def __init__(self, make, url: str) -> None:
        self.url = url
        self.department = make.department("QA Team")
        self.approver_id = make.user(APPROVER, "approver", self.department).id
        make.user(USER_EMAIL, "technician", self.department)
        self.device, self.token = devices.create_device(
            department=self.department, name=DEVICE, actor=CLI, now=utcnow())
        db.session.commit()
        self.started: list[subprocess.Popen] = []

    def configure(self, **changes) -> None:
        values = {**departments.settings_values(self.department.settings), **changes}
        departments.update_settings(department=self.department, values=values, actor=CLI,
                                    now=utcnow())
        db.session.commit()

    def command(self, *args) -> list[str]:
        return [agent_path(), "--url", self.url, "--token", self.token, "otp", *args]

    def run(self, *args, input=None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), input=input, capture_output=True,
                              text=True, timeout=AGENT_TIMEOUT, env=agent_env(TZ=TZ_EAST),
                              stdin=None if input is not None else subprocess.DEVNULL,
                              check=False)

    def start(self, *args) -> subprocess.Popen:
        self.started.append(subprocess.Popen(
            self.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=agent_env(TZ=TZ_EAST)))
        return self.started[-1]

    def terminal(self, *args) -> Terminal:
        terminal = Terminal(self.command(*args), env=agent_env(TZ=TZ_EAST))
        self.started.append(terminal.process)
        return terminal

    def request_internal(self, username="jsmith", password=PASSWORD):
        return self.run("request", "--user", username, "--login", USER_EMAIL,
                        "--password-stdin", input=password + "\n")

    def verify(self, code: str):
        return self.run("verify", "--user", "jsmith", "--email", USER_EMAIL,
                        input=code + "\n")


@pytest.fixture
def screen(make, portal_url):
    screen = LoginScreen(make, portal_url)
    yield screen
    for process in screen.started:  # none outlives its test
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=AGENT_TIMEOUT)


def codes_delivered(app, smtp) -> list[str]:
    with app.app_context():
        deliver_outbox(utcnow())
        db.session.commit()
        db.session.remove()
    return [CODE_IN_MAIL.search(m.get_body(("plain",)).get_content()).group(1)
            for m in smtp.handler.received_by(USER_EMAIL)
            if "one-time password for" in m["Subject"]]


def fresh(query):
    db.session.expire_all()
    found = db.session.scalar(query)
    db.session.commit()  # release any read lock before the agent's next request
    return found


def open_request(device_id: int) -> int:
    give_up = time.monotonic() + 10
    while (found := fresh(select(OtpAccessRequest.id).where(
            OtpAccessRequest.device_id == device_id))) is None:
        assert time.monotonic() < give_up, "the agent never asked the approvers"
        time.sleep(0.05)
    return found


def decide(screen: LoginScreen, request_id: int, decision: str, comment=None) -> None:
    approver = db.session.get(User, screen.approver_id)
    otp_requests.decide_in_portal(
        user=approver, request_id=request_id, decision=decision, comment=comment,
        actor=Actor(label=approver.email, user_id=approver.id), now=utcnow())
    db.session.commit()


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=AGENT_TIMEOUT)
    return process.returncode, out, err


def hh_mm(moment: datetime, zone) -> str:
    return moment.astimezone(zone).strftime("%H:%M")


# --- internal users: the code comes at once ----------------------------------------


def test_an_internal_user_gets_the_code_and_signs_in_with_it(app, screen, smtp):
    screen.configure(is_otp_allowed=True, is_otp_auto_sent_to_internal_users=True)

    asked = screen.request_internal()

    assert asked.returncode == 0, asked.stderr
    expires_at = fresh(select(OneTimePassword.expires_at))
    assert re.fullmatch(  # the machine's local time (TZ), with the date only if not today
        r"A one-time password was sent to j\*\*\*@example\.com, valid until "
        rf"(\d{{4}}-\d\d-\d\d )?{hh_mm(expires_at, EAST)}\n", asked.stdout)
    again = screen.run("request", "--user", "jsmith", "--login", USER_EMAIL,
                       "--password-stdin", "--utc", input=PASSWORD + "\n")
    assert again.returncode == 0, again.stderr  # the same code again, the same expiry
    assert f"until {hh_mm(expires_at, timezone.utc)} UTC" in again.stdout
    codes = codes_delivered(app, smtp)
    assert len(codes) == 2 and codes[0] == codes[1]
    code = codes[0]

    wrong = screen.verify(f"{(int(code) + 1) % 10 ** 8:08d}")
    assert wrong.returncode == 12
    assert wrong.stdout == "The one-time password was not accepted.\n"
    assert fresh(select(func.count(ClientSession.id))) == 0

    signed_in = screen.verify(code)

    assert signed_in.returncode == 0, signed_in.stderr
    session = fresh(select(ClientSession))
    assert signed_in.stdout == (f"Signed in as jsmith ({USER_EMAIL}).\n"
                                f"Client session id: {session.id}\n")
    assert session.username == "jsmith" and session.ended_at is None
    assert screen.verify(code).returncode == 12  # single use

    ended = screen.run("end-session", str(session.id))
    assert (ended.returncode, ended.stdout) == (0, f"Client session {session.id} ended.\n")
    assert fresh(select(ClientSession.ended_at)) is not None
    again = screen.run("end-session", str(session.id))
    assert (again.returncode, again.stdout) == \
        (0, f"Client session {session.id} had already ended.\n")
    unknown = screen.run("end-session", str(session.id + 1))
    assert unknown.returncode == 1 and "no client session" in unknown.stderr


def test_at_a_terminal_the_password_and_the_code_are_typed_without_echo(app, screen, smtp):
    screen.configure(is_otp_allowed=True, is_otp_auto_sent_to_internal_users=True)
    asking = screen.terminal("request", "--user", "jsmith", "--login", USER_EMAIL)
    asking.read_until("Portal password: ")
    asking.type(PASSWORD)
    code, shown = asking.finish()
    assert code == 0, shown
    assert "A one-time password was sent to j***@example.com" in shown
    assert PASSWORD not in shown
    [otp] = codes_delivered(app, smtp)

    signing_in = screen.terminal("verify", "--user", "jsmith", "--email", USER_EMAIL)
    signing_in.read_until("One-time password: ")
    signing_in.type(otp)
    code, shown = signing_in.finish()

    assert code == 0, shown
    assert f"Signed in as jsmith ({USER_EMAIL})." in shown
    assert otp not in shown


def test_a_wrong_portal_password_gets_the_portal_s_answer(screen):
    screen.configure(is_otp_allowed=True, is_otp_auto_sent_to_internal_users=True)
    result = screen.request_internal(password="not the password")
    assert result.returncode == 8
    assert result.stdout == "The login or the password is wrong.\n"
    assert fresh(select(func.count(OneTimePassword.id))) == 0


def test_a_new_code_too_soon_says_when_to_try_again(screen):
    screen.configure(is_otp_allowed=True, is_otp_auto_sent_to_internal_users=True)
    assert screen.request_internal().returncode == 0
    last_new = fresh(select(Device.last_new_otp_at).where(Device.id == screen.device.id))

    result = screen.request_internal(username="alice")  # another user: a new code

    assert result.returncode == 10
    assert result.stdout.count("\n") == 1 and "minimum interval" in result.stdout
    # 60 minutes after the last new code, rounded up to the minute (never too early).
    due = last_new + timedelta(minutes=60)
    due = due.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert re.search(rf"Try again at (\d{{4}}-\d\d-\d\d )?"
                     rf"({hh_mm(due, EAST)}|{hh_mm(due + timedelta(minutes=1), EAST)})\.\n$",
                     result.stdout), result.stdout


# --- the approvers decide ----------------------------------------------------------------


def test_an_approved_request_tells_where_the_code_went(app, screen, smtp):
    screen.configure(is_otp_allowed=True)
    agent = screen.start("request", "--user", "jsmith", "--email", USER_EMAIL,
                         "--interval", "0.2")
    request_id = open_request(screen.device.id)
    time.sleep(0.5)
    assert agent.poll() is None, "the agent stopped waiting"

    decide(screen, request_id, "approve", comment="Go ahead")

    code, out, err = finish(agent)
    assert code == 0, err
    assert out == ("Waiting for approval…\n"
                   "Approved. A one-time password was sent to j***@example.com.\n"
                   "Approver's comment: Go ahead\n")
    [otp] = codes_delivered(app, smtp)
    assert screen.verify(otp).returncode == 0


def test_a_denied_request_is_access_denied(screen):
    screen.configure(is_otp_allowed=True)
    agent = screen.start("request", "--user", "jsmith", "--email", USER_EMAIL,
                         "--emergency", "--interval", "0.2")
    decide(screen, open_request(screen.device.id), "deny", comment="Not on a Sunday")

    code, out, err = finish(agent)

    assert code == 5, err
    assert out == ("Waiting for approval…\nAccess denied.\n"
                   "Approver's comment: Not on a Sunday\n")
    assert fresh(select(func.count(OneTimePassword.id))) == 0


def test_a_request_nobody_decides_times_out(screen):
    screen.configure(is_otp_allowed=True)
    agent = screen.start("request", "--user", "jsmith", "--email", USER_EMAIL,
                         "--interval", "0.2")
    request_id = open_request(screen.device.id)
    db.session.execute(update(OtpAccessRequest).where(OtpAccessRequest.id == request_id)
                       .values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()

    code, out, err = finish(agent)

    assert code == 6, err
    assert out == "Waiting for approval…\nThe request timed out.\n"


def test_the_wait_outlasts_a_portal_that_is_away_for_a_while(app, make):
    served = ServedApp(app)
    screen = LoginScreen(make, served.url)
    screen.configure(is_otp_allowed=True)
    agent = screen.start("request", "--user", "jsmith", "--email", USER_EMAIL,
                         "--interval", "0.2")
    try:
        request_id = open_request(screen.device.id)
        served.stop()
        time.sleep(1.0)  # a few failed checks, further and further apart
        assert agent.poll() is None, "the agent gave up while the request was open"
        decide(screen, request_id, "approve")
        served.start()
        code, out, err = finish(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate(timeout=AGENT_TIMEOUT)
        served.stop()

    assert code == 0, err
    assert err.count("cannot reach the portal") == 1 and "retrying" in err
    assert out == ("Waiting for approval…\nConnected to the portal again.\n"
                   "Approved. A one-time password was sent to j***@example.com.\n")


# --- refusals and arguments ------------------------------------------------------------


def test_a_department_without_otp_says_so(screen):
    result = screen.run("request", "--user", "jsmith", "--email", USER_EMAIL)
    assert result.returncode == 7
    assert result.stdout == \
        "One-time passwords are not allowed for this device's department.\n"
    assert "Traceback" not in result.stderr


def test_details_the_portal_finds_invalid_are_bad_arguments(screen):
    screen.configure(is_otp_allowed=True)  # approval: the address is needed
    result = screen.run("request", "--user", "jsmith")
    assert (result.returncode, result.stdout) == (2, "Give an email address.\n")


def test_url_and_token_follow_the_subcommand_or_come_from_the_environment(screen):
    env = agent_env(PORTAL_AGENT_TOKEN=screen.token)
    result = subprocess.run(
        [agent_path(), "otp", "request", "--url", screen.url, "--user", "jsmith",
         "--email", USER_EMAIL], capture_output=True, text=True, env=env,
        stdin=subprocess.DEVNULL, timeout=AGENT_TIMEOUT, check=False)
    assert result.returncode == 7, result.stderr  # the portal answered this device
    refused = subprocess.run(
        [agent_path(), "--url", screen.url, "otp", "verify", "--token", "-not-a-token",
         "--user", "jsmith", "--email", USER_EMAIL], input="12345678\n",
        capture_output=True, text=True, env=agent_env(), timeout=AGENT_TIMEOUT,
        check=False)
    assert refused.returncode == 3 and "refused the device token" in refused.stderr


@pytest.mark.parametrize("args, complaint", [
    (["otp", "request"], "the following arguments are required: --user"),
    (["otp"], "the following arguments are required: ACTION"),
    (["otp", "request", "--user", "j", "--emergency"], "--emergency needs --email"),
    (["otp", "request", "--user", "j", "--password-stdin"], "give --login too"),
    (["otp", "request", "--user", "j", "--login", USER_EMAIL],
     "--login needs --password-stdin when stdin is not a terminal"),
    (["otp", "request", "--user", "j", "--password", "secret"], "unrecognized arguments"),
    (["otp", "request", "--user", "j", "--interval", "0"], "--interval must be"),
    (["otp", "verify", "--user", "j"], "required: --email"),
    (["otp", "end-session", "abc"], "not a client session id"),
    (["--once", "otp", "request", "--user", "j"], "--once: for answering prompts"),
])
def test_bad_otp_arguments_exit_2(args, complaint):
    result = subprocess.run([agent_path(), "--url", DEAD_URL, "--token", "t", *args],
                            capture_output=True, text=True, env=agent_env(),
                            stdin=subprocess.DEVNULL, timeout=AGENT_TIMEOUT, check=False)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_no_code_on_stdin_is_not_sent():
    result = subprocess.run(
        [agent_path(), "--url", DEAD_URL, "--token", "t", "otp", "verify", "--user", "j",
         "--email", USER_EMAIL], input="\n", capture_output=True, text=True,
        env=agent_env(), timeout=AGENT_TIMEOUT, check=False)
    assert (result.returncode, result.stdout) == (12, "No one-time password was entered.\n")
    assert result.stderr == ""  # the portal was never asked (it cannot be reached)


def test_the_agent_loads_neither_flask_nor_sqlalchemy():
    probe = ("import sys, portal.agent; print(sorted({m.split('.')[0] for m in sys.modules}"
             " & {'flask', 'sqlalchemy', 'werkzeug', 'jinja2'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=AGENT_TIMEOUT, check=True)
    assert result.stdout == "[]\n"
