"""Centred square crops: shape, reflect padding at the border, registered brightfield crops."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from stainless.imaging.cropping import Crop, Cropper, box_centre
from stainless.imaging.registration import warp_bf_to_dic


def _image(channels: int = 0, dtype: type = np.uint16) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (120, 160) if channels == 0 else (120, 160, channels)
    return rng.integers(0, 255, shape).astype(dtype)


def test_centre_crop_is_the_plain_window() -> None:
    image = _image()
    crop = Cropper().crop(image, (80, 60), 40)
    assert isinstance(crop, Crop)
    assert crop.image.shape == (40, 40)
    assert crop.size == 40
    assert crop.centre == (80.0, 60.0)
    assert not crop.at_border
    np.testing.assert_array_equal(crop.image, image[40:80, 60:100])
    # The centre pixel sits at index size // 2, for odd sizes too.
    odd = Cropper().crop(image, (80, 60), 5)
    np.testing.assert_array_equal(odd.image, image[58:63, 78:83])
    assert odd.image[2, 2] == image[60, 80]


def test_fractional_centres_round_to_the_nearest_pixel() -> None:
    image = _image()
    crop = Cropper().crop(image, (80.4, 59.5), 4)
    assert crop.centre == (80.0, 60.0)
    np.testing.assert_array_equal(crop.image, image[58:62, 78:82])


@pytest.mark.parametrize("channels", [0, 3])
@pytest.mark.parametrize(("centre", "top", "left"), [((0, 0), 20, 20), ((159, 119), 0, 0)])
def test_corner_crops_are_reflect_padded_and_flagged(
    channels: int, centre: tuple[int, int], top: int, left: int
) -> None:
    image = _image(channels)
    crop = Cropper().crop(image, centre, 40)
    assert crop.at_border
    assert crop.image.shape == (40, 40, *image.shape[2:])
    assert crop.image.dtype == image.dtype
    padded = cv2.copyMakeBorder(image, 20, 20, 20, 20, cv2.BORDER_REFLECT_101)
    x, y = centre
    np.testing.assert_array_equal(crop.image, padded[y : y + 40, x : x + 40])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int64, np.bool_])
def test_any_dtype_is_cropped(dtype: type) -> None:
    image = _image(3, dtype)
    crop = Cropper().crop(image, (2, 3), 9)
    assert crop.image.dtype == np.dtype(dtype)
    assert crop.at_border
    np.testing.assert_array_equal(crop.image[1:, 2:], image[:8, :7])


def test_crop_larger_than_the_field_still_has_the_requested_size() -> None:
    image = _image()
    crop = Cropper().crop(image, (80, 60), 360)
    assert crop.image.shape == (360, 360)
    assert crop.at_border
    np.testing.assert_array_equal(crop.image[120:240, 100:260], image)
    # Mirrored again beyond the first reflection, as OpenCV does.
    expected = cv2.copyMakeBorder(image, 120, 120, 100, 100, cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(crop.image, expected)


def test_crops_cuts_every_configured_size() -> None:
    image = _image()
    crops = Cropper(sizes=(16, 24)).crops(image, (50, 50))
    assert [c.image.shape for c in crops] == [(16, 16), (24, 24)]
    assert Cropper().sizes == (256, 360)


def _rotated_affine() -> np.ndarray:
    angle, scale = math.radians(0.8), 1.01
    return np.array(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), 12.3],
            [scale * math.sin(angle), scale * math.cos(angle), -7.8],
        ]
    )


def test_registered_crop_matches_cropping_the_warped_brightfield() -> None:
    rng = np.random.default_rng(1)
    bf = cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3)).astype(np.uint8), (0, 0), 3)
    affine = _rotated_affine()
    warped = warp_bf_to_dic(bf, affine, (400, 300))
    cropper = Cropper()
    for centre in ((200, 150), (120.6, 201.2)):
        direct = cropper.crop_registered(bf, affine, centre, 64)
        reference = cropper.crop(warped, centre, 64)
        assert not direct.at_border
        assert direct.centre == reference.centre
        assert direct.image.shape == (64, 64, 3) and direct.image.dtype == np.uint8
        difference = np.abs(direct.image.astype(int) - reference.image.astype(int))
        assert difference.mean() < 1.0 and difference.max() <= 3


def test_registered_crop_of_a_grey_image_and_identity() -> None:
    image = _image(0, np.float32)
    crop = Cropper().crop_registered(image, np.eye(2, 3), (80, 60), 40)
    assert crop.image.shape == (40, 40)
    np.testing.assert_allclose(crop.image, image[40:80, 60:100])


def test_registered_crop_flags_the_border() -> None:
    bf = np.zeros((100, 100, 3), np.uint8)
    assert Cropper().crop_registered(bf, np.eye(2, 3), (5, 5), 40).at_border
    assert not Cropper().crop_registered(bf, np.eye(2, 3), (50, 50), 40).at_border
    # Inside the DIC field, but the brightfield is shifted away: its samples run out.
    shifted = np.array([[1.0, 0.0, 60.0], [0.0, 1.0, 0.0]])
    assert Cropper().crop_registered(bf, shifted, (50, 50), 40).at_border


def test_box_centre_is_the_middle_pixel() -> None:
    # Pixels 10..29 and 20..59: the middle lies between pixels 19 and 20, 39 and 40.
    assert box_centre((10, 20, 30, 60)) == (19.5, 39.5)
    # An odd width has a middle pixel.
    assert box_centre((10, 20, 31, 61)) == (20.0, 40.0)
    image = _image()
    crop = Cropper().crop(image, box_centre((60, 40, 101, 81)), 41)
    np.testing.assert_array_equal(crop.image, image[40:81, 60:101])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Cropper(sizes=(0,))
    with pytest.raises(ValueError, match="at least one"):
        Cropper(sizes=())
    with pytest.raises(ValueError, match="positive"):
        Cropper().crop(_image(), (10, 10), 0)
    with pytest.raises(ValueError, match="positive"):
        Cropper().crop(_image(), (10, 10), 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        Cropper().crop(_image(), (1000, 1000), 10)
    with pytest.raises(ValueError, match="finite"):
        Cropper().crop(_image(), (math.nan, 3), 10)
    with pytest.raises(ValueError, match="HxW"):
        Cropper().crop(np.zeros(10), (1, 1), 3)
    with pytest.raises(ValueError, match="2x3"):
        Cropper().crop_registered(_image(3), np.eye(3), (10, 10), 10)
    with pytest.raises(ValueError, match="channels"):
        Cropper().crop_registered(np.zeros((10, 10, 5), np.uint8), np.eye(2, 3), (5, 5), 4)
    with pytest.raises(ValueError, match="invertible"):
        Cropper().crop_registered(_image(3), np.zeros((2, 3)), (10, 10), 10)
    with pytest.raises(ValueError, match="empty"):
        box_centre((5, 5, 5, 9))
