"""A small learned white-cell detector: a single-stage, anchor-free "objects as points" net.

The idea is CenterNet (Zhou, Wang & Krähenbühl 2019, "Objects as Points",
arXiv:1904.07850), written here from the paper for one class ("white cell"). A cell is the
peak of a centre heatmap at output stride ``R``; two more heads give, at that peak, the
box size and the sub-pixel offset of the centre lost to the stride. Decoding takes the
local maxima of the heatmap (a 3x3 max-pool instead of non-maximum suppression, paper
section 4) and reads size and offset there.

* ``prepare``: a field at any pixel size becomes the network's input at
  ``working_pixel_um`` (0.3 µm/px by default), so one network serves 100x oil, 50x and
  binned 40x alike: brightfield as optical density against the field's own flat field
  (3 channels), DIC as relative intensity against its flat field minus 1 (1 channel). No
  lab constant enters: both flat fields are estimated from each field.
* ``CellNet``: a small encoder-decoder (stride 16 at the bottom, lateral skips, back up to
  the output stride) with three heads: centre heatmap (logits; bias -2.19, the logit of
  a 0.1 prior, as CenterNet initialises it), box size ``(w, h)`` in working pixels
  (predicted as a log, returned positive) and offset ``(dx, dy)`` in output cells.
* ``encode_targets`` / ``decode``: ground-truth boxes to the three maps plus the mask of
  object centres, and the reverse, back to the image's own pixels.
* ``LearnedDetector``: the ``WbcDetector`` port over a trained ``CellNet``.

Boxes are ``(x0, y0, x1, y1)`` with exclusive ends; pixel ``i`` covers ``[i, i + 1)``, so
a box's centre is ``((x0 + x1) / 2, (y0 + y1) / 2)``. No module here picks a device.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional

from stainless.imaging.detection import Detection
from stainless.imaging.field_statistics import estimate_background, optical_density
from stainless.ml.models.blocks import require_positive

F32 = npt.NDArray[np.float32]
BoxLike = Sequence[float]

__all__ = [
    "BACKGROUND_BLOCK_UM",
    "CHECKPOINT_FORMAT",
    "DEFAULT_THRESHOLD",
    "INPUT_MULTIPLE",
    "CellNet",
    "DetectorConfig",
    "DetectorOutput",
    "LearnedDetector",
    "MapsFunction",
    "Modality",
    "ServedMaps",
    "TargetMaps",
    "TrainedDetector",
    "build_cell_net",
    "centre_radius",
    "decode",
    "encode_targets",
    "image_scale",
    "load_network",
    "map_shape",
    "network_maps",
    "pad_to_multiple",
    "prepare",
    "stack_targets",
]

CHECKPOINT_FORMAT = "stainless.detector/1"
"""Written into every checkpoint; ``LearnedDetector.load`` refuses any other."""

INPUT_MULTIPLE = 16
"""The encoder halves the input four times: inputs padded to this multiple map exactly."""

_HEATMAP_PRIOR = 0.1  # bias -log((1 - 0.1) / 0.1) = -2.19: the focal loss starts stable
_SIZE_LOG_CLAMP = (-4.0, 8.0)  # exp: 0.02 .. 2981 working px


class Modality(StrEnum):
    """The image a detector works on; ``Modality("x")`` raises ``ValueError``."""

    BRIGHTFIELD = "bf"
    DIC = "dic"

    @property
    def channels(self) -> int:
        """Input channels of the prepared image: OD per R, G, B, or one relative intensity."""
        return 3 if self is Modality.BRIGHTFIELD else 1


BACKGROUND_BLOCK_UM: Mapping[Modality, float] = {
    # A few red cells per block, as the classical brightfield detector uses.
    Modality.BRIGHTFIELD: 10.0,
    # The relief's median is robust over smaller blocks (as the classical DIC detector).
    Modality.DIC: 6.0,
}
"""Block side (µm) of the flat-field estimate in ``prepare``."""

OD_RANGE = (-0.5, 3.0)
"""Brightfield OD is clipped to this range (3.0: 5% transmission, far above any stain)."""

DIC_RANGE = (-2.0, 2.0)
"""DIC relative intensity minus 1 is clipped to this range (cells reach about ±0.6)."""


@dataclass(frozen=True)
class DetectorConfig:
    """What a trained detector needs to be rebuilt and fed; written into its checkpoint.

    Args:
        modality: ``"bf"`` (brightfield, 3 channels of OD) or ``"dic"`` (1 channel).
        working_pixel_um: every field is resampled so that one pixel is this many µm: the
            network never sees the camera's pixel size (a 12 µm cell is 40 px at 0.3).
        width: channels of the first encoder level (doubled twice below it).
        stride: output stride ``R`` of the heatmap (paper: 4); one of 2, 4, 8, 16.
    """

    modality: Modality = Modality.BRIGHTFIELD
    working_pixel_um: float = 0.3
    width: int = 16
    stride: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality(self.modality))
        if isinstance(self.width, bool) or not isinstance(self.width, int):
            raise ValueError(f"width must be an int, got {self.width!r}")
        require_positive(working_pixel_um=self.working_pixel_um, width=self.width)
        if self.stride not in _STRIDES:
            raise ValueError(f"stride must be one of {_STRIDES}, got {self.stride!r}")

    @property
    def channels(self) -> int:
        return self.modality.channels

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the modality as its string), for a checkpoint or a JSON file."""
        data = asdict(self)
        data["modality"] = str(self.modality)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        """The config ``to_dict`` wrote; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown detector config keys: {', '.join(unknown)}")
        return cls(**dict(data))


_STRIDES = (2, 4, 8, 16)


# ----------------------------------------------------------------------------- network


class _ConvBnRelu(nn.Sequential):
    """3x3 (or 1x1) convolution, batch norm, ReLU; 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Residual(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` at constant width (ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _ConvBnRelu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return functional.relu(x + self.body(x))


class _Down(nn.Sequential):
    """Halve the spatial size (stride-2 conv), then one residual block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(_ConvBnRelu(in_channels, out_channels, stride=2), _Residual(out_channels))


class _Up(nn.Module):
    """Upsample the deeper map to the skip's size, add the skip's 1x1 projection, fuse."""

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = _ConvBnRelu(deep_channels, out_channels)
        self.lateral = nn.Conv2d(skip_channels, out_channels, 1)
        self.fuse = _ConvBnRelu(out_channels, out_channels)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = functional.interpolate(self.reduce(deep), size=skip.shape[-2:], mode="nearest")
        fused: Tensor = self.fuse(up + self.lateral(skip))
        return fused


class _Head(nn.Sequential):
    """3x3 conv + ReLU + 1x1 conv to ``out_channels`` maps (the paper's output heads)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, bias: float) -> None:
        final = nn.Conv2d(hidden, out_channels, 1)
        if final.bias is not None:  # always: a Conv2d has a bias by default
            nn.init.constant_(final.bias, bias)
        super().__init__(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), final)


class DetectorOutput(NamedTuple):
    """The three maps of ``CellNet`` at the output stride, for a batch ``(B, ., h, w)``."""

    heatmap: Tensor  # (B, 1, h, w) centre logits; sigmoid gives the score
    size: Tensor  # (B, 2, h, w) box (w, h) in working pixels, positive
    offset: Tensor  # (B, 2, h, w) centre offset (dx, dy) in output cells, ~[0, 1)


class CellNet(nn.Module):
    """Encoder-decoder with a centre heatmap, a size and an offset head (CenterNet).

    The encoder halves the input four times (a stride-2 stem, then three stride-2 stages
    each with a residual block: channels ``w, 2w, 4w, 4w`` at strides 2, 4, 8, 16); the
    decoder goes back up to ``stride`` adding 1x1 projections of the encoder's maps (a
    feature pyramid's top-down path). Any input size works; inputs padded to a multiple of
    ``INPUT_MULTIPLE`` give maps of exactly ``input / stride``.

    Args:
        in_channels: 3 (brightfield OD) or 1 (DIC).
        width: channels ``w`` of the first level; 16 gives about 0.3 M parameters.
        stride: output stride ``R``: 2, 4 (paper), 8 or 16.
        size_prior_px: box side (working px) the size head predicts before training,
            so its log starts near the answer (a 10 µm cell is 33 px at 0.3 µm/px).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        width: int = 16,
        stride: int = 4,
        size_prior_px: float = 32.0,
    ) -> None:
        super().__init__()
        require_positive(in_channels=in_channels, width=width, size_prior_px=size_prior_px)
        if stride not in _STRIDES:
            raise ValueError(f"stride must be one of {_STRIDES}, got {stride!r}")
        self.stride = stride
        channels = [width, 2 * width, 4 * width, 4 * width]  # strides 2, 4, 8, 16
        self.stem = _ConvBnRelu(in_channels, channels[0], stride=2)
        self.down = nn.ModuleList(
            _Down(channels[i], channels[i + 1]) for i in range(len(channels) - 1)
        )
        levels = int(math.log2(16 // stride))  # up-steps from stride 16
        decoder = 2 * width
        self.up = nn.ModuleList()
        deep = channels[-1]
        for level in range(levels):
            skip = channels[-2 - level]
            self.up.append(_Up(deep, skip, decoder))
            deep = decoder
        out = deep
        self.heatmap = _Head(out, decoder, 1, -math.log((1 - _HEATMAP_PRIOR) / _HEATMAP_PRIOR))
        self.size = _Head(out, decoder, 2, math.log(size_prior_px))
        self.offset = _Head(out, decoder, 2, 0.5)

    def forward(self, x: Tensor) -> DetectorOutput:
        """Maps of a batch ``(B, C, H, W)`` of prepared images at the output stride."""
        features = [self.stem(x)]
        for stage in self.down:
            features.append(stage(features[-1]))
        y = features[-1]
        for level, block in enumerate(self.up):
            y = block(y, features[-2 - level])
        log_size = self.size(y).clamp(*_SIZE_LOG_CLAMP)
        return DetectorOutput(self.heatmap(y), torch.exp(log_size), self.offset(y))


def build_cell_net(config: DetectorConfig) -> CellNet:
    """The network a ``DetectorConfig`` describes (initialised, on the CPU)."""
    return CellNet(in_channels=config.channels, width=config.width, stride=config.stride)


def map_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """Output map size of ``CellNet`` for an input whose sides are multiples of 16."""
    if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(f"input sides must be multiples of {INPUT_MULTIPLE}, got {height}x{width}")
    return height // stride, width // stride


def pad_to_multiple(image: F32, multiple: int = INPUT_MULTIPLE) -> F32:
    """Pad a ``C x H x W`` image at the bottom and right to multiples of ``multiple``.

    The edge rows and columns are repeated (padding at the far edges keeps every
    coordinate where it was). Repeating, not zeros: a red cell cut by the field edge then
    runs on instead of ending in a flat band, which on DIC fields was taken for a cut white
    cell more often (20 reference fields, a 1200-step DIC detector: 14 instead of 21 false
    positives at score 0.3, the same recall).
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")


# ----------------------------------------------------------------------------- input


def _check_image(image: object, modality: Modality) -> npt.NDArray[np.generic]:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"the image must be a numpy array, got {type(image).__name__}")
    if modality is Modality.BRIGHTFIELD and (image.ndim != 3 or image.shape[2] != 3):
        raise ValueError(f"a brightfield image must be HxWx3, got shape {image.shape}")
    if modality is Modality.DIC and image.ndim != 2:
        raise ValueError(f"a DIC image must be HxW, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"the image must have an integer or float dtype, got {image.dtype}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"the image must be at least 16x16 pixels, got {image.shape}")
    return image


def prepare(
    image: npt.NDArray[np.generic],
    pixel_um: float,
    modality: Modality | str,
    *,
    working_pixel_um: float = 0.3,
    background_um: float | None = None,
) -> tuple[F32, float]:
    """A field as the network's input ``C x H' x W'`` at ``working_pixel_um``, and the scale.

    1. Resample by ``scale = pixel_um / working_pixel_um`` (``cv2.INTER_AREA``), so a cell
       has the same size in pixels whatever the camera's pixel size.
    2. Brightfield: optical density ``ln(background / I)`` per channel against the field's
       own flat field (``estimate_background``), clipped to ``OD_RANGE`` (3 channels).
       DIC: ``I / background - 1`` against the flat field estimated for relief
       (``relief=True``), clipped to ``DIC_RANGE`` (1 channel).

    Args:
        image: brightfield ``HxWx3`` or DIC ``HxW``, any integer or float type, any depth.
        pixel_um: the image's pixel size in the specimen.
        modality: ``"bf"`` or ``"dic"``.
        working_pixel_um: the detector's pixel size.
        background_um: block side of the flat-field estimate; default
            ``BACKGROUND_BLOCK_UM[modality]``.

    Returns:
        The prepared image (float32, C-contiguous) and ``scale``: working pixels per image
        pixel (``x_working = x_image * scale``; per axis the sides are rounded, see
        ``image_scale``).
    """
    kind = Modality(modality)
    values = _check_image(image, kind)
    require_positive(pixel_um=pixel_um, working_pixel_um=working_pixel_um)
    block_um = BACKGROUND_BLOCK_UM[kind] if background_um is None else background_um
    require_positive(background_um=block_um)
    scale = pixel_um / working_pixel_um
    height, width = values.shape[:2]
    size = (max(round(width * scale), INPUT_MULTIPLE), max(round(height * scale), INPUT_MULTIPLE))
    resized = np.asarray(
        cv2.resize(values.astype(np.float32), size, interpolation=cv2.INTER_AREA), np.float32
    )
    block = max(round(block_um / working_pixel_um), 16)
    if kind is Modality.BRIGHTFIELD:
        od = optical_density(resized, estimate_background(resized, block))
        prepared = np.clip(od, *OD_RANGE).transpose(2, 0, 1)
    else:
        background = estimate_background(resized, block, relief=True)[..., 0]
        relative = resized / np.maximum(background, np.float32(1e-6)) - np.float32(1.0)
        prepared = np.clip(relative, *DIC_RANGE)[None].astype(np.float32)
    return np.ascontiguousarray(prepared, np.float32), scale


def image_scale(image_shape: Sequence[int], prepared_shape: Sequence[int]) -> tuple[float, float]:
    """Exact per-axis ``(sx, sy)`` working pixels per image pixel after ``prepare``.

    ``prepare`` rounds the resampled sides; this is the ratio ``cv2.resize`` really applied.

    Args:
        image_shape: the image's shape (``H, W[, C]``).
        prepared_shape: the prepared image's shape (``C, H', W'``), before any padding.
    """
    return prepared_shape[-1] / image_shape[1], prepared_shape[-2] / image_shape[0]


# ----------------------------------------------------------------------------- targets


class TargetMaps(NamedTuple):
    """Training targets of one image (numpy, ``(C, h, w)``) or a batch (tensors, ``(B, C, h, w)``).

    ``heatmap`` is 1 exactly at each object's centre cell and a Gaussian around it;
    ``size`` and ``offset`` hold the object's values at its centre cell, 0 elsewhere;
    ``mask`` is 1 at centre cells.
    """

    heatmap: Any  # (1, h, w)
    size: Any  # (2, h, w) box (w, h) in working pixels
    offset: Any  # (2, h, w) centre / stride - centre cell, in [0, 1)
    mask: Any  # (1, h, w) 1 at object centres


def centre_radius(width: float, height: float, min_overlap: float = 0.7) -> float:
    """How far a centre may move (along x and y at once) keeping IoU >= ``min_overlap``.

    A box of the same size shifted by ``d`` in both axes overlaps the true box by
    ``(w - d)(h - d)``; IoU >= t holds while that is at least ``k w h`` with
    ``k = 2t / (1 + t)``. The smaller root of ``d² - (w + h) d + (1 - k) w h = 0`` is the
    radius. This is a simpler rule than the corner-based one the paper takes from CornerNet
    (its section 3: a size-adaptive σ, with ``min_overlap`` 0.7); ``encode_targets`` uses
    the radius as the Gaussian's standard deviation, about a tenth of the box side.

    Args:
        width: box width (any unit; the radius is in the same unit).
        height: box height.
        min_overlap: the IoU a detection centred one radius away would still reach.
    """
    if not 0 < min_overlap < 1:
        raise ValueError(f"min_overlap must lie in (0, 1), got {min_overlap}")
    if width <= 0 or height <= 0:
        return 0.0
    k = 2 * min_overlap / (1 + min_overlap)
    total = width + height
    return (total - math.sqrt(total * total - 4 * (1 - k) * width * height)) / 2


def encode_targets(
    boxes: Sequence[BoxLike],
    map_shape: tuple[int, int],
    stride: int,
    *,
    min_overlap: float = 0.7,
    min_sigma: float = 1 / 3,
) -> TargetMaps:
    """Heatmap, size, offset and centre mask of ``boxes`` on an ``h x w`` output map.

    Each box ``(x0, y0, x1, y1)`` in working pixels (continuous edges; exclusive ends for
    integer boxes) has its centre ``c`` at output position ``c / stride``; its centre cell
    ``p = floor(c / stride)`` is 1 in the heatmap and around it lies a Gaussian
    ``exp(-|q - p|² / 2σ²)`` over cells ``q`` (paper section 3; overlapping Gaussians take
    the element-wise maximum), with ``σ = max(centre_radius(w / R, h / R), min_sigma)``.
    The size target is ``(x1 - x0, y1 - y0)`` and the offset ``c / stride - p`` (paper
    eq. 2). Empty boxes and boxes whose centre falls outside the map are skipped; of two
    boxes sharing a centre cell the later one sets size and offset.

    Args:
        boxes: boxes in the prepared image's working pixels.
        map_shape: ``(h, w)`` of the output map (``map_shape()``).
        stride: the network's output stride.
        min_overlap: IoU kept by a centre one σ away (``centre_radius``).
        min_sigma: smallest Gaussian σ in output cells.

    Returns:
        ``TargetMaps`` of float32 numpy arrays.
    """
    height, width = map_shape
    require_positive(height=height, width=width, stride=stride, min_sigma=min_sigma)
    heatmap = np.zeros((1, height, width), np.float32)
    size = np.zeros((2, height, width), np.float32)
    offset = np.zeros((2, height, width), np.float32)
    mask = np.zeros((1, height, width), np.float32)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1), got {box}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            continue
        cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        px, py = math.floor(cx), math.floor(cy)
        if not (0 <= px < width and 0 <= py < height):
            continue
        sigma = max(centre_radius((x1 - x0) / stride, (y1 - y0) / stride, min_overlap), min_sigma)
        _splat(heatmap[0], px, py, sigma)
        size[:, py, px] = (x1 - x0, y1 - y0)
        offset[:, py, px] = (cx - px, cy - py)
        mask[0, py, px] = 1.0
    return TargetMaps(heatmap, size, offset, mask)


def _splat(heatmap: F32, px: int, py: int, sigma: float) -> None:
    """Draw a Gaussian peak of height 1 at cell ``(px, py)`` (max with what is there)."""
    radius = max(math.ceil(3 * sigma), 1)
    height, width = heatmap.shape
    left, right = min(px, radius), min(width - px - 1, radius)
    top, bottom = min(py, radius), min(height - py - 1, radius)
    ys = np.arange(-top, bottom + 1, dtype=np.float32)[:, None]
    xs = np.arange(-left, right + 1, dtype=np.float32)[None, :]
    gaussian = np.exp(-(xs * xs + ys * ys) / np.float32(2 * sigma * sigma))
    window = heatmap[py - top : py + bottom + 1, px - left : px + right + 1]
    np.maximum(window, gaussian, out=window)


def stack_targets(items: Sequence[TargetMaps]) -> TargetMaps:
    """A batch of per-image numpy targets as ``(B, C, h, w)`` float tensors (CPU)."""
    if not items:
        raise ValueError("stack_targets needs at least one item")
    return TargetMaps(
        *(
            torch.from_numpy(np.stack([getattr(t, name) for t in items]))
            for name in TargetMaps._fields
        )
    )


# ----------------------------------------------------------------------------- decoding


def decode(
    heatmap: Tensor | F32,
    size: Tensor | F32,
    offset: Tensor | F32,
    threshold: float = 0.3,
    max_detections: int = 100,
    *,
    stride: int = 4,
    scale: float | tuple[float, float] = 1.0,
) -> list[Detection]:
    """Boxes and scores of one image's maps, in the image's own pixels.

    Peaks are the cells equal to the maximum of their 3x3 neighbourhood (paper section 4:
    this replaces non-maximum suppression); the ``max_detections`` highest at or above
    ``threshold`` become boxes centred at ``(p + offset) * stride`` with the predicted
    size, divided by ``scale`` (working pixels per image pixel, one value or ``(sx, sy)``)
    and rounded to whole pixels. Boxes that round to nothing are dropped; nothing is
    clipped to the image (``LearnedDetector`` does that).

    Args:
        heatmap: scores in [0, 1] (after the sigmoid), ``(1, h, w)`` or ``(h, w)``.
        size: ``(2, h, w)`` box (w, h) in working pixels.
        offset: ``(2, h, w)`` centre offset in output cells.
        threshold: lowest score kept.
        max_detections: most peaks kept (the highest).
        stride: the network's output stride.
        scale: working pixels per image pixel (``prepare``'s scale, or ``image_scale``).

    Returns:
        Detections, highest score first.
    """
    scores = torch.as_tensor(heatmap, dtype=torch.float32).detach().cpu()
    if scores.dim() == 3 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.dim() != 2:
        raise ValueError(f"heatmap must be (1, h, w) or (h, w), got {tuple(scores.shape)}")
    sizes = torch.as_tensor(size, dtype=torch.float32).detach().cpu()
    offsets = torch.as_tensor(offset, dtype=torch.float32).detach().cpu()
    for name, maps in (("size", sizes), ("offset", offsets)):
        if tuple(maps.shape) != (2, *scores.shape):
            raise ValueError(
                f"{name} must be (2, {scores.shape[0]}, {scores.shape[1]}), got {tuple(maps.shape)}"
            )
    require_positive(max_detections=max_detections, stride=stride)
    sx, sy = (scale, scale) if isinstance(scale, int | float) else scale
    require_positive(scale_x=sx, scale_y=sy)
    pooled = functional.max_pool2d(scores[None, None], 3, stride=1, padding=1)[0, 0]
    peaks = torch.where(scores == pooled, scores, torch.zeros_like(scores)).flatten()
    top = torch.topk(peaks, min(max_detections, peaks.numel()))
    width = scores.shape[1]
    found = []
    for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        if score < threshold or score <= 0:
            break
        y, x = divmod(index, width)
        cx = (x + float(offsets[0, y, x])) * stride
        cy = (y + float(offsets[1, y, x])) * stride
        half_w, half_h = float(sizes[0, y, x]) / 2, float(sizes[1, y, x]) / 2
        box = (
            round((cx - half_w) / sx),
            round((cy - half_h) / sy),
            round((cx + half_w) / sx),
            round((cy + half_h) / sy),
        )
        if box[2] > box[0] and box[3] > box[1]:
            found.append(Detection(box, float(score)))
    return found


# ----------------------------------------------------------------------------- detector


MapsFunction = Callable[[F32], npt.NDArray[np.generic]]
"""A detector network wherever it runs: a prepared, padded batch ``[B, C, H, W]`` in, the
served maps ``[B, 5, H / R, W / R]`` out (see ``ServedMaps``)."""

SERVED_MAPS = 5
DEFAULT_THRESHOLD = 0.3
"""Lowest centre score reported by a detector whose checkpoint has no calibrated one."""


class ServedMaps(nn.Module):
    """The served form of a ``CellNet``: one output ``[B, 5, h, w]``.

    Channel 0 is the centre score (the heatmap after the sigmoid), 1-2 the box size and
    3-4 the centre offset. Decoding (peaks, boxes in the image's pixels) stays with the
    client: it needs the field's scale, and exact peak ties would differ between
    runtimes.
    """

    def __init__(self, net: CellNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return torch.cat([torch.sigmoid(out.heatmap), out.size, out.offset], dim=1)


def network_maps(net: CellNet) -> MapsFunction:
    """``net`` as a ``MapsFunction`` in this process, on the device its parameters live on
    (switched to evaluation mode: batch norm uses its running statistics)."""
    served = ServedMaps(net).eval()  # eval() reaches the net: batch norm on running statistics
    device = next(net.parameters()).device

    def run(batch: F32) -> npt.NDArray[np.generic]:
        with torch.no_grad():
            out: Tensor = served(torch.from_numpy(batch).to(device))
        return np.asarray(out.cpu().numpy())

    return run


class TrainedDetector(NamedTuple):
    """A checkpoint read back: the network, its config, and its score threshold."""

    net: CellNet
    config: DetectorConfig
    threshold: float  # calibrated on held-out fields, or DEFAULT_THRESHOLD


def load_network(path: Path | str, map_location: str | torch.device = "cpu") -> TrainedDetector:
    """A trained ``CellNet``, its config and its threshold from a checkpoint the trainer
    wrote (the threshold the checkpoint's calibration chose, ``DEFAULT_THRESHOLD`` if none).

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        ValueError: the file is not a detector checkpoint of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable detector checkpoint: {exc}") from exc
    if (
        not isinstance(checkpoint, dict)
        or checkpoint.get("format") != CHECKPOINT_FORMAT
        or not {"config", "state_dict"} <= set(checkpoint)
    ):
        raise ValueError(f"{path} is not a detector checkpoint ({CHECKPOINT_FORMAT})")
    try:
        config = DetectorConfig.from_dict(checkpoint["config"])
        model = build_cell_net(config)
        model.load_state_dict(checkpoint["state_dict"])
        threshold = float(checkpoint.get("threshold", DEFAULT_THRESHOLD))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: the detector does not match its config: {exc}") from exc
    return TrainedDetector(model.to(map_location).eval(), config, threshold)


class LearnedDetector:
    """White cells found by a trained ``CellNet`` (the ``WbcDetector`` port).

    The image is prepared at the config's working pixel size and padded to a multiple of
    16; ``maps`` runs the network (in this process, or on the inference server); the maps
    are decoded and mapped back to the image's pixels; boxes are clipped to the image.

    Args:
        maps: the network (``network_maps``, or a served model).
        config: the config it was trained with.
        pixel_um: pixel size of the images ``detect`` will get.
        threshold: lowest centre score reported.
        max_detections: most cells reported per image.
    """

    def __init__(
        self,
        *,
        maps: MapsFunction,
        config: DetectorConfig,
        pixel_um: float,
        threshold: float = DEFAULT_THRESHOLD,
        max_detections: int = 100,
    ) -> None:
        require_positive(pixel_um=pixel_um, max_detections=max_detections)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.run = maps
        self.config = config
        self.pixel_um = pixel_um
        self.threshold = threshold
        self.max_detections = max_detections

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        pixel_um: float,
        threshold: float | None = None,
        max_detections: int = 100,
        map_location: str | torch.device = "cpu",
    ) -> LearnedDetector:
        """A detector running a checkpoint in this process (``load_network``), at
        ``threshold`` or else the checkpoint's own."""
        trained = load_network(path, map_location)
        return cls(
            maps=network_maps(trained.net),
            config=trained.config,
            pixel_um=pixel_um,
            threshold=trained.threshold if threshold is None else threshold,
            max_detections=max_detections,
        )

    def maps(self, image: npt.NDArray[np.generic]) -> tuple[F32, tuple[float, float]]:
        """The served maps ``[5, h, w]`` of one image and its ``(sx, sy)``."""
        prepared, _ = prepare(
            image,
            self.pixel_um,
            self.config.modality,
            working_pixel_um=self.config.working_pixel_um,
        )
        scale = image_scale(image.shape, prepared.shape)
        padded = pad_to_multiple(prepared)
        out = np.array(self.run(padded[None]), np.float32)  # a writable copy (gRPC: read-only)
        height, width = (side // self.config.stride for side in padded.shape[1:])
        if out.shape != (1, SERVED_MAPS, height, width):
            raise ValueError(
                f"the detector returned maps of shape {out.shape}, "
                f"expected {(1, SERVED_MAPS, height, width)}"
            )
        return out[0], scale

    def detect(self, image: np.ndarray) -> list[Detection]:
        """White cells of one field (brightfield ``HxWx3`` or DIC ``HxW``), best first.

        A peak centred in the padding to a multiple of 16 (beyond the field's right or
        bottom edge, which training crops never show) is not reported.
        """
        maps, scale = self.maps(image)
        found = decode(
            maps[:1],
            maps[1:3],
            maps[3:5],
            self.threshold,
            self.max_detections,
            stride=self.config.stride,
            scale=scale,
        )
        height, width = image.shape[:2]
        clipped = []
        for det in found:
            x0, y0, x1, y1 = det.box
            if (x0 + x1) / 2 >= width or (y0 + y1) / 2 >= height:
                continue  # centred in the padding beyond the field's edge: not a cell of it
            box = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
            if box[2] > box[0] and box[3] > box[1]:
                clipped.append(Detection(box, det.score))
        return clipped
