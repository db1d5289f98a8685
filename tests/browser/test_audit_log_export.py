"""An auditor filters the audit log to today's decisions, downloads both exports, and the
JSON Lines file passes `flask --app portal audit verify --export`."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone

from factories import PASSWORD, sealed_trail_check
from playwright.sync_api import expect

from portal.services import accounts
from portal.services import requests as request_service
from portal.services.actors import Actor

AUDITOR = "auditor@example.com"
TECH = "tech@example.com"


def test_an_auditor_exports_todays_decisions_and_the_file_verifies(
        new_context, live_server, sign_in, qa, make, fresh, runner, tmp_path):
    make.user(AUDITOR, "auditor", qa.department)
    tech = make.user(TECH, "technician", qa.department)
    now = datetime.now(timezone.utc)
    for at in (now - timedelta(days=2), now - timedelta(minutes=3), now - timedelta(minutes=1)):
        request_service.create_session_request(  # no checks: approved by policy at once
            technician=accounts.find_user(TECH), device_name=qa.device,
            actor=Actor.for_user(tech, "192.0.2.10"), now=at, base_url=live_server.url)
        fresh()
    sealed_trail_check()
    today = now.date().isoformat()

    page = new_context(accept_downloads=True).new_page()
    sign_in(page, AUDITOR, PASSWORD)
    page.goto(live_server(f"/departments/{qa.department.id}/settings"))
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("From").fill(today)
    page.get_by_label("To").fill(today)
    page.get_by_label("Action").select_option("request.decided")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(f"{live_server.url}/departments/{qa.department.id}/audit?"
                             f"from={today}&to={today}&device=&person=&action=request.decided")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(2)  # the decision two days ago is left out
    expect(rows.first.locator("time")).to_have_attribute("title", re.compile("local"))

    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("audit-qa-team-")
    assert download.suggested_filename.endswith(".csv")
    table = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    assert [r["action"] for r in table] == ["request.decided", "request.decided"]
    assert all(r["occurred_at"].startswith(today) for r in table)

    with page.expect_download() as info:
        page.get_by_role("link", name="Export JSON Lines").click()
    download = info.value
    assert download.suggested_filename.endswith(".jsonl")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines[:-1]] == [int(r["seq"]) for r in table]
    assert "chain_head" in json.loads(lines[-1])

    result = runner.invoke(args=["audit", "verify", "--export", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Export intact: 2 event(s) match the audit trail")

    changed = tmp_path / "changed.jsonl"  # and one changed byte is refused
    changed.write_text(path.read_text(encoding="utf-8").replace('"success"', '"successs"', 1),
                       encoding="utf-8")
    result = runner.invoke(args=["audit", "verify", "--export", str(changed)])
    assert result.exit_code == 1 and "Export rejected: line 1 (event #" in result.output
