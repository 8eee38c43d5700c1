"""Engines and sessions for the configured database (SQLite or Postgres)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from stainless.core.config import DatabaseSettings

log = structlog.get_logger(__name__)


def ensure_sqlite_folder(database_url: str) -> None:
    """Create the folder of a SQLite database file (nothing for other databases)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_db_engine(settings: DatabaseSettings) -> Engine:
    """Create an engine; for SQLite the file's folder is made and foreign keys are enforced.
    A server's connections are tested as they leave the pool (a restarted server dropped
    them); a file's need no test."""
    url = make_url(settings.url)
    kwargs: dict[str, Any] = {"echo": settings.echo}
    ensure_sqlite_folder(settings.url)
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs |= {"pool_size": settings.pool_size, "pool_pre_ping": True}
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def wait_for_database(engine: Engine, *, attempts: int = 30, delay_s: float = 1.0) -> None:
    """Block until the database answers (a service's pre-start step)."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if attempt == attempts:
                raise
            log.warning("database not ready", attempt=attempt, error=str(exc).splitlines()[0])
            time.sleep(delay_s)


def ping(engine: Engine) -> bool:
    """True when the database answers a trivial query (a readiness check)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
