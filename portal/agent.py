"""`portal-agent`: the reference device agent, a plain client of the HTTP contract
(design.md, "Device agent"). Standard library only, so it runs on any managed computer.

It reports the device's state (PUT /api/v1/agent/state), polls its end-user prompts
(GET /api/v1/agent/prompts) and asks the person at the console to accept, decline or
report ("I didn't expect this") each one before its countdown runs out
(POST /api/v1/agent/prompts/<id>). When the same poll lists a remote session an approver
ended ("End session": `end_sessions`), it closes that session and reports the end
(POST /api/v1/agent/sessions/<id>/end). With number matching on, accepting asks which of the
prompt's three numbers the technician sees.

`portal-agent otp request|verify|end-session` is the login screen's one-time password
flow (portal/agent_otp.py): ask for a code (and wait for an approver when one must grant
it), sign in with it, end the client session. --url and --token work for it as for the
prompt loop, before or after the subcommand.

Exit codes: 0 done, 1 unexpected answer from the portal, 2 bad arguments (or details the
portal found invalid), 3 the device token was refused (401), 4 the portal cannot be
reached, 130 stopped with Ctrl+C. The otp commands add: 5 access denied by an approver,
6 the request timed out, 7 one-time passwords not allowed for the device's department
(otp_disabled), 8 wrong portal login or password (invalid_credentials), 9 user not in the
directory (not_in_directory), 10 too soon after the device's last new code (too_soon),
11 directory unreachable (directory_unavailable), 12 one-time password not accepted.
"""
from __future__ import annotations

import argparse
import getpass
import math
import os
import queue
import sys
import threading
import time
import urllib.parse

from portal import agent_otp
from portal.agent_http import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MAX_BACKOFF_SECONDS,
    AgentError,
    Portal,
    UnauthorizedError,
    one_line,
    say,
    shown,
)

HEARTBEAT_SECONDS = 30  # how often a looping agent re-reports its state
ANSWERS = {"y": "accept", "yes": "accept", "n": "decline", "no": "decline",
           "r": "report", "report": "report"}
VERBS = {"accept": "accepted", "decline": "declined", "report": "reported"}


# --- the console -----------------------------------------------------------------------


class Console:
    """Answers typed on stdin (read by a background thread, so the countdown keeps
    ticking) and a countdown line that refreshes in place on a terminal."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.closed = False
        self.is_tty = sys.stdout.isatty()
        self.mid_line = False  # a countdown line waits for its end
        self.last_shown: int | None = None
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            self.lines.put(line)
        self.lines.put(None)  # end of input

    def countdown(self, seconds: int) -> None:
        if self.is_tty:
            sys.stdout.write(f"\r  {seconds:3d} s left - accept this session? [y/n/r] ")
            sys.stdout.flush()
            self.mid_line = True
        elif seconds != self.last_shown and (seconds <= 10 or seconds % 10 == 0):
            say(f"  {seconds} s left - accept this session? [y/n/r]")
        self.last_shown = seconds

    def end_line(self) -> None:
        if self.mid_line:
            say()
            self.mid_line = False

    def line(self, wait: float) -> str | None:
        """The next typed line, or None (nothing within `wait` seconds, or input closed)."""
        if self.closed:
            time.sleep(wait)
            return None
        try:
            line = self.lines.get(timeout=max(wait, 0))
        except queue.Empty:
            return None
        if line is None:
            self.closed = True
            self.end_line()
            say("  (input closed: nobody can answer; waiting for the countdown)")
            return None
        self.mid_line = False  # the typed Enter ended the countdown line
        return line.strip()

    def answer(self, wait: float) -> str | None:
        """'accept', 'decline', 'report', or None (no usable answer within `wait`
        seconds)."""
        line = self.line(wait)
        if line is None:
            return None
        decision = ANSWERS.get(line.lower())
        if decision is None:
            self.end_line()
            say("  Please answer y (accept) or n (decline).")
            say("  (or r to report it: you did not expect this request)")
        return decision

    def number(self, choices: list[int], deadline: float) -> int | None:
        """Which of `choices` the person picks before `deadline`, or None."""
        options = " / ".join(str(c) for c in choices)
        say(f"  Which number does the technician see? {options}")
        while (left := deadline - time.monotonic()) > 0:
            line = self.line(min(left, 1.0))
            if line is None:
                if self.closed:
                    return None
                continue
            if line.isascii() and line.isdigit() and int(line) in choices:
                return int(line)
            say(f"  Please type one of: {options}")
        return None


def handle_prompt(portal: Portal, console: Console | None, prompt: dict, *, fetched: float,
                  auto: str | None, interval: float) -> None:
    """Show one prompt, get its answer before its countdown (counted from `fetched`, the
    monotonic time of the listing) runs out, and send it."""
    say(f"\nSession confirmation request #{prompt['id']}")
    say(f"  {shown(prompt.get('message')) or 'A technician asks to connect.'}")
    say(f"  Technician: {shown(prompt.get('technician'))}")
    say(f"  Run as:     {shown(prompt.get('run_as')) or '(the logged-in user)'}")
    if prompt.get("reason"):
        say(f"  Reason:     {shown(prompt.get('reason'))}")
    choices = [c for c in prompt.get("choices") or [] if isinstance(c, int)]
    if auto == "accept" and choices:
        say("  Number matching is on: a person has to pick the number; not answering.")
        return
    if auto:
        say(f"  Answering automatically: {auto}")
    deadline = fetched + float(prompt.get("seconds_left") or 0)
    decision = auto or ask(portal, console, prompt, deadline, interval)
    if decision is None:
        return
    number = None
    if decision == "accept" and choices:
        number = console.number(choices, deadline)
        if number is None:
            say("  No number picked: the prompt timed out.")
            return
    status, body = portal.decide(prompt["id"], decision, number)
    if status == 200 and decision == "accept" and body.get("status") == "denied":
        say("  That is not the number the technician sees: the request was denied. "
            f"Outcome: {shown(body.get('outcome_message'))}")
    elif status == 200:
        verb = VERBS[decision]
        say(f"  You {verb} the request. Outcome: {shown(body.get('outcome_message'))}")
    elif status == 409:
        say("  Too late: the request was already decided.")
    elif status == 410:
        say("  Too late: the prompt expired.")
    else:
        say("  The prompt no longer exists on this device.")


def ask(portal: Portal, console: Console, prompt: dict, deadline: float,
        interval: float) -> str | None:
    """The typed decision, or None when the countdown ends or the prompt goes away."""
    next_check = time.monotonic() + interval
    while (left := deadline - time.monotonic()) > 0:
        console.countdown(math.ceil(left))
        decision = console.answer(min(left, left % 1 or 1.0))  # wake on each second
        if decision:
            return decision
        if time.monotonic() >= next_check:  # is it still open, and for how long?
            checked = time.monotonic()
            next_check = checked + interval
            current = _current(portal, prompt)
            if current is None:
                console.end_line()
                if deadline - time.monotonic() > interval + 1:
                    say("  The prompt was closed (decided elsewhere or cancelled).")
                    return None
                break
            # The portal's clock is the truth: follow it when it says less time is left.
            deadline = min(deadline, checked + float(current.get("seconds_left") or 0))
    console.end_line()
    say("  No answer: the prompt timed out.")
    return None


def _current(portal: Portal, prompt: dict) -> dict | None:
    """The prompt as the portal lists it now, or None once it is gone (decided elsewhere,
    cancelled or expired). A failed look-up is no reason to close it."""
    try:
        listed = portal.prompts()
    except UnauthorizedError:
        raise
    except AgentError:
        return prompt
    return next((p for p in listed if p.get("id") == prompt["id"]), None)


def end_sessions(portal: Portal, ends: list[dict]) -> None:
    """Close each session the portal asks to end, and report its end."""
    for end in ends:
        reason = one_line(end.get("reason"))
        say(f"\nEnding remote session #{end['id']}: the portal asks for it"
            + (f" (reason: {reason})." if reason else " (no reason given)."))
        status, _body = portal.end_session(end["id"])
        if status == 200:
            say(f"  Remote session #{end['id']} closed; its end was reported.")
        elif status == 409:
            say(f"  Remote session #{end['id']} had already ended.")
        else:
            say(f"  Remote session #{end['id']} is not known on this device.")


def run(args: argparse.Namespace) -> int:
    portal = Portal(args.url, args.token)
    user = None if args.no_user else args.user
    portal.report_state(args.locked, user)
    say(f"Reported to {portal.url}: {'locked' if args.locked else 'unlocked'}, "
        f"logged-in user: {user or '(nobody)'}")
    console = None if args.auto else Console()
    handled: set[int] = set()
    last_report, failures = time.monotonic(), 0
    if not args.once:
        say("Waiting for session confirmation requests (Ctrl+C to stop)...")
    while True:
        try:
            if time.monotonic() - last_report >= HEARTBEAT_SECONDS:
                portal.report_state(args.locked, user)
                last_report = time.monotonic()
            fetched = time.monotonic()
            listed, ends = portal.poll()
            end_sessions(portal, ends)  # a failed report is asked for again next poll
            handled &= {p.get("id") for p in listed}  # forget prompts that are gone
            fresh = [p for p in listed if p.get("id") not in handled]
            if args.once and not fresh:
                say("No open prompts.")
            for prompt in fresh:
                handle_prompt(portal, console, prompt, fetched=fetched, auto=args.auto,
                              interval=args.interval)
                handled.add(prompt["id"])  # after a failure it is asked again if still open
        except UnauthorizedError:
            raise
        except AgentError as exc:
            if args.once:
                raise
            failures += 1
            if failures == 1:
                print(f"portal-agent: {exc}; retrying", file=sys.stderr, flush=True)
            time.sleep(min(args.interval * 2 ** failures, MAX_BACKOFF_SECONDS))
            continue
        if failures:
            say("Connected to the portal again.")
            failures = 0
        if args.once:
            return EXIT_OK
        time.sleep(args.interval)


LOOP_OPTIONS = ("--locked", "--user", "--no-user", "--interval", "--once", "--auto")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="portal-agent",
        usage="%(prog)s [--url URL] [--token TOKEN] [--locked] [--user USER | --no-user]"
              "\n                    [--interval INTERVAL] [--once] [--auto {accept,decline}]"
              "\n       %(prog)s [--url URL] [--token TOKEN] otp "
              "{request,verify,end-session} ...",
        description="Session Gate device agent: report this device's state and answer "
                    "session confirmation prompts; `otp` for the login screen's one-time "
                    "passwords.",
        epilog="Exit codes: 0 done, 1 portal error, 2 bad arguments, 3 token refused, "
               f"4 portal unreachable, 130 interrupted; otp: {agent_otp.EXIT_CODES_HELP}.")
    url_help = "portal base URL (default: %(default)s, or PORTAL_AGENT_URL)"
    token_help = "device token (default: PORTAL_AGENT_TOKEN)"
    parser.add_argument("--url", default=os.environ.get("PORTAL_AGENT_URL",
                                                        "http://127.0.0.1:5000"),
                        help=url_help)
    parser.add_argument("--token", default=os.environ.get("PORTAL_AGENT_TOKEN"),
                        help=token_help)
    parser.add_argument("--locked", action="store_true", help="report the device as locked")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--user", help=f"logged-in user to report (default: {_os_user()})")
    who.add_argument("--no-user", action="store_true", help="report that nobody is logged in")
    parser.add_argument("--interval", type=float,
                        help="seconds between polls (default: 1.0)")
    parser.add_argument("--once", action="store_true",
                        help="handle the prompts open now, then exit")
    parser.add_argument("--auto", choices=("accept", "decline"),
                        help="answer every prompt this way without asking")
    # --url and --token may also follow a subcommand; unset there, the above apply.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="portal base URL (default: PORTAL_AGENT_URL, or "
                             "http://127.0.0.1:5000)")
    common.add_argument("--token", default=argparse.SUPPRESS, help=token_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     title="commands (default: answer prompts)")
    agent_otp.add_commands(commands, common)
    args = parser.parse_args(_glue_token(sys.argv[1:] if argv is None else list(argv)))
    if not args.token or not args.token.strip():
        parser.error("a device token is required (--token or PORTAL_AGENT_TOKEN)")
    args.token = args.token.strip()
    scheme = urllib.parse.urlsplit(args.url)
    if scheme.scheme not in ("http", "https") or not scheme.netloc:
        parser.error(f"--url must be an http:// or https:// address, not {args.url!r}")
    if args.command:
        given = [flag for flag, value in zip(LOOP_OPTIONS, (
            args.locked, args.user is not None, args.no_user, args.interval is not None,
            args.once, args.auto is not None)) if value]
        if given:
            parser.error(f"{', '.join(given)}: for answering prompts, not for "
                         f"`{args.command}` (its own options follow it)")
        agent_otp.check_args(parser, args)
        return args
    if args.user is None and not args.no_user:
        args.user = _os_user()
    if args.interval is None:
        args.interval = 1.0
    if not 0.1 <= args.interval <= 3600:
        parser.error("--interval must be between 0.1 and 3600 seconds")
    return args


def _glue_token(argv: list[str]) -> list[str]:
    """Tokens are URL-safe base64 and may begin with "-", which argparse would take for an
    option: `--token -abc` becomes `--token=-abc`."""
    while "--token" in argv[:-1]:
        at = argv.index("--token")
        argv[at:at + 2] = [f"--token={argv[at + 1]}"]
    return argv


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name (e.g. a service account)
        return None


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a message never crashes a legacy console
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2, message printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command:
            return args.otp_run(Portal(args.url, args.token), args)
        return run(args)
    except AgentError as exc:
        print(f"portal-agent: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nportal-agent: stopped.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
