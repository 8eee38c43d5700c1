from __future__ import annotations

import pytest
from sqlmodel import Session

from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.stages.ingestion.scanners import (
    ScannerError,
    authenticate,
    register_scanner,
    revoke,
    rotate_key,
)


def test_keys_authenticate_rotate_and_revoke(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with session_scope(engine) as session:
        scanner, key = register_scanner(session, name="s1")
    assert key not in (scanner.key_hash, scanner.key_prefix)
    with Session(engine) as session:
        found = authenticate(session, key)
        assert found is not None and found.id == scanner.id
        assert authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert authenticate(session, "garbage") is None
    with session_scope(engine) as session:
        new = rotate_key(session, name="s1")
    with Session(engine) as session:
        assert authenticate(session, key) is None
        assert authenticate(session, new) is not None
    with session_scope(engine) as session:
        revoke(session, name="s1")
    with Session(engine) as session:
        assert authenticate(session, new) is None


def test_admin_errors_are_clear(sqlite_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=sqlite_url))
    with session_scope(engine) as session:
        register_scanner(session, name="dup")
    with pytest.raises(ScannerError, match="already exists"), session_scope(engine) as session:
        register_scanner(session, name="dup")
    with pytest.raises(ScannerError, match="no scanner named 'ghost'"), session_scope(engine) as s:
        rotate_key(s, name="ghost")
