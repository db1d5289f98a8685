"""Races on PostgreSQL with real threads (security.md 7, 10): first decision wins, one
expiry per request however many sweeps run, and concurrent audited writes keep one hash
chain. Each thread has its own app context, so its own database session and connection,
and all start together behind a barrier."""
from __future__ import annotations

import os
import threading
from collections import Counter
from datetime import timedelta

import pytest
from factories import NOW, sealed_trail_check
from sqlalchemy import func, select

from portal import unit_of_work
from portal.domain.errors import AlreadyDecidedError, ExpiredError
from portal.extensions import db
from portal.models import AuditEvent, Device, OutboxMessage, SessionRequest, User
from portal.services import accounts, agents, departments, mail
from portal.services import decisions
from portal.services import requests as service
from portal.services.actors import CLI, SYSTEM, Actor
from portal.services.audit import record_event
from portal.web.errors import status_of

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
        reason="races need PostgreSQL (set PORTAL_TEST_DATABASE_URI)"),
]

DEVICE = "WIN-0859G9I39J0"
R1, R2 = "first-approver@example.com", "second-approver@example.com"
PORTAL_APPROVER = "portal-approver@example.com"
ROUNDS = 10


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    device = make.device(department, DEVICE)
    device.logged_in_user = "alice"  # the end-user prompt is shown
    make.user("tech@example.com", "technician", department)
    for email in (R1, R2, PORTAL_APPROVER):
        make.user(email, "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_confirmation_shown": True, "is_email_authorization_required": True,
              "email_recipients": f"{R1}\n{R2}"}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


def new_request(created_at=NOW):
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=DEVICE, actor=CLI,
        now=created_at, base_url="http://portal.test")
    db.session.commit()
    assert (req.status, req.end_user_check, req.email_check) == ("pending", "pending",
                                                                 "pending")
    tokens = {m.recipient: mail.approval_links_in(m)[0].rsplit("/", 1)[1]
              for m in db.session.scalars(select(OutboxMessage).where(
                  OutboxMessage.request_id == req.id))}
    return req.id, tokens


def run_together(app, contenders: dict) -> dict:
    """Run each contender in its own thread and app context. A contender is
    `prepare() -> act`: prepare loads what it needs, then all `act()` at once after the
    barrier. The result is "won", a refusal's HTTP status, or an unexpected exception."""
    barrier = threading.Barrier(len(contenders))
    results: dict = {}

    def worker(name, prepare):
        with app.app_context():
            try:
                act = prepare()
                barrier.wait(timeout=10)
                act()
                db.session.commit()
                results[name] = "won"
            except (AlreadyDecidedError, ExpiredError) as exc:
                unit_of_work.finish(succeeded=False)  # keeps an expiry it may have written
                results[name] = status_of(exc)
            except Exception as exc:  # noqa: BLE001 - reported by the assertions
                db.session.rollback()
                results[name] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=item) for item in contenders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a contender hung"
    return results


def user(email):
    return db.session.scalar(select(User).where(User.email == email))


def decided_events(request_id):
    return list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "request.decided", AuditEvent.target_id == str(request_id))))


def contenders_for(request_id, tokens, now):
    def end_user_accepts():
        device = db.session.scalar(select(Device).where(Device.name == DEVICE))
        return lambda: decisions.decide_by_end_user(
            device=device, request_id=request_id, decision="accept",
            actor=Actor(label=f"device:{DEVICE}"), now=now)

    def link(recipient, decision):
        def prepare():
            signed_in = user(recipient)
            return lambda: decisions.decide_with_link(
                link=decisions.find_link(tokens[recipient]), decision=decision,
                signed_in=signed_in,
                actor=Actor.for_user(signed_in), now=now)
        return prepare

    def portal_denies():
        approver = user(PORTAL_APPROVER)
        return lambda: decisions.decide_in_portal(
            user=approver, request_id=request_id, decision="deny",
            actor=Actor.for_user(approver), now=now)

    return {"end_user": end_user_accepts, "link_allow": link(R1, "allow"),
            "link_deny": link(R2, "deny"), "portal_deny": portal_denies}


EXPECTED = {  # winner -> (status, decided_by, end_user_check, email_check)
    "end_user": ("approved", "end_user", "accepted", "pending"),
    "link_allow": ("approved", R1, "pending", "allowed"),
    "link_deny": ("denied", R2, "pending", "denied"),
    "portal_deny": ("denied", PORTAL_APPROVER, "pending", "pending"),
}


def test_first_decision_wins_among_concurrent_deciders(app, qa):
    winners = Counter()
    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        request_id, tokens = new_request(created)
        results = run_together(app, contenders_for(request_id, tokens,
                                                   created + timedelta(seconds=5)))
        won = [name for name, result in results.items() if result == "won"]
        assert len(won) == 1, results
        assert sorted(r for r in results.values() if r != "won") == [409, 409, 409], results
        winners[won[0]] += 1

        db.session.expire_all()
        req = db.session.get(SessionRequest, request_id)
        assert (req.status, req.decided_by, req.end_user_check, req.email_check) == \
            EXPECTED[won[0]], (round_, won)
        assert req.decided_at == created + timedelta(seconds=5)
        events = decided_events(request_id)
        assert len(events) == 1 and events[0].details["status"] == req.status
        assert {m.status for m in db.session.scalars(select(OutboxMessage).where(
            OutboxMessage.request_id == request_id))} == {"cancelled"}
    assert sum(winners.values()) == ROUNDS
    assert sealed_trail_check()[1] is None


def test_concurrent_allow_and_deny_by_two_portal_approvers(app, qa):
    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        request_id, _ = new_request(created)

        def portal(email, decision):
            def prepare():
                approver = user(email)
                return lambda: decisions.decide_in_portal(
                    user=approver, request_id=request_id, decision=decision,
                    actor=Actor.for_user(approver), now=created + timedelta(seconds=1))
            return prepare

        results = run_together(app, {"allow": portal(R1, "allow"),
                                     "deny": portal(R2, "deny")})
        assert sorted(results.values(), key=str) == [409, "won"], results
        winner = next(name for name, result in results.items() if result == "won")
        db.session.expire_all()
        req = db.session.get(SessionRequest, request_id)
        assert (req.status, req.decided_by) == (
            ("approved", R1) if winner == "allow" else ("denied", R2))
        assert len(decided_events(request_id)) == 1
    assert sealed_trail_check()[1] is None


def test_concurrent_expiry_sweeps_move_each_request_once(app, qa):
    for round_ in range(3):
        created = NOW + timedelta(hours=round_)
        ids = {new_request(created + timedelta(seconds=i))[0] for i in range(20)}
        swept: dict = {}

        def sweeper(name):
            def prepare():
                def act():
                    swept[name] = decisions.expire_overdue(created + timedelta(minutes=30))
                return act
            return prepare

        results = run_together(app, {f"sweep-{n}": sweeper(f"sweep-{n}") for n in range(2)})
        assert set(results.values()) == {"won"}, results  # a sweep never fails
        moved = [i for found in swept.values() for i in found]
        assert sorted(moved) == sorted(ids)  # every request once, none twice

        db.session.expire_all()
        rows = db.session.scalars(select(SessionRequest).where(SessionRequest.id.in_(ids)))
        assert {(r.status, r.decided_at) for r in rows} == {
            ("timed_out", created + timedelta(minutes=30))}
        per_request = Counter(db.session.scalars(select(AuditEvent.target_id).where(
            AuditEvent.action == "request.timed_out")))
        assert {int(i) for i in per_request} >= ids
        assert all(per_request[str(i)] == 1 for i in ids), per_request
    assert sealed_trail_check()[1] is None


def test_concurrent_audited_writes_keep_one_chain(app, qa):
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    writers, writes = 8, 5

    def writer(n):
        def prepare():
            def act():
                for i in range(writes):
                    record_event(actor=SYSTEM, action="test.concurrent", target_type="test",
                                 target_id=f"{n}-{i}", now=NOW, details={"writer": n})
                    db.session.commit()
            return act
        return prepare

    results = run_together(app, {n: writer(n) for n in range(writers)})
    assert set(results.values()) == {"won"}, results
    db.session.expire_all()
    seqs = list(db.session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
    assert len(seqs) == before + writers * writes
    assert len(set(seqs)) == len(seqs)
    assert sealed_trail_check() == (len(seqs), None)
    positions = list(db.session.scalars(select(AuditEvent.chain_index)
                                        .order_by(AuditEvent.seq)))
    assert positions == list(range(1, len(seqs) + 1))  # one chain, in seq order


def test_a_prompt_poll_and_a_decision_never_deadlock(app, qa):
    """The agent's poll marks its prompts "shown" (row locks on several requests) and
    audits each; a decision locks one of those requests and audits. Taken in opposite
    orders — poll: request 1, audit trail, request 2; decision: request 2, audit trail —
    PostgreSQL finds a deadlock and one of them fails. Both must take the request rows
    first, then the trail."""
    token = accounts.create_device_token(
        device=db.session.scalar(select(Device).where(Device.name == DEVICE)), actor=CLI,
        now=NOW)
    db.session.commit()
    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        ids = [new_request(created + timedelta(milliseconds=i))[0] for i in range(5)]
        at = created + timedelta(seconds=5)
        shown: list = []

        def poll():
            def act():
                polled = agents.read_poll(token, at)
                agents.note_prompts_shown(polled, Actor(label=f"device:{DEVICE}"), at)
                shown.extend(r.id for r in polled.prompts)
            return act

        def decide():
            approver = user(PORTAL_APPROVER)
            return lambda: decisions.decide_in_portal(
                user=approver, request_id=ids[-1], decision="deny",
                actor=Actor.for_user(approver), now=at)

        results = run_together(app, {"poll": poll, "decide": decide})
        assert results == {"poll": "won", "decide": "won"}, (round_, results)
        db.session.expire_all()
        assert db.session.get(SessionRequest, ids[-1]).status == "denied"
        shown_events = Counter(db.session.scalars(select(AuditEvent.target_id).where(
            AuditEvent.action == "prompt.shown",
            AuditEvent.target_id.in_([str(i) for i in ids]))))
        assert set(shown_events.values()) <= {1}  # each prompt's first showing, once
        assert {int(i) for i in shown_events} <= set(ids)
        assert set(shown) >= set(ids[:-1])  # the poll saw every prompt still open
    assert sealed_trail_check()[1] is None


# --- "the deciding decision wins": N of M ---------------------------------------------


def n_of_m_request(qa, created, required=2):
    values = {**departments.settings_values(qa.settings), "approvals_required": required,
              "email_recipients": f"{R1}\n{R2}\n{PORTAL_APPROVER}"}
    departments.update_settings(department=qa, values=values, actor=CLI, now=created)
    db.session.commit()
    return new_request(created)


def allow_by(email, request_id, tokens, now, via):
    def prepare():
        approver = user(email)
        if via == "link":
            link = decisions.find_link(tokens[email])
            return lambda: decisions.decide_with_link(
                link=link, decision="allow", signed_in=approver,
                actor=Actor.for_user(approver), now=now)
        return lambda: decisions.decide_in_portal(
            user=approver, request_id=request_id, decision="allow",
            actor=Actor.for_user(approver), now=now)
    return prepare


def test_concurrent_allows_count_each_person_once_and_one_completes(app, qa):
    """Three people Allow a request needing two, all at once: two count, exactly one of
    them makes the transition, the third gets 409; no Allow is lost or counted twice."""
    from portal.models import RequestApproval

    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        request_id, tokens = n_of_m_request(qa, created)
        now = created + timedelta(seconds=2)
        results = run_together(app, {
            "r1": allow_by(R1, request_id, tokens, now, "link"),
            "r2": allow_by(R2, request_id, tokens, now, "link"),
            "portal": allow_by(PORTAL_APPROVER, request_id, tokens, now, "portal")})
        assert sorted(results.values(), key=str) == [409, "won", "won"], results
        db.session.expire_all()
        req = db.session.get(SessionRequest, request_id)
        counted = sorted(db.session.scalars(select(RequestApproval.approver_email).where(
            RequestApproval.request_id == request_id)))
        winners = sorted(name for name, r in results.items() if r == "won")
        emails = {"r1": R1, "r2": R2, "portal": PORTAL_APPROVER}
        assert counted == sorted(emails[n] for n in winners)
        assert (req.status, req.approvals_received) == ("approved", 2)
        assert req.decided_by in counted
        assert sorted(req.approved_by.split()) == counted
        assert len(decided_events(request_id)) == 1
        assert len(list(db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "approval.counted",
            AuditEvent.target_id == str(request_id))))) == 2
    assert sealed_trail_check()[1] is None


def test_one_person_allowing_twice_at_once_counts_once(app, qa):
    from portal.models import RequestApproval

    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        request_id, tokens = n_of_m_request(qa, created)
        now = created + timedelta(seconds=2)
        results = run_together(app, {
            "link": allow_by(R1, request_id, tokens, now, "link"),
            "portal": allow_by(R1, request_id, tokens, now, "portal")})
        assert sorted(results.values(), key=str) == [409, "won"], results
        db.session.expire_all()
        req = db.session.get(SessionRequest, request_id)
        assert (req.status, req.approvals_received, req.approved_by) == (
            "pending", 1, f"{R1}\n")
        assert db.session.scalar(select(func.count()).select_from(RequestApproval).where(
            RequestApproval.request_id == request_id)) == 1


def test_an_allow_that_completes_the_count_races_a_deny(app, qa):
    """R1 has counted; R2's completing Allow and the portal approver's Deny race: exactly
    one transition, and the loser's Allow is not left counted."""
    from portal.models import RequestApproval

    outcomes = Counter()
    for round_ in range(ROUNDS):
        created = NOW + timedelta(minutes=round_)
        request_id, tokens = n_of_m_request(qa, created)
        decisions.decide_with_link(link=decisions.find_link(tokens[R1]), decision="allow",
                                   signed_in=user(R1), actor=CLI,
                                   now=created + timedelta(seconds=1))
        db.session.commit()
        now = created + timedelta(seconds=2)

        def deny():
            approver = user(PORTAL_APPROVER)
            return lambda: decisions.decide_in_portal(
                user=approver, request_id=request_id, decision="deny",
                actor=Actor.for_user(approver), now=now)

        results = run_together(app, {"allow": allow_by(R2, request_id, tokens, now, "link"),
                                     "deny": deny})
        assert sorted(results.values(), key=str) == [409, "won"], results
        db.session.expire_all()
        req = db.session.get(SessionRequest, request_id)
        counted = db.session.scalar(select(func.count()).select_from(RequestApproval).where(
            RequestApproval.request_id == request_id))
        if results["allow"] == "won":
            assert (req.status, req.decided_by, counted) == ("approved", R2, 2)
        else:
            assert (req.status, req.decided_by, counted) == ("denied", PORTAL_APPROVER, 1)
        assert len(decided_events(request_id)) == 1
        outcomes[req.status] += 1
    assert sum(outcomes.values()) == ROUNDS
