"""The approval chain's steps after creation (design.md, "Fallback" and "Escalation"): mail
the approvers once the end user's deadline passes unanswered, and mail "Escalate to" once a
request is still pending "Escalate after" seconds after its approval emails went out.

A step is due at the request's `chain_due_at`. The job claims due steps with one
conditional UPDATE that clears `chain_due_at` (only a row whose step is still due is
claimed), so two jobs, two schedulers or a job re-run after a crash take each step once;
the claim locks the request's row, so a decision racing it waits and then cancels the mail
the step queued. A request that is no longer pending, or is past its deadline, takes no
step (its claim only clears what is left). Decisions never depend on these steps: a link's
deadline is the request's `expires_at`, fixed at creation.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from portal.domain import approvals as approval_rules
from portal.domain import chain as rules
from portal.domain.requests import EmailCheck, EndUserCheck, Status
from portal.extensions import db
from portal.models import ApprovalLink, Department, SessionRequest
from portal.services.actors import SYSTEM
from portal.services.requests import ask_approvers, audit_queued, audit_request

BATCH = 200
RETRY_SECONDS = 30  # a step that failed (say, a broken template) is tried again after this
log = logging.getLogger("portal.jobs")


def take_due_steps(now: datetime, *, base_url: str, limit: int = BATCH
                   ) -> tuple[list[tuple[int, str]], bool]:
    """Take the chain steps due at `now` (at most `limit`): (request id, step) of each
    step taken, "fallback" or "escalation", and whether more may be due."""
    due = list(db.session.scalars(
        select(SessionRequest.id).where(SessionRequest.chain_due_at <= now)
        .order_by(SessionRequest.chain_due_at, SessionRequest.id).limit(limit)))
    if not due:
        return [], False
    claimed = db.session.execute(
        update(SessionRequest)
        .where(SessionRequest.id.in_(due), SessionRequest.chain_due_at <= now)
        .values(chain_due_at=None)
        .returning(SessionRequest.id, SessionRequest.status, SessionRequest.expires_at)
        .execution_options(synchronize_session=False)).all()
    live = sorted(row.id for row in claimed
                  if row.status == Status.PENDING.value and row.expires_at > now)
    more = len(due) >= limit
    if not live:
        return [], more
    requests = db.session.scalars(
        select(SessionRequest).where(SessionRequest.id.in_(live))
        .options(joinedload(SessionRequest.device), joinedload(SessionRequest.technician),
                 joinedload(SessionRequest.department).joinedload(Department.settings))
        .order_by(SessionRequest.id)).all()
    asked = _asked_already(live)
    taken = []
    for req in requests:
        step = rules.step_kind(req.email_check)
        try:
            with db.session.begin_nested():  # one request's failure costs only its step
                if step == rules.FALLBACK:
                    _fall_back(req, now=now, base_url=base_url)
                elif not _escalate(req, asked.get(req.id, []), now=now, base_url=base_url):
                    continue
        except Exception:
            log.exception("the %s step of request %s failed; retrying in %s s", step,
                          req.id, RETRY_SECONDS)
            db.session.execute(
                update(SessionRequest).where(SessionRequest.id == req.id)
                .values(chain_due_at=now + timedelta(seconds=RETRY_SECONDS))
                .execution_options(synchronize_session=False))
            continue
        taken.append((req.id, step))
    db.session.flush()
    return taken, more


def _asked_already(request_ids: list[int]) -> dict[int, list[str]]:
    asked: dict[int, list[str]] = {}
    for request_id, email in db.session.execute(
            select(ApprovalLink.request_id, ApprovalLink.recipient_email)
            .where(ApprovalLink.request_id.in_(request_ids))):
        asked.setdefault(request_id, []).append(email)
    return asked


def _fall_back(req: SessionRequest, *, now: datetime, base_url: str) -> None:
    """Nobody answered at the device by its deadline: ask the approvers now (Recipient(s)
    as they are now, but anyone whose Allow already counted), for what is left of the
    request's fixed deadline."""
    settings = req.department.settings
    if req.end_user_check == EndUserCheck.PENDING.value:
        req.end_user_check = EndUserCheck.TIMED_OUT.value
    req.email_check = EmailCheck.PENDING.value
    targets = rules.addresses_to_mail(settings.recipients,
                                       approval_rules.parse_approvers(req.approved_by))
    if targets:
        req.fallback_mailed_at = now
    req.chain_due_at = rules.escalation_due(
        mailed_at=now, escalate_after_seconds=settings.escalate_after_seconds,
        escalation_addresses=settings.escalation_addresses, expires_at=req.expires_at)
    asked = ask_approvers(req, targets, settings=settings, now=now, base_url=base_url)
    audit_request(req, "request.fallback_mailed", SYSTEM, now,
                  because="the end user didn't answer", recipients=asked)
    audit_queued(req, asked, SYSTEM, now)


def _escalate(req: SessionRequest, asked: list[str], *, now: datetime,
              base_url: str) -> bool:
    """Still pending "Escalate after" seconds after the approvers were mailed: mail
    "Escalate to" as it reads now, but nobody asked already or whose Allow counted.
    Whether anyone was mailed."""
    settings = req.department.settings
    targets = rules.addresses_to_mail(
        settings.escalation_addresses,
        [*asked, *approval_rules.parse_approvers(req.approved_by)])
    if not targets:
        return False
    req.escalated_at = now
    mailed = ask_approvers(req, targets, settings=settings, now=now, base_url=base_url,
                           is_escalation=True)
    waited = (now - mailed_at(req)).total_seconds()
    audit_request(req, "request.escalated", SYSTEM, now, recipients=mailed,
                  after_seconds=int(waited))
    audit_queued(req, mailed, SYSTEM, now)
    return True


def mailed_at(req) -> datetime:
    """When the request's approvers were first mailed (at creation, or by the fallback)."""
    return req.fallback_mailed_at or req.created_at


def reschedule_escalations(department_id: int, settings, now: datetime) -> int:
    """"Escalate to" or "Escalate after" changed: the department's pending requests whose
    approvers were mailed and that were not escalated yet escalate by the new settings
    (none, when "Escalate to" is now empty). Each is one conditional UPDATE, which skips a
    request a job escalated or a decision ended meanwhile. The number rescheduled."""
    pending = db.session.execute(
        select(SessionRequest.id, SessionRequest.created_at,
               SessionRequest.fallback_mailed_at, SessionRequest.expires_at)
        .where(SessionRequest.department_id == department_id,
               SessionRequest.status == Status.PENDING.value,
               SessionRequest.email_check == EmailCheck.PENDING.value,
               SessionRequest.escalated_at.is_(None),
               SessionRequest.expires_at > now)
        .order_by(SessionRequest.id)).all()
    for row in pending:
        due = rules.escalation_due(
            mailed_at=mailed_at(row), escalate_after_seconds=settings.escalate_after_seconds,
            escalation_addresses=settings.escalation_addresses, expires_at=row.expires_at)
        db.session.execute(
            update(SessionRequest)
            .where(SessionRequest.id == row.id,
                   SessionRequest.status == Status.PENDING.value,
                   SessionRequest.email_check == EmailCheck.PENDING.value,
                   SessionRequest.escalated_at.is_(None))
            .values(chain_due_at=due).execution_options(synchronize_session=False))
    return len(pending)


def next_due_query():
    """When the earliest chain step falls due (an indexed read), for the job to wake; a
    scalar subquery."""
    return (select(SessionRequest.chain_due_at)
            .where(SessionRequest.chain_due_at.is_not(None))
            .order_by(SessionRequest.chain_due_at).limit(1).scalar_subquery())

