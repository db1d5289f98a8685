"""Random secrets and their keyed hashes. Only hashes are stored; compare in constant time."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import current_app


def new_token() -> str:
    """256 bits from the OS CSPRNG, URL-safe."""
    return secrets.token_urlsafe(32)


def _key() -> bytes:
    """PORTAL_TOKEN_HASH_KEY: apart from the secret key, so rotating that one keeps every
    token, sign-in session and link."""
    key = current_app.config["TOKEN_HASH_KEY"]
    return hashlib.sha256(b"session-gate token hash\n" + str(key).encode()).digest()


def keyed_hash(value: str) -> str:
    return hmac.new(_key(), value.encode(), hashlib.sha256).hexdigest()
