"""Departments with their devices, device groups, exclusions and settings."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.domain import settings as rules
from portal.extensions import db
from portal.models.accounts import Membership, User
from portal.models.types import UTCDateTime


class Department(db.Model):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="department", cascade="all, delete-orphan"
    )
    settings: Mapped[DepartmentSettings] = relationship(
        back_populates="department", cascade="all, delete-orphan", uselist=False
    )

    def __repr__(self) -> str:
        return f"<Department {self.name}>"


class DeviceGroup(db.Model):
    __tablename__ = "device_groups"
    __table_args__ = (UniqueConstraint("department_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    department: Mapped[Department] = relationship()


class Device(db.Model):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    os: Mapped[str] = mapped_column(String(100), default="")
    ip_address: Mapped[str] = mapped_column(String(45), default="")
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), index=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_groups.id", ondelete="SET NULL"), nullable=True, index=True
    )
    is_locked: Mapped[bool] = mapped_column(Boolean, default=False)
    logged_in_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the device last got a *new* one-time password (the minimum interval runs
    # from here; a resend of the same code doesn't move it).
    last_new_otp_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    department: Mapped[Department] = relationship()
    group: Mapped[DeviceGroup | None] = relationship()
    # Its department's settings directly (read only; they belong to the department): a
    # look-up by the settings' key (the one-time password check's snapshot of the device
    # comes with them: accounts.find_token_owner, with_settings).
    department_settings: Mapped[DepartmentSettings] = relationship(
        primaryjoin="foreign(Device.department_id) == remote(DepartmentSettings.department_id)",
        viewonly=True)

    def __repr__(self) -> str:
        return f"<Device {self.name}>"


class Exclusion(db.Model):
    """A device or a group excluded from session confirmation."""

    __tablename__ = "exclusions"
    __table_args__ = (
        CheckConstraint("(device_id IS NULL) <> (group_id IS NULL)", name="device_or_group"),
        UniqueConstraint("device_id"),
        UniqueConstraint("group_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), nullable=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE"), nullable=True
    )
    excluded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    excluded_by_email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    device: Mapped[Device | None] = relationship()
    group: Mapped[DeviceGroup | None] = relationship()
    excluded_by: Mapped[User | None] = relationship()


class DepartmentSettings(db.Model):
    """One set of settings per department; field names follow design.md's labels."""

    __tablename__ = "department_settings"
    __table_args__ = (
        CheckConstraint(
            f"confirmation_timeout_seconds BETWEEN {rules.CONFIRMATION_TIMEOUT.low} "
            f"AND {rules.CONFIRMATION_TIMEOUT.high}",
            name="confirmation_timeout_range",
        ),
        CheckConstraint(
            f"email_authorization_timeout_seconds BETWEEN {rules.EMAIL_TIMEOUT.low} "
            f"AND {rules.EMAIL_TIMEOUT.high}",
            name="email_timeout_range",
        ),
        CheckConstraint(
            f"otp_expiration_minutes BETWEEN {rules.OTP_EXPIRATION.low} "
            f"AND {rules.OTP_EXPIRATION.high}",
            name="otp_expiration_range",
        ),
        CheckConstraint(
            f"otp_min_interval_minutes BETWEEN {rules.OTP_MIN_INTERVAL.low} "
            f"AND {rules.OTP_MIN_INTERVAL.high}",
            name="otp_min_interval_range",
        ),
        CheckConstraint(
            f"approvals_required BETWEEN {rules.APPROVALS_REQUIRED.low} "
            f"AND {rules.APPROVALS_REQUIRED.high}",
            name="approvals_required_range",
        ),
        CheckConstraint(
            f"report_cooldown_minutes BETWEEN {rules.REPORT_COOLDOWN.low} "
            f"AND {rules.REPORT_COOLDOWN.high}",
            name="report_cooldown_range",
        ),
        CheckConstraint(
            f"preapproval_max_hours BETWEEN {rules.PREAPPROVAL_MAX_HOURS.low} "
            f"AND {rules.PREAPPROVAL_MAX_HOURS.high}",
            name="preapproval_max_hours_range",
        ),
        CheckConstraint(
            f"escalate_after_seconds BETWEEN {rules.ESCALATE_AFTER.low} "
            f"AND {rules.ESCALATE_AFTER.high}",
            name="escalate_after_range",
        ),
    )

    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), primary_key=True
    )
    # Session Confirmation
    is_confirmation_shown: Mapped[bool] = mapped_column(Boolean, default=False)
    confirmation_message: Mapped[str] = mapped_column(
        Text, default=rules.DEFAULT_CONFIRMATION_MESSAGE
    )
    confirmation_timeout_seconds: Mapped[int] = mapped_column(
        Integer, default=rules.CONFIRMATION_TIMEOUT.default
    )
    is_shown_when_locked: Mapped[bool] = mapped_column(Boolean, default=False)
    # Email Authorization
    is_email_authorization_required: Mapped[bool] = mapped_column(Boolean, default=False)
    email_authorization_timeout_seconds: Mapped[int] = mapped_column(
        Integer, default=rules.EMAIL_TIMEOUT.default
    )
    email_recipients: Mapped[str] = mapped_column(Text, default="")  # one address per line
    is_sign_in_required_to_decide: Mapped[bool] = mapped_column(Boolean, default=True)
    # One-Time Passwords
    is_otp_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_otp_auto_sent_to_directory_users: Mapped[bool] = mapped_column(Boolean, default=False)
    is_otp_auto_sent_to_internal_users: Mapped[bool] = mapped_column(Boolean, default=False)
    otp_expiration_minutes: Mapped[int] = mapped_column(
        Integer, default=rules.OTP_EXPIRATION.default
    )
    otp_min_interval_minutes: Mapped[int] = mapped_column(
        Integer, default=rules.OTP_MIN_INTERVAL.default
    )
    # Approvals
    is_reason_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false())
    approvals_required: Mapped[int] = mapped_column(
        Integer, default=rules.APPROVALS_REQUIRED.default,
        server_default=text(str(rules.APPROVALS_REQUIRED.default)))
    is_number_matching_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false())
    is_fallback_to_email: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false())
    # One address a line, like email_recipients; empty: no escalation.
    escalation_recipients: Mapped[str] = mapped_column(Text, default="", server_default="")
    escalate_after_seconds: Mapped[int] = mapped_column(
        Integer, default=rules.ESCALATE_AFTER.default,
        server_default=text(str(rules.ESCALATE_AFTER.default)))
    report_cooldown_minutes: Mapped[int] = mapped_column(
        Integer, default=rules.REPORT_COOLDOWN.default,
        server_default=text(str(rules.REPORT_COOLDOWN.default)))
    preapproval_max_hours: Mapped[int] = mapped_column(
        Integer, default=rules.PREAPPROVAL_MAX_HOURS.default,
        server_default=text(str(rules.PREAPPROVAL_MAX_HOURS.default)))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    department: Mapped[Department] = relationship(back_populates="settings")

    @property
    def recipients(self) -> list[str]:
        return [line for line in self.email_recipients.splitlines() if line]

    @property
    def escalation_addresses(self) -> list[str]:
        """"Escalate to", one address per item (empty: no escalation)."""
        return [line for line in self.escalation_recipients.splitlines() if line]
