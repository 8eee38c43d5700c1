"""Cell classes and mask classes."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["CLASS_ORDER", "LEUKOCYTES", "CellClass", "MaskClass"]


class CellClass(StrEnum):
    """White-cell classes (CellaVision codes)."""

    ART = "ART"  # artifact: debris, not a cell
    BA = "BA"  # basophil
    EO = "EO"  # eosinophil
    LY = "LY"  # lymphocyte
    MO = "MO"  # monocyte
    SNE = "SNE"  # segmented neutrophil
    SMU = "SMU"  # smudge cell (destroyed)


class MaskClass(IntEnum):
    """Mask labels; the higher value wins where compartments overlap."""

    BACKGROUND = 0
    RED_CELL = 1
    CYTOPLASM = 2
    NUCLEUS = 3


CLASS_ORDER: tuple[str, ...] = tuple(c.value for c in CellClass)
"""Every cell class in display order (the review page's hotkeys 1–7 follow it)."""

LEUKOCYTES: tuple[str, ...] = ("BA", "EO", "LY", "MO", "SNE")
"""The classes whose sum is the denominator of the differential's percentages."""
