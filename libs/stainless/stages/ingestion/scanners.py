"""Scanner credentials: keys are shown once, stored as hashes, rotated and revoked."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlmodel import Session, select

from stainless.core.db.models import Scanner, utcnow

KEY_PREFIX = "stl"


class ScannerError(ValueError):
    """An admin action on scanners that cannot be done (unknown or duplicate name)."""


def _hash(key: str) -> str:
    # Keys are 256-bit random secrets: a fast hash is enough, no password hashing needed.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """A fresh API key: ``(plaintext, lookup prefix, hash)``."""
    lookup = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}"
    return key, lookup, _hash(key)


def register_scanner(session: Session, *, name: str) -> tuple[Scanner, str]:
    """Create a scanner; return it and its API key (the only time the key is visible)."""
    if session.exec(select(Scanner).where(Scanner.name == name)).first() is not None:
        raise ScannerError(f"a scanner named {name!r} already exists")
    key, lookup, digest = new_key()
    scanner = Scanner(name=name, key_prefix=lookup, key_hash=digest)
    session.add(scanner)
    session.flush()
    return scanner, key


def _named(session: Session, name: str) -> Scanner:
    scanner = session.exec(select(Scanner).where(Scanner.name == name)).first()
    if scanner is None:
        raise ScannerError(f"no scanner named {name!r}")
    return scanner


def rotate_key(session: Session, *, name: str) -> str:
    """Replace the scanner's key (the old one stops working) and re-enable it."""
    scanner = _named(session, name)
    key, lookup, digest = new_key()
    scanner.key_prefix, scanner.key_hash, scanner.revoked_at = lookup, digest, None
    session.add(scanner)
    return key


def revoke(session: Session, *, name: str) -> None:
    scanner = _named(session, name)
    scanner.revoked_at = utcnow()
    session.add(scanner)


def authenticate(session: Session, key: str) -> Scanner | None:
    """The scanner owning ``key`` if the key is valid and not revoked, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    digest = _hash(key)
    for scanner in session.exec(select(Scanner).where(Scanner.key_prefix == parts[1])):
        if hmac.compare_digest(scanner.key_hash, digest) and scanner.revoked_at is None:
            return scanner
    return None
