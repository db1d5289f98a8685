"""Departments: settings saved with one audit event per changed field; exclusions of a
department's own devices and groups, with "Excluded by"."""
from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import func, select

from portal.domain.settings import DEFAULTS, LABELS
from portal.extensions import db
from portal.models import AuditEvent, DepartmentSettings, Exclusion
from portal.services import departments
from portal.services.actors import Actor
from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError

LATER = NOW + timedelta(minutes=5)


@pytest.fixture
def qa(make):
    return make.department("QA Team")


@pytest.fixture
def admin(make, qa):
    return Actor.for_user(make.user("qa-admin@example.com", "department_admin", qa),
                          "192.0.2.20")


def events(action):
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def current(department):
    db.session.expire_all()
    return departments.settings_values(db.session.get(DepartmentSettings, department.id))


def save(department, actor, **changes):
    values = departments.settings_values(department.settings) | changes
    result = departments.update_settings(department=department, values=values, actor=actor,
                                         now=LATER)
    db.session.commit()
    return result


# --- departments -----------------------------------------------------------------------


def test_new_department_has_design_defaults_and_is_audited(qa):
    assert current(qa) == DEFAULTS
    (event,) = events("department.created")
    assert (event.actor, event.department_id, event.details) == (
        "cli", qa.id, {"name": "QA Team"})


def test_department_names_are_unique_and_cleaned(make, qa):
    with pytest.raises(ConflictError):
        departments.create_department(name="  QA   Team ", actor=Actor("cli"), now=NOW)
    db.session.rollback()
    assert count(type(qa)) == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "QA\x00Team"])
def test_bad_department_names_are_rejected(app, name):
    with pytest.raises(InvalidInputError) as caught:
        departments.create_department(name=name, actor=Actor("cli"), now=NOW)
    assert "name" in caught.value.field_errors


# --- settings --------------------------------------------------------------------------


def test_saving_settings_writes_one_event_per_changed_field(qa, admin):
    changes = save(qa, admin, is_confirmation_shown=True, confirmation_timeout_seconds=90,
                   is_email_authorization_required=True,
                   email_recipients="Boss@Example.com, deputy@example.com")
    assert [field for field, _, _ in changes] == [
        "is_confirmation_shown", "confirmation_timeout_seconds",
        "is_email_authorization_required", "email_recipients"]
    saved = events("settings.changed")
    assert [e.details for e in saved] == [
        {"field": "is_confirmation_shown", "label": LABELS["is_confirmation_shown"],
         "old": False, "new": True},
        {"field": "confirmation_timeout_seconds", "label": "Timeout (in seconds)",
         "old": 60, "new": 90},
        {"field": "is_email_authorization_required",
         "label": "Require email authorization for incoming connections",
         "old": False, "new": True},
        {"field": "email_recipients", "label": "Recipient(s)",
         "old": "", "new": "Boss@example.com\ndeputy@example.com"},
    ]
    for event in saved:
        assert (event.actor, event.actor_user_id, event.client_ip, event.department_id,
                event.target_type, event.target_id, event.occurred_at) == (
            "qa-admin@example.com", admin.user_id, "192.0.2.20", qa.id,
            "department", str(qa.id), LATER)
    stored = current(qa)
    assert stored["confirmation_timeout_seconds"] == 90
    assert stored["email_recipients"] == "Boss@example.com\ndeputy@example.com"
    assert db.session.get(DepartmentSettings, qa.id).recipients == [
        "Boss@example.com", "deputy@example.com"]
    assert db.session.get(DepartmentSettings, qa.id).updated_at == LATER


def test_saving_unchanged_settings_writes_nothing(qa, admin):
    before = count(AuditEvent)
    assert save(qa, admin) == []
    assert count(AuditEvent) == before


def test_retyping_the_same_recipients_differently_is_no_change(qa, admin):
    save(qa, admin, email_recipients="a@example.com\nb@example.com")
    assert save(qa, admin, email_recipients="a@example.com; b@example.com, A@example.com") \
        == []
    assert len(events("settings.changed")) == 1


def test_message_is_saved_stripped_and_old_value_is_audited(qa, admin):
    save(qa, admin, confirmation_message="  May we connect?  ")
    (event,) = events("settings.changed")
    assert event.details["old"] == DEFAULTS["confirmation_message"]
    assert event.details["new"] == "May we connect?"


def test_invalid_settings_raise_field_messages_and_change_nothing(qa, admin):
    before_events = count(AuditEvent)
    values = departments.settings_values(qa.settings) | {
        "confirmation_timeout_seconds": 601,
        "email_authorization_timeout_seconds": 29,
        "confirmation_message": "m" * 501,
        "email_recipients": "ok@example.com, nope",
        "is_otp_allowed": True,  # valid, but must not be saved with the rest
    }
    with pytest.raises(InvalidInputError) as caught:
        departments.update_settings(department=qa, values=values, actor=admin, now=LATER)
    assert caught.value.field_errors == {
        "confirmation_timeout_seconds": ["Enter a whole number from 10 to 600."],
        "email_authorization_timeout_seconds": ["Enter a whole number from 30 to 3600."],
        "confirmation_message": ["Keep the message to 500 characters or fewer (it has 501)."],
        "email_recipients": ["“nope” is not a valid email address."],
    }
    db.session.commit()  # even a commit after the error saves nothing
    assert current(qa) == DEFAULTS
    assert count(AuditEvent) == before_events


def test_email_authorization_needs_a_recipient(qa, admin):
    with pytest.raises(InvalidInputError) as caught:
        save(qa, admin, is_email_authorization_required=True, email_recipients="")
    assert list(caught.value.field_errors) == ["email_recipients"]
    db.session.rollback()
    assert current(qa)["is_email_authorization_required"] is False


def test_settings_of_one_department_leave_the_other_alone(make, qa, admin):
    sales = make.department("Sales Team")
    save(qa, admin, otp_expiration_minutes=45)
    assert current(sales) == DEFAULTS


# --- exclusions ------------------------------------------------------------------------


@pytest.fixture
def testers(make, qa):
    return make.group(qa, "Testers")


@pytest.fixture
def pc(make, qa, testers):
    return make.device(qa, "WIN-0859G9I39J0", group=testers)


def exclude(department, target, actor):
    exclusion = departments.add_exclusion(department=department, target=target, actor=actor,
                                          now=LATER)
    db.session.commit()
    return exclusion


def test_excluding_a_device_records_who_and_when(qa, admin, pc):
    exclusion = exclude(qa, f"device:{pc.id}", admin)
    assert (exclusion.device_id, exclusion.group_id, exclusion.department_id) == (
        pc.id, None, qa.id)
    assert (exclusion.excluded_by_email, exclusion.excluded_by_id, exclusion.created_at) == (
        "qa-admin@example.com", admin.user_id, LATER)
    (event,) = events("exclusion.added")
    assert (event.target_type, event.target_id, event.details["name"], event.actor) == (
        "device", str(pc.id), "WIN-0859G9I39J0", "qa-admin@example.com")
    assert [e.device.name for e in departments.list_exclusions(qa)] == ["WIN-0859G9I39J0"]


def test_excluding_a_group(qa, admin, testers):
    exclusion = exclude(qa, f"group:{testers.id}", admin)
    assert (exclusion.group_id, exclusion.device_id) == (testers.id, None)
    assert events("exclusion.added")[0].target_type == "group"
    assert [e.group.name for e in departments.list_exclusions(qa)] == ["Testers"]


def test_excluded_things_are_no_longer_offered(qa, admin, pc, testers, make):
    other = make.device(qa, "WIN-OTHER", group=None)
    assert departments.exclusion_candidates(qa) == ([pc, other], [testers])
    exclude(qa, f"device:{pc.id}", admin)
    exclude(qa, f"group:{testers.id}", admin)
    assert departments.exclusion_candidates(qa) == ([other], [])


@pytest.mark.parametrize("kind", ["device", "group"])
def test_excluding_twice_is_rejected(qa, admin, pc, testers, kind):
    target = f"device:{pc.id}" if kind == "device" else f"group:{testers.id}"
    exclude(qa, target, admin)
    with pytest.raises(InvalidInputError) as caught:
        exclude(qa, target, admin)
    name = pc.name if kind == "device" else testers.name
    assert caught.value.field_errors == {"target": [f"“{name}” is already excluded."]}
    db.session.rollback()
    assert count(Exclusion) == 1


@pytest.mark.parametrize("kind", ["device", "group"])
def test_another_departments_device_or_group_is_rejected(make, qa, admin, kind):
    sales = make.department("Sales Team")
    group = make.group(sales, "Laptops")
    device = make.device(sales, "WIN-SALES-01", group=group)
    target = f"device:{device.id}" if kind == "device" else f"group:{group.id}"
    with pytest.raises(InvalidInputError) as caught:
        exclude(qa, target, admin)
    assert caught.value.field_errors == {
        "target": ["Choose a device or a group of this department."]}
    db.session.rollback()
    assert count(Exclusion) == 0


@pytest.mark.parametrize("target", ["", "device", "device:", "device:abc", "user:1",
                                    "device:999999", "group:-1", "device:1 OR 1=1"])
def test_malformed_or_unknown_targets_are_rejected(qa, admin, pc, target):
    with pytest.raises(InvalidInputError):
        exclude(qa, target, admin)
    db.session.rollback()
    assert count(Exclusion) == 0


def test_removing_an_exclusion_is_audited(qa, admin, pc):
    exclusion = exclude(qa, f"device:{pc.id}", admin)
    exclusion_id = exclusion.id
    name = departments.remove_exclusion(department=qa, exclusion_id=exclusion_id,
                                        actor=admin, now=LATER)
    db.session.commit()
    assert name == "WIN-0859G9I39J0"
    assert count(Exclusion) == 0
    (event,) = events("exclusion.removed")
    assert (event.target_type, event.target_id, event.actor, event.details) == (
        "device", str(pc.id), "qa-admin@example.com",
        {"name": "WIN-0859G9I39J0", "exclusion_id": exclusion_id})
    with pytest.raises(NotFoundError):
        departments.remove_exclusion(department=qa, exclusion_id=exclusion_id, actor=admin,
                                     now=LATER)


def test_an_exclusion_cannot_be_removed_through_another_department(make, qa, admin, pc):
    exclusion = exclude(qa, f"device:{pc.id}", admin)
    sales = make.department("Sales Team")
    with pytest.raises(NotFoundError):
        departments.remove_exclusion(department=sales, exclusion_id=exclusion.id,
                                     actor=admin, now=LATER)
    db.session.rollback()
    assert count(Exclusion) == 1
