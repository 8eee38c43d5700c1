"""Training and evaluation of the learned white-cell detector on phantom fields.

The detector is CenterNet's "objects as points" (Zhou et al. 2019, arXiv:1904.07850;
``stainless.ml.models.detector``). Training data are phantom fields drawn on the fly:

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
  of a small lymphocyte and stains purple). The kind is drawn first, each kind in the
  field as often as the others, then an object of it: a field holds up to a hundred
  grains of precipitate and a few dozen platelets, but one or two clumps, which an object
  drawn at random would almost never be.

A step (``DetectorWorkload.step``) sets the AdamW rate (a warm-up and a cosine decay, a
function of the step), takes one batch of crops through ``detection_loss`` and steps.
``train_detector`` drives it in this process, logs through structlog and hands each
step's logs to ``on_step``; ``stainless_training.distributed.run_distributed`` drives it on
Ray Train workers (gradients averaged, each worker with fields and crops of its own), and
``detector_from_checkpoint`` turns that run's last checkpoint into the same files. Both
write ``detector.pt`` (``state_dict``, the ``DetectorConfig`` and this config, plain
values that ``torch.load(weights_only=True)`` reads) and ``detector.yaml`` (this config)
into ``out``. ``evaluate_detector`` scores a checkpoint on fresh fields (``field_rng(seed, 0,
i)``, as the classical detection benchmark; training fields come from slide
``TRAIN_SLIDE``, so they never coincide) at IoU 0.5 with ``stainless.imaging.scoring.score_field``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import structlog
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stainless.core.storage import ObjectStore
from stainless.datasets.detection import load_annotated_fields, read_detection_manifest
from stainless.datasets.manifest import DatasetError
from stainless.imaging.acquisition import random_acquisition
from stainless.imaging.detection import Detection
from stainless.imaging.phantom import PhantomCell, PhantomField, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.imaging.scoring import counted_boxes, score_field
from stainless.ml.losses.detection import detection_loss
from stainless.ml.models.detector import (
    CHECKPOINT_FORMAT,
    INPUT_MULTIPLE,
    DetectorConfig,
    DetectorOutput,
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
from stainless_training.config import ConfigError, validation_message
from stainless_training.runs import CHECKPOINT

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "TRAIN_SLIDE",
    "DetectorTrainConfig",
    "DetectorWorkload",
    "FieldPool",
    "PreparedField",
    "annotated_fields",
    "calibrate_threshold",
    "choose_threshold",
    "crop_rng",
    "detector_from_checkpoint",
    "dump_detector_config",
    "evaluate_detector",
    "field_image",
    "learning_rate",
    "load_detector_config",
    "prepare_field",
    "prepare_image",
    "random_crop",
    "random_dihedral",
    "save_detector",
    "train_detector",
    "truth_boxes",
]

CHECKPOINT_NAME = "detector.pt"
CONFIG_NAME = "detector.yaml"
TRAIN_SLIDE = 1000
"""Training field ``i`` comes from ``field_rng(seed, TRAIN_SLIDE, i)``; evaluation uses slide 0.

Worker ``r`` of a distributed run draws from slide ``TRAIN_SLIDE + r`` instead."""
CROP_STREAM = 2**31 - 1
"""The index, beside a training slide's field indices, of the stream of crops and flips."""

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
    checkpoint_every: int = Field(
        default=100, ge=1, description="Steps between checkpoints of a distributed run."
    )
    dataset: str | None = Field(
        default=None,
        description="A lab's annotated fields (key of `stainless dataset import coco|yolo`); "
        "none = phantom fields only.",
    )
    dataset_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Share of pool fields drawn from the dataset."
    )

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


def load_detector_config(path: Path | None, **overrides: Any) -> DetectorTrainConfig:
    """A run's settings: the YAML file's (defaults without one), then ``overrides``.

    Raises:
        ConfigError: the file cannot be read, or a value is wrong; the message says which.
    """
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read detector config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
    try:
        return DetectorTrainConfig.model_validate({**data, **overrides})
    except ValidationError as exc:
        raise ConfigError(f"{path or 'detector config'}: {validation_message(exc)}") from None


def dump_detector_config(config: DetectorTrainConfig) -> str:
    """YAML text of ``config`` that :func:`load_detector_config` reads back to an equal object."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


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
    negative_kinds: tuple[str, ...] = ()  # the kind of each negative (empty: unknown)


def prepare_image(
    image: npt.NDArray[np.generic],
    pixel_um: float,
    boxes: Sequence[Box],
    config: DetectorConfig,
    negatives: Sequence[Box] = (),
    negative_kinds: Sequence[str] = (),
) -> PreparedField:
    """``prepare`` a field's image and carry its boxes (in its pixels) to the working pixels."""
    prepared, _ = prepare(
        image, pixel_um, config.modality, working_pixel_um=config.working_pixel_um
    )
    sx, sy = image_scale(image.shape, prepared.shape)

    def scaled(items: Sequence[Box]) -> tuple[Box, ...]:
        return tuple((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in items)

    return PreparedField(prepared, scaled(boxes), scaled(negatives), tuple(negative_kinds))


def prepare_field(field: PhantomField, pixel_um: float, config: DetectorConfig) -> PreparedField:
    """``prepare`` a phantom field with its white cells and its smear objects (negatives)."""
    shown = [
        (o.box_bf if config.modality is Modality.BRIGHTFIELD else o.box_dic, str(o.kind))
        for o in field.smear_objects
    ]
    shown = [(b, kind) for b, kind in shown if b[2] > b[0] and b[3] > b[1]]
    return prepare_image(
        field_image(field, config.modality),
        pixel_um,
        truth_boxes(field, config.modality),
        config,
        negatives=[b for b, _ in shown],
        negative_kinds=[kind for _, kind in shown],
    )


def pick_negative(field: PreparedField, rng: np.random.Generator) -> Box:
    """A smear object of the field to centre a crop on: a kind drawn uniformly among the
    kinds the field holds, then an object of that kind (uniformly among all objects when
    the kinds are unknown)."""
    if not field.negative_kinds:
        return field.negatives[int(rng.integers(len(field.negatives)))]
    kinds = sorted(set(field.negative_kinds))
    kind = kinds[int(rng.integers(len(kinds)))]
    of_kind = [b for b, k in zip(field.negatives, field.negative_kinds, strict=True) if k == kind]
    return of_kind[int(rng.integers(len(of_kind)))]


def annotated_fields(config: DetectorTrainConfig, store: ObjectStore | None) -> list[PreparedField]:
    """The run's dataset of annotated fields (``config.dataset``), prepared; none without one.

    Raises:
        DatasetError: no store to read it from, a dataset that cannot be read, or one of
            the other modality.
    """
    if config.dataset is None:
        return []
    if store is None:
        raise DatasetError(f"dataset {config.dataset!r}: training on it needs the object store")
    manifest = read_detection_manifest(store, config.dataset)
    if manifest.modality != config.modality.value:
        raise DatasetError(
            f"dataset {config.dataset!r} holds {manifest.modality} fields, "
            f"the run trains a {config.modality.value} detector"
        )
    detector = config.detector_config()
    return [
        prepare_image(field.image, field.pixel_um, field.boxes, detector)
        for field in load_annotated_fields(store, manifest)
    ]


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
        rank: the worker of a distributed run (0 alone): worker ``r`` draws its fields from
            slide ``TRAIN_SLIDE + r``, so no two workers train on the same fields.
        annotated: a lab's annotated fields, prepared (``annotated_fields``): each draw
            takes one of them with probability ``config.dataset_fraction``.
    """

    def __init__(
        self,
        config: DetectorTrainConfig,
        *,
        rank: int = 0,
        annotated: Sequence[PreparedField] = (),
    ) -> None:
        self.config = config
        self.detector = config.detector_config()
        self.slide = TRAIN_SLIDE + rank
        self.annotated = tuple(annotated)
        self.drawn = 0
        self.fields: deque[PreparedField] = deque(maxlen=config.pool_size)
        for _ in range(config.pool_size):
            self.fields.append(self.draw())

    def draw(self) -> PreparedField:
        """The next training field, from ``field_rng(seed, slide, drawn)``: an annotated one,
        or a phantom field rendered and prepared."""
        rng = field_rng(self.config.seed, self.slide, self.drawn)
        self.drawn += 1
        if self.annotated and rng.random() < self.config.dataset_fraction:
            return self.annotated[int(rng.integers(len(self.annotated)))]
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
                x0, y0, x1, y1 = pick_negative(field, rng)
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


def crop_rng(config: DetectorTrainConfig, rank: int, step: int) -> np.random.Generator:
    """The crops and flips of worker ``rank``'s batch at ``step``: a function of the step,
    so a run resumed from a checkpoint cuts the crops an uninterrupted one would."""
    return np.random.default_rng([config.seed, TRAIN_SLIDE + rank, CROP_STREAM, step])


class DetectorWorkload:
    """One worker's detector training: a ``CellNet``, AdamW, a field pool, one step at a time.

    ``train_detector`` runs it alone; on Ray Train it is the ``Workload`` of a detector
    run (``stainless_training.distributed``): every worker builds the same network from
    the seed (rank 0's is broadcast anyway), cuts its crops from a pool of its own
    (``FieldPool(rank=...)``) with its own ``crop_rng``, and the loop averages the
    gradients before each AdamW step. The crops are the workload's to draw: ``labels``
    are ``batch_size`` one-crop "classes", so the loop's class-balanced batch plan only
    numbers the step's crops (``step`` ignores the indices; the loop's samples/s counts
    crops).

    Args:
        config: the run.
        rank: the worker (0 when training alone).
    """

    def __init__(
        self,
        config: DetectorTrainConfig,
        *,
        rank: int = 0,
        annotated: Sequence[PreparedField] = (),
    ) -> None:
        self.config = config
        self.rank = rank
        self.device = torch.device("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = build_cell_net(config.detector_config())
        self.model.train()
        self.optimiser = torch.optim.AdamW(
            self.model.parameters(),
            lr=learning_rate(config, 0),
            weight_decay=config.weight_decay,
        )
        self.pool = FieldPool(config, rank=rank, annotated=annotated)

    @property
    def modules(self) -> Sequence[torch.nn.Module]:
        return (self.model,)

    @property
    def optimizers(self) -> Sequence[torch.optim.Optimizer]:
        return (self.optimiser,)

    @property
    def labels(self) -> Sequence[int]:
        return range(self.config.batch_size)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.device = device

    def step(self, indices: list[int], step: int) -> Logs:
        """One AdamW step on a batch of crops at ``step``'s rate; then renew the pool if due.

        Args:
            indices: ignored (the crops come from the pool, see the class).
            step: the step's index (rate, crops, pool renewal).

        Returns:
            ``detection``, ``heatmap``, ``size``, ``offset``, ``objects`` and ``lr``.
        """
        config = self.config
        rate = learning_rate(config, step)
        for group in self.optimiser.param_groups:
            group["lr"] = rate
        images, targets = self.pool.batch(crop_rng(config, self.rank, step))
        maps = self.model(images.to(self.device))
        with torch.autocast(self.device.type, enabled=False):  # the loss in float32 (AMP)
            loss, logs = detection_loss(
                DetectorOutput(*(m.float() for m in maps)),
                TargetMaps(*(t.to(self.device) for t in targets)),
                size_weight=config.size_weight,
                offset_weight=config.offset_weight,
            )
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimiser.step()
        if (step + 1) % config.refresh_every == 0 and step + 1 < config.steps:
            self.pool.refresh()
        return {**logs, "lr": rate}

    def state(self, step: int) -> dict[str, object]:
        """What resuming after ``step`` steps needs (the pool is redrawn from its count)."""
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "drawn": self.pool.drawn,
            "training": self.config.model_dump(mode="json"),
        }

    def load(self, state: dict[str, object]) -> int:
        """Continue from ``state``; return its step.

        The pool is brought to the same count of drawn fields by renewing it: the fields
        are a function of their index, so it then holds what it held when ``state`` was
        taken (a resumed run draws again the fields it dropped, a small price for pools of
        any data source).
        """
        step, drawn = state["step"], state["drawn"]
        if not isinstance(step, int) or not isinstance(drawn, int):
            raise ValueError(f"not a detector workload's state: step {step!r}, drawn {drawn!r}")
        self.model.load_state_dict(cast(Mapping[str, Any], state["model"]))
        self.optimiser.load_state_dict(cast(dict[str, Any], state["optimiser"]))
        while self.pool.drawn < drawn:
            self.pool.refresh()
        return step


def save_detector(
    state_dict: Mapping[str, torch.Tensor], config: DetectorTrainConfig, out: Path
) -> Path:
    """Write ``out/detector.pt`` (format ``stainless.detector``) and ``out/detector.yaml``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT_NAME
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": {name: value.detach().cpu() for name, value in state_dict.items()},
            "config": config.detector_config().to_dict(),
            "training": config.model_dump(mode="json"),
        },
        path,
    )
    (out / CONFIG_NAME).write_text(dump_detector_config(config))
    return path


def detector_from_checkpoint(folder: Path, out: Path) -> Path:
    """Turn a distributed run's checkpoint (``folder/checkpoint.pt``) into ``out/detector.pt``.

    The result is what ``train_detector`` writes: ``LearnedDetector.load`` and
    ``stainless export-detector`` read it.

    Raises:
        ValueError: ``folder`` holds no detector run's checkpoint.
    """
    path = folder / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = DetectorTrainConfig.model_validate(state["training"])
        weights = state["model"]
    except (OSError, RuntimeError, KeyError, TypeError, ValidationError) as exc:
        raise ValueError(f"{path} is no detector run's checkpoint: {exc}") from None
    return save_detector(weights, config, out)


def train_detector(
    config: DetectorTrainConfig,
    out: Path,
    on_step: StepCallback | None = None,
    *,
    store: ObjectStore | None = None,
) -> Path:
    """Train a detector on phantom fields in this process; return the path of ``out/detector.pt``.

    Args:
        config: the run (data, model size, optimiser, seed).
        out: folder for ``detector.pt`` and ``detector.yaml`` (created if missing).
        on_step: called after every step with the step index and its logs (``detection``,
            ``heatmap``, ``size``, ``offset``, ``objects``, ``lr``).
        store: where ``config.dataset`` lives, when the run names one.
    """
    started = time.perf_counter()
    work = DetectorWorkload(config, annotated=annotated_fields(config, store))
    log.info("detector_pool_ready", fields=config.pool_size, seconds=time.perf_counter() - started)
    for step in range(config.steps):
        logs = work.step([], step)
        if on_step is not None:
            on_step(step, logs)
        if step % config.log_every == 0 or step == config.steps - 1:
            log.info(
                "detector_step",
                step=step,
                seconds=round(time.perf_counter() - started, 1),
                **logs,
            )
    path = save_detector(work.model.state_dict(), config, out)
    log.info(
        "detector_trained",
        path=str(path),
        steps=config.steps,
        fields=work.pool.drawn,
        seconds=round(time.perf_counter() - started, 1),
    )
    return path


# ----------------------------------------------------------------------------- evaluation


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def _scored_fields(
    loaded: LearnedDetector,
    fields: int,
    seed: int,
    acquisition: str | Mapping[str, Any] | None,
    width: int | None,
    height: int | None,
) -> Iterator[tuple[list[Detection], tuple[PhantomCell, ...], float]]:
    """Per evaluation field: what ``loaded`` finds (at its threshold), its cells, seconds.

    Field ``i`` is ``generate_field`` under ``acquisition`` with ``field_rng(seed, 0, i)``;
    ``acquisition="random"`` draws a new ``random_acquisition`` per field.
    """
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields}")
    modality = loaded.config.modality
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
            threshold=loaded.threshold,
            max_detections=loaded.max_detections,
        )
        begun = time.perf_counter()
        found = detector.detect(field_image(field, modality))
        yield found, field.cells, time.perf_counter() - begun


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def evaluate_detector(
    path: Path | str,
    fields: int,
    seed: int,
    *,
    acquisition: str | Mapping[str, Any] | None = None,
    width: int | None = None,
    height: int | None = None,
    iou: float = 0.5,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Precision and recall of a trained detector on fresh phantom fields at IoU ``iou``.

    Field ``i`` is ``generate_field`` under ``acquisition`` with ``field_rng(seed, 0, i)``
    (the classical detection benchmark's fields); ``acquisition="random"`` draws a new
    ``random_acquisition`` per field. Every white cell with a non-empty box in the
    detector's modality counts unless less than half of it lies in the field
    (``stainless.imaging.scoring``, as the robustness benchmark scores).

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
        threshold: lowest heatmap score reported; default the checkpoint's own.

    Returns:
        ``precision, recall, f1, tp, fp, fn, fields, cells, seconds_per_field`` and the
        run's ``modality``, ``acquisition``, ``seed``, ``iou`` and ``threshold``.
    """
    loaded = LearnedDetector.load(path, pixel_um=REFERENCE_PIXEL_UM, threshold=threshold)
    tp = fp = fn = cells = 0
    seconds = 0.0
    modality = str(loaded.config.modality)
    for found, truth, spent in _scored_fields(loaded, fields, seed, acquisition, width, height):
        cells += len(counted_boxes(truth, modality))
        seconds += spent
        matched = score_field(found, truth, modality, iou)
        tp, fp, fn = tp + matched[0], fp + matched[1], fn + matched[2]
    return {
        **_scores(tp, fp, fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fields": fields,
        "cells": cells,
        "seconds_per_field": seconds / fields,
        "modality": str(loaded.config.modality),
        "acquisition": acquisition
        if isinstance(acquisition, str) or acquisition is None
        else dict(acquisition),
        "seed": seed,
        "iou": iou,
        "threshold": loaded.threshold,
    }


CALIBRATION_THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # 0.20 … 0.80
CALIBRATION_SEED = 77
"""Seed of the calibration fields: neither training's slides nor the benchmarks' seed."""


def choose_threshold(table: Sequence[Mapping[str, float]]) -> float:
    """The threshold of a calibration table (rows of ``threshold``, ``precision``,
    ``recall``, ``f1``) whose lower of precision and recall is highest; then the higher
    F1; then the lower threshold.

    The targets bound precision and recall each (``stainless bench robustness``), so the
    balance of the two decides, not F1, which may buy a little precision with more recall
    than the target allows (0.98 / 0.88 over 0.94 / 0.90).
    """
    if not table:
        raise ValueError("an empty calibration table")
    best = max(
        table,
        key=lambda row: (min(row["precision"], row["recall"]), row["f1"], -row["threshold"]),
    )
    return float(best["threshold"])


def calibrate_threshold(
    path: Path | str,
    *,
    fields: int = 40,
    seed: int = CALIBRATION_SEED,
    thresholds: Sequence[float] = CALIBRATION_THRESHOLDS,
    iou: float = 0.5,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    """Choose the checkpoint's score threshold on held-out fields and write it into it.

    The fields are random acquisitions (``random_acquisition``) of ``field_rng(seed, 0,
    i)``; each is run once at the lowest threshold and scored at every one of
    ``thresholds``; the threshold :func:`choose_threshold` takes from that table is
    stored in the checkpoint as ``threshold`` with the table as ``calibration``. Export
    and ``LearnedDetector.load`` then use it. ``width`` and ``height`` default to a full
    camera frame.

    Returns:
        ``threshold`` (chosen), ``fields``, ``seed``, ``iou`` and ``table`` (per threshold:
        precision, recall, f1, tp, fp, fn).
    """
    if not thresholds:
        raise ValueError("no thresholds to choose from")
    loaded = LearnedDetector.load(
        path, pixel_um=REFERENCE_PIXEL_UM, threshold=min(thresholds), max_detections=1000
    )
    counts = {t: [0, 0, 0] for t in sorted(thresholds)}
    modality = str(loaded.config.modality)
    for found, truth, _ in _scored_fields(loaded, fields, seed, "random", width, height):
        for t, count in counts.items():
            matched = score_field([d for d in found if d.score >= t], truth, modality, iou)
            for i in range(3):
                count[i] += matched[i]
    table = [
        {"threshold": t, **_scores(*c), "tp": c[0], "fp": c[1], "fn": c[2]}
        for t, c in counts.items()
    ]
    chosen = choose_threshold(table)
    calibration = {
        "threshold": chosen,
        "fields": fields,
        "seed": seed,
        "iou": iou,
        "table": table,
    }
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["threshold"] = chosen
    checkpoint["calibration"] = calibration
    torch.save(checkpoint, path)
    return calibration
