"""Secrets at rest: one-way hashes for tokens we only compare, encryption for what we must reuse."""

import base64
import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Tokens are 256 random bits, so a plain SHA-256 is a sufficient one-way function for lookup."""
    return hashlib.sha256(token.encode()).hexdigest()


def hashes_match(candidate: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(candidate), stored_hash)


def sign(purpose: str, value: str) -> str:
    key = hashlib.sha256(f"{purpose}:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = base64.urlsafe_b64encode(hashlib.sha256(f"field-encryption:{secret_key}".encode()).digest())
        return MultiFernet([Fernet(derived)])
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS), settings.SECRET_KEY)


class DecryptionError(Exception):
    pass


def encrypt_json(value: Any) -> str:
    return fernet().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def decrypt_json(sealed: str) -> Any:
    if not sealed:
        return None
    try:
        return json.loads(fernet().decrypt(sealed.encode()))
    except InvalidToken:
        raise DecryptionError("stored secret can't be decrypted with the configured keys") from None


def rotate(sealed: str) -> str:
    """Re-encrypt with the first (current) key."""
    return fernet().rotate(sealed.encode()).decode() if sealed else sealed


def hashes_match_plain(candidate: str, expected: str) -> bool:
    return hmac.compare_digest(candidate.encode(), expected.encode())
