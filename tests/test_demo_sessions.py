"""The demo gives the auditor's Sessions page something to show, once."""
from __future__ import annotations

import sqlite3

from click.testing import CliRunner

from portal.demo import demo_command


def test_the_demo_has_ended_and_running_sessions_and_a_client_session(tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    for name in ("PORTAL_SECRET_KEY", "PORTAL_TOKEN_HASH_KEY", "PORTAL_AUDIT_KEY",
                 "PORTAL_SQLALCHEMY_DATABASE_URI", "PORTAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    for _ in range(2):  # the second run adds nothing
        result = runner.invoke(demo_command, ["--no-serve"])
        assert result.exit_code == 0, result.output
        with sqlite3.connect(tmp_path / "portal.sqlite3") as conn:
            remote = conn.execute(
                "SELECT count(*), count(*) - count(ended_at) FROM remote_sessions").fetchone()
            client = conn.execute("SELECT username, email, ended_at IS NOT NULL "
                                  "FROM client_sessions").fetchall()
            decided_by = {row[0] for row in conn.execute(
                "SELECT r.decided_by FROM remote_sessions s "
                "JOIN session_requests r ON r.id = s.request_id")}
        assert remote == (3, 1)  # two ended, one running
        assert client == [("mlee", "m.lee@example.com", 1)]
        assert decided_by == {"exclusion", "approver@example.com", "qa-admin@example.com"}
