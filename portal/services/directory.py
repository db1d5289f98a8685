"""The directory (Active Directory or any LDAP server): a directory user's mail address,
for sending them a one-time password (design.md, "Directory …" under "One-time
passwords"). One lookup is one connection through ldap3: open (a pool when
PORTAL_LDAP_URL names several servers), StartTLS when asked, bind, search, unbind —
all within PORTAL_LDAP_TIMEOUT_SECONDS.

Outcomes, as the API tells them: no single entry with a usable mail address →
NotInDirectoryError (422); no directory configured, the directory down, refusing the
portal's bind, failing the certificate check or too slow → DirectoryUnavailableError
(503). Neither message names a server, a DN or a password; the log says what went wrong
(server and reason, never the bind DN or password)."""
from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from ldap3 import ANONYMOUS, FIRST, NONE, SIMPLE, SYNC, Connection, Server, ServerPool, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.config import set_config_parameter
from ldap3.utils.conv import escape_filter_chars
from pyasn1.error import PyAsn1Error

from portal.domain.errors import BadRequestError, DirectoryUnavailableError, NotInDirectoryError

log = logging.getLogger("portal.directory")

MAX_USERNAME_LENGTH = 256
NOT_CONFIGURED = "No directory is configured."
MISCONFIGURED = "The directory settings are not valid. Ask an administrator to check them."
UNAVAILABLE = ("The directory can't be reached right now. Try again in a few minutes, "
               "or ask for emergency access.")
NOT_FOUND = ("No directory user “{username}” with an email address. "
             "Ask for emergency access instead.")
BAD_USERNAME = f"The user name must be 1 to {MAX_USERNAME_LENGTH} printable characters."

RESULT_SUCCESS = 0
RESULT_SIZE_LIMIT_EXCEEDED = 4  # more entries than asked for: the name is ambiguous
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"", "0", "false", "no", "off"}


class _LookupFailed(Exception):
    """The directory answered, but not with an answer (a refused bind, a missing base DN);
    the reason goes to the log only."""


def is_configured(config: Mapping[str, Any] | None = None) -> bool:
    """Whether PORTAL_LDAP_URL names a directory."""
    config = current_app.config if config is None else config
    return bool(str(config.get("LDAP_URL") or "").strip())


def find_mail(username: str, *, config: Mapping[str, Any] | None = None) -> str:
    """The mail address of the one directory entry that the user filter matches for
    `username` (the app's PORTAL_LDAP_* settings unless `config` is given)."""
    config = current_app.config if config is None else config
    _check_username(username)
    if not is_configured(config):
        raise DirectoryUnavailableError(NOT_CONFIGURED)
    settings = _settings(config)
    deadline = time.monotonic() + settings.timeout
    try:
        entries = _search(settings, username, deadline)
    except (LDAPException, OSError, PyAsn1Error, _LookupFailed) as exc:
        # ldap3's messages name addresses and LDAP result codes, never the bind password.
        log.warning("Directory lookup failed (%s): %s: %s", settings.where,
                    type(exc).__name__, exc)
        raise DirectoryUnavailableError(UNAVAILABLE) from None
    mail = _only_mail(entries, settings.mail_attribute)
    if mail is None:
        raise NotInDirectoryError(NOT_FOUND.format(username=username))
    return mail


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Url:
    host: str
    port: int
    is_ldaps: bool


@dataclass(frozen=True)
class _Settings:
    urls: tuple[_Url, ...]
    bind_dn: str | None
    bind_password: str | None = field(repr=False)
    base_dn: str
    user_filter: str
    mail_attribute: str
    is_start_tls: bool
    ca_file: str | None
    timeout: float

    @property
    def where(self) -> str:
        return " ".join(f"{'ldaps' if u.is_ldaps else 'ldap'}://{u.host}:{u.port}"
                        for u in self.urls)


def _misconfigured(reason: str) -> DirectoryUnavailableError:
    log.warning("Directory settings are not valid: %s", reason)
    return DirectoryUnavailableError(MISCONFIGURED)


def _settings(config: Mapping[str, Any]) -> _Settings:
    user_filter = _text(config.get("LDAP_USER_FILTER")) or "(sAMAccountName={username})"
    if "{username}" not in user_filter:
        raise _misconfigured("PORTAL_LDAP_USER_FILTER has no {username}")
    raw_timeout = config.get("LDAP_TIMEOUT_SECONDS")
    try:
        timeout = 5.0 if raw_timeout in (None, "") else float(raw_timeout)
    except (TypeError, ValueError):
        timeout = math.nan
    if not 0 < timeout <= 600:  # NaN fails too
        raise _misconfigured("PORTAL_LDAP_TIMEOUT_SECONDS must be seconds, more than 0, "
                             "at most 600")
    return _Settings(
        urls=tuple(_parse_url(url) for url in str(config.get("LDAP_URL") or "").split()),
        bind_dn=_text(config.get("LDAP_BIND_DN")) or None,
        bind_password=None if config.get("LDAP_BIND_PASSWORD") is None
        else str(config.get("LDAP_BIND_PASSWORD")),
        base_dn=_text(config.get("LDAP_BASE_DN")),
        user_filter=user_filter,
        mail_attribute=_text(config.get("LDAP_MAIL_ATTRIBUTE")) or "mail",
        is_start_tls=_flag("PORTAL_LDAP_START_TLS", config.get("LDAP_START_TLS")),
        ca_file=_text(config.get("LDAP_CA_FILE")) or None,
        timeout=timeout,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _flag(name: str, value: Any) -> bool:
    """A boolean from the environment: from_prefixed_env turns `true` and `1` into
    JSON values, but `True`, `yes` or `on` stay strings."""
    if isinstance(value, (bool, int)) or value is None:
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    # Not silently off: a typo must not turn TLS off.
    raise _misconfigured(f"{name} must be true or false")


def _parse_url(raw: str) -> _Url:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise _misconfigured("PORTAL_LDAP_URL has a malformed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise _misconfigured("PORTAL_LDAP_URL must be ldap://host[:port] or ldaps://host[:port]")
    if parts.username or parts.password:
        raise _misconfigured("PORTAL_LDAP_URL must not hold credentials "
                             "(use PORTAL_LDAP_BIND_DN and PORTAL_LDAP_BIND_PASSWORD)")
    is_ldaps = scheme == "ldaps"
    return _Url(host=parts.hostname, port=port or (636 if is_ldaps else 389), is_ldaps=is_ldaps)


def _check_username(username: Any) -> None:
    if (not isinstance(username, str) or not username.strip()
            or len(username) > MAX_USERNAME_LENGTH or not username.isprintable()):
        raise BadRequestError(BAD_USERNAME)


# --- the lookup ----------------------------------------------------------------------


class _VerifiedTls(Tls):
    """TLS that checks the server's certificate against LDAP_CA_FILE (the system's trust
    store without one) and its host name, through the standard library. ldap3 2.9
    checks the name itself with ssl.match_hostname, deprecated since Python 3.7 and
    gone in 3.12."""

    def __init__(self, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)

    def wrap_socket(self, connection, do_handshake=False):
        context = ssl.create_default_context(cafile=self.ca_certs_file)  # CERT_REQUIRED
        connection.socket = context.wrap_socket(
            connection.socket, server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake)


def _servers(settings: _Settings) -> Server | ServerPool:
    """One server, or a pool tried in order (FIRST): the first that accepts a TCP
    connection serves the lookup, so a server that is down (connection refused) costs
    nothing and one that doesn't answer at all costs its share of the time budget.
    The pool lives for one lookup (a lookup is a person at a login screen, not a
    stream), so a server that comes back is used at once: nothing to exhaust."""
    tls = _VerifiedTls(settings.ca_file)
    share = settings.timeout / len(settings.urls)
    servers = [Server(url.host, port=url.port, use_ssl=url.is_ldaps, tls=tls, get_info=NONE,
                      connect_timeout=share) for url in settings.urls]
    if len(servers) == 1:
        return servers[0]
    # ldap3 sleeps this long (10 s by default) after a round found no server, even when
    # it makes no further round: that would be spent beyond our budget.
    set_config_parameter("POOLING_LOOP_TIMEOUT", 0)
    return ServerPool(servers, FIRST, active=1, exhaust=False)


def _within(connection: Connection, deadline: float) -> int:
    """What is left of the budget, as the socket's timeout for the next exchange (ldap3
    sets its receive timeout once, when it connects); whole seconds for the server's own
    time limit."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _LookupFailed("over the time budget")
    connection.socket.settimeout(left)
    return max(1, int(left))


def _search(settings: _Settings, username: str, deadline: float) -> list[dict]:
    connection = Connection(
        _servers(settings), user=settings.bind_dn, password=settings.bind_password,
        authentication=SIMPLE if settings.bind_dn else ANONYMOUS, client_strategy=SYNC,
        read_only=True, auto_referrals=False, raise_exceptions=False,
        receive_timeout=max(1, math.ceil(settings.timeout)))
    try:
        connection.open(read_server_info=False)
        _within(connection, deadline)
        if settings.is_start_tls and not connection.server.ssl:
            connection.start_tls(read_server_info=False)
            _within(connection, deadline)
        if not connection.bind(read_server_info=False):
            raise _LookupFailed(f"bind refused: {connection.result.get('description')}")
        time_limit = _within(connection, deadline)
        search_filter = settings.user_filter.replace("{username}", escape_filter_chars(username))
        connection.search(settings.base_dn, search_filter, attributes=[settings.mail_attribute],
                          size_limit=2, time_limit=time_limit)
        result = connection.result
        if result.get("result") not in (RESULT_SUCCESS, RESULT_SIZE_LIMIT_EXCEEDED):
            raise _LookupFailed(f"search failed: {result.get('description')} "
                                f"{result.get('message') or ''}".strip())
        return [entry for entry in connection.response or ()
                if entry.get("type") == "searchResEntry"]
    finally:
        try:
            connection.unbind()
        except (LDAPException, OSError):
            pass
        if connection.socket is not None:  # ldap3 keeps the socket of a failed connect
            connection.socket.close()


def _only_mail(entries: list[dict], attribute: str) -> str | None:
    """The mail address of the only entry; several entries are as good as none
    (design.md), and so is a value that is no mail address."""
    if len(entries) != 1:
        return None
    for raw in entries[0].get("raw_attributes", {}).get(attribute) or ():
        try:
            return validate_email(raw.decode("utf-8").strip(),
                                  check_deliverability=False).normalized
        except (UnicodeDecodeError, EmailNotValidError):
            continue
    return None
