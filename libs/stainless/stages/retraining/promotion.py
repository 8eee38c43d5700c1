"""Promotion: a registered model version becomes the one the inference service serves.

``promote`` exports the version's checkpoint into the model repository as a new version
folder of every served model (Triton serves the latest folder; the manifest names it),
marks the version promoted and the one before it registered, and announces
``models.promoted`` in the same transaction. When the database refuses, the previous
manifest is put back, so the repository keeps serving what the registry says. With a
mirror prefix the repository's new files are also written to the object store, where a
Triton server reads its repository (``s3://…``).

A candidate replaces the served version only when its training compared the two on the
same held-out cells and it is not worse (:mod:`.comparison`); ``force`` overrides that,
and the reason is reported either way. ``rollback`` serves an earlier version (the one
promoted before the current one, or any named one) without that check. ``adopt_served``
registers the checkpoint a repository was exported from (``stainless export``, the
demo) as the version it serves, so that a rollback can always return to it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import ModelStatus, ModelVersion
from stainless.core.events.contracts import Envelope, ModelPromoted
from stainless.core.events.outbox import add_event
from stainless.core.inference.manifest import read_manifest
from stainless.core.registry import (
    RegistryError,
    find_version,
    promoted_version,
    register_checkpoint,
)
from stainless.core.storage import ObjectStore
from stainless.domain.served import MANIFEST, ManifestError, file_sha256
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.triton import InstanceKind, write_manifest
from stainless.stages.retraining.comparison import Verdict, judge

SERVED_KINDS = ("mtmd", "disentangled", "paired")
"""Registered model kinds that promote to the production stain model."""


class PromotionRefused(RegistryError):
    """The candidate is not shown to be at least as good as the version served."""


@dataclass(frozen=True)
class Promotion:
    model_version_id: str
    name: str
    version: int
    repository_version: int  # the version folder the inference service now serves
    previous_version: int | None
    verdict: str = ""  # how the candidate compared with the version served before it


def _next_folder(repository: Path) -> int:
    numbers = (
        [
            int(folder.name)
            for model in repository.iterdir()
            if model.is_dir()
            for folder in model.iterdir()
            if folder.is_dir() and folder.name.isdigit()
        ]
        if repository.is_dir()
        else []
    )
    return max(numbers, default=0) + 1


def _download(store: ObjectStore, version: ModelVersion, folder: Path) -> Path:
    """The version's checkpoint and its config.yaml, from the object store into ``folder``,
    with its registered metrics as metrics.json (the export reads the calibration of the
    class probabilities there)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = version.checkpoint_key.rpartition("/")[0]
    checkpoint = folder / "checkpoint.pt"
    checkpoint.write_bytes(store.get(version.checkpoint_key))
    (folder / "config.yaml").write_bytes(store.get(f"{prefix}/config.yaml"))
    (folder / "metrics.json").write_text(json.dumps(version.metrics))
    return checkpoint


def _classifier(engine: Engine, repository: Path, reference: str | None) -> ModelVersion:
    """The model-1 version that classifies model 2's cells: ``reference``, else the one the
    repository serves now (model 1 itself, or the classifier a model 2 was served with)."""
    if reference is None:
        try:
            served = read_manifest(repository)
        except ManifestError:
            served = None
        if served is not None and served.classifier is not None and "/" in served.classifier:
            reference = served.classifier
        elif served is not None and served.classifier is None:
            reference = served.model_version_id
    if reference is None:
        raise RegistryError(
            "model 2 has no classifier and no registered model 1 is served: "
            "name one (--classifier NAME/VERSION)"
        )
    version = find_version(engine, reference)
    if version.kind != "mtmd":
        raise RegistryError(
            f"{version.name}/{version.version} is {version.kind}: the classifier must be model 1"
        )
    return version


def _mirror(store: ObjectStore, repository: Path, prefix: str, folder_number: int) -> None:
    for path in sorted(repository.rglob("*")):
        relative = path.relative_to(repository)
        is_new_version = str(folder_number) in relative.parts[:2]
        if path.is_file() and (is_new_version or path.name in (MANIFEST, "config.pbtxt")):
            store.put(f"{prefix.strip('/')}/{relative.as_posix()}", path.read_bytes())


def promote(
    engine: Engine,
    store: ObjectStore,
    repository: Path,
    reference: str,
    *,
    instance: InstanceKind = InstanceKind.GPU,
    mirror_prefix: str | None = None,
    review_threshold: float | None = None,
    classifier: str | None = None,
    force: bool = False,
) -> Promotion:
    """Serve model version ``reference`` (an id or ``name/version``).

    The δ review threshold is ``review_threshold`` when given, else the version's
    calibrated one (its evaluation), else the one served now. Model 2 is served with the
    classifier of the model-1 version ``classifier``; by default the one served now (model 1
    itself, or the classifier of a model 2), which the manifest then names.

    Raises:
        PromotionRefused: the candidate is not shown to be as good as the version served
            (unless ``force``); nothing is written then.
        RegistryError: unknown version, a kind that is not served, model 2 without a
            model-1 classifier, or no review threshold.
    """
    version = find_version(engine, reference)
    if version.kind not in SERVED_KINDS:
        raise RegistryError(
            f"{version.name}/{version.version}: models 1 (mtmd), 2 (disentangled) and "
            f"3 (paired) are served, not {version.kind}"
        )
    verdict = _verdict(engine, version)
    if not verdict.allowed and not force:
        raise PromotionRefused(f"{verdict.reason}; --force promotes it anyway")
    return _serve(
        engine,
        store,
        repository,
        version,
        instance=instance,
        mirror_prefix=mirror_prefix,
        review_threshold=review_threshold,
        classifier=classifier,
        verdict=verdict.reason,
    )


def _verdict(engine: Engine, candidate: ModelVersion) -> Verdict:
    served = promoted_version(engine)
    if served is None:
        return Verdict(True, "no registered version was served")
    if served.id == candidate.id:
        return Verdict(True, f"{served.name}/{served.version} is served already")
    return judge(
        f"{candidate.name}/{candidate.version}",
        candidate.metrics,
        served.id,
        f"{served.name}/{served.version}",
    )


def _serve(
    engine: Engine,
    store: ObjectStore,
    repository: Path,
    version: ModelVersion,
    *,
    instance: InstanceKind,
    mirror_prefix: str | None,
    review_threshold: float | None,
    classifier: str | None,
    verdict: str,
) -> Promotion:
    """Export ``version`` into a new version folder, serve it and record it."""
    classifier_version = (
        _classifier(engine, repository, classifier) if version.kind == "disentangled" else None
    )
    previous_manifest = (
        (repository / MANIFEST).read_text() if (repository / MANIFEST).is_file() else None
    )
    threshold = review_threshold
    if threshold is None:
        threshold = version.metrics.get("review_threshold")
    if threshold is None and previous_manifest is not None:
        threshold = read_manifest(repository).review_threshold
    if threshold is None:
        raise RegistryError(
            f"{version.name}/{version.version} has no calibrated review threshold: "
            "pass one (--review-threshold)"
        )
    folder_number = _next_folder(repository)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _download(store, version, Path(tmp) / "model")
        export_checkpoint(
            checkpoint,
            repository,
            version=folder_number,
            instance=instance,
            review_threshold=float(threshold),
            classifier=(
                None
                if classifier_version is None
                else _download(store, classifier_version, Path(tmp) / "classifier")
            ),
        )
    update = {"model_version_id": version.id, "registered_as": f"{version.name}/{version.version}"}
    if classifier_version is not None:
        update["classifier"] = f"{classifier_version.name}/{classifier_version.version}"
    manifest = read_manifest(repository).model_copy(update=update)
    write_manifest(repository, manifest)
    try:
        previous = _record(engine, version.id)
    except Exception:
        if previous_manifest is not None:
            (repository / MANIFEST).write_text(previous_manifest)
        raise
    if mirror_prefix:
        _mirror(store, repository, mirror_prefix, folder_number)
    return Promotion(version.id, version.name, version.version, folder_number, previous, verdict)


def _record(engine: Engine, version_id: str) -> int | None:
    """Mark ``version_id`` promoted (and the current one registered); announce it."""
    with session_scope(engine) as session:
        version = session.get(ModelVersion, version_id, with_for_update=True)
        assert version is not None
        current = session.exec(
            select(ModelVersion).where(
                ModelVersion.status == ModelStatus.PROMOTED, col(ModelVersion.id) != version_id
            )
        ).all()
        for row in current:
            row.status = ModelStatus.REGISTERED
            session.add(row)
        version.status = ModelStatus.PROMOTED
        version.promoted_at = datetime.now(UTC)
        session.add(version)
        latest = sorted(current, key=lambda r: r.promoted_at or datetime.min.replace(tzinfo=UTC))
        previous_version = latest[-1].version if latest else None
        payload = ModelPromoted(
            model_version_id=version.id,
            name=version.name,
            version=version.version,
            previous_version=previous_version,
        )
        add_event(session, Envelope.wrap(payload, key=version.name))
    return previous_version


def rollback(
    engine: Engine,
    store: ObjectStore,
    repository: Path,
    *,
    to: str | None = None,
    instance: InstanceKind = InstanceKind.GPU,
    mirror_prefix: str | None = None,
) -> Promotion:
    """Serve an earlier version again: ``to`` (an id or ``name/version``), by default the
    version promoted before the one served now. A rollback is not compared: it returns to
    a version that was served, or that an operator names.

    Raises:
        RegistryError: an unknown ``to``, or nothing promoted before the current version.
    """
    if to is not None:
        target = find_version(engine, to)
    else:
        try:
            serving = read_manifest(repository).model_version_id
        except ManifestError as exc:
            raise RegistryError(f"nothing is served: {exc}") from None
        with Session(engine) as session:
            earlier = session.exec(
                select(ModelVersion)
                .where(col(ModelVersion.promoted_at).is_not(None), col(ModelVersion.id) != serving)
                .order_by(col(ModelVersion.promoted_at).desc())
            ).first()
        if earlier is None:
            raise RegistryError(
                "no earlier promoted version to roll back to: name one with --to NAME/VERSION "
                "(stainless models lists them)"
            )
        target = earlier
    return _serve(
        engine,
        store,
        repository,
        target,
        instance=instance,
        mirror_prefix=mirror_prefix,
        review_threshold=None,
        classifier=None,
        verdict="a rollback is not compared",
    )


def adopt_served(
    engine: Engine, store: ObjectStore, repository: Path, checkpoint: Path
) -> Promotion:
    """Register ``checkpoint`` (:func:`register_checkpoint`) as the version ``repository``
    serves, which was exported from it; nothing is exported again.

    Raises:
        RegistryError: the repository serves nothing, or was exported from another file.
    """
    try:
        manifest = read_manifest(repository)
    except ManifestError as exc:
        raise RegistryError(f"nothing is served: {exc}") from None
    if not checkpoint.is_file() or manifest.checkpoint_sha256 != file_sha256(checkpoint):
        raise RegistryError(
            f"{repository} was not exported from {checkpoint}: register it "
            "(stainless models register) and promote it instead"
        )
    version = register_checkpoint(engine, store, checkpoint)
    name = f"{version.name}/{version.version}"
    previous = None
    if manifest.model_version_id != version.id or version.status is not ModelStatus.PROMOTED:
        previous = _record(engine, version.id)
        write_manifest(
            repository,
            manifest.model_copy(update={"model_version_id": version.id, "registered_as": name}),
        )
    return Promotion(
        version.id, version.name, version.version, manifest.version, previous, "adopted as served"
    )
