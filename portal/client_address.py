"""The client's address as the app sees it: a valid IP address or "", decided once for
the web pages and the API alike. Behind ProxyFix, REMOTE_ADDR comes from X-Forwarded-For,
which the client writes: 5,000 characters, "not-an-ip" or "<script>" must neither fail
the 45-character client_ip columns (a 500 on PostgreSQL) nor land in the audit trail."""
from __future__ import annotations

import ipaddress


def valid_ip(raw: str | None) -> str:
    """The address in its normal form; "" for anything else. A zone ("fe80::1%eth0") is
    dropped; the forms proxies add — "[v6]", "[v6]:port", "v4:port" — are read."""
    text = (raw or "").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    text = text.partition("%")[0]
    if not text or len(text) > 45:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


class ValidRemoteAddr:
    """WSGI middleware, inside ProxyFix: whatever REMOTE_ADDR ProxyFix took from the
    header, the app reads a valid address or ""."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        environ["REMOTE_ADDR"] = valid_ip(environ.get("REMOTE_ADDR"))
        return self.app(environ, start_response)
