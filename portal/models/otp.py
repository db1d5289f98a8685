"""One-time passwords, their failure counters, OTP access requests and client sessions."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.departments import Department, Device
from portal.models.types import UTCDateTime


class OtpAccessRequest(db.Model):
    """A user's ask for a one-time password that approvers must grant."""

    __tablename__ = "otp_access_requests"
    __table_args__ = (
        Index("ix_otp_access_requests_status_expires_at", "status", "expires_at"),
        Index("ix_otp_access_requests_department_id_status", "department_id", "status"),
        Index("ix_otp_access_requests_device_binding", "device_id", "username_key",
              "email_key", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(256))
    username_key: Mapped[str] = mapped_column(String(256))  # casefolded, for matching
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    is_emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    device: Mapped[Device] = relationship()
    department: Mapped[Department] = relationship()


class OneTimePassword(db.Model):
    """A code bound to (device, username, email). At rest: a keyed hash of the code and
    its binding (to verify) and, only until it is used or expires, a copy encrypted with a
    key kept outside the database (to resend the same code). Never plaintext."""

    __tablename__ = "one_time_passwords"
    __table_args__ = (
        Index("ix_one_time_passwords_device_binding", "device_id", "username_key",
              "email_key", "expires_at"),
        # The expiry job drops the sealed copies of codes that ran out.
        Index("ix_one_time_passwords_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(256))
    username_key: Mapped[str] = mapped_column(String(256))
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    issued_via: Mapped[str] = mapped_column(String(16))
    issued_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    access_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("otp_access_requests.id", ondelete="SET NULL"), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    device: Mapped[Device] = relationship()


class OtpFailureCounter(db.Model):
    """Consecutive failed verifications per (device, username)."""

    __tablename__ = "otp_failure_counters"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    username_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ClientSession(db.Model):
    """An OS login on a device that used a one-time password."""

    __tablename__ = "client_sessions"
    __table_args__ = (
        Index("ix_client_sessions_device_id_started_at", "device_id", "started_at"),
        Index("ix_client_sessions_department_id_started_at", "department_id", "started_at"),
        # State "running": the department's running sessions, newest first (few rows).
        Index("ix_client_sessions_running", "department_id", "started_at", "id",
              sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"))
    otp_id: Mapped[int | None] = mapped_column(
        ForeignKey("one_time_passwords.id", ondelete="SET NULL"), nullable=True)
    username: Mapped[str] = mapped_column(String(256))
    email: Mapped[str] = mapped_column(String(254))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    device: Mapped[Device] = relationship()

    @property
    def user_name(self) -> str:
        """As the client session list shows it: `<logged in user> (<email>)`."""
        return f"{self.username} ({self.email})"


# The "Person" filter (matched case-blind on the user name and the email): a person's
# sessions without reading every session of the department.
Index("ix_client_sessions_department_id_lower_username", ClientSession.department_id,
      func.lower(ClientSession.username), ClientSession.started_at)
Index("ix_client_sessions_department_id_lower_email", ClientSession.department_id,
      func.lower(ClientSession.email), ClientSession.started_at)
