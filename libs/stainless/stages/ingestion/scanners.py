"""Scanner credentials: keys (``stainless.core.keys``) are shown once, stored as hashes,
rotated and revoked."""

from __future__ import annotations

from sqlmodel import Session, select

from stainless.core.db.models import Scanner, utcnow
from stainless.core.keys import digest_matches, issue_key, lookup_of

KEY_PREFIX = "stl"


class ScannerError(ValueError):
    """An admin action on scanners that cannot be done (unknown or duplicate name)."""


def register_scanner(session: Session, *, name: str) -> tuple[Scanner, str]:
    """Create a scanner; return it and its API key (the only time the key is visible)."""
    if session.exec(select(Scanner).where(Scanner.name == name)).first() is not None:
        raise ScannerError(f"a scanner named {name!r} already exists")
    issued = issue_key(KEY_PREFIX)
    scanner = Scanner(name=name, key_prefix=issued.lookup, key_hash=issued.digest)
    session.add(scanner)
    session.flush()
    return scanner, issued.key


def _named(session: Session, name: str) -> Scanner:
    scanner = session.exec(select(Scanner).where(Scanner.name == name)).first()
    if scanner is None:
        raise ScannerError(f"no scanner named {name!r}")
    return scanner


def rotate_key(session: Session, *, name: str) -> str:
    """Replace the scanner's key (the old one stops working) and re-enable it."""
    scanner = _named(session, name)
    issued = issue_key(KEY_PREFIX)
    scanner.key_prefix, scanner.key_hash, scanner.revoked_at = issued.lookup, issued.digest, None
    session.add(scanner)
    return issued.key


def revoke(session: Session, *, name: str) -> None:
    scanner = _named(session, name)
    scanner.revoked_at = utcnow()
    session.add(scanner)


def authenticate(session: Session, key: str) -> Scanner | None:
    """The scanner owning ``key`` if the key is valid and not revoked, else None."""
    lookup = lookup_of(key, KEY_PREFIX)
    if lookup is None:
        return None
    for scanner in session.exec(select(Scanner).where(Scanner.key_prefix == lookup)):
        if digest_matches(scanner.key_hash, key) and scanner.revoked_at is None:
            return scanner
    return None
