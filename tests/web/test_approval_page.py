"""The approval page from the email (security.md 1-5, 8, 9: scanners change nothing, a
human click by the signed-in recipient decides, first decision wins, deadlines hold), and
the technician's and approver's request pages. Requests use the real clock, as pages do."""
from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from factories import NOW, PASSWORD, TEST_CONFIG
from sqlalchemy import func, select, update

from portal import create_app
from portal.extensions import db
from portal.models import ApprovalLink, AuditEvent, OutboxMessage, SessionRequest
from portal.services import accounts, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI
from portal.clock import SystemClock

utcnow = SystemClock()

DEVICE, OPS_DEVICE = "WIN-0859G9I39J0", "OPS-SRV-01"
R1, R2 = "first-approver@example.com", "second-approver@example.com"


class Page(HTMLParser):
    """Every tag's attributes; forms with their inputs and button labels; scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags, self.forms, self.scripts = [], [], []
        self._in_form, self._in = False, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "form":
            self._in_form = True
            self.forms.append({"attrs": attrs, "inputs": {}, "buttons": []})
        elif tag == "input" and self._in_form:
            self.forms[-1]["inputs"][attrs.get("name")] = attrs.get("value")
        elif tag == "button" and self._in_form:
            self._in = "button"
            self.forms[-1]["buttons"].append("")
        elif tag == "script":
            self._in = "script"
            self.scripts.append({"attrs": attrs, "text": ""})

    def handle_endtag(self, tag):
        self._in_form = self._in_form and tag != "form"
        self._in = None if tag in ("button", "script") else self._in

    def handle_data(self, data):
        if self._in == "button":
            self.forms[-1]["buttons"][-1] += data.strip()
        elif self._in == "script":
            self.scripts[-1]["text"] += data


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user("other-tech@example.com", "technician", department)
    make.user(R1, "approver", department)
    make.user(R2, "approver", department)
    make.user("outsider@example.com", "approver", department)
    make.user("auditor@example.com", "auditor", department)
    configure(department, recipients=f"{R1}\n{R2}")
    return department


@pytest.fixture
def ops(make, qa):
    department = make.department("Ops")
    make.device(department, OPS_DEVICE)
    make.user("ops-tech@example.com", "technician", department)
    make.user("ops-approver@example.com", "approver", department)
    configure(department, recipients="ops-approver@example.com")
    return department


def configure(department, recipients, **changes):
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": recipients,
              **changes}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()


def new_request(technician="tech@example.com", device=DEVICE):
    """A pending request (real clock) and each recipient's approval-link path."""
    req = service.create_session_request(
        technician=accounts.find_user(technician), device_name=device, run_as="CORP\\jsmith",
        reason="Printer driver", actor=CLI, now=utcnow(), base_url="http://portal.test")
    db.session.commit()
    messages = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id == req.id))
    return req.id, {m.recipient: mail.approval_links_in(m)[0].removeprefix("http://portal.test")
                    for m in messages}


def snapshot(request_id):
    db.session.expire_all()
    return (db.session.execute(select(SessionRequest.__table__).where(
        SessionRequest.id == request_id)).one()._asdict(),
        [r._asdict() for r in db.session.execute(
            select(ApprovalLink.__table__).order_by(ApprovalLink.id))],
        events("request.decided"))


def events(action):
    return db.session.scalar(select(func.count()).where(AuditEvent.action == action))


def stored(request_id):
    db.session.expire_all()
    return db.session.get(SessionRequest, request_id)


def sign_in(app, email, next_url=None):
    client = app.test_client()
    data = {"email": email, "password": PASSWORD, **({"next": next_url} if next_url else {})}
    response = client.post("/login", data=data)
    assert response.status_code == 303
    return client, response


def text(response):
    return response.get_data(as_text=True)


# --- the approval page --------------------------------------------------------------------


def test_page_shows_the_request_and_needs_a_click_to_decide(client, qa):
    request_id, links = new_request()
    before = snapshot(request_id)
    response = client.get(links[R1])
    assert (response.status_code, response.headers["Cache-Control"]) == (200, "no-store")
    html = text(response)
    assert all(fact in html for fact in (DEVICE, "QA Team", "tech@example.com",
                                         "CORP\\jsmith", "Printer driver"))
    seconds = int(re.search(r'class="seconds" data-seconds-left="(\d+)"', html).group(1))
    assert 170 <= seconds <= 180

    page = Page(html)
    # One POST form: the Comment, then "Allow Session" and "Deny" (each button sends its
    # decision); "I didn't expect this" is only a link to a confirmation page.
    [decide_form] = [f for f in page.forms if f["attrs"].get("action") == links[R1]]
    assert decide_form["attrs"]["method"] == "post"
    assert decide_form["buttons"] == ["Allow Session", "Deny"]
    assert [(a["name"], a["value"]) for t, a in page.tags if t == "button"
            and a.get("name") == "decision"] == [("decision", "allow"), ("decision", "deny")]
    assert decide_form["inputs"]["csrf_token"] and "comment" in decide_form["inputs"]
    assert [a["href"] for t, a in page.tags if t == "a" and a.get("id") == "decide-report"
            ] == [links[R1] + "/report"]
    # Nothing runs or submits by itself: scripts only by src, no handlers, no load trigger.
    assert page.scripts and all(s["attrs"].get("src") and not s["text"].strip()
                                for s in page.scripts)
    assert not [(t, a) for t, a in page.tags for name in a if name.startswith("on")]
    assert [a["hx-trigger"] for _, a in page.tags if "hx-trigger" in a] == ["every 2s"]
    assert not [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]

    # The first GET records the opening of that link once and changes nothing else; a
    # HEAD, and every later GET (anyone holding the link can repeat it), write nothing.
    opened = snapshot(request_id)
    assert (opened[0], opened[2]) == (before[0], before[2])
    assert [(link["recipient_email"], link["first_opened_at"] is not None)
            for link in opened[1]] == [(R1, True), (R2, False)]
    assert [{**link, "first_opened_at": None} for link in opened[1]] == before[1]
    head = client.head(links[R1])
    assert (head.status_code, head.headers["Cache-Control"]) == (200, "no-store")
    for _ in range(3):
        assert client.get(links[R1]).status_code == 200
    assert snapshot(request_id) == opened and events("link.opened") == 1


def test_anonymous_post_goes_to_sign_in_and_back_to_the_page(app, client, qa):
    request_id, links = new_request()
    before = snapshot(request_id)
    response = client.post(links[R1], data={"decision": "allow"})
    location = urlsplit(response.headers["Location"])
    assert (response.status_code, location.path) == (303, "/login")
    assert parse_qs(location.query) == {"next": [links[R1]]}
    assert snapshot(request_id) == before

    recipient, signed_in = sign_in(app, R1, next_url=links[R1])
    assert signed_in.headers["Location"] == links[R1]
    assert "Allow Session" in text(recipient.get(links[R1]))
    assert recipient.post(links[R1], data={"decision": "allow"}).status_code == 200
    assert stored(request_id).status == "approved"


def test_someone_else_signed_in_cannot_use_the_link(app, qa):
    request_id, links = new_request()
    before = snapshot(request_id)
    outsider, _ = sign_in(app, "outsider@example.com")
    response = outsider.post(links[R1], data={"decision": "allow"})
    assert response.status_code == 403 and "sent to somebody else" in text(response)
    first, _ = sign_in(app, R1)  # a recipient, but of the other link
    assert first.post(links[R2], data={"decision": "deny"}).status_code == 403
    assert snapshot(request_id) == before


@pytest.mark.parametrize("decision, status, heading, by", [
    ("allow", "approved", "Approved", "Allowed by"),
    ("deny", "denied", "Denied", "Denied by"),
])
def test_recipient_decides_and_a_second_decision_gets_409(app, qa, decision, status,
                                                          heading, by):
    request_id, links = new_request()
    first, _ = sign_in(app, R1)
    response = first.post(links[R1], data={"decision": decision})
    assert response.status_code == 200
    assert f"<h2>{heading}</h2>" in text(response) and f"{by} {R1}." in text(response)
    assert (stored(request_id).status, stored(request_id).decided_by) == (status, R1)

    decided = snapshot(request_id)
    second, _ = sign_in(app, R2)
    late = second.post(links[R2], data={"decision": "allow" if decision == "deny" else "deny"})
    assert late.status_code == 409
    assert "already been decided" in text(late) and f"{by} {R1}." in text(late)
    assert snapshot(request_id) == decided and decided[2] == 1


def test_decision_after_the_deadline_is_410_and_reads_timed_out(app, qa):
    request_id, links = new_request()
    past = utcnow() - timedelta(seconds=1)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                       .values(expires_at=past, email_deadline=past))
    db.session.commit()
    first, _ = sign_in(app, R1)
    response = first.post(links[R1], data={"decision": "allow"})
    assert response.status_code == 410 and "<h2>Timed out</h2>" in text(response)
    assert (stored(request_id).status, stored(request_id).decided_by) == ("timed_out", None)
    assert events("request.decided") == 0


def test_unknown_token_reveals_nothing(client, qa):
    new_request()
    unknown = "/approvals/not-a-real-token-0123456789abcdef"
    for response in (client.get(unknown), client.get(unknown + "/status"),
                     client.post(unknown, data={"decision": "allow"})):
        assert response.status_code == 404 and "This link is not valid" in text(response)
        assert not [f for f in (DEVICE, "QA Team", "tech@") if f in text(response)]


def test_without_sign_in_the_form_alone_decides_for_the_recipient(client, qa):
    configure(qa, recipients=f"{R1}\n{R2}", is_sign_in_required_to_decide=False)
    request_id, links = new_request()
    response = client.post(links[R2], data={"decision": "allow"})
    assert response.status_code == 200 and f"Allowed by {R2}." in text(response)
    req = stored(request_id)
    assert (req.status, req.decided_by, req.email_check) == ("approved", R2, "allowed")


def test_status_fragment_is_read_only_and_stops_polling_once_decided(app, client, qa):
    request_id, links = new_request()
    before, opened = snapshot(request_id), events("link.opened")
    fragment = client.get(links[R1] + "/status")
    assert (fragment.status_code, fragment.headers["Cache-Control"]) == (200, "no-store")
    assert 'hx-trigger="every 2s"' in text(fragment) and "<html" not in text(fragment)
    assert snapshot(request_id) == before and events("link.opened") == opened

    first, _ = sign_in(app, R1)
    first.post(links[R1], data={"decision": "allow"})
    done = text(client.get(links[R1] + "/status"))
    assert "hx-trigger" not in done and f"Allowed by {R1}." in done
    assert "Allow Session" not in done


@pytest.fixture
def csrf_client(_database, qa):
    """The same database served by an app with CSRF protection on."""
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": _database,
                      "WTF_CSRF_ENABLED": True})
    yield app.test_client()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_with_csrf_on_a_post_without_the_token_changes_nothing(csrf_client):
    request_id, links = new_request()
    login_form = Page(text(csrf_client.get("/login"))).forms[-1]
    assert csrf_client.post("/login", data={"email": R1, "password": PASSWORD}
                            ).status_code == 400
    assert csrf_client.post("/login", data={
        "email": R1, "password": PASSWORD,
        "csrf_token": login_form["inputs"]["csrf_token"]}).status_code == 303
    before = snapshot(request_id)
    assert csrf_client.post(links[R1], data={"decision": "allow"}).status_code == 400
    assert csrf_client.post(links[R1], data={"decision": "allow",
                                             "csrf_token": "forged"}).status_code == 400
    assert snapshot(request_id) == before

    token = Page(text(csrf_client.get(links[R1]))).forms[-1]["inputs"]["csrf_token"]
    response = csrf_client.post(links[R1], data={"decision": "allow"},
                                headers={"X-CSRFToken": token})  # as htmx sends it
    assert response.status_code == 200
    assert stored(request_id).status == "approved"


# --- the technician's pages ---------------------------------------------------------------


def test_connect_offers_own_departments_and_shows_the_wait(app, ops):
    technician, _ = sign_in(app, "tech@example.com")
    page = text(technician.get("/connect"))
    assert DEVICE in page and OPS_DEVICE not in page
    assert technician.post("/connect", data={"device": OPS_DEVICE}).status_code == 422
    assert db.session.scalar(select(func.count()).select_from(SessionRequest)) == 0

    response = technician.post("/connect", data={"device": DEVICE, "run_as": "CORP\\jsmith",
                                                  "reason": "Printer driver"})
    assert response.status_code == 303
    request_id = db.session.scalar(select(SessionRequest.id))
    assert response.headers["Location"] == f"/requests/{request_id}"
    shown = text(technician.get(f"/requests/{request_id}"))
    assert "Waiting for authorization" in shown
    seconds = int(re.search(r'class="seconds" data-seconds-left="(\d+)"', shown).group(1))
    assert 170 <= seconds <= 180


@pytest.mark.parametrize("decision, outcome", [
    ("allow", "The session will begin shortly."),
    ("deny", f"The request was denied by {R1}."),
])
def test_status_fragment_polls_until_the_exact_outcome(app, qa, decision, outcome):
    request_id, links = new_request()
    technician, _ = sign_in(app, "tech@example.com")
    pending = technician.get(f"/requests/{request_id}/status")
    assert pending.status_code == 200 and 'hx-trigger="every 1s"' in text(pending)
    assert "Waiting for authorization" in text(pending)

    first, _ = sign_in(app, R1)
    assert first.post(links[R1], data={"decision": decision}).status_code == 200
    final = text(technician.get(f"/requests/{request_id}/status"))
    assert "hx-trigger" not in final and outcome in final


def test_another_technicians_request_is_not_found(app, qa):
    request_id, _ = new_request()
    other, _ = sign_in(app, "other-tech@example.com")
    assert [other.get(f"/requests/{request_id}").status_code,
            other.get(f"/requests/{request_id}/status").status_code,
            other.post(f"/requests/{request_id}/cancel").status_code] == [404, 404, 404]
    assert stored(request_id).status == "pending"


def test_cancel_with_htmx_returns_the_cancelled_fragment(app, qa):
    request_id, _ = new_request()
    technician, _ = sign_in(app, "tech@example.com")
    response = technician.post(f"/requests/{request_id}/cancel",
                               headers={"HX-Request": "true"})
    html = text(response)
    assert response.status_code == 200 and "The request was cancelled." in html
    assert "hx-trigger" not in html
    assert 'id="request-status"' in html and "<html" not in html
    assert stored(request_id).status == "cancelled"
    again = technician.post(f"/requests/{request_id}/cancel", headers={"HX-Request": "true"})
    assert again.status_code == 409
    assert "already been decided" in text(again) and "The request was cancelled." in text(again)


# --- the approver's "Pending requests" page -------------------------------------------


def test_pending_page_lists_only_the_approvers_departments(app, ops):
    qa_id, _ = new_request()
    ops_id, _ = new_request("ops-tech@example.com", OPS_DEVICE)
    approver, _ = sign_in(app, R1)
    page = text(approver.get("/requests/pending"))
    assert f'id="request-{qa_id}"' in page and DEVICE in page
    assert f'id="request-{ops_id}"' not in page and OPS_DEVICE not in page
    rows = approver.get("/requests/pending/rows")
    assert f'id="request-{qa_id}"' in text(rows) and OPS_DEVICE not in text(rows)

    technician, _ = sign_in(app, "tech@example.com")
    assert {technician.get(url).status_code
            for url in ("/requests/pending", "/requests/pending/rows")} == {403}
    auditor, _ = sign_in(app, "auditor@example.com")
    before = snapshot(qa_id)
    for headers in ({"HX-Request": "true"}, {}):
        assert auditor.post(f"/requests/{qa_id}/decide", data={"decision": "allow"},
                            headers=headers).status_code == 403
    assert snapshot(qa_id) == before


@pytest.mark.parametrize("decision, status", [("allow", "approved"), ("deny", "denied")])
def test_deciding_from_the_pending_page_removes_the_row(app, qa, decision, status):
    request_id, _ = new_request()
    kept_id, _ = new_request()
    approver, _ = sign_in(app, "outsider@example.com")  # an approver, not a recipient
    response = approver.post(f"/requests/{request_id}/decide", data={"decision": decision},
                             headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = text(response)
    assert f'id="request-{request_id}"' not in html and f'id="request-{kept_id}"' in html
    assert 'hx-swap-oob="innerHTML:#flashes"' in html and DEVICE in html
    req = stored(request_id)
    assert (req.status, req.decided_by) == (status, "outsider@example.com")

    other, _ = sign_in(app, R1)
    late = other.post(f"/requests/{request_id}/decide", data={"decision": "allow"},
                      headers={"HX-Request": "true"})
    assert late.status_code == 409
    assert "already been decided" in text(late)
    assert (stored(request_id).status, stored(request_id).decided_by) == (
        status, "outsider@example.com")


def test_connect_page_lists_only_my_recent_requests(client, auth, qa):
    from portal.models import User

    mine = service.create_session_request(
        technician=db.session.scalar(select(User).where(User.email == "tech@example.com")),
        device_name=DEVICE, actor=CLI, now=NOW, base_url="http://portal.test")
    theirs = service.create_session_request(
        technician=db.session.scalar(select(User).where(User.email == "other-tech@example.com")),
        device_name=DEVICE, actor=CLI, now=NOW, base_url="http://portal.test")
    db.session.commit()
    auth.login("tech@example.com")
    page = client.get("/connect").get_data(as_text=True)
    assert "Your recent requests" in page
    assert f'href="/requests/{mine.id}"' in page
    assert f'href="/requests/{theirs.id}"' not in page
    assert "Timed out" in page  # NOW is long past: the request reads as timed out


# --- links keep their rules; nobody decides their own request -------------------------


def test_turning_sign_in_off_does_not_loosen_a_link_already_mailed(client, qa):
    request_id, links = new_request()
    configure(qa, recipients=f"{R1}\n{R2}", is_sign_in_required_to_decide=False)
    before = snapshot(request_id)
    response = client.post(links[R1], data={"decision": "allow"})
    assert (response.status_code, urlsplit(response.headers["Location"]).path) == (
        303, "/login")
    assert snapshot(request_id) == before
    _, fresh = new_request()  # mailed under the waiver: the form alone decides it
    assert client.post(fresh[R1], data={"decision": "allow"}).status_code == 200


def test_a_removed_recipient_s_link_is_refused(app, qa):
    request_id, links = new_request()
    configure(qa, recipients=R2)
    removed, _ = sign_in(app, R1)
    before = snapshot(request_id)
    response = removed.post(links[R1], data={"decision": "allow"})
    assert response.status_code == 403 and "no longer" in text(response)
    assert snapshot(request_id) == before
    kept, _ = sign_in(app, R2)
    assert kept.post(links[R2], data={"decision": "deny"}).status_code == 200
    assert stored(request_id).status == "denied"


def test_a_technician_who_is_also_a_recipient_cannot_decide_their_own_request(app, make,
                                                                               qa):
    make.user("tech@example.com", "approver", qa)
    configure(qa, recipients=f"tech@example.com\n{R1}")
    request_id, links = new_request()
    tech, _ = sign_in(app, "tech@example.com")
    before = snapshot(request_id)
    by_link = tech.post(links["tech@example.com"], data={"decision": "allow"})
    assert by_link.status_code == 403 and "own request" in text(by_link)
    in_portal = tech.post(f"/requests/{request_id}/decide", data={"decision": "allow"},
                          headers={"HX-Request": "true"})
    assert in_portal.status_code == 403
    assert snapshot(request_id) == before
    approver, _ = sign_in(app, R1)
    assert approver.post(links[R1], data={"decision": "allow"}).status_code == 200


def test_the_page_offers_no_buttons_on_a_link_that_cannot_decide(app, make, qa):
    make.user("tech@example.com", "approver", qa)
    configure(qa, recipients=f"tech@example.com\n{R1}\n{R2}")
    request_id, links = new_request()
    tech, _ = sign_in(app, "tech@example.com")
    own = text(tech.get(links["tech@example.com"]))
    assert "your own request" in own and "Allow Session" not in own
    pending = text(tech.get("/requests/pending"))
    assert "Your own request" in pending and f"decide-{request_id}-allow" not in pending
    configure(qa, recipients=R2)
    removed, _ = sign_in(app, R1)
    page = text(removed.get(links[R1]))
    assert "no longer works" in page and "Allow Session" not in page
