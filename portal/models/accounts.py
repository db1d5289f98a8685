"""Users, their roles per department, sign-in sessions, API tokens, sign-in throttling."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.domain.permissions import DEPARTMENT_ROLES
from portal.extensions import db
from portal.models.types import UTCDateTime


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # Flask-Login: the identity kept in the cookie is the sign-in session, not the user id,
    # so that signing out (or disabling the user) ends it on the server.
    login_session_token = None  # set per request by the user loader (not a column)

    @property
    def is_active(self) -> bool:
        return self.is_enabled

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str | None:
        return self.login_session_token

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "department_id", "role"),
        CheckConstraint(
            "role IN (" + ", ".join(f"'{role}'" for role in DEPARTMENT_ROLES) + ")", name="role"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    department_id: Mapped[int] = mapped_column(
        ForeignKey("departments.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="memberships")
    department: Mapped["Department"] = relationship(back_populates="memberships")  # noqa: F821


class LoginSession(db.Model):
    """One signed-in browser. The cookie carries the token; only its hash is stored."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Last request seen on this session (the idle timeout), touched at most once a minute.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)

    user: Mapped[User] = relationship()


class ApiToken(db.Model):
    """Bearer token of a user (technician console) or a device (agent); stored hashed."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(
            "(user_id IS NULL) <> (device_id IS NULL)", name="one_owner"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User | None] = relationship()
    device: Mapped["Device | None"] = relationship()  # noqa: F821


class LoginThrottle(db.Model):
    """Failed sign-ins counted per key ("email:…" or "ip:…") within a window."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
