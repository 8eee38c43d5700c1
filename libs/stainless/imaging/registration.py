"""Registration of a brightfield (stained) field onto its DIC (unstained) field.

The two images are different modalities: DIC shows relief, ``I ~ d OPL / d s`` (the
derivative of the optical path length along the shear axis), brightfield shows
absorption. ECC (Enhanced Correlation Coefficient, ``cv2.findTransformECC``) needs two
images that are linearly related, so both are turned into the same representation first:

* DIC: the raw intensity minus its median (ECC is invariant to gain and offset);
* brightfield: a *pseudo-DIC*, the directional derivative along the shear axis of the
  optical density ``OD = -ln(I)`` (Gaussian-smoothed first) of the blue channel by
  default. Red cells dominate both images, and their blue OD (haemoglobin) follows their
  thickness, hence their optical path; the Romanowsky stains absorb mostly red and green,
  so the blue channel keeps the white cells' stain, which DIC does not see, weak. On the
  phantom the blue OD gives ECC ~0.99 and 3x smaller errors than the sum of R, G and B.
  Eosinophil granules do absorb blue, so stained white cells are masked out of the
  pseudo-DIC altogether: where the OD has a component orthogonal to the red-cell OD
  direction (the stain residual, as in ``BrightfieldDetector``; direction and threshold
  estimated from the field), the pseudo-DIC is set to 0.

The search is coarse to fine: a Gaussian pyramid of both representations (``levels``, each
half the size of the one below), a translation from Hanning-windowed phase correlation on
the coarsest level, then ECC with the chosen motion model from the coarsest level down to
``finest_level`` (0 = full resolution), each level starting from the one above. The final
correlation coefficient is the quality score: a pair below ``min_ecc``, or with an
implausible transform, is rejected with a reason.

The sign of the shear (which side of a cell is bright) depends on the prism setting and is
not always known: with ``try_opposite_shear`` both signs are tried on the coarsest level and
the one with the higher ECC is kept.

Affines are 2x3 float64 arrays mapping a brightfield pixel ``(u, v, 1)`` to the DIC pixel
``(x, y)`` (pixel centres at integer coordinates).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from stainless.imaging.field_statistics import (
    FieldStatistics,
    UnreliableFieldError,
    dominant_direction,
    relative_threshold,
    stain_residual,
    uneven_background,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class MotionModel(StrEnum):
    """Motion models of the ECC search."""

    TRANSLATION = "translation"
    EUCLIDEAN = "euclidean"
    AFFINE = "affine"


_CV_MOTION = {
    MotionModel.TRANSLATION: cv2.MOTION_TRANSLATION,
    MotionModel.EUCLIDEAN: cv2.MOTION_EUCLIDEAN,
    MotionModel.AFFINE: cv2.MOTION_AFFINE,
}

REPRESENTATION = (
    "DIC intensity vs shear-axis derivative of the brightfield blue-channel OD, "
    "stained white cells masked out"
)

"""Short description of what ECC compares (reported by the benchmark)."""

MGG_RED_CELL_OD = (0.11, 0.31, 0.30)
"""OD (R, G, B) of an MGG-stained red cell (one measured smear): a prior, for tests and
for sites that want to fix the direction; the algorithms estimate it from each field."""


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of one registration.

    Attributes:
        affine_bf_to_dic: 2x3 float64, brightfield pixel ``(u, v, 1)`` -> DIC pixel ``(x, y)``;
            the last estimate reached, also when rejected.
        ecc: final enhanced correlation coefficient (0.0 when ECC did not converge).
        accepted: ``ecc >= min_ecc`` and the transform is plausible.
        reason: why the pair was rejected, None when accepted.
        seconds: wall time of the registration.
    """

    affine_bf_to_dic: F64
    ecc: float
    accepted: bool
    reason: str | None
    seconds: float


class RegistrationError(RuntimeError):
    """ECC failed on one level (raised internally, reported as a rejection reason)."""


class Registrar:
    """Coarse-to-fine ECC registration of brightfield onto DIC (see the module docstring)."""

    def __init__(
        self,
        *,
        motion: MotionModel = MotionModel.AFFINE,
        levels: int = 4,
        finest_level: int | None = None,
        finest_min_pixels: int = 600_000,
        max_iterations: int = 50,
        epsilon: float = 1e-5,
        min_ecc: float = 0.7,
        max_shift_px: float = 100.0,
        max_rotation_deg: float = 5.0,
        max_scale_change: float = 0.05,
        shear_angle_deg: float = 45.0,
        try_opposite_shear: bool = True,
        gauss_filter_size: int = 5,
        od_sigma_px: float = 1.0,
        od_weights: tuple[float, float, float] = (0.0, 0.0, 1.0),
        mask_stained_cells: bool = True,
        stain_mask_threshold: float | None = None,
        red_cell_od: tuple[float, float, float] | None = None,
        min_level_size: int = 48,
    ) -> None:
        """Configure the registration.

        Args:
            motion: motion model of the ECC search (affine by default).
            levels: pyramid levels including full resolution; fewer are used when the
                coarsest would be smaller than ``min_level_size`` on its short side.
            finest_level: the last level refined (0 = full resolution, 1 = half). None
                (default) picks the coarsest level that still has ``finest_min_pixels``
                pixels: half resolution for a 2064x1544 field, where it is as accurate as
                full resolution to ~0.03 px and 3x faster; full resolution for small fields.
            finest_min_pixels: pixels the automatically chosen finest level keeps at least.
            max_iterations: ECC iterations per level at most.
            epsilon: ECC stops on a level once the correlation improves by less.
            min_ecc: the final correlation needed to accept the pair.
            max_shift_px: largest plausible displacement of the field centre, per axis.
            max_rotation_deg: largest plausible rotation.
            max_scale_change: largest plausible relative change of scale (each singular
                value of the linear part must lie within ``1 +- max_scale_change``).
            shear_angle_deg: DIC shear direction in the image (x right, y down), e.g. 45
                for the phantom; the direction of increasing brightness on a cell edge.
            try_opposite_shear: also try ``shear_angle_deg + 180`` on the coarsest level and
                keep the sign with the higher correlation (for an unknown prism setting).
            gauss_filter_size: odd size of the Gaussian ECC applies to both images.
            od_sigma_px: Gaussian smoothing (px) of the brightfield OD before the derivative.
            od_weights: weights of the R, G and B optical densities in the pseudo-DIC.
            mask_stained_cells: mask stained white cells out of the pseudo-DIC.
            stain_mask_threshold: stain residual (OD) above which a brightfield pixel
                belongs to a stained white cell; None (default) sets it from the field's
                own residual distribution (``relative_threshold``).
            red_cell_od: OD (R, G, B) direction of red cells, for the stain residual; None
                (default) estimates it from the field (its dominant OD direction).
            min_level_size: smallest short side (px) of the coarsest pyramid level.

        Raises:
            ValueError: a parameter is out of range.
        """
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        if finest_level is not None and not 0 <= finest_level < levels:
            raise ValueError(f"finest_level must lie in [0, {levels - 1}], got {finest_level}")
        if finest_min_pixels < 1:
            raise ValueError(f"finest_min_pixels must be positive, got {finest_min_pixels}")
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if not -1.0 <= min_ecc <= 1.0:
            raise ValueError(f"min_ecc must lie in [-1, 1], got {min_ecc}")
        if not max_shift_px > 0 or not max_rotation_deg > 0 or not max_scale_change > 0:
            raise ValueError("max_shift_px, max_rotation_deg and max_scale_change must be > 0")
        if gauss_filter_size < 1 or gauss_filter_size % 2 == 0:
            raise ValueError(f"gauss_filter_size must be odd and positive, got {gauss_filter_size}")
        if od_sigma_px < 0:
            raise ValueError(f"od_sigma_px must be non-negative, got {od_sigma_px}")
        if len(od_weights) != 3 or not any(w != 0 for w in od_weights):
            raise ValueError(f"od_weights must be 3 weights, not all 0, got {od_weights}")
        if stain_mask_threshold is not None and not stain_mask_threshold > 0:
            raise ValueError(f"stain_mask_threshold must be positive, got {stain_mask_threshold}")
        if red_cell_od is not None:
            red = np.asarray(red_cell_od, np.float64)
            if red.shape != (3,) or not np.all(np.isfinite(red)) or not np.linalg.norm(red) > 0:
                raise ValueError(
                    f"red_cell_od must be 3 finite values, not all 0, got {red_cell_od}"
                )
            red_cell_od = (float(red[0]), float(red[1]), float(red[2]))
        if min_level_size < 16:
            raise ValueError(f"min_level_size must be at least 16, got {min_level_size}")
        self.motion = MotionModel(motion)
        self.levels = levels
        self.finest_level = finest_level
        self.finest_min_pixels = finest_min_pixels
        self.max_iterations = max_iterations
        self.epsilon = epsilon
        self.min_ecc = min_ecc
        self.max_shift_px = max_shift_px
        self.max_rotation_deg = max_rotation_deg
        self.max_scale_change = max_scale_change
        self.shear_angle_deg = shear_angle_deg
        self.try_opposite_shear = try_opposite_shear
        self.gauss_filter_size = gauss_filter_size
        self.od_sigma_px = od_sigma_px
        self.od_weights = (float(od_weights[0]), float(od_weights[1]), float(od_weights[2]))
        self.mask_stained_cells = mask_stained_cells
        self.stain_mask_threshold = stain_mask_threshold
        self.red_cell_od = red_cell_od
        self.min_level_size = min_level_size

    # ------------------------------------------------------------------ public

    def register(
        self, dic: npt.NDArray[np.generic], bf: npt.NDArray[np.generic]
    ) -> RegistrationResult:
        """Estimate the brightfield -> DIC affine of one field pair.

        Args:
            dic: DIC field, HxW (uint8, uint16 or float).
            bf: brightfield field, HxWx3 RGB of the same size (uint8, uint16 or float).

        Raises:
            ValueError: wrong dimensions, channels, dtype or a size mismatch.
        """
        started = time.perf_counter()
        check_pair(dic, bf)
        height, width = dic.shape[:2]
        angle = self.shear_angle_deg
        levels = self._usable_levels(width, height)
        finest = min(self.finest_for(width, height), levels - 1)
        # Nothing finer than the finest refined level is ever used: both images are reduced
        # to it first and their representations made there (a quarter of the work per level).
        work_dic, work_bf = _reduced(dic, finest), _reduced(bf, finest)
        dic_pyr = _pyramid(dic_representation(work_dic), levels - finest)  # [0]: ``finest``
        template = pseudo_dic(work_bf, angle, self.od_sigma_px, self.od_weights)
        if self.mask_stained_cells:
            template *= red_cell_weight(
                work_bf,
                self.stain_mask_threshold,
                self.red_cell_od,
                size=template.shape[::-1],
                reduction=max(4 >> finest, 1),  # a quarter of the field's resolution
            )
        bf_pyr = _pyramid(template, levels - finest)
        warp = np.eye(2, 3, dtype=np.float32)
        level = levels - 1  # the level ``warp`` is expressed in
        try:
            sign, warp, ecc = self._coarsest(dic_pyr[-1], bf_pyr[-1])
            while level > finest:
                warp = warp.copy()
                warp[:, 2] *= 2.0
                level -= 1
                index = level - finest
                warp, ecc = self._ecc(sign * bf_pyr[index], dic_pyr[index], warp)
        except RegistrationError as exc:
            return RegistrationResult(
                _scale_translation(warp, 2.0**level),
                0.0,
                False,
                f"ECC did not converge: {exc}",
                time.perf_counter() - started,
            )
        affine = _scale_translation(warp, 2.0**finest)
        reason = self._check(affine, ecc, width, height)
        return RegistrationResult(
            affine, float(ecc), reason is None, reason, time.perf_counter() - started
        )

    # ------------------------------------------------------------------ steps

    def finest_for(self, width: int, height: int) -> int:
        """The finest pyramid level refined for a field of this size."""
        if self.finest_level is not None:
            return self.finest_level
        level = 0
        while (width >> (level + 1)) * (height >> (level + 1)) >= self.finest_min_pixels:
            level += 1
        return level

    def _usable_levels(self, width: int, height: int) -> int:
        levels = 1
        while levels < self.levels and min(width, height) >> levels >= self.min_level_size:
            levels += 1
        return levels

    def _coarsest(self, dic: F32, bf: F32) -> tuple[float, F32, float]:
        """(shear sign, warp, ecc) on the coarsest level: phase correlation, then ECC."""
        signs = (1.0, -1.0) if self.try_opposite_shear else (1.0,)
        window = cv2.createHanningWindow((dic.shape[1], dic.shape[0]), cv2.CV_32F)
        best: tuple[float, F32, float] | None = None
        errors = []
        for sign in signs:
            template = _normalised(sign * bf)
            (dx, dy), _ = cv2.phaseCorrelate(template, _normalised(dic), window)
            start = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
            try:
                warp, ecc = self._ecc(sign * bf, dic, start)
            except RegistrationError as exc:
                errors.append(str(exc))
                continue
            if best is None or ecc > best[2]:
                best = (sign, warp, ecc)
        if best is None:
            raise RegistrationError(errors[0])
        return best

    def _ecc(self, template: F32, image: F32, warp: F32) -> tuple[F32, float]:
        criteria = (
            cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
            self.max_iterations,
            self.epsilon,
        )
        try:
            ecc, found = cv2.findTransformECC(
                template,
                image,
                warp.astype(np.float32),
                _CV_MOTION[self.motion],
                criteria,
                _all_valid(image),
                self.gauss_filter_size,
            )
        except cv2.error as exc:
            raise RegistrationError(_cv_message(exc)) from None
        if not math.isfinite(ecc):
            raise RegistrationError("correlation is not finite")
        return np.asarray(found, np.float32), float(ecc)

    def _check(self, affine: F64, ecc: float, width: int, height: int) -> str | None:
        """The rejection reason of a converged transform, or None."""
        if ecc < self.min_ecc:
            return f"ECC {ecc:.2f} below {self.min_ecc:.2f}"
        centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
        shift = affine @ centre - centre[:2]
        if np.max(np.abs(shift)) > self.max_shift_px:
            return (
                f"implausible transform: centre shift ({shift[0]:.1f}, {shift[1]:.1f}) px "
                f"exceeds {self.max_shift_px:g} px"
            )
        linear = affine[:, :2]
        if np.linalg.det(linear) <= 0:
            return "implausible transform: mirrored or degenerate"
        rotation = math.degrees(
            math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1])
        )
        if abs(rotation) > self.max_rotation_deg:
            return (
                f"implausible transform: rotation {rotation:.2f} deg exceeds "
                f"{self.max_rotation_deg:g} deg"
            )
        singular = np.linalg.svd(linear, compute_uv=False)
        change = float(np.max(np.abs(singular - 1.0)))
        if change > self.max_scale_change:
            return (
                f"implausible transform: scale change {change:.3f} exceeds "
                f"{self.max_scale_change:g}"
            )
        return None


# ---------------------------------------------------------------------- helpers


def check_pair(dic: npt.NDArray[np.generic], bf: npt.NDArray[np.generic]) -> None:
    """Raise ValueError unless ``dic`` is HxW and ``bf`` is HxWx3 of the same size."""
    if not isinstance(dic, np.ndarray) or not isinstance(bf, np.ndarray):
        raise ValueError("dic and bf must be numpy arrays")
    if dic.ndim != 2:
        raise ValueError(f"dic must be a 2-D grayscale image, got shape {dic.shape}")
    if bf.ndim != 3 or bf.shape[2] != 3:
        raise ValueError(f"bf must be an HxWx3 RGB image, got shape {bf.shape}")
    if dic.shape != bf.shape[:2]:
        raise ValueError(f"dic {dic.shape} and bf {bf.shape[:2]} differ in size")
    for name, image in (("dic", dic), ("bf", bf)):
        if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise ValueError(f"{name} must have an integer or float dtype, got {image.dtype}")
    if min(dic.shape) < 32:
        raise ValueError(f"the field must be at least 32x32 pixels, got {dic.shape}")


def dic_representation(dic: npt.NDArray[np.generic]) -> F32:
    """The DIC as ECC sees it: float32 intensity minus its median.

    Under uneven light (vignetting) the intensity is first divided by the field's own flat
    field (rescaled to the median), so that the lamp's fall-off does not dominate the
    coarse levels of the search.
    """
    image = np.asarray(dic, np.float32)
    median = np.float32(np.median(image))
    background = uneven_background(image, max(min(image.shape) // 12, 16), relief=True)
    if background is not None:
        image = np.asarray(
            image / np.maximum(background[..., 0], np.float32(1e-6)) * median, np.float32
        )
    return np.asarray(image - median, np.float32)


def pseudo_dic(
    bf: npt.NDArray[np.generic],
    shear_angle_deg: float,
    sigma_px: float = 1.0,
    weights: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> F32:
    """A DIC-like image made from brightfield: derivative of the OD along the shear axis.

    ``OD = -sum_c w_c ln(I_c + 1)`` (the background level only adds a constant, which the
    derivative removes; an uneven background is divided out first), smoothed with a
    Gaussian of ``sigma_px``, differentiated with Sobel kernels along ``(cos a, sin a)``.
    """
    image = np.asarray(bf, np.float32)
    background = uneven_background(image, max(min(image.shape[:2]) // 12, 16))
    if background is not None:  # the lamp's fall-off would add its own gradient
        level = np.float32(background.mean())
        image = np.asarray(image / np.maximum(background, np.float32(1e-6)) * level, np.float32)
    od = np.zeros(image.shape[:2], np.float32)
    for channel, weight in enumerate(weights):
        if weight:
            od -= np.float32(weight) * np.log(image[..., channel] + np.float32(1.0))
    smooth = np.asarray(cv2.GaussianBlur(od, (0, 0), sigma_px), np.float32) if sigma_px > 0 else od
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    angle = math.radians(shear_angle_deg)
    return np.asarray(np.float32(math.cos(angle)) * gx + np.float32(math.sin(angle)) * gy)


def red_cell_weight(
    bf: npt.NDArray[np.generic],
    threshold: float | None = None,
    red_cell_od: tuple[float, float, float] | None = None,
    *,
    size: tuple[int, int] | None = None,
    reduction: int = 4,
) -> F32:
    """Weight (0..1; ``size`` (width, height), by default the image's) that is 0 on stained
    white cells and 1 elsewhere.

    Computed at ``1 / reduction`` of the image's resolution (a quarter of the field's;
    ``Registrar.register`` hands in the field already reduced to its finest level): the OD
    against the field's own flat field, its residual orthogonal to the red-cell OD
    direction (estimated from the field unless given), thresholded (relative to the field
    unless given), grown by ~8 full-resolution px and softened.
    A field with too little stain to estimate the direction is weighted 1 everywhere.
    """
    height, width = bf.shape[:2]
    size = size or (width, height)
    small = np.asarray(bf, np.float32)
    if reduction > 1:
        small = np.asarray(
            cv2.resize(
                small,
                (max(width // reduction, 1), max(height // reduction, 1)),
                interpolation=cv2.INTER_AREA,
            ),
            np.float32,
        )
    stats = FieldStatistics(small, block_px=32)
    if red_cell_od is None:
        try:
            direction = dominant_direction(stats.od, 5 * stats.noise)
        except UnreliableFieldError:
            return np.ones(size[::-1], np.float32)
    else:
        direction = np.asarray(red_cell_od, np.float32)
        direction /= np.float32(np.linalg.norm(direction))
    stain = np.asarray(
        cv2.GaussianBlur(stain_residual(stats.od, direction), (0, 0), 0.5), np.float32
    )
    level = relative_threshold(stain) if threshold is None else threshold
    keep = cv2.erode((stain < np.float32(level)).astype(np.uint8), np.ones((5, 5), np.uint8))
    weight = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), 1.0)
    return np.asarray(cv2.resize(weight, size, interpolation=cv2.INTER_LINEAR), np.float32)


def _all_valid(image: np.ndarray) -> npt.NDArray[np.uint8]:
    """ECC's input mask when every pixel counts (needed to pass ``gaussFiltSize``)."""
    return np.full(image.shape[:2], 255, np.uint8)


def _reduced(image: npt.NDArray[np.generic], levels: int) -> F32:
    """``image`` (float32) reduced ``levels`` times by a Gaussian pyramid step."""
    reduced = np.asarray(image, np.float32)
    for _ in range(levels):
        reduced = np.asarray(cv2.pyrDown(reduced), np.float32)
    return reduced


def _pyramid(image: F32, levels: int) -> list[F32]:
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(np.asarray(cv2.pyrDown(pyramid[-1]), np.float32))
    return pyramid


def _normalised(image: F32) -> F32:
    std = float(image.std())
    return np.asarray((image - image.mean()) / (std if std > 0 else 1.0), np.float32)


def _scale_translation(warp: npt.NDArray[np.floating], factor: float) -> F64:
    """A level's warp in full-resolution pixels (``pyrDown`` keeps pixel ``2i`` at ``i``)."""
    affine = np.asarray(warp, np.float64).copy()
    affine[:, 2] *= factor
    return affine


def _cv_message(exc: cv2.error) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip().rstrip(".") or text
    return text.splitlines()[-1] if text else "OpenCV error"


def corner_error_px(
    estimated: npt.ArrayLike, truth: npt.ArrayLike, width: int, height: int
) -> float:
    """Largest displacement (px) between two 2x3 affines at the 4 field corners.

    The corners are the centres of the corner pixels, ``(0, 0)`` to ``(width-1, height-1)``.
    """
    a, b = check_affine(estimated, "estimated"), check_affine(truth, "truth")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    corners = np.array(
        [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]],
        np.float64,
    )
    diff = corners @ a.T - corners @ b.T
    return float(np.max(np.hypot(diff[:, 0], diff[:, 1])))


def check_affine(matrix: npt.ArrayLike, name: str = "affine") -> F64:
    """A 2x3 float64 affine, or ValueError naming ``name``."""
    array = np.asarray(matrix, np.float64)
    if array.shape != (2, 3):
        raise ValueError(f"{name} must be a 2x3 affine, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values")
    return array


def invert_affine(affine: npt.ArrayLike) -> F64:
    """The inverse of a 2x3 affine (DIC -> brightfield from brightfield -> DIC)."""
    matrix = np.vstack([check_affine(affine, "affine"), [0.0, 0.0, 1.0]])
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError("the affine is not invertible")
    return np.asarray(np.linalg.inv(matrix)[:2], np.float64)


def warp_bf_to_dic(
    bf: np.ndarray,
    affine_bf_to_dic: npt.ArrayLike,
    size: tuple[int, int],
    *,
    border_mode: int = cv2.BORDER_REFLECT_101,
) -> np.ndarray:
    """The brightfield resampled (bilinear) into the DIC frame.

    Args:
        bf: brightfield image, HxW or HxWxC.
        affine_bf_to_dic: 2x3, brightfield pixel -> DIC pixel.
        size: ``(width, height)`` of the DIC frame.
        border_mode: OpenCV border mode for samples outside the brightfield.
    """
    affine = check_affine(affine_bf_to_dic, "affine_bf_to_dic")
    if not isinstance(bf, np.ndarray) or bf.ndim not in (2, 3) or bf.size == 0:
        raise ValueError("bf must be a non-empty HxW or HxWxC array")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {size}")
    warped = cv2.warpAffine(
        bf, affine, (int(width), int(height)), flags=cv2.INTER_LINEAR, borderMode=border_mode
    )
    return np.asarray(warped, dtype=bf.dtype)


def baseline_register(
    dic: npt.NDArray[np.generic],
    bf: npt.NDArray[np.generic],
    *,
    representation: str = "pseudo-dic",
    max_iterations: int = 50,
    epsilon: float = 1e-5,
    shear_angle_deg: float = 45.0,
) -> tuple[F64 | None, float | None, str | None]:
    """Plain full-resolution affine ECC from identity (the benchmark's baseline).

    Args:
        representation: ``"pseudo-dic"`` (the same images as ``Registrar``) or ``"naive"``
            (DIC intensity against brightfield grey level).

    Returns:
        (affine or None, ecc or None, error message or None).
    """
    check_pair(dic, bf)
    if representation == "pseudo-dic":
        template, image = pseudo_dic(bf, shear_angle_deg), dic_representation(dic)
    elif representation == "naive":
        grey = cv2.cvtColor(np.asarray(bf, np.float32), cv2.COLOR_RGB2GRAY)
        template, image = np.asarray(grey, np.float32), np.asarray(dic, np.float32)
    else:
        raise ValueError(f"unknown representation {representation!r}")
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, max_iterations, epsilon)
    try:
        ecc, warp = cv2.findTransformECC(
            template,
            image,
            np.eye(2, 3, dtype=np.float32),
            cv2.MOTION_AFFINE,
            criteria,
            _all_valid(image),
            5,
        )
    except cv2.error as exc:
        return None, None, _cv_message(exc)
    return np.asarray(warp, np.float64), float(ecc), None
