from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stainless.ml.metrics.fid import FidMetric, frechet_distance, gaussian_fit


def test_frechet_distance_of_one_dimensional_gaussians() -> None:
    # N(0, 1) against N(1, 4): (0 - 1)² + 1 + 4 - 2·√(1·4) = 2
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(2.0)


def test_frechet_distance_of_diagonal_gaussians() -> None:
    # ‖(1, 1)‖² + (1 + 4) + (4 + 9) − 2·(√4 + √36) = 2 + 18 − 16 = 4
    value = frechet_distance([0.0, 0.0], np.diag([1.0, 4.0]), [1.0, 1.0], np.diag([4.0, 9.0]))
    assert value == pytest.approx(4.0)


def test_frechet_distance_of_non_commuting_covariances() -> None:
    # Σ₁ = I: Tr((Σ₁Σ₂)^½) = Tr(Σ₂^½); Σ₂ = R diag(4, 9) Rᵀ has Σ₂^½ = R diag(2, 3) Rᵀ
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    sigma2 = rotation @ np.diag([4.0, 9.0]) @ rotation.T
    # 0 + 2 + 13 − 2·(2 + 3) = 5
    assert frechet_distance([0, 0], np.eye(2), [0, 0], sigma2) == pytest.approx(5.0)


def test_frechet_distance_is_zero_for_equal_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(1.0, 2.0, size=(50, 4))
    mu_a, s_a = gaussian_fit(a)
    mu_b, s_b = gaussian_fit(b)
    assert frechet_distance(mu_a, s_a, mu_a, s_a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu_a, s_a, mu_b, s_b) == pytest.approx(
        frechet_distance(mu_b, s_b, mu_a, s_a)
    )
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu_a, s_a, mu_a[:2], s_a[:2, :2])


def test_frechet_distance_with_fewer_samples_than_features() -> None:
    """Rank-deficient covariances (3 samples, 8 features) still give a finite real value."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    mu_a, s_a = gaussian_fit(a)
    mu_b, s_b = gaussian_fit(b)
    value = frechet_distance(mu_a, s_a, mu_b, s_b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(mu_a, s_a, mu_a, s_a) == pytest.approx(0.0, abs=1e-4)


def test_gaussian_fit_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="N ≥ 2"):
        gaussian_fit(np.zeros((1, 3)))


def _images(seed: int, n: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 3)).astype(np.float32)


def test_random_backbone_is_seeded_and_says_so() -> None:
    metric = FidMetric(net="alexnet")
    assert "RANDOM backbone" in metric.provenance
    assert "not comparable with published FID" in metric.provenance
    features = metric.features(_images(0))
    assert features.shape == (6, 256)
    a, b = _images(0), _images(1) * 0.5
    assert FidMetric(net="alexnet").distance(a, b) == pytest.approx(metric.distance(a, b))
    assert metric.distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metric.distance(a, b) > 0
    assert metric.features(_images(0)[..., 0]).shape == (6, 256)  # grey images


def test_weights_from_a_file_are_named(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = FidMetric(net="alexnet", seed=5)
    path = tmp_path / "alexnet.pt"
    torch.save({k: v.clone() for k, v in source._model.state_dict().items()}, path)
    loaded = FidMetric(net="alexnet", weights=path)
    assert str(path) in loaded.provenance and "RANDOM" not in loaded.provenance
    np.testing.assert_allclose(loaded.features(_images(2)), source.features(_images(2)))
    with pytest.raises(FileNotFoundError):
        FidMetric(net="alexnet", weights=tmp_path / "missing.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lack"):
        FidMetric(net="alexnet", weights=tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="net must be"):
        FidMetric(net="resnet")
