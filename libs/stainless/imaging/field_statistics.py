"""What a brightfield field says about its own acquisition: flat field, OD, stain directions.

No lab's constants are assumed; each is estimated from the field:

* ``estimate_background``: the illumination reaching the camera where there is no cell
  (a spatially varying flat field: lamp colour, exposure, vignetting, uneven light). The
  field is cut into blocks; in each block the bright end of every channel (the median of
  the pixels above the block's 80th percentile of brightness) is background wherever at
  least a fifth of the block is free of cells. Blocks covered by cells read darker than
  their neighbours predict (a local quadratic through the trusted blocks around each, in
  log level, refitted without them): they take that prediction; the grid of block levels
  is interpolated bilinearly and extrapolated linearly to the edges. A local surface
  follows a steep fall-off into a corner (vignetting), where one polynomial over the
  field swung by tens of percent.
* ``optical_density``: ``OD = ln(background / I)`` per channel.
* ``dominant_direction``: the unit OD direction that most stained pixels share. In a smear
  these are red cells (a monolayer covers 10-60% of the field, white cells a few %), so
  this is the red cells' stain direction, which depends on the protocol, the staining
  time and the lamp. Found as the mode of the directions of clearly stained pixels (the
  densest cell of a chromaticity histogram), refined as the principal axis of the pixels
  within 10° of it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

__all__ = [
    "FieldStatistics",
    "UnreliableFieldError",
    "dominant_direction",
    "estimate_background",
    "optical_density",
    "relative_threshold",
    "stain_residual",
    "uneven_background",
]


class UnreliableFieldError(ValueError):
    """The field's statistics do not allow a trustworthy result; the message says why."""


def estimate_background(
    image: npt.NDArray[np.generic], block_px: int = 128, *, relief: bool = False
) -> F32:
    """Per-channel background level at every pixel (HxWxC float32, C = 1 or 3).

    Two passes: the second measures what is left on the field flattened by the first, so
    that a steep fall-off (vignetting) inside a block does not bias its bright end.

    Args:
        image: HxW or HxWxC field, any integer or float type.
        block_px: block size; a few red-cell diameters, so that most blocks show background.
        relief: a DIC field, where cells are brighter on one side and darker on the other:
            each block's median is its background, and blocks off the surface either way
            are distrusted.
    """
    values = np.asarray(image, np.float32)
    if values.ndim == 2:
        values = values[..., None]
    height, width, channels = values.shape
    # The flat field is smooth: estimate it at quarter resolution (which also averages noise).
    resized = cv2.resize(
        values, (max(width // 4, 1), max(height // 4, 1)), interpolation=cv2.INTER_AREA
    )
    small = np.asarray(resized, np.float32).reshape(resized.shape[0], resized.shape[1], channels)
    block = max(block_px // 4, 4)
    first = _surface(_block_levels(small, block, relief), relief, shape=small.shape[:2])
    # The second pass measures each block again on the field flattened by the first, brought
    # back to the field's units by the first's mean over the block: an error of the first
    # surface (where it had to be extrapolated) is not carried into the second.
    flattened = np.asarray(small / np.maximum(first, np.float32(1e-6)), np.float32)
    levels = _block_levels(flattened, block, relief) * _blocks(first, block).mean(axis=2)
    coarse = _surface(levels, relief, shape=small.shape[:2])
    full = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(full, np.float32).reshape(height, width, channels)


def _blocks(values: F32, block_px: int) -> F32:
    """The field cut into blocks: ``rows x cols x pixels x C`` (the remainder at the bottom
    and right edges left out)."""
    height, width, channels = values.shape
    rows, cols = max(height // block_px, 1), max(width // block_px, 1)
    bh, bw = height // rows, width // cols
    return np.asarray(
        values[: rows * bh, : cols * bw]
        .reshape(rows, bh, cols, bw, channels)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows, cols, bh * bw, channels)
    )


def _block_levels(values: F32, block_px: int, relief: bool) -> npt.NDArray[np.float64]:
    """Each block's background level per channel: its median (relief), else the median of
    its brightest fifth by mean over the channels."""
    blocks = _blocks(values, block_px)
    if relief:
        return np.median(blocks, axis=2).astype(np.float64)
    n = blocks.shape[2]
    first = n - max(n // 5, 1)
    brightest = np.argpartition(blocks.mean(axis=3), first, axis=2)[..., first:]
    chosen = np.take_along_axis(blocks, brightest[..., None], axis=2)
    return np.median(chosen, axis=2).astype(np.float64)


def _surface(grid: npt.NDArray[np.float64], relief: bool, *, shape: tuple[int, int]) -> F32:
    """The flat field (``shape``, HxWxC) through the block levels ``grid`` (rows x cols x C).

    Blocks covered by cells (``_uncovered_blocks``) take the level their trusted neighbours
    predict (the global surface where none is near); the grid of block levels is then
    interpolated, and extrapolated linearly from the outer block centres to the edges.
    """
    rows, cols, channels = grid.shape
    height, width = shape
    bh, bw = height // rows, width // cols
    centres_y = (np.arange(rows) + 0.5) * bh
    centres_x = (np.arange(cols) + 0.5) * bw
    trusted = _uncovered_blocks(
        grid.mean(axis=2), centres_y, centres_x, (height, width), two_sided=relief
    )
    planes = []
    for c in range(channels):
        log_level = np.log(np.maximum(grid[..., c], 1e-6))
        predicted, support = _local_fit(log_level, trusted, leave_out=False)
        surface = _evaluate(
            _fit(log_level, trusted, centres_y, centres_x, (height, width)),
            centres_y,
            centres_x,
            (height, width),
        )
        fill = np.where(support > _MIN_SUPPORT, predicted, surface)
        planes.append(np.exp(np.where(trusted, log_level, fill)))
    levels = np.stack(planes, -1).astype(np.float32)
    return _interpolate_blocks(levels, bh, bw, height, width)


def _interpolate_blocks(levels: F32, bh: int, bw: int, height: int, width: int) -> F32:
    """Bilinear interpolation of per-block levels (block centres at ``(i + 0.5) * bh``) to
    every pixel, extrapolated linearly beyond the outer centres."""
    padded = levels
    if levels.shape[0] >= 2:
        padded = np.concatenate(
            [2 * padded[:1] - padded[1:2], padded, 2 * padded[-1:] - padded[-2:-1]], axis=0
        )
    else:
        padded = np.concatenate([padded, padded, padded], axis=0)
    if levels.shape[1] >= 2:
        padded = np.concatenate(
            [2 * padded[:, :1] - padded[:, 1:2], padded, 2 * padded[:, -1:] - padded[:, -2:-1]],
            axis=1,
        )
    else:
        padded = np.concatenate([padded, padded, padded], axis=1)
    floor = np.float32(max(float(levels.min()), 1e-6) * 0.5)  # extrapolation stays positive
    padded = np.maximum(padded, floor)
    # pixel ``y`` (centre ``y + 0.5``) lies at grid index ``(y + 0.5) / bh - 0.5``, plus the pad
    map_y = (np.arange(height, dtype=np.float32) + np.float32(0.5)) / np.float32(bh) + 0.5
    map_x = (np.arange(width, dtype=np.float32) + np.float32(0.5)) / np.float32(bw) + 0.5
    grid_x, grid_y = np.meshgrid(map_x, map_y)
    channels = levels.shape[2]
    planes = [
        cv2.remap(
            np.ascontiguousarray(padded[..., c]),
            grid_x,
            grid_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        for c in range(channels)
    ]
    return np.stack(planes, -1).astype(np.float32)


def _terms(
    ys: npt.NDArray[np.float64], xs: npt.NDArray[np.float64], shape: tuple[int, int], degree: int
) -> npt.NDArray[np.float64]:
    """Polynomial terms ``u^a v^b`` (a + b <= degree) on the grid ``ys`` x ``xs``."""
    v, u = np.meshgrid(2 * ys / shape[0] - 1, 2 * xs / shape[1] - 1, indexing="ij")
    terms = [u**a * v**b for a in range(degree + 1) for b in range(degree + 1 - a)]
    return np.stack([t.ravel() for t in terms], axis=1)


def _degree(blocks: int) -> int:
    """The richest polynomial surface a number of blocks supports (at most 4)."""
    for degree in (4, 3, 2, 1):
        if blocks >= 3 * (degree + 1) * (degree + 2) // 2:
            return degree
    return 0


def _fit(
    values: npt.NDArray[np.float64],
    trusted: npt.NDArray[np.bool_],
    ys: npt.NDArray[np.float64],
    xs: npt.NDArray[np.float64],
    shape: tuple[int, int],
) -> npt.NDArray[np.float64]:
    """Least-squares polynomial coefficients through the trusted blocks."""
    degree = _degree(int(trusted.sum()))
    design = _terms(ys, xs, shape, degree)
    keep = trusted.ravel()
    coef, *_ = np.linalg.lstsq(design[keep], values.ravel()[keep], rcond=None)
    return np.asarray(coef, np.float64)


def _evaluate(
    coef: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    xs: npt.NDArray[np.float64],
    shape: tuple[int, int],
) -> npt.NDArray[np.float64]:
    """The polynomial on the grid ``ys`` x ``xs``, evaluated separably (``V^T C U``)."""
    degree = next(d for d in range(5) if (d + 1) * (d + 2) // 2 == coef.size)
    v = 2 * ys / shape[0] - 1
    u = 2 * xs / shape[1] - 1
    matrix = np.zeros((degree + 1, degree + 1))
    index = 0
    for a in range(degree + 1):  # the order of ``_terms``
        for b in range(degree + 1 - a):
            matrix[b, a] = coef[index]
            index += 1
    powers_v = np.stack([v**b for b in range(degree + 1)])
    powers_u = np.stack([u**a for a in range(degree + 1)])
    return np.asarray(powers_v.T @ matrix @ powers_u, np.float64)


def _uncovered_blocks(
    brightness: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    xs: npt.NDArray[np.float64],
    shape: tuple[int, int],
    *,
    two_sided: bool = False,
) -> npt.NDArray[np.bool_]:
    """Blocks whose level is background: not clearly off what their neighbours predict.

    Blocks covered by cells read darker than the flat field (or, ``two_sided``, off it
    either way). Each block's log level is compared with a local quadratic surface through
    its trusted neighbours (``_local_fit``, the block itself left out; the global polynomial
    surface where too few neighbours are trusted); blocks more than 2.5 robust deviations
    off it are distrusted, until stable. A local surface follows a steep fall-off
    (vignetting at a corner) that one polynomial over the field cannot.
    """
    trusted = np.ones(brightness.shape, bool)
    if brightness.size < 4:
        return trusted
    log_level = np.log(np.maximum(brightness, 1e-6))
    for _ in range(6):
        local, support = _local_fit(log_level, trusted)
        surface = _evaluate(_fit(log_level, trusted, ys, xs, shape), ys, xs, shape)
        deviation = log_level - np.where(support > _MIN_SUPPORT, local, surface)
        spread = max(1.4826 * float(np.median(np.abs(deviation[trusted]))), 0.004)
        updated = (np.abs(deviation) if two_sided else -deviation) < 2.5 * spread
        if updated.sum() < max(4, brightness.size // 4) or np.array_equal(updated, trusted):
            break
        trusted = updated
    return trusted


_MIN_SUPPORT = 2.0
"""Gaussian weight of trusted neighbours a local fit needs (a trusted neighbour at a
distance of one block weighs 0.8, at two blocks 0.41)."""


def _local_fit(
    values: npt.NDArray[np.float64],
    trusted: npt.NDArray[np.bool_],
    *,
    radius: int = 2,
    sigma: float = 1.5,
    leave_out: bool = True,
    ridge: float = 0.05,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each block's value predicted by a weighted quadratic through the trusted blocks of its
    ``(2 radius + 1)^2`` neighbourhood (Gaussian weights, ``sigma`` in blocks; the block
    itself left out with ``leave_out``), and the total weight of those blocks (its support).
    The curvature terms carry a small ridge, so that a one-sided neighbourhood (a corner)
    stays solvable."""
    rows, cols = values.shape
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    design = np.stack([np.ones_like(dx), dx, dy, dx * dx, dx * dy, dy * dy], axis=1)
    kernel = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    if leave_out:
        kernel[dx.size // 2] = 0.0
    size = 2 * radius + 1

    def windows(array: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        padded = np.pad(array, radius)
        view = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        return view.reshape(rows, cols, size * size)

    weight = windows(trusted.astype(np.float64)) * kernel
    value = windows(np.where(trusted, values, 0.0))
    normal = np.einsum("rck,ki,kj->rcij", weight, design, design)
    normal += np.diag([1e-6, 1e-6, 1e-6, ridge, ridge, ridge])
    rhs = np.einsum("rck,ki,rck->rci", weight, design, value)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    return coef[..., 0], weight.sum(axis=2)


def uneven_background(
    image: npt.NDArray[np.generic], block_px: int, *, relief: bool = False, flat: float = 0.02
) -> F32 | None:
    """The estimated background where it varies by more than ``flat`` (p95/p5 - 1), else None.

    A field lit evenly is best served by one level; vignetting or uneven light needs the map.
    """
    background = estimate_background(image, block_px, relief=relief)
    level = background[::8, ::8].mean(axis=2)
    low, high = np.percentile(level, [5, 95])
    return None if high <= (1 + flat) * low else background


def optical_density(image: npt.NDArray[np.generic], background: F32) -> F32:
    """``ln(background / I)`` per pixel and channel (float32, same channels as background)."""
    values = np.asarray(image, np.float32)
    if values.ndim == 2:
        values = values[..., None]
    floor = np.float32(max(float(background.max()) * 1e-3, 1e-6))
    return np.asarray(np.log(background / np.maximum(values, floor)), np.float32)


def dominant_direction(od: F32, min_norm: float, *, max_pixels: int = 50_000) -> F32:
    """The unit OD direction shared by most clearly stained pixels.

    Clearly stained: an OD norm above ``min_norm`` and above a fifth of the field's 95th
    percentile (faint pixels carry noise and compression error, not the stain's colour).
    A colour needs no detail: a grid of about ``max_pixels`` samples the field, and every
    pixel is used only where that grid holds too few stained ones.

    Raises:
        UnreliableFieldError: fewer than 500 such pixels (nothing stained to learn from).
    """
    pixels = od.shape[0] * od.shape[1]
    step = max(1, round(math.sqrt(pixels / max_pixels)))
    vectors = od[::step, ::step].reshape(-1, od.shape[-1])
    norms = np.linalg.norm(vectors, axis=1)
    # Faint pixels carry noise and compression error, not the stain's colour.
    floor = max(min_norm, 0.2 * float(np.percentile(norms[:: max(norms.size // 100_000, 1)], 95)))
    stained = vectors[norms > floor]
    if stained.shape[0] < 500 and step > 1:
        return dominant_direction(od, min_norm, max_pixels=pixels)
    if stained.shape[0] < 500:
        raise UnreliableFieldError(
            f"only {stained.shape[0]} stained pixels: too few to estimate the stain direction"
        )
    if stained.shape[0] > max_pixels:
        step = math.ceil(stained.shape[0] / max_pixels)
        stained = stained[::step]
    units = stained / np.linalg.norm(stained, axis=1, keepdims=True)
    direction = _densest_direction(units)
    for _ in range(2):
        close = units[units @ direction > math.cos(math.radians(10))]
        if close.shape[0] < 100:
            break
        direction = _principal(close)
    return direction


def _densest_direction(units: F32, bins: int = 64) -> F32:
    """The mode of the directions: the densest cell of a chromaticity histogram.

    Red cells share one colour tightly, while a white cell's pixels spread over several
    (chromatin, cytoplasm, granules): the mode finds the red cells even where a large white
    cell covers as many pixels as they do, which a principal axis would average with them.
    """
    total = np.maximum(np.abs(units).sum(axis=1), 1e-6)
    chroma = units[:, :2] / total[:, None]  # signed chromaticity, in [-1, 1]
    hist, xe, ye = np.histogram2d(chroma[:, 0], chroma[:, 1], bins=bins, range=[[-1, 1], [-1, 1]])
    hist = cv2.GaussianBlur(hist.astype(np.float32), (0, 0), 1.0)
    i, j = np.unravel_index(int(np.argmax(hist)), hist.shape)
    centre = ((xe[i] + xe[i + 1]) / 2, (ye[j] + ye[j + 1]) / 2)
    near = (np.abs(chroma[:, 0] - centre[0]) <= 2 / bins * 1.5) & (
        np.abs(chroma[:, 1] - centre[1]) <= 2 / bins * 1.5
    )
    return _principal(units[near] if near.sum() >= 10 else units)


def _principal(units: F32) -> F32:
    """First principal axis (not centred) of unit vectors, pointing into positive OD."""
    _, _, vt = np.linalg.svd(units.astype(np.float64), full_matrices=False)
    axis = vt[0]
    if axis.sum() < 0:
        axis = -axis
    return np.asarray(axis / np.linalg.norm(axis), np.float32)


def stain_residual(od: F32, direction: F32) -> F32:
    """``|OD - (OD . r) r|`` per pixel: the stain not explained by the direction ``r``."""
    along = od @ direction
    residual = od - along[..., None] * direction
    return np.asarray(np.sqrt(np.einsum("ijk,ijk->ij", residual, residual)), np.float32)


def relative_threshold(values: F32, spread: float = 10.0, floor: float = 2.0) -> float:
    """A level that only outliers of the field's own distribution exceed.

    ``median + max(spread x sigma, floor x median)`` with ``sigma`` the robust standard
    deviation (1.4826 x MAD). Background and red cells make the bulk of a smear field, so
    this adapts to its noise, compression and stain without a lab's constant.
    """
    sample = values[::4, ::4] if values.ndim == 2 and values.size > 40_000 else values
    median = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - median)))
    return median + max(spread * sigma, floor * median)


class FieldStatistics:
    """Background, OD and noise of one brightfield field, each estimated from the field.

    Attributes:
        background: HxWx3 per-channel background (flat field).
        od: HxWx3 optical density.
        noise: robust standard deviation of the OD norm on background pixels.
    """

    def __init__(self, image: npt.NDArray[np.generic], block_px: int = 128) -> None:
        self.background = estimate_background(image, block_px)
        self.od = optical_density(image, self.background)
        norm = np.linalg.norm(self.od[::4, ::4], axis=-1)
        low = norm[norm <= np.percentile(norm, 30)]
        self.noise = float(max(np.median(low), 1e-4))
