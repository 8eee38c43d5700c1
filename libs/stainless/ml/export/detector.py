"""The learned white-cell detectors in the model repository, beside the translator.

One served model per modality, ``wbc_detector_bf`` and ``wbc_detector_dic``: the network
as ``ServedMaps`` (input ``INPUT__0 [B, C, H, W]``, the prepared and padded field;
output ``OUTPUT__0 [B, 5, H / R, W / R]``, centre scores, box sizes and offsets), ONNX
with dynamic height and width, TorchScript where the ONNX export is refused. What a
client needs to feed it and decode its maps (``DetectorConfig``, the score threshold,
the most cells per field) is written beside it as ``<model>/detector.json``: the
registration stage reads it whichever backend runs the network.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from stainless.ml.export.onnx import OnnxRejected, export_onnx
from stainless.ml.export.triton import (
    InstanceKind,
    Platform,
    Tensor,
    model_config,
    write_model,
)
from stainless.ml.models.detector import (
    INPUT_MULTIPLE,
    SERVED_MAPS,
    DetectorConfig,
    Modality,
    ServedMaps,
    load_network,
)

log = structlog.get_logger(__name__)

DETECTOR_MODELS = {Modality.BRIGHTFIELD: "wbc_detector_bf", Modality.DIC: "wbc_detector_dic"}
"""The served model of each modality's detector."""

DETECTOR_MANIFEST = "detector.json"
MANIFEST_FORMAT = "stainless.served-detector/1"
_EXAMPLE_SIDE = 4 * INPUT_MULTIPLE  # the export's example and parity input: 64 x 48 px


class DetectorExportError(ValueError):
    """The detector cannot be exported or read back; the message says why."""


@dataclass(frozen=True)
class ServedDetector:
    """What the repository says about one served detector."""

    name: str  # the served model
    version: int
    config: DetectorConfig
    threshold: float  # lowest centre score reported
    max_detections: int
    checkpoint_sha256: str

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "version": self.version,
            "config": self.config.to_dict(),
            "threshold": self.threshold,
            "max_detections": self.max_detections,
            "checkpoint_sha256": self.checkpoint_sha256,
        }
        return json.dumps(data, indent=2) + "\n"


def write_detector(
    checkpoint: Path,
    repo: Path,
    *,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    threshold: float | None = None,
    max_detections: int = 100,
    max_batch_size: int = 4,
) -> ServedDetector:
    """Export a detector checkpoint into ``repo`` under its modality's served model.

    ``threshold`` (the lowest centre score reported) defaults to the checkpoint's own:
    the one its calibration chose on held-out fields, else ``DEFAULT_THRESHOLD``.

    Raises:
        DetectorExportError: the checkpoint cannot be read, or a setting is out of range.
    """
    if threshold is not None and not 0 <= threshold <= 1:
        raise DetectorExportError(f"threshold must lie in [0, 1], got {threshold}")
    if version < 1 or max_detections < 1 or max_batch_size < 1:
        raise DetectorExportError("version, max_detections and max_batch_size must be ≥ 1")
    try:
        net, config, calibrated = load_network(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise DetectorExportError(str(exc)) from None
    name = DETECTOR_MODELS[config.modality]
    folder = repo / name
    version_folder = folder / str(version)
    version_folder.mkdir(parents=True, exist_ok=True)
    served = ServedMaps(net).eval()
    example = (config.channels, _EXAMPLE_SIDE, _EXAMPLE_SIDE * 3 // 4)
    try:
        worst = export_onnx(
            served,
            version_folder / Platform.ONNX.filename,
            input_shape=example,
            n_outputs=1,
            spatial=True,
        )
        platform, note = (
            Platform.ONNX,
            f"ONNX: onnxruntime matches eager PyTorch within {worst:.2g}",
        )
    except OnnxRejected as exc:
        platform, note = Platform.TORCHSCRIPT, f"TorchScript, not ONNX: {exc}"
        # Traced, not scripted (the net returns a NamedTuple): fully convolutional, so
        # the trace holds at any height and width.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes; trace is deprecated, Triton loads it
            traced = torch.jit.trace(served, torch.zeros((1, *example)))
        traced.save(str(version_folder / Platform.TORCHSCRIPT.filename))
    served_config = model_config(
        name,
        inputs=(Tensor("INPUT__0", (config.channels, -1, -1)),),
        outputs=(Tensor("OUTPUT__0", (SERVED_MAPS, -1, -1)),),
        max_batch_size=max_batch_size,
        instance=instance,
        platform=platform,
        note=note,
    )
    write_model(folder, version=version, platform=platform, instance=instance, config=served_config)
    manifest = ServedDetector(
        name=name,
        version=version,
        config=config,
        threshold=calibrated if threshold is None else threshold,
        max_detections=max_detections,
        checkpoint_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    )
    (folder / DETECTOR_MANIFEST).write_text(manifest.to_json())
    log.info("export.detector", model=name, version=version, platform=platform.value, reason=note)
    return manifest


def read_detector(repo: Path, modality: Modality | str) -> ServedDetector:
    """The served detector of ``modality`` in ``repo``.

    Raises:
        DetectorExportError: none is exported there, or its ``detector.json`` is unreadable;
            the message says how to export one.
    """
    kind = Modality(modality)
    path = repo / DETECTOR_MODELS[kind] / DETECTOR_MANIFEST
    if not path.is_file():
        raise DetectorExportError(
            f"no learned {kind} detector in {repo} ({path} is missing): export one with "
            f"`stainless export-detector --checkpoint <detector.pt> --repo {repo}`"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {data.get('format')!r} is not {MANIFEST_FORMAT}")
        manifest = ServedDetector(
            name=str(data["name"]),
            version=int(data["version"]),
            config=DetectorConfig.from_dict(data["config"]),
            threshold=float(data["threshold"]),
            max_detections=int(data["max_detections"]),
            checkpoint_sha256=str(data["checkpoint_sha256"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DetectorExportError(f"{path} cannot be read: {exc}") from None
    if manifest.config.modality is not kind or manifest.name != DETECTOR_MODELS[kind]:
        raise DetectorExportError(f"{path} describes a {manifest.config.modality} detector")
    return manifest
