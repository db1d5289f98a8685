"""The audit log's filters, pages and look: "From", "To", "Action", "Person", "Device",
newest first, paged by seq with the filter kept in the links; bad input is the page with
a message next to its field, never an error page."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select

from portal.domain.audit_export import ACTIONS
from portal.extensions import db
from portal.models import AuditEvent
from portal.services import devices
from portal.services.actors import CLI
from portal.services.audit import record_event

from .session_logs_setup import DEVICE, OTHER_DEVICE, build_world, remote_session


@pytest.fixture
def world(make):
    w = build_world(make)
    remote_session("tech@example.com", DEVICE, NOW + timedelta(minutes=5),
                   ended=NOW + timedelta(minutes=9))
    remote_session("tech2@example.com", OTHER_DEVICE, NOW + timedelta(days=1))
    return w


def _seqs(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="event-(\d+)"', page)]


def _actions(page: str) -> list[str]:
    return re.findall(r'<td data-label="Action"><code>([^<]+)</code>', page)


def test_newest_first_uncached_out_of_history_with_times_in_utc(client, auth, world):
    auth.login("auditor@example.com")
    response = client.get(f"/departments/{world.qa.id}/audit")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert 'hx-history="false"' in page
    seqs = _seqs(page)
    assert seqs == sorted(seqs, reverse=True) and seqs
    assert re.search(r'<time datetime="2026-11-23T10:15:30Z">2026-11-23 10:15:30 UTC</time>',
                     page)  # portal.js adds the viewer's local time as its title
    for label in ("From", "To", "Action", "Person", "Device"):
        assert f">{label}</label>" in page
    assert ">Filter</button>" in page
    assert "Export CSV" in page and "Export JSON Lines" in page


@pytest.mark.parametrize("args, expected", [
    ({"action": "session.started"}, {"session.started"}),
    ({"person": "TECH2@example.com"}, {"request.created", "request.decided"}),
    ({"device": OTHER_DEVICE.upper()}, {"device.created", "token.created", "request.created",
                                        "request.decided", "session.started"}),
    ({"from": "2026-11-23", "to": "2026-11-23"}, {"request.created", "request.decided",
                                                  "session.started"}),
    ({"action": "request.decided", "person": "tech@example.com"}, {"request.decided"}),
])
def test_each_filter_narrows_the_log(client, auth, world, args, expected):
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{world.qa.id}/audit", query_string=args
                      ).get_data(as_text=True)
    assert set(_actions(page)) == expected


def test_the_action_field_offers_every_recorded_action(client, auth, world):
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{world.qa.id}/audit").get_data(as_text=True)
    offered = re.findall(r'<option value="([a-z_.]+)"', page)
    assert offered == list(ACTIONS)


@pytest.mark.parametrize("args, field", [
    ({"from": "22/11/2026"}, "from"), ({"to": "2026-02-30"}, "to"),
    ({"action": "request.approved"}, "action"), ({"person": "a\x00b"}, "person"),
    ({"device": "x" * 300}, "device"), ({"from": "2026-11-23", "to": "2026-11-01"}, "to"),
])
def test_bad_filter_input_is_the_page_with_a_message_next_to_the_field(
        client, auth, world, args, field):
    auth.login("auditor@example.com")
    for path in ("audit", "audit/export.csv", "audit/export.jsonl"):
        response = client.get(f"/departments/{world.qa.id}/{path}", query_string=args)
        page = response.get_data(as_text=True)
        assert response.status_code == 422
        assert f'id="filter-{field}-error"' in page
        assert "Export CSV" not in page  # no export of a filter that did not parse
        assert "attachment" not in response.headers.get("Content-Disposition", "")


def test_pages_by_seq_keep_the_filter(client, auth, world, app, make):
    for n in range(9):
        make.group(world.qa, f"Group {n}")
    app.config["PAGE_SIZE"] = 2  # four events a page
    auth.login("auditor@example.com")
    url = f"/departments/{world.qa.id}/audit?action=group.created"
    seen = []
    while url:
        page = client.get(url).get_data(as_text=True)
        assert set(_actions(page)) == {"group.created"}
        seen += _seqs(page)
        found = re.search(r'href="([^"]*before=\d+[^"]*)">Older', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            assert "action=group.created" in url
    assert len(seen) == 9 == len(set(seen)) and seen == sorted(seen, reverse=True)


def test_a_date_range_pages_newest_first_by_time(client, auth, world, app):
    """With "From" / "To", the order is by time (then seq), so events recorded out of
    time order still read newest first, and the pages by seq key neither skip nor repeat
    one — ties in time included."""
    times = [NOW + timedelta(days=2, minutes=m) for m in (5, 1, 9, 3, 3, 7, 1, 8, 3)]
    for n, at in enumerate(times):
        record_event(actor=CLI, action="group.created", target_type="group", target_id=n,
                     department_id=world.qa.id, now=at, details={"name": f"G{n}"})
    db.session.commit()
    app.config["PAGE_SIZE"] = 1  # two events a page
    auth.login("auditor@example.com")
    url = (f"/departments/{world.qa.id}/audit?from=2026-11-24&to=2026-11-24"
           "&action=group.created")
    seen = []
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += _seqs(page)
        found = re.search(r'href="([^"]*before=\d+[^"]*)">Older', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            assert "from=2026-11-24" in url
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "group.created", AuditEvent.department_id == world.qa.id)).all()
    newest_first = sorted(events, key=lambda e: (e.occurred_at, e.seq), reverse=True)
    assert seen == [e.seq for e in newest_first] and len(seen) == len(times)
    assert seen != sorted(seen, reverse=True)  # not the seq order: the times are mixed


def test_empty_states_say_what_to_do(client, auth, world):
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{world.qa.id}/audit?person=nobody@example.com"
                      ).get_data(as_text=True)
    assert "No events match this filter" in page and "clear the filter" in page


def test_a_device_name_with_markup_is_text(client, auth, world):
    devices.create_device(department=world.qa, name='<b hx-get="/x">', actor=CLI, now=NOW)
    db.session.commit()
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{world.qa.id}/audit").get_data(as_text=True)
    assert '<b hx-get="/x">' not in page and "&lt;b hx-get=" in page
