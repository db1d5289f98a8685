"""Mail delivery over real SMTP (a local aiosmtpd server): the "Check Request" email, links
that GET/HEAD can't spend, first recipient wins, retries with backoff when SMTP is down or
answers 4xx, no retry after 5xx, no mail once the request is over, and the dev Outbox
when no mail server is configured (security.md 1, 8, 22-24)."""
from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import event, exc, func, select, text

from portal.extensions import db
from portal.clock import SystemClock
from portal.jobs import deliver_mail, deliver_outbox
from portal.models import ApprovalLink, AuditEvent, OutboxMessage, SessionRequest
from portal.services import accounts, delivery, departments
from portal.services import mail as outbox
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
R1, R2 = "first-approver@example.com", "second-approver@example.com"
SENDER = "Session Gate <gate@portal.test>"

utcnow = SystemClock()


@pytest.fixture
def mail_settings(smtp_config):
    return {**smtp_config, "MAIL_DEFAULT_SENDER": SENDER}


@pytest.fixture
def app_config(mail_settings):
    """conftest's app, plus the mail settings (read by Flask-Mail at start-up)."""
    return mail_settings


# --- data -------------------------------------------------------------------------------


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user(R1, "approver", department)
    make.user(R2, "approver", department)
    make.user("admin@example.com", "admin")
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True,
              "email_recipients": f"{R1}\n{R2}"}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


@pytest.fixture
def tech_token(qa):
    token = accounts.create_user_token(user=accounts.find_user("tech@example.com"),
                                       actor=CLI, now=NOW)
    db.session.commit()
    return token


@pytest.fixture
def request_id(client, tech_token):
    """A pending request created the way the technician console does it."""
    response = client.post("/api/v1/session-requests",
                           json={"device": DEVICE, "run_as": "CORP\\jsmith",
                                 "reason": "Printer driver"},
                           headers={"Authorization": f"Bearer {tech_token}"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["status"] == "pending"
    return response.get_json()["id"]


def fresh_rows(model, *where):
    db.session.expire_all()
    return list(db.session.scalars(select(model).where(*where).order_by(model.id)))


def outbox_rows(request_id):
    return fresh_rows(OutboxMessage, OutboxMessage.request_id == request_id)


def snapshot(request_id):
    """Everything a decision would touch, as plain values."""
    db.session.expire_all()
    rows = {"request": db.session.execute(select(SessionRequest.__table__).where(
        SessionRequest.id == request_id)).one()._asdict()}
    rows["links"] = [r._asdict() for r in db.session.execute(
        select(ApprovalLink.__table__).order_by(ApprovalLink.id))]
    rows["decisions"] = count_events("request.decided")
    return rows


def count_events(action, outcome=None):
    query = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    return db.session.scalar(query)


def deliver_later(app, seconds):
    """A delivery run `seconds` from now (the job itself, at a later clock)."""
    with app.app_context():
        report = deliver_outbox(utcnow() + timedelta(seconds=seconds))
        db.session.commit()
        db.session.remove()
    return report


def link_path(message) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    line = next(l for l in text.splitlines() if l.startswith("Check Request: "))
    url = line.removeprefix("Check Request: ").strip()
    assert url.startswith("http://portal.test/approvals/")
    return url.removeprefix("http://portal.test")


def sign_in(app, email):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303
    return client


# --- the message on the wire -----------------------------------------------------------


@pytest.mark.parametrize("sender", ["Session Gate <gate@portal.test>",
                                    ("Sitzungstor Zürich", "gate@portal.test")])
def test_the_wire_message_encodes_names_and_never_carries_a_second_header(app, sender):
    data = delivery.mime_bytes(
        sender=sender, recipient="approver@example.com",
        subject="Remote session request for PC-Zürich\r\nBcc: evil@example.com",
        body_text="Check Request: http://portal.test/approvals/x\n",
        body_html="<p>Zürich</p>", now=NOW)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    email = message_from_bytes(data, policy=policy.default)
    assert email["Subject"] == "Remote session request for PC-Zürich Bcc: evil@example.com"
    assert email["Bcc"] is None and email["To"] == "approver@example.com"
    assert email["From"].addresses[0].addr_spec == "gate@portal.test"
    if isinstance(sender, tuple):
        assert email["From"].addresses[0].display_name == "Sitzungstor Zürich"
    assert email["Message-ID"].endswith("@portal.test>")
    assert email["Date"].datetime == NOW.replace(microsecond=0)
    assert email.get_content_type() == "multipart/alternative"
    assert email.get_body(preferencelist=("html",)).get_content() == "<p>Zürich</p>"


@pytest.mark.parametrize("body_text", [
    "Check Request: http://portal.test/approvals/x\n.a line that starts with a dot\n",
    "Zürich — naïve café\r\nsecond line\n",
    "x" * 2000 + "\n",  # longer than a line may be: base64
])
def test_each_part_arrives_as_written(app, body_text):
    data = delivery.mime_bytes(sender="gate@portal.test", recipient="approver@example.com",
                               subject="Remote session request for PC-1", body_text=body_text,
                               body_html="<p>Grüße</p>", now=NOW)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    email = message_from_bytes(data, policy=policy.default)
    expected = body_text.replace("\r\n", "\n")
    plain = email.get_body(preferencelist=("plain",)).get_content()
    assert plain.replace("\r\n", "\n") == expected  # CRLF on the wire, as RFC 2045 has it
    assert email.get_body(preferencelist=("html",)).get_content().rstrip("\n") == \
        "<p>Grüße</p>"
    boundary = email.get_boundary()
    assert len(boundary) >= 32 and len(email.get_payload()) == 2


# --- the whole flow ---------------------------------------------------------------------


def test_each_recipient_gets_one_email_and_the_first_allow_wins(app, client, smtp,
                                                                request_id):
    report = deliver_mail(app)
    assert sorted(report.sent) == [m.id for m in outbox_rows(request_id)]
    assert [len(smtp.handler.received_by(r)) for r in (R1, R2)] == [1, 1]

    email = smtp.handler.received_by(R1)[0]
    assert email["Subject"] == f"Remote session request for {DEVICE}"
    assert email["From"] == SENDER and email["To"] == R1
    assert email.is_multipart()
    parts = [part.get_content_type() for part in email.walk()]
    assert "multipart/alternative" in parts
    assert parts.count("text/plain") == 1 and parts.count("text/html") == 1
    text = email.get_body(preferencelist=("plain",)).get_content()
    html = email.get_body(preferencelist=("html",)).get_content()
    assert "The link is valid for 3 minutes" in text
    assert "The link is valid for 3 minutes" in html
    assert "tech@example.com" in text and "CORP\\jsmith" in text
    path = link_path(email)
    assert f'href="http://portal.test{path}"' in html and ">Check Request</a>" in html
    assert link_path(smtp.handler.received_by(R2)[0]) != path

    # A mail scanner (or the recipient) opening the link decides nothing: HEAD writes
    # nothing at all, the first GET only records that the link was opened, later GETs
    # write nothing.
    before = snapshot(request_id)
    assert client.head(path).status_code == 200
    assert snapshot(request_id) == before
    page = client.get(path)
    assert page.status_code == 200 and "Allow Session" in page.get_data(as_text=True)
    opened = snapshot(request_id)
    assert [link["first_opened_at"] is not None for link in opened["links"]] == [True, False]
    assert [{**link, "first_opened_at": None} for link in opened["links"]] == before["links"]
    assert opened["request"] == before["request"] and opened["decisions"] == 0
    assert client.get(path).status_code == 200
    assert snapshot(request_id) == opened
    assert before["request"]["status"] == "pending"
    assert before["request"]["decided_by"] is None and before["decisions"] == 0

    first = sign_in(app, R1)
    allowed = first.post(path, data={"decision": "allow"})
    assert allowed.status_code == 200
    assert f"Allowed by {R1}." in allowed.get_data(as_text=True)
    req = db.session.get(SessionRequest, request_id)
    assert (req.status, req.decided_by, req.email_check) == ("approved", R1, "allowed")

    second = sign_in(app, R2)
    late = second.post(link_path(smtp.handler.received_by(R2)[0]), data={"decision": "deny"})
    assert late.status_code == 409
    body = late.get_data(as_text=True)
    assert "already been decided" in body and f"Allowed by {R1}." in body
    req = fresh_rows(SessionRequest, SessionRequest.id == request_id)[0]
    assert (req.status, req.decided_by) == ("approved", R1)
    assert count_events("request.decided") == 1

    # The outbox keeps no working copy of the links' secrets.
    for message in outbox_rows(request_id):
        assert message.status == "sent" and message.attempts == 1
        assert "/approvals/(redacted)" in message.body_text
        assert outbox.approval_links_in(message) == []
        assert path not in message.body_text and path not in message.body_html
    assert count_events("email.sent") == 2


def test_smtp_down_then_back_delivers_each_email_exactly_once(app, smtp, request_id):
    smtp.stop()
    before = utcnow()
    report = deliver_mail(app)
    assert len(report.retried) == 2 and not report.sent
    # The request and its mail were committed before delivery was tried.
    assert fresh_rows(SessionRequest, SessionRequest.id == request_id)[0].status == "pending"
    for message in outbox_rows(request_id):
        assert (message.status, message.attempts) == ("pending", 1)
        assert "ConnectionRefusedError" in message.last_error
        assert message.next_attempt_at > utcnow()
        assert message.next_attempt_at > before + timedelta(seconds=4)  # a 5 s backoff
        assert outbox.approval_links_in(message)  # still deliverable

    smtp.start()
    assert deliver_mail(app).sent == []  # not due yet: the backoff holds
    assert smtp.handler.messages == []

    report = deliver_later(app, 6)
    assert len(report.sent) == 2
    assert deliver_later(app, 60).sent == []  # nothing is sent twice
    assert [len(smtp.handler.received_by(r)) for r in (R1, R2)] == [1, 1]
    assert {(m.status, m.attempts, m.last_error) for m in outbox_rows(request_id)} == {
        ("sent", 2, None)}


def more_requests(client, tech_token, count):
    for n in range(count):
        response = client.post("/api/v1/session-requests",
                               json={"device": DEVICE, "reason": f"Batch {n}"},
                               headers={"Authorization": f"Bearer {tech_token}"})
        assert response.status_code == 201, response.get_json()


def test_a_batch_writes_its_outcomes_together(app, client, smtp, tech_token, monkeypatch):
    """Six emails: the claim and the outcomes are two commits, the outcomes one UPDATE
    and one audit INSERT (on SQLite each commit waits for the one write lock, so a commit
    per email left the mail behind while requests were being created)."""
    more_requests(client, tech_token, 3)
    monkeypatch.setattr(delivery, "OUTCOME_SECONDS", 3600)  # however slow the machine
    commits, outcome_writes = [], []

    def on_commit(connection):
        commits.append(1)

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith(("UPDATE outbox_messages", "INSERT INTO audit_events")):
            outcome_writes.append((statement.split(" (")[0].split(" SET")[0],
                                   len(parameters) if executemany else 1))

    with app.app_context():
        engine = db.engine
        event.listen(engine, "commit", on_commit)
        event.listen(engine, "before_cursor_execute", on_execute)
        try:
            report = deliver_outbox(utcnow())
        finally:
            event.remove(engine, "commit", on_commit)
            event.remove(engine, "before_cursor_execute", on_execute)
        db.session.remove()
    assert len(report.sent) == 6
    assert len(smtp.handler.messages) == 6
    assert len(commits) == 2
    # The claim's UPDATE, then one UPDATE and one INSERT for all six outcomes.
    assert outcome_writes == [("UPDATE outbox_messages", 1),
                              ("UPDATE outbox_messages", 6),
                              ("INSERT INTO audit_events", 6)]
    assert {m.status for m in fresh_rows(OutboxMessage)} == {"sent"}
    assert count_events("email.sent") == 6


def test_a_batch_delivers_over_one_reused_smtp_connection(app, client, smtp, tech_token):
    """Issue 8, point 5: six emails (three requests, two recipients each) in one batch
    go over one SMTP connection, as the server counts the connections it accepts."""
    more_requests(client, tech_token, 3)
    before = smtp.connections
    with app.app_context():
        report = deliver_outbox(utcnow())
        db.session.remove()
    assert len(report.sent) == 6 and not (report.retried or report.failed)
    assert [len(smtp.handler.received_by(r)) for r in (R1, R2)] == [3, 3]
    assert smtp.connections - before == 1
    assert len(set(smtp.handler.peers)) == 1  # every message came over that connection
    assert {m.status for m in fresh_rows(OutboxMessage)} == {"sent"}


def test_outcomes_are_committed_at_least_every_outcome_seconds(app, client, smtp,
                                                               tech_token, monkeypatch):
    """How much a crash can make us send again is bounded: once OUTCOME_SECONDS have
    passed, what was sent is committed before the next message goes (seen here from
    another connection, as a scheduler starting after a crash would see it)."""
    more_requests(client, tech_token, 2)
    monkeypatch.setattr(delivery, "OUTCOME_SECONDS", 0.0)
    committed_before_each_send = []
    real_send = delivery.send

    def observed_send(connection, message, *args):
        with db.engine.connect() as other:
            committed_before_each_send.append(other.scalar(
                select(func.count()).select_from(OutboxMessage)
                .where(OutboxMessage.status == "sent")))
        real_send(connection, message, *args)

    monkeypatch.setattr(delivery, "send", observed_send)
    with app.app_context():
        report = deliver_outbox(utcnow())
        db.session.remove()
    assert len(report.sent) == 4
    assert committed_before_each_send == [0, 1, 2, 3]


def outgoing(message_id: int) -> delivery.Outgoing:
    return delivery.Outgoing(
        id=message_id, request_id=None, otp_request_id=None, otp_id=None,
        department_id=None, recipient="a@example.com", subject="s", body_text="t",
        body_html="h", attempts=0, is_over=False)


def test_outcomes_are_written_in_id_order(app):
    """Row locks in id order, as a cancellation takes them: a batch's write and a
    decision cancelling some of the same mail can't deadlock on PostgreSQL."""
    outcomes = delivery.Outcomes()
    outcomes.record(outgoing(3), status="sent", sent_at=NOW)
    outcomes.record(outgoing(1), status="cancelled")
    outcomes.record(outgoing(4), status="cancelled")
    outcomes.record(outgoing(2), status="sent", sent_at=NOW)
    updated = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE outbox_messages"):
            rows = parameters if executemany else [parameters]
            updated.append([row[-1] if isinstance(row, (tuple, list)) else row["message_id"]
                            for row in rows])

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        outcomes.write()
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
    db.session.rollback()
    assert sum(updated, []) == [1, 2, 3, 4]
    assert len(updated) == 3  # runs of one kind: [1] cancelled, [2, 3] sent, [4] cancelled


class Shutdown(BaseException):
    """What stops a scheduler in the middle of a batch (as SystemExit would)."""


def test_a_batch_stopped_midway_records_what_it_sent(app, client, smtp, tech_token,
                                                      monkeypatch):
    more_requests(client, tech_token, 2)
    monkeypatch.setattr(delivery, "OUTCOME_SECONDS", 3600)
    real_send, sends = delivery.send, []

    def send_two_then_stop(*args):
        if len(sends) == 2:
            raise Shutdown()
        sends.append(1)
        real_send(*args)

    monkeypatch.setattr(delivery, "send", send_two_then_stop)
    with app.app_context():
        with pytest.raises(Shutdown):
            deliver_outbox(utcnow())
        db.session.remove()
    assert len(smtp.handler.messages) == 2
    assert [m.status for m in fresh_rows(OutboxMessage)] == ["sent", "sent", "sending",
                                                             "sending"]
    assert count_events("email.sent") == 2


def test_outcomes_whose_write_failed_are_written_again_in_a_new_transaction(
        app, client, smtp, tech_token, monkeypatch):
    """The first write fails after its statements ran (the transaction is then aborted on
    PostgreSQL): the job rolls back and writes the outcomes again before it gives up."""
    more_requests(client, tech_token, 2)
    monkeypatch.setattr(delivery, "OUTCOME_SECONDS", 0.0)  # a write after the first send
    real_write, writes = delivery.Outcomes.write, []

    def write_failing_once(outcomes):
        writes.append(len(outcomes))
        real_write(outcomes)
        if len(writes) == 1:
            db.session.execute(text("SELECT * FROM no_such_table"))

    monkeypatch.setattr(delivery.Outcomes, "write", write_failing_once)
    with app.app_context():
        with pytest.raises(exc.DBAPIError):
            deliver_outbox(utcnow())
        db.session.remove()
    assert writes == [1, 1]
    assert len(smtp.handler.messages) == 1
    assert [m.status for m in fresh_rows(OutboxMessage)] == ["sent", "sending", "sending",
                                                             "sending"]
    assert count_events("email.sent") == 1


def test_permanent_refusal_fails_without_retry_and_shows_on_the_outbox(app, smtp,
                                                                       request_id):
    smtp.handler.mode = "550"
    report = deliver_mail(app)
    assert len(report.failed) == 2 and not report.sent and not report.retried
    attempts = smtp.handler.rcpt_attempts
    assert attempts == 2
    for message in outbox_rows(request_id):
        assert message.status == "failed" and "550" in message.last_error
        assert outbox.approval_links_in(message) == []  # failed mail keeps no secret
    assert count_events("email.failed", outcome="failure") == 2

    smtp.handler.mode = "accept"
    assert deliver_later(app, 3600).sent == []  # never retried
    assert smtp.handler.rcpt_attempts == attempts and smtp.handler.messages == []

    req = fresh_rows(SessionRequest, SessionRequest.id == request_id)[0]
    assert (req.status, req.decided_by, req.email_check) == ("pending", None, "pending")
    assert count_events("request.decided") == 0

    admin = sign_in(app, "admin@example.com")
    page = admin.get("/outbox").get_data(as_text=True)
    assert page.count("mail-failed") == 2
    assert "550" in page and "5.1.1 Mailbox unavailable" in page
    assert "Check Request</a>" not in page


def test_temporary_refusal_is_retried_later(app, smtp, request_id):
    smtp.handler.mode = "451"
    report = deliver_mail(app)
    assert len(report.retried) == 2 and not report.failed
    for message in outbox_rows(request_id):
        assert (message.status, message.attempts) == ("pending", 1)
        assert "451" in message.last_error
    smtp.handler.mode = "accept"
    assert len(deliver_later(app, 6).sent) == 2
    assert [len(smtp.handler.received_by(r)) for r in (R1, R2)] == [1, 1]


@pytest.mark.parametrize("end", ["cancel", "allow"])
def test_retries_stop_once_the_request_is_decided_or_cancelled(app, client, smtp,
                                                               tech_token, request_id, end):
    smtp.stop()
    assert len(deliver_mail(app).retried) == 2
    if end == "cancel":
        response = client.post(f"/api/v1/session-requests/{request_id}/cancel",
                               headers={"Authorization": f"Bearer {tech_token}"})
        assert response.status_code == 200
    else:
        approver = sign_in(app, R1)
        assert approver.post(f"/requests/{request_id}/decide",
                             data={"decision": "allow"}).status_code == 303
    smtp.start()
    report = deliver_later(app, 60)
    assert report.sent == [] and smtp.handler.messages == []
    for message in outbox_rows(request_id):
        assert message.status == "cancelled"
        assert outbox.approval_links_in(message) == []


def test_mail_due_after_the_deadline_is_cancelled_by_the_job(app, smtp, request_id):
    smtp.stop()
    assert len(deliver_mail(app).retried) == 2
    smtp.start()
    report = deliver_later(app, 181)  # past expires_at; no expiry sweep has run
    assert len(report.cancelled) == 2 and report.sent == []
    assert smtp.handler.messages == []
    assert {m.status for m in outbox_rows(request_id)} == {"cancelled"}


@pytest.mark.parametrize("mail_settings", [{}])  # no MAIL_SERVER: the dev Outbox
def test_without_a_mail_server_mail_waits_in_the_outbox_with_working_links(
        app, mail_settings, request_id):
    assert not app.config.get("MAIL_SERVER")
    report = deliver_mail(app)
    assert (report.sent, report.retried, report.failed) == ([], [], [])
    messages = outbox_rows(request_id)
    assert [(m.status, m.attempts) for m in messages] == [("pending", 0), ("pending", 0)]

    technician = sign_in(app, "tech@example.com")
    assert technician.get("/outbox").status_code == 403

    admin = sign_in(app, "admin@example.com")
    page = admin.get("/outbox")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "No mail server is configured" in html
    urls = [outbox.approval_links_in(m)[0] for m in messages]
    for url in urls:
        assert f'<a class="button primary" href="{url}">Check Request</a>' in html
    opened = admin.get(urls[0].removeprefix("http://portal.test"))
    assert opened.status_code == 200
    assert DEVICE in opened.get_data(as_text=True)
