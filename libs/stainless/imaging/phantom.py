"""Synthetic paired DIC / MGG-brightfield fields of a blood smear (100x oil, 0.075 µm/px).

The scene lives in the DIC ("world") frame as two layers that cells, each rendered on a
local patch, are added into:

* optical path length (OPL, µm) = thickness x (n - n_medium), seen by DIC as
  ``I = I0 [1 - cos(phi_b + 2 pi / lambda (OPL(x + s/2) - OPL(x - s/2)))]``, then defocus
  blur, Poisson shot noise and 16-bit scaling;
* optical density (OD = -ln I/I0 per R, G, B), seen in brightfield as
  ``I_c = I0_c exp(-OD_c)`` after resampling through the BF->DIC affine.

Stains: azure is blue on RNA (LY/MO cytoplasm) and, as the azure-eosin (Romanowsky)
complex, purple on chromatin and basophil granules; eosin is pink in neutrophil cytoplasm
and orange in eosinophil granules; red cells add haemoglobin (absorbs blue). The OD vectors
are calibrated so that a neutrophil's nucleus and cytoplasm and the red cells measure about
(0.53, 1.17, 0.16), (0.07, 0.24, 0.08) and (0.11, 0.31, 0.30). Refractive indices assume a
dried smear under oil (1.515); granules barely differ from their cytoplasm (faint relief in
DIC), basophil granules not at all (invisible in DIC, black in MGG).

Acquisition variability (stain protocol and strength, illumination, camera, optics and
smear objects: platelets, clumps, debris, precipitate, rouleaux) comes from the blocks of
``stainless.imaging.acquisition``; their defaults render the reference lab above.
Platelets, debris and precipitate are not cells: they stay background in the mask.

Mask of the non-cells: an artifact (ART) is CYTOPLASM with its dense core NUCLEUS; a smudge
(SMU) is NUCLEUS where its smeared chromatin is dense and CYTOPLASM in the fringe.

Besides the seven healthy classes the phantom renders the clinical ones
(``stainless.domain.vocabulary.CLINICAL``) from their morphology in thesis ch. 3.2: NE (a
segmented or, one in seven, a band neutrophil), RLY, IG (promyelocyte, myelocyte or
metamyelocyte), BL, ALC and ERB; ``class_frequencies`` chooses among all of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stainless.domain.cells import CLASS_ORDER, CellClass, MaskClass
from stainless.domain.vocabulary import CLINICAL
from stainless.imaging.acquisition import (
    CameraConfig,
    IlluminationConfig,
    SmearConfig,
    StainConfig,
    StainSet,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]


PHANTOM_CLASSES: tuple[str, ...] = (
    *CLASS_ORDER,
    *(code for code in CLINICAL.classes if code not in CLASS_ORDER),
)
"""Every class the phantom renders: the healthy seven, then the clinical classes."""
_CLASSES = PHANTOM_CLASSES
_COUNTS = {"ART": 609, "BA": 40, "EO": 136, "LY": 2051, "MO": 310, "SNE": 3239, "SMU": 566}
DEFAULT_CLASS_FREQUENCIES: Mapping[str, float] = MappingProxyType(
    {CellClass(k): v / sum(_COUNTS.values()) for k, v in _COUNTS.items()}
)
"""Class frequencies of the thesis' Table 4.1 (CellaVision column), normalised."""

# Range of the largest extent (µm) of each class; tight boxes measure about 0.95 of it.
# Clinical classes after thesis ch. 3.2, the largest reactive lymphocytes (to 30 µm) left
# out so that a cell fits the 360 px clinical crop.
_DIAMETER_UM: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "NE": (10.3, 15.5),
        "RLY": (14.0, 21.0),
        "IG": (12.0, 20.0),
        "BL": (11.0, 18.0),
        "ALC": (9.0, 14.0),
        "ERB": (8.0, 10.0),
        CellClass.LY: (7.4, 8.6),
        CellClass.SNE: (10.3, 15.5),
        CellClass.EO: (10.3, 15.5),
        CellClass.BA: (10.0, 14.0),
        CellClass.MO: (12.0, 22.5),
        CellClass.ART: (8.0, 16.0),  # the irregular outline fills about half of it
        CellClass.SMU: (9.0, 18.0),
    }
)

_N_MEDIUM, _N_CYTOPLASM, _N_NUCLEUS, _N_RED_CELL = 1.515, 1.545, 1.58, 1.56

_RBC_COEF = (0.81, 7.83, -4.39)  # Evans-Fung thickness polynomial (µm)
_RBC_FLATTEN = 0.7  # red cells are flattened in the smear
_RBC_OD_REF_UM = 1.45  # thickness that carries ``StainSet.red_cell``
_GAP_PX = 5.0  # clearance around cells that are not meant to touch
_TRIES = 60  # placement attempts per cell


class PhantomConfig(BaseModel):
    """Parameters of the generator; lengths in DIC pixels unless the name says µm."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(2064, ge=256)  # field width
    height: int = Field(1544, ge=256)  # field height
    pixel_um: float = Field(0.075, gt=0.02, le=0.5)  # pixel size in the specimen
    # Relative frequency of each WBC class (any of PHANTOM_CLASSES); a missing class counts 0.
    class_frequencies: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_CLASS_FREQUENCIES)
    )
    wbc_per_field: tuple[int, int] = (1, 4)  # inclusive range of WBCs per field
    rbc_per_wbc: tuple[int, int] = (5, 15)  # inclusive range of red cells next to each WBC
    rbc_coverage: float = Field(0.3, ge=0.0, le=0.6)  # area fraction the monolayer fills
    rbc_diameter_um: float = Field(7.3, gt=0.0)  # mean red-cell diameter
    rbc_diameter_jitter: float = Field(0.08, ge=0.0, lt=0.5)  # relative ± spread of it
    rbc_max_overlap: float = Field(0.2, ge=0.0, lt=1.0)  # largest overlap, diameter fraction
    max_shift_px: float = Field(40.0, ge=0.0)  # largest BF->DIC translation per axis
    max_rotation_deg: float = Field(1.0, ge=0.0, le=10.0)  # largest rotation about the centre
    max_scale: float = Field(0.01, ge=0.0, lt=0.2)  # largest relative scale change
    shear_um: float = Field(0.15, gt=0.0, le=1.0)  # DIC shear distance
    shear_angle_deg: float = 45.0  # DIC shear direction (x right, y down)
    wavelength_um: float = Field(0.55, gt=0.0)  # illumination wavelength
    dic_bias_rad: float = Field(0.9, gt=0.0, lt=math.pi)  # DIC bias retardation
    prism_sign: Literal[1, -1] = 1  # -1: the prism reversed (the other side of a cell bright)
    dic_noise: float = Field(4000.0, ge=0.0)  # photons/pixel at background; 0: no noise
    dic_peak_level: int = Field(60000, gt=0, le=65535)  # DN of the brightest DIC level 2 I0
    defocus_sigma_px: float = Field(1.0, ge=0.0)  # Gaussian defocus of the DIC
    bf_background: tuple[float, float, float] = (235.0, 232.0, 228.0)  # BF background RGB
    bf_noise_std: float = Field(1.5, ge=0.0)  # BF Gaussian noise (DN)
    bf_blur_sigma_px: float = Field(0.8, ge=0.0)  # BF optical blur
    border_cell_probability: float = Field(0.25, ge=0.0, le=1.0)  # one WBC cut by the edge
    touching_probability: float = Field(0.3, ge=0.0, le=1.0)  # per WBC: placed touching
    # Acquisition variability (``stainless.imaging.acquisition``); defaults: the reference lab.
    stain: StainConfig = StainConfig()
    illumination: IlluminationConfig = IlluminationConfig()
    camera: CameraConfig = CameraConfig()
    smear: SmearConfig = SmearConfig()

    @field_validator("class_frequencies")
    @classmethod
    def _check_frequencies(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(PHANTOM_CLASSES))
        if unknown:
            known = ", ".join(PHANTOM_CLASSES)
            raise ValueError(f"class_frequencies: unknown class(es) {unknown}; known: {known}")
        if any(not math.isfinite(v) or v < 0 for v in value.values()):
            raise ValueError(f"class_frequencies must be finite and non-negative, got {value}")
        if sum(value.values()) <= 0:
            raise ValueError("class_frequencies must have a positive sum")
        return value

    @field_validator("wbc_per_field", "rbc_per_wbc")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"a range must satisfy 0 <= low <= high, got {value}")
        return value

    @field_validator("bf_background")
    @classmethod
    def _check_background(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0 < v <= 255 for v in value):
            raise ValueError(f"bf_background values must lie in (0, 255], got {value}")
        return value

    def class_probabilities(self) -> F64:
        """Probabilities in ``PHANTOM_CLASSES`` order, summing to 1."""
        weights = np.array([self.class_frequencies.get(c, 0.0) for c in _CLASSES], np.float64)
        return np.asarray(weights / weights.sum(), dtype=np.float64)


Box = tuple[int, int, int, int]


class SmearObjectKind(StrEnum):
    """Things in a smear that are not white cells and must never be detected as one."""

    PLATELET = "platelet"
    PLATELET_CLUMP = "platelet_clump"
    DEBRIS = "debris"
    PRECIPITATE = "precipitate"


@dataclass(frozen=True)
class SmearObject:
    """Truth of one non-cell object: boxes as for ``PhantomCell`` (may be empty off-field)."""

    kind: SmearObjectKind
    box_dic: Box
    box_bf: Box


@dataclass(frozen=True)
class PhantomCell:
    """Truth of one WBC (or ART/SMU); boxes are ``(x0, y0, x1, y1)`` with x1, y1 exclusive."""

    cell_class: str  # one of PHANTOM_CLASSES
    box_dic: tuple[int, int, int, int]
    box_bf: tuple[int, int, int, int]
    at_border: bool  # cut by the DIC field edge
    touching: bool  # within 2 px of another cell
    visible_dic: float = 1.0  # share of the cell's area inside the DIC field
    visible_bf: float = 1.0  # share of the cell's area inside the brightfield field


@dataclass(frozen=True, eq=False)
class PhantomField:
    """A paired field: DIC (uint16 HxW), brightfield (HxWx3), mask (DIC frame).

    The brightfield is uint8 from an 8-bit camera (the default), else uint16.
    """

    dic: U16
    bf: U8 | U16
    mask: U8
    affine_bf_to_dic: F64  # 2x3: brightfield pixel (u, v, 1) -> DIC pixel (x, y)
    cells: tuple[PhantomCell, ...]
    smear_objects: tuple[SmearObject, ...] = ()  # platelets, clumps, debris, precipitate


@dataclass(frozen=True, eq=False)
class CellLayers:
    """Scene layers of one cell patch; ``granule_*`` are the granules' share of opl/od."""

    opl: F32
    od: F32
    label: U8
    granule_opl: F32
    granule_od: F32


# ----------------------------------------------------------------------------- shapes


def _f32(array: object) -> F32:
    return np.asarray(array, dtype=np.float32)


def _blur(image: F32, sigma: float, sigma_y: float = 0.0) -> F32:
    return _f32(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma_y))


@dataclass(frozen=True)
class _Grid:
    """Patch grid at (x0, y0); ``xx`` (1, w) and ``yy`` (h, 1) relative to the cell centre."""

    x0: int
    y0: int
    xx: F32
    yy: F32

    @property
    def shape(self) -> tuple[int, int]:
        return self.yy.shape[0], self.xx.shape[1]


def _grid(cx: float, cy: float, half: float) -> _Grid:
    x0, y0, n = math.floor(cx - half), math.floor(cy - half), math.ceil(2 * half) + 1
    xs = np.arange(x0, x0 + n, dtype=np.float32) - np.float32(cx)
    ys = np.arange(y0, y0 + n, dtype=np.float32) - np.float32(cy)
    return _Grid(x0, y0, xs[None, :], ys[:, None])


def _harmonics(rng: np.random.Generator, amplitude: float, orders: int = 4) -> F64:
    """Random contour harmonics: rows of (order, amplitude, phase) for orders 2..orders+1."""
    k = np.arange(2, orders + 2, dtype=np.float64)
    amps = amplitude * rng.uniform(0.3, 1.0, k.size) / np.sqrt(k - 1)
    return np.stack([k, amps, rng.uniform(0, 2 * np.pi, k.size)], axis=1)


_ROUND = np.zeros((0, 3))  # no harmonics


def _blob_sdf(
    g: _Grid, centre: tuple[float, float], axes: tuple[float, float], angle: float, harm: F64
) -> F32:
    """Approximate signed distance (px, negative inside) of a wobbly ellipse.

    Args:
        g: patch grid.
        centre: ellipse centre relative to the cell centre.
        axes: semi-axes; the wobbly contour never leaves this ellipse.
        angle: orientation of the first axis (radians).
        harm: radial harmonics, ``r(theta) = 1 + sum a_k cos(k theta + p_k)``.
    """
    bound = 1.0 + float(np.abs(harm[:, 1]).sum())
    a, b = axes[0] / bound, axes[1] / bound
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = g.xx - np.float32(centre[0]), g.yy - np.float32(centre[1])
    u, v = (dx * c + dy * s) / np.float32(a), (dy * c - dx * s) / np.float32(b)
    theta = np.arctan2(v, u)
    radius = np.ones_like(theta)
    for order, amp, phase in harm:
        radius += np.float32(amp) * np.cos(np.float32(order) * theta + np.float32(phase))
    return _f32((np.hypot(u, v) - radius) * np.float32(math.sqrt(a * b)))


def _capsule_sdf(g: _Grid, p0: tuple[float, float], p1: tuple[float, float], rad: float) -> F32:
    """Signed distance (px) of the segment p0-p1 thickened by ``rad``."""
    ex, ey = p1[0] - p0[0], p1[1] - p0[1]
    px, py = g.xx - np.float32(p0[0]), g.yy - np.float32(p0[1])
    t = np.clip((px * ex + py * ey) / max(ex * ex + ey * ey, 1e-6), 0.0, 1.0)
    return _f32(np.hypot(px - t * ex, py - t * ey) - np.float32(rad))


def _coverage(sdf: F32, edge_px: float = 1.0) -> F32:
    """Anti-aliased inside fraction: a linear ramp ``edge_px`` wide across the contour."""
    return _f32(np.clip(0.5 - sdf / np.float32(edge_px), 0.0, 1.0))


def _dome(sdf: F32, ramp_px: float) -> F32:
    """Height 0..1 rising parabolically over ``ramp_px`` inside the contour."""
    t = np.clip((0.5 - sdf) / np.float32(ramp_px), 0.0, 1.0)
    return _f32(t * (2.0 - t))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> F32:
    """Unit-variance Gaussian noise low-passed at ``sigma`` px."""
    noise = _blur(rng.standard_normal(shape, dtype=np.float32), sigma)
    return _f32(noise / max(float(noise.std()), 1e-6))


def _granules(rng: np.random.Generator, support: F32, sigma_px: float, fill: float) -> F32:
    """Round granules (0..1) scattered over ``support`` to cover about ``fill`` of it."""
    count = int(fill * float(support.sum()) / (math.pi * (1.5 * sigma_px) ** 2))
    if count == 0:
        return np.zeros_like(support)
    flat = support.ravel().astype(np.float64)
    impulses = np.zeros(flat.size, np.float32)
    picks = rng.choice(flat.size, size=count, p=flat / flat.sum())
    np.add.at(impulses, picks, rng.uniform(0.6, 1.4, count).astype(np.float32))
    blobs = _blur(impulses.reshape(support.shape), sigma_px)
    return _f32(1.0 - np.exp(-2.0 * np.pi * sigma_px**2 * blobs))


# ----------------------------------------------------------------------------- nuclei

# Lobed nuclei: (fewest lobes, most lobes, lobe size / cell radius, arc in radians).
_LOBES: Mapping[str, tuple[int, int, float, float]] = MappingProxyType(
    {
        CellClass.SNE: (3, 5, 0.31, 4.0),
        CellClass.EO: (2, 2, 0.36, 2.0),
        CellClass.BA: (2, 3, 0.36, 1.6),
    }
)
_NucleusShape = Callable[[np.random.Generator, "_Grid", float], F32]


def _nucleus_lobed(rng: np.random.Generator, g: _Grid, r: float, cls: str) -> F32:
    """Lobes along an arc, joined by thin chromatin strands (SNE, EO, BA)."""
    fewest, most, lobe, arc = _LOBES[cls]
    ring, base = r * rng.uniform(0.3, 0.42), rng.uniform(0, 2 * np.pi)
    steps = np.linspace(-0.5, 0.5, rng.integers(fewest, most + 1))
    angles = base + arc * rng.uniform(0.85, 1.1) * steps
    xy = ring * np.stack([np.cos(angles), np.sin(angles)], 1) + rng.normal(
        0, 0.04 * r, (steps.size, 2)
    )
    centres = [(float(x), float(y)) for x, y in xy]
    sdf = np.full(g.shape, np.inf, np.float32)
    for centre, t in zip(centres, angles, strict=True):
        a = r * lobe * rng.uniform(0.85, 1.15)
        axes, tilt = (a, a * rng.uniform(0.6, 0.85)), t + rng.normal(0, 0.4)
        sdf = np.minimum(sdf, _blob_sdf(g, centre, axes, tilt, _harmonics(rng, 0.06)))
    for p0, p1 in itertools.pairwise(centres):
        sdf = np.minimum(sdf, _capsule_sdf(g, p0, p1, max(1.2, 0.022 * r)))
    return sdf


def _nucleus_band(rng: np.random.Generator, g: _Grid, r: float) -> F32:
    """Band neutrophil: one unsegmented, evenly thick C-shaped band."""
    ring, base = r * rng.uniform(0.36, 0.46), rng.uniform(0, 2 * np.pi)
    angles = base + rng.uniform(2.6, 3.6) * np.linspace(-0.5, 0.5, 7)
    thick = r * rng.uniform(0.15, 0.2)
    points = [(ring * math.cos(a), ring * math.sin(a)) for a in angles]
    sdf = np.full(g.shape, np.inf, np.float32)
    for p0, p1 in itertools.pairwise(points):
        sdf = np.minimum(sdf, _capsule_sdf(g, p0, p1, thick))
    return sdf


def _nucleus_round(
    rng: np.random.Generator,
    g: _Grid,
    r: float,
    size: tuple[float, float] = (0.76, 0.86),
    offset: tuple[float, float] = (0.0, 0.08),
) -> F32:
    """A round/oval nucleus of ``size`` x r, off-centre by ``offset`` x r (lymphocyte:
    large, leaving a thin cytoplasm rim)."""
    a, off, ang = r * rng.uniform(*size), r * rng.uniform(*offset), rng.uniform(0, 6.3)
    centre, axes = (off * math.cos(ang), off * math.sin(ang)), (a, a * rng.uniform(0.85, 1.0))
    return _blob_sdf(g, centre, axes, rng.uniform(0, np.pi), _harmonics(rng, 0.04))


def _nucleus_kidney(
    rng: np.random.Generator, g: _Grid, r: float, size: tuple[float, float] = (0.5, 0.62)
) -> F32:
    """Monocyte: a bean-shaped nucleus, an ellipse with a notch in one long side."""
    a, ang, off = r * rng.uniform(*size), rng.uniform(0, 6.3), r * rng.uniform(0.05, 0.15)
    b, normal = a * rng.uniform(0.62, 0.78), (-math.sin(ang), math.cos(ang))
    body = _blob_sdf(g, (off * normal[0], off * normal[1]), (a, b), ang, _harmonics(rng, 0.05))
    depth = off + b * rng.uniform(0.95, 1.2)
    notch = _blob_sdf(g, (depth * normal[0], depth * normal[1]), (0.9 * b, 0.65 * b), ang, _ROUND)
    return _f32(np.maximum(body, -notch))


def _nucleus_cleaved(rng: np.random.Generator, g: _Grid, r: float) -> F32:
    """Abnormal lymphoid cell: a large round nucleus with a narrow cleft into it."""
    body = _nucleus_round(rng, g, r, size=(0.68, 0.8), offset=(0.0, 0.1))
    ang, depth = rng.uniform(0, 6.3), r * rng.uniform(0.6, 0.75)
    centre = (depth * math.cos(ang), depth * math.sin(ang))
    cleft = _blob_sdf(g, centre, (0.4 * r, 0.07 * r), ang, _ROUND)
    return _f32(np.maximum(body, -cleft))


def _nucleoli(rng: np.random.Generator, g: _Grid, nucleus: F32, r: float, count: int) -> F32:
    """``count`` small round nucleoli (0..1) inside the nucleus."""
    inside = np.flatnonzero(nucleus.ravel() > 0.95)
    if count == 0 or inside.size == 0:
        return np.zeros_like(nucleus)
    sdf = np.full(g.shape, np.inf, np.float32)
    for pick in rng.choice(inside, size=count):
        y, x = divmod(int(pick), g.shape[1])
        size = r * rng.uniform(0.07, 0.11)
        centre = (float(g.xx[0, x]), float(g.yy[y, 0]))
        sdf = np.minimum(sdf, _blob_sdf(g, centre, (size, size * 0.85), 0.0, _ROUND))
    return _f32(_coverage(sdf, 1.0) * nucleus)


@dataclass(frozen=True)
class _GranuleStyle:
    od: F32  # OD at full granule density
    sigma_um: float  # granule radius (Gaussian sigma)
    fill: float  # covered fraction of the support
    on_nucleus: float  # 0: cytoplasm only, 1: overlying the nucleus as much
    dn: float  # refractive index step against the cytoplasm


@dataclass(frozen=True)
class _Style:
    """Per-class look of a nucleated white cell."""

    cytoplasm_od: F32
    nucleus_density: float  # Romanowsky-complex density of the chromatin
    chromatin: tuple[float, float]  # texture (sigma µm, relative amplitude)
    granules: _GranuleStyle | None = None
    nucleus_edge_px: float = 1.0  # wide: poorly defined nucleus
    vacuoles: int = 0
    nucleoli: tuple[int, int] = (0, 0)  # inclusive range of their count
    halo: float = 0.0  # perinuclear clear zone: share of the cytoplasm stain it lacks
    rim: float = 0.0  # peripheral basophilia: extra cytoplasm stain at the edge


def _style(cls: str, s: StainSet) -> _Style:
    """The look of a nucleated white cell of a healthy class under the stains ``s``."""
    if cls in (CellClass.SNE, "NE"):
        return _Style(
            0.21 * s.eosin,
            1.24,
            (0.2, 0.2),
            _GranuleStyle(0.05 * (s.complex + s.eosin), 0.07, 0.6, 0.0, 0.004),
        )
    if cls == CellClass.EO:
        return _Style(
            0.06 * (s.azure + s.eosin),
            1.1,
            (0.2, 0.15),
            _GranuleStyle(0.85 * s.eosin_granule, 0.17, 1.3, 0.25, 0.02),
        )
    if cls == CellClass.BA:
        return _Style(
            0.08 * s.eosin + 0.06 * s.azure,
            0.75,
            (0.25, 0.1),
            _GranuleStyle(2.2 * s.complex + 0.3 * s.azure, 0.2, 0.5, 1.0, 0.0005),
            nucleus_edge_px=6.0,
        )
    if cls == CellClass.LY:
        return _Style(0.32 * s.azure, 1.35, (0.3, 0.25))
    if cls == CellClass.MO:
        return _Style(
            0.2 * s.azure + 0.06 * s.eosin,
            0.85,
            (0.15, 0.18),
            _GranuleStyle(0.1 * s.complex, 0.05, 0.5, 0.0, 0.0),
            vacuoles=8,
        )
    raise ValueError(f"{cls} is not a nucleated white cell")  # fmt: skip


def _clinical_look(cls: str, s: StainSet, rng: np.random.Generator) -> tuple[_Style, _NucleusShape]:
    """Style and nucleus of a clinical class (thesis ch. 3.2)."""
    fine = _GranuleStyle(0.07 * (s.complex + s.eosin), 0.07, 0.7, 0.0, 0.004)
    if cls == "RLY":  # large; grey-blue cytoplasm darker at the edge; round/oval nucleus
        style = _Style(0.2 * s.azure, 1.05, (0.25, 0.2), nucleoli=(0, 2), rim=1.3)
        return style, lambda rng, g, r: _nucleus_round(rng, g, r, (0.38, 0.5), (0.1, 0.3))
    if cls == "BL":  # large nucleus, fine even chromatin, nucleoli; a little blue cytoplasm
        style = _Style(0.3 * s.azure, 0.85, (0.1, 0.08), nucleoli=(1, 4), halo=0.6)
        return style, lambda rng, g, r: _nucleus_round(rng, g, r, (0.72, 0.82), (0.0, 0.1))
    if cls == "ALC":  # cleaved nucleus, looser chromatin; scant light-blue cytoplasm
        style = _Style(
            0.18 * s.azure,
            1.15,
            (0.35, 0.3),
            _GranuleStyle(0.3 * s.complex, 0.08, 0.04, 0.0, 0.002),
        )
        return style, _nucleus_cleaved
    if cls == "ERB":  # small, very dense round nucleus; pink cytoplasm like a red cell's
        style = _Style(0.9 * s.red_cell + 0.04 * s.azure, 2.3, (0.3, 0.2), nucleus_edge_px=0.7)
        return style, lambda rng, g, r: _nucleus_round(rng, g, r, (0.42, 0.55), (0.0, 0.15))
    if cls == "IG":  # promyelocyte, myelocyte or metamyelocyte
        form = int(rng.integers(3))
        if form == 0:  # eccentric oval nucleus, nucleoli; pale blue with coarse violet granules
            azurophil = _GranuleStyle(0.5 * s.complex + 0.1 * s.azure, 0.12, 0.6, 0.4, 0.004)
            style = _Style(
                0.2 * s.azure + 0.04 * s.eosin, 0.95, (0.2, 0.15), azurophil, nucleoli=(2, 4)
            )
            return style, lambda rng, g, r: _nucleus_round(rng, g, r, (0.5, 0.62), (0.18, 0.3))
        if form == 1:  # eccentric round nucleus; pinkish to bluish with fine granules
            style = _Style(0.15 * s.eosin + 0.08 * s.azure, 1.15, (0.2, 0.2), fine)
            return style, lambda rng, g, r: _nucleus_round(rng, g, r, (0.48, 0.6), (0.15, 0.28))
        style = _Style(0.2 * s.eosin, 1.2, (0.2, 0.2), fine)  # indented nucleus
        return style, lambda rng, g, r: _nucleus_kidney(rng, g, r, (0.5, 0.6))
    if cls == "NE":  # segmented or, one in seven, band
        if rng.random() < 1 / 7:
            return _style(cls, s), _nucleus_band
        return _style(cls, s), lambda rng, g, r: _nucleus_lobed(rng, g, r, CellClass.SNE)
    raise ValueError(f"{cls} is not a clinical nucleated cell")


def _look(cls: str, s: StainSet, rng: np.random.Generator) -> tuple[_Style, _NucleusShape]:
    if cls in _LOBES:
        return _style(cls, s), lambda rng, g, r: _nucleus_lobed(rng, g, r, cls)
    if cls == CellClass.LY:
        return _style(cls, s), _nucleus_round
    if cls == CellClass.MO:
        return _style(cls, s), _nucleus_kidney
    return _clinical_look(cls, s, rng)


# ----------------------------------------------------------------------------- cells


def _labels(cytoplasm: F32, nucleus: F32) -> U8:
    label = np.where(cytoplasm > 0.5, MaskClass.CYTOPLASM, MaskClass.BACKGROUND)
    return np.where(nucleus > 0.5, MaskClass.NUCLEUS, label).astype(np.uint8)


def _layers(
    opl: F32, od: F32, label: U8, gran_opl: F32 | None = None, gran_od: F32 | None = None
) -> CellLayers:
    gran_opl = np.zeros_like(opl) if gran_opl is None else gran_opl
    gran_od = np.zeros_like(od) if gran_od is None else gran_od
    return CellLayers(_f32(opl + gran_opl), _f32(od + gran_od), label, gran_opl, gran_od)


def _vacuoles(rng: np.random.Generator, g: _Grid, r: float, n: int) -> F32:
    sdf = np.full(g.shape, np.inf, np.float32)
    for _ in range(n):
        rad, ang = r * rng.uniform(0.35, 0.85), rng.uniform(0, 6.3)
        size, centre = r * rng.uniform(0.03, 0.07), (rad * math.cos(ang), rad * math.sin(ang))
        sdf = np.minimum(sdf, _blob_sdf(g, centre, (size, size), 0.0, _ROUND))
    return _coverage(sdf, 1.5)


def _render_leukocyte(
    rng: np.random.Generator, cls: str, g: _Grid, r: float, px_um: float, s: StainSet
) -> CellLayers:
    """A nucleated cell (every class but ART and SMU): dome-shaped body, nucleus, granules."""
    style, shape = _look(cls, s, rng)
    axes = (r, r * rng.uniform(0.88, 1.0))
    body = _blob_sdf(g, (0.0, 0.0), axes, rng.uniform(0, np.pi), _harmonics(rng, 0.03))
    nuc_sdf = shape(rng, g, r)
    cyto = _coverage(body)
    nucleus = _coverage(nuc_sdf, style.nucleus_edge_px) * cyto
    texture = _smooth_noise(rng, g.shape, style.chromatin[0] / px_um)
    chromatin = 1.0 + style.chromatin[1] * np.clip(texture, -2.5, 2.5)
    vac = _vacuoles(rng, g, r, style.vacuoles) * (1.0 - nucleus)
    plain = cyto * (1.0 - nucleus) * (1.0 - 0.85 * vac) * (0.55 + 0.45 * _dome(body, 0.1 * r))
    chroma = nucleus * style.nucleus_density * chromatin * (0.8 + 0.2 * _dome(nuc_sdf, 0.08 * r))
    h_nuc = 0.9 * _dome(nuc_sdf, max(0.06 * r, 2 * style.nucleus_edge_px)) * nucleus
    h_nuc *= 0.7 + 0.3 * chromatin  # denser chromatin, higher index
    od_extra = np.zeros((*g.shape, 3), np.float32)
    if style.halo:  # a paler zone around the nucleus
        plain *= 1.0 - style.halo * _coverage(nuc_sdf - np.float32(0.12 * r), 3.0) * (1 - nucleus)
    if style.rim:  # darker towards the cell's edge
        plain *= 1.0 + style.rim * (1.0 - _dome(body, 0.3 * r))
    if (most := style.nucleoli[1]) > 0:
        count = int(rng.integers(style.nucleoli[0], most + 1))
        spots = _nucleoli(rng, g, nucleus, r, count)
        chroma *= 1.0 - 0.6 * spots  # paler than the chromatin, a little blue
        od_extra += spots[..., None] * (0.25 * s.azure)
        h_nuc += 0.35 * spots  # refractile: visible in DIC
    od = plain[..., None] * style.cytoplasm_od + chroma[..., None] * s.complex + od_extra
    h_cyto = 1.6 * _dome(body, 0.08 * r) * (1.0 - 0.6 * vac)  # µm
    opl = _f32(h_cyto * (_N_CYTOPLASM - _N_MEDIUM) + h_nuc * (_N_NUCLEUS - _N_CYTOPLASM))
    label = _labels(cyto, nucleus)
    if (gs := style.granules) is None:
        return _layers(opl, od, label)
    support = _f32(cyto * (1.0 - nucleus * (1.0 - gs.on_nucleus)) * (1.0 - vac))
    gran = _granules(rng, support, gs.sigma_um / px_um, gs.fill)
    return _layers(opl, od, label, gran * np.float32(0.5 * gs.dn), gran[..., None] * gs.od)


def _render_artifact(
    rng: np.random.Generator, g: _Grid, r: float, px_um: float, s: StainSet
) -> CellLayers:
    """Debris: a refractile irregular clump of 1-3 wobbly blobs with a dense core."""
    sdf = np.full(g.shape, np.inf, np.float32)
    for i in range(int(rng.integers(1, 4))):
        size = r * (rng.uniform(0.75, 1.0) if i == 0 else rng.uniform(0.3, 0.55))
        off, ang = (0.0 if i == 0 else r - size), rng.uniform(0, 6.3)
        centre = (off * math.cos(ang), off * math.sin(ang))
        axes = (size, size * rng.uniform(0.5, 0.9))
        sdf = np.minimum(sdf, _blob_sdf(g, centre, axes, ang, _harmonics(rng, 0.35, 5)))
    body = _coverage(sdf)
    core = _coverage(sdf + np.float32(0.35 * r), 2.0) * body
    density = body * (0.5 + 0.7 * core) * (1.0 + 0.3 * _smooth_noise(rng, g.shape, 0.15 / px_um))
    od = density[..., None] * (0.55 * s.complex + 0.25 * s.eosin)
    opl = 0.06 * _dome(sdf, 0.1 * r) * (1.0 + 0.5 * core)  # 1.2 µm x (n - n_medium = 0.05)
    return _layers(opl, od, _labels(body, core))


def _render_smudge(
    rng: np.random.Generator, g: _Grid, r: float, px_um: float, s: StainSet
) -> CellLayers:
    """Smudge cell: smeared, streaky nuclear material without a membrane."""
    angle, axes = rng.uniform(0, np.pi), (r, r * rng.uniform(0.45, 0.75))
    outline = _blob_sdf(g, (0.0, 0.0), axes, angle, _harmonics(rng, 0.2, 5))
    envelope = _blur(_coverage(outline), 0.12 * r)
    streaks = _blur(rng.standard_normal(g.shape, dtype=np.float32), 0.35 / px_um, 0.12 / px_um)
    (h, w), degrees = g.shape, -math.degrees(angle)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    streaks = _f32(cv2.warpAffine(streaks, rot, (w, h), borderMode=cv2.BORDER_REFLECT))
    blotches = _smooth_noise(rng, g.shape, 0.4 / px_um)
    density = envelope * np.clip(0.6 + 0.2 * streaks / streaks.std() + 0.3 * blotches, 0.05, 1.5)
    od = density[..., None] * (0.75 * s.complex + 0.05 * s.azure)
    opl = 0.4 * density * (_N_NUCLEUS - _N_MEDIUM)  # a thin smear, 0.4 µm
    return _layers(opl, od, _labels(2.5 * envelope, 1.1 * envelope))


def _render_wbc(
    rng: np.random.Generator, cls: str, disc: _Disc, px_um: float, s: StainSet
) -> tuple[_Grid, CellLayers]:
    g, r = _grid(disc.x, disc.y, disc.radius + 6), disc.radius
    if cls == CellClass.ART:
        return g, _render_artifact(rng, g, r, px_um, s)
    if cls == CellClass.SMU:
        return g, _render_smudge(rng, g, r, px_um, s)
    return g, _render_leukocyte(rng, cls, g, r, px_um, s)


def render_cell(cell_class: str, config: PhantomConfig, rng: np.random.Generator) -> CellLayers:
    """Render one WBC (or ART/SMU) of a random size of its class, centred on its own patch."""
    d = _draw_diameter(cell_class, config, rng)
    disc = _Disc(d / 2 + 8, d / 2 + 8, d)
    return _render_wbc(rng, cell_class, disc, config.pixel_um, config.stain.stains())[1]


def _render_rbc(
    rng: np.random.Generator, disc: _Disc, red_cell_od: F32
) -> tuple[_Grid, CellLayers]:
    """A biconcave red cell (Evans-Fung profile), slightly elliptic; its OD follows thickness."""
    r, ratio = disc.radius, rng.uniform(0.9, 1.0)
    g = _grid(disc.x, disc.y, r * 1.08 + 4)
    axes = (r / math.sqrt(ratio), r * math.sqrt(ratio))
    sdf = _blob_sdf(g, (0.0, 0.0), axes, rng.uniform(0, np.pi), _harmonics(rng, 0.015, 3))
    rho2 = np.clip(1.0 + sdf / np.float32(r), 0.0, 1.0) ** 2
    c0, c2, c4 = _RBC_COEF
    profile = np.sqrt(1.0 - rho2) * (c0 * rng.uniform(0.6, 1.2) + c2 * rho2 + c4 * rho2 * rho2)
    h = _blur(_f32(profile * _RBC_FLATTEN), 0.7)
    label = np.where(sdf < 0, MaskClass.RED_CELL, MaskClass.BACKGROUND).astype(np.uint8)
    od = (h / np.float32(_RBC_OD_REF_UM))[..., None] * red_cell_od
    return g, _layers(h * np.float32(_N_RED_CELL - _N_MEDIUM), od, label)


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Disc:
    x: float
    y: float
    diameter: float

    @property
    def radius(self) -> float:
        return self.diameter / 2


@dataclass(frozen=True)
class _Wbc:
    disc: _Disc
    cell_class: str
    touch: bool  # placed to touch a neighbour


def _draw_diameter(cls: str, config: PhantomConfig, rng: np.random.Generator) -> float:
    lo, hi = _DIAMETER_UM[cls]
    return float(rng.uniform(lo, hi)) / config.pixel_um


def _rbc_diameter(config: PhantomConfig, rng: np.random.Generator) -> float:
    jitter = config.rbc_diameter_jitter
    return config.rbc_diameter_um / config.pixel_um * float(rng.uniform(1 - jitter, 1 + jitter))


def _clear(x: float, y: float, discs: list[_Disc], spacing: F64) -> bool:
    """Whether (x, y) is at least ``spacing[i]`` away from the centre of ``discs[i]``."""
    xy = np.array([(d.x, d.y) for d in discs]).reshape(-1, 2)
    return bool(np.all(np.hypot(xy[:, 0] - x, xy[:, 1] - y) >= spacing))


def _wbc_centre(
    config: PhantomConfig, rng: np.random.Generator, m: int, r: float, border: bool
) -> tuple[float, float]:
    """A centre with the cell fully inside the field, or cut by one field edge."""
    w, h = config.width, config.height
    x = m + rng.uniform(min(r + _GAP_PX, w / 2), max(w - r - _GAP_PX, w / 2))
    y = m + rng.uniform(min(r + _GAP_PX, h / 2), max(h - r - _GAP_PX, h / 2))
    if border:
        inset, edge = r * rng.uniform(-0.3, 0.6), int(rng.integers(4))
        x = (m + inset, m + w - inset, x, x)[edge]
        y = (y, y, m + inset, m + h - inset)[edge]
    return float(x), float(y)


def _place_wbcs(config: PhantomConfig, rng: np.random.Generator, m: int) -> list[_Wbc]:
    """WBCs in the field (world frame, margin ``m``); those not meant to touch keep a gap."""
    n = int(rng.integers(config.wbc_per_field[0], config.wbc_per_field[1] + 1))
    placed: list[_Wbc] = []
    for i, pick in enumerate(rng.choice(len(_CLASSES), size=n, p=config.class_probabilities())):
        cls = _CLASSES[int(pick)]
        d = _draw_diameter(cls, config, rng)
        border = i == 0 and rng.random() < config.border_cell_probability
        touch = bool(rng.random() < config.touching_probability)
        discs = [p.disc for p in placed]
        spacing = np.array([o.radius for o in discs]) + d / 2 + 4 * _GAP_PX
        x, y = _wbc_centre(config, rng, m, d / 2, border)
        for _ in range(_TRIES):
            if touch and discs and rng.random() < 0.5:  # next to another WBC, inside the field
                other = discs[int(rng.integers(len(discs)))]
                ang, dist = rng.uniform(0, 6.3), 0.88 * (other.radius + d / 2)
                x, y = other.x + dist * math.cos(ang), other.y + dist * math.sin(ang)
                if d / 2 <= min(x - m, y - m, m + config.width - x, m + config.height - y):
                    break
            elif _clear(x, y, discs, spacing):
                break
            x, y = _wbc_centre(config, rng, m, d / 2, border)
        placed.append(_Wbc(_Disc(float(x), float(y), d), cls, touch))
    return placed


def _place_rbcs(
    config: PhantomConfig, rng: np.random.Generator, world: tuple[int, int], wbcs: list[_Wbc]
) -> list[_Disc]:
    """Red cells next to each WBC (the first touching it if wanted), then a monolayer."""
    rbcs: list[_Disc] = []

    def add(disc: _Disc, touching: _Disc | None = None) -> bool:
        others = [w.disc for w in wbcs if w.disc is not touching]
        wbc_gap = np.array([w.radius for w in others]) + 0.55 * disc.diameter + _GAP_PX
        rbc_gap = (np.array([o.radius for o in rbcs]) + disc.radius) * (1 - config.rbc_max_overlap)
        fits = _clear(disc.x, disc.y, others, wbc_gap) and _clear(disc.x, disc.y, rbcs, rbc_gap)
        if fits:
            rbcs.append(disc)
        return fits

    for wbc in wbcs:
        for j in range(int(rng.integers(config.rbc_per_wbc[0], config.rbc_per_wbc[1] + 1))):
            touch = j == 0 and wbc.touch
            for _ in range(_TRIES):
                d, ang = _rbc_diameter(config, rng), rng.uniform(0, 6.3)
                dist = wbc.disc.radius + 0.55 * d + 6 + rng.uniform(0, 2 * d)
                if touch:  # overlap a little: the drawn contour lies inside the disc
                    dist = (0.6 if wbc.cell_class == CellClass.ART else 0.88) * wbc.disc.radius
                    dist += 0.45 * d
                x, y = wbc.disc.x + dist * math.cos(ang), wbc.disc.y + dist * math.sin(ang)
                if add(_Disc(x, y, d), wbc.disc if touch else None):
                    break
    rbc_area = math.pi / 4 * (config.rbc_diameter_um / config.pixel_um) ** 2
    total = int(config.rbc_coverage * world[0] * world[1] / rbc_area)
    stacked = int(config.smear.rouleaux * total)
    target = total - stacked
    for _ in range(6 * max(0, target - len(rbcs))):
        if len(rbcs) >= target:
            break
        d = _rbc_diameter(config, rng)
        add(_Disc(float(rng.uniform(0, world[0])), float(rng.uniform(0, world[1])), d))
    if stacked:
        rbcs.extend(_rouleaux(config, rng, world, wbcs, stacked))
    return rbcs


def _rouleaux(
    config: PhantomConfig,
    rng: np.random.Generator,
    world: tuple[int, int],
    wbcs: list[_Wbc],
    count: int,
) -> list[_Disc]:
    """Stacks of 3-8 red cells like rolls of coins, each overlapping the last by 55-75%."""
    stacks: list[_Disc] = []
    for _ in range(6 * count):
        if len(stacks) >= count:
            break
        x, y = float(rng.uniform(0, world[0])), float(rng.uniform(0, world[1]))
        ang = rng.uniform(0, np.pi)
        for _ in range(int(rng.integers(3, 9))):
            d = _rbc_diameter(config, rng)
            gap = np.array([w.disc.radius for w in wbcs]) + 0.55 * d + _GAP_PX
            if not _clear(x, y, [w.disc for w in wbcs], gap):
                break
            stacks.append(_Disc(x, y, d))
            step = d * rng.uniform(0.25, 0.45)
            ang += rng.normal(0, 0.15)
            x, y = x + step * math.cos(ang), y + step * math.sin(ang)
    return stacks


# ----------------------------------------------------------------------------- smear objects


def _render_platelet(
    rng: np.random.Generator, g: _Grid, r: float, px_um: float, s: StainSet
) -> CellLayers:
    """A platelet: pale blue hyalomere around a purple granular centre (label: background)."""
    axes = (r, r * rng.uniform(0.7, 1.0))
    sdf = _blob_sdf(g, (0.0, 0.0), axes, rng.uniform(0, np.pi), _harmonics(rng, 0.15, 4))
    body = _coverage(sdf)
    centre = _coverage(sdf + np.float32(0.35 * r), 1.5) * body
    grains = _granules(rng, centre, max(0.12 / px_um, 0.6), 0.8)
    od = body[..., None] * (0.12 * s.azure) + (0.35 * centre + 0.35 * grains)[..., None] * s.complex
    opl = 0.8 * _dome(sdf, 0.4 * r) * (1.54 - _N_MEDIUM) + 0.01 * grains  # ~1 µm thick
    return _layers(_f32(opl), _f32(od), np.zeros(g.shape, np.uint8))


def _render_debris(
    rng: np.random.Generator, g: _Grid, r: float, s: StainSet, precipitate: bool
) -> CellLayers:
    """Dust (refractile, grey) or a stain precipitate dot (dark purple, flat)."""
    axes = (r, r * rng.uniform(0.4, 1.0))
    sdf = _blob_sdf(g, (0.0, 0.0), axes, rng.uniform(0, np.pi), _harmonics(rng, 0.3, 5))
    body = _coverage(sdf)
    if precipitate:
        od = body[..., None] * (1.2 * s.complex)
        opl = 0.01 * body
    else:
        od = body[..., None] * _f32([0.25, 0.25, 0.25]) * np.float32(rng.uniform(0.5, 1.5))
        opl = 0.06 * _dome(sdf, 0.5 * r)  # 0.6 µm of n - n_medium = 0.1: refractile
    return _layers(_f32(opl), _f32(od), np.zeros(g.shape, np.uint8))


def _free_spot(
    rng: np.random.Generator, world: tuple[int, int], wbcs: list[_Wbc], radius: float
) -> tuple[float, float] | None:
    """A point of the world at least ``radius`` + a gap away from every white cell."""
    for _ in range(_TRIES):
        x, y = float(rng.uniform(0, world[0])), float(rng.uniform(0, world[1]))
        gap = np.array([w.disc.radius for w in wbcs]) + radius + 2 * _GAP_PX
        if _clear(x, y, [w.disc for w in wbcs], gap):
            return x, y
    return None


def _count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1)) if bounds[1] else 0


def _add_smear_objects(
    scene: _Scene, config: PhantomConfig, rng: np.random.Generator, wbcs: list[_Wbc], m: int
) -> list[tuple[SmearObjectKind, Box]]:
    """Platelets, platelet clumps, debris and stain precipitate, clear of the white cells.

    Returns each object's kind and its box in the DIC frame (unclipped).
    """
    smear, px, stains = config.smear, config.pixel_um, config.stain.stains()
    world = (scene.opl.shape[1], scene.opl.shape[0])
    placed: list[tuple[SmearObjectKind, Box]] = []

    def box(x: float, y: float, r: float) -> Box:
        return (
            math.floor(x - r) - m,
            math.floor(y - r) - m,
            math.ceil(x + r) - m,
            math.ceil(y + r) - m,
        )

    for _ in range(_count(rng, smear.platelets)):
        r = float(rng.uniform(0.75, 1.5)) / px  # 1.5-3 µm across
        if (spot := _free_spot(rng, world, wbcs, r)) is not None:
            g = _grid(*spot, r + 4)
            scene.add(g, _render_platelet(rng, g, r, px, stains))
            placed.append((SmearObjectKind.PLATELET, box(*spot, r)))
    for _ in range(_count(rng, smear.platelet_clumps)):
        spread = float(rng.uniform(2.0, 4.5)) / px  # clump radius 2-4.5 µm
        if (spot := _free_spot(rng, world, wbcs, spread + 1.5 / px)) is None:
            continue
        parts = []
        for _ in range(int(rng.integers(5, 16))):
            r = float(rng.uniform(0.7, 1.4)) / px
            ang, dist = rng.uniform(0, 2 * np.pi), spread * math.sqrt(rng.uniform(0, 1))
            x, y = spot[0] + dist * math.cos(ang), spot[1] + dist * math.sin(ang)
            g = _grid(x, y, r + 4)
            scene.add(g, _render_platelet(rng, g, r, px, stains))
            parts.append(box(x, y, r))
        hull = (
            min(p[0] for p in parts),
            min(p[1] for p in parts),
            max(p[2] for p in parts),
            max(p[3] for p in parts),
        )
        placed.append((SmearObjectKind.PLATELET_CLUMP, hull))
    for bounds, size_um, kind in (
        (smear.debris, (0.25, 1.25), SmearObjectKind.DEBRIS),
        (smear.precipitate, (0.15, 0.5), SmearObjectKind.PRECIPITATE),
    ):
        for _ in range(_count(rng, bounds)):
            r = float(rng.uniform(*size_um)) / px
            if (spot := _free_spot(rng, world, wbcs, r)) is not None:
                g = _grid(*spot, r + 4)
                precipitate = kind is SmearObjectKind.PRECIPITATE
                scene.add(g, _render_debris(rng, g, r, stains, precipitate))
                placed.append((kind, box(*spot, r)))
    return placed


# ----------------------------------------------------------------------------- scene


class _Scene:
    """World-frame layers that cell patches are added into."""

    def __init__(self, width: int, height: int) -> None:
        self.opl = np.zeros((height, width), np.float32)
        self.od = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.uint8)
        self.count = np.zeros((height, width), np.uint8)  # cells covering each pixel

    def _window(self, g: _Grid) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """(world, patch) slices of the overlap of a patch with the scene (maybe empty)."""
        (h, w), (sh, sw) = g.shape, self.opl.shape
        x0, y0 = max(g.x0, 0), max(g.y0, 0)
        x1, y1 = max(min(g.x0 + w, sw), x0), max(min(g.y0 + h, sh), y0)
        local = (slice(y0 - g.y0, y1 - g.y0), slice(x0 - g.x0, x1 - g.x0))
        return (slice(y0, y1), slice(x0, x1)), local

    def add(self, g: _Grid, cell: CellLayers) -> None:
        world, local = self._window(g)
        self.opl[world] += cell.opl[local]
        self.od[world] += cell.od[local]
        np.maximum(self.label[world], cell.label[local], out=self.label[world])
        self.count[world] += (cell.label[local] > 0).astype(np.uint8)

    def touches_other(self, g: _Grid, cell: CellLayers) -> bool:
        """Whether another cell lies within 2 px of this (already added) cell."""
        world, local = self._window(g)
        own = (cell.label[local] > 0).astype(np.uint8)
        if own.size == 0:
            return False
        near = cv2.dilate(own, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
        return bool(np.any(self.count[world][near] > own[near]))


# ----------------------------------------------------------------------------- optics


def _shear_kernel(config: PhantomConfig) -> F32:
    """Correlation kernel giving ``OPL(x + s/2) - OPL(x - s/2)`` with bilinear sampling."""
    half, ang = 0.5 * config.shear_um / config.pixel_um, math.radians(config.shear_angle_deg)
    c = math.ceil(half) + 1
    kernel = np.zeros((2 * c + 1, 2 * c + 1), np.float32)
    for sign in (1.0, -1.0):
        px, py = c + sign * half * math.cos(ang), c + sign * half * math.sin(ang)
        ix, iy = math.floor(px), math.floor(py)
        fx, fy = px - ix, py - iy
        kernel[iy : iy + 2, ix : ix + 2] += sign * np.outer([1 - fy, fy], [1 - fx, fx])
    return kernel


def dic_from_opl(
    opl: F32,
    config: PhantomConfig,
    rng: np.random.Generator | None = None,
    flat: F32 | None = None,
) -> U16:
    """DIC image (uint16) of an OPL map in µm; shot noise only when ``rng`` is given.

    The background (no phase gradient) lands at ``dic_peak_level * (1 - cos(bias)) / 2``
    (scaled to the camera's bit depth and the exposure); ``flat`` is the relative
    illumination of the lamp over the image, the prism sign flips the shear.
    """
    kernel = _shear_kernel(config)
    if config.prism_sign < 0:
        kernel = -kernel
    diff = _f32(cv2.filter2D(_f32(opl), cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE))
    phase = np.float32(config.dic_bias_rad) + diff * np.float32(2 * math.pi / config.wavelength_um)
    intensity = _f32(1.0 - np.cos(phase))  # in units of I0
    if config.defocus_sigma_px > 0:
        intensity = _blur(intensity, config.defocus_sigma_px)
    if flat is not None:
        intensity = _f32(intensity * flat)
    background = 1.0 - math.cos(config.dic_bias_rad)
    if rng is not None and config.dic_noise > 0:
        photons_per_i0 = config.dic_noise * config.illumination.exposure / config.camera.gain
        photons = rng.poisson(intensity * np.float32(photons_per_i0 / background))
        intensity = _f32(photons * (background / photons_per_i0))
    full_scale = 2**config.camera.dic_bit_depth - 1
    peak = config.dic_peak_level * config.illumination.exposure * full_scale / 65535
    dn = np.rint(intensity * np.float32(peak / 2))
    return np.asarray(np.clip(dn, 0, full_scale), dtype=np.uint16)


def brightfield_from_od(
    od: F32,
    config: PhantomConfig,
    rng: np.random.Generator | None = None,
    flat: F32 | None = None,
) -> U8 | U16:
    """Brightfield RGB of an OD map (HxWx3); noise only when ``rng`` is given.

    ``uint8`` for an 8-bit camera (JPEG-compressed when ``camera.jpeg_quality`` is set),
    else ``uint16`` holding the camera's bit depth. ``flat`` is the relative illumination.
    """
    if config.bf_blur_sigma_px > 0:
        od = _blur(od, config.bf_blur_sigma_px)
    light = config.illumination
    gains = light.colour_gain()
    lamp = [v * g * light.exposure for v, g in zip(config.bf_background, gains, strict=True)]
    intensity = np.exp(-od) * np.asarray(lamp, np.float32)
    if flat is not None:
        intensity *= flat[..., None]
    camera = config.camera
    if rng is not None and config.bf_noise_std > 0:
        noise = rng.standard_normal(od.shape, dtype=np.float32)
        intensity += noise * np.float32(config.bf_noise_std * math.sqrt(camera.gain))
    if camera.bf_bit_depth > 8:
        full_scale = 2**camera.bf_bit_depth - 1
        scaled = np.rint(intensity * np.float32(full_scale / 255))
        return np.asarray(np.clip(scaled, 0, full_scale), dtype=np.uint16)
    rgb = np.asarray(np.clip(np.rint(intensity), 0, 255), dtype=np.uint8)
    if camera.jpeg_quality is None:
        return rgb
    params = [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality]
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("JPEG decoding failed")
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


# ----------------------------------------------------------------------------- field


def random_affine(config: PhantomConfig, rng: np.random.Generator, width: int, height: int) -> F64:
    """Draw the 2x3 affine mapping brightfield pixels ``(u, v, 1)`` to DIC pixels ``(x, y)``.

    Args:
        config: limits ``max_shift_px`` (per axis), ``max_rotation_deg`` and ``max_scale``.
        rng: random source.
        width: field width; rotation and scale act about the field centre.
        height: field height.
    """
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    scale = 1.0 + rng.uniform(-config.max_scale, config.max_scale)
    shift = rng.uniform(-config.max_shift_px, config.max_shift_px, 2)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = scale * np.array([[cos, -sin], [sin, cos]])
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    return np.hstack([linear, (centre + shift - linear @ centre)[:, None]]).astype(np.float64)


def _margin(config: PhantomConfig) -> int:
    """World margin so that the warped brightfield and the sheared DIC stay inside the scene."""
    turn = 2 * math.sin(math.radians(config.max_rotation_deg) / 2)
    linear = config.max_scale + (1 + config.max_scale) * turn
    reach = config.max_shift_px + linear * 0.5 * math.hypot(config.width, config.height)
    blur = 4 * max(config.defocus_sigma_px, config.bf_blur_sigma_px)
    return math.ceil(reach + blur + config.shear_um / config.pixel_um + 8)


def _boxes(
    g: _Grid, cell: CellLayers, m: int, config: PhantomConfig, bf_to_dic: F64
) -> tuple[Box, Box, bool, float, float] | None:
    """(box_dic, box_bf, at_border, visible_dic, visible_bf) of a WBC patch, or None when
    it misses the DIC field.

    The brightfield box holds the whole cell's DIC box mapped into the brightfield frame,
    clipped to that frame (a cell cut by the DIC edge may run on in the brightfield); the
    visible shares count the cell's pixels inside each frame.
    """
    ys, xs = np.nonzero(cell.label >= MaskClass.CYTOPLASM)
    if xs.size == 0:
        return None
    x0, y0 = g.x0 - m + int(xs.min()), g.y0 - m + int(ys.min())
    x1, y1 = g.x0 - m + int(xs.max()) + 1, g.y0 - m + int(ys.max()) + 1
    w, h = config.width, config.height
    box = (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h))
    if box[0] >= box[2] or box[1] >= box[3]:
        return None
    x = g.x0 - m + xs + 0.5  # pixel centres in the DIC frame
    y = g.y0 - m + ys + 0.5
    dic_to_bf = np.linalg.inv(np.vstack([bf_to_dic, [0.0, 0.0, 1.0]]))[:2]
    u = dic_to_bf[0, 0] * x + dic_to_bf[0, 1] * y + dic_to_bf[0, 2]
    v = dic_to_bf[1, 0] * x + dic_to_bf[1, 1] * y + dic_to_bf[1, 2]
    visible_dic = float(np.mean((x >= 0) & (x < w) & (y >= 0) & (y < h)))
    visible_bf = float(np.mean((u >= 0) & (u < w) & (v >= 0) & (v < h)))
    at_border = x0 < 0 or y0 < 0 or x1 > w or y1 > h
    return box, _box_in_bf((x0, y0, x1, y1), bf_to_dic, w, h), at_border, visible_dic, visible_bf


def _box_in_bf(box: Box, bf_to_dic: F64, width: int, height: int) -> Box:
    """The brightfield box holding a DIC box (its corners through the inverse affine)."""
    dic_to_bf = np.linalg.inv(np.vstack([bf_to_dic, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[box[i], box[j], 1.0] for i in (0, 2) for j in (1, 3)])
    uv = corners @ dic_to_bf.T
    lo, hi = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0))
    return (
        max(int(lo[0]), 0),
        max(int(lo[1]), 0),
        min(int(hi[0]), width),
        min(int(hi[1]), height),
    )


def _render_scene(
    config: PhantomConfig, rng: np.random.Generator, m: int, affine: F64
) -> tuple[_Scene, list[PhantomCell], list[SmearObject]]:
    """Lay out and render all cells (and smear objects) into a world scene, margin ``m``."""
    world = (config.width + 2 * m, config.height + 2 * m)
    wbcs = _place_wbcs(config, rng, m)
    scene = _Scene(*world)
    stains = config.stain.stains()
    for disc in _place_rbcs(config, rng, world, wbcs):
        scene.add(*_render_rbc(rng, disc, stains.red_cell))
    patches = [
        (w.cell_class, *_render_wbc(rng, w.cell_class, w.disc, config.pixel_um, stains))
        for w in wbcs
    ]
    for _, g, cell in patches:
        scene.add(g, cell)
    cells = []
    for cls, g, cell in patches:
        if (found := _boxes(g, cell, m, config, affine)) is not None:
            box_dic, box_bf, at_border, visible_dic, visible_bf = found
            cells.append(
                PhantomCell(
                    cls,
                    box_dic,
                    box_bf,
                    at_border,
                    touching=scene.touches_other(g, cell),
                    visible_dic=visible_dic,
                    visible_bf=visible_bf,
                )
            )
    objects = []
    if not config.smear.empty:
        w, h = config.width, config.height
        for kind, (x0, y0, x1, y1) in _add_smear_objects(scene, config, rng, wbcs, m):
            box = (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h))
            if box[0] < box[2] and box[1] < box[3]:
                objects.append(SmearObject(kind, box, _box_in_bf(box, affine, w, h)))
    return scene, cells, objects


def generate_field(config: PhantomConfig, rng: np.random.Generator) -> PhantomField:
    """Render one paired field; the same ``rng`` state gives bit-identical output."""
    w, h = config.width, config.height
    affine = random_affine(config, rng, w, h)
    m = _margin(config)
    scene, cells, objects = _render_scene(config, rng, m, affine)
    pad = math.ceil(config.shear_um / config.pixel_um + 4 * config.defocus_sigma_px) + 2
    opl = scene.opl[m - pad : m + h + pad, m - pad : m + w + pad]
    flat = None if config.illumination.flat else config.illumination.flat_field(h, w, rng)
    padded_flat = (
        None
        if flat is None
        else _f32(cv2.copyMakeBorder(flat, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    )
    dic = np.ascontiguousarray(dic_from_opl(opl, config, rng, padded_flat)[pad:-pad, pad:-pad])
    to_world = affine + np.array([[0.0, 0.0, m], [0.0, 0.0, m]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    od = cv2.warpAffine(scene.od, to_world, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    bf = brightfield_from_od(_f32(od), config, rng, flat)
    mask = scene.label[m : m + h, m : m + w].copy()
    return PhantomField(dic, bf, mask, affine, tuple(cells), tuple(objects))
