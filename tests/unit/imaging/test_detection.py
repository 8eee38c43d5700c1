"""White-cell detection on phantom brightfield and DIC fields; box helpers."""

from __future__ import annotations

import numpy as np
import pytest

from stainless.domain.cells import CellClass
from stainless.imaging.detection import (
    BrightfieldDetector,
    Detection,
    DicDetector,
    WbcDetector,
    box_iou,
    boxes_to_dic,
    fill_holes,
    match_boxes,
)
from stainless.imaging.phantom import PhantomConfig, PhantomField, SmearObjectKind, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config

# Busier than the default (3-6 white cells a field) so that a handful of small fields
# holds ~40 cells of every kind, touching pairs and cells cut by the edge included.
BUSY = PhantomConfig(width=1024, height=768, wbc_per_field=(3, 6))


@pytest.fixture(scope="module")
def fields() -> list[PhantomField]:
    return [generate_field(BUSY, field_rng(11, 0, i)) for i in range(8)]


def _score(
    detector: WbcDetector, fields: list[PhantomField], modality: str
) -> tuple[float, float, int]:
    tp = fp = fn = 0
    for f in fields:
        image = f.dic if modality == "dic" else f.bf
        boxes = [c.box_dic if modality == "dic" else c.box_bf for c in f.cells]
        truth = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        found = detector.detect(image)
        assert all(isinstance(d, Detection) and 0.0 <= d.score <= 1.0 for d in found)
        t, p, n = match_boxes(found, truth)
        tp, fp, fn = tp + t, fp + p, fn + n
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp + fn


def test_brightfield_detector_meets_the_targets(fields: list[PhantomField]) -> None:
    precision, recall, cells = _score(BrightfieldDetector(), fields, "bf")
    assert cells >= 30
    # Targets: recall >= 0.97, precision >= 0.95 (the benchmark checks them on 20
    # full-size fields; here the same thresholds hold on ~40 cells).
    assert recall >= 0.97, recall
    assert precision >= 0.95, precision


def test_dic_detector_meets_the_recall_target(fields: list[PhantomField]) -> None:
    precision, recall, cells = _score(DicDetector(), fields, "dic")
    assert cells >= 30
    # Target recall 0.9 (benchmark); on ~40 cells one miss is 2.5 %, so 0.85 here.
    assert recall >= 0.85, recall
    assert precision >= 0.8, precision


def test_red_cells_alone_give_no_detections() -> None:
    config = PhantomConfig(width=768, height=576, wbc_per_field=(0, 0), rbc_coverage=0.45)
    for index in range(2):
        f = generate_field(config, field_rng(5, 0, index))
        assert f.cells == ()
        assert BrightfieldDetector().detect(f.bf) == []
        assert DicDetector().detect(f.dic) == []


def test_touching_cells_are_split(fields: list[PhantomField]) -> None:
    touching = [
        (f, c) for f in fields for c in f.cells if c.touching and c.cell_class != CellClass.ART
    ]
    assert touching, "the fixture should hold touching cells"
    found = 0
    for f, cell in touching:
        boxes = [d.box for d in BrightfieldDetector().detect(f.bf)]
        found += any(box_iou(b, cell.box_bf) >= 0.5 for b in boxes)
    assert found >= 0.9 * len(touching)


def test_cells_cut_by_the_border_are_found() -> None:
    config = BUSY.model_copy(update={"border_cell_probability": 1.0})
    cut = 0
    for index in range(4):
        f = generate_field(config, field_rng(12, 0, index))
        boxes = [d.box for d in BrightfieldDetector().detect(f.bf)]
        for cell in f.cells:
            if (
                cell.at_border
                and cell.box_bf[2] > cell.box_bf[0]
                and cell.box_bf[3] > cell.box_bf[1]
            ):
                cut += 1
                assert any(box_iou(b, cell.box_bf) >= 0.5 for b in boxes), cell
    assert cut >= 2


def test_detectors_refuse_bad_images() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        BrightfieldDetector().detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        DicDetector().detect(np.zeros((64, 64, 3), np.uint16))
    with pytest.raises(ValueError, match="dtype"):
        DicDetector().detect(np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="threshold_spread"):
        BrightfieldDetector(threshold_spread=0.0)
    with pytest.raises(ValueError, match="red_cell_od"):
        BrightfieldDetector(red_cell_od=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="bias_rad"):
        DicDetector(bias_rad=4.0)


def test_boxes_to_dic_identity_and_translation() -> None:
    dets = [Detection((10, 20, 50, 70), 0.9), Detection((0, 0, 5, 5), 0.5)]
    assert boxes_to_dic(dets, np.eye(2, 3), 100, 100) == dets
    shifted = boxes_to_dic(dets, np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0]]), 100, 100)
    assert shifted[0] == Detection((17, 17, 57, 67), 0.9)
    # Clipped to the field; a box carried entirely outside is dropped.
    assert shifted[1] == Detection((7, 0, 12, 2), 0.5)
    gone = boxes_to_dic(dets, np.array([[1.0, 0.0, -60.0], [0.0, 1.0, 0.0]]), 100, 100)
    assert gone == []


def test_boxes_to_dic_rotation_takes_the_box_of_the_corners() -> None:
    c, s = np.cos(np.pi / 2), np.sin(np.pi / 2)
    rotate = np.array([[c, -s, 100.0], [s, c, 0.0]])  # (u, v) -> (100 - v, u)
    (carried,) = boxes_to_dic([Detection((10, 20, 30, 60), 1.0)], rotate, 200, 200)
    assert carried.box == (40, 10, 80, 30)


def test_boxes_to_dic_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="2x3"):
        boxes_to_dic([], np.eye(3), 10, 10)
    with pytest.raises(ValueError, match="empty"):
        boxes_to_dic([Detection((5, 5, 5, 9), 1.0)], np.eye(2, 3), 10, 10)


def test_match_boxes_counts() -> None:
    truth = [(0, 0, 10, 10), (20, 20, 30, 30), (50, 50, 60, 60)]
    predicted = [
        Detection((1, 1, 11, 11), 1.0),  # matches the first (IoU 0.68)
        Detection((0, 0, 10, 10), 1.0),  # also the first: a duplicate, so a false positive
        Detection((25, 25, 35, 35), 1.0),  # IoU 0.14 with the second: false positive
    ]
    assert match_boxes(predicted, truth) == (1, 2, 2)
    assert match_boxes(predicted, truth, iou=0.1) == (2, 1, 1)
    assert match_boxes([], truth) == (0, 0, 3)
    assert match_boxes(predicted, []) == (0, 3, 0)
    assert match_boxes([(0, 0, 10, 10)], [Detection((0, 0, 10, 10), 1.0)]) == (1, 0, 0)
    with pytest.raises(ValueError, match="iou"):
        match_boxes(predicted, truth, iou=0.0)


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


# ----------------------------------------------------------------------------- other labs

PLATELETS = {"smear": {"platelets": (15, 30), "platelet_clumps": (1, 3), "debris": (3, 8)}}


@pytest.mark.parametrize("protocol", ["wright", "giemsa", "leishman"])
@pytest.mark.parametrize("pixel_um", [0.075, 0.12])
def test_brightfield_detector_needs_no_lab_constants(protocol: str, pixel_um: float) -> None:
    """Constructed with the pixel size only, it finds the cells of other stains and scales,
    and never a platelet or debris (platelet clumps: see the robustness benchmark)."""
    acquisition = {"stain": {"protocol": protocol}, "pixel_um": pixel_um, **PLATELETS}
    config = phantom_config(width=1024, height=768, acquisition=acquisition)
    fields = [generate_field(config, field_rng(31, 0, i)) for i in range(4)]
    detector = BrightfieldDetector(pixel_um=pixel_um)
    precision, recall, cells = _score(detector, fields, "bf")
    assert cells >= 8
    assert recall >= 0.9, recall
    assert precision >= 0.85, precision
    singles = 0
    for f in fields:
        found = detector.detect(f.bf)
        for obj in f.smear_objects:
            x0, y0, x1, y1 = obj.box_bf
            if obj.kind is SmearObjectKind.PLATELET_CLUMP or x1 <= x0 or y1 <= y0:
                continue
            singles += 1
            # No detection is (mostly) the object: it may only lie inside a larger cell box.
            assert all(box_iou(d.box, obj.box_bf) < 0.3 for d in found), (obj, found)
    assert singles >= 40


def test_brightfield_detector_follows_the_field_not_a_constant() -> None:
    """A fixed MGG red-cell direction fails on a Wright field; the estimated one does not."""
    config = phantom_config(width=1024, height=768, acquisition="wright")
    fields = [generate_field(config, field_rng(32, 0, i)) for i in range(2)]
    fixed_precision, _, _ = _score(
        BrightfieldDetector(red_cell_od=(0.11, 0.31, 0.30), min_contrast=1.0), fields, "bf"
    )
    precision, recall, _ = _score(BrightfieldDetector(), fields, "bf")
    assert precision >= 0.9 and recall >= 0.9
    assert fixed_precision < 0.5


@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_holes_are_filled_as_scipy_fills_them(density: float) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(int(density * 10))
    mask = rng.random((61, 83)) < density  # rings, holes touching the edge, nested holes
    mask[20:40, 30:50] = True
    mask[25:35, 35:45] = False
    mask[28:32, 38:42] = True
    filled = fill_holes(mask.astype(np.uint8))
    assert filled.dtype == np.bool_
    assert np.array_equal(filled, ndimage.binary_fill_holes(mask))
    assert filled[30, 36] and not fill_holes(np.zeros((5, 5), np.uint8)).any()
