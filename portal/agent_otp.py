"""`portal-agent otp …`: the login screen's one-time password flow (design.md, "One-time
passwords"), as a person at the device would see it. Standard library only.

    portal-agent otp request --user NAME [--email ADDR] [--emergency]
                             [--login EMAIL [--password-stdin]] [--interval S] [--utc]
    portal-agent otp verify --user NAME --email ADDR
    portal-agent otp end-session ID

`request` asks for a code (POST /api/v1/agent/otp/request). When approvers must grant it,
it prints "Waiting for approval…" and asks the portal every --interval seconds (2 by
default; longer pauses while the portal cannot be reached) until the request is decided
or expires. The portal password of `--login` is read from stdin (`--password-stdin`, one
line) or, on a terminal, asked for without echo; it is never an argument.
`verify` reads the code from the terminal without echo, or from stdin when stdin is not a
terminal, and starts a client session (POST /api/v1/agent/otp/verify). `end-session`
ends one (POST /api/v1/agent/client-sessions/<id>/end).

Times are shown in this machine's local time (the TZ environment variable applies), as a
login screen shows them; `--utc` shows UTC instead. What the login screen would show goes
to stdout, the agent's own failures to stderr.

Exit codes, besides the agent's usual ones (0 done, 1 unexpected answer, 2 bad arguments
or details the portal found invalid, 3 token refused, 4 portal unreachable, 130 Ctrl+C):
5 access denied by an approver, 6 the request timed out, 7 one-time passwords are not
allowed for this device's department (otp_disabled), 8 wrong portal login or password
(invalid_credentials), 9 the user is not in the directory (not_in_directory),
10 too soon after the device's last new code (too_soon), 11 the directory cannot be
reached (directory_unavailable), 12 the one-time password was not accepted.
"""
from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import datetime, timedelta, timezone

from portal.agent_http import (
    EXIT_OK,
    EXIT_USAGE,
    MAX_BACKOFF_SECONDS,
    AgentError,
    AnswerError,
    Portal,
    UnauthorizedError,
    UsageError,
    one_line,
    say,
    warn,
)

EXIT_DENIED, EXIT_TIMED_OUT = 5, 6
EXIT_OTP_DISABLED, EXIT_INVALID_CREDENTIALS, EXIT_NOT_IN_DIRECTORY = 7, 8, 9
EXIT_TOO_SOON, EXIT_DIRECTORY_UNAVAILABLE, EXIT_NOT_ACCEPTED = 10, 11, 12
EXIT_CODES_HELP = ("5 access denied, 6 request timed out, 7 OTP not allowed, 8 wrong login "
                   "or password, 9 not in the directory, 10 too soon, 11 directory "
                   "unavailable, 12 one-time password not accepted")
REFUSALS = {  # the portal's error code → the exit code; its message is shown as is
    "otp_disabled": EXIT_OTP_DISABLED,
    "invalid_credentials": EXIT_INVALID_CREDENTIALS,
    "not_in_directory": EXIT_NOT_IN_DIRECTORY,
    "too_soon": EXIT_TOO_SOON,
    "directory_unavailable": EXIT_DIRECTORY_UNAVAILABLE,
    "invalid": EXIT_USAGE,
}
POLL_SECONDS = 2.0
# How long past its expiry (by this machine's clock) a pending request is still asked
# about: the portal's clock decides when it times out, and the two may differ a little.
CLOCK_SKEW_SECONDS = 60


# --- the command line ----------------------------------------------------------------


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """`otp request|verify|end-session` under the top-level parser's subcommands;
    `common` holds --url and --token, so they may follow the subcommand as well."""
    otp = commands.add_parser(
        "otp", prog="portal-agent otp", parents=[common], allow_abbrev=False,
        help="the login screen's one-time passwords (portal-agent otp -h)",
        description="Request, verify and end the use of one-time passwords, as the login "
                    "screen does.", epilog=f"Exit codes: {EXIT_CODES_HELP}.")
    actions = otp.add_subparsers(dest="otp_action", metavar="ACTION", required=True)

    request = actions.add_parser(
        "request", prog="portal-agent otp request", parents=[common], allow_abbrev=False,
        help="ask for a one-time password (and wait for an approver if needed)",
        description="Ask the portal for a one-time password for a user of this device.",
        epilog=f"Times are this machine's local time (TZ applies) unless --utc. "
               f"Exit codes: 0 sent or approved, {EXIT_CODES_HELP}.")
    request.add_argument("--user", dest="username", required=True, metavar="NAME",
                         help="the user name typed at the login screen")
    request.add_argument("--email", metavar="ADDR",
                         help="where an approver should send the code (needed unless "
                              "the portal sends it on its own)")
    request.add_argument("--emergency", action="store_true",
                         help="emergency access: always ask the approvers (needs --email)")
    request.add_argument("--login", metavar="EMAIL",
                         help="the user's portal account (internal users): the code goes "
                              "to its address")
    request.add_argument("--password-stdin", action="store_true",
                         help="read the --login password from stdin (one line)")
    request.add_argument("--interval", dest="poll_interval", type=float,
                         default=POLL_SECONDS, metavar="SECONDS",
                         help="seconds between checks while waiting for approval "
                              "(default: %(default)s)")
    request.add_argument("--utc", action="store_true", help="show times in UTC")
    request.set_defaults(otp_run=run_request)

    verify = actions.add_parser(
        "verify", prog="portal-agent otp verify", parents=[common], allow_abbrev=False,
        help="sign in with a one-time password (read without echo, or from stdin)",
        description="Check a one-time password and start a client session. The code is "
                    "read from the terminal without echo, or from stdin when it is not "
                    "a terminal.", epilog="Exit codes: 0 signed in, 12 not accepted.")
    verify.add_argument("--user", dest="username", required=True, metavar="NAME",
                        help="the user name typed at the login screen")
    verify.add_argument("--email", required=True, metavar="ADDR",
                        help="the address the code was sent to")
    verify.set_defaults(otp_run=run_verify)

    end = actions.add_parser(
        "end-session", prog="portal-agent otp end-session", parents=[common],
        allow_abbrev=False,
        help="end a client session (at logout)",
        description="End a client session that `otp verify` started.")
    end.add_argument("session_id", type=_session_id, metavar="ID",
                     help="the client session id `otp verify` printed")
    end.set_defaults(otp_run=run_end_session)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say on its own; parser.error (exit 2) on misuse."""
    if args.otp_action != "request":
        return
    if args.password_stdin and args.login is None:
        parser.error("--password-stdin reads the password of --login; give --login too")
    if args.login is not None and not args.password_stdin and not sys.stdin.isatty():
        parser.error("--login needs --password-stdin when stdin is not a terminal")
    if args.emergency and not args.email:
        parser.error("--emergency needs --email (where an approver would send the code)")
    if not 0.1 <= args.poll_interval <= 60:
        parser.error("--interval must be between 0.1 and 60 seconds")


def _session_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2 ** 63:
        raise argparse.ArgumentTypeError(f"not a client session id: {text!r}")
    return int(text)


# --- request ---------------------------------------------------------------------------


def run_request(portal: Portal, args: argparse.Namespace) -> int:
    payload = {"username": args.username, "emergency": args.emergency}
    if args.email is not None:
        payload["email"] = args.email
    if args.login is not None:
        payload["login"], payload["password"] = args.login, _read_password(args)
    try:
        status, body = portal.call("POST", "/agent/otp/request", payload)
    except AnswerError as exc:
        return refused(exc, args)
    outcome = body.get("status") if status == 202 else None
    expires_at = _moment(body.get("expires_at"))
    if outcome == "sent":
        say(f"A one-time password was sent to {one_line(body.get('sent_to'))}, "
            f"valid until {clock_time(expires_at, utc=args.utc)}")
        return EXIT_OK
    if outcome == "awaiting_approval" and isinstance(body.get("request_id"), int):
        say("Waiting for approval…")
        return wait_for_decision(portal, body["request_id"], expires_at, args)
    raise AgentError(f"the portal's answer to the request was not understood "
                     f"(HTTP {status})")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")  # only the line's end
    else:
        try:
            password = getpass.getpass("Portal password: ")
        except EOFError:
            password = ""
    if not password:
        raise UsageError("no portal password was given")
    return password


def refused(exc: AnswerError, args: argparse.Namespace) -> int:
    """A refusal the person at the login screen is told about, in the portal's words."""
    exit_code = REFUSALS.get(exc.code)
    if exit_code is None or not exc.message:
        raise exc
    text = one_line(exc.message)
    if exc.code == "not_in_directory" and not args.emergency:
        text += " To ask an approver instead, add --emergency and --email ADDR."
    retry_after = exc.body.get("retry_after")
    if exc.code == "too_soon" and isinstance(retry_after, int) and retry_after >= 0:
        text += f" Try again at {clock_time(_next_minute(retry_after), utc=args.utc)}."
    say(text)
    return exit_code


def wait_for_decision(portal: Portal, request_id: int, expires_at: datetime,
                      args: argparse.Namespace) -> int:
    """Ask about the OTP access request until it is decided or times out."""
    give_up = expires_at + timedelta(seconds=CLOCK_SKEW_SECONDS)
    pause, failures = args.poll_interval, 0
    while True:
        time.sleep(pause)
        try:
            status, body = portal.call("GET", f"/agent/otp/requests/{request_id}")
        except UnauthorizedError:
            raise
        except AgentError as exc:
            failures += 1
            if datetime.now(timezone.utc) >= give_up:
                warn(f"gave up waiting: the request expired at "
                     f"{clock_time(expires_at, utc=args.utc)}")
                raise
            if failures == 1:
                warn(f"{exc}; retrying")
            pause = min(args.poll_interval * 2 ** failures, MAX_BACKOFF_SECONDS)
            continue
        if failures:
            say("Connected to the portal again.")
        pause, failures = args.poll_interval, 0
        if status == 404:
            raise AgentError(f"the portal no longer knows request #{request_id}")
        outcome = body.get("status")
        if outcome == "pending":
            if datetime.now(timezone.utc) >= give_up:
                outcome = "timed_out"
            else:
                continue
        return tell_outcome(outcome, body)


def tell_outcome(outcome, body: dict) -> int:
    comment = one_line(body.get("comment"))
    if outcome == "approved":
        say(f"Approved. A one-time password was sent to {one_line(body.get('sent_to'))}.")
        if comment:
            say(f"Approver's comment: {comment}")
        return EXIT_OK
    if outcome == "denied":
        say("Access denied.")
        if comment:
            say(f"Approver's comment: {comment}")
        return EXIT_DENIED
    if outcome == "timed_out":
        say("The request timed out.")
        return EXIT_TIMED_OUT
    raise AgentError(f"the portal's answer about the request was not understood "
                     f"(status {one_line(outcome)!r})")


# --- verify and end-session --------------------------------------------------------------


def run_verify(portal: Portal, args: argparse.Namespace) -> int:
    code = _read_code()
    if not code:
        say("No one-time password was entered.")
        return EXIT_NOT_ACCEPTED
    payload = {"username": args.username, "email": args.email, "password": code}
    try:
        status, body = portal.call("POST", "/agent/otp/verify", payload)
    except AnswerError as exc:
        if exc.status == 403 and exc.body.get("allowed") is False:
            say("The one-time password was not accepted.")
            return EXIT_NOT_ACCEPTED
        raise
    session_id = body.get("client_session_id")
    if status != 200 or body.get("allowed") is not True or not isinstance(session_id, int):
        raise AgentError(f"the portal's answer to the code was not understood "
                         f"(HTTP {status})")
    say(f"Signed in as {one_line(args.username)} ({one_line(args.email)}).")
    say(f"Client session id: {session_id}")
    return EXIT_OK


def _read_code() -> str:
    """The code as typed: from the terminal without echo, or one line of stdin."""
    if sys.stdin.isatty():
        try:
            return getpass.getpass("One-time password: ").strip()
        except EOFError:
            return ""
    return sys.stdin.readline().strip()


def run_end_session(portal: Portal, args: argparse.Namespace) -> int:
    session_id = args.session_id
    status, _body = portal.call("POST", f"/agent/client-sessions/{session_id}/end")
    if status == 200:
        say(f"Client session {session_id} ended.")
    elif status == 409:
        say(f"Client session {session_id} had already ended.")
    else:
        raise AgentError(f"there is no client session {session_id} on this device")
    return EXIT_OK


# --- times -------------------------------------------------------------------------------


def _moment(value) -> datetime:
    """The portal's ISO 8601 UTC time ("2026-11-22T10:45:30.123Z")."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise AgentError("the portal's answer had no usable expiry time") from None
    if moment.tzinfo is None:
        raise AgentError("the portal's answer had no usable expiry time")
    return moment


def _next_minute(seconds: int) -> datetime:
    """`seconds` from now, rounded up to a whole minute (never too early)."""
    at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    if at.second or at.microsecond:
        at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return at


def clock_time(moment: datetime, *, utc: bool) -> str:
    """HH:MM as a login screen shows it (local time, or UTC), with the date when it is
    not today."""
    now = datetime.now(timezone.utc)
    moment, now = (moment.astimezone(timezone.utc), now) if utc else \
        (moment.astimezone(), now.astimezone())
    text = moment.strftime("%H:%M" if moment.date() == now.date() else "%Y-%m-%d %H:%M")
    return f"{text} UTC" if utc else text
