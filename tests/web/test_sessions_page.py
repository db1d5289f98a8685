"""The Sessions page of a department (design.md "Session logs"): remote and client
sessions, newest first, with the labels, columns and filters the design names; key
pagination; who may read it; no secret on it; phone-friendly, uncached."""
from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import event

from portal.clock import FixedClock
from portal.extensions import db
from web.helpers import page
from web.session_logs_setup import (
    CLOCK_AT,
    DEVICE,
    OTHER_DEVICE,
    SALES_DEVICE,
    build_world,
    plain_client_session,
    remote_session,
)

REMOTE_COLUMNS = ["Device", "Technician", "Run as", "Approved by", "Started", "Ended",
                  "Ended by", "Duration"]
CLIENT_COLUMNS = ["User Name", "Client Name", "Start", "Finish"]


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(CLOCK_AT)}


@pytest.fixture
def world(make):
    return build_world(make)


def sessions_url(department, **args):
    query = "&".join(f"{k}={v}" for k, v in args.items())
    return f"/departments/{department.id}/sessions" + (f"?{query}" if query else "")


def tables(doc):
    remote = doc.one("section", id="remote-sessions")
    client = doc.one("section", id="client-sessions")
    return remote, client


def rows(section):
    return section.find_all("tr")[1:]  # after the header row


def cells(row):
    return [td.text() for td in row.find_all("td")]


def test_the_department_tabs_link_to_sessions(client, auth, world):
    auth.login("auditor@example.com")
    doc = page(client.get(f"/departments/{world.qa.id}/audit"))
    tab = [a for a in doc.one("nav", class_="tabs").find_all("a") if a.text() == "Sessions"]
    assert tab and tab[0].get("href") == f"/departments/{world.qa.id}/sessions"


def test_remote_sessions_read_as_the_design_says_newest_first(client, auth, world):
    old, _ = remote_session("tech@example.com", DEVICE, NOW - timedelta(hours=3),
                            ended=NOW - timedelta(hours=2, minutes=55, seconds=53),
                            run_as="Administrator")
    running, _ = remote_session("tech2@example.com", OTHER_DEVICE, NOW)
    auth.login("auditor@example.com")
    response = client.get(sessions_url(world.qa))
    assert response.status_code == 200
    remote, _ = tables(page(response))
    assert [th.text() for th in remote.find_all("th")] == REMOTE_COLUMNS
    first, second = rows(remote)
    # Newest first: the running one, started 2 h before the clock, still ticking.
    assert cells(first) == [OTHER_DEVICE, "tech2@example.com", "—", "policy",
                            "2026-11-22 10:15:30 UTC", "running", "—", "2 h 00 min 00 s"]
    assert first.one("span", class_="state-running").text() == "running"
    assert first.one("span", class_="duration").get("data-elapsed-seconds") == "7200"
    assert cells(second) == [DEVICE, "tech@example.com", "Administrator", "policy",
                             "2026-11-22 07:15:30 UTC", "2026-11-22 07:19:37 UTC",
                             "device", "4 min 07 s"]
    assert not second.find("span", class_="duration")  # an ended one doesn't tick
    # Each row links to its request's timeline; times carry UTC for portal.js.
    assert first.one("a").get("href") == \
        f"/departments/{world.qa.id}/requests/{running.id}/timeline"
    assert second.one("a").get("href") == \
        f"/departments/{world.qa.id}/requests/{old.id}/timeline"
    assert second.find_all("time")[0].get("datetime") == "2026-11-22T07:15:30Z"


def test_approved_by_reads_end_user_exclusion_or_the_approvers_email(client, auth, world,
                                                                     make):
    from portal.services import decisions, departments
    from portal.services.actors import CLI, Actor
    from portal.services import accounts
    from portal.services import requests as request_service
    from portal.services import agents
    from web.session_logs_setup import device, turn_on

    departments.add_exclusion(department=world.qa, target=f"device:{device(OTHER_DEVICE).id}",
                              actor=CLI, now=NOW)
    db.session.commit()
    remote_session("tech@example.com", OTHER_DEVICE, NOW - timedelta(minutes=50),
                   ended=NOW - timedelta(minutes=45))
    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com")
    tech = accounts.find_user("tech@example.com")
    req = request_service.create_session_request(
        technician=tech, device_name=DEVICE, actor=Actor.for_user(tech), now=NOW,
        base_url="http://portal.test")
    db.session.commit()
    approver = accounts.find_user("approver@example.com")
    decisions.decide_in_portal(user=approver, request_id=req.id, decision="allow",
                               actor=Actor.for_user(approver), now=NOW + timedelta(seconds=5))
    agents.start_remote_session(device=device(DEVICE), request_id=req.id,
                                actor=Actor(label="device"), now=NOW + timedelta(seconds=9))
    db.session.commit()
    auth.login("auditor@example.com")
    remote, _ = tables(page(client.get(sessions_url(world.qa))))
    assert [cells(r)[3] for r in rows(remote)] == ["approver@example.com", "exclusion"]


def test_client_sessions_list_user_name_as_the_design_says(client, auth, world):
    plain_client_session(DEVICE, "jsmith", "j.smith@example.com", NOW - timedelta(hours=1),
                         ended=NOW - timedelta(minutes=30))
    plain_client_session(OTHER_DEVICE, "mlee", "m.lee@example.com", NOW)
    plain_client_session(SALES_DEVICE, "sales", "s@example.com", NOW)  # not QA's
    auth.login("auditor@example.com")
    _, section = tables(page(client.get(sessions_url(world.qa))))
    assert [th.text() for th in section.find_all("th")] == CLIENT_COLUMNS
    assert [cells(r)[:2] + [cells(r)[3]] for r in rows(section)] == [
        ["mlee (m.lee@example.com) code sent automatically, no request", OTHER_DEVICE,
         "running"],
        ["jsmith (j.smith@example.com) code sent automatically, no request", DEVICE,
         "2026-11-22 09:45:30 UTC"]]


def test_filters_are_labelled_kept_in_the_url_and_narrow_both_lists(client, auth, world):
    remote_session("tech@example.com", DEVICE, NOW - timedelta(days=2),
                   ended=NOW - timedelta(days=2) + timedelta(minutes=5))
    remote_session("tech2@example.com", OTHER_DEVICE, NOW - timedelta(hours=1),
                   ended=NOW - timedelta(minutes=50), run_as="svc-backup")
    remote_session("tech@example.com", DEVICE, NOW)
    plain_client_session(DEVICE, "jsmith", "j.smith@example.com", NOW - timedelta(days=2),
                         ended=NOW - timedelta(days=2) + timedelta(minutes=10))
    plain_client_session(OTHER_DEVICE, "mlee", "m.lee@example.com", NOW)
    auth.login("auditor@example.com")
    doc = page(client.get(sessions_url(world.qa)))
    form = doc.one("form", role="search")
    assert form.get("method") == "get"
    assert [label.text() for label in form.find_all("label")] == \
        ["From", "To", "Device", "Person", "State"]
    assert form.one("button").text() == "Filter"
    assert [o.text() for o in form.one("select", name="state").find_all("option")] == \
        ["any", "running", "ended"]

    def listed(**args):
        response = client.get(sessions_url(world.qa, **args))
        assert response.status_code == 200
        remote, client_section = tables(page(response))
        return ([cells(r)[0] + " " + cells(r)[1] for r in rows(remote)],
                [cells(r)[1] for r in rows(client_section)])

    assert listed(state="running") == ([f"{DEVICE} tech@example.com"], [OTHER_DEVICE])
    assert listed(state="ended") == ([f"{OTHER_DEVICE} tech2@example.com",
                                      f"{DEVICE} tech@example.com"], [DEVICE])
    assert listed(device=OTHER_DEVICE.upper()) == ([f"{OTHER_DEVICE} tech2@example.com"],
                                                   [OTHER_DEVICE])
    assert listed(person="TECH@example.com") == ([f"{DEVICE} tech@example.com"] * 2, [])
    assert listed(person="svc-backup")[0] == [f"{OTHER_DEVICE} tech2@example.com"]
    assert listed(person="jsmith") == ([], [DEVICE])
    assert listed(**{"from": "2026-11-22"}) == (
        [f"{DEVICE} tech@example.com", f"{OTHER_DEVICE} tech2@example.com"], [OTHER_DEVICE])
    assert listed(to="2026-11-21") == ([f"{DEVICE} tech@example.com"], [DEVICE])
    assert listed(**{"from": "2026-11-20", "to": "2026-11-20"}) == (
        [f"{DEVICE} tech@example.com"], [DEVICE])
    # The page shows the filter it applies, so a bookmarked view reads back.
    doc = page(client.get(sessions_url(world.qa, device=DEVICE, state="ended")))
    assert doc.one("input", name="device").get("value") == DEVICE
    assert doc.one("option", value="ended").has("selected")


def test_an_empty_list_says_what_to_do_and_a_filter_that_finds_nothing_says_so(
        client, auth, world):
    auth.login("auditor@example.com")
    doc = page(client.get(sessions_url(world.qa)))
    remote, client_section = tables(doc)
    assert "No remote sessions yet" in remote.text()
    assert "agent reports it" in remote.text()
    assert "No client sessions yet" in client_section.text()
    assert "Allow the use of one-time passwords" in client_section.text()
    doc = page(client.get(sessions_url(world.qa, device="nothing-like-it")))
    remote, _ = tables(doc)
    assert "No remote sessions match this filter" in remote.text()
    assert remote.one("a").text() == "clear the filter"


@pytest.mark.parametrize("args, field", [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-02-30"}, "to"),
    ({"from": "2026-11-22", "to": "2026-11-01"}, "to"),
    ({"state": "paused"}, "state"),
    ({"device": "x" * 300}, "device"),
    ({"person": "a%00b"}, "person"),
])
def test_bad_filter_values_are_named_never_a_500(client, auth, world, args, field):
    remote_session("tech@example.com", DEVICE, NOW)
    auth.login("auditor@example.com")
    response = client.get(sessions_url(world.qa, **args))
    assert response.status_code == 422
    doc = page(response)
    control = doc.one(id=f"filter-{field}")
    assert control.get("aria-invalid") == "true"
    assert doc.one("p", id=f"filter-{field}-error").text()
    assert len(rows(tables(doc)[0])) == 1  # the rest of the filter still applies


@pytest.mark.parametrize("key", ["x", "-1", "99999999999999999999-1", "1-0", "1-99999999999",
                                 "٣-1", "1795346130123000-1%00"])
def test_a_page_key_that_is_no_key_starts_at_the_top(client, auth, world, key):
    remote_session("tech@example.com", DEVICE, NOW)
    auth.login("auditor@example.com")
    response = client.get(sessions_url(world.qa, remote_before=key, client_before=key))
    assert response.status_code == 200
    assert len(rows(tables(page(response))[0])) == 1


def _walk(client, url, section_id, marker):
    seen, pages = [], 0
    while url:
        pages += 1
        doc = page(client.get(url))
        section = doc.one("section", id=section_id)
        seen += [cells(r)[0] for r in rows(section)]
        nxt = [a for a in section.find_all("a") if a.text() == "Older »"]
        url = nxt[0].get("href") if nxt else None
        if url:
            assert marker in url
    return seen, pages


def test_each_list_pages_by_its_own_key_in_the_url_keeping_the_filter(client, auth, world,
                                                                      app):
    same_time = NOW - timedelta(hours=1)
    for n in range(7):  # the same start for several: the id breaks the tie
        remote_session("tech@example.com", DEVICE, same_time if n < 4 else
                       NOW - timedelta(minutes=n), ended=NOW)
    remote_session("tech2@example.com", OTHER_DEVICE, NOW)  # filtered out
    for n in range(5):
        plain_client_session(DEVICE, f"user{n}", f"u{n}@example.com",
                             NOW - timedelta(minutes=n))
    app.config["PAGE_SIZE"] = 3
    auth.login("auditor@example.com")
    seen, pages = _walk(client, sessions_url(world.qa, device=DEVICE), "remote-sessions",
                        "device=" + DEVICE)
    assert pages == 3 and seen == [DEVICE] * 7
    # The client list pages on, its own key in the URL, the remote list's left as it was.
    doc = page(client.get(sessions_url(world.qa, device=DEVICE)))
    older = [a for a in doc.one("section", id="client-sessions").find_all("a")
             if a.text() == "Older »"][0].get("href")
    assert "client_before=" in older and "remote_before" not in older
    doc = page(client.get(older))
    assert [cells(r)[0].split()[0] for r in rows(doc.one("section", id="client-sessions"))] \
        == ["user3", "user4"]
    assert len(rows(doc.one("section", id="remote-sessions"))) == 3


def test_every_row_shows_once_across_pages(client, auth, world, app):
    ids = []
    for n in range(8):
        req, _ = remote_session("tech@example.com", DEVICE,
                                NOW - timedelta(minutes=n // 2), ended=NOW)
        ids.append(req.id)
    app.config["PAGE_SIZE"] = 3
    auth.login("auditor@example.com")
    url, found = sessions_url(world.qa), []
    while url:
        section = page(client.get(url)).one("section", id="remote-sessions")
        found += [int(r.one("a").get("href").split("/")[-2]) for r in rows(section)]
        nxt = [a for a in section.find_all("a") if a.text() == "Older »"]
        url = nxt[0].get("href") if nxt else None
    assert sorted(found) == sorted(ids) and len(found) == len(ids)


def _count_statements(client, url):
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(statements)


def test_the_page_costs_the_same_statements_for_one_row_or_twenty(client, auth, world,
                                                                  app):
    app.config["PAGE_SIZE"] = 25
    remote_session("tech@example.com", DEVICE, NOW)
    plain_client_session(DEVICE, "jsmith", "j.smith@example.com", NOW)
    auth.login("auditor@example.com")
    url = sessions_url(world.qa)
    one = _count_statements(client, url)
    for n in range(19):
        remote_session("tech2@example.com" if n % 2 else "tech@example.com",
                       OTHER_DEVICE if n % 3 else DEVICE, NOW - timedelta(minutes=n + 1),
                       ended=NOW if n % 2 else None, run_as=f"user{n}")
        plain_client_session(OTHER_DEVICE, f"u{n}", f"u{n}@example.com", NOW)
    twenty = _count_statements(client, url)
    assert one == twenty
    assert twenty <= 8  # sign-in, roles, department, the two lists (and a savepoint or so)


# --- who may read it -----------------------------------------------------------------


@pytest.mark.parametrize("email", ["auditor@example.com", "qa-admin@example.com",
                                   "admin@example.com", "approver@example.com"])
def test_auditors_admins_and_approvers_open_sessions(client, auth, world, email):
    remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    response = client.get(sessions_url(world.qa))
    assert response.status_code == 200
    assert DEVICE in response.get_data(as_text=True)


@pytest.mark.parametrize("email", ["tech@example.com", "sales-auditor@example.com",
                                   "sales-tech@example.com"])
def test_technicians_and_other_departments_are_refused(client, auth, world, email):
    remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    response = client.get(sessions_url(world.qa))
    assert response.status_code == 403
    assert DEVICE not in response.get_data(as_text=True)


def test_another_departments_sessions_never_show(client, auth, world):
    remote_session("sales-tech@example.com", SALES_DEVICE, NOW)
    plain_client_session(SALES_DEVICE, "sales", "s@example.com", NOW)
    auth.login("auditor@example.com")
    body = client.get(sessions_url(world.qa)).get_data(as_text=True)
    assert SALES_DEVICE not in body and "sales-tech" not in body


def test_signed_out_goes_to_sign_in_and_no_such_department_is_404(client, auth, world):
    response = client.get(sessions_url(world.qa))
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
    auth.login("admin@example.com")
    assert client.get("/departments/999999/sessions").status_code == 404
    auth.logout()
    auth.login("auditor@example.com")
    assert client.get("/departments/999999/sessions").status_code == 403  # 403 before 404


@pytest.mark.parametrize("email", ["auditor@example.com", "approver@example.com"])
def test_nothing_here_takes_a_post(client, auth, world, email):
    """The logs are read-only; the one POST is "End session" (tests/web/test_end_session.py)."""
    req, _ = remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    for url in (sessions_url(world.qa),
                f"/departments/{world.qa.id}/requests/{req.id}/timeline"):
        assert client.post(url, data={"state": "ended"}).status_code in (403, 405)
    from flask import current_app
    rules = [r for r in current_app.url_map.iter_rules() if r.endpoint.startswith("sessions.")]
    posts = {r.endpoint for r in rules if "POST" in r.methods}
    assert rules and posts == {"sessions.end_session"}


# --- the look ------------------------------------------------------------------------


def test_uncached_out_of_htmx_history_and_phone_ready(client, auth, world):
    remote_session("tech@example.com", DEVICE, NOW)
    plain_client_session(DEVICE, "jsmith", "j.smith@example.com", NOW)
    auth.login("auditor@example.com")
    response = client.get(sessions_url(world.qa))
    assert response.headers["Cache-Control"] == "no-store"
    doc = page(response)
    assert doc.one("body").get("hx-history") == "false"
    for table in doc.find_all("table"):
        assert table.ancestor("div", "table-wrap") is not None
        for td in table.find_all("td"):  # each cell names its column for the stacked view
            assert td.get("data-label")
    assert not [s for s in doc.find_all("script") if not s.get("src")]  # CSP: no inline


def test_a_device_name_with_markup_is_shown_escaped(client, auth, world, make):
    make.device(world.qa, '<script>alert(1)</script>')
    remote_session("tech@example.com", '<script>alert(1)</script>', NOW)
    auth.login("auditor@example.com")
    body = client.get(sessions_url(world.qa)).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_the_departments_list_leads_an_auditor_to_sessions_and_the_audit_log(client, auth,
                                                                             world):
    auth.login("auditor@example.com")
    doc = page(client.get("/departments"))
    hrefs = {a.get("href") for a in doc.find_all("a")}
    assert sessions_url(world.qa) in hrefs
    assert f"/departments/{world.qa.id}/audit" in hrefs
