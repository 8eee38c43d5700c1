"""Export a training checkpoint (with its config.yaml and metrics.json) as a repository.

Model 1 exports alone (stain, classify, segment and its chapter-7 ``stain_confidence``).
Model 2 has no classifier: it exports with a model-1 checkpoint of the same size as its
classifier (its chapter-6 ``stain_confidence`` and that model's ``classify``). Model 3
exports alone (stain, classify by its critic's AC-GAN head, the unmasked chapter-7
``stain_confidence``) with the classes and crop size it was trained on (``data.classes``,
``data.crop_size``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import structlog
import torch
import yaml

from stainless.domain.cells import CellClass
from stainless.domain.served import MANIFEST, file_sha256, parse_manifest
from stainless.domain.vocabulary import HEALTHY, vocabulary_of
from stainless.ml.export.disentangled_heads import write_disentangled_repository
from stainless.ml.export.paired_heads import write_paired_repository
from stainless.ml.export.triton import InstanceKind, write_manifest, write_repository
from stainless.ml.metrics.class_calibration import Scaling
from stainless.ml.models.configs import DisentangledConfig, MultiTaskConfig, PairedConfig
from stainless.ml.models.disentangled import build_disentangled
from stainless.ml.models.mtmd import MultiTaskTranslator, build_multitask
from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator

MODEL_1, MODEL_2, MODEL_3 = "mtmd", "disentangled", "paired"
DEFAULT_K = {MODEL_1: 10, MODEL_2: 20, MODEL_3: 10}  # thesis ch. 7.1 / Algorithm 2

log = structlog.get_logger(__name__)


class ExportError(ValueError):
    """The checkpoint cannot be exported (missing files, unsupported model)."""


def _training_config(checkpoint: Path) -> dict[str, Any]:
    config_path = checkpoint.parent / "config.yaml"
    if not checkpoint.is_file() or not config_path.is_file():
        raise ExportError(f"need {checkpoint} and the config.yaml beside it")
    config: dict[str, Any] = yaml.safe_load(config_path.read_text())
    return config


def _size(training: dict[str, Any]) -> str:
    return "thesis" if training.get("size") == "thesis" else "tiny"


def _translator_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(checkpoint, weights_only=False)["translator"]
    return state


def _model_1(checkpoint: Path) -> tuple[MultiTaskTranslator, MultiTaskConfig, str]:
    """Model 1 of ``checkpoint`` with its network config and its size name."""
    training = _training_config(checkpoint)
    if training.get("model") != MODEL_1:
        raise ExportError(f"{checkpoint} is not model 1 (mtmd) but {training.get('model')}")
    size = _size(training)
    net = MultiTaskConfig.thesis() if size == "thesis" else MultiTaskConfig.tiny()
    translator = build_multitask(net)
    translator.load_state_dict(_translator_state(checkpoint))
    return translator, net, size


def _metrics(checkpoint: Path) -> dict[str, Any]:
    """``metrics.json`` beside ``checkpoint`` (written by ``stainless-evaluate``), or {}."""
    path = checkpoint.parent / "metrics.json"
    metrics: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return metrics


def _calibration(checkpoint: Path) -> Scaling | None:
    """The class-probability calibration the evaluation of ``checkpoint`` fitted, if any."""
    scaling = (_metrics(checkpoint).get("probability_calibration") or {}).get("scaling")
    if scaling is None:
        log.warning(
            "no probability calibration beside the checkpoint: the raw softmax is served "
            "(run stainless-evaluate)",
            checkpoint=str(checkpoint),
        )
        return None
    return Scaling(float(scaling["scale"]), tuple(float(b) for b in scaling["bias"]))


def _review_threshold(checkpoint: Path, given: float | None) -> float:
    if given is not None:
        return given
    metrics_path = checkpoint.parent / "metrics.json"
    metrics = _metrics(checkpoint)
    if metrics.get("review_threshold") is None:
        raise ExportError(
            f"no review_threshold in {metrics_path}: run stainless-evaluate "
            "or pass --review-threshold"
        )
    return float(metrics["review_threshold"])


def _export_model_3(
    checkpoint: Path,
    training: dict[str, Any],
    repo: Path,
    *,
    threshold: float,
    version: int,
    instance: InstanceKind,
    k: int,
) -> list[Path]:
    data = training.get("data") or {}
    try:
        vocabulary = vocabulary_of(str(data.get("classes", "healthy")))
    except ValueError as exc:
        raise ExportError(f"{checkpoint.parent / 'config.yaml'}: {exc}") from None
    size = str(training.get("size", "tiny"))
    try:
        net = dataclasses.replace(
            PairedConfig.of_size(size),
            n_classes=len(vocabulary.classes),
            class_head=str(training.get("class_head", "pair")),
            class_condition=bool(training.get("class_condition", False)),
        )
    except ValueError as exc:
        raise ExportError(f"{checkpoint.parent / 'config.yaml'}: {exc}") from None
    state = torch.load(checkpoint, weights_only=False)
    if "generator" not in state or "critic" not in state:
        raise ExportError(f"{checkpoint} holds no model-3 generator and critic")
    generator, critic = build_paired_generator(net), build_paired_discriminator(net)
    generator.load_state_dict(state["generator"])
    critic.load_state_dict(state["critic"])
    suffix = "" if vocabulary is HEALTHY else f"-{vocabulary.name}"
    return write_paired_repository(
        generator,
        critic,
        repo,
        name=f"paired-{size}{suffix}",
        image_size=net.image_size,
        crop_size=int(data.get("crop_size", 256)),
        classes=vocabulary.classes,
        review_threshold=threshold,
        version=version,
        instance=instance,
        k=k,
        calibration=_calibration(checkpoint),
    )


def export_checkpoint(
    checkpoint: Path,
    repo: Path,
    *,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    k: int | None = None,
    review_threshold: float | None = None,
    classifier: Path | None = None,
) -> list[Path]:
    """Write the served models of ``checkpoint`` into ``repo``; return their folders.

    The review threshold defaults to the calibrated one in ``metrics.json`` beside the
    checkpoint (written by ``stainless-evaluate``), k to the variant's (10 for model 1's
    whole-latent δ, 20 for model 2's Algorithm 2). ``classifier`` is the model-1
    checkpoint whose classifier model 2 serves.

    The manifest records the SHA-256 of ``checkpoint``, so the registry can tell which
    version a repository serves.

    Raises:
        ExportError: a file is missing, model 2 without a model-1 classifier of its size,
            or no threshold is known (model 3's evaluation sets none: pass it).
    """
    folders = _export(checkpoint, repo, version, instance, k, review_threshold, classifier)
    manifest = parse_manifest((repo / MANIFEST).read_bytes(), source=str(repo / MANIFEST))
    digest = file_sha256(checkpoint)
    write_manifest(repo, manifest.model_copy(update={"checkpoint_sha256": digest}))
    return folders


def _export(
    checkpoint: Path,
    repo: Path,
    version: int,
    instance: InstanceKind,
    k: int | None,
    review_threshold: float | None,
    classifier: Path | None,
) -> list[Path]:
    training = _training_config(checkpoint)
    model = training.get("model")
    if model not in DEFAULT_K:
        raise ExportError(f"models 1 (mtmd), 2 (disentangled) and 3 (paired) export, not {model}")
    threshold = _review_threshold(checkpoint, review_threshold)
    k = DEFAULT_K[model] if k is None else k
    if model == MODEL_3:
        return _export_model_3(
            checkpoint, training, repo, threshold=threshold, version=version, instance=instance, k=k
        )
    classes = [c.value for c in CellClass]
    if model == MODEL_1:
        translator, net, size = _model_1(checkpoint)
        return write_repository(
            translator,
            repo,
            name=f"mtmd-{size}",
            image_size=net.image_size,
            classes=classes,
            n_mask_classes=net.n_segmentation_classes,
            review_threshold=threshold,
            version=version,
            instance=instance,
            k=k,
            calibration=_calibration(checkpoint),
        )
    if classifier is None:
        raise ExportError(
            "model 2 has no classifier: name a model-1 checkpoint of the same size "
            "to classify its cells (--classifier)"
        )
    model_1, net_1, size_1 = _model_1(classifier)
    size = _size(training)
    net_2 = DisentangledConfig.thesis() if size == "thesis" else DisentangledConfig.tiny()
    if net_2.image_size != net_1.image_size:
        raise ExportError(
            f"model 2 stains {net_2.image_size} px cells, its classifier takes "
            f"{net_1.image_size} px: take a classifier of the same size"
        )
    model_2 = build_disentangled(net_2)
    model_2.load_state_dict(_translator_state(checkpoint))
    return write_disentangled_repository(
        model_2,
        model_1,
        repo,
        name=f"disentangled-{size}",
        classifier_name=f"mtmd-{size_1}",
        image_size=net_2.image_size,
        classes=classes,
        review_threshold=threshold,
        version=version,
        instance=instance,
        k=k,
        calibration=_calibration(classifier),
    )
