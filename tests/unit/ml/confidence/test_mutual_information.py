"""Binned mutual information: agreement with scikit-learn, entropy, batching, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score  # type: ignore[import-untyped]

from stainless.ml.confidence import (
    ChannelMode,
    bin_labels,
    default_bins,
    image_delta,
    mutual_information,
)


def _labels_by_hand(image: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over the image's own range, written out independently."""
    v = np.asarray(image, np.float64).ravel()
    lo, hi = v.min(), v.max()
    if hi == lo:
        return np.zeros(v.size, np.int64)
    labels: np.ndarray = np.minimum(np.floor((v - lo) / (hi - lo) * bins), bins - 1)
    return labels.astype(np.int64)


def _pair(shape: tuple[int, ...], rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape)
    b = rho * a + math.sqrt(1 - rho**2) * rng.normal(size=shape)
    return a, b


def test_default_bins_follows_floor_sqrt_n_over_5() -> None:
    assert default_bins(128 * 128) == math.floor(math.sqrt(128 * 128 / 5)) == 57
    assert default_bins(64 * 64) == 28
    assert default_bins(20) == 2
    assert default_bins(3) == 1  # at least one bin
    for n in range(1, 3000, 7):
        assert default_bins(n) == max(1, math.floor(math.sqrt(n / 5)))
    with pytest.raises(ValueError, match="positive"):
        default_bins(0)


def test_bin_labels_match_the_hand_formula_and_cover_the_range() -> None:
    a, _ = _pair((37, 53), 0.0, 1)
    labels = bin_labels(a, bins=20)
    np.testing.assert_array_equal(labels, _labels_by_hand(a, 20))
    assert labels.min() == 0 and labels.max() == 19
    np.testing.assert_array_equal(bin_labels(np.full((4, 4), 3.0), bins=5), np.zeros(16))


@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (128, 128), (3, 32, 32)])
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.95])
def test_mi_agrees_with_sklearn_on_the_same_labels(shape: tuple[int, ...], rho: float) -> None:
    a, b = _pair(shape, rho, seed=len(shape) + int(10 * rho))
    bins = default_bins(a.size)
    expected = mutual_info_score(_labels_by_hand(a, bins), _labels_by_hand(b, bins))
    assert mutual_information(a, b) == pytest.approx(expected, abs=1e-9)
    # torch inputs (float32 and float64) and mixed inputs give the same value
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    expected32 = mutual_info_score(_labels_by_hand(a32, bins), _labels_by_hand(b32, bins))
    assert mutual_information(torch.from_numpy(a32), torch.from_numpy(b32)) == pytest.approx(
        expected32, abs=1e-9
    )
    assert mutual_information(torch.from_numpy(a), b) == pytest.approx(expected, abs=1e-9)


def test_mi_with_explicit_bins_and_uniform_images() -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(size=(50, 40))
    b = np.sqrt(a) + 0.05 * rng.uniform(size=a.shape)
    for bins in (1, 2, 7, 30):
        expected = mutual_info_score(_labels_by_hand(a, bins), _labels_by_hand(b, bins))
        assert mutual_information(a, b, bins=bins) == pytest.approx(expected, abs=1e-9)
    assert mutual_information(a, b, bins=1) == 0.0


def test_mi_of_an_image_with_itself_is_its_binned_entropy() -> None:
    a, _ = _pair((64, 64), 0.0, 5)
    bins = default_bins(a.size)
    labels = _labels_by_hand(a, bins)
    counts = np.bincount(labels)
    p = counts[counts > 0] / labels.size
    entropy = float(-(p * np.log(p)).sum())
    assert mutual_information(a, a) == pytest.approx(mutual_info_score(labels, labels), abs=1e-9)
    assert mutual_information(a, a) == pytest.approx(entropy, abs=1e-9)
    # MI is invariant to an increasing affine map of either image (same bins)
    assert mutual_information(a, 3 * a + 2) == pytest.approx(entropy, abs=1e-9)


def test_mi_with_an_independent_image_is_small() -> None:
    a, b = _pair((128, 128), 0.0, 7)
    self_mi = mutual_information(a, a)
    independent = mutual_information(a, b)
    # Only the finite-sample bias, about (bins - 1)^2 / (2 n) nats, remains.
    bins = default_bins(a.size)
    assert independent < 2 * (bins - 1) ** 2 / (2 * a.size)
    assert independent < 0.05 * self_mi
    assert mutual_information(a, np.zeros_like(a)) == 0.0


def test_mi_is_symmetric_and_increases_with_correlation() -> None:
    values = []
    for rho in (0.0, 0.3, 0.6, 0.9, 0.99):
        a, b = _pair((64, 64), rho, 11)
        assert mutual_information(a, b) == pytest.approx(mutual_information(b, a), abs=1e-12)
        values.append(mutual_information(a, b))
    assert values == sorted(values)


def test_image_delta_is_the_mean_per_channel_or_pooled_mi() -> None:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn((3, 24, 20), generator=gen)
    k = 6
    scale = torch.linspace(0.0, 3.0, k).view(-1, 1, 1, 1)
    corrupted = clean + torch.randn((k, 3, 24, 20), generator=gen) * scale
    corrupted[-1] = 1.5  # a constant image: MI 0
    per_channel = [
        mutual_information(clean[c], corrupted[i, c]) for i in range(k) for c in range(3)
    ]
    assert image_delta(clean, corrupted) == pytest.approx(np.mean(per_channel), abs=1e-9)
    pooled = [mutual_information(clean, corrupted[i]) for i in range(k)]  # n = C·H·W values
    delta = image_delta(clean, corrupted, channels=ChannelMode.POOLED)
    assert delta == pytest.approx(np.mean(pooled), abs=1e-9)
    assert image_delta(clean, clean[None]) == pytest.approx(
        np.mean([mutual_information(clean[c], clean[c]) for c in range(3)]), abs=1e-9
    )
    assert image_delta(clean, clean[None], normalised=True) == pytest.approx(1.0)
    assert image_delta(clean, corrupted[-1:], normalised=True) == 0.0


def test_bad_inputs_raise_value_error() -> None:
    a = np.zeros((8, 8))
    with pytest.raises(ValueError, match="same number of pixels"):
        mutual_information(a, np.zeros((8, 9)))
    with pytest.raises(ValueError, match="empty"):
        mutual_information(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        mutual_information(np.full((4, 4), np.nan), a[:4, :4])
    with pytest.raises(ValueError, match="bins"):
        mutual_information(a, a, bins=0)
    with pytest.raises(ValueError, match="of its size"):
        image_delta(torch.zeros(1, 8, 8), torch.zeros(3, 1, 8, 9))
    with pytest.raises(ValueError, match="empty"):
        image_delta(torch.zeros(1, 8, 8), torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        image_delta(torch.zeros(1, 2, 2), torch.full((1, 1, 2, 2), float("inf")))
