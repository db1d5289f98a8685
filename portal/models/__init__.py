"""Typed SQLAlchemy models, one module per aggregate."""
from portal.models.accounts import ApiToken, LoginSession, LoginThrottle, Membership, User
from portal.models.audit import AuditHead, AuditEvent
from portal.models.departments import (
    Department,
    DepartmentSettings,
    Device,
    DeviceGroup,
    Exclusion,
)
from portal.models.otp import ClientSession, OneTimePassword, OtpAccessRequest, OtpFailureCounter
from portal.models.requests import (
    ApprovalLink,
    OutboxMessage,
    PreApproval,
    RemoteSession,
    RemoteSessionPerson,
    RequestApproval,
    RequestReport,
    SessionRequest,
)

__all__ = [
    "ClientSession",
    "OneTimePassword",
    "OtpAccessRequest",
    "OtpFailureCounter",
    "ApiToken",
    "ApprovalLink",
    "OutboxMessage",
    "PreApproval",
    "RemoteSession",
    "RemoteSessionPerson",
    "RequestApproval",
    "RequestReport",
    "SessionRequest",
    "AuditHead",
    "AuditEvent",
    "Department",
    "DepartmentSettings",
    "Device",
    "DeviceGroup",
    "Exclusion",
    "LoginSession",
    "LoginThrottle",
    "Membership",
    "User",
]
