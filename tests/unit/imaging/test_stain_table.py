"""docs/acquisition.md shows the optical densities the stain presets really render."""

from __future__ import annotations

from pathlib import Path

from stainless.imaging.stain_table import markdown, measure

DOC = Path(__file__).parents[3] / "docs" / "acquisition.md"


def test_the_documented_table_is_what_the_phantom_renders() -> None:
    assert markdown() in DOC.read_text()


def test_the_reference_preset_lands_near_the_measured_smear() -> None:
    od = measure("reference")
    for name, target in (
        ("nucleus", (0.53, 1.17, 0.16)),
        ("cytoplasm", (0.07, 0.24, 0.08)),
        ("red cell", (0.11, 0.31, 0.30)),
    ):
        assert all(abs(a - b) <= 0.3 * b + 0.02 for a, b in zip(od[name], target, strict=True))
