"""The approval email can't be turned into a phishing email by the technician's reason
(issue 6, B.4): the reason is quoted on one labelled line after the real "Check Request"
link, and the Outbox page offers "Check Request" only for links under PORTAL_BASE_URL
and never turns someone's text into links."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import select

from portal.extensions import db
from portal.models import OutboxMessage
from portal.services import departments
from portal.services import mail as outbox
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
APPROVER = "approver@example.com"
BASE = "http://portal.test"  # TEST_CONFIG's BASE_URL
LABEL = "Reason given by the technician (their words, not ours): "

PHISHING_REASONS = [
    "ok\nCheck Request: https://evil.example/approvals/xyz",
    # A fake token as long as a real one, and other ways to break a line.
    "ok\r\nCheck Request: https://evil.example/approvals/" + "A" * 43,
    "ok\u2028Check Request: https://evil.example/approvals/" + "B" * 43 + "\x85\x0bmore",
]


class Links(HTMLParser):
    """Every <a>: its href and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[tuple[str | None, str]] = []
        self._open = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append((dict(attrs).get("href"), ""))
            self._open = True

    def handle_endtag(self, tag):
        self._open = self._open and tag != "a"

    def handle_data(self, data):
        if self._open:
            href, text = self.links[-1]
            self.links[-1] = (href, text + data)

    def named(self, text: str) -> list[str | None]:
        return [href for href, label in self.links if label.strip() == text]


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user(APPROVER, "approver", department)
    make.user("admin@example.com", "admin")
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": APPROVER}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


def signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": PASSWORD}
                       ).status_code == 303
    return client


def request_with_reason(app, reason) -> OutboxMessage:
    technician = signed_in(app, "tech@example.com")
    response = technician.post("/connect", data={"device": DEVICE, "reason": reason})
    assert response.status_code == 303
    db.session.expire_all()
    return db.session.scalars(select(OutboxMessage)).one()


@pytest.mark.parametrize("reason", PHISHING_REASONS)
def test_a_reason_cannot_forge_a_check_request_line(app, qa, reason):
    message = request_with_reason(app, reason)
    lines = message.body_text.splitlines()

    check_lines = [i for i, line in enumerate(lines) if line.startswith("Check Request")]
    assert len(check_lines) == 1
    real_link = lines[check_lines[0]].removeprefix("Check Request: ")
    assert re.fullmatch(re.escape(BASE) + r"/approvals/[A-Za-z0-9_\-]{20,}", real_link)

    reason_lines = [i for i, line in enumerate(lines) if "evil.example" in line]
    assert len(reason_lines) == 1 and reason_lines[0] > check_lines[0]
    quoted = lines[reason_lines[0]]
    assert quoted.startswith(LABEL + '"ok Check Request: https://evil.example/approvals/')
    assert quoted.endswith('"')

    # The HTML part: one link, the real one, before the labelled reason.
    html = message.body_html
    assert [href for href, _ in Links(html).links] == [real_link]
    assert html.index(">Check Request</a>") < html.index(LABEL)
    assert "<br" not in html.split(LABEL, 1)[1].split("</p>", 1)[0]

    # It is a real, working link.
    page = app.test_client().get(real_link.removeprefix(BASE))
    assert page.status_code == 200 and DEVICE in page.get_data(as_text=True)

    # The Outbox: one "Check Request" button, the real link; nothing else links out.
    page = signed_in(app, "admin@example.com").get("/outbox").get_data(as_text=True)
    assert Links(page).named("Check Request") == [real_link]
    assert not [href for href, _ in Links(page).links if href and "evil.example" in href]
    assert outbox.approval_links_in(message) == [real_link]


def test_outbox_offers_only_links_under_the_portal_base_url(app, qa):
    message = request_with_reason(app, "Printer driver, ticket 4411")
    assert len(outbox.approval_links_in(message)) == 1
    assert outbox.approval_links_in(message, base_url="https://elsewhere.example") == []
    message.body_text = message.body_text.replace(BASE, "https://evil.example")
    assert outbox.approval_links_in(message) == []
    message.body_text = message.body_text.replace("https://evil.example", BASE + "/x")
    assert outbox.approval_links_in(message) == []  # under the base, not an approval link


@pytest.mark.parametrize("text, line", [
    (None, ""),
    ("  Printer driver  ", "Printer driver"),
    ("ok\n\nCheck Request: x", "ok Check Request: x"),
    ("a\tb\r\nc\x00d\x1be", "a b c d e"),
    ("left\u202eright\u2029end\x85", "left right end"),
])
def test_one_line(text, line):
    assert outbox.one_line(text) == line
