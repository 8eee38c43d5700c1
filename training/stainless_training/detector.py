"""Training and evaluation of the learned white-cell detector on phantom fields.

The detector is CenterNet's "objects as points" (Zhou et al. 2019, arXiv:1904.07850;
``stainless.models.detector``). Training data are phantom fields drawn on the fly:

* each field is drawn under a random acquisition (``random_acquisition``: stain, lamp,
  camera, pixel size 0.05-0.25 µm, DIC optics, smear with platelets, debris and
  precipitate) with probability ``random_acquisition_fraction``, else under the
  reference lab (MGG, 100x oil, 0.075 µm/px);
* it is ``field_um`` µm on a side (a small field holds its 1-4 white cells more densely
  than a full camera frame), prepared once (``prepare``: resampled to the working pixel
  size, OD or relative DIC intensity) and kept in a pool of ``pool_size`` fields; every
  ``refresh_every`` steps the oldest field is replaced by a new one, so a run sees
  ``pool_size + steps / refresh_every`` different fields without paying for one per
  sample;
* a sample is a random ``crop_px`` square of a pool field under a random flip or
  rotation by 90° (also for DIC: a mirrored DIC field is a DIC field with another shear
  direction, and training covers every direction), its white cells clipped to the crop
  as targets. A cell less than ``min_visible`` visible along either axis is left out (a
  sliver is no cell to find). Smear objects (platelets, clumps, debris, precipitate) are
  never targets: they are the negatives, and ``negative_crop_fraction`` of the crops of
  fields that hold any are centred on one (hard negatives: a platelet clump is the size
  of a small lymphocyte and stains purple).

``train_detector`` runs AdamW with a warm-up and a cosine decay (a function of the step),
logs through structlog and hands each step's logs to ``on_step``; it writes
``detector.pt`` (``state_dict``, the ``DetectorConfig`` and this config, plain values
that ``torch.load(weights_only=True)`` reads) and ``detector.yaml`` (this config) into
``out``. ``evaluate_detector`` scores a checkpoint on fresh fields (``field_rng(seed, 0,
i)``, as the classical detection benchmark; training fields come from slide
``TRAIN_SLIDE``, so they never coincide) at IoU 0.5 with ``match_boxes``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stainless.imaging.acquisition import random_acquisition
from stainless.imaging.detection import match_boxes
from stainless.imaging.phantom import PhantomField, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.losses.detection import detection_loss
from stainless.models.detector import (
    CHECKPOINT_FORMAT,
    INPUT_MULTIPLE,
    DetectorConfig,
    LearnedDetector,
    Modality,
    TargetMaps,
    build_cell_net,
    encode_targets,
    image_scale,
    map_shape,
    prepare,
    stack_targets,
)

__all__ = [
    "CHECKPOINT_NAME",
    "TRAIN_SLIDE",
    "DetectorTrainConfig",
    "FieldPool",
    "PreparedField",
    "evaluate_detector",
    "field_image",
    "learning_rate",
    "prepare_field",
    "random_crop",
    "random_dihedral",
    "train_detector",
    "truth_boxes",
]

CHECKPOINT_NAME = "detector.pt"
CONFIG_NAME = "detector.yaml"
TRAIN_SLIDE = 1000
"""Training field ``i`` comes from ``field_rng(seed, TRAIN_SLIDE, i)``; evaluation uses slide 0."""

REFERENCE_PIXEL_UM = 0.075  # the reference lab (PhantomConfig's default)

Logs = dict[str, float]
F32 = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
StepCallback = Callable[[int, Logs], None]

log = structlog.get_logger(__name__)


class DetectorTrainConfig(BaseModel):
    """Everything a detector training run depends on; written beside the checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: Modality = Field(default=Modality.BRIGHTFIELD, description="bf or dic.")
    steps: int = Field(default=300, ge=1, description="Optimisation steps.")
    batch_size: int = Field(default=8, ge=1, description="Crops per step.")
    crop_px: int = Field(
        default=128, ge=INPUT_MULTIPLE, description="Crop side in working pixels (multiple of 16)."
    )
    field_um: float = Field(default=72.0, gt=0, description="Side of each phantom field (µm).")
    pool_size: int = Field(default=24, ge=1, description="Prepared fields held at once.")
    refresh_every: int = Field(
        default=3, ge=1, description="Steps between replacing the oldest pool field."
    )
    random_acquisition_fraction: float = Field(
        default=0.6, ge=0, le=1, description="Share of fields under a random acquisition."
    )
    min_visible: float = Field(
        default=0.25, gt=0, le=1, description="Least visible share (per axis) of a target cell."
    )
    negative_crop_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Share of crops centred on a smear object (hard negatives), where any.",
    )
    learning_rate: float = Field(default=3e-3, gt=0, description="Peak AdamW rate.")
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_steps: int = Field(default=20, ge=0, description="Linear warm-up of the rate.")
    final_lr_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Rate at the end of the cosine decay, relative."
    )
    size_weight: float = Field(default=0.1, ge=0, description="λ_size (paper eq. 4).")
    offset_weight: float = Field(default=1.0, ge=0, description="λ_off (paper eq. 4).")
    width: int = Field(default=16, ge=1, description="CellNet width.")
    working_pixel_um: float = Field(default=0.3, gt=0)
    stride: int = Field(default=4, description="Output stride: 2, 4, 8 or 16.")
    seed: int = Field(default=0, ge=0)
    log_every: int = Field(default=50, ge=1, description="Steps between log lines.")

    @model_validator(mode="after")
    def _check(self) -> DetectorTrainConfig:
        if self.crop_px % INPUT_MULTIPLE:
            raise ValueError(f"crop_px must be a multiple of {INPUT_MULTIPLE}, got {self.crop_px}")
        self.detector_config()  # stride and width checks
        return self

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            modality=self.modality,
            working_pixel_um=self.working_pixel_um,
            width=self.width,
            stride=self.stride,
        )


def learning_rate(config: DetectorTrainConfig, step: int) -> float:
    """The rate at ``step``: linear warm-up, then a cosine decay to ``final_lr_fraction``."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    low = config.final_lr_fraction
    return peak * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- data


def truth_boxes(field: PhantomField, modality: Modality | str) -> list[tuple[int, int, int, int]]:
    """The field's white-cell boxes in the modality's frame; empty boxes left out."""
    kind = Modality(modality)
    boxes = [c.box_bf if kind is Modality.BRIGHTFIELD else c.box_dic for c in field.cells]
    return [b for b in boxes if b[2] > b[0] and b[3] > b[1]]


def field_image(field: PhantomField, modality: Modality | str) -> npt.NDArray[np.generic]:
    """The field's image of the modality (brightfield RGB or DIC)."""
    return field.bf if Modality(modality) is Modality.BRIGHTFIELD else field.dic


@dataclass(frozen=True)
class PreparedField:
    """A field at the working pixel size and its white cells there."""

    image: F32  # C x H x W, as ``prepare`` gives it
    boxes: tuple[Box, ...]  # white cells in working pixels (continuous edges)
    negatives: tuple[Box, ...] = ()  # smear objects (platelets, clumps, debris): no targets


def prepare_field(field: PhantomField, pixel_um: float, config: DetectorConfig) -> PreparedField:
    """``prepare`` a phantom field and carry its white-cell boxes to the working pixels."""
    image = field_image(field, config.modality)
    prepared, _ = prepare(
        image, pixel_um, config.modality, working_pixel_um=config.working_pixel_um
    )
    sx, sy = image_scale(image.shape, prepared.shape)
    boxes = tuple(
        (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in truth_boxes(field, config.modality)
    )
    negatives = tuple(
        (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
        for b in (
            o.box_bf if config.modality is Modality.BRIGHTFIELD else o.box_dic
            for o in field.smear_objects
        )
        if b[2] > b[0] and b[3] > b[1]
    )
    return PreparedField(prepared, boxes, negatives)


def _draw_acquisition(
    rng: np.random.Generator, random_fraction: float
) -> tuple[dict[str, Any], float]:
    """Overrides of a random acquisition (or none: the reference lab) and its pixel size."""
    if rng.random() < random_fraction:
        overrides = random_acquisition(rng)
        return overrides, float(overrides["pixel_um"])
    return {}, REFERENCE_PIXEL_UM


class FieldPool:
    """Prepared phantom fields to cut training crops from, renewed as training goes.

    Args:
        config: the run's configuration.
    """

    def __init__(self, config: DetectorTrainConfig) -> None:
        self.config = config
        self.detector = config.detector_config()
        self.drawn = 0
        self.fields: deque[PreparedField] = deque(maxlen=config.pool_size)
        for _ in range(config.pool_size):
            self.fields.append(self.draw())

    def draw(self) -> PreparedField:
        """The next training field: ``field_rng(seed, TRAIN_SLIDE, drawn)``, prepared."""
        rng = field_rng(self.config.seed, TRAIN_SLIDE, self.drawn)
        self.drawn += 1
        overrides, pixel_um = _draw_acquisition(rng, self.config.random_acquisition_fraction)
        side = max(math.ceil(self.config.field_um / pixel_um), 256)
        phantom = phantom_config(width=side, height=side, acquisition=overrides)
        field = generate_field(phantom, rng)
        return prepare_field(field, phantom.pixel_um, self.detector)

    def refresh(self) -> None:
        """Replace the oldest field with a new one."""
        self.fields.append(self.draw())

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, TargetMaps]:
        """``batch_size`` random crops of random pool fields and their stacked targets."""
        crops, targets = [], []
        side = self.config.crop_px
        shape = map_shape(side, side, self.detector.stride)
        for _ in range(self.config.batch_size):
            field = self.fields[int(rng.integers(len(self.fields)))]
            centre = None
            if field.negatives and rng.random() < self.config.negative_crop_fraction:
                x0, y0, x1, y1 = field.negatives[int(rng.integers(len(field.negatives)))]
                centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            crop, boxes = random_crop(
                field, side, rng, min_visible=self.config.min_visible, centre=centre
            )
            crop, boxes = random_dihedral(crop, boxes, rng)
            crops.append(crop)
            targets.append(encode_targets(boxes, shape, self.detector.stride))
        return torch.from_numpy(np.stack(crops)), stack_targets(targets)


def random_crop(
    field: PreparedField,
    side: int,
    rng: np.random.Generator,
    *,
    min_visible: float,
    centre: tuple[float, float] | None = None,
) -> tuple[F32, list[Box]]:
    """A ``side`` square of the field (zero-padded where the field is smaller) and its boxes.

    The square lies anywhere in the field, or, given a ``centre``, around it (shifted by up
    to a quarter of its side, kept inside the field).

    Boxes are clipped to the crop; one with less than ``min_visible`` of its width or
    height inside is dropped.
    """
    channels, height, width = field.image.shape
    if centre is None:
        x = int(rng.integers(0, max(width - side, 0) + 1))
        y = int(rng.integers(0, max(height - side, 0) + 1))
    else:
        jitter = rng.uniform(-side / 4, side / 4, size=2)
        x = int(np.clip(round(centre[0] - side / 2 + jitter[0]), 0, max(width - side, 0)))
        y = int(np.clip(round(centre[1] - side / 2 + jitter[1]), 0, max(height - side, 0)))
    crop = np.zeros((channels, side, side), np.float32)
    part = field.image[:, y : y + side, x : x + side]
    crop[:, : part.shape[1], : part.shape[2]] = part
    boxes = []
    for x0, y0, x1, y1 in field.boxes:
        cx0, cy0 = max(x0 - x, 0.0), max(y0 - y, 0.0)
        cx1, cy1 = min(x1 - x, float(part.shape[2])), min(y1 - y, float(part.shape[1]))
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        if (cx1 - cx0) < min_visible * (x1 - x0) or (cy1 - cy0) < min_visible * (y1 - y0):
            continue
        boxes.append((cx0, cy0, cx1, cy1))
    return crop, boxes


def random_dihedral(
    crop: F32, boxes: Sequence[Box], rng: np.random.Generator
) -> tuple[F32, list[Box]]:
    """One of the 8 flips/rotations by 90° of a square crop, applied to crop and boxes."""
    side = crop.shape[-1]
    out = list(boxes)
    if rng.random() < 0.5:  # transpose: swap x and y
        crop = crop.transpose(0, 2, 1)
        out = [(y0, x0, y1, x1) for x0, y0, x1, y1 in out]
    if rng.random() < 0.5:  # mirror left-right
        crop = crop[:, :, ::-1]
        out = [(side - x1, y0, side - x0, y1) for x0, y0, x1, y1 in out]
    if rng.random() < 0.5:  # mirror top-bottom
        crop = crop[:, ::-1, :]
        out = [(x0, side - y1, x1, side - y0) for x0, y0, x1, y1 in out]
    return np.ascontiguousarray(crop), out


# ----------------------------------------------------------------------------- training


def train_detector(
    config: DetectorTrainConfig, out: Path, on_step: StepCallback | None = None
) -> Path:
    """Train a detector on phantom fields; return the path of ``out/detector.pt``.

    Args:
        config: the run (data, model size, optimiser, seed).
        out: folder for ``detector.pt`` and ``detector.yaml`` (created if missing).
        on_step: called after every step with the step index and its logs (``detection``,
            ``heatmap``, ``size``, ``offset``, ``objects``, ``lr``).
    """
    out.mkdir(parents=True, exist_ok=True)
    detector = config.detector_config()
    rng = np.random.default_rng([config.seed, TRAIN_SLIDE, 2**31 - 1])  # crops and flips
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_cell_net(detector)
        pool = FieldPool(config)
        log.info(
            "detector_pool_ready", fields=config.pool_size, seconds=time.perf_counter() - started
        )
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=learning_rate(config, 0), weight_decay=config.weight_decay
        )
        model.train()
        for step in range(config.steps):
            rate = learning_rate(config, step)
            for group in optimiser.param_groups:
                group["lr"] = rate
            images, targets = pool.batch(rng)
            loss, logs = detection_loss(
                model(images),
                targets,
                size_weight=config.size_weight,
                offset_weight=config.offset_weight,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            logs["lr"] = rate
            if on_step is not None:
                on_step(step, logs)
            if step % config.log_every == 0 or step == config.steps - 1:
                log.info(
                    "detector_step",
                    step=step,
                    seconds=round(time.perf_counter() - started, 1),
                    **logs,
                )
            if (step + 1) % config.refresh_every == 0 and step + 1 < config.steps:
                pool.refresh()
    path = out / CHECKPOINT_NAME
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": model.state_dict(),
            "config": detector.to_dict(),
            "training": config.model_dump(mode="json"),
        },
        path,
    )
    (out / CONFIG_NAME).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    log.info(
        "detector_trained",
        path=str(path),
        steps=config.steps,
        fields=pool.drawn,
        seconds=round(time.perf_counter() - started, 1),
    )
    return path


# ----------------------------------------------------------------------------- evaluation


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def evaluate_detector(
    path: Path | str,
    fields: int,
    seed: int,
    *,
    acquisition: str | Mapping[str, Any] | None = None,
    width: int | None = None,
    height: int | None = None,
    iou: float = 0.5,
    threshold: float = 0.3,
) -> dict[str, Any]:
    """Precision and recall of a trained detector on fresh phantom fields at IoU ``iou``.

    Field ``i`` is ``generate_field`` under ``acquisition`` with ``field_rng(seed, 0, i)``
    (the classical detection benchmark's fields); ``acquisition="random"`` draws a new
    ``random_acquisition`` per field. Every white cell with a non-empty box in the
    detector's modality counts, cells cut by the field edge included.

    Args:
        path: a ``detector.pt`` written by ``train_detector``.
        fields: number of fields.
        seed: seed of the fields (training fields come from another slide index, so any
            seed gives fields the detector has not seen).
        acquisition: a preset name, a YAML path, overrides, ``"random"``, or None for the
            reference lab.
        width: field width (default: a full camera frame, 2064).
        height: field height (default 1544).
        iou: least IoU of a match.
        threshold: lowest heatmap score reported.

    Returns:
        ``precision, recall, f1, tp, fp, fn, fields, cells, seconds_per_field`` and the
        run's ``modality``, ``acquisition``, ``seed`` and ``iou``.
    """
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields}")
    loaded = LearnedDetector.load(path, pixel_um=REFERENCE_PIXEL_UM, threshold=threshold)
    modality = loaded.config.modality
    tp = fp = fn = cells = 0
    seconds = 0.0
    for index in range(fields):
        overrides: str | Mapping[str, Any] | None = acquisition
        if acquisition == "random":
            overrides = random_acquisition(np.random.default_rng([seed, 0, index, 1]))
        config = phantom_config(width=width, height=height, acquisition=overrides)
        field = generate_field(config, field_rng(seed, 0, index))
        detector = LearnedDetector(
            maps=loaded.run,
            config=loaded.config,
            pixel_um=config.pixel_um,
            threshold=threshold,
        )
        truth = truth_boxes(field, modality)
        cells += len(truth)
        begun = time.perf_counter()
        found = detector.detect(field_image(field, modality))
        seconds += time.perf_counter() - begun
        matched = match_boxes(found, truth, iou)
        tp, fp, fn = tp + matched[0], fp + matched[1], fn + matched[2]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fields": fields,
        "cells": cells,
        "seconds_per_field": seconds / fields,
        "modality": str(modality),
        "acquisition": acquisition
        if isinstance(acquisition, str) or acquisition is None
        else dict(acquisition),
        "seed": seed,
        "iou": iou,
    }
