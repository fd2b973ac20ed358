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


def _secret_keys() -> tuple[str, ...]:
    """SECRET_KEY, then SECRET_KEY_FALLBACKS: what was signed or derived from a previous key
    stays valid while that key is kept as a fallback."""
    return (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)


def sign(purpose: str, value: str, secret_key: str | None = None) -> str:
    secret = settings.SECRET_KEY if secret_key is None else secret_key
    key = hashlib.sha256(f"{purpose}:{secret}".encode()).digest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def signed_matches(purpose: str, value: str, candidate: str) -> bool:
    """Whether `candidate` is `sign(purpose, value)` under SECRET_KEY or one of its fallbacks."""
    return any(hashes_match_plain(candidate, sign(purpose, value, key)) for key in _secret_keys())


def _derived_key(secret_key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(f"field-encryption:{secret_key}".encode()).digest())


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_keys: tuple[str, ...]) -> MultiFernet:
    """The first of FIELD_ENCRYPTION_KEYS encrypts (the key derived from SECRET_KEY when there is
    none); all of them decrypt, then the keys derived from SECRET_KEY and its fallbacks, so that
    nothing written before FIELD_ENCRYPTION_KEYS was set, or before SECRET_KEY changed, is lost.
    `rotate_keys` rewrites everything with the first key, after which the old ones can go."""
    explicit = [Fernet(key.encode()) for key in keys]
    return MultiFernet(explicit + [Fernet(_derived_key(secret)) for secret in secret_keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS), _secret_keys())


def fernet_key_problem(key: str) -> str:
    """Why `key` can't be a FIELD_ENCRYPTION_KEYS entry ("" if it can); never quotes the key."""
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return "is not a Fernet key (32 random bytes, url-safe base64: Fernet.generate_key())"
    return ""


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
