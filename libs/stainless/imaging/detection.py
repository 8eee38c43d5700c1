"""White-cell detection on brightfield (MGG) and on DIC fields, classical methods only.

* ``BrightfieldDetector``: in optical density (OD), red cells all share one colour (eosin
  plus haemoglobin) while white cells carry azure, the azure-eosin complex or eosinophil
  granules. The *stain residual* (the OD vector's component orthogonal to the red-cell OD
  direction) is ~0 on background and red cells and clearly positive on every white cell,
  cytoplasm included. Threshold, morphology, hole filling, a size filter, and a split of
  touching cells: the distinct domes of the distance transform (found by cutting it at
  several levels) become discs, and a power diagram of the discs cuts along the chords.
* ``DicDetector``: DIC shows the derivative of the optical path length (OPL) along the
  shear. The linearised phase is integrated along the shear (Tikhonov-regularised inverse
  filter in Fourier space) into an OPL map, the streaks this leaves along the shear are
  removed with a masked background estimate along the shear, and cells are segmented on
  the OPL map. A red cell is a biconcave disc whose OPL dips in the centre, a white cell is
  a dome with a nucleus on top and carries chromatin texture. Each object is kept when its
  centre is not lower than its rim and its interior is textured. Smudge cells, too thin to
  segment on OPL, are found as textured regions left outside every segmented cell.

Boxes are ``(x0, y0, x1, y1)`` with exclusive ends, in the image's own pixel frame.
Lengths in the constructors are in µm and converted with ``pixel_um`` (0.075 µm/px at
100x oil by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from stainless.imaging.field_statistics import (
    FieldStatistics,
    UnreliableFieldError,
    dominant_direction,
    relative_threshold,
    stain_residual,
    uneven_background,
)
from stainless.imaging.registration import MGG_RED_CELL_OD, check_affine

Box = tuple[int, int, int, int]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "MGG_RED_CELL_OD",
    "BrightfieldDetector",
    "Detection",
    "DicDetector",
    "UnreliableFieldError",
    "WbcDetector",
    "box_iou",
    "boxes_to_dic",
    "match_boxes",
    "matched_pairs",
]


@dataclass(frozen=True)
class Detection:
    """One detected cell: box ``(x0, y0, x1, y1)`` (exclusive ends) and a score in [0, 1]."""

    box: Box
    score: float


class WbcDetector(Protocol):
    """Anything that finds white cells in one image."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


# ----------------------------------------------------------------------------- shared


@dataclass(frozen=True)
class _Region:
    """A segmented object: its slice in the image and its mask inside the slice."""

    rows: slice
    cols: slice
    mask: BoolArray

    def box(self) -> Box:
        ys, xs = np.nonzero(self.mask)
        x0, y0 = self.cols.start + int(xs.min()), self.rows.start + int(ys.min())
        return x0, y0, self.cols.start + int(xs.max()) + 1, self.rows.start + int(ys.max()) + 1

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def fill_holes(mask: npt.NDArray[np.generic]) -> BoolArray:
    """``mask`` (non-zero: inside) with its holes filled: every outside pixel that no path
    of 4-connected outside pixels joins to the image's edge. The same as
    ``scipy.ndimage.binary_fill_holes`` with its default structure, by one flood fill."""
    outside = np.pad((np.asarray(mask) == 0).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(outside, None, (0, 0), 0, flags=4)
    return np.asarray((np.asarray(mask) != 0) | (outside[1:-1, 1:-1] != 0), np.bool_)


def _disc(radius: int) -> npt.NDArray[np.uint8]:
    size = 2 * radius + 1
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)), np.uint8)


def _distance(mask: BoolArray, open_sides: tuple[bool, bool, bool, bool] = (False,) * 4) -> F32:
    """Euclidean distance to the nearest pixel outside ``mask``.

    The array edge counts as outside except on the ``open_sides`` (left, top, right,
    bottom), where the object continues beyond (it is cut by the field edge); there the
    mask is extended by a margin as wide as the object so distances ignore that edge.
    """
    margin = max(mask.shape) if any(open_sides) else 0
    left, top, right, bottom = (margin if side else 0 for side in open_sides)
    extended = np.pad(mask, ((top, bottom), (left, right)), mode="edge")
    padded = np.pad(extended, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    height, width = mask.shape
    return np.asarray(dist[top : top + height, left : left + width], np.float32)


def _markers(dist: F32, min_radius: float, depth: float) -> list[tuple[float, float, float]]:
    """Centres ``(x, y, r)`` of the distinct domes of a distance transform.

    The transform is cut at a series of levels ``t``; a component of ``dist > t`` is a dome
    when its peak is at least ``min_radius`` and rises at least ``depth`` of its height above
    ``t`` (so the saddle to any other dome lies below ``(1 - depth)`` of its peak). The level
    with the most domes wins. Unlike local maxima, this finds a small cell overlapping a big
    one, whose distance ridge climbs monotonically into the big one.
    """
    top = float(dist.max())
    if top < min_radius:
        return []
    best: list[tuple[float, float, float]] = []
    for level in np.linspace(0.3 * min_radius, top, 24, endpoint=False):
        count, labels = cv2.connectedComponents((dist > level).astype(np.uint8), connectivity=4)
        count -= 1  # label 0: below the level
        if count < 2:
            continue
        peaks = np.zeros(count + 1, np.float32)  # each component's peak (dist >= 0)
        np.maximum.at(peaks, labels.ravel(), dist.ravel())
        peaks = peaks[1:]
        domes = np.flatnonzero((peaks >= min_radius) & (peaks - level >= depth * peaks))
        if len(domes) <= len(best):
            continue  # no better: the peaks' positions (a sort each) are not needed
        where = ndimage.maximum_position(dist, labels, domes + 1)
        best = [
            (float(pos[1]), float(pos[0]), float(peaks[dome]))
            for dome, pos in zip(domes, where, strict=True)
        ]
    return best


def _split(
    mask: BoolArray,
    min_radius: float,
    depth: float,
    open_sides: tuple[bool, bool, bool, bool] = (False,) * 4,
) -> list[BoolArray]:
    """Split one object into cells: a power diagram of its distinct distance domes.

    Each pixel goes to the dome ``(c, r)`` minimising ``|p - c|^2 - r^2``, which cuts two
    overlapping discs along their common chord; each part keeps its largest piece. On
    ``open_sides`` (the field edge) the object is taken to continue, so a cell cut by the
    edge keeps its dome.
    """
    markers = _markers(_distance(mask, open_sides), min_radius, depth)
    if len(markers) < 2:
        return [mask]
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float32)
    power = np.stack([(xx - x) ** 2 + (yy - y) ** 2 - r * r for x, y, r in markers])
    owner = np.argmin(power, axis=0)
    parts = []
    for index in range(len(markers)):
        part = mask & (owner == index)
        labels, count = ndimage.label(part)
        if count > 1:
            sizes = ndimage.sum(part, labels, range(1, count + 1))
            part = labels == (int(np.argmax(sizes)) + 1)
        if part.any():
            parts.append(part)
    return parts


def _regions(mask: BoolArray, min_radius: float, depth: float, min_area: float) -> list[_Region]:
    """Connected objects of ``mask``, split into cells, at least ``min_area`` pixels each."""
    labels, _ = ndimage.label(mask)
    height, width = mask.shape
    regions = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        rows, cols = found
        own = labels[rows, cols] == index
        if own.sum() < min_area:
            continue
        edges = (cols.start == 0, rows.start == 0, cols.stop >= width, rows.stop >= height)
        for part in _split(own, min_radius, depth, edges):
            if part.sum() >= min_area:
                regions.append(_Region(rows, cols, part))
    return regions


def _background_level(channel: npt.NDArray[np.generic]) -> float:
    """The most frequent level of a channel (the background of a smear), smoothed."""
    values = np.asarray(channel)
    if np.issubdtype(values.dtype, np.integer):
        counts = np.bincount(values.ravel().astype(np.int64), minlength=1).astype(np.float64)
        counts = ndimage.gaussian_filter1d(counts, 1.0)
        return float(max(int(np.argmax(counts)), 1))
    hist, edges = np.histogram(values, bins=512)
    peak = int(np.argmax(ndimage.gaussian_filter1d(hist.astype(np.float64), 1.0)))
    return float(max((edges[peak] + edges[peak + 1]) / 2, 1e-6))


def _check_image(image: np.ndarray, *, channels: int | None, name: str) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array")
    if channels is None and image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grayscale image, got shape {image.shape}")
    if channels is not None and (image.ndim != 3 or image.shape[2] != channels):
        raise ValueError(f"{name} must be an HxWx{channels} image, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{name} must have an integer or float dtype, got {image.dtype}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"{name} must be at least 16x16 pixels, got {image.shape}")


# ----------------------------------------------------------------------------- brightfield


class BrightfieldDetector:
    """White cells on a Romanowsky-stained brightfield field (see the module docstring).

    Nothing about the lab is assumed: the background (a flat field), the red cells' stain
    direction and the threshold are estimated from each field (``field_statistics``).
    """

    def __init__(
        self,
        *,
        pixel_um: float = 0.075,
        red_cell_od: tuple[float, float, float] | None = None,
        background_block_um: float = 10.0,
        threshold_spread: float = 10.0,
        threshold_floor: float = 2.0,
        smooth_sigma_px: float = 1.5,
        min_diameter_um: float = 3.3,
        max_diameter_um: float = 40.0,
        split_min_radius_um: float = 2.0,
        split_depth: float = 0.3,
        min_core_um2: float = 4.0,
        min_contrast: float = 1.5,
        work_pixel_um: float = 0.15,
    ) -> None:
        """Configure the detector.

        Args:
            pixel_um: pixel size in the specimen (from settings or the upload's metadata).
            work_pixel_um: pixel size the field is analysed at (reduced by a whole factor
                from ``pixel_um`` when that is finer): 0.15 µm still resolves a platelet's
                granulomeres, and the boxes are found in full-resolution pixels.
            red_cell_od: OD (R, G, B) direction of red cells; None (default) estimates it
                from each field as its dominant OD direction.
            background_block_um: block size of the flat-field estimate (a few red cells).
            threshold_spread: a pixel is stained when its residual exceeds the field's
                median residual by this many robust standard deviations (MAD x 1.4826)...
            threshold_floor: ...and by at least this many times the median itself.
            smooth_sigma_px: Gaussian smoothing of the residual (full-resolution pixels).
            min_diameter_um: smallest equivalent diameter kept; platelets (1.5-3 µm),
                debris and stain precipitate are smaller.
            max_diameter_um: largest equivalent diameter kept.
            split_min_radius_um: smallest inscribed radius of a cell in a touching group.
            split_depth: how far (relative to its height) a distance-transform dome must
                rise above the saddle to another one for the two to be split apart.
            min_core_um2: smallest area of the largest chromatin-dense body of a white cell
                (a small lymphocyte's nucleus is ~20 µm², a platelet's granulomere ~1-2).
            min_contrast: smallest mean residual of an object relative to the threshold: a
                white cell is stained well above it throughout (objects barely above it
                are overlapping red cells or flat-field errors).
        """
        if not pixel_um > 0:
            raise ValueError(f"pixel_um must be positive, got {pixel_um}")
        if not min_core_um2 >= 0 or not min_contrast >= 1:
            raise ValueError("min_core_um2 must be >= 0 and min_contrast >= 1")
        if not work_pixel_um > 0:
            raise ValueError(f"work_pixel_um must be positive, got {work_pixel_um}")
        direction = None
        if red_cell_od is not None:
            od = np.asarray(red_cell_od, np.float64)
            if od.shape != (3,) or not np.all(np.isfinite(od)) or np.linalg.norm(od) == 0:
                raise ValueError(
                    f"red_cell_od must be 3 finite values, not all 0, got {red_cell_od}"
                )
            direction = np.asarray(od / np.linalg.norm(od), np.float32)
        if not background_block_um > 0:
            raise ValueError(f"background_block_um must be positive, got {background_block_um}")
        if not threshold_spread > 0 or not threshold_floor > 0 or smooth_sigma_px < 0:
            raise ValueError("threshold_spread, threshold_floor > 0 and smooth_sigma_px >= 0")
        if not 0 < min_diameter_um < max_diameter_um:
            raise ValueError("diameters must satisfy 0 < min_diameter_um < max_diameter_um")
        if not split_min_radius_um > 0 or not 0 < split_depth < 1:
            raise ValueError("split_min_radius_um must be > 0 and split_depth in (0, 1)")
        self.pixel_um = pixel_um
        self.red_cell_direction = direction
        self.background_block_um = background_block_um
        self.threshold_spread = threshold_spread
        self.threshold_floor = threshold_floor
        self.smooth_sigma_px = smooth_sigma_px
        self.min_diameter_um = min_diameter_um
        self.max_diameter_um = max_diameter_um
        self.split_min_radius_um = split_min_radius_um
        self.split_depth = split_depth
        self.min_core_um2 = min_core_um2
        self.min_contrast = min_contrast
        self.work_pixel_um = work_pixel_um

    @property
    def _scale(self) -> int:
        """Full-resolution pixels per analysed pixel."""
        return max(1, round(self.work_pixel_um / self.pixel_um))

    def stain_residual(self, image: np.ndarray, *, pixel_um: float | None = None) -> F32:
        """Per-pixel stain residual: |OD - (OD . r) r| for the red-cell direction r
        (``pixel_um``: the image's pixel size, by default the detector's).

        Raises:
            UnreliableFieldError: too little stain in the field to estimate r.
        """
        _check_image(image, channels=3, name="brightfield image")
        pixel_um = pixel_um or self.pixel_um
        block = max(round(self.background_block_um / pixel_um), 16)
        stats = FieldStatistics(image, block_px=block)
        direction = self.red_cell_direction
        if direction is None:
            direction = dominant_direction(stats.od, 5 * stats.noise)
        magnitude = stain_residual(stats.od, direction)
        if self.smooth_sigma_px > 0:
            sigma = self.smooth_sigma_px * self.pixel_um / pixel_um
            magnitude = np.asarray(cv2.GaussianBlur(magnitude, (0, 0), sigma), np.float32)
        return magnitude

    def threshold(self, residual: F32) -> float:
        """The stain level above which a pixel belongs to a white cell, from the field."""
        return relative_threshold(residual, self.threshold_spread, self.threshold_floor)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """White cells of one brightfield field (HxWx3 RGB, any bit depth)."""
        _check_image(image, channels=3, name="brightfield image")
        scale = self._scale
        px = self.pixel_um * scale
        work = image if scale == 1 else _reduce(image, scale)
        residual = self.stain_residual(work, pixel_um=px)
        threshold = self.threshold(residual)
        stained = (residual > threshold).astype(np.uint8)
        opened = cv2.morphologyEx(stained, cv2.MORPH_OPEN, _disc(1))
        filled = fill_holes(opened)
        min_area = math.pi / 4 * (self.min_diameter_um / px) ** 2
        max_area = math.pi / 4 * (self.max_diameter_um / px) ** 2
        detections = []
        for region in _regions(filled, self.split_min_radius_um / px, self.split_depth, min_area):
            if region.area > max_area or self._is_platelet_clump(region, residual, px):
                continue
            values = residual[region.rows, region.cols][region.mask]
            strength = float(np.mean(values))
            if strength < self.min_contrast * threshold:
                continue
            score = strength / (strength + threshold)
            box = _enlarged(region.box(), scale, image.shape)
            detections.append(Detection(box, round(score, 4)))
        return detections

    def _is_platelet_clump(self, region: _Region, residual: F32, pixel_um: float) -> bool:
        """Whether the object's dense stain is scattered granulomeres, not one nucleus.

        The dense part is where the residual exceeds half the object's 95th percentile. A
        white cell's chromatin (and an artefact's core) forms one body of several µm²; a
        platelet clump's granulomeres are many small ones: the largest holds under half of
        the dense area while there are three or more, or (away from the field edge) it is
        under ``min_core_um2``.
        """
        local = residual[region.rows, region.cols]
        values = local[region.mask]
        dense = region.mask & (local > 0.5 * np.percentile(values, 95))
        labels, count = ndimage.label(dense)
        if count == 0:
            return True
        sizes = ndimage.sum(dense, labels, range(1, count + 1))
        biggest = float(np.max(sizes))
        if count >= 3 and biggest < 0.5 * float(np.sum(sizes)):
            return True
        height, width = residual.shape
        cut = (
            region.rows.start == 0
            or region.cols.start == 0
            or region.rows.stop >= height
            or region.cols.stop >= width
        )  # a cell cut by the field edge may show only a sliver of its nucleus
        return not cut and biggest * pixel_um**2 < self.min_core_um2


def _reduce(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` with ``scale`` x ``scale`` pixels averaged into one (its dtype kept)."""
    height, width = image.shape[:2]
    size = (max(width // scale, 1), max(height // scale, 1))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _enlarged(box: Box, scale: int, shape: tuple[int, ...]) -> Box:
    """A box of a reduced image in the pixels of the full one (clipped to it)."""
    x0, y0, x1, y1 = box
    height, width = shape[:2]
    return (x0 * scale, y0 * scale, min(x1 * scale, width), min(y1 * scale, height))


# ----------------------------------------------------------------------------- DIC


def _shear_integrate(phase: F32, shear_px: float, angle_deg: float, lam: float, mu: float) -> F32:
    """Invert ``phase = OPL(x + s/2) - OPL(x - s/2)`` (along the shear) for OPL.

    Tikhonov-regularised inverse filter: ``conj(H) / (|H|^2 + lam + mu k_perp^2)`` with
    ``H = 2i sin(s k_par / 2)``; ``mu`` damps the streaks across the shear that DIC leaves
    undetermined.
    """
    height, width = phase.shape
    pad = 32
    rows = cv2.getOptimalDFTSize(height + 2 * pad)
    cols = cv2.getOptimalDFTSize(width + 2 * pad)
    padded = cv2.copyMakeBorder(
        phase, pad, rows - height - pad, pad, cols - width - pad, cv2.BORDER_REFLECT_101
    )
    ky = (np.fft.fftfreq(rows) * 2 * np.pi)[:, None]
    kx = (np.fft.rfftfreq(cols) * 2 * np.pi)[None, :]
    angle = math.radians(angle_deg)
    k_par = kx * math.cos(angle) + ky * math.sin(angle)
    k_perp = -kx * math.sin(angle) + ky * math.cos(angle)
    transfer = 2j * np.sin(0.5 * shear_px * k_par)
    spectrum = np.fft.rfft2(padded)
    solved = spectrum * np.conj(transfer) / (np.abs(transfer) ** 2 + lam + mu * k_perp**2)
    opl = np.fft.irfft2(solved, s=(rows, cols))[pad : pad + height, pad : pad + width]
    return np.asarray(opl, np.float32)


def _sinks(opl: F32, angle_deg: float, sigma_px: float, level: float) -> bool:
    """Whether an integrated DIC map sinks on its objects instead of rising.

    Cells add optical path; with the prism's sign reversed the integration turns them
    into pits. Against a background that excludes departures either way, the mass of the
    map clearly below it (beyond ``level``) then outweighs the mass clearly above it.
    """
    departure = opl - _streak_background(opl, angle_deg, sigma_px, 0.4 * level, two_sided=True)
    above = float(departure[departure > level].sum())
    below = float(-departure[departure < -level].sum())
    return below > above


def _rotation(
    shape: tuple[int, int], angle_deg: float
) -> tuple[npt.NDArray[np.float64], tuple[int, int]]:
    """Affine turning the direction ``angle_deg`` (y down) onto +x, and the rotated size."""
    height, width = shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle_deg, 1.0)
    c, s = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    out_w, out_h = (
        math.ceil(width * c + height * s) + 2,
        math.ceil(width * s + height * c) + 2,
    )
    matrix[:, 2] += np.array([out_w / 2 - width / 2, out_h / 2 - height / 2])
    return np.asarray(matrix, np.float64), (out_w, out_h)


def _blur_rows(image: np.ndarray, sigma_px: float) -> F32:
    """A Gaussian of ``sigma_px`` along the rows and of 1 px across them.

    A long one (``sigma_px`` of 8 px or more) runs on a copy reduced along the rows by a
    quarter of it, then enlarged again: the result is smooth along the rows, so nothing is
    lost but the cost of a kernel of 6 ``sigma_px`` taps (about an eighth of it).
    """
    factor = int(sigma_px // 4)
    if factor < 2:
        return np.asarray(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, sigmaY=1.0), np.float32)
    height, width = image.shape
    small = cv2.resize(image, (math.ceil(width / factor), height), interpolation=cv2.INTER_AREA)
    # the reduction's box average already spreads by (factor^2 - 1) / 12 px^2
    sigma = math.sqrt(sigma_px**2 - (factor**2 - 1) / 12) / factor
    blurred = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma, sigmaY=1.0)
    return np.asarray(
        cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
    )


def _streak_background(
    opl: F32,
    angle_deg: float,
    sigma_px: float,
    threshold: float,
    iterations: int = 3,
    *,
    two_sided: bool = False,
) -> F32:
    """Background of an integrated DIC: a masked running mean along the shear direction.

    Integration along the shear leaves an unknown offset per shear line (streaks); it is
    estimated as the Gaussian-weighted mean, along the line, of the pixels not belonging to
    a cell (iteratively excluding what rises above ``threshold``, or with ``two_sided``
    what departs from the background by more than it either way).
    """
    matrix, size = _rotation(opl.shape, angle_deg)
    rotated = cv2.warpAffine(opl, matrix, size, flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.ones_like(opl), matrix, size, flags=cv2.INTER_NEAREST)
    weight = valid.copy()
    grow = np.ones((7, 7), np.uint8)
    background = np.zeros_like(rotated)
    for _ in range(iterations):
        num = _blur_rows(rotated * weight, sigma_px)
        den = _blur_rows(weight, sigma_px)
        background = num / np.maximum(den, 1e-4)
        departure = rotated - background
        if two_sided:
            departure = np.abs(departure)
        cells = cv2.dilate((departure > threshold).astype(np.uint8), grow) > 0
        weight = valid * (~cells)
    back = cv2.warpAffine(
        background,
        matrix,
        (opl.shape[1], opl.shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(back, np.float32)


@dataclass(frozen=True)
class DicMaps:
    """Intermediate maps of the DIC detector, at half resolution."""

    opl_um: F32  # optical path length above the background (µm)
    texture: F32  # fine-scale relief energy / its field median


class DicDetector:
    """White cells on a DIC field alone (see the module docstring)."""

    def __init__(
        self,
        *,
        pixel_um: float = 0.075,
        shear_angle_deg: float = 45.0,
        shear_um: float = 0.15,
        bias_rad: float = 0.9,
        wavelength_um: float = 0.55,
        opl_threshold_um: float = 0.022,
        min_diameter_um: float = 3.0,
        small_diameter_um: float = 2.5,
        large_diameter_um: float = 9.5,
        large_min_texture: float = 8.0,
        max_diameter_um: float = 40.0,
        min_dip: float = 0.95,
        min_texture: float = 3.0,
        border_min_diameter_um: float = 4.5,
        border_min_texture: float = 5.0,
        border_min_dip: float = 0.9,
        strong_texture: float = 60.0,
        smudge_texture: float = 4.0,
        smudge_max_texture: float = 250.0,
        smudge_min_diameter_um: float = 6.0,
        split_min_radius_um: float = 0.6,
        split_depth: float = 0.3,
    ) -> None:
        """Configure the detector.

        Args:
            pixel_um: pixel size in the specimen.
            shear_angle_deg: DIC shear direction (x right, y down); a cell edge facing it is
                bright. Use ``+180`` for the opposite prism setting.
            shear_um: shear distance.
            bias_rad: DIC bias retardation (background = ``1 - cos(bias)`` of the peak).
            wavelength_um: illumination wavelength.
            opl_threshold_um: OPL above the background that makes a pixel part of a cell
                (white-cell cytoplasm ~0.048 µm, red-cell rim ~0.07 µm, centre ~0.02-0.03).
            min_diameter_um: smallest equivalent diameter of a detection; platelets
                (1.5-3 µm), debris and stain precipitate are smaller.
            small_diameter_um: objects narrower than this (debris-sized) need
                ``strong_texture``: small smooth domes are pieces of red cells.
            large_diameter_um: objects wider than any red cell; their texture is the 75th
                percentile inside instead of the median, which must reach
                ``large_min_texture`` (white cells ~>11).
            large_min_texture: see ``large_diameter_um``.
            max_diameter_um: largest equivalent diameter of a detection.
            min_dip: smallest ratio of centre OPL to rim OPL (red cells ~0.7, white ~>1).
            min_texture: smallest median fine-scale texture energy inside, relative to the
                field's median (red cells ~2, white cells ~>4).
            border_min_diameter_um: ``min_diameter_um`` for objects touching the field edge
                (cut red cells look like small domes there).
            border_min_texture: ``min_texture`` for objects touching the field edge.
            border_min_dip: ``min_dip`` for objects touching the field edge.
            strong_texture: texture that exempts an edge object from
                ``border_min_diameter_um`` (refractile debris, ~250 and more).
            smudge_texture: texture peak of a smudge cell outside every segmented cell; the
                region extends down to half this level.
            smudge_max_texture: highest texture peak of a smudge cell: smeared chromatin
                has no sharp edges, cut red cells and debris at the field edge do (~300+).
            smudge_min_diameter_um: smallest equivalent diameter of a smudge region.
            split_min_radius_um: smallest inscribed radius of a cell in a touching group.
            split_depth: how far (relative to its height) a distance-transform dome must
                rise above the saddle to another one for the two to be split apart.
        """
        if not pixel_um > 0 or not shear_um > 0 or not wavelength_um > 0:
            raise ValueError("pixel_um, shear_um and wavelength_um must be positive")
        if not 0 < bias_rad < math.pi:
            raise ValueError(f"bias_rad must lie in (0, pi), got {bias_rad}")
        if not opl_threshold_um > 0:
            raise ValueError(f"opl_threshold_um must be positive, got {opl_threshold_um}")
        if not 0 < min_diameter_um < max_diameter_um:
            raise ValueError("diameters must satisfy 0 < min_diameter_um < max_diameter_um")
        if not split_min_radius_um > 0 or not 0 < split_depth < 1:
            raise ValueError("split_min_radius_um must be > 0 and split_depth in (0, 1)")
        self.pixel_um = pixel_um
        self.shear_angle_deg = shear_angle_deg
        self.shear_um = shear_um
        self.bias_rad = bias_rad
        self.wavelength_um = wavelength_um
        self.opl_threshold_um = opl_threshold_um
        self.min_diameter_um = min_diameter_um
        self.small_diameter_um = small_diameter_um
        self.large_diameter_um = large_diameter_um
        self.large_min_texture = large_min_texture
        self.max_diameter_um = max_diameter_um
        self.min_dip = min_dip
        self.min_texture = min_texture
        self.border_min_diameter_um = border_min_diameter_um
        self.border_min_texture = border_min_texture
        self.border_min_dip = border_min_dip
        self.strong_texture = strong_texture
        self.smudge_texture = smudge_texture
        self.smudge_max_texture = smudge_max_texture
        self.smudge_min_diameter_um = smudge_min_diameter_um
        self.split_min_radius_um = split_min_radius_um
        self.split_depth = split_depth

    # The maps live at about 0.15 µm/px, which still resolves every structure used.
    _MAP_PIXEL_UM = 0.15
    # Segmented objects at least this wide (µm) are cells: no smudge is searched there.
    _BLOCK_UM = 4.0

    @property
    def _scale(self) -> int:
        """Full-resolution pixels per map pixel (2 at 100x oil)."""
        return max(1, round(self._MAP_PIXEL_UM / self.pixel_um))

    def _down(self, image: F32) -> F32:
        if self._scale == 2:
            return np.asarray(cv2.pyrDown(image), np.float32)
        if self._scale == 1:
            return image
        height, width = image.shape
        size = (max(width // self._scale, 1), max(height // self._scale, 1))
        return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.float32)

    def relative_intensity(self, image: np.ndarray) -> F32:
        """The DIC divided by its background (a flat field estimated from the field)."""
        _check_image(image, channels=None, name="DIC image")
        dic = np.asarray(image, np.float32)
        level = float(np.median(dic))
        if not level > 0:
            raise ValueError("the DIC image has no positive background level")
        block = max(round(6.0 / self.pixel_um), 16)  # 6 µm: the relief's median is robust
        background = uneven_background(dic, block, relief=True)
        if background is None:
            return np.asarray(dic / np.float32(level), np.float32)
        return np.asarray(dic / np.maximum(background[..., 0], np.float32(1e-6)), np.float32)

    def maps(self, image: np.ndarray) -> DicMaps:
        """OPL and texture maps of a DIC field (at about 0.15 µm/px).

        The prism's sign (which side of a cell is bright) is found from the field: cells
        add optical path, so the integrated map must rise on them, not sink.
        """
        relative = self.relative_intensity(image)
        # Exact inverse of I = I0 (1 - cos(bias + phase)), scaled to the background.
        bias = self.bias_rad
        q = np.clip(relative * np.float32(1 - math.cos(bias)), 0.0, 2.0)
        phase = np.asarray(np.arccos(1.0 - q) - np.float32(bias), np.float32)
        small = self._down(phase)
        shear_px = self.shear_um / self.pixel_um / self._scale
        opl = _shear_integrate(small, shear_px, self.shear_angle_deg, lam=1e-5, mu=0.1)
        opl *= np.float32(self.wavelength_um / (2 * math.pi))
        sigma = 4.5 / (self.pixel_um * self._scale)  # 4.5 µm along the shear
        threshold = 0.4 * self.opl_threshold_um
        if _sinks(opl, self.shear_angle_deg, sigma, self.opl_threshold_um):
            opl = -opl
        opl -= _streak_background(opl, self.shear_angle_deg, sigma, threshold)
        scale = 0.075 / self.pixel_um  # the band below was chosen at 0.075 µm/px
        fine, coarse = max(1.0 * scale, 0.5), max(2.5 * scale, 1.0)
        band = cv2.GaussianBlur(relative, (0, 0), fine) - cv2.GaussianBlur(relative, (0, 0), coarse)
        spread = max(4.0 * scale, 1.0)
        energy = self._down(np.asarray(cv2.GaussianBlur(band * band, (0, 0), spread), np.float32))
        texture = energy / np.float32(max(float(np.median(energy)), 1e-12))
        return DicMaps(np.asarray(opl, np.float32), np.asarray(texture, np.float32))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """White cells of one DIC field (HxW)."""
        maps = self.maps(image)
        px = self.pixel_um * self._scale
        height, width = maps.opl_um.shape
        raised = (maps.opl_um > self.opl_threshold_um).astype(np.uint8)
        opened = cv2.morphologyEx(raised, cv2.MORPH_OPEN, _disc(1))
        filled = fill_holes(opened)
        min_area = math.pi / 4 * (self.min_diameter_um / px) ** 2
        max_area = math.pi / 4 * (self.max_diameter_um / px) ** 2
        block_area = math.pi / 4 * (self._BLOCK_UM / px) ** 2
        regions = _regions(filled, self.split_min_radius_um / px, self.split_depth, min_area)
        detections = []
        occupied = np.zeros((height, width), np.uint8)
        for region in regions:
            box = region.box()
            if region.area >= block_area:
                occupied[region.rows, region.cols][region.mask] = 1
            if region.area > max_area:
                continue
            verdict = self._judge(region, maps, box, (width, height))
            if verdict is not None:
                detections.append(Detection(self._full_box(box, image.shape), verdict))
        detections.extend(self._smudges(maps, occupied, image.shape))
        return _drop_contained(detections)

    def _judge(
        self, region: _Region, maps: DicMaps, box: Box, size: tuple[int, int]
    ) -> float | None:
        """Score of a white cell, or None for a red cell / fragment."""
        px = self.pixel_um * self._scale
        width, height = size
        mask = region.mask
        open_sides = (
            region.cols.start == 0 and bool(mask[:, 0].any()),
            region.rows.start == 0 and bool(mask[0].any()),
            region.cols.stop >= width and bool(mask[:, -1].any()),
            region.rows.stop >= height and bool(mask[-1].any()),
        )
        dist = _distance(region.mask, open_sides)
        radius = float(dist.max())
        inner = dist >= 0.6 * radius
        outer = (dist >= 0.15 * radius) & (dist < 0.45 * radius)
        interior = dist >= min(3.0, 0.5 * radius)
        opl = maps.opl_um[region.rows, region.cols]
        if not inner.any() or not outer.any() or not interior.any():
            return None
        rim = float(np.median(opl[outer]))
        dip = float(np.median(opl[inner])) / max(rim, 1e-4)
        inside = maps.texture[region.rows, region.cols][interior]
        texture = float(np.median(inside))
        diameter = 2 * math.sqrt(region.area / math.pi) * px
        at_edge = box[0] <= 1 or box[1] <= 1 or box[2] >= width - 1 or box[3] >= height - 1
        if diameter >= self.large_diameter_um and not at_edge:
            # Larger than any red cell: a monocyte's wide, smooth cytoplasm may fill most of
            # it, so its textured quarter (nucleus, vacuoles) is what counts.
            quarter = float(np.percentile(inside, 75))
            texture = max(texture, quarter * self.min_texture / self.large_min_texture)
        if at_edge:
            thinnest = min(box[2] - box[0], box[3] - box[1]) * px
            ok = (
                thinnest >= self.min_diameter_um  # not a sliver of a cut red cell
                and diameter >= self.min_diameter_um
                and (diameter >= self.border_min_diameter_um or texture >= self.strong_texture)
                and dip >= self.border_min_dip
                and texture >= self.border_min_texture
            )
        else:
            needed = self.min_texture if diameter >= self.small_diameter_um else self.strong_texture
            ok = diameter >= self.min_diameter_um and dip >= self.min_dip and texture >= needed
        if not ok:
            return None
        return round(1.0 - math.exp(-texture / (2 * self.min_texture)), 4)

    def _smudges(
        self, maps: DicMaps, occupied: npt.NDArray[np.uint8], shape: tuple[int, ...]
    ) -> list[Detection]:
        """Textured regions outside every segmented cell (smudge cells are too thin for OPL)."""
        px = self.pixel_um * self._scale
        blocked = cv2.dilate(occupied, _disc(max(1, round(0.6 / px)))) > 0
        low = (maps.texture > 0.5 * self.smudge_texture) & ~blocked
        low = cv2.morphologyEx(low.astype(np.uint8), cv2.MORPH_OPEN, _disc(2)) > 0
        min_area = math.pi / 4 * (self.smudge_min_diameter_um / px) ** 2
        max_area = math.pi / 4 * (self.max_diameter_um / px) ** 2
        found = []
        labels, _ = ndimage.label(low)
        for index, where in enumerate(ndimage.find_objects(labels), start=1):
            if where is None:
                continue
            own = labels[where] == index
            if not min_area <= own.sum() <= max_area:
                continue
            peak = float(maps.texture[where][own].max())
            if not self.smudge_texture <= peak <= self.smudge_max_texture:
                continue
            region = _Region(where[0], where[1], own)
            level = float(np.median(maps.texture[where][own]))
            score = round(1.0 - math.exp(-level / (2 * self.smudge_texture)), 4)
            found.append(Detection(self._full_box(region.box(), shape), score))
        return found

    def _full_box(self, box: Box, shape: tuple[int, ...]) -> Box:
        s = self._scale
        height, width = shape[:2]
        return (
            max(box[0] * s, 0),
            max(box[1] * s, 0),
            min(box[2] * s, width),
            min(box[3] * s, height),
        )


# ----------------------------------------------------------------------------- boxes


def _drop_contained(detections: list[Detection], fraction: float = 0.7) -> list[Detection]:
    """Drop detections lying mostly (``fraction`` of their box) inside a larger one."""

    def area(box: Box) -> int:
        return (box[2] - box[0]) * (box[3] - box[1])

    ordered = sorted(detections, key=lambda d: -area(d.box))
    kept: list[Detection] = []
    for det in ordered:
        x0, y0, x1, y1 = det.box
        inside = False
        for big in kept:
            iw = max(0, min(x1, big.box[2]) - max(x0, big.box[0]))
            ih = max(0, min(y1, big.box[3]) - max(y0, big.box[1]))
            if iw * ih >= fraction * area(det.box):
                inside = True
                break
        if not inside:
            kept.append(det)
    return kept


def boxes_to_dic(
    detections: Sequence[Detection], affine_bf_to_dic: npt.ArrayLike, width: int, height: int
) -> list[Detection]:
    """Carry brightfield boxes into the DIC frame.

    Each box becomes the bounding box of its 4 mapped corners (``(x0, y0)`` to ``(x1, y1)``
    as continuous pixel edges), rounded outwards and clipped to the DIC field; boxes that
    end up empty are dropped.
    """
    affine = check_affine(affine_bf_to_dic, "affine_bf_to_dic")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    carried = []
    for det in detections:
        x0, y0, x1, y1 = _check_box(det.box)
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
        mapped = corners @ affine.T
        lo = np.floor(mapped.min(axis=0) + 1e-9)
        hi = np.ceil(mapped.max(axis=0) - 1e-9)
        box = (
            max(int(lo[0]), 0),
            max(int(lo[1]), 0),
            min(int(hi[0]), width),
            min(int(hi[1]), height),
        )
        if box[0] < box[2] and box[1] < box[3]:
            carried.append(Detection(box, det.score))
    return carried


def _check_box(box: Sequence[int]) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box (needs x1 > x0 and y1 > y0): {box}")
    return x0, y0, x1, y1


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two boxes with exclusive ends."""
    ax0, ay0, ax1, ay1 = _check_box(a)
    bx0, by0, bx1, by1 = _check_box(b)
    iw = max(0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union


def matched_pairs(
    predicted: Sequence[Detection | Sequence[int]],
    truth: Sequence[Detection | Sequence[int]],
    iou: float = 0.5,
) -> list[tuple[int, int]]:
    """Pairs ``(predicted index, truth index)`` matched greedily by IoU.

    Pairs are taken in decreasing IoU; each box matches at most once and a pair needs an
    IoU of at least ``iou``. Boxes may be given as ``Detection`` or as ``(x0, y0, x1, y1)``.
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must lie in (0, 1], got {iou}")
    pred = [_check_box(p.box if isinstance(p, Detection) else p) for p in predicted]
    true = [_check_box(t.box if isinstance(t, Detection) else t) for t in truth]
    pairs = sorted(
        ((box_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(true)),
        reverse=True,
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    matched: list[tuple[int, int]] = []
    for value, i, j in pairs:
        if value < iou:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matched.append((i, j))
    return matched


def match_boxes(
    predicted: Sequence[Detection | Sequence[int]],
    truth: Sequence[Detection | Sequence[int]],
    iou: float = 0.5,
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of :func:`matched_pairs`."""
    tp = len(matched_pairs(predicted, truth, iou))
    return tp, len(predicted) - tp, len(truth) - tp
