"""Random secrets and their keyed hashes. Only hashes are stored; compare in constant time."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


def new_token() -> str:
    """256 bits from the OS CSPRNG, URL-safe, never starting with "-": a token is passed to
    commands as an argument (`tokens revoke TOKEN`), where a leading dash reads as an option."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def _key() -> bytes:
    """PORTAL_TOKEN_HASH_KEY: apart from the secret key, so rotating that one keeps every
    token, sign-in session and link."""
    key = current_app.config["TOKEN_HASH_KEY"]
    return hashlib.sha256(b"session-gate token hash\n" + str(key).encode()).digest()


def keyed_hash(value: str) -> str:
    return hmac.new(_key(), value.encode(), hashlib.sha256).hexdigest()


# --- one-time passwords ----------------------------------------------------------------
# A code is stored twice: a keyed hash of it with its binding (to verify, by an indexed
# look-up of the hash), and — only until it is used or expires — a copy sealed with
# AES-256-GCM (the `cryptography` library) so a resend sends the same code. The sealing
# key is derived (HKDF-SHA256) from PORTAL_TOKEN_HASH_KEY, which is never in the database;
# the binding is the associated data, so a copy moved to another row won't open.


def code_hash(binding: str, code: str) -> str:
    return keyed_hash(f"one-time password\n{binding}\n{code}")


def _sealing_key() -> bytes:
    key = str(current_app.config["TOKEN_HASH_KEY"]).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"session-gate one-time password resend copy").derive(key)


def seal_code(binding: str, code: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_sealing_key()).encrypt(nonce, code.encode(), binding.encode())


def open_code(binding: str, sealed: bytes | None) -> str | None:
    """The sealed code, or None (no copy any more, or it doesn't belong to `binding`)."""
    if not sealed or len(sealed) < 13:
        return None
    try:
        return AESGCM(_sealing_key()).decrypt(sealed[:12], sealed[12:],
                                              binding.encode()).decode()
    except InvalidTag:
        return None
