"""How a laboratory acquires a field: stain protocol, illumination, camera, optics, smear.

Labs differ, and no algorithm may depend on one lab's constants. The phantom renders each
source of variation as an explicit, seedable parameter of ``PhantomConfig`` (the blocks
below, plus the optics fields ``pixel_um``, ``defocus_sigma_px``, ``shear_angle_deg``,
``shear_um``, ``dic_bias_rad`` and ``prism_sign`` already on it). An *acquisition* is a
partial ``PhantomConfig`` (a dict of overrides): a named preset from ``PRESETS`` or a YAML
file of the same shape, applied with ``phantom_config_for``; ``random_acquisition`` draws
one from the documented range of every axis.

Ranges and sources (each field's docstring repeats its range):

* **Stain protocol** — MGG, Wright, Wright–Giemsa, Leishman, Giemsa. Each is a set of
  optical-density (OD) vectors per unit density, in the camera's R, G, B bands, for the
  chromophores the phantom lays down: the azure B–eosin Y complex on chromatin (purple,
  absorbing most near 550 nm: the Romanowsky–Giemsa effect, Horobin & Walter 1987,
  Histochemistry 86:331), azure/methylene blue on RNA (blue, 600–665 nm), eosin Y in
  cytoplasm (pink, 517–525 nm) and in eosinophil granules (orange), and haemoglobin
  (Soret band, blue). MGG is calibrated on one measured smear (DESIGN.md: nucleus
  (0.53, 1.17, 0.16), cytoplasm (0.07, 0.24, 0.08), red cell (0.11, 0.31, 0.30)); the
  others shift these vectors by their dye composition as described by Marshall 1978
  ("Romanowsky-type stains in haematology", Histochem J 10:1) and Wittekind 1983 (Stain
  Technol 58:1): Wright and Leishman (polychromed methylene blue and eosin, no separate
  azure B) give bluer, lighter chromatin and tan-pink red cells; Giemsa alone (no
  May-Grünwald step) weaker eosin, redder-purple chromatin and grey-pink red cells;
  Wright–Giemsa lies between. These are models from published absorption maxima and dye
  composition, not measurements: ``stainless.imaging.stain_table`` measures the ODs
  each preset renders (shown in docs/acquisition.md).
  ``strength`` 0.5–1.6 scales every dye (under- to over-staining; ICSH notes a two-fold
  spread between labs).
* **Illumination** — lamp colour temperature 2800–7500 K seen by a camera white-balanced
  at 5500 K (Planck's law at 600/540/460 nm); exposure 0.5–1.1 of the reference
  background level; vignetting 0–0.4 (relative fall-off at the field corner, radial
  cos⁴-like); uneven background 0–0.08 (relative std of a smooth flat-field error).
* **Camera** — brightfield 8-bit (optionally JPEG, quality 70–95), 12- or 16-bit; DIC 12-
  or 16-bit; relative gain 0.5–4 (higher gain: fewer photons per grey level, more noise).
* **Optics** — pixel size 0.05–0.25 µm (100× to 40×-with-binning on 5–6.5 µm sensor
  pixels), defocus 0–3 px, any DIC shear angle, shear 0.1–0.3 µm, bias 0.3–1.4 rad,
  prism sign ±1 (which side of a cell is bright).
* **Smear** — red-cell coverage 0.1–0.6 (thin monolayer to crowded), overlap up to 0.4 of
  a diameter, rouleaux 0–0.5 of red cells in stacks, platelets 0–40 per field (normal
  counts give about one per 10–20 red cells), platelet clumps 0–3, debris 0–20, stain
  precipitate 0–200 dots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

F32 = npt.NDArray[np.float32]


class StainProtocol(StrEnum):
    """Romanowsky-type staining protocols."""

    MGG = "mgg"
    WRIGHT = "wright"
    WRIGHT_GIEMSA = "wright-giemsa"
    LEISHMAN = "leishman"
    GIEMSA = "giemsa"


@dataclass(frozen=True, eq=False)
class StainSet:
    """OD (R, G, B) per unit density of each chromophore the phantom lays down."""

    complex: F32  # azure B-eosin complex on chromatin and basophil granules: purple
    azure: F32  # azure / methylene blue on RNA (lymphocyte, monocyte cytoplasm): blue
    eosin: F32  # eosin in cytoplasm and red cells: pink
    eosin_granule: F32  # eosin in eosinophil granules: orange
    haemoglobin: F32  # intrinsic absorption of red cells (not a dye)

    def scaled(self, strength: float) -> StainSet:
        """The same dyes ``strength`` times as dense (haemoglobin unchanged)."""
        if strength == 1.0:
            return self
        s = np.float32(strength)
        return StainSet(
            self.complex * s,
            self.azure * s,
            self.eosin * s,
            self.eosin_granule * s,
            self.haemoglobin,
        )

    @property
    def red_cell(self) -> F32:
        """OD of a red cell of reference thickness: eosin plus haemoglobin."""
        return np.asarray(0.31 * self.eosin + 0.2 * self.haemoglobin, np.float32)


def _v(r: float, g: float, b: float) -> F32:
    return np.array([r, g, b], np.float32)


_HAEMOGLOBIN = _v(0.1, 0.0, 1.0)
STAIN_SETS: Mapping[StainProtocol, StainSet] = MappingProxyType(
    {
        # Calibrated on the measured smear of DESIGN.md.
        StainProtocol.MGG: StainSet(
            _v(0.453, 1.0, 0.137),
            _v(0.85, 0.55, 0.10),
            _v(0.29, 1.0, 0.33),
            _v(0.12, 0.72, 1.0),
            _HAEMOGLOBIN,
        ),
        # Polychromed methylene blue + eosin: bluer, lighter chromatin; tan-pink red cells.
        StainProtocol.WRIGHT: StainSet(
            _v(0.62, 0.88, 0.16),
            _v(0.95, 0.50, 0.08),
            _v(0.24, 0.92, 0.42),
            _v(0.10, 0.70, 0.95),
            _HAEMOGLOBIN,
        ),
        StainProtocol.WRIGHT_GIEMSA: StainSet(
            _v(0.54, 0.95, 0.15),
            _v(0.90, 0.53, 0.09),
            _v(0.27, 0.96, 0.37),
            _v(0.11, 0.71, 0.98),
            _HAEMOGLOBIN,
        ),
        # Like Wright, a little lighter overall and slightly more violet chromatin.
        StainProtocol.LEISHMAN: StainSet(
            _v(0.55, 0.84, 0.19),
            _v(0.88, 0.47, 0.10),
            _v(0.22, 0.85, 0.38),
            _v(0.10, 0.66, 0.90),
            _HAEMOGLOBIN,
        ),
        # No May-Grünwald step: weaker eosin (grey-pink red cells), redder chromatin.
        StainProtocol.GIEMSA: StainSet(
            _v(0.40, 1.05, 0.20),
            _v(0.80, 0.60, 0.14),
            _v(0.26, 0.72, 0.36),
            _v(0.12, 0.55, 0.80),
            _HAEMOGLOBIN,
        ),
    }
)


class StainConfig(BaseModel):
    """Stain protocol and how heavily it was applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: StainProtocol = StainProtocol.MGG
    strength: float = Field(1.0, ge=0.5, le=1.6)  # dye density: <0.8 under-, >1.2 over-stained

    def stains(self) -> StainSet:
        return STAIN_SETS[self.protocol].scaled(self.strength)


# Effective wavelengths (µm) of the R, G, B bands, and the camera's white balance.
_BANDS_UM = (0.600, 0.540, 0.460)
_WHITE_BALANCE_K = 5500.0


def _planck(wavelength_um: float, kelvin: float) -> float:
    """Spectral radiance up to a constant (Planck's law; 14388 µm K = h c / k)."""
    return 1.0 / (wavelength_um**5 * (math.exp(14388.0 / (wavelength_um * kelvin)) - 1.0))


class IlluminationConfig(BaseModel):
    """Lamp colour, exposure and flat field (brightfield and DIC share the lamp)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    colour_temperature_k: float | None = Field(None, ge=2800.0, le=7500.0)  # None: balanced
    exposure: float = Field(1.0, ge=0.5, le=1.1)  # background level relative to the reference
    vignetting: float = Field(0.0, ge=0.0, le=0.4)  # relative fall-off at the field corner
    unevenness: float = Field(0.0, ge=0.0, le=0.08)  # relative std of a smooth flat-field error

    def colour_gain(self) -> tuple[float, float, float]:
        """Per-channel (R, G, B) gain of the lamp against the white balance, max 1."""
        if self.colour_temperature_k is None:
            return (1.0, 1.0, 1.0)
        ratios = [
            _planck(band, self.colour_temperature_k) / _planck(band, _WHITE_BALANCE_K)
            for band in _BANDS_UM
        ]
        top = max(ratios)
        return (ratios[0] / top, ratios[1] / top, ratios[2] / top)

    @property
    def flat(self) -> bool:
        return self.vignetting == 0.0 and self.unevenness == 0.0

    def flat_field(self, height: int, width: int, rng: np.random.Generator) -> F32:
        """Relative illumination (1 at the brightest point's neighbourhood) over the field."""
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
        corner = max(math.hypot(cx, cy), math.hypot(width - cx, height - cy))
        rho2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(corner**2)
        field = 1.0 - np.float32(self.vignetting) * rho2
        if self.unevenness > 0:
            small = rng.standard_normal((3, 3)).astype(np.float32)
            smooth = np.asarray(
                cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), np.float32
            )
            smooth /= np.float32(max(float(smooth.std()), 1e-6))
            field = field * np.exp(np.float32(self.unevenness) * smooth)
        return np.asarray(field, np.float32)


class CameraConfig(BaseModel):
    """Bit depth, compression and gain of the cameras."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bf_bit_depth: Literal[8, 12, 16] = 8  # brightfield: uint8, or uint16 holding 12/16 bits
    jpeg_quality: int | None = Field(None, ge=70, le=95)  # brightfield saved as JPEG (8-bit)
    dic_bit_depth: Literal[12, 16] = 16  # DIC: uint16 holding 12 or 16 bits
    gain: float = Field(1.0, ge=0.5, le=4.0)  # relative gain: noise grows with its root

    @model_validator(mode="after")
    def _jpeg_is_8_bit(self) -> CameraConfig:
        if self.jpeg_quality is not None and self.bf_bit_depth != 8:
            raise ValueError("jpeg_quality needs bf_bit_depth 8 (JPEG is an 8-bit format)")
        return self


class SmearConfig(BaseModel):
    """What lies in the field besides white and red cells, and how red cells lie."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rouleaux: float = Field(0.0, ge=0.0, le=0.5)  # share of red cells stacked in rouleaux
    platelets: tuple[int, int] = (0, 0)  # inclusive range of single platelets per field
    platelet_clumps: tuple[int, int] = (0, 0)  # inclusive range of platelet clumps
    debris: tuple[int, int] = (0, 0)  # small refractile particles (not cells)
    precipitate: tuple[int, int] = (0, 0)  # stain precipitate dots

    @model_validator(mode="after")
    def _ranges(self) -> SmearConfig:
        for name in ("platelets", "platelet_clumps", "debris", "precipitate"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 400:
                raise ValueError(f"{name} must satisfy 0 <= low <= high <= 400, got {low, high}")
        return self

    @property
    def empty(self) -> bool:
        return self.rouleaux == 0 and not any(
            getattr(self, n)[1] for n in ("platelets", "platelet_clumps", "debris", "precipitate")
        )


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A named acquisition: overrides of ``PhantomConfig`` and the axis it varies."""

    axis: str
    description: str
    overrides: Mapping[str, Any]


def _stain(protocol: StainProtocol, strength: float = 1.0) -> dict[str, Any]:
    return {"stain": {"protocol": protocol.value, "strength": strength}}


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "reference": Preset("reference", "MGG, 100x oil, 0.075 µm/px: the default", {}),
        "wright": Preset("stain", "Wright stain", _stain(StainProtocol.WRIGHT)),
        "wright-giemsa": Preset(
            "stain", "Wright-Giemsa stain", _stain(StainProtocol.WRIGHT_GIEMSA)
        ),
        "leishman": Preset("stain", "Leishman stain", _stain(StainProtocol.LEISHMAN)),
        "giemsa": Preset("stain", "Giemsa stain alone", _stain(StainProtocol.GIEMSA)),
        "under-stained": Preset("stain", "MGG at 0.6 strength", _stain(StainProtocol.MGG, 0.6)),
        "over-stained": Preset("stain", "MGG at 1.5 strength", _stain(StainProtocol.MGG, 1.5)),
        "warm-lamp": Preset(
            "illumination",
            "halogen lamp at 3800 K, camera balanced for daylight; exposure 0.85",
            {"illumination": {"colour_temperature_k": 3800.0, "exposure": 0.85}},
        ),
        "cool-lamp": Preset(
            "illumination",
            "LED at 7000 K",
            {"illumination": {"colour_temperature_k": 7000.0}},
        ),
        "vignetted": Preset(
            "illumination",
            "35% fall-off at the corners and an uneven background",
            {"illumination": {"vignetting": 0.35, "unevenness": 0.05}},
        ),
        "dim": Preset("illumination", "under-exposed (0.55)", {"illumination": {"exposure": 0.55}}),
        "jpeg": Preset(
            "camera", "8-bit JPEG at quality 75", {"camera": {"jpeg_quality": 75, "gain": 2.0}}
        ),
        "12-bit": Preset(
            "camera",
            "12-bit brightfield and DIC",
            {"camera": {"bf_bit_depth": 12, "dic_bit_depth": 12}},
        ),
        "16-bit": Preset("camera", "16-bit brightfield", {"camera": {"bf_bit_depth": 16}}),
        "noisy": Preset("camera", "gain 4 (4x fewer photons per level)", {"camera": {"gain": 4.0}}),
        "high-res": Preset("optics", "0.05 µm/px (100x, small sensor pixels)", {"pixel_um": 0.05}),
        "50x": Preset(
            "optics", "50x objective: 0.12 µm/px, shear 0.2 µm", {"pixel_um": 0.12, "shear_um": 0.2}
        ),
        "binned": Preset(
            "optics",
            "40x with 2x2 binning: 0.25 µm/px, shear 0.3 µm, 4x the photons per pixel",
            {"pixel_um": 0.25, "shear_um": 0.3, "camera": {"gain": 0.5}},
        ),
        "defocused": Preset("optics", "defocus blur of 2.5 px", {"defocus_sigma_px": 2.5}),
        "shear-0": Preset("optics", "DIC shear along x", {"shear_angle_deg": 0.0}),
        "shear-120": Preset("optics", "DIC shear at 120°", {"shear_angle_deg": 120.0}),
        "prism-flipped": Preset("optics", "prism sign reversed", {"prism_sign": -1}),
        "wide-shear": Preset(
            "optics", "shear 0.3 µm, bias 0.5 rad", {"shear_um": 0.3, "dic_bias_rad": 0.5}
        ),
        "thin": Preset("smear", "thin monolayer (coverage 0.12)", {"rbc_coverage": 0.12}),
        "crowded": Preset(
            "smear",
            "crowded: coverage 0.55, overlaps to 0.4, some rouleaux",
            {"rbc_coverage": 0.55, "rbc_max_overlap": 0.4, "smear": {"rouleaux": 0.15}},
        ),
        "rouleaux": Preset("smear", "40% of red cells in rouleaux", {"smear": {"rouleaux": 0.4}}),
        "platelets": Preset(
            "smear",
            "10-30 platelets and 1-3 platelet clumps per field",
            {"smear": {"platelets": (10, 30), "platelet_clumps": (1, 3)}},
        ),
        "dirty": Preset(
            "smear",
            "debris and stain precipitate",
            {"smear": {"debris": (5, 15), "precipitate": (50, 150)}},
        ),
    }
)


def load_acquisition(spec: str) -> dict[str, Any]:
    """Overrides of a named preset, or of a YAML file (a mapping of ``PhantomConfig`` fields).

    Raises:
        ValueError: neither a preset name nor a readable YAML mapping.
    """
    if spec in PRESETS:
        return dict(_plain(PRESETS[spec].overrides))
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(PRESETS)
        raise ValueError(f"acquisition {spec!r} is neither a preset ({names}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read acquisition file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"acquisition file {path} must hold a mapping of phantom settings")
    return data


def _plain(value: Any) -> Any:
    """A deep, mutable copy of preset overrides."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, nested blocks merged key by key."""
    merged: dict[str, Any] = dict(_plain(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = _plain(value)
    return merged


def random_acquisition(rng: np.random.Generator) -> dict[str, Any]:
    """Overrides drawn uniformly from the documented range of every axis at once."""
    protocol = list(StainProtocol)[int(rng.integers(len(StainProtocol)))]
    bit_depth = int(rng.choice([8, 8, 12, 16]))
    jpeg = bool(bit_depth == 8 and rng.random() < 0.5)
    temperature = float(rng.uniform(2800, 7500))
    return {
        "stain": {"protocol": protocol.value, "strength": round(float(rng.uniform(0.6, 1.5)), 3)},
        "illumination": {
            "colour_temperature_k": round(temperature),
            "exposure": round(float(rng.uniform(0.55, 1.05)), 3),
            "vignetting": round(float(rng.uniform(0.0, 0.35)), 3),
            "unevenness": round(float(rng.uniform(0.0, 0.06)), 3),
        },
        "camera": {
            "bf_bit_depth": bit_depth,
            "jpeg_quality": int(rng.integers(70, 96)) if jpeg else None,
            "dic_bit_depth": int(rng.choice([12, 16])),
            "gain": round(float(rng.uniform(0.5, 4.0)), 3),
        },
        "pixel_um": round(float(rng.uniform(0.05, 0.25)), 4),
        "defocus_sigma_px": round(float(rng.uniform(0.3, 2.5)), 3),
        "shear_angle_deg": round(float(rng.uniform(0.0, 360.0)), 2),
        "shear_um": round(float(rng.uniform(0.1, 0.3)), 3),
        "dic_bias_rad": round(float(rng.uniform(0.4, 1.3)), 3),
        "prism_sign": int(rng.choice([1, -1])),
        "rbc_coverage": round(float(rng.uniform(0.12, 0.55)), 3),
        "smear": {
            "rouleaux": round(float(rng.uniform(0.0, 0.3)), 3),
            "platelets": (0, int(rng.integers(0, 31))),
            "platelet_clumps": (0, int(rng.integers(0, 3))),
            "debris": (0, int(rng.integers(0, 16))),
            "precipitate": (0, int(rng.integers(0, 151))),
        },
    }
