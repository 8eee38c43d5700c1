"""Run a training job end to end: Ray Train, checkpoint to the object store, evaluate, register.

``run_job`` takes a queued job (``stainless.stages.retraining.jobs``) to running, trains its
model on its dataset snapshot with :func:`~stainless_training.distributed.run_distributed`
(progress written to the job row by rank 0), copies the final checkpoint and its config into the
object store under ``models/<kind>/<job id>/``, evaluates the model on the snapshot's
held-out cells and, when a registered version is served, that version on the same cells
(its figures go under ``comparison``, which promotion judges), registers the next model
version with the metrics (``models.registered``) and marks the job succeeded; any failure
marks it failed with the reason. Under ``MIN_HELD_OUT_CELLS`` held-out cells the metrics
say so and set no review threshold.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import ModelVersion
from stainless.core.registry import model_name, promoted_version, register_model
from stainless.core.storage import MODELS_PREFIX, ObjectNotFoundError, ObjectStore, create_store
from stainless.domain.served import file_sha256
from stainless.stages.retraining.comparison import MIN_HELD_OUT_CELLS, comparison_of
from stainless.stages.retraining.jobs import JobError, finish_job, start_job
from stainless_training.config import ModelKind, TrainingConfig, dump_config, load_config
from stainless_training.distributed import (
    Storage,
    absolute_database_url,
    run_distributed,
    store_payload,
)
from stainless_training.phantom_data import CellSample
from stainless_training.runs import CHECKPOINT
from stainless_training.settings import TrainingSettings
from stainless_training.snapshot_data import SnapshotSamples, snapshot_samples

log = structlog.get_logger(__name__)


def job_config(
    job_config: dict[str, Any] | None, *, model: str, dataset_key: str
) -> TrainingConfig:
    """The job's training config: its own settings, its model and its snapshot.

    Raises:
        JobError: the settings do not make a valid training config.
    """
    data = dict(job_config or {})
    data["model"] = model
    data["data"] = {**data.get("data", {}), "manifest": dataset_key}
    try:
        config = TrainingConfig.model_validate(data)
        config.phased_schedule()
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise JobError(f"invalid training settings: {exc}") from None
    return config


def _cell_samples(samples: SnapshotSamples, limit: int | None = None) -> list[CellSample]:
    """Snapshot items as the evaluation's ``CellSample`` s (images back in [0, 1])."""
    cells = []
    for index in range(len(samples) if limit is None else min(limit, len(samples))):
        if not samples.has_pair[index] or samples.labels[index] < 0:
            continue
        item = samples[index]
        cells.append(
            CellSample(
                dic=((item["dic"][0].numpy() + 1) / 2).astype(np.float32),
                bf=((item["bf"].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float32),
                mask=item["mask"].numpy(),
                label=int(item["label"]),
                field=0,
            )
        )
    return cells


def evaluate_checkpoint(
    settings: TrainingSettings,
    config: TrainingConfig,
    checkpoint: Path,
    served: ModelVersion | None = None,
) -> dict[str, Any]:
    """Metrics of model 1 (chapter-7 δ), model 2 (chapter-6 δ) or model 3 (its stain and its
    AC-GAN head's classes) on the snapshot's held-out cells, and the ``served`` version's
    figures on the same cells. Models 1 and 2 are set against a colour-transfer baseline,
    with LPIPS and FID on the backbones of ``settings.evaluation`` (random where none is set,
    which their provenance in the metrics says)."""
    from stainless_training.backbones import quality_metrics
    from stainless_training.evaluate import ColourTransfer

    if config.data.manifest is None:
        return {}
    key = config.data.manifest
    store = create_store(settings.store)
    # Built once, and only when a model 1 or 2 (the candidate or the served one) needs them.
    backbones = functools.cache(lambda: quality_metrics(settings.evaluation, store))

    def evaluated(run_config: TrainingConfig, run_checkpoint: Path) -> dict[str, Any]:
        from stainless_training.evaluate_paired import evaluate_paired
        from stainless_training.evaluation_models import model_evaluation, paired_models

        def held_out_cells(image_size: int) -> list[CellSample]:
            return _cell_samples(snapshot_samples(settings.store, key, image_size, held_out=True))

        too_few = "fewer than 3 held-out cells with a pair and a label"
        if run_config.model is ModelKind.PAIRED:
            net, generator, critic = paired_models(run_config, run_checkpoint)
            cells = held_out_cells(net.image_size)
            if len(cells) < 3:
                return {"cells": len(cells), "note": too_few}
            vocabulary = run_config.data.vocabulary()
            return evaluate_paired(generator, critic, cells, vocabulary=vocabulary)
        run = model_evaluation(run_config, run_checkpoint)
        held_out = held_out_cells(run.image_size)
        training = _cell_samples(snapshot_samples(settings.store, key, run.image_size), limit=200)
        if len(held_out) < 3 or not training:
            return {"cells": len(held_out), "note": too_few}
        # Model 1's class probabilities are calibrated on the held-out cells (the figures
        # cross-fitted over two halves; nothing is fitted under 100 cells, as it says).
        classifier = {"calibration_cells": held_out} if run_config.model is ModelKind.MTMD else {}
        perceptual, fid = backbones()
        return run.evaluate(
            held_out,
            baseline=ColourTransfer.fit(training),
            perceptual=perceptual,
            fid=fid,
            acceptable_ssim=settings.evaluation.acceptable_ssim,
            review_sensitivity=settings.evaluation.review_sensitivity,
            **classifier,
        )

    metrics = evaluated(config, checkpoint)
    cells = int(metrics.get("cells", 0))
    if 3 <= cells < MIN_HELD_OUT_CELLS:
        metrics.pop("review_threshold", None)
        metrics["note"] = (
            f"only {cells} held-out cells (fewer than {MIN_HELD_OUT_CELLS}): no review "
            "threshold is set, and no comparison can decide a promotion"
        )
    if served is not None:
        metrics["comparison"] = _compare(store, served, evaluated)
    return metrics


def _compare(
    store: ObjectStore,
    served: ModelVersion,
    evaluated: Callable[[TrainingConfig, Path], dict[str, Any]],
) -> dict[str, Any]:
    """The served version's figures on the candidate's held-out cells."""
    name = f"{served.name}/{served.version}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prefix = served.checkpoint_key.rpartition("/")[0]
        try:
            (folder / CHECKPOINT).write_bytes(store.get(served.checkpoint_key))
            (folder / "config.yaml").write_bytes(store.get(f"{prefix}/config.yaml"))
        except ObjectNotFoundError as exc:  # the candidate is registered all the same
            return {**comparison_of(served.id, name, {}, 0), "note": f"not evaluated: {exc}"}
        figures = evaluated(load_config(folder / "config.yaml"), folder / CHECKPOINT)
    return comparison_of(served.id, name, figures, int(figures.get("cells", 0)))


def _plots(metrics: dict[str, Any], folder: Path) -> list[Path]:
    """The figures of an evaluation that its metrics hold, drawn into ``folder``: the
    confusion matrix, the calibration of δ and that of the class probabilities."""
    from stainless_training.plots import (
        confusion_plot,
        probability_reliability_plot,
        reliability_plot,
    )

    drawn = []
    if "confusion" in metrics:
        confusion_plot(
            metrics["confusion"],
            metrics["class_names"],
            folder / "confusion.png",
            title=f"{metrics['cells']} held-out cells: accuracy {metrics['accuracy']:.2f}",
        )
        drawn.append(folder / "confusion.png")
    if "review" in metrics and "acceptable" in metrics:
        reliability_plot(
            metrics.get("calibration"),
            folder / "reliability.png",
            acceptable=metrics["acceptable"],
            review=metrics["review"],
        )
        drawn.append(folder / "reliability.png")
    calibration = metrics.get("probability_calibration") or {}
    if calibration.get("scaling") is not None:
        probability_reliability_plot(calibration, folder / "probabilities.png")
        drawn.append(folder / "probabilities.png")
    return drawn


def run_job(
    settings: TrainingSettings,
    job_id: str,
    *,
    storage: Storage,
    use_gpu: bool = False,
    report_every: int = 10,
    ray_job_id: str | None = None,
) -> str:
    """Train, store, evaluate and register job ``job_id``; return the model version's id.

    ``ray_job_id`` (the RayJob running it, if any) is recorded on the job row.
    """
    engine = create_db_engine(settings.database)
    store = create_store(settings.store)
    job = start_job(engine, job_id, ray_job_id=ray_job_id)
    try:
        config = job_config(job.config, model=job.model_kind, dataset_key=job.dataset_key)
        result = run_distributed(
            config,
            name=f"job-{job_id}",
            storage=storage,
            workers=job.workers,
            use_gpu=use_gpu,
            report_every=report_every,
            store=store_payload(settings.store),
            progress={
                "database_url": absolute_database_url(settings.database.url),
                "job_id": job_id,
            },
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = storage.fetch(result.checkpoint, Path(tmp))
            prefix = f"{MODELS_PREFIX}/{config.model.value}/{job_id}"
            checkpoint_key = f"{prefix}/{CHECKPOINT}"
            store.put(checkpoint_key, (folder / CHECKPOINT).read_bytes())
            store.put(f"{prefix}/config.yaml", dump_config(config).encode())
            served = promoted_version(engine)
            metrics = evaluate_checkpoint(settings, config, folder / CHECKPOINT, served)
            digest = file_sha256(folder / CHECKPOINT)
            plots = _plots(metrics, folder)
            for plot in plots:
                store.put(f"{prefix}/{plot.name}", plot.read_bytes())
        metrics = {**metrics, "training": {"seconds": round(result.seconds, 1), **result.metrics}}
        if plots:
            metrics["plots"] = [f"{prefix}/{plot.name}" for plot in plots]
        store.put(f"{prefix}/metrics.json", json.dumps(metrics, indent=2).encode())
        with session_scope(engine) as session:
            version = register_model(
                session,
                name=model_name({"model": config.model.value, "size": config.size.value}),
                kind=config.model.value,
                checkpoint_key=checkpoint_key,
                checkpoint_sha256=digest,
                metrics=metrics,
            )
            version_id = version.id
    except Exception as exc:
        finish_job(engine, job_id, error=f"{type(exc).__name__}: {exc}")
        log.error("training job failed", job_id=job_id, error=str(exc))
        raise
    finish_job(engine, job_id, model_version_id=version_id, progress={"done": True})
    log.info("training job succeeded", job_id=job_id, model_version_id=version_id)
    return version_id
