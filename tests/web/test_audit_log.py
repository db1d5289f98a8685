"""The department audit log: who may read it, what it shows, one request's story."""
from __future__ import annotations

from portal.extensions import db
from portal.services import requests as request_service
from portal.services.actors import Actor
from factories import NOW


def _setup(make):
    qa = make.department("QA Team")
    sales = make.department("Sales Team")
    make.user("auditor@example.com", "auditor", qa)
    make.user("tech@example.com", "technician", qa)
    make.device(qa, "WIN-0859G9I39J0")
    return qa, sales


def test_auditor_reads_the_log_uncached_and_out_of_htmx_history(client, auth, make):
    qa, _sales = _setup(make)
    auth.login("auditor@example.com")
    response = client.get(f"/departments/{qa.id}/audit")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert 'hx-history="false"' in page
    assert "device.created" in page and "WIN-0859G9I39J0" in page
    assert "member.added" in page


def test_other_departments_and_technicians_are_refused(client, auth, make):
    qa, sales = _setup(make)
    auth.login("auditor@example.com")
    assert client.get(f"/departments/{sales.id}/audit").status_code == 403
    auth.logout()
    auth.login("tech@example.com")
    assert client.get(f"/departments/{qa.id}/audit").status_code == 403


def test_a_requests_whole_story_reads_back(client, auth, make):
    qa, _ = _setup(make)
    technician = make.user("tech@example.com", "technician", qa)
    req = request_service.create_session_request(
        technician=technician, device_name="WIN-0859G9I39J0",
        actor=Actor.for_user(technician, "192.0.2.7"), now=NOW, base_url="http://x")
    db.session.commit()
    other = request_service.create_session_request(
        technician=technician, device_name="WIN-0859G9I39J0",
        actor=Actor.for_user(technician), now=NOW, base_url="http://x")
    db.session.commit()
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{qa.id}/audit?request={req.id}").get_data(as_text=True)
    assert f"The story of session request #{req.id}" in page
    assert "request.created" in page and "request.decided" in page  # approved by policy
    assert "192.0.2.7" in page
    assert f"request #{other.id}" not in page


def test_pages_by_key(client, auth, make, app):
    qa, _ = _setup(make)
    for n in range(12):
        make.group(qa, f"Group {n:02d}")
    app.config["PAGE_SIZE"] = 3  # six events a page
    auth.login("auditor@example.com")
    seen, url = [], f"/departments/{qa.id}/audit"
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += [n for n in range(12) if f"Group {n:02d}" in page]
        marker = 'href="/departments/%d/audit?before=' % qa.id
        url = None
        if marker in page:
            start = page.index(marker) + len('href="')
            url = page[start:page.index('"', start)].replace("&amp;", "&")
    assert sorted(seen) == list(range(12))
    assert len(seen) == 12  # each group's event on exactly one page


def test_an_event_shows_at_once_marked_not_yet_sealed_until_the_sealing_job_runs(
        client, auth, make, app):
    from portal import jobs

    qa, _ = _setup(make)
    auth.login("auditor@example.com")
    page = client.get(f"/departments/{qa.id}/audit").get_data(as_text=True)
    assert "device.created" in page and "not yet sealed" in page
    assert jobs.seal_audit(app) > 0  # the scheduler's job: its own context and commit
    page = client.get(f"/departments/{qa.id}/audit").get_data(as_text=True)
    assert "device.created" in page and "not yet sealed" not in page
