"""The optical densities each stain preset renders, measured on its own phantom fields.

``docs/acquisition.md`` shows this table beside the source of each protocol's dyes (see
``stainless.imaging.acquisition``); a test keeps the two equal. Measured as thesis and
DESIGN.md measure a real smear: ``OD = -ln(I / I_background)`` per R, G, B, the median
over the pixels of a neutrophil's nucleus and cytoplasm and of the red cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from stainless.domain.cells import MaskClass
from stainless.imaging.acquisition import PRESETS
from stainless.imaging.phantom import PhantomField, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config

STAIN_PRESETS = ("reference", "wright", "wright-giemsa", "leishman", "giemsa")
COMPARTMENTS = (
    ("nucleus", MaskClass.NUCLEUS),
    ("cytoplasm", MaskClass.CYTOPLASM),
    ("red cell", MaskClass.RED_CELL),
)


def _labels_in_bf(field: PhantomField) -> npt.NDArray[np.uint8]:
    height, width = field.mask.shape
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        field.mask, field.affine_bf_to_dic, (width, height), flags=flags, borderValue=255
    )
    return np.asarray(warped, np.uint8)


def _inner(mask: npt.NDArray[np.bool_], px: int) -> npt.NDArray[np.bool_]:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return np.asarray(cv2.erode(mask.astype(np.uint8), kernel) > 0)


def measure(preset: str, fields: int = 3, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Median OD (R, G, B) of nucleus, cytoplasm and red cell under ``preset``'s stain."""
    overrides = PRESETS[preset].overrides
    acquisition = {**overrides, "class_frequencies": {"SNE": 1.0}}
    config = phantom_config(width=1024, height=768, acquisition=acquisition)
    pixels: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name, _ in COMPARTMENTS}
    for index in range(fields):
        field = generate_field(config, field_rng(seed, 0, index))
        labels = _labels_in_bf(field)
        rgb = field.bf.astype(np.float64)
        background = np.median(rgb[_inner(labels == MaskClass.BACKGROUND, 3)], axis=0)
        for name, label in COMPARTMENTS:
            od = -np.log(np.maximum(rgb[_inner(labels == label, 2)], 1.0) / background)
            pixels[name].append(od)
    return {
        name: tuple(round(float(v), 2) for v in np.median(np.concatenate(found), axis=0))  # type: ignore[misc]
        for name, found in pixels.items()
    }


def markdown(presets: Sequence[str] = STAIN_PRESETS) -> str:
    """The table of ``docs/acquisition.md``: one row per preset, OD (R, G, B) per column."""
    lines = [
        "| preset | nucleus | cytoplasm | red cell |",
        "| --- | --- | --- | --- |",
    ]
    for preset in presets:
        od = measure(preset)
        cells = [", ".join(f"{v:.2f}" for v in od[name]) for name, _ in COMPARTMENTS]
        lines.append(f"| {preset} | " + " | ".join(f"({c})" for c in cells) + " |")
    return "\n".join(lines)
