"""The clinical classes in the phantom (thesis ch. 3.2) and the slide presets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stainless.domain.cells import MaskClass
from stainless.domain.vocabulary import CLINICAL
from stainless.imaging.phantom import (
    PHANTOM_CLASSES,
    PhantomConfig,
    dic_from_opl,
    generate_field,
    render_cell,
)
from stainless.imaging.phantom_set import phantom_config
from stainless.imaging.slides import SLIDES, slide_frequencies

CONFIG = PhantomConfig(width=512, height=384)
SEEDS = range(6)


def _shares(code: str) -> list[tuple[float, float, float]]:
    """Per cell: (nucleus share of the cell, cell area in µm², median nucleus OD)."""
    found = []
    for seed in SEEDS:
        cell = render_cell(code, CONFIG, np.random.default_rng(seed))
        nucleus, area = cell.label == MaskClass.NUCLEUS, cell.label > 0
        od = float(np.median(cell.od[nucleus].sum(axis=1)))
        found.append((nucleus.sum() / area.sum(), area.sum() * CONFIG.pixel_um**2, od))
    return found


def test_the_phantom_renders_every_clinical_class() -> None:
    assert set(CLINICAL.classes) <= set(PHANTOM_CLASSES)
    for code in PHANTOM_CLASSES:
        cell = render_cell(code, CONFIG, np.random.default_rng(0))
        again = render_cell(code, CONFIG, np.random.default_rng(0))
        assert np.array_equal(cell.od, again.od) and np.array_equal(cell.opl, again.opl)
        assert (cell.label == MaskClass.NUCLEUS).any() and (cell.label == MaskClass.CYTOPLASM).any()


def test_the_morphology_of_thesis_chapter_3_tells_the_classes_apart() -> None:
    def mean(code: str, column: int) -> float:
        return float(np.mean([row[column] for row in _shares(code)]))

    # blasts: a large nucleus, little cytoplasm; reactive lymphocytes: plenty of cytoplasm
    assert mean("BL", 0) > 0.5 > 0.3 > mean("RLY", 0)
    # sizes of thesis ch. 3.2: reactive lymphocytes 15-30 µm, blasts 10-20, erythroblasts
    # 8-10, lymphocytes 7-8
    assert mean("RLY", 1) > mean("BL", 1) > mean("ERB", 1) > mean("LY", 1)
    # an erythroblast's nucleus is the densest; a blast's chromatin is finer and paler
    assert mean("ERB", 2) > mean("LY", 2) > mean("BL", 2)


def _interior_relief(code: str, seed: int) -> float:
    """The strongest DIC relief inside the nucleus, away from its edge, per background."""
    cell = render_cell(code, CONFIG, np.random.default_rng(seed))
    dic = dic_from_opl(cell.opl, CONFIG).astype(np.float64)
    nucleus = (cell.label == MaskClass.NUCLEUS).astype(np.uint8)
    inner = cv2.erode(nucleus, np.ones((9, 9), np.uint8)) > 0
    relief = np.hypot(*np.gradient(cv2.GaussianBlur(dic, (0, 0), 1.0)))
    return float(np.percentile(relief[inner], 99.5) / np.median(dic))


@pytest.mark.parametrize("seed", SEEDS)
def test_nucleoli_of_blasts_show_in_dic(seed: int) -> None:
    assert _interior_relief("BL", seed) > 1.5 * _interior_relief("LY", seed)


def test_slide_presets_choose_the_cells_and_combine_with_an_acquisition() -> None:
    config = phantom_config(width=640, height=480, acquisition="wright", slide="blast-rich")
    assert config.stain.protocol.value == "wright"
    cells = [
        c.cell_class
        for s in range(8)
        for c in generate_field(config, np.random.default_rng(s)).cells
    ]
    assert cells.count("BL") > len(cells) / 4
    assert set(cells) <= set(SLIDES["blast-rich"].class_frequencies)
    for name, preset in SLIDES.items():
        assert sum(preset.class_frequencies.values()) == pytest.approx(1.0), name
        PhantomConfig(class_frequencies=dict(preset.class_frequencies))
    assert set(slide_frequencies("clinical-mix")) == set(CLINICAL.classes)
    with pytest.raises(ValueError, match="unknown slide preset 'x'; known: healthy"):
        phantom_config(slide="x")
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['PLT'\]"):
        PhantomConfig(class_frequencies={"PLT": 1.0})
