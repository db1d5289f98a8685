"""What the tests share besides fixtures: the fixed clock and password, the spec's settings
labels and defaults, the test configuration, and builders for data (`Factory`, through
the services as an admin would) and for signing in (`AuthActions`). Import from here
(`from factories import NOW`); conftest.py only holds fixtures."""
from __future__ import annotations

from datetime import datetime, timezone

from portal.extensions import db
from portal.services import accounts, departments, devices
from portal.services.actors import CLI
from portal.services.audit import seal_pending, verify_audit_chain

PASSWORD = "correct horse battery"
NOW = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)

# design.md's settings, copied from the spec (not from the code), so tests check the code
# against what the spec says.
DESIGN_LABELS = {
    "is_confirmation_shown": "Show confirmation at the remote end",
    "confirmation_message": "Confirmation Message",
    "confirmation_timeout_seconds": "Timeout (in seconds)",
    "is_shown_when_locked":
        "Show confirmation in locked and logged off devices (Windows only)",
    "is_email_authorization_required":
        "Require email authorization for incoming connections",
    "email_authorization_timeout_seconds": "Email authorization timeout (in seconds)",
    "email_recipients": "Recipient(s)",
    "is_sign_in_required_to_decide": "Approvers must sign in to decide",
    "is_otp_allowed": "Allow the use of one-time passwords",
    "is_otp_auto_sent_to_directory_users":
        "Automatically send one-time passwords to Active Directory users",
    "is_otp_auto_sent_to_internal_users":
        "Automatically send one-time passwords to internal users",
    "otp_expiration_minutes": "Access Request Expiration Time (minutes)",
    "otp_min_interval_minutes":
        "Minimum interval between new one-time passwords (minutes)",
    "is_reason_required": "Require a reason for each session",
    "approvals_required": "Approvals required",
    "is_number_matching_required": "Require number matching",
    "is_fallback_to_email": "If the end user doesn't answer, ask the email approvers",
    "escalation_recipients": "Escalate to",
    "escalate_after_seconds": "Escalate after (seconds)",
    "report_cooldown_minutes": "Cool-down after a report (minutes)",
    "preapproval_max_hours": "Allow pre-approval for up to (hours)",
}

DESIGN_DEFAULTS = {
    "is_confirmation_shown": False,
    "confirmation_timeout_seconds": 60,
    "is_shown_when_locked": False,
    "is_email_authorization_required": False,
    "email_authorization_timeout_seconds": 180,
    "email_recipients": "",
    "is_sign_in_required_to_decide": True,
    "is_otp_allowed": False,
    "is_otp_auto_sent_to_directory_users": False,
    "is_otp_auto_sent_to_internal_users": False,
    "otp_expiration_minutes": 30,
    "otp_min_interval_minutes": 60,
    "is_reason_required": False,
    "approvals_required": 1,
    "is_number_matching_required": False,
    "is_fallback_to_email": False,
    "escalation_recipients": "",
    "escalate_after_seconds": 120,
    "report_cooldown_minutes": 30,
    "preapproval_max_hours": 0,
}


TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key, as long as production asks",
    "TOKEN_HASH_KEY": "test-token-hash-key, apart from the secret",
    "AUDIT_KEY": "test-audit-key, apart from both of the others",
    "WTF_CSRF_ENABLED": False,
    # Cheap hashes keep the suite fast; the production cost is tested on its own.
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_COST_KIB": 8,
    "ARGON2_PARALLELISM": 1,
    "BASE_URL": "http://portal.test",
}


def sealed_trail_check():
    """Seal every committed event (what the scheduler's job does within a second), then
    verify the whole chain: (events checked, first break or None)."""
    while seal_pending(NOW):
        db.session.commit()
    db.session.commit()
    return verify_audit_chain()


class Factory:
    """Creates data through the services, as an admin would, and commits."""

    def department(self, name="QA Team"):
        found = departments.find_department(name)
        if found:
            return found
        department = departments.create_department(name=name, actor=CLI, now=NOW)
        db.session.commit()
        return department

    def user(self, email, role="technician", department=None, password=PASSWORD):
        if role != "admin" and department is None:
            department = self.department()
        user = accounts.create_or_update_user(email=email, password=password, role=role,
                                              department=department, actor=CLI, now=NOW)
        db.session.commit()
        return user

    def group(self, department, name="Testers"):
        group = devices.create_group(department=department, name=name, actor=CLI, now=NOW)
        db.session.commit()
        return group

    def allow_otp(self, department, actor=CLI, **settings):
        """Turn one-time passwords on for the department (and any other settings given)."""
        values = {**departments.settings_values(department.settings), "is_otp_allowed": True,
                  **settings}
        departments.update_settings(department=department, values=values, actor=actor,
                                    now=NOW)
        db.session.commit()

    def device(self, department, name="WIN-0859G9I39J0", group=None, os="Windows 11",
               ip="10.0.0.5"):
        device, _token = devices.create_device(
            department=department, name=name, os=os, ip_address=ip,
            group_id=group.id if group else None, actor=CLI, now=NOW)
        db.session.commit()
        return device


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, email, password=PASSWORD, next_url=None):
        data = {"email": email, "password": password}
        if next_url is not None:
            data["next"] = next_url
        return self._client.post("/login", data=data)

    def logout(self):
        return self._client.post("/logout")
