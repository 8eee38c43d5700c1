"""Detections scored against a phantom field's truth, as every benchmark and calibration does.

Boxes are matched greedily at an IoU (``match_boxes``). A cell counts in a modality only
when at least ``MIN_VISIBLE`` of it lies in that modality's field: a sliver cut by the
edge (whole in the neighbouring field of a scan) is neither a miss when not found nor a
false positive when found.
"""

from __future__ import annotations

from collections.abc import Sequence

from stainless.imaging.detection import Detection, box_iou, match_boxes
from stainless.imaging.phantom import PhantomCell

__all__ = ["MIN_VISIBLE", "counted_boxes", "score_field"]

MIN_VISIBLE = 0.5
"""Least share of a cell's area inside a modality's field for it to count there."""

Box = tuple[int, int, int, int]


def _box(cell: PhantomCell, modality: str) -> Box:
    return cell.box_bf if modality == "bf" else cell.box_dic


def _visible(cell: PhantomCell, modality: str) -> float:
    return cell.visible_bf if modality == "bf" else cell.visible_dic


def _nonempty(box: Sequence[int]) -> bool:
    return box[2] > box[0] and box[3] > box[1]


def _centre_in(inner: Sequence[int], outer: Sequence[int]) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx < outer[2] and outer[1] <= cy < outer[3]


def counted_boxes(cells: Sequence[PhantomCell], modality: str) -> list[Box]:
    """The boxes of the cells that count in ``modality`` (``"bf"`` or ``"dic"``)."""
    return [
        _box(c, modality)
        for c in cells
        if _nonempty(_box(c, modality)) and _visible(c, modality) >= MIN_VISIBLE
    ]


def score_field(
    found: Sequence[Detection], cells: Sequence[PhantomCell], modality: str, iou: float
) -> tuple[int, int, int]:
    """(tp, fp, fn) of one field's detections against its cells that count.

    An unmatched detection on a cell that does not count (either box holds the other's
    centre) is not a false positive.
    """
    truth = counted_boxes(cells, modality)
    cut = [
        _box(c, modality)
        for c in cells
        if _nonempty(_box(c, modality)) and _visible(c, modality) < MIN_VISIBLE
    ]
    tp, fp, fn = match_boxes(found, truth, iou)
    on_cut = sum(
        all(box_iou(d.box, t) < iou for t in truth)
        and any(_centre_in(d.box, b) or _centre_in(b, d.box) for b in cut)
        for d in found
    )
    return tp, fp - on_cut, fn
