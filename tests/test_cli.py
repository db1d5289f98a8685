"""The operator's commands (design.md, "Configuration and commands") and the demo data."""
from __future__ import annotations

import re

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import func, select, text

from portal import demo
from portal.extensions import db
from portal.models import AuditEvent, Department, Device, DeviceGroup, Exclusion, Membership, User
from portal.services import accounts, crypto, departments
from portal.services.audit import seal_pending
from portal.services.actors import CLI

# --- departments -----------------------------------------------------------------------


def invoke(runner, *args, input=None):
    result = runner.invoke(args=list(args), input=input)
    db.session.expire_all()
    return result


def ok(runner, *args, input=None):
    result = invoke(runner, *args, input=input)
    assert result.exit_code == 0, result.output
    return result


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_departments_create_is_idempotent(runner):
    first = ok(runner, "departments", "create", "QA Team")
    assert "Created department “QA Team”" in first.output
    again = ok(runner, "departments", "create", "  QA   Team ")
    assert "already exists" in again.output
    assert [d.name for d in db.session.scalars(select(Department))] == ["QA Team"]


def test_departments_create_rejects_a_blank_name(runner):
    result = invoke(runner, "departments", "create", "   ")
    assert result.exit_code != 0
    assert "Enter a name." in result.output
    assert count(Department) == 0


# --- users -----------------------------------------------------------------------------


def test_users_create_then_rerun_adds_a_role(runner):
    ok(runner, "departments", "create", "QA Team")
    created = ok(runner, "users", "create", "Tech@Example.com", "--password", PASSWORD,
                 "--role", "technician", "--department", "QA Team")
    assert "Created tech@example.com: technician in “QA Team”." in created.output
    updated = ok(runner, "users", "create", "tech@example.com", "--password", "other pass 123",
                 "--role", "approver", "--department", "QA Team")
    assert "Updated tech@example.com: approver" in updated.output
    assert "password unchanged" in updated.output
    user = accounts.find_user("tech@example.com")
    assert sorted(m.role for m in user.memberships) == ["approver", "technician"]
    assert accounts.sign_in(email="tech@example.com", password=PASSWORD, client_ip="",
                            now=NOW).user.id == user.id


def test_users_create_admin_needs_no_department(runner):
    ok(runner, "users", "create", "boss@example.com", "--password", PASSWORD, "--role", "admin")
    assert accounts.find_user("boss@example.com").is_admin


def test_users_create_rejects_an_unknown_role(runner):
    ok(runner, "departments", "create", "QA Team")
    result = invoke(runner, "users", "create", "x@example.com", "--password", PASSWORD,
                    "--role", "superuser", "--department", "QA Team")
    assert result.exit_code != 0
    assert "Invalid value for '--role'" in result.output
    assert "'superuser' is not one of" in result.output
    assert count(User) == 0


def test_users_create_rejects_a_department_role_without_department(runner):
    result = invoke(runner, "users", "create", "x@example.com", "--password", PASSWORD,
                    "--role", "technician")
    assert result.exit_code != 0
    assert "A department role needs a department." in result.output
    assert count(User) == 0


def test_users_create_rejects_an_unknown_department(runner):
    result = invoke(runner, "users", "create", "x@example.com", "--password", PASSWORD,
                    "--role", "technician", "--department", "Nowhere")
    assert result.exit_code != 0
    assert "No department named “Nowhere”." in result.output
    assert count(User) == 0


@pytest.mark.parametrize("password, message", [
    (None, "A new user needs a password."),
    ("short", "Use at least 10 characters."),
])
def test_users_create_rejects_a_missing_or_weak_password(runner, password, message):
    ok(runner, "departments", "create", "QA Team")
    args = ["users", "create", "x@example.com", "--role", "technician",
            "--department", "QA Team"]
    if password:
        args += ["--password", password]
    result = invoke(runner, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert count(User) == 0


def test_users_disable_ends_sessions_and_tokens(runner, make):
    make.user("tech@example.com")
    session_token = accounts.sign_in(email="tech@example.com", password=PASSWORD,
                                     client_ip="", now=NOW).session_token
    api_token = accounts.create_user_token(user=accounts.find_user("tech@example.com"),
                                           actor=CLI, now=NOW)
    db.session.commit()
    result = ok(runner, "users", "disable", "tech@example.com")
    assert "Disabled tech@example.com" in result.output
    assert accounts.load_signed_in_user(session_token, now=NOW) is None
    assert accounts.find_token(api_token) is None
    assert accounts.find_user("tech@example.com").is_enabled is False
    unknown = invoke(runner, "users", "disable", "nobody@example.com")
    assert unknown.exit_code != 0 and "No user nobody@example.com." in unknown.output


# --- devices and tokens ----------------------------------------------------------------


def last_line(result):
    return result.output.rstrip("\n").splitlines()[-1]


def test_devices_create_prints_a_working_token_alone_on_the_last_line(runner):
    ok(runner, "departments", "create", "QA Team")
    result = ok(runner, "devices", "create", "WIN-0859G9I39J0", "--department", "QA Team",
                "--os", "Windows 11", "--ip", "10.0.0.5", "--group", "Testers")
    token = last_line(result)
    assert token == token.strip() and " " not in token and len(token) >= 32
    found = accounts.find_token(token)
    assert found is not None and found.user is None
    assert (found.device.name, found.device.os, found.device.ip_address,
            found.device.group.name, found.device.department.name) == (
        "WIN-0859G9I39J0", "Windows 11", "10.0.0.5", "Testers", "QA Team")
    # A second device reuses the existing group.
    ok(runner, "devices", "create", "WIN-2", "--department", "QA Team", "--group", "Testers")
    assert count(DeviceGroup) == 1


def test_devices_create_rejects_duplicates_and_bad_input(runner):
    ok(runner, "departments", "create", "QA Team")
    ok(runner, "devices", "create", "PC-1", "--department", "QA Team")
    for args, message in [
        (["PC-1", "--department", "QA Team"], "A device named “PC-1” already exists."),
        (["PC-2", "--department", "QA Team", "--ip", "999.1.1.1"],
         "Enter an IPv4 or IPv6 address."),
        (["PC-2", "--department", "Nowhere"], "No department named “Nowhere”."),
    ]:
        result = invoke(runner, "devices", "create", *args)
        assert result.exit_code != 0, args
        assert message in result.output
    assert count(Device) == 1


def test_tokens_create_prints_a_working_user_token_on_the_last_line(runner, make):
    make.user("tech@example.com")
    result = ok(runner, "tokens", "create", "--user", "tech@example.com")
    found = accounts.find_token(last_line(result))
    assert found.user.email == "tech@example.com" and found.device is None
    unknown = invoke(runner, "tokens", "create", "--user", "nobody@example.com")
    assert unknown.exit_code != 0 and "No user nobody@example.com." in unknown.output


def api_status(client, token, path="/api/v1/session-requests/1"):
    return client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


def token_events(action):
    """In the order they happened (without ORDER BY, PostgreSQL returns rows in the order
    it finds them, which sealing an event's hash can change)."""
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.seq)))


def assert_no_secret(event, *tokens):
    dumped = repr({c.name: getattr(event, c.name) for c in AuditEvent.__table__.columns})
    for token in tokens:
        assert token not in dumped and crypto.keyed_hash(token) not in dumped


def test_tokens_revoke_user_ends_every_api_token_of_that_user(runner, client, make):
    make.user("tech@example.com")
    make.user("other@example.com")
    first, second = (last_line(ok(runner, "tokens", "create", "--user", "tech@example.com"))
                     for _ in range(2))
    other = last_line(ok(runner, "tokens", "create", "--user", "other@example.com"))
    assert api_status(client, first) == api_status(client, second) == 404  # known, no request

    result = ok(runner, "tokens", "revoke", "--user", "Tech@Example.com")
    assert "Revoked 2 API token(s) of tech@example.com." in result.output
    assert api_status(client, first) == api_status(client, second) == 401
    assert api_status(client, other) == 404
    (event,) = token_events("token.revoked")
    assert (event.actor, event.target_type, event.details) == (
        "cli", "user", {"email": "tech@example.com", "kind": "user", "count": 2})
    assert_no_secret(event, first, second)

    again = ok(runner, "tokens", "revoke", "--user", "tech@example.com")
    assert "tech@example.com has no live API tokens." in again.output
    assert len(token_events("token.revoked")) == 1
    unknown = invoke(runner, "tokens", "revoke", "--user", "nobody@example.com")
    assert unknown.exit_code != 0 and "No user nobody@example.com." in unknown.output


def test_tokens_revoke_one_token_read_from_stdin_or_the_argument(runner, client, make):
    make.user("tech@example.com")
    department = make.department()
    tokens = [last_line(ok(runner, "tokens", "create", "--user", "tech@example.com"))
              for _ in range(3)]
    device_token = last_line(ok(runner, "devices", "create", "PC-1", "--department",
                                department.name))

    from_stdin = runner.invoke(args=["tokens", "revoke"], input=tokens[0] + "\n")
    assert from_stdin.exit_code == 0, from_stdin.output
    assert "Revoked the API token of user tech@example.com, created" in from_stdin.output
    assert tokens[0] not in from_stdin.output
    ok(runner, "tokens", "revoke", "-", input=tokens[1])
    assert "of device PC-1" in ok(runner, "tokens", "revoke", device_token).output
    db.session.expire_all()
    assert [api_status(client, t) for t in tokens] == [401, 401, 404]
    assert api_status(client, device_token, "/api/v1/agent/prompts") == 401

    events = token_events("token.revoked")
    assert [(e.target_type, e.details["kind"], e.details["count"]) for e in events] == [
        ("user", "user", 1), ("user", "user", 1), ("device", "device", 1)]
    for event in events:
        assert_no_secret(event, *tokens, device_token)

    for args, stdin, message in [
        (["tokens", "revoke"], tokens[0], "No live API token matches"),  # revoked already
        (["tokens", "revoke", "made-up-token"], None, "No live API token matches"),
        (["tokens", "revoke"], "\n", "Give the token to revoke"),
        (["tokens", "revoke", tokens[2], "--user", "tech@example.com"], None, "not both"),
    ]:
        result = runner.invoke(args=args, input=stdin)
        assert result.exit_code != 0 and message in result.output, args
    assert [api_status(client, t) for t in tokens] == [401, 401, 404]
    assert len(token_events("token.revoked")) == 3


def test_devices_rotate_token_revokes_the_old_and_prints_the_new_on_the_last_line(
        runner, client, make):
    department = make.department()
    old = last_line(ok(runner, "devices", "create", "WIN-0859G9I39J0", "--department",
                       department.name))
    assert api_status(client, old, "/api/v1/agent/prompts") == 200

    result = ok(runner, "devices", "rotate-token", "WIN-0859G9I39J0")
    new = last_line(result)
    assert new == new.strip() and " " not in new and len(new) >= 32 and new != old
    assert "Revoked 1 token(s) of device WIN-0859G9I39J0" in result.output
    assert api_status(client, old, "/api/v1/agent/prompts") == 401
    assert api_status(client, new, "/api/v1/agent/prompts") == 200

    newest = last_line(ok(runner, "devices", "rotate-token", "WIN-0859G9I39J0"))
    assert api_status(client, new, "/api/v1/agent/prompts") == 401
    assert api_status(client, newest, "/api/v1/agent/prompts") == 200
    events = token_events("token.rotated")
    assert [(e.actor, e.target_type, e.department_id, e.details) for e in events] == [
        ("cli", "device", department.id,
         {"device": "WIN-0859G9I39J0", "kind": "device", "revoked": 1})] * 2
    for event in events:
        assert_no_secret(event, old, new, newest)
    unknown = invoke(runner, "devices", "rotate-token", "NOPE")
    assert unknown.exit_code != 0 and "No device named “NOPE”." in unknown.output


# --- audit verify ----------------------------------------------------------------------


def seal() -> None:
    seal_pending(NOW)
    db.session.commit()


def test_audit_verify_passes_on_an_intact_trail(runner, make):
    make.user("tech@example.com")  # a department, a user, a role: three events
    unsealed = ok(runner, "audit", "verify")
    assert "3 event(s) not yet sealed" in unsealed.output
    assert "Audit trail intact: 0 events verified." in unsealed.output
    seal()
    result = ok(runner, "audit", "verify")
    assert "Audit trail intact: 3 events verified." in result.output
    assert "not yet sealed" not in result.output


def test_audit_verify_fails_naming_the_edited_event(runner, make):
    make.user("tech@example.com")
    seal()
    db.session.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
    db.session.commit()
    result = invoke(runner, "audit", "verify")
    assert result.exit_code == 1
    assert "Audit trail broken at event #2 (chain position 2): its contents do not match" \
        in result.output


def test_audit_verify_fails_when_the_last_event_is_deleted(runner, make):
    make.user("tech@example.com")
    seal()
    db.session.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    db.session.commit()
    result = invoke(runner, "audit", "verify")
    assert result.exit_code == 1
    assert "the head names event #3 at position 3" in result.output


def test_audit_verify_fails_when_the_head_is_deleted(runner, make):
    make.user("tech@example.com")
    seal()
    db.session.execute(text("DELETE FROM audit_head"))
    db.session.commit()
    result = invoke(runner, "audit", "verify")
    assert result.exit_code == 1
    assert "the chain head is missing" in result.output


def test_audit_checkpoint_seals_and_prints_one_line_that_verify_holds_the_chain_to(
        runner, make):
    make.user("tech@example.com")
    printed = ok(runner, "audit", "checkpoint").output
    assert len(printed.splitlines()) == 1
    line = printed.strip()
    assert re.fullmatch(r"session-gate-audit-checkpoint seq=3 position=3 hash=[0-9a-f]{64} "
                        r"at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line)
    make.user("other@example.com")  # the trail grows: the checkpoint still holds
    seal()
    assert "it still holds the checkpoint's event #3" in ok(
        runner, "audit", "verify", "--checkpoint", line).output

    # Someone deletes the newest events and rewinds the head to what is left: a
    # consistent chain by itself, but shorter than the checkpoint.
    db.session.execute(text("DELETE FROM audit_events WHERE seq > 2"))
    db.session.execute(text("UPDATE audit_head SET chain_index = 2, seq = 2, chain_hash = "
                            "(SELECT chain_hash FROM audit_events WHERE seq = 2)"))
    db.session.commit()
    assert "Audit trail intact" in ok(runner, "audit", "verify").output
    truncated = invoke(runner, "audit", "verify", "--checkpoint", line)
    assert truncated.exit_code == 1
    assert "truncated: the checkpoint names position 3, the chain now ends at position 2" \
        in truncated.output


def rewind_head_to(seq: int) -> None:
    db.session.execute(text(
        "UPDATE audit_head SET chain_index = :seq, seq = :seq, chain_hash = "
        "(SELECT chain_hash FROM audit_events WHERE seq = :seq)"), {"seq": seq})


@pytest.mark.parametrize("rewrite", ["other events", "the same event edited"])
def test_audit_verify_finds_history_rewritten_since_the_checkpoint(runner, make, rewrite):
    """Not a truncation: the chain is as long as before, consistent, and sealed under the
    key (re-sealed by the sealing job itself), but it is another history."""
    make.user("tech@example.com")
    line = ok(runner, "audit", "checkpoint").output.strip()  # seq=3 position=3
    make.user("other@example.com")
    seal()
    if rewrite == "other events":  # the newest events deleted, different ones appended
        db.session.execute(text("DELETE FROM audit_events WHERE seq > 2"))
        rewind_head_to(2)
        db.session.commit()
        make.user("mallory@example.com")  # seq 7 on, or 3 on again where SQLite reuses ids
    else:  # event #3 changed in place and chained again from the head before it
        db.session.execute(text("DELETE FROM audit_events WHERE seq > 3"))
        db.session.execute(text(
            "UPDATE audit_events SET actor = 'mallory', chain_index = NULL, leaf_hash = NULL, "
            "chain_hash = NULL WHERE seq = 3"))
        rewind_head_to(2)
        db.session.commit()
    seal()
    assert "Audit trail intact" in ok(runner, "audit", "verify").output  # by itself
    third = db.session.scalar(select(AuditEvent.seq).where(AuditEvent.chain_index == 3))
    assert third is not None  # not a truncation: position 3 is there again
    expected = f"event #{third} (chain position 3)"
    result = invoke(runner, "audit", "verify", "--checkpoint", line)
    assert result.exit_code == 1
    assert (f"Audit trail broken at {expected}: rewritten since the checkpoint: position 3 "
            "no longer holds event #3 with the checkpoint's hash") in result.output


def test_audit_verify_refuses_a_line_that_is_not_a_checkpoint(runner, make):
    result = invoke(runner, "audit", "verify", "--checkpoint", "seq=3 hash=abc")
    assert result.exit_code == 2
    assert "not a line printed by `audit checkpoint`" in result.output


# --- demo data -------------------------------------------------------------------------


def row_counts():
    return {table.name: db.session.scalar(select(func.count()).select_from(table))
            for table in db.metadata.sorted_tables}


def test_demo_seed_creates_a_usable_portal_and_is_idempotent(app):
    tokens = demo.seed(app)
    db.session.commit()
    before = row_counts()

    again = demo.seed(app)
    db.session.commit()
    assert row_counts() == before
    assert again == tokens  # the same tokens are printed every time

    names = set(db.session.scalars(select(Department.name)))
    assert {"QA Team", "Sales Team"} <= names
    qa, sales = departments.find_department("QA Team"), departments.find_department("Sales Team")
    for department in (qa, sales):
        assert db.session.scalar(select(func.count()).select_from(Device)
                                 .where(Device.department_id == department.id)) >= 2
        assert db.session.scalar(select(func.count()).select_from(DeviceGroup)
                                 .where(DeviceGroup.department_id == department.id)) >= 1
        assert departments.list_exclusions(department)
    assert count(Exclusion) >= 2

    roles = set(db.session.scalars(select(Membership.role)))
    assert roles == {"department_admin", "approver", "auditor", "technician"}
    assert db.session.scalar(select(func.count()).select_from(User).where(User.is_admin)) >= 1
    # Every demo user signs in with the printed password.
    for email in {email for email, _, _ in demo.USERS}:
        assert accounts.sign_in(email=email, password=demo.DEMO_PASSWORD, client_ip="",
                                now=NOW).user.email == email
    db.session.rollback()

    assert tokens, "the demo prints API tokens"
    for label, token in tokens:
        found = accounts.find_token(token)
        assert found is not None, label
        owner = found.user.email if found.user else found.device.name
        assert label.startswith(owner), (label, owner)
