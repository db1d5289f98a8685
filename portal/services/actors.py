"""Who is acting, as recorded in the audit trail."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    label: str  # a user's email, "cli", "system" or "device:<name>"
    user_id: int | None = None
    client_ip: str = ""

    @classmethod
    def for_user(cls, user, client_ip: str = "") -> Actor:
        return cls(label=user.email, user_id=user.id, client_ip=client_ip)


CLI = Actor(label="cli")
SYSTEM = Actor(label="system")
