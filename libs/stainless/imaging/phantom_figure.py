"""Overview figure of phantom fields ("phantom.png"): one DIC | MGG crop pair per class."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stainless.imaging.phantom import PHANTOM_CLASSES, PhantomCell, PhantomField

Box = tuple[int, int, int, int]


def select_examples(fields: Sequence[PhantomField]) -> dict[str, tuple[int, PhantomCell]]:
    """One (field index, cell) per class present, in ``PHANTOM_CLASSES`` order.

    The first cell of a class wins, but a cell cut by the field border is replaced by
    the first whole one found later.
    """
    chosen: dict[str, tuple[int, PhantomCell]] = {}
    for index, field in enumerate(fields):
        for cell in field.cells:
            known = chosen.get(cell.cell_class)
            if known is None or (known[1].at_border and not cell.at_border):
                chosen[cell.cell_class] = (index, cell)
    return {cls: chosen[cls] for cls in PHANTOM_CLASSES if cls in chosen}


def _crop(image: npt.NDArray[np.generic], box: Box, pad: int) -> npt.NDArray[np.generic]:
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    return image[max(y0 - pad, 0) : min(y1 + pad, height), max(x0 - pad, 0) : min(x1 + pad, width)]


def _stretch(
    crop: npt.NDArray[np.generic], dic: npt.NDArray[np.generic]
) -> npt.NDArray[np.float64]:
    """A DIC crop scaled to 0..1 between the 0.5th and 99.5th percentile of its field."""
    lo, hi = np.percentile(np.asarray(dic, dtype=np.float64)[::4, ::4], [0.5, 99.5])
    scaled = (np.asarray(crop, dtype=np.float64) - lo) / max(hi - lo, 1.0)
    return np.asarray(np.clip(scaled, 0.0, 1.0), dtype=np.float64)


def display_rgb(rgb: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """An RGB image as matplotlib shows it: uint8 as is, 12/16-bit scaled to 0..1."""
    if rgb.dtype == np.uint8:
        return rgb
    top = float(np.max(rgb)) if rgb.size else 1.0
    bits = 12 if top <= 4095 else 16
    return np.asarray(np.clip(rgb / (2**bits - 1), 0.0, 1.0), dtype=np.float64)


def render_acquisition_grid(
    fields: Sequence[tuple[str, PhantomField, float]],
    *,
    crop_um: float = 36.0,
    columns: int = 7,
    panel_inches: float = 1.5,
    dpi: int = 100,
) -> bytes:
    """PNG bytes of the same scene under several acquisitions: brightfield over DIC.

    Args:
        fields: ``(preset name, field, pixel size in µm)``, each rendered from the same seed.
        crop_um: side of the square shown around the field's first whole white cell.
        columns: presets per row.
        panel_inches: size of one panel.
        dpi: resolution of the PNG.
    """
    if not fields or columns < 1 or crop_um <= 0 or panel_inches <= 0 or dpi <= 0:
        raise ValueError("need fields, columns >= 1 and positive crop_um, panel_inches, dpi")
    columns = min(columns, len(fields))
    rows = -(-len(fields) // columns)
    figure = Figure(figsize=(panel_inches * columns, (2 * panel_inches + 0.25) * rows), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 * rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for slot, (name, field, pixel_um) in enumerate(fields):
        bf_axis, dic_axis = (
            axes[2 * (slot // columns), slot % columns],
            axes[2 * (slot // columns) + 1, slot % columns],
        )
        whole = [c for c in field.cells if not c.at_border] or list(field.cells)
        half = round(crop_um / pixel_um / 2)
        if whole:
            x0, y0, x1, y1 = whole[0].box_dic
            centre = ((x0 + x1) // 2, (y0 + y1) // 2)
        else:
            centre = (field.dic.shape[1] // 2, field.dic.shape[0] // 2)
        height, width = field.dic.shape
        half = min(half, height // 2, width // 2)
        x0 = min(max(centre[0] - half, 0), width - 2 * half)
        y0 = min(max(centre[1] - half, 0), height - 2 * half)
        box = (x0, y0, x0 + 2 * half, y0 + 2 * half)
        dic_crop = _crop(field.dic, box, 0)
        dic_axis.imshow(_stretch(dic_crop, field.dic), cmap="gray", vmin=0.0, vmax=1.0)
        bf_axis.imshow(display_rgb(_crop(field.bf, box, 0)))
        bf_axis.set_title(name, fontsize=9)
    figure.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def render_overview(
    fields: Sequence[PhantomField],
    *,
    crop_padding: int = 16,
    pairs_per_row: int = 4,
    panel_inches: float = 1.6,
    dpi: int = 100,
) -> bytes:
    """PNG bytes of a figure with, per class present, a "DIC | MGG" crop pair of one cell.

    Args:
        fields: phantom fields to take one example cell per class from.
        crop_padding: pixels added around each cell box.
        pairs_per_row: crop pairs side by side in one row of the figure.
        panel_inches: size of one crop panel.
        dpi: resolution of the PNG.

    Raises:
        ValueError: when the fields hold no cell or a layout argument is out of range.
    """
    if crop_padding < 0 or pairs_per_row < 1 or panel_inches <= 0 or dpi <= 0:
        raise ValueError("need crop_padding >= 0, pairs_per_row >= 1, panel_inches, dpi > 0")
    examples = select_examples(fields)
    if not examples:
        raise ValueError("the fields hold no cell to show")
    columns = min(pairs_per_row, len(examples))
    rows = -(-len(examples) // columns)
    size = (panel_inches * 2 * columns, (panel_inches + 0.25) * rows)
    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 2 * columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for slot, (cls, (index, cell)) in enumerate(examples.items()):
        dic_axis, bf_axis = axes[slot // columns, 2 * (slot % columns) : 2 * (slot % columns) + 2]
        field = fields[index]
        dic_crop = _crop(field.dic, cell.box_dic, crop_padding)
        dic_axis.imshow(_stretch(dic_crop, field.dic), cmap="gray", vmin=0.0, vmax=1.0)
        bf_axis.imshow(display_rgb(_crop(field.bf, cell.box_bf, crop_padding)))
        dic_axis.set_title(f"{cls}  DIC", fontsize=10)
        bf_axis.set_title(f"{cls}  MGG", fontsize=10)
    figure.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
