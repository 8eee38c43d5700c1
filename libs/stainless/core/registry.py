"""The model registry: versions of each served model, registered and promoted.

A training run registers its model as the next version of its name with its metrics
and checkpoint (``models.registered``); so does a checkpoint folder trained elsewhere
(``stainless models register``, the demo model), once per checkpoint file: names are
``<kind>-<size>/<n>``, given by the registry and never reused. Promotion (``stainless
promote``) exports a version into the model repository the inference service serves and
records it (``models.promoted``); rollback promotes an earlier version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import ModelStatus, ModelVersion
from stainless.core.events.contracts import Envelope, ModelRegistered
from stainless.core.events.outbox import add_event
from stainless.core.storage import MODELS_PREFIX, ObjectStore
from stainless.domain.served import file_sha256


class RegistryError(ValueError):
    """An unknown model version, or a registry operation that cannot be done."""


def register_model(
    session: Session,
    *,
    name: str,
    kind: str,
    checkpoint_key: str,
    metrics: dict[str, Any],
    checkpoint_sha256: str | None = None,
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
        checkpoint_sha256=checkpoint_sha256,
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


def promoted_version(engine: Engine) -> ModelVersion | None:
    """The version the registry marks promoted, the one served (at most one is)."""
    with Session(engine) as session:
        return session.exec(
            select(ModelVersion).where(ModelVersion.status == ModelStatus.PROMOTED)
        ).first()


def registered(engine: Engine, **fields: Any) -> ModelVersion:
    """Register in a transaction of its own (see :func:`register_model`)."""
    with session_scope(engine) as session:
        row = register_model(session, **fields)
        session.expunge(row)
    return row


def model_name(training_config: dict[str, Any]) -> str:
    """The registry name of a training config: ``<model>-<size>`` (e.g. ``mtmd-tiny``)."""
    return f"{training_config['model']}-{training_config.get('size', 'tiny')}"


def register_checkpoint(engine: Engine, store: ObjectStore, checkpoint: Path) -> ModelVersion:
    """Register a training checkpoint with the ``config.yaml`` and ``metrics.json`` beside it
    (copied to ``models/<kind>/sha256-<digest>/``) as the next version of its name; a
    checkpoint file registered before gives its version back.

    Raises:
        RegistryError: no checkpoint or no config.yaml beside it.
    """
    config_path = checkpoint.parent / "config.yaml"
    if not checkpoint.is_file() or not config_path.is_file():
        raise RegistryError(f"need {checkpoint} and the config.yaml beside it")
    digest = file_sha256(checkpoint)
    with Session(engine) as session:
        known = session.exec(
            select(ModelVersion).where(ModelVersion.checkpoint_sha256 == digest)
        ).first()
        if known is not None:
            return known
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict) or "model" not in config:
        raise RegistryError(f"{config_path} names no model")
    metrics_path = checkpoint.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.pop("per_cell", None)  # kept in the object store, not in the registry row
    prefix = f"{MODELS_PREFIX}/{config['model']}/sha256-{digest[:16]}"
    store.put(f"{prefix}/checkpoint.pt", checkpoint.read_bytes())
    store.put(f"{prefix}/config.yaml", config_path.read_bytes())
    if metrics_path.is_file():
        store.put(f"{prefix}/metrics.json", metrics_path.read_bytes())
    return registered(
        engine,
        name=model_name(config),
        kind=str(config["model"]),
        checkpoint_key=f"{prefix}/checkpoint.pt",
        checkpoint_sha256=digest,
        metrics=metrics,
    )
