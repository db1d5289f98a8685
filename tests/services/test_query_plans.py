"""The hot paths' statements find their rows through an index, as SQLite plans them (its
planner has no statistics to go on unless ANALYZE ran, so the plan is the same on every
machine). The agent's prompts poll once went through (status, expires_at) — every
pending request of every device — and cost more the more was pending anywhere; a plan
that scans a table, or that poll's plan leaving its device's index, fails here."""
from __future__ import annotations

import pytest

from portal.extensions import db
from portal.services import accounts, agents, decisions, otp, requests

HOT_STATEMENTS = {
    "open prompts and end requests (agent poll)": agents._POLL,
    "approval link with its request": decisions._LINK,
    "approval link with its request, as snapshots' columns": decisions._LINK_ROW,
    "requested device with its policy": requests._REQUESTED_DEVICE,
    "API token's technician with the requested device": requests._REQUESTER,
    "device token's device with its settings (OTP check)": accounts._LIVE_DEVICE_WITH_SETTINGS,
    "the codes an OTP check might match": otp._MATCHING_CODE,
}


@pytest.fixture
def plan(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans: PostgreSQL plans by its statistics")

    def explain(statement) -> list[str]:
        compiled = statement.compile(db.engine)
        connection = db.engine.raw_connection()
        try:
            return [row[3] for row in connection.execute(
                "EXPLAIN QUERY PLAN " + str(compiled), [None] * len(compiled.positiontup))]
        finally:
            connection.close()
    return explain


@pytest.mark.parametrize("name", sorted(HOT_STATEMENTS))
def test_no_hot_statement_scans_a_table(plan, name):
    steps = plan(HOT_STATEMENTS[name])
    assert steps and all(not step.startswith("SCAN") for step in steps), steps


def test_the_prompts_poll_reads_its_devices_open_prompts_only(plan):
    steps = plan(agents._POLL)
    assert any(step.startswith("SEARCH session_requests USING INDEX "
                               "ix_session_requests_device_id_open_prompts (device_id=? AND "
                               "status=? AND end_user_check=? AND end_user_deadline>?)")
               for step in steps), steps
    assert any(step.startswith("SEARCH remote_sessions USING INDEX "
                               "ix_remote_sessions_device_id_end_requested (device_id=?)")
               for step in steps), steps
