"""Data for bench_paths.py, made through the portal's public services (as the CLI and the
demo do), in the database the environment names (PORTAL_SQLALCHEMY_DATABASE_URI).

    python tests/benchmarks/bench_seed.py seed [--devices N]   # prints one JSON line
    python tests/benchmarks/bench_seed.py link REQUEST_ID      # prints the link's token

`seed` makes two departments:
* "Bench Email": email authorization on (the longest timeout) with two recipients,
  confirmation off — a request there is pending with two emails queued; N devices, so
  the requests spread over many;
* "Bench Prompts": confirmation on (the longest timeout), email authorization off; one
  device that is unlocked with a user logged in, so a request there opens a prompt;
* "Bench OTP": one-time passwords allowed, one device (its token is for the verify path);
and a technician of both with an API token. `link` reads a pending request's approval
link out of its queued email (no mail server is configured, so the email stays in the
outbox).
"""
from __future__ import annotations

import argparse
import json
import re
import secrets

from portal import clock, create_app
from portal.extensions import db
from portal.services import accounts, agents, departments, devices, mail
from portal.services.actors import CLI

RECIPIENTS = ("approver-1@bench.example", "approver-2@bench.example")
TECHNICIAN = "technician@bench.example"


def _department(name: str, **settings):
    now = clock.now()
    department = departments.create_department(name=name, actor=CLI, now=now)
    values = departments.settings_values(department.settings) | settings
    departments.update_settings(department=department, values=values, actor=CLI, now=now)
    return department


def seed(device_count: int) -> dict:
    now = clock.now()
    email = _department("Bench Email", is_confirmation_shown=False,
                        is_email_authorization_required=True,
                        email_authorization_timeout_seconds=3600,
                        email_recipients="\n".join(RECIPIENTS))
    prompts = _department("Bench Prompts", is_confirmation_shown=True,
                          confirmation_timeout_seconds=600,
                          is_email_authorization_required=False)
    password = secrets.token_urlsafe(16)
    technician = None
    for department in (email, prompts):
        technician = accounts.create_or_update_user(
            email=TECHNICIAN, password=password, role="technician", department=department,
            actor=CLI, now=now)
    token = accounts.create_user_token(user=technician, actor=CLI, now=now)
    names = []
    for i in range(device_count):
        device, _ = devices.create_device(department=email, name=f"BENCH-E-{i:04d}",
                                          os="Windows 11 Pro",
                                          ip_address=f"10.{i // 250}.{i % 250}.10",
                                          actor=CLI, now=now)
        names.append(device.name)
    prompt_device, device_token = devices.create_device(
        department=prompts, name="BENCH-P-0001", os="Windows 11 Pro",
        ip_address="10.99.0.1", actor=CLI, now=now)
    agents.update_state(device=prompt_device, locked=False, logged_in_user="bench-user",
                        actor=CLI, now=now)
    otp = _department("Bench OTP", is_otp_allowed=True)
    _otp_device, otp_token = devices.create_device(
        department=otp, name="BENCH-O-0001", os="Windows 11 Pro", ip_address="10.98.0.1",
        actor=CLI, now=now)
    db.session.commit()
    return {"technician_token": token, "device_token": device_token, "otp_token": otp_token,
            "email_devices": names, "prompt_device": prompt_device.name}


def link(request_id: int) -> str:
    """The token of the first working approval link queued for the request."""
    before = None
    while True:
        page = mail.list_outbox(before=before, limit=100)
        for message in page.items:
            if message.request_id == request_id:
                for url in mail.approval_links_in(message):
                    return url.rsplit("/", 1)[1]
                found = re.search(r"/approvals/([A-Za-z0-9_\-]{20,})", message.body_text)
                if found:  # a wording of the email that approval_links_in does not know
                    return found.group(1)
        if page.next_after is None:
            raise SystemExit(f"no queued approval email for request {request_id}")
        before = page.next_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed_parser = commands.add_parser("seed")
    seed_parser.add_argument("--devices", type=int, default=200)
    link_parser = commands.add_parser("link")
    link_parser.add_argument("request_id", type=int)
    args = parser.parse_args()
    app = create_app()
    with app.app_context():
        if args.command == "seed":
            print(json.dumps(seed(args.devices)))
        else:
            print(link(args.request_id))


if __name__ == "__main__":
    main()
