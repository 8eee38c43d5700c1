"""Tests of the phantom overview figure."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stainless.domain.cells import CellClass
from stainless.imaging.phantom import PhantomConfig, PhantomField, generate_field
from stainless.imaging.phantom_figure import render_overview, select_examples


def one_class_field(cls: CellClass, seed: int, border: float = 0.0) -> PhantomField:
    config = PhantomConfig(
        width=512,
        height=384,
        class_frequencies={cls: 1.0},
        wbc_per_field=(1, 1),
        border_cell_probability=border,
    )
    return generate_field(config, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def fields() -> list[PhantomField]:
    return [one_class_field(cls, seed) for seed, cls in enumerate(CellClass)]


def test_overview_is_a_png_of_all_classes(fields: list[PhantomField]) -> None:
    png = render_overview(fields, pairs_per_row=4, panel_inches=1.5, dpi=80)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.size == (int(1.5 * 2 * 4 * 80), int((1.5 + 0.25) * 2 * 80))
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_overview_is_deterministic(fields: list[PhantomField]) -> None:
    assert render_overview(fields) == render_overview(fields)


def test_overview_changes_with_the_fields(fields: list[PhantomField]) -> None:
    assert render_overview(fields) != render_overview(fields[1:])


def test_one_example_per_class_in_class_order(fields: list[PhantomField]) -> None:
    examples = select_examples(fields)
    assert list(examples) == list(CellClass)
    for cls, (index, cell) in examples.items():
        assert cell.cell_class == cls
        assert cell in fields[index].cells


def test_whole_cells_are_preferred_over_border_cells() -> None:
    cut = one_class_field(CellClass.LY, 1, border=1.0)
    whole = one_class_field(CellClass.LY, 2)
    assert cut.cells[0].at_border and not whole.cells[0].at_border
    assert select_examples([cut, whole])[CellClass.LY] == (1, whole.cells[0])
    assert select_examples([cut])[CellClass.LY] == (0, cut.cells[0])


def test_fields_without_cells_are_rejected() -> None:
    empty = generate_field(
        PhantomConfig(width=256, height=256, wbc_per_field=(0, 0)), np.random.default_rng(0)
    )
    with pytest.raises(ValueError, match="no cell"):
        render_overview([empty])
    with pytest.raises(ValueError, match="no cell"):
        render_overview([])


@pytest.mark.parametrize("bad", [{"crop_padding": -1}, {"pairs_per_row": 0}, {"dpi": 0}])
def test_bad_layout_is_rejected(fields: list[PhantomField], bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="need"):
        render_overview(fields[:1], **bad)
