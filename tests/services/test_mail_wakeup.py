"""Mail goes out as soon as it is queued: the scheduler's delivery is woken by the
notifier's "outbox" channel when a commit queues a message, not by its periodic sweep
(made an hour long here), over the real SMTP path (a local aiosmtpd server)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from portal import jobs
from portal.extensions import db
from portal.models import OutboxMessage
from portal.services import accounts, departments
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
R1, R2 = "first-approver@example.com", "second-approver@example.com"


@pytest.fixture
def app_config(smtp_config):
    return smtp_config


@pytest.fixture
def tech_token(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    tech = make.user("tech@example.com", "technician", department)
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True,
              "email_recipients": f"{R1}\n{R2}"}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=datetime.now(timezone.utc))
    token = accounts.create_user_token(user=tech, actor=CLI, now=datetime.now(timezone.utc))
    db.session.commit()
    return token


@pytest.fixture
def scheduler(app, monkeypatch):
    monkeypatch.setattr(jobs, "OUTBOX_INTERVAL_SECONDS", 3600)  # no tick will help
    scheduler = jobs.build_scheduler(app)
    scheduler.start()
    time.sleep(0.5)  # the start-up sweep has run (and found nothing)
    yield scheduler
    scheduler.shutdown(wait=True)


def _wait_until(predicate, timeout: float) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_queued_mail_is_delivered_promptly_after_commit(client, smtp, tech_token,
                                                        scheduler):
    for round_ in range(3):
        committed = time.monotonic()
        response = client.post("/api/v1/session-requests", json={"device": DEVICE},
                               headers={"Authorization": f"Bearer {tech_token}"})
        assert response.status_code == 201
        assert response.get_json()["status"] == "pending"
        expected = round_ + 1
        assert _wait_until(lambda: len(smtp.handler.received_by(R1)) == expected
                           and len(smtp.handler.received_by(R2)) == expected, 5)
        assert time.monotonic() - committed < 1.5  # the sweep is an hour away
    assert _wait_until(lambda: _statuses() == ["sent"] * 6, 5)  # each recorded once
    assert len(smtp.handler.messages) == 6


def _statuses() -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(OutboxMessage.status)))

