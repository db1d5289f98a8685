"""`portal-agent` as a real process with number matching and "I didn't expect this": it
shows the reason, asks for the number the technician sees, and can report a request."""
from __future__ import annotations

from agent_process import portal_url  # noqa: F401 (a fixture)
from sqlalchemy import select

from portal.extensions import db
from portal.models import OutboxMessage
from portal.services import departments
from portal.services.actors import CLI

from test_portal_agent import Site, reload, run_agent, site, utcnow  # noqa: F401


def matching_on(site):
    values = departments.settings_values(site.department.settings) | {
        "is_number_matching_required": True}
    departments.update_settings(department=site.department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()


def test_accepting_asks_for_the_number_and_the_right_one_approves(portal_url, site):
    matching_on(site)
    request_id = site.request()
    req = reload(request_id)
    choices = sorted(int(c) for c in req.match_choices.split(","))

    result = run_agent(portal_url, site.device_token, "--once",
                       input=f"y\n100\n{req.match_number}\n")

    assert result.returncode == 0, result.stderr
    assert "Reason:     printer queue stuck" in result.stdout
    assert "Which number does the technician see? " + " / ".join(map(str, choices)) \
        in result.stdout
    assert "Please type one of:" in result.stdout  # 100 is not among them
    assert "accepted" in result.stdout
    assert reload(request_id).status == "approved"


def test_a_wrong_number_denies(portal_url, site, client):
    matching_on(site)
    request_id = site.request()
    req = reload(request_id)
    wrong = next(int(c) for c in req.match_choices.split(",") if int(c) != req.match_number)

    result = run_agent(portal_url, site.device_token, "--once", input=f"yes\n{wrong}\n")

    assert result.returncode == 0, result.stderr
    assert "not the number the technician sees" in result.stdout
    view = site.technician_view(client, request_id)
    assert view["status"] == "denied" and "number did not match" in view["decision_reason"]


def test_auto_accept_does_not_answer_a_matching_prompt(portal_url, site):
    matching_on(site)
    request_id = site.request()
    result = run_agent(portal_url, site.device_token, "--once", "--auto", "accept")
    assert result.returncode == 0, result.stderr
    assert "a person has to pick the number" in result.stdout
    assert reload(request_id).status == "pending"


def test_r_reports_the_request_and_the_admins_are_mailed(portal_url, site, client, make):
    make.user("head@example.com", "department_admin", site.department)
    request_id = site.request()

    result = run_agent(portal_url, site.device_token, "--once", input="r\n")

    assert result.returncode == 0, result.stderr
    assert "You reported the request." in result.stdout
    assert "The request was reported as unexpected by the end user." in result.stdout
    view = site.technician_view(client, request_id)
    assert (view["status"], view["checks"]["end_user"]) == ("denied", "declined")
    subjects = list(db.session.scalars(select(OutboxMessage.subject).where(
        OutboxMessage.recipient == "head@example.com")))
    db.session.commit()
    assert len(subjects) == 1 and site.device.name in subjects[0]
