"""Tests of the synthetic DIC / MGG phantom generator."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from stainless.domain.cells import CellClass, MaskClass
from stainless.imaging.phantom import (
    DEFAULT_CLASS_FREQUENCIES,
    PhantomConfig,
    PhantomField,
    brightfield_from_od,
    dic_from_opl,
    generate_field,
    random_affine,
    render_cell,
)

SMALL = {"width": 512, "height": 384}
NUCLEUS_OD = (0.53, 1.17, 0.16)
CYTOPLASM_OD = (0.07, 0.24, 0.08)
RED_CELL_OD = (0.11, 0.31, 0.30)


def field_of(seed: int, **overrides: object) -> PhantomField:
    config = PhantomConfig.model_validate({**SMALL, **overrides})
    return generate_field(config, np.random.default_rng(seed))


def mask_in_bf(field: PhantomField) -> npt.NDArray[np.uint8]:
    """The DIC-frame mask resampled into the brightfield frame (255 outside the scene)."""
    height, width = field.mask.shape
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        field.mask, field.affine_bf_to_dic, (width, height), flags=flags, borderValue=255
    )
    return np.asarray(warped, dtype=np.uint8)


def eroded(mask: npt.NDArray[np.bool_], px: int = 2) -> npt.NDArray[np.bool_]:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return np.asarray(cv2.erode(mask.astype(np.uint8), kernel) > 0)


def optical_density(
    field: PhantomField, select: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.bool_]]
) -> npt.NDArray[np.float64]:
    """Median OD (-ln I / I_background, per R, G, B) of the brightfield pixels selected."""
    labels = mask_in_bf(field)
    rgb = field.bf.astype(np.float64)
    background = np.median(rgb[eroded(labels == MaskClass.BACKGROUND, 3)], axis=0)
    return np.asarray(-np.log(np.median(rgb[select(labels)], axis=0) / background))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_fields() -> None:
    first, second = field_of(7), field_of(7)
    for name in ("dic", "bf", "mask", "affine_bf_to_dic"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.cells == second.cells


def test_different_seeds_give_different_fields() -> None:
    first, second = field_of(1), field_of(2)
    assert not np.array_equal(first.dic, second.dic)
    assert not np.array_equal(first.bf, second.bf)
    assert not np.array_equal(first.affine_bf_to_dic, second.affine_bf_to_dic)


# ----------------------------------------------------------------------------- shapes


def test_small_field_shapes_and_dtypes() -> None:
    field = field_of(3)
    assert field.dic.shape == (384, 512) and field.dic.dtype == np.uint16
    assert field.bf.shape == (384, 512, 3) and field.bf.dtype == np.uint8
    assert field.mask.shape == (384, 512) and field.mask.dtype == np.uint8
    assert field.affine_bf_to_dic.shape == (2, 3) and field.affine_bf_to_dic.dtype == np.float64
    assert set(np.unique(field.mask)) <= {int(m) for m in MaskClass}


def test_default_size_field() -> None:
    field = generate_field(PhantomConfig(), np.random.default_rng(0))
    assert field.dic.shape == (1544, 2064)
    assert field.bf.shape == (1544, 2064, 3)
    assert field.mask.shape == (1544, 2064)
    assert set(np.unique(field.mask)) <= {0, 1, 2, 3}
    assert 1 <= len(field.cells) <= 4


def test_dic_background_is_mid_grey_and_unsaturated() -> None:
    config = PhantomConfig(**SMALL)
    field = generate_field(config, np.random.default_rng(4))
    expected = config.dic_peak_level * (1 - math.cos(config.dic_bias_rad)) / 2
    background = np.median(field.dic[eroded(field.mask == MaskClass.BACKGROUND, 4)])
    assert abs(background - expected) < 0.03 * expected
    assert field.dic.max() < 65535
    assert field.dic.min() > 0


# ----------------------------------------------------------------------------- geometry


def test_affine_stays_within_limits() -> None:
    config = PhantomConfig(max_shift_px=25.0, max_rotation_deg=2.0, max_scale=0.03)
    rng = np.random.default_rng(11)
    centre = np.array([(config.width - 1) / 2, (config.height - 1) / 2])
    angles, scales = [], []
    for _ in range(500):
        affine = random_affine(config, rng, config.width, config.height)
        linear = affine[:, :2]
        scale = math.sqrt(np.linalg.det(linear))
        angle = math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
        assert np.allclose(linear @ linear.T, scale**2 * np.eye(2))  # rotation x scale only
        shift = affine @ np.append(centre, 1.0) - centre
        assert np.all(np.abs(shift) <= 25.0)
        angles.append(angle)
        scales.append(scale - 1)
    assert max(np.abs(angles)) <= 2.0 and max(np.abs(angles)) > 1.8
    assert max(np.abs(scales)) <= 0.03 + 1e-12 and max(np.abs(scales)) > 0.027


def test_zero_limits_give_the_identity() -> None:
    config = PhantomConfig(max_shift_px=0.0, max_rotation_deg=0.0, max_scale=0.0)
    affine = random_affine(config, np.random.default_rng(0), 100, 80)
    assert np.allclose(affine, [[1, 0, 0], [0, 1, 0]])


def test_brightfield_is_the_scene_warped_by_the_affine() -> None:
    field = field_of(0, class_frequencies={"SNE": 1.0}, wbc_per_field=(3, 3))
    centre = np.array([255.5, 191.5, 1.0])
    assert np.abs(field.affine_bf_to_dic @ centre - centre[:2]).max() > 30  # a real shift
    green_od = -np.log(field.bf[..., 1] / 232.0)

    def nuclei_seen_through(affine: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        return np.asarray(cv2.warpAffine(field.mask, affine, (512, 384), flags=flags) == 3)

    def agreement(affine: npt.NDArray[np.float64]) -> float:
        nuclei = nuclei_seen_through(affine)
        return float(np.corrcoef(nuclei.ravel(), green_od.ravel())[0, 1])

    nuclei = nuclei_seen_through(field.affine_bf_to_dic)
    assert np.mean(green_od[eroded(nuclei, 2)] > 0.5) > 0.95  # dark violet where expected
    inverse = np.linalg.inv(np.vstack([field.affine_bf_to_dic, [0.0, 0.0, 1.0]]))[:2]
    assert agreement(field.affine_bf_to_dic) > 0.8
    assert agreement(np.eye(2, 3)) < 0.5
    assert agreement(inverse) < 0.5


def test_boxes_hold_their_cell_in_both_frames() -> None:
    for seed in range(4):
        field = field_of(seed, class_frequencies={"SNE": 1.0, "LY": 1.0})
        labels_bf = mask_in_bf(field)
        for cell in field.cells:
            x0, y0, x1, y1 = cell.box_dic
            inside = field.mask[y0:y1, x0:x1]
            assert np.any(inside == MaskClass.NUCLEUS)
            u0, v0, u1, v1 = cell.box_bf
            assert np.any(labels_bf[v0:v1, u0:u1] == MaskClass.NUCLEUS)
            clipped = cell.at_border or u0 == 0 or v0 == 0 or u1 == 512 or v1 == 384
            assert clipped or abs((u1 - u0) - (x1 - x0)) <= 6


def test_border_cell_is_flagged_and_touches_the_edge() -> None:
    for seed in range(5):
        field = field_of(seed, border_cell_probability=1.0, wbc_per_field=(1, 1))
        (cell,) = field.cells
        x0, y0, x1, y1 = cell.box_dic
        assert cell.at_border
        assert x0 == 0 or y0 == 0 or x1 == 512 or y1 == 384
        inner = field_of(seed, border_cell_probability=0.0, wbc_per_field=(1, 1))
        assert not any(c.at_border for c in inner.cells)


def test_visible_shares_count_the_cell_inside_each_frame() -> None:
    seen_cut = False
    for seed in range(6):
        field = field_of(seed, border_cell_probability=0.5, wbc_per_field=(2, 3))
        for cell in field.cells:
            assert 0 < cell.visible_dic <= 1 and 0 <= cell.visible_bf <= 1
            if not cell.at_border:
                assert cell.visible_dic == 1.0
                continue
            seen_cut = True
            assert cell.visible_dic < 1.0
            x0, y0, x1, y1 = cell.box_dic  # clipped: the cell's pixels inside the box
            inside = np.count_nonzero(field.mask[y0:y1, x0:x1] >= MaskClass.CYTOPLASM)
            assert inside > 0
    assert seen_cut


def test_brightfield_box_of_a_cut_cell_runs_to_the_brightfield_edge() -> None:
    for seed in range(5):
        field = field_of(seed, border_cell_probability=1.0, wbc_per_field=(1, 1))
        (cell,) = field.cells
        labels_bf = mask_in_bf(field)
        u0, v0, u1, v1 = cell.box_bf
        nucleus = np.argwhere(labels_bf == MaskClass.NUCLEUS)
        if len(nucleus):  # every nucleus pixel the brightfield shows lies in the box
            assert nucleus[:, 0].min() >= v0 and nucleus[:, 0].max() < v1
            assert nucleus[:, 1].min() >= u0 and nucleus[:, 1].max() < u1


def test_touching_follows_the_probability() -> None:
    def flags(probability: float) -> list[bool]:
        size = {"width": 1024, "height": 768, "touching_probability": probability}
        return [c.touching for s in range(6) for c in field_of(s, **size).cells]

    touching, apart = flags(1.0), flags(0.0)
    assert len(touching) > 5 and np.mean(touching) >= 0.9
    assert len(apart) > 5 and not any(apart)


# ----------------------------------------------------------------------------- appearance


@pytest.fixture(scope="module")
def neutrophil_fields() -> list[PhantomField]:
    config = {"class_frequencies": {"SNE": 1.0}, "width": 1024, "height": 768}
    return [field_of(seed, **config) for seed in range(4)]


@pytest.mark.parametrize(
    ("label", "target"),
    [
        (MaskClass.NUCLEUS, NUCLEUS_OD),
        (MaskClass.RED_CELL, RED_CELL_OD),
        (MaskClass.CYTOPLASM, CYTOPLASM_OD),
    ],
)
def test_brightfield_optical_density_matches_measurements(
    neutrophil_fields: list[PhantomField], label: MaskClass, target: tuple[float, float, float]
) -> None:
    measured = np.mean(
        [optical_density(f, lambda m: m == label) for f in neutrophil_fields], axis=0
    )
    assert np.allclose(measured, target, rtol=0.3), (label.name, measured)


def test_red_cell_diameter(neutrophil_fields: list[PhantomField]) -> None:
    diameters = []
    for field in neutrophil_fields:
        _, _, stats, _ = cv2.connectedComponentsWithStats(
            (field.mask == MaskClass.RED_CELL).astype(np.uint8)
        )
        for x, y, w, h, area in stats[1:]:
            whole = x > 0 and y > 0 and x + w < 1024 and y + h < 768
            if whole and max(w, h) < 115:  # a single, uncut red cell
                diameters.append(math.sqrt(4 * area / math.pi))
    assert len(diameters) > 20
    assert 90 <= np.median(diameters) <= 100


def test_neutrophil_box_size(neutrophil_fields: list[PhantomField]) -> None:
    sizes = [
        (c.box_dic[2] - c.box_dic[0], c.box_dic[3] - c.box_dic[1])
        for f in neutrophil_fields
        for c in f.cells
        if not c.at_border
    ]
    assert 140 <= np.mean(sizes) <= 185  # measured 165 x 155


def test_lymphocytes_are_smaller_than_monocytes() -> None:
    def mean_area(cls: str) -> float:
        cells = [
            c
            for s in range(5)
            for c in field_of(s, class_frequencies={cls: 1.0}, width=768, height=768).cells
            if not c.at_border
        ]
        return float(
            np.mean([(c.box_dic[2] - c.box_dic[0]) * (c.box_dic[3] - c.box_dic[1]) for c in cells])
        )

    assert mean_area("LY") < 0.6 * mean_area("MO")


def _granule_contrast(cls: CellClass, seed: int) -> tuple[float, float]:
    """Relative RMS change the granules make in (DIC, brightfield), noise free."""
    config = PhantomConfig(**SMALL)
    cell = render_cell(cls, config, np.random.default_rng(seed))
    region = cell.label > 0
    dic_with, dic_without = (
        dic_from_opl(o, config).astype(np.float64) for o in (cell.opl, cell.opl - cell.granule_opl)
    )
    bf_with, bf_without = (
        brightfield_from_od(o, config).astype(np.float64)
        for o in (cell.od, cell.od - cell.granule_od)
    )
    dic_change = np.sqrt(np.mean((dic_with - dic_without)[region] ** 2)) / np.median(
        dic_without[~region]
    )
    bf_change = np.sqrt(np.mean((bf_with - bf_without)[region] ** 2)) / np.median(
        bf_without[~region]
    )
    return float(dic_change), float(bf_change)


def test_basophil_granules_are_nearly_invisible_in_dic() -> None:
    for seed in range(3):
        dic_change, bf_change = _granule_contrast(CellClass.BA, seed)
        assert bf_change > 0.15
        assert dic_change < 0.05 * bf_change
        eo_dic_change, _ = _granule_contrast(CellClass.EO, seed)
        assert eo_dic_change > 5 * dic_change  # eosinophil granules do show as relief


def test_dic_shows_relief_along_the_shear() -> None:
    def relief(shear_angle_deg: float) -> float:
        """Correlation of the DIC signal with the x-slope of the red-cell edges."""
        field = field_of(8, shear_angle_deg=shear_angle_deg)
        red = (field.mask == MaskClass.RED_CELL).astype(np.float32)
        slope = np.gradient(cv2.GaussianBlur(red, (0, 0), 2.0), axis=1)
        contrast = field.dic.astype(np.float64) - np.median(field.dic)
        edges = np.abs(slope) > 0.05
        return float(np.corrcoef(slope[edges], contrast[edges])[0, 1])

    assert relief(0.0) > 0.6  # bright on one side, dark on the other
    assert abs(relief(90.0)) < 0.3  # shear along y: x edges show no relief


# ----------------------------------------------------------------------------- config


def test_only_lymphocytes_when_only_their_frequency_is_set() -> None:
    cells = [c for s in range(5) for c in field_of(s, class_frequencies={"LY": 1.0}).cells]
    assert cells and all(c.cell_class == CellClass.LY for c in cells)


def test_default_frequencies_follow_the_cellavision_counts() -> None:
    assert math.isclose(sum(DEFAULT_CLASS_FREQUENCIES.values()), 1.0)
    assert math.isclose(DEFAULT_CLASS_FREQUENCIES[CellClass.SNE], 3239 / 6951)
    assert set(PhantomConfig().class_frequencies) == set(CellClass)


@pytest.mark.parametrize(
    "overrides",
    [
        {"class_frequencies": {"LY": -1.0, "SNE": 2.0}},
        {"class_frequencies": {"LY": 0.0, "SNE": 0.0}},
        {"class_frequencies": {}},
        {"class_frequencies": {"XX": 1.0}},
        {"wbc_per_field": (4, 1)},
        {"rbc_per_wbc": (-1, 3)},
        {"bf_background": (0.0, 200.0, 200.0)},
        {"max_scale": -0.01},
        {"width": 10},
        {"unknown": 1},
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PhantomConfig.model_validate(overrides)


def test_config_is_frozen() -> None:
    config = PhantomConfig()
    with pytest.raises(ValidationError):
        config.width = 100  # type: ignore[misc]
