"""Exports of the audit log (design.md "Session logs"): "Export CSV" and "Export JSON Lines"
of exactly what the filter shows, every page, as attachments; the JSON Lines file closes
with the chain's head; each export is an `audit.exported` event naming its filter; no
secret in any export."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from factories import NOW, sealed_trail_check
from sqlalchemy import select

from portal.clock import FixedClock
from portal.domain.audit_export import COLUMNS
from portal.extensions import db
from portal.models import AuditEvent, AuditHead, OutboxMessage
from portal.services import accounts, devices
from portal.services import requests as request_service
from portal.services.actors import CLI, Actor

from .session_logs_setup import (DEVICE, OTHER_DEVICE, build_world,
                                 client_session_by_approval, remote_session, turn_on)

HEADER = "seq,occurred_at,actor,action,target,department,client_ip,outcome,details,hash"


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(NOW + timedelta(days=2))}


@pytest.fixture
def world(make):
    w = build_world(make)
    remote_session("tech@example.com", DEVICE, NOW + timedelta(minutes=5),
                   ended=NOW + timedelta(minutes=9))
    remote_session("tech2@example.com", OTHER_DEVICE, NOW + timedelta(days=1))
    return w


def export(client, department, fmt, **args):
    response = client.get(f"/departments/{department.id}/audit/export.{fmt}",
                          query_string=args)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response


def page_seqs(client, department, **args) -> list[int]:
    """Every seq the audit log's pages show for this filter, following "Older »"."""
    url, seqs = f"/departments/{department.id}/audit", []
    response = client.get(url, query_string=args)
    while True:
        body = response.get_data(as_text=True)
        seqs += [int(n) for n in re.findall(r'<tr id="event-(\d+)"', body)]
        found = re.search(r'href="([^"]*before=\d+[^"]*)">Older', body)
        if not found:
            return seqs
        response = client.get(found.group(1).replace("&amp;", "&"))


def jsonl(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def test_csv_is_an_attachment_of_every_page_the_filter_shows(client, auth, world, app, make):
    for n in range(7):
        make.group(world.qa, f"Group {n}")
    app.config["PAGE_SIZE"] = 2  # four events a page: the export is every page
    auth.login("auditor@example.com")
    shown = page_seqs(client, world.qa)
    response = export(client, world.qa, "csv")
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Cache-Control"] == "no-store"
    assert re.fullmatch(r'attachment; filename="audit-qa-team-\d{8}T\d{6}Z\.csv"',
                        response.headers["Content-Disposition"])
    text = response.get_data(as_text=True)
    assert text.splitlines()[0] == HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["seq"]) for r in rows] == shown and len(shown) > 8
    assert all(r["department"] == str(world.qa.id) for r in rows)
    group = next(r for r in rows if r["action"] == "group.created")
    assert group["target"].startswith("group:") and json.loads(group["details"])["name"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", group["occurred_at"])
    assert group["hash"] == ""  # not sealed yet: no hash


def test_a_filtered_export_holds_exactly_what_the_filter_shows(client, auth, world):
    auth.login("auditor@example.com")
    args = {"action": "request.decided", "from": "2026-11-22", "to": "2026-11-22"}
    shown = page_seqs(client, world.qa, **args)
    lines = jsonl(export(client, world.qa, "jsonl", **args))
    assert [line["seq"] for line in lines[:-1]] == shown and len(shown) == 1
    rows = list(csv.DictReader(io.StringIO(
        export(client, world.qa, "csv", **args).get_data(as_text=True))))
    assert [int(r["seq"]) for r in rows] == shown


def test_json_lines_has_the_columns_and_ends_with_the_chains_head_at_the_start(
        client, auth, world):
    sealed_trail_check()
    head = db.session.get(AuditHead, 1)
    auth.login("auditor@example.com")
    response = export(client, world.qa, "jsonl", person="tech@example.com")
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert response.headers["Content-Disposition"].endswith('.jsonl"')
    *events, last = jsonl(response)
    assert last == {"chain_head": {"seq": head.seq, "hash": head.chain_hash}}
    assert events and all(list(e) == list(COLUMNS) for e in events)
    assert all(e["actor"] == "tech@example.com" for e in events)
    for e in events:  # the hash is the event's sealed chain hash
        row = db.session.get(AuditEvent, e["seq"])
        assert e["hash"] == row.chain_hash and len(e["hash"]) == 64
        assert e["details"] == row.details


def test_each_export_is_an_audit_event_naming_its_filter_and_format(client, auth, world):
    auth.login("auditor@example.com")
    export(client, world.qa, "csv", action="session.started", device=DEVICE)
    export(client, world.qa, "jsonl")
    exported = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.exported").order_by(AuditEvent.seq)).all()
    assert [e.details["format"] for e in exported] == ["csv", "jsonl"]
    assert exported[0].details["filter"] == {"action": "session.started", "device": DEVICE}
    assert exported[1].details["filter"] == {}
    assert {e.department_id for e in exported} == {world.qa.id}
    assert {e.actor for e in exported} == {"auditor@example.com"}
    # An export does not hold its own event; the next one holds the one before.
    lines = jsonl(export(client, world.qa, "jsonl", action="audit.exported"))
    assert [line["seq"] for line in lines[:-1]] == [exported[1].seq, exported[0].seq]
    page = client.get(f"/departments/{world.qa.id}/audit?action=audit.exported"
                      ).get_data(as_text=True)
    assert page.count("<code>audit.exported</code>") == 3


def test_csv_cells_a_spreadsheet_would_run_are_text(client, auth, world, make):
    sly = make.user("=1+2@example.com", "department_admin", world.qa)
    devices.create_group(department=world.qa, name="-2+3", actor=Actor.for_user(sly, "::1"),
                         now=NOW)
    db.session.commit()
    auth.login("auditor@example.com")
    rows = list(csv.reader(io.StringIO(
        export(client, world.qa, "csv", action="group.created").get_data(as_text=True))))
    assert rows[1][2] == "'=1+2@example.com"
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row if cell)


def test_another_departments_log_is_never_exported(client, auth, world):
    auth.login("auditor@example.com")
    for fmt in ("csv", "jsonl"):
        response = client.get(f"/departments/{world.sales.id}/audit/export.{fmt}")
        assert response.status_code == 403
        assert "WIN-SALES-01" not in response.get_data(as_text=True)
    assert db.session.scalar(select(AuditEvent.seq).where(
        AuditEvent.action == "audit.exported")) is None
    for fmt in ("csv", "jsonl"):  # and its events never leak into this one's
        assert "WIN-SALES-01" not in export(client, world.qa, fmt).get_data(as_text=True)


@pytest.mark.parametrize("user", ["approver@example.com", "tech@example.com"])
def test_approvers_and_technicians_may_not_read_or_export(client, auth, world, user):
    auth.login(user)
    for path in ("audit", "audit/export.csv", "audit/export.jsonl"):
        assert client.get(f"/departments/{world.qa.id}/{path}").status_code == 403


LINK = re.compile(r"/approvals/(\S+)")


def test_no_link_token_api_token_or_one_time_password_in_any_export(client, auth, world):
    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com\nqa-admin@example.com")
    tech = accounts.find_user("tech@example.com")
    req = request_service.create_session_request(
        technician=tech, device_name=DEVICE, actor=Actor.for_user(tech, "192.0.2.10"),
        now=NOW, base_url="http://portal.test")
    db.session.commit()
    links = [LINK.search(m.body_text).group(1) for m in db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.request_id == req.id))]
    client.get(f"/approvals/{links[0]}")  # "link opened"
    _ask, _session, used_code = client_session_by_approval(world.qa, DEVICE)
    _ask2, _s2, fresh_code = client_session_by_approval(
        world.qa, DEVICE, username="mlee", email="m.lee@example.com",
        at=NOW + timedelta(hours=2))
    user_token = accounts.create_user_token(user=tech, actor=CLI, now=NOW)
    rotated = accounts.rotate_device_token(device=devices.find_device(OTHER_DEVICE),
                                           actor=CLI, now=NOW)[0]
    db.session.commit()
    secrets = [*links, user_token, rotated, used_code, fresh_code, *world.tokens.values()]
    assert len(links) == 2 and all(len(s) >= 8 for s in secrets)
    sealed_trail_check()
    auth.login("admin@example.com")
    for department in (world.qa, world.sales):
        for fmt in ("csv", "jsonl"):
            body = export(client, department, fmt).get_data(as_text=True)
            assert "otp.verified" in body or department is world.sales
            for secret in secrets:
                assert secret not in body, (department.name, fmt)
