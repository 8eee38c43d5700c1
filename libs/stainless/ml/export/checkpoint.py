"""Export a model-1 training checkpoint (with its config.yaml and metrics.json) as a repository."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from stainless.domain.cells import CellClass
from stainless.ml.export.triton import InstanceKind, write_repository
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask


class ExportError(ValueError):
    """The checkpoint cannot be exported (missing files, unsupported model)."""


def export_checkpoint(
    checkpoint: Path,
    repo: Path,
    *,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    k: int = 10,
    review_threshold: float | None = None,
) -> list[Path]:
    """Write the served models of ``checkpoint`` into ``repo``; return their folders.

    The review threshold defaults to the calibrated one in ``metrics.json`` beside the
    checkpoint (written by ``stainless-evaluate``).

    Raises:
        ExportError: a file is missing, the model is not model 1, or no threshold is known.
    """
    config_path = checkpoint.parent / "config.yaml"
    metrics_path = checkpoint.parent / "metrics.json"
    if not checkpoint.is_file() or not config_path.is_file():
        raise ExportError(f"need {checkpoint} and the config.yaml beside it")
    training = yaml.safe_load(config_path.read_text())
    if training.get("model") != "mtmd":
        raise ExportError(f"only model 1 (mtmd) exports yet, not {training.get('model')}")
    if review_threshold is None:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        if metrics.get("review_threshold") is None:
            raise ExportError(
                f"no review_threshold in {metrics_path}: run stainless-evaluate "
                "or pass --review-threshold"
            )
        review_threshold = float(metrics["review_threshold"])
    size = "thesis" if training.get("size") == "thesis" else "tiny"
    net = MultiTaskConfig.thesis() if size == "thesis" else MultiTaskConfig.tiny()
    translator = build_multitask(net)
    translator.load_state_dict(torch.load(checkpoint, weights_only=False)["translator"])
    return write_repository(
        translator,
        repo,
        name=f"mtmd-{size}",
        image_size=net.image_size,
        classes=[c.value for c in CellClass],
        n_mask_classes=net.n_segmentation_classes,
        review_threshold=review_threshold,
        version=version,
        instance=instance,
        k=k,
    )
