"""API keys: random secrets shown once, stored as a lookup prefix and a hash.

A key reads ``<kind>_<lookup>_<secret>``: ``kind`` says what it opens (``stl`` a scanner's
uploads, ``srk`` the results API), ``lookup`` finds its row without scanning every hash,
and only the SHA-256 of the whole key is stored (keys are 256-bit random secrets: a fast
hash is enough, no password hashing needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["IssuedKey", "digest_matches", "issue_key", "key_digest", "lookup_of"]


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the plaintext: handed out once, never stored
    lookup: str
    digest: str


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(kind: str) -> IssuedKey:
    """A fresh key of ``kind``."""
    lookup = secrets.token_hex(4)
    key = f"{kind}_{lookup}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key, lookup, key_digest(key))


def lookup_of(key: str, kind: str) -> str | None:
    """The lookup part of a key of ``kind``; None when the key is not of that shape."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or not parts[1]:
        return None
    return parts[1]


def digest_matches(stored: str, key: str) -> bool:
    """Whether ``key`` hashes to ``stored`` (compared in constant time)."""
    return hmac.compare_digest(stored, key_digest(key))
