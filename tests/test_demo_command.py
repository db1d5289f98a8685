"""`flask --app portal demo --no-serve`: the newcomer's command, run twice."""
from __future__ import annotations

import re
import sqlite3

from click.testing import CliRunner

from portal.demo import DEMO_PASSWORD, demo_command


def test_demo_seeds_prints_sign_ins_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    for name in ("PORTAL_SECRET_KEY", "PORTAL_TOKEN_HASH_KEY", "PORTAL_AUDIT_KEY",
                 "PORTAL_SQLALCHEMY_DATABASE_URI",
                 "PORTAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    first = runner.invoke(demo_command, ["--no-serve", "--port", "5055"])
    assert first.exit_code == 0, first.output
    assert "http://127.0.0.1:5055/login" in first.output
    assert DEMO_PASSWORD in first.output
    for email in ("admin@example.com", "qa-admin@example.com", "approver@example.com",
                  "auditor@example.com", "technician@example.com"):
        assert email in first.output
    tokens = re.findall(r"token\): (\S+)", first.output)
    assert len(tokens) == 4  # the technician's, and three devices' (one runs a session)

    database = tmp_path / "portal.sqlite3"
    counts = _counts(database)
    assert counts["departments"] == 4 and counts["devices"] >= 6
    with sqlite3.connect(database) as conn:  # the tour's request needing two approvals
        assert conn.execute(
            "SELECT s.approvals_required, s.is_number_matching_required, "
            "s.is_reason_required FROM department_settings s JOIN departments d "
            "ON d.id = s.department_id WHERE d.name = 'Ops Team'").fetchone() == (2, 1, 1)
        # The tour's pre-approval: QA Team's Allow offers up to 8 hours.
        assert conn.execute(
            "SELECT s.preapproval_max_hours, s.approvals_required FROM department_settings s "
            "JOIN departments d ON d.id = s.department_id WHERE d.name = 'QA Team'"
        ).fetchone() == (8, 1)
        # The tour's chain: end user (at a locked screen too), then the approvers, then
        # the night lead.
        assert conn.execute(
            "SELECT s.is_confirmation_shown, s.is_shown_when_locked, "
            "s.is_email_authorization_required, s.is_fallback_to_email, "
            "s.escalation_recipients, s.escalate_after_seconds FROM department_settings s "
            "JOIN departments d ON d.id = s.department_id WHERE d.name = 'Night Shift'"
        ).fetchone() == (1, 1, 1, 1, "night-lead@example.com", 30)

    again = runner.invoke(demo_command, ["--no-serve", "--port", "5055"])
    assert again.exit_code == 0, again.output
    assert re.findall(r"token\): (\S+)", again.output) == tokens  # the same, still working
    assert _counts(database) == counts  # nothing duplicated


def _counts(database) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("departments", "devices", "device_groups", "exclusions",
                              "users", "memberships", "api_tokens")}
