"""Defaults only. The environment is read in create_app via from_prefixed_env("PORTAL")."""


class DefaultConfig:
    SECRET_KEY: str | None = None  # sessions and CSRF
    TOKEN_HASH_KEY: str | None = None  # keyed hashes of tokens, sign-in sessions and links
    SQLALCHEMY_DATABASE_URI: str | None = None  # None: SQLite file in the instance folder
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    # A pooled connection idle this long is pinged before use (portal.connection_checks).
    DB_PING_AFTER_IDLE_SECONDS = 1.0
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    PERMANENT_SESSION_LIFETIME = 8 * 3600
    # A sign-in session ends on the server this long after sign-in, or after this long
    # without a request, whichever comes first.
    SESSION_ABSOLUTE_LIFETIME_SECONDS = 12 * 3600
    SESSION_IDLE_TIMEOUT_SECONDS = 30 * 60
    REMEMBER_COOKIE_DURATION = 0
    WTF_CSRF_TIME_LIMIT = 8 * 3600
    MAX_CONTENT_LENGTH = 64 * 1024
    BASE_URL = "http://127.0.0.1:5000"
    MAIL_SERVER: str | None = None  # None: mail stays in the outbox (dev "Outbox" page)
    MAIL_PORT = 25
    MAIL_DEFAULT_SENDER = "Session Gate <session-gate@localhost>"
    # Sign-in throttling: failures per key within the window, then a lock.
    LOGIN_MAX_FAILURES_PER_EMAIL = 5
    LOGIN_MAX_FAILURES_PER_IP = 30
    LOGIN_THROTTLE_WINDOW_SECONDS = 15 * 60
    LOGIN_LOCK_SECONDS = 15 * 60
    PAGE_SIZE = 25
    # argon2id (RFC 9106 second recommended option: t=3, m=64 MiB, p=4).
    ARGON2_TIME_COST = 3
    ARGON2_MEMORY_COST_KIB = 64 * 1024
    ARGON2_PARALLELISM = 4
    # Trust X-Forwarded-For from this many proxies (0: use the socket address).
    PROXY_FIX_X_FOR = 0
    # The directory (Active Directory or any LDAP server) for one-time passwords; see
    # design.md. No LDAP_URL: no directory (directory requests answer 503).
    LDAP_URL: str | None = None  # ldap://… or ldaps://…; several, space-separated: a pool
    LDAP_BIND_DN: str | None = None
    LDAP_BIND_PASSWORD: str | None = None
    LDAP_BASE_DN: str = ""
    LDAP_USER_FILTER = "(sAMAccountName={username})"  # {username} escaped per RFC 4515
    LDAP_MAIL_ATTRIBUTE = "mail"
    LDAP_START_TLS = False
    LDAP_CA_FILE: str | None = None
    LDAP_TIMEOUT_SECONDS = 5
