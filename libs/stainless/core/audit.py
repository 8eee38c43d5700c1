"""The audit trail: who read patient data or changed something, what, when, from where.

Rows are only ever added (``audit_event``; on Postgres a trigger refuses updates and
deletes). A change records its event in the transaction that makes it (:func:`add_audit`),
so neither exists without the other; a read records its own (:func:`record_audit`).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import AuditEvent

__all__ = ["Actor", "add_audit", "audit_trail", "command_line_actor", "record_audit"]

AUDITED = Counter("stainless_audit_events_total", "Audit events recorded", ["action"])


@dataclass(frozen=True)
class Actor:
    """Who acts: a key's name and role (or a command-line user), and the client address."""

    name: str
    role: str
    client: str | None = None


def command_line_actor() -> Actor:
    """The operating-system user running a command (``stainless scanner add``, ``promote``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid:{os.getuid()}"
    return Actor(user, "cli", socket.gethostname())


def add_audit(
    session: Session,
    actor: Actor,
    action: str,
    target: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add an audit event to the session's transaction (``target`` is ``kind:id``)."""
    session.add(
        AuditEvent(
            actor=actor.name[:128],
            role=actor.role[:32],
            action=action,
            target=target[:256],
            client=None if actor.client is None else actor.client[:64],
            detail=dict(detail or {}),
        )
    )
    AUDITED.labels(action=action).inc()


def record_audit(
    engine: Engine,
    actor: Actor,
    action: str,
    target: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record an audit event in a transaction of its own (a read)."""
    with session_scope(engine) as session:
        add_audit(session, actor, action, target, detail)


def audit_trail(
    engine: Engine,
    *,
    limit: int = 100,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[AuditEvent]:
    """The newest events first, filtered by actor, action and target when given."""
    query = select(AuditEvent)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    with Session(engine) as session:
        return list(session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit)).all())
