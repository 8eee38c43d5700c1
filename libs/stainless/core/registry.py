"""The model registry: versions of each served model, registered and promoted.

A training run registers its model as the next version of its name with its metrics
and checkpoint (``models.registered``). Promotion (``stainless promote``) exports a
version into the model repository the inference service serves and records it
(``models.promoted``); rollback promotes the version promoted before it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import ModelVersion
from stainless.core.events.contracts import Envelope, ModelRegistered
from stainless.core.events.outbox import add_event


class RegistryError(ValueError):
    """An unknown model version, or a registry operation that cannot be done."""


def register_model(
    session: Session, *, name: str, kind: str, checkpoint_key: str, metrics: dict[str, Any]
) -> ModelVersion:
    """The next version of ``name``, in the caller's transaction, with ``models.registered``."""
    latest = session.exec(
        select(func.max(ModelVersion.version)).where(ModelVersion.name == name)
    ).one()
    row = ModelVersion(
        name=name,
        version=(latest or 0) + 1,
        kind=kind,
        checkpoint_key=checkpoint_key,
        metrics=metrics,
    )
    session.add(row)
    session.flush()
    payload = ModelRegistered(
        model_version_id=row.id, name=name, version=row.version, checkpoint_key=checkpoint_key
    )
    add_event(session, Envelope.wrap(payload, key=name))
    return row


def find_version(engine: Engine, reference: str) -> ModelVersion:
    """A version by id or as ``name/version`` (e.g. ``mtmd-tiny/3``)."""
    with Session(engine) as session:
        if "/" in reference:
            name, _, number = reference.rpartition("/")
            if not number.isdigit():
                raise RegistryError(f"{reference!r} is not NAME/VERSION")
            row = session.exec(
                select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.version == int(number)
                )
            ).first()
        else:
            row = session.get(ModelVersion, reference)
        if row is None:
            raise RegistryError(f"no model version {reference}")
        return row


def list_versions(engine: Engine, name: str | None = None) -> list[ModelVersion]:
    with Session(engine) as session:
        query = select(ModelVersion).order_by(col(ModelVersion.name), col(ModelVersion.version))
        if name is not None:
            query = query.where(ModelVersion.name == name)
        return list(session.exec(query).all())


def registered(engine: Engine, **fields: Any) -> ModelVersion:
    """Register in a transaction of its own (see :func:`register_model`)."""
    with session_scope(engine) as session:
        row = register_model(session, **fields)
        session.expunge(row)
    return row
