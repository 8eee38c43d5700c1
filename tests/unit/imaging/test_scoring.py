from __future__ import annotations

from stainless.domain.cells import CellClass
from stainless.imaging.detection import Detection
from stainless.imaging.phantom import PhantomCell
from stainless.imaging.scoring import counted_boxes, score_field


def _cell(box: tuple[int, int, int, int], visible: float) -> PhantomCell:
    return PhantomCell(CellClass.LY, box, box, visible < 1, False, visible, visible)


def test_a_cell_mostly_outside_the_field_is_neither_missed_nor_a_false_positive() -> None:
    whole = _cell((100, 100, 200, 200), 1.0)
    half = _cell((0, 300, 50, 400), 0.5)
    sliver = _cell((0, 500, 8, 600), 0.08)
    cells = [whole, half, sliver]
    for modality in ("bf", "dic"):
        assert score_field([], cells, modality, 0.5) == (0, 0, 2)  # the sliver is no miss
        on_all = [Detection(c.box_dic, 0.9) for c in cells]
        assert score_field(on_all, cells, modality, 0.5) == (2, 0, 0)
        wider = [Detection((0, 490, 40, 610), 0.9)]  # on the sliver, IoU 0.2: not counted
        assert score_field(wider, cells, modality, 0.5) == (0, 0, 2)
        elsewhere = [Detection((600, 600, 700, 700), 0.9)]
        assert score_field(elsewhere, cells, modality, 0.5) == (0, 1, 2)
        assert counted_boxes(cells, modality) == [whole.box_dic, half.box_dic]
