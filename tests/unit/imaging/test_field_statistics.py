"""Flat field, optical density and the red cells' stain direction, from the field alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stainless.domain.cells import MaskClass
from stainless.imaging.acquisition import STAIN_SETS, IlluminationConfig, StainProtocol
from stainless.imaging.field_statistics import (
    FieldStatistics,
    UnreliableFieldError,
    dominant_direction,
    estimate_background,
    relative_threshold,
)
from stainless.imaging.phantom import PhantomField, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config


def _background_pixels(field: PhantomField) -> np.ndarray:
    height, width = field.mask.shape
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    mask = cv2.warpAffine(field.mask, field.affine_bf_to_dic, (width, height), flags=flags)
    free = (mask == MaskClass.BACKGROUND).astype(np.uint8)
    return np.asarray(cv2.erode(free, np.ones((9, 9), np.uint8)) > 0)


@pytest.mark.parametrize("acquisition", ["reference", "vignetted", "warm-lamp", "crowded"])
def test_background_follows_the_flat_field(acquisition: str) -> None:
    config = phantom_config(width=1024, height=768, acquisition=acquisition)
    field = generate_field(config, field_rng(8, 0, 0))
    background = estimate_background(field.bf, block_px=round(10 / config.pixel_um))
    free = _background_pixels(field)
    error = np.abs(np.log(field.bf[free].astype(np.float64) / background[free]))
    # Noise alone is ~1%; a constant background level would be off by up to 35% here.
    assert float(np.median(error)) < 0.03, acquisition


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_background_follows_steep_vignetting_into_the_corners(seed: int) -> None:
    """Both modalities lit by a strong fall-off with uneven light: the estimate holds to
    the corners, where one polynomial over the field swung by up to 90%."""
    config = phantom_config(width=1024, height=768)
    field = generate_field(config, field_rng(seed, 0, 0))
    lamp = IlluminationConfig(vignetting=0.35, unevenness=0.05)
    flat = lamp.flat_field(768, 1024, np.random.default_rng(seed))
    for image, relief in ((field.bf, False), (field.dic, True)):
        lit = image.astype(np.float32) * (flat if image.ndim == 2 else flat[..., None])
        even = estimate_background(image, 64, relief=relief).mean(axis=2)
        ratio = estimate_background(lit, 64, relief=relief).mean(axis=2) / (even * flat)
        error = np.abs(np.log(ratio / np.median(ratio)))
        modality = "DIC" if relief else "BF"
        assert float(np.percentile(error, 99)) < 0.02, (modality, seed)
        assert float(error.max()) < 0.1, (modality, seed)


def test_grey_images_get_one_channel() -> None:
    image = np.full((200, 300), 1000, np.uint16)
    assert estimate_background(image, 50).shape == (200, 300, 1)
    assert np.allclose(estimate_background(image, 50), 1000)


@pytest.mark.parametrize("protocol", list(StainProtocol))
def test_dominant_direction_is_the_red_cells(protocol: StainProtocol) -> None:
    config = phantom_config(width=1024, height=768, acquisition={"stain": {"protocol": protocol}})
    field = generate_field(config, field_rng(9, 0, 0))
    stats = FieldStatistics(field.bf, block_px=133)
    found = dominant_direction(stats.od, 5 * stats.noise)
    truth = STAIN_SETS[protocol].red_cell / np.linalg.norm(STAIN_SETS[protocol].red_cell)
    assert float(found @ truth) > np.cos(np.radians(4)), (protocol, found, truth)


def test_an_unstained_field_is_unreliable() -> None:
    rng = np.random.default_rng(0)
    blank = np.clip(rng.normal(230, 1.5, (256, 256, 3)), 0, 255).astype(np.uint8)
    stats = FieldStatistics(blank, block_px=64)
    with pytest.raises(UnreliableFieldError, match="stained pixels"):
        dominant_direction(stats.od, 50 * stats.noise)


def test_relative_threshold_sits_above_the_bulk() -> None:
    rng = np.random.default_rng(1)
    values = np.abs(rng.normal(0.01, 0.002, (300, 300))).astype(np.float32)
    values[100:140, 100:140] = 0.2  # an outlier object
    level = relative_threshold(values)
    assert 0.02 < level < 0.1
    assert float((values > level).mean()) == pytest.approx(1600 / 90000, rel=0.05)
