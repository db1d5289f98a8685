"""`flask --app portal demo`: a newcomer's portal in one command.

Registered as a Flask CLI plugin command (entry point "flask.commands"), so it runs before
any app is loaded: it creates the instance secret key, migrates the SQLite database, seeds
demo data (idempotently), prints the sign-ins and serves http://127.0.0.1:5000.
"""
from __future__ import annotations

import hashlib
import hmac
import os

import click
from sqlalchemy import select

from portal import clock
from portal.extensions import db

DEMO_PASSWORD = "session-gate-demo"

DEPARTMENTS = {
    "QA Team": {
        "groups": ["Build Agents", "Testers"],
        "devices": [
            ("WIN-0859G9I39J0", "Windows 11 Pro", "10.20.0.21", "Testers"),
            ("WIN-QA-LAPTOP-02", "Windows 10 Enterprise", "10.20.0.22", "Testers"),
            ("BUILD-AGENT-01", "Windows Server 2022", "10.20.1.10", "Build Agents"),
            ("ubuntu-qa-03", "Ubuntu 24.04", "10.20.0.23", None),
        ],
        "excluded_groups": ["Build Agents"],
        "excluded_devices": [],
        "settings": {"is_confirmation_shown": True, "is_email_authorization_required": True,
                     "email_recipients": "approver@example.com\nqa-admin@example.com",
                     # One-time passwords by approval: no auto-send is on.
                     "is_otp_allowed": True,
                     # "Allow Session" can also pre-approve the technician for up to 8 h.
                     "preapproval_max_hours": 8},
    },
    "Sales Team": {
        "groups": ["Laptops"],
        "devices": [
            ("WIN-SALES-01", "Windows 11 Pro", "10.30.0.11", "Laptops"),
            ("MAC-SALES-02", "macOS 15", "10.30.0.12", "Laptops"),
            ("WIN-SALES-KIOSK", "Windows 11 IoT", "10.30.0.50", None),
        ],
        "excluded_groups": [],
        "excluded_devices": ["WIN-SALES-KIOSK"],
        "settings": {"is_confirmation_shown": True, "is_shown_when_locked": True},
    },
    # Approvals that resist fatigue and fraud: two distinct approvers must allow, each
    # picking the number the technician sees, and a real reason is required.
    "Ops Team": {
        "groups": [],
        "devices": [("OPS-SRV-01", "Windows Server 2022", "10.40.0.10", None)],
        "excluded_groups": [],
        "excluded_devices": [],
        "settings": {"is_email_authorization_required": True,
                     "email_recipients": "approver@example.com\nops-admin@example.com",
                     "approvals_required": 2, "is_number_matching_required": True,
                     "is_reason_required": True},
    },
    # The approval chain: the end user is asked first (even at a locked screen), for 20
    # s; if nobody answers, the approvers are mailed; if they haven't decided 30 s later,
    # the night lead is.
    "Night Shift": {
        "groups": [],
        "devices": [("NIGHT-KIOSK-01", "Windows 11 Pro", "10.50.0.10", None)],
        "excluded_groups": [],
        "excluded_devices": [],
        "settings": {"is_confirmation_shown": True, "confirmation_timeout_seconds": 20,
                     "is_shown_when_locked": True,
                     "is_email_authorization_required": True,
                     "email_authorization_timeout_seconds": 300,
                     "email_recipients": "approver@example.com",
                     "is_fallback_to_email": True,
                     "escalation_recipients": "night-lead@example.com",
                     "escalate_after_seconds": 30},
    },
}

USERS = [
    ("admin@example.com", "admin", None),
    ("qa-admin@example.com", "department_admin", "QA Team"),
    ("sales-admin@example.com", "department_admin", "Sales Team"),
    ("ops-admin@example.com", "department_admin", "Ops Team"),
    ("approver@example.com", "approver", "Ops Team"),
    ("technician@example.com", "technician", "Ops Team"),
    ("approver@example.com", "approver", "QA Team"),
    ("approver@example.com", "approver", "Sales Team"),
    ("auditor@example.com", "auditor", "QA Team"),
    ("auditor@example.com", "auditor", "Sales Team"),
    ("technician@example.com", "technician", "QA Team"),
    ("technician@example.com", "technician", "Sales Team"),
    ("approver@example.com", "approver", "Night Shift"),
    ("night-lead@example.com", "approver", "Night Shift"),
    ("auditor@example.com", "auditor", "Night Shift"),
    ("technician@example.com", "technician", "Night Shift"),
]


def demo_token(secret_key: str, name: str) -> str:
    """Stable per instance, so running demo again prints the same working tokens."""
    return hmac.new(secret_key.encode(), f"demo token {name}".encode(),
                    hashlib.sha256).hexdigest()


def seed(app) -> list[tuple[str, str]]:
    """Create whatever of the demo data is missing; return (label, token) pairs."""
    from portal.models import ApiToken, Device, RemoteSession
    from portal.services import accounts, crypto, departments, devices
    from portal.services.actors import Actor

    actor = Actor(label="demo")
    now = clock.now(app)
    for name, spec in DEPARTMENTS.items():
        department = departments.find_department(name)
        if department is not None:
            continue
        department = departments.create_department(name=name, actor=actor, now=now)
        groups = {g: devices.create_group(department=department, name=g, actor=actor, now=now)
                  for g in spec["groups"]}
        for device_name, os_name, ip, group in spec["devices"]:
            devices.create_device(department=department, name=device_name, os=os_name,
                                  ip_address=ip, group_id=groups[group].id if group else None,
                                  actor=actor, now=now)
        for group in spec["excluded_groups"]:
            departments.add_exclusion(department=department, target=f"group:{groups[group].id}",
                                      actor=actor, now=now)
        for device_name in spec["excluded_devices"]:
            device = devices.find_device(device_name)
            departments.add_exclusion(department=department, target=f"device:{device.id}",
                                      actor=actor, now=now)
        values = departments.settings_values(department.settings) | spec["settings"]
        departments.update_settings(department=department, values=values, actor=actor, now=now)
    for email, role, department_name in USERS:
        department = departments.find_department(department_name) if department_name else None
        accounts.create_or_update_user(email=email, password=None
                                       if accounts.find_user(email) else DEMO_PASSWORD,
                                       role=role, department=department, actor=actor, now=now)

    if db.session.scalar(select(RemoteSession.id).limit(1)) is None:
        seed_sessions(now)

    tokens = []
    key = app.config["SECRET_KEY"]
    owners = [("technician@example.com (user token)", accounts.find_user("technician@example.com"),
               None)]
    owners += [(f"{d.name} (device token)", None, d)
               for d in db.session.scalars(select(Device).order_by(Device.name))
               # ubuntu-qa-03 runs the tour's running session (to end it).
               if d.name in {"WIN-0859G9I39J0", "WIN-SALES-01", "ubuntu-qa-03"}]
    for label, user, device in owners:
        token = demo_token(key, label)
        digest = crypto.keyed_hash(token)
        if db.session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is None:
            db.session.add(ApiToken(token_hash=digest, user_id=user.id if user else None,
                                    device_id=device.id if device else None, created_at=now))
        tokens.append((label, token))
    db.session.flush()
    return tokens


def seed_sessions(now) -> None:
    """QA Team's Sessions page, so an auditor finds something there: two ended remote
    sessions (approved by an exclusion and by an approver), one still running, and a
    client session opened with a one-time password an approver granted — each through
    the services the pages and the agent API call, at times before `now`."""
    from datetime import timedelta

    from portal.domain import otp as otp_rules
    from portal.models import OneTimePassword
    from portal.services import accounts, agents, crypto, decisions, devices, otp
    from portal.services import otp_requests, requests
    from portal.services.actors import Actor

    technician = accounts.find_user("technician@example.com")
    tech_actor = Actor.for_user(technician, "10.20.9.14")

    def remote(device_name, asked, *, approver=None, run_as=None, ended=None):
        device = devices.find_device(device_name)
        agent = Actor(label=f"device:{device_name}", client_ip=device.ip_address or "")
        req = requests.create_session_request(
            technician=technician, device_name=device_name, run_as=run_as, actor=tech_actor,
            now=asked, base_url="http://127.0.0.1:5000")
        if approver is not None:
            user = accounts.find_user(approver)
            decisions.decide_in_portal(user=user, request_id=req.id, decision="allow",
                                       actor=Actor.for_user(user, "10.20.9.30"),
                                       now=asked + timedelta(seconds=40),
                                       user_agent="Mozilla/5.0 (demo)")
        session = agents.start_remote_session(device=device, request_id=req.id, actor=agent,
                                              now=asked + timedelta(minutes=1))
        if ended is not None:
            agents.end_remote_session(device=device, session_id=session.id, actor=agent,
                                      now=ended)

    remote("BUILD-AGENT-01", now - timedelta(hours=3), ended=now - timedelta(hours=2, minutes=20))
    remote("WIN-0859G9I39J0", now - timedelta(hours=26), approver="approver@example.com",
           run_as="Administrator", ended=now - timedelta(hours=25, minutes=25))
    remote("ubuntu-qa-03", now - timedelta(minutes=26), approver="qa-admin@example.com",
           run_as="root")

    laptop = devices.find_device("WIN-QA-LAPTOP-02")
    agent = Actor(label=f"device:{laptop.name}", client_ip=laptop.ip_address or "")
    asked = now - timedelta(hours=1)
    answer = otp_requests.request_otp(device=laptop, username="mlee",
                                      email="m.lee@example.com", actor=agent, now=asked,
                                      base_url="http://127.0.0.1:5000")
    approver = accounts.find_user("approver@example.com")
    otp_requests.decide_in_portal(user=approver, request_id=answer.request_id,
                                  decision="approve", now=asked + timedelta(minutes=1),
                                  actor=Actor.for_user(approver, "10.20.9.30"),
                                  user_agent="Mozilla/5.0 (demo)")
    code = db.session.scalars(select(OneTimePassword).where(
        OneTimePassword.access_request_id == answer.request_id)).one()
    typed = crypto.open_code(otp_rules.binding(laptop.id, "mlee", "m.lee@example.com"),
                             code.code_ciphertext)
    session = otp.verify_otp(device=laptop, username="mlee", email="m.lee@example.com",
                             password=typed, actor=agent, now=asked + timedelta(minutes=3))
    otp.end_client_session(device=laptop, session_id=session.id, actor=agent,
                           now=asked + timedelta(minutes=40))
    db.session.flush()


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Seed and print the sign-ins, then exit.")
def demo_command(host: str, port: int, no_serve: bool) -> None:
    """Create, migrate and seed a demo database, then serve the portal."""
    from flask_migrate import upgrade

    from portal import create_app

    app = create_app({"DEMO": True})
    if not os.environ.get("PORTAL_BASE_URL"):
        # The emailed "Check Request" links must point at this very server.
        app.config["BASE_URL"] = f"http://{host}:{port}"
    with app.app_context():
        upgrade()
        tokens = seed(app)
        db.session.commit()
    click.echo("\nSession Gate demo — sign in at http://%s:%d/login" % (host, port))
    click.echo(f"Every demo user's password: {DEMO_PASSWORD}\n")
    click.echo(f"  {'email':<28} role")
    shown = {}
    for email, role, department in USERS:
        shown.setdefault(email, []).append(role + (f" ({department})" if department else ""))
    for email, roles in shown.items():
        click.echo(f"  {email:<28} {', '.join(roles)}")
    click.echo("\nAPI tokens:")
    for label, token in tokens:
        click.echo(f"  {label}: {token}")
    device_token = dict(tokens).get("WIN-0859G9I39J0 (device token)")
    if device_token:
        base = app.config["BASE_URL"]
        click.echo("\nOne-time passwords (QA Team asks its approvers first):")
        click.echo(f"  portal-agent --url {base} --token {device_token} \\")
        click.echo("      otp request --user jsmith --email j.smith@example.com")
        click.echo("  then Approve it from the Outbox's Check Request link as "
                   "approver@example.com, read the code in the Outbox, and:")
        click.echo(f"  portal-agent --url {base} --token {device_token} \\")
        click.echo("      otp verify --user jsmith --email j.smith@example.com")
    click.echo(f"\nDatabase: {app.config['SQLALCHEMY_DATABASE_URI']}")
    if no_serve:
        return
    from werkzeug.serving import run_simple

    from portal.jobs import build_scheduler

    scheduler = build_scheduler(app)  # in-process: expiry and outbox delivery
    scheduler.start()
    click.echo("Scheduler running in-process (expiry, audit sealing, outbox).")
    try:
        # Threaded, so a held long-poll never blocks other requests.
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        scheduler.shutdown(wait=False)
