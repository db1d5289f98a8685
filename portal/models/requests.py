"""Session requests, their approval links, remote sessions, and the mail outbox."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import User
from portal.models.departments import Department, Device
from portal.models.otp import OtpAccessRequest
from portal.models.types import UTCDateTime


class SessionRequest(db.Model):
    __tablename__ = "session_requests"
    __table_args__ = (
        # The expiry sweep and every "still pending?" look-up.
        Index("ix_session_requests_status_expires_at", "status", "expires_at"),
        # The pending page of a department.
        Index("ix_session_requests_department_id_status", "department_id", "status"),
        # A device's open prompts (the agent polls them): with only (device_id, status)
        # SQLite's planner read every pending request through the index above instead.
        Index("ix_session_requests_device_id_open_prompts", "device_id", "status",
              "end_user_check", "end_user_deadline"),
        Index("ix_session_requests_technician_id_created_at", "technician_id", "created_at"),
        # The chain's job: what is due to be mailed next (fallback, escalation).
        Index("ix_session_requests_chain_due_at", "chain_due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"))
    technician_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    run_as: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    end_user_check: Mapped[str] = mapped_column(String(16))
    end_user_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    email_check: Mapped[str] = mapped_column(String(16))
    email_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    prompt_message: Mapped[str] = mapped_column(Text, default="")
    prompt_shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # "Approvals required" as it was at creation, the Allows counted so far and whose
    # (one lower-cased email a line, in order): the row alone answers "k of N approvals".
    approvals_required: Mapped[int] = mapped_column(Integer, default=1,
                                                    server_default=text("1"))
    approvals_received: Mapped[int] = mapped_column(Integer, default=0,
                                                    server_default=text("0"))
    approved_by: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Number matching: the number the technician sees and the three choices offered
    # ("17,42,88"); null when matching was off at creation.
    match_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    match_choices: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # Denied through "I didn't expect this" (the outcome says so).
    is_reported: Mapped[bool] = mapped_column(Boolean, default=False,
                                              server_default=false())
    # The chain (end user → approvers → escalation): when its next step falls due — the
    # fallback mail at the end user's deadline while the email check is "waiting", else
    # the escalation mail — and null when nothing more is to come. The job that takes a
    # step clears it in the same conditional UPDATE, so a step is taken once.
    chain_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the approvers were mailed because nobody could or did answer at the device,
    # and when the request was escalated ("Escalate to"); null when it wasn't.
    fallback_mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    device: Mapped[Device] = relationship()
    department: Mapped[Department] = relationship()
    technician: Mapped[User] = relationship()



class RequestApproval(db.Model):
    """One counted Allow of a session request: once per person (the unique constraint
    makes a double count impossible, whatever races)."""

    __tablename__ = "request_approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("session_requests.id", ondelete="CASCADE"))
    approver_email: Mapped[str] = mapped_column(String(254))  # lower-cased
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RequestReport(db.Model):
    """"I didn't expect this": who reported which request, and until when that
    technician's new requests to that device are refused."""

    __tablename__ = "request_reports"
    __table_args__ = (
        # The cool-down look-up at every create.
        Index("ix_request_reports_technician_device_until", "technician_id", "device_id",
              "cooldown_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("session_requests.id", ondelete="CASCADE"), unique=True)
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    technician_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reported_by: Mapped[str] = mapped_column(String(254))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cooldown_until: Mapped[datetime] = mapped_column(UTCDateTime)


class ApprovalLink(db.Model):
    """One per recipient per request — a session request or an OTP access request; the
    token is stored as a keyed hash."""

    __tablename__ = "approval_links"
    __table_args__ = (
        CheckConstraint("(request_id IS NULL) <> (otp_request_id IS NULL)",
                        name="one_request"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("session_requests.id", ondelete="CASCADE"), index=True, nullable=True)
    otp_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("otp_access_requests.id", ondelete="CASCADE"), index=True,
        nullable=True)
    recipient_email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The rule the link was mailed under: turning "Approvers must sign in to decide" off
    # later never loosens it (the stricter of this and today's setting applies).
    is_sign_in_required: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true())
    # The first GET of the link ("link opened" on the timeline); later GETs write nothing.
    first_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    request: Mapped[SessionRequest | None] = relationship()
    otp_request: Mapped[OtpAccessRequest | None] = relationship()


class RemoteSession(db.Model):
    __tablename__ = "remote_sessions"
    __table_args__ = (
        # The Sessions page: newest first, a page at a time by (started_at, id), and the
        # same for one device.
        Index("ix_remote_sessions_started_at_id", "started_at", "id"),
        Index("ix_remote_sessions_device_id_started_at", "device_id", "started_at"),
        # The agent's prompts poll: this device's sessions whose end was asked for and
        # that have not ended yet (few rows, whatever the history).
        Index("ix_remote_sessions_device_id_end_requested", "device_id",
              sqlite_where=text("end_requested_at IS NOT NULL AND ended_at IS NULL"),
              postgresql_where=text("end_requested_at IS NOT NULL AND ended_at IS NULL")),
        # State "running": the running sessions, newest first (few, whatever the history).
        Index("ix_remote_sessions_running", "started_at", "id",
              sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("session_requests.id", ondelete="CASCADE"), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"),
                                           index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # "End session": who asked for the end (an email), when, and why (optional); the
    # agent learns it on its next prompts poll and reports the end.
    end_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_requested_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # "Ended by": the person who pressed End session, or "device" when the agent ended
    # the session by itself; null while running.
    ended_by: Mapped[str | None] = mapped_column(String(254), nullable=True)

    request: Mapped[SessionRequest] = relationship()
    device: Mapped[Device] = relationship()


class RemoteSessionPerson(db.Model):
    """The people a remote session is about, for the Sessions page's "Person" filter: its
    technician's email, its "Run as" and who approved it, each lower-cased (Python's
    lower(), as the filter's value is), written once when the session starts (none of
    them changes after). The session's department and start are copied in, so the index
    gives a person's sessions newest first, a page at a time, whatever their number."""
    __tablename__ = "remote_session_people"
    __table_args__ = (
        Index("ix_remote_session_people_department_id_person_started_at",
              "department_id", "person", "started_at", "remote_session_id"),
    )

    remote_session_id: Mapped[int] = mapped_column(
        ForeignKey("remote_sessions.id", ondelete="CASCADE"), primary_key=True)
    person: Mapped[str] = mapped_column(Text, primary_key=True)
    department_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PreApproval(db.Model):
    """"Also allow this technician on this device for" some hours: while it is live (not
    expired, not revoked) that technician's requests to that device are approved at
    once."""

    __tablename__ = "pre_approvals"
    __table_args__ = (
        # The look-up at every create (read with the device) and a report's revocation.
        Index("ix_pre_approvals_technician_device_expires", "technician_id", "device_id",
              "expires_at"),
        # The device page's list.
        Index("ix_pre_approvals_device_id_expires_at", "device_id", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    technician_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("session_requests.id", ondelete="SET NULL"), nullable=True)
    granted_by: Mapped[str] = mapped_column(String(254))  # the email of who allowed
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(254), nullable=True)

    device: Mapped[Device] = relationship()
    technician: Mapped[User] = relationship()


class OutboxMessage(db.Model):
    """An email waiting to be delivered, written in the transaction that caused it."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("session_requests.id", ondelete="CASCADE"), nullable=True, index=True)
    otp_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("otp_access_requests.id", ondelete="CASCADE"), nullable=True, index=True)
    # An email carrying a one-time password holds a placeholder, not the code: delivery
    # decrypts the code's resend copy, and nothing of it stays in the outbox.
    otp_id: Mapped[int | None] = mapped_column(
        ForeignKey("one_time_passwords.id", ondelete="CASCADE"), nullable=True, index=True)
    department_id: Mapped[int | None] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), nullable=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    # pending -> sending -> sent | failed | cancelled (request over before delivery)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
