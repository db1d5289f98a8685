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
    key = current_app.config.get("TOKEN_HASH_KEY") or current_app.config["SECRET_KEY"]
    return hashlib.sha256(b"session-gate token hash\n" + str(key).encode()).digest()


def keyed_hash(value: str) -> str:
    return hmac.new(_key(), value.encode(), hashlib.sha256).hexdigest()
